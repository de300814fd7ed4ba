//! DescribeAcls (v1-3): the ACLs matching a filter, grouped by resource
//! pattern. Needs DESCRIBE on the cluster.

use std::collections::BTreeMap;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::{DescribeAclsRequest, DescribeAclsResponse};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use super::create_acls::code_label;
use crate::acl::{AclFilter, Operation};

pub async fn handle(ctx: &RequestContext<'_>, req: DescribeAclsRequest) -> DescribeAclsResponse {
    let fail = |code: ResponseError, msg: String| {
        super::count_error(ctx, "DescribeAcls", code_label(code));
        DescribeAclsResponse::default()
            .with_error_code(code.code())
            .with_error_message(Some(StrBytes::from_string(msg)))
    };
    if let Some((code, msg)) = super::create_acls::refusal(ctx, "DescribeAcls", Operation::Describe)
    {
        return fail(code, msg);
    }
    let filter = match AclFilter::from_wire(
        req.resource_type_filter,
        req.resource_name_filter.as_ref().map(|s| s.as_str()),
        req.pattern_type_filter,
        req.principal_filter.as_ref().map(|s| s.as_str()),
        req.host_filter.as_ref().map(|s| s.as_str()),
        req.operation,
        req.permission_type,
    ) {
        Ok(f) => f,
        Err(e) => return fail(ResponseError::InvalidRequest, e.0),
    };
    let acls = ctx.broker.authorizer.index().matching(&filter);
    let mut grouped: BTreeMap<(i8, String, i8), Vec<AclDescription>> = BTreeMap::new();
    for a in acls {
        grouped
            .entry((
                a.resource_type.code(),
                a.resource_name.clone(),
                a.pattern_type.code(),
            ))
            .or_default()
            .push(
                AclDescription::default()
                    .with_principal(StrBytes::from_string(a.principal))
                    .with_host(StrBytes::from_string(a.host))
                    .with_operation(a.operation.code())
                    .with_permission_type(a.permission.code()),
            );
    }
    DescribeAclsResponse::default()
        .with_error_message(None)
        .with_resources(
            grouped
                .into_iter()
                .map(|((rt, name, pt), acls)| {
                    DescribeAclsResource::default()
                        .with_resource_type(rt)
                        .with_resource_name(StrBytes::from_string(name))
                        .with_pattern_type(pt)
                        .with_acls(acls)
                })
                .collect(),
        )
}
