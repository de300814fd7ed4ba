//! The one mapping from the broker's errors to Kafka error codes. Handlers
//! return [`BrokerError`]; responses carry [`BrokerError::code`] and, where the
//! API has room for one, [`BrokerError`]'s message.

use kafka_protocol::ResponseError;
use thiserror::Error;

#[derive(Debug, Clone, Error)]
pub enum BrokerError {
    #[error("unknown topic or partition")]
    UnknownTopicOrPartition,
    #[error("this broker does not lead the partition")]
    NotLeaderOrFollower,
    #[error("not available yet: {0}")]
    LeaderNotAvailable(String),
    #[error("cluster metadata unavailable: {0}")]
    MetadataUnavailable(String),
    #[error("unknown topic id")]
    UnknownTopicId,
    #[error("topic {0:?} already exists")]
    TopicAlreadyExists(String),
    #[error("{0}")]
    InvalidTopic(String),
    #[error("{0}")]
    InvalidConfig(String),
    #[error("{0}")]
    InvalidPartitions(String),
    #[error("{0}")]
    InvalidReplicationFactor(String),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("the controller mutation quota is exceeded: retry in {0} ms")]
    ThrottlingQuotaExceeded(u64),
    #[error("record batch of {size} bytes is larger than max.message.bytes ({max})")]
    MessageTooLarge { size: usize, max: i64 },
    #[error("{0}")]
    CorruptMessage(String),
    #[error("{0}")]
    InvalidRecord(String),
    #[error("offset {offset} is out of range [{start}, {end}]")]
    OffsetOutOfRange { offset: i64, start: i64, end: i64 },
    #[error("storage error: {0}")]
    Storage(String),
    #[error("invalid required acks {0}: must be -1, 0 or 1")]
    InvalidRequiredAcks(i16),
    #[error("{0} is not supported")]
    Unsupported(String),
    #[error("invalid group id {0:?}")]
    InvalidGroupId(String),
    #[error("the coordinator is not aware of this member")]
    UnknownMemberId,
    #[error("the group member needs a member id: rejoin with {0:?}")]
    MemberIdRequired(String),
    #[error("generation {got} is not the group's generation {current}")]
    IllegalGeneration { got: i32, current: i32 },
    #[error("the group is rebalancing; rejoin")]
    RebalanceInProgress,
    #[error("{0}")]
    InconsistentGroupProtocol(String),
    #[error("another member with the same group.instance.id has a different member id")]
    FencedInstanceId,
    #[error("session timeout {got} ms is outside [{min}, {max}] ms")]
    InvalidSessionTimeout { got: i32, min: u64, max: u64 },
    #[error("group {0:?} does not exist")]
    GroupIdNotFound(String),
    #[error("group {0:?} still has members")]
    NonEmptyGroup(String),
    #[error("offset metadata of {size} bytes is larger than offset.metadata.max.bytes ({max})")]
    OffsetMetadataTooLarge { size: usize, max: usize },
    #[error("the group is subscribed to this topic")]
    GroupSubscribedToTopic,
    #[error("{0}")]
    CoordinatorNotAvailable(String),
    #[error("this broker is not the group's coordinator")]
    NotCoordinator,
    #[error("the coordinator is loading the group's offsets")]
    CoordinatorLoadInProgress,
    #[error("producer {producer_id} epoch {got} is older than the current epoch {current}")]
    InvalidProducerEpoch {
        producer_id: i64,
        got: i16,
        current: i16,
    },
    #[error("{0}")]
    OutOfOrderSequence(String),
    /// An idempotent batch ahead of its producer's next sequence here: an
    /// earlier one has not arrived (see `producer_state`). Retriable, as
    /// NOT_LEADER_OR_FOLLOWER, so that the client resends in order.
    #[error("{0}")]
    SequenceGap(String),
    #[error("{0}")]
    InvalidTxnState(String),
    #[error("{0}")]
    ProducerFenced(String),
    #[error("{0}")]
    NotEnoughReplicas(String),
    #[error("{0}")]
    RequestTimedOut(String),
    #[error("not authorized to access topic")]
    TopicAuthorizationFailed,
    #[error("not authorized to access group")]
    GroupAuthorizationFailed,
    #[error("not authorized on the cluster")]
    ClusterAuthorizationFailed,
    #[error("not authorized to use this transactional id")]
    TransactionalIdAuthorizationFailed,
}

