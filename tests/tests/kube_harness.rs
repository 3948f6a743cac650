//! The cluster harness itself (tests/src/kube): the DaemonSet's command line as the kubelet
//! would run it, and the per-node API server forwarder with its faults, reached from inside
//! a network namespace with the shipped ServiceAccount's token.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use edgelb_tests::kube::speaker::{container_command, shipped_daemonset, PodFacts, FORWARD_ADDR};
use edgelb_tests::kube::{self as harness, Cluster, Forwarder, SYSTEM_NAMESPACE};
use edgelb_tests::lab::{self, Netns};

#[test]
fn daemonset_args_are_expanded_as_the_kubelet_does() -> anyhow::Result<()> {
    let ds = shipped_daemonset()?;
    let facts = PodFacts {
        node: "n1".into(),
        host_ip: "192.0.2.7".parse()?,
        namespace: "edgelb-system".into(),
        pod_name: "edgelb-speaker-abcde".into(),
    };
    let root = std::env::temp_dir().join(format!("edgelb-harness-args-{}", std::process::id()));
    let cmd = container_command(&ds, &facts, &root)?;
    let (args, env) = (cmd.args, cmd.env);
    let _ = std::fs::remove_dir_all(&root);
    ensure!(
        args.first().map(String::as_str) == Some("run"),
        "args: {args:?}"
    );
    ensure!(args.contains(&"--node=n1".to_string()), "args: {args:?}");
    ensure!(
        args.contains(&"--namespace=edgelb-system".to_string()),
        "args: {args:?}"
    );
    ensure!(
        args.iter().all(|a| !a.contains("$(")),
        "unexpanded: {args:?}"
    );
    // The hostPath mount moved under the test's dir: nothing of the host's /run is touched.
    ensure!(
        args.iter().all(|a| !a.contains("/run/edgelb")),
        "args still name the host path: {args:?}"
    );
    ensure!(
        env.iter().any(|(k, v)| k == "NODE_NAME" && v == "n1"),
        "env: {env:?}"
    );
    Ok(())
}

/// curl inside `ns` against the forwarder with `token`: (exit code, HTTP status, elapsed).
fn curl(
    ns: &Netns,
    ca: &Path,
    token: &str,
    path: &str,
    max: u32,
) -> anyhow::Result<(i32, String, Duration)> {
    let t = Instant::now();
    let out = ns.output(&[
        "curl",
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-m",
        &max.to_string(),
        "--cacert",
        &ca.display().to_string(),
        "-H",
        &format!("Authorization: Bearer {token}"),
        &format!("https://{FORWARD_ADDR}{path}"),
    ])?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        t.elapsed(),
    ))
}

#[tokio::test]
async fn forwarder_passes_delays_freezes_and_cuts() -> anyhow::Result<()> {
    const TEST: &str = "kube_harness::forwarder_passes_delays_freezes_and_cuts";
    if !lab::enabled(TEST) {
        return Ok(());
    }
    let Some(cluster) = Cluster::shared(TEST)? else {
        return Ok(());
    };
    let admin = cluster.admin_client().await?;
    let token = harness::service_account_token(&admin, SYSTEM_NAMESPACE, "edgelb-speaker").await?;
    let ns = Netns::new("fwd")?;
    let fwd = Forwarder::start(ns.name(), FORWARD_ADDR.parse()?, cluster.api_addr())?;
    let ca = cluster.ca_file();
    let services = "/api/v1/services?limit=1";

    let (code, http, _) = curl(&ns, &ca, &token, services, 10)?;
    ensure!(code == 0 && http == "200", "pass: curl {code}, HTTP {http}");
    // The speaker's token is not an admin's.
    let (_, http, _) = curl(&ns, &ca, &token, "/api/v1/namespaces/default/secrets", 10)?;
    ensure!(
        http == "403",
        "Secrets in default with the speaker's token: HTTP {http}"
    );

    fwd.set_latency(Duration::from_millis(400));
    let (code, http, took) = curl(&ns, &ca, &token, services, 20)?;
    ensure!(
        code == 0 && http == "200",
        "latency: curl {code}, HTTP {http}"
    );
    ensure!(
        took >= Duration::from_millis(800),
        "400 ms each way, took {took:?}"
    );

    fwd.restore();
    fwd.freeze();
    let (code, _, took) = curl(&ns, &ca, &token, services, 2)?;
    ensure!(
        code == 28,
        "frozen: curl must time out (28), got {code} after {took:?}"
    );

    fwd.restore();
    let (code, http, _) = curl(&ns, &ca, &token, services, 10)?;
    ensure!(
        code == 0 && http == "200",
        "thawed: curl {code}, HTTP {http}"
    );

    fwd.cut();
    let (code, _, took) = curl(&ns, &ca, &token, services, 5)?;
    ensure!(
        code != 0 && code != 28,
        "cut: curl must fail fast, got {code}"
    );
    ensure!(
        took < Duration::from_secs(4),
        "cut: failed only after {took:?}"
    );

    fwd.restore();
    let (code, http, _) = curl(&ns, &ca, &token, services, 10).context("after restore")?;
    ensure!(
        code == 0 && http == "200",
        "restored: curl {code}, HTTP {http}"
    );
    ensure!(
        fwd.accepted() >= 6,
        "accepted {} connections",
        fwd.accepted()
    );
    Ok(())
}
