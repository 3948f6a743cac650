//! edgelb-tests: the network-namespace lab and the end-to-end tests that use it.
//!
//! Everything here runs as root and touches only network namespaces that the test itself
//! creates (named `elb<pid>-<tag>`); addresses come from the documentation ranges
//! (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32) and never leave those
//! namespaces.
#![forbid(unsafe_code)]

pub mod kube;
pub mod lab;
