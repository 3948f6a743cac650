//! What the allocation-counting binaries share (the at-rest test `tests/at_rest.rs` and the
//! memory bench `benches/memory.rs`): one counting global allocator and the cluster file
//! they both load. Included by `mod alloc_support;` (the bench by `#[path]`), so the
//! allocator exists only in those binaries, never in the shipped library.
#![allow(unsafe_code)] // GlobalAlloc is an unsafe trait
#![allow(dead_code)] // each binary reads the counters it needs

use std::alloc::{GlobalAlloc, Layout, System};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// A global allocator that passes every call to the system allocator and counts: the
/// allocations made (a `realloc` counts as one) and the bytes they asked for, and the live
/// heap (bytes and allocations requested and not yet freed). Install with
/// `#[global_allocator] static GLOBAL: Counting = Counting::new();`.
pub struct Counting {
    allocs: AtomicU64,
    bytes: AtomicU64,
    live_bytes: AtomicI64,
    live_allocs: AtomicI64,
}

impl Counting {
    /// Zero counts.
    pub const fn new() -> Counting {
        Counting {
            allocs: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            live_bytes: AtomicI64::new(0),
            live_allocs: AtomicI64::new(0),
        }
    }

    /// Allocations made so far and the bytes they asked for (frees not subtracted): the
    /// work a code path does.
    pub fn made(&self) -> (u64, u64) {
        (
            self.allocs.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }

    /// The live heap now: (bytes, allocations) requested and not yet freed.
    pub fn live(&self) -> (i64, i64) {
        (
            self.live_bytes.load(Ordering::Relaxed),
            self.live_allocs.load(Ordering::Relaxed),
        )
    }
}

// SAFETY: every call is passed to the system allocator unchanged; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.allocs.fetch_add(1, Ordering::Relaxed);
        self.bytes
            .fetch_add(layout.size() as u64, Ordering::Relaxed);
        self.live_bytes
            .fetch_add(layout.size() as i64, Ordering::Relaxed);
        self.live_allocs.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        self.live_bytes
            .fetch_sub(layout.size() as i64, Ordering::Relaxed);
        self.live_allocs.fetch_sub(1, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        self.allocs.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(new_size as u64, Ordering::Relaxed);
        self.live_bytes
            .fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// How the Services and EndpointSlices of [`services_yaml`] look.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// As a user writes them in the standalone file.
    File,
    /// As the API server returns them to a watch in cluster mode: with the fields it sets
    /// (uid, resourceVersion, creationTimestamp, the cluster IP, the spec's defaults) and
    /// the IP recorded in the Service's status (what `kubectl get -o json` shows of the
    /// cluster_scale bench's objects).
    Api,
}

/// The cluster file both load: [`services_yaml`] in the file's shape.
pub fn cluster_yaml(n: usize) -> String {
    services_yaml(n, Shape::File)
}

/// A /17 pool, an L2Advertisement and node-a at 198.18.200.1 (an interface holding
/// 198.18.200.1/16 carries every IP of the pool).
const L2_POOL_AND_NODE_A: &str =
    "apiVersion: edgelb.io/v1alpha1\nkind: IPAddressPool\nmetadata: {name: bench, namespace: edgelb-system}\n\
     spec: {addresses: [\"198.18.0.0/17\"]}\n---\n\
     apiVersion: edgelb.io/v1alpha1\nkind: L2Advertisement\nmetadata: {name: all, namespace: edgelb-system}\n\
     spec: {}\n---\n\
     apiVersion: v1\nkind: Node\nmetadata: {name: node-a}\n\
     status: {addresses: [{type: InternalIP, address: \"198.18.200.1\"}]}\n";

/// The cluster file with L2 instead of BGP: [`services_yaml`]'s Services (file shape) with
/// [`L2_POOL_AND_NODE_A`].
pub fn l2_cluster_yaml(n: usize) -> String {
    objects_yaml(L2_POOL_AND_NODE_A, n, Shape::File)
}

/// The cluster_scale bench's layout (cluster mode, L2, three nodes): [`L2_POOL_AND_NODE_A`],
/// node-b and node-c, and `n` Services in `shape` (the API shape's status IPs are in the
/// pool).
pub fn l2_services_yaml(n: usize, shape: Shape) -> String {
    objects_yaml(
        &format!(
            "{L2_POOL_AND_NODE_A}---\n\
             apiVersion: v1\nkind: Node\nmetadata: {{name: node-b}}\n\
             status: {{addresses: [{{type: InternalIP, address: \"198.18.200.2\"}}]}}\n---\n\
             apiVersion: v1\nkind: Node\nmetadata: {{name: node-c}}\n\
             status: {{addresses: [{{type: InternalIP, address: \"198.18.200.3\"}}]}}\n"
        ),
        n,
        shape,
    )
}

/// A pool, a BGP peer on loopback port 1 (nothing listens), an advertisement, node-a, and
/// `n` Services with a ready endpoint on node-a (the objects of `bench/services.py`), in
/// `shape`.
pub fn services_yaml(n: usize, shape: Shape) -> String {
    objects_yaml(
        "apiVersion: edgelb.io/v1alpha1\nkind: IPAddressPool\nmetadata: {name: bench, namespace: edgelb-system}\n\
         spec: {addresses: [\"198.18.0.0/16\"]}\n---\n\
         apiVersion: edgelb.io/v1alpha1\nkind: BGPPeer\nmetadata: {name: router, namespace: edgelb-system}\n\
         spec: {myASN: 64512, peerASN: 64500, peerAddress: \"127.0.0.1\", peerPort: 1}\n---\n\
         apiVersion: edgelb.io/v1alpha1\nkind: BGPAdvertisement\nmetadata: {name: all, namespace: edgelb-system}\n\
         spec: {}\n---\n\
         apiVersion: v1\nkind: Node\nmetadata: {name: node-a}\n\
         status: {addresses: [{type: InternalIP, address: \"127.0.0.1\"}]}\n",
        n,
        shape,
    )
}

/// `header` (pools, peers, advertisements, nodes), then `n` Services with a ready endpoint
/// on node-a in `shape`.
fn objects_yaml(header: &str, n: usize, shape: Shape) -> String {
    let mut s = String::from(header);
    for i in 0..n {
        let (a, b, c) = ((i >> 16) & 255, (i >> 8) & 255, i & 255);
        match shape {
            Shape::File => {
                let _ = write!(
                    s,
                    "---\n{{\"apiVersion\": \"v1\", \"kind\": \"Service\", \"metadata\": {{\"name\": \"s{i}\", \"namespace\": \"bench\"}}, \
                     \"spec\": {{\"type\": \"LoadBalancer\", \"loadBalancerClass\": \"edgelb.io/speaker\", \"ports\": [{{\"port\": 80, \"protocol\": \"TCP\"}}]}}}}\n\
                     ---\n{{\"apiVersion\": \"discovery.k8s.io/v1\", \"kind\": \"EndpointSlice\", \
                     \"metadata\": {{\"name\": \"s{i}-1\", \"namespace\": \"bench\", \"labels\": {{\"kubernetes.io/service-name\": \"s{i}\"}}}}, \
                     \"addressType\": \"IPv4\", \"endpoints\": [{{\"addresses\": [\"10.{a}.{b}.{c}\"], \"nodeName\": \"node-a\", \"conditions\": {{\"ready\": true}}}}], \
                     \"ports\": [{{\"port\": 80, \"protocol\": \"TCP\"}}]}}\n"
                );
            }
            Shape::Api => {
                let _ = write!(
                    s,
                    "---\n{{\"apiVersion\": \"v1\", \"kind\": \"Service\", \"metadata\": {{\"name\": \"s{i:05}\", \"namespace\": \"steady-10000\", \
                     \"creationTimestamp\": \"2026-12-07T07:39:35Z\", \"resourceVersion\": \"{rv}\", \"uid\": \"f3446372-834e-47e1-ac28-{i:012}\"}}, \
                     \"spec\": {{\"allocateLoadBalancerNodePorts\": false, \"clusterIP\": \"10.96.{b}.{c}\", \"clusterIPs\": [\"10.96.{b}.{c}\"], \
                     \"externalTrafficPolicy\": \"Cluster\", \"internalTrafficPolicy\": \"Cluster\", \"ipFamilies\": [\"IPv4\"], \"ipFamilyPolicy\": \"SingleStack\", \
                     \"loadBalancerClass\": \"edgelb.io/speaker\", \"ports\": [{{\"port\": 80, \"protocol\": \"TCP\", \"targetPort\": 80}}], \
                     \"sessionAffinity\": \"None\", \"type\": \"LoadBalancer\"}}, \
                     \"status\": {{\"loadBalancer\": {{\"ingress\": [{{\"ip\": \"198.18.{b}.{c}\", \"ipMode\": \"VIP\"}}]}}}}}}\n\
                     ---\n{{\"apiVersion\": \"discovery.k8s.io/v1\", \"kind\": \"EndpointSlice\", \
                     \"metadata\": {{\"name\": \"s{i:05}-1\", \"namespace\": \"steady-10000\", \"labels\": {{\"kubernetes.io/service-name\": \"s{i:05}\"}}, \
                     \"creationTimestamp\": \"2026-12-07T07:39:35Z\", \"generation\": 1, \"resourceVersion\": \"{rv2}\", \"uid\": \"db6a1f0a-6f65-491e-a0f2-{i:012}\"}}, \
                     \"addressType\": \"IPv4\", \"endpoints\": [{{\"addresses\": [\"10.244.0.5\"], \"nodeName\": \"node-a\", \"conditions\": {{\"ready\": true}}}}], \
                     \"ports\": [{{\"name\": \"\", \"port\": 8080, \"protocol\": \"TCP\"}}]}}\n",
                    rv = 300 + 2 * i,
                    rv2 = 301 + 2 * i,
                );
            }
        }
    }
    s
}
