//! The objects cluster tests create, read and remove, written as a user writes them: one
//! place for the Service and EndpointSlice shapes, the status and Event readers, a burst of
//! Services, and the cleanup every test must do (a test must pass twice on one cluster).

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::{Client, Resource};
use serde_json::{json, Value};

use super::{eventually, Cluster, SYSTEM_NAMESPACE};

/// The `loadBalancerClass` the speaker serves.
pub const CLASS: &str = "edgelb.io/speaker";

/// The user the speakers' requests run as (the shipped ServiceAccount), in audit events.
pub fn speaker_user() -> String {
    format!("system:serviceaccount:{SYSTEM_NAMESPACE}:edgelb-speaker")
}

/// `base` with `extra` merged in (objects key by key, anything else replaced).
fn merged(mut base: Value, extra: Value) -> Value {
    match (&mut base, extra) {
        (Value::Object(b), Value::Object(e)) => {
            for (k, v) in e {
                let old = b.remove(&k).unwrap_or(Value::Null);
                b.insert(k, merged(old, v));
            }
            base
        }
        (_, e) => e,
    }
}

/// A LoadBalancer Service of our class, port 80/TCP, with `extra` merged into its JSON
/// (e.g. `{"metadata": {"annotations": ...}, "spec": {"selector": ...}}`; `json!({})` for
/// none).
pub fn lb_service(ns: &str, name: &str, extra: Value) -> anyhow::Result<Service> {
    let base = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"type": "LoadBalancer", "loadBalancerClass": CLASS,
                 "ports": [{"port": 80, "protocol": "TCP"}]},
    });
    serde_json::from_value(merged(base, extra)).with_context(|| format!("Service {ns}/{name}"))
}

/// The EndpointSlice `<service>-1` with one ready endpoint (10.244.0.5:8080) on `node`.
pub fn ready_slice(ns: &str, service: &str, node: &str) -> anyhow::Result<EndpointSlice> {
    serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{service}-1"), "namespace": ns,
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.244.0.5"], "nodeName": node,
                       "conditions": {"ready": true}}],
        "ports": [{"port": 8080, "protocol": "TCP"}],
    }))
    .with_context(|| format!("EndpointSlice of {ns}/{service}"))
}

/// Creates namespace `name`.
pub async fn create_namespace(client: &Client, name: &str) -> anyhow::Result<()> {
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": name}}))?,
        )
        .await
        .with_context(|| format!("creating namespace {name}"))?;
    Ok(())
}

/// The IPs of a Service's `status.loadBalancer.ingress`, sorted.
pub fn ips(svc: &Service) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|l| l.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.as_deref()?.parse().ok())
        .collect();
    v.sort();
    v
}

/// `(ip, ipMode)` of Service `name`'s status.
pub async fn ingress(
    api: &Api<Service>,
    name: &str,
) -> anyhow::Result<Vec<(String, Option<String>)>> {
    let svc = api.get(name).await?;
    Ok(svc
        .status
        .and_then(|s| s.load_balancer)
        .and_then(|lb| lb.ingress)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|i| i.ip.map(|ip| (ip, i.ip_mode)))
        .collect())
}

/// The first Event with `reason` about the object named `on`, if any.
pub async fn event(events: &Api<Event>, reason: &str, on: &str) -> anyhow::Result<Option<Event>> {
    let list = events.list(&ListParams::default()).await?;
    Ok(list.items.into_iter().find(|e| {
        e.reason.as_deref() == Some(reason)
            && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(on)
    }))
}

/// An `edgelb.io/v1alpha1` resource, for [`DynamicObject`] APIs.
pub fn edgelb_resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: "edgelb.io".into(),
        version: "v1alpha1".into(),
        api_version: "edgelb.io/v1alpha1".into(),
        kind: kind.into(),
        plural: plural.into(),
    }
}

/// The `edgelb.io` objects of `kind` in the speaker's namespace.
pub fn edgelb_api(client: &Client, kind: &str, plural: &str) -> Api<DynamicObject> {
    Api::namespaced_with(
        client.clone(),
        SYSTEM_NAMESPACE,
        &edgelb_resource(kind, plural),
    )
}

