//! Applying YAML as `kubectl apply --server-side` does: every document of a file, by
//! server-side apply through discovery, with the admin client (test setup, never a speaker).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::discovery::{pinned_kind, Scope};
use kube::Client;
use serde::Deserialize;

use super::Cluster;

/// The field manager of every apply the harness makes.
pub const FIELD_MANAGER: &str = "edgelb-test";

/// The namespace the shipped manifests install into.
pub const SYSTEM_NAMESPACE: &str = "edgelb-system";

/// The documents of a multi-document YAML text (empty documents dropped).
pub fn parse_yaml(text: &str, source: &str) -> anyhow::Result<Vec<DynamicObject>> {
    let mut out = Vec::new();
    for (i, doc) in serde_norway::Deserializer::from_str(text).enumerate() {
        let value = serde_json::Value::deserialize(doc)
            .with_context(|| format!("{source}: document {i} is not YAML"))?;
        if value.is_null() {
            continue;
        }
        let obj: DynamicObject = serde_json::from_value(value)
            .with_context(|| format!("{source}: document {i} is not a Kubernetes object"))?;
        out.push(obj);
    }
    Ok(out)
}

/// The `*.yaml` files of a directory, sorted (the order `kubectl apply -f DIR` uses).
pub fn yaml_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    Ok(files)
}

fn gvk_of(obj: &DynamicObject, source: &str) -> anyhow::Result<GroupVersionKind> {
    let types = obj
        .types
        .as_ref()
        .with_context(|| format!("{source}: object without apiVersion/kind"))?;
    let (group, version) = match types.api_version.split_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (String::new(), types.api_version.clone()),
    };
    Ok(GroupVersionKind {
        group,
        version,
        kind: types.kind.clone(),
    })
}

/// Server-side applies `objects` (forcing conflicts, manager [`FIELD_MANAGER`]); waits for
/// CRDs to be established so their kinds can be used right after.
pub async fn apply(client: &Client, objects: &[DynamicObject], source: &str) -> anyhow::Result<()> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for obj in objects {
        let gvk = gvk_of(obj, source)?;
        let name = obj
            .metadata
            .name
            .clone()
            .with_context(|| format!("{source}: a {} without a name", gvk.kind))?;
        let (ar, caps) = pinned_kind(client, &gvk)
            .await
            .with_context(|| format!("{source}: discovering {gvk:?}"))?;
        let api: Api<DynamicObject> = match caps.scope {
            Scope::Cluster => Api::all_with(client.clone(), &ar),
            Scope::Namespaced => {
                let ns = obj.metadata.namespace.as_deref().unwrap_or("default");
                Api::namespaced_with(client.clone(), ns, &ar)
            }
        };
        api.patch(&name, &params, &Patch::Apply(obj))
            .await
            .with_context(|| format!("{source}: applying {} {name}", gvk.kind))?;
        if gvk.kind == "CustomResourceDefinition" {
            wait_established(client, &name).await?;
        }
    }
    Ok(())
}

/// Applies every YAML file of `dir`.
pub async fn apply_dir(client: &Client, dir: &Path) -> anyhow::Result<()> {
    for file in yaml_files(dir)? {
        let text = std::fs::read_to_string(&file)?;
        let source = file.display().to_string();
        apply(client, &parse_yaml(&text, &source)?, &source).await?;
    }
    Ok(())
}

async fn wait_established(client: &Client, name: &str) -> anyhow::Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for _ in 0..200 {
        let c = crds.get(name).await?;
        let ok = c
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        if ok {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("CRD {name} not established within 20 s")
}

/// What an operator does by the README: `kubectl apply -f deploy/crds/ -f
/// deploy/manifests/`, then the gossip key Secret.
pub async fn deploy_shipped_async(cluster: &Cluster) -> anyhow::Result<()> {
    let client = cluster.admin_client().await?;
    let root = super::workspace();
    apply_dir(&client, &root.join("deploy/crds")).await?;
    apply_dir(&client, &root.join("deploy/manifests")).await?;
    let secrets: Api<Secret> = Api::namespaced(client, SYSTEM_NAMESPACE);
    if secrets.get_opt(super::MEMBER_KEY_SECRET).await?.is_none() {
        let key = format!("{:032x}", rand_u128()?);
        let secret: Secret = serde_json::from_value(serde_json::json!({
            "metadata": {"name": super::MEMBER_KEY_SECRET, "namespace": SYSTEM_NAMESPACE},
            "stringData": {"key": key},
        }))?;
        secrets.create(&PostParams::default(), &secret).await?;
    }
    Ok(())
}

fn rand_u128() -> anyhow::Result<u128> {
    use std::io::Read;
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(u128::from_le_bytes(b))
}

/// [`deploy_shipped_async`] from sync code (a thread with its own runtime, so it also works
/// when called from inside a test's runtime).
pub fn deploy_shipped(cluster: &Cluster) -> anyhow::Result<()> {
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(deploy_shipped_async(cluster))
        })
        .join()
        .map_err(|_| anyhow::anyhow!("deploy thread panicked"))?
    })
    .context("deploying deploy/crds and deploy/manifests")
}
