//! KafkaCluster controller: applies the rendered objects with server-side
//! apply, rolls brokers one at a time when their pods are out of date
//! (`OnDelete` StatefulSet; [`crate::roll`] picks the order), and reports
//! status.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use skiff_crds::kafka_cluster::{BrokerState, BrokerStatus};
use skiff_crds::{KafkaCluster, KafkaClusterStatus, ScaleStatus};
use time::OffsetDateTime;

use super::{Context, Error, RESYNC, measured, object_key, patch_status, refuse, set_condition};
use crate::admin::reassign::Reassignment;
use crate::admin::requests::{
    ConfigChange, LEADER_REPLICATION_THROTTLED_RATE, below_min_isr_if_restarted,
};
use crate::admin::{AdminClient, AdminError};
use crate::pki::{self, KeyedCert};
use crate::rebalance;
use crate::render::{self, FIELD_MANAGER, Rendered};
use crate::roll::{self, BrokerPod, ClusterHealth, RollStep, WaitReason};
use crate::scale::{self, ClusterView, EnsureThrottle, Facts, Phase, Step as ScaleStep, Throttle};
use crate::tenancy;

/// How often a cluster is looked at while it rolls or is not ready.
pub const ROLL_POLL: Duration = Duration::from_secs(15);
/// A roll that waits for the same reason longer than this is reported as
/// stuck (Degraded=True and a Warning Event); it is never forced.
pub const STUCK_AFTER: Duration = Duration::from_secs(600);

async fn apply_one<K>(client: &kube::Client, ns: &str, obj: &K) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let name = obj
        .meta()
        .name
        .clone()
        .ok_or(Error::MissingMetadata("name"))?;
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(obj),
    )
    .await?;
    Ok(())
}

async fn apply_all(client: &kube::Client, ns: &str, r: &Rendered) -> Result<(), Error> {
    apply_one::<ServiceAccount>(client, ns, &r.service_account).await?;
    apply_one::<ConfigMap>(client, ns, &r.config_map).await?;
    apply_one::<Service>(client, ns, &r.headless_service).await?;
    apply_one::<Service>(client, ns, &r.bootstrap_service).await?;
    for s in &r.external_services {
        apply_one::<Service>(client, ns, s).await?;
    }
    apply_one::<StatefulSet>(client, ns, &r.stateful_set).await?;
    apply_one::<PodDisruptionBudget>(client, ns, &r.pod_disruption_budget).await?;
    if let Some(h) = &r.horizontal_pod_autoscaler {
        apply_one::<HorizontalPodAutoscaler>(client, ns, h).await?;
    }
    Ok(())
}

/// Creates the cluster's operator Secret (`<name>-operator`) when it is
/// missing: a fresh random password for the operator's SCRAM user, and the
/// bootstrap users file the brokers create that user from at start. Owned
/// by the KafkaCluster; never rewritten, because the brokers keep the
/// credential they were first given.
///
/// # Errors
/// The API server refuses.
pub async fn ensure_operator_secret(
    client: &kube::Client,
    ns: &str,
    kc: &KafkaCluster,
) -> Result<(), Error> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let name = render::names::operator_secret(&kc.name_any());
    if api.get_opt(&name).await?.is_some() {
        return Ok(());
    }
    let password = crate::admin::scram::generate_password();
    let secret = Secret {
        metadata: render::owned_meta(kc, name)?,
        type_: Some("Opaque".to_string()),
        string_data: Some(
            [
                ("username", render::OPERATOR_USER.to_string()),
                (render::OPERATOR_PASSWORD_KEY, password.clone()),
                (
                    render::OPERATOR_USERS_KEY,
                    format!("{}:{password}\n", render::OPERATOR_USER),
                ),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        ),
        ..Secret::default()
    };
    create_once(&api, &secret).await
}

/// Creates `secret`, or leaves the one another replica of the operator
/// made first.
async fn create_once(api: &Api<Secret>, secret: &Secret) -> Result<(), Error> {
    match api.create(&PostParams::default(), secret).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The brokers' peer token Secret (see [`render::peer_token`]): made once
/// with a random token, owned by the KafkaCluster, never rewritten. When it
/// is missing while the cluster runs (`running`), it is not made again: the
/// running brokers hold the old token and refuse any other, so a broker
/// restarted with a new one would be cut off from all its peers, and the
/// roll could only wait. `Ok(false)` then: the caller reports it.
///
/// # Errors
/// The API server refuses.
pub async fn ensure_peer_token(
    client: &kube::Client,
    ns: &str,
    kc: &KafkaCluster,
    running: bool,
) -> Result<bool, Error> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let name = render::names::peer_token(&kc.name_any());
    if api.get_opt(&name).await?.is_some() {
        return Ok(true);
    }
    if running {
        return Ok(false);
    }
    let secret = Secret {
        metadata: render::owned_meta(kc, name)?,
        type_: Some("Opaque".to_string()),
        string_data: Some(
            [(
                render::peer_token::PEER_TOKEN_KEY.to_string(),
                crate::admin::scram::generate_password(),
            )]
            .into_iter()
            .collect(),
        ),
        ..Secret::default()
    };
    create_once(&api, &secret).await?;
    Ok(true)
}

fn secret_strings(s: &Secret) -> std::collections::BTreeMap<String, String> {
    s.data
        .iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), String::from_utf8(v.0.clone()).ok()?)))
        .collect()
}

/// The cluster CA (see [`render::tls`]): read from the Secret
/// `<name>-cluster-ca`, or made and stored there when the Secret is missing.
/// An existing CA is never replaced: one that cannot be used is an error to
/// fix by hand (every certificate the cluster and its Users hold chains to
/// it).
///
/// # Errors
/// The API server refuses, or the Secret's CA is unusable.
pub async fn ensure_cluster_ca(
    client: &kube::Client,
    ns: &str,
    kc: &KafkaCluster,
) -> Result<KeyedCert, Error> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let name = render::names::cluster_ca(&kc.name_any());
    let read = |s: &Secret| -> Result<KeyedCert, Error> {
        let d = secret_strings(s);
        let ca = KeyedCert {
            cert_pem: d.get(render::tls::CA_CERT_KEY).cloned().unwrap_or_default(),
            key_pem: d.get(render::tls::CA_KEY_KEY).cloned().unwrap_or_default(),
        };
        pki::check_ca(&ca)?;
        Ok(ca)
    };
    if let Some(s) = api.get_opt(&name).await? {
        return read(&s);
    }
    let ca = pki::new_ca(&render::tls::ca_common_name(kc)?, OffsetDateTime::now_utc())?;
    let secret = Secret {
        metadata: render::owned_meta(kc, name.clone())?,
        type_: Some("Opaque".to_string()),
        data: Some(
            [
                (render::tls::CA_CERT_KEY, &ca.cert_pem),
                (render::tls::CA_KEY_KEY, &ca.key_pem),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), ByteString(v.clone().into_bytes())))
            .collect(),
        ),
        ..Secret::default()
    };
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => Ok(ca),
        // Another replica of the operator made it first: use that one.
        Err(kube::Error::Api(s)) if s.code == 409 => read(&api.get(&name).await?),
        Err(e) => Err(e.into()),
    }
}

