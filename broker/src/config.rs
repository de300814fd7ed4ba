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

    /// A file holding this broker's rack, which replaces `--broker-rack`. The
    /// broker waits at start until the file exists and is not empty. On
    /// Kubernetes the operator writes it from a label of the pod's node.
    #[arg(long, env = "SKIFF_BROKER_RACK_FILE")]
    pub broker_rack_file: Option<PathBuf>,

    /// Comma-separated listeners to bind, `NAME://host:port`. A listener's security
    /// protocol is its name when the name is one of PLAINTEXT, SSL, SASL_PLAINTEXT,
    /// SASL_SSL, otherwise what `--listener-security-protocol-map` gives for it.
    #[arg(
        long,
        env = "SKIFF_LISTENERS",
        default_value = "PLAINTEXT://127.0.0.1:9092"
    )]
    pub listeners: String,

    /// Comma-separated addresses clients are told to connect to, `NAME://host:port`,
    /// matched to `--listeners` by name (a client is told the address of the listener
    /// it came in on); a listener not named here advertises its bind address.
    /// On Kubernetes, the pod's stable DNS name.
    #[arg(long, env = "SKIFF_ADVERTISED_LISTENERS")]
    pub advertised_listeners: Option<String>,

    /// A file of `NAME://host:port` entries (commas or lines) that replace the
    /// `--advertised-listeners` entries of the same name; a host-less entry
    /// (`NAME://:31234`) changes only the port. The broker waits at start
    /// until the file exists and is not empty. On Kubernetes the operator
    /// writes it once a broker's LoadBalancer/NodePort address is known.
    #[arg(long, env = "SKIFF_ADVERTISED_LISTENERS_FILE")]
    pub advertised_listeners_file: Option<PathBuf>,

    /// Kafka's `NAME:PROTOCOL` pairs, comma-separated (e.g. `INTERNAL:SASL_SSL,EXTERNAL:SSL`),
    /// for listeners whose name is not itself a security protocol.
    #[arg(long, env = "SKIFF_LISTENER_SECURITY_PROTOCOL_MAP")]
    pub listener_security_protocol_map: Option<String>,

    /// PEM file with the server certificate chain (leaf first) of SSL and SASL_SSL
    /// listeners. Re-read when its modification time changes: new connections get
    /// the new certificate, open ones keep theirs.
    #[arg(long, env = "SKIFF_SSL_CERT_FILE")]
    pub ssl_cert_file: Option<PathBuf>,

    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1) of `--ssl-cert-file`.
    #[arg(long, env = "SKIFF_SSL_KEY_FILE")]
    pub ssl_key_file: Option<PathBuf>,

    /// PEM file with the CA certificates trusted to sign client certificates
    /// (needed when `--ssl-client-auth` is `requested` or `required`).
    #[arg(long, env = "SKIFF_SSL_CA_FILE")]
    pub ssl_ca_file: Option<PathBuf>,

    /// Client certificates on SSL and SASL_SSL listeners: `none`, `requested`
    /// (verified when sent) or `required`. On an SSL listener a verified client
    /// certificate names the connection's principal.
    #[arg(long, env = "SKIFF_SSL_CLIENT_AUTH", default_value = "none")]
    pub ssl_client_auth: String,

    /// How a client certificate's subject becomes a principal: `CN` gives
    /// `User:<common name>`, `DN` gives `User:<whole subject, RFC 4514>`
    /// (e.g. `User:CN=app,O=team-a`).
    #[arg(long, env = "SKIFF_SSL_PRINCIPAL_MAPPING", default_value = "CN")]
    pub ssl_principal_mapping: String,

    /// How often the certificate and key files are checked for changes, ms.
    #[arg(long, env = "SKIFF_SSL_RELOAD_INTERVAL_MS", default_value_t = 10_000)]
    pub ssl_reload_interval_ms: u64,

    /// SASL mechanisms offered on SASL listeners, comma-separated, from PLAIN,
    /// SCRAM-SHA-256, SCRAM-SHA-512. PLAIN checks the password against the user's
    /// stored SCRAM credential (no second password store).
    #[arg(
        long,
        env = "SKIFF_SASL_ENABLED_MECHANISMS",
        default_value = "SCRAM-SHA-256,SCRAM-SHA-512,PLAIN"
    )]
    pub sasl_enabled_mechanisms: String,

    /// Principals with every right, `;`-separated as in Kafka (`User:admin;User:ops`).
    /// Without `--authorizer-enabled`, only they may describe or change SCRAM credentials
    /// when set.
    #[arg(long, env = "SKIFF_SUPER_USERS")]
    pub super_users: Option<String>,

    /// Authorize every request against ACLs (CreateAcls/DescribeAcls/DeleteAcls).
    /// Off, every authenticated principal may do everything and the ACL APIs
    /// answer SECURITY_DISABLED, as Kafka without an authorizer.
    #[arg(long, env = "SKIFF_AUTHORIZER_ENABLED", default_value_t = false, action = clap::ArgAction::Set)]
    pub authorizer_enabled: bool,

    /// With the authorizer on, allow an operation on a resource that no ACL
    /// names at all (Kafka's `allow.everyone.if.no.acl.found`).
    #[arg(long, env = "SKIFF_ALLOW_EVERYONE_IF_NO_ACL_FOUND", default_value_t = false, action = clap::ArgAction::Set)]
    pub allow_everyone_if_no_acl_found: bool,

    /// Samples kept by each quota's rate (Kafka's `quota.window.num`).
    #[arg(long, env = "SKIFF_QUOTA_WINDOW_NUM", default_value_t = 11)]
    pub quota_window_num: usize,

    /// Length of one quota rate sample, seconds (Kafka's `quota.window.size.seconds`).
    #[arg(long, env = "SKIFF_QUOTA_WINDOW_SIZE_SECONDS", default_value_t = 1)]
    pub quota_window_size_seconds: u64,

    /// A file of `user:password` lines: each user gets a SCRAM-SHA-256 and a
    /// SCRAM-SHA-512 credential at start for each of the two it has none for (the
    /// way to create the first admin). Existing credentials are left alone, so
    /// later changes made with AlterUserScramCredentials stick.
    #[arg(long, env = "SKIFF_SCRAM_BOOTSTRAP_USERS_FILE")]
    pub scram_bootstrap_users_file: Option<PathBuf>,

    /// Delay before answering a failed authentication, ms; it doubles with each
    /// further failure from the same address within a minute (up to 5 s).
    #[arg(
        long,
        env = "SKIFF_CONNECTION_FAILED_AUTHENTICATION_DELAY_MS",
        default_value_t = 100
    )]
    pub connection_failed_authentication_delay_ms: u64,

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

    /// Replication factor of a topic that names none (topics of 2 or more are replicated through Raft).
    #[arg(long, env = "SKIFF_DEFAULT_REPLICATION_FACTOR", default_value_t = 1)]
    pub default_replication_factor: i16,

    /// Largest request a client may send, in bytes.
    #[arg(
        long,
        env = "SKIFF_SOCKET_REQUEST_MAX_BYTES",
        default_value_t = 104_857_600
    )]
    pub socket_request_max_bytes: u32,

    /// A client connection with no request in progress and nothing read or
    /// written for this long is closed (Kafka's `connections.max.idle.ms`);
    /// clients connect again when they next need to. 0 keeps idle
    /// connections open.
    #[arg(long, env = "SKIFF_CONNECTIONS_MAX_IDLE_MS", default_value_t = 600_000)]
    pub connections_max_idle_ms: u64,

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

    /// Replicas of each `__consumer_offsets` partition in a cluster, when
    /// the topic is created (at the first FindCoordinator). Capped at the
    /// number of metadata voters, so a cluster of one or two brokers gets
    /// one it can hold; until that many brokers have registered, groups get
    /// COORDINATOR_NOT_AVAILABLE (clients retry), so the topic is never
    /// created with fewer replicas because the first broker came up alone.
    #[arg(
        long,
        env = "SKIFF_OFFSETS_TOPIC_REPLICATION_FACTOR",
        default_value_t = 3
    )]
    pub offsets_topic_replication_factor: i16,

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

    /// The metadata Raft group's voters, `id@host:port,...` (host:port is the
    /// voter's `--rpc-listener`). Unset: a single broker with local metadata.
    /// Set: this broker joins the cluster, as a voter when listed, otherwise
    /// as a learner. Three voters is the usual choice.
    #[arg(long, env = "SKIFF_CONTROLLER_QUORUM_VOTERS")]
    pub controller_quorum_voters: Option<String>,

    /// Address the broker-to-broker gRPC server binds (cluster mode only).
    #[arg(long, env = "SKIFF_RPC_LISTENER", default_value = "127.0.0.1:19092")]
    pub rpc_listener: String,

    /// Address other brokers reach this broker's gRPC server at; defaults to
    /// `--rpc-listener`. On Kubernetes, the pod's stable DNS name.
    #[arg(long, env = "SKIFF_RPC_ADVERTISED_LISTENER")]
    pub rpc_advertised_listener: Option<String>,

    /// A file holding the secret the brokers of the cluster share (at least
    /// 16 printable characters; surrounding whitespace is ignored). Set, every
    /// request to a peer carries it and a peer's request without it is
    /// refused. Unset, broker-to-broker requests are not authenticated.
    #[arg(long, env = "SKIFF_RPC_PEER_TOKEN_FILE")]
    pub rpc_peer_token_file: Option<PathBuf>,

    /// With a peer token: whether a peer's request without any token is
    /// refused (one with another token always is). `false` serves brokers
    /// that do not send one yet, for the roll that introduces the token.
    #[arg(
        long,
        env = "SKIFF_RPC_PEER_TOKEN_REQUIRED",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub rpc_peer_token_required: bool,

    /// Metadata Raft heartbeat interval, ms.
    #[arg(long, env = "SKIFF_METADATA_RAFT_HEARTBEAT_MS", default_value_t = 150)]
    pub metadata_raft_heartbeat_ms: u64,

    /// Metadata Raft election timeout, ms: a follower that hears no leader for a
    /// random time between this and twice this starts an election.
    #[arg(
        long,
        env = "SKIFF_METADATA_RAFT_ELECTION_TIMEOUT_MS",
        default_value_t = 1000
    )]
    pub metadata_raft_election_timeout_ms: u64,

    /// Partition Raft heartbeat interval, ms. Longer than the metadata
    /// group's: every replicated partition is a group, and idle groups'
    /// heartbeats are most of an idle cluster's CPU.
    #[arg(long, env = "SKIFF_PARTITION_RAFT_HEARTBEAT_MS", default_value_t = 500)]
    pub partition_raft_heartbeat_ms: u64,

    /// Partition Raft election timeout, ms: a follower that hears no leader
    /// for a random time between this and twice this starts an election
    /// (it bounds the failover time of a partition).
    #[arg(
        long,
        env = "SKIFF_PARTITION_RAFT_ELECTION_TIMEOUT_MS",
        default_value_t = 2000
    )]
    pub partition_raft_election_timeout_ms: u64,

    /// Bytes per second this broker sends, over all partitions it leads, to
    /// the replicas a reassignment is adding while they catch up (Kafka's
    /// `leader.replication.throttled.rate`). The default, 9223372036854775807,
    /// means no limit. Also a dynamic broker config: a value set with
    /// (Incremental)AlterConfigs for this broker, or cluster-wide, wins.
    #[arg(
        long,
        env = "SKIFF_LEADER_REPLICATION_THROTTLED_RATE",
        default_value_t = 9_223_372_036_854_775_807
    )]
    pub leader_replication_throttled_rate: u64,

    /// Move each partition's leadership back to its preferred replica (the
    /// first) when that replica is in sync (a hand-over: the partition's
    /// writes pause for about twice `partition.raft.election.timeout.ms`).
    #[arg(
        long,
        env = "SKIFF_AUTO_LEADER_REBALANCE_ENABLE",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub auto_leader_rebalance_enable: bool,

    /// On SIGTERM, before stopping, hand every partition this broker leads
    /// to an in-sync replica (Kafka's controlled shutdown), so clients move
    /// to the new leaders at once instead of waiting out the followers'
    /// lease (7–9 s) after the process is gone.
    #[arg(
        long,
        env = "SKIFF_CONTROLLED_SHUTDOWN_ENABLE",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub controlled_shutdown_enable: bool,

    /// How often a broker looks for partitions it leads whose preferred
    /// replica is another, in sync one.
    #[arg(
        long,
        env = "SKIFF_LEADER_IMBALANCE_CHECK_INTERVAL_SECONDS",
        default_value_t = 300
    )]
    pub leader_imbalance_check_interval_seconds: u64,

    /// Metadata log entries after which the state is snapshotted and the log
    /// before it purged.
    #[arg(
        long,
        env = "SKIFF_METADATA_SNAPSHOT_INTERVAL_ENTRIES",
        default_value_t = 1000
    )]
    pub metadata_snapshot_interval_entries: u64,

    /// How long a metadata write (CreateTopics, config changes...) waits for
    /// the metadata leader and its commit before failing with REQUEST_TIMED_OUT, ms.
    #[arg(
        long,
        env = "SKIFF_METADATA_WRITE_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub metadata_write_timeout_ms: u64,

    /// How long the metadata leader waits without any answer from a broker
    /// before fencing it: clients are no longer told about a fenced broker
    /// (Metadata, FindCoordinator), and new replicas are not placed on it,
    /// until it answers again, ms.
    #[arg(long, env = "SKIFF_BROKER_SESSION_TIMEOUT_MS", default_value_t = 9_000)]
    pub broker_session_timeout_ms: u64,
}

