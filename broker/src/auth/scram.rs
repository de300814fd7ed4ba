//! SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677), server side.
//!
//! The broker stores, per user and mechanism, only what RFC 5802 §5 says a
//! server keeps: the salt, the iteration count, `StoredKey = H(ClientKey)`
//! and `ServerKey`. A client proves it knows the password by sending
//! `ClientProof = ClientKey XOR HMAC(StoredKey, AuthMessage)`; the server
//! recovers `ClientKey`, hashes it and compares with `StoredKey`, then proves
//! itself with `ServerSignature = HMAC(ServerKey, AuthMessage)`, which the
//! client checks.
//!
//! [`ScramServer`] is the two-message exchange:
//! `client-first → server-first`, then `client-final → server-final`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ring::{digest, hmac, pbkdf2};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Fewest and most iterations Kafka accepts for a SCRAM credential.
pub const MIN_ITERATIONS: i32 = 4096;
pub const MAX_ITERATIONS: i32 = 16384;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ScramMechanism {
    Sha256,
    Sha512,
}

impl ScramMechanism {
    pub const ALL: [ScramMechanism; 2] = [Self::Sha256, Self::Sha512];

    pub fn name(self) -> &'static str {
        match self {
            Self::Sha256 => "SCRAM-SHA-256",
            Self::Sha512 => "SCRAM-SHA-512",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    /// The `mechanism` byte of the SCRAM credential admin APIs (KIP-554).
    pub fn kafka_type(self) -> i8 {
        match self {
            Self::Sha256 => 1,
            Self::Sha512 => 2,
        }
    }

    pub fn from_kafka_type(t: i8) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.kafka_type() == t)
    }

    fn hmac(self) -> hmac::Algorithm {
        match self {
            Self::Sha256 => hmac::HMAC_SHA256,
            Self::Sha512 => hmac::HMAC_SHA512,
        }
    }

    fn digest(self) -> &'static digest::Algorithm {
        match self {
            Self::Sha256 => &digest::SHA256,
            Self::Sha512 => &digest::SHA512,
        }
    }

    fn pbkdf2(self) -> pbkdf2::Algorithm {
        match self {
            Self::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
            Self::Sha512 => pbkdf2::PBKDF2_HMAC_SHA512,
        }
    }

    /// Output length of the hash, bytes.
    pub fn digest_len(self) -> usize {
        self.digest().output_len()
    }

    fn hmac_of(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        hmac::sign(&hmac::Key::new(self.hmac(), key), data)
            .as_ref()
            .to_vec()
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        digest::digest(self.digest(), data).as_ref().to_vec()
    }

    /// `SaltedPassword = Hi(password, salt, i)`, i.e. PBKDF2 with this hash.
    pub fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        let mut out = vec![0u8; self.digest_len()];
        let n = std::num::NonZeroU32::new(iterations.max(1)).unwrap_or(std::num::NonZeroU32::MIN);
        pbkdf2::derive(self.pbkdf2(), n, salt, password, &mut out);
        out
    }
}

/// What the broker stores for one user and mechanism. Never the password.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScramCredential {
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

impl ScramCredential {
    /// The stored form of a salted password (what AlterUserScramCredentials sends).
    pub fn from_salted_password(
        mech: ScramMechanism,
        salt: &[u8],
        iterations: u32,
        salted: &[u8],
    ) -> Self {
        let client_key = mech.hmac_of(salted, b"Client Key");
        Self {
            salt: salt.to_vec(),
            iterations,
            stored_key: mech.hash(&client_key),
            server_key: mech.hmac_of(salted, b"Server Key"),
        }
    }

    pub fn from_password(
        mech: ScramMechanism,
        password: &[u8],
        salt: &[u8],
        iterations: u32,
    ) -> Self {
        let salted = mech.salted_password(password, salt, iterations);
        Self::from_salted_password(mech, salt, iterations, &salted)
    }

    /// Whether `password` is the one this credential was made from (used by
    /// PLAIN, so both mechanisms share one store). Costs one PBKDF2.
    pub fn verify_password(&self, mech: ScramMechanism, password: &[u8]) -> bool {
        let other = Self::from_password(mech, password, &self.salt, self.iterations);
        constant_time_eq(&other.stored_key, &self.stored_key)
    }
}

pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ScramError {
    /// The message does not follow RFC 5802's grammar.
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    /// Something RFC 5802 allows that this server does not support.
    #[error("unsupported SCRAM feature: {0}")]
    Unsupported(&'static str),
    #[error("unknown user")]
    UnknownUser,
    #[error("invalid credentials")]
    BadProof,
    #[error("SCRAM message out of order")]
    OutOfOrder,
}

/// The server half of one SCRAM exchange, after client-first.
#[derive(Debug)]
pub struct ScramServer {
    mech: ScramMechanism,
    user: String,
    client_first_bare: String,
    server_first: String,
    gs2_header: String,
    nonce: String,
    /// The client's part of `nonce`; see `client_final`.
    client_nonce: String,
    cred: ScramCredential,
    done: bool,
}

impl ScramServer {
    /// Reads client-first and answers server-first. `lookup` finds the stored
    /// credential of a user; `server_nonce` is fresh randomness (printable, no
    /// commas).
    ///
    /// # Errors
    /// A malformed message, an unsupported feature (channel binding, `m=`,
    /// delegation tokens) or an unknown user.
    pub fn start(
        mech: ScramMechanism,
        client_first: &[u8],
        server_nonce: &str,
        lookup: impl FnOnce(&str) -> Option<ScramCredential>,
    ) -> Result<(Self, String), ScramError> {
        let msg =
            std::str::from_utf8(client_first).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let (cbind, rest) = msg
            .split_once(',')
            .ok_or(ScramError::Malformed("no GS2 header"))?;
        match cbind {
            "n" | "y" => {}
            c if c.starts_with("p=") => return Err(ScramError::Unsupported("channel binding")),
            _ => return Err(ScramError::Malformed("bad channel binding flag")),
        }
        let (authzid, bare) = rest
            .split_once(',')
            .ok_or(ScramError::Malformed("no GS2 header"))?;
        let gs2_header = format!("{cbind},{authzid},");
        let mut attrs = bare.split(',');
        let user = match attrs.next() {
            Some(a) if a.starts_with("m=") => {
                return Err(ScramError::Unsupported("mandatory extension"));
            }
            Some(a) => decode_saslname(
                a.strip_prefix("n=")
                    .ok_or(ScramError::Malformed("no username"))?,
            )?,
            None => return Err(ScramError::Malformed("no username")),
        };
        let client_nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(ScramError::Malformed("no nonce"))?;
        if client_nonce.is_empty() || !client_nonce.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return Err(ScramError::Malformed("bad nonce"));
        }
        for ext in attrs {
            if ext.starts_with("tokenauth=") {
                return Err(ScramError::Unsupported("delegation tokens"));
            }
        }
        if !authzid.is_empty() {
            let a = decode_saslname(
                authzid
                    .strip_prefix("a=")
                    .ok_or(ScramError::Malformed("bad authzid"))?,
            )?;
            if a != user {
                return Err(ScramError::Unsupported(
                    "an authorization id other than the user",
                ));
            }
        }
        if user.is_empty() {
            return Err(ScramError::Malformed("empty username"));
        }
        let cred = lookup(&user).ok_or(ScramError::UnknownUser)?;
        let nonce = format!("{client_nonce}{server_nonce}");
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&cred.salt),
            cred.iterations
        );
        Ok((
            Self {
                mech,
                user,
                client_first_bare: bare.to_string(),
                server_first: server_first.clone(),
                gs2_header,
                nonce,
                client_nonce: client_nonce.to_string(),
                cred,
                done: false,
            },
            server_first,
        ))
    }

    pub fn mechanism(&self) -> ScramMechanism {
        self.mech
    }

    /// The user named in client-first (authenticated only once
    /// [`Self::finish`] succeeds).
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Reads client-final, checks the proof and answers server-final
    /// (`v=ServerSignature`).
    ///
    /// # Errors
    /// A malformed message, a channel binding or nonce that does not match
    /// client-first, or a wrong proof.
    pub fn finish(&mut self, client_final: &[u8]) -> Result<String, ScramError> {
        if self.done {
            return Err(ScramError::OutOfOrder);
        }
        self.done = true;
        let msg =
            std::str::from_utf8(client_final).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let (without_proof, proof) = msg
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("no proof"))?;
        let mut attrs = without_proof.split(',');
        let cbind = attrs
            .next()
            .and_then(|a| a.strip_prefix("c="))
            .ok_or(ScramError::Malformed("no channel binding"))?;
        if cbind != B64.encode(self.gs2_header.as_bytes()) {
            return Err(ScramError::Malformed(
                "channel binding differs from client-first",
            ));
        }
        let nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(ScramError::Malformed("no nonce"))?;
        // librdkafka before 2.6.1 (Debian's kcat links 2.0) prepends its own
        // nonce once more (librdkafka#4895); Kafka 3.x accepted that. Accept
        // exactly that form too: the proof still covers what was sent, so a
        // replayed or altered exchange fails the proof check below.
        let buggy = format!("{}{}", self.client_nonce, self.nonce);
        if nonce != self.nonce && nonce != buggy {
            return Err(ScramError::Malformed("nonce differs from server-first"));
        }
        let proof = B64
            .decode(proof)
            .map_err(|_| ScramError::Malformed("proof is not base64"))?;
        if proof.len() != self.mech.digest_len() {
            return Err(ScramError::Malformed("proof has the wrong length"));
        }
        let auth_message = format!(
            "{},{},{without_proof}",
            self.client_first_bare, self.server_first
        );
        let client_signature = self
            .mech
            .hmac_of(&self.cred.stored_key, auth_message.as_bytes());
        let client_key: Vec<u8> = proof
            .iter()
            .zip(&client_signature)
            .map(|(p, s)| p ^ s)
            .collect();
        if !constant_time_eq(&self.mech.hash(&client_key), &self.cred.stored_key) {
            return Err(ScramError::BadProof);
        }
        let server_signature = self
            .mech
            .hmac_of(&self.cred.server_key, auth_message.as_bytes());
        Ok(format!("v={}", B64.encode(server_signature)))
    }
}

