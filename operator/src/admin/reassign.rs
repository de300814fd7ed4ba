//! Moving replicas through the Kafka protocol: AlterPartitionReassignments
//! to start moves, ListPartitionReassignments to follow them, and
//! UnregisterBroker once a drained broker holds nothing. Used by
//! `skiff-operator rebalance` and by the scale-down of a KafkaCluster.

use std::collections::BTreeSet;

use kafka_protocol::messages::alter_partition_reassignments_request::{
    ReassignablePartition, ReassignableTopic,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, BrokerId, ListPartitionReassignmentsRequest, TopicName,
    UnregisterBrokerRequest,
};
use kafka_protocol::protocol::StrBytes;

use super::{AdminClient, AdminError, codes};

/// One partition's new replica list (the first is the preferred leader).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reassignment {
    pub topic: String,
    pub partition: i32,
    pub replicas: Vec<i32>,
}

/// The request for `moves`, topics in the order they first appear.
pub fn alter_request(moves: &[Reassignment]) -> AlterPartitionReassignmentsRequest {
    let mut topics: Vec<ReassignableTopic> = Vec::new();
    for m in moves {
        let p = ReassignablePartition::default()
            .with_partition_index(m.partition)
            .with_replicas(Some(m.replicas.iter().copied().map(BrokerId).collect()));
        match topics.iter_mut().find(|t| t.name.as_str() == m.topic) {
            Some(t) => t.partitions.push(p),
            None => topics.push(
                ReassignableTopic::default()
                    .with_name(TopicName(StrBytes::from_string(m.topic.clone())))
                    .with_partitions(vec![p]),
            ),
        }
    }
    AlterPartitionReassignmentsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(topics)
}

impl AdminClient {
    /// Starts the moves. All or nothing is not on offer in Kafka: the
    /// partitions the brokers refused come back with their errors, the
    /// others are under way.
    ///
    /// # Errors
    /// I/O, or a refusal of the whole request.
    pub async fn reassign(
        &mut self,
        moves: &[Reassignment],
    ) -> Result<Vec<(Reassignment, AdminError)>, AdminError> {
        let (_, resp) = self.send(&alter_request(moves)).await?;
        if resp.error_code != codes::NONE {
            return Err(AdminError::kafka(
                "AlterPartitionReassignments",
                resp.error_code,
                resp.error_message.as_ref(),
            ));
        }
        let mut refused = Vec::new();
        for t in &resp.responses {
            for p in &t.partitions {
                if p.error_code == codes::NONE {
                    continue;
                }
                if let Some(m) = moves
                    .iter()
                    .find(|m| m.topic == t.name.as_str() && m.partition == p.partition_index)
                {
                    refused.push((
                        m.clone(),
                        AdminError::kafka(
                            "AlterPartitionReassignments",
                            p.error_code,
                            p.error_message.as_ref(),
                        ),
                    ));
                }
            }
        }
        Ok(refused)
    }

    /// The partitions whose reassignment is under way.
    ///
    /// # Errors
    /// I/O, or the brokers' refusal.
    pub async fn reassignments_in_progress(
        &mut self,
    ) -> Result<BTreeSet<(String, i32)>, AdminError> {
        let req = ListPartitionReassignmentsRequest::default()
            .with_timeout_ms(30_000)
            .with_topics(None);
        let (_, resp) = self.send(&req).await?;
        if resp.error_code != codes::NONE {
            return Err(AdminError::kafka(
                "ListPartitionReassignments",
                resp.error_code,
                resp.error_message.as_ref(),
            ));
        }
        Ok(resp
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(move |p| (t.name.to_string(), p.partition_index))
            })
            .collect())
    }

    /// Removes a broker that holds no replica from the cluster metadata; one
    /// already gone is not an error.
    ///
    /// # Errors
    /// I/O, or the brokers' refusal (the broker still holds replicas).
    pub async fn unregister_broker(&mut self, id: i32) -> Result<(), AdminError> {
        let req = UnregisterBrokerRequest::default().with_broker_id(BrokerId(id));
        let (_, resp) = self.send(&req).await?;
        match resp.error_code {
            codes::NONE | codes::BROKER_ID_NOT_REGISTERED => Ok(()),
            code => Err(AdminError::kafka(
                "UnregisterBroker",
                code,
                resp.error_message.as_ref(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_of_one_topic_travel_together() {
        let mv = |t: &str, p: i32, r: Vec<i32>| Reassignment {
            topic: t.into(),
            partition: p,
            replicas: r,
        };
        let req = alter_request(&[
            mv("a", 0, vec![1, 2]),
            mv("b", 3, vec![2, 3]),
            mv("a", 1, vec![3, 1]),
        ]);
        assert_eq!(req.topics.len(), 2);
        assert_eq!(req.topics[0].name.as_str(), "a");
        let parts: Vec<(i32, Vec<i32>)> = req.topics[0]
            .partitions
            .iter()
            .map(|p| {
                (
                    p.partition_index,
                    p.replicas.clone().unwrap().iter().map(|b| b.0).collect(),
                )
            })
            .collect();
        assert_eq!(parts, vec![(0, vec![1, 2]), (1, vec![3, 1])]);
        assert_eq!(req.topics[1].partitions[0].partition_index, 3);
    }
}
