//! DescribeClientQuotas (v0-1): the quota entities matching a filter
//! (exact name, default entity, any specified name; strict or not) and
//! their values. Needs DESCRIBE_CONFIGS on the cluster.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_client_quotas_response::{EntityData, EntryData, ValueData};
use kafka_protocol::messages::{DescribeClientQuotasRequest, DescribeClientQuotasResponse};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use crate::acl::Operation;
use crate::quota::QuotaFilter;

pub async fn handle(
    ctx: &RequestContext<'_>,
    req: DescribeClientQuotasRequest,
) -> DescribeClientQuotasResponse {
    let fail = |code: ResponseError, label: &'static str, msg: String| {
        super::count_error(ctx, "DescribeClientQuotas", label);
        DescribeClientQuotasResponse::default()
            .with_error_code(code.code())
            .with_error_message(Some(StrBytes::from_string(msg)))
            .with_entries(None)
    };
    if !ctx.authorize_cluster(Operation::DescribeConfigs) {
        return fail(
            ResponseError::ClusterAuthorizationFailed,
            "cluster_authorization_failed",
            "DescribeClientQuotas needs DESCRIBE_CONFIGS on the cluster".into(),
        );
    }
    let filter = match QuotaFilter::from_wire(
        req.components.iter().map(|c| {
            (
                c.entity_type.as_str(),
                c.match_type,
                c._match.as_ref().map(|m| m.as_str()),
            )
        }),
        req.strict,
    ) {
        Ok(f) => f,
        Err(e) => return fail(ResponseError::InvalidRequest, "invalid_request", e.0),
    };
    let cfg = ctx.broker.quotas.config();
    let mut matching: Vec<_> = cfg.entries().filter(|(e, _)| filter.matches(e)).collect();
    matching.sort_by(|a, b| a.0.cmp(b.0));
    let entries = matching
        .into_iter()
        .map(|(e, values)| {
            EntryData::default()
                .with_entity(
                    e.components()
                        .into_iter()
                        .map(|(t, n)| {
                            EntityData::default()
                                .with_entity_type(StrBytes::from_static_str(t))
                                .with_entity_name(n.map(|n| StrBytes::from_string(n.to_string())))
                        })
                        .collect(),
                )
                .with_values(
                    values
                        .iter()
                        .map(|(k, v)| {
                            ValueData::default()
                                .with_key(StrBytes::from_string(k.clone()))
                                .with_value(*v)
                        })
                        .collect(),
                )
        })
        .collect();
    DescribeClientQuotasResponse::default()
        .with_error_message(None)
        .with_entries(Some(entries))
}
