//! The HTTP front: signature, timestamp and nonce checks, per-action throttling, injected
//! faults, then the action; and the `/control/*` endpoints tests use (register instances,
//! inject faults, set limits and delays, read the inventory).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use edgelb_cloud::ens::sign;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::{json, Value};

use crate::state::{ApiError, Instance, State};

/// The emulated account's AccessKey pair and how much clock skew it tolerates.
pub struct Auth {
    pub access_key_id: String,
    pub access_key_secret: String,
    /// `InvalidTimeStamp.Expired` beyond this (the gateway's 15 minutes by default).
    pub max_skew: Duration,
}

/// A fault the next matching requests get instead of (or after) the real work.
#[derive(Clone, Debug)]
pub struct Fault {
    /// An action name or `*`.
    pub action: String,
    pub kind: FaultKind,
    pub remaining: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// 500 InternalError; nothing done.
    Error500,
    /// 503 ServiceUnavailable; nothing done.
    Unavailable503,
    /// Throttling.User; nothing done.
    Throttle,
    /// The action is done, then 500 (the answer is lost).
    CommitThen500,
    /// The action is done, the answer comes after this long (past the client's timeout).
    Timeout(Duration),
}

struct Bucket {
    tokens: f64,
    last: Instant,
}

/// The emulator: state plus the gateway's checks.
pub struct Emu {
    pub state: Mutex<State>,
    auth: Auth,
    nonces: Mutex<HashMap<String, Instant>>,
    limits: Mutex<HashMap<String, (f64, f64)>>,
    buckets: Mutex<HashMap<String, Bucket>>,
    faults: Mutex<Vec<Fault>>,
    /// action -> code ("OK" or the error code) -> count
    stats: Mutex<BTreeMap<String, BTreeMap<String, u64>>>,
    seq: Mutex<u64>,
    pub changed: tokio::sync::Notify,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Emu {
    pub fn new(state: State, auth: Auth) -> Emu {
        Emu {
            state: Mutex::new(state),
            auth,
            nonces: Mutex::default(),
            limits: Mutex::default(),
            buckets: Mutex::default(),
            faults: Mutex::default(),
            stats: Mutex::default(),
            seq: Mutex::new(0),
            changed: tokio::sync::Notify::new(),
        }
    }

    /// `action` (or `*`) may be called `per_sec` times a second, `burst` at once.
    pub fn set_limit(&self, action: &str, per_sec: f64, burst: f64) {
        lock(&self.limits).insert(action.to_string(), (per_sec, burst.max(1.0)));
        lock(&self.buckets).clear();
    }

    pub fn add_fault(&self, f: Fault) {
        lock(&self.faults).push(f);
    }

    fn request_id(&self) -> String {
        let mut s = lock(&self.seq);
        *s += 1;
        format!("EMU-{:012}", *s)
    }

    fn count(&self, action: &str, code: &str) {
        *lock(&self.stats)
            .entry(action.to_string())
            .or_default()
            .entry(code.to_string())
            .or_default() += 1;
    }

    /// Per-account, per-action token bucket (`*` applies to actions without their own).
    fn throttled(&self, action: &str) -> bool {
        let limits = lock(&self.limits);
        let Some(&(rate, burst)) = limits.get(action).or_else(|| limits.get("*")) else {
            return false;
        };
        drop(limits);
        let mut buckets = lock(&self.buckets);
        let now = Instant::now();
        let b = buckets.entry(action.to_string()).or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.last).as_secs_f64() * rate).min(burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            false
        } else {
            true
        }
    }

    fn take_fault(&self, action: &str) -> Option<FaultKind> {
        let mut faults = lock(&self.faults);
        let f = faults
            .iter_mut()
            .find(|f| f.remaining > 0 && (f.action == action || f.action == "*"))?;
        f.remaining -= 1;
        Some(f.kind.clone())
    }

    /// The gateway's checks, in the order a forged request learns least from.
    fn authenticate(&self, method: &str, p: &BTreeMap<String, String>) -> Result<(), ApiError> {
        for k in [
            "AccessKeyId",
            "Signature",
            "SignatureNonce",
            "Timestamp",
            "Action",
            "Version",
        ] {
            if p.get(k).is_none_or(|v| v.is_empty()) {
                return Err(ApiError::missing(k));
            }
        }
        if p["AccessKeyId"] != self.auth.access_key_id {
            return Err(ApiError::new(
                404,
                "InvalidAccessKeyId.NotFound",
                "Specified access key is not found.",
            ));
        }
        if p.get("SignatureMethod").is_some_and(|m| m != "HMAC-SHA1")
            || p.get("SignatureVersion").is_some_and(|v| v != "1.0")
        {
            return Err(ApiError::invalid("SignatureMethod"));
        }
        let ts = sign::parse_timestamp(&p["Timestamp"]).ok_or_else(|| {
            ApiError::new(
                400,
                "InvalidTimeStamp.Format",
                "Specified time stamp or date value is not well formatted.",
            )
        })?;
        let now = SystemTime::now();
        let skew = now
            .duration_since(ts)
            .or_else(|_| ts.duration_since(now))
            .unwrap_or_default();
        if skew > self.auth.max_skew {
            return Err(ApiError::new(
                400,
                "InvalidTimeStamp.Expired",
                "Specified time stamp or date value is expired.",
            ));
        }
        if !sign::verify(&self.auth.access_key_secret, method, p, &p["Signature"]) {
            return Err(ApiError::new(
                400,
                "SignatureDoesNotMatch",
                "Specified signature is not matched with our calculation.",
            ));
        }
        let mut nonces = lock(&self.nonces);
        let keep = self.auth.max_skew * 2;
        let now_i = Instant::now();
        nonces.retain(|_, at| now_i.duration_since(*at) < keep);
        if nonces.insert(p["SignatureNonce"].clone(), now_i).is_some() {
            return Err(ApiError::new(
                400,
                "SignatureNonceUsed",
                "Specified signature nonce was used already.",
            ));
        }
        if p["Version"] != edgelb_cloud::ens::client::VERSION {
            return Err(ApiError::new(
                400,
                "InvalidParameter",
                "The specified parameter \"Action or Version\" is not valid.",
            ));
        }
        Ok(())
    }

    /// One API request: (HTTP status, JSON body).
    pub async fn api(&self, method: &str, p: BTreeMap<String, String>) -> (u16, Value) {
        let request_id = self.request_id();
        let action = p.get("Action").cloned().unwrap_or_default();
        let result = self.api_inner(method, &action, &p).await;
        match result {
            Ok(mut v) => {
                self.count(&action, "OK");
                v["RequestId"] = json!(request_id);
                (200, v)
            }
            Err(e) => {
                self.count(&action, &e.code);
                tracing::debug!(action, code = %e.code, "emulated error");
                (
                    e.status,
                    json!({"RequestId": request_id, "HostId": "ens.emulator.local",
                    "Code": e.code, "Message": e.message}),
                )
            }
        }
    }

    async fn api_inner(
        &self,
        method: &str,
        action: &str,
        p: &BTreeMap<String, String>,
    ) -> Result<Value, ApiError> {
        self.authenticate(method, p)?;
        if self.throttled(action) {
            return Err(ApiError::new(
                400,
                "Throttling.User",
                "Request was denied due to user flow control.",
            ));
        }
        let fault = self.take_fault(action);
        match fault {
            Some(FaultKind::Error500) => {
                return Err(ApiError::new(
                    500,
                    "InternalError",
                    "The request processing has failed due to some unknown error.",
                ))
            }
            Some(FaultKind::Unavailable503) => {
                return Err(ApiError::new(
                    503,
                    "ServiceUnavailable",
                    "The request has failed due to a temporary failure of the server.",
                ))
            }
            Some(FaultKind::Throttle) => {
                return Err(ApiError::new(
                    400,
                    "Throttling.User",
                    "Request was denied due to user flow control.",
                ))
            }
            _ => {}
        }
        let result = lock(&self.state).handle(action, p, Instant::now());
        self.changed.notify_waiters();
        match fault {
            Some(FaultKind::CommitThen500) => Err(ApiError::new(
                500,
                "InternalError",
                "The request processing has failed due to some unknown error.",
            )),
            Some(FaultKind::Timeout(d)) => {
                tokio::time::sleep(d).await;
                result
            }
            _ => result,
        }
    }

    /// `/control/...`: test-only endpoints, unsigned.
    fn control(&self, method: &str, path: &str, body: &[u8]) -> Result<Value, String> {
        let v: Value = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?
        };
        let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(String::from);
        match (method, path) {
            ("POST", "/control/instances") => {
                let list = v.as_array().ok_or("expected a JSON array")?;
                let mut st = lock(&self.state);
                for i in list {
                    let id = s(i, "InstanceId").ok_or("InstanceId missing")?;
                    let ip = s(i, "Ip")
                        .ok_or("Ip missing")?
                        .parse()
                        .map_err(|_| "Ip is not IPv4")?;
                    let running = i.get("Running").and_then(Value::as_bool).unwrap_or(true);
                    st.instances.insert(id, Instance { ip, running });
                }
                Ok(json!({}))
            }
            ("POST", "/control/faults") => {
                let kind = match s(&v, "Kind").as_deref() {
                    Some("500") => FaultKind::Error500,
                    Some("503") => FaultKind::Unavailable503,
                    Some("throttle") => FaultKind::Throttle,
                    Some("commit-then-500") => FaultKind::CommitThen500,
                    Some("timeout") => FaultKind::Timeout(Duration::from_millis(
                        v.get("DelayMs").and_then(Value::as_u64).unwrap_or(3000),
                    )),
                    other => return Err(format!("unknown Kind {other:?}")),
                };
                self.add_fault(Fault {
                    action: s(&v, "Action").unwrap_or_else(|| "*".into()),
                    kind,
                    remaining: v.get("Count").and_then(Value::as_u64).unwrap_or(1) as u32,
                });
                Ok(json!({}))
            }
            ("POST", "/control/throttle") => {
                let rate = v
                    .get("PerSecond")
                    .and_then(Value::as_f64)
                    .ok_or("PerSecond missing")?;
                let burst = v.get("Burst").and_then(Value::as_f64).unwrap_or(rate);
                self.set_limit(&s(&v, "Action").unwrap_or_else(|| "*".into()), rate, burst);
                Ok(json!({}))
            }
            ("POST", "/control/delays") => {
                let mut st = lock(&self.state);
                if let Some(ms) = v.get("CreateMs").and_then(Value::as_u64) {
                    st.create_delay = Duration::from_millis(ms);
                }
                if let Some(ms) = v.get("TransitionMs").and_then(Value::as_u64) {
                    st.transition_delay = Duration::from_millis(ms);
                }
                Ok(json!({}))
            }
            ("GET", "/control/inventory") => Ok(lock(&self.state).inventory(Instant::now())),
            ("GET", "/control/stats") => Ok(json!(*lock(&self.stats))),
            _ => Err(format!("no control endpoint {method} {path}")),
        }
    }
}

