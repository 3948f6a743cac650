//! edgelb-daemon: turns cluster objects into announcements.
//!
//! sources -> snapshot -> plan -> actuators (see ARCHITECTURE.md).
#![forbid(unsafe_code)]
