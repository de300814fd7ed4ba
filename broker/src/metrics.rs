//! Prometheus metrics, all named `skiff_*`. One registry per broker so tests
//! can run several brokers in one process.

use prometheus::{
    CounterVec, Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    pub registry: Registry,
    pub bytes_in: IntCounterVec,
    pub bytes_out: IntCounterVec,
    pub messages_in: IntCounterVec,
    pub messages_out: IntCounterVec,
    pub requests: IntCounterVec,
    pub request_errors: IntCounterVec,
    pub request_latency: HistogramVec,
    pub connections_active: IntGauge,
    pub connections_total: IntCounter,
    pub connections_idle_closed: IntCounter,
    pub malformed_frames: IntCounter,
    pub log_size: IntGaugeVec,
    pub log_start_offset: IntGaugeVec,
    pub log_end_offset: IntGaugeVec,
    pub recovery_truncated_bytes: IntCounter,
    pub retention_deleted_segments: IntCounterVec,
    pub storage_errors: IntCounter,
    pub groups: IntGaugeVec,
    pub group_members: IntGaugeVec,
    pub group_rebalances: IntCounter,
    pub consumer_lag: IntGaugeVec,
    pub producer_ids: IntGauge,
    pub produce_duplicates: IntCounter,
    pub produce_pipelined: IntCounter,
    pub produce_out_of_order: IntCounter,
    pub produce_sequence_gaps: IntCounter,
    pub rpc_unauthenticated: IntCounter,
    pub producer_ids_expired: IntCounter,
    pub auth_failures: IntCounterVec,
    pub auth_successes: IntCounterVec,
    pub tls_handshake_failures: IntCounter,
    pub tls_reloads: IntCounter,
    pub unauthenticated_requests: IntCounter,
    pub metadata_raft_term: IntGauge,
    pub metadata_raft_applied_index: IntGauge,
    pub metadata_raft_leader: IntGauge,
    pub metadata_raft_elections: IntCounter,
    pub fenced_brokers: IntGauge,
    pub under_replicated_partitions: IntGauge,
    pub offline_partitions: IntGauge,
    pub reassignments_in_progress: IntGauge,
    pub partition_leaders: IntGauge,
    pub partition_replicas: IntGauge,
    pub replica_cache_bytes: IntGauge,
    pub partition_raft_term: IntGaugeVec,
    pub partition_raft_commit_lag: IntGaugeVec,
    pub partition_elections: IntCounter,
    pub authorization_denials: IntCounterVec,
    pub principal_bytes: IntCounterVec,
    pub principal_throttle: CounterVec,
    pub tenant_bytes: IntCounterVec,
    pub tenant_throttle: CounterVec,
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric definition");
    r.register(Box::new(g.clone()))
        .expect("metric registered once");
    g
}

fn float_counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> CounterVec {
    let c = CounterVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    r.register(Box::new(c.clone()))
        .expect("metric registered once");
    c
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    r.register(Box::new(c.clone()))
        .expect("metric registered once");
    c
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    r.register(Box::new(g.clone()))
        .expect("metric registered once");
    g
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric definition");
    r.register(Box::new(c.clone()))
        .expect("metric registered once");
    c
}

