//! The leader's writes to the Kubernetes API: Service `status.loadBalancer` and CRD
//! conditions by server-side apply with field manager `edgelb`, and Events on Services.
//! Only what differs is written, each write inside a timeout; a failed write is logged and
//! retried on the next round (the desired state is recomputed, never queued).

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{LoadBalancerIngress, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource};

use super::changes::Change;
use super::conditions::{updates, ConditionUpdate, INVALID_REASON};
use super::service::{apply_body, current_ingress, desired_ingress};
use super::undecodable::Reported;
use crate::ipam::Assignments;
use crate::snapshot::{ObjectKey, Snapshot};

/// The field manager of every apply.
pub const FIELD_MANAGER: &str = "edgelb";

/// Counts of one round, for logs and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Written {
    /// Service statuses applied.
    pub services: usize,
    /// Objects whose conditions were applied.
    pub conditions: usize,
    /// Events created.
    pub events: usize,
    /// Writes that failed (retried next round).
    pub failed: usize,
}

/// Writes statuses, conditions and Events.
pub struct StatusWriter {
    client: Client,
    recorder: Recorder,
    timeout: Duration,
    /// What we last applied per Service, so a write is not repeated before the watch
    /// delivers the Service with its new status.
    applied: HashMap<ObjectKey, Vec<LoadBalancerIngress>>,
    /// Built-in objects already reported as undecodable.
    undecodable: Reported,
}

impl StatusWriter {
    /// A writer reporting Events as `edgelb` from `instance` (the node name).
    pub fn new(client: Client, instance: &str, timeout: Duration) -> StatusWriter {
        let reporter = Reporter {
            controller: "edgelb".into(),
            instance: Some(instance.to_string()),
        };
        StatusWriter {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            timeout,
            applied: HashMap::new(),
            undecodable: Reported::default(),
        }
    }

    async fn timed<T>(
        &self,
        what: &str,
        f: impl std::future::Future<Output = Result<T, kube::Error>>,
    ) -> bool {
        match tokio::time::timeout(self.timeout, f).await {
            Ok(Ok(_)) => true,
            Ok(Err(e)) => {
                tracing::warn!(what, error = %e, "write failed; retrying next round");
                false
            }
            Err(_) => {
                tracing::warn!(what, timeout = ?self.timeout, "write timed out; retrying next round");
                false
            }
        }
    }

    /// Applies the Service statuses that differ from the snapshot's.
    pub async fn write_services(&mut self, snap: &Snapshot, a: &Assignments, out: &mut Written) {
        self.applied.retain(|k, _| snap.services.contains_key(k));
        for (key, svc) in &snap.services {
            let want = desired_ingress(svc, a.get(key));
            let have = current_ingress(svc);
            if want == have {
                self.applied.remove(key);
                continue;
            }
            if self.applied.get(key) == Some(&want) {
                continue;
            }
            let api: Api<Service> = Api::namespaced(self.client.clone(), &key.namespace);
            let params = PatchParams::apply(FIELD_MANAGER).force();
            let body = apply_body(&want);
            let what = format!("Service {key} status");
            if self
                .timed(
                    &what,
                    api.patch_status(&key.name, &params, &Patch::Apply(&body)),
                )
                .await
            {
                tracing::info!(service = %key, ingress = ?want.iter().filter_map(|i| i.ip.clone()).collect::<Vec<_>>(), "status written");
                self.applied.insert(key.clone(), want);
                out.services += 1;
            } else {
                out.failed += 1;
            }
        }
    }

    /// Applies the `Valid` conditions that differ; each `Valid=False` written also gets a
    /// Warning Event on its object.
    pub async fn write_conditions(&self, snap: &Snapshot, now: Time, out: &mut Written) {
        for up in updates(snap, now) {
            if !self.apply_condition(&up).await {
                out.failed += 1;
                continue;
            }
            out.conditions += 1;
            if let Some((reference, note)) = up.warning() {
                self.warn(&reference, INVALID_REASON, note, out).await;
            }
        }
    }

