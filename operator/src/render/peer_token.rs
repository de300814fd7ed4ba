//! The brokers' peer token: a secret they all send with every
//! broker-to-broker request and demand from each other (the broker's
//! `rpc.peer.token.file`), so that only the cluster's own brokers can write
//! into its Raft groups.
//!
//! The controller makes it once, in the Secret `<name>-peer-token`
//! (owned by the KafkaCluster, never rewritten); every broker pod mounts it
//! at [`PEER_TOKEN_MOUNT`] and reads it through `SKIFF_RPC_PEER_TOKEN_FILE`.
//!
//! A cluster whose brokers ran without a token cannot start demanding one
//! at once: the first broker rolled would refuse its peers' messages, its
//! replicas would fall out of sync, and the roll (which waits for zero
//! under-replicated partitions) would stop. So such a cluster is rolled
//! first with `SKIFF_RPC_PEER_TOKEN_REQUIRED=false` (the brokers send the
//! token and still serve peers that send none), and once every broker runs
//! that template, with `true`: two rolls, once. A new cluster demands it
//! from the start ([`required`]).

use k8s_openapi::api::apps::v1::StatefulSet;
use skiff_crds::KafkaClusterStatus;

/// Where the peer token Secret is mounted in broker pods.
pub const PEER_TOKEN_MOUNT: &str = "/etc/skiff-peer";
/// The peer token Secret's key (and the file's name in the mount).
pub const PEER_TOKEN_KEY: &str = "token";
/// The broker setting naming the token file.
pub const TOKEN_FILE_ENV: &str = "SKIFF_RPC_PEER_TOKEN_FILE";
/// The broker setting saying whether a peer sending no token is refused.
pub const REQUIRED_ENV: &str = "SKIFF_RPC_PEER_TOKEN_REQUIRED";

/// Whether the brokers may refuse peers that send no token, given the
/// StatefulSet as it is (`current`) and the cluster's status:
/// - no StatefulSet and no status of a running cluster: a new cluster,
///   whose brokers all start with the token: yes;
/// - a template that demands it already: yes;
/// - a template that sends it without demanding it: once every broker runs
///   that template (the StatefulSet controller counts them), yes;
/// - a template without the token, or a StatefulSet gone while the
///   cluster ran (deleted with `--cascade=orphan`): not yet.
pub fn required(current: Option<&StatefulSet>, status: Option<&KafkaClusterStatus>) -> bool {
    let Some(sts) = current else {
        return !ran(status);
    };
    match broker_env(sts, REQUIRED_ENV).as_deref() {
        Some("true") => true,
        Some(_) => every_broker_runs_the_template(sts),
        None => false,
    }
}

/// Whether the status is that of a cluster whose brokers ran: it lists
/// brokers (observed from their pods).
pub fn ran(status: Option<&KafkaClusterStatus>) -> bool {
    status.is_some_and(|s| !s.brokers.is_empty())
}

/// Sets the rendered StatefulSet's [`REQUIRED_ENV`] to `required`.
pub fn set_required(sts: &mut StatefulSet, required: bool) {
    let env = sts
        .spec
        .as_mut()
        .and_then(|s| s.template.spec.as_mut())
        .and_then(|p| p.containers.iter_mut().find(|c| c.name == "broker"))
        .and_then(|c| c.env.as_mut());
    if let Some(v) = env.and_then(|e| e.iter_mut().find(|v| v.name == REQUIRED_ENV)) {
        v.value = Some(required.to_string());
    }
}

fn broker_env(sts: &StatefulSet, name: &str) -> Option<String> {
    sts.spec
        .as_ref()?
        .template
        .spec
        .as_ref()?
        .containers
        .iter()
        .find(|c| c.name == "broker")?
        .env
        .as_ref()?
        .iter()
        .find(|v| v.name == name)?
        .value
        .clone()
}

