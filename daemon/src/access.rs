//! Everything the speaker asks of the API server, as RBAC sees it: the reads come from the
//! watch table the watchers are built from ([`crate::source::kube::WATCHES`]) and
//! [`READS`], the writes from [`WRITES`]. The RBAC test (`daemon/tests/kube_rbac.rs`) checks each entry with a
//! SubjectAccessReview against the shipped RBAC, and the cluster test checks, from the API
//! server's audit log, that every request the running speaker made is one of these.

use crate::source::kube::{Reach, WATCHES};

/// One request of the speaker outside its watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant {
    /// API group (`""` for core).
    pub group: &'static str,
    /// URL plural.
    pub resource: &'static str,
    /// Subresource (`""` for the object itself).
    pub subresource: &'static str,
    /// RBAC verbs.
    pub verbs: &'static [&'static str],
    /// Where.
    pub reach: Reach,
    /// The one object name, where the speaker only ever touches one.
    pub name: Option<&'static str>,
    /// Who writes, for the reader.
    pub by: &'static str,
}

/// The Lease the leader holds (`LeaseConfig::default().name`).
pub const LEADER_LEASE: &str = "edgelb-leader";

/// Every write of the speaker.
pub const WRITES: &[Grant] = &[
    Grant {
        group: "",
        resource: "services",
        subresource: "status",
        verbs: &["patch"],
        reach: Reach::Cluster,
        name: None,
        by: "status::writer: status.loadBalancer by server-side apply",
    },
    Grant {
        group: crate::api::GROUP,
        resource: "ipaddresspools",
        subresource: "status",
        verbs: &["patch"],
        reach: Reach::SpeakerNamespace,
        name: None,
        by: "status::writer: the Valid condition",
    },
    Grant {
        group: crate::api::GROUP,
        resource: "bgppeers",
        subresource: "status",
        verbs: &["patch"],
        reach: Reach::SpeakerNamespace,
        name: None,
        by: "status::writer: the Valid condition",
    },
    Grant {
        group: crate::api::GROUP,
        resource: "bgpadvertisements",
        subresource: "status",
        verbs: &["patch"],
        reach: Reach::SpeakerNamespace,
        name: None,
        by: "status::writer: the Valid condition",
    },
    Grant {
        group: crate::api::GROUP,
        resource: "l2advertisements",
        subresource: "status",
        verbs: &["patch"],
        reach: Reach::SpeakerNamespace,
        name: None,
        by: "status::writer: the Valid condition",
    },
    Grant {
        group: crate::api::GROUP,
        resource: "communities",
        subresource: "status",
        verbs: &["patch"],
        reach: Reach::SpeakerNamespace,
        name: None,
        by: "status::writer: the Valid condition",
    },
    Grant {
        group: crate::api::GROUP,
        resource: "bfdprofiles",
        subresource: "status",
        verbs: &["patch"],
        reach: Reach::SpeakerNamespace,
        name: None,
        by: "status::writer: the Valid condition",
    },
    Grant {
        group: crate::api::GROUP,
        resource: "policyroutes",
        subresource: "status",
        verbs: &["patch"],
        reach: Reach::Cluster,
        name: None,
        by: "status::policy_route: Valid and each node's Installed.<node> condition",
    },
    Grant {
        group: "",
        resource: "services",
        subresource: "",
        // RBAC cannot limit a patch to metadata.finalizers; the speaker's only such patch is
        // a server-side apply of its own finalizer (manager `edgelb-pool-services`).
        verbs: &["patch"],
        reach: Reach::Cluster,
        name: None,
        by: "status::pool_service_writer: the PoolService finalizer on a Service that fans out",
    },
    Grant {
        group: crate::api::openyurt::POOLSERVICE_GROUP,
        resource: "poolservices",
        subresource: "",
        // `get`: the fresh read before a cloud finalizer is removed from a deleting one.
        verbs: &["create", "get", "patch", "delete"],
        reach: Reach::Cluster,
        name: None,
        by: "status::pool_service_writer: one PoolService per (Service, selected node pool), its cloud finalizer",
    },
    Grant {
        group: crate::api::openyurt::POOLSERVICE_GROUP,
        resource: "poolservices",
        subresource: "status",
        verbs: &["patch"],
        reach: Reach::Cluster,
        name: None,
        by: "status::writer: the pool's status.loadBalancer and condition (status::pool_ingress)",
    },
    Grant {
        group: "events.k8s.io",
        resource: "events",
        subresource: "",
        // Named after what they say: a 409 on create is a repeat, read and patched.
        verbs: &["create", "get", "patch"],
        reach: Reach::Cluster,
        name: None,
        by: "status::events: Events on Services and our objects; a true repeat bumps its series",
    },
    Grant {
        group: "coordination.k8s.io",
        resource: "leases",
        subresource: "",
        // `create` cannot be limited to a name in RBAC.
        verbs: &["create"],
        reach: Reach::SpeakerNamespace,
        name: None,
        by: "status::leader: the first speaker creates the Lease",
    },
    Grant {
        group: "coordination.k8s.io",
        resource: "leases",
        subresource: "",
        verbs: &["get", "update"],
        reach: Reach::SpeakerNamespace,
        name: Some(LEADER_LEASE),
        by: "status::leader: read, renew and take over the Lease",
    },
    Grant {
        group: "authentication.k8s.io",
        resource: "tokenreviews",
        subresource: "",
        verbs: &["create"],
        reach: Reach::Cluster,
        name: None,
        by: "local_api::remote: who the caller of the view port is",
    },
    Grant {
        group: "authorization.k8s.io",
        resource: "subjectaccessreviews",
        subresource: "",
        verbs: &["create"],
        reach: Reach::Cluster,
        name: None,
        by: "local_api::remote: whether that caller may get pods/proxy",
    },
];

