//! AlterPartitionReassignments (v0-1): start or cancel partition
//! reassignments. Needs ALTER on the cluster. The metadata records each
//! one; the partition's Raft leader carries it out as membership changes
//! (`replication::reassign`), and ListPartitionReassignments shows it until
//! it is done. Only replicated partitions (a cluster, replication factor 2
//! or more) can move.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use crate::acl::Operation;
use crate::cluster::meta_state::{MetaCommand, MetaResponse, ReassignError};

const API: &str = "AlterPartitionReassignments";

fn reassign_error(e: &ReassignError) -> ResponseError {
    match e {
        ReassignError::UnknownPartition => ResponseError::UnknownTopicOrPartition,
        ReassignError::InvalidReplicas(_) => ResponseError::InvalidReplicaAssignment,
        ReassignError::InProgress => ResponseError::ReassignmentInProgress,
        ReassignError::NoneInProgress => ResponseError::NoReassignmentInProgress,
    }
}

pub async fn handle(
    ctx: &RequestContext<'_>,
    req: AlterPartitionReassignmentsRequest,
) -> AlterPartitionReassignmentsResponse {
    let resp = AlterPartitionReassignmentsResponse::default()
        .with_allow_replication_factor_change(req.allow_replication_factor_change);
    let top = |code: ResponseError, msg: &'static str| {
        super::count_error(
            ctx,
            API,
            if code == ResponseError::ClusterAuthorizationFailed {
                "cluster_authorization_failed"
            } else {
                "invalid_request"
            },
        );
        resp.clone()
            .with_error_code(code.code())
            .with_error_message(Some(StrBytes::from_static_str(msg)))
    };
    if !ctx.authorize_cluster(Operation::Alter) {
        return top(
            ResponseError::ClusterAuthorizationFailed,
            "AlterPartitionReassignments needs ALTER on the cluster",
        );
    }
    let Some(meta) = ctx.broker.topics.store().group().cloned() else {
        return top(
            ResponseError::InvalidRequest,
            "a single broker has nowhere to move replicas to: reassignments need a cluster",
        );
    };
    let mut responses = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            let target: Option<Vec<i32>> = p.replicas.map(|r| r.into_iter().map(|b| b.0).collect());
            let outcome = async {
                if let Some(target) = &target
                    && !req.allow_replication_factor_change
                {
                    let current = {
                        let state = meta.state();
                        state.topics.get(t.name.as_str()).and_then(|rec| {
                            let i = usize::try_from(p.partition_index).ok()?;
                            let original = state
                                .reassignment(rec.id, p.partition_index)
                                .map(|r| r.original.len());
                            original.or_else(|| rec.assignments.get(i).map(Vec::len))
                        })
                    };
                    if current.is_some_and(|n| n != target.len()) {
                        return Err((
                            ResponseError::InvalidReplicationFactor,
                            format!(
                                "the target has {} replicas, the partition {}, and the request does not allow a change of replication factor",
                                target.len(),
                                current.unwrap_or(0)
                            ),
                        ));
                    }
                }
                let cmd = MetaCommand::Reassign {
                    topic: t.name.to_string(),
                    partition: p.partition_index,
                    target,
                };
                match meta.write(cmd).await {
                    Ok(MetaResponse::ReassignRefused(e)) => Err((reassign_error(&e), e.to_string())),
                    Ok(_) => Ok(()),
                    Err(e) => Err((ResponseError::RequestTimedOut, e.to_string())),
                }
            }
            .await;
            let result = ReassignablePartitionResponse::default()
                .with_partition_index(p.partition_index)
                .with_error_message(None);
            partitions.push(match outcome {
                Ok(()) => result,
                Err((code, msg)) => {
                    super::count_error(ctx, API, "refused");
                    result
                        .with_error_code(code.code())
                        .with_error_message(Some(StrBytes::from_string(msg)))
                }
            });
        }
        responses.push(
            ReassignableTopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions),
        );
    }
    resp.with_error_message(None).with_responses(responses)
}
