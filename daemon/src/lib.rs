//! edgelb-daemon: turns cluster objects into announcements.
//!
//! sources -> snapshot -> plan -> actuators (see ARCHITECTURE.md).
#![forbid(unsafe_code)]

pub mod access;
pub mod actuate;
pub mod api;
pub mod cloud_lb;
pub mod election;
pub mod fixtures;
pub mod ipam;
pub mod local_api;
pub mod membership;
pub mod metrics;
#[cfg(test)]
mod mock_api;
pub mod nodepool;
pub mod plan;
pub mod selector;
pub mod service;
pub mod slim;
pub mod snapshot;
pub mod source;
pub mod speaker;
pub mod status;