/// Brings the Secret `<name>-broker-certs` to a certificate per broker
/// `0..brokers` signed by the cluster CA (see
/// [`render::tls::broker_secret_data`]), writing it only when something
/// changed. `services` are the cluster's Services as they are (their load
/// balancers' addresses are SANs). Returns the brokers issued now.
///
/// # Errors
/// The API server refuses, or a certificate cannot be made.
pub async fn ensure_broker_certs(
    ctx: &Context,
    ns: &str,
    kc: &KafkaCluster,
    brokers: i32,
    services: &[Service],
) -> Result<Vec<(i32, &'static str)>, Error> {
    let ca = ensure_cluster_ca(&ctx.client, ns, kc).await?;
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let name = render::names::broker_certs(&kc.name_any());
    let held = api
        .get_opt(&name)
        .await?
        .map(|s| secret_strings(&s))
        .unwrap_or_default();
    let wanted = (0..brokers)
        .map(|id| Ok((id, render::tls::broker_leaf(kc, &ctx.render, id, services)?)))
        .collect::<Result<std::collections::BTreeMap<_, _>, Error>>()?;
    let next = render::tls::broker_secret_data(&ca, &wanted, &held, OffsetDateTime::now_utc())?;
    if next.differs_from(&held) {
        let secret = Secret {
            metadata: render::owned_meta(kc, name)?,
            type_: Some("Opaque".to_string()),
            data: Some(
                next.data
                    .into_iter()
                    .map(|(k, v)| (k, ByteString(v.into_bytes())))
                    .collect(),
            ),
            ..Secret::default()
        };
        apply_one::<Secret>(&ctx.client, ns, &secret).await?;
    }
    Ok(next.issued)
}

/// Services of this cluster that the render no longer produces: the
/// external Services of a listener that was removed or became `internal`
/// (or changed between `NodePort` and `LoadBalancer`, which renames
/// nothing but is covered by the apply), and per-broker Services of brokers
/// that are gone. Only Services controlled by the KafkaCluster with `uid`
/// are candidates, so nothing a person created is touched.
pub fn stale_services(uid: &str, existing: &[Service], rendered: &Rendered) -> Vec<String> {
    let keep: std::collections::BTreeSet<&str> =
        [&rendered.headless_service, &rendered.bootstrap_service]
            .into_iter()
            .chain(&rendered.external_services)
            .filter_map(|s| s.metadata.name.as_deref())
            .collect();
    existing
        .iter()
        .filter(|s| {
            s.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.uid == uid && o.controller == Some(true) && o.kind == "KafkaCluster")
        })
        .filter_map(|s| s.metadata.name.clone())
        .filter(|n| !keep.contains(n.as_str()))
        .collect()
}

/// Deletes [`stale_services`]; returns their names.
async fn delete_stale_services(
    client: &kube::Client,
    ns: &str,
    kc: &KafkaCluster,
    rendered: &Rendered,
) -> Result<Vec<String>, Error> {
    let Some(uid) = kc.uid() else {
        return Ok(Vec::new());
    };
    let api: Api<Service> = Api::namespaced(client.clone(), ns);
    let existing = api
        .list(&ListParams::default().labels(&render::selector_string(&kc.name_any())))
        .await?
        .items;
    let stale = stale_services(&uid, &existing, rendered);
    for name in &stale {
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(stale)
}

/// The condition reporting whether external listeners have their
/// addresses.
pub const EXTERNAL_ADDRESSES: &str = "ExternalAddresses";

/// What the controller learnt of a cluster's external listeners before
/// applying.
struct External {
    /// The cluster's Services as they were.
    services: Vec<Service>,
    /// Per-broker Services without an address yet.
    pending: Vec<String>,
    /// Brokers with no advertised-addresses file: they wait at start.
    waiting: Vec<i32>,
}

/// Reads the cluster's Services and its ConfigMap as they are, and adds to
/// `rendered` the advertised-addresses file of each broker that has one
/// (see [`render::external`]).
async fn observe_external(
    ctx: &Context,
    ns: &str,
    kc: &KafkaCluster,
    brokers: i32,
    rendered: &mut Rendered,
) -> Result<External, Error> {
    let name = kc.name_any();
    let cm_api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
    let before: std::collections::BTreeMap<i32, String> = cm_api
        .get_opt(&render::names::config_map(&name))
        .await?
        .and_then(|cm| cm.data)
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((render::external::advertised_key_id(&k)?, v)))
        .collect();
    let svc_api: Api<Service> = Api::namespaced(ctx.client.clone(), ns);
    let services = svc_api
        .list(&ListParams::default().labels(&render::selector_string(&name)))
        .await?
        .items;
    let now = render::external::broker_addresses(kc, brokers, &services)?;
    let files = render::external::files(kc, brokers, &now.files, &before);
    // Marked before the ConfigMap changes: should the operator stop in
    // between, the next reconcile still sees the change and marks again,
    // whereas marking after could be lost and leave an old address
    // advertised.
    if !files.changed.is_empty() {
        let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
        let pods = pods_api
            .list(&ListParams::default().labels(&render::selector_string(&name)))
            .await?
            .items;
        mark_for_restart(ctx, kc, &pods_api, &pods, &files.changed, &ADDRESS_RESTART).await?;
    }
    rendered.add_advertised(&files.files);
    Ok(External {
        services,
        pending: now.pending,
        waiting: (0..brokers)
            .filter(|id| !files.files.contains_key(id))
            .collect(),
    })
}

/// Why a broker's pod is marked for a restart: a per-broker value the
/// operator writes into the ConfigMap changed under a running broker.
struct Restart {
    /// The [`render::external::RESTART_ANNOTATION`] value.
    annotation: &'static str,
    /// Event reason.
    reason: &'static str,
    /// What changed, for the Event.
    what: &'static str,
}

const ADDRESS_RESTART: Restart = Restart {
    annotation: render::external::RESTART_ADVERTISED,
    reason: "ExternalAddressChanged",
    what: "external address changed; pod {pod} restarts to advertise the new one",
};

const RACK_RESTART: Restart = Restart {
    annotation: render::rack::RESTART_RACK,
    reason: "RackChanged",
    what: "rack (its node's label) changed; pod {pod} restarts to take the new one",
};

/// Marks the pods of brokers whose external address or rack is about to
/// change (annotation [`render::external::RESTART_ANNOTATION`]), so the
/// roll restarts them one at a time like pods of an old template.
async fn mark_for_restart(
    ctx: &Context,
    kc: &KafkaCluster,
    pods_api: &Api<Pod>,
    pods: &[Pod],
    changed: &std::collections::BTreeSet<i32>,
    why: &Restart,
) -> Result<(), Error> {
    let name = kc.name_any();
    for p in pods {
        let Some(pod) = p.metadata.name.clone() else {
            continue;
        };
        let Some(id) = broker_id(&name, &pod) else {
            continue;
        };
        if !changed.contains(&id)
            || p.annotations()
                .contains_key(render::external::RESTART_ANNOTATION)
        {
            continue;
        }
        let patch = serde_json::json!({"metadata": {"annotations": {
            render::external::RESTART_ANNOTATION: why.annotation
        }}});
        match pods_api
            .patch(&pod, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            // Gone already: its successor reads the new file.
            Err(kube::Error::Api(s)) if s.code == 404 => continue,
            Err(e) => return Err(e.into()),
        }
        ctx.event(
            kc,
            EventType::Normal,
            why.reason,
            format!("broker {id}'s {}", why.what.replace("{pod}", &pod)),
        )
        .await;
    }
    Ok(())
}

