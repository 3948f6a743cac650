//! An emulator of the Alibaba Cloud ENS Edge Load Balancer / EIP OpenAPI (2017-11-10), for
//! tests and the demo: signed requests checked as the gateway does, state that walks the
//! cloud's asynchronous states, paged Describe calls, the cloud's error codes, throttling
//! per action and account, injected faults, a leak report, and a data plane that really
//! forwards TCP and UDP inside a network namespace.
#![forbid(unsafe_code)]

pub mod dataplane;
pub mod server;
pub mod state;
