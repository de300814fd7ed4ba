//! What the planner reads (brokers, partitions, options) and what it
//! answers (a [`Plan`] of [`Move`]s and a [`Summary`]).

/// A broker the planner may place replicas on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broker {
    pub id: i32,
    /// `broker.rack`. Brokers without one each count as a rack of their own,
    /// so a cluster without racks only keeps replicas on distinct brokers.
    pub rack: Option<String>,
    /// A draining broker receives no replica and ends with none: a drain
    /// (before removing the broker) is a plan like any other.
    pub draining: bool,
}

impl Broker {
    /// An active broker without a rack.
    pub fn new(id: i32) -> Self {
        Self {
            id,
            rack: None,
            draining: false,
        }
    }

    /// The same broker in `rack`.
    #[must_use]
    pub fn in_rack(mut self, rack: &str) -> Self {
        self.rack = Some(rack.to_string());
        self
    }

    /// The same broker, draining.
    #[must_use]
    pub fn draining(mut self) -> Self {
        self.draining = true;
        self
    }
}

/// A partition and where its replicas are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    pub topic: String,
    pub partition: i32,
    /// Replica brokers in order; the first is the preferred leader.
    pub replicas: Vec<i32>,
    /// The current leader, when one is known (reported in the summary; the
    /// plan balances preferred leaders, which an election makes current).
    pub leader: Option<i32>,
    /// Bytes of one replica (0 when unknown).
    pub size_bytes: u64,
}

impl Partition {
    /// A partition of `size_bytes` led by its first replica.
    pub fn new(topic: &str, partition: i32, replicas: &[i32], size_bytes: u64) -> Self {
        Self {
            topic: topic.to_string(),
            partition,
            replicas: replicas.to_vec(),
            leader: replicas.first().copied(),
            size_bytes,
        }
    }
}

/// How far from even a broker may be before the planner moves anything.
/// A broker is balanced in a dimension when its value is within the
/// tolerance of the cluster average over the brokers that are not draining.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerance {
    /// Replicas per broker: ± this many of the average (at least the
    /// rounding of the average, so a tolerance of 0 means floor/ceil).
    pub replicas: u32,
    /// Preferred leaders per broker, likewise.
    pub leaders: u32,
    /// Bytes per broker: ± this fraction of the average (0.10 = 10%).
    pub bytes_fraction: f64,
}

impl Default for Tolerance {
    fn default() -> Self {
        Self {
            replicas: 1,
            leaders: 1,
            bytes_fraction: 0.10,
        }
    }
}

/// Planner options.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Options {
    pub tolerance: Tolerance,
}

/// The kind of change a [`Move`] makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum MoveKind {
    /// Same brokers in another order: only the preferred leader changes, no
    /// data is copied.
    Reorder,
    /// At least one replica goes to a broker that does not hold it yet.
    Data,
}

/// The change of one partition's replica list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    pub topic: String,
    pub partition: i32,
    /// The replica list before, as given.
    pub from: Vec<i32>,
    /// The replica list to reassign to; the first is the preferred leader.
    pub to: Vec<i32>,
    /// Brokers in `to` but not in `from` (each receives a copy).
    pub added: Vec<i32>,
    /// Brokers in `from` but not in `to` (each deletes its copy).
    pub removed: Vec<i32>,
    pub size_bytes: u64,
}

impl Move {
    pub fn kind(&self) -> MoveKind {
        if self.added.is_empty() && self.removed.is_empty() {
            MoveKind::Reorder
        } else {
            MoveKind::Data
        }
    }

    /// Bytes copied to new replicas.
    pub fn bytes_moved(&self) -> u64 {
        self.size_bytes.saturating_mul(self.added.len() as u64)
    }
}

/// One broker's load.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Load {
    pub replicas: u64,
    /// Partitions whose preferred leader (first replica) this broker is.
    pub leaders: u64,
    pub bytes: u64,
}

/// One broker's load before and after the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerLoad {
    pub id: i32,
    pub rack: Option<String>,
    pub draining: bool,
    /// A broker that replicas name but the input does not list (offline or
    /// removed): treated as draining.
    pub unknown: bool,
    pub before: Load,
    pub after: Load,
}

/// Whether every non-draining broker is within the tolerance, per
/// dimension, and whether the hard constraints hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Balance {
    pub replicas: bool,
    pub leaders: bool,
    pub bytes: bool,
    /// No replica on a draining or unknown broker, none duplicated, every
    /// partition spread over racks as far as the racks allow.
    pub constraints: bool,
}

/// Figures of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Sorted by broker id.
    pub brokers: Vec<BrokerLoad>,
    /// Partitions whose replica list changes.
    pub partitions_changed: usize,
    /// Replicas copied to a new broker.
    pub replica_moves: usize,
    /// Partitions whose only change is the order (preferred leader).
    pub leadership_only: usize,
    pub bytes_moved: u64,
    /// Partitions whose current leader is not their preferred leader today
    /// (a preferred-leader election fixes those without any move).
    pub leader_not_preferred_before: usize,
    pub before: Balance,
    pub after: Balance,
}

/// The planner's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Sorted by (topic, partition); empty when nothing needs to change.
    pub moves: Vec<Move>,
    pub summary: Summary,
    /// What the plan could not achieve and why (a rack spread the brokers
    /// cannot give, a balance the constraints prevent).
    pub warnings: Vec<String>,
}

/// Input the planner refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BalanceError {
    #[error("broker {0} is listed twice")]
    DuplicateBroker(i32),
    #[error("partition {topic}-{partition} is listed twice")]
    DuplicatePartition { topic: String, partition: i32 },
    #[error("partition {topic}-{partition} has no replicas")]
    NoReplicas { topic: String, partition: i32 },
    #[error(
        "partition {topic}-{partition} has {replicas} replicas but only {eligible} brokers can hold \
         them (the others are draining or unknown): its replication factor cannot be kept"
    )]
    NotEnoughBrokers {
        topic: String,
        partition: i32,
        replicas: usize,
        eligible: usize,
    },
}
