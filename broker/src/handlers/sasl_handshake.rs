//! SaslHandshake (v0–1): the client names a mechanism; the answer lists the
//! enabled ones. The exchange itself runs in SaslAuthenticate. Version 0 is
//! advertised because librdkafka only enables SASL when the broker's range
//! includes it, but librdkafka (like the Java client and kafka-python) then
//! sends v1. A real v0 handshake, after which raw SASL tokens would follow
//! without Kafka framing, is answered ILLEGAL_SASL_STATE and closed.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{SaslHandshakeRequest, SaslHandshakeResponse};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use crate::auth::SaslState;

pub async fn handle(ctx: &RequestContext<'_>, req: SaslHandshakeRequest) -> SaslHandshakeResponse {
    let enabled = &ctx.broker.security.mechanisms;
    let resp = SaslHandshakeResponse::default().with_mechanisms(
        enabled
            .iter()
            .map(|m| StrBytes::from_static_str(m))
            .collect(),
    );
    let mut session = ctx.session.lock();
    if ctx.version == 0 {
        session.close_after_response =
            Some("SaslHandshake v0 (unframed SASL tokens) is not supported; use v1".into());
        super::count_error(ctx, "SaslHandshake", "illegal_sasl_state");
        return resp.with_error_code(ResponseError::IllegalSaslState.code());
    }
    if !session.protocol.uses_sasl() || !matches!(session.sasl, SaslState::Start) {
        session.close_after_response =
            Some("SaslHandshake on a listener without SASL, or a second one".into());
        super::count_error(ctx, "SaslHandshake", "illegal_sasl_state");
        return resp.with_error_code(ResponseError::IllegalSaslState.code());
    }
    match enabled.iter().find(|m| **m == req.mechanism.as_str()) {
        Some(m) => {
            session.sasl = SaslState::Handshaken(m);
            resp
        }
        None => {
            session.close_after_response = Some(format!(
                "SASL mechanism {:?} is not enabled",
                req.mechanism.as_str()
            ));
            super::count_error(ctx, "SaslHandshake", "unsupported_sasl_mechanism");
            resp.with_error_code(ResponseError::UnsupportedSaslMechanism.code())
        }
    }
}
