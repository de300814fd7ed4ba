//! Client quotas with Kafka's semantics, and tenant quotas beyond them.
//!
//! - [`QuotaEntity`]/[`QuotaValues`]: what AlterClientQuotas stores: an
//!   entity (user, client-id, user+client-id, each named or `<default>`;
//!   or a tenant, a principal-name prefix) and its quota values.
//! - [`QuotaConfig::resolve`]: which entity's quota applies to a
//!   (user, client-id), in Kafka's precedence order, per quota kind.
//! - [`Rate`]: Kafka's sampled rate (`quota.window.num` windows of
//!   `quota.window.size.seconds`) and the KIP-219 throttle time.
//! - [`Quotas`]: the broker's live state: the configured quotas, one rate
//!   per metered entity, and the recording entry point the handlers call.
//!
//! A tenant quota (`tenant=team-a.`) applies to every principal
//! `User:team-a.*` together: their traffic is summed into one rate. The
//! longest matching prefix wins when tenants nest. A request's throttle is
//! the larger of its client quota's and its tenant quota's.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

/// The quota keys Skiff knows, as Kafka names them.
pub const PRODUCER_BYTE_RATE: &str = "producer_byte_rate";
pub const CONSUMER_BYTE_RATE: &str = "consumer_byte_rate";
pub const REQUEST_PERCENTAGE: &str = "request_percentage";
pub const CONTROLLER_MUTATION_RATE: &str = "controller_mutation_rate";

pub const ENTITY_USER: &str = "user";
pub const ENTITY_CLIENT_ID: &str = "client-id";
pub const ENTITY_IP: &str = "ip";
pub const ENTITY_TENANT: &str = "tenant";

/// What a quota limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuotaKind {
    /// Produce request bytes per second.
    Produce,
    /// Fetch response bytes per second.
    Fetch,
    /// Request handling time, as a percentage of one thread.
    Request,
    /// Partitions created or deleted per second.
    ControllerMutation,
}

impl QuotaKind {
    pub const ALL: [QuotaKind; 4] = [
        Self::Produce,
        Self::Fetch,
        Self::Request,
        Self::ControllerMutation,
    ];

    pub fn key(self) -> &'static str {
        match self {
            Self::Produce => PRODUCER_BYTE_RATE,
            Self::Fetch => CONSUMER_BYTE_RATE,
            Self::Request => REQUEST_PERCENTAGE,
            Self::ControllerMutation => CONTROLLER_MUTATION_RATE,
        }
    }

    /// A metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Produce => "produce",
            Self::Fetch => "fetch",
            Self::Request => "request",
            Self::ControllerMutation => "controller_mutation",
        }
    }

    fn from_key(k: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|q| q.key() == k)
    }

    /// The quota value in units per second of what is recorded:
    /// request_percentage is a percentage of one thread's time, recorded
    /// in milliseconds.
    fn per_second(self, value: f64) -> f64 {
        match self {
            Self::Request => value * 10.0,
            _ => value,
        }
    }
}

/// An entity name: a specific one, or Kafka's default entity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum EntityName {
    Default,
    Named(String),
}

impl EntityName {
    pub fn from_wire(name: Option<&str>) -> Self {
        match name {
            None => Self::Default,
            Some(n) => Self::Named(n.to_string()),
        }
    }

    pub fn as_wire(&self) -> Option<&str> {
        match self {
            Self::Default => None,
            Self::Named(n) => Some(n),
        }
    }
}

/// A quota entity: user and/or client-id (Kafka's), or a tenant (Skiff's).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
pub struct QuotaEntity {
    pub user: Option<EntityName>,
    pub client_id: Option<EntityName>,
    /// A principal-name prefix (never default).
    pub tenant: Option<String>,
}

impl fmt::Display for QuotaEntity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        for (t, n) in self.components() {
            parts.push(format!("{t}={}", n.unwrap_or("<default>")));
        }
        f.write_str(&parts.join(","))
    }
}

/// Quota values by key.
pub type QuotaValues = BTreeMap<String, f64>;

/// Why an entity, key or filter was refused (INVALID_REQUEST).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidQuota(pub String);

impl QuotaEntity {
    pub fn user(name: Option<&str>) -> Self {
        Self {
            user: Some(EntityName::from_wire(name)),
            ..Self::default()
        }
    }

    pub fn client_id(name: Option<&str>) -> Self {
        Self {
            client_id: Some(EntityName::from_wire(name)),
            ..Self::default()
        }
    }

    pub fn tenant(prefix: &str) -> Self {
        Self {
            tenant: Some(prefix.to_string()),
            ..Self::default()
        }
    }

