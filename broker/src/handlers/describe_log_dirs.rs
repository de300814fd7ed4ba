//! DescribeLogDirs (v1-4): the partitions this broker holds a replica of,
//! with their bytes on disk, under its one log directory. Needs DESCRIBE on
//! the cluster. Each broker answers only for itself, so a client asks every
//! broker; the operator's balancer reads partition sizes this way.
//!
//! Null topics: every partition held here. A named partition not held here
//! (absent, another broker's single replica, unknown) is left out, as Kafka
//! does, not reported as an error.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use crate::acl::Operation;
use crate::broker::Broker;
use crate::cluster::routing;
use crate::cluster::topic_table::Topic;
use crate::partition::Partition;

/// What Kafka reports for a volume size it could not read. Skiff does not
/// ask the OS (no statvfs binding among its dependencies).
const UNKNOWN_BYTES: i64 = -1;

pub async fn handle(
    ctx: &RequestContext<'_>,
    req: DescribeLogDirsRequest,
) -> DescribeLogDirsResponse {
    let resp = DescribeLogDirsResponse::default();
    if !ctx.authorize_cluster(Operation::Describe) {
        super::count_error(ctx, "DescribeLogDirs", "cluster_authorization_failed");
        // As Kafka: no directories; v3+ also carry the code (v1-2 have no
        // field for it, and the codec leaves it out).
        return resp.with_error_code(ResponseError::ClusterAuthorizationFailed.code());
    }
    let broker = ctx.broker;
    let hosted = broker.topics.all().into_iter().flat_map(|t| {
        t.partitions
            .iter()
            .filter(|p| hosted_here(broker, &t, p))
            .map(|p| (t.name.to_string(), p.index, p.size_bytes()))
            .collect::<Vec<_>>()
    });
    let topics = describe(req.topics.as_deref(), hosted);
    let log_dir = log_dir_name(broker.topics.logs_dir());
    let dir = DescribeLogDirsResult::default()
        .with_log_dir(StrBytes::from_string(log_dir))
        .with_topics(topics)
        .with_total_bytes(UNKNOWN_BYTES)
        .with_usable_bytes(UNKNOWN_BYTES);
    resp.with_results(vec![dir])
}

/// Whether this broker keeps a copy of the partition's data: a Raft
/// replica, or the single replica assigned here. A single-replica
/// partition of another broker also has a (never written) local log here,
/// which is not a replica of it.
fn hosted_here(broker: &Broker, topic: &Topic, p: &Partition) -> bool {
    if p.is_absent() {
        return false;
    }
    p.replicated().is_some() || routing::leader_of(broker, topic, p.index) == broker.node_id()
}

/// Kafka names a log dir by its absolute path.
fn log_dir_name(dir: &Path) -> String {
    std::path::absolute(dir)
        .unwrap_or_else(|_| dir.to_path_buf())
        .to_string_lossy()
        .into_owned()
}

/// The requested ones among `hosted` (topic, partition, bytes), by topic
/// name and partition. `wanted` of `None` asks for all; a partition named
/// twice is listed once.
fn describe(
    wanted: Option<&[DescribableLogDirTopic]>,
    hosted: impl IntoIterator<Item = (String, i32, u64)>,
) -> Vec<DescribeLogDirsTopic> {
    let filter: Option<HashMap<&str, BTreeSet<i32>>> = wanted.map(|ts| {
        let mut m: HashMap<&str, BTreeSet<i32>> = HashMap::new();
        for t in ts {
            m.entry(t.topic.as_str())
                .or_default()
                .extend(t.partitions.iter().copied());
        }
        m
    });
    let mut by_topic: BTreeMap<String, BTreeMap<i32, u64>> = BTreeMap::new();
    for (topic, index, bytes) in hosted {
        let asked = filter
            .as_ref()
            .is_none_or(|f| f.get(topic.as_str()).is_some_and(|ps| ps.contains(&index)));
        if asked {
            by_topic.entry(topic).or_default().insert(index, bytes);
        }
    }
    by_topic
        .into_iter()
        .map(|(name, partitions)| {
            DescribeLogDirsTopic::default()
                .with_name(TopicName(StrBytes::from_string(name)))
                .with_partitions(
                    partitions
                        .into_iter()
                        .map(|(index, bytes)| {
                            DescribeLogDirsPartition::default()
                                .with_partition_index(index)
                                .with_partition_size(i64::try_from(bytes).unwrap_or(i64::MAX))
                                // Every replica here is a current one (no
                                // future replicas moving between dirs).
                                .with_offset_lag(0)
                                .with_is_future_key(false)
                        })
                        .collect(),
                )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want(topic: &str, partitions: &[i32]) -> DescribableLogDirTopic {
        DescribableLogDirTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(partitions.to_vec())
    }

    fn hosted() -> Vec<(String, i32, u64)> {
        vec![
            ("orders".into(), 1, 300),
            ("audit".into(), 0, 7),
            ("orders".into(), 0, 100),
            ("events".into(), 2, 0),
        ]
    }

    fn flat(topics: &[DescribeLogDirsTopic]) -> Vec<(String, i32, i64)> {
        topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(|p| (t.name.to_string(), p.partition_index, p.partition_size))
            })
            .collect()
    }

    #[test]
    fn describe_log_dirs_null_topics_lists_every_hosted_partition_in_order() {
        let got = describe(None, hosted());
        assert_eq!(
            flat(&got),
            vec![
                ("audit".into(), 0, 7),
                ("events".into(), 2, 0),
                ("orders".into(), 0, 100),
                ("orders".into(), 1, 300),
            ]
        );
        assert_eq!(got.len(), 3, "one entry per topic");
        let p = &got[2].partitions[0];
        assert_eq!((p.offset_lag, p.is_future_key), (0, false));
    }

    #[test]
    fn describe_log_dirs_lists_only_requested_partitions_held_here_once() {
        let req = [
            want("orders", &[1, 5]),
            want("unknown", &[0]),
            want("orders", &[1]),
            want("audit", &[]),
        ];
        let got = describe(Some(&req), hosted());
        assert_eq!(flat(&got), vec![("orders".into(), 1, 300)]);
    }

    #[test]
    fn describe_log_dirs_empty_request_lists_nothing() {
        assert!(describe(Some(&[]), hosted()).is_empty());
    }

    #[test]
    fn describe_log_dirs_names_the_dir_by_its_absolute_path() {
        let name = log_dir_name(Path::new("data/logs"));
        assert!(Path::new(&name).is_absolute(), "{name}");
        assert!(name.ends_with("data/logs"), "{name}");
    }
}
