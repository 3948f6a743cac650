//! edgelb-daemon: turns cluster objects into announcements.
//!
//! sources -> snapshot -> plan -> actuators (see ARCHITECTURE.md).
#![forbid(unsafe_code)]

pub mod api;
pub mod ipam;
pub mod selector;
