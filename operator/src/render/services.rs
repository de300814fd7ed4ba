//! Services: headless (pod DNS names), bootstrap, and per external listener
//! a bootstrap Service plus one Service per broker.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use skiff_crds::KafkaCluster;
use skiff_crds::kafka_cluster::{Exposure, HTTP_PORT, Listener};

use super::{RenderError, identity, names, owned_meta, selector_labels};

fn listener_port(l: &Listener) -> ServicePort {
    ServicePort {
        name: Some(l.name.clone()),
        port: l.port,
        target_port: Some(IntOrString::String(l.name.clone())),
        protocol: Some("TCP".to_string()),
        ..ServicePort::default()
    }
}

fn http_port() -> ServicePort {
    ServicePort {
        name: Some("http".to_string()),
        port: HTTP_PORT,
        target_port: Some(IntOrString::String("http".to_string())),
        protocol: Some("TCP".to_string()),
        ..ServicePort::default()
    }
}

/// Headless Service `<name>-brokers`: gives each pod the DNS name
/// `<pod>.<name>-brokers.<ns>.svc.<domain>` that brokers advertise.
/// Not-ready pods are published too, so brokers find each other while they
/// start (a broker is ready only once it has joined the cluster).
///
/// # Errors
/// A KafkaCluster without name, namespace or uid.
pub fn headless_service(kc: &KafkaCluster) -> Result<Service, RenderError> {
    let (cluster, _) = identity(kc)?;
    let mut ports: Vec<ServicePort> = kc.spec.listeners.iter().map(listener_port).collect();
    ports.push(http_port());
    Ok(Service {
        metadata: owned_meta(kc, names::headless_service(cluster))?,
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_string()),
            publish_not_ready_addresses: Some(true),
            selector: Some(selector_labels(cluster)),
            ports: Some(ports),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    })
}

/// Bootstrap Service `<name>-bootstrap` (ClusterIP) over every listener and
/// the HTTP port, for in-cluster clients' `bootstrap.servers`.
///
/// # Errors
/// A KafkaCluster without name, namespace or uid.
pub fn bootstrap_service(kc: &KafkaCluster) -> Result<Service, RenderError> {
    let (cluster, _) = identity(kc)?;
    let mut ports: Vec<ServicePort> = kc.spec.listeners.iter().map(listener_port).collect();
    ports.push(http_port());
    Ok(Service {
        metadata: owned_meta(kc, names::bootstrap_service(cluster))?,
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_string()),
            selector: Some(selector_labels(cluster)),
            ports: Some(ports),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    })
}

/// For each `NodePort` or `LoadBalancer` listener: a bootstrap Service
/// `<name>-<listener>-bootstrap` over all brokers, and one Service
/// `<name>-<id>-<listener>` per broker (selecting its pod by
/// `statefulset.kubernetes.io/pod-name`), because a Kafka client talks to
/// each partition's leader directly.
///
/// # Errors
/// A KafkaCluster without name, namespace or uid.
pub fn external_services(kc: &KafkaCluster, brokers: i32) -> Result<Vec<Service>, RenderError> {
    let (cluster, _) = identity(kc)?;
    let mut out = Vec::new();
    for l in &kc.spec.listeners {
        let type_ = match l.exposure {
            Exposure::Internal => continue,
            Exposure::NodePort => "NodePort",
            Exposure::LoadBalancer => "LoadBalancer",
        };
        let service =
            |name: String, selector: BTreeMap<String, String>| -> Result<Service, RenderError> {
                Ok(Service {
                    metadata: owned_meta(kc, name)?,
                    spec: Some(ServiceSpec {
                        type_: Some(type_.to_string()),
                        selector: Some(selector),
                        ports: Some(vec![listener_port(l)]),
                        external_traffic_policy: Some("Local".to_string()),
                        ..ServiceSpec::default()
                    }),
                    ..Service::default()
                })
            };
        out.push(service(
            names::external_bootstrap_service(cluster, &l.name),
            selector_labels(cluster),
        )?);
        for id in 0..brokers {
            let mut selector = selector_labels(cluster);
            selector.insert(
                "statefulset.kubernetes.io/pod-name".to_string(),
                format!("{}-{id}", names::stateful_set(cluster)),
            );
            out.push(service(
                names::broker_service(cluster, id, &l.name),
                selector,
            )?);
        }
    }
    Ok(out)
}
