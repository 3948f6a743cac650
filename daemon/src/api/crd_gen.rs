//! The CRD YAML under `deploy/crds/` is generated from the Rust types by
//! `edgelb-speaker crds --out deploy/crds`; the drift test below fails when the committed
//! files differ from what the types generate.

use std::path::Path;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray,
};
use kube::CustomResourceExt;

use super::openyurt::PoolService;
use super::policy_route::PolicyRoute;
use super::{BFDProfile, BGPAdvertisement, BGPPeer, Community, IPAddressPool, L2Advertisement};

/// Errors of the generator.
#[derive(Debug, thiserror::Error)]
pub enum CrdGenError {
    /// Serialising a CRD failed.
    #[error("CRD {name}: cannot render YAML: {source}")]
    Render {
        /// Name of the CRD.
        name: String,
        /// Cause.
        source: serde_norway::Error,
    },
    /// Writing a file failed.
    #[error("{path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
}

/// Every CRD edgelb ships, in a fixed order: its own, then OpenYurt's `PoolService` in
/// OpenYurt's shape (same name and group, so a cluster that has OpenYurt's keeps it: do not
/// apply ours there, see docs/configuration.md, "Node pools").
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        IPAddressPool::crd(),
        BGPPeer::crd(),
        BGPAdvertisement::crd(),
        L2Advertisement::crd(),
        Community::crd(),
        PolicyRoute::crd(),
        BFDProfile::crd(),
        pool_service_crd(),
    ]
}

/// OpenYurt's `PoolService`; its one integer (`status.loadBalancer.ingress[].ports[].port`,
/// k8s-openapi's `int32` without a range) gets the range of a port, so the API server refuses
/// what our type cannot read.
fn pool_service_crd() -> CustomResourceDefinition {
    let mut crd = PoolService::crd();
    for v in &mut crd.spec.versions {
        if let Some(s) = v
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        {
            bound_integers(s);
        }
    }
    crd
}

fn bound_integers(s: &mut JSONSchemaProps) {
    if s.type_.as_deref() == Some("integer") && s.minimum.is_none() && s.maximum.is_none() {
        s.minimum = Some(0.0);
        s.maximum = Some(65535.0);
    }
    // metav1.Condition's observedGeneration is an int64 the server keeps as it is.
    for (_, p) in s
        .properties
        .iter_mut()
        .flat_map(|m| m.iter_mut())
        .filter(|(k, _)| *k != "conditions")
    {
        bound_integers(p);
    }
    if let Some(JSONSchemaPropsOrArray::Schema(items)) = s.items.as_mut() {
        bound_integers(items);
    }
}

/// The file name of a CRD: `<group>_<plural>.yaml`, as controller-gen names them.
pub fn file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}_{}.yaml", crd.spec.group, crd.spec.names.plural)
}

/// Renders one CRD as YAML with a header saying where it comes from.
pub fn render(crd: &CustomResourceDefinition) -> Result<String, CrdGenError> {
    let name = crd.metadata.name.clone().unwrap_or_default();
    let body =
        serde_norway::to_string(crd).map_err(|source| CrdGenError::Render { name, source })?;
    Ok(format!(
        "# Generated from the Rust types in daemon/src/api by `edgelb-speaker crds`. Do not edit.\n{body}"
    ))
}

/// Every CRD as (file name, YAML).
pub fn render_all() -> Result<Vec<(String, String)>, CrdGenError> {
    crds()
        .iter()
        .map(|crd| Ok((file_name(crd), render(crd)?)))
        .collect()
}

