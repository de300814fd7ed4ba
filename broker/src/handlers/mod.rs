//! One module per Kafka API, and the one table — [`SUPPORTED`] — that drives
//! both dispatch and the ApiVersions answer, so the two cannot drift.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable};
use tracing::debug;

use crate::acl::{Operation, ResourceType};
use crate::auth::Session;
use crate::broker::Broker;
use crate::config::Listener;
use crate::connection::ListenerInfo;

mod alter_client_quotas;
mod alter_configs;
mod alter_partition_reassignments;
mod alter_user_scram_credentials;
mod api_versions;
mod config_resource;
mod create_acls;
mod create_partitions;
mod create_topics;
mod delete_acls;
mod delete_groups;
mod delete_topics;
mod describe_acls;
mod describe_client_quotas;
mod describe_cluster;
mod describe_configs;
mod describe_groups;
mod describe_log_dirs;
mod describe_user_scram_credentials;
mod elect_leaders;
mod fetch;
mod find_coordinator;
mod heartbeat;
mod incremental_alter_configs;
mod init_producer_id;
mod join_group;
mod leave_group;
mod list_groups;
mod list_offsets;
mod list_partition_reassignments;
mod metadata;
mod offset_commit;
mod offset_delete;
mod offset_fetch;
mod produce;
mod sasl_authenticate;
mod sasl_handshake;
mod sync_group;
mod throttle;
mod unregister_broker;
mod unsupported;

/// What a handler needs to know about the request beyond its body.
pub struct RequestContext<'a> {
    pub broker: &'a Arc<Broker>,
    pub version: i16,
    pub client_id: Option<&'a str>,
    pub peer: SocketAddr,
    /// The listener the request came in on.
    pub listener: &'a ListenerInfo,
    /// The connection's security state; its principal is who is asking.
    /// Never hold the lock across an await.
    pub session: &'a parking_lot::Mutex<Session>,
    /// The API's metric label.
    pub api: &'static str,
    /// The longest throttle a quota asked for while handling this request,
    /// in microseconds (handlers run on any worker, so not a Cell).
    throttle_us: AtomicU64,
    /// A pipelined Produce's place in its connection's order.
    submit_order: parking_lot::Mutex<Option<SubmitOrder>>,
}

/// A pipelined Produce's place in its connection (see `crate::connection`):
/// it hands its batches to the partitions only after the request before it
/// did, then lets the next one go, so a connection's batches reach each
/// partition in request order even though their commits overlap.
pub struct SubmitOrder {
    /// Resolves (or is dropped) once the previous request submitted.
    after: Option<tokio::sync::oneshot::Receiver<()>>,
    /// Dropped once this request submitted.
    done: Option<tokio::sync::oneshot::Sender<()>>,
}

impl SubmitOrder {
    /// The order of a request after the one whose `done` pairs with `after`.
    pub fn new(
        after: Option<tokio::sync::oneshot::Receiver<()>>,
        done: tokio::sync::oneshot::Sender<()>,
    ) -> Self {
        Self {
            after,
            done: Some(done),
        }
    }

    /// Waits until the previous request has submitted its batches.
    pub async fn wait_turn(&mut self) {
        if let Some(after) = self.after.take() {
            // An error only means the previous request is gone: go ahead.
            let _ = after.await;
        }
    }
}

impl Drop for SubmitOrder {
    /// Dropped without its turn (the request failed before submitting):
    /// the next request still waits for the previous one.
    fn drop(&mut self) {
        if let (Some(after), Some(done)) = (self.after.take(), self.done.take()) {
            tokio::spawn(async move {
                let _ = after.await;
                drop(done);
            });
        }
    }
}