/// The condition reporting whether every broker has its rack.
pub const RACKS: &str = "Racks";

/// Reads the nodes the cluster's broker pods run on (and those the
/// ConfigMap has a rack for) and adds each node's rack to `rendered` (see
/// [`render::rack`]). A broker on a node whose rack changed is marked for
/// the roll before the ConfigMap changes, as for a changed address.
async fn observe_racks(
    ctx: &Context,
    ns: &str,
    kc: &KafkaCluster,
    label: &str,
    brokers: i32,
    rendered: &mut Rendered,
) -> Result<render::rack::Racks, Error> {
    let name = kc.name_any();
    let cm_api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
    let before: std::collections::BTreeMap<String, String> = cm_api
        .get_opt(&render::names::config_map(&name))
        .await?
        .and_then(|cm| cm.data)
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| {
            let node = render::rack::rack_key_node(&k)?.to_string();
            Some((node, v.trim().to_string()))
        })
        .collect();
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let pods = pods_api
        .list(&ListParams::default().labels(&render::selector_string(&name)))
        .await?
        .items;
    let placed: Vec<(i32, Option<String>)> = pods
        .iter()
        .filter_map(|p| {
            let id = broker_id(&name, p.metadata.name.as_deref()?)?;
            let node = p
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .filter(|n| !n.is_empty());
            (id < brokers).then_some((id, node))
        })
        .collect();
    let wanted: std::collections::BTreeSet<String> = placed
        .iter()
        .filter_map(|(_, n)| n.clone())
        .chain(before.keys().cloned())
        .collect();
    let nodes_api: Api<Node> = Api::all(ctx.client.clone());
    let mut nodes = std::collections::BTreeMap::new();
    for n in wanted {
        let node = nodes_api.get_opt(&n).await?;
        nodes.insert(n, node);
    }
    let racks = render::rack::racks(label, &placed, &nodes, &before);
    if !racks.changed.is_empty() {
        mark_for_restart(ctx, kc, &pods_api, &pods, &racks.changed, &RACK_RESTART).await?;
    }
    rendered.add_racks(&racks.files);
    Ok(racks)
}

/// The broker id of a pod `<cluster>-<ordinal>`.
pub fn broker_id(cluster: &str, pod: &str) -> Option<i32> {
    pod.strip_prefix(cluster)?.strip_prefix('-')?.parse().ok()
}

fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The roll's view of the pods: ready, and up to date when the pod's
/// `controller-revision-hash` is the StatefulSet's update revision and the
/// operator has not marked it for a restart (a changed external address).
pub fn broker_pods(cluster: &str, pods: &[Pod], update_revision: Option<&str>) -> Vec<BrokerPod> {
    let mut out: Vec<BrokerPod> = pods
        .iter()
        .filter_map(|p| {
            let id = broker_id(cluster, p.metadata.name.as_deref()?)?;
            let rev = p
                .labels()
                .get("controller-revision-hash")
                .map(String::as_str);
            // Marked by the operator: started with an external address that
            // has changed since (the template is shared, the address not).
            let marked = p
                .annotations()
                .contains_key(render::external::RESTART_ANNOTATION);
            Some(BrokerPod {
                id,
                ready: pod_ready(p) && p.metadata.deletion_timestamp.is_none(),
                // Without a revision yet nothing is known to be stale.
                up_to_date: (update_revision.is_none() || rev == update_revision) && !marked,
            })
        })
        .collect();
    out.sort_by_key(|p| p.id);
    out
}

/// The controller's reconcile function.
///
/// # Errors
/// Kubernetes errors; the error policy retries with backoff.
pub async fn reconcile(kc: Arc<KafkaCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    let key = object_key(kc.as_ref());
    measured(&ctx, "kafkacluster", &key, apply(&kc, &ctx)).await
}

