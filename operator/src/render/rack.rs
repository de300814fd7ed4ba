//! Rack per broker (`spec.rack`): each broker's `broker.rack` is the value
//! of the `spec.rack.topologyKey` label of the node its pod runs on.
//!
//! A pod cannot read its node's labels through the downward API, so this
//! uses the mechanism of external addresses ([`super::external`]): the
//! controller reads the label and writes it into the cluster's ConfigMap,
//! and the broker reads its file (`broker.rack.file`), waiting at start
//! until it exists. The keys are per node, not per broker: `rack-<node>`,
//! and a pod reads `rack-$(NODE_NAME)` (`spec.nodeName` from the downward
//! API). So a broker always reads the rack of the node it runs on: a pod
//! rescheduled onto another node waits for that node's key instead of
//! starting with the rack of the node it left (a per-broker key would still
//! hold the old value when the new pod starts, and it would have to be
//! restarted again once the controller caught up). The keys are left out of
//! the config hash. A node whose label changes has its key rewritten and
//! the broker pods on it marked for the roll (as a changed address is).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Node;

/// Prefix of the ConfigMap keys holding each node's rack.
pub const RACK_KEY_PREFIX: &str = "rack-";
/// The `skiff.dev/restart` value for a broker whose node's rack changed.
pub const RESTART_RACK: &str = "rack-changed";
/// Longest ConfigMap key.
const MAX_KEY: usize = 253;

/// The ConfigMap key (and file under the config mount) of `node`'s rack;
/// `None` for a node name too long to fit a key with the prefix.
pub fn rack_key(node: &str) -> Option<String> {
    (!node.is_empty() && RACK_KEY_PREFIX.len() + node.len() <= MAX_KEY)
        .then(|| format!("{RACK_KEY_PREFIX}{node}"))
}

/// The node of a [`rack_key`].
pub fn rack_key_node(key: &str) -> Option<&str> {
    key.strip_prefix(RACK_KEY_PREFIX).filter(|n| !n.is_empty())
}

/// The value of label `label` of `node`, when it has a non-empty one.
pub fn node_rack(node: &Node, label: &str) -> Option<String> {
    node.metadata
        .labels
        .as_ref()?
        .get(label)
        .filter(|v| !v.trim().is_empty())
        .cloned()
}

/// One broker's rack as far as the controller knows it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BrokerRack {
    /// The node its pod runs on; `None` while the pod is not scheduled.
    pub node: Option<String>,
    /// The rack its node's key holds (what the broker is given).
    pub rack: Option<String>,
    /// Why its node gives no rack now, if it does not.
    pub problem: Option<String>,
}

/// What the ConfigMap holds next and what that means for the brokers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Racks {
    /// Node → rack: the [`rack_key`] entries to write.
    pub files: BTreeMap<String, String>,
    /// Brokers running on a node whose rack has changed: they started with
    /// the old one and must be restarted.
    pub changed: BTreeSet<i32>,
    /// Each broker with a pod.
    pub brokers: BTreeMap<i32, BrokerRack>,
}

impl Racks {
    /// Brokers on a node without a key: they wait at start.
    pub fn waiting(&self) -> Vec<i32> {
        self.brokers
            .iter()
            .filter(|(_, b)| b.node.is_some() && b.rack.is_none())
            .map(|(id, _)| *id)
            .collect()
    }
}