impl RequestContext<'_> {
    /// The request's place in its connection's pipeline, once.
    pub fn take_submit_order(&self) -> Option<SubmitOrder> {
        self.submit_order.lock().take()
    }

    /// This broker's address as advertised on the listener of this request.
    pub fn endpoint(&self) -> &Listener {
        &self.listener.advertised
    }

    /// Who is asking, `User:name`.
    pub fn principal(&self) -> String {
        self.session.lock().principal.to_string()
    }

    /// Whether the caller may do `op` on (`rt`, `name`); a denial goes to
    /// the audit log and the denial counter.
    /// Whether this broker coordinates `group` now (NOT_COORDINATOR or
    /// COORDINATOR_LOAD_IN_PROGRESS otherwise).
    ///
    /// # Errors
    /// As [`crate::groups::Groups::check_coordinator`].
    pub fn coordinates(&self, group: &str) -> Result<(), crate::errors::BrokerError> {
        if group.is_empty() {
            // The API's own check answers INVALID_GROUP_ID.
            return Ok(());
        }
        self.broker
            .groups
            .check_coordinator(&self.broker.topics, group)
    }

    pub fn authorize(&self, op: Operation, rt: ResourceType, name: &str) -> bool {
        let authz = &self.broker.authorizer;
        if !authz.enabled {
            return true;
        }
        let principal = self.principal();
        let host = self.peer.ip().to_string();
        let ok = authz.allowed(&principal, &host, op, rt, name);
        if !ok {
            self.audit_denial(&principal, op, rt, name);
        }
        ok
    }

    /// As [`Self::authorize`] without the audit entry: for filtering what a
    /// listing shows, which Kafka does not log either.
    pub fn authorize_quietly(&self, op: Operation, rt: ResourceType, name: &str) -> bool {
        let authz = &self.broker.authorizer;
        !authz.enabled
            || authz.allowed(&self.principal(), &self.peer.ip().to_string(), op, rt, name)
    }

    /// The cluster resource.
    pub fn authorize_cluster(&self, op: Operation) -> bool {
        self.authorize(op, ResourceType::Cluster, crate::acl::CLUSTER_NAME)
    }

    /// Whether the caller may do `op` on some resource of type `rt`
    /// (audited as a denial on `rt` `*` when not).
    pub fn authorize_any(&self, op: Operation, rt: ResourceType) -> bool {
        let authz = &self.broker.authorizer;
        if !authz.enabled {
            return true;
        }
        let principal = self.principal();
        let ok = authz.allowed_any(&principal, &self.peer.ip().to_string(), op, rt);
        if !ok {
            self.audit_denial(&principal, op, rt, "*");
        }
        ok
    }

    fn audit_denial(&self, principal: &str, op: Operation, rt: ResourceType, name: &str) {
        self.broker
            .metrics
            .authorization_denials
            .with_label_values(&[self.api, &op.to_string(), &rt.to_string()])
            .inc();
        tracing::warn!(
            target: "audit",
            principal,
            operation = %op,
            resource_type = %rt,
            resource = name,
            source = %self.peer,
            api = self.api,
            listener = %self.listener.name,
            "authorization denied"
        );
    }

    /// Records `amount` of `kind` against the caller's quotas and keeps the
    /// longest throttle asked for.
    pub fn record_quota(&self, kind: crate::quota::QuotaKind, amount: f64) {
        if let Some(t) = throttle::record(self, kind, amount) {
            let us = u64::try_from(t.as_micros()).unwrap_or(u64::MAX);
            self.throttle_us.fetch_max(us, Ordering::Relaxed);
        }
    }

    /// KIP-599's strict mode (CreateTopics v6+, CreatePartitions v3+,
    /// DeleteTopics v5+, whose clients back off on the error): while the
    /// caller's controller mutation quota is already exceeded, a mutation is
    /// refused with THROTTLING_QUOTA_EXCEEDED. Within the quota it goes ahead
    /// and is recorded afterwards, even if that takes the rate over, as in
    /// Kafka. Older versions are never refused, only throttled.
    pub fn admit_mutation(&self, strict: bool) -> crate::errors::Result<()> {
        if !strict || self.broker.quotas.config().is_empty() {
            return Ok(());
        }
        match throttle::record(self, crate::quota::QuotaKind::ControllerMutation, 0.0) {
            Some(t) => {
                let us = u64::try_from(t.as_micros()).unwrap_or(u64::MAX);
                self.throttle_us.fetch_max(us, Ordering::Relaxed);
                Err(crate::errors::BrokerError::ThrottlingQuotaExceeded(
                    u64::try_from(t.as_millis()).unwrap_or(u64::MAX),
                ))
            }
            None => Ok(()),
        }
    }

    /// The longest throttle quotas asked for so far.
    pub fn throttle(&self) -> Duration {
        Duration::from_micros(self.throttle_us.load(Ordering::Relaxed))
    }
}

/// What the connection does with a request.
pub enum Outcome {
    /// Write this (complete frame, size prefix included).
    Respond(BytesMut),
    /// Send nothing (a Produce with acks=0).
    Silent,
    /// The request cannot be understood: log and close the connection.
    Close(String),
    /// The request is not allowed on this connection now (before SASL
    /// authentication): log and close, as Kafka does.
    Refuse(String),
}

