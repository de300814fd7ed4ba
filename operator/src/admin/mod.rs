//! A small Kafka Admin client: one TCP connection to a bootstrap address,
//! version negotiation through ApiVersions, and the admin calls the
//! controllers make. Requests are built by pure functions in [`requests`]
//! so their shape is unit-tested without a broker.
//!
//! The connection is plaintext TCP (no TLS yet), optionally authenticated
//! with SASL SCRAM-SHA-512 as the operator's admin identity
//! ([`AdminCredentials`]).

pub mod reassign;
pub mod requests;
pub mod scram;

use std::collections::HashMap;
use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a connect or one request may take.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest response the client accepts (a Metadata answer of a big cluster
/// fits easily).
const MAX_RESPONSE: usize = 64 * 1024 * 1024;

/// Errors of the admin client. None carries a credential.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("talking to {addr}: {reason}")]
    Io { addr: String, reason: String },
    #[error("the broker does not support {api} (versions {ours})")]
    Unsupported { api: &'static str, ours: String },
    #[error("cannot encode or decode {api}: {reason}")]
    Codec { api: &'static str, reason: String },
    #[error("SASL SCRAM-SHA-512 authentication as {user:?} at {addr} failed: {reason}")]
    Auth {
        addr: String,
        user: String,
        reason: String,
    },
    #[error("{api} failed: {code_name} ({code}){}", message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Kafka {
        api: &'static str,
        code: i16,
        code_name: &'static str,
        message: Option<String>,
    },
}

impl AdminError {
    /// Builds a [`AdminError::Kafka`] from an error code and message.
    pub fn kafka(api: &'static str, code: i16, message: Option<&StrBytes>) -> Self {
        Self::Kafka {
            api,
            code,
            code_name: error_name(code),
            message: message.map(|m| m.to_string()).filter(|m| !m.is_empty()),
        }
    }

    /// True when the brokers could not be reached at all: the resource's
    /// condition says `ClusterUnreachable` and the retry backs off.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Connect { .. } | Self::Io { .. })
    }

    /// The condition reason (PascalCase) of this error.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Connect { .. } | Self::Io { .. } => "ClusterUnreachable",
            Self::Unsupported { .. } => "UnsupportedByBroker",
            Self::Codec { .. } => "ProtocolError",
            Self::Auth { .. } => "AdminAuthenticationFailed",
            Self::Kafka { .. } => "KafkaError",
        }
    }
}

/// Kafka error codes the operator names; others print as their number.
pub fn error_name(code: i16) -> &'static str {
    match code {
        0 => "NONE",
        3 => "UNKNOWN_TOPIC_OR_PARTITION",
        7 => "REQUEST_TIMED_OUT",
        29 => "TOPIC_AUTHORIZATION_FAILED",
        31 => "CLUSTER_AUTHORIZATION_FAILED",
        33 => "UNSUPPORTED_SASL_MECHANISM",
        34 => "ILLEGAL_SASL_STATE",
        35 => "UNSUPPORTED_VERSION",
        36 => "TOPIC_ALREADY_EXISTS",
        37 => "INVALID_PARTITIONS",
        38 => "INVALID_REPLICATION_FACTOR",
        39 => "INVALID_REPLICA_ASSIGNMENT",
        40 => "INVALID_CONFIG",
        41 => "NOT_CONTROLLER",
        42 => "INVALID_REQUEST",
        44 => "POLICY_VIOLATION",
        54 => "SECURITY_DISABLED",
        58 => "SASL_AUTHENTICATION_FAILED",
        87 => "INVALID_RECORD",
        91 => "RESOURCE_NOT_FOUND",
        92 => "DUPLICATE_RESOURCE",
        93 => "UNACCEPTABLE_CREDENTIAL",
        60 => "REASSIGNMENT_IN_PROGRESS",
        85 => "NO_REASSIGNMENT_IN_PROGRESS",
        102 => "BROKER_ID_NOT_REGISTERED",
        _ => "KAFKA_ERROR",
    }
}

/// Well-known error codes.
pub mod codes {
    pub const NONE: i16 = 0;
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    pub const TOPIC_ALREADY_EXISTS: i16 = 36;
    /// ACL calls on a broker without an authorizer.
    pub const SECURITY_DISABLED: i16 = 54;
    pub const RESOURCE_NOT_FOUND: i16 = 91;
    pub const BROKER_ID_NOT_REGISTERED: i16 = 102;
}

