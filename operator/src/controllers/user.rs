//! User controller: a User resource → a SCRAM-SHA-512 credential (password
//! in a Secret of the User's namespace) and ACLs in its KafkaCluster.
//!
//! `authentication.type: tls`: a client certificate from the cluster CA
//! (CN = the Kafka user name, so the brokers' `ssl.principal.mapping=CN`
//! gives the principal `status.principal` names) in the same Secret
//! (`user.crt`, `user.key`, `ca.crt`), issued again before it expires and
//! on the rotation annotation. A certificate cannot be revoked (the brokers
//! read no CRL): deleting the User removes its ACLs and its Secret, but a
//! copy of the key stays valid for a connection until the certificate
//! expires.
//!
//! Rotation: change the User's `skiff.dev/rotate-password` annotation to any
//! new value; the operator generates a new password, writes the Secret and
//! sets the new credential. The Secret records the annotation value it was
//! made for and whether the broker already has its password, so a failure
//! between the two steps is finished on the next reconcile.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Api, Resource, ResourceExt};
use skiff_crds::user::{AuthenticationType, ROTATE_PASSWORD_ANNOTATION};
use skiff_crds::{KafkaCluster, User, UserStatus};
use time::OffsetDateTime;

use super::{
    Context, Error, FINALIZER, Lookup, RESYNC, finalizer_error, measured, object_key, patch_status,
    refuse, resolve_cluster, set_condition,
};
use crate::admin::AdminError;
use crate::admin::scram::generate_password;
use crate::converge::{acl_bindings, converge_tls_user, converge_user, delete_user};
use crate::pki::{self, KeyedCert, LeafSpec, Usage};
use crate::render::{self, FIELD_MANAGER};
use crate::tenancy;

/// Secret annotation: the rotation value the password was generated for.
pub const SECRET_ROTATION_ANNOTATION: &str = "skiff.dev/rotation";
/// Secret annotation: `"true"` once the broker has the Secret's password.
pub const SECRET_APPLIED_ANNOTATION: &str = "skiff.dev/credential-applied";

/// Name of a User's credentials Secret.
pub fn secret_name(user: &str) -> String {
    format!("{user}-kafka")
}

/// A TLS User's Secret key holding its certificate (PEM).
pub const USER_CERT_KEY: &str = "user.crt";
/// A TLS User's Secret key holding its private key (PKCS#8 PEM).
pub const USER_KEY_KEY: &str = "user.key";

/// The client certificate TLS user `username` (the Kafka name, tenant
/// prefix included) should hold: CN = `username`, so a broker with
/// `ssl.principal.mapping=CN` sees `User:<username>`.
pub fn tls_leaf(username: &str) -> LeafSpec {
    LeafSpec {
        common_name: username.to_string(),
        sans: Vec::new(),
        usage: Usage::Client,
    }
}

/// Why a TLS User's certificate must be issued now, or `None`: no
/// certificate yet (`new`), a rotation asked for by a new value of the
/// rotation annotation (`rotated`), or what [`pki::renewal_reason`] says
/// (expiring, another CA, another name).
pub fn tls_reissue_reason(
    ca_pem: &str,
    held: Option<&KeyedCert>,
    held_rotation: Option<&str>,
    rotation: &str,
    username: &str,
    now: OffsetDateTime,
) -> Option<&'static str> {
    if held.is_none() {
        return Some("new");
    }
    if held_rotation != Some(rotation) {
        return Some("rotated");
    }
    pki::renewal_reason(ca_pem, held, &tls_leaf(username), now)
}

