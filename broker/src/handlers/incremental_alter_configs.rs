//! IncrementalAlterConfigs: SET, DELETE, APPEND and SUBTRACT on single configs.

use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use super::config_resource::{Resource, authorize, install, overrides, resolve};
use crate::acl::Operation;
use crate::errors::BrokerError;
use crate::topic_config::{self, ConfigType};

const SET: i8 = 0;
const DELETE: i8 = 1;
const APPEND: i8 = 2;
const SUBTRACT: i8 = 3;

pub async fn handle(
    ctx: &RequestContext<'_>,
    req: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
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
            let mut current = overrides(ctx.broker, &res)?;
            for c in &r.configs {
                let name = c.name.to_string();
                let value = c.value.as_ref().map(|v| v.to_string());
                let is_list = match &res {
                    Resource::Topic(_) => topic_config::def(&name),
                    Resource::Broker { .. } => topic_config::def_by_broker_name(&name),
                }
                .is_some_and(|d| d.kind == ConfigType::List);
                match c.config_operation {
                    SET => {
                        let v = value.ok_or_else(|| {
                            BrokerError::InvalidConfig(format!("SET of {name} needs a value"))
                        })?;
                        current.insert(name, v);
                    }
                    DELETE => {
                        current.remove(&name);
                    }
                    APPEND | SUBTRACT if is_list => {
                        let v = value.ok_or_else(|| {
                            BrokerError::InvalidConfig(format!(
                                "APPEND/SUBTRACT of {name} needs a value"
                            ))
                        })?;
                        let mut items: Vec<String> = current
                            .get(&name)
                            .map(|s| {
                                s.split(',')
                                    .map(|x| x.trim().to_string())
                                    .filter(|x| !x.is_empty())
                                    .collect()
                            })
                            .unwrap_or_default();
                        for item in v.split(',').map(str::trim).filter(|x| !x.is_empty()) {
                            if c.config_operation == APPEND {
                                if !items.iter().any(|x| x == item) {
                                    items.push(item.to_string());
                                }
                            } else {
                                items.retain(|x| x != item);
                            }
                        }
                        if items.is_empty() {
                            current.remove(&name);
                        } else {
                            current.insert(name, items.join(","));
                        }
                    }
                    APPEND | SUBTRACT => {
                        return Err(BrokerError::InvalidConfig(format!(
                            "{name} is not a list config; APPEND and SUBTRACT apply to lists only"
                        )));
                    }
                    other => {
                        return Err(BrokerError::InvalidRequest(format!(
                            "unknown config operation {other}"
                        )));
                    }
                }
            }
            install(ctx.broker, &res, current, req.validate_only)
        });
        let resp = AlterConfigsResourceResponse::default()
            .with_resource_type(r.resource_type)
            .with_resource_name(r.resource_name);
        responses.push(match outcome {
            Ok(()) => resp,
            Err(e) => {
                super::count_error(ctx, "IncrementalAlterConfigs", e.label());
                resp.with_error_code(e.code())
                    .with_error_message(Some(StrBytes::from_string(e.to_string())))
            }
        });
    }
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}
