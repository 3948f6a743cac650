//! The ENS OpenAPI client: signed RPC calls with retries, a per-account rate limit and
//! call statistics. Knows nothing of load balancers; `api.rs` names the actions.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use rand::rngs::{SmallRng, SysRng};
use rand::{RngExt, SeedableRng};
use rustls::pki_types::CertificateDer;

use super::credentials::Credentials;
use super::sign;

/// The API version every call names.
pub const VERSION: &str = "2017-11-10";

/// Where and how to call.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// `https://host[:port]` (the cloud; the server certificate is verified against the
    /// system's roots and [`ClientConfig::extra_roots`]) or `http://host[:port]` (the
    /// emulator, a local proxy). Default: `https://ens.aliyuncs.com`.
    pub endpoint: String,
    /// Certificate authorities trusted besides the system's (DER), for a private endpoint.
    pub extra_roots: Vec<CertificateDer<'static>>,
    pub timeout: Duration,
    pub retry: RetryPolicy,
    /// Calls per second for this account (a token bucket shared by every call of the client).
    pub rate_per_sec: f64,
    pub burst: u32,
    /// Describe page size (ENS accepts up to 100).
    pub page_size: u32,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            endpoint: "https://ens.aliyuncs.com".into(),
            extra_roots: Vec::new(),
            timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            // The ELB actions allow 5 to 10 calls per second per user (API reference).
            rate_per_sec: 5.0,
            burst: 5,
            page_size: 50,
        }
    }
}

/// Exponential backoff with full jitter: attempt n waits a random time in
/// `[0, min(max, base * 2^n)]`.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base: Duration,
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            base: Duration::from_millis(200),
            max: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    fn delay(&self, attempt: u32) -> Duration {
        let cap = self
            .base
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.max);
        let nanos = cap.as_nanos().min(u128::from(u64::MAX)) as u64;
        Duration::from_nanos(rng().random_range(0..=nanos))
    }
}

/// A failed call. The message never carries credentials.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum EnsError {
    #[error("{action}: {code} (HTTP {status}): {message} [RequestId {request_id}]")]
    Api {
        action: String,
        status: u16,
        code: String,
        message: String,
        request_id: String,
    },
    #[error("{action}: no answer within {timeout:?}")]
    Timeout { action: String, timeout: Duration },
    #[error("{action}: {detail}")]
    Transport { action: String, detail: String },
    #[error("{action}: unexpected answer: {detail}")]
    Decode { action: String, detail: String },
    #[error("bad endpoint {endpoint:?}: {detail}")]
    Endpoint { endpoint: String, detail: String },
}

impl EnsError {
    /// The cloud's error code, if it answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            EnsError::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Throttling, 5xx, timeouts and dropped connections are worth another try.
    pub fn retryable(&self) -> bool {
        match self {
            EnsError::Api { status, code, .. } => {
                *status >= 500 || code.starts_with("Throttling") || code == "ServiceUnavailable"
            }
            EnsError::Timeout { .. } | EnsError::Transport { .. } => true,
            EnsError::Decode { .. } | EnsError::Endpoint { .. } => false,
        }
    }

    /// Not found (the instance is gone): a delete is then done.
    pub fn not_found(&self) -> bool {
        self.code()
            .is_some_and(|c| c.contains("NotFound") || c.contains("NotExist"))
    }
}

/// Calls, errors and time per action (for metrics and the bench).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ActionStats {
    /// HTTP requests sent, retries included.
    pub requests: u64,
    /// Calls that succeeded (after retries).
    pub ok: u64,
    /// Calls that failed for good.
    pub failed: u64,
    /// Requests answered with an error that was retried.
    pub retried: u64,
    pub total_latency: Duration,
}

struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Signed ENS calls for one account.
#[derive(Clone)]
pub struct EnsClient {
    config: ClientConfig,
    credentials: Credentials,
    http: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    bucket: Arc<Mutex<Bucket>>,
    stats: Arc<Mutex<BTreeMap<String, ActionStats>>>,
}

impl std::fmt::Debug for EnsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnsClient")
            .field("endpoint", &self.config.endpoint)
            .field("credentials", &self.credentials)
            .finish()
    }
}