/// The Secret of TLS user `username`, owned by `user`: `user.crt`,
/// `user.key`, `ca.crt` (the cluster CA, to verify the brokers), `username`,
/// `security.protocol` (`SSL`) and `bootstrap.servers` when known.
pub fn tls_secret(
    user: &User,
    username: &str,
    cert: &KeyedCert,
    ca_pem: &str,
    rotation: &str,
    bootstrap: Option<&str>,
) -> Result<Secret, Error> {
    let owner = user
        .controller_owner_ref(&())
        .ok_or(Error::MissingMetadata("uid"))?;
    let mut data = BTreeMap::from([
        ("username".to_string(), username.to_string()),
        (USER_CERT_KEY.to_string(), cert.cert_pem.clone()),
        (USER_KEY_KEY.to_string(), cert.key_pem.clone()),
        (render::tls::CA_CERT_KEY.to_string(), ca_pem.to_string()),
        ("security.protocol".to_string(), "SSL".to_string()),
    ]);
    if let Some(b) = bootstrap {
        data.insert("bootstrap.servers".to_string(), b.to_string());
    }
    Ok(Secret {
        metadata: ObjectMeta {
            name: Some(secret_name(&user.name_any())),
            namespace: user.namespace(),
            owner_references: Some(vec![owner]),
            annotations: Some(BTreeMap::from([(
                SECRET_ROTATION_ANNOTATION.to_string(),
                rotation.to_string(),
            )])),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_string(),
                "skiff-operator".to_string(),
            )])),
            ..ObjectMeta::default()
        },
        data: Some(
            data.into_iter()
                .map(|(k, v)| (k, ByteString(v.into_bytes())))
                .collect(),
        ),
        type_: Some("Opaque".to_string()),
        ..Secret::default()
    })
}

fn secret_string(s: &Secret, key: &str) -> Option<String> {
    String::from_utf8(s.data.as_ref()?.get(key)?.0.clone()).ok()
}

/// The Secret holding `password` for Kafka user `username`, owned by `user`.
pub fn credentials_secret(
    user: &User,
    username: &str,
    password: &str,
    rotation: &str,
    applied: bool,
    bootstrap: Option<&str>,
) -> Result<Secret, Error> {
    let owner = user
        .controller_owner_ref(&())
        .ok_or(Error::MissingMetadata("uid"))?;
    let mut data = BTreeMap::from([
        ("username".to_string(), username.to_string()),
        ("password".to_string(), password.to_string()),
        ("sasl.mechanism".to_string(), "SCRAM-SHA-512".to_string()),
        (
            "sasl.jaas.config".to_string(),
            format!(
                "org.apache.kafka.common.security.scram.ScramLoginModule required username=\"{username}\" password=\"{password}\";"
            ),
        ),
    ]);
    if let Some(b) = bootstrap {
        data.insert("bootstrap.servers".to_string(), b.to_string());
    }
    Ok(Secret {
        metadata: ObjectMeta {
            name: Some(secret_name(&user.name_any())),
            namespace: user.namespace(),
            owner_references: Some(vec![owner]),
            annotations: Some(BTreeMap::from([
                (SECRET_ROTATION_ANNOTATION.to_string(), rotation.to_string()),
                (SECRET_APPLIED_ANNOTATION.to_string(), applied.to_string()),
            ])),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_string(),
                "skiff-operator".to_string(),
            )])),
            ..ObjectMeta::default()
        },
        data: Some(
            data.into_iter()
                .map(|(k, v)| (k, ByteString(v.into_bytes())))
                .collect(),
        ),
        type_: Some("Opaque".to_string()),
        ..Secret::default()
    })
}

/// The controller's reconcile function.
///
/// # Errors
/// Kubernetes or Kafka errors; the error policy retries with backoff.
pub async fn reconcile(user: Arc<User>, ctx: Arc<Context>) -> Result<Action, Error> {
    let key = object_key(user.as_ref());
    measured(&ctx, "user", &key, async {
        let ns = user
            .namespace()
            .ok_or(Error::MissingMetadata("namespace"))?;
        let api: Api<User> = Api::namespaced(ctx.client.clone(), &ns);
        finalizer(&api, FINALIZER, user, |event| async {
            match event {
                Finalizer::Apply(u) => apply(&u, &api, &ctx).await,
                Finalizer::Cleanup(u) => cleanup(&u, &ctx).await,
            }
        })
        .await
        .map_err(finalizer_error)
    })
    .await
}

