//! Alibaba Cloud ENS (Edge Node Service) Edge Load Balancer, OpenAPI version 2017-11-10.

pub mod api;
pub mod client;
pub mod credentials;
pub mod profile;
pub mod provider;
pub mod sign;

pub use client::{ClientConfig, EnsClient, EnsError, RetryPolicy};
pub use credentials::Credentials;
pub use profile::EnsProfile;
pub use provider::EnsProvider;