macro_rules! apis {
    ($( $key:ident => $module:ident :: $req:ty, $min:literal ..= $max:literal; )*) => {
        /// Every API this broker implements, with the versions it serves.
        pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[ $( (ApiKey::$key, $min, $max), )* ];

        async fn call(ctx: &RequestContext<'_>, key: ApiKey, correlation_id: i32, started: Instant, body: &mut Bytes) -> Result<Option<BytesMut>, String> {
            match key {
                $( ApiKey::$key => {
                    let req = <$req>::decode(body, ctx.version).map_err(|e| e.to_string())?;
                    let expects_response = response_expected(&req);
                    let mut resp = $module::handle(ctx, req).await;
                    throttle::finish(ctx, started, &mut resp);
                    if !expects_response {
                        return Ok(None);
                    }
                    encode_frame(key, ctx.version, correlation_id, &resp).map(Some)
                } )*
                _ => Err(format!("{key:?} is not implemented")),
            }
        }

        /// Decodes a request body of `key`/`version` exactly as dispatch
        /// does, without handling it (the fuzz targets' entry).
        fn decode_body(key: ApiKey, version: i16, body: &mut Bytes) -> Result<(), String> {
            match key {
                $( ApiKey::$key => <$req>::decode(body, version).map(|_| ()).map_err(|e| e.to_string()), )*
                _ => Err(format!("{key:?} is not implemented")),
            }
        }
    };
}

/// Parses a request frame (without its size prefix) the way [`dispatch`]
/// does — API key and version, the table's version range, the request
/// header, the body — and nothing more. Malformed input is an `Err`, never
/// a panic; this is what the fuzz targets drive.
///
/// # Errors
/// Why the frame would close the connection or be refused.
pub fn decode_request(frame: &[u8]) -> Result<ApiKey, String> {
    if frame.len() < 8 {
        return Err("frame too short".into());
    }
    let raw_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let key = ApiKey::try_from(raw_key).map_err(|_| format!("unknown API key {raw_key}"))?;
    if !supported_range(key).is_some_and(|(min, max)| (min..=max).contains(&version)) {
        return Err(format!("{key:?} v{version} is not supported"));
    }
    let mut body = Bytes::copy_from_slice(frame);
    RequestHeader::decode(&mut body, key.request_header_version(version))
        .map_err(|e| e.to_string())?;
    decode_body(key, version, &mut body)?;
    Ok(key)
}

apis! {
    Produce => produce::ProduceRequest, 3..=11;
    Fetch => fetch::FetchRequest, 4..=16;
    ListOffsets => list_offsets::ListOffsetsRequest, 1..=10;
    Metadata => metadata::MetadataRequest, 0..=12;
    ApiVersions => api_versions::ApiVersionsRequest, 0..=3;
    CreateTopics => create_topics::CreateTopicsRequest, 2..=7;
    DeleteTopics => delete_topics::DeleteTopicsRequest, 1..=6;
    DescribeConfigs => describe_configs::DescribeConfigsRequest, 1..=4;
    AlterConfigs => alter_configs::AlterConfigsRequest, 0..=2;
    CreatePartitions => create_partitions::CreatePartitionsRequest, 0..=3;
    IncrementalAlterConfigs => incremental_alter_configs::IncrementalAlterConfigsRequest, 0..=1;
    DescribeCluster => describe_cluster::DescribeClusterRequest, 0..=2;
    FindCoordinator => find_coordinator::FindCoordinatorRequest, 0..=4;
    JoinGroup => join_group::JoinGroupRequest, 0..=9;
    SyncGroup => sync_group::SyncGroupRequest, 0..=5;
    Heartbeat => heartbeat::HeartbeatRequest, 0..=4;
    LeaveGroup => leave_group::LeaveGroupRequest, 0..=5;
    OffsetCommit => offset_commit::OffsetCommitRequest, 2..=9;
    OffsetFetch => offset_fetch::OffsetFetchRequest, 1..=9;
    ListGroups => list_groups::ListGroupsRequest, 0..=5;
    DescribeGroups => describe_groups::DescribeGroupsRequest, 0..=5;
    DeleteGroups => delete_groups::DeleteGroupsRequest, 0..=2;
    OffsetDelete => offset_delete::OffsetDeleteRequest, 0..=0;
    InitProducerId => init_producer_id::InitProducerIdRequest, 0..=5;
    SaslHandshake => sasl_handshake::SaslHandshakeRequest, 0..=1;
    SaslAuthenticate => sasl_authenticate::SaslAuthenticateRequest, 0..=2;
    DescribeUserScramCredentials => describe_user_scram_credentials::DescribeUserScramCredentialsRequest, 0..=0;
    AlterUserScramCredentials => alter_user_scram_credentials::AlterUserScramCredentialsRequest, 0..=0;
    DescribeAcls => describe_acls::DescribeAclsRequest, 1..=3;
    CreateAcls => create_acls::CreateAclsRequest, 1..=3;
    DeleteAcls => delete_acls::DeleteAclsRequest, 1..=3;
    DescribeClientQuotas => describe_client_quotas::DescribeClientQuotasRequest, 0..=1;
    AlterClientQuotas => alter_client_quotas::AlterClientQuotasRequest, 0..=1;
    AlterPartitionReassignments => alter_partition_reassignments::AlterPartitionReassignmentsRequest, 0..=1;
    ListPartitionReassignments => list_partition_reassignments::ListPartitionReassignmentsRequest, 0..=0;
    UnregisterBroker => unregister_broker::UnregisterBrokerRequest, 0..=0;
    ElectLeaders => elect_leaders::ElectLeadersRequest, 0..=2;
    DescribeLogDirs => describe_log_dirs::DescribeLogDirsRequest, 1..=4;
}

