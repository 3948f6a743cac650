//! The manifest check CI can run without a cluster: every document of
//! `deploy/manifests/*.yaml` parses into its typed k8s-openapi object (unknown fields are
//! errors, as `kubectl apply --dry-run=server` would report them), and the rules that keep
//! the speaker least-privileged hold. `kubectl apply --dry-run=client` needs an API server
//! for discovery and `helm` is not installed here; see the README.

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::{bail, Context};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Deserialize;

#[derive(Default)]
struct Manifests {
    daemonsets: Vec<DaemonSet>,
    cluster_roles: Vec<ClusterRole>,
    roles: Vec<Role>,
    others: Vec<String>,
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/manifests")
}

/// Keys of `orig` that did not survive the typed round trip (= fields the type does not know).
fn lost(orig: &serde_json::Value, back: &serde_json::Value, path: &str, out: &mut Vec<String>) {
    use serde_json::Value;
    match (orig, back) {
        (Value::Object(o), Value::Object(b)) => {
            for (k, v) in o {
                let p = format!("{path}.{k}");
                match b.get(k) {
                    Some(bv) => lost(v, bv, &p, out),
                    None if v.is_null() => {}
                    None => out.push(p),
                }
            }
        }
        (Value::Array(o), Value::Array(b)) => {
            for (i, (ov, bv)) in o.iter().zip(b).enumerate() {
                lost(ov, bv, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// Parses a document as `T`, refusing fields the type does not know.
fn typed<T: serde::de::DeserializeOwned + serde::Serialize>(
    doc: &serde_json::Value,
    what: &str,
) -> anyhow::Result<T> {
    let v: T =
        serde_json::from_value(doc.clone()).with_context(|| format!("{what}: does not parse"))?;
    let back = serde_json::to_value(&v)?;
    let mut unknown = Vec::new();
    lost(doc, &back, "", &mut unknown);
    if !unknown.is_empty() {
        bail!("{what}: unknown fields {unknown:?}");
    }
    Ok(v)
}

fn load() -> anyhow::Result<Manifests> {
    load_from(&dir())
}

fn load_from(dir: &std::path::Path) -> anyhow::Result<Manifests> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no manifests in {}", dir.display());
    let mut m = Manifests::default();
    for f in files {
        let text = std::fs::read_to_string(&f)?;
        for (i, de) in serde_norway::Deserializer::from_str(&text).enumerate() {
            let doc = serde_json::Value::deserialize(de)
                .with_context(|| format!("{} document {i}: not YAML", f.display()))?;
            if doc.is_null() {
                continue;
            }
            let kind = doc["kind"].as_str().unwrap_or("").to_string();
            let what = format!("{} document {i} ({kind})", f.display());
            match kind.as_str() {
                "DaemonSet" => m.daemonsets.push(typed(&doc, &what)?),
                "ClusterRole" => m.cluster_roles.push(typed(&doc, &what)?),
                "Role" => m.roles.push(typed(&doc, &what)?),
                "ClusterRoleBinding" => {
                    typed::<ClusterRoleBinding>(&doc, &what)?;
                    m.others.push(kind);
                }
                "RoleBinding" => {
                    typed::<RoleBinding>(&doc, &what)?;
                    m.others.push(kind);
                }
                "ServiceAccount" => {
                    typed::<ServiceAccount>(&doc, &what)?;
                    m.others.push(kind);
                }
                "Namespace" => {
                    typed::<Namespace>(&doc, &what)?;
                    m.others.push(kind);
                }
                other => bail!("{what}: kind {other:?} is not checked by this test; add it"),
            }
        }
    }
    Ok(m)
}

const WRITE_VERBS: [&str; 6] = [
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
    "*",
];

fn grants(rule: &PolicyRule, resource: &str) -> bool {
    rule.resources
        .iter()
        .flatten()
        .any(|r| r == resource || r == "*")
}

/// The viewer Role grants exactly what `edgelbctl --node` needs and the view port checks.
#[test]
fn the_viewer_role_is_list_pods_and_get_pods_proxy() -> anyhow::Result<()> {
    let m = load()?;
    let viewer = m
        .roles
        .iter()
        .find(|r| r.metadata.name.as_deref() == Some("edgelb-viewer"))
        .expect("viewer Role");
    let rules: Vec<(Vec<String>, Vec<String>)> = viewer
        .rules
        .iter()
        .flatten()
        .map(|r| (r.resources.clone().unwrap_or_default(), r.verbs.clone()))
        .collect();
    assert_eq!(
        rules,
        vec![
            (vec!["pods".to_string()], vec!["list".to_string()]),
            (vec!["pods/proxy".to_string()], vec!["get".to_string()]),
        ]
    );
    Ok(())
}

#[test]
fn every_manifest_document_parses_into_its_typed_object() -> anyhow::Result<()> {
    let m = load()?;
    assert_eq!(m.daemonsets.len(), 1);
    assert_eq!(m.cluster_roles.len(), 1);
    let names: Vec<_> = m
        .roles
        .iter()
        .filter_map(|r| r.metadata.name.as_deref())
        .collect();
    assert_eq!(names, vec!["edgelb-speaker", "edgelb-viewer"]);
    let kinds: BTreeSet<&str> = m.others.iter().map(String::as_str).collect();
    for k in [
        "ClusterRoleBinding",
        "RoleBinding",
        "ServiceAccount",
        "Namespace",
    ] {
        assert!(kinds.contains(k), "missing {k}");
    }
    // The check itself catches a misspelt field.
    let bad = serde_json::json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": "x"}, "automountServiceAcountToken": false});
    let err = typed::<ServiceAccount>(&bad, "test").expect_err("unknown field");
    assert!(
        err.to_string().contains(".automountServiceAcountToken"),
        "{err}"
    );
    Ok(())
}

#[test]
fn speaker_daemonset_is_host_network_least_capability_and_never_cpu_throttled() -> anyhow::Result<()>
{
    let m = load()?;
    let ds = &m.daemonsets[0];
    let spec = &ds.spec;
    let pod = spec.template.spec.as_ref().context("pod spec")?;
    assert_eq!(pod.host_network, Some(true), "hostNetwork");
    let ru = spec
        .update_strategy
        .as_ref()
        .and_then(|u| u.rolling_update.as_ref())
        .context("rollingUpdate")?;
    assert_eq!(
        ru.max_unavailable,
        Some(IntOrString::Int(1)),
        "maxUnavailable 1"
    );
    assert!(!pod.containers.is_empty());
    for c in pod
        .containers
        .iter()
        .chain(pod.init_containers.iter().flatten())
    {
        let sc = c.security_context.as_ref().context("securityContext")?;
        assert_eq!(
            sc.read_only_root_filesystem,
            Some(true),
            "{}: readOnlyRootFilesystem",
            c.name
        );
        assert_ne!(sc.privileged, Some(true), "{}: privileged", c.name);
        assert_eq!(sc.allow_privilege_escalation, Some(false), "{}", c.name);
        let caps = sc.capabilities.as_ref().context("capabilities")?;
        let add: BTreeSet<&str> = caps.add.iter().flatten().map(String::as_str).collect();
        let drop: Vec<&str> = caps.drop.iter().flatten().map(String::as_str).collect();
        assert_eq!(
            add,
            BTreeSet::from(["NET_ADMIN", "NET_RAW", "NET_BIND_SERVICE"]),
            "{}: capabilities.add",
            c.name
        );
        assert_eq!(drop, vec!["ALL"], "{}: capabilities.drop", c.name);
        let limits = c.resources.as_ref().and_then(|r| r.limits.as_ref());
        assert!(
            limits.is_none_or(|l| !l.contains_key("cpu")),
            "{}: a CPU limit throttles keepalives and failovers",
            c.name
        );
        let probes = [&c.liveness_probe, &c.readiness_probe];
        let paths: Vec<&str> = probes
            .iter()
            .filter_map(|p| p.as_ref()?.http_get.as_ref()?.path.as_deref())
            .collect();
        assert_eq!(paths, vec!["/healthz", "/readyz"], "{}: probes", c.name);
    }
    Ok(())
}

#[test]
fn secrets_and_leases_only_in_the_namespaced_role_and_cluster_writes_only_status_events_and_pool_fan_out(
) -> anyhow::Result<()> {
    let m = load()?;
    for cr in &m.cluster_roles {
        for rule in cr.rules.iter().flatten() {
            assert!(
                !grants(rule, "secrets"),
                "ClusterRole grants secrets: {rule:?}"
            );
            assert!(
                !grants(rule, "leases"),
                "ClusterRole grants leases: {rule:?}"
            );
            let writes = rule.verbs.iter().any(|v| WRITE_VERBS.contains(&v.as_str()));
            if writes {
                for r in rule.resources.iter().flatten() {
                    // Reviews store nothing: the view port asks who a caller is.
                    let review = (r == "tokenreviews" || r == "subjectaccessreviews")
                        && rule.verbs == ["create"];
                    // The node-pool fan-out: its finalizer on the Service (RBAC cannot narrow
                    // a patch to `metadata.finalizers`, so only `patch`, never update or
                    // delete), and the PoolServices it keeps (OpenYurt's kind, ours by label).
                    let finalizer = r == "services" && rule.verbs == ["patch"];
                    let pool_services = r == "poolservices"
                        && rule
                            .api_groups
                            .iter()
                            .flatten()
                            .all(|g| g == "network.openyurt.io");
                    assert!(
                        r.ends_with("/status")
                            || r == "events"
                            || review
                            || finalizer
                            || pool_services,
                        "ClusterRole writes {r}: {rule:?}"
                    );
                }
            }
        }
    }
    let role = m
        .roles
        .iter()
        .find(|r| r.metadata.name.as_deref() == Some("edgelb-speaker"))
        .expect("the speaker's Role");
    let rules = role.rules.iter().flatten().collect::<Vec<_>>();
    assert!(
        rules.iter().any(|r| grants(r, "secrets")),
        "Role reads secrets"
    );
    assert!(
        rules.iter().any(|r| grants(r, "leases")),
        "Role holds the Lease"
    );
    for r in &rules {
        if grants(r, "secrets") {
            let verbs: BTreeSet<&str> = r.verbs.iter().map(String::as_str).collect();
            assert!(
                verbs.is_subset(&BTreeSet::from(["get", "list", "watch"])),
                "secrets are read-only: {r:?}"
            );
        }
    }
    assert!(role.metadata.namespace.is_some(), "the Role is namespaced");
    Ok(())
}

/// Every `--flag` the DaemonSet passes is one `edgelb-speaker run` accepts (a renamed flag
/// would crash-loop every speaker).
#[test]
fn daemonset_args_are_flags_the_speaker_accepts() -> anyhow::Result<()> {
    let m = load()?;
    let help = speaker_help()?;
    let unknown = unknown_flags(&m.daemonsets[0], &help)?;
    assert!(
        unknown.is_empty(),
        "flags edgelb-speaker run does not know: {unknown:?}\n{help}"
    );
    Ok(())
}

fn speaker_help() -> anyhow::Result<String> {
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_edgelb-speaker"))
        .args(["run", "--help"])
        .output()?;
    Ok(String::from_utf8_lossy(&help.stdout).into_owned())
}

/// The `--flags` of a DaemonSet's containers that `edgelb-speaker run --help` does not list.
fn unknown_flags(ds: &DaemonSet, help: &str) -> anyhow::Result<Vec<String>> {
    let pod = ds.spec.template.spec.as_ref().context("pod spec")?;
    let mut unknown = Vec::new();
    for c in &pod.containers {
        let args = c.args.iter().flatten();
        assert_eq!(
            args.clone().next().map(String::as_str),
            Some("run"),
            "{}",
            c.name
        );
        for a in args.filter(|a| a.starts_with("--")) {
            let flag = a.split('=').next().unwrap_or(a);
            if !help.contains(&format!("{flag} ")) && !help.contains(&format!("{flag}\n")) {
                unknown.push(flag.to_string());
            }
        }
    }
    Ok(unknown)
}

/// deploy/examples/cloud-elb-speaker.yaml: a speaker of class alibabacloud.com/elb in its own
/// namespace, its flags known, no host network or capabilities, and RBAC narrower than the
/// shipped one: Secrets and the Lease only in its namespace's Role, cluster-wide writes only
/// the Service/PoolService statuses, the fan-out (PoolServices, the Service finalizer) and
/// Events; no reviews (no view port) and no status of edgelb.io objects.
#[test]
fn the_cloud_speaker_example_is_least_privileged_and_its_flags_exist() -> anyhow::Result<()> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples");
    let m = load_from(&dir)?;
    assert_eq!(m.daemonsets.len(), 1);
    let ds = &m.daemonsets[0];
    let ns = ds.metadata.namespace.as_deref();
    assert_eq!(ns, Some("edgelb-elb"), "its own namespace: its own Lease");
    let unknown = unknown_flags(ds, &speaker_help()?)?;
    assert!(unknown.is_empty(), "unknown flags {unknown:?}");
    let pod = ds.spec.template.spec.as_ref().context("pod spec")?;
    assert_ne!(pod.host_network, Some(true), "no host network");
    let c = &pod.containers[0];
    let args: Vec<&str> = c.args.iter().flatten().map(String::as_str).collect();
    assert!(args.contains(&"--class=alibabacloud.com/elb"), "{args:?}");
    for a in ["--member-addr", "--view-addr", "--elb-credentials-secret="] {
        assert_eq!(
            args.iter().any(|x| x.starts_with(a)),
            a.starts_with("--elb"),
            "{a} in {args:?}"
        );
    }
    let caps = c
        .security_context
        .as_ref()
        .and_then(|s| s.capabilities.as_ref())
        .context("capabilities")?;
    assert!(
        caps.add.iter().flatten().next().is_none(),
        "adds no capability"
    );
    assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]));
    assert_eq!(m.cluster_roles.len(), 1);
    for rule in m.cluster_roles[0].rules.iter().flatten() {
        for r in rule.resources.iter().flatten() {
            assert!(r != "secrets" && r != "leases", "ClusterRole grants {r}");
            assert!(
                r != "tokenreviews" && r != "subjectaccessreviews",
                "no view port, no reviews: {r}"
            );
            if rule.verbs.iter().any(|v| WRITE_VERBS.contains(&v.as_str())) {
                let ok = r == "services/status"
                    || r == "poolservices/status"
                    || r == "poolservices"
                    || r == "events"
                    || (r == "services" && rule.verbs == ["patch"]);
                assert!(ok, "ClusterRole writes {r}: {rule:?}");
            }
        }
    }
    assert_eq!(m.roles.len(), 1);
    let role = &m.roles[0];
    assert_eq!(role.metadata.namespace.as_deref(), Some("edgelb-elb"));
    for rule in role.rules.iter().flatten() {
        if grants(rule, "secrets") {
            let verbs: BTreeSet<&str> = rule.verbs.iter().map(String::as_str).collect();
            assert!(
                verbs.is_subset(&BTreeSet::from(["get", "list", "watch"])),
                "{rule:?}"
            );
        }
    }
    Ok(())
}
