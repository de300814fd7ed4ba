//! `skiff-operator reconcile-once`: converge a broker to Topic, User and
//! Quota manifests without Kubernetes, through the same code the
//! controllers run. For development and for the end-to-end tests that check
//! the result with real Kafka clients.
//!
//! `skiff-operator certs` ([`broker_certs`]) writes what a TLS cluster's
//! CA and broker-certificates Secrets would hold into a directory, one file
//! per key; `reconcile-once --cert-dir` reads that CA to issue TLS Users'
//! certificates, as the User controller does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::json;
use skiff_crds::{KafkaCluster, Quota, Topic, User};

use skiff_crds::user::{AuthenticationType, ROTATE_PASSWORD_ANNOTATION};
use time::OffsetDateTime;

use crate::admin::AdminClient;
use crate::admin::scram::generate_password;
use crate::controllers::user::{tls_leaf, tls_reissue_reason};
use crate::converge::{
    TopicTarget, acl_bindings, converge_quota, converge_tls_user, converge_topic, converge_user,
    delete_quota, delete_user, quota_values,
};
use crate::pki::{self, KeyedCert};
use crate::render::{self, RenderContext, tls};
use crate::tenancy::{self, Scope};

/// What to do.
#[derive(Debug, Clone)]
pub struct Options {
    pub bootstrap: String,
    pub files: Vec<PathBuf>,
    /// A KafkaCluster manifest whose namespace and tenancy decide the
    /// resources' scope; without it every resource is the owner's.
    pub cluster_file: Option<PathBuf>,
    /// Delete instead of converge (as a finalizer would).
    pub delete: bool,
    /// Where Users' passwords are read from and written to
    /// (`<dir>/<kafka user>.password`), standing in for their Secrets.
    pub password_dir: Option<PathBuf>,
    /// The operator's SCRAM-SHA-512 admin identity.
    pub credentials: Option<crate::admin::AdminCredentials>,
    /// Where TLS Users' certificates are issued from and written to: the
    /// cluster CA (`ca.crt`, `ca.key`, as `certs` writes them) and
    /// `<kafka user>.crt`/`.key`, standing in for the CA Secret and the
    /// Users' Secrets.
    pub cert_dir: Option<PathBuf>,
}

#[derive(Deserialize)]
struct Kind {
    kind: String,
}

/// Runs the options; returns one JSON object per resource.
///
/// # Errors
/// A file that cannot be read or parsed, a tenancy refusal, or an admin
/// error (each says which resource).
pub async fn run(opts: &Options) -> anyhow::Result<Vec<serde_json::Value>> {
    let cluster: Option<KafkaCluster> = match &opts.cluster_file {
        Some(p) => Some(serde_yaml::from_str(&std::fs::read_to_string(p)?)?),
        None => None,
    };
    let mut docs = Vec::new();
    for f in &opts.files {
        let text = std::fs::read_to_string(f)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", f.display()))?;
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let v = serde_yaml::Value::deserialize(doc)?;
            if !v.is_null() {
                docs.push(v);
            }
        }
    }
    let mut admin = AdminClient::connect_with(&opts.bootstrap, opts.credentials.as_ref()).await?;
    let mut out = Vec::new();
    for doc in docs {
        let kind: Kind = serde_yaml::from_value(doc.clone())?;
        let r = match kind.kind.as_str() {
            "Topic" => {
                topic(
                    &mut admin,
                    opts,
                    cluster.as_ref(),
                    serde_yaml::from_value(doc)?,
                )
                .await?
            }
            "User" => {
                user(
                    &mut admin,
                    opts,
                    cluster.as_ref(),
                    serde_yaml::from_value(doc)?,
                )
                .await?
            }
            "Quota" => {
                quota(
                    &mut admin,
                    opts,
                    cluster.as_ref(),
                    serde_yaml::from_value(doc)?,
                )
                .await?
            }
            other => {
                anyhow::bail!("kind {other} is not one reconcile-once handles (Topic, User, Quota)")
            }
        };
        out.push(r);
    }
    Ok(out)
}

