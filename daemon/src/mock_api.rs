//! Test support: a real `kube::Client` over `tower_test::mock::pair`, and a scripted API
//! server that asserts each call's method, URL and body, answers it, and fails the test if
//! an expected call never comes (STYLE.md, "API tests").

use std::time::Duration;

use http::{Request, Response, StatusCode};
use kube::client::Body;
use kube::Client;
use serde_json::Value;
use tower_test::mock::{self, Handle};

/// Checks a request body.
type BodyCheck = Box<dyn Fn(&Value) + Send>;

/// One expected call and its answer.
pub struct Call {
    /// `GET`, `PATCH`, ...
    pub method: &'static str,
    /// Path and query, e.g. `/api/v1/namespaces/default/services/web/status?&force=true&fieldManager=edgelb`.
    pub uri: String,
    /// Checks the JSON body (None: no body expected or not checked).
    pub body: Option<BodyCheck>,
    /// Status of the answer.
    pub status: u16,
    /// Body of the answer.
    pub reply: Value,
    /// How long the server takes to answer (a client's timeout may end first).
    pub delay: Duration,
}

impl Call {
    /// A call without a checked body.
    pub fn new(method: &'static str, uri: impl Into<String>, status: u16, reply: Value) -> Call {
        Call {
            method,
            uri: uri.into(),
            body: None,
            status,
            reply,
            delay: Duration::ZERO,
        }
    }

    /// A call answered only after `delay`.
    pub fn after(mut self, delay: Duration) -> Call {
        self.delay = delay;
        self
    }

    /// A call whose body must equal `want`.
    pub fn with_body(mut self, want: Value) -> Call {
        self.body = Some(Box::new(move |got: &Value| {
            assert_eq!(got, &want, "request body")
        }));
        self
    }

    /// A call whose body is checked by `check`.
    pub fn check_body(mut self, check: impl Fn(&Value) + Send + 'static) -> Call {
        self.body = Some(Box::new(check));
        self
    }
}

/// A Kubernetes `Status` error body.
pub fn status_error(code: u16, reason: &str) -> Value {
    serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": reason, "reason": reason, "code": code})
}

/// A client and the task that serves `calls` in order. Await the task to assert every call
/// came; it panics (failing the test) on a mismatch or a missing call.
pub fn scripted(calls: Vec<Call>) -> (Client, tokio::task::JoinHandle<()>) {
    let (svc, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(svc, "default");
    (client, tokio::spawn(serve(handle, calls)))
}

async fn serve(mut handle: Handle<Request<Body>, Response<Body>>, calls: Vec<Call>) {
    for (i, call) in calls.into_iter().enumerate() {
        let next = tokio::time::timeout(Duration::from_secs(10), handle.next_request()).await;
        let (req, send) = next
            .unwrap_or_else(|_| panic!("call {i} ({} {}) never came", call.method, call.uri))
            .unwrap_or_else(|| {
                panic!(
                    "client dropped before call {i} ({} {})",
                    call.method, call.uri
                )
            });
        assert_eq!(req.method().as_str(), call.method, "call {i} method");
        let uri = req
            .uri()
            .path_and_query()
            .map(ToString::to_string)
            .unwrap_or_default();
        assert_eq!(uri, call.uri, "call {i} URL");
        let bytes = req.into_body().collect_bytes().await.expect("request body");
        if let Some(check) = &call.body {
            let got: Value = serde_json::from_slice(&bytes).expect("request body is JSON");
            check(&got);
        }
        tokio::time::sleep(call.delay).await;
        let resp = Response::builder()
            .status(StatusCode::from_u16(call.status).expect("status"))
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&call.reply).expect("reply")))
            .expect("response");
        send.send_response(resp);
    }
}
