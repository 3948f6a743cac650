//! Kubernetes API types of edgelb: the CRDs (group `edgelb.io`, version `v1alpha1`), the
//! annotations we read, the pure `validate` of every kind and the CRD YAML generator.
//!
//! Kinds and field names follow MetalLB's `metallb.io/v1beta1` where the meaning is the same,
//! so a MetalLB user moves by changing the API group (SPEC.md, "IP pools, peers,
//! advertisements").

pub mod annotations;
pub mod bfd_profile;
pub mod bgp_advertisement;
pub mod bgp_peer;
pub mod community;
pub mod crd_gen;
pub mod duration;
pub mod ip_address_pool;
pub mod l2_advertisement;
pub mod openyurt;
pub mod policy_route;
pub mod status;
pub mod validate;

pub use bfd_profile::{BFDProfile, BFDProfileSpec};
pub use bgp_advertisement::{BGPAdvertisement, BGPAdvertisementSpec};
pub use bgp_peer::{BGPPeer, BGPPeerSpec};
pub use community::{Community, CommunityAlias, CommunitySpec};
pub use ip_address_pool::{IPAddressPool, IPAddressPoolSpec, ServiceAllocation};
pub use l2_advertisement::{L2Advertisement, L2AdvertisementSpec};
pub use policy_route::{PolicyRoute, PolicyRouteSpec};
pub use status::ObjectStatus;

/// The API group of every edgelb CRD.
pub const GROUP: &str = "edgelb.io";
/// The API version of every edgelb CRD.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` as written in manifests.
pub const API_VERSION: &str = "edgelb.io/v1alpha1";
