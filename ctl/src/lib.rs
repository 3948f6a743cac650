//! `edgelbctl`: the operator's view of edgelb speakers. A library (commands, sources and
//! pure formatting) and a thin binary, so tests drive the same code the binary runs.
#![forbid(unsafe_code)]

pub mod cli;
pub mod format;
pub mod socket;
pub mod source;
