//! The ENS client over HTTPS, as the cloud's endpoints speak it: the server certificate is
//! verified (against the extra roots given here; the system's store in production), and a
//! server whose certificate no trusted root signed is refused, never called unverified.
//! Loopback only.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use edgelb_cloud::ens::client::{ClientConfig, EnsClient, EnsError, RetryPolicy};
use edgelb_cloud::ens::credentials::Credentials;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A self-signed certificate for `localhost` and its key.
fn certificate() -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("rcgen");
    let key = PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    (cert.cert.der().clone(), key)
}

/// An HTTPS server on loopback answering every request with a JSON body; returns its port
/// and the queries it saw.
async fn server(
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
) -> (u16, Arc<Mutex<Vec<String>>>) {
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocols")
    .with_no_client_auth()
    .with_single_cert(vec![cert], key)
    .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let log = log.clone();
            tokio::spawn(async move {
                // A client that refuses our certificate ends the handshake: nothing to serve.
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let answer = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let log = log.clone();
                    async move {
                        log.lock()
                            .expect("log")
                            .push(req.uri().query().unwrap_or("").to_string());
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                            Bytes::from_static(br#"{"RequestId":"tls-1","TotalCount":0}"#),
                        )))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), answer)
                    .await;
            });
        }
    });
    (port, seen)
}

fn client(port: u16, roots: Vec<CertificateDer<'static>>) -> EnsClient {
    let config = ClientConfig {
        endpoint: format!("https://localhost:{port}"),
        extra_roots: roots,
        timeout: Duration::from_secs(5),
        retry: RetryPolicy {
            max_attempts: 1,
            base: Duration::from_millis(10),
            max: Duration::from_millis(10),
        },
        ..ClientConfig::default()
    };
    EnsClient::new(
        config,
        Credentials::new("LTAI5tTlsTestId", "tls-test-secret"),
    )
    .expect("client")
}

#[tokio::test]
async fn a_signed_call_over_https_reaches_a_server_we_trust() {
    let (cert, key) = certificate();
    let (port, seen) = server(cert.clone(), key).await;
    let answer = client(port, vec![cert])
        .call("DescribeLoadBalancers", &[("PageNumber", "1".to_string())])
        .await
        .expect("the call succeeds over TLS");
    assert_eq!(answer["RequestId"], "tls-1");
    let seen = seen.lock().expect("log").clone();
    assert_eq!(seen.len(), 1, "one request: {seen:?}");
    assert!(
        seen[0].contains("Action=DescribeLoadBalancers"),
        "{}",
        seen[0]
    );
    assert!(seen[0].contains("Signature="), "signed: {}", seen[0]);
}

#[tokio::test]
async fn a_server_no_trusted_root_signed_is_refused() {
    let (cert, key) = certificate();
    let (port, seen) = server(cert, key).await;
    let (other, _) = certificate();
    let err = client(port, vec![other])
        .call("DescribeLoadBalancers", &[])
        .await
        .expect_err("an untrusted certificate is refused");
    match &err {
        EnsError::Transport { detail, .. } => assert!(
            detail.contains("InvalidCertificate"),
            "the error says why: {detail}"
        ),
        other => panic!("expected a transport error, got {other:?}"),
    }
    assert!(seen.lock().expect("log").is_empty(), "no request was sent");
}

#[test]
fn an_endpoint_of_another_scheme_is_refused_naming_it() {
    let config = ClientConfig {
        endpoint: "ftp://ens.example".into(),
        ..ClientConfig::default()
    };
    let err = EnsClient::new(config, Credentials::new("id", "secret")).expect_err("refused");
    assert!(err.to_string().contains("ftp://ens.example"), "{err}");
}
