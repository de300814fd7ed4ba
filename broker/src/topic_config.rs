//! Topic configs: the one table of names, types, checks and broker-level
//! synonyms, and the typed [`TopicConfig`] resolved from a topic's overrides
//! over the broker's defaults.

use std::collections::BTreeMap;

use thiserror::Error;

/// Kafka's `ConfigType` codes in DescribeConfigs (v3+).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i8)]
pub enum ConfigType {
    Boolean = 1,
    String = 2,
    Int = 3,
    Short = 4,
    Long = 5,
    List = 7,
}

/// Kafka's `ConfigSource` codes in DescribeConfigs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i8)]
pub enum ConfigSource {
    TopicConfig = 1,
    DynamicBrokerConfig = 2,
    DynamicDefaultBrokerConfig = 3,
    StaticBrokerConfig = 4,
    DefaultConfig = 5,
}

/// One topic config Skiff understands.
pub struct ConfigDef {
    /// The topic-level name, e.g. `retention.ms`.
    pub name: &'static str,
    /// The broker-level default's name, e.g. `log.retention.ms`.
    pub broker_name: &'static str,
    pub kind: ConfigType,
    /// Built-in default (what `--help` shows for the broker flag).
    pub default: &'static str,
    pub doc: &'static str,
    check: fn(&str) -> Result<(), String>,
}

/// Every topic config Skiff accepts. Anything else is INVALID_CONFIG.
pub const TOPIC_CONFIGS: &[ConfigDef] = &[
    ConfigDef {
        name: "cleanup.policy",
        broker_name: "log.cleanup.policy",
        kind: ConfigType::List,
        default: "delete",
        doc: "delete: old segments are removed by retention. compact is not supported yet.",
        check: check_cleanup_policy,
    },
    ConfigDef {
        name: "retention.ms",
        broker_name: "log.retention.ms",
        kind: ConfigType::Long,
        default: "604800000",
        doc: "How long a segment is kept after its newest record, ms; -1 keeps data forever.",
        check: |v| long_at_least(v, -1),
    },
    ConfigDef {
        name: "retention.bytes",
        broker_name: "log.retention.bytes",
        kind: ConfigType::Long,
        default: "-1",
        doc: "Largest size of a partition before its oldest segments are removed; -1 for no limit.",
        check: |v| long_at_least(v, -1),
    },
    ConfigDef {
        name: "segment.bytes",
        broker_name: "log.segment.bytes",
        kind: ConfigType::Int,
        default: "1073741824",
        doc: "Size at which a segment file is rolled.",
        check: |v| int_at_least(v, 1024),
    },
    ConfigDef {
        name: "segment.ms",
        broker_name: "log.roll.ms",
        kind: ConfigType::Long,
        default: "604800000",
        doc: "Age at which a segment is rolled, so that retention can remove it.",
        check: |v| long_at_least(v, 1),
    },
    ConfigDef {
        name: "max.message.bytes",
        broker_name: "message.max.bytes",
        kind: ConfigType::Int,
        default: "1048588",
        doc: "Largest record batch the topic accepts; larger ones get MESSAGE_TOO_LARGE.",
        check: |v| int_at_least(v, 0),
    },
    ConfigDef {
        name: "min.insync.replicas",
        broker_name: "min.insync.replicas",
        kind: ConfigType::Int,
        default: "1",
        doc: "Replicas that must hold an acks=all write before it is acknowledged.",
        check: |v| int_at_least(v, 1),
    },
    ConfigDef {
        name: "message.timestamp.type",
        broker_name: "log.message.timestamp.type",
        kind: ConfigType::String,
        default: "CreateTime",
        doc: "CreateTime keeps the producer's timestamps; LogAppendTime stamps batches on arrival.",
        check: |v| match v {
            "CreateTime" | "LogAppendTime" => Ok(()),
            _ => Err("must be CreateTime or LogAppendTime".into()),
        },
    },
    ConfigDef {
        name: "flush.messages",
        broker_name: "log.flush.interval.messages",
        kind: ConfigType::Long,
        default: "9223372036854775807",
        doc: "fsync after this many records (1 = every write).",
        check: |v| long_at_least(v, 1),
    },
    ConfigDef {
        name: "flush.ms",
        broker_name: "log.flush.interval.ms",
        kind: ConfigType::Long,
        default: "1000",
        doc: "fsync data that has waited this long, ms.",
        check: |v| long_at_least(v, 0),
    },
    ConfigDef {
        name: "index.interval.bytes",
        broker_name: "log.index.interval.bytes",
        kind: ConfigType::Int,
        default: "4096",
        doc: "Bytes between entries of the sparse offset index.",
        check: |v| int_at_least(v, 0),
    },
    ConfigDef {
        name: "compression.type",
        broker_name: "compression.type",
        kind: ConfigType::String,
        default: "producer",
        doc: "producer: batches are stored as the producer compressed them (the only mode so far).",
        check: |v| {
            match v {
            "producer" => Ok(()),
            _ => Err(
                "only `producer` is supported: the broker stores batches as the producer compressed them and does not recompress".into(),
            ),
        }
        },
    },
];

