//! Faults with real speaker processes on a real API server (tests/src/kube: shipped CRDs,
//! manifests and RBAC, each speaker run as the DaemonSet's pod with the shipped
//! ServiceAccount's token in its node's network namespace, plus the cloud flags), against
//! the ENS emulator:
//!
//! - `a_speaker_killed_mid_create_and_mid_delete_leaves_exactly_what_should_exist`: with
//!   slow creates, the speaker holding the Lease is SIGKILLed right after its
//!   CreateLoadBalancer (the instance still Creating, no listener, no EIP); a second
//!   speaker takes the Lease, finds the instance by name and finishes it: one load
//!   balancer (the same id), one listener, both backends, one EIP, one CreateLoadBalancer
//!   call in all. The Service deleted, that speaker is SIGKILLed mid-delete (the instance
//!   released, the answer late, our EIP not yet released); the first one, restarted, finds
//!   the EIP by name and finishes the delete: nothing left, the leak report empty, the
//!   PoolService and the Service gone.
//! - `a_throttling_storm_converges_within_the_accounts_rate`: the account allows 10 calls
//!   per second per action, the speaker is told 8 per second; 40 throttled answers are
//!   injected on top, enough that some listener call runs out of retries. Every load
//!   balancer converges with exactly one of each, the only throttled answers are the
//!   injected ones (the speaker's own pace never hit the account's limit), and a
//!   `CloudLoadBalancerThrottled` Event says why a call failed.
//! - `a_users_load_balancer_keeps_its_own_listeners_unless_forced`: a user's ELB (its own
//!   name, spec, EIP, backend and listeners on 80 -> 31000 and 8080) named by the
//!   PoolService. Without `...-force-override-listeners` only our pool's backends are
//!   added: its listeners stay as they were. With it, the Service's listener on port 80 is
//!   converged to the NodePort and 8080 (not a Service port) is left. Deleting the Service
//!   removes only our backends: the ELB, its name, spec, EIP, backend and 8080 stay.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::{json, Value};

use edgelb_cloud::ens::api;
use edgelb_cloud::model::{NetworkRef, Protocol};
use edgelb_daemon::api::openyurt::PoolService;
use edgelb_tests::kube::{self as harness, Cluster, Forwarder, Speaker};
use edgelb_tests::lab::{Lan, Netns};
use support::cluster::{self as cloud, inventory_until, lb, LEASE, REGION, WAIT};
use support::{count, Emulator};

/// The cloud tests of this binary share the cluster's Lease: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A short Lease, so a SIGKILLed holder is replaced within seconds.
const LEASE_ARGS: [&str; 1] = ["--lease-seconds=4"];

async fn lease_holder(client: &Client) -> anyhow::Result<String> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), harness::SYSTEM_NAMESPACE);
    Ok(leases
        .get_opt(LEASE)
        .await?
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
        .unwrap_or_default())
}

async fn leads(client: &Client, node: &str) -> anyhow::Result<()> {
    harness::eventually(&format!("{node} holds the Lease"), WAIT, || async {
        Ok(lease_holder(client).await?.contains(node).then_some(()))
    })
    .await
}

/// SIGKILL by pid, and wait until it is gone.
fn kill(speaker: &mut Speaker) -> anyhow::Result<()> {
    speaker
        .process
        .signal(nix::sys::signal::Signal::SIGKILL as i32)?;
    speaker.process.wait_exit(Duration::from_secs(10))?;
    Ok(())
}

/// The IPs of a PoolService's `status.loadBalancer.ingress`.
async fn pool_service_ips(pss: &Api<PoolService>, name: &str) -> anyhow::Result<Vec<String>> {
    Ok(pss
        .get_opt(name)
        .await?
        .and_then(|p| p.status)
        .and_then(|s| s.load_balancer)
        .and_then(|l| l.ingress)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|i| i.ip)
        .collect())
}