/// Produce with acks=0 is the one request Kafka never answers.
fn response_expected<T: 'static>(req: &T) -> bool {
    (req as &dyn std::any::Any)
        .downcast_ref::<ProduceRequest>()
        .is_none_or(|p| p.acks != 0)
}

fn supported_range(key: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|&(_, min, max)| (min, max))
}

/// Handles one request frame (without its size prefix).
pub async fn dispatch(
    broker: &Arc<Broker>,
    listener: &ListenerInfo,
    session: &parking_lot::Mutex<Session>,
    peer: SocketAddr,
    frame: Bytes,
    submit_order: Option<SubmitOrder>,
) -> Outcome {
    let started = Instant::now();
    if frame.len() < 8 {
        return Outcome::Close(format!(
            "frame of {} bytes is too short for a request header",
            frame.len()
        ));
    }
    let raw_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let Ok(key) = ApiKey::try_from(raw_key) else {
        return Outcome::Close(format!("unknown API key {raw_key}"));
    };
    if !session.lock().authenticated
        && !matches!(
            key,
            ApiKey::ApiVersions | ApiKey::SaslHandshake | ApiKey::SaslAuthenticate
        )
    {
        return Outcome::Refuse(format!(
            "{key:?} request before SASL authentication completed"
        ));
    }
    let supported = supported_range(key);
    if !supported.is_some_and(|(min, max)| (min..=max).contains(&version)) {
        return unsupported::respond(broker, key, version, correlation_id, supported, &frame);
    }

    let mut body = frame;
    let header_version = key.request_header_version(version);
    let header = match RequestHeader::decode(&mut body, header_version) {
        Ok(h) => h,
        Err(e) => return Outcome::Close(format!("bad {key:?} v{version} request header: {e}")),
    };
    let client_id = header.client_id.as_ref().map(|s| s.as_str());
    let label = api_label(key);
    let ctx = RequestContext {
        broker,
        version,
        client_id,
        peer,
        listener,
        session,
        api: label,
        throttle_us: AtomicU64::new(0),
        submit_order: parking_lot::Mutex::new(submit_order),
    };
    if key == ApiKey::Produce {
        // Kafka meters a produce request's whole size.
        ctx.record_quota(crate::quota::QuotaKind::Produce, body.len() as f64);
        // Said at once, not when answered: a connection with Produce requests
        // in flight reads no further one once a throttle is due.
        let throttle = ctx.throttle();
        if !throttle.is_zero() {
            let mut session = session.lock();
            session.mute_for = session.mute_for.max(throttle);
        }
    }
    let result = call(&ctx, key, correlation_id, started, &mut body).await;
    // KIP-219: the connection reads nothing more until the throttle ends.
    // Pipelined requests finish in any order: the connection mutes for the
    // longest throttle among those answered since it last looked.
    {
        let mut session = session.lock();
        session.mute_for = session.mute_for.max(ctx.throttle());
    }
    let m = &broker.metrics;
    m.requests.with_label_values(&[label]).inc();
    m.request_latency
        .with_label_values(&[label])
        .observe(started.elapsed().as_secs_f64());
    match result {
        Err(reason) => Outcome::Close(format!("bad {key:?} v{version} request: {reason}")),
        Ok(None) => Outcome::Silent,
        Ok(Some(frame)) => {
            debug!(api = label, version, correlation_id, "answered");
            Outcome::Respond(frame)
        }
    }
}

