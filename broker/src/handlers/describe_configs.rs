//! DescribeConfigs for topics and the broker, with synonyms and documentation.

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use super::config_resource::{Resource, authorize, resolve};
use crate::acl::Operation;
use crate::config_entries::{broker_entries, topic_entries};

pub async fn handle(
    ctx: &RequestContext<'_>,
    req: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let broker = ctx.broker;
    let mut results = Vec::with_capacity(req.resources.len());
    for r in req.resources {
        let result = DescribeConfigsResult::default()
            .with_resource_type(r.resource_type)
            .with_resource_name(r.resource_name.clone());
        let entries = match authorize(
            ctx,
            r.resource_type,
            r.resource_name.as_str(),
            Operation::DescribeConfigs,
        )
        .and_then(|()| resolve(broker, r.resource_type, r.resource_name.as_str()))
        {
            Ok(Resource::Topic(name)) => match broker.topics.get(&name) {
                Some(t) => topic_entries(broker, &t.overrides),
                None => Vec::new(),
            },
            Ok(Resource::Broker { .. }) => broker_entries(broker),
            Err(e) => {
                super::count_error(ctx, "DescribeConfigs", e.label());
                results.push(
                    result
                        .with_error_code(e.code())
                        .with_error_message(Some(StrBytes::from_string(e.to_string()))),
                );
                continue;
            }
        };
        let configs = entries
            .into_iter()
            .filter(|e| {
                r.configuration_keys
                    .as_ref()
                    .is_none_or(|keys| keys.iter().any(|k| k.as_str() == e.name))
            })
            .map(|e| {
                let mut entry = DescribeConfigsResourceResult::default();
                // Type and documentation exist from v3; earlier versions
                // need the defaults left alone.
                if ctx.version >= 3 {
                    entry.config_type = e.kind as i8;
                    entry.documentation = req
                        .include_documentation
                        .then(|| StrBytes::from_static_str(e.doc));
                }
                entry
                    .with_name(StrBytes::from_string(e.name))
                    .with_value(e.value.map(StrBytes::from_string))
                    .with_read_only(e.read_only)
                    .with_config_source(e.source as i8)
                    .with_is_sensitive(false)
                    .with_synonyms(if req.include_synonyms {
                        e.synonyms
                            .into_iter()
                            .map(|(n, v, s)| {
                                DescribeConfigsSynonym::default()
                                    .with_name(StrBytes::from_string(n))
                                    .with_value(Some(StrBytes::from_string(v)))
                                    .with_source(s as i8)
                            })
                            .collect()
                    } else {
                        Vec::new()
                    })
            })
            .collect();
        results.push(result.with_configs(configs));
    }
    DescribeConfigsResponse::default().with_results(results)
}