/// The operator's admin identity: a SCRAM-SHA-512 user. `Debug` hides the
/// password.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminCredentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for AdminCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminCredentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// One connection to a broker.
pub struct AdminClient {
    addr: String,
    stream: TcpStream,
    correlation: i32,
    /// Broker's (min, max) version per API key.
    versions: HashMap<i16, (i16, i16)>,
}

impl std::fmt::Debug for AdminClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminClient")
            .field("addr", &self.addr)
            .finish()
    }
}

impl AdminClient {
    /// Connects to the first reachable address of a comma-separated
    /// bootstrap list and negotiates API versions.
    ///
    /// # Errors
    /// No address reachable, or ApiVersions failed.
    pub async fn connect(bootstrap: &str) -> Result<Self, AdminError> {
        Self::connect_with(bootstrap, None).await
    }

    /// Like [`AdminClient::connect`], authenticating with SASL
    /// SCRAM-SHA-512 when `credentials` are given.
    ///
    /// # Errors
    /// No address reachable, ApiVersions failed, or authentication failed.
    pub async fn connect_with(
        bootstrap: &str,
        credentials: Option<&AdminCredentials>,
    ) -> Result<Self, AdminError> {
        let mut last = AdminError::Connect {
            addr: bootstrap.to_string(),
            reason: "empty bootstrap address".to_string(),
        };
        for addr in bootstrap
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
        {
            match Self::connect_one(addr).await {
                Ok(mut c) => {
                    if let Some(cred) = credentials {
                        c.authenticate(cred).await?;
                    }
                    return Ok(c);
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    async fn connect_one(addr: &str) -> Result<Self, AdminError> {
        let stream = tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| AdminError::Connect {
                addr: addr.to_string(),
                reason: "timed out".to_string(),
            })?
            .map_err(|e| AdminError::Connect {
                addr: addr.to_string(),
                reason: e.to_string(),
            })?;
        stream.set_nodelay(true).ok();
        let mut client = Self {
            addr: addr.to_string(),
            stream,
            correlation: 0,
            versions: HashMap::new(),
        };
        // v0 has no tagged fields and every broker answers it; v3 adds the
        // client software name.
        let req = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("skiff-operator"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let version = 3;
        let resp = client
            .exchange::<ApiVersionsRequest>(&req, version, "ApiVersions")
            .await?;
        if resp.error_code != codes::NONE {
            return Err(AdminError::kafka("ApiVersions", resp.error_code, None));
        }
        client.versions = resp
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        Ok(client)
    }

    async fn authenticate(&mut self, cred: &AdminCredentials) -> Result<(), AdminError> {
        use kafka_protocol::messages::{SaslAuthenticateRequest, SaslHandshakeRequest};
        let addr = self.addr.clone();
        let auth_err = |reason: String| AdminError::Auth {
            addr: addr.clone(),
            user: cred.username.clone(),
            reason,
        };
        let (_, hs) = self
            .send(
                &SaslHandshakeRequest::default()
                    .with_mechanism(StrBytes::from_static_str("SCRAM-SHA-512")),
            )
            .await?;
        if hs.error_code != codes::NONE {
            return Err(auth_err(format!(
                "the listener does not offer SCRAM-SHA-512 ({})",
                error_name(hs.error_code)
            )));
        }
        let mut scram = scram::ScramClient::new(&cred.username, &cred.password);
        let step =
            |bytes: Vec<u8>| SaslAuthenticateRequest::default().with_auth_bytes(bytes.into());
        let (_, first) = self.send(&step(scram.client_first())).await?;
        if first.error_code != codes::NONE {
            return Err(auth_err(error_name(first.error_code).to_string()));
        }
        let fin = scram
            .client_final(&first.auth_bytes)
            .map_err(|e| auth_err(e.to_string()))?;
        let (_, last) = self.send(&step(fin)).await?;
        if last.error_code != codes::NONE {
            return Err(auth_err(format!(
                "{}{}",
                error_name(last.error_code),
                last.error_message
                    .as_ref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            )));
        }
        scram
            .verify_server_final(&last.auth_bytes)
            .map_err(|e| auth_err(e.to_string()))
    }

    /// The address this client talks to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The version of `R` both sides speak: the highest in both ranges.
    ///
    /// # Errors
    /// The broker does not list the API, or the ranges do not meet.
    pub fn version_of<R: Request>(&self) -> Result<i16, AdminError> {
        let api = api_name(R::KEY);
        let ours = R::VERSIONS;
        let unsupported = || AdminError::Unsupported {
            api,
            ours: format!("{}..={}", ours.min, ours.max),
        };
        let (bmin, bmax) = self
            .versions
            .get(&R::KEY)
            .copied()
            .ok_or_else(unsupported)?;
        let v = bmax.min(ours.max);
        if v < bmin.max(ours.min) {
            return Err(unsupported());
        }
        Ok(v)
    }

    /// True when the broker advertises `R`.
    pub fn supports<R: Request>(&self) -> bool {
        self.version_of::<R>().is_ok()
    }

    /// Sends `req` at the negotiated version and reads the answer.
    ///
    /// # Errors
    /// Unsupported API, I/O, or a frame that does not decode.
    pub async fn send<R: Request>(&mut self, req: &R) -> Result<(i16, R::Response), AdminError> {
        let v = self.version_of::<R>()?;
        let resp = self.exchange(req, v, api_name(R::KEY)).await?;
        Ok((v, resp))
    }

    async fn exchange<R: Request>(
        &mut self,
        req: &R,
        version: i16,
        api: &'static str,
    ) -> Result<R::Response, AdminError> {
        self.correlation = self.correlation.wrapping_add(1);
        let correlation = self.correlation;
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation)
            .with_client_id(Some(StrBytes::from_static_str("skiff-operator")));
        let codec = |reason: String| AdminError::Codec { api, reason };
        let mut body = BytesMut::new();
        header
            .encode(&mut body, R::header_version(version))
            .map_err(|e| codec(e.to_string()))?;
        req.encode(&mut body, version)
            .map_err(|e| codec(e.to_string()))?;
        let mut frame = BytesMut::with_capacity(body.len() + 4);
        frame.put_i32(i32::try_from(body.len()).map_err(|_| codec("request too large".into()))?);
        frame.extend_from_slice(&body);
        let addr = self.addr.clone();
        let io = |e: String| AdminError::Io {
            addr: addr.clone(),
            reason: e,
        };
        let answer = tokio::time::timeout(IO_TIMEOUT, async {
            self.stream.write_all(&frame).await?;
            let len = self.stream.read_i32().await?;
            let len = usize::try_from(len)
                .ok()
                .filter(|l| *l <= MAX_RESPONSE)
                .ok_or_else(|| std::io::Error::other(format!("bad response length {len}")))?;
            let mut buf = vec![0u8; len];
            self.stream.read_exact(&mut buf).await?;
            Ok::<_, std::io::Error>(buf)
        })
        .await
        .map_err(|_| io("request timed out".to_string()))?
        .map_err(|e| io(e.to_string()))?;
        let mut buf = bytes::Bytes::from(answer);
        let rh = ResponseHeader::decode(&mut buf, R::Response::header_version(version))
            .map_err(|e| codec(e.to_string()))?;
        if rh.correlation_id != correlation {
            return Err(io(format!(
                "correlation id {} instead of {correlation}",
                rh.correlation_id
            )));
        }
        let resp = R::Response::decode(&mut buf, version).map_err(|e| codec(e.to_string()))?;
        if buf.has_remaining() {
            tracing::debug!(api, left = buf.remaining(), "response has trailing bytes");
        }
        Ok(resp)
    }
}

/// The name of an API key, for errors.
pub fn api_name(key: i16) -> &'static str {
    match ApiKey::try_from(key) {
        Ok(ApiKey::Metadata) => "Metadata",
        Ok(ApiKey::ApiVersions) => "ApiVersions",
        Ok(ApiKey::CreateTopics) => "CreateTopics",
        Ok(ApiKey::DeleteTopics) => "DeleteTopics",
        Ok(ApiKey::CreatePartitions) => "CreatePartitions",
        Ok(ApiKey::DescribeConfigs) => "DescribeConfigs",
        Ok(ApiKey::IncrementalAlterConfigs) => "IncrementalAlterConfigs",
        Ok(ApiKey::AlterUserScramCredentials) => "AlterUserScramCredentials",
        Ok(ApiKey::DescribeUserScramCredentials) => "DescribeUserScramCredentials",
        Ok(ApiKey::CreateAcls) => "CreateAcls",
        Ok(ApiKey::DeleteAcls) => "DeleteAcls",
        Ok(ApiKey::DescribeAcls) => "DescribeAcls",
        Ok(ApiKey::AlterClientQuotas) => "AlterClientQuotas",
        Ok(ApiKey::DescribeClientQuotas) => "DescribeClientQuotas",
        _ => "an admin API",
    }
}
