//! DescribeCluster: this broker, as the whole cluster and its controller.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use super::metadata::ALL_CLUSTER_OPS;

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
    let ep = ctx.endpoint();
    resp.with_cluster_id(StrBytes::from_string(broker.cluster_id.clone()))
        .with_controller_id(BrokerId(broker.node_id()))
        .with_brokers(vec![
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(broker.node_id()))
                .with_host(StrBytes::from_string(ep.host.clone()))
                .with_port(i32::from(ep.port))
                .with_rack(broker.config.broker_rack.clone().map(StrBytes::from_string)),
        ])
        .with_cluster_authorized_operations(if req.include_cluster_authorized_operations {
            ALL_CLUSTER_OPS
        } else {
            i32::MIN
        })
}