#[allow(clippy::too_many_lines)]
async fn apply(kc: &KafkaCluster, ctx: &Context) -> Result<Action, Error> {
    let name = kc.name_any();
    let ns = kc.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let generation = kc.metadata.generation;
    let api: Api<KafkaCluster> = Api::namespaced(ctx.client.clone(), &ns);
    let mut status: KafkaClusterStatus = kc.status.clone().unwrap_or_default();
    status.observed_generation = generation;
    status.selector = Some(render::selector_string(&name));

    if let Some(Err(r)) = kc.spec.tenancy.as_ref().map(tenancy::check_tenancy) {
        return refuse(kc, &api, ctx, &mut status, r.reason(), r.to_string()).await;
    }

    // The size of the StatefulSet follows the scale state machine: brokers
    // are only removed once drained (see crate::scale).
    let sts_api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &ns);
    let current = sts_api.get_opt(&render::names::stateful_set(&name)).await?;
    let current_replicas = current
        .as_ref()
        .and_then(|s| s.spec.as_ref())
        .and_then(|s| s.replicas)
        .unwrap_or(0);
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let scaling = decide_scale(ctx, kc, current_replicas, &pods_api).await?;
    let brokers = match &scaling.step {
        ScaleStep::Grow { to } | ScaleStep::Shrink { to, .. } => *to,
        _ => current_replicas,
    };
    // The metadata voters are fixed when the cluster is created; a scale-up
    // adds learners (see render::Topology).
    let topology = render::Topology::decide(brokers, current.as_ref(), kc.status.as_ref());
    status.metadata_voters = topology.voter_ids();

    let mut rendered = match render::render(kc, &ctx.render, topology) {
        Ok(r) => r,
        Err(e) => {
            return refuse(kc, &api, ctx, &mut status, e.reason(), e.to_string()).await;
        }
    };
    // External listeners: each broker's addresses go into the ConfigMap
    // with the rest, read from the Services as they are before this apply
    // (a new Service's address shows up at a later reconcile: Services are
    // watched).
    let external = if render::external::has_external(kc) {
        Some(observe_external(ctx, &ns, kc, brokers, &mut rendered).await?)
    } else {
        None
    };
    // Racks: each broker's node's label, likewise into the ConfigMap.
    let racks = match &kc.spec.rack {
        Some(r) => {
            Some(observe_racks(ctx, &ns, kc, &r.topology_key, brokers, &mut rendered).await?)
        }
        None => None,
    };
    ensure_operator_secret(&ctx.client, &ns, kc).await?;
    let running = current.is_some() || render::peer_token::ran(kc.status.as_ref());
    if !ensure_peer_token(&ctx.client, &ns, kc, running).await? {
        let message = format!(
            "the Secret {} is gone while the brokers run with its token: restore it with the same token (the brokers refuse any other, so a broker restarted with a new one could not rejoin); nothing is applied meanwhile",
            render::names::peer_token(&name)
        );
        return refuse(kc, &api, ctx, &mut status, "PeerTokenLost", message).await;
    }
    render::peer_token::set_required(
        &mut rendered.stateful_set,
        render::peer_token::required(current.as_ref(), kc.status.as_ref()),
    );
    // TLS listeners: the brokers' certificates are in their Secret before
    // the StatefulSet that mounts it (and before a new broker's pod).
    if render::tls::has_tls(kc) {
        let services = external
            .as_ref()
            .map(|x| x.services.as_slice())
            .unwrap_or_default();
        let issued = ensure_broker_certs(ctx, &ns, kc, brokers, services).await?;
        if !issued.is_empty() {
            ctx.event(
                kc,
                EventType::Normal,
                "BrokerCertificatesIssued",
                format!(
                    "certificates from the cluster CA in Secret {}: {}",
                    render::names::broker_certs(&name),
                    issued
                        .iter()
                        .map(|(id, why)| format!("broker {id} ({why})"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
            .await;
        }
    }
    apply_all(&ctx.client, &ns, &rendered).await?;
    let removed = delete_stale_services(&ctx.client, &ns, kc, &rendered).await?;
    if !removed.is_empty() {
        ctx.event(
            kc,
            EventType::Normal,
            "StaleServicesDeleted",
            format!(
                "deleted Services no listener uses any more: {}",
                removed.join(", ")
            ),
        )
        .await;
    }
    if rendered.horizontal_pod_autoscaler.is_none() {
        let hpa: Api<HorizontalPodAutoscaler> = Api::namespaced(ctx.client.clone(), &ns);
        match hpa.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }

    carry_out_scale(ctx, kc, &scaling, &mut status).await;

    // Observe the StatefulSet and its pods.
    let sts = sts_api.get_opt(&render::names::stateful_set(&name)).await?;
    let sts_status = sts.as_ref().and_then(|s| s.status.clone());
    let update_revision = sts_status.as_ref().and_then(|s| s.update_revision.clone());
    let pods = pods_api
        .list(&ListParams::default().labels(&render::selector_string(&name)))
        .await?
        .items;
    let mut view = broker_pods(&name, &pods, update_revision.as_deref());
    // A broker whose pod is gone (just deleted by the roll, not yet
    // recreated) counts as not ready, so the roll waits for it.
    for id in 0..brokers {
        if !view.iter().any(|p| p.id == id) {
            view.push(BrokerPod {
                id,
                ready: false,
                up_to_date: true,
            });
        }
    }
    view.sort_by_key(|p| p.id);
    status.replicas = sts_status.as_ref().map_or(0, |s| s.replicas);
    status.ready_replicas = view.iter().filter(|p| p.ready).count() as i32;
    status.bootstrap_servers = render::internal_bootstrap_servers(kc, &ctx.render)?;
    let mut brokers_waiting = Vec::new();
    if let Some(x) = &external {
        let hosts: std::collections::BTreeSet<String> = pods
            .iter()
            .filter_map(|p| p.status.as_ref()?.host_ip.clone())
            .filter(|h| !h.is_empty())
            .collect();
        let (known, mut pending) = render::external::bootstrap_servers(kc, &x.services, &hosts)?;
        status.bootstrap_servers.extend(known);
        pending.extend(x.pending.iter().cloned());
        // Normal for a while (a load balancer takes its time): reported,
        // never Degraded.
        if pending.is_empty() {
            set_condition(
                &mut status.conditions,
                EXTERNAL_ADDRESSES,
                true,
                "Assigned",
                "every external listener's Services have addresses",
                generation,
            );
        } else {
            set_condition(
                &mut status.conditions,
                EXTERNAL_ADDRESSES,
                false,
                "Pending",
                format!("waiting for the addresses of {}", pending.join(", ")),
                generation,
            );
        }
        brokers_waiting = x.waiting.clone();
    } else {
        status.conditions.retain(|c| c.type_ != EXTERNAL_ADDRESSES);
    }
    let mut racks_waiting = Vec::new();
    match (&racks, &kc.spec.rack) {
        (Some(r), Some(spec)) => {
            let (ok, reason, message) = render::rack::condition(&spec.topology_key, brokers, r);
            let already = kc.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == RACKS && c.reason == reason && c.message == message)
            });
            if reason == "NodeLabelMissing" && !already {
                ctx.event(kc, EventType::Warning, reason, message.clone())
                    .await;
            }
            set_condition(
                &mut status.conditions,
                RACKS,
                ok,
                reason,
                message,
                generation,
            );
            racks_waiting = r.waiting();
        }
        _ => status.conditions.retain(|c| c.type_ != RACKS),
    }

    // Ask the brokers for health only when a roll needs it.
    let needs_roll = view.iter().any(|p| !p.up_to_date);
    let health = if needs_roll {
        cluster_health(ctx, kc).await
    } else {
        None
    };
    let step = roll::next_step(&view, health.as_ref());
    let mut restarting = None;
    match &step {
        RollStep::Done => {
            set_condition(
                &mut status.conditions,
                "Progressing",
                false,
                "UpToDate",
                "every broker runs the current config and image",
                generation,
            );
        }
        RollStep::Restart { broker } => {
            let pod = format!("{name}-{broker}");
            pods_api.delete(&pod, &DeleteParams::default()).await?;
            restarting = Some(*broker);
            set_condition(
                &mut status.conditions,
                "Progressing",
                true,
                "Rolling",
                format!(
                    "restarting broker {broker} (pod {pod}) for a new config, image or external address"
                ),
                generation,
            );
            ctx.event(
                kc,
                EventType::Normal,
                "RollingBroker",
                format!(
                    "deleted pod {pod} so it restarts with the new config, image or external address"
                ),
            )
            .await;
        }
        RollStep::Wait(w) => {
            let (reason, msg) = wait_reason(w);
            let stuck_since = status
                .conditions
                .iter()
                .find(|c| c.type_ == "Progressing" && c.status == "True" && c.reason == reason)
                .map(|c| c.last_transition_time.0);
            // The transition time only moves when the status flips, so track
            // the reason's age by restarting the clock when the reason changes.
            let was_same = stuck_since.is_some();
            set_condition(
                &mut status.conditions,
                "Progressing",
                true,
                reason,
                msg.clone(),
                generation,
            );
            if !was_same
                && let Some(c) = status
                    .conditions
                    .iter_mut()
                    .find(|c| c.type_ == "Progressing")
            {
                c.last_transition_time =
                    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::now());
            }
            let age = stuck_since
                .map(|t| Timestamp::now().duration_since(t).unsigned_abs())
                .unwrap_or_default();
            if age > STUCK_AFTER {
                let already = status.conditions.iter().any(|c| {
                    c.type_ == "Degraded" && c.status == "True" && c.reason == "RollStuck"
                });
                set_condition(
                    &mut status.conditions,
                    "Degraded",
                    true,
                    "RollStuck",
                    format!(
                        "the roll has waited over {} minutes: {msg}",
                        STUCK_AFTER.as_secs() / 60
                    ),
                    generation,
                );
                if !already {
                    ctx.event(kc, EventType::Warning, "RollStuck", msg).await;
                }
            }
        }
    }
    if !matches!(step, RollStep::Wait(_)) {
        let stuck = status
            .conditions
            .iter()
            .any(|c| c.type_ == "Degraded" && c.reason == "RollStuck" && c.status == "True");
        if stuck || !status.conditions.iter().any(|c| c.type_ == "Degraded") {
            set_condition(
                &mut status.conditions,
                "Degraded",
                false,
                "AsExpected",
                "",
                generation,
            );
        }
    }
    if let ScaleStep::Refuse { reason, message } = &scaling.step {
        set_condition(
            &mut status.conditions,
            "Degraded",
            true,
            reason,
            message.clone(),
            generation,
        );
    }

    status.brokers = view
        .iter()
        .map(|p| BrokerStatus {
            id: p.id,
            pod: format!("{name}-{}", p.id),
            state: if Some(p.id) == restarting {
                BrokerState::Rolling
            } else if !pods
                .iter()
                .any(|x| x.metadata.name.as_deref() == Some(&format!("{name}-{}", p.id)))
            {
                BrokerState::Pending
            } else if p.ready {
                BrokerState::Ready
            } else {
                BrokerState::NotReady
            },
            rack: racks
                .as_ref()
                .and_then(|r| r.brokers.get(&p.id))
                .and_then(|b| b.rack.clone()),
        })
        .collect();

    let all_ready = status.ready_replicas >= brokers && restarting.is_none();
    let was_ready = kc
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True");
    if all_ready && matches!(step, RollStep::Done) {
        let msg = format!("{brokers} broker(s) ready");
        set_condition(
            &mut status.conditions,
            "Ready",
            true,
            "Ready",
            msg.clone(),
            generation,
        );
        if !was_ready {
            ctx.event(kc, EventType::Normal, "Ready", msg).await;
        }
    } else {
        let (reason, msg) = if needs_roll || restarting.is_some() {
            (
                "Rolling",
                "brokers are being restarted one at a time for a new config, image or external address"
                    .to_string(),
            )
        } else if !brokers_waiting.is_empty() {
            (
                "ExternalAddressPending",
                format!(
                    "{} of {brokers} broker(s) ready; brokers {brokers_waiting:?} wait at start for their external address",
                    status.ready_replicas
                ),
            )
        } else if !racks_waiting.is_empty() {
            (
                "RackPending",
                format!(
                    "{} of {brokers} broker(s) ready; brokers {racks_waiting:?} wait at start for their rack (see the Racks condition)",
                    status.ready_replicas
                ),
            )
        } else {
            (
                "BrokersNotReady",
                format!("{} of {brokers} broker(s) ready", status.ready_replicas),
            )
        };
        set_condition(
            &mut status.conditions,
            "Ready",
            false,
            reason,
            msg,
            generation,
        );
    }
    let mut patch = serde_json::json!(&status);
    match &status.scale {
        // An empty `scale` is left out of the status, and a merge patch keeps
        // whatever it leaves out: a scale that is over would stay recorded
        // (and its phase be read back by the next reconcile).
        None => patch["scale"] = serde_json::Value::Null,
        // Likewise a removed throttle's record, which would otherwise have
        // the next reconcile delete the throttle again, or a person's.
        Some(s) if s.applied_replication_throttle.is_none() => {
            patch["scale"]["appliedReplicationThrottle"] = serde_json::Value::Null;
        }
        Some(_) => {}
    }
    patch_status(&api, &name, &patch).await?;
    let settled = matches!(step, RollStep::Done)
        && all_ready
        && !scale_under_way(status.scale.as_ref(), &scaling.step);
    Ok(Action::requeue(if settled { RESYNC } else { ROLL_POLL }))
}

