//! The PoolService fan-out, as a pure plan (SPEC.md, "Node pools and regions"): for each of
//! our Services with `service.openyurt.io/nodepool-labelselector`, one `PoolService` per
//! selected node pool, named `<service>-<pool>`, labelled with both, owned by both, and a
//! finalizer on the Service until its PoolServices are gone. The writer of record
//! ([`super::pool_service_writer`]) carries the plan out.
//!
//! Lifecycle, all by the same rule (a PoolService of ours that is not wanted goes):
//! the Service is deleted (or stops being ours, or loses the annotation), the pool is
//! deleted, the selector stops selecting the pool, the pool's labels stop matching. Only
//! PoolServices of ours ([`is_ours`]: our `managed-by` label and our class) are ever
//! changed or deleted; a foreign one with the name we want is a conflict, reported.
//! A selector that does not parse is reported and changes nothing (the Service's
//! PoolServices stay as they are until it is fixed).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use crate::api::openyurt::{
    PoolService, PoolServiceSpec, LABEL_MANAGED_BY, LABEL_POOL_NAME, LABEL_SERVICE_NAME,
    MANAGED_BY, NODEPOOL_API_VERSION,
};
use crate::nodepool::{is_self_announced_in, selected_node_pools};
use crate::service::ServiceFacts;
use crate::snapshot::{has_finalizer, ObjectKey, Selection, Snapshot};
use crate::status::pool_ingress::{CloudReports, CLOUD_FINALIZER};

/// The name of a Service's PoolService for a pool (OpenYurt's rule).
pub fn pool_service_name(service: &str, pool: &str) -> String {
    format!("{service}-{pool}")
}

/// Why a name cannot be an object name (a DNS-1123 subdomain, at most 253 characters).
fn name_problem(name: &str) -> Option<String> {
    if name.len() > 253 {
        return Some(format!("{} characters, at most 253", name.len()));
    }
    let ok_label = |l: &str| {
        !l.is_empty()
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    (!name.split('.').all(ok_label))
        .then(|| "not a DNS-1123 subdomain (lower-case letters, digits, '-' and '.')".into())
}

/// Whether a class is one we serve (as [`crate::snapshot::is_ours`] reads a Service's).
pub fn class_is_ours(class: Option<&str>, sel: &Selection) -> bool {
    match class {
        Some(c) => c == sel.class,
        None => sel.default_class,
    }
}

/// Whether a PoolService is ours to change: our `managed-by` label and our class.
pub fn is_ours(ps: &PoolService, sel: &Selection) -> bool {
    ps.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(LABEL_MANAGED_BY))
        .is_some_and(|m| m == MANAGED_BY)
        && class_is_ours(ps.spec.load_balancer_class.as_deref(), sel)
}

/// The (Service, pool) a PoolService of ours stands for, from its labels.
pub fn owner_of(ps: &PoolService) -> Option<(ObjectKey, Arc<str>)> {
    let labels = ps.metadata.labels.as_ref()?;
    Some((
        ObjectKey::new(
            ps.metadata.namespace.as_deref().unwrap_or_default(),
            labels.get(LABEL_SERVICE_NAME)?,
        ),
        labels.get(LABEL_POOL_NAME)?.as_str().into(),
    ))
}

/// A problem of one Service's fan-out, for a Warning Event on the Service.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    /// The Service.
    pub service: ObjectKey,
    /// `InvalidNodePoolSelector`, `PoolServiceConflict` or `InvalidPoolServiceName`.
    pub reason: &'static str,
    /// What is wrong, naming the objects and the annotation.
    pub message: String,
}

/// What the fan-out should change now.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// PoolServices to create (`existing: None`) or to bring back to shape (ours).
    pub apply: Vec<Apply>,
    /// PoolServices of ours to delete: key and UID (the delete's precondition).
    pub delete: Vec<(ObjectKey, String)>,
    /// Services that need our finalizer.
    pub add_finalizer: Vec<ObjectKey>,
    /// Services whose PoolServices are all gone and that no longer need our finalizer.
    pub remove_finalizer: Vec<ObjectKey>,
    /// PoolServices of ours being deleted whose cloud resources are released: their
    /// [`CLOUD_FINALIZER`] goes (key, UID).
    pub release: Vec<(ObjectKey, String)>,
    /// Problems to report.
    pub problems: Vec<Problem>,
    /// Every wanted (Service, pool), with its PoolService's key (for the status writer).
    pub wanted: BTreeMap<(ObjectKey, Arc<str>), ObjectKey>,
}

