//! ElectLeaders (v0-2), PREFERRED elections: each named partition's
//! leadership goes back to its preferred (first) replica through a
//! hand-over (`replication::handover`), answered once the preferred replica
//! leads or the hand-over's window has passed. Needs ALTER on the cluster.
//! UNCLEAN elections do not exist under Raft (a replica outside the quorum
//! can never lead): INVALID_REQUEST. Null partitions: every replicated
//! partition not led by its preferred replica; only those are listed.

use std::time::Duration;

use futures_util::future::join_all;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use crate::acl::Operation;
use crate::cluster::routing;
use crate::replication::handover::{self, Outcome};
use crate::rpc::GroupId;

const PREFERRED: i8 = 0;

/// One partition's election: `Ok` when the preferred replica now leads.
type Answer = Result<(), (ResponseError, String)>;

pub async fn handle(ctx: &RequestContext<'_>, req: ElectLeadersRequest) -> ElectLeadersResponse {
    let broker = ctx.broker;
    let explicit = req.topic_partitions.is_some();
    let wanted: Vec<(String, i32)> = match req.topic_partitions {
        Some(tps) => tps
            .into_iter()
            .flat_map(|t| {
                let name = t.topic.to_string();
                t.partitions.into_iter().map(move |p| (name.clone(), p))
            })
            .collect(),
        None => broker
            .topics
            .all()
            .iter()
            .filter(|t| routing::is_replicated(broker, t))
            .flat_map(|t| (0..t.partitions.len() as i32).map(|p| (t.name.to_string(), p)))
            .collect(),
    };
    let authorized = ctx.authorize_cluster(Operation::Alter);
    let wait = Duration::from_millis(u64::try_from(req.timeout_ms.max(1000)).unwrap_or(1000));
    let unclean = ctx.version >= 1 && req.election_type != PREFERRED;
    let answers: Vec<Answer> = if authorized {
        join_all(wanted.iter().map(|(t, p)| elect(ctx, t, *p, unclean, wait))).await
    } else {
        super::count_error(ctx, "ElectLeaders", "cluster_authorization_failed");
        wanted
            .iter()
            .map(|_| {
                Err((
                    ResponseError::ClusterAuthorizationFailed,
                    "ElectLeaders needs ALTER on the cluster".to_string(),
                ))
            })
            .collect()
    };
    let mut results: Vec<ReplicaElectionResult> = Vec::new();
    for ((topic, partition), answer) in wanted.into_iter().zip(answers) {
        let r = PartitionResult::default().with_partition_id(partition);
        let r = match answer {
            Ok(()) => r.with_error_message(None),
            // Asked for everything: only the partitions that needed one.
            Err((ResponseError::ElectionNotNeeded, _)) if !explicit => continue,
            Err((code, msg)) => {
                if code != ResponseError::ElectionNotNeeded {
                    super::count_error(ctx, "ElectLeaders", "election_failed");
                }
                r.with_error_code(code.code())
                    .with_error_message(Some(StrBytes::from_string(msg)))
            }
        };
        match results.iter_mut().find(|x| x.topic.as_str() == topic) {
            Some(x) => x.partition_result.push(r),
            None => results.push(
                ReplicaElectionResult::default()
                    .with_topic(TopicName(StrBytes::from_string(topic)))
                    .with_partition_result(vec![r]),
            ),
        }
    }
    let resp = ElectLeadersResponse::default().with_replica_election_results(results);
    if authorized {
        resp
    } else {
        resp.with_error_code(ResponseError::ClusterAuthorizationFailed.code())
    }
}

async fn elect(
    ctx: &RequestContext<'_>,
    topic: &str,
    partition: i32,
    unclean: bool,
    wait: Duration,
) -> Answer {
    let broker = ctx.broker;
    let fail = |code: ResponseError, msg: String| Err((code, msg));
    let Some(t) = broker.topics.get(topic) else {
        return fail(
            ResponseError::UnknownTopicOrPartition,
            format!("topic {topic:?} does not exist"),
        );
    };
    if t.partition(partition).is_none() {
        return fail(
            ResponseError::UnknownTopicOrPartition,
            format!("{topic} has no partition {partition}"),
        );
    }
    if unclean {
        return fail(
            ResponseError::InvalidRequest,
            "unclean elections do not exist under Raft: only an up-to-date replica can lead".into(),
        );
    }
    let route = routing::route(broker, &t, partition);
    let preferred = route.replicas[0];
    if route.leader == preferred {
        return fail(
            ResponseError::ElectionNotNeeded,
            "the preferred replica leads already".into(),
        );
    }
    if route.leader < 0 {
        return fail(
            ResponseError::PreferredLeaderNotAvailable,
            "the partition has no leader now (its last one is fenced or an election is under \
             way): retry once one is elected"
                .into(),
        );
    }
    let Some(meta) = broker.topics.store().group() else {
        return fail(
            ResponseError::ElectionNotNeeded,
            "a single broker leads every partition".into(),
        );
    };
    let Some(addr) = meta
        .state()
        .brokers
        .get(&route.leader)
        .map(|b| b.rpc_addr.clone())
    else {
        return fail(
            ResponseError::PreferredLeaderNotAvailable,
            format!("the leader, broker {}, is not registered", route.leader),
        );
    };
    let gid = GroupId::Partition {
        topic_id: t.id,
        partition,
    };
    let to = u64::try_from(preferred).unwrap_or(u64::MAX);
    match handover::request(meta.pool(), &addr, gid, to).await {
        Ok(Outcome::Started) => {}
        Ok(Outcome::NotNeeded | Outcome::Moved) => {
            return fail(
                ResponseError::ElectionNotNeeded,
                "the preferred replica leads already".into(),
            );
        }
        Ok(Outcome::NotAvailable(why)) => {
            return fail(ResponseError::PreferredLeaderNotAvailable, why);
        }
        Ok(Outcome::NotLeader) => {
            return fail(
                ResponseError::NotLeaderOrFollower,
                format!(
                    "broker {} no longer leads the partition; retry",
                    route.leader
                ),
            );
        }
        Ok(Outcome::TimedOut) => {
            return fail(
                ResponseError::PreferredLeaderNotAvailable,
                "a hand-over of the partition is already under way".into(),
            );
        }
        Err(e) => return fail(ResponseError::PreferredLeaderNotAvailable, e.to_string()),
    }
    // Not longer than the hand-over may take: past its window the leader
    // has given up.
    let wait = wait.min(
        handover::window(broker.config.partition_raft_election_timeout_ms * 2)
            + Duration::from_secs(2),
    );
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let Some(t) = broker.topics.get(topic) else {
            return fail(
                ResponseError::UnknownTopicOrPartition,
                format!("topic {topic:?} was deleted"),
            );
        };
        if routing::route(broker, &t, partition).leader == preferred {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return fail(
                ResponseError::RequestTimedOut,
                format!("broker {preferred} did not take the leadership within {wait:?}"),
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