/// A listener address, `NAME://host:port`, and its security protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub protocol: SecurityProtocol,
}

/// Kafka's four listener security protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "PLAINTEXT" => Some(Self::Plaintext),
            "SSL" => Some(Self::Ssl),
            "SASL_PLAINTEXT" => Some(Self::SaslPlaintext),
            "SASL_SSL" => Some(Self::SaslSsl),
            _ => None,
        }
    }

    pub fn uses_tls(self) -> bool {
        matches!(self, Self::Ssl | Self::SaslSsl)
    }

    pub fn uses_sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }
}

/// `--ssl-client-auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    None,
    Requested,
    Required,
}

/// `--ssl-principal-mapping`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrincipalMapping {
    CommonName,
    DistinguishedName,
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
        "listener {0:?}: its name is not a security protocol (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL) and listener.security.protocol.map does not name one for it"
    )]
    UnknownSecurityProtocol(String),
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
        let mut first = Self::try_parse_from(&args)?;
        let Some(path) = first.config.clone() else {
            first.advertised_listeners = crate::advertised::resolve(
                first.advertised_listeners.take(),
                first.advertised_listeners_file.as_deref(),
            )?;
            first.broker_rack = crate::pod_files::rack(
                first.broker_rack.take(),
                first.broker_rack_file.as_deref(),
            )?;
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
        let mut config = Self::try_parse_from(merged)?;
        config.advertised_listeners = crate::advertised::resolve(
            config.advertised_listeners.take(),
            config.advertised_listeners_file.as_deref(),
        )?;
        config.broker_rack = crate::pod_files::rack(
            config.broker_rack.take(),
            config.broker_rack_file.as_deref(),
        )?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let listeners = self.listeners()?;
        self.advertised_listeners()?;
        self.ssl_client_auth()?;
        self.ssl_principal_mapping()?;
        self.super_users()?;
        let mechanisms = self.sasl_mechanisms()?;
        if listeners.iter().any(|l| l.protocol.uses_sasl()) && mechanisms.is_empty() {
            return Err(ConfigError::Invalid(
                "a SASL listener is configured but sasl.enabled.mechanisms is empty".into(),
            ));
        }
        if listeners.iter().any(|l| l.protocol.uses_tls())
            && (self.ssl_cert_file.is_none() || self.ssl_key_file.is_none())
        {
            return Err(ConfigError::Invalid(
                "an SSL/SASL_SSL listener needs ssl.cert.file and ssl.key.file".into(),
            ));
        }
        if self.ssl_client_auth()? != ClientAuth::None && self.ssl_ca_file.is_none() {
            return Err(ConfigError::Invalid(
                "ssl.client.auth requested/required needs ssl.ca.file (the CAs clients' certificates are checked against)".into(),
            ));
        }
        if self.num_partitions < 1 {
            return Err(ConfigError::Invalid(
                "num.partitions must be at least 1".into(),
            ));
        }
        if !(1..=16).contains(&self.offsets_topic_replication_factor) {
            return Err(ConfigError::Invalid(
                "offsets.topic.replication.factor must be between 1 and 16".into(),
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
        if let Some(v) = &self.controller_quorum_voters {
            let voters = crate::cluster::metadata_group::parse_voters(v)
                .map_err(|e| ConfigError::Invalid(format!("controller.quorum.voters: {e}")))?;
            if voters.is_empty() {
                return Err(ConfigError::Invalid(
                    "controller.quorum.voters names no voter".into(),
                ));
            }
            if self.node_id < 0 {
                return Err(ConfigError::Invalid(
                    "node.id must not be negative in a cluster".into(),
                ));
            }
            if self.metadata_raft_heartbeat_ms == 0
                || self.metadata_raft_election_timeout_ms <= self.metadata_raft_heartbeat_ms
            {
                return Err(ConfigError::Invalid(
                    "metadata.raft.election.timeout.ms must exceed metadata.raft.heartbeat.ms (> 0)"
                        .into(),
                ));
            }
            if self.partition_raft_heartbeat_ms == 0
                || self.partition_raft_election_timeout_ms <= self.partition_raft_heartbeat_ms
            {
                return Err(ConfigError::Invalid(
                    "partition.raft.election.timeout.ms must exceed partition.raft.heartbeat.ms (> 0)"
                        .into(),
                ));
            }
        }
        let mut defaults = BTreeMap::new();
        for (name, value) in self.topic_defaults() {
            defaults.insert(name.to_string(), value);
        }
        crate::topic_config::TopicConfig::resolve(&defaults, &BTreeMap::new())
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        Ok(())
    }

    /// The RPC address other brokers use for this one.
    pub fn rpc_advertised(&self) -> String {
        self.rpc_advertised_listener
            .clone()
            .unwrap_or_else(|| self.rpc_listener.clone())
    }

    /// The listeners to bind.
    pub fn listeners(&self) -> Result<Vec<Listener>, ConfigError> {
        let map = parse_protocol_map(self.listener_security_protocol_map.as_deref())?;
        let out = parse_listeners(&self.listeners, &map)?;
        for (i, l) in out.iter().enumerate() {
            if out[..i].iter().any(|o| o.name == l.name) {
                return Err(ConfigError::Invalid(format!(
                    "listener name {} is used twice",
                    l.name
                )));
            }
        }
        Ok(out)
    }

    /// The address each listener advertises, in the order of [`Self::listeners`]:
    /// the `--advertised-listeners` entry of the same name, else the bind address.
    pub fn advertised_listeners(&self) -> Result<Vec<Listener>, ConfigError> {
        let bound = self.listeners()?;
        let Some(s) = &self.advertised_listeners else {
            return Ok(bound);
        };
        let map = parse_protocol_map(self.listener_security_protocol_map.as_deref())?;
        let advertised = parse_listeners(s, &map)?;
        if let Some(stray) = advertised
            .iter()
            .find(|a| !bound.iter().any(|b| b.name == a.name))
        {
            return Err(ConfigError::Invalid(format!(
                "advertised listener {} names no listener in `listeners`",
                stray.name
            )));
        }
        Ok(bound
            .into_iter()
            .map(|b| {
                advertised
                    .iter()
                    .find(|a| a.name == b.name)
                    .cloned()
                    .unwrap_or(b)
            })
            .collect())
    }

    pub fn ssl_client_auth(&self) -> Result<ClientAuth, ConfigError> {
        match self.ssl_client_auth.to_ascii_lowercase().as_str() {
            "none" => Ok(ClientAuth::None),
            "requested" => Ok(ClientAuth::Requested),
            "required" => Ok(ClientAuth::Required),
            other => Err(ConfigError::Invalid(format!(
                "ssl.client.auth must be none, requested or required, not {other:?}"
            ))),
        }
    }

    pub fn ssl_principal_mapping(&self) -> Result<PrincipalMapping, ConfigError> {
        match self.ssl_principal_mapping.to_ascii_uppercase().as_str() {
            "CN" => Ok(PrincipalMapping::CommonName),
            "DN" => Ok(PrincipalMapping::DistinguishedName),
            other => Err(ConfigError::Invalid(format!(
                "ssl.principal.mapping must be CN or DN, not {other:?}"
            ))),
        }
    }

    /// The enabled SASL mechanisms, as Kafka names them.
    pub fn sasl_mechanisms(&self) -> Result<Vec<&'static str>, ConfigError> {
        let mut out = Vec::new();
        for m in self
            .sasl_enabled_mechanisms
            .split(',')
            .map(str::trim)
            .filter(|m| !m.is_empty())
        {
            let known = crate::auth::MECHANISMS
                .iter()
                .find(|k| k.eq_ignore_ascii_case(m))
                .ok_or_else(|| {
                    ConfigError::Invalid(format!(
                        "sasl.enabled.mechanisms: {m:?} is not one of {}",
                        crate::auth::MECHANISMS.join(", ")
                    ))
                })?;
            if !out.contains(known) {
                out.push(*known);
            }
        }
        Ok(out)
    }

    /// `--super-users` as principal strings (`User:name`).
    pub fn super_users(&self) -> Result<Vec<String>, ConfigError> {
        let mut out = Vec::new();
        for p in self
            .super_users
            .as_deref()
            .unwrap_or("")
            .split(';')
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            if !p.starts_with("User:") || p.len() == "User:".len() {
                return Err(ConfigError::Invalid(format!(
                    "super.users: {p:?} is not a principal of the form User:name"
                )));
            }
            out.push(p.to_string());
        }
        Ok(out)
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

/// Parses `NAME:PROTOCOL,...`.
fn parse_protocol_map(s: Option<&str>) -> Result<Vec<(String, SecurityProtocol)>, ConfigError> {
    let mut out = Vec::new();
    for item in s
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let bad = || {
            ConfigError::Invalid(format!(
                "listener.security.protocol.map entry {item:?}: expected NAME:PROTOCOL with PROTOCOL one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"
            ))
        };
        let (name, proto) = item.split_once(':').ok_or_else(bad)?;
        let proto = SecurityProtocol::parse(proto.trim()).ok_or_else(bad)?;
        out.push((name.trim().to_string(), proto));
    }
    Ok(out)
}

fn parse_listeners(
    s: &str,
    map: &[(String, SecurityProtocol)],
) -> Result<Vec<Listener>, ConfigError> {
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
        if name.is_empty() {
            return Err(ConfigError::Listener(item.to_string()));
        }
        let protocol = map
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| *p)
            .or_else(|| SecurityProtocol::parse(name))
            .ok_or_else(|| ConfigError::UnknownSecurityProtocol(item.to_string()))?;
        out.push(Listener {
            protocol,
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
    fn tls_listener_without_a_certificate_is_refused_not_ignored() {
        let err = BrokerConfig::load_from(["skiff-broker", "--listeners", "SSL://0.0.0.0:9093"])
            .unwrap_err();
        assert!(err.to_string().contains("ssl.cert.file"), "{err}");
    }

    #[test]
    fn sasl_listener_without_mechanisms_is_refused() {
        let err = BrokerConfig::load_from([
            "skiff-broker",
            "--listeners",
            "SASL_PLAINTEXT://0.0.0.0:9093",
            "--sasl-enabled-mechanisms",
            "",
        ])
        .unwrap_err();
        assert!(err.to_string().contains("mechanisms"), "{err}");
        assert!(
            BrokerConfig::load_from(["skiff-broker", "--sasl-enabled-mechanisms", "GSSAPI"])
                .is_err()
        );
    }

    #[test]
    fn listeners_parse() {
        let l = parse_listeners("PLAINTEXT://127.0.0.1:9092, SASL_SSL://[::1]:9093", &[]).unwrap();
        assert_eq!(l[1].host, "::1");
        assert_eq!(l[1].port, 9093);
        assert_eq!(l[1].protocol, SecurityProtocol::SaslSsl);
        assert!(parse_listeners("PLAINTEXT://nohost", &[]).is_err());
        assert!(matches!(
            parse_listeners("INTERNAL://h:1", &[]),
            Err(ConfigError::UnknownSecurityProtocol(_))
        ));
    }

    #[test]
    fn named_listeners_take_their_protocol_from_the_map_and_advertise_by_name() {
        let c = BrokerConfig::load_from([
            "skiff-broker",
            "--listeners",
            "INTERNAL://0.0.0.0:9092,EXTERNAL://0.0.0.0:9093",
            "--listener-security-protocol-map",
            "INTERNAL:SASL_PLAINTEXT,EXTERNAL:PLAINTEXT",
            "--advertised-listeners",
            "EXTERNAL://kafka.example.com:443",
        ])
        .unwrap();
        let l = c.listeners().unwrap();
        assert_eq!(l[0].protocol, SecurityProtocol::SaslPlaintext);
        assert_eq!(l[1].protocol, SecurityProtocol::Plaintext);
        let a = c.advertised_listeners().unwrap();
        assert_eq!((a[0].host.as_str(), a[0].port), ("0.0.0.0", 9092));
        assert_eq!((a[1].host.as_str(), a[1].port), ("kafka.example.com", 443));
        let err = BrokerConfig::load_from([
            "skiff-broker",
            "--advertised-listeners",
            "OTHER://h:1",
            "--listener-security-protocol-map",
            "OTHER:SSL",
        ])
        .unwrap_err();
        assert!(err.to_string().contains("OTHER"), "{err}");
    }

    #[test]
    fn super_users_are_principals() {
        let c =
            BrokerConfig::load_from(["skiff-broker", "--super-users", "User:a; User:b"]).unwrap();
        assert_eq!(c.super_users().unwrap(), vec!["User:a", "User:b"]);
        assert!(BrokerConfig::load_from(["skiff-broker", "--super-users", "admin"]).is_err());
    }

    #[test]
    fn bad_timestamp_type_is_refused() {
        let err =
            BrokerConfig::load_from(["skiff-broker", "--log-message-timestamp-type", "Sometimes"])
                .unwrap_err();
        assert!(err.to_string().contains("message.timestamp.type"), "{err}");
    }
}
