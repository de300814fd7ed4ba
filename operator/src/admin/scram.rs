//! SCRAM-SHA-512 credentials (RFC 5802, RFC 7677): the operator salts a
//! password itself and sends Kafka only the salt and the salted password,
//! as `kafka-configs --alter --add-config SCRAM-SHA-512=[password=...]`
//! does. Also generates passwords.

use std::num::NonZeroU32;

use base64::Engine;
use ring::rand::{SecureRandom, SystemRandom};

/// PBKDF2 iterations of new credentials (Kafka's minimum is 4096).
pub const ITERATIONS: i32 = 8192;
const SALT_LEN: usize = 32;
/// Random bytes in a generated password (256 bits).
const PASSWORD_BYTES: usize = 32;

/// A salted credential. Its `Debug` shows no secret.
pub struct Credential {
    pub salt: Vec<u8>,
    pub salted_password: Vec<u8>,
    pub iterations: i32,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl Credential {
    /// Salts `password` with a fresh random salt.
    pub fn new(password: &str, iterations: i32) -> Self {
        let mut salt = vec![0u8; SALT_LEN];
        // SystemRandom reads the OS generator; it failing means the OS has
        // no entropy source, which no caller can recover from.
        SystemRandom::new()
            .fill(&mut salt)
            .expect("the OS random generator works");
        Self::with_salt(password, salt, iterations)
    }

    /// `Hi(password, salt, iterations)` with HMAC-SHA-512.
    pub fn with_salt(password: &str, salt: Vec<u8>, iterations: i32) -> Self {
        let rounds = NonZeroU32::new(u32::try_from(iterations.max(1)).unwrap_or(1))
            .unwrap_or(NonZeroU32::MIN);
        let mut salted_password = vec![0u8; 64];
        ring::pbkdf2::derive(
            ring::pbkdf2::PBKDF2_HMAC_SHA512,
            rounds,
            &salt,
            password.as_bytes(),
            &mut salted_password,
        );
        Self {
            salt,
            salted_password,
            iterations,
        }
    }
}

/// A new random password: 32 bytes from the OS generator, URL-safe base64
/// (43 characters, no padding; safe in JAAS strings and env variables).
pub fn generate_password() -> String {
    let mut b = [0u8; PASSWORD_BYTES];
    SystemRandom::new()
        .fill(&mut b)
        .expect("the OS random generator works");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn salted_password_is_pbkdf2_hmac_sha512() {
        // RFC 7677-style check against an independent PBKDF2-HMAC-SHA512
        // vector (RFC 6070 inputs, SHA-512 output as published by
        // e.g. Python's hashlib.pbkdf2_hmac('sha512', b'password', b'salt', 1)).
        let c = Credential::with_salt("password", b"salt".to_vec(), 1);
        let hex: String = c.salted_password[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(hex, "867f70cf1ade02cf");
        assert_eq!(c.salted_password.len(), 64);
    }

    #[test]
    fn new_credentials_get_distinct_salts_and_passwords_differ() {
        let a = Credential::new("pw", ITERATIONS);
        let b = Credential::new("pw", ITERATIONS);
        assert_ne!(a.salt, b.salt);
        assert_ne!(a.salted_password, b.salted_password);
        let p = generate_password();
        assert_eq!(p.len(), 43);
        assert_ne!(p, generate_password());
        assert!(!format!("{a:?}").contains("salt:"));
    }
}

/// The client side of one SCRAM-SHA-512 exchange (RFC 5802), for the
/// operator's own admin identity. Never logs or returns the password.
pub struct ScramClient {
    user: String,
    password: String,
    client_nonce: String,
    client_first_bare: String,
    /// Server key and auth message, to check the server's signature.
    server_check: Option<(Vec<u8>, Vec<u8>)>,
}

/// Why a SCRAM exchange failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScramError {
    #[error("the server's SCRAM message is malformed: {0}")]
    Malformed(&'static str),
    #[error("the server's nonce does not extend ours")]
    NonceMismatch,
    #[error("the server refused the credentials: {0}")]
    Refused(String),
    #[error("the server's signature is wrong: it does not know the password")]
    BadServerSignature,
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA512, key);
    ring::hmac::sign(&k, data).as_ref().to_vec()
}

/// `=` and `,` escaped as RFC 5802's saslname wants.
fn sasl_name(user: &str) -> String {
    user.replace('=', "=3D").replace(',', "=2C")
}

impl ScramClient {
    /// Starts an exchange with a random client nonce.
    pub fn new(user: &str, password: &str) -> Self {
        let mut n = [0u8; 24];
        SystemRandom::new()
            .fill(&mut n)
            .expect("the OS random generator works");
        Self::with_nonce(
            user,
            password,
            &base64::engine::general_purpose::STANDARD_NO_PAD.encode(n),
        )
    }

