//! Where a view comes from: the local speaker's Unix socket, or another node's speaker
//! through the Kubernetes API's pod proxy
//! (`GET /api/v1/namespaces/NS/pods/https:POD:PORT/proxy/v1/view`, the speaker's TLS view
//! port), which needs `list` on `pods` (to find the node's speaker pod) and `get` on
//! `pods/proxy` in the speaker's namespace — no port-forward, no exec, and nothing reaches
//! the node's network from outside the API server. The API server does not pass the
//! caller's identity through its proxy (it removes `Authorization`), so edgelbctl also sends
//! its bearer token in `X-Edgelb-Authorization`; the speaker has the API server review it
//! (TokenReview, then SubjectAccessReview for that same `get` on `pods/proxy`).

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use edgelb_view::LocalView;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

/// Labels of the speaker's pods (deploy/manifests/20-speaker.yaml).
pub const SPEAKER_LABELS: &str =
    "app.kubernetes.io/name=edgelb,app.kubernetes.io/component=speaker";

/// What `--node` needs in the speaker's namespace, for error messages and the README.
pub const NODE_GRANTS: &str = "`list` on `pods` and `get` on `pods/proxy`";

/// The view of the speaker on this machine.
pub async fn from_socket(socket: &Path, timeout: Duration) -> anyhow::Result<LocalView> {
    Ok(crate::socket::view(socket, timeout).await?)
}

/// The pod-proxy path of a speaker pod's view (`https:`: the view port serves TLS).
pub fn proxy_path(namespace: &str, pod: &str, port: u16) -> String {
    format!("/api/v1/namespaces/{namespace}/pods/https:{pod}:{port}/proxy/v1/view")
}

/// The bearer token to show the speaker: `--token-file`, else the kubeconfig's token or
/// token file (in a pod: the ServiceAccount's).
pub async fn bearer_token(token_file: Option<&Path>) -> anyhow::Result<String> {
    use secrecy::ExposeSecret;
    let read = |path: &Path| -> anyhow::Result<String> {
        let t = std::fs::read_to_string(path)
            .with_context(|| format!("reading the token file {}", path.display()))?;
        Ok(t.trim().to_string())
    };
    if let Some(path) = token_file {
        return read(path);
    }
    let config = kube::Config::infer()
        .await
        .context("reading the kubeconfig")?;
    if let Some(t) = &config.auth_info.token {
        return Ok(t.expose_secret().trim().to_string());
    }
    if let Some(path) = &config.auth_info.token_file {
        return read(Path::new(path));
    }
    bail!(
        "edgelbctl --node must show the speaker a bearer token (the API server's pod proxy does not pass your identity on), and your kubeconfig has none (it uses a client certificate or an exec plugin): pass --token-file FILE, e.g. with a token from `kubectl create token NAME`"
    )
}

/// The speaker pod on `node`: the running one among the pods with [`SPEAKER_LABELS`].
pub async fn speaker_pod(
    client: &kube::Client,
    namespace: &str,
    node: &str,
) -> anyhow::Result<String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let lp = ListParams::default()
        .labels(SPEAKER_LABELS)
        .fields(&format!("spec.nodeName={node}"));
    let list = pods
        .list(&lp)
        .await
        .with_context(|| {
            format!("listing speaker pods in namespace {namespace} (edgelbctl --node needs {NODE_GRANTS} there)")
        })?;
    let running = list
        .items
        .iter()
        .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"));
    match running.and_then(|p| p.metadata.name.clone()) {
        Some(name) => Ok(name),
        None if list.items.is_empty() => {
            bail!("no edgelb speaker pod on node {node} (namespace {namespace}, labels {SPEAKER_LABELS})")
        }
        None => bail!("the edgelb speaker pod on node {node} is not Running"),
    }
}

