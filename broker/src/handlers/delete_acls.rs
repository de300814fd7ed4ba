//! DeleteAcls (v1-3): remove every ACL matching each filter, answering
//! which were removed. Needs ALTER on the cluster.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use kafka_protocol::messages::{DeleteAclsRequest, DeleteAclsResponse};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use super::create_acls::code_label;
use crate::acl::{AclBinding, AclFilter, Operation};

fn failure(code: ResponseError, msg: String) -> DeleteAclsFilterResult {
    DeleteAclsFilterResult::default()
        .with_error_code(code.code())
        .with_error_message(Some(StrBytes::from_string(msg)))
}

pub async fn handle(ctx: &RequestContext<'_>, req: DeleteAclsRequest) -> DeleteAclsResponse {
    let n = req.filters.len();
    let all = |code: ResponseError, msg: &str| {
        super::count_error(ctx, "DeleteAcls", code_label(code));
        DeleteAclsResponse::default()
            .with_filter_results((0..n).map(|_| failure(code, msg.to_string())).collect())
    };
    if let Some((code, msg)) = super::create_acls::refusal(ctx, "DeleteAcls", Operation::Alter) {
        return all(code, &msg);
    }
    let mut results = Vec::with_capacity(n);
    // Each filter's matches, taken from one snapshot of the index.
    let mut matched: Vec<Option<Vec<AclBinding>>> = Vec::with_capacity(n);
    {
        let idx = ctx.broker.authorizer.index();
        for f in &req.filters {
            match AclFilter::from_wire(
                f.resource_type_filter,
                f.resource_name_filter.as_ref().map(|s| s.as_str()),
                f.pattern_type_filter,
                f.principal_filter.as_ref().map(|s| s.as_str()),
                f.host_filter.as_ref().map(|s| s.as_str()),
                f.operation,
                f.permission_type,
            ) {
                Ok(filter) => matched.push(Some(idx.matching(&filter))),
                Err(e) => {
                    super::count_error(ctx, "DeleteAcls", "invalid_request");
                    results.push(Some(failure(ResponseError::InvalidRequest, e.0)));
                    matched.push(None);
                    continue;
                }
            }
            results.push(None);
        }
    }
    let mut doomed: Vec<AclBinding> = matched.iter().flatten().flatten().cloned().collect();
    doomed.sort();
    doomed.dedup();
    if !doomed.is_empty() {
        let broker = ctx.broker.clone();
        let to_delete = doomed.clone();
        let stored =
            tokio::task::spawn_blocking(move || broker.topics.store().delete_acls(&to_delete))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()));
        if let Err(e) = stored {
            tracing::error!(error = %e, "deleting ACLs failed");
            return all(
                ResponseError::UnknownServerError,
                &format!("deleting ACLs failed: {e}"),
            );
        }
        let mut idx = ctx.broker.authorizer.index_mut();
        for acl in &doomed {
            tracing::info!(target: "audit", principal = %ctx.principal(), source = %ctx.peer, acl = ?acl, "ACL deleted");
            idx.remove(acl);
        }
    }
    let filter_results = results
        .into_iter()
        .zip(matched)
        .map(|(r, m)| match (r, m) {
            (Some(err), _) => err,
            (None, m) => DeleteAclsFilterResult::default()
                .with_error_message(None)
                .with_matching_acls(
                    m.unwrap_or_default()
                        .into_iter()
                        .map(|a| {
                            DeleteAclsMatchingAcl::default()
                                .with_error_message(None)
                                .with_resource_type(a.resource_type.code())
                                .with_resource_name(StrBytes::from_string(a.resource_name))
                                .with_pattern_type(a.pattern_type.code())
                                .with_principal(StrBytes::from_string(a.principal))
                                .with_host(StrBytes::from_string(a.host))
                                .with_operation(a.operation.code())
                                .with_permission_type(a.permission.code())
                        })
                        .collect(),
                ),
        })
        .collect();
    DeleteAclsResponse::default().with_filter_results(filter_results)
}
