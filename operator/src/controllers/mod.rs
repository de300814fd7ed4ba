//! The kube-rs controllers: KafkaCluster, Topic, User, Quota, and what they
//! share (context, errors, conditions, backoff, cluster lookup).

pub mod cluster;
pub mod quota;
pub mod topic;
pub mod user;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use skiff_crds::kafka_cluster::OPERATOR_PORT;
use skiff_crds::{ClusterRef, KafkaCluster};

use crate::admin::{AdminClient, AdminCredentials, AdminError};
use crate::render::RenderContext;
use crate::runtime::metrics::Metrics;
use crate::tenancy::{self, Refusal, Scope};

/// Annotation on a KafkaCluster overriding the address the operator's admin
/// client bootstraps from, e.g. `127.0.0.1:9092` while
/// `kubectl port-forward svc/<name>-bootstrap 9092` runs.
pub const BOOTSTRAP_OVERRIDE_ANNOTATION: &str = "skiff.dev/operator-bootstrap";
/// Finalizer of Topics, Users and Quotas.
pub const FINALIZER: &str = "skiff.dev/cleanup";
/// Longest wait between retries of a failing resource.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// First wait after a failure.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(5);
/// How often a converged resource is checked again for drift.
pub const RESYNC: Duration = Duration::from_secs(300);

/// Errors a reconcile returns; they requeue with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Admin(#[from] AdminError),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error(transparent)]
    Render(#[from] crate::render::RenderError),
    #[error("the object has no {0}")]
    MissingMetadata(&'static str),
    #[error(transparent)]
    Pki(#[from] crate::pki::PkiError),
}

impl Error {
    /// Short label for the errors metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube(_) => "kube",
            Self::Admin(e) => e.reason(),
            Self::Finalizer(f) => match f.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(e)
                | kube::runtime::finalizer::Error::CleanupFailed(e) => e.metric_label(),
                _ => "finalizer",
            },
            Self::Render(_) => "render",
            Self::MissingMetadata(_) => "metadata",
            Self::Pki(_) => "pki",
        }
    }
}

