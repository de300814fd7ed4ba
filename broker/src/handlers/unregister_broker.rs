//! UnregisterBroker (v0): removes a broker from the cluster metadata once
//! it holds no replica (after a drain), so it can be taken away. Needs
//! ALTER on the cluster. A broker that starts again registers itself again.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{UnregisterBrokerRequest, UnregisterBrokerResponse};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use crate::acl::Operation;
use crate::cluster::meta_state::{MetaCommand, MetaResponse};

pub async fn handle(
    ctx: &RequestContext<'_>,
    req: UnregisterBrokerRequest,
) -> UnregisterBrokerResponse {
    let resp = UnregisterBrokerResponse::default().with_error_message(None);
    let fail = |code: ResponseError, label: &'static str, msg: String| {
        super::count_error(ctx, "UnregisterBroker", label);
        resp.clone()
            .with_error_code(code.code())
            .with_error_message(Some(StrBytes::from_string(msg)))
    };
    if !ctx.authorize_cluster(Operation::Alter) {
        return fail(
            ResponseError::ClusterAuthorizationFailed,
            "cluster_authorization_failed",
            "UnregisterBroker needs ALTER on the cluster".into(),
        );
    }
    let Some(meta) = ctx.broker.topics.store().group() else {
        return fail(
            ResponseError::InvalidRequest,
            "invalid_request",
            "a single broker cannot be unregistered".into(),
        );
    };
    let id = req.broker_id.0;
    match meta
        .write(MetaCommand::UnregisterBroker { node_id: id })
        .await
    {
        Ok(MetaResponse::Removed(true)) => resp,
        Ok(MetaResponse::Refused(why)) => {
            fail(ResponseError::InvalidRequest, "invalid_request", why)
        }
        Ok(_) => fail(
            ResponseError::BrokerIdNotRegistered,
            "broker_id_not_registered",
            format!("broker {id} is not registered"),
        ),
        Err(e) => fail(
            ResponseError::RequestTimedOut,
            "request_timed_out",
            e.to_string(),
        ),
    }
}
