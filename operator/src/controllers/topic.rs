//! Topic controller: a Topic resource → a topic in its KafkaCluster.

use std::sync::Arc;

use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Api, ResourceExt};
use skiff_crds::topic::DeletionPolicy;
use skiff_crds::{Topic, TopicStatus};

use super::{
    Context, Error, FINALIZER, Lookup, RESYNC, finalizer_error, measured, object_key, patch_status,
    resolve_cluster, set_condition,
};
use crate::converge::{TopicTarget, converge_topic};
use crate::tenancy;

/// The controller's reconcile function.
///
/// # Errors
/// Kubernetes or Kafka errors; the error policy retries with backoff.
pub async fn reconcile(topic: Arc<Topic>, ctx: Arc<Context>) -> Result<Action, Error> {
    let key = object_key(topic.as_ref());
    measured(&ctx, "topic", &key, async {
        let ns = topic
            .namespace()
            .ok_or(Error::MissingMetadata("namespace"))?;
        let api: Api<Topic> = Api::namespaced(ctx.client.clone(), &ns);
        finalizer(&api, FINALIZER, topic, |event| async {
            match event {
                Finalizer::Apply(t) => apply(&t, &api, &ctx).await,
                Finalizer::Cleanup(t) => cleanup(&t, &ctx).await,
            }
        })
        .await
        .map_err(finalizer_error)
    })
    .await
}

async fn apply(topic: &Topic, api: &Api<Topic>, ctx: &Context) -> Result<Action, Error> {
    let name = topic.name_any();
    let ns = topic.namespace().unwrap_or_default();
    let generation = topic.metadata.generation;
    let mut status = topic.status.clone().unwrap_or_default();
    status.observed_generation = generation;
    let refuse = |status: &mut TopicStatus, reason: &str, message: String| {
        set_condition(
            &mut status.conditions,
            "Ready",
            false,
            reason,
            message,
            generation,
        );
    };

    let (kc, scope) = match resolve_cluster(&ctx.client, &ns, &topic.spec.cluster_ref).await {
        Ok(x) => x,
        Err(Lookup::Kube(e)) => return Err(e.into()),
        Err(l) => {
            refuse(&mut status, l.reason(), l.message());
            patch_status(api, &name, &status).await?;
            ctx.event(topic, EventType::Warning, l.reason(), l.message())
                .await;
            return Ok(Action::requeue(RESYNC));
        }
    };
    let topic_name = match tenancy::topic_name(&scope, &name, topic.spec.topic_name.as_deref()) {
        Ok(n) => n,
        Err(r) => {
            refuse(&mut status, r.reason(), r.to_string());
            patch_status(api, &name, &status).await?;
            ctx.event(topic, EventType::Warning, r.reason(), r.to_string())
                .await;
            return Ok(Action::requeue(RESYNC));
        }
    };
    status.topic_name = Some(topic_name.clone());
    if let Some(rf) = topic.spec.replication_factor
        && rf > kc.spec.replicas
    {
        let msg = format!(
            "replicationFactor {rf} exceeds the cluster's {} brokers",
            kc.spec.replicas
        );
        refuse(&mut status, "ReplicationFactorTooLarge", msg.clone());
        patch_status(api, &name, &status).await?;
        ctx.event(topic, EventType::Warning, "ReplicationFactorTooLarge", msg)
            .await;
        return Ok(Action::requeue(RESYNC));
    }

    let target = TopicTarget {
        name: topic_name.clone(),
        partitions: topic.spec.partitions,
        replication_factor: topic.spec.replication_factor,
        config: topic.spec.config.clone(),
    };
    let outcome = match ctx.admin(&kc).await {
        Ok(mut admin) => converge_topic(&mut admin, &target).await,
        Err(e) => Err(e),
    };
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            refuse(&mut status, e.reason(), e.to_string());
            patch_status(api, &name, &status).await?;
            if !e.is_unreachable() {
                ctx.event(topic, EventType::Warning, e.reason(), e.to_string())
                    .await;
            }
            return Err(e.into());
        }
    };
    if outcome.created {
        ctx.event(
            topic,
            EventType::Normal,
            "Created",
            format!("created topic {topic_name}"),
        )
        .await;
    }
    if let Some(from) = outcome.grown_from {
        ctx.event(
            topic,
            EventType::Normal,
            "PartitionsAdded",
            format!(
                "grew {topic_name} from {from} to {} partitions",
                target.partitions
            ),
        )
        .await;
    }
    if !outcome.config_changes.is_empty() {
        ctx.event(
            topic,
            EventType::Normal,
            "ConfigCorrected",
            format!(
                "set {} config value(s) of {topic_name} back to the spec",
                outcome.config_changes.len()
            ),
        )
        .await;
    }
    status.topic_id = Some(outcome.info.topic_id.clone());
    status.partitions = Some(outcome.info.partitions);
    if outcome.shrink_refused {
        let msg = format!(
            "the topic has {} partitions and the spec asks for {}: Kafka cannot remove partitions",
            outcome.info.partitions, target.partitions
        );
        refuse(&mut status, "PartitionShrinkRefused", msg.clone());
        patch_status(api, &name, &status).await?;
        ctx.event(topic, EventType::Warning, "PartitionShrinkRefused", msg)
            .await;
    } else {
        set_condition(
            &mut status.conditions,
            "Ready",
            true,
            "Ready",
            format!("topic {topic_name} is as the spec says"),
            generation,
        );
        patch_status(api, &name, &status).await?;
    }
    Ok(Action::requeue(RESYNC))
}

async fn cleanup(topic: &Topic, ctx: &Context) -> Result<Action, Error> {
    if topic.spec.deletion_policy == DeletionPolicy::Retain {
        return Ok(Action::await_change());
    }
    let ns = topic.namespace().unwrap_or_default();
    let (kc, scope) = match resolve_cluster(&ctx.client, &ns, &topic.spec.cluster_ref).await {
        Ok(x) => x,
        // No cluster or never accepted: nothing exists in Kafka to delete.
        Err(Lookup::NotFound { .. } | Lookup::Refused(_)) => return Ok(Action::await_change()),
        Err(Lookup::Kube(e)) => return Err(e.into()),
    };
    let Ok(topic_name) =
        tenancy::topic_name(&scope, &topic.name_any(), topic.spec.topic_name.as_deref())
    else {
        return Ok(Action::await_change());
    };
    let mut admin = ctx.admin(&kc).await?;
    admin.delete_topic(&topic_name).await?;
    ctx.event(
        topic,
        EventType::Normal,
        "Deleted",
        format!("deleted topic {topic_name}"),
    )
    .await;
    Ok(Action::await_change())
}