/// What every controller shares.
pub struct Context {
    pub client: Client,
    pub metrics: Arc<Metrics>,
    pub reporter: Reporter,
    pub render: RenderContext,
    /// `namespace/name` of a KafkaCluster → bootstrap address (from
    /// `--bootstrap-override`); the annotation wins over it.
    pub bootstrap_overrides: BTreeMap<String, String>,
    /// The operator's SCRAM-SHA-512 admin identity, when the brokers want
    /// one.
    pub admin_credentials: Option<AdminCredentials>,
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(
        client: Client,
        metrics: Arc<Metrics>,
        render: RenderContext,
        bootstrap_overrides: BTreeMap<String, String>,
    ) -> Self {
        Self {
            client,
            metrics,
            reporter: Reporter {
                controller: "skiff-operator".into(),
                instance: std::env::var("POD_NAME").ok(),
            },
            render,
            bootstrap_overrides,
            admin_credentials: None,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Authenticate admin connections as `credentials`.
    #[must_use]
    pub fn with_admin_credentials(mut self, credentials: Option<AdminCredentials>) -> Self {
        self.admin_credentials = credentials;
        self
    }

    /// Publishes an Event about `obj`; a failure to publish is only logged.
    pub async fn event<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        let recorder = Recorder::new(self.client.clone(), self.reporter.clone());
        let ev = Event {
            type_,
            reason: reason.to_string(),
            note: Some(note),
            action: "Reconcile".to_string(),
            secondary: None,
        };
        if let Err(e) = recorder.publish(&ev, &obj.object_ref(&())).await {
            tracing::warn!(error = %e, reason, "cannot publish event");
        }
    }

    /// The delay before retrying `key` after its `n`th failure in a row:
    /// 5 s doubling up to 5 min, so an unreachable cluster is never
    /// hot-looped.
    pub fn backoff(&self, key: &str) -> Duration {
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = f.entry(key.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        backoff_delay(*n)
    }

    /// Forgets the failures of `key` after a successful reconcile.
    pub fn succeeded(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }

    /// A bootstrap address given for `kc` by hand: the annotation, else
    /// `--bootstrap-override`.
    pub fn bootstrap_override(&self, kc: &KafkaCluster) -> Option<String> {
        if let Some(a) = kc.annotations().get(BOOTSTRAP_OVERRIDE_ANNOTATION) {
            return Some(a.clone());
        }
        let key = format!("{}/{}", kc.namespace().unwrap_or_default(), kc.name_any());
        self.bootstrap_overrides.get(&key).cloned()
    }

    /// `kc`'s bootstrap Service at `port`.
    fn bootstrap_service(&self, kc: &KafkaCluster, port: i32) -> String {
        format!(
            "{}.{}.svc.{}:{port}",
            crate::render::names::bootstrap_service(&kc.name_any()),
            kc.namespace().unwrap_or_default(),
            self.render.cluster_domain
        )
    }

    /// The password of the operator's own SCRAM user on `kc`'s brokers,
    /// from the cluster's operator Secret (see [`cluster::ensure_operator_secret`]).
    async fn operator_credentials(
        &self,
        kc: &KafkaCluster,
    ) -> Result<AdminCredentials, AdminError> {
        let ns = kc.namespace().unwrap_or_default();
        let name = crate::render::names::operator_secret(&kc.name_any());
        let unavailable = |reason: String| AdminError::Connect {
            addr: self.bootstrap_service(kc, OPERATOR_PORT),
            reason,
        };
        let secret = Api::<Secret>::namespaced(self.client.clone(), &ns)
            .get_opt(&name)
            .await
            .map_err(|e| unavailable(format!("reading Secret {ns}/{name}: {e}")))?
            .ok_or_else(|| unavailable(format!("Secret {ns}/{name} does not exist yet")))?;
        let password = secret
            .data
            .as_ref()
            .and_then(|d| d.get(crate::render::OPERATOR_PASSWORD_KEY))
            .and_then(|b| String::from_utf8(b.0.clone()).ok())
            .ok_or_else(|| unavailable(format!("Secret {ns}/{name} has no password")))?;
        Ok(AdminCredentials {
            username: crate::render::OPERATOR_USER.to_string(),
            password,
        })
    }

    /// Connects the admin client to `kc`'s brokers. In the cluster the
    /// operator uses its own listener and SCRAM user (provisioned with the
    /// cluster), unless an admin identity was configured by hand
    /// (`--admin-username`), which goes to the first listener. A bootstrap
    /// override (a port-forward while developing) is used as given, with the
    /// hand-configured identity if any.
    ///
    /// Brokers started by an operator that predates the operator's listener
    /// do not have it until the roll that adds it restarts them, and that
    /// roll needs admin calls: so when the operator's listener cannot be
    /// used, the first listener is tried without credentials, as such an
    /// operator did.
    ///
    /// # Errors
    /// The brokers cannot be reached, or the operator's credentials are not
    /// there yet.
    pub async fn admin(&self, kc: &KafkaCluster) -> Result<AdminClient, AdminError> {
        if let Some(addr) = self.bootstrap_override(kc) {
            return AdminClient::connect_with(&addr, self.admin_credentials.as_ref()).await;
        }
        let first = kc.spec.listeners.first().map_or(9092, |l| l.port);
        if let Some(creds) = &self.admin_credentials {
            return AdminClient::connect_with(&self.bootstrap_service(kc, first), Some(creds))
                .await;
        }
        let own = match self.operator_credentials(kc).await {
            Ok(creds) => {
                AdminClient::connect_with(&self.bootstrap_service(kc, OPERATOR_PORT), Some(&creds))
                    .await
            }
            Err(e) => Err(e),
        };
        match own {
            Ok(admin) => Ok(admin),
            Err(e) => {
                tracing::debug!(error = %e, "the operator's listener is not usable; trying the first listener");
                AdminClient::connect_with(&self.bootstrap_service(kc, first), None)
                    .await
                    .map_err(|_| e)
            }
        }
    }
}

/// `FIRST_BACKOFF * 2^(n-1)`, at most [`MAX_BACKOFF`].
pub fn backoff_delay(n: u32) -> Duration {
    let exp = n.saturating_sub(1).min(10);
    (FIRST_BACKOFF * 2u32.pow(exp)).min(MAX_BACKOFF)
}

/// A stable key of an object for the backoff table.
pub fn object_key<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    format!(
        "{}/{}/{}",
        K::kind(&()),
        obj.meta().namespace.as_deref().unwrap_or_default(),
        obj.meta().name.as_deref().unwrap_or_default()
    )
}

/// The error policy of every controller: log, count, back off.
pub fn error_policy<K: Resource<DynamicType = ()>>(
    obj: Arc<K>,
    err: &Error,
    ctx: Arc<Context>,
) -> Action {
    let key = object_key(obj.as_ref());
    let delay = ctx.backoff(&key);
    tracing::warn!(object = %key, error = %err, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Sets condition `type_` in `conditions`, keeping its transition time when
/// the status does not change.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
) {
    let status = if status { "True" } else { "False" }.to_string();
    let now = Time(Timestamp::now());
    let message = message.into();
    if let Some(c) = conditions.iter_mut().find(|c| c.type_ == type_) {
        if c.status != status {
            c.last_transition_time = now;
        }
        c.status = status;
        c.reason = reason.to_string();
        c.message = message;
        c.observed_generation = generation;
    } else {
        conditions.push(Condition {
            type_: type_.to_string(),
            status,
            reason: reason.to_string(),
            message,
            observed_generation: generation,
            last_transition_time: now,
        });
    }
}

/// Replaces `obj`'s status with a merge patch of the status subresource.
///
/// # Errors
/// The API server's refusal.
/// A status with conditions (see [`refuse`]).
pub trait Conditions {
    fn conditions_mut(&mut self) -> &mut Vec<Condition>;
}

impl Conditions for skiff_crds::KafkaClusterStatus {
    fn conditions_mut(&mut self) -> &mut Vec<Condition> {
        &mut self.conditions
    }
}

impl Conditions for skiff_crds::UserStatus {
    fn conditions_mut(&mut self) -> &mut Vec<Condition> {
        &mut self.conditions
    }
}

/// Reports why nothing was applied for `obj`: its `Ready` condition False
/// with `reason`, the status patched, a Warning Event; looked at again at
/// the next resync.
///
/// # Errors
/// The status patch refused.
pub async fn refuse<K, S>(
    obj: &K,
    api: &Api<K>,
    ctx: &Context,
    status: &mut S,
    reason: &str,
    message: String,
) -> Result<Action, Error>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    S: Conditions + Serialize,
{
    set_condition(
        status.conditions_mut(),
        "Ready",
        false,
        reason,
        message.clone(),
        obj.meta().generation,
    );
    patch_status(api, &obj.name_any(), status).await?;
    ctx.event(obj, EventType::Warning, reason, message).await;
    Ok(Action::requeue(RESYNC))
}

pub async fn patch_status<K, S>(api: &Api<K>, name: &str, status: &S) -> Result<(), kube::Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    S: Serialize,
{
    let patch = serde_json::json!({ "status": status });
    api.patch_status(
        name,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}

/// Why a resource cannot be matched with its cluster.
#[derive(Debug)]
pub enum Lookup {
    NotFound { namespace: String, name: String },
    Refused(Refusal),
    Kube(kube::Error),
}

impl Lookup {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotFound { .. } => "ClusterNotFound",
            Self::Refused(r) => r.reason(),
            Self::Kube(_) => "KubernetesError",
        }
    }
    pub fn message(&self) -> String {
        match self {
            Self::NotFound { namespace, name } => {
                format!("KafkaCluster {namespace}/{name} does not exist")
            }
            Self::Refused(r) => r.to_string(),
            Self::Kube(e) => e.to_string(),
        }
    }
}

/// The KafkaCluster a resource in `namespace` refers to, and the resource's
/// scope in it.
///
/// # Errors
/// No such cluster, a namespace the cluster does not accept, or an API
/// error.
pub async fn resolve_cluster(
    client: &Client,
    namespace: &str,
    cref: &ClusterRef,
) -> Result<(KafkaCluster, Scope), Lookup> {
    let cns = cref.namespace.as_deref().unwrap_or(namespace);
    let api: Api<KafkaCluster> = Api::namespaced(client.clone(), cns);
    let kc = match api.get_opt(&cref.name).await {
        Ok(Some(kc)) => kc,
        Ok(None) => {
            return Err(Lookup::NotFound {
                namespace: cns.to_string(),
                name: cref.name.clone(),
            });
        }
        Err(e) => return Err(Lookup::Kube(e)),
    };
    let scope = tenancy::scope(cns, &cref.name, kc.spec.tenancy.as_ref(), namespace)
        .map_err(Lookup::Refused)?;
    Ok((kc, scope))
}

/// Runs `f`, recording the reconcile's count, errors and duration.
pub async fn measured<F, T>(ctx: &Context, controller: &str, key: &str, f: F) -> Result<T, Error>
where
    F: std::future::Future<Output = Result<T, Error>>,
{
    let start = Instant::now();
    let out = f.await;
    ctx.metrics.observe(
        controller,
        start.elapsed(),
        out.as_ref().err().map(Error::metric_label),
    );
    if out.is_ok() {
        ctx.succeeded(key);
    }
    out
}

/// Wraps the finalizer helper's error.
pub fn finalizer_error(e: kube::runtime::finalizer::Error<Error>) -> Error {
    Error::Finalizer(Box::new(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff_delay(1), Duration::from_secs(5));
        assert_eq!(backoff_delay(2), Duration::from_secs(10));
        assert_eq!(backoff_delay(4), Duration::from_secs(40));
        assert_eq!(backoff_delay(9), MAX_BACKOFF);
        assert_eq!(backoff_delay(u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn a_condition_keeps_its_transition_time_while_its_status_holds() {
        let mut c = Vec::new();
        set_condition(&mut c, "Ready", false, "A", "a", Some(1));
        let t0 = c[0].last_transition_time.clone();
        std::thread::sleep(Duration::from_millis(5));
        set_condition(&mut c, "Ready", false, "B", "b", Some(2));
        assert_eq!(c[0].last_transition_time, t0);
        assert_eq!(c[0].reason, "B");
        set_condition(&mut c, "Ready", true, "Ready", "", Some(2));
        assert_ne!(c[0].last_transition_time, t0);
        assert_eq!(c.len(), 1);
    }
}
