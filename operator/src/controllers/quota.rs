//! Quota controller: a Quota resource → client quotas (AlterClientQuotas)
//! in its KafkaCluster.

use std::sync::Arc;

use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Api, ResourceExt};
use skiff_crds::Quota;

use super::{
    Context, Error, FINALIZER, Lookup, RESYNC, finalizer_error, measured, object_key, patch_status,
    resolve_cluster, set_condition,
};
use crate::converge::{converge_quota, delete_quota, quota_values};
use crate::tenancy;

/// The controller's reconcile function.
///
/// # Errors
/// Kubernetes or Kafka errors; the error policy retries with backoff.
pub async fn reconcile(quota: Arc<Quota>, ctx: Arc<Context>) -> Result<Action, Error> {
    let key = object_key(quota.as_ref());
    measured(&ctx, "quota", &key, async {
        let ns = quota
            .namespace()
            .ok_or(Error::MissingMetadata("namespace"))?;
        let api: Api<Quota> = Api::namespaced(ctx.client.clone(), &ns);
        finalizer(&api, FINALIZER, quota, |event| async {
            match event {
                Finalizer::Apply(q) => apply(&q, &api, &ctx).await,
                Finalizer::Cleanup(q) => cleanup(&q, &ctx).await,
            }
        })
        .await
        .map_err(finalizer_error)
    })
    .await
}

async fn apply(quota: &Quota, api: &Api<Quota>, ctx: &Context) -> Result<Action, Error> {
    let name = quota.name_any();
    let ns = quota.namespace().unwrap_or_default();
    let generation = quota.metadata.generation;
    let mut status = quota.status.clone().unwrap_or_default();
    status.observed_generation = generation;
    let lookup = resolve_cluster(&ctx.client, &ns, &quota.spec.cluster_ref)
        .await
        .and_then(|(kc, scope)| {
            tenancy::quota_entity(&scope, &quota.spec.target)
                .map(|e| (kc, e))
                .map_err(Lookup::Refused)
        });
    let (kc, entity) = match lookup {
        Ok(x) => x,
        Err(Lookup::Kube(e)) => return Err(e.into()),
        Err(l) => {
            set_condition(
                &mut status.conditions,
                "Ready",
                false,
                l.reason(),
                l.message(),
                generation,
            );
            patch_status(api, &name, &status).await?;
            ctx.event(quota, EventType::Warning, l.reason(), l.message())
                .await;
            return Ok(Action::requeue(super::RESYNC));
        }
    };
    status.entity = Some(entity.to_string());
    let values = quota_values(&quota.spec);
    let result = match ctx.admin(&kc).await {
        Ok(mut admin) => converge_quota(&mut admin, &entity, &values).await,
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        set_condition(
            &mut status.conditions,
            "Ready",
            false,
            e.reason(),
            e.to_string(),
            generation,
        );
        patch_status(api, &name, &status).await?;
        if !e.is_unreachable() {
            ctx.event(quota, EventType::Warning, e.reason(), e.to_string())
                .await;
        }
        return Err(e.into());
    }
    set_condition(
        &mut status.conditions,
        "Ready",
        true,
        "Ready",
        format!("quota on {entity} set"),
        generation,
    );
    patch_status(api, &name, &status).await?;
    Ok(Action::requeue(RESYNC))
}

async fn cleanup(quota: &Quota, ctx: &Context) -> Result<Action, Error> {
    let ns = quota.namespace().unwrap_or_default();
    let lookup = resolve_cluster(&ctx.client, &ns, &quota.spec.cluster_ref)
        .await
        .and_then(|(kc, scope)| {
            tenancy::quota_entity(&scope, &quota.spec.target)
                .map(|e| (kc, e))
                .map_err(Lookup::Refused)
        });
    let (kc, entity) = match lookup {
        Ok(x) => x,
        Err(Lookup::NotFound { .. } | Lookup::Refused(_)) => return Ok(Action::await_change()),
        Err(Lookup::Kube(e)) => return Err(e.into()),
    };
    let mut admin = ctx.admin(&kc).await?;
    match delete_quota(&mut admin, &entity).await {
        // A broker without quota APIs holds no quota to remove.
        Ok(()) | Err(crate::admin::AdminError::Unsupported { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Action::await_change())
}
