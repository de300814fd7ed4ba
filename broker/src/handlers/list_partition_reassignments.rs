//! ListPartitionReassignments (v0): the reassignments under way, from the
//! committed metadata. Needs DESCRIBE on the cluster. A cancelled one is
//! listed until its partition is back on its original replicas, with the
//! replicas it had added as removing.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    BrokerId, ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use crate::acl::Operation;

fn ids(v: Vec<i32>) -> Vec<BrokerId> {
    v.into_iter().map(BrokerId).collect()
}

pub async fn handle(
    ctx: &RequestContext<'_>,
    req: ListPartitionReassignmentsRequest,
) -> ListPartitionReassignmentsResponse {
    let resp = ListPartitionReassignmentsResponse::default().with_error_message(None);
    if !ctx.authorize_cluster(Operation::Describe) {
        super::count_error(
            ctx,
            "ListPartitionReassignments",
            "cluster_authorization_failed",
        );
        return resp
            .with_error_code(ResponseError::ClusterAuthorizationFailed.code())
            .with_error_message(Some(StrBytes::from_static_str(
                "ListPartitionReassignments needs DESCRIBE on the cluster",
            )));
    }
    let Some(meta) = ctx.broker.topics.store().group() else {
        return resp;
    };
    let state = meta.state();
    // Null topics: all of them.
    let wanted: Option<Vec<(String, Vec<i32>)>> = req.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name.to_string(), t.partition_indexes))
            .collect()
    });
    let mut topics = Vec::new();
    for rec in state.topics.values() {
        let Some(moves) = state.reassignments.get(&rec.id) else {
            continue;
        };
        let only: Option<&Vec<i32>> = match &wanted {
            None => None,
            Some(w) => match w.iter().find(|(n, _)| *n == rec.name) {
                Some((_, ps)) => Some(ps),
                None => continue,
            },
        };
        let partitions: Vec<OngoingPartitionReassignment> = moves
            .iter()
            .filter(|(p, _)| only.is_none_or(|ps| ps.contains(p)))
            .map(|(&p, r)| {
                OngoingPartitionReassignment::default()
                    .with_partition_index(p)
                    .with_replicas(ids(r.replicas()))
                    .with_adding_replicas(ids(r.adding()))
                    .with_removing_replicas(ids(r.removing()))
            })
            .collect();
        if !partitions.is_empty() {
            topics.push(
                OngoingTopicReassignment::default()
                    .with_name(TopicName(StrBytes::from_string(rec.name.clone())))
                    .with_partitions(partitions),
            );
        }
    }
    resp.with_topics(topics)
}
