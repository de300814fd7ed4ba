//! AlterUserScramCredentials (v0, KIP-554): deletions and upsertions of SCRAM
//! credentials. An upsertion carries the salt, the iteration count and the
//! salted password the client computed; the broker keeps only the derived
//! StoredKey and ServerKey. Each user's changes are validated together and
//! applied together; one result per user.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
};
use kafka_protocol::protocol::StrBytes;
use tracing::info;

use super::RequestContext;
use crate::auth::scram::{MAX_ITERATIONS, MIN_ITERATIONS, ScramCredential, ScramMechanism};

enum Change {
    Delete(ScramMechanism),
    Upsert(ScramMechanism, ScramCredential),
}

type Rejection = (ResponseError, String);

pub async fn handle(
    ctx: &RequestContext<'_>,
    req: AlterUserScramCredentialsRequest,
) -> AlterUserScramCredentialsResponse {
    // (user, mechanism type, change or why not), in request order.
    let mut ops: Vec<(String, i8, Result<Change, Rejection>)> = Vec::new();
    for d in &req.deletions {
        let change = ScramMechanism::from_kafka_type(d.mechanism)
            .map(Change::Delete)
            .ok_or_else(|| unknown_mechanism(d.mechanism));
        ops.push((d.name.to_string(), d.mechanism, change));
    }
    for u in &req.upsertions {
        ops.push((u.name.to_string(), u.mechanism, upsertion(u)));
    }
    let principal = ctx.session.lock().principal.clone();
    // With an authorizer, Kafka's rule (ALTER on the cluster); without,
    // super users when any are configured.
    let allowed = if ctx.broker.authorizer.enabled {
        ctx.authorize_cluster(crate::acl::Operation::Alter)
    } else {
        ctx.broker.security.may_manage_credentials(&principal)
    };
    let store = ctx.broker.topics.store();
    let mut users: Vec<&str> = Vec::new();
    for (name, _, _) in &ops {
        if !users.contains(&name.as_str()) {
            users.push(name);
        }
    }
    let mut results = Vec::with_capacity(users.len());
    for user in users {
        let mine: Vec<_> = ops.iter().filter(|(n, _, _)| n == user).collect();
        let checked: Result<Vec<&Change>, Rejection> = (|| {
            if !allowed {
                return Err((
                    ResponseError::ClusterAuthorizationFailed,
                    "only super users may alter SCRAM credentials".into(),
                ));
            }
            if user.is_empty() {
                return Err((
                    ResponseError::UnacceptableCredential,
                    "Username must not be empty".into(),
                ));
            }
            for (i, (_, mech, _)) in mine.iter().enumerate() {
                if mine[..i].iter().any(|(_, m, _)| m == mech) {
                    return Err((
                        ResponseError::DuplicateResource,
                        "A user credential cannot be altered twice in the same request".into(),
                    ));
                }
            }
            let mut changes = Vec::new();
            for (_, _, change) in &mine {
                let change = change.as_ref().map_err(|(e, m)| (*e, m.clone()))?;
                if let Change::Delete(mech) = change {
                    match store.scram_credential(user, *mech) {
                        Ok(Some(_)) => {}
                        Ok(None) => {
                            return Err((
                                ResponseError::ResourceNotFound,
                                "Attempt to delete a user credential that does not exist".into(),
                            ));
                        }
                        Err(e) => return Err((ResponseError::UnknownServerError, e.to_string())),
                    }
                }
                changes.push(change);
            }
            Ok(changes)
        })();
        let applied = checked.and_then(|changes| {
            for c in changes {
                let r = match c {
                    Change::Delete(m) => store.delete_scram_credential(user, *m).map(|_| ()),
                    Change::Upsert(m, cred) => store.put_scram_credential(user, *m, cred),
                };
                r.map_err(|e| (ResponseError::UnknownServerError, e.to_string()))?;
            }
            Ok(())
        });
        let result = AlterUserScramCredentialsResult::default()
            .with_user(StrBytes::from_string(user.to_string()));
        results.push(match applied {
            Ok(()) => {
                info!(target: "audit", peer = %ctx.peer, %principal, user, "SCRAM credentials altered");
                result
            }
            Err((code, msg)) => {
                super::count_error(ctx, "AlterUserScramCredentials", "rejected");
                result
                    .with_error_code(code.code())
                    .with_error_message(Some(StrBytes::from_string(msg)))
            }
        });
    }
    AlterUserScramCredentialsResponse::default().with_results(results)
}

fn unknown_mechanism(t: i8) -> Rejection {
    (
        ResponseError::UnsupportedSaslMechanism,
        format!("Unknown SCRAM mechanism type {t}"),
    )
}

fn upsertion(
    u: &kafka_protocol::messages::alter_user_scram_credentials_request::ScramCredentialUpsertion,
) -> Result<Change, Rejection> {
    let mech = ScramMechanism::from_kafka_type(u.mechanism)
        .ok_or_else(|| unknown_mechanism(u.mechanism))?;
    if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&u.iterations) {
        return Err((
            ResponseError::UnacceptableCredential,
            format!("Iterations must be between {MIN_ITERATIONS} and {MAX_ITERATIONS}"),
        ));
    }
    if u.salt.is_empty() {
        return Err((
            ResponseError::UnacceptableCredential,
            "Salt must not be empty".into(),
        ));
    }
    if u.salted_password.len() != mech.digest_len() {
        return Err((
            ResponseError::UnacceptableCredential,
            format!(
                "The salted password of {} must be {} bytes",
                mech.name(),
                mech.digest_len()
            ),
        ));
    }
    Ok(Change::Upsert(
        mech,
        ScramCredential::from_salted_password(
            mech,
            &u.salt,
            u.iterations as u32,
            &u.salted_password,
        ),
    ))
}