/// Whether a scale waits on the brokers (moves, registrations, or their
/// Admin API), which no watched object reports: the cluster is then looked
/// at again after [`ROLL_POLL`], not at the resync. A scale-down that found
/// the Admin API unusable is still `Idle`, and waited five minutes on a real
/// API server before this looked at the step too.
fn scale_under_way(scale: Option<&ScaleStatus>, step: &ScaleStep) -> bool {
    matches!(step, ScaleStep::Unknown)
        || scale.is_some_and(|s| {
            s.phase != Phase::Idle.as_str() || s.applied_replication_throttle.is_some()
        })
}

/// What the roll needs from the brokers: under-replicated partitions, the
/// metadata controller, and which brokers may not go without taking a
/// partition below its `min.insync.replicas`. `None` when they cannot be
/// asked (the roll then waits).
/// Degraded reasons a scale sets (cleared when the scale moves on).
const SCALE_REASONS: [&str; 8] = [
    STALLED,
    "ScaleDownBelowMetadataVoters",
    "ScaleDownBelowReplicationFactor",
    "ScaleDownWouldLoseData",
    "ScaleDownUnsupported",
    THROTTLE_NOT_SET,
    THROTTLE_NOT_REMOVED,
    INVALID_THROTTLE,
];

/// Partitions moved at once by a scale (a batch; the next goes once these
/// are done).
const SCALE_BATCH: usize = 10;

/// How long a broker's Metadata may take to show a move that has ended.
const SCALE_VIEW_SETTLE: Duration = Duration::from_secs(1);

/// A scale decision and what it acts on.
struct Scaling {
    step: ScaleStep,
    /// The phase before the decision.
    phase: Phase,
    /// The balancer's moves for a Rebalance or Drain, or why it has none.
    moves: Result<Vec<Reassignment>, String>,
    /// The cluster is being created: its first brokers are no scale.
    creating: bool,
}

/// Decides what a change of `spec.replicas` does now (crate::scale). The
/// brokers are asked only while a scale is under way.
async fn decide_scale(
    ctx: &Context,
    kc: &KafkaCluster,
    running: i32,
    pods_api: &Api<Pod>,
) -> Result<Scaling, Error> {
    let name = kc.name_any();
    let phase = kc
        .status
        .as_ref()
        .and_then(|s| s.scale.as_ref())
        .map_or(Phase::Idle, |s| Phase::parse(&s.phase));
    let desired = kc.spec.replicas;
    let voters = kc.status.as_ref().map_or(0, |s| {
        i32::try_from(s.metadata_voters.len()).unwrap_or(i32::MAX)
    });
    let quiet = Facts {
        desired,
        running,
        ready: std::collections::BTreeSet::new(),
        phase,
        voters,
        cluster: None,
    };
    // Growing needs nothing observed; a cluster at its size with no scale
    // under way needs no question to the brokers.
    if desired > running || (desired == running && phase == Phase::Idle) {
        let step = if desired > running {
            scale::decide(&quiet)
        } else {
            ScaleStep::Steady
        };
        return Ok(Scaling {
            step,
            phase,
            moves: Ok(Vec::new()),
            creating: running == 0,
        });
    }
    let pods = pods_api
        .list(&ListParams::default().labels(&render::selector_string(&name)))
        .await?
        .items;
    let ready = broker_pods(&name, &pods, None)
        .into_iter()
        .filter(|p| p.ready)
        .map(|p| p.id)
        .collect();
    let leaving: Vec<i32> = (desired..running).collect();
    let (cluster, moves) = if running > 0 {
        match scale_view(ctx, kc, &leaving).await {
            Some((view, moves)) => (Some(view), moves),
            None => (None, Ok(Vec::new())),
        }
    } else {
        (None, Ok(Vec::new()))
    };
    let step = scale::decide(&Facts {
        desired,
        running,
        ready,
        phase,
        voters,
        cluster,
    });
    Ok(Scaling {
        step,
        phase,
        moves,
        creating: false,
    })
}