/// The speakers' requests in the audit log (stage `ResponseComplete`), from the `from`-th
/// audit event on; and the number of audit events so far (the next `from`).
pub fn speaker_requests(cluster: &Cluster, from: usize) -> anyhow::Result<(Vec<Value>, usize)> {
    let user = speaker_user();
    let events = cluster.audit_events()?;
    let len = events.len();
    let mine = events
        .into_iter()
        .skip(from)
        .filter(|e| {
            e.pointer("/user/username").and_then(Value::as_str) == Some(user.as_str())
                && e.pointer("/stage").and_then(Value::as_str) == Some("ResponseComplete")
        })
        .collect();
    Ok((mine, len))
}

/// A burst of `n` Services `s00000`, `s00001`, ... in `ns` (which exists), without
/// NodePorts (the API server's range would not hold thousands), `in_flight` creates at a
/// time; with `slices_on`, each also gets a [`ready_slice`] on one of those nodes in turn.
/// `created` counts the answered creates while the burst runs. Returns when the last create
/// was answered; fails naming how many failed and the first error.
pub async fn create_services(
    client: &Client,
    ns: &str,
    n: usize,
    in_flight: usize,
    slices_on: &[String],
    created: Option<&AtomicUsize>,
) -> anyhow::Result<Instant> {
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    let no_node_ports = json!({"spec": {"allocateLoadBalancerNodePorts": false}});
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(0..n)
        .map(|i| {
            let (services, slices) = (&services, &slices);
            let name = format!("s{i:05}");
            let node = (!slices_on.is_empty()).then(|| &slices_on[i % slices_on.len()]);
            let extra = no_node_ports.clone();
            async move {
                let r = services
                    .create(&PostParams::default(), &lb_service(ns, &name, extra)?)
                    .await;
                if let Some(c) = created {
                    c.fetch_add(1, Ordering::SeqCst);
                }
                r.with_context(|| format!("Service {name}"))?;
                if let Some(node) = node {
                    slices
                        .create(&PostParams::default(), &ready_slice(ns, &name, node)?)
                        .await
                        .with_context(|| format!("EndpointSlice of {name}"))?;
                }
                Ok(())
            }
        })
        .buffer_unordered(in_flight)
        .collect()
        .await;
    let last = Instant::now();
    let failed: Vec<String> = results
        .iter()
        .filter_map(|r| r.as_ref().err().map(|e| format!("{e:#}")))
        .collect();
    ensure!(
        failed.is_empty(),
        "{} of {n} creates failed, e.g. {}",
        failed.len(),
        failed[0]
    );
    Ok(last)
}

/// Runs `f` until it succeeds, at most `attempts` times, waiting 1 s, 2 s, 4 s, ... between
/// tries (for requests a loaded API server may drop, e.g. a `deletecollection` of
/// thousands). Each failure is printed; after the last, fails naming `what` and every error.
pub async fn retried<T, F, Fut>(what: &str, attempts: u32, f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    retried_with(what, attempts, Duration::from_secs(1), f).await
}

/// [`retried`] with the first wait `first` (doubling, at most 16 times it).
async fn retried_with<T, F, Fut>(
    what: &str,
    attempts: u32,
    first: Duration,
    mut f: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let attempts = attempts.max(1);
    let mut errors = Vec::new();
    for attempt in 1..=attempts {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) => {
                eprintln!("{what}: attempt {attempt} of {attempts} failed: {e:#}");
                errors.push(format!("{e:#}"));
            }
        }
        if attempt < attempts {
            tokio::time::sleep(first * (1 << (attempt - 1).min(4))).await;
        }
    }
    anyhow::bail!("{what}: failed {} times: {errors:?}", errors.len())
}

/// Deletes every Service and EndpointSlice of namespace `ns` (each `deletecollection`
/// retried, see [`retried`]), then the namespace; with `wait`, waits until no Service is
/// left (the namespace itself goes later).
pub async fn delete_services(
    client: &Client,
    ns: &str,
    wait: Option<Duration>,
) -> anyhow::Result<()> {
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    let (dp, lp) = (DeleteParams::default(), ListParams::default());
    retried(&format!("deleting the Services of {ns}"), 5, || async {
        services.delete_collection(&dp, &lp).await?;
        Ok(())
    })
    .await?;
    retried(
        &format!("deleting the EndpointSlices of {ns}"),
        5,
        || async {
            slices.delete_collection(&dp, &lp).await?;
            Ok(())
        },
    )
    .await?;
    if let Some(timeout) = wait {
        eventually("every Service deleted", timeout, || async {
            Ok(services.list(&lp).await?.items.is_empty().then_some(()))
        })
        .await?;
    }
    retried(&format!("deleting namespace {ns}"), 5, || async {
        match Api::<Namespace>::all(client.clone()).delete(ns, &dp).await {
            Ok(_) => Ok(()),
            // Gone, or already being deleted.
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
            Err(e) => Err(e.into()),
        }
    })
    .await
}

