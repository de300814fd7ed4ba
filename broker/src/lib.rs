//! The Skiff broker: a Kafka-compatible broker.
//!
//! - [`config`]: flags, environment and properties file; [`pod_files`]:
//!   settings read from files written after the pod started (Kubernetes):
//!   the rack, and advertised addresses ([`advertised`]).
//! - [`server`]: start-up, listeners, shutdown; [`connection`]: one client
//!   connection's frames; [`handlers`]: one module per Kafka API and the table
//!   that drives dispatch and ApiVersions.
//! - [`broker`]: shared state and background maintenance; [`cluster`]: the
//!   durable metadata and the topic table; [`partition`]: one partition's log
//!   and append signal (the log itself is the `skiff-log` crate);
//!   [`producer_state`]: idempotent producers' sequence numbers per partition;
//!   [`refused_batches`]: idempotent batches refused unwritten, so that none
//!   is written past the gap; [`producer_ids`]: durable producer id
//!   allocation for InitProducerId.
//! - [`topic_config`], [`config_entries`]: topic configs and how they are
//!   described; [`errors`]: the one mapping to Kafka error codes.
//! - [`groups`]: the consumer group coordinator and committed offsets in
//!   `__consumer_offsets`.
//! - [`auth`]: TLS certificates, SASL PLAIN/SCRAM, principals, SCRAM
//!   credentials.
//! - [`acl`]: ACLs and the authorization decision (pure); [`quota`]:
//!   client and tenant quotas, rates and throttle times.
//! - [`fuzzing`]: the fuzz targets' entry points.
//! - [`metrics`], [`http`]: Prometheus metrics and health endpoints.

pub mod acl;
pub mod advertised;
pub mod auth;
pub mod broker;
pub mod broker_dynamic;
pub mod cluster;
pub mod config;
pub mod config_entries;
pub mod connection;
pub mod errors;
pub mod fuzzing;
pub mod groups;
pub mod handlers;
pub mod http;
pub mod metrics;
pub mod partition;
pub mod pod_files;
pub mod producer_ids;
pub mod producer_state;
pub mod quota;
pub mod refused_batches;
pub mod replication;
pub mod rpc;
pub mod server;
pub mod topic_config;
