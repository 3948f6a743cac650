//! Telling the world what was decided: what changed between two allocation runs, the
//! Service status each Service should carry, the local state file of standalone mode, and
//! (leader only) the writes to the Kubernetes API.

pub mod announced;
pub mod changes;
pub mod conditions;
pub mod leader;
pub mod local;
pub mod service;
pub mod writer;