    /// Builds an entity from AlterClientQuotas' (type, name) pairs.
    ///
    /// # Errors
    /// No component, a repeated or unknown type, `ip` (not supported), a
    /// tenant combined with anything or without a name.
    pub fn from_wire<'a>(
        parts: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
    ) -> Result<Self, InvalidQuota> {
        let mut e = Self::default();
        let mut n = 0;
        for (t, name) in parts {
            n += 1;
            let slot_taken = match t {
                ENTITY_USER => e.user.replace(EntityName::from_wire(name)).is_some(),
                ENTITY_CLIENT_ID => e.client_id.replace(EntityName::from_wire(name)).is_some(),
                ENTITY_TENANT => {
                    let Some(name) = name.filter(|n| !n.is_empty()) else {
                        return Err(InvalidQuota(
                            "a tenant entity needs a name (a principal-name prefix such as `team-a.`)"
                                .into(),
                        ));
                    };
                    e.tenant.replace(name.to_string()).is_some()
                }
                ENTITY_IP => {
                    return Err(InvalidQuota(
                        "ip quotas (connection_creation_rate) are not supported".into(),
                    ));
                }
                other => return Err(InvalidQuota(format!("unknown entity type {other:?}"))),
            };
            if slot_taken {
                return Err(InvalidQuota(format!("entity type {t:?} given twice")));
            }
        }
        if n == 0 {
            return Err(InvalidQuota(
                "an entity needs at least one component".into(),
            ));
        }
        if e.tenant.is_some() && n > 1 {
            return Err(InvalidQuota(
                "a tenant entity cannot be combined with user or client-id".into(),
            ));
        }
        Ok(e)
    }

    /// (type, name-or-default) pairs, user first.
    pub fn components(&self) -> Vec<(&'static str, Option<&str>)> {
        let mut out = Vec::new();
        if let Some(u) = &self.user {
            out.push((ENTITY_USER, u.as_wire()));
        }
        if let Some(c) = &self.client_id {
            out.push((ENTITY_CLIENT_ID, c.as_wire()));
        }
        if let Some(t) = &self.tenant {
            out.push((ENTITY_TENANT, Some(t.as_str())));
        }
        out
    }
}

/// Checks one quota key and value for AlterClientQuotas.
///
/// # Errors
/// An unknown key, a value that is not a positive finite number.
pub fn validate_value(key: &str, value: f64) -> Result<(), InvalidQuota> {
    if QuotaKind::from_key(key).is_none() {
        return Err(InvalidQuota(format!(
            "unknown quota key {key:?} (known: {PRODUCER_BYTE_RATE}, {CONSUMER_BYTE_RATE}, {REQUEST_PERCENTAGE}, {CONTROLLER_MUTATION_RATE})"
        )));
    }
    if !value.is_finite() || value <= 0.0 {
        return Err(InvalidQuota(format!(
            "quota {key} must be a positive number, got {value}"
        )));
    }
    Ok(())
}

/// One DescribeClientQuotas filter component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MatchComponent {
    /// match_type 0: this exact name.
    Exact(String),
    /// match_type 1: the default entity.
    Default,
    /// match_type 2: any specified (non-default) name.
    Specified,
}

/// Kafka's `ClientQuotaFilter`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaFilter {
    pub components: Vec<(String, MatchComponent)>,
    pub strict: bool,
}

impl QuotaFilter {
    /// # Errors
    /// An unknown match type, EXACT without a name, a repeated or unknown
    /// entity type.
    pub fn from_wire<'a>(
        parts: impl IntoIterator<Item = (&'a str, i8, Option<&'a str>)>,
        strict: bool,
    ) -> Result<Self, InvalidQuota> {
        let mut components: Vec<(String, MatchComponent)> = Vec::new();
        for (t, match_type, name) in parts {
            if ![ENTITY_USER, ENTITY_CLIENT_ID, ENTITY_IP, ENTITY_TENANT].contains(&t) {
                return Err(InvalidQuota(format!("unknown entity type {t:?}")));
            }
            if components.iter().any(|(ct, _)| ct == t) {
                return Err(InvalidQuota(format!("entity type {t:?} given twice")));
            }
            let m = match (match_type, name) {
                (0, Some(n)) => MatchComponent::Exact(n.to_string()),
                (0, None) => {
                    return Err(InvalidQuota("an EXACT match needs a name".into()));
                }
                (1, _) => MatchComponent::Default,
                (2, _) => MatchComponent::Specified,
                (other, _) => return Err(InvalidQuota(format!("unknown match type {other}"))),
            };
            components.push((t.to_string(), m));
        }
        Ok(Self { components, strict })
    }

    pub fn matches(&self, e: &QuotaEntity) -> bool {
        let parts = e.components();
        if self.strict && parts.len() != self.components.len() {
            return false;
        }
        self.components.iter().all(|(t, m)| {
            let Some((_, name)) = parts.iter().find(|(pt, _)| pt == t) else {
                return false;
            };
            match m {
                MatchComponent::Exact(n) => *name == Some(n.as_str()),
                MatchComponent::Default => name.is_none(),
                MatchComponent::Specified => name.is_some(),
            }
        })
    }
}