/// Objects a test made, deleted at its end; [`Cleanup::run`] waits until all are gone.
#[derive(Default)]
pub struct Cleanup {
    objects: Vec<(Api<DynamicObject>, String, String)>,
}

impl Cleanup {
    pub fn new() -> Cleanup {
        Cleanup::default()
    }

    /// A typed object: `ns` for namespaced kinds, `None` for cluster-scoped ones.
    pub fn add<K: Resource<DynamicType = ()>>(
        mut self,
        client: &Client,
        ns: Option<&str>,
        name: &str,
    ) -> Cleanup {
        let res = ApiResource::erase::<K>(&());
        let api = match ns {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &res),
            None => Api::all_with(client.clone(), &res),
        };
        self.objects
            .push((api, name.to_string(), format!("{} {name}", res.kind)));
        self
    }

    /// An object of a dynamic API (e.g. [`edgelb_api`]).
    pub fn add_dynamic(mut self, api: &Api<DynamicObject>, name: &str) -> Cleanup {
        self.objects
            .push((api.clone(), name.to_string(), format!("object {name}")));
        self
    }

    /// Deletes every object (in the order added; a missing one is fine) and waits until none
    /// is left, naming those that are.
    pub async fn run(self, timeout: Duration) -> anyhow::Result<()> {
        let dp = DeleteParams::default();
        for (api, name, _) in &self.objects {
            let _ = api.delete(name, &dp).await;
        }
        eventually("the test's objects gone", timeout, || async {
            let mut left = Vec::new();
            for (api, name, what) in &self.objects {
                if api.get_opt(name).await?.is_some() {
                    left.push(what.as_str());
                }
            }
            ensure!(left.is_empty(), "left: {left:?}");
            Ok(Some(()))
        })
        .await
    }
}

/// Runs `scenario`, then `cleanup` whatever the scenario's result (the cleanup future only
/// starts once the scenario ended); the scenario's error first, then the cleanup's.
pub async fn then_clean(
    what: &str,
    scenario: impl std::future::Future<Output = anyhow::Result<()>>,
    cleanup: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let t = Instant::now();
    let result = scenario.await;
    let cleaned = cleanup.await;
    result.with_context(|| what.to_string())?;
    cleaned.with_context(|| format!("cleanup of {what}"))?;
    eprintln!("{what}: passed and cleaned up in {:?}", t.elapsed());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[tokio::test]
    async fn a_request_that_fails_twice_is_retried_and_succeeds() {
        let calls = Cell::new(0);
        let got = retried_with("x", 5, Duration::from_millis(1), || {
            calls.set(calls.get() + 1);
            let n = calls.get();
            async move {
                anyhow::ensure!(n > 2, "dropped {n}");
                Ok(n)
            }
        })
        .await;
        assert_eq!(got.unwrap(), 3);
        assert_eq!(calls.get(), 3);
    }

    #[tokio::test]
    async fn a_request_that_always_fails_fails_loudly_after_the_last_attempt() {
        let calls = Cell::new(0);
        let got: anyhow::Result<()> = retried_with(
            "deleting the Services of ns",
            3,
            Duration::from_millis(1),
            || {
                calls.set(calls.get() + 1);
                let n = calls.get();
                async move { anyhow::bail!("client error {n}") }
            },
        )
        .await;
        let e = format!("{:#}", got.unwrap_err());
        assert_eq!(calls.get(), 3);
        assert!(
            e.contains("deleting the Services of ns: failed 3 times")
                && e.contains("client error 1")
                && e.contains("client error 3"),
            "{e}"
        );
    }

    #[test]
    fn extra_json_merges_into_the_service() {
        let svc = lb_service(
            "ns",
            "web",
            json!({"metadata": {"annotations": {"a": "b"}}, "spec": {"selector": {"app": "web"}}}),
        )
        .unwrap();
        let spec = svc.spec.unwrap();
        assert_eq!(spec.load_balancer_class.as_deref(), Some(CLASS));
        assert_eq!(spec.ports.unwrap().len(), 1);
        assert_eq!(spec.selector.unwrap()["app"], "web");
        assert_eq!(svc.metadata.annotations.unwrap()["a"], "b");
        assert_eq!(svc.metadata.namespace.as_deref(), Some("ns"));
    }
}