    /// Warning Events for built-in objects that do not decode, once per version.
    pub async fn write_undecodable(&mut self, snap: &Snapshot, out: &mut Written) {
        for ev in self.undecodable.new_events(snap) {
            if self
                .warn(
                    &ev.reference,
                    super::undecodable::REASON,
                    ev.note.clone(),
                    out,
                )
                .await
            {
                self.undecodable.published(&ev);
            }
        }
    }

    async fn warn(
        &self,
        reference: &k8s_openapi::api::core::v1::ObjectReference,
        reason: &str,
        note: String,
        out: &mut Written,
    ) -> bool {
        let ev = Event {
            type_: EventType::Warning,
            reason: reason.into(),
            note: Some(note),
            action: "Validate".into(),
            secondary: None,
        };
        let what = format!(
            "Event {reason} on {} {}",
            reference.kind.as_deref().unwrap_or_default(),
            reference.name.as_deref().unwrap_or_default()
        );
        let ok = self
            .timed(&what, self.recorder.publish(&ev, reference))
            .await;
        if ok {
            out.events += 1;
        } else {
            out.failed += 1;
        }
        ok
    }

    async fn apply_condition(&self, up: &ConditionUpdate) -> bool {
        let ar = ApiResource {
            group: crate::api::GROUP.into(),
            version: crate::api::VERSION.into(),
            api_version: crate::api::API_VERSION.into(),
            kind: up.kind.into(),
            plural: up.plural.into(),
        };
        let api: Api<DynamicObject> = if up.key.namespace.is_empty() {
            Api::all_with(self.client.clone(), &ar)
        } else {
            Api::namespaced_with(self.client.clone(), &up.key.namespace, &ar)
        };
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let body = up.apply_body();
        let what = format!("{} {} conditions", up.kind, up.key);
        self.timed(
            &what,
            api.patch_status(&up.key.name, &params, &Patch::Apply(&body)),
        )
        .await
    }

    /// Emits one Event per change on Services that still exist.
    pub async fn write_events(&self, snap: &Snapshot, changes: &[Change], out: &mut Written) {
        for change in changes {
            let Some(svc) = snap.services.get(&change.key().service) else {
                tracing::info!(service = %change.key().service, reason = change.reason(), message = %change.message(), "no Event: Service is gone");
                continue;
            };
            let ev = Event {
                type_: if change.event_type() == "Warning" {
                    EventType::Warning
                } else {
                    EventType::Normal
                },
                reason: change.reason().into(),
                note: Some(change.message()),
                action: "Allocate".into(),
                secondary: None,
            };
            let what = format!("Event {} on {}", change.reason(), change.key().service);
            if self
                .timed(&what, self.recorder.publish(&ev, &svc.object_ref(&())))
                .await
            {
                out.events += 1;
            } else {
                out.failed += 1;
            }
        }
    }

    /// Emits one `AnnouncedBy` Event per Service whose announcing nodes changed; returns the
    /// Services written, for [`super::announced::AnnouncedTracker::reported`].
    pub async fn write_announced(
        &self,
        snap: &Snapshot,
        changes: &[(ObjectKey, String)],
        out: &mut Written,
    ) -> Vec<(ObjectKey, String)> {
        let mut written = Vec::new();
        for (key, text) in changes {
            let Some(svc) = snap.services.get(key) else {
                continue;
            };
            let ev = Event {
                type_: EventType::Normal,
                reason: super::announced::REASON.into(),
                note: Some(format!("announced: {text}")),
                action: "Announce".into(),
                secondary: None,
            };
            let what = format!("Event {} on {key}", super::announced::REASON);
            if self
                .timed(&what, self.recorder.publish(&ev, &svc.object_ref(&())))
                .await
            {
                out.events += 1;
                written.push((key.clone(), text.clone()));
            } else {
                out.failed += 1;
            }
        }
        written
    }

    /// One round: Service statuses, conditions, Events.
    pub async fn write(
        &mut self,
        snap: &Snapshot,
        a: &Assignments,
        changes: &[Change],
        now: Time,
    ) -> Written {
        let mut out = Written::default();
        self.write_services(snap, a, &mut out).await;
        self.write_conditions(snap, now, &mut out).await;
        self.write_undecodable(snap, &mut out).await;
        self.write_events(snap, changes, &mut out).await;
        out
    }
}

#[cfg(test)]
#[path = "writer_tests.rs"]
mod tests;
