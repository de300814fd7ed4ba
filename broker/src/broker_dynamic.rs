//! Broker configs that change at run time and are not topic defaults (those
//! are `topic_config`'s): set with (Incremental)AlterConfigs on a BROKER
//! resource, for one broker or cluster-wide (resource name `""`), as in
//! Kafka. A broker's own value wins over the cluster-wide one, which wins
//! over the static setting.

use crate::broker::DynamicConfig;
use crate::config::BrokerConfig;
use crate::topic_config::ConfigType;

/// Kafka's name for the reassignment throttle (see `rpc::throttle`).
pub const LEADER_REPLICATION_THROTTLED_RATE: &str = "leader.replication.throttled.rate";

/// Kafka's default for the throttle: no limit.
const UNLIMITED: &str = "9223372036854775807";

pub struct BrokerDynamicDef {
    pub name: &'static str,
    /// Kafka's built-in default.
    pub default: &'static str,
    pub kind: ConfigType,
    pub doc: &'static str,
    check: fn(&str) -> Result<(), String>,
}

pub const BROKER_DYNAMIC_CONFIGS: &[BrokerDynamicDef] = &[BrokerDynamicDef {
    name: LEADER_REPLICATION_THROTTLED_RATE,
    default: UNLIMITED,
    kind: ConfigType::Long,
    doc: "Bytes per second a broker sends, over all partitions it leads, to the replicas a reassignment is adding while they catch up.",
    check: |v| match v.trim().parse::<i64>() {
        Ok(n) if n >= 0 => Ok(()),
        Ok(_) => Err("must be at least 0".into()),
        Err(_) => Err("must be a whole number".into()),
    },
}];

pub fn def(name: &str) -> Option<&'static BrokerDynamicDef> {
    BROKER_DYNAMIC_CONFIGS.iter().find(|d| d.name == name)
}

/// Checks a value a client wants to set; `None` when `name` is not one of
/// these configs.
pub fn validate(name: &str, value: &str) -> Option<Result<(), String>> {
    def(name).map(|d| (d.check)(value))
}

/// The static (config file, flag, environment) value of `name`.
pub fn static_value(config: &BrokerConfig, name: &str) -> Option<String> {
    match name {
        LEADER_REPLICATION_THROTTLED_RATE => {
            Some(config.leader_replication_throttled_rate.to_string())
        }
        _ => None,
    }
}

/// The throttle in force, bytes per second (`i64::MAX`: none).
pub fn throttle_rate(config: &BrokerConfig, dynamic: &DynamicConfig) -> u64 {
    dynamic
        .broker
        .get(LEADER_REPLICATION_THROTTLED_RATE)
        .or_else(|| dynamic.cluster.get(LEADER_REPLICATION_THROTTLED_RATE))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(config.leader_replication_throttled_rate)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn dynamic(broker: &[(&str, &str)], cluster: &[(&str, &str)]) -> DynamicConfig {
        let map = |kv: &[(&str, &str)]| -> BTreeMap<String, String> {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        DynamicConfig {
            broker: map(broker),
            cluster: map(cluster),
        }
    }

    #[test]
    fn the_broker_value_wins_over_the_cluster_one_over_the_static_one() {
        let config =
            BrokerConfig::load_from(["skiff-broker", "--leader-replication-throttled-rate", "7"])
                .unwrap();
        let t = LEADER_REPLICATION_THROTTLED_RATE;
        assert_eq!(throttle_rate(&config, &dynamic(&[], &[])), 7);
        assert_eq!(throttle_rate(&config, &dynamic(&[], &[(t, "20")])), 20);
        assert_eq!(
            throttle_rate(&config, &dynamic(&[(t, "30")], &[(t, "20")])),
            30
        );
    }

    #[test]
    fn values_are_checked() {
        let t = LEADER_REPLICATION_THROTTLED_RATE;
        assert_eq!(validate(t, "1048576"), Some(Ok(())));
        assert!(matches!(validate(t, "-1"), Some(Err(_))));
        assert!(matches!(validate(t, "fast"), Some(Err(_))));
        assert_eq!(validate("log.retention.ms", "1"), None);
    }
}