/// The view of the speaker on `node`, through the API server.
pub async fn from_node(
    client: &kube::Client,
    namespace: &str,
    node: &str,
    port: u16,
    token: &str,
) -> anyhow::Result<LocalView> {
    let pod = speaker_pod(client, namespace, node).await?;
    let path = proxy_path(namespace, &pod, port);
    let req = http::Request::get(&path)
        .header(edgelb_view::TOKEN_HEADER, format!("Bearer {token}"))
        .body(Vec::new())
        .context("building the proxy request")?;
    let text = client.request_text(req).await.with_context(|| {
        format!("GET {path} (edgelbctl --node needs {NODE_GRANTS} in namespace {namespace})")
    })?;
    serde_json::from_str(&text).with_context(|| format!("{path}: the answer is not a view"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{Request, Response};
    use kube::client::Body;
    use tower_test::mock;

    fn view_json() -> serde_json::Value {
        serde_json::json!({"api": "v1", "node": "edge-2", "version": "0.1.0", "generatedAt": 100, "ready": true})
    }

    /// A real kube::Client over a mock: asserts the pod list and the proxy URL.
    #[tokio::test]
    async fn node_view_goes_through_the_pod_proxy_of_the_running_speaker_pod() {
        let (svc, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(svc, "default");
        let server = tokio::spawn(async move {
            let (req, send) = handle.next_request().await.expect("list");
            let uri = req.uri().to_string();
            assert!(
                uri.starts_with("/api/v1/namespaces/edgelb-system/pods?"),
                "{uri}"
            );
            assert!(uri.contains("labelSelector=app.kubernetes.io%2Fname%3Dedgelb%2Capp.kubernetes.io%2Fcomponent%3Dspeaker"), "{uri}");
            assert!(
                uri.contains("fieldSelector=spec.nodeName%3Dedge-2"),
                "{uri}"
            );
            let list = serde_json::json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [
                {"metadata": {"name": "edgelb-speaker-old"}, "status": {"phase": "Failed"}},
                {"metadata": {"name": "edgelb-speaker-x7k2p"}, "status": {"phase": "Running"}}]});
            send.send_response(Response::new(Body::from(
                serde_json::to_vec(&list).expect("json"),
            )));
            let (req, send) = handle.next_request().await.expect("proxy");
            assert_eq!(req.method(), http::Method::GET);
            assert_eq!(
                req.uri().to_string(),
                "/api/v1/namespaces/edgelb-system/pods/https:edgelb-speaker-x7k2p:7473/proxy/v1/view"
            );
            assert_eq!(
                req.headers()
                    .get("x-edgelb-authorization")
                    .and_then(|v| v.to_str().ok()),
                Some("Bearer t-1")
            );
            send.send_response(Response::new(Body::from(
                serde_json::to_vec(&view_json()).expect("json"),
            )));
        });
        let view = from_node(&client, "edgelb-system", "edge-2", 7473, "t-1")
            .await
            .expect("view");
        assert_eq!(view.node, "edge-2");
        server.await.expect("server");
    }

    /// A caller without `list` on pods is told which grants `--node` needs.
    #[tokio::test]
    async fn a_forbidden_pod_list_names_the_grants_needed() {
        let (svc, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(svc, "default");
        let server = tokio::spawn(async move {
            let (_, send) = handle.next_request().await.expect("list");
            let status = serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                "message": "pods is forbidden: User \"bob\" cannot list resource \"pods\"",
                "reason": "Forbidden", "code": 403});
            let mut resp = Response::new(Body::from(serde_json::to_vec(&status).expect("json")));
            *resp.status_mut() = http::StatusCode::FORBIDDEN;
            send.send_response(resp);
        });
        let err = from_node(&client, "edgelb-system", "edge-2", 7473, "t")
            .await
            .expect_err("forbidden");
        let text = format!("{err:#}");
        assert!(text.contains("`list` on `pods`"), "{text}");
        assert!(text.contains("cannot list resource"), "{text}");
        server.await.expect("server");
    }

    #[tokio::test]
    async fn a_node_without_a_speaker_pod_is_a_clear_error() {
        let (svc, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(svc, "default");
        let server = tokio::spawn(async move {
            let (_, send) = handle.next_request().await.expect("list");
            let list = serde_json::json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": []});
            send.send_response(Response::new(Body::from(
                serde_json::to_vec(&list).expect("json"),
            )));
        });
        let err = from_node(&client, "edgelb-system", "edge-9", 7473, "t")
            .await
            .expect_err("no pod");
        assert!(
            err.to_string()
                .contains("no edgelb speaker pod on node edge-9"),
            "{err}"
        );
        server.await.expect("server");
    }
}
