//! SaslAuthenticate (v0–2): one SASL message each way. PLAIN is one round;
//! SCRAM two (client-first → server-first, client-final → server-final).
//!
//! A failure is counted (`skiff_auth_failures_total{mechanism}`), written to
//! the `audit` log target without any secret, answered after the per-address
//! backoff with SASL_AUTHENTICATION_FAILED, and the connection is closed.
//! A message out of order gets ILLEGAL_SASL_STATE and a close.

use std::time::Instant;

use base64::Engine;
use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::{SaslAuthenticateRequest, SaslAuthenticateResponse};
use kafka_protocol::protocol::StrBytes;
use tracing::{debug, warn};

use super::RequestContext;
use crate::auth::scram::{ScramError, ScramMechanism, ScramServer};
use crate::auth::{Principal, SaslState, parse_plain, random_bytes};

enum Failure {
    /// A message the state machine did not expect.
    OutOfOrder,
    /// Credentials (or their encoding) are wrong; `reason` holds no secret.
    Auth {
        mechanism: &'static str,
        user: Option<String>,
        reason: String,
    },
}

enum Step {
    /// Send this and wait for the next message.
    Continue(Vec<u8>, SaslState),
    /// Authenticated as `user`; send this last message.
    Done(Vec<u8>, String, &'static str),
}

pub async fn handle(
    ctx: &RequestContext<'_>,
    req: SaslAuthenticateRequest,
) -> SaslAuthenticateResponse {
    let state = std::mem::take(&mut ctx.session.lock().sasl);
    let step = match state {
        SaslState::Handshaken("PLAIN") => plain(ctx, req.auth_bytes).await,
        SaslState::Handshaken(m) => match ScramMechanism::from_name(m) {
            Some(mech) => scram_first(ctx, mech, &req.auth_bytes),
            None => Err(Failure::OutOfOrder),
        },
        SaslState::ScramFirstSent(mut server) => {
            let mech = server.mechanism();
            match server.finish(&req.auth_bytes) {
                Ok(last) => Ok(Step::Done(
                    last.into_bytes(),
                    server.user().to_string(),
                    mech.name(),
                )),
                Err(e) => Err(Failure::Auth {
                    mechanism: mech.name(),
                    user: Some(server.user().to_string()),
                    reason: e.to_string(),
                }),
            }
        }
        SaslState::Start | SaslState::Done => Err(Failure::OutOfOrder),
    };
    let resp = SaslAuthenticateResponse::default();
    let b = ctx.broker;
    match step {
        Ok(Step::Continue(out, next)) => {
            ctx.session.lock().sasl = next;
            resp.with_auth_bytes(Bytes::from(out))
        }
        Ok(Step::Done(out, user, mechanism)) => {
            b.security.failures.succeeded(ctx.peer.ip());
            b.metrics
                .auth_successes
                .with_label_values(&[mechanism])
                .inc();
            debug!(target: "audit", peer = %ctx.peer, listener = %ctx.listener.name, mechanism, user = %user, "authenticated");
            let mut s = ctx.session.lock();
            s.principal = Principal::user(user);
            s.authenticated = true;
            s.sasl = SaslState::Done;
            resp.with_auth_bytes(Bytes::from(out))
        }
        Err(Failure::OutOfOrder) => {
            ctx.session.lock().close_after_response = Some("SaslAuthenticate out of order".into());
            super::count_error(ctx, "SaslAuthenticate", "illegal_sasl_state");
            resp.with_error_code(ResponseError::IllegalSaslState.code())
                .with_error_message(Some(StrBytes::from_static_str(
                    "SaslAuthenticate is not expected now (no SaslHandshake, or already authenticated)",
                )))
        }
        Err(Failure::Auth {
            mechanism,
            user,
            reason,
        }) => {
            b.metrics
                .auth_failures
                .with_label_values(&[mechanism])
                .inc();
            warn!(
                target: "audit",
                peer = %ctx.peer,
                listener = %ctx.listener.name,
                mechanism,
                user = user.as_deref().unwrap_or("-"),
                reason = %reason,
                "authentication failed"
            );
            let delay = b.security.failures.failed(ctx.peer.ip(), Instant::now());
            tokio::time::sleep(delay).await;
            ctx.session.lock().close_after_response = Some("authentication failed".into());
            super::count_error(ctx, "SaslAuthenticate", "sasl_authentication_failed");
            resp.with_error_code(ResponseError::SaslAuthenticationFailed.code())
                .with_error_message(Some(StrBytes::from_string(format!(
                    "Authentication failed during authentication due to invalid credentials with SASL mechanism {mechanism}"
                ))))
        }
    }
}

fn scram_first(
    ctx: &RequestContext<'_>,
    mech: ScramMechanism,
    msg: &[u8],
) -> Result<Step, Failure> {
    let nonce = base64::engine::general_purpose::STANDARD.encode(random_bytes(24));
    let store = ctx.broker.topics.store();
    let mut lookup_error = None;
    let started = ScramServer::start(mech, msg, &nonce, |user| {
        store
            .scram_credential(user, mech)
            .map_err(|e| lookup_error = Some(e.to_string()))
            .ok()
            .flatten()
    });
    match started {
        Ok((server, first)) => Ok(Step::Continue(
            first.into_bytes(),
            SaslState::ScramFirstSent(Box::new(server)),
        )),
        Err(e) => Err(Failure::Auth {
            mechanism: mech.name(),
            user: None,
            reason: match (e, lookup_error) {
                (_, Some(store)) => format!("credential store: {store}"),
                (ScramError::UnknownUser, None) => "unknown user".into(),
                (e, None) => e.to_string(),
            },
        }),
    }
}

async fn plain(ctx: &RequestContext<'_>, msg: Bytes) -> Result<Step, Failure> {
    let fail = |user: Option<String>, reason: &str| Failure::Auth {
        mechanism: "PLAIN",
        user,
        reason: reason.to_string(),
    };
    let (user, _) = parse_plain(&msg).map_err(|r| fail(None, r))?;
    let user = user.to_string();
    let broker = ctx.broker.clone();
    let who = user.clone();
    // PBKDF2 of thousands of iterations: off the async workers.
    let verified = tokio::task::spawn_blocking(move || {
        let (_, password) = parse_plain(&msg).ok()?;
        let creds = broker.topics.store().scram_credentials_of(&who).ok()?;
        // The strongest stored credential decides.
        let (mech, cred) = creds.into_iter().next_back()?;
        Some(cred.verify_password(mech, password))
    })
    .await
    .ok()
    .flatten();
    match verified {
        Some(true) => Ok(Step::Done(Vec::new(), user, "PLAIN")),
        Some(false) => Err(fail(Some(user), "wrong password")),
        None => Err(fail(Some(user), "unknown user")),
    }
}
