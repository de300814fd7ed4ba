//! The broker's static configuration: flags, environment variables and a
//! Kafka-style properties file, in that order of precedence.
//!
//! One naming rule links the three so a person never has to look anything up
//! twice: the file key `log.retention.ms` is the flag `--log-retention-ms` and
//! the environment variable `SKIFF_LOG_RETENTION_MS`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Parser;
use thiserror::Error;

/// A Kafka-compatible broker. Every flag can also be given as an environment
/// variable (`SKIFF_` + the flag in upper snake case) or as a line `key=value`
/// in the file given by `--config`, where the key is the flag with dots
/// (`--log-retention-ms` is `log.retention.ms`). Flags win over the
/// environment, which wins over the file.
#[derive(Debug, Clone, Parser)]
#[command(name = "skiff-broker", version, about, long_about = None, max_term_width = 100)]
pub struct BrokerConfig {
    /// A properties file (`key=value` lines, `#` comments) with any of the settings below.
    #[arg(long, env = "SKIFF_CONFIG")]
    pub config: Option<PathBuf>,

    /// This broker's id (on Kubernetes, the StatefulSet ordinal).
    #[arg(long, env = "SKIFF_NODE_ID", default_value_t = 0)]
    pub node_id: i32,

    /// Cluster id reported to clients; generated and stored on first start when unset.
    #[arg(long, env = "SKIFF_CLUSTER_ID")]
    pub cluster_id: Option<String>,

    /// Rack of this broker, reported in Metadata.
    #[arg(long, env = "SKIFF_BROKER_RACK")]
    pub broker_rack: Option<String>,

