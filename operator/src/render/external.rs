//! External listeners (`NodePort`, `LoadBalancer`): the addresses their
//! Services were given, turned into what each broker advertises and what
//! `status.bootstrapServers` lists.
//!
//! A broker's external address exists only after its Service does (a
//! load balancer's ingress can take minutes) and differs per broker while
//! the StatefulSet's pod template is shared. So the operator writes each
//! broker's addresses into the cluster's ConfigMap, one key per broker
//! ([`advertised_key`]), and the broker reads its key as
//! `advertised.listeners.file`, waiting at start until the key exists
//! (see the broker's `advertised` module). The keys are left out of the
//! config hash: a new broker's address appearing must not roll the others.
//!
//! - **LoadBalancer**: the per-broker Service's first ingress IP or
//!   hostname, with the listener's port.
//! - **NodePort**: the per-broker Service's node port; the host is left out
//!   of the file (`NAME://:31234`), so the broker keeps the host of its
//!   `advertised.listeners` entry, `$(HOST_IP)` (the pod's node,
//!   `status.hostIP`, which only the pod knows for certain).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Service;
use skiff_crds::KafkaCluster;
use skiff_crds::kafka_cluster::{Exposure, Listener, ListenerAddress};

use super::{RenderError, identity, kafka_listener_name, names};

/// Prefix of the ConfigMap keys holding each broker's external addresses.
pub const ADVERTISED_KEY_PREFIX: &str = "advertised-";

/// Pod annotation the operator sets on a broker pod that started with an
/// external address that has changed since: the roll restarts it like a pod
/// of an old template.
pub const RESTART_ANNOTATION: &str = "skiff.dev/restart";
/// The [`RESTART_ANNOTATION`] value for a changed external address.
pub const RESTART_ADVERTISED: &str = "advertised-address-changed";

/// The ConfigMap key (and file under the config mount) of broker `id`'s
/// external addresses.
pub fn advertised_key(id: i32) -> String {
    format!("{ADVERTISED_KEY_PREFIX}{id}")
}

/// The broker id of an [`advertised_key`].
pub fn advertised_key_id(key: &str) -> Option<i32> {
    key.strip_prefix(ADVERTISED_KEY_PREFIX)?.parse().ok()
}

/// Whether any listener is exposed outside the cluster.
pub fn has_external(kc: &KafkaCluster) -> bool {
    external_listeners(kc).next().is_some()
}

/// Whether any listener is exposed through NodePort Services (its brokers
/// need their node's address).
pub fn has_node_port(kc: &KafkaCluster) -> bool {
    kc.spec
        .listeners
        .iter()
        .any(|l| l.exposure == Exposure::NodePort)
}

fn external_listeners(kc: &KafkaCluster) -> impl Iterator<Item = &Listener> {
    kc.spec
        .listeners
        .iter()
        .filter(|l| l.exposure != Exposure::Internal)
}

/// What the Service of an external listener has been given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assigned {
    /// A load balancer's ingress (IP or hostname), on the listener's port.
    LoadBalancer { host: String, port: i32 },
    /// The node port every node forwards to the Service.
    NodePort { node_port: i32 },
}

/// What `svc` has been given for listener `l`; `None` while it has nothing,
/// or while it is still of another type than the listener asks for (a
/// listener switched between NodePort and LoadBalancer).
pub fn assigned(svc: &Service, l: &Listener) -> Option<Assigned> {
    let spec = svc.spec.as_ref()?;
    match l.exposure {
        Exposure::Internal => None,
        Exposure::LoadBalancer => {
            if spec.type_.as_deref() != Some("LoadBalancer") {
                return None;
            }
            svc.status
                .as_ref()?
                .load_balancer
                .as_ref()?
                .ingress
                .iter()
                .flatten()
                .find_map(|i| {
                    i.ip.as_deref()
                        .filter(|s| !s.is_empty())
                        .or(i.hostname.as_deref().filter(|s| !s.is_empty()))
                })
                .map(|host| Assigned::LoadBalancer {
                    host: host.to_string(),
                    port: l.port,
                })
        }
        Exposure::NodePort => {
            if spec.type_.as_deref() != Some("NodePort") {
                return None;
            }
            spec.ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(l.name.as_str()))
                .and_then(|p| p.node_port)
                .filter(|p| *p > 0)
                .map(|node_port| Assigned::NodePort { node_port })
        }
    }
}

fn find<'a>(services: &'a [Service], name: &str) -> Option<&'a Service> {
    services
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some(name))
}

/// Each broker's external addresses as far as the Services have them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BrokerAddresses {
    /// The [`advertised_key`] file of each broker whose every external
    /// listener has an address.
    pub files: BTreeMap<i32, String>,
    /// Per-broker Services with no address yet.
    pub pending: Vec<String>,
}