fn scope_of(
    cluster: Option<&KafkaCluster>,
    ns: Option<&str>,
    cref: &skiff_crds::ClusterRef,
) -> anyhow::Result<Scope> {
    let Some(kc) = cluster else {
        return Ok(Scope::Owner);
    };
    let cns = kc.metadata.namespace.as_deref().unwrap_or("default");
    let ns = ns.unwrap_or(cns);
    if cref.namespace.as_deref().unwrap_or(ns) != cns {
        anyhow::bail!("clusterRef names another cluster's namespace");
    }
    Ok(tenancy::scope(
        cns,
        &cref.name,
        kc.spec.tenancy.as_ref(),
        ns,
    )?)
}

async fn topic(
    admin: &mut AdminClient,
    opts: &Options,
    cluster: Option<&KafkaCluster>,
    t: Topic,
) -> anyhow::Result<serde_json::Value> {
    let scope = scope_of(
        cluster,
        t.metadata.namespace.as_deref(),
        &t.spec.cluster_ref,
    )?;
    let rname = t.metadata.name.clone().unwrap_or_default();
    let name = tenancy::topic_name(&scope, &rname, t.spec.topic_name.as_deref())?;
    if opts.delete {
        admin.delete_topic(&name).await?;
        return Ok(json!({"kind": "Topic", "topic": name, "deleted": true}));
    }
    let o = converge_topic(
        admin,
        &TopicTarget {
            name: name.clone(),
            partitions: t.spec.partitions,
            replication_factor: t.spec.replication_factor,
            config: t.spec.config.clone(),
        },
    )
    .await?;
    Ok(json!({
        "kind": "Topic", "topic": name, "topicId": o.info.topic_id,
        "partitions": o.info.partitions, "created": o.created,
        "grownFrom": o.grown_from, "shrinkRefused": o.shrink_refused,
        "configChanges": o.config_changes.len(),
    }))
}

fn password_file(dir: &Path, user: &str) -> PathBuf {
    dir.join(format!("{user}.password"))
}

async fn user(
    admin: &mut AdminClient,
    opts: &Options,
    cluster: Option<&KafkaCluster>,
    u: User,
) -> anyhow::Result<serde_json::Value> {
    let scope = scope_of(
        cluster,
        u.metadata.namespace.as_deref(),
        &u.spec.cluster_ref,
    )?;
    let rname = u.metadata.name.clone().unwrap_or_default();
    for rule in u.spec.authorization.iter().flat_map(|a| a.acls.iter()) {
        tenancy::check_acl(&scope, rule)?;
    }
    let name = tenancy::user_name(&scope, &rname);
    if u.spec.authentication.type_ == AuthenticationType::Tls {
        return tls_user(admin, opts, cluster, &u, &name).await;
    }
    if opts.delete {
        delete_user(admin, &name).await?;
        return Ok(json!({"kind": "User", "user": name, "deleted": true}));
    }
    let existing = opts
        .password_dir
        .as_ref()
        .and_then(|d| std::fs::read_to_string(password_file(d, &name)).ok());
    let (password, force) = match existing {
        Some(p) => (p.trim().to_string(), false),
        None => (generate_password(), true),
    };
    if force && let Some(d) = &opts.password_dir {
        std::fs::write(password_file(d, &name), &password)?;
    }
    let principal = format!("User:{name}");
    let acls = acl_bindings(&principal, u.spec.authorization.as_ref());
    let o = converge_user(admin, &name, &password, force, &acls).await?;
    Ok(json!({
        "kind": "User", "user": name, "principal": principal,
        "credentialSet": o.credential_set, "aclsAdded": o.acls_added,
        "aclsRemoved": o.acls_removed,
        "aclError": o.acl_error.map(|e| e.to_string()),
    }))
}