/// Encodes a whole response frame: size, header for `key`/`version`, body.
/// The buffer is sized once up front: a Fetch response can be tens of MiB,
/// and growing it (or copying it into a second buffer for the prefix) costs
/// more than everything else the broker does with those bytes.
///
/// # Errors
/// A response the codec refuses for this version (a handler bug).
pub fn encode_frame<T: Encodable>(
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &T,
) -> Result<BytesMut, String> {
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let header_version = key.response_header_version(version);
    let err = |e: anyhow::Error| format!("encoding {key:?} v{version} response: {e}");
    let size = header.compute_size(header_version).map_err(err)?
        + body.compute_size(version).map_err(err)?;
    let mut out = BytesMut::with_capacity(4 + size);
    out.extend_from_slice(&(size as u32).to_be_bytes());
    header.encode(&mut out, header_version).map_err(err)?;
    body.encode(&mut out, version).map_err(err)?;
    Ok(out)
}

/// A static name per API for metric labels.
pub fn api_label(key: ApiKey) -> &'static str {
    match key {
        ApiKey::Produce => "Produce",
        ApiKey::Fetch => "Fetch",
        ApiKey::ListOffsets => "ListOffsets",
        ApiKey::Metadata => "Metadata",
        ApiKey::ApiVersions => "ApiVersions",
        ApiKey::CreateTopics => "CreateTopics",
        ApiKey::DeleteTopics => "DeleteTopics",
        ApiKey::DescribeConfigs => "DescribeConfigs",
        ApiKey::AlterConfigs => "AlterConfigs",
        ApiKey::CreatePartitions => "CreatePartitions",
        ApiKey::IncrementalAlterConfigs => "IncrementalAlterConfigs",
        ApiKey::DescribeCluster => "DescribeCluster",
        ApiKey::FindCoordinator => "FindCoordinator",
        ApiKey::JoinGroup => "JoinGroup",
        ApiKey::SyncGroup => "SyncGroup",
        ApiKey::Heartbeat => "Heartbeat",
        ApiKey::LeaveGroup => "LeaveGroup",
        ApiKey::OffsetCommit => "OffsetCommit",
        ApiKey::OffsetFetch => "OffsetFetch",
        ApiKey::ListGroups => "ListGroups",
        ApiKey::DescribeGroups => "DescribeGroups",
        ApiKey::DeleteGroups => "DeleteGroups",
        ApiKey::OffsetDelete => "OffsetDelete",
        ApiKey::InitProducerId => "InitProducerId",
        ApiKey::SaslHandshake => "SaslHandshake",
        ApiKey::SaslAuthenticate => "SaslAuthenticate",
        ApiKey::DescribeUserScramCredentials => "DescribeUserScramCredentials",
        ApiKey::AlterUserScramCredentials => "AlterUserScramCredentials",
        ApiKey::DescribeAcls => "DescribeAcls",
        ApiKey::CreateAcls => "CreateAcls",
        ApiKey::DeleteAcls => "DeleteAcls",
        ApiKey::DescribeClientQuotas => "DescribeClientQuotas",
        ApiKey::AlterClientQuotas => "AlterClientQuotas",
        ApiKey::AlterPartitionReassignments => "AlterPartitionReassignments",
        ApiKey::ListPartitionReassignments => "ListPartitionReassignments",
        ApiKey::UnregisterBroker => "UnregisterBroker",
        ApiKey::ElectLeaders => "ElectLeaders",
        ApiKey::DescribeLogDirs => "DescribeLogDirs",
        _ => "Other",
    }
}

/// Counts an error returned to a client.
pub fn count_error(ctx: &RequestContext<'_>, api: &'static str, error: &'static str) {
    ctx.broker
        .metrics
        .request_errors
        .with_label_values(&[api, error])
        .inc();
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::oneshot;

    use super::SubmitOrder;

    #[tokio::test]
    async fn a_request_that_fails_before_its_turn_still_holds_back_the_next() {
        let (first_done, first_submitted) = oneshot::channel();
        let (second_done, second_submitted) = oneshot::channel();
        // The second request fails before submitting anything.
        drop(SubmitOrder::new(Some(first_submitted), second_done));
        let (third_done, _) = oneshot::channel();
        let mut third = SubmitOrder::new(Some(second_submitted), third_done);
        let waiting = tokio::spawn(async move { third.wait_turn().await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "the third went before the first");
        drop(first_done);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the third goes once the first submitted")
            .expect("task");
    }
}
