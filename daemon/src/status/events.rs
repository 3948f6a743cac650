//! Events (`events.k8s.io/v1`) that tell the truth, posted by the writer of record.
//!
//! Each Event's name is derived from what it says (the Service's UID, reason and note), so
//! "already reported" is recorded in the API itself: a new leader that would post the same
//! Event again gets 409 and leaves it alone, whatever the last leader got to post. A true
//! repeat (the same thing happening again, which the writer knows because it saw the
//! state change in between) bumps the Event's `series` instead of adding another Event.

use std::hash::Hasher;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ObjectReference, Service};
use k8s_openapi::api::events::v1::{Event, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, Resource};
use serde_json::json;

/// The reporting controller of every Event.
pub const CONTROLLER: &str = "edgelb.io/speaker";

/// One Event to post about a Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// `IPAllocated`, `AllocationFailed`, `IPReleased`, `AnnouncedBy`.
    pub reason: &'static str,
    /// `Normal` or `Warning`.
    pub type_: &'static str,
    /// `Allocate` or `Announce`.
    pub action: &'static str,
    /// What happened, for people.
    pub note: String,
}

/// How a post ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Posted {
    /// A new Event.
    Created,
    /// The same Event existed (posted by this or an earlier leader): nothing written.
    AlreadyReported,
    /// A true repeat: the existing Event's series now counts this many.
    Repeated(i32),
}

/// The Event's name: the object's name and a hash of what the Event says about this very
/// object (its kind and UID), so the same report always has the same name.
pub fn event_name(regarding: &ObjectReference, note: &Note) -> String {
    let mut h = siphasher::sip::SipHasher13::new_with_keys(0, 0);
    for part in [
        regarding.kind.as_deref().unwrap_or_default(),
        regarding.uid.as_deref().unwrap_or_default(),
        note.reason,
        &note.note,
    ] {
        h.write(part.as_bytes());
        h.write_u8(0);
    }
    let name: String = regarding
        .name
        .as_deref()
        .unwrap_or("object")
        .chars()
        .take(200)
        .collect();
    // 253 characters at most.
    format!("{name}.{:016x}", h.finish())
}

/// Where an Event about `regarding` lives: its namespace, `default` for cluster-scoped
/// objects.
fn event_namespace(regarding: &ObjectReference) -> String {
    regarding
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".into())
}

/// The Event object for `note` about `regarding`, reported by `instance` at `now`.
pub fn event(regarding: &ObjectReference, note: &Note, instance: &str, now: Timestamp) -> Event {
    Event {
        metadata: ObjectMeta {
            name: Some(event_name(regarding, note)),
            namespace: Some(event_namespace(regarding)),
            ..Default::default()
        },
        event_time: Some(MicroTime(now)),
        action: Some(note.action.into()),
        reason: Some(note.reason.into()),
        note: Some(note.note.chars().take(1024).collect()),
        type_: Some(note.type_.into()),
        regarding: Some(regarding.clone()),
        reporting_controller: Some(CONTROLLER.into()),
        reporting_instance: Some(instance.chars().take(128).collect()),
        ..Default::default()
    }
}

/// Posts `note` about `svc`; see [`post_about`].
pub async fn post(
    client: &Client,
    instance: &str,
    svc: &Service,
    note: &Note,
    repeat: bool,
    timeout: Duration,
) -> Result<Posted, String> {
    post_about(
        client,
        instance,
        &svc.object_ref(&()),
        note,
        repeat,
        timeout,
    )
    .await
}

