//! Services: headless (pod DNS names), bootstrap, and per external listener
//! a bootstrap Service plus one Service per broker.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use skiff_crds::KafkaCluster;
use skiff_crds::kafka_cluster::{Exposure, HTTP_PORT, Listener, OPERATOR_PORT, RPC_PORT};

use super::{RenderError, identity, names, owned_meta, selector_labels};

fn listener_port(l: &Listener) -> ServicePort {
    named_port(&l.name, l.port)
}

/// A port of the broker container by its name.
fn named_port(name: &str, port: i32) -> ServicePort {
    ServicePort {
        name: Some(name.to_string()),
        port,
        target_port: Some(IntOrString::String(name.to_string())),
        protocol: Some("TCP".to_string()),
        ..ServicePort::default()
    }
}

fn rpc_port() -> ServicePort {
    named_port("rpc", RPC_PORT)
}

fn operator_port() -> ServicePort {
    named_port("operator", OPERATOR_PORT)
}

fn http_port() -> ServicePort {
    named_port("http", HTTP_PORT)
}

/// Headless Service `<name>-brokers`: gives each pod the DNS name
/// `<pod>.<name>-brokers.<ns>.svc.<domain>` that brokers advertise.
/// Not-ready pods are published too, so brokers find each other while they
/// start (the metadata voters need each other before any can be useful).
/// It also names the brokers' `rpc` port (broker-to-broker gRPC), which the
/// bootstrap Service leaves out.
///
/// # Errors
/// A KafkaCluster without name, namespace or uid.
pub fn headless_service(kc: &KafkaCluster) -> Result<Service, RenderError> {
    let (cluster, _) = identity(kc)?;
    let mut ports: Vec<ServicePort> = kc.spec.listeners.iter().map(listener_port).collect();
    ports.push(http_port());
    ports.push(rpc_port());
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

/// Bootstrap Service `<name>-bootstrap` (ClusterIP) over every listener, the
/// HTTP port and the operator's listener, for in-cluster clients'
/// `bootstrap.servers` and the operator's admin connection.
///
/// # Errors
/// A KafkaCluster without name, namespace or uid.
pub fn bootstrap_service(kc: &KafkaCluster) -> Result<Service, RenderError> {
    let (cluster, _) = identity(kc)?;
    let mut ports: Vec<ServicePort> = kc.spec.listeners.iter().map(listener_port).collect();
    ports.push(http_port());
    ports.push(operator_port());
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
