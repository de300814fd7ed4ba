//! Quota accounting around every request: bytes and request time are
//! recorded against the caller's client and tenant quotas, and the
//! resulting throttle goes into the response's `throttle_time_ms` (in the
//! versions that have it) and mutes the connection (KIP-219).

use std::time::{Duration, Instant};

use kafka_protocol::messages::*;

use super::RequestContext;
use crate::quota::{Client, QuotaKind};

/// A response with a `throttle_time_ms` field from some version on.
pub trait ThrottleTime {
    fn set_throttle_time_ms(&mut self, ms: i32, version: i16);
}

macro_rules! throttle_time {
    ($($resp:ty => $min:literal),* $(,)?) => {
        $( impl ThrottleTime for $resp {
            fn set_throttle_time_ms(&mut self, ms: i32, version: i16) {
                if version >= $min {
                    self.throttle_time_ms = ms;
                }
            }
        } )*
    };
}

throttle_time! {
    ProduceResponse => 1, FetchResponse => 1, ListOffsetsResponse => 2,
    MetadataResponse => 3, ApiVersionsResponse => 1, CreateTopicsResponse => 2,
    DeleteTopicsResponse => 1, DescribeConfigsResponse => 0, AlterConfigsResponse => 0,
    CreatePartitionsResponse => 0, IncrementalAlterConfigsResponse => 0,
    DescribeClusterResponse => 0, FindCoordinatorResponse => 1, JoinGroupResponse => 2,
    SyncGroupResponse => 1, HeartbeatResponse => 1, LeaveGroupResponse => 1,
    OffsetCommitResponse => 3, OffsetFetchResponse => 3, ListGroupsResponse => 1,
    DescribeGroupsResponse => 1, DeleteGroupsResponse => 0, OffsetDeleteResponse => 0,
    InitProducerIdResponse => 0, DescribeUserScramCredentialsResponse => 0,
    AlterUserScramCredentialsResponse => 0, DescribeAclsResponse => 0,
    CreateAclsResponse => 0, DeleteAclsResponse => 0, DescribeClientQuotasResponse => 0,
    AlterClientQuotasResponse => 0, AlterPartitionReassignmentsResponse => 0,
    ListPartitionReassignmentsResponse => 0, UnregisterBrokerResponse => 0,
    ElectLeadersResponse => 0, DescribeLogDirsResponse => 1,
}

// The SASL exchange has no throttle field and is never metered.
impl ThrottleTime for SaslHandshakeResponse {
    fn set_throttle_time_ms(&mut self, _: i32, _: i16) {}
}
impl ThrottleTime for SaslAuthenticateResponse {
    fn set_throttle_time_ms(&mut self, _: i32, _: i16) {}
}

/// The principal's name as quotas see it (`alice` of `User:alice`).
fn user_of(ctx: &RequestContext<'_>) -> String {
    ctx.session.lock().principal.name.clone()
}

/// Records `amount`; returns the throttle the quotas ask for, if any.
pub fn record(ctx: &RequestContext<'_>, kind: QuotaKind, amount: f64) -> Option<Duration> {
    let broker = ctx.broker;
    let user = user_of(ctx);
    let m = &broker.metrics;
    let principal = format!("User:{user}");
    let direction = match kind {
        QuotaKind::Produce => Some("in"),
        QuotaKind::Fetch => Some("out"),
        _ => None,
    };
    if let Some(d) = direction {
        m.principal_bytes
            .with_label_values(&[&principal, d])
            .inc_by(amount as u64);
    }
    let client = Client {
        user: &user,
        client_id: ctx.client_id.unwrap_or(""),
    };
    let t = broker.quotas.record(kind, client, amount, Instant::now());
    if let (Some(d), Some(tenant)) = (direction, &t.tenant) {
        m.tenant_bytes
            .with_label_values(&[tenant, d])
            .inc_by(amount as u64);
    }
    if !t.time.is_zero() {
        let secs = t.time.as_secs_f64();
        m.principal_throttle
            .with_label_values(&[&principal, kind.label()])
            .inc_by(secs);
        if let Some(tenant) = &t.tenant {
            m.tenant_throttle
                .with_label_values(&[tenant, kind.label()])
                .inc_by(secs);
        }
        return Some(t.time);
    }
    None
}

/// Records the request's handling time and writes the throttle into the
/// response.
pub fn finish<R: ThrottleTime>(ctx: &RequestContext<'_>, started: Instant, resp: &mut R) {
    // Not metered for request time: the SASL exchange, and the APIs that
    // park waiting (a long-polling Fetch, a JoinGroup/SyncGroup waiting for
    // the rebalance) -- their wall-clock time is not broker work, and Kafka
    // counts only thread time.
    let exempt = matches!(
        ctx.api,
        "SaslHandshake" | "SaslAuthenticate" | "ApiVersions" | "Fetch" | "JoinGroup" | "SyncGroup"
    );
    if !exempt && !ctx.broker.quotas.config().is_empty() {
        ctx.record_quota(QuotaKind::Request, started.elapsed().as_secs_f64() * 1000.0);
    }
    let t = ctx.throttle();
    if !t.is_zero() {
        let ms = i32::try_from(t.as_millis()).unwrap_or(i32::MAX);
        resp.set_throttle_time_ms(ms, ctx.version);
        tracing::debug!(api = ctx.api, throttle_ms = ms, peer = %ctx.peer, "throttled by quota");
    }
}
