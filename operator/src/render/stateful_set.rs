//! The brokers' StatefulSet.
//!
//! - **Node id** = pod ordinal (0, 1, ...), with no shell and no init
//!   container: the StatefulSet controller labels each pod
//!   `apps.kubernetes.io/pod-index` (on by default since Kubernetes 1.28, GA
//!   in 1.32), and the downward API turns that label into the env var
//!   `SKIFF_NODE_ID`, which the broker reads like its `--node-id` flag.
//! - **One cluster**: every broker gets the same `--cluster-id` (from the
//!   KafkaCluster's namespace and name, [`super::cluster_id`]) and
//!   `--controller-quorum-voters` (the first min(3, N) ordinals at their
//!   headless-Service DNS names, fixed at creation: [`super::Topology`]), and
//!   serves broker-to-broker gRPC on the `rpc` port (19092), advertised as
//!   its own DNS name through `SKIFF_RPC_ADVERTISED_LISTENER`.
//! - **Advertised listeners** use Kubernetes' own `$(VAR)` expansion in env
//!   values: `SKIFF_ADVERTISED_LISTENERS` is
//!   `NAME://$(POD_NAME).<name>-brokers.<ns>.svc.<domain>:<port>` for an
//!   internal listener, where `POD_NAME` comes from the downward API. An
//!   external listener's address is known only once its per-broker Service
//!   has one, so with any external listener the broker also reads
//!   `SKIFF_ADVERTISED_LISTENERS_FILE`, the ConfigMap key
//!   `advertised-$(SKIFF_NODE_ID)` the controller writes (see
//!   [`super::external`]), and waits at start until it exists.
//! - **Rack** (`spec.rack`): the broker reads `SKIFF_BROKER_RACK_FILE`,
//!   the ConfigMap key `rack-$(NODE_NAME)` the controller writes from the
//!   pod's node's label (see [`super::rack`]), and waits at start until it
//!   exists. The topology spread constraint on the same label is
//!   `DoNotSchedule`, so the scheduler puts no broker on a node without it.
//! - **TLS** (any `tls: true` listener): the Secret `<name>-broker-certs`
//!   is mounted at `/etc/skiff-tls`, and `SKIFF_SSL_CERT_FILE` /
//!   `SKIFF_SSL_KEY_FILE` name `broker-$(SKIFF_NODE_ID).crt`/`.key` in it,
//!   so each broker serves its own certificate (see [`super::tls`]).
//! - **The operator's identity**: a listener of its own (`OPERATOR`,
//!   SASL_PLAINTEXT on port 19093) and the bootstrap users file from the
//!   cluster's operator Secret (`SKIFF_SCRAM_BOOTSTRAP_USERS_FILE`), so the
//!   brokers create the operator's SCRAM user, a super user (see
//!   [`super::config::properties`]).
//! - **Peer token**: the Secret `<name>-peer-token` is mounted at
//!   `/etc/skiff-peer` and named by `SKIFF_RPC_PEER_TOKEN_FILE`, so only the
//!   cluster's brokers are served on each other's RPC port (see
//!   [`super::peer_token`], which also tells when
//!   `SKIFF_RPC_PEER_TOKEN_REQUIRED` may be true).
//! - **Rolls are the operator's**: `updateStrategy: OnDelete`, so a new
//!   template (image, resources, or config through the config-hash
//!   annotation) changes nothing until the operator deletes pods one at a
//!   time (see [`crate::roll`]). `podManagementPolicy: Parallel` lets a new
//!   cluster's brokers start together (they need each other for quorum).
//! - Volumes: claims are deleted with the cluster only when
//!   `storage.deleteClaim`; a scale-down never deletes a claim (the operator
//!   removes it after confirming the broker empty).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvVar, EnvVarSource, HTTPGetAction, KeyToPath, ObjectFieldSelector, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PodAffinityTerm, PodAntiAffinity, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, SeccompProfile, SecretVolumeSource, SecurityContext,
    TopologySpreadConstraint, Volume, VolumeMount, VolumeResourceRequirements,
    WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use skiff_crds::KafkaCluster;
use skiff_crds::kafka_cluster::{Exposure, HTTP_PORT, OPERATOR_PORT, RPC_PORT};