/// The advertised-listeners file of brokers `0..brokers`, from the
/// cluster's Services as they are now.
///
/// # Errors
/// A KafkaCluster without name or namespace.
pub fn broker_addresses(
    kc: &KafkaCluster,
    brokers: i32,
    services: &[Service],
) -> Result<BrokerAddresses, RenderError> {
    let (cluster, _) = identity(kc)?;
    let mut out = BrokerAddresses::default();
    for id in 0..brokers {
        let mut file = String::new();
        let mut complete = true;
        for l in external_listeners(kc) {
            let name = names::broker_service(cluster, id, &l.name);
            let line = match find(services, &name).and_then(|s| assigned(s, l)) {
                Some(Assigned::LoadBalancer { host, port }) => format!("{host}:{port}"),
                Some(Assigned::NodePort { node_port }) => format!(":{node_port}"),
                None => {
                    out.pending.push(name);
                    complete = false;
                    continue;
                }
            };
            file.push_str(&format!("{}://{line}\n", kafka_listener_name(l)));
        }
        if complete {
            out.files.insert(id, file);
        }
    }
    Ok(out)
}

/// The Kafka listener names a file gives addresses for.
fn file_listeners(file: &str) -> BTreeSet<&str> {
    file.lines()
        .filter_map(|l| l.split_once("://").map(|(n, _)| n.trim()))
        .collect()
}

/// What the ConfigMap holds next, from what the Services say now (`now`) and
/// what it held (`before`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Files {
    pub files: BTreeMap<i32, String>,
    /// Brokers whose file held addresses that are now different: a broker
    /// started before reads the old ones and must be restarted.
    pub changed: BTreeSet<i32>,
}

/// The files to write. A broker with a known address gets it. A broker
/// whose address is pending keeps the file it had, so a running broker
/// keeps working and a restarted one is not left waiting while its Service
/// is briefly without status (once a different address is known, the
/// change restarts it); unless that file names other listeners than the
/// external ones now, which would advertise a listener's old exposure.
/// Brokers `>= brokers` (removed) get none.
pub fn files(
    kc: &KafkaCluster,
    brokers: i32,
    now: &BTreeMap<i32, String>,
    before: &BTreeMap<i32, String>,
) -> Files {
    let wanted: BTreeSet<String> = external_listeners(kc).map(kafka_listener_name).collect();
    let mut out = Files::default();
    for id in 0..brokers {
        let old = before.get(&id);
        let kept = old.filter(|f| {
            file_listeners(f)
                == wanted
                    .iter()
                    .map(String::as_str)
                    .collect::<BTreeSet<&str>>()
        });
        let new = now.get(&id).or(kept);
        if let Some(f) = new {
            out.files.insert(id, f.clone());
        }
        if old.is_some() && new != old {
            out.changed.insert(id);
        }
    }
    out
}

