//! Standalone mode's view of the results: a JSON file with every Service's IPs or reason,
//! rewritten (atomically, by rename) only when it changes. `edgelbctl` and tests read it.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::ipam::Assignments;

/// One Service in the state file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceState {
    /// Assigned IPs (empty on failure).
    #[serde(default)]
    pub ips: Vec<String>,
    /// The pool, when assigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// Why there is no IP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The whole state file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalState {
    /// Node this speaker runs as.
    pub node: String,
    /// `namespace/name` (with `@pool` for node-pool allocations) -> state.
    pub services: BTreeMap<String, ServiceState>,
}

impl LocalState {
    /// The state for a set of assignments.
    pub fn new(node: &str, a: &Assignments) -> LocalState {
        let services = a
            .outcomes
            .iter()
            .map(|(k, o)| {
                let name = match &k.node_pool {
                    Some(p) => format!("{}@{p}", k.service),
                    None => k.service.to_string(),
                };
                let state = match o {
                    Ok(a) => ServiceState {
                        ips: a.ips.iter().map(ToString::to_string).collect(),
                        pool: Some(a.pool.to_string()),
                        error: None,
                    },
                    Err(e) => ServiceState {
                        ips: vec![],
                        pool: None,
                        error: Some(e.to_string()),
                    },
                };
                (name, state)
            })
            .collect();
        LocalState {
            node: node.to_string(),
            services,
        }
    }

    /// Writes the file atomically (temp file + rename) when its content would change.
    /// Returns whether it wrote.
    pub fn write_if_changed(&self, path: &Path) -> std::io::Result<bool> {
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)? + "\n";
        if std::fs::read_to_string(path).is_ok_and(|old| old == text) {
            return Ok(false);
        }
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, path)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipam::{Allocation, AllocationError, AllocationKey};
    use crate::snapshot::ObjectKey;

    #[test]
    fn state_file_is_written_only_on_change() {
        let dir = std::env::temp_dir().join(format!("edgelb-local-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("state.json");
        let mut a = Assignments::default();
        a.outcomes.insert(
            AllocationKey::cluster(ObjectKey::new("default", "web")),
            Ok(Allocation {
                pool: "lan".into(),
                ips: vec!["192.0.2.1".parse().expect("ip")],
            }),
        );
        a.outcomes.insert(
            AllocationKey::cluster(ObjectKey::new("default", "x")),
            Err(AllocationError::NoEligiblePool),
        );
        let s = LocalState::new("n1", &a);
        assert!(s.write_if_changed(&path).expect("write"));
        assert!(!s.write_if_changed(&path).expect("write"));
        let back: LocalState =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
        assert_eq!(back.services["default/web"].ips, vec!["192.0.2.1"]);
        assert_eq!(
            back.services["default/x"].error.as_deref(),
            Some("no IPAddressPool with autoAssign serves this Service")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