/// The rate a quota is metered on: Kafka's metric tags. Traffic of all
/// connections with the same key is summed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MeterKey {
    Client {
        kind: QuotaKind,
        user: String,
        client_id: String,
    },
    Tenant {
        kind: QuotaKind,
        tenant: String,
    },
}

/// The configured quotas, resolvable per request.
#[derive(Debug, Clone, Default)]
pub struct QuotaConfig {
    entries: HashMap<QuotaEntity, QuotaValues>,
    /// Tenant prefixes, longest first.
    tenants: Vec<String>,
}

impl QuotaConfig {
    pub fn new(entries: impl IntoIterator<Item = (QuotaEntity, QuotaValues)>) -> Self {
        let mut c = Self::default();
        for (e, v) in entries {
            c.set(e, v);
        }
        c
    }

    pub fn set(&mut self, e: QuotaEntity, v: QuotaValues) {
        if v.is_empty() {
            self.entries.remove(&e);
        } else {
            self.entries.insert(e, v);
        }
        let mut tenants: Vec<String> = self
            .entries
            .keys()
            .filter_map(|e| e.tenant.clone())
            .collect();
        tenants.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
        self.tenants = tenants;
    }

    pub fn get(&self, e: &QuotaEntity) -> Option<&QuotaValues> {
        self.entries.get(e)
    }

    pub fn entries(&self) -> impl Iterator<Item = (&QuotaEntity, &QuotaValues)> {
        self.entries.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The client quota of `kind` for (`user`, `client_id`) and the rate it
    /// is metered on, in Kafka's order: user+client-id, user+default
    /// client-id, user, default user+client-id, default user+default
    /// client-id, default user, client-id, default client-id.
    pub fn resolve(&self, kind: QuotaKind, user: &str, client_id: &str) -> Option<(f64, MeterKey)> {
        use EntityName::{Default as D, Named as N};
        let u = || N(user.to_string());
        let c = || N(client_id.to_string());
        let order: [(Option<EntityName>, Option<EntityName>); 8] = [
            (Some(u()), Some(c())),
            (Some(u()), Some(D)),
            (Some(u()), None),
            (Some(D), Some(c())),
            (Some(D), Some(D)),
            (Some(D), None),
            (None, Some(c())),
            (None, Some(D)),
        ];
        for (eu, ec) in order {
            let has_user = eu.is_some();
            let has_client = ec.is_some();
            let e = QuotaEntity {
                user: eu,
                client_id: ec,
                tenant: None,
            };
            if let Some(v) = self.entries.get(&e).and_then(|vals| vals.get(kind.key())) {
                let key = MeterKey::Client {
                    kind,
                    user: if has_user {
                        user.to_string()
                    } else {
                        String::new()
                    },
                    client_id: if has_client {
                        client_id.to_string()
                    } else {
                        String::new()
                    },
                };
                return Some((*v, key));
            }
        }
        None
    }

    /// The tenant (longest configured prefix of `user`).
    pub fn tenant_of(&self, user: &str) -> Option<&str> {
        self.tenants
            .iter()
            .find(|t| user.starts_with(t.as_str()))
            .map(String::as_str)
    }

    /// The tenant quota of `kind` for `user`, with its meter.
    pub fn resolve_tenant(&self, kind: QuotaKind, user: &str) -> Option<(f64, MeterKey)> {
        let tenant = self.tenant_of(user)?;
        let v = self
            .entries
            .get(&QuotaEntity::tenant(tenant))?
            .get(kind.key())?;
        Some((
            *v,
            MeterKey::Tenant {
                kind,
                tenant: tenant.to_string(),
            },
        ))
    }
}

/// Kafka's sampled rate: `num` samples of `window` each; the rate is the
/// sum of the live samples over their span (at least one window). Kafka
/// pads a young meter's span to `num - 1` windows, which lets a new client
/// burst ten seconds' worth of its quota and then again each time that
/// burst's sample expires; counting the real span keeps a flooding client
/// within its rate over any few seconds, which is what tenants sharing a
/// cluster need.
#[derive(Debug, Clone)]
pub struct Rate {
    window: Duration,
    num: usize,
    /// (sample start, value), oldest first.
    samples: VecDeque<(Instant, f64)>,
}

impl Rate {
    pub fn new(window: Duration, num: usize) -> Self {
        Self {
            window: window.max(Duration::from_millis(1)),
            num: num.max(2),
            samples: VecDeque::new(),
        }
    }

