//! Pure planning: from data (snapshot, node facts) to desired state, without I/O or clock.

pub mod bgp;
pub mod coverage;
pub mod endpoints;
pub mod l2;
pub mod l2_incremental;
pub mod member_seeds;
pub mod node_floor;
pub mod policy_route;
pub mod takeover;

#[cfg(test)]
mod nodepool_tests;