    fn with_nonce(user: &str, password: &str, nonce: &str) -> Self {
        Self {
            user: user.to_string(),
            password: password.to_string(),
            client_nonce: nonce.to_string(),
            client_first_bare: format!("n={},r={nonce}", sasl_name(user)),
            server_check: None,
        }
    }

    /// The client-first message.
    pub fn client_first(&self) -> Vec<u8> {
        format!("n,,{}", self.client_first_bare).into_bytes()
    }

    /// The client-final message answering the server-first message.
    ///
    /// # Errors
    /// A malformed server message or a nonce that is not ours.
    pub fn client_final(&mut self, server_first: &[u8]) -> Result<Vec<u8>, ScramError> {
        let sf =
            std::str::from_utf8(server_first).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let mut nonce = None;
        let mut salt = None;
        let mut iterations = None;
        for part in sf.split(',') {
            match part.split_at_checked(2) {
                Some(("r=", v)) => nonce = Some(v),
                Some(("s=", v)) => salt = Some(v),
                Some(("i=", v)) => iterations = v.parse::<i32>().ok(),
                Some(("e=", v)) => return Err(ScramError::Refused(v.to_string())),
                _ => {}
            }
        }
        let nonce = nonce.ok_or(ScramError::Malformed("no nonce"))?;
        if !nonce.starts_with(&self.client_nonce) || nonce.len() == self.client_nonce.len() {
            return Err(ScramError::NonceMismatch);
        }
        let salt = base64::engine::general_purpose::STANDARD
            .decode(salt.ok_or(ScramError::Malformed("no salt"))?)
            .map_err(|_| ScramError::Malformed("salt is not base64"))?;
        let iterations = iterations
            .filter(|i| (1..=1_000_000).contains(i))
            .ok_or(ScramError::Malformed("bad iteration count"))?;
        let salted = Credential::with_salt(&self.password, salt, iterations).salted_password;
        let client_key = hmac(&salted, b"Client Key");
        let stored_key = ring::digest::digest(&ring::digest::SHA512, &client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{sf},{without_proof}", self.client_first_bare);
        let signature = hmac(stored_key.as_ref(), auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        let server_key = hmac(&salted, b"Server Key");
        self.server_check = Some((server_key, auth_message.into_bytes()));
        Ok(format!(
            "{without_proof},p={}",
            base64::engine::general_purpose::STANDARD.encode(proof)
        )
        .into_bytes())
    }

    /// Checks the server-final message: the server proves it knew the
    /// credential.
    ///
    /// # Errors
    /// A refusal (`e=`), or a signature that does not match.
    pub fn verify_server_final(&self, server_final: &[u8]) -> Result<(), ScramError> {
        let s =
            std::str::from_utf8(server_final).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        if let Some(e) = s.strip_prefix("e=") {
            return Err(ScramError::Refused(e.to_string()));
        }
        let v = s
            .split(',')
            .find_map(|p| p.strip_prefix("v="))
            .ok_or(ScramError::Malformed("no server signature"))?;
        let v = base64::engine::general_purpose::STANDARD
            .decode(v)
            .map_err(|_| ScramError::Malformed("signature is not base64"))?;
        let (server_key, auth_message) = self
            .server_check
            .as_ref()
            .ok_or(ScramError::Malformed("server-final before server-first"))?;
        // hmac::verify compares in constant time.
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA512, server_key);
        ring::hmac::verify(&key, auth_message, &v).map_err(|_| ScramError::BadServerSignature)
    }

    /// The user name (for errors).
    pub fn user(&self) -> &str {
        &self.user
    }
}

#[cfg(test)]
mod client_tests {
    use super::*;