/// One PoolService as it should be.
#[derive(Clone, Debug, PartialEq)]
pub struct Apply {
    /// The object (metadata: name, namespace, labels, ownerReferences; spec).
    pub object: PoolService,
    /// The UID of the PoolService of ours it replaces, `None` to create.
    pub existing: Option<String>,
}

/// The desired PoolService of `svc` for `pool`.
pub fn desired(snap: &Snapshot, svc: &ServiceFacts, pool: &str) -> PoolService {
    desired_with(snap, svc, pool, &CloudReports::default())
}

/// Whether a PoolService carries [`CLOUD_FINALIZER`].
pub fn has_cloud_finalizer(ps: &PoolService) -> bool {
    ps.metadata
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == CLOUD_FINALIZER)
}

/// [`desired`], with [`CLOUD_FINALIZER`] while the cloud driver holds resources for a pool
/// of a cloud class.
pub fn desired_with(
    snap: &Snapshot,
    svc: &ServiceFacts,
    pool: &str,
    cloud: &CloudReports,
) -> PoolService {
    let svc_name = svc.key.name.to_string();
    let mut owners = vec![OwnerReference {
        api_version: "v1".into(),
        kind: "Service".into(),
        name: svc_name.clone(),
        uid: svc.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }];
    if let Some(np) = snap.node_pool_objects.get(pool) {
        owners.push(OwnerReference {
            api_version: NODEPOOL_API_VERSION.into(),
            kind: "NodePool".into(),
            name: pool.to_string(),
            uid: np.metadata.uid.clone().unwrap_or_default(),
            controller: None,
            block_owner_deletion: None,
        });
    }
    // The pool's source, not only the Service's class: a pool annotated with a cloud class
    // is behind a cloud load balancer even for a self-announced Service.
    let holds = !is_self_announced_in(svc, snap.node_pools.get(pool))
        && cloud.holds(&(svc.key.clone(), Arc::from(pool)));
    PoolService {
        metadata: ObjectMeta {
            finalizers: holds.then(|| vec![CLOUD_FINALIZER.to_string()]),
            name: Some(pool_service_name(&svc_name, pool)),
            namespace: svc.namespace().map(str::to_string),
            labels: Some(BTreeMap::from([
                (LABEL_SERVICE_NAME.to_string(), svc_name),
                (LABEL_POOL_NAME.to_string(), pool.to_string()),
                (LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string()),
            ])),
            owner_references: Some(owners),
            ..Default::default()
        },
        spec: PoolServiceSpec {
            load_balancer_class: svc.class().map(str::to_string),
        },
        status: None,
    }
}

/// Whether an existing PoolService of ours already has the desired labels, owners and spec
/// (other labels and owners someone added are left alone).
fn in_shape(have: &PoolService, want: &PoolService) -> bool {
    let labels_ok = want.metadata.labels.iter().flatten().all(|(k, v)| {
        have.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(k))
            .is_some_and(|x| x == v)
    });
    let owners_ok = want.metadata.owner_references.iter().flatten().all(|w| {
        have.metadata
            .owner_references
            .iter()
            .flatten()
            .any(|h| h.uid == w.uid && h.kind == w.kind && h.name == w.name)
    });
    let finalizer_ok = !has_cloud_finalizer(want)
        || has_cloud_finalizer(have)
        || have.metadata.deletion_timestamp.is_some();
    labels_ok && owners_ok && finalizer_ok && have.spec == want.spec
}

/// The plan for a snapshot: what to create, fix and delete, which finalizers to add and
/// remove, and what to report. Pure.
pub fn plan(snap: &Snapshot) -> Plan {
    plan_with(snap, &CloudReports::default())
}

