//! AlterClientQuotas (v0-1): set or remove quota values of user,
//! client-id, user+client-id and (Skiff's) tenant entities. Needs
//! ALTER_CONFIGS on the cluster.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::alter_client_quotas_response::{EntityData, EntryData};
use kafka_protocol::messages::{AlterClientQuotasRequest, AlterClientQuotasResponse};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use crate::acl::Operation;
use crate::quota::{QuotaEntity, QuotaValues, validate_value};

pub async fn handle(
    ctx: &RequestContext<'_>,
    req: AlterClientQuotasRequest,
) -> AlterClientQuotasResponse {
    let authorized = ctx.authorize_cluster(Operation::AlterConfigs);
    let mut results = Vec::with_capacity(req.entries.len());
    let mut changes: Vec<(usize, QuotaEntity, QuotaValues)> = Vec::new();
    for entry in &req.entries {
        // Success is a null message, as Kafka sends it.
        let echo = EntryData::default().with_error_message(None).with_entity(
            entry
                .entity
                .iter()
                .map(|e| {
                    EntityData::default()
                        .with_entity_type(e.entity_type.clone())
                        .with_entity_name(e.entity_name.clone())
                })
                .collect(),
        );
        let fail = |code: ResponseError, msg: String| {
            super::count_error(
                ctx,
                "AlterClientQuotas",
                if code == ResponseError::InvalidRequest {
                    "invalid_request"
                } else {
                    "cluster_authorization_failed"
                },
            );
            echo.clone()
                .with_error_code(code.code())
                .with_error_message(Some(StrBytes::from_string(msg)))
        };
        if !authorized {
            results.push(fail(
                ResponseError::ClusterAuthorizationFailed,
                "AlterClientQuotas needs ALTER_CONFIGS on the cluster".into(),
            ));
            continue;
        }
        let entity = match QuotaEntity::from_wire(entry.entity.iter().map(|e| {
            (
                e.entity_type.as_str(),
                e.entity_name.as_ref().map(|n| n.as_str()),
            )
        })) {
            Ok(e) => e,
            Err(e) => {
                results.push(fail(ResponseError::InvalidRequest, e.0));
                continue;
            }
        };
        // Later entries in the same request see earlier ones' changes.
        let mut values = changes
            .iter()
            .rev()
            .find(|(_, e, _)| *e == entity)
            .map(|(_, _, v)| v.clone())
            .or_else(|| ctx.broker.quotas.config().get(&entity).cloned())
            .unwrap_or_default();
        let mut error = None;
        for (i, op) in entry.ops.iter().enumerate() {
            let key = op.key.as_str();
            if entry.ops[..i].iter().any(|o| o.key == op.key) {
                error = Some(format!("quota key {key:?} given twice"));
                break;
            }
            if op.remove {
                if let Err(e) = validate_value(key, 1.0) {
                    error = Some(e.0);
                    break;
                }
                values.remove(key);
            } else {
                if let Err(e) = validate_value(key, op.value) {
                    error = Some(e.0);
                    break;
                }
                values.insert(key.to_string(), op.value);
            }
        }
        if let Some(msg) = error {
            results.push(fail(ResponseError::InvalidRequest, msg));
            continue;
        }
        changes.push((results.len(), entity, values));
        results.push(echo);
    }
    if !req.validate_only && !changes.is_empty() {
        let broker = ctx.broker.clone();
        let to_store: Vec<(QuotaEntity, QuotaValues)> = changes
            .iter()
            .map(|(_, e, v)| (e.clone(), v.clone()))
            .collect();
        let stored =
            tokio::task::spawn_blocking(move || broker.topics.store().put_quotas(&to_store))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()));
        match stored {
            Ok(()) => {
                for (_, entity, values) in changes {
                    tracing::info!(target: "audit", principal = %ctx.principal(), source = %ctx.peer, entity = %entity, ?values, "client quota changed");
                    ctx.broker.quotas.set(entity, values);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "storing quotas failed");
                for (i, _, _) in changes {
                    let r = std::mem::take(&mut results[i]);
                    results[i] = r
                        .with_error_code(ResponseError::UnknownServerError.code())
                        .with_error_message(Some(StrBytes::from_string(format!(
                            "storing quotas failed: {e}"
                        ))));
                }
            }
        }
    }
    AlterClientQuotasResponse::default().with_entries(results)
}
