//! The one mapping from the broker's errors to Kafka error codes. Handlers
//! return [`BrokerError`]; responses carry [`BrokerError::code`] and, where the
//! API has room for one, [`BrokerError`]'s message.

use kafka_protocol::ResponseError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum BrokerError {
    #[error("unknown topic or partition")]
    UnknownTopicOrPartition,
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
}

impl BrokerError {
    /// The Kafka error this maps to.
    pub fn kafka(&self) -> ResponseError {
        use BrokerError::*;
        match self {
            UnknownTopicOrPartition => ResponseError::UnknownTopicOrPartition,
            UnknownTopicId => ResponseError::UnknownTopicId,
            TopicAlreadyExists(_) => ResponseError::TopicAlreadyExists,
            InvalidTopic(_) => ResponseError::InvalidTopicException,
            InvalidConfig(_) => ResponseError::InvalidConfig,
            InvalidPartitions(_) => ResponseError::InvalidPartitions,
            InvalidReplicationFactor(_) => ResponseError::InvalidReplicationFactor,
            InvalidRequest(_) => ResponseError::InvalidRequest,
            MessageTooLarge { .. } => ResponseError::MessageTooLarge,
            CorruptMessage(_) => ResponseError::CorruptMessage,
            InvalidRecord(_) => ResponseError::InvalidRecord,
            OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
            Storage(_) => ResponseError::KafkaStorageError,
            InvalidRequiredAcks(_) => ResponseError::InvalidRequiredAcks,
            Unsupported(_) => ResponseError::UnsupportedVersion,
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
            UnknownTopicId => "unknown_topic_id",
            TopicAlreadyExists(_) => "topic_already_exists",
            InvalidTopic(_) => "invalid_topic",
            InvalidConfig(_) => "invalid_config",
            InvalidPartitions(_) => "invalid_partitions",
            InvalidReplicationFactor(_) => "invalid_replication_factor",
            InvalidRequest(_) => "invalid_request",
            MessageTooLarge { .. } => "message_too_large",
            CorruptMessage(_) => "corrupt_message",
            InvalidRecord(_) => "invalid_record",
            OffsetOutOfRange { .. } => "offset_out_of_range",
            Storage(_) => "storage",
            InvalidRequiredAcks(_) => "invalid_required_acks",
            Unsupported(_) => "unsupported",
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