fn parse_pairs(s: &str, into: &mut BTreeMap<String, String>) -> Result<(), String> {
    for pair in s.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = sign::percent_decode(k).ok_or_else(|| format!("bad escape in {k:?}"))?;
        let v = sign::percent_decode(v).ok_or_else(|| format!("bad escape in {v:?}"))?;
        into.insert(k, v);
    }
    Ok(())
}

fn respond(status: u16, v: &Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

async fn serve_one(emu: Arc<Emu>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return respond(
                400,
                &json!({"Code": "InvalidBody", "Message": e.to_string()}),
            )
        }
    };
    if path.starts_with("/control/") {
        return match emu.control(&method, &path, &body) {
            Ok(v) => respond(200, &v),
            Err(e) => respond(400, &json!({"Code": "BadControl", "Message": e})),
        };
    }
    let mut params = BTreeMap::new();
    let parsed = parse_pairs(&query, &mut params)
        .and_then(|_| parse_pairs(std::str::from_utf8(&body).unwrap_or(""), &mut params));
    if let Err(e) = parsed {
        return respond(400, &json!({"Code": "InvalidParameter", "Message": e}));
    }
    let (status, v) = emu.api(&method, params).await;
    respond(status, &v)
}

/// Serves the API on `listener` until the task is dropped.
pub async fn serve(emu: Arc<Emu>, listener: tokio::net::TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let emu = emu.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let emu = emu.clone();
                async move { Ok::<_, std::convert::Infallible>(serve_one(emu, req).await) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, svc)
                .await
            {
                tracing::debug!(error = %e, "connection ended");
            }
        });
    }
}

/// The address a test reads from the emulator's first stdout line.
pub fn announce(addr: SocketAddr) -> String {
    format!("listening on {addr}")
}
