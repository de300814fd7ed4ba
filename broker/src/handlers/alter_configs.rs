//! AlterConfigs: replaces the whole set of overrides of each resource.

use std::collections::BTreeMap;

use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{AlterConfigsRequest, AlterConfigsResponse};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use super::config_resource::{authorize, install, resolve};
use crate::acl::Operation;
use crate::errors::BrokerError;

pub async fn handle(ctx: &RequestContext<'_>, req: AlterConfigsRequest) -> AlterConfigsResponse {
    let mut responses = Vec::with_capacity(req.resources.len());
    for r in req.resources {
        let outcome = authorize(
            ctx,
            r.resource_type,
            r.resource_name.as_str(),
            Operation::AlterConfigs,
        )
        .and_then(|()| resolve(ctx.broker, r.resource_type, r.resource_name.as_str()))
        .and_then(|res| {
            let mut new = BTreeMap::new();
            for c in &r.configs {
                match &c.value {
                    Some(v) => {
                        new.insert(c.name.to_string(), v.to_string());
                    }
                    None => {
                        return Err(BrokerError::InvalidConfig(format!(
                            "config {} has a null value",
                            c.name.as_str()
                        )));
                    }
                }
            }
            install(ctx.broker, &res, new, req.validate_only)
        });
        let resp = AlterConfigsResourceResponse::default()
            .with_resource_type(r.resource_type)
            .with_resource_name(r.resource_name);
        responses.push(match outcome {
            Ok(()) => resp,
            Err(e) => {
                super::count_error(ctx, "AlterConfigs", e.label());
                resp.with_error_code(e.code())
                    .with_error_message(Some(StrBytes::from_string(e.to_string())))
            }
        });
    }
    AlterConfigsResponse::default().with_responses(responses)
}