fn read_ca(dir: &Path) -> anyhow::Result<Option<KeyedCert>> {
    let (c, k) = (dir.join(tls::CA_CERT_KEY), dir.join(tls::CA_KEY_KEY));
    if !c.exists() && !k.exists() {
        return Ok(None);
    }
    let ca = KeyedCert {
        cert_pem: std::fs::read_to_string(&c)?,
        key_pem: std::fs::read_to_string(&k)?,
    };
    pki::check_ca(&ca)?;
    Ok(Some(ca))
}

fn read_pair(cert: &Path, key: &Path) -> Option<KeyedCert> {
    Some(KeyedCert {
        cert_pem: std::fs::read_to_string(cert).ok()?,
        key_pem: std::fs::read_to_string(key).ok()?,
    })
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    o.mode(0o600);
    o.open(path)?.write_all(text.as_bytes())?;
    Ok(())
}

/// A TLS User, as the controller converges it: a certificate from the
/// cluster CA in `--cert-dir` (`<user>.crt`, `<user>.key`; the rotation
/// annotation it was issued for in `<user>.rotation`), no SCRAM
/// credential, its ACLs.
async fn tls_user(
    admin: &mut AdminClient,
    opts: &Options,
    cluster: Option<&KafkaCluster>,
    u: &User,
    name: &str,
) -> anyhow::Result<serde_json::Value> {
    let dir = opts.cert_dir.as_deref().ok_or_else(|| {
        anyhow::anyhow!("User {name} is a tls user: give --cert-dir (the cluster CA from `skiff-operator certs`)")
    })?;
    let (cert, key, rot) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.rotation")),
    );
    if opts.delete {
        delete_user(admin, name).await?;
        for f in [&cert, &key, &rot] {
            let _ = std::fs::remove_file(f);
        }
        return Ok(json!({"kind": "User", "user": name, "deleted": true}));
    }
    if let Some(kc) = cluster
        && !tls::has_mtls(kc)
    {
        anyhow::bail!(
            "User {name}: the KafkaCluster has no listener with tls: true and authentication: mtls (NoMtlsListener)"
        );
    }
    let ca = read_ca(dir)?.ok_or_else(|| {
        anyhow::anyhow!(
            "no cluster CA in {}: run `skiff-operator certs` first",
            dir.display()
        )
    })?;
    let rotation = u
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ROTATE_PASSWORD_ANNOTATION))
        .cloned()
        .unwrap_or_default();
    let held = read_pair(&cert, &key);
    let held_rotation = std::fs::read_to_string(&rot).ok();
    let now = OffsetDateTime::now_utc();
    let issued = tls_reissue_reason(
        &ca.cert_pem,
        held.as_ref(),
        held_rotation.as_deref(),
        &rotation,
        name,
        now,
    );
    if issued.is_some() {
        let c = pki::issue(&ca, &tls_leaf(name), now)?;
        write_private(&key, &c.key_pem)?;
        std::fs::write(&cert, &c.cert_pem)?;
        std::fs::write(&rot, &rotation)?;
    }
    let principal = format!("User:{name}");
    let acls = acl_bindings(&principal, u.spec.authorization.as_ref());
    let o = converge_tls_user(admin, name, &acls).await?;
    Ok(json!({
        "kind": "User", "user": name, "principal": principal,
        "certificate": cert, "key": key, "issued": issued,
        "credentialRemoved": o.credential_removed, "aclsAdded": o.acls_added,
        "aclsRemoved": o.acls_removed,
        "aclError": o.acl_error.map(|e| e.to_string()),
    }))
}

/// What `skiff-operator certs` does.
#[derive(Debug, Clone)]
pub struct CertsOptions {
    pub cluster_file: PathBuf,
    pub dir: PathBuf,
    /// Brokers `0..n`; the cluster's `spec.replicas` when unset.
    pub brokers: Option<i32>,
    /// `(broker id, host)`: the address a LoadBalancer listener's
    /// per-broker Service was given, standing in for its status.
    pub external_addresses: Vec<(i32, String)>,
    pub render: RenderContext,
}