/// A config name or value the broker refuses (INVALID_CONFIG).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigValueError {
    #[error("unknown topic config {0:?}")]
    Unknown(String),
    #[error("invalid value {value:?} for {name}: {reason}")]
    Invalid {
        name: String,
        value: String,
        reason: String,
    },
}

fn check_cleanup_policy(v: &str) -> Result<(), String> {
    let policies: Vec<&str> = v.split(',').map(str::trim).collect();
    for p in &policies {
        match *p {
            "delete" => {}
            "compact" => {
                return Err(
                    "log compaction is not supported yet; use cleanup.policy=delete".into(),
                );
            }
            _ => return Err("must be a list of delete/compact".into()),
        }
    }
    if policies.is_empty() {
        return Err("must not be empty".into());
    }
    Ok(())
}

fn long_at_least(v: &str, min: i64) -> Result<(), String> {
    match v.trim().parse::<i64>() {
        Ok(n) if n >= min => Ok(()),
        Ok(_) => Err(format!("must be at least {min}")),
        Err(_) => Err("must be a whole number".into()),
    }
}

fn int_at_least(v: &str, min: i32) -> Result<(), String> {
    match v.trim().parse::<i32>() {
        Ok(n) if n >= min => Ok(()),
        Ok(_) => Err(format!("must be at least {min}")),
        Err(_) => Err("must be a 32-bit whole number".into()),
    }
}

/// The definition of a topic config, by topic-level name.
pub fn def(name: &str) -> Option<&'static ConfigDef> {
    TOPIC_CONFIGS.iter().find(|d| d.name == name)
}

/// The definition of a topic config, by its broker-level default's name.
pub fn def_by_broker_name(name: &str) -> Option<&'static ConfigDef> {
    TOPIC_CONFIGS.iter().find(|d| d.broker_name == name)
}

/// Checks one (name, value) a client wants to set on a topic.
///
/// # Errors
/// Unknown names and values that fail the config's check.
pub fn validate(name: &str, value: &str) -> Result<(), ConfigValueError> {
    let d = def(name).ok_or_else(|| ConfigValueError::Unknown(name.to_string()))?;
    (d.check)(value).map_err(|reason| ConfigValueError::Invalid {
        name: name.to_string(),
        value: value.to_string(),
        reason,
    })
}

/// Timestamps a topic keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    CreateTime,
    LogAppendTime,
}

/// A topic's effective configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicConfig {
    pub retention_ms: i64,
    pub retention_bytes: i64,
    pub segment_bytes: i64,
    pub segment_ms: i64,
    pub max_message_bytes: i64,
    pub min_insync_replicas: i64,
    pub timestamp_type: TimestampType,
    pub flush_messages: i64,
    pub flush_ms: i64,
    pub index_interval_bytes: i64,
}

