//! User controller: a User resource → a SCRAM-SHA-512 credential (password
//! in a Secret of the User's namespace) and ACLs in its KafkaCluster.
//!
//! Rotation: change the User's `skiff.dev/rotate-password` annotation to any
//! new value; the operator generates a new password, writes the Secret and
//! sets the new credential. The Secret records the annotation value it was
//! made for and whether the broker already has its password, so a failure
//! between the two steps is finished on the next reconcile.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Api, Resource, ResourceExt};
use skiff_crds::user::{AuthenticationType, ROTATE_PASSWORD_ANNOTATION};
use skiff_crds::{User, UserStatus};

use super::{
    Context, Error, FINALIZER, Lookup, RESYNC, finalizer_error, measured, object_key, patch_status,
    resolve_cluster, set_condition,
};
use crate::admin::scram::generate_password;
use crate::converge::{acl_bindings, converge_user, delete_user};
use crate::render::FIELD_MANAGER;
use crate::tenancy;

/// Secret annotation: the rotation value the password was generated for.
pub const SECRET_ROTATION_ANNOTATION: &str = "skiff.dev/rotation";
/// Secret annotation: `"true"` once the broker has the Secret's password.
pub const SECRET_APPLIED_ANNOTATION: &str = "skiff.dev/credential-applied";

/// Name of a User's credentials Secret.
pub fn secret_name(user: &str) -> String {
    format!("{user}-kafka")
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

async fn refuse(
    user: &User,
    api: &Api<User>,
    ctx: &Context,
    status: &mut UserStatus,
    reason: &str,
    message: String,
) -> Result<Action, Error> {
    set_condition(
        &mut status.conditions,
        "Ready",
        false,
        reason,
        message.clone(),
        user.metadata.generation,
    );
    patch_status(api, &user.name_any(), status).await?;
    ctx.event(user, EventType::Warning, reason, message).await;
    Ok(Action::requeue(RESYNC))
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
        return refuse(
            user,
            api,
            ctx,
            &mut status,
            "TlsUsersUnsupported",
            "the operator does not issue client certificates yet; use scram-sha-512".to_string(),
        )
        .await;
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
        Err(e) => {
            set_condition(
                &mut status.conditions,
                "Ready",
                false,
                e.reason(),
                e.to_string(),
                generation,
            );
            patch_status(api, &name, &status).await?;
            return Err(e.into());
        }
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
    if let Some(e) = outcome.acl_error {
        let msg = format!("credential set, but the ACLs could not be applied: {e}");
        set_condition(
            &mut status.conditions,
            "Ready",
            false,
            "AclsNotApplied",
            msg.clone(),
            generation,
        );
        patch_status(api, &name, &status).await?;
        ctx.event(user, EventType::Warning, "AclsNotApplied", msg)
            .await;
        return Ok(Action::requeue(RESYNC));
    }
    set_condition(
        &mut status.conditions,
        "Ready",
        true,
        "Ready",
        format!(
            "{principal} has its credential and {} ACL binding(s)",
            desired.len()
        ),
        generation,
    );
    patch_status(api, &name, &status).await?;
    Ok(Action::requeue(RESYNC))
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