/// RFC 5802 `saslname`: `=2C` is `,` and `=3D` is `=`; any other `=` is an error.
fn decode_saslname(s: &str) -> Result<String, ScramError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(ScramError::Malformed("bad escape in username")),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677 §3: user "user", password "pencil".
    #[test]
    fn rfc7677_sha256_exchange() {
        let mech = ScramMechanism::Sha256;
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let cred = ScramCredential::from_password(mech, b"pencil", &salt, 4096);
        let (mut server, first) = ScramServer::start(
            mech,
            b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
            "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
            |u| (u == "user").then(|| cred.clone()),
        )
        .unwrap();
        assert_eq!(
            first,
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        );
        assert_eq!(server.user(), "user");
        let last = server
            .finish(b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
            .unwrap();
        assert_eq!(last, "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
        assert!(cred.verify_password(mech, b"pencil"));
        assert!(!cred.verify_password(mech, b"pencil2"));
    }

    fn rfc_server(cred: &ScramCredential) -> ScramServer {
        ScramServer::start(
            ScramMechanism::Sha256,
            b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
            "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
            |_| Some(cred.clone()),
        )
        .unwrap()
        .0
    }

    #[test]
    fn a_wrong_proof_nonce_or_replay_is_refused() {
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let cred = ScramCredential::from_password(ScramMechanism::Sha256, b"other", &salt, 4096);
        let good = b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        let mut s = rfc_server(&cred);
        assert_eq!(s.finish(good), Err(ScramError::BadProof));
        assert_eq!(s.finish(good), Err(ScramError::OutOfOrder));
        let mut s = rfc_server(&cred);
        assert!(matches!(
            s.finish(
                b"c=biws,r=rOprNGfwEbeRWgbNEkqOXX,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
            ),
            Err(ScramError::Malformed(_))
        ));
        let mut s = rfc_server(&cred);
        assert!(matches!(
            s.finish(b"garbage"),
            Err(ScramError::Malformed(_))
        ));
    }

    #[test]
    fn client_first_grammar() {
        let cred = ScramCredential::from_password(ScramMechanism::Sha512, b"p", b"salt", 4096);
        let start =
            |m: &[u8]| ScramServer::start(ScramMechanism::Sha512, m, "x", |_| Some(cred.clone()));
        assert!(matches!(
            start(b"p=tls-unique,,n=u,r=a"),
            Err(ScramError::Unsupported(_))
        ));
        assert!(matches!(
            start(b"n,,m=x,n=u,r=a"),
            Err(ScramError::Unsupported(_))
        ));
        assert!(matches!(
            start(b"n,,n=u,r=a,tokenauth=true"),
            Err(ScramError::Unsupported(_))
        ));
        assert!(matches!(
            start(b"n,a=v,n=u,r=a"),
            Err(ScramError::Unsupported(_))
        ));
        assert!(matches!(start(b"n,,n=u"), Err(ScramError::Malformed(_))));
        assert!(matches!(
            start(b"n,,n=a=2Xb,r=a"),
            Err(ScramError::Malformed(_))
        ));
        assert!(matches!(start(b""), Err(ScramError::Malformed(_))));
        assert!(matches!(
            start(&[0xff, 0xfe]),
            Err(ScramError::Malformed(_))
        ));
        let (s, _) = start(b"y,a=a=2Cb=3D,n=a=2Cb=3D,r=abc").unwrap();
        assert_eq!(s.user(), "a,b=");
        let unknown = ScramServer::start(ScramMechanism::Sha512, b"n,,n=u,r=a", "x", |_| None);
        assert!(matches!(unknown, Err(ScramError::UnknownUser)));
    }
}