async fn apply(user: &User, api: &Api<User>, ctx: &Context) -> Result<Action, Error> {
    let name = user.name_any();
    let ns = user.namespace().unwrap_or_default();
    let generation = user.metadata.generation;
    let mut status = user.status.clone().unwrap_or_default();
    status.observed_generation = generation;

    let (kc, scope) = match resolve_cluster(&ctx.client, &ns, &user.spec.cluster_ref).await {
        Ok(x) => x,
        Err(Lookup::Kube(e)) => return Err(e.into()),
        Err(l) => return refuse(user, api, ctx, &mut status, l.reason(), l.message()).await,
    };
    for rule in user
        .spec
        .authorization
        .as_ref()
        .map(|a| a.acls.as_slice())
        .unwrap_or_default()
    {
        if let Err(r) = tenancy::check_acl(&scope, rule) {
            return refuse(user, api, ctx, &mut status, r.reason(), r.to_string()).await;
        }
    }
    let username = tenancy::user_name(&scope, &name);
    let principal = format!("User:{username}");
    status.principal = Some(principal.clone());
    if user.spec.authentication.type_ == AuthenticationType::Tls {
        return apply_tls(user, api, ctx, &kc, &username, status).await;
    }

    // The password: the Secret's, or a new one for a new user or a rotation.
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let sname = secret_name(&name);
    let rotation = user
        .annotations()
        .get(ROTATE_PASSWORD_ANNOTATION)
        .cloned()
        .unwrap_or_default();
    let existing = secrets.get_opt(&sname).await?;
    let current = existing.as_ref().and_then(|s| {
        let ann = s.metadata.annotations.clone().unwrap_or_default();
        let pw = s.data.as_ref()?.get("password")?;
        let pw = String::from_utf8(pw.0.clone()).ok()?;
        let same_rotation =
            ann.get(SECRET_ROTATION_ANNOTATION).map(String::as_str) == Some(rotation.as_str());
        let applied = ann.get(SECRET_APPLIED_ANNOTATION).map(String::as_str) == Some("true");
        same_rotation.then_some((pw, applied))
    });
    let bootstrap = kc
        .status
        .as_ref()
        .and_then(|s| s.bootstrap_servers.first())
        .map(|b| b.address.clone());
    let ssa = PatchParams::apply(FIELD_MANAGER).force();
    let (password, applied, rotated) = match current {
        Some((pw, applied)) => (pw, applied, false),
        None => {
            let pw = generate_password();
            let secret =
                credentials_secret(user, &username, &pw, &rotation, false, bootstrap.as_deref())?;
            secrets.patch(&sname, &ssa, &Patch::Apply(&secret)).await?;
            (pw, false, existing.is_some())
        }
    };
    status.secret_name = Some(sname.clone());

    let desired = acl_bindings(&principal, user.spec.authorization.as_ref());
    let outcome = match ctx.admin(&kc).await {
        Ok(mut admin) => converge_user(&mut admin, &username, &password, !applied, &desired).await,
        Err(e) => Err(e),
    };
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => return Err(admin_failed(user, api, &mut status, e).await),
    };
    if !applied {
        let secret = credentials_secret(
            user,
            &username,
            &password,
            &rotation,
            true,
            bootstrap.as_deref(),
        )?;
        secrets.patch(&sname, &ssa, &Patch::Apply(&secret)).await?;
    }
    if outcome.credential_set {
        let (reason, note) = if rotated {
            (
                "PasswordRotated",
                format!("new password for {username} in Secret {sname}"),
            )
        } else {
            (
                "CredentialSet",
                format!("SCRAM-SHA-512 credential of {username} set from Secret {sname}"),
            )
        };
        ctx.event(user, EventType::Normal, reason, note).await;
    }
    let ready = format!(
        "{principal} has its credential and {} ACL binding(s)",
        desired.len()
    );
    ready_unless_acls_failed(
        user,
        api,
        ctx,
        &mut status,
        outcome.acl_error,
        "credential set",
        ready,
    )
    .await
}