impl EnsClient {
    pub fn new(config: ClientConfig, credentials: Credentials) -> Result<EnsClient, EnsError> {
        let uri: http::Uri = config
            .endpoint
            .parse()
            .map_err(|e: http::uri::InvalidUri| EnsError::Endpoint {
                endpoint: config.endpoint.clone(),
                detail: e.to_string(),
            })?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(EnsError::Endpoint {
                endpoint: config.endpoint.clone(),
                detail: "expected https://host[:port] or http://host[:port]".into(),
            });
        }
        let tls = tls_config(&config.extra_roots).map_err(|detail| EnsError::Endpoint {
            endpoint: config.endpoint.clone(),
            detail,
        })?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        let http = Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector);
        let bucket = Bucket {
            tokens: f64::from(config.burst.max(1)),
            last: Instant::now(),
        };
        Ok(EnsClient {
            config,
            credentials,
            http,
            bucket: Arc::new(Mutex::new(bucket)),
            stats: Arc::default(),
        })
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// A copy of the per-action statistics.
    pub fn stats(&self) -> BTreeMap<String, ActionStats> {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// One action with retries; the JSON body of the success.
    pub async fn call(
        &self,
        action: &str,
        params: &[(&str, String)],
    ) -> Result<serde_json::Value, EnsError> {
        let started = Instant::now();
        let mut attempt = 0;
        let result = loop {
            self.take_token().await;
            self.count(action, |s| s.requests += 1);
            match self.once(action, params).await {
                Ok(v) => break Ok(v),
                Err(e) if e.retryable() && attempt + 1 < self.config.retry.max_attempts => {
                    self.count(action, |s| s.retried += 1);
                    let wait = self.config.retry.delay(attempt);
                    tracing::debug!(action, error = %e, ?wait, "retrying cloud call");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Err(e) => break Err(e),
            }
        };
        let elapsed = started.elapsed();
        self.count(action, |s| {
            s.total_latency += elapsed;
            if result.is_ok() {
                s.ok += 1
            } else {
                s.failed += 1
            }
        });
        result
    }

    fn count(&self, action: &str, f: impl FnOnce(&mut ActionStats)) {
        if let Ok(mut s) = self.stats.lock() {
            f(s.entry(action.to_string()).or_default());
        }
    }

    /// Waits for a token of the account's bucket.
    async fn take_token(&self) {
        loop {
            let wait = {
                let Ok(mut b) = self.bucket.lock() else {
                    return;
                };
                let now = Instant::now();
                let rate = self.config.rate_per_sec.max(0.001);
                let refill = now.duration_since(b.last).as_secs_f64() * rate;
                b.tokens = (b.tokens + refill).min(f64::from(self.config.burst.max(1)));
                b.last = now;
                if b.tokens >= 1.0 {
                    b.tokens -= 1.0;
                    return;
                }
                Duration::from_secs_f64((1.0 - b.tokens) / rate)
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// The signed query of one request (fresh nonce and timestamp).
    fn signed_query(&self, action: &str, params: &[(&str, String)]) -> String {
        let mut all: BTreeMap<String, String> = params
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        let nonce: u128 = rng().random();
        for (k, v) in [
            ("Action", action.to_string()),
            ("Version", VERSION.to_string()),
            ("Format", "JSON".to_string()),
            ("AccessKeyId", self.credentials.access_key_id().to_string()),
            ("SignatureMethod", "HMAC-SHA1".to_string()),
            ("SignatureVersion", "1.0".to_string()),
            ("SignatureNonce", format!("{nonce:032x}")),
            ("Timestamp", sign::format_timestamp(SystemTime::now())),
        ] {
            all.insert(k.to_string(), v);
        }
        let signature = sign::signature(self.credentials.secret(), "POST", &all);
        format!(
            "{}&Signature={}",
            sign::canonical_query(&all),
            sign::percent_encode(&signature)
        )
    }

    async fn once(
        &self,
        action: &str,
        params: &[(&str, String)],
    ) -> Result<serde_json::Value, EnsError> {
        let uri = format!(
            "{}/?{}",
            self.config.endpoint.trim_end_matches('/'),
            self.signed_query(action, params)
        );
        let req = http::Request::post(uri)
            .body(Full::new(Bytes::new()))
            .map_err(|e| EnsError::Transport {
                action: action.into(),
                detail: e.to_string(),
            })?;
        let timeout = self.config.timeout;
        let exchange = async {
            let resp = self
                .http
                .request(req)
                .await
                .map_err(|e| EnsError::Transport {
                    action: action.into(),
                    detail: format!("{e:?}"),
                })?;
            let status = resp.status().as_u16();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| EnsError::Transport {
                    action: action.into(),
                    detail: e.to_string(),
                })?;
            Ok::<_, EnsError>((status, body.to_bytes()))
        };
        let (status, body) = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| EnsError::Timeout {
                action: action.into(),
                timeout,
            })??;
        let value: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
            if status >= 500 {
                EnsError::Api {
                    action: action.into(),
                    status,
                    code: "InternalError".into(),
                    message: String::from_utf8_lossy(&body).chars().take(200).collect(),
                    request_id: String::new(),
                }
            } else {
                EnsError::Decode {
                    action: action.into(),
                    detail: e.to_string(),
                }
            }
        })?;
        if (200..300).contains(&status) {
            return Ok(value);
        }
        let field = |k: &str| {
            value
                .get(k)
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string()
        };
        Err(EnsError::Api {
            action: action.into(),
            status,
            code: field("Code"),
            message: field("Message"),
            request_id: field("RequestId"),
        })
    }
}

/// TLS as the cloud's endpoints need it: the system's roots (a missing or unreadable store
/// leaves only `extra`; no roots at all is an error, not an unverified connection) and
/// `extra`, with ring as everywhere else in the workspace.
fn tls_config(extra: &[CertificateDer<'static>]) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        // A system root rustls cannot parse is skipped, as browsers do.
        let _ = roots.add(cert);
    }
    for cert in extra {
        roots
            .add(cert.clone())
            .map_err(|e| format!("extra root certificate: {e}"))?;
    }
    if roots.is_empty() {
        return Err("no trusted root certificates (system store empty, no extra roots)".into());
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
}

/// A fresh generator seeded by the OS (nonces and jitter need no cryptographic strength, but
/// must differ between processes started at the same instant).
pub(crate) fn rng() -> SmallRng {
    SmallRng::try_from_rng(&mut SysRng).unwrap_or_else(|_| {
        let nanos = SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        SmallRng::seed_from_u64(nanos ^ u64::from(std::process::id()))
    })
}
