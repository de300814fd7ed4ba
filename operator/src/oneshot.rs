//! `skiff-operator reconcile-once`: converge a broker to Topic, User and
//! Quota manifests without Kubernetes, through the same code the
//! controllers run. For development and for the end-to-end tests that check
//! the result with real Kafka clients.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::json;
use skiff_crds::{KafkaCluster, Quota, Topic, User};

use crate::admin::AdminClient;
use crate::admin::scram::generate_password;
use crate::converge::{
    TopicTarget, acl_bindings, converge_quota, converge_topic, converge_user, delete_quota,
    delete_user, quota_values,
};
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
