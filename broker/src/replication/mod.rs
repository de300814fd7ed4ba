//! Partition replication: one openraft group per partition whose Raft log
//! *is* the partition log (ARCHITECTURE.md decision 2), so a record is
//! written once, in the segment files consumers read.
//!
//! * [`codec`]: how Raft entries map onto Kafka record batches.
//! * [`store`]: openraft's `RaftLogStorage` and `RaftStateMachine` over a
//!   [`skiff_log::PartitionLog`].

pub mod codec;
pub mod group;
pub mod handover;
pub mod host;
pub mod reassign;
mod recent;
pub mod store;

#[cfg(test)]
mod grpc_tests;
#[cfg(test)]
mod tests;

use std::io::Cursor;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

pub use group::PartitionGroup;
pub use store::{LogStore, ReplicaStore, StateMachine};

/// Broker node id, the same in every Raft group.
pub type NodeId = u64;

/// A normal entry: one v2 record batch as validated (and, for LogAppendTime,
/// stamped) by the leader. Replicas rewrite only `baseOffset` and
/// `partitionLeaderEpoch`, which lie outside the CRC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// Sent and received without a copy in the process when large.
    #[serde(with = "crate::rpc::payload")]
    pub batch: Bytes,
    /// This broker checked the batch's CRC since it came from the client
    /// (a leader's own proposal), so the log does not check it again.
    /// Never sent: a replica checks what it receives.
    #[serde(skip)]
    pub checked: bool,
}

impl Proposal {
    /// A batch whose CRC is yet to be checked.
    pub fn new(batch: impl Into<Bytes>) -> Self {
        Self {
            batch: batch.into(),
            checked: false,
        }
    }
}

impl crate::rpc::client::PayloadSize for Proposal {
    fn payload_size(&self) -> usize {
        self.batch.len()
    }
}

/// Where an applied entry landed in the partition log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub base_offset: i64,
    pub last_offset: i64,
}

openraft::declare_raft_types!(
    /// The Raft types of a partition group.
    pub PartitionRaft:
        D = Proposal,
        R = Applied,
);

/// A partition group's Raft handle.
pub type PartitionRaftHandle = openraft::Raft<PartitionRaft>;