    /// Comma-separated listeners to bind, `NAME://host:port` (PLAINTEXT only for now).
    #[arg(
        long,
        env = "SKIFF_LISTENERS",
        default_value = "PLAINTEXT://127.0.0.1:9092"
    )]
    pub listeners: String,

    /// Comma-separated addresses clients are told to connect to, `NAME://host:port`;
    /// defaults to `--listeners`. On Kubernetes, the pod's stable DNS name.
    #[arg(long, env = "SKIFF_ADVERTISED_LISTENERS")]
    pub advertised_listeners: Option<String>,

    /// Where partition logs and broker metadata live.
    #[arg(long, env = "SKIFF_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// HTTP address for /metrics, /livez and /readyz.
    #[arg(long, env = "SKIFF_HTTP_ADDR", default_value = "127.0.0.1:9644")]
    pub http_addr: SocketAddr,

    /// Create a topic when a client asks for its metadata or produces to it.
    #[arg(long, env = "SKIFF_AUTO_CREATE_TOPICS_ENABLE", default_value_t = true, action = clap::ArgAction::Set)]
    pub auto_create_topics_enable: bool,

    /// Partitions of an auto-created topic, and of a created topic that names none.
    #[arg(long, env = "SKIFF_NUM_PARTITIONS", default_value_t = 1)]
    pub num_partitions: i32,

    /// Replication factor of a topic that names none (one broker until replication lands).
    #[arg(long, env = "SKIFF_DEFAULT_REPLICATION_FACTOR", default_value_t = 1)]
    pub default_replication_factor: i16,

    /// Largest request a client may send, in bytes.
    #[arg(
        long,
        env = "SKIFF_SOCKET_REQUEST_MAX_BYTES",
        default_value_t = 104_857_600
    )]
    pub socket_request_max_bytes: u32,

    /// Largest record batch a topic accepts (topic config `max.message.bytes`).
    #[arg(long, env = "SKIFF_MESSAGE_MAX_BYTES", default_value_t = 1_048_588)]
    pub message_max_bytes: i64,

    /// Size at which a segment file is rolled (topic config `segment.bytes`).
    #[arg(long, env = "SKIFF_LOG_SEGMENT_BYTES", default_value_t = 1_073_741_824)]
    pub log_segment_bytes: i64,

    /// Age at which a segment is rolled, ms (topic config `segment.ms`).
    #[arg(long, env = "SKIFF_LOG_ROLL_MS", default_value_t = 604_800_000)]
    pub log_roll_ms: i64,

    /// How long data is kept, ms; -1 keeps it forever (topic config `retention.ms`).
    #[arg(long, env = "SKIFF_LOG_RETENTION_MS", default_value_t = 604_800_000)]
    pub log_retention_ms: i64,

    /// How many bytes a partition keeps; -1 for no limit (topic config `retention.bytes`).
    #[arg(long, env = "SKIFF_LOG_RETENTION_BYTES", default_value_t = -1)]
    pub log_retention_bytes: i64,

    /// How often retention runs, ms.
    #[arg(
        long,
        env = "SKIFF_LOG_RETENTION_CHECK_INTERVAL_MS",
        default_value_t = 300_000
    )]
    pub log_retention_check_interval_ms: u64,

    /// fsync after this many records; unset never fsyncs by count (topic config `flush.messages`).
    /// 1 makes every acknowledged write durable against power loss, at a cost in throughput.
    #[arg(long, env = "SKIFF_LOG_FLUSH_INTERVAL_MESSAGES")]
    pub log_flush_interval_messages: Option<i64>,

    /// fsync data older than this, ms (topic config `flush.ms`). A killed process loses
    /// nothing either way (the page cache survives it); this bounds loss on power failure.
    #[arg(long, env = "SKIFF_LOG_FLUSH_INTERVAL_MS", default_value_t = 1000)]
    pub log_flush_interval_ms: i64,

    /// Bytes between entries of the sparse offset index (topic config `index.interval.bytes`).
    #[arg(long, env = "SKIFF_LOG_INDEX_INTERVAL_BYTES", default_value_t = 4096)]
    pub log_index_interval_bytes: i64,

    /// CreateTime or LogAppendTime (topic config `message.timestamp.type`).
    #[arg(
        long,
        env = "SKIFF_LOG_MESSAGE_TIMESTAMP_TYPE",
        default_value = "CreateTime"
    )]
    pub log_message_timestamp_type: String,

    /// Replicas that must acknowledge an acks=all write (topic config `min.insync.replicas`).
    #[arg(long, env = "SKIFF_MIN_INSYNC_REPLICAS", default_value_t = 1)]
    pub min_insync_replicas: i64,

    /// How long the first JoinGroup of an empty group waits for more members
    /// before the first rebalance completes, ms (extended while members keep
    /// arriving, up to the rebalance timeout).
    #[arg(
        long,
        env = "SKIFF_GROUP_INITIAL_REBALANCE_DELAY_MS",
        default_value_t = 3000
    )]
    pub group_initial_rebalance_delay_ms: u64,

    /// Smallest session timeout a group member may ask for, ms.
    #[arg(
        long,
        env = "SKIFF_GROUP_MIN_SESSION_TIMEOUT_MS",
        default_value_t = 6000
    )]
    pub group_min_session_timeout_ms: u64,

    /// Largest session timeout a group member may ask for, ms.
    #[arg(
        long,
        env = "SKIFF_GROUP_MAX_SESSION_TIMEOUT_MS",
        default_value_t = 1_800_000
    )]
    pub group_max_session_timeout_ms: u64,

    /// Partitions of `__consumer_offsets` when it is created (a group's
    /// offsets live in partition `abs(hash(group)) % n`; changing it later
    /// has no effect on an existing topic).
    #[arg(long, env = "SKIFF_OFFSETS_TOPIC_NUM_PARTITIONS", default_value_t = 50)]
    pub offsets_topic_num_partitions: i32,

    /// Segment size of `__consumer_offsets`, bytes.
    #[arg(
        long,
        env = "SKIFF_OFFSETS_TOPIC_SEGMENT_BYTES",
        default_value_t = 104_857_600
    )]
    pub offsets_topic_segment_bytes: i64,

    /// Committed offsets of a group that has been empty this long are deleted, minutes.
    #[arg(long, env = "SKIFF_OFFSETS_RETENTION_MINUTES", default_value_t = 10080)]
    pub offsets_retention_minutes: u64,

    /// How often expired offsets are looked for, ms.
    #[arg(
        long,
        env = "SKIFF_OFFSETS_RETENTION_CHECK_INTERVAL_MS",
        default_value_t = 600_000
    )]
    pub offsets_retention_check_interval_ms: u64,

    /// Largest metadata string an offset commit may carry, bytes.
    #[arg(long, env = "SKIFF_OFFSET_METADATA_MAX_BYTES", default_value_t = 4096)]
    pub offset_metadata_max_bytes: usize,

    /// An idempotent producer that has not written to a partition for this long is
    /// forgotten there, ms; its next batch is accepted as from a new producer.
    #[arg(
        long,
        env = "SKIFF_PRODUCER_ID_EXPIRATION_MS",
        default_value_t = 86_400_000
    )]
    pub producer_id_expiration_ms: u64,

    /// How often idle producer ids are looked for, ms.
    #[arg(
        long,
        env = "SKIFF_PRODUCER_ID_EXPIRATION_CHECK_INTERVAL_MS",
        default_value_t = 600_000
    )]
    pub producer_id_expiration_check_interval_ms: u64,
}

