//! CreatePartitions: grow a topic.

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use crate::acl::{Operation, ResourceType};
use crate::errors::BrokerError;
use crate::quota::QuotaKind;

pub async fn handle(
    ctx: &RequestContext<'_>,
    req: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let broker = ctx.broker;
    let mut results = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let outcome = (|| {
            if !ctx.authorize(Operation::Alter, ResourceType::Topic, t.name.as_str()) {
                return Err(BrokerError::TopicAuthorizationFailed);
            }
            if let Some(assignments) = &t.assignments
                && assignments.iter().any(|a| {
                    a.broker_ids.is_empty() || a.broker_ids.iter().any(|b| b.0 != broker.node_id())
                })
            {
                return Err(BrokerError::InvalidRequest(format!(
                    "assignments name brokers that do not exist (only broker {} does)",
                    broker.node_id()
                )));
            }
            if !req.validate_only {
                ctx.admit_mutation(ctx.version >= 3)?;
            }
            let before = broker
                .topics
                .get(t.name.as_str())
                .map_or(0, |t| t.partitions.len());
            broker
                .topics
                .add_partitions(t.name.as_str(), t.count, req.validate_only)?;
            if !req.validate_only {
                let added = (t.count.max(0) as usize).saturating_sub(before);
                ctx.record_quota(QuotaKind::ControllerMutation, added as f64);
            }
            Ok(())
        })();
        let result = CreatePartitionsTopicResult::default().with_name(t.name);
        results.push(match outcome {
            Ok(()) => result,
            Err(e) => {
                super::count_error(ctx, "CreatePartitions", e.label());
                result
                    .with_error_code(e.code())
                    .with_error_message(Some(StrBytes::from_string(e.to_string())))
            }
        });
    }
    CreatePartitionsResponse::default().with_results(results)
}
