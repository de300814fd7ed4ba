//! DescribeCluster: the brokers (fenced ones only when v2 asks) and the
//! controller.
//! As in Kafka, anyone may ask; the cluster's authorized operations are
//! reported only to a principal that may DESCRIBE the cluster (0 to others).

use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use super::metadata::ALL_CLUSTER_OPS;
use crate::acl::ResourceType;

/// `endpoint_type` 1 asks for brokers, 2 for controllers (KIP-919).
const BROKERS: i8 = 1;

pub async fn handle(
    ctx: &RequestContext<'_>,
    req: DescribeClusterRequest,
) -> DescribeClusterResponse {
    let broker = ctx.broker;
    let resp = DescribeClusterResponse::default().with_endpoint_type(req.endpoint_type);
    if ctx.version >= 1 && req.endpoint_type != BROKERS {
        super::count_error(ctx, "DescribeCluster", "unsupported_endpoint_type");
        return resp
            .with_error_code(ResponseError::UnsupportedEndpointType.code())
            .with_error_message(Some(StrBytes::from_static_str(
                "only broker endpoints are served",
            )));
    }
    // v2 may ask for fenced brokers too, marked as such.
    let include_fenced = ctx.version >= 2 && req.include_fenced_brokers;
    let brokers = crate::cluster::routing::endpoints(broker, ctx.endpoint(), include_fenced)
        .into_iter()
        .map(|b| {
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(b.id))
                .with_host(StrBytes::from_string(b.host))
                .with_port(i32::from(b.port))
                .with_rack(b.rack.map(StrBytes::from_string))
                .with_is_fenced(b.fenced)
        })
        .collect();
    resp.with_cluster_id(StrBytes::from_string(broker.cluster_id.clone()))
        .with_controller_id(BrokerId(crate::cluster::routing::controller_id(broker)))
        .with_brokers(brokers)
        .with_cluster_authorized_operations(if req.include_cluster_authorized_operations {
            super::metadata::authorized_ops(
                ctx,
                ResourceType::Cluster,
                crate::acl::CLUSTER_NAME,
                ALL_CLUSTER_OPS,
            )
        } else {
            i32::MIN
        })
}
