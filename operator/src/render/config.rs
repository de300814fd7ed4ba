//! The broker properties file.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use k8s_openapi::api::core::v1::ConfigMap;
use skiff_crds::KafkaCluster;
use skiff_crds::kafka_cluster::OPERATOR_OWNED_SETTINGS;

use super::{
    OPERATOR_LISTENER, OPERATOR_USER, PROPERTIES_KEY, RenderError, kafka_listener_name, names,
    owned_meta, security_protocol,
};

/// The `server.properties` text: `spec.config` in key order, `super.users`
/// with the operator's own user added, and `listener.security.protocol.map`
/// (the operator's listener is `OPERATOR:SASL_PLAINTEXT`), and with a TLS
/// listener the CA file, `ssl.client.auth` and `ssl.principal.mapping` (see
/// [`super::tls`]; `spec.config` may not set those then). Node id,
/// listeners, advertised listeners, data dir, HTTP address and the
/// bootstrap users file are per pod or secret and given as flags and
/// environment (see the StatefulSet), which win over the file.
///
/// # Errors
/// A value with a line break, or a key the operator owns.
pub fn properties(kc: &KafkaCluster) -> Result<String, RenderError> {
    let mut out = String::from(
        "# Rendered by skiff-operator from the KafkaCluster's spec.config; edits are overwritten.\n",
    );
    let own = format!("User:{OPERATOR_USER}");
    let tls = super::tls::has_tls(kc);
    let mut super_users = vec![own.clone()];
    for (key, value) in &kc.spec.config {
        if OPERATOR_OWNED_SETTINGS.contains(&key.as_str())
            || (tls && super::tls::TLS_OWNED_SETTINGS.contains(&key.as_str()))
        {
            return Err(RenderError::OperatorOwnedSetting { key: key.clone() });
        }
        if value.contains(['\n', '\r']) || key.contains(['\n', '\r', '=']) {
            return Err(RenderError::MultiLineConfig { key: key.clone() });
        }
        if key == "super.users" {
            super_users.extend(
                value
                    .split(';')
                    .map(str::trim)
                    .filter(|u| !u.is_empty() && *u != own)
                    .map(String::from),
            );
            continue;
        }
        let _ = writeln!(out, "{key}={value}");
    }
    let _ = writeln!(out, "super.users={}", super_users.join(";"));
    let mut map = Vec::new();
    for l in &kc.spec.listeners {
        map.push(format!(
            "{}:{}",
            kafka_listener_name(l),
            security_protocol(l)?
        ));
    }
    map.push(format!("{OPERATOR_LISTENER}:SASL_PLAINTEXT"));
    let _ = writeln!(out, "listener.security.protocol.map={}", map.join(","));
    if tls {
        for (key, value) in super::tls::properties(kc) {
            let _ = writeln!(out, "{key}={value}");
        }
    }
    Ok(out)
}

/// ConfigMap `<name>-config` holding `server.properties`.
///
/// # Errors
/// See [`properties`]; a KafkaCluster without name, namespace or uid.
pub fn config_map(kc: &KafkaCluster) -> Result<ConfigMap, RenderError> {
    let (cluster, _) = super::identity(kc)?;
    Ok(ConfigMap {
        metadata: owned_meta(kc, names::config_map(cluster))?,
        data: Some(BTreeMap::from([(
            PROPERTIES_KEY.to_string(),
            properties(kc)?,
        )])),
        ..ConfigMap::default()
    })
}

/// A stable hash of the ConfigMap's data (FNV-1a, 64 bits, hex), for the pod
/// template annotation that makes a config change a new StatefulSet revision.
/// Stable across Rust versions, unlike `DefaultHasher`. The brokers'
/// external-address keys and the nodes' rack keys are left out: each
/// concerns some brokers, and a changed one restarts only those (see
/// [`super::external`], [`super::rack`]).
pub fn config_hash(cm: &ConfigMap) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (k, v) in cm.data.iter().flatten().filter(|(k, _)| {
        super::external::advertised_key_id(k).is_none() && super::rack::rack_key_node(k).is_none()
    }) {
        for b in k.bytes().chain([0]).chain(v.bytes()).chain([0]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}