/// The bootstrap address of each external listener whose bootstrap Service
/// has one, and the Services (or, for NodePort, the reason) still pending.
/// A NodePort listener lists `<node>:<nodePort>` for each node a broker pod
/// runs on (`node_hosts`, the pods' `status.hostIP`): with
/// `externalTrafficPolicy: Local` only those nodes answer on the port.
///
/// # Errors
/// A KafkaCluster without name or namespace.
pub fn bootstrap_servers(
    kc: &KafkaCluster,
    services: &[Service],
    node_hosts: &BTreeSet<String>,
) -> Result<(Vec<ListenerAddress>, Vec<String>), RenderError> {
    let (cluster, _) = identity(kc)?;
    let mut known = Vec::new();
    let mut pending = Vec::new();
    for l in external_listeners(kc) {
        let name = names::external_bootstrap_service(cluster, &l.name);
        let address = match find(services, &name).and_then(|s| assigned(s, l)) {
            Some(Assigned::LoadBalancer { host, port }) => format!("{host}:{port}"),
            Some(Assigned::NodePort { node_port }) if !node_hosts.is_empty() => node_hosts
                .iter()
                .map(|h| format!("{h}:{node_port}"))
                .collect::<Vec<_>>()
                .join(","),
            Some(Assigned::NodePort { .. }) => {
                pending.push(format!("{name} (no broker pod is on a node yet)"));
                continue;
            }
            None => {
                pending.push(name);
                continue;
            }
        };
        known.push(ListenerAddress {
            name: l.name.clone(),
            address,
        });
    }
    Ok((known, pending))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kc() -> KafkaCluster {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "skiff.dev/v1alpha1", "kind": "KafkaCluster",
            "metadata": {"name": "kafka", "namespace": "ns", "uid": "u"},
            "spec": {"listeners": [
                {"name": "plain", "port": 9092},
                {"name": "lb", "port": 9094, "exposure": "LoadBalancer"},
                {"name": "np", "port": 9095, "exposure": "NodePort"}
            ]}
        }))
        .expect("kc")
    }

    fn svc(
        name: &str,
        type_: &str,
        port_name: &str,
        node_port: Option<i32>,
        ingress: serde_json::Value,
    ) -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"type": type_, "ports": [{"name": port_name, "port": 1, "nodePort": node_port}]},
            "status": {"loadBalancer": {"ingress": ingress}}
        }))
        .expect("service")
    }

    #[test]
    fn a_broker_gets_a_file_once_every_external_listener_has_an_address() {
        let kc = kc();
        let services = vec![
            svc(
                "kafka-0-lb",
                "LoadBalancer",
                "lb",
                Some(30001),
                serde_json::json!([{"ip": "203.0.113.10"}]),
            ),
            svc(
                "kafka-0-np",
                "NodePort",
                "np",
                Some(31000),
                serde_json::json!([]),
            ),
            // Broker 1: its load balancer has none yet.
            svc(
                "kafka-1-lb",
                "LoadBalancer",
                "lb",
                Some(30002),
                serde_json::json!([]),
            ),
            svc(
                "kafka-1-np",
                "NodePort",
                "np",
                Some(31001),
                serde_json::json!([]),
            ),
        ];
        let a = broker_addresses(&kc, 3, &services).expect("renders");
        assert_eq!(
            a.files,
            BTreeMap::from([(0, "LB://203.0.113.10:9094\nNP://:31000\n".to_string())])
        );
        assert_eq!(a.pending, vec!["kafka-1-lb", "kafka-2-lb", "kafka-2-np"]);
        // A hostname ingress (AWS) does as well as an IP.
        let lb = svc(
            "x",
            "LoadBalancer",
            "lb",
            None,
            serde_json::json!([{"hostname": "a.elb.example.com"}]),
        );
        assert_eq!(
            assigned(&lb, &kc.spec.listeners[1]),
            Some(Assigned::LoadBalancer {
                host: "a.elb.example.com".into(),
                port: 9094
            })
        );
        // A Service still of the listener's former type has nothing yet.
        assert_eq!(assigned(&lb, &kc.spec.listeners[2]), None);
    }

    #[test]
    fn a_pending_address_keeps_the_last_file_and_a_different_one_marks_the_broker_changed() {
        let kc = kc();
        let a = "LB://203.0.113.10:9094\nNP://:31000\n".to_string();
        let b = "LB://203.0.113.99:9094\nNP://:31000\n".to_string();
        let before = BTreeMap::from([(0, a.clone()), (1, a.clone()), (2, a.clone())]);
        let now = BTreeMap::from([(0, a.clone()), (1, b.clone())]);
        let f = files(&kc, 3, &now, &before);
        assert_eq!(
            f.files,
            BTreeMap::from([(0, a.clone()), (1, b.clone()), (2, a.clone())])
        );
        assert_eq!(f.changed, BTreeSet::from([1]));
        // First address: nothing ran with another one.
        let f = files(&kc, 3, &now, &BTreeMap::new());
        assert!(f.changed.is_empty());
        // A file for other listeners is not kept; a removed broker has none.
        let old = BTreeMap::from([(0, "LB://203.0.113.10:9094\n".to_string()), (5, a.clone())]);
        let f = files(&kc, 1, &BTreeMap::new(), &old);
        assert!(f.files.is_empty());
        assert_eq!(f.changed, BTreeSet::from([0]));
    }

    #[test]
    fn bootstrap_addresses_come_from_the_bootstrap_services_and_the_brokers_nodes() {
        let kc = kc();
        let services = vec![
            svc(
                "kafka-lb-bootstrap",
                "LoadBalancer",
                "lb",
                None,
                serde_json::json!([{"ip": "203.0.113.1"}]),
            ),
            svc(
                "kafka-np-bootstrap",
                "NodePort",
                "np",
                Some(31500),
                serde_json::json!([]),
            ),
        ];
        let hosts = BTreeSet::from(["10.0.0.2".to_string(), "10.0.0.1".to_string()]);
        let (known, pending) = bootstrap_servers(&kc, &services, &hosts).expect("renders");
        assert!(pending.is_empty());
        assert_eq!(known[0].address, "203.0.113.1:9094");
        assert_eq!(known[1].address, "10.0.0.1:31500,10.0.0.2:31500");
        let (known, pending) =
            bootstrap_servers(&kc, &services[1..], &BTreeSet::new()).expect("renders");
        assert!(known.is_empty());
        assert_eq!(pending[0], "kafka-lb-bootstrap");
        assert!(pending[1].contains("no broker pod"), "{pending:?}");
    }

    #[test]
    fn keys_name_their_broker() {
        assert_eq!(advertised_key(12), "advertised-12");
        assert_eq!(advertised_key_id("advertised-12"), Some(12));
        assert_eq!(advertised_key_id("server.properties"), None);
    }
}