/// Status written: the PoolService's and the Service's ingress are exactly `eip`.
async fn ingress_is(
    client: &Client,
    ns: &str,
    svc: &str,
    pool: &str,
    eip: &str,
) -> anyhow::Result<()> {
    let pss: Api<PoolService> = Api::namespaced(client.clone(), ns);
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let ps = format!("{svc}-{pool}");
    harness::eventually(
        &format!("{eip} in {ps}'s and {svc}'s status"),
        WAIT,
        || async {
            let on_ps = pool_service_ips(&pss, &ps).await?;
            let on_svc = harness::objects::ingress(&services, svc).await?;
            Ok(
                (on_ps == [eip.to_string()] && on_svc.len() == 1 && on_svc[0].0 == eip)
                    .then_some(()),
            )
        },
    )
    .await
}

// ---------------------------------------------------------------------------------------
// A speaker killed mid-create and mid-delete.

const K_NS: &str = "kf-kill";
const K_POOL: &str = "np-kf";
const K_CREDENTIALS: &str = "kf-credentials";
const K_NODES: [(&str, &str, &str); 2] = [
    ("kf-node-a", "192.0.2.81", "i-kf1"),
    ("kf-node-b", "192.0.2.82", "i-kf2"),
];
const K_LB: &str = "k8s/web/kf-kill/np-kf/kf-cluster";

async fn kill_speaker(
    cluster: &Cluster,
    netns: &Netns,
    (node, ip, _): (&str, &str, &str),
    emu: &Emulator,
) -> anyhow::Result<(Speaker, Forwarder)> {
    cloud::cloud_speaker(
        cluster,
        netns,
        node,
        ip,
        K_CREDENTIALS,
        "kf-cluster",
        emu.addr,
        100,
        &LEASE_ARGS,
    )
    .await
}