/// The brokers' view for a scale, and the balancer's moves (a drain of
/// `leaving`, or a rebalance when empty) or why it has none; `None` when
/// the brokers cannot be asked.
async fn scale_view(
    ctx: &Context,
    kc: &KafkaCluster,
    leaving: &[i32],
) -> Option<(ClusterView, Result<Vec<Reassignment>, String>)> {
    let mut admin = ctx.admin(kc).await.ok()?;
    let mut again = true;
    let (in_progress, snap, plan) = loop {
        // Asked before the metadata: a move that ends in between is still
        // listed, not missing from the list while the metadata shows both
        // sides of it.
        let in_progress = admin.reassignments_in_progress().await.ok()?;
        let snap = rebalance::snapshot(&mut admin, leaving).await.ok()?;
        // The planner refuses a partition listing more replicas than the
        // brokers that stay can hold: one being moved lists both sides, and
        // a drain below its replication factor cannot keep it. Neither means
        // the brokers are out of reach: the view stands, and the decision
        // waits for the moves or refuses the size.
        let plan = rebalance::plan(&snap, skiff_balance::Tolerance::default())
            .map_err(|e| format!("{e:#}"));
        // A broker answers Metadata from a copy it updates after the
        // metadata ListPartitionReassignments reads: a move that has just
        // ended can still show both sides there. Read once more, a moment
        // later, before a failed plan with no move under way stands.
        if plan.is_ok() || !in_progress.is_empty() || !again {
            break (in_progress, snap, plan);
        }
        again = false;
        tokio::time::sleep(SCALE_VIEW_SETTLE).await;
    };
    let mut holding = std::collections::BTreeMap::new();
    let mut max_rf = 0;
    for p in &snap.partitions {
        // A partition being moved lists its old and new replicas together,
        // more than its replication factor.
        if !in_progress.contains(&(p.topic.clone(), p.partition)) {
            max_rf = max_rf.max(p.replicas.len());
        }
        for b in &p.replicas {
            *holding.entry(*b).or_insert(0usize) += 1;
        }
    }
    for (b, n) in &snap.pinned {
        max_rf = max_rf.max(1);
        *holding.entry(*b).or_insert(0) += n;
    }
    let view = ClusterView {
        registered: snap
            .brokers
            .iter()
            .map(|b| b.id)
            .chain(snap.fenced.iter().copied())
            .collect(),
        fenced: snap.fenced.clone(),
        holding,
        pinned: snap.pinned.clone(),
        moving: in_progress.len(),
        max_replication_factor: max_rf,
        planned_moves: plan.as_ref().map_or(0, |p| p.moves.len()),
    };
    Some((view, plan.map(|p| rebalance::reassignments(&p))))
}

