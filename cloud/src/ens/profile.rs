//! ENS specifics for the planner: the pool annotations of seed 000 and the providerID form.

use std::collections::BTreeMap;

use crate::health::{Bounds, HealthLimits};
use crate::model::NetworkRef;
use crate::plan::{PlanError, Profile};

pub const ANNOTATION_NETWORK_ID: &str = "alibabacloud.com/ens-network-id";
pub const ANNOTATION_REGION_ID: &str = "alibabacloud.com/ens-region-id";
pub const ANNOTATION_VSWITCH_ID: &str = "alibabacloud.com/ens-vswitch-id";

/// ENS: names up to 80 characters (CreateLoadBalancer `LoadBalancerName`), default size
/// `elb.s2.medium` (the API reference's example), EIP bandwidth 5..=10000 Mbit/s, default 5
/// (CreateEipInstance `Bandwidth`).
#[derive(Clone, Debug, Default)]
pub struct EnsProfile;

impl Profile for EnsProfile {
    fn network(
        &self,
        pool: &str,
        annotations: &BTreeMap<String, String>,
    ) -> Result<NetworkRef, PlanError> {
        let get = |key: &str| -> Result<String, PlanError> {
            let v = annotations.get(key).map(|v| v.trim()).unwrap_or("");
            if v.is_empty() {
                return Err(PlanError::MissingPoolAnnotation {
                    pool: pool.to_string(),
                    annotation: key.to_string(),
                });
            }
            if v.chars().any(|c| c.is_whitespace()) {
                return Err(PlanError::BadPoolAnnotation {
                    pool: pool.to_string(),
                    annotation: key.to_string(),
                    value: v.to_string(),
                    why: "contains whitespace".to_string(),
                });
            }
            Ok(v.to_string())
        };
        let region = get(ANNOTATION_REGION_ID)?;
        let network_id = get(ANNOTATION_NETWORK_ID)?;
        let vswitches = annotations
            .get(ANNOTATION_VSWITCH_ID)
            .map(String::as_str)
            .unwrap_or("");
        // A comma list (seed 000); CreateLoadBalancer takes one VSwitchId: the first.
        let vswitch_id = vswitches
            .split(',')
            .map(str::trim)
            .find(|s| !s.is_empty())
            .ok_or_else(|| PlanError::MissingPoolAnnotation {
                pool: pool.to_string(),
                annotation: ANNOTATION_VSWITCH_ID.to_string(),
            })?
            .to_string();
        Ok(NetworkRef {
            region,
            network_id,
            vswitch_id,
        })
    }

    /// ENS nodes carry `<ens-region>.<instance>` (Alibaba CCM's form) or
    /// `alicloud://<ens-region>.<instance>`; the instance id starts with `i-`.
    fn instance_id(&self, provider_id: &str) -> Option<String> {
        let rest = provider_id
            .strip_prefix("alicloud://")
            .unwrap_or(provider_id);
        let instance = rest.rsplit('.').next()?;
        let valid = instance.len() > 2
            && instance.starts_with("i-")
            && instance[2..].chars().all(|c| c.is_ascii_alphanumeric());
        valid.then(|| instance.to_string())
    }

    fn max_name_len(&self) -> usize {
        80
    }

    fn default_spec(&self) -> &str {
        "elb.s2.medium"
    }

    fn bandwidth_range(&self) -> (u32, u32, u32) {
        (5, 10_000, 5)
    }

    /// CreateLoadBalancerTCPListener / UDPListener (2017-11-10): thresholds 2..=10 (3),
    /// `HealthCheckConnectTimeout` 1..=300 s (5), `HealthCheckInterval` 1..=50 s (2).
    fn health_limits(&self) -> HealthLimits {
        HealthLimits {
            healthy_threshold: Bounds {
                min: 2,
                max: 10,
                default: 3,
            },
            unhealthy_threshold: Bounds {
                min: 2,
                max: 10,
                default: 3,
            },
            connect_timeout: Bounds {
                min: 1,
                max: 300,
                default: 5,
            },
            interval: Bounds {
                min: 1,
                max: 50,
                default: 2,
            },
        }
    }
}
