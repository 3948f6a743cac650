//! The API server's audit log as a check of the speaker's requests.

use anyhow::ensure;
use edgelb_tests::kube::{Cluster, SYSTEM_NAMESPACE};

/// Every request the speakers made (the API server's audit log) was allowed, and is one of
/// `edgelb_daemon::access::all` (which the RBAC test checks against the shipped RBAC): the
/// access table is what the speaker really does.
pub fn speaker_requests_were_granted_and_listed(cluster: &Cluster) -> anyhow::Result<()> {
    let user = format!("system:serviceaccount:{SYSTEM_NAMESPACE}:edgelb-speaker");
    let table = edgelb_daemon::access::all(SYSTEM_NAMESPACE);
    let mut seen = std::collections::BTreeSet::new();
    let mut problems = std::collections::BTreeSet::new();
    for e in cluster.audit_events()? {
        if e.pointer("/user/username").and_then(|u| u.as_str()) != Some(user.as_str()) {
            continue;
        }
        let s = |p: &str| e.pointer(p).and_then(|v| v.as_str()).map(str::to_string);
        let verb = s("/verb").unwrap_or_default();
        let code = e.pointer("/responseStatus/code").and_then(|c| c.as_u64());
        let Some(resource) = s("/objectRef/resource") else {
            seen.insert(format!("{verb} {}", s("/requestURI").unwrap_or_default()));
            continue;
        };
        let group = s("/objectRef/apiGroup").unwrap_or_default();
        let sub = s("/objectRef/subresource").unwrap_or_default();
        let ns = s("/objectRef/namespace");
        let name = s("/objectRef/name");
        let what = format!(
            "{verb} {group}/{resource}{} ns={} name={}",
            if sub.is_empty() {
                String::new()
            } else {
                format!("/{sub}")
            },
            ns.as_deref().unwrap_or("-"),
            name.as_deref().unwrap_or("-")
        );
        if code == Some(403) {
            problems.insert(format!("denied by RBAC: {what}"));
        }
        if !edgelb_daemon::access::covers(
            &table,
            &verb,
            &group,
            &resource,
            &sub,
            ns.as_deref(),
            name.as_deref(),
        ) {
            problems.insert(format!("not in edgelb_daemon::access: {what}"));
        }
        seen.insert(format!("{verb} {group}/{resource}/{sub}"));
    }
    eprintln!("the speaker's request kinds (audit log): {seen:?}");
    ensure!(!seen.is_empty(), "no request of {user} in the audit log");
    ensure!(
        problems.is_empty(),
        "the speaker's requests:\n  {}",
        problems.into_iter().collect::<Vec<_>>().join("\n  ")
    );
    Ok(())
}
