//! The daemon's cloud driver (`edgelb_daemon::cloud_lb`) against the emulator process:
//! snapshots in (Services of class `alibabacloud.com/elb`, node pools, nodes with
//! providerIDs, PoolServices fanned out), cloud state out. Each lifecycle rule deletes
//! exactly what was created for it; a user's load balancer keeps its instance, listeners
//! and backends; nodes and ports follow; drift is repaired by the resync; nothing happens
//! while the Lease fence is closed; a driver dropped mid-create (the speaker killed) is
//! followed by one that adopts by name, and the sweep deletes this cluster's leftovers
//! only. The emulator's leak report ends with exactly the user's and another cluster's
//! resources.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use edgelb_cloud::ens::api;
use edgelb_cloud::model::{NetworkRef, Protocol};
use edgelb_cloud::plan::{ANNOTATION_LB_ID, ANNOTATION_MANAGED_BY_USER};
use edgelb_daemon::cloud_lb::driver::CloudDriver;
use edgelb_daemon::cloud_lb::testing::World;
use edgelb_daemon::cloud_lb::{CloudConfig, CloudEntry, CloudState};
use edgelb_daemon::snapshot::ObjectKey;
use edgelb_daemon::status::leader::Fence;
use edgelb_daemon::status::pool_ingress::{self, CloudSource};
use serde_json::{json, Value};
use support::{Emulator, KEY_ID, SECRET};
use tokio::sync::watch;

const REGION: &str = "cn-hangzhou-telecom";

fn cfg(endpoint: String) -> CloudConfig {
    CloudConfig {
        endpoint,
        cluster: "c-emu".into(),
        rate_per_sec: 200.0,
        resync: Duration::from_secs(1),
        concurrency: 4,
        timeout: Duration::from_secs(3),
        max_rounds: 40,
        poll: Duration::from_millis(60),
        ..CloudConfig::default()
    }
}

fn open() -> Fence {
    Fence {
        epoch: 1,
        tenure: 1,
        until: Some(tokio::time::Instant::now() + Duration::from_secs(3600)),
        holder: Some("n1".into()),
        api_reachable: true,
        contact: None,
    }
}

fn closed() -> Fence {
    Fence {
        epoch: 1,
        tenure: 1,
        until: None,
        holder: Some("other".into()),
        api_reachable: true,
        contact: None,
    }
}

fn net() -> NetworkRef {
    NetworkRef {
        region: REGION.into(),
        network_id: "n-emu1".into(),
        vswitch_id: "vsw-emu1".into(),
    }
}

/// The cluster side: the world, the fan-out with the cloud finalizer rule applied from the
/// driver's reports, and the driver fed each new snapshot.
struct Cluster {
    w: World,
    d: CloudDriver,
    reports: CloudSource,
}

impl Cluster {
    /// One round of the fan-out (finalizers from the reports), then the snapshot to the driver.
    fn pump(&mut self) {
        let r = self.reports.borrow().clone();
        self.w.fan_out_with(Some(&r));
        self.d.submit(self.w.snapshot());
    }

    /// Pumps until `f` holds for the driver's state (at most 30 s).
    async fn until(&mut self, what: &str, f: impl Fn(&CloudState) -> bool) -> Arc<CloudState> {
        for _ in 0..600 {
            self.pump();
            let s = self.d.state().borrow().clone();
            if f(&s) {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "{what}: not reached in 30 s; state {:#?}",
            self.d.state().borrow()
        );
    }

    /// Pumps until the emulator's inventory satisfies `f` (at most 30 s).
    async fn inventory_until(
        &mut self,
        emu: &Emulator,
        what: &str,
        f: impl Fn(&Value) -> bool,
    ) -> Value {
        for _ in 0..300 {
            self.pump();
            let inv = emu.inventory();
            if f(&inv) {
                return inv;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "{what}: not reached in 30 s; inventory {:#}",
            emu.inventory()
        );
    }
}

fn entry<'a>(s: &'a CloudState, svc: &str, pool: &str) -> Option<&'a CloudEntry> {
    s.entries
        .get(&(ObjectKey::new("web", svc), Arc::from(pool)))
}

