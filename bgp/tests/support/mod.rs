//! What the bgp crate's integration tests (and the BFD bench, by `#[path]`) share: test
//! code only, never part of the shipped library. One file per concern.
#![allow(dead_code)]
pub mod bfd;
pub mod speaker;