/// The keys to write, from the broker pods (`pods`: broker id and the node
/// it is scheduled on), the nodes looked up (`nodes`: each pod's node and
/// each node `before` names; `None` when the Node does not exist) and what
/// the ConfigMap held (`before`, node → rack).
///
/// A node with the label gets its value. A node that lost the label keeps
/// its last value (the broker on it keeps its rack; one restarted there is
/// not left waiting), but is reported. A node that is gone and runs no
/// broker loses its key; nodes that run no broker now keep theirs, so a
/// pod the roll deletes and the scheduler puts back finds its key at once.
pub fn racks(
    label: &str,
    pods: &[(i32, Option<String>)],
    nodes: &BTreeMap<String, Option<Node>>,
    before: &BTreeMap<String, String>,
) -> Racks {
    let mut out = Racks::default();
    let occupied: BTreeSet<&str> = pods.iter().filter_map(|(_, n)| n.as_deref()).collect();
    let mut problems: BTreeMap<&str, String> = BTreeMap::new();
    for (name, node) in nodes {
        if rack_key(name).is_none() {
            problems.insert(
                name,
                format!("node name {name:?} is too long for a ConfigMap key"),
            );
            continue;
        }
        let kept = before.get(name).cloned();
        let value = match node {
            Some(n) => match node_rack(n, label) {
                Some(v) => Some(v),
                None => {
                    problems.insert(name, format!("node {name} has no label {label}"));
                    kept
                }
            },
            None => {
                problems.insert(name, format!("node {name} does not exist"));
                kept.filter(|_| occupied.contains(name.as_str()))
            }
        };
        if let Some(v) = value {
            out.files.insert(name.clone(), v);
        }
    }
    for (id, node) in pods {
        let b = match node {
            None => BrokerRack::default(),
            Some(n) => {
                let rack = out.files.get(n).cloned();
                if let (Some(old), Some(new)) = (before.get(n), &rack)
                    && old != new
                {
                    out.changed.insert(*id);
                }
                BrokerRack {
                    node: Some(n.clone()),
                    rack,
                    problem: problems.get(n.as_str()).cloned().or_else(|| {
                        (!nodes.contains_key(n)).then(|| format!("node {n} was not looked up"))
                    }),
                }
            }
        };
        out.brokers.insert(*id, b);
    }
    out
}

