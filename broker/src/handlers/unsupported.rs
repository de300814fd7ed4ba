//! Requests for APIs or versions this broker does not serve.
//!
//! Clients only send what ApiVersions advertised, so these are rare; still,
//! the answer is a well-formed response carrying UNSUPPORTED_VERSION wherever
//! the response has a top-level error code, never a silent drop. An ApiVersions
//! request of a newer version gets the v0 answer with the supported list, as
//! Kafka does, so the client can retry with a version both know.

use std::sync::Arc;

use bytes::BytesMut;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::*;

use super::{Outcome, api_versions, encode_frame};
use crate::broker::Broker;

const UNSUPPORTED: i16 = ResponseError::UnsupportedVersion.code();

macro_rules! error_response {
    ($key:expr, $version:expr, $correlation_id:expr, $( $api:ident => $resp:ty ),* $(,)?) => {
        match $key {
            $( ApiKey::$api => {
                let mut resp = <$resp>::default();
                resp.error_code = UNSUPPORTED;
                encode_frame($key, $version, $correlation_id, &resp).ok()
            } )*
            _ => None,
        }
    };
}

pub fn respond(
    broker: &Arc<Broker>,
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    supported: Option<(i16, i16)>,
    frame: &bytes::Bytes,
) -> Outcome {
    broker
        .metrics
        .request_errors
        .with_label_values(&[super::api_label(key), "unsupported_version"])
        .inc();
    if key == ApiKey::ApiVersions {
        let resp = api_versions::response(UNSUPPORTED);
        if let Ok(frame) = encode_frame(key, 0, correlation_id, &resp) {
            return Outcome::Respond(frame);
        }
    }
    if key == ApiKey::Produce
        && let Some(frame) = produce_error(version, correlation_id, frame)
    {
        return Outcome::Respond(frame);
    }
    let body = error_response!(key, version, correlation_id,
        Metadata => MetadataResponse,
        Fetch => FetchResponse,
        FindCoordinator => FindCoordinatorResponse,
        JoinGroup => JoinGroupResponse,
        Heartbeat => HeartbeatResponse,
        LeaveGroup => LeaveGroupResponse,
        SyncGroup => SyncGroupResponse,
        ListGroups => ListGroupsResponse,
        SaslHandshake => SaslHandshakeResponse,
        SaslAuthenticate => SaslAuthenticateResponse,
        InitProducerId => InitProducerIdResponse,
        AddOffsetsToTxn => AddOffsetsToTxnResponse,
        EndTxn => EndTxnResponse,
        DescribeAcls => DescribeAclsResponse,
        DescribeLogDirs => DescribeLogDirsResponse,
        DescribeClientQuotas => DescribeClientQuotasResponse,
        DescribeUserScramCredentials => DescribeUserScramCredentialsResponse,
        OffsetDelete => OffsetDeleteResponse,
        ListTransactions => ListTransactionsResponse,
        ConsumerGroupHeartbeat => ConsumerGroupHeartbeatResponse,
        GetTelemetrySubscriptions => GetTelemetrySubscriptionsResponse,
        PushTelemetry => PushTelemetryResponse,
    );
    match body {
        Some(frame) => Outcome::Respond(frame),
        None => Outcome::Close(match supported {
            Some((min, max)) => format!(
                "{key:?} v{version} is not supported (this broker serves v{min}-v{max}) and its response has no error field to say so"
            ),
            None => {
                format!("{key:?} is not implemented and its response has no error field to say so")
            }
        }),
    }
}

/// Produce has no top-level error code: answer every partition the request
/// names with UNSUPPORTED_VERSION, when the codec can read that version.
fn produce_error(version: i16, correlation_id: i32, frame: &bytes::Bytes) -> Option<BytesMut> {
    use kafka_protocol::messages::produce_response::{
        PartitionProduceResponse, TopicProduceResponse,
    };
    use kafka_protocol::protocol::Decodable;
    let mut body = frame.clone();
    RequestHeader::decode(&mut body, ApiKey::Produce.request_header_version(version)).ok()?;
    let req = ProduceRequest::decode(&mut body, version).ok()?;
    if req.acks == 0 {
        return None;
    }
    let resp = ProduceResponse::default().with_responses(
        req.topic_data
            .into_iter()
            .map(|t| {
                TopicProduceResponse::default()
                    .with_name(t.name)
                    .with_topic_id(t.topic_id)
                    .with_partition_responses(
                        t.partition_data
                            .iter()
                            .map(|p| {
                                PartitionProduceResponse::default()
                                    .with_index(p.index)
                                    .with_error_code(UNSUPPORTED)
                            })
                            .collect(),
                    )
            })
            .collect(),
    );
    encode_frame(ApiKey::Produce, version, correlation_id, &resp).ok()
}
