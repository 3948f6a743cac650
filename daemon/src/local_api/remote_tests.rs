use super::*;
use crate::local_api::reviews::Reviews;
use crate::mock_api::{scripted, Call};

fn access() -> Access {
    Access {
        namespace: "edgelb-system".into(),
    }
}

fn headers(name: &str, value: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
        value.parse().expect("value"),
    );
    h
}

const TR: &str = "/apis/authentication.k8s.io/v1/tokenreviews";
const SAR: &str = "/apis/authorization.k8s.io/v1/subjectaccessreviews";

fn reviewed(user: &str) -> Value {
    json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
        "status": {"authenticated": true, "user": {"username": user, "uid": "u-7",
            "groups": ["devs", "system:authenticated"], "extra": {"scope": ["a"]}}}})
}

fn sar_call(user: &'static str, allowed: bool) -> Call {
    Call::new(
        "POST",
        SAR,
        201,
        json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
            "status": {"allowed": allowed, "reason": if allowed { "" } else { "no RBAC rule" }}}),
    )
    .with_body(json!({
        "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {"user": user, "uid": "u-7", "groups": ["devs", "system:authenticated"],
            "extra": {"scope": ["a"]},
            "resourceAttributes": {"namespace": "edgelb-system", "verb": "get",
                "resource": "pods", "subresource": "proxy"}}
    }))
}

fn view() -> watch::Receiver<LocalView> {
    let (tx, rx) = watch::channel(LocalView {
        node: "edge-1".into(),
        ..LocalView::default()
    });
    std::mem::forget(tx);
    rx
}

#[test]
fn the_token_comes_from_our_header_first_then_authorization() {
    assert_eq!(
        bearer(&headers(TOKEN_HEADER, "Bearer abc")).as_deref(),
        Some("abc")
    );
    assert_eq!(
        bearer(&headers("authorization", "bearer xyz")).as_deref(),
        Some("xyz")
    );
    assert_eq!(bearer(&headers("authorization", "Basic xyz")), None);
    assert_eq!(bearer(&headers(TOKEN_HEADER, "Bearer ")), None);
    assert_eq!(bearer(&HeaderMap::new()), None);
}

/// The exact TokenReview and SubjectAccessReview, and the view for a permitted user.
#[tokio::test]
async fn a_permitted_token_gets_the_view() {
    let (client, server) = scripted(vec![
        Call::new("POST", TR, 201, reviewed("alice")).with_body(json!({
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
            "spec": {"token": "t-alice"}})),
        sar_call("alice", true),
    ]);
    let reply = answer(
        &client,
        &access(),
        &Reviews::default(),
        &headers(TOKEN_HEADER, "Bearer t-alice"),
        &http::Method::GET,
        "/v1/view",
        &view(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert!(reply.body.contains("\"edge-1\""), "{}", reply.body);
    server.await.expect("both reviews were made");
}

#[tokio::test]
async fn a_user_without_the_grant_is_forbidden() {
    let (client, server) = scripted(vec![
        Call::new("POST", TR, 201, reviewed("bob")),
        sar_call("bob", false),
    ]);
    let reply = answer(
        &client,
        &access(),
        &Reviews::default(),
        &headers("authorization", "Bearer t-bob"),
        &http::Method::GET,
        "/v1/peers",
        &view(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(
        reply.body,
        "bob may not get pods/proxy in namespace edgelb-system: no RBAC rule\n"
    );
    server.await.expect("both reviews were made");
}

#[tokio::test]
async fn an_unknown_token_is_unauthorized_and_never_reaches_the_access_review() {
    let (client, server) = scripted(vec![Call::new(
        "POST",
        TR,
        201,
        json!({"status": {"authenticated": false, "error": "invalid bearer token"}}),
    )]);
    let reply = answer(
        &client,
        &access(),
        &Reviews::default(),
        &headers(TOKEN_HEADER, "Bearer nope"),
        &http::Method::GET,
        "/v1/view",
        &view(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(
        reply.body.contains("invalid bearer token"),
        "{}",
        reply.body
    );
    assert!(!reply.body.contains("nope"), "the token is never echoed");
    server.await.expect("one review");
}

#[tokio::test]
async fn no_token_and_writes_are_refused_without_asking_the_api_server() {
    let (client, server) = scripted(vec![]);
    let r = answer(
        &client,
        &access(),
        &Reviews::default(),
        &HeaderMap::new(),
        &http::Method::GET,
        "/v1/view",
        &view(),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = answer(
        &client,
        &access(),
        &Reviews::default(),
        &headers(TOKEN_HEADER, "Bearer x"),
        &http::Method::POST,
        "/v1/view",
        &view(),
    )
    .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    server.await.expect("no call");
}

/// Repeated requests with one token make one pair of reviews (the script holds only one:
/// an uncached second request would find no API server and get 503).
#[tokio::test]
async fn a_repeated_token_is_reviewed_once_within_the_ttl() {
    let (client, server) = scripted(vec![
        Call::new("POST", TR, 201, reviewed("alice")),
        sar_call("alice", true),
        Call::new("POST", TR, 201, reviewed("bob")),
        sar_call("bob", false),
    ]);
    let reviews = Reviews::default();
    for (token, want) in [
        ("t-alice", StatusCode::OK),
        ("t-bob", StatusCode::FORBIDDEN),
    ] {
        for i in 0..10 {
            let reply = answer(
                &client,
                &access(),
                &reviews,
                &headers(TOKEN_HEADER, &format!("Bearer {token}")),
                &http::Method::GET,
                "/v1/view",
                &view(),
            )
            .await;
            assert_eq!(reply.status, want, "{token} request {i}: {}", reply.body);
        }
    }
    server.await.expect("one pair of reviews per token");
    let reply = answer(
        &client,
        &access(),
        &reviews,
        &headers(TOKEN_HEADER, "Bearer t-carol"),
        &http::Method::GET,
        "/v1/view",
        &view(),
    )
    .await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "a new token is reviewed"
    );
}

#[test]
fn a_self_signed_acceptor_is_made() {
    self_signed(vec!["edge-1".into(), "192.0.2.10".into()]).expect("tls");
}