/// `Ready=False` with an admin call's failure as reason; the error to
/// return (the reconcile backs off), or the status patch's own.
async fn admin_failed(
    user: &User,
    api: &Api<User>,
    status: &mut UserStatus,
    e: AdminError,
) -> Error {
    set_condition(
        &mut status.conditions,
        "Ready",
        false,
        e.reason(),
        e.to_string(),
        user.metadata.generation,
    );
    match patch_status(api, &user.name_any(), status).await {
        Ok(()) => e.into(),
        Err(pe) => pe.into(),
    }
}

/// The end of a reconcile once the credential is in place: Ready, or
/// `AclsNotApplied` (with an Event) when the ACLs failed.
async fn ready_unless_acls_failed(
    user: &User,
    api: &Api<User>,
    ctx: &Context,
    status: &mut UserStatus,
    acl_error: Option<AdminError>,
    done: &str,
    ready: String,
) -> Result<Action, Error> {
    if let Some(e) = acl_error {
        let msg = format!("{done}, but the ACLs could not be applied: {e}");
        return refuse(user, api, ctx, status, "AclsNotApplied", msg).await;
    }
    set_condition(
        &mut status.conditions,
        "Ready",
        true,
        "Ready",
        ready,
        user.metadata.generation,
    );
    patch_status(api, &user.name_any(), status).await?;
    Ok(Action::requeue(RESYNC))
}

/// How soon a TLS User is looked at again while its cluster has no CA yet.
pub const CA_PENDING_RETRY: Duration = Duration::from_secs(15);

/// A TLS User: its certificate from the cluster CA in its Secret, no SCRAM
/// credential, its ACLs.
#[allow(clippy::too_many_lines)]
async fn apply_tls(
    user: &User,
    api: &Api<User>,
    ctx: &Context,
    kc: &KafkaCluster,
    username: &str,
    mut status: UserStatus,
) -> Result<Action, Error> {
    let name = user.name_any();
    let ns = user.namespace().unwrap_or_default();
    let generation = user.metadata.generation;
    let principal = format!("User:{username}");
    let cluster = kc.name_any();
    let Some(mtls) = kc.spec.listeners.iter().find(|l| {
        l.tls && l.authentication == skiff_crds::kafka_cluster::ListenerAuthentication::Mtls
    }) else {
        let msg = format!(
            "KafkaCluster {cluster} has no listener with tls: true and authentication: mtls, \
             so no broker would take {principal}'s certificate; add one or use scram-sha-512"
        );
        return refuse(user, api, ctx, &mut status, "NoMtlsListener", msg).await;
    };
    // The CA is the cluster's: made by the KafkaCluster controller.
    let kc_ns = kc.namespace().unwrap_or_default();
    let cas: Api<Secret> = Api::namespaced(ctx.client.clone(), &kc_ns);
    let ca_name = render::names::cluster_ca(&cluster);
    let Some(ca) = cas.get_opt(&ca_name).await? else {
        set_condition(
            &mut status.conditions,
            "Ready",
            false,
            "ClusterCaPending",
            format!(
                "waiting for the cluster CA (Secret {kc_ns}/{ca_name}), which the KafkaCluster's reconcile makes"
            ),
            generation,
        );
        patch_status(api, &name, &status).await?;
        return Ok(Action::requeue(CA_PENDING_RETRY));
    };
    let ca = KeyedCert {
        cert_pem: secret_string(&ca, render::tls::CA_CERT_KEY).unwrap_or_default(),
        key_pem: secret_string(&ca, render::tls::CA_KEY_KEY).unwrap_or_default(),
    };
    pki::check_ca(&ca)?;

    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let sname = secret_name(&name);
    let rotation = user
        .annotations()
        .get(ROTATE_PASSWORD_ANNOTATION)
        .cloned()
        .unwrap_or_default();
    let existing = secrets.get_opt(&sname).await?;
    let held = existing.as_ref().and_then(|s| {
        Some(KeyedCert {
            cert_pem: secret_string(s, USER_CERT_KEY)?,
            key_pem: secret_string(s, USER_KEY_KEY)?,
        })
    });
    let held_rotation = existing
        .as_ref()
        .and_then(|s| s.metadata.annotations.as_ref())
        .and_then(|a| a.get(SECRET_ROTATION_ANNOTATION))
        .cloned();
    let now = OffsetDateTime::now_utc();
    let reason = tls_reissue_reason(
        &ca.cert_pem,
        held.as_ref(),
        held_rotation.as_deref(),
        &rotation,
        username,
        now,
    );
    if let Some(why) = reason {
        let bootstrap = kc
            .status
            .as_ref()
            .and_then(|s| s.bootstrap_servers.iter().find(|b| b.name == mtls.name))
            .map(|b| b.address.clone());
        let cert = pki::issue(&ca, &tls_leaf(username), now)?;
        let secret = tls_secret(
            user,
            username,
            &cert,
            &ca.cert_pem,
            &rotation,
            bootstrap.as_deref(),
        )?;
        secrets
            .patch(
                &sname,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&secret),
            )
            .await?;
        ctx.event(
            user,
            EventType::Normal,
            "CertificateIssued",
            format!("client certificate for {principal} ({why}) in Secret {sname}"),
        )
        .await;
    }
    status.secret_name = Some(sname.clone());

    let desired = acl_bindings(&principal, user.spec.authorization.as_ref());
    let outcome = match ctx.admin(kc).await {
        Ok(mut admin) => converge_tls_user(&mut admin, username, &desired).await,
        Err(e) => Err(e),
    };
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => return Err(admin_failed(user, api, &mut status, e).await),
    };
    if outcome.credential_removed {
        ctx.event(
            user,
            EventType::Normal,
            "CredentialDeleted",
            format!("{username} authenticates with its certificate now: its SCRAM credential was deleted"),
        )
        .await;
    }
    let ready = format!(
        "{principal} has a certificate from the cluster CA in Secret {sname} and {} ACL binding(s)",
        desired.len()
    );
    ready_unless_acls_failed(
        user,
        api,
        ctx,
        &mut status,
        outcome.acl_error,
        "certificate issued",
        ready,
    )
    .await
}

