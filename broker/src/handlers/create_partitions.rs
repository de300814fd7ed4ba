//! CreatePartitions: grow a topic.

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use crate::errors::BrokerError;

pub async fn handle(
    ctx: &RequestContext<'_>,
    req: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let broker = ctx.broker;
    let mut results = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let outcome = (|| {
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
            broker
                .topics
                .add_partitions(t.name.as_str(), t.count, req.validate_only)
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