fn lb<'a>(inv: &'a Value, name: &str) -> Option<&'a Value> {
    inv["LoadBalancers"]
        .as_array()?
        .iter()
        .find(|l| l["LoadBalancerName"] == name)
}

fn names(inv: &Value, kind: &str, field: &str) -> Vec<String> {
    let mut n: Vec<String> = inv[kind]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| l[field].as_str().unwrap_or_default().to_string())
        .collect();
    n.sort();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn driver_follows_pool_services_and_deletes_exactly_what_it_created() {
    let emu = Emulator::start(&[]);
    emu.register(&[
        ("i-hz1", "10.0.1.2"),
        ("i-hz2", "10.0.1.3"),
        ("i-user", "10.0.1.9"),
    ]);
    let result = tokio::time::timeout(Duration::from_secs(100), scenario(&emu)).await;
    result.expect("the scenario took over 100 s");
    let report = emu.stop();
    // Left: the user's own load balancer and another cluster's, nothing of ours.
    assert_eq!(
        names(&report, "LoadBalancers", "LoadBalancerName"),
        ["k8s/ghost/web/hz/other-cluster", "users-own"],
        "leak report {report:#}"
    );
    assert_eq!(names(&report, "EipAddresses", "Name"), Vec::<String>::new());
}

async fn scenario(emu: &Emulator) {
    let c = emu.client();
    // A user's own load balancer with a backend and a listener of their own.
    let user_lb = api::create_load_balancer(&c, "users-own", &net(), "elb.s1.small", "t1")
        .await
        .unwrap();
    // Leftovers: one of this cluster for a PoolService that is gone, one of another cluster.
    api::create_load_balancer(&c, "k8s/ghost/web/hz/c-emu", &net(), "elb.s1.small", "t2")
        .await
        .unwrap();
    api::create_load_balancer(
        &c,
        "k8s/ghost/web/hz/other-cluster",
        &net(),
        "elb.s1.small",
        "t3",
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    api::backend_call(
        &c,
        "AddBackendServers",
        &user_lb,
        &[("i-user".into(), Some(40))],
    )
    .await
    .unwrap();
    api::create_listener(
        &c,
        &user_lb,
        (Protocol::Tcp, 8443),
        &support::listener(31443),
        "user's",
    )
    .await
    .unwrap();

    let mut w = World::new();
    w.secret(KEY_ID, SECRET);
    w.pool("hz", &[("k8s-svc", "cube")], REGION);
    w.node("hz-1", "hz", Some(&format!("{REGION}.i-hz1")));
    w.node("hz-x", "hz", None);
    w.service("web", "cube", "k8s-svc=cube", &[(80, "TCP", 30080)], &[]);

    let (fence_tx, fence) = watch::channel(open());
    let (tx, reports) = pool_ingress::channel();
    let d = CloudDriver::spawn(
        None,
        "n1",
        cfg(emu.endpoint()),
        fence.clone(),
        Duration::from_secs(2),
        tx,
    );
    let mut k = Cluster { w, d, reports };

    // Create: ELB + EIP + listener + backend; the EIP is the ingress.
    let s = k
        .until("cube/hz converged", |s| {
            entry(s, "cube", "hz").is_some_and(|e| e.converged && e.ingress.is_some())
        })
        .await;
    let e = entry(&s, "cube", "hz").unwrap().clone();
    let inv = emu.inventory();
    let mine = lb(&inv, "k8s/cube/web/hz/c-emu").expect("created");
    assert_eq!(mine["Listeners"], json!(["tcp/80"]));
    assert_eq!(mine["BackendServers"], json!({"i-hz1": 100}));
    assert_eq!(e.eip, e.ingress);
    assert_eq!(e.skipped, ["hz-x: node has no spec.providerID"]);
    assert!(
        !format!("{s:?}").contains(SECRET),
        "the state shows no secret"
    );
    // The report for the PoolService status: the EIP, ipMode VIP (no pass-through asked),
    // resources held (the finalizer stays), the finalizer on the PoolService.
    let r = k.reports.borrow().clone();
    assert!(r.synced);
    let pk = (ObjectKey::new("web", "cube"), Arc::<str>::from("hz"));
    let re = &r.entries[&pk];
    assert!(re.holds_resources);
    assert_eq!(re.ingress.len(), 1);
    assert_eq!(re.ingress[0].ip, e.eip);
    assert_eq!(re.ingress[0].ip_mode.as_deref(), Some("VIP"));
    assert!(k
        .w
        .snapshot()
        .pool_services
        .get(&ObjectKey::new("web", "cube-hz"))
        .and_then(|ps| ps.metadata.finalizers.clone())
        .is_some_and(|f| f.iter().any(|x| x == pool_ingress::CLOUD_FINALIZER)));

    // The sweep deleted this cluster's leftover, never another cluster's.
    k.inventory_until(emu, "the leftover swept", |inv| {
        lb(inv, "k8s/ghost/web/hz/c-emu").is_none()
    })
    .await;
    assert!(lb(&emu.inventory(), "k8s/ghost/web/hz/other-cluster").is_some());

    // A node joins the pool; a port is added.
    k.w.node("hz-2", "hz", Some(&format!("{REGION}.i-hz2")));
    k.w.service(
        "web",
        "cube",
        "k8s-svc=cube",
        &[(80, "TCP", 30080), (443, "TCP", 30443)],
        &[],
    );
    k.inventory_until(emu, "node and port followed", |inv| {
        lb(inv, "k8s/cube/web/hz/c-emu").is_some_and(|l| {
            l["BackendServers"] == json!({"i-hz1": 100, "i-hz2": 100})
                && l["Listeners"] == json!(["tcp/80", "tcp/443"])
        })
    })
    .await;
    // The node leaves and the port goes.
    k.w.delete_node("hz-2");
    k.w.service("web", "cube", "k8s-svc=cube", &[(80, "TCP", 30080)], &[]);
    let inv = k
        .inventory_until(emu, "node left, port removed", |inv| {
            lb(inv, "k8s/cube/web/hz/c-emu").is_some_and(|l| {
                l["BackendServers"] == json!({"i-hz1": 100}) && l["Listeners"] == json!(["tcp/80"])
            })
        })
        .await;

    // Drift: a listener deleted in the console comes back with the resync.
    let lb_id = lb(&inv, "k8s/cube/web/hz/c-emu").unwrap()["LoadBalancerId"]
        .as_str()
        .unwrap()
        .to_string();
    api::listener_call(
        &c,
        "DeleteLoadBalancerListener",
        &lb_id,
        (Protocol::Tcp, 80),
    )
    .await
    .unwrap();
    k.inventory_until(emu, "drift repaired", |inv| {
        lb(inv, "k8s/cube/web/hz/c-emu").is_some_and(|l| l["Listeners"] == json!(["tcp/80"]))
    })
    .await;

    // A user's load balancer: our pool's backends only; its own listener and backend stay.
    k.w.service(
        "web",
        "shop",
        "k8s-svc=cube",
        &[(8080, "TCP", 30808)],
        &[(ANNOTATION_MANAGED_BY_USER, "true")],
    );
    // The user annotates the PoolService once the fan-out made it (a load balancer of ours
    // may have been created meanwhile: it goes once the annotation is seen).
    k.pump();
    k.w.annotate_pool_service("web", "shop-hz", &[(ANNOTATION_LB_ID, &user_lb)]);
    k.until("shop/hz converged", |s| {
        entry(s, "shop", "hz").is_some_and(|e| e.converged && e.user_managed)
    })
    .await;
    let inv = k
        .inventory_until(emu, "ours gone from shop/hz", |inv| {
            lb(inv, "k8s/shop/web/hz/c-emu").is_none()
                && !names(inv, "EipAddresses", "Name")
                    .contains(&"k8s/shop/web/hz/c-emu".to_string())
        })
        .await;
    let users = lb(&inv, "users-own").unwrap();
    assert_eq!(users["BackendServers"], json!({"i-hz1": 100, "i-user": 40}));
    assert_eq!(
        users["Listeners"],
        json!(["tcp/8443"]),
        "no force-override: its listeners are its own"
    );
    assert_eq!(
        names(&inv, "EipAddresses", "Name"),
        ["k8s/cube/web/hz/c-emu"],
        "no EIP for a user's load balancer"
    );

    // Nothing starts while the Lease fence is closed.
    fence_tx.send_replace(closed());
    k.w.service(
        "web",
        "late",
        "k8s-svc=cube",
        &[(80, "TCP", 30081)],
        &[("edgelb.io/pass-through", "true")],
    );
    k.until("inactive", |s| !s.active).await;
    assert!(
        !k.reports.borrow().synced,
        "a speaker without the Lease reports nothing"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        lb(&emu.inventory(), "k8s/late/web/hz/c-emu").is_none(),
        "created without the Lease"
    );
    fence_tx.send_replace(open());
    k.until("late/hz converged", |s| {
        entry(s, "late", "hz").is_some_and(|e| e.converged)
    })
    .await;
    let r = k.reports.borrow().clone();
    let late = &r.entries[&(ObjectKey::new("web", "late"), Arc::<str>::from("hz"))];
    assert_eq!(
        late.ingress[0].ip_mode.as_deref(),
        Some("Proxy"),
        "pass-through asked, a proxying load balancer: ipMode Proxy"
    );

    // The speaker killed mid-create: the driver is dropped right after the instance
    // exists; the next one adopts it by name (one instance, one EIP).
    k.w.service("web", "crash", "k8s-svc=cube", &[(80, "TCP", 30082)], &[]);
    k.inventory_until(emu, "crash/hz instance created", |inv| {
        lb(inv, "k8s/crash/web/hz/c-emu").is_some()
    })
    .await;
    let (tx, reports) = pool_ingress::channel();
    // Dropping the old driver aborts its task mid-call, as SIGKILL would.
    k.d = CloudDriver::spawn(
        None,
        "n1",
        cfg(emu.endpoint()),
        fence.clone(),
        Duration::from_secs(2),
        tx,
    );
    k.reports = reports;
    k.until("crash/hz converged by the next driver", |s| {
        entry(s, "crash", "hz").is_some_and(|e| e.converged)
    })
    .await;
    let inv = emu.inventory();
    let count = |kind: &str, field: &str, name: &str| {
        names(&inv, kind, field)
            .iter()
            .filter(|n| *n == name)
            .count()
    };
    assert_eq!(
        count(
            "LoadBalancers",
            "LoadBalancerName",
            "k8s/crash/web/hz/c-emu"
        ),
        1
    );
    assert_eq!(count("EipAddresses", "Name", "k8s/crash/web/hz/c-emu"), 1);

    // Lifecycle: the pool's labels stop matching -> cube/hz, late/hz, crash/hz and our
    // backends on the user's load balancer go; the user's instance stays.
    k.w.pool("hz", &[("k8s-svc", "none")], REGION);
    let inv = k
        .inventory_until(emu, "everything of ours deleted", |inv| {
            names(inv, "LoadBalancers", "LoadBalancerName")
                == ["k8s/ghost/web/hz/other-cluster", "users-own"]
                && names(inv, "EipAddresses", "Name").is_empty()
                && lb(inv, "users-own")
                    .is_some_and(|l| l["BackendServers"] == json!({"i-user": 40}))
        })
        .await;
    assert_eq!(
        lb(&inv, "users-own").unwrap()["Listeners"],
        json!(["tcp/8443"])
    );
    let s = k
        .until("nothing left to delete", |s| s.deleting.is_empty())
        .await;
    // The finalizers went once the driver released each pool; then the PoolServices.
    for _ in 0..100 {
        k.pump();
        if k.w.snapshot().pool_services.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        k.w.snapshot().pool_services.is_empty(),
        "PoolServices left: {:?}",
        k.w.snapshot().pool_services.keys().collect::<Vec<_>>()
    );
    assert!(s.entries.is_empty());
    assert!(s.released(&ObjectKey::new("web", "cube-hz")));
    let calls: BTreeMap<_, _> = s.calls.iter().map(|(k, v)| (k.clone(), v.ok)).collect();
    assert!(
        calls.get("ReleaseInstance").is_some_and(|n| *n >= 2),
        "{calls:?}"
    );
}

/// N Services x 2 pools created at once under a throttling storm (the account's limit far
/// below the driver's rate) with faults injected during create (a lost CreateEipInstance
/// answer, a CreateLoadBalancer answer past the client's timeout, 503s and 500s): every
/// load balancer converges with its EIP as ingress, exactly one instance and one EIP per
/// (Service, pool) exist; all deleted, the leak report is empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttling_storm_and_faults_end_with_exactly_one_of_each() {
    const N: usize = 6;
    let emu = Emulator::start(&["--limit", "*=10"]);
    emu.register(&[("i-hz1", "10.0.1.2"), ("i-cd1", "10.0.2.2")]);
    for (action, kind, count) in [
        ("CreateEipInstance", json!("commit-then-500"), 1),
        ("CreateLoadBalancer", json!("timeout"), 1),
        ("AssociateEnsEipAddress", json!("503"), 2),
        ("AddBackendServers", json!("500"), 3),
    ] {
        emu.control(
            "POST",
            "/control/faults",
            &json!({"Action": action, "Kind": kind, "Count": count, "DelayMs": 4000}),
        );
    }
    let mut w = World::new();
    w.secret(KEY_ID, SECRET);
    w.pool("hz", &[("k8s-svc", "cube")], REGION);
    w.pool("cd", &[("k8s-svc", "cube")], REGION);
    w.node("hz-1", "hz", Some(&format!("{REGION}.i-hz1")));
    w.node("cd-1", "cd", Some(&format!("{REGION}.i-cd1")));
    for i in 0..N {
        w.service(
            "web",
            &format!("s{i}"),
            "k8s-svc=cube",
            &[(80, "TCP", 30080)],
            &[],
        );
    }
    let (_fence_tx, fence) = watch::channel(open());
    let (tx, reports) = pool_ingress::channel();
    let config = CloudConfig {
        rate_per_sec: 50.0,
        ..cfg(emu.endpoint())
    };
    let d = CloudDriver::spawn(None, "n1", config, fence, Duration::from_secs(2), tx);
    let mut k = Cluster { w, d, reports };
    let t = std::time::Instant::now();
    let s = tokio::time::timeout(
        Duration::from_secs(90),
        k.until("all converged", |s| {
            s.entries.len() == 2 * N
                && s.entries
                    .values()
                    .all(|e| e.converged && e.ingress.is_some())
        }),
    )
    .await
    .expect("converged within 90 s");
    let took = t.elapsed();
    let inv = emu.inventory();
    let lbs = names(&inv, "LoadBalancers", "LoadBalancerName");
    let eips = names(&inv, "EipAddresses", "Name");
    let mut want: Vec<String> = (0..N)
        .flat_map(|i| ["cd", "hz"].map(|p| format!("k8s/s{i}/web/{p}/c-emu")))
        .collect();
    want.sort();
    assert_eq!(lbs, want, "exactly one instance per (Service, pool)");
    assert_eq!(eips, want, "exactly one EIP per (Service, pool)");
    let requests: u64 = s.calls.values().map(|c| c.requests).sum();
    let retried: u64 = s.calls.values().map(|c| c.retried).sum();
    eprintln!(
        "storm: {} load balancers converged in {took:?}; {requests} requests ({:.1} per (Service, pool)), {retried} retried (load {})",
        2 * N,
        requests as f64 / (2 * N) as f64,
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim()
    );
    assert!(retried > 0, "no fault or throttling was hit");
    // Every Service deleted: everything released.
    for i in 0..N {
        k.w.delete_service("web", &format!("s{i}"));
    }
    k.inventory_until(&emu, "all released", |inv| {
        names(inv, "LoadBalancers", "LoadBalancerName").is_empty()
            && names(inv, "EipAddresses", "Name").is_empty()
    })
    .await;
    let report = emu.stop();
    assert_eq!(
        names(&report, "LoadBalancers", "LoadBalancerName"),
        Vec::<String>::new()
    );
    assert_eq!(names(&report, "EipAddresses", "Name"), Vec::<String>::new());
}