use super::{
    CONFIG_HASH_ANNOTATION, CONFIG_MOUNT, DATA_DIR, DATA_MOUNT, METADATA_VOTERS_ANNOTATION,
    OPERATOR_LISTENER, OPERATOR_SECRET_MOUNT, OPERATOR_USERS_KEY, PROPERTIES_KEY, RenderContext,
    RenderError, Topology, cluster_id, common_labels, controller_quorum_voters, external, identity,
    kafka_listener_name, names, owned_meta, peer_token, rack, security_protocol, selector_labels,
};

/// User and group the broker runs as (the image's non-root user).
pub const BROKER_UID: i64 = 10001;
/// The label the StatefulSet controller puts on each pod with its ordinal.
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

/// The `--listeners` value: every listener bound on all addresses, then
/// the operator's own.
///
/// # Errors
/// An invalid listener (see [`security_protocol`]).
pub fn listeners_flag(kc: &KafkaCluster) -> Result<String, RenderError> {
    let mut out = Vec::new();
    for l in &kc.spec.listeners {
        security_protocol(l)?;
        out.push(format!("{}://0.0.0.0:{}", kafka_listener_name(l), l.port));
    }
    out.push(format!("{OPERATOR_LISTENER}://0.0.0.0:{OPERATOR_PORT}"));
    Ok(out.join(","))
}

/// The `SKIFF_ADVERTISED_LISTENERS` value, with `$(POD_NAME)` and
/// `$(HOST_IP)` for Kubernetes to expand. An internal listener advertises
/// the pod's DNS name under the headless Service. An external listener's
/// entry is a stand-in that the broker's advertised-listeners file replaces
/// before the broker serves (it waits for the file): the per-broker
/// Service's in-cluster name for a LoadBalancer listener, the pod's node
/// (`$(HOST_IP)`) for a NodePort listener, whose file gives only the node
/// port and keeps this host.
///
/// # Errors
/// A KafkaCluster without name or namespace.
pub fn advertised_listeners(kc: &KafkaCluster, ctx: &RenderContext) -> Result<String, RenderError> {
    let (cluster, ns) = identity(kc)?;
    let domain = &ctx.cluster_domain;
    let headless = names::headless_service(cluster);
    let pod_host = format!("$(POD_NAME).{headless}.{ns}.svc.{domain}");
    Ok(kc
        .spec
        .listeners
        .iter()
        .map(|l| {
            let host = match l.exposure {
                Exposure::Internal => pod_host.clone(),
                Exposure::LoadBalancer => format!("$(POD_NAME)-{}.{ns}.svc.{domain}", l.name),
                Exposure::NodePort => "$(HOST_IP)".to_string(),
            };
            format!("{}://{host}:{}", kafka_listener_name(l), l.port)
        })
        .chain([format!("{OPERATOR_LISTENER}://{pod_host}:{OPERATOR_PORT}")])
        .collect::<Vec<_>>()
        .join(","))
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.to_string(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn http_probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::String("http".to_string()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(3),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

/// The default affinity: prefer one broker per node.
fn default_affinity(cluster: &str) -> Affinity {
    Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: PodAffinityTerm {
                        topology_key: "kubernetes.io/hostname".to_string(),
                        label_selector: Some(LabelSelector {
                            match_labels: Some(selector_labels(cluster)),
                            ..LabelSelector::default()
                        }),
                        ..PodAffinityTerm::default()
                    },
                },
            ]),
            ..PodAntiAffinity::default()
        }),
        ..Affinity::default()
    }
}

/// The `SKIFF_RPC_ADVERTISED_LISTENER` value: the pod's DNS name under the
/// headless Service and the RPC port, with `$(POD_NAME)` for Kubernetes to
/// expand. It is the address the voters list gives for a voter, so a voter's
/// registration and the voter set agree.
///
/// # Errors
/// A KafkaCluster without name or namespace.
pub fn rpc_advertised_listener(
    kc: &KafkaCluster,
    ctx: &RenderContext,
) -> Result<String, RenderError> {
    let (cluster, ns) = identity(kc)?;
    Ok(format!(
        "$(POD_NAME).{}.{ns}.svc.{}:{RPC_PORT}",
        names::headless_service(cluster),
        ctx.cluster_domain
    ))
}