impl BrokerError {
    /// The Kafka error this maps to.
    pub fn kafka(&self) -> ResponseError {
        use BrokerError::*;
        match self {
            UnknownTopicOrPartition => ResponseError::UnknownTopicOrPartition,
            NotLeaderOrFollower => ResponseError::NotLeaderOrFollower,
            LeaderNotAvailable(_) => ResponseError::LeaderNotAvailable,
            MetadataUnavailable(_) => ResponseError::RequestTimedOut,
            UnknownTopicId => ResponseError::UnknownTopicId,
            TopicAlreadyExists(_) => ResponseError::TopicAlreadyExists,
            InvalidTopic(_) => ResponseError::InvalidTopicException,
            InvalidConfig(_) => ResponseError::InvalidConfig,
            InvalidPartitions(_) => ResponseError::InvalidPartitions,
            InvalidReplicationFactor(_) => ResponseError::InvalidReplicationFactor,
            InvalidRequest(_) => ResponseError::InvalidRequest,
            ThrottlingQuotaExceeded(_) => ResponseError::ThrottlingQuotaExceeded,
            MessageTooLarge { .. } => ResponseError::MessageTooLarge,
            CorruptMessage(_) => ResponseError::CorruptMessage,
            InvalidRecord(_) => ResponseError::InvalidRecord,
            OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
            Storage(_) => ResponseError::KafkaStorageError,
            InvalidRequiredAcks(_) => ResponseError::InvalidRequiredAcks,
            Unsupported(_) => ResponseError::UnsupportedVersion,
            InvalidGroupId(_) => ResponseError::InvalidGroupId,
            UnknownMemberId => ResponseError::UnknownMemberId,
            MemberIdRequired(_) => ResponseError::MemberIdRequired,
            IllegalGeneration { .. } => ResponseError::IllegalGeneration,
            RebalanceInProgress => ResponseError::RebalanceInProgress,
            InconsistentGroupProtocol(_) => ResponseError::InconsistentGroupProtocol,
            FencedInstanceId => ResponseError::FencedInstanceId,
            InvalidSessionTimeout { .. } => ResponseError::InvalidSessionTimeout,
            GroupIdNotFound(_) => ResponseError::GroupIdNotFound,
            NonEmptyGroup(_) => ResponseError::NonEmptyGroup,
            OffsetMetadataTooLarge { .. } => ResponseError::OffsetMetadataTooLarge,
            GroupSubscribedToTopic => ResponseError::GroupSubscribedToTopic,
            CoordinatorNotAvailable(_) => ResponseError::CoordinatorNotAvailable,
            NotCoordinator => ResponseError::NotCoordinator,
            CoordinatorLoadInProgress => ResponseError::CoordinatorLoadInProgress,
            InvalidProducerEpoch { .. } => ResponseError::InvalidProducerEpoch,
            OutOfOrderSequence(_) => ResponseError::OutOfOrderSequenceNumber,
            SequenceGap(_) => ResponseError::NotLeaderOrFollower,
            InvalidTxnState(_) => ResponseError::InvalidTxnState,
            ProducerFenced(_) => ResponseError::ProducerFenced,
            NotEnoughReplicas(_) => ResponseError::NotEnoughReplicas,
            RequestTimedOut(_) => ResponseError::RequestTimedOut,
            TopicAuthorizationFailed => ResponseError::TopicAuthorizationFailed,
            GroupAuthorizationFailed => ResponseError::GroupAuthorizationFailed,
            ClusterAuthorizationFailed => ResponseError::ClusterAuthorizationFailed,
            TransactionalIdAuthorizationFailed => ResponseError::TransactionalIdAuthorizationFailed,
        }
    }

