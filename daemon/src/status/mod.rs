//! Telling the world what was decided: what changed between two allocation runs, the
//! Service status each Service should carry, the local state file of standalone mode, and
//! the writes to the Kubernetes API: the leader's (Services, `Valid` conditions, Events), and
//! each speaker's own `Installed.<node>` condition on the `PolicyRoute`s.

pub mod announced;
pub mod changes;
pub mod conditions;
pub mod events;
pub mod leader;
pub mod local;
pub mod pass_through;
pub mod policy_route;
pub mod pool_ingress;
pub mod pool_service_writer;
pub mod pool_services;
pub mod queue;
pub mod record;
pub mod scope;
pub mod service;
pub mod undecodable;
pub mod writer;
