//! Actuators: each receives a whole desired state and converges the world to it
//! (level-triggered, idempotent, safe to repeat and after a restart). None decides policy.

pub mod bgp;
pub mod interfaces;
pub mod l2;
pub mod policy_route;
pub mod policy_route_netlink;
pub mod policy_route_task;