/// A listener address, `NAME://host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub name: String,
    pub host: String,
    pub port: u16,
}

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: expected `key=value`, got {text:?}")]
    FileSyntax {
        path: PathBuf,
        line: usize,
        text: String,
    },
    #[error("{path}:{line}: unknown setting {key:?} (see `skiff-broker --help`)")]
    UnknownKey {
        path: PathBuf,
        line: usize,
        key: String,
    },
    #[error("invalid listener {0:?}: expected NAME://host:port")]
    Listener(String),
    #[error(
        "listener {0:?}: only PLAINTEXT is supported so far; refusing to start rather than ignore a security setting"
    )]
    UnsupportedSecurity(String),
    #[error("invalid setting: {0}")]
    Invalid(String),
    #[error(transparent)]
    Cli(#[from] clap::Error),
}

impl BrokerConfig {
    /// Parses flags and environment, filling gaps from the `--config` file.
    ///
    /// # Errors
    /// A file that cannot be read, an unknown key in it, or a value clap rejects.
    pub fn load_from<I, T>(args: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
        let first = Self::try_parse_from(&args)?;
        let Some(path) = first.config.clone() else {
            first.validate()?;
            return Ok(first);
        };
        let file = read_properties(&path)?;
        // File values sit below flags and environment: they only become flags
        // when neither a flag nor an environment variable already set them.
        let command = <Self as clap::CommandFactory>::command();
        let mut extra: Vec<std::ffi::OsString> = Vec::new();
        for (line, key, value) in file {
            let flag = key.replace('.', "-");
            let Some(arg) = command
                .get_arguments()
                .find(|a| a.get_long() == Some(flag.as_str()))
            else {
                return Err(ConfigError::UnknownKey {
                    path: path.clone(),
                    line,
                    key,
                });
            };
            let on_command_line = args.iter().skip(1).any(|a| {
                let a = a.to_string_lossy();
                a == format!("--{flag}") || a.starts_with(&format!("--{flag}="))
            });
            let in_env = arg
                .get_env()
                .is_some_and(|name| std::env::var_os(name).is_some());
            if !on_command_line && !in_env {
                extra.push(format!("--{flag}={value}").into());
            }
        }
        let mut merged = args.clone();
        merged.extend(extra);
        let config = Self::try_parse_from(merged)?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.listeners()?;
        self.advertised_listeners()?;
        if self.num_partitions < 1 {
            return Err(ConfigError::Invalid(
                "num.partitions must be at least 1".into(),
            ));
        }
        if !(1..=1000).contains(&self.offsets_topic_num_partitions) {
            return Err(ConfigError::Invalid(
                "offsets.topic.num.partitions must be between 1 and 1000".into(),
            ));
        }
        if self.group_min_session_timeout_ms > self.group_max_session_timeout_ms {
            return Err(ConfigError::Invalid(
                "group.min.session.timeout.ms must not exceed group.max.session.timeout.ms".into(),
            ));
        }
        if self.socket_request_max_bytes < 1024 {
            return Err(ConfigError::Invalid(
                "socket.request.max.bytes must be at least 1024".into(),
            ));
        }
        let mut defaults = BTreeMap::new();
        for (name, value) in self.topic_defaults() {
            defaults.insert(name.to_string(), value);
        }
        crate::topic_config::TopicConfig::resolve(&defaults, &BTreeMap::new())
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        Ok(())
    }

    /// The listeners to bind.
    pub fn listeners(&self) -> Result<Vec<Listener>, ConfigError> {
        parse_listeners(&self.listeners)
    }

    /// The listeners clients are told about, in the same order as [`Self::listeners`].
    pub fn advertised_listeners(&self) -> Result<Vec<Listener>, ConfigError> {
        match &self.advertised_listeners {
            Some(s) => parse_listeners(s),
            None => self.listeners(),
        }
    }