async fn cleanup(user: &User, ctx: &Context) -> Result<Action, Error> {
    let ns = user.namespace().unwrap_or_default();
    let (kc, scope) = match resolve_cluster(&ctx.client, &ns, &user.spec.cluster_ref).await {
        Ok(x) => x,
        Err(Lookup::NotFound { .. } | Lookup::Refused(_)) => return Ok(Action::await_change()),
        Err(Lookup::Kube(e)) => return Err(e.into()),
    };
    let username = tenancy::user_name(&scope, &user.name_any());
    let mut admin = ctx.admin(&kc).await?;
    delete_user(&mut admin, &username).await?;
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tls_users_certificate_is_issued_new_on_rotation_and_before_expiry() {
        let now = OffsetDateTime::now_utc();
        let ca = pki::new_ca("ca", now).unwrap();
        let r = |held: Option<&KeyedCert>, held_rot: Option<&str>, rot: &str, t| {
            tls_reissue_reason(&ca.cert_pem, held, held_rot, rot, "team-a.alice", t)
        };
        assert_eq!(r(None, None, "", now), Some("new"));
        let cert = pki::issue(&ca, &tls_leaf("team-a.alice"), now).unwrap();
        let info = pki::parse(&cert.cert_pem).unwrap();
        assert_eq!(info.common_name.as_deref(), Some("team-a.alice"));
        assert!(info.sans.is_empty());
        assert_eq!(r(Some(&cert), Some(""), "", now), None);
        assert_eq!(r(Some(&cert), Some(""), "2026-12-04", now), Some("rotated"));
        assert_eq!(r(Some(&cert), Some("2026-12-04"), "2026-12-04", now), None);
        let late = now + time::Duration::days(pki::LEAF_VALIDITY_DAYS - 1);
        assert_eq!(r(Some(&cert), Some(""), "", late), Some("expiring"));
        // Issued for another name (the User renamed its tenant prefix).
        assert_eq!(
            tls_reissue_reason(&ca.cert_pem, Some(&cert), Some(""), "", "b-alice", now),
            Some("name-changed")
        );
    }
}