async fn kill_scenario(
    cluster: &Cluster,
    client: &Client,
    lan: &mut Lan,
    emu: &Emulator,
) -> anyhow::Result<()> {
    cloud::prepare(client, K_NS, K_CREDENTIALS).await?;
    for (node, ip, instance) in K_NODES {
        cloud::cloud_node(client, node, ip, K_POOL, REGION, instance).await?;
    }
    cloud::ens_pool(client, K_POOL, REGION, json!({"k8s-svc": "web"})).await?;
    let ns_a = lan.join("kfa", &format!("{}/24", K_NODES[0].1))?;
    let ns_b = lan.join("kfb", &format!("{}/24", K_NODES[1].1))?;
    let (mut a, fwd_a) = kill_speaker(cluster, &ns_a, K_NODES[0], emu).await?;
    leads(client, K_NODES[0].0).await?;

    // Slow creates: the instance stays Creating 8 s after CreateLoadBalancer answered.
    emu.control("POST", "/control/delays", &json!({"CreateMs": 8000}));
    let services: Api<Service> = Api::namespaced(client.clone(), K_NS);
    let ports = json!([{"name": "http", "port": 80, "protocol": "TCP"}]);
    services
        .create(
            &PostParams::default(),
            &cloud::cloud_service(K_NS, "web", "k8s-svc=web", json!({}), ports)?,
        )
        .await?;
    let inv = inventory_until(emu, "the ELB created, still Creating", |inv| {
        lb(inv, K_LB).is_some_and(|l| l["LoadBalancerStatus"] == "Creating")
    })
    .await?;
    kill(&mut a)?;
    let lb_id = lb(&inv, K_LB).unwrap()["LoadBalancerId"].clone();
    let inv = emu.inventory();
    ensure!(
        count(&inv, "LoadBalancers") == 1
            && lb(&inv, K_LB).is_some_and(|l| l["Listeners"] == json!([]))
            && count(&inv, "EipAddresses") == 0,
        "killed between CreateLoadBalancer and the listener/EIP: {inv:#}"
    );
    let log_a = a.logs();
    drop((a, fwd_a));
    emu.control("POST", "/control/delays", &json!({"CreateMs": 200}));

    // A second speaker takes over and adopts the instance by name.
    let (mut b, fwd_b) = kill_speaker(cluster, &ns_b, K_NODES[1], emu).await?;
    let t = Instant::now();
    let adopted = async {
        leads(client, K_NODES[1].0).await?;
        let inv = inventory_until(emu, "the adopted ELB converged", |inv| {
            lb(inv, K_LB).is_some_and(|l| {
                l["LoadBalancerStatus"] == "Active"
                    && l["Listeners"] == json!(["tcp/80"])
                    && l["BackendServers"] == json!({"i-kf1": 100, "i-kf2": 100})
            }) && inv["EipAddresses"]
                .as_array()
                .is_some_and(|e| e.len() == 1 && e[0]["State"] == "InUse")
        })
        .await?;
        eprintln!("adopted and converged {:?} after the kill", t.elapsed());
        ensure!(
            count(&inv, "LoadBalancers") == 1 && lb(&inv, K_LB).unwrap()["LoadBalancerId"] == lb_id,
            "not the same single instance: {inv:#}"
        );
        let calls = cloud::calls_by_action(emu);
        ensure!(
            calls.get("CreateLoadBalancer") == Some(&1)
                && calls.get("CreateEipInstance") == Some(&1),
            "one create of each in all: {calls:?}"
        );
        let eip = inv["EipAddresses"][0]["IpAddress"]
            .as_str()
            .unwrap()
            .to_string();
        ingress_is(client, K_NS, "web", K_POOL, &eip).await?;

        // Mid-delete: the load balancer's release is answered 8 s late; the leader is
        // killed meanwhile, the EIP (ours, unbound) not yet released.
        emu.control(
            "POST",
            "/control/faults",
            &json!({"Action": "ReleaseInstance", "Kind": "timeout", "DelayMs": 8000}),
        );
        services.delete("web", &DeleteParams::default()).await?;
        inventory_until(emu, "the ELB released, its EIP not yet", |inv| {
            count(inv, "LoadBalancers") == 0 && count(inv, "EipAddresses") == 1
        })
        .await?;
        anyhow::Ok(())
    }
    .await;
    let adopted = b.log_if_failed(adopted);
    if adopted.is_err() {
        eprintln!("first speaker's log:\n{log_a}");
    }
    adopted?;
    kill(&mut b)?;
    let inv = emu.inventory();
    ensure!(
        count(&inv, "LoadBalancers") == 0
            && count(&inv, "EipAddresses") == 1
            && inv["EipAddresses"][0]["Name"] == K_LB,
        "killed mid-delete, between the ELB's release and the EIP's: {inv:#}"
    );
    drop((b, fwd_b));

    // The first speaker, restarted, finishes the delete.
    let (a, _fwd_a) = kill_speaker(cluster, &ns_a, K_NODES[0], emu).await?;
    let finished = async {
        cloud::inventory_holds(emu, "everything released", 0, 0).await?;
        cloud::gone(client, K_NS, "web", &format!("web-{K_POOL}")).await
    }
    .await;
    a.log_if_failed(finished)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_speaker_killed_mid_create_and_mid_delete_leaves_exactly_what_should_exist(
) -> anyhow::Result<()> {
    const TEST: &str =
        "kube_elb_faults::a_speaker_killed_mid_create_and_mid_delete_leaves_exactly_what_should_exist";
    let Some((cluster, client)) = harness::cluster_for(TEST).await? else {
        return Ok(());
    };
    let _serial = SERIAL.lock().await;
    let emu = Emulator::start(&[]);
    emu.register(&[("i-kf1", "10.0.1.2"), ("i-kf2", "10.0.1.3")]);
    let mut lan = Lan::new()?;
    let nodes: Vec<&str> = K_NODES.iter().map(|n| n.0).collect();
    cloud::bounded(
        TEST,
        Duration::from_secs(240),
        kill_scenario(cluster, &client, &mut lan, &emu),
        cloud::cleanup(&client, K_NS, K_CREDENTIALS, &[K_POOL], &nodes),
    )
    .await?;
    cloud::stop_leaving(emu, 0, 0)
}

// ---------------------------------------------------------------------------------------
// A throttling storm.

const S_NS: &str = "kf-storm";
const S_POOL: &str = "np-ks";
const S_CREDENTIALS: &str = "ks-credentials";
const S_NODE: (&str, &str, &str) = ("ks-node", "192.0.2.85", "i-ks1");
const S_SERVICES: usize = 4;
/// Throttled answers injected on the listener creates: more than 5 per Service, so at
/// least one call is refused on each of its 6 attempts.
const S_LISTENER_THROTTLES: u64 = 5 * S_SERVICES as u64 + 1;
/// And on whatever comes first.
const S_ANY_THROTTLES: u64 = 20;

async fn storm_scenario(
    cluster: &Cluster,
    client: &Client,
    lan: &mut Lan,
    emu: &Emulator,
) -> anyhow::Result<()> {
    cloud::prepare(client, S_NS, S_CREDENTIALS).await?;
    let (node, ip, instance) = S_NODE;
    cloud::cloud_node(client, node, ip, S_POOL, REGION, instance).await?;
    cloud::ens_pool(client, S_POOL, REGION, json!({"k8s-svc": "storm"})).await?;
    let netns = lan.join("ksn", &format!("{ip}/24"))?;
    let (speaker, _fwd) = cloud::cloud_speaker(
        cluster,
        &netns,
        node,
        ip,
        S_CREDENTIALS,
        "ks-cluster",
        emu.addr,
        8,
        &[],
    )
    .await?;
    let result = async {
        leads(client, node).await?;
        for (action, n) in [
            ("CreateLoadBalancerTCPListener", S_LISTENER_THROTTLES),
            ("*", S_ANY_THROTTLES),
        ] {
            emu.control(
                "POST",
                "/control/faults",
                &json!({"Action": action, "Kind": "throttle", "Count": n}),
            );
        }
        let services: Api<Service> = Api::namespaced(client.clone(), S_NS);
        let t = Instant::now();
        for s in 0..S_SERVICES {
            let ports = json!([{"name": "http", "port": 80, "protocol": "TCP"}]);
            let svc = cloud::cloud_service(S_NS, &format!("st{s}"), "k8s-svc=storm", json!({}), ports)?;
            services.create(&PostParams::default(), &svc).await?;
        }
        // Meanwhile, the PoolServices' condition reasons seen.
        let pss: Api<PoolService> = Api::namespaced(client.clone(), S_NS);
        let mut reasons = std::collections::BTreeSet::new();
        let converged = |inv: &Value| {
            (0..S_SERVICES).all(|s| {
                lb(inv, &format!("k8s/st{s}/{S_NS}/{S_POOL}/ks-cluster")).is_some_and(|l| {
                    l["LoadBalancerStatus"] == "Active"
                        && l["Listeners"] == json!(["tcp/80"])
                        && l["BackendServers"] == json!({"i-ks1": 100})
                })
            }) && inv["EipAddresses"].as_array().is_some_and(|e| {
                e.len() == S_SERVICES && e.iter().all(|e| e["State"] == "InUse")
            })
        };
        let deadline = Instant::now() + WAIT;
        let inv = loop {
            for p in pss.list(&Default::default()).await?.items {
                let conditions = p.status.map(|s| s.conditions).unwrap_or_default();
                reasons.extend(conditions.into_iter().map(|c| c.reason));
            }
            let inv = emu.inventory();
            if converged(&inv) {
                break inv;
            }
            ensure!(Instant::now() < deadline, "not converged: {inv:#}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        ensure!(
            reasons.contains("CloudLoadBalancerThrottled"),
            "no PoolService condition said throttled: {reasons:?}"
        );
        ensure!(count(&inv, "LoadBalancers") == S_SERVICES, "duplicates: {inv:#}");
        for s in 0..S_SERVICES {
            harness::eventually(&format!("st{s}'s EIP in its status"), WAIT, || async {
                Ok((harness::objects::ingress(&services, &format!("st{s}")).await?.len() == 1)
                    .then_some(()))
            })
            .await?;
        }
        let took = t.elapsed();
        let throttled = cloud::answers_with(emu, "Throttling.User");
        let calls: u64 = cloud::calls_by_action(emu).values().sum();
        eprintln!(
            "storm: {S_SERVICES} load balancers converged and written in {took:?}; {calls} answers, \
             {throttled} throttled (injected {})",
            S_LISTENER_THROTTLES + S_ANY_THROTTLES
        );
        ensure!(
            throttled == S_LISTENER_THROTTLES + S_ANY_THROTTLES,
            "{throttled} throttled answers: the speaker exceeded the account's 10/s per action \
             (only the {} injected ones expected)",
            S_LISTENER_THROTTLES + S_ANY_THROTTLES
        );
        let events: Api<Event> = Api::namespaced(client.clone(), S_NS);
        let ev = harness::eventually("a CloudLoadBalancerThrottled Event", WAIT, || async {
            let list = events.list(&Default::default()).await?;
            Ok(list
                .items
                .into_iter()
                .find(|e| e.reason.as_deref() == Some("CloudLoadBalancerThrottled")))
        })
        .await?;
        let note = ev.note.unwrap_or_default();
        ensure!(note.contains("Throttling.User"), "{note}");
        // All deleted: nothing left.
        for s in 0..S_SERVICES {
            services.delete(&format!("st{s}"), &DeleteParams::default()).await.ok();
        }
        cloud::inventory_holds(emu, "everything released", 0, 0)
            .await
            .map(drop)
    }
    .await;
    speaker.log_if_failed(result)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttling_storm_converges_within_the_accounts_rate() -> anyhow::Result<()> {
    const TEST: &str = "kube_elb_faults::a_throttling_storm_converges_within_the_accounts_rate";
    let Some((cluster, client)) = harness::cluster_for(TEST).await? else {
        return Ok(());
    };
    let _serial = SERIAL.lock().await;
    let emu = Emulator::start(&["--limit", "*=10"]);
    emu.register(&[(S_NODE.2, "10.0.1.5")]);
    let mut lan = Lan::new()?;
    cloud::bounded(
        TEST,
        Duration::from_secs(240),
        storm_scenario(cluster, &client, &mut lan, &emu),
        cloud::cleanup(&client, S_NS, S_CREDENTIALS, &[S_POOL], &[S_NODE.0]),
    )
    .await?;
    cloud::stop_leaving(emu, 0, 0)
}

// ---------------------------------------------------------------------------------------
// A user's load balancer, with and without force-override-listeners.

const U_NS: &str = "kf-user";
const U_POOL: &str = "np-ku";
const U_CREDENTIALS: &str = "ku-credentials";
const U_NODE: (&str, &str, &str) = ("ku-node", "192.0.2.87", "i-ku1");
const FORCE: &str =
    "service.beta.kubernetes.io/alibaba-cloud-loadbalancer-force-override-listeners";

/// What of the user's ELB must never change: its name, spec and status, its EIP, its own
/// backend and its listener on 8080.
fn users_own(inv: &Value, id: &str) -> anyhow::Result<()> {
    let l = inv["LoadBalancers"]
        .as_array()
        .and_then(|a| a.iter().find(|l| l["LoadBalancerId"] == id))
        .with_context(|| format!("the user's ELB {id} is gone: {inv:#}"))?;
    ensure!(
        l["LoadBalancerName"] == "users-own-elb"
            && l["LoadBalancerSpec"] == "elb.s1.small"
            && l["BackendServers"]["i-user"] == 50
            && l["Listeners"]
                .as_array()
                .is_some_and(|a| a.contains(&json!("tcp/8080"))),
        "the user's ELB changed: {l:#}"
    );
    let eips = inv["EipAddresses"].as_array().cloned().unwrap_or_default();
    ensure!(
        eips.len() == 1 && eips[0]["Name"] == "users-eip" && eips[0]["InstanceId"] == id,
        "the user's EIP changed (or one of ours appeared): {eips:?}"
    );
    Ok(())
}

async fn listener_ports(emu: &Emulator, id: &str) -> anyhow::Result<Vec<(String, u16, u16)>> {
    let mut out: Vec<(String, u16, u16)> = api::listeners(&emu.client(), id)
        .await?
        .into_iter()
        .map(|l| (l.protocol.to_string(), l.port, l.backend_port))
        .collect();
    out.sort();
    Ok(out)
}

async fn user_scenario(
    cluster: &Cluster,
    client: &Client,
    lan: &mut Lan,
    emu: &Emulator,
) -> anyhow::Result<()> {
    // The user's own ELB: 80 -> 31000 and 8080 -> 30999, backend i-user:50, its EIP.
    let c = emu.client();
    let net = NetworkRef {
        region: REGION.into(),
        network_id: "n-emu1".into(),
        vswitch_id: "vsw-emu1".into(),
    };
    let id = api::create_load_balancer(&c, "users-own-elb", &net, "elb.s1.small", "user-1").await?;
    tokio::time::sleep(Duration::from_millis(400)).await;
    for (port, backend) in [(80, 31000), (8080, 30999)] {
        api::create_listener(
            &c,
            &id,
            (Protocol::Tcp, port),
            &support::listener(backend),
            "the user's",
        )
        .await?;
    }
    api::backend_call(&c, "AddBackendServers", &id, &[("i-user".into(), Some(50))]).await?;
    let eip = api::create_eip(&c, "users-eip", REGION, 5).await?;
    api::associate_eip(&c, &eip, &id).await?;
    users_own(&emu.inventory(), &id)?;

    cloud::prepare(client, U_NS, U_CREDENTIALS).await?;
    let (node, ip, instance) = U_NODE;
    cloud::cloud_node(client, node, ip, U_POOL, REGION, instance).await?;
    cloud::ens_pool(client, U_POOL, REGION, json!({"k8s-svc": "mine"})).await?;
    // The Service and its PoolService (annotated with the user's ELB, as the user does)
    // exist before any speaker, so no load balancer of ours is ever made for it.
    let services: Api<Service> = Api::namespaced(client.clone(), U_NS);
    let ports = json!([{"name": "http", "port": 80, "protocol": "TCP"}]);
    let svc = services
        .create(
            &PostParams::default(),
            &cloud::cloud_service(
                U_NS,
                "mine",
                "k8s-svc=mine",
                json!({"service.beta.kubernetes.io/alibaba-cloud-loadbalancer-managed-by-user": "true"}),
                ports,
            )?,
        )
        .await?;
    let node_port = svc.spec.as_ref().unwrap().ports.as_ref().unwrap()[0]
        .node_port
        .context("no nodePort")?;
    let ps_name = format!("mine-{U_POOL}");
    cloud::apply(
        client,
        "the-user",
        "the user's PoolService",
        json!({"apiVersion": "network.openyurt.io/v1alpha1", "kind": "PoolService",
               "metadata": {"name": ps_name, "namespace": U_NS,
                            "labels": {"openyurt.io/service-name": "mine",
                                       "openyurt.io/pool-name": U_POOL,
                                       "poolservice.openyurt.io/managed-by": "edgelb"},
                            "annotations": {"service.beta.kubernetes.io/alibaba-cloud-loadbalancer-id": id},
                            "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": "mine",
                                                 "uid": svc.metadata.uid.clone().unwrap_or_default()}]},
               "spec": {"loadBalancerClass": "alibabacloud.com/elb"}}),
    )
    .await?;

    let netns = lan.join("kun", &format!("{ip}/24"))?;
    let (speaker, _fwd) = cloud::cloud_speaker(
        cluster,
        &netns,
        node,
        ip,
        U_CREDENTIALS,
        "ku-cluster",
        emu.addr,
        100,
        &[],
    )
    .await?;
    let result = async {
        // Without force-override: our backend only; the listeners are the user's.
        inventory_until(emu, "our backend on the user's ELB", |inv| {
            inv["LoadBalancers"].as_array().is_some_and(|a| {
                a.iter()
                    .any(|l| l["LoadBalancerId"] == id && l["BackendServers"]["i-ku1"] == 100)
            })
        })
        .await?;
        let user_eip = emu.inventory()["EipAddresses"][0]["IpAddress"]
            .as_str()
            .unwrap()
            .to_string();
        ingress_is(client, U_NS, "mine", U_POOL, &user_eip).await?;
        // Two more resyncs (2 s each): still untouched.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let inv = emu.inventory();
        users_own(&inv, &id)?;
        ensure!(
            count(&inv, "LoadBalancers") == 1,
            "a load balancer of ours appeared: {inv:#}"
        );
        ensure!(
            listener_ports(emu, &id).await?
                == [("tcp".into(), 80, 31000), ("tcp".into(), 8080, 30999)],
            "the user's listeners were touched without force-override: {:?}",
            listener_ports(emu, &id).await?
        );

        // With force-override: the Service's port 80 forwards to its NodePort; 8080 stays.
        services
            .patch(
                "mine",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {FORCE: "true"}}})),
            )
            .await?;
        let want = vec![
            ("tcp".to_string(), 80, u16::try_from(node_port)?),
            ("tcp".to_string(), 8080, 30999),
        ];
        harness::eventually("listener 80 converged to the NodePort", WAIT, || async {
            let now = listener_ports(emu, &id).await?;
            Ok((now == want).then_some(()))
        })
        .await?;
        inventory_until(emu, "both listeners running again", |inv| {
            inv["LoadBalancers"][0]["Listeners"] == json!(["tcp/80", "tcp/8080"])
        })
        .await?;
        users_own(&emu.inventory(), &id)?;

        // The Service deleted: our backend and our listener go, the user's ELB stays.
        services.delete("mine", &DeleteParams::default()).await?;
        cloud::gone(client, U_NS, "mine", &ps_name).await?;
        let inv = emu.inventory();
        users_own(&inv, &id)?;
        let l = &inv["LoadBalancers"][0];
        ensure!(
            l["BackendServers"] == json!({"i-user": 50}) && l["Listeners"] == json!(["tcp/8080"]),
            "after the delete, only the user's own parts stay: {l:#}"
        );
        let calls = cloud::calls_by_action(emu);
        ensure!(
            !calls.contains_key("CreateLoadBalancer") || calls["CreateLoadBalancer"] == 1,
            "a load balancer was created besides the user's: {calls:?}"
        );
        anyhow::Ok(())
    }
    .await;
    speaker.log_if_failed(result)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_load_balancer_keeps_its_own_listeners_unless_forced() -> anyhow::Result<()> {
    const TEST: &str =
        "kube_elb_faults::a_users_load_balancer_keeps_its_own_listeners_unless_forced";
    let Some((cluster, client)) = harness::cluster_for(TEST).await? else {
        return Ok(());
    };
    let _serial = SERIAL.lock().await;
    let emu = Emulator::start(&[]);
    emu.register(&[(U_NODE.2, "10.0.1.7"), ("i-user", "10.0.1.8")]);
    let mut lan = Lan::new()?;
    cloud::bounded(
        TEST,
        Duration::from_secs(180),
        user_scenario(cluster, &client, &mut lan, &emu),
        cloud::cleanup(&client, U_NS, U_CREDENTIALS, &[U_POOL], &[U_NODE.0]),
    )
    .await?;
    // Only the user's own ELB and EIP stay.
    cloud::stop_leaving(emu, 1, 1)
}