/// The claims' retention policy: only rendered to delete them with the
/// cluster. Retain/Retain is what the API server defaults it to; rendering
/// it too would make every apply a change where the field does not exist
/// (`StatefulSetAutoDeletePVC` off, as before Kubernetes 1.27): the server
/// drops it, each apply then rewrites the managed fields' timestamp, and
/// the new resourceVersion wakes the controller again.
pub fn pvc_retention_policy(
    delete_claim: bool,
) -> Option<StatefulSetPersistentVolumeClaimRetentionPolicy> {
    delete_claim.then(|| StatefulSetPersistentVolumeClaimRetentionPolicy {
        when_deleted: Some("Delete".to_string()),
        when_scaled: Some("Retain".to_string()),
    })
}

/// StatefulSet `<name>` running `topology.brokers` broker pods;
/// `config_hash` is the hash of the rendered properties (see
/// [`super::config::config_hash`]).
///
/// # Errors
/// A KafkaCluster without name, namespace or uid, or an invalid listener.
#[allow(clippy::too_many_lines)]
pub fn stateful_set(
    kc: &KafkaCluster,
    ctx: &RenderContext,
    topology: Topology,
    config_hash: &str,
) -> Result<StatefulSet, RenderError> {
    let brokers = topology.brokers;
    let (cluster, _) = identity(kc)?;
    let spec = &kc.spec;
    let overrides = spec.pod_template.clone().unwrap_or_default();

    // Operator labels win over the user's: the selector must keep matching.
    let mut pod_labels = overrides.labels.clone();
    pod_labels.extend(common_labels(cluster));
    let mut pod_annotations = overrides.annotations.clone();
    pod_annotations.insert(CONFIG_HASH_ANNOTATION.to_string(), config_hash.to_string());
    pod_annotations.insert(
        "kubectl.kubernetes.io/default-container".to_string(),
        "broker".to_string(),
    );

    let mut ports: Vec<ContainerPort> = spec
        .listeners
        .iter()
        .map(|l| ContainerPort {
            name: Some(l.name.clone()),
            container_port: l.port,
            protocol: Some("TCP".to_string()),
            ..ContainerPort::default()
        })
        .collect();
    ports.push(ContainerPort {
        name: Some("http".to_string()),
        container_port: HTTP_PORT,
        protocol: Some("TCP".to_string()),
        ..ContainerPort::default()
    });
    ports.push(ContainerPort {
        name: Some("rpc".to_string()),
        container_port: RPC_PORT,
        protocol: Some("TCP".to_string()),
        ..ContainerPort::default()
    });
    ports.push(ContainerPort {
        name: Some("operator".to_string()),
        container_port: OPERATOR_PORT,
        protocol: Some("TCP".to_string()),
        ..ContainerPort::default()
    });

    // `$(VAR)` expands only variables defined earlier in the list.
    let mut env = vec![
        field_env("POD_NAME", "metadata.name"),
        field_env(
            "SKIFF_NODE_ID",
            &format!("metadata.labels['{POD_INDEX_LABEL}']"),
        ),
    ];
    if external::has_node_port(kc) {
        env.push(field_env("HOST_IP", "status.hostIP"));
    }
    if spec.rack.is_some() {
        // The rack of the node the pod runs on, written by the controller.
        env.push(field_env("NODE_NAME", "spec.nodeName"));
        env.push(EnvVar {
            name: "SKIFF_BROKER_RACK_FILE".to_string(),
            value: Some(format!(
                "{CONFIG_MOUNT}/{}$(NODE_NAME)",
                rack::RACK_KEY_PREFIX
            )),
            ..EnvVar::default()
        });
    }
    if external::has_external(kc) {
        env.push(EnvVar {
            name: "SKIFF_ADVERTISED_LISTENERS_FILE".to_string(),
            value: Some(format!(
                "{CONFIG_MOUNT}/{}$(SKIFF_NODE_ID)",
                external::ADVERTISED_KEY_PREFIX
            )),
            ..EnvVar::default()
        });
    }
    // Each broker's own certificate from the mounted Secret (see
    // super::tls).
    let tls = super::tls::has_tls(kc);
    if tls {
        for (name, file) in [
            ("SKIFF_SSL_CERT_FILE", "crt"),
            ("SKIFF_SSL_KEY_FILE", "key"),
        ] {
            env.push(EnvVar {
                name: name.to_string(),
                value: Some(format!(
                    "{}/broker-$(SKIFF_NODE_ID).{file}",
                    super::tls::TLS_MOUNT
                )),
                ..EnvVar::default()
            });
        }
    }
    env.extend([
        EnvVar {
            name: "SKIFF_ADVERTISED_LISTENERS".to_string(),
            value: Some(advertised_listeners(kc, ctx)?),
            ..EnvVar::default()
        },
        EnvVar {
            name: "SKIFF_RPC_ADVERTISED_LISTENER".to_string(),
            value: Some(rpc_advertised_listener(kc, ctx)?),
            ..EnvVar::default()
        },
        // The operator's SCRAM user, created at start when missing.
        EnvVar {
            name: "SKIFF_SCRAM_BOOTSTRAP_USERS_FILE".to_string(),
            value: Some(format!("{OPERATOR_SECRET_MOUNT}/{OPERATOR_USERS_KEY}")),
            ..EnvVar::default()
        },
        EnvVar {
            name: peer_token::TOKEN_FILE_ENV.to_string(),
            value: Some(format!(
                "{}/{}",
                peer_token::PEER_TOKEN_MOUNT,
                peer_token::PEER_TOKEN_KEY
            )),
            ..EnvVar::default()
        },
        // The controller turns this off while a cluster that ran without a
        // token is rolled to one (see super::peer_token).
        EnvVar {
            name: peer_token::REQUIRED_ENV.to_string(),
            value: Some("true".to_string()),
            ..EnvVar::default()
        },
    ]);

    let mut volume_mounts = vec![
        VolumeMount {
            name: "data".to_string(),
            mount_path: DATA_MOUNT.to_string(),
            ..VolumeMount::default()
        },
        VolumeMount {
            name: "config".to_string(),
            mount_path: CONFIG_MOUNT.to_string(),
            read_only: Some(true),
            ..VolumeMount::default()
        },
        VolumeMount {
            name: "operator".to_string(),
            mount_path: OPERATOR_SECRET_MOUNT.to_string(),
            read_only: Some(true),
            ..VolumeMount::default()
        },
        VolumeMount {
            name: "tmp".to_string(),
            mount_path: "/tmp".to_string(),
            ..VolumeMount::default()
        },
    ];
    if tls {
        volume_mounts.push(VolumeMount {
            name: "tls".to_string(),
            mount_path: super::tls::TLS_MOUNT.to_string(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }
    volume_mounts.push(VolumeMount {
        name: "peer-token".to_string(),
        mount_path: peer_token::PEER_TOKEN_MOUNT.to_string(),
        read_only: Some(true),
        ..VolumeMount::default()
    });

    let container = Container {
        name: "broker".to_string(),
        image: Some(
            spec.image
                .clone()
                .unwrap_or_else(|| ctx.default_image.clone()),
        ),
        image_pull_policy: Some("IfNotPresent".to_string()),
        args: Some(vec![
            "--config".to_string(),
            format!("{CONFIG_MOUNT}/{PROPERTIES_KEY}"),
            "--listeners".to_string(),
            listeners_flag(kc)?,
            "--data-dir".to_string(),
            DATA_DIR.to_string(),
            "--http-addr".to_string(),
            format!("0.0.0.0:{HTTP_PORT}"),
            "--cluster-id".to_string(),
            cluster_id(kc)?,
            "--controller-quorum-voters".to_string(),
            controller_quorum_voters(kc, ctx, topology)?,
            "--rpc-listener".to_string(),
            format!("0.0.0.0:{RPC_PORT}"),
        ]),
        env: Some(env),
        ports: Some(ports),
        resources: spec.resources.clone(),
        // Log recovery scans segment tails at start: give it ten minutes
        // before liveness may restart the broker.
        startup_probe: Some(http_probe("/livez", 5, 120)),
        liveness_probe: Some(http_probe("/livez", 10, 3)),
        readiness_probe: Some(http_probe("/readyz", 5, 3)),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_string()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(volume_mounts),
        ..Container::default()
    };

    let topology_spread_constraints = spec.rack.as_ref().map(|rack| {
        vec![TopologySpreadConstraint {
            max_skew: 1,
            topology_key: rack.topology_key.clone(),
            when_unsatisfiable: "DoNotSchedule".to_string(),
            label_selector: Some(LabelSelector {
                match_labels: Some(selector_labels(cluster)),
                ..LabelSelector::default()
            }),
            ..TopologySpreadConstraint::default()
        }]
    });

    let mut volumes = vec![
        Volume {
            name: "config".to_string(),
            config_map: Some(ConfigMapVolumeSource {
                name: names::config_map(cluster),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: "operator".to_string(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(names::operator_secret(cluster)),
                items: Some(vec![KeyToPath {
                    key: OPERATOR_USERS_KEY.to_string(),
                    path: OPERATOR_USERS_KEY.to_string(),
                    ..KeyToPath::default()
                }]),
                default_mode: Some(0o440),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: "tmp".to_string(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        },
    ];
    if tls {
        volumes.push(Volume {
            name: "tls".to_string(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(names::broker_certs(cluster)),
                default_mode: Some(0o440),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
    }
    volumes.push(Volume {
        name: "peer-token".to_string(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(names::peer_token(cluster)),
            items: Some(vec![KeyToPath {
                key: peer_token::PEER_TOKEN_KEY.to_string(),
                path: peer_token::PEER_TOKEN_KEY.to_string(),
                ..KeyToPath::default()
            }]),
            default_mode: Some(0o440),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    });

    let pod_spec = PodSpec {
        service_account_name: Some(names::service_account(cluster)),
        automount_service_account_token: Some(false),
        // Service links would put `<SERVICE>_PORT`-style variables into the
        // broker's environment, where `SKIFF_*` names are settings.
        enable_service_links: Some(false),
        // Time for a controlled shutdown (logs flushed, producer state
        // snapshotted).
        termination_grace_period_seconds: Some(120),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(BROKER_UID),
            run_as_group: Some(BROKER_UID),
            fs_group: Some(BROKER_UID),
            fs_group_change_policy: Some("OnRootMismatch".to_string()),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_string(),
                ..SeccompProfile::default()
            }),
            ..PodSecurityContext::default()
        }),
        affinity: Some(
            overrides
                .affinity
                .clone()
                .unwrap_or_else(|| default_affinity(cluster)),
        ),
        tolerations: (!overrides.tolerations.is_empty()).then(|| overrides.tolerations.clone()),
        priority_class_name: overrides.priority_class_name.clone(),
        topology_spread_constraints,
        containers: vec![container],
        volumes: Some(volumes),
        ..PodSpec::default()
    };

    let claim = PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some("data".to_string()),
            labels: Some(common_labels(cluster)),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_string()]),
            storage_class_name: spec.storage.storage_class.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    spec.storage.size.clone(),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    };

    let mut metadata = owned_meta(kc, names::stateful_set(cluster))?;
    metadata.annotations = Some(BTreeMap::from([(
        METADATA_VOTERS_ANNOTATION.to_string(),
        topology.voters.to_string(),
    )]));
    Ok(StatefulSet {
        metadata,
        spec: Some(StatefulSetSpec {
            replicas: Some(brokers),
            service_name: Some(names::headless_service(cluster)),
            selector: LabelSelector {
                match_labels: Some(selector_labels(cluster)),
                ..LabelSelector::default()
            },
            pod_management_policy: Some("Parallel".to_string()),
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("OnDelete".to_string()),
                ..StatefulSetUpdateStrategy::default()
            }),
            persistent_volume_claim_retention_policy: pvc_retention_policy(
                spec.storage.delete_claim,
            ),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(pod_annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec),
            },
            volume_claim_templates: Some(vec![claim]),
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_claim_retention_policy_is_only_rendered_to_delete_claims() {
        // Retain/Retain is the API server's default; rendered, it is a
        // change on every apply where the server drops the field.
        assert_eq!(pvc_retention_policy(false), None);
        let delete = pvc_retention_policy(true).expect("rendered");
        assert_eq!(delete.when_deleted.as_deref(), Some("Delete"));
        assert_eq!(delete.when_scaled.as_deref(), Some("Retain"));
    }
}