impl TopicConfig {
    /// Resolves `overrides` (topic-level names) over `defaults` (topic-level
    /// names, the broker's current defaults), falling back to built-ins.
    ///
    /// # Errors
    /// Any value that does not pass its check.
    pub fn resolve(
        defaults: &BTreeMap<String, String>,
        overrides: &BTreeMap<String, String>,
    ) -> Result<Self, ConfigValueError> {
        let get = |name: &str| -> Result<String, ConfigValueError> {
            let v = overrides
                .get(name)
                .or_else(|| defaults.get(name))
                .cloned()
                .unwrap_or_else(|| def(name).map(|d| d.default.to_string()).unwrap_or_default());
            validate(name, &v)?;
            Ok(v)
        };
        // Values passed `validate`, so they parse; the fallback is never used.
        let long = |name: &str| -> Result<i64, ConfigValueError> {
            Ok(get(name)?.trim().parse::<i64>().unwrap_or_default())
        };
        get("cleanup.policy")?;
        get("compression.type")?;
        Ok(Self {
            retention_ms: long("retention.ms")?,
            retention_bytes: long("retention.bytes")?,
            segment_bytes: long("segment.bytes")?,
            segment_ms: long("segment.ms")?,
            max_message_bytes: long("max.message.bytes")?,
            min_insync_replicas: long("min.insync.replicas")?,
            timestamp_type: if get("message.timestamp.type")? == "LogAppendTime" {
                TimestampType::LogAppendTime
            } else {
                TimestampType::CreateTime
            },
            flush_messages: long("flush.messages")?,
            flush_ms: long("flush.ms")?,
            index_interval_bytes: long("index.interval.bytes")?,
        })
    }

    /// The partition log's view of this config.
    pub fn log_config(&self) -> skiff_log::LogConfig {
        let positive = |v: i64| (v >= 0).then_some(v as u64);
        skiff_log::LogConfig {
            segment_bytes: self.segment_bytes.max(1024) as u64,
            segment_ms: positive(self.segment_ms),
            retention_ms: positive(self.retention_ms),
            retention_bytes: positive(self.retention_bytes),
            index_interval_bytes: self.index_interval_bytes.clamp(0, i32::MAX as i64) as u32,
            flush_messages: (self.flush_messages != i64::MAX).then_some(self.flush_messages as u64),
            flush_ms: positive(self.flush_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_win_over_defaults() {
        let mut defaults = BTreeMap::new();
        defaults.insert("retention.ms".to_string(), "5".to_string());
        let mut overrides = BTreeMap::new();
        overrides.insert("retention.ms".to_string(), "7".to_string());
        assert_eq!(
            TopicConfig::resolve(&defaults, &overrides)
                .unwrap()
                .retention_ms,
            7
        );
        assert_eq!(
            TopicConfig::resolve(&defaults, &BTreeMap::new())
                .unwrap()
                .retention_ms,
            5
        );
    }

    #[test]
    fn compaction_is_refused_with_a_reason() {
        let err = validate("cleanup.policy", "compact").unwrap_err();
        assert!(err.to_string().contains("not supported yet"), "{err}");
        assert!(validate("cleanup.policy", "delete").is_ok());
    }

    #[test]
    fn unknown_and_malformed_values_are_refused() {
        assert_eq!(
            validate("no.such", "1"),
            Err(ConfigValueError::Unknown("no.such".into()))
        );
        assert!(validate("segment.bytes", "12").is_err());
        assert!(validate("segment.bytes", "99999999999").is_err());
        assert!(validate("retention.ms", "-2").is_err());
        assert!(validate("retention.ms", "abc").is_err());
        assert!(validate("message.timestamp.type", "LogAppendTime").is_ok());
    }

    #[test]
    fn built_in_defaults_match_the_broker_flags() {
        use clap::Parser;
        let flags = crate::config::BrokerConfig::parse_from(["skiff-broker"]);
        for (name, value) in flags.topic_defaults() {
            assert_eq!(def(name).unwrap().default, value, "{name}");
        }
    }
}
