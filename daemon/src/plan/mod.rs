//! Pure planning: from data (snapshot, node facts) to desired state, without I/O or clock.

pub mod policy_route;
