//! The config resources (Kafka's ConfigResource) that DescribeConfigs,
//! AlterConfigs and IncrementalAlterConfigs act on: one place resolves a
//! (type, name) pair, reads its overrides and installs new ones.

use std::collections::BTreeMap;

use super::RequestContext;
use crate::acl::{Operation, ResourceType};
use crate::broker::Broker;
use crate::errors::{BrokerError, Result};

pub const TOPIC: i8 = 2;
pub const BROKER: i8 = 4;

/// A resolved config resource.
pub enum Resource {
    Topic(String),
    /// This broker (`cluster_wide` false) or the cluster-wide defaults.
    Broker {
        cluster_wide: bool,
    },
}

pub fn resolve(broker: &Broker, resource_type: i8, name: &str) -> Result<Resource> {
    match resource_type {
        TOPIC => {
            if broker.topics.get(name).is_none() {
                return Err(BrokerError::UnknownTopicOrPartition);
            }
            Ok(Resource::Topic(name.to_string()))
        }
        BROKER if name.is_empty() => Ok(Resource::Broker { cluster_wide: true }),
        BROKER if name == broker.node_id().to_string() => Ok(Resource::Broker {
            cluster_wide: false,
        }),
        BROKER => Err(BrokerError::InvalidRequest(format!(
            "broker {name:?} does not exist; this is broker {}",
            broker.node_id()
        ))),
        other => Err(BrokerError::InvalidRequest(format!(
            "config resource type {other} is not supported (topics and brokers are)"
        ))),
    }
}

/// Checks the caller may do `op` (DESCRIBE_CONFIGS or ALTER_CONFIGS) on
/// the resource: a topic's own ACLs, or the cluster's for broker configs.
pub fn authorize(
    ctx: &RequestContext<'_>,
    resource_type: i8,
    name: &str,
    op: Operation,
) -> Result<()> {
    match resource_type {
        TOPIC if !ctx.authorize(op, ResourceType::Topic, name) => {
            Err(BrokerError::TopicAuthorizationFailed)
        }
        BROKER if !ctx.authorize_cluster(op) => Err(BrokerError::ClusterAuthorizationFailed),
        _ => Ok(()),
    }
}

/// The overrides currently set on a resource.
pub fn overrides(broker: &Broker, r: &Resource) -> Result<BTreeMap<String, String>> {
    match r {
        Resource::Topic(name) => broker
            .topics
            .get(name)
            .map(|t| t.overrides.clone())
            .ok_or(BrokerError::UnknownTopicOrPartition),
        Resource::Broker { cluster_wide: true } => Ok(broker.dynamic_config().cluster),
        Resource::Broker {
            cluster_wide: false,
        } => Ok(broker.dynamic_config().broker),
    }
}

/// Replaces a resource's overrides.
pub fn install(
    broker: &Broker,
    r: &Resource,
    overrides: BTreeMap<String, String>,
    validate_only: bool,
) -> Result<()> {
    match r {
        Resource::Topic(name) => broker.topics.set_configs(name, overrides, validate_only),
        Resource::Broker { cluster_wide } => {
            broker.set_dynamic_config(*cluster_wide, overrides, validate_only)
        }
    }
}
