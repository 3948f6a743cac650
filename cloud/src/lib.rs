//! Cloud load balancers behind node pools (issue 15).
//!
//! Sources → decide → actuate, as everywhere in edgelb:
//!
//! ```text
//!  PlanInput (Service ports, NodePorts, the pool's nodes with providerIDs, readiness,
//!            endpoints, pool / PoolService annotations)     — built by the daemon
//!      │ plan::plan(profile, input)                           pure
//!      ▼
//!  Desired (name, ownership, network, listeners, backends+weights, EIP)
//!      │ diff::diff(desired, observed) / diff::diff_delete    pure
//!      ▼
//!  Step { actions: [Action], waiting }                       neutral cloud calls
//!      │ LoadBalancerProvider::execute                        one provider's API
//!      ▼
//!  the cloud (ENS OpenAPI 2017-11-10, or the emulator)
//! ```
//!
//! ## A second provider (Huawei ELB, QingCloud, a generic one)
//! It implements [`plan::Profile`] (which pool annotations give its network, e.g. Huawei's
//! `kubernetes.io/elb.subnet-id`; the providerID form; name length; default flavor) and
//! [`provider::LoadBalancerProvider`] (`observe` into [`model::Observed`], `execute` of each
//! [`model::Action`] as its calls: for Huawei ELB v3 `CreateListener` becomes a listener plus
//! a pool, `AddBackends` becomes members of each listener's pool on the listener's node
//! port, `CreateEip`/`AssociateEip` become a publicip bind). The planner, the diff and the
//! converge loop stay as they are: they speak only of listeners by (protocol, port),
//! backends by instance id and weight, one address, and ownership.
#![forbid(unsafe_code)]

pub mod diff;
pub mod ens;
pub mod health;
pub mod model;
pub mod plan;
pub mod provider;

#[cfg(test)]
mod tests;