    /// Broker-wide defaults of topic configs, as (topic config name, value).
    pub fn topic_defaults(&self) -> Vec<(&'static str, String)> {
        vec![
            ("cleanup.policy", "delete".to_string()),
            ("retention.ms", self.log_retention_ms.to_string()),
            ("retention.bytes", self.log_retention_bytes.to_string()),
            ("segment.bytes", self.log_segment_bytes.to_string()),
            ("segment.ms", self.log_roll_ms.to_string()),
            ("max.message.bytes", self.message_max_bytes.to_string()),
            ("min.insync.replicas", self.min_insync_replicas.to_string()),
            (
                "message.timestamp.type",
                self.log_message_timestamp_type.clone(),
            ),
            (
                "flush.messages",
                self.log_flush_interval_messages
                    .unwrap_or(i64::MAX)
                    .to_string(),
            ),
            ("flush.ms", self.log_flush_interval_ms.to_string()),
            (
                "index.interval.bytes",
                self.log_index_interval_bytes.to_string(),
            ),
            ("compression.type", "producer".to_string()),
        ]
    }
}

fn parse_listeners(s: &str) -> Result<Vec<Listener>, ConfigError> {
    let mut out = Vec::new();
    for item in s.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, rest) = item
            .split_once("://")
            .ok_or_else(|| ConfigError::Listener(item.to_string()))?;
        let (host, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| ConfigError::Listener(item.to_string()))?;
        let port: u16 = port
            .parse()
            .map_err(|_| ConfigError::Listener(item.to_string()))?;
        if name != "PLAINTEXT" {
            return Err(ConfigError::UnsupportedSecurity(item.to_string()));
        }
        out.push(Listener {
            name: name.to_string(),
            host: host.trim_matches(['[', ']']).to_string(),
            port,
        });
    }
    if out.is_empty() {
        return Err(ConfigError::Listener(s.to_string()));
    }
    Ok(out)
}

/// Reads `key=value` lines; returns (line number, key, value).
fn read_properties(path: &Path) -> Result<Vec<(usize, String, String)>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
        path: path.to_path_buf(),
        source,
    })?;
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            return Err(ConfigError::FileSyntax {
                path: path.to_path_buf(),
                line: i + 1,
                text: raw.to_string(),
            });
        };
        out.push((i + 1, k.trim().to_string(), v.trim().to_string()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_values_fill_gaps_but_flags_win() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.properties");
        std::fs::write(
            &path,
            "# comment\nlog.retention.ms=1000\nnum.partitions = 3\nnode.id=7\n",
        )
        .unwrap();
        let c = BrokerConfig::load_from([
            "skiff-broker",
            "--config",
            path.to_str().unwrap(),
            "--node-id",
            "2",
        ])
        .unwrap();
        assert_eq!(c.log_retention_ms, 1000);
        assert_eq!(c.num_partitions, 3);
        assert_eq!(c.node_id, 2);
    }

    #[test]
    fn unknown_file_key_is_an_error_naming_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p");
        std::fs::write(&path, "\nno.such.thing=1\n").unwrap();
        let err = BrokerConfig::load_from(["skiff-broker", "--config", path.to_str().unwrap()])
            .unwrap_err();
        assert!(err.to_string().contains(":2:"), "{err}");
    }

    #[test]
    fn tls_listener_is_refused_not_ignored() {
        let err = BrokerConfig::load_from(["skiff-broker", "--listeners", "SSL://0.0.0.0:9093"])
            .unwrap_err();
        assert!(matches!(err, ConfigError::UnsupportedSecurity(_)));
    }

    #[test]
    fn listeners_parse() {
        let l = parse_listeners("PLAINTEXT://127.0.0.1:9092, PLAINTEXT://[::1]:9093").unwrap();
        assert_eq!(l[1].host, "::1");
        assert_eq!(l[1].port, 9093);
        assert!(parse_listeners("PLAINTEXT://nohost").is_err());
    }

    #[test]
    fn bad_timestamp_type_is_refused() {
        let err =
            BrokerConfig::load_from(["skiff-broker", "--log-message-timestamp-type", "Sometimes"])
                .unwrap_err();
        assert!(err.to_string().contains("message.timestamp.type"), "{err}");
    }
}
