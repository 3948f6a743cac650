//! Alibaba Cloud ENS (Edge Node Service) Edge Load Balancer, OpenAPI version 2017-11-10.

pub mod profile;

pub use profile::EnsProfile;