/// Posts `note` about `regarding`. `repeat`: the writer saw the state change away and
/// back since it last reported this, so an existing Event is a true repeat (series
/// bumped); otherwise an existing Event means it was already reported.
pub async fn post_about(
    client: &Client,
    instance: &str,
    regarding: &ObjectReference,
    note: &Note,
    repeat: bool,
    timeout: Duration,
) -> Result<Posted, String> {
    let api: Api<Event> = Api::namespaced(client.clone(), &event_namespace(regarding));
    let ev = event(regarding, note, instance, Timestamp::now());
    let name = ev.metadata.name.clone().unwrap_or_default();
    match tokio::time::timeout(timeout, api.create(&PostParams::default(), &ev)).await {
        Ok(Ok(_)) => return Ok(Posted::Created),
        Ok(Err(kube::Error::Api(s))) if s.code == 409 => {}
        Ok(Err(e)) => return Err(format!("Event {name}: {e}")),
        Err(_) => return Err(format!("Event {name}: timed out")),
    }
    if !repeat {
        return Ok(Posted::AlreadyReported);
    }
    let existing = match tokio::time::timeout(timeout, api.get(&name)).await {
        Ok(Ok(e)) => e,
        Ok(Err(e)) => return Err(format!("Event {name}: {e}")),
        Err(_) => return Err(format!("Event {name}: timed out")),
    };
    let count = existing.series.map_or(1, |s| s.count) + 1;
    let series = EventSeries {
        count,
        last_observed_time: MicroTime(Timestamp::now()),
    };
    let body = json!({ "series": series });
    match tokio::time::timeout(
        timeout,
        api.patch(&name, &PatchParams::default(), &Patch::Merge(&body)),
    )
    .await
    {
        Ok(Ok(_)) => Ok(Posted::Repeated(count)),
        Ok(Err(e)) => Err(format!("Event {name} series: {e}")),
        Err(_) => Err(format!("Event {name} series: timed out")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::service;
    use crate::mock_api::{scripted, status_error, Call};

    fn svc() -> Service {
        let mut s = service("default", "web", 80);
        s.metadata.uid = Some("uid-1".into());
        s
    }

    fn allocated(ip: &str) -> Note {
        Note {
            reason: "IPAllocated",
            type_: "Normal",
            action: "Allocate",
            note: format!("assigned IP {ip} from pool lan"),
        }
    }

    fn name(s: &Service, n: &Note) -> String {
        event_name(&s.object_ref(&()), n)
    }

    #[test]
    fn the_name_follows_what_is_said_about_which_object() {
        let a = name(&svc(), &allocated("192.0.2.1"));
        assert!(a.starts_with("web."), "{a}");
        assert_eq!(a, name(&svc(), &allocated("192.0.2.1")), "stable");
        assert_ne!(a, name(&svc(), &allocated("192.0.2.2")), "another note");
        let mut again = svc();
        again.metadata.uid = Some("uid-2".into());
        assert_ne!(
            a,
            name(&again, &allocated("192.0.2.1")),
            "a re-created Service"
        );
    }

    const URL: &str = "/apis/events.k8s.io/v1/namespaces/default/events";

    #[tokio::test]
    async fn a_new_event_then_an_old_one_left_alone_then_a_true_repeat_counted() {
        let ev_name = name(&svc(), &allocated("192.0.2.1"));
        let (client, server) = scripted(vec![
            Call::new("POST", format!("{URL}?"), 201, json!({})).check_body(|b| {
                assert_eq!(b["reason"], "IPAllocated");
                assert_eq!(b["note"], "assigned IP 192.0.2.1 from pool lan");
                assert_eq!(b["regarding"]["name"], "web");
                assert_eq!(b["regarding"]["uid"], "uid-1");
                assert_eq!(b["reportingInstance"], "node-b");
                assert_eq!(b["reportingController"], CONTROLLER);
                assert!(b["eventTime"].is_string());
            }),
            Call::new(
                "POST",
                format!("{URL}?"),
                409,
                status_error(409, "AlreadyExists"),
            ),
            Call::new(
                "POST",
                format!("{URL}?"),
                409,
                status_error(409, "AlreadyExists"),
            ),
            Call::new(
                "GET",
                format!("{URL}/{ev_name}"),
                200,
                serde_json::to_value(event(
                    &svc().object_ref(&()),
                    &allocated("192.0.2.1"),
                    "node-a",
                    Timestamp::now(),
                ))
                .expect("json"),
            ),
            Call::new("PATCH", format!("{URL}/{ev_name}?"), 200, json!({})).check_body(|b| {
                assert_eq!(b["series"]["count"], 2);
                assert!(b["series"]["lastObservedTime"].is_string());
            }),
        ]);
        let t = Duration::from_secs(2);
        let note = allocated("192.0.2.1");
        assert_eq!(
            post(&client, "node-b", &svc(), &note, false, t).await,
            Ok(Posted::Created)
        );
        assert_eq!(
            post(&client, "node-b", &svc(), &note, false, t).await,
            Ok(Posted::AlreadyReported)
        );
        assert_eq!(
            post(&client, "node-b", &svc(), &note, true, t).await,
            Ok(Posted::Repeated(2))
        );
        server.await.expect("every call came");
    }
}