    /// The error code for a response.
    pub fn code(&self) -> i16 {
        self.kafka().code()
    }

    /// A metrics label that names the kind of error.
    pub fn label(&self) -> &'static str {
        use BrokerError::*;
        match self {
            UnknownTopicOrPartition => "unknown_topic_or_partition",
            NotLeaderOrFollower => "not_leader_or_follower",
            LeaderNotAvailable(_) => "leader_not_available",
            MetadataUnavailable(_) => "metadata_unavailable",
            UnknownTopicId => "unknown_topic_id",
            TopicAlreadyExists(_) => "topic_already_exists",
            InvalidTopic(_) => "invalid_topic",
            InvalidConfig(_) => "invalid_config",
            InvalidPartitions(_) => "invalid_partitions",
            InvalidReplicationFactor(_) => "invalid_replication_factor",
            InvalidRequest(_) => "invalid_request",
            ThrottlingQuotaExceeded(_) => "throttling_quota_exceeded",
            MessageTooLarge { .. } => "message_too_large",
            CorruptMessage(_) => "corrupt_message",
            InvalidRecord(_) => "invalid_record",
            OffsetOutOfRange { .. } => "offset_out_of_range",
            Storage(_) => "storage",
            InvalidRequiredAcks(_) => "invalid_required_acks",
            Unsupported(_) => "unsupported",
            InvalidGroupId(_) => "invalid_group_id",
            UnknownMemberId => "unknown_member_id",
            MemberIdRequired(_) => "member_id_required",
            IllegalGeneration { .. } => "illegal_generation",
            RebalanceInProgress => "rebalance_in_progress",
            InconsistentGroupProtocol(_) => "inconsistent_group_protocol",
            FencedInstanceId => "fenced_instance_id",
            InvalidSessionTimeout { .. } => "invalid_session_timeout",
            GroupIdNotFound(_) => "group_id_not_found",
            NonEmptyGroup(_) => "non_empty_group",
            OffsetMetadataTooLarge { .. } => "offset_metadata_too_large",
            GroupSubscribedToTopic => "group_subscribed_to_topic",
            CoordinatorNotAvailable(_) => "coordinator_not_available",
            NotCoordinator => "not_coordinator",
            CoordinatorLoadInProgress => "coordinator_load_in_progress",
            InvalidProducerEpoch { .. } => "invalid_producer_epoch",
            OutOfOrderSequence(_) => "out_of_order_sequence_number",
            SequenceGap(_) => "sequence_gap",
            InvalidTxnState(_) => "invalid_txn_state",
            ProducerFenced(_) => "producer_fenced",
            NotEnoughReplicas(_) => "not_enough_replicas",
            RequestTimedOut(_) => "request_timed_out",
            TopicAuthorizationFailed => "topic_authorization_failed",
            GroupAuthorizationFailed => "group_authorization_failed",
            ClusterAuthorizationFailed => "cluster_authorization_failed",
            TransactionalIdAuthorizationFailed => "transactional_id_authorization_failed",
        }
    }
}

impl From<skiff_log::LogError> for BrokerError {
    fn from(e: skiff_log::LogError) -> Self {
        use skiff_log::LogError as L;
        match e {
            L::CorruptBatch(m) => BrokerError::CorruptMessage(m),
            L::InvalidBatch(m) => BrokerError::CorruptMessage(m),
            L::OffsetOutOfRange { .. } => BrokerError::OffsetOutOfRange {
                offset: -1,
                start: -1,
                end: -1,
            },
            other => BrokerError::Storage(other.to_string()),
        }
    }
}

pub type Result<T, E = BrokerError> = std::result::Result<T, E>;
