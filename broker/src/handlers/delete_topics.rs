//! DeleteTopics, by name (v1-v5) or by name or id (v6).

use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::RequestContext;
use crate::acl::{Operation, ResourceType};
use crate::errors::BrokerError;
use crate::quota::QuotaKind;

pub async fn handle(ctx: &RequestContext<'_>, req: DeleteTopicsRequest) -> DeleteTopicsResponse {
    let topics = &ctx.broker.topics;
    let wanted: Vec<(Option<TopicName>, Uuid)> = if ctx.version >= 6 {
        req.topics
            .into_iter()
            .map(|t| (t.name, t.topic_id))
            .collect()
    } else {
        req.topic_names
            .into_iter()
            .map(|n| (Some(n), Uuid::nil()))
            .collect()
    };
    let mut responses = Vec::with_capacity(wanted.len());
    for (name, id) in wanted {
        let resolved = match &name {
            Some(n) => Ok(n.to_string()),
            None => topics
                .get_by_id(id)
                .map(|t| t.name.to_string())
                .ok_or(BrokerError::UnknownTopicId),
        };
        let result = resolved.and_then(|n| {
            if !ctx.authorize(Operation::Delete, ResourceType::Topic, &n) {
                return Err(BrokerError::TopicAuthorizationFailed);
            }
            if n.starts_with("__") {
                return Err(BrokerError::InvalidRequest(format!(
                    "internal topic {n:?} cannot be deleted"
                )));
            }
            if let Some(t) = topics.get(&n) {
                ctx.admit_mutation(ctx.version >= 5)?;
                ctx.record_quota(QuotaKind::ControllerMutation, t.partitions.len() as f64);
            }
            topics.delete(&n).map(|id| (n, id))
        });
        responses.push(match result {
            Ok((n, id)) => DeletableTopicResult::default()
                .with_name(Some(TopicName(StrBytes::from_string(n))))
                .with_topic_id(if ctx.version >= 6 { id } else { Uuid::nil() }),
            Err(e) => {
                super::count_error(ctx, "DeleteTopics", e.label());
                DeletableTopicResult::default()
                    .with_name(name)
                    .with_topic_id(id)
                    .with_error_code(e.code())
                    .with_error_message(
                        (ctx.version >= 5).then(|| StrBytes::from_string(e.to_string())),
                    )
            }
        });
    }
    DeleteTopicsResponse::default().with_responses(responses)
}