    fn purge(&mut self, now: Instant) {
        let horizon = self.window * self.num as u32;
        while self
            .samples
            .front()
            .is_some_and(|(start, _)| now.saturating_duration_since(*start) >= horizon)
        {
            self.samples.pop_front();
        }
    }

    pub fn record(&mut self, now: Instant, value: f64) {
        self.purge(now);
        match self.samples.back_mut() {
            Some((start, v)) if now.saturating_duration_since(*start) < self.window => *v += value,
            _ => self.samples.push_back((now, value)),
        }
    }

    /// The span the rate is measured over, in seconds.
    fn span(&self, now: Instant) -> f64 {
        let elapsed = self
            .samples
            .front()
            .map(|(start, _)| now.saturating_duration_since(*start))
            .unwrap_or_default();
        elapsed.max(self.window).as_secs_f64()
    }

    /// Units per second now.
    pub fn rate(&mut self, now: Instant) -> f64 {
        self.purge(now);
        let total: f64 = self.samples.iter().map(|(_, v)| v).sum();
        total / self.span(now)
    }

    /// KIP-219: how long the client must wait for the rate over the window
    /// to fall back to `quota` (0 when within it), at most the whole window.
    pub fn throttle(&mut self, now: Instant, quota: f64) -> Duration {
        let rate = self.rate(now);
        if quota <= 0.0 || rate <= quota {
            return Duration::ZERO;
        }
        let span = self.span(now);
        let secs = (rate - quota) / quota * span;
        let max = (self.window * self.num as u32).as_secs_f64();
        Duration::from_secs_f64(secs.min(max))
    }
}

/// Who a request is metered as.
#[derive(Debug, Clone, Copy)]
pub struct Client<'a> {
    /// The principal's name (`alice` of `User:alice`).
    pub user: &'a str,
    pub client_id: &'a str,
}

/// One throttle decision, for metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Throttle {
    pub time: Duration,
    pub tenant: Option<String>,
}

/// Meters kept before idle ones are dropped.
const MAX_METERS: usize = 10_000;

/// The broker's quota state.
pub struct Quotas {
    config: RwLock<QuotaConfig>,
    meters: Mutex<HashMap<MeterKey, Rate>>,
    window: Duration,
    num: usize,
}

impl Quotas {
    pub fn new(config: QuotaConfig, window: Duration, num: usize) -> Self {
        Self {
            config: RwLock::new(config),
            meters: Mutex::new(HashMap::new()),
            window,
            num,
        }
    }

    pub fn config(&self) -> parking_lot::RwLockReadGuard<'_, QuotaConfig> {
        self.config.read()
    }

    pub fn set(&self, e: QuotaEntity, v: QuotaValues) {
        self.config.write().set(e, v);
    }

    /// Swaps in the quotas another broker changed (cluster metadata).
    pub fn replace_config(&self, config: QuotaConfig) {
        *self.config.write() = config;
    }

    /// The tenant `user` belongs to, if any tenant quota names its prefix.
    pub fn tenant_of(&self, user: &str) -> Option<String> {
        self.config.read().tenant_of(user).map(str::to_string)
    }

    /// Records `amount` of `kind` for `client` and returns how long it must
    /// be throttled (the larger of its client and tenant quotas' verdicts).
    pub fn record(
        &self,
        kind: QuotaKind,
        client: Client<'_>,
        amount: f64,
        now: Instant,
    ) -> Throttle {
        let (client_quota, tenant_quota, tenant) = {
            let cfg = self.config.read();
            if cfg.is_empty() {
                return Throttle::default();
            }
            (
                cfg.resolve(kind, client.user, client.client_id),
                cfg.resolve_tenant(kind, client.user),
                cfg.tenant_of(client.user).map(str::to_string),
            )
        };
        let mut meters = self.meters.lock();
        if meters.len() >= MAX_METERS {
            // Client ids are chosen by clients: forget idle meters rather
            // than grow without bound.
            meters.retain(|_, r| r.rate(now) > 0.0);
        }
        let mut time = Duration::ZERO;
        for (quota, key) in [client_quota, tenant_quota].into_iter().flatten() {
            let rate = meters
                .entry(key)
                .or_insert_with(|| Rate::new(self.window, self.num));
            rate.record(now, amount);
            time = time.max(rate.throttle(now, kind.per_second(quota)));
        }
        Throttle { time, tenant }
    }
}

#[cfg(test)]
mod tests;
