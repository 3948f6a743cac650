//! The shipped RBAC grants the speaker everything it asks of the API server, and no more
//! than it must: every entry of `edgelb_daemon::access::all` (the watch table the watchers
//! are built from, and the writes) is checked with a SubjectAccessReview as the shipped
//! ServiceAccount against a real API server with `deploy/manifests/` applied, and with the
//! Helm chart's rendered RBAC when `helm` was built (`.ci/k8s build`). Denials that must hold
//! (Service spec, Secrets outside the speaker's namespace, Nodes, Pods, RBAC itself) are
//! checked the same way.

use anyhow::{bail, Context};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, DynamicObject, PostParams};
use kube::Client;

use edgelb_daemon::access::{self, Access};
use edgelb_tests::kube::{self as harness, deploy, Cluster, SYSTEM_NAMESPACE};

/// The ServiceAccount the DaemonSet runs as.
fn shipped_service_account() -> anyhow::Result<String> {
    let ds = harness::speaker::shipped_daemonset()?;
    ds.spec
        .template
        .spec
        .and_then(|s| s.service_account_name)
        .context("the shipped DaemonSet names no serviceAccountName")
}

async fn allowed(client: &Client, namespace: &str, sa: &str, a: &Access) -> anyhow::Result<bool> {
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(format!("system:serviceaccount:{namespace}:{sa}")),
            groups: Some(vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated".into(),
            ]),
            resource_attributes: Some(ResourceAttributes {
                verb: Some(a.verb.clone()),
                group: Some(a.group.clone()),
                resource: Some(a.resource.clone()),
                subresource: Some(a.subresource.clone()).filter(|s| !s.is_empty()),
                namespace: a.namespace.clone(),
                name: a.name.clone(),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let out = Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .with_context(|| format!("SubjectAccessReview {a:?}"))?;
    Ok(out.status.is_some_and(|s| s.allowed))
}

fn describe(a: &Access) -> String {
    let group = if a.group.is_empty() { "core" } else { &a.group };
    let sub = if a.subresource.is_empty() {
        String::new()
    } else {
        format!("/{}", a.subresource)
    };
    let name = a
        .name
        .as_deref()
        .map(|n| format!(" {n}"))
        .unwrap_or_default();
    let ns = a
        .namespace
        .as_deref()
        .map_or("cluster-wide".to_string(), |n| format!("in {n}"));
    format!("{} {group} {}{sub}{name} {ns}", a.verb, a.resource)
}

/// What the speaker must not be able to do.
fn must_be_denied(namespace: &str) -> Vec<Access> {
    let a = |verb: &str,
             group: &str,
             resource: &str,
             sub: &str,
             ns: Option<&str>,
             name: Option<&str>| Access {
        verb: verb.into(),
        group: group.into(),
        resource: resource.into(),
        subresource: sub.into(),
        namespace: ns.map(str::to_string),
        name: name.map(str::to_string),
    };
    vec![
        // A Service's spec is its owner's; the speaker writes status and (by a patch, which
        // RBAC cannot narrow further) only its PoolService finalizer.
        a("update", "", "services", "", Some("default"), Some("web")),
        a("delete", "", "services", "", Some("default"), Some("web")),
        // Secrets: only in the speaker's namespace.
        a("list", "", "secrets", "", None, None),
        a("get", "", "secrets", "", Some("default"), Some("x")),
        a("watch", "", "secrets", "", Some("kube-system"), None),
        // Nothing else that changes the cluster.
        a("patch", "", "nodes", "", None, Some("n1")),
        a("create", "", "pods", "", Some(namespace), None),
        a(
            "delete",
            "edgelb.io",
            "ipaddresspools",
            "",
            Some(namespace),
            Some("p"),
        ),
        a(
            "patch",
            "edgelb.io",
            "ipaddresspools",
            "",
            Some(namespace),
            Some("p"),
        ),
        a(
            "update",
            "coordination.k8s.io",
            "leases",
            "",
            Some(namespace),
            Some("other"),
        ),
        a(
            "update",
            "coordination.k8s.io",
            "leases",
            "",
            Some("kube-system"),
            Some("edgelb-leader"),
        ),
        a(
            "create",
            "rbac.authorization.k8s.io",
            "clusterrolebindings",
            "",
            None,
            None,
        ),
        a(
            "escalate",
            "rbac.authorization.k8s.io",
            "clusterroles",
            "",
            None,
            None,
        ),
    ]
}

/// Checks every access and denial for `namespace/sa`; an error lists every miss.
async fn check(client: &Client, namespace: &str, sa: &str, what: &str) -> anyhow::Result<()> {
    check_these(
        client,
        namespace,
        sa,
        what,
        access::all(namespace),
        must_be_denied(namespace),
    )
    .await
}

/// [`check`] with the lists given.
async fn check_these(
    client: &Client,
    namespace: &str,
    sa: &str,
    what: &str,
    wanted: Vec<Access>,
    denied: Vec<Access>,
) -> anyhow::Result<()> {
    let mut problems = Vec::new();
    for a in &wanted {
        if !allowed(client, namespace, sa, a).await? {
            problems.push(format!("denied, the speaker needs it: {}", describe(a)));
        }
    }
    for a in &denied {
        if allowed(client, namespace, sa, a).await? {
            problems.push(format!("allowed, must be denied: {}", describe(a)));
        }
    }
    if !problems.is_empty() {
        bail!(
            "{what}, ServiceAccount {namespace}/{sa}:\n  {}",
            problems.join("\n  ")
        );
    }
    eprintln!(
        "{what}: {} grants and {} denials as required",
        wanted.len(),
        denied.len()
    );
    Ok(())
}

/// A speaker of class alibabacloud.com/elb as deploy/examples/cloud-elb-speaker.yaml runs
/// it: no view port (no reviews) and no status of edgelb.io objects (its namespace holds
/// none); everything else the speaker asks for, in its own namespace.
fn cloud_speaker_access(namespace: &str) -> (Vec<Access>, Vec<Access>) {
    let view_port =
        |a: &Access| a.resource == "tokenreviews" || a.resource == "subjectaccessreviews";
    let our_status = |a: &Access| a.group == "edgelb.io" && a.subresource == "status";
    let (wanted, skipped): (Vec<Access>, Vec<Access>) = access::all(namespace)
        .into_iter()
        .partition(|a| !view_port(a) && !our_status(a));
    let mut denied = must_be_denied(namespace);
    denied.extend(skipped);
    // Not the shipped speakers' Secrets or Lease.
    let other_ns = |verb: &str, resource: &str, group: &str, name: Option<&str>| Access {
        verb: verb.into(),
        group: group.into(),
        resource: resource.into(),
        subresource: String::new(),
        namespace: Some(SYSTEM_NAMESPACE.into()),
        name: name.map(str::to_string),
    };
    denied.push(other_ns("get", "secrets", "", Some("edgelb-memberlist")));
    denied.push(other_ns(
        "update",
        "leases",
        "coordination.k8s.io",
        Some(access::LEADER_LEASE),
    ));
    (wanted, denied)
}

/// Leaves the shared cluster as found after a check: deletes namespace `ns` (its Role,
/// binding and ServiceAccount) and the ClusterRoles and ClusterRoleBindings among `objects`.
async fn remove_rbac(client: &Client, ns: &str, objects: &[DynamicObject]) {
    let dp = DeleteParams::default();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let _ = namespaces.delete(ns, &dp).await;
    for o in objects {
        let (kind, plural) = match o.types.as_ref().map(|t| t.kind.as_str()) {
            Some("ClusterRole") => ("ClusterRole", "clusterroles"),
            Some("ClusterRoleBinding") => ("ClusterRoleBinding", "clusterrolebindings"),
            _ => continue,
        };
        let ar = kube::api::ApiResource {
            group: "rbac.authorization.k8s.io".into(),
            version: "v1".into(),
            api_version: "rbac.authorization.k8s.io/v1".into(),
            kind: kind.into(),
            plural: plural.into(),
        };
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
        if let Some(n) = &o.metadata.name {
            let _ = api.delete(n, &dp).await;
        }
    }
}

#[tokio::test]
async fn the_cloud_speaker_example_grants_what_it_uses_and_no_more() -> anyhow::Result<()> {
    const TEST: &str = "kube_rbac::the_cloud_speaker_example_grants_what_it_uses_and_no_more";
    let Some(cluster) = Cluster::shared(TEST)? else {
        return Ok(());
    };
    let client = cluster.admin_client().await?;
    let path = harness::workspace().join("deploy/examples/cloud-elb-speaker.yaml");
    let objects = deploy::parse_yaml(&std::fs::read_to_string(&path)?, "the cloud example")?;
    deploy::apply(&client, &objects, "deploy/examples/cloud-elb-speaker.yaml").await?;
    let ds = objects
        .iter()
        .find(|o| o.types.as_ref().is_some_and(|t| t.kind == "DaemonSet"))
        .context("no DaemonSet in the example")?;
    let ns = ds.metadata.namespace.clone().context("namespace")?;
    let sa = ds
        .data
        .pointer("/spec/template/spec/serviceAccountName")
        .and_then(|v| v.as_str())
        .context("serviceAccountName")?
        .to_string();
    let (wanted, denied) = cloud_speaker_access(&ns);
    let result = check_these(
        &client,
        &ns,
        &sa,
        "the cloud speaker example",
        wanted,
        denied,
    )
    .await;
    // Leave the shared cluster as found.
    remove_rbac(&client, &ns, &objects).await;
    result
}

#[tokio::test]
async fn shipped_manifests_grant_what_the_speaker_uses() -> anyhow::Result<()> {
    let Some(cluster) =
        Cluster::shared("kube_rbac::shipped_manifests_grant_what_the_speaker_uses")?
    else {
        return Ok(());
    };
    let client = cluster.admin_client().await?;
    let sa = shipped_service_account()?;
    check(&client, SYSTEM_NAMESPACE, &sa, "deploy/manifests").await
}

/// The chart installed as release `edgelb` into namespace `edgelb-helm`. Its cluster-scoped
/// objects get a `-helm` suffix here, so they do not replace the manifests' of the same name
/// on this shared cluster; their rules are the chart's.
#[tokio::test]
async fn helm_chart_grants_what_the_speaker_uses() -> anyhow::Result<()> {
    const TEST: &str = "kube_rbac::helm_chart_grants_what_the_speaker_uses";
    const NS: &str = "edgelb-helm";
    let helm = harness::control_plane::bin_dir()?.join("helm");
    if !helm.exists() {
        if std::env::var("CI").as_deref() == Ok("true") {
            bail!(
                "{TEST}: CI=true and {} was not built by .ci/k8s build",
                helm.display()
            );
        }
        eprintln!(
            "SKIPPED {TEST}: {} not built (.ci/k8s build)",
            helm.display()
        );
        return Ok(());
    }
    let Some(cluster) = Cluster::shared(TEST)? else {
        return Ok(());
    };
    let chart = harness::workspace().join("deploy/helm/edgelb");
    let out = std::process::Command::new(&helm)
        .args(["template", "edgelb"])
        .arg(&chart)
        .args(["--namespace", NS])
        .output()
        .context("running helm template")?;
    if !out.status.success() {
        bail!("helm template: {}", String::from_utf8_lossy(&out.stderr));
    }
    let rendered = String::from_utf8(out.stdout)?;
    let mut rbac: Vec<DynamicObject> = deploy::parse_yaml(&rendered, "helm template")?
        .into_iter()
        .filter(|o| {
            let kind = o
                .types
                .as_ref()
                .map(|t| t.kind.as_str())
                .unwrap_or_default();
            matches!(
                kind,
                "ServiceAccount" | "ClusterRole" | "ClusterRoleBinding" | "Role" | "RoleBinding"
            )
        })
        .collect();
    anyhow::ensure!(
        rbac.len() >= 5,
        "the chart rendered {} RBAC objects",
        rbac.len()
    );
    for o in &mut rbac {
        let kind = o.types.as_ref().map(|t| t.kind.clone()).unwrap_or_default();
        if kind == "ClusterRole" || kind == "ClusterRoleBinding" {
            o.metadata.name = o.metadata.name.take().map(|n| format!("{n}-helm"));
        }
        if kind == "ClusterRoleBinding" {
            if let Some(name) = o.data.pointer_mut("/roleRef/name") {
                *name = serde_json::Value::String(format!(
                    "{}-helm",
                    name.as_str().unwrap_or_default()
                ));
            }
        }
        if o.metadata.namespace.is_none()
            && matches!(kind.as_str(), "ServiceAccount" | "Role" | "RoleBinding")
        {
            o.metadata.namespace = Some(NS.into());
        }
    }
    let client = cluster.admin_client().await?;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    if namespaces.get_opt(NS).await?.is_none() {
        namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(serde_json::json!({"metadata": {"name": NS}}))?,
            )
            .await?;
    }
    deploy::apply(&client, &rbac, "helm template (RBAC)").await?;
    let sa = shipped_service_account()?;
    let result = check(&client, NS, &sa, "helm chart").await;
    // Leave the cluster as found (the renamed cluster-scoped objects too).
    remove_rbac(&client, NS, &rbac).await;
    result
}
