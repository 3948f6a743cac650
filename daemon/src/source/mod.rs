//! Sources: where cluster objects come from. Both feed a [`crate::snapshot::Store`] and
//! publish immutable snapshots on a `tokio::sync::watch` channel, so a consumer always sees
//! the latest complete view and a failing source simply publishes nothing new (fail-static).

pub mod decode;
pub mod file;
pub mod kube;