/// The `Racks` condition: whether every broker has its rack. Returns
/// (status, reason, message).
pub fn condition(label: &str, brokers: i32, racks: &Racks) -> (bool, &'static str, String) {
    let problems: Vec<String> = racks
        .brokers
        .iter()
        .filter_map(|(id, b)| {
            let p = b.problem.as_ref()?;
            Some(if b.rack.is_some() {
                format!(
                    "broker {id}: {p} (it keeps rack {})",
                    b.rack.as_deref().unwrap_or("")
                )
            } else {
                format!("broker {id}: {p}; it waits at start")
            })
        })
        .collect();
    if !problems.is_empty() {
        return (
            false,
            "NodeLabelMissing",
            format!(
                "{}; label the node or move the broker's pod (delete it) to a node with {label}",
                problems.join("; ")
            ),
        );
    }
    let unplaced: Vec<i32> = (0..brokers)
        .filter(|id| racks.brokers.get(id).is_none_or(|b| b.node.is_none()))
        .collect();
    if !unplaced.is_empty() {
        return (
            false,
            "Pending",
            format!("brokers {unplaced:?} are not on a node yet"),
        );
    }
    (
        true,
        "Assigned",
        format!("every broker has its rack from its node's label {label}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const ZONE: &str = "topology.kubernetes.io/zone";

    fn node(name: &str, zone: Option<&str>) -> (String, Option<Node>) {
        let labels = zone.map(|z| BTreeMap::from([(ZONE.to_string(), z.to_string())]));
        let n: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": labels}
        }))
        .expect("node");
        (name.to_string(), Some(n))
    }

    fn before(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(n, r)| ((*n).to_string(), (*r).to_string()))
            .collect()
    }

    #[test]
    fn each_node_key_holds_its_label_and_each_broker_the_rack_of_its_node() {
        let pods = vec![
            (0, Some("n1".to_string())),
            (1, Some("n2".to_string())),
            (2, None),
        ];
        let nodes = BTreeMap::from([node("n1", Some("zone-a")), node("n2", Some("zone-b"))]);
        let r = racks(ZONE, &pods, &nodes, &BTreeMap::new());
        assert_eq!(r.files, before(&[("n1", "zone-a"), ("n2", "zone-b")]));
        assert!(r.changed.is_empty(), "a first rack restarts nobody");
        assert_eq!(r.brokers[&0].rack.as_deref(), Some("zone-a"));
        assert_eq!(r.brokers[&1].rack.as_deref(), Some("zone-b"));
        assert_eq!(r.brokers[&2], BrokerRack::default());
        assert!(r.waiting().is_empty());
        let (ok, reason, msg) = condition(ZONE, 3, &r);
        assert_eq!((ok, reason), (false, "Pending"));
        assert!(msg.contains("[2]"), "{msg}");
        let r = racks(ZONE, &pods[..2], &nodes, &BTreeMap::new());
        assert_eq!(condition(ZONE, 2, &r).1, "Assigned");
    }

    #[test]
    fn a_relabelled_node_restarts_its_brokers_and_a_rescheduled_pod_only_reads_its_new_node() {
        let nodes = BTreeMap::from([node("n1", Some("zone-c")), node("n2", Some("zone-b"))]);
        let old = before(&[("n1", "zone-a"), ("n2", "zone-b")]);
        // n1 moved to zone-c: broker 0 on it started with zone-a.
        let r = racks(
            ZONE,
            &[(0, Some("n1".into())), (1, Some("n2".into()))],
            &nodes,
            &old,
        );
        assert_eq!(r.files["n1"], "zone-c");
        assert_eq!(r.changed, BTreeSet::from([0]));
        // Broker 1 rescheduled from n2 onto a new node n3: it waits for n3's
        // key (nothing to restart), and n2 keeps its key for a pod coming back.
        let nodes = BTreeMap::from([node("n2", Some("zone-b")), node("n3", Some("zone-d"))]);
        let r = racks(ZONE, &[(1, Some("n3".into()))], &nodes, &old);
        assert!(r.changed.is_empty());
        assert_eq!(r.files, before(&[("n2", "zone-b"), ("n3", "zone-d")]));
        assert_eq!(r.brokers[&1].rack.as_deref(), Some("zone-d"));
    }

    #[test]
    fn a_node_without_the_label_keeps_its_last_rack_or_has_its_broker_wait_and_is_reported() {
        let nodes = BTreeMap::from([node("n1", None), node("n2", None)]);
        let old = before(&[("n1", "zone-a")]);
        let pods = [(0, Some("n1".to_string())), (1, Some("n2".to_string()))];
        let r = racks(ZONE, &pods, &nodes, &old);
        assert_eq!(r.files, old);
        assert!(r.changed.is_empty());
        assert_eq!(r.waiting(), vec![1]);
        let (ok, reason, msg) = condition(ZONE, 2, &r);
        assert_eq!((ok, reason), (false, "NodeLabelMissing"));
        assert!(
            msg.contains(
                "broker 0: node n1 has no label topology.kubernetes.io/zone (it keeps rack zone-a)"
            ) && msg.contains(
                "broker 1: node n2 has no label topology.kubernetes.io/zone; it waits at start"
            ),
            "{msg}"
        );
        // A node that is gone loses its key unless a broker pod is still on it.
        let gone = BTreeMap::from([("n1".to_string(), None), ("n9".to_string(), None)]);
        let old = before(&[("n1", "zone-a"), ("n9", "zone-z")]);
        let r = racks(ZONE, &[(0, Some("n1".into()))], &gone, &old);
        assert_eq!(r.files, before(&[("n1", "zone-a")]));
        assert!(
            r.brokers[&0]
                .problem
                .as_deref()
                .is_some_and(|p| p.contains("does not exist"))
        );
    }

    #[test]
    fn keys_name_their_node() {
        assert_eq!(
            rack_key("ip-10-0-1-5.ec2.internal").as_deref(),
            Some("rack-ip-10-0-1-5.ec2.internal")
        );
        assert_eq!(rack_key_node("rack-n1"), Some("n1"));
        assert_eq!(rack_key_node("advertised-1"), None);
        assert_eq!(rack_key(&"n".repeat(249)), None);
        assert!(rack_key(&"n".repeat(248)).is_some());
    }
}