/// [`plan`] with the cloud driver's reports: [`CLOUD_FINALIZER`] is kept on a cloud-class
/// PoolService while the driver holds its resources, and released once it is being
/// deleted and the driver (synced this term) holds none.
pub fn plan_with(snap: &Snapshot, cloud: &CloudReports) -> Plan {
    let sel = &snap.selection;
    let mut out = Plan::default();
    // Our PoolServices by Service.
    let mut ours: BTreeMap<ObjectKey, Vec<(&ObjectKey, &Arc<PoolService>)>> = BTreeMap::new();
    for (key, ps) in &snap.pool_services {
        if is_ours(ps, sel) {
            if let Some((svc, _)) = owner_of(ps) {
                ours.entry(svc).or_default().push((key, ps));
            }
        }
    }
    // Services whose PoolServices stay as they are (their selector does not parse).
    let mut frozen: BTreeSet<ObjectKey> = BTreeSet::new();
    let mut wanted_keys: BTreeSet<ObjectKey> = BTreeSet::new();

    for (key, svc) in &snap.services {
        let deleting = svc.deleting;
        let selected = if deleting {
            Ok(None)
        } else {
            selected_node_pools(svc, &snap.node_pools)
        };
        let pools = match selected {
            Ok(p) => p,
            Err(e) => {
                out.problems.push(Problem {
                    service: key.clone(),
                    reason: "InvalidNodePoolSelector",
                    message: e.to_string(),
                });
                frozen.insert(key.clone());
                continue;
            }
        };
        let Some(pools) = pools else {
            continue;
        };
        if !has_finalizer(svc) {
            out.add_finalizer.push(key.clone());
        }
        for pool in pools {
            let want = desired_with(snap, svc, &pool, cloud);
            let name = want.metadata.name.clone().unwrap_or_default();
            let ps_key = ObjectKey::new(&key.namespace, &name);
            if let Some(problem) = name_problem(&name) {
                out.problems.push(Problem {
                    service: key.clone(),
                    reason: "InvalidPoolServiceName",
                    message: format!(
                        "Service {key}: node pool {pool:?} selected by annotation {}: PoolService name {name:?} is {problem}; this pool gets no entry point",
                        crate::api::annotations::NODEPOOL_SELECTOR
                    ),
                });
                continue;
            }
            wanted_keys.insert(ps_key.clone());
            match snap.pool_services.get(&ps_key) {
                Some(have)
                    if is_ours(have, sel)
                        && owner_of(have).is_some_and(|(s, p)| s == *key && *p == *pool) =>
                {
                    out.wanted
                        .insert((key.clone(), pool.clone()), ps_key.clone());
                    if !in_shape(have, &want) {
                        out.apply.push(Apply {
                            object: want,
                            existing: have.metadata.uid.clone(),
                        });
                    }
                }
                Some(have) => {
                    let manager = have
                        .metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(LABEL_MANAGED_BY))
                        .map_or("nobody (no label)".to_string(), |m| format!("{m:?}"));
                    out.problems.push(Problem {
                        service: key.clone(),
                        reason: "PoolServiceConflict",
                        message: format!(
                            "Service {key}: PoolService {ps_key} for node pool {pool:?} already exists and is not edgelb's (managed by {manager}, class {:?}); it is left alone and this pool gets no entry point from edgelb",
                            have.spec.load_balancer_class.as_deref().unwrap_or("none")
                        ),
                    });
                }
                None => {
                    out.wanted
                        .insert((key.clone(), pool.clone()), ps_key.clone());
                    out.apply.push(Apply {
                        object: want,
                        existing: None,
                    });
                }
            }
        }
    }

    // Ours that nothing wants any more go; a Service whose ours are all gone loses the
    // finalizer (unless it still fans out).
    let wants_finalizer = |key: &ObjectKey, svc: &ServiceFacts| {
        !svc.deleting
            && snap.services.contains_key(key)
            && (frozen.contains(key)
                || matches!(selected_node_pools(svc, &snap.node_pools), Ok(Some(_))))
    };
    for list in ours.values() {
        for (ps_key, ps) in list {
            let releasable = ps.metadata.deletion_timestamp.is_some()
                && has_cloud_finalizer(ps)
                && owner_of(ps).is_some_and(|k| cloud.released(&k));
            if releasable {
                out.release.push((
                    (*ps_key).clone(),
                    ps.metadata.uid.clone().unwrap_or_default(),
                ));
            }
        }
    }
    for (svc_key, list) in &ours {
        if frozen.contains(svc_key) {
            continue;
        }
        for (ps_key, ps) in list {
            if !wanted_keys.contains(*ps_key) && ps.metadata.deletion_timestamp.is_none() {
                out.delete.push((
                    (*ps_key).clone(),
                    ps.metadata.uid.clone().unwrap_or_default(),
                ));
            }
        }
    }
    for (key, svc) in snap.services.iter().chain(snap.finalized_elsewhere.iter()) {
        if has_finalizer(svc) && !wants_finalizer(key, svc) && !ours.contains_key(key) {
            out.remove_finalizer.push(key.clone());
        }
    }
    out
}

#[cfg(test)]
#[path = "pool_services_tests.rs"]
mod tests;
