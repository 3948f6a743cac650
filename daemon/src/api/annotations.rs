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