/// Whether the StatefulSet controller has seen the current template and
/// counts every replica updated to it and ready.
fn every_broker_runs_the_template(sts: &StatefulSet) -> bool {
    let (Some(spec), Some(status)) = (&sts.spec, &sts.status) else {
        return false;
    };
    let replicas = spec.replicas.unwrap_or(1);
    status.observed_generation.is_some()
        && status.observed_generation == sts.metadata.generation
        && status.updated_replicas == Some(replicas)
        && status.ready_replicas == Some(replicas)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::StatefulSetStatus;

    use super::*;
    use crate::render::{RenderContext, Topology, render};

    fn rendered() -> StatefulSet {
        let kc: skiff_crds::KafkaCluster = serde_yaml::from_str(
            "apiVersion: skiff.dev/v1alpha1\nkind: KafkaCluster\nmetadata: {name: kafka, namespace: kafka, uid: u1}\nspec: {replicas: 3}\n",
        )
        .expect("cluster");
        let ctx = RenderContext {
            default_image: "skiff:test".into(),
            cluster_domain: "cluster.local".into(),
        };
        render(&kc, &ctx, Topology::new(3))
            .expect("renders")
            .stateful_set
    }

    fn rolled(mut sts: StatefulSet, generation: i64, updated: i32, ready: i32) -> StatefulSet {
        sts.metadata.generation = Some(generation);
        sts.status = Some(StatefulSetStatus {
            observed_generation: Some(generation),
            replicas: 3,
            updated_replicas: Some(updated),
            ready_replicas: Some(ready),
            ..StatefulSetStatus::default()
        });
        sts
    }

    #[test]
    fn a_new_cluster_demands_the_token_from_the_start() {
        let sts = rendered();
        assert_eq!(broker_env(&sts, REQUIRED_ENV).as_deref(), Some("true"));
        assert_eq!(
            broker_env(&sts, TOKEN_FILE_ENV).as_deref(),
            Some("/etc/skiff-peer/token")
        );
        assert!(required(None, None));
        assert!(required(None, Some(&KafkaClusterStatus::default())));
        assert!(required(Some(&rolled(sts, 1, 0, 0)), None));
    }

    #[test]
    fn a_cluster_without_the_token_is_rolled_twice_to_demand_it() {
        // Brokers that never had a token: send it first.
        let mut old = rendered();
        let containers = &mut old
            .spec
            .as_mut()
            .unwrap()
            .template
            .spec
            .as_mut()
            .unwrap()
            .containers;
        containers[0]
            .env
            .as_mut()
            .unwrap()
            .retain(|v| v.name != REQUIRED_ENV && v.name != TOKEN_FILE_ENV);
        assert!(!required(Some(&rolled(old, 4, 3, 3)), None));

        // The roll that brings it, under way: not yet.
        let mut sending = rendered();
        set_required(&mut sending, false);
        assert_eq!(broker_env(&sending, REQUIRED_ENV).as_deref(), Some("false"));
        assert!(!required(Some(&rolled(sending.clone(), 5, 1, 3)), None));
        assert!(!required(Some(&rolled(sending.clone(), 5, 3, 2)), None));
        // The StatefulSet controller has not seen this template yet.
        let mut unseen = rolled(sending.clone(), 5, 3, 3);
        unseen.metadata.generation = Some(6);
        assert!(!required(Some(&unseen), None));
        // Every broker sends it: demand it.
        assert!(required(Some(&rolled(sending, 5, 3, 3)), None));
    }

    #[test]
    fn a_statefulset_gone_while_the_cluster_ran_does_not_demand_it_yet() {
        let status: KafkaClusterStatus = serde_json::from_value(serde_json::json!({
            "brokers": [{"id": 0, "pod": "kafka-0", "state": "Ready"}],
        }))
        .expect("status");
        assert!(ran(Some(&status)));
        assert!(!required(None, Some(&status)));
        // A first reconcile that failed before any broker ran records
        // voters, not brokers: still a new cluster.
        let first = KafkaClusterStatus {
            metadata_voters: vec![0, 1, 2],
            ..KafkaClusterStatus::default()
        };
        assert!(required(None, Some(&first)));
    }
}
