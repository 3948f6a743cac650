//! IP allocation (IPAM): pure, sticky, deterministic.

pub mod range;