    /// Plays the server of RFC 5802 with a stored credential.
    fn server(
        cred: &Credential,
        client_first: &[u8],
        client_final: &[u8],
        server_nonce: &str,
    ) -> (String, Result<String, ()>) {
        let cf = std::str::from_utf8(client_first).expect("utf8");
        let bare = cf.strip_prefix("n,,").expect("gs2 header");
        let cnonce = bare
            .split(',')
            .find_map(|p| p.strip_prefix("r="))
            .expect("nonce");
        let nonce = format!("{cnonce}{server_nonce}");
        let sf = format!(
            "r={nonce},s={},i={}",
            base64::engine::general_purpose::STANDARD.encode(&cred.salt),
            cred.iterations
        );
        let fin = std::str::from_utf8(client_final).expect("utf8");
        let (without_proof, proof) = fin.rsplit_once(",p=").expect("proof");
        let auth = format!("{bare},{sf},{without_proof}");
        let client_key = hmac(&cred.salted_password, b"Client Key");
        let stored = ring::digest::digest(&ring::digest::SHA512, &client_key);
        let sig = hmac(stored.as_ref(), auth.as_bytes());
        let proof = base64::engine::general_purpose::STANDARD
            .decode(proof)
            .expect("b64");
        let recovered: Vec<u8> = proof.iter().zip(&sig).map(|(a, b)| a ^ b).collect();
        let ok =
            ring::digest::digest(&ring::digest::SHA512, &recovered).as_ref() == stored.as_ref();
        let server_key = hmac(&cred.salted_password, b"Server Key");
        let v =
            base64::engine::general_purpose::STANDARD.encode(hmac(&server_key, auth.as_bytes()));
        (sf, if ok { Ok(format!("v={v}")) } else { Err(()) })
    }

    #[test]
    fn a_scram_exchange_proves_the_password_both_ways() {
        let cred = Credential::with_salt("s3cret", b"0123456789abcdef".to_vec(), 4096);
        let mut c = ScramClient::with_nonce("admin,x", "s3cret", "cnonce");
        assert_eq!(c.client_first(), b"n,,n=admin=2Cx,r=cnonce");
        // The server-first message depends only on the client-first one.
        let sf = server(&cred, &c.client_first(), b"c=biws,r=x,p=AA==", "snonce").0;
        let fin = c.client_final(sf.as_bytes()).expect("final");
        let (_, answer) = server(&cred, &c.client_first(), &fin, "snonce");
        let answer = answer.expect("the server accepts the proof");
        c.verify_server_final(answer.as_bytes())
            .expect("server verified");
        assert_eq!(
            c.verify_server_final(b"v=AAAA"),
            Err(ScramError::BadServerSignature)
        );
        assert_eq!(
            c.verify_server_final(b"e=invalid-proof"),
            Err(ScramError::Refused("invalid-proof".into()))
        );

        let mut wrong = ScramClient::with_nonce("admin,x", "not-it", "cnonce");
        let fin = wrong.client_final(sf.as_bytes()).expect("final");
        assert!(
            server(&cred, &wrong.client_first(), &fin, "snonce")
                .1
                .is_err()
        );
    }

    #[test]
    fn a_server_nonce_not_extending_ours_is_refused() {
        let mut c = ScramClient::with_nonce("u", "p", "abc");
        assert_eq!(
            c.client_final(b"r=xyz123,s=AAAA,i=4096"),
            Err(ScramError::NonceMismatch)
        );
        assert_eq!(
            c.client_final(b"r=abc,s=AAAA,i=4096"),
            Err(ScramError::NonceMismatch)
        );
        assert_eq!(
            c.client_final(b"r=abcd,s=AAAA,i=0"),
            Err(ScramError::Malformed("bad iteration count"))
        );
    }
}