/// Writes into `dir` what the Secrets `<cluster>-cluster-ca` (`ca.crt`,
/// `ca.key`: kept when present, like the Secret) and
/// `<cluster>-broker-certs` (`broker-<id>.crt`/`.key`: kept until
/// renewal is due, like the Secret) would hold, through the controller's
/// code; returns what was issued.
///
/// # Errors
/// An unreadable manifest or CA, or a certificate that cannot be made.
pub fn broker_certs(opts: &CertsOptions) -> anyhow::Result<serde_json::Value> {
    let kc: KafkaCluster = serde_yaml::from_str(&std::fs::read_to_string(&opts.cluster_file)?)?;
    let (cluster, _) = render::identity(&kc)?;
    anyhow::ensure!(
        tls::has_tls(&kc),
        "KafkaCluster {cluster} has no tls listener: the operator makes no certificates for it"
    );
    std::fs::create_dir_all(&opts.dir)?;
    let now = OffsetDateTime::now_utc();
    let ca = match read_ca(&opts.dir)? {
        Some(ca) => ca,
        None => {
            let ca = pki::new_ca(&tls::ca_common_name(&kc)?, now)?;
            write_private(&opts.dir.join(tls::CA_KEY_KEY), &ca.key_pem)?;
            std::fs::write(opts.dir.join(tls::CA_CERT_KEY), &ca.cert_pem)?;
            ca
        }
    };
    let services: Vec<k8s_openapi::api::core::v1::Service> = opts
        .external_addresses
        .iter()
        .flat_map(|(id, host)| {
            let ingress = if host.parse::<std::net::IpAddr>().is_ok() {
                json!({"ip": host})
            } else {
                json!({"hostname": host})
            };
            kc.spec
                .listeners
                .iter()
                .filter(|l| l.exposure == skiff_crds::kafka_cluster::Exposure::LoadBalancer)
                .filter_map(move |l| {
                    serde_json::from_value(json!({
                        "metadata": {"name": render::names::broker_service(cluster, *id, &l.name)},
                        "spec": {"type": "LoadBalancer"},
                        "status": {"loadBalancer": {"ingress": [ingress.clone()]}},
                    }))
                    .ok()
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let brokers = opts.brokers.unwrap_or(kc.spec.replicas);
    let mut held = BTreeMap::new();
    let mut wanted = BTreeMap::new();
    for id in 0..brokers {
        wanted.insert(id, tls::broker_leaf(&kc, &opts.render, id, &services)?);
        for k in [tls::broker_cert_key(id), tls::broker_key_key(id)] {
            if let Ok(v) = std::fs::read_to_string(opts.dir.join(&k)) {
                held.insert(k, v);
            }
        }
    }
    let next = tls::broker_secret_data(&ca, &wanted, &held, now)?;
    for (k, v) in &next.data {
        if k.ends_with(".key") {
            write_private(&opts.dir.join(k), v)?;
        } else {
            std::fs::write(opts.dir.join(k), v)?;
        }
    }
    Ok(json!({
        "kind": "KafkaCluster", "cluster": cluster, "dir": opts.dir,
        "clientAuth": tls::client_auth(&kc),
        "issued": next.issued.iter().map(|(id, why)| json!({"broker": id, "reason": why})).collect::<Vec<_>>(),
    }))
}

async fn quota(
    admin: &mut AdminClient,
    opts: &Options,
    cluster: Option<&KafkaCluster>,
    q: Quota,
) -> anyhow::Result<serde_json::Value> {
    let scope = scope_of(
        cluster,
        q.metadata.namespace.as_deref(),
        &q.spec.cluster_ref,
    )?;
    let entity = tenancy::quota_entity(&scope, &q.spec.target)?;
    let result = if opts.delete {
        delete_quota(admin, &entity).await
    } else {
        converge_quota(admin, &entity, &quota_values(&q.spec)).await
    };
    let values: BTreeMap<String, f64> = quota_values(&q.spec);
    Ok(json!({
        "kind": "Quota", "entity": entity.to_string(), "values": values,
        "error": result.err().map(|e| e.to_string()),
    }))
}
