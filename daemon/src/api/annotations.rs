//! Names of the annotations and labels edgelb reads (SPEC.md, "Service selection",
//! "Node pools and regions", "Pass-through").

/// The default `spec.loadBalancerClass` that marks a Service as ours.
pub const DEFAULT_LOAD_BALANCER_CLASS: &str = "edgelb.io/speaker";
/// Comma-separated list of requested IPs (one per family), as MetalLB's `loadBalancerIPs`.
pub const LOAD_BALANCER_IPS: &str = "edgelb.io/loadBalancerIPs";
/// Name of the `IPAddressPool` the Service wants its IP from.
pub const ADDRESS_POOL: &str = "edgelb.io/address-pool";
/// Sharing key: Services with the same key and compatible ports may share one IP.
pub const ALLOW_SHARED_IP: &str = "edgelb.io/allow-shared-ip";
/// Our pass-through switch: `"true"` writes `ipMode: Proxy`.
pub const PASS_THROUGH: &str = "edgelb.io/pass-through";
/// Huawei CCE's pass-through switch, honoured the same way.
pub const ELB_PASS_THROUGH: &str = "kubernetes.io/elb.pass-through";
/// OpenYurt node pool label on Nodes.
pub const NODEPOOL_LABEL: &str = "apps.openyurt.io/nodepool";
/// Well-known region label, the node pool when the OpenYurt label is absent.
pub const REGION_LABEL: &str = "topology.kubernetes.io/region";
/// Service annotation selecting node pools by their labels (node pools, next issue).
pub const NODEPOOL_SELECTOR: &str = "service.openyurt.io/nodepool-labelselector";

/// The annotation domains a Service's decisions read: edgelb's own (`edgelb.io` and its
/// subdomains), OpenYurt's (`openyurt.io` and its subdomains: topology keys, node-pool
/// selector).
const READ_DOMAINS: [&str; 2] = ["edgelb.io", "openyurt.io"];

/// Annotation key prefixes a Service's decisions read outside those domains: Huawei CCE's
/// pass-through switch (`kubernetes.io/elb.`) and the cloud load balancer's
/// (`service.beta.kubernetes.io/alibaba-cloud-loadbalancer-*`, read by `edgelb-cloud`'s
/// planner through `crate::cloud_lb`).
const READ_PREFIXES: [&str; 2] = [
    "kubernetes.io/elb.",
    "service.beta.kubernetes.io/alibaba-cloud-loadbalancer-",
];

/// The one rule for which Service annotations the store keeps ([`crate::service`]): those
/// some decision reads (the names above), none of the others (Helm's, tools', a
/// `last-applied-configuration` copy of the object), which can be large and are per Service.
pub fn is_read_on_services(key: &str) -> bool {
    let domain = key.split_once('/').map_or("", |(d, _)| d);
    READ_DOMAINS
        .iter()
        .any(|d| domain == *d || domain.strip_suffix(d).is_some_and(|s| s.ends_with('.')))
        || READ_PREFIXES.iter().any(|p| key.starts_with(p))
}