/// Every read of the speaker besides its watches' lists and watches.
pub const READS: &[Grant] = &[Grant {
    group: "",
    resource: "services",
    subresource: "",
    verbs: &["get"],
    reach: Reach::Cluster,
    name: None,
    by: "status::writer: a fresh read of a Service whose status write conflicted",
}];

/// One request kind the speaker makes, as a SubjectAccessReview asks it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Access {
    /// RBAC verb.
    pub verb: String,
    /// API group.
    pub group: String,
    /// URL plural.
    pub resource: String,
    /// Subresource or `""`.
    pub subresource: String,
    /// The namespace (`None`: cluster-wide).
    pub namespace: Option<String>,
    /// The object name, where limited to one.
    pub name: Option<String>,
}

fn namespace_of(reach: Reach, speaker_namespace: &str) -> Option<String> {
    match reach {
        Reach::Cluster => None,
        Reach::SpeakerNamespace => Some(speaker_namespace.to_string()),
    }
}

/// Every request kind of a speaker running in `speaker_namespace`: `list` and `watch` of
/// each watch, the other reads, then every write.
pub fn all(speaker_namespace: &str) -> Vec<Access> {
    let mut out = Vec::new();
    for w in WATCHES {
        let (group, resource, _) = w.kind.resource();
        for verb in ["list", "watch"] {
            out.push(Access {
                verb: verb.into(),
                group: group.clone(),
                resource: resource.clone(),
                subresource: String::new(),
                namespace: namespace_of(w.reach, speaker_namespace),
                name: None,
            });
        }
    }
    for w in READS.iter().chain(WRITES) {
        for verb in w.verbs {
            out.push(Access {
                verb: verb.to_string(),
                group: w.group.into(),
                resource: w.resource.into(),
                subresource: w.subresource.into(),
                namespace: namespace_of(w.reach, speaker_namespace),
                name: w.name.map(str::to_string),
            });
        }
    }
    out
}

/// Whether a request the speaker made (as an audit log records it) is one of [`all`]: same
/// verb, group, resource and subresource; in the speaker's namespace when the entry is
/// limited to it; on the named object when the entry names one.
pub fn covers(
    entries: &[Access],
    verb: &str,
    group: &str,
    resource: &str,
    subresource: &str,
    namespace: Option<&str>,
    name: Option<&str>,
) -> bool {
    entries.iter().any(|a| {
        a.verb == verb
            && a.group == group
            && a.resource == resource
            && a.subresource == subresource
            && (a.namespace.is_none() || a.namespace.as_deref() == namespace)
            && (a.name.is_none() || a.name.as_deref() == name)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::kube::Kind;

    #[test]
    fn cluster_scoped_kinds_are_watched_cluster_wide() {
        for w in WATCHES {
            let (_, resource, namespaced) = w.kind.resource();
            if !namespaced {
                assert_eq!(w.reach, Reach::Cluster, "{resource} is cluster-scoped");
            }
        }
    }

    #[test]
    fn the_table_names_the_types_resources() {
        let (group, resource, namespaced) = Kind::EndpointSlice.resource();
        assert_eq!(
            (group.as_str(), resource.as_str(), namespaced),
            ("discovery.k8s.io", "endpointslices", true)
        );
        let (group, resource, namespaced) = Kind::PolicyRoute.resource();
        assert_eq!(
            (group.as_str(), resource.as_str(), namespaced),
            ("edgelb.io", "policyroutes", false)
        );
    }

    #[test]
    fn covers_checks_namespace_and_name() {
        let all = all("edgelb-system");
        let lease = |ns, name| {
            covers(
                &all,
                "update",
                "coordination.k8s.io",
                "leases",
                "",
                ns,
                name,
            )
        };
        assert!(lease(Some("edgelb-system"), Some(LEADER_LEASE)));
        assert!(!lease(Some("edgelb-system"), Some("other")));
        assert!(!lease(Some("default"), Some(LEADER_LEASE)));
        assert!(covers(&all, "list", "", "services", "", None, None));
        assert!(!covers(
            &all,
            "update",
            "",
            "services",
            "",
            Some("default"),
            Some("web")
        ));
    }
}
