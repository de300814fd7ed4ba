//! The effective configs of a topic or of the broker, with where each value
//! comes from, as DescribeConfigs and CreateTopics report them.

use std::collections::BTreeMap;

use crate::broker::Broker;
use crate::topic_config::{ConfigSource, ConfigType, TOPIC_CONFIGS};

pub struct Entry {
    pub name: String,
    pub value: Option<String>,
    pub source: ConfigSource,
    pub read_only: bool,
    pub kind: ConfigType,
    pub doc: &'static str,
    /// Every place a value is set, most specific first.
    pub synonyms: Vec<(String, String, ConfigSource)>,
}

/// Where a broker-level default comes from, and its synonyms chain.
fn broker_level(
    broker: &Broker,
    broker_name: &str,
    built_in: &str,
    statics: &BTreeMap<String, String>,
) -> (String, ConfigSource, Vec<(String, String, ConfigSource)>) {
    let mut synonyms = Vec::new();
    let dynamic = broker.dynamic_config();
    if let Some(v) = dynamic.broker.get(broker_name) {
        synonyms.push((
            broker_name.to_string(),
            v.clone(),
            ConfigSource::DynamicBrokerConfig,
        ));
    }
    if let Some(v) = dynamic.cluster.get(broker_name) {
        synonyms.push((
            broker_name.to_string(),
            v.clone(),
            ConfigSource::DynamicDefaultBrokerConfig,
        ));
    }
    let static_value = statics
        .get(broker_name)
        .cloned()
        .unwrap_or_else(|| built_in.to_string());
    if static_value != built_in {
        synonyms.push((
            broker_name.to_string(),
            static_value.clone(),
            ConfigSource::StaticBrokerConfig,
        ));
    }
    synonyms.push((
        broker_name.to_string(),
        built_in.to_string(),
        ConfigSource::DefaultConfig,
    ));
    let (_, value, source) = synonyms[0].clone();
    (value, source, synonyms)
}

/// Static broker values of the topic defaults, by broker-level name.
fn static_defaults(broker: &Broker) -> BTreeMap<String, String> {
    broker
        .config
        .topic_defaults()
        .into_iter()
        .filter_map(|(topic_name, v)| {
            crate::topic_config::def(topic_name).map(|d| (d.broker_name.to_string(), v))
        })
        .collect()
}

/// A topic's configs: its overrides, else the broker's defaults.
pub fn topic_entries(broker: &Broker, overrides: &BTreeMap<String, String>) -> Vec<Entry> {
    let statics = static_defaults(broker);
    TOPIC_CONFIGS
        .iter()
        .map(|d| {
            let (default_value, default_source, mut synonyms) =
                broker_level(broker, d.broker_name, d.default, &statics);
            let (value, source) = match overrides.get(d.name) {
                Some(v) => {
                    synonyms.insert(
                        0,
                        (d.name.to_string(), v.clone(), ConfigSource::TopicConfig),
                    );
                    (v.clone(), ConfigSource::TopicConfig)
                }
                None => (default_value, default_source),
            };
            Entry {
                name: d.name.to_string(),
                value: Some(value),
                source,
                read_only: false,
                kind: d.kind,
                doc: d.doc,
                synonyms,
            }
        })
        .collect()
}

/// The broker's configs: the topic defaults (changeable at run time) and the
/// static settings (read-only).
pub fn broker_entries(broker: &Broker) -> Vec<Entry> {
    let statics = static_defaults(broker);
    let changeable = |name: &str, default: &str, kind, doc, statics: &BTreeMap<String, String>| {
        let (value, source, synonyms) = broker_level(broker, name, default, statics);
        Entry {
            name: name.to_string(),
            value: Some(value),
            source,
            read_only: false,
            kind,
            doc,
            synonyms,
        }
    };
    let mut out: Vec<Entry> = TOPIC_CONFIGS
        .iter()
        .map(|d| changeable(d.broker_name, d.default, d.kind, d.doc, &statics))
        .collect();
    for d in crate::broker_dynamic::BROKER_DYNAMIC_CONFIGS {
        let statics: BTreeMap<String, String> =
            crate::broker_dynamic::static_value(&broker.config, d.name)
                .map(|v| (d.name.to_string(), v))
                .into_iter()
                .collect();
        out.push(changeable(d.name, d.default, d.kind, d.doc, &statics));
    }
    let c = &broker.config;
    let mut fixed: Vec<(&str, String, ConfigType, &'static str)> = vec![
        (
            "node.id",
            c.node_id.to_string(),
            ConfigType::Int,
            "This broker's id.",
        ),
        (
            "broker.id",
            c.node_id.to_string(),
            ConfigType::Int,
            "Same as node.id.",
        ),
        (
            "listeners",
            c.listeners.clone(),
            ConfigType::String,
            "Addresses the broker binds.",
        ),
        (
            "advertised.listeners",
            c.advertised_listeners
                .clone()
                .unwrap_or_else(|| c.listeners.clone()),
            ConfigType::String,
            "Addresses clients are told to use.",
        ),
        (
            "log.dirs",
            c.data_dir.join("logs").display().to_string(),
            ConfigType::String,
            "Where partition logs live.",
        ),
        (
            "auto.create.topics.enable",
            c.auto_create_topics_enable.to_string(),
            ConfigType::Boolean,
            "Create topics on first use.",
        ),
        (
            "num.partitions",
            c.num_partitions.to_string(),
            ConfigType::Int,
            "Partitions of auto-created topics.",
        ),
        (
            "default.replication.factor",
            c.default_replication_factor.to_string(),
            ConfigType::Short,
            "Replication factor of topics that name none.",
        ),
        (
            "socket.request.max.bytes",
            c.socket_request_max_bytes.to_string(),
            ConfigType::Int,
            "Largest request accepted.",
        ),
        (
            "connections.max.idle.ms",
            c.connections_max_idle_ms.to_string(),
            ConfigType::Long,
            "Idle client connections are closed after this long (0: never).",
        ),
        (
            "log.retention.check.interval.ms",
            c.log_retention_check_interval_ms.to_string(),
            ConfigType::Long,
            "How often retention runs.",
        ),
    ];
    if let Some(rack) = &c.broker_rack {
        fixed.push((
            "broker.rack",
            rack.clone(),
            ConfigType::String,
            "This broker's rack.",
        ));
    }
    for (name, value, kind, doc) in fixed {
        out.push(Entry {
            name: name.to_string(),
            value: Some(value.clone()),
            source: ConfigSource::StaticBrokerConfig,
            read_only: true,
            kind,
            doc,
            synonyms: vec![(name.to_string(), value, ConfigSource::StaticBrokerConfig)],
        });
    }
    out
}