/// Does what the scale step says (after the StatefulSet has its new size)
/// and records the phase. A failure is reported and retried at the next
/// reconcile; it never counts as progress.
async fn carry_out_scale(
    ctx: &Context,
    kc: &KafkaCluster,
    scaling: &Scaling,
    status: &mut KafkaClusterStatus,
) {
    if scaling.creating {
        return;
    }
    let generation = kc.metadata.generation;
    let name = kc.name_any();
    let target = kc.spec.replicas;
    let wanted = kc.spec.scaling.replication_throttle_bytes();
    // What the status says the operator set; carried into the new status.
    let mut applied = kc
        .status
        .as_ref()
        .and_then(|s| s.scale.as_ref())
        .and_then(|s| s.applied_replication_throttle)
        .and_then(|r| u64::try_from(r).ok());
    let throttle = match &wanted {
        Ok(w) => scale::throttle_step(&scaling.step, *w, applied),
        // An unusable spec changes nothing: moves wait (below), a throttle
        // already set stays until the spec can be read.
        Err(_) => Throttle::Keep,
    };
    let (message, mut failed): (String, Option<(&'static str, String)>) = match &scaling.step {
        ScaleStep::Steady => (String::new(), None),
        ScaleStep::Grow { to } => (format!("starting brokers up to {to}"), None),
        ScaleStep::WaitForBrokers { brokers, .. } => (
            format!("waiting for brokers {brokers:?} to be ready and registered"),
            None,
        ),
        ScaleStep::WaitForMoves { moving, .. } => {
            (format!("waiting for {moving} partition move(s)"), None)
        }
        ScaleStep::Unknown => (
            "the brokers' Admin API cannot be reached; the scale waits".to_string(),
            None,
        ),
        ScaleStep::Refuse { message, .. } => (message.clone(), None),
        ScaleStep::Rebalance | ScaleStep::Drain { .. } => {
            let moves = scaling.moves.as_deref().unwrap_or_default();
            let batch: Vec<Reassignment> = moves.iter().take(SCALE_BATCH).cloned().collect();
            let what = match &scaling.step {
                ScaleStep::Drain { brokers } => format!("draining brokers {brokers:?}"),
                _ => "rebalancing onto the brokers".to_string(),
            };
            // The throttle goes on the connection that starts the moves, and
            // nothing moves unless it is in force.
            let result = match (&scaling.moves, &wanted) {
                (Err(why), _) => Err((STALLED, format!("no plan: {why}"))),
                (Ok(_), Err(e)) => Err((
                    INVALID_THROTTLE,
                    format!(
                        "spec.scaling.replicationThrottle {e}; the moves wait rather than run unthrottled"
                    ),
                )),
                (Ok(_), Ok(_)) => match ctx.admin(kc).await {
                    Ok(mut admin) => {
                        let throttled = match throttle {
                            Throttle::Ensure { rate } => {
                                set_throttle(ctx, kc, scaling.phase, &mut admin, rate, &mut applied)
                                    .await
                                    .map_err(|e| (THROTTLE_NOT_SET, e))
                            }
                            Throttle::Remove => remove_throttle(ctx, kc, &mut admin, &mut applied)
                                .await
                                .map(|()| None)
                                .map_err(|e| (THROTTLE_NOT_REMOVED, e.to_string())),
                            Throttle::Keep => Ok(None),
                        };
                        match throttled {
                            Ok(note) => admin
                                .reassign(&batch)
                                .await
                                .map(|refused| (refused, note))
                                .map_err(|e| (STALLED, e.to_string())),
                            Err(e) => Err(e),
                        }
                    }
                    Err(e) => Err((STALLED, e.to_string())),
                },
            };
            match result {
                Ok((refused, note)) if refused.is_empty() => (
                    format!(
                        "{what}: moving {} of {} partitions{}",
                        batch.len(),
                        moves.len(),
                        note.map(|n| format!(" ({n})")).unwrap_or_default()
                    ),
                    None,
                ),
                Ok((refused, _)) => {
                    let why: Vec<String> = refused
                        .iter()
                        .map(|(m, e)| format!("{}-{}: {e}", m.topic, m.partition))
                        .collect();
                    (
                        format!("{what}: the brokers refused moves"),
                        Some((STALLED, why.join("; "))),
                    )
                }
                Err((reason, e)) if reason == STALLED => (
                    format!("{what}: the moves could not be started"),
                    Some((reason, e)),
                ),
                Err((reason, e)) => (
                    format!("{what}: the replication throttle could not be set, so nothing moves"),
                    Some((reason, e)),
                ),
            }
        }
        ScaleStep::Shrink { to, unregister } => {
            let mut errors = Vec::new();
            match ctx.admin(kc).await {
                Ok(mut admin) => {
                    for id in unregister {
                        if let Err(e) = admin.unregister_broker(*id).await {
                            errors.push(format!("broker {id}: {e}"));
                        } else if kc.spec.storage.delete_claim
                            && let Err(e) = delete_claim(ctx, kc, *id).await
                        {
                            errors.push(format!("volume of broker {id}: {e}"));
                        }
                    }
                }
                Err(e) => errors.push(e.to_string()),
            }
            if errors.is_empty() {
                ctx.event(
                    kc,
                    EventType::Normal,
                    "BrokersRemoved",
                    format!("drained and removed brokers {unregister:?}; {to} remain"),
                )
                .await;
                (format!("removed brokers {unregister:?}"), None)
            } else {
                (
                    format!("removing brokers {unregister:?}"),
                    Some((STALLED, errors.join("; "))),
                )
            }
        }
    };
    // Steps that start no moves: the throttle follows the spec while moves
    // run and goes once the scale moves nothing more. A step that failed is
    // retried first; its throttle is dealt with then.
    let moving_step = matches!(scaling.step, ScaleStep::Rebalance | ScaleStep::Drain { .. });
    let mut message = message;
    if failed.is_none() && !moving_step && throttle != Throttle::Keep {
        let outcome = match ctx.admin(kc).await {
            Err(e) => Err(e.to_string()),
            Ok(mut admin) => match throttle {
                Throttle::Ensure { rate } => {
                    set_throttle(ctx, kc, scaling.phase, &mut admin, rate, &mut applied)
                        .await
                        .map(|_| ())
                }
                _ => remove_throttle(ctx, kc, &mut admin, &mut applied)
                    .await
                    .map_err(|e| e.to_string()),
            },
        };
        if let Err(e) = outcome {
            let (reason, what) = match throttle {
                Throttle::Ensure { .. } => (THROTTLE_NOT_SET, "changing"),
                _ => (THROTTLE_NOT_REMOVED, "removing"),
            };
            message = format!("{what} the replication throttle");
            failed = Some((reason, e));
        }
    }
    let before = status.scale.as_ref().map(|s| s.phase.clone());
    let refused = matches!(scaling.step, ScaleStep::Refuse { .. });
    if failed.is_none()
        && !refused
        && status.conditions.iter().any(|c| {
            c.type_ == "Degraded"
                && c.status == "True"
                && SCALE_REASONS.contains(&c.reason.as_str())
        })
    {
        set_condition(
            &mut status.conditions,
            "Degraded",
            false,
            "AsExpected",
            "",
            generation,
        );
    }
    // A scale whose throttle is still to be removed is not over: it keeps
    // its phase, so the next reconcile asks the brokers again.
    let phase = if failed.is_some() {
        scaling.phase
    } else {
        scaling.step.phase(scaling.phase)
    };
    if let Some((reason, why)) = &failed {
        set_condition(
            &mut status.conditions,
            "Degraded",
            true,
            reason,
            format!("{message}: {why}"),
            generation,
        );
        ctx.event(kc, EventType::Warning, reason, format!("{message}: {why}"))
            .await;
    }
    if let ScaleStep::Refuse { reason, message } = &scaling.step
        && before.as_deref() != Some("Idle")
    {
        ctx.event(kc, EventType::Warning, reason, message.clone())
            .await;
    }
    if phase != scaling.phase && phase != Phase::Idle {
        ctx.event(
            kc,
            EventType::Normal,
            phase.as_str(),
            format!("{}: {message}", name),
        )
        .await;
    }
    // The record outlives the phase until the throttle is gone.
    status.scale =
        (phase != Phase::Idle || !message.is_empty() || applied.is_some()).then(|| ScaleStatus {
            phase: phase.as_str().to_string(),
            target_replicas: target,
            message,
            applied_replication_throttle: applied.and_then(|r| i64::try_from(r).ok()),
        });
}

/// Degraded reason of a scale step that failed or was refused by the
/// brokers.
const STALLED: &str = "ScaleStalled";
/// The throttle could not be set: the moves wait.
const THROTTLE_NOT_SET: &str = "ReplicationThrottleNotSet";
/// The scale is over but its throttle could not be removed yet.
const THROTTLE_NOT_REMOVED: &str = "ReplicationThrottleNotRemoved";
/// `spec.scaling.replicationThrottle` is no byte quantity: the moves wait.
const INVALID_THROTTLE: &str = "InvalidReplicationThrottle";

/// Makes the cluster-wide `leader.replication.throttled.rate` `rate`
/// before moves start ([`scale::ensure_throttle`] decides from what the
/// brokers hold and the status records). Returns a note when a value set by
/// a person stays in force instead.
async fn set_throttle(
    ctx: &Context,
    kc: &KafkaCluster,
    phase: Phase,
    admin: &mut AdminClient,
    rate: u64,
    applied: &mut Option<u64>,
) -> Result<Option<String>, String> {
    let current = admin
        .cluster_wide_broker_config(LEADER_REPLICATION_THROTTLED_RATE)
        .await
        .map_err(|e| e.to_string())?;
    match scale::ensure_throttle(current.as_deref(), *applied, rate) {
        EnsureThrottle::InPlace => Ok(None),
        EnsureThrottle::HandSet { value } => Ok(Some(format!(
            "under the cluster-wide {LEADER_REPLICATION_THROTTLED_RATE} {value} set outside the operator, which it leaves alone"
        ))),
        EnsureThrottle::Set { record_first } => {
            if record_first {
                record_throttle(ctx, kc, phase, rate)
                    .await
                    .map_err(|e| format!("cannot record it in the status first: {e}"))?;
            }
            *applied = Some(rate);
            admin
                .alter_cluster_wide_broker_config(&[ConfigChange::Set(
                    LEADER_REPLICATION_THROTTLED_RATE.to_string(),
                    rate.to_string(),
                )])
                .await
                .map_err(|e| e.to_string())?;
            ctx.event(
                kc,
                EventType::Normal,
                "ReplicationThrottleSet",
                format!(
                    "{LEADER_REPLICATION_THROTTLED_RATE} set cluster-wide to {rate} bytes/s for the moves of this scale"
                ),
            )
            .await;
            Ok(None)
        }
    }
}

/// Writes into the status, ahead of setting it, that the operator owns the
/// cluster-wide throttle. Without this an operator stopped between setting
/// the value and its final status patch would next find a value it has no
/// record of, take it for a person's, and leave it behind for good.
async fn record_throttle(
    ctx: &Context,
    kc: &KafkaCluster,
    phase: Phase,
    rate: u64,
) -> Result<(), Error> {
    let ns = kc.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let api: Api<KafkaCluster> = Api::namespaced(ctx.client.clone(), &ns);
    // The whole object: `phase` and `targetReplicas` are required, and the
    // scale may not be recorded yet.
    let scale = ScaleStatus {
        phase: phase.as_str().to_string(),
        target_replicas: kc.spec.replicas,
        message: "setting the replication throttle".to_string(),
        applied_replication_throttle: i64::try_from(rate).ok(),
    };
    patch_status(&api, &kc.name_any(), &serde_json::json!({ "scale": scale })).await?;
    Ok(())
}

/// Deletes the cluster-wide throttle the operator set (it owns the value
/// while the record exists, whatever it holds now) and drops the record.
async fn remove_throttle(
    ctx: &Context,
    kc: &KafkaCluster,
    admin: &mut AdminClient,
    applied: &mut Option<u64>,
) -> Result<(), AdminError> {
    let current = admin
        .cluster_wide_broker_config(LEADER_REPLICATION_THROTTLED_RATE)
        .await?;
    if current.is_some() {
        admin
            .alter_cluster_wide_broker_config(&[ConfigChange::Delete(
                LEADER_REPLICATION_THROTTLED_RATE.to_string(),
            )])
            .await?;
        ctx.event(
            kc,
            EventType::Normal,
            "ReplicationThrottleRemoved",
            format!("the scale moves nothing more: {LEADER_REPLICATION_THROTTLED_RATE} removed"),
        )
        .await;
    }
    *applied = None;
    Ok(())
}

/// Deletes the volume claim of a removed broker (`storage.deleteClaim`).
async fn delete_claim(ctx: &Context, kc: &KafkaCluster, id: i32) -> Result<(), kube::Error> {
    let ns = kc.namespace().unwrap_or_default();
    let api: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> =
        Api::namespaced(ctx.client.clone(), &ns);
    let claim = format!("data-{}-{id}", render::names::stateful_set(&kc.name_any()));
    match api.delete(&claim, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

async fn cluster_health(ctx: &Context, kc: &KafkaCluster) -> Option<ClusterHealth> {
    let mut admin = ctx.admin(kc).await.ok()?;
    let info = admin.cluster_info().await.ok()?;
    let topics: Vec<String> = info
        .partitions
        .iter()
        .map(|p| p.topic.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let min_isr = admin.min_insync_replicas(&topics).await.ok()?;
    Some(ClusterHealth {
        under_replicated_partitions: info.under_replicated_partitions,
        metadata_leader: (info.controller_id >= 0).then_some(info.controller_id),
        below_min_isr_if_restarted: below_min_isr_if_restarted(&info.partitions, &min_isr),
    })
}

fn wait_reason(w: &WaitReason) -> (&'static str, String) {
    match w {
        WaitReason::BrokerNotReady(id) => (
            "WaitingForBroker",
            format!("waiting for broker {id} to be ready"),
        ),
        WaitReason::UnderReplicatedPartitions(n) => (
            "WaitingForReplication",
            format!("waiting for {n} under-replicated partition(s) to catch up"),
        ),
        WaitReason::HealthUnknown => (
            "ClusterUnreachable",
            "the brokers' Admin API cannot be reached; the roll waits instead of guessing"
                .to_string(),
        ),
        WaitReason::MinInSyncReplicas => (
            "WaitingForMinInSync",
            "restarting any remaining broker would take a partition below min.insync.replicas"
                .to_string(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};

    #[test]
    fn a_scale_waiting_for_the_admin_api_is_looked_at_again_soon() {
        let idle = ScaleStatus {
            phase: Phase::Idle.as_str().to_string(),
            target_replicas: 3,
            message: "the brokers' Admin API cannot be reached; the scale waits".into(),
            ..ScaleStatus::default()
        };
        assert!(scale_under_way(Some(&idle), &ScaleStep::Unknown));
        assert!(scale_under_way(None, &ScaleStep::Unknown));
        assert!(!scale_under_way(Some(&idle), &ScaleStep::Steady));
        assert!(!scale_under_way(None, &ScaleStep::Steady));
        let draining = ScaleStatus {
            phase: Phase::Draining.as_str().to_string(),
            ..idle.clone()
        };
        assert!(scale_under_way(Some(&draining), &ScaleStep::Steady));
    }
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod(name: &str, ready: bool, rev: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some([("controller-revision-hash".to_string(), rev.to_string())].into()),
                ..ObjectMeta::default()
            },
            status: Some(PodStatus {
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..PodCondition::default()
                }]),
                ..PodStatus::default()
            }),
            ..Pod::default()
        }
    }

    fn service(name: &str, uid: &str, controller: bool) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                owner_references: Some(vec![
                    k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                        api_version: "skiff.dev/v1alpha1".into(),
                        kind: "KafkaCluster".into(),
                        name: "kafka".into(),
                        uid: uid.into(),
                        controller: Some(controller),
                        ..Default::default()
                    },
                ]),
                ..ObjectMeta::default()
            },
            ..Service::default()
        }
    }

    #[test]
    fn only_owned_services_the_render_no_longer_has_are_stale() {
        let mut kc: KafkaCluster = serde_json::from_value(serde_json::json!({
            "apiVersion": "skiff.dev/v1alpha1", "kind": "KafkaCluster",
            "metadata": {"name": "kafka", "namespace": "kafka", "uid": "u1"},
            "spec": {"listeners": [
                {"name": "plain", "port": 9092},
                {"name": "lb", "port": 9094, "exposure": "LoadBalancer"}
            ]}
        }))
        .expect("kc");
        let ctx = render::RenderContext::default();
        let with_lb = render::render(&kc, &ctx, render::Topology::new(2)).expect("renders");
        let existing: Vec<Service> = [
            "kafka-brokers",
            "kafka-bootstrap",
            "kafka-lb-bootstrap",
            "kafka-0-lb",
            "kafka-1-lb",
        ]
        .iter()
        .map(|n| service(n, "u1", true))
        .chain([
            service("kafka-old", "another-cluster", true),
            service("kafka-mine", "u1", false),
        ])
        .collect();
        assert!(stale_services("u1", &existing, &with_lb).is_empty());
        // The LoadBalancer listener becomes internal: its Services go.
        kc.spec.listeners[1].exposure = skiff_crds::kafka_cluster::Exposure::Internal;
        let internal = render::render(&kc, &ctx, render::Topology::new(2)).expect("renders");
        assert_eq!(
            stale_services("u1", &existing, &internal),
            vec!["kafka-lb-bootstrap", "kafka-0-lb", "kafka-1-lb"]
        );
        // Removed altogether: the same.
        kc.spec.listeners.pop();
        let removed = render::render(&kc, &ctx, render::Topology::new(2)).expect("renders");
        assert_eq!(
            stale_services("u1", &existing, &removed),
            stale_services("u1", &existing, &internal)
        );
    }

    #[test]
    fn pods_map_to_broker_ids_readiness_and_staleness() {
        let pods = vec![
            pod("kafka-1", true, "new"),
            pod("kafka-0", false, "old"),
            pod("kafka-x", true, "new"),
            pod("other-0", true, "new"),
        ];
        let v = broker_pods("kafka", &pods, Some("new"));
        assert_eq!(
            v,
            vec![
                BrokerPod {
                    id: 0,
                    ready: false,
                    up_to_date: false
                },
                BrokerPod {
                    id: 1,
                    ready: true,
                    up_to_date: true
                },
            ]
        );
        assert!(
            broker_pods("kafka", &pods, None)
                .iter()
                .all(|p| p.up_to_date)
        );
        assert_eq!(broker_id("kafka-a", "kafka-a-12"), Some(12));
        assert_eq!(broker_id("kafka", "kafka-a-12"), None);
    }

    #[test]
    fn a_pod_marked_for_its_changed_external_address_is_out_of_date() {
        let mut marked = pod("kafka-1", true, "new");
        marked.annotations_mut().insert(
            render::external::RESTART_ANNOTATION.into(),
            render::external::RESTART_ADVERTISED.into(),
        );
        let pods = vec![pod("kafka-0", true, "new"), marked];
        let v = broker_pods("kafka", &pods, Some("new"));
        assert!(v[0].up_to_date);
        assert!(!v[1].up_to_date);
        // Even before the StatefulSet reports a revision.
        assert!(!broker_pods("kafka", &pods, None)[1].up_to_date);
    }
}
