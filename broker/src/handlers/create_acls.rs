//! CreateAcls (v1-3): store each valid ACL, then add it to the live index.
//! Needs ALTER on the cluster; SECURITY_DISABLED without an authorizer.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::{CreateAclsRequest, CreateAclsResponse};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use crate::acl::{AclBinding, Operation};

fn failure(code: ResponseError, message: String) -> AclCreationResult {
    AclCreationResult::default()
        .with_error_code(code.code())
        .with_error_message(Some(StrBytes::from_string(message)))
}

pub async fn handle(ctx: &RequestContext<'_>, req: CreateAclsRequest) -> CreateAclsResponse {
    let n = req.creations.len();
    let all = |code: ResponseError, msg: &str| {
        super::count_error(ctx, "CreateAcls", code_label(code));
        CreateAclsResponse::default()
            .with_results((0..n).map(|_| failure(code, msg.to_string())).collect())
    };
    if let Some((code, msg)) = refusal(ctx, "CreateAcls", Operation::Alter) {
        return all(code, &msg);
    }
    let mut results = Vec::with_capacity(n);
    let mut valid = Vec::new();
    for c in &req.creations {
        match AclBinding::from_wire(
            c.resource_type,
            c.resource_name.as_str(),
            c.resource_pattern_type,
            c.principal.as_str(),
            c.host.as_str(),
            c.operation,
            c.permission_type,
        ) {
            Ok(acl) => {
                valid.push(acl);
                results.push(AclCreationResult::default().with_error_message(None));
            }
            Err(e) => {
                super::count_error(ctx, "CreateAcls", "invalid_request");
                results.push(failure(ResponseError::InvalidRequest, e.0));
            }
        }
    }
    if !valid.is_empty() {
        let broker = ctx.broker.clone();
        let to_store = valid.clone();
        let stored = tokio::task::spawn_blocking(move || broker.topics.store().put_acls(&to_store))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        if let Err(e) = stored {
            tracing::error!(error = %e, "storing ACLs failed");
            for r in results.iter_mut().filter(|r| r.error_code == 0) {
                *r = failure(
                    ResponseError::UnknownServerError,
                    format!("storing ACLs failed: {e}"),
                );
            }
            return CreateAclsResponse::default().with_results(results);
        }
        let mut idx = ctx.broker.authorizer.index_mut();
        for acl in valid {
            tracing::info!(target: "audit", principal = %ctx.principal(), source = %ctx.peer, acl = ?acl, "ACL created");
            idx.insert(acl);
        }
    }
    CreateAclsResponse::default().with_results(results)
}

/// Why an ACL API is refused outright, if it is: no authorizer on the broker
/// (SECURITY_DISABLED), or a caller without `op` on the cluster.
pub fn refusal(
    ctx: &RequestContext<'_>,
    api: &str,
    op: Operation,
) -> Option<(ResponseError, String)> {
    if !ctx.broker.authorizer.enabled {
        return Some((
            ResponseError::SecurityDisabled,
            "no authorizer is configured on the broker (--authorizer-enabled)".into(),
        ));
    }
    if !ctx.authorize_cluster(op) {
        return Some((
            ResponseError::ClusterAuthorizationFailed,
            format!(
                "{api} needs {} on the cluster",
                op.to_string().to_uppercase()
            ),
        ));
    }
    None
}

pub fn code_label(code: ResponseError) -> &'static str {
    match code {
        ResponseError::SecurityDisabled => "security_disabled",
        ResponseError::ClusterAuthorizationFailed => "cluster_authorization_failed",
        ResponseError::InvalidRequest => "invalid_request",
        _ => "unknown_server_error",
    }
}
