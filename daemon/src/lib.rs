//! edgelb-daemon: turns cluster objects into announcements.
//!
//! sources -> snapshot -> plan -> actuators (see ARCHITECTURE.md).
#![forbid(unsafe_code)]

pub mod actuate;
pub mod api;
pub mod fixtures;
pub mod ipam;
pub mod plan;
pub mod selector;
pub mod snapshot;