impl Metrics {
    /// Builds and registers every metric. The definitions are constants, so a
    /// failure here is a bug, not an input error.
    pub fn new() -> Self {
        let r = Registry::new();
        let request_latency = HistogramVec::new(
            HistogramOpts::new(
                "skiff_request_duration_seconds",
                "Time from a request's arrival to its response, per Kafka API",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["api"],
        )
        .expect("valid metric definition");
        r.register(Box::new(request_latency.clone()))
            .expect("metric registered once");
        let connections_active = IntGauge::new(
            "skiff_connections_active",
            "Client connections currently open",
        )
        .expect("valid metric definition");
        r.register(Box::new(connections_active.clone()))
            .expect("metric registered once");
        let producer_ids = IntGauge::new(
            "skiff_producer_ids",
            "Idempotent producer states held, summed over partitions",
        )
        .expect("valid metric definition");
        r.register(Box::new(producer_ids.clone()))
            .expect("metric registered once");
        Self {
            bytes_in: counter_vec(
                &r,
                "skiff_topic_bytes_in_total",
                "Record batch bytes produced, per topic",
                &["topic"],
            ),
            bytes_out: counter_vec(
                &r,
                "skiff_topic_bytes_out_total",
                "Record batch bytes fetched, per topic",
                &["topic"],
            ),
            messages_in: counter_vec(
                &r,
                "skiff_topic_messages_in_total",
                "Records produced, per topic",
                &["topic"],
            ),
            messages_out: counter_vec(
                &r,
                "skiff_topic_messages_out_total",
                "Records fetched, per topic",
                &["topic"],
            ),
            requests: counter_vec(
                &r,
                "skiff_requests_total",
                "Requests handled, per Kafka API",
                &["api"],
            ),
            request_errors: counter_vec(
                &r,
                "skiff_request_errors_total",
                "Errors returned to clients, per Kafka API and error",
                &["api", "error"],
            ),
            request_latency,
            connections_active,
            connections_total: counter(
                &r,
                "skiff_connections_total",
                "Client connections accepted",
            ),
            connections_idle_closed: counter(
                &r,
                "skiff_connections_idle_closed_total",
                "Client connections closed after connections.max.idle.ms without activity",
            ),
            malformed_frames: counter(
                &r,
                "skiff_malformed_frames_total",
                "Connections closed because a frame could not be decoded",
            ),
            log_size: gauge_vec(
                &r,
                "skiff_partition_log_size_bytes",
                "Bytes on disk, per partition",
                &["topic", "partition"],
            ),
            log_start_offset: gauge_vec(
                &r,
                "skiff_partition_log_start_offset",
                "First offset still stored, per partition",
                &["topic", "partition"],
            ),
            log_end_offset: gauge_vec(
                &r,
                "skiff_partition_log_end_offset",
                "Next offset to be written, per partition",
                &["topic", "partition"],
            ),
            recovery_truncated_bytes: counter(
                &r,
                "skiff_log_recovery_truncated_bytes_total",
                "Bytes cut from torn or corrupt segment tails at start-up",
            ),
            retention_deleted_segments: counter_vec(
                &r,
                "skiff_log_retention_deleted_segments_total",
                "Segments removed by retention, per topic",
                &["topic"],
            ),
            storage_errors: counter(
                &r,
                "skiff_storage_errors_total",
                "Writes that failed on the disk",
            ),
            groups: gauge_vec(&r, "skiff_groups", "Consumer groups, per state", &["state"]),
            group_members: gauge_vec(
                &r,
                "skiff_group_members",
                "Members of each consumer group",
                &["group"],
            ),
            group_rebalances: counter(
                &r,
                "skiff_group_rebalances_total",
                "Rebalances started, all groups",
            ),
            consumer_lag: gauge_vec(
                &r,
                "skiff_consumer_group_lag",
                "High watermark minus committed offset, per group and partition",
                &["group", "topic", "partition"],
            ),
            producer_ids,
            produce_duplicates: counter(
                &r,
                "skiff_produce_duplicates_total",
                "Retried producer batches answered with their original offsets, not stored again",
            ),
            produce_pipelined: counter(
                &r,
                "skiff_produce_pipelined_total",
                "Produce requests started while an earlier one of the same connection awaited its commit",
            ),
            produce_out_of_order: counter(
                &r,
                "skiff_produce_out_of_order_total",
                "Producer batches refused with OUT_OF_ORDER_SEQUENCE_NUMBER",
            ),
            rpc_unauthenticated: counter(
                &r,
                "skiff_rpc_unauthenticated_total",
                "Broker-to-broker requests refused for a missing or wrong peer token",
            ),
            produce_sequence_gaps: counter(
                &r,
                "skiff_produce_sequence_gaps_total",
                "Idempotent batches refused (retriable) because an earlier batch of their producer had not arrived",
            ),
            producer_ids_expired: counter(
                &r,
                "skiff_producer_ids_expired_total",
                "Partition producer states dropped after producer.id.expiration.ms idle",
            ),
            auth_failures: counter_vec(
                &r,
                "skiff_auth_failures_total",
                "Failed SASL authentications, per mechanism",
                &["mechanism"],
            ),
            auth_successes: counter_vec(
                &r,
                "skiff_auth_successes_total",
                "Successful SASL authentications, per mechanism",
                &["mechanism"],
            ),
            tls_handshake_failures: counter(
                &r,
                "skiff_tls_handshake_failures_total",
                "TLS handshakes that failed or timed out (untrusted client certificates among them)",
            ),
            tls_reloads: counter(
                &r,
                "skiff_tls_certificate_reloads_total",
                "Times changed certificate files were loaded for new connections",
            ),
            unauthenticated_requests: counter(
                &r,
                "skiff_unauthenticated_requests_total",
                "Connections closed for a request other than ApiVersions/SASL before SASL authentication",
            ),
            metadata_raft_term: gauge(
                &r,
                "skiff_metadata_raft_term",
                "Current term of this broker's metadata Raft replica (0 on a single broker)",
            ),
            metadata_raft_applied_index: gauge(
                &r,
                "skiff_metadata_raft_applied_index",
                "Last metadata log index committed and applied by this broker's replica",
            ),
            metadata_raft_leader: gauge(
                &r,
                "skiff_metadata_raft_leader",
                "Node id of the metadata Raft leader (the controller) as this broker sees it; -1 when none",
            ),
            metadata_raft_elections: counter(
                &r,
                "skiff_metadata_raft_elections_total",
                "Metadata Raft terms begun since this broker started (each began with an election)",
            ),
            fenced_brokers: gauge(
                &r,
                "skiff_fenced_brokers",
                "Registered brokers fenced in the cluster metadata (silent for broker.session.timeout.ms, or stopping)",
            ),
            under_replicated_partitions: gauge(
                &r,
                "skiff_under_replicated_partitions",
                "Replicated partitions led by this broker with fewer in-sync replicas than replicas",
            ),
            offline_partitions: gauge(
                &r,
                "skiff_offline_partitions",
                "Replicated partitions hosted by this broker whose Raft group has no leader",
            ),
            reassignments_in_progress: gauge(
                &r,
                "skiff_reassignments_in_progress",
                "Partition reassignments this broker is carrying out as the partitions' leader",
            ),
            partition_leaders: gauge(
                &r,
                "skiff_partition_leaders",
                "Partitions this broker leads (replicated ones by Raft, single-replica ones by assignment)",
            ),
            partition_replicas: gauge(
                &r,
                "skiff_partition_replicas",
                "Partition replicas this broker holds (replicated ones it hosts, new ones being added included, and single-replica ones assigned to it): a drained broker reaches 0",
            ),
            replica_cache_bytes: gauge(
                &r,
                "skiff_replica_cache_bytes",
                "Bytes of recent Raft entries held in memory so replication and apply need not read them back (bounded per broker)",
            ),
            partition_raft_term: gauge_vec(
                &r,
                "skiff_partition_raft_term",
                "Current Raft term (the Kafka leader epoch) of each partition replica hosted here",
                &["topic", "partition"],
            ),
            partition_raft_commit_lag: gauge_vec(
                &r,
                "skiff_partition_raft_commit_lag",
                "Entries in each hosted replica's log not yet committed and applied",
                &["topic", "partition"],
            ),
            partition_elections: counter(
                &r,
                "skiff_partition_elections_total",
                "Partition Raft terms begun on replicas hosted here since start (each began with an election)",
            ),
            authorization_denials: counter_vec(
                &r,
                "skiff_authorization_denials_total",
                "Requests or parts of requests refused by the authorizer, per API, operation and resource type",
                &["api", "operation", "resource_type"],
            ),
            principal_bytes: counter_vec(
                &r,
                "skiff_principal_bytes_total",
                "Produce request bytes (in) and fetched bytes (out), per principal",
                &["principal", "direction"],
            ),
            principal_throttle: float_counter_vec(
                &r,
                "skiff_principal_throttle_seconds_total",
                "Throttle time quotas imposed, per principal and quota",
                &["principal", "quota"],
            ),
            tenant_bytes: counter_vec(
                &r,
                "skiff_tenant_bytes_total",
                "Produce request bytes (in) and fetched bytes (out), per tenant (a tenant quota's principal prefix)",
                &["tenant", "direction"],
            ),
            tenant_throttle: float_counter_vec(
                &r,
                "skiff_tenant_throttle_seconds_total",
                "Throttle time quotas imposed on a tenant's principals, per tenant and quota",
                &["tenant", "quota"],
            ),
            registry: r,
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