/// Writes one YAML file per kind into `dir`; returns the paths written.
pub fn write_all(dir: &Path) -> Result<Vec<String>, CrdGenError> {
    std::fs::create_dir_all(dir).map_err(|source| CrdGenError::Write {
        path: dir.display().to_string(),
        source,
    })?;
    let mut written = Vec::new();
    for (name, yaml) in render_all()? {
        let path = dir.join(&name);
        std::fs::write(&path, yaml).map_err(|source| CrdGenError::Write {
            path: path.display().to_string(),
            source,
        })?;
        written.push(path.display().to_string());
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fails when `deploy/crds/` is out of date: run
    /// `cargo run -p edgelb-daemon -- crds --out deploy/crds` and commit the result.
    #[test]
    fn committed_crd_yaml_matches_the_rust_types() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/crds");
        let mut stale = Vec::new();
        for (name, yaml) in render_all().expect("render") {
            match std::fs::read_to_string(dir.join(&name)) {
                Ok(committed) if committed == yaml => {}
                Ok(_) => stale.push(format!("{name} differs")),
                Err(e) => stale.push(format!("{name}: {e}")),
            }
        }
        assert!(
            stale.is_empty(),
            "deploy/crds is out of date ({}); run `cargo run -p edgelb-daemon -- crds --out deploy/crds`",
            stale.join(", ")
        );
    }

    #[test]
    fn every_crd_is_in_our_group_with_a_status_subresource() {
        for crd in crds() {
            if crd.spec.names.kind == "PoolService" {
                assert_eq!(crd.spec.group, "network.openyurt.io");
                assert_eq!(crd.spec.versions[0].name, "v1alpha1");
                assert_eq!(crd.spec.scope, "Namespaced");
                assert_eq!(crd.spec.names.short_names, Some(vec!["ps".to_string()]));
                continue;
            }
            assert_eq!(crd.spec.group, "edgelb.io");
            let version = &crd.spec.versions[0];
            assert_eq!(version.name, "v1alpha1");
            assert!(version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some());
        }
    }

    /// Each speaker owns its own `Installed.<node>` entry of a PolicyRoute, and the
    /// leader's `Valid` leaves other controllers' conditions alone, under server-side apply
    /// only if the list is a map keyed by `type` (otherwise an apply replaces the whole
    /// list): every CRD's.
    #[test]
    fn conditions_are_a_map_list_keyed_by_type() {
        for crd in crds() {
            let crd = serde_json::to_value(&crd).expect("json");
            let conditions = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
                ["status"]["properties"]["conditions"];
            let kind = &crd["spec"]["names"]["kind"];
            assert_eq!(
                conditions["x-kubernetes-list-type"], "map",
                "{kind}: {conditions}"
            );
            assert_eq!(
                conditions["x-kubernetes-list-map-keys"],
                serde_json::json!(["type"]),
                "{kind}"
            );
            assert!(
                conditions["items"]["required"]
                    .as_array()
                    .is_some_and(|r| r.contains(&serde_json::json!("type"))),
                "{kind}"
            );
        }
    }

    /// Every integer property outside the standard condition shape, with the path that
    /// reaches it.
    fn integers<'a>(
        path: String,
        schema: &'a serde_json::Value,
        out: &mut Vec<(String, &'a serde_json::Value)>,
    ) {
        if schema["type"] == "integer" {
            out.push((path.clone(), schema));
        }
        if let Some(props) = schema["properties"].as_object() {
            for (name, sub) in props {
                if name == "conditions" {
                    continue; // metav1.Condition: observedGeneration is int64, as the server keeps it
                }
                integers(format!("{path}.{name}"), sub, out);
            }
        }
        if schema["items"].is_object() {
            integers(format!("{path}[]"), &schema["items"], out);
        }
    }

    /// The API server enforces `minimum`/`maximum` but not `format: uint32`/`int32`: a
    /// number our field cannot hold must be refused at admission, not fail decoding later.
    #[test]
    fn every_integer_field_has_a_range_the_api_server_enforces() {
        let mut missing = Vec::new();
        for crd in crds() {
            let crd_json = serde_json::to_value(&crd).expect("json");
            let schema = &crd_json["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
            let mut found = Vec::new();
            integers(crd.spec.names.kind.clone(), schema, &mut found);
            for (path, s) in found {
                if !s["minimum"].is_number() || !s["maximum"].is_number() {
                    missing.push(path);
                }
            }
        }
        assert!(
            missing.is_empty(),
            "integers without minimum and maximum: {missing:?}"
        );
    }

    #[test]
    fn cel_rules_reach_the_schema() {
        let yaml = render(&IPAddressPool::crd()).expect("render");
        assert!(yaml.contains("x-kubernetes-validations"), "{yaml}");
        assert!(yaml.contains("size(self) > 0"));
        let yaml = render(&BGPPeer::crd()).expect("render");
        assert!(yaml.contains("self.myASN != 0 && self.peerASN != 0"));
    }
}
