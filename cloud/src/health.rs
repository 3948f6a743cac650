//! A listener's health check from the Service's annotations, named as Alibaba's
//! cloud-controller-manager names them (`service.beta.kubernetes.io/alibaba-cloud-loadbalancer-*`),
//! bounded by the provider's documented ranges; absent ones take the cloud's defaults.
//!
//! Pure: a bad value is a [`PlanError::BadServiceAnnotation`] naming the Service, the
//! annotation, the value and the accepted range, so only that Service's load balancers wait
//! (the planner runs per PoolService).

use std::collections::BTreeMap;

use crate::model::{HealthCheck, HttpCheck, Protocol};
use crate::plan::{PlanError, Profile};

/// `on` (the only value ENS can honour: its TCP and UDP listeners always probe).
pub const ANNOTATION_HEALTH_CHECK_FLAG: &str =
    "service.beta.kubernetes.io/alibaba-cloud-loadbalancer-health-check-flag";
/// The CCM's switch for TCP/UDP listeners; same rule as the flag.
pub const ANNOTATION_HEALTH_CHECK_SWITCH: &str =
    "service.beta.kubernetes.io/alibaba-cloud-loadbalancer-health-check-switch";
/// `tcp` (default) or `http` (TCP listeners; UDP listeners keep their UDP probe).
pub const ANNOTATION_HEALTH_CHECK_TYPE: &str =
    "service.beta.kubernetes.io/alibaba-cloud-loadbalancer-health-check-type";
/// The port probed (default: the listener's backend port, the NodePort).
pub const ANNOTATION_HEALTH_CHECK_CONNECT_PORT: &str =
    "service.beta.kubernetes.io/alibaba-cloud-loadbalancer-health-check-connect-port";
/// Seconds to wait for an answer.
pub const ANNOTATION_HEALTH_CHECK_CONNECT_TIMEOUT: &str =
    "service.beta.kubernetes.io/alibaba-cloud-loadbalancer-health-check-connect-timeout";
/// Successes before a backend is healthy again.
pub const ANNOTATION_HEALTHY_THRESHOLD: &str =
    "service.beta.kubernetes.io/alibaba-cloud-loadbalancer-healthy-threshold";
/// Failures before a backend is taken out.
pub const ANNOTATION_UNHEALTHY_THRESHOLD: &str =
    "service.beta.kubernetes.io/alibaba-cloud-loadbalancer-unhealthy-threshold";
/// Seconds between probes.
pub const ANNOTATION_HEALTH_CHECK_INTERVAL: &str =
    "service.beta.kubernetes.io/alibaba-cloud-loadbalancer-health-check-interval";
/// HTTP checks: the `Host` sent (`$_ip`: the backend's address, the default).
pub const ANNOTATION_HEALTH_CHECK_DOMAIN: &str =
    "service.beta.kubernetes.io/alibaba-cloud-loadbalancer-health-check-domain";
/// HTTP checks: the path asked for.
pub const ANNOTATION_HEALTH_CHECK_URI: &str =
    "service.beta.kubernetes.io/alibaba-cloud-loadbalancer-health-check-uri";
/// HTTP checks: healthy status classes, `http_2xx` (default) .. `http_5xx`, comma-separated.
pub const ANNOTATION_HEALTH_CHECK_HTTP_CODE: &str =
    "service.beta.kubernetes.io/alibaba-cloud-loadbalancer-health-check-httpcode";

/// Every health-check annotation read (docs and the config reference test list them).
pub const ANNOTATIONS: [&str; 11] = [
    ANNOTATION_HEALTH_CHECK_FLAG,
    ANNOTATION_HEALTH_CHECK_SWITCH,
    ANNOTATION_HEALTH_CHECK_TYPE,
    ANNOTATION_HEALTH_CHECK_CONNECT_PORT,
    ANNOTATION_HEALTH_CHECK_CONNECT_TIMEOUT,
    ANNOTATION_HEALTHY_THRESHOLD,
    ANNOTATION_UNHEALTHY_THRESHOLD,
    ANNOTATION_HEALTH_CHECK_INTERVAL,
    ANNOTATION_HEALTH_CHECK_DOMAIN,
    ANNOTATION_HEALTH_CHECK_URI,
    ANNOTATION_HEALTH_CHECK_HTTP_CODE,
];

const HTTP_CODES: [&str; 4] = ["http_2xx", "http_3xx", "http_4xx", "http_5xx"];

/// One numeric parameter's accepted range and the cloud's default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    pub min: u32,
    pub max: u32,
    pub default: u32,
}

/// A provider's health-check ranges and defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthLimits {
    pub healthy_threshold: Bounds,
    pub unhealthy_threshold: Bounds,
    pub connect_timeout: Bounds,
    pub interval: Bounds,
}

struct Reader<'a> {
    service: &'a str,
    annotations: &'a BTreeMap<String, String>,
}

impl Reader<'_> {
    fn bad(&self, annotation: &str, value: &str, why: impl Into<String>) -> PlanError {
        PlanError::BadServiceAnnotation {
            service: self.service.to_string(),
            annotation: annotation.to_string(),
            value: value.to_string(),
            why: why.into(),
        }
    }

    fn number(&self, annotation: &str, b: Bounds, unit: &str) -> Result<Option<u32>, PlanError> {
        let Some(v) = self.annotations.get(annotation) else {
            return Ok(None);
        };
        match v.parse::<u32>() {
            Ok(n) if (b.min..=b.max).contains(&n) => Ok(Some(n)),
            _ => Err(self.bad(
                annotation,
                v,
                format!("expected a whole number{unit} from {} to {}", b.min, b.max),
            )),
        }
    }

    fn port(&self) -> Result<Option<u16>, PlanError> {
        let a = ANNOTATION_HEALTH_CHECK_CONNECT_PORT;
        let Some(v) = self.annotations.get(a) else {
            return Ok(None);
        };
        match v.parse::<u16>() {
            Ok(p) if p >= 1 => Ok(Some(p)),
            _ => Err(self.bad(a, v, "expected a port from 1 to 65535")),
        }
    }

    /// `on` only: ENS has no way to turn a TCP/UDP listener's probe off, and silently
    /// keeping it on would not be what was asked.
    fn switch(&self, annotation: &str) -> Result<(), PlanError> {
        match self.annotations.get(annotation).map(String::as_str) {
            None | Some("on") => Ok(()),
            Some(v) => Err(self.bad(
                annotation,
                v,
                "ENS listeners always run a health check (its TCP and UDP listener calls have no switch); only \"on\" is accepted",
            )),
        }
    }

    fn http(&self) -> Result<Option<HttpCheck>, PlanError> {
        let http = match self
            .annotations
            .get(ANNOTATION_HEALTH_CHECK_TYPE)
            .map(String::as_str)
        {
            None | Some("tcp") => false,
            Some("http") => true,
            Some(v) => {
                return Err(self.bad(ANNOTATION_HEALTH_CHECK_TYPE, v, "expected tcp or http"))
            }
        };
        let domain = self.annotations.get(ANNOTATION_HEALTH_CHECK_DOMAIN);
        let uri = self.annotations.get(ANNOTATION_HEALTH_CHECK_URI);
        let codes = self.annotations.get(ANNOTATION_HEALTH_CHECK_HTTP_CODE);
        if !http {
            let only_http = [
                (ANNOTATION_HEALTH_CHECK_DOMAIN, domain),
                (ANNOTATION_HEALTH_CHECK_URI, uri),
                (ANNOTATION_HEALTH_CHECK_HTTP_CODE, codes),
            ];
            if let Some((a, Some(v))) = only_http.into_iter().find(|(_, v)| v.is_some()) {
                return Err(self.bad(
                    a,
                    v,
                    format!("takes effect only with {ANNOTATION_HEALTH_CHECK_TYPE}: http"),
                ));
            }
            return Ok(None);
        }
        if let Some(d) = domain {
            if !valid_domain(d) {
                return Err(self.bad(
                    ANNOTATION_HEALTH_CHECK_DOMAIN,
                    d,
                    "expected $_ip or 1 to 80 letters, digits, dots and hyphens",
                ));
            }
        }
        if let Some(u) = uri {
            if !valid_uri(u) {
                return Err(self.bad(
                    ANNOTATION_HEALTH_CHECK_URI,
                    u,
                    "expected 1 to 80 characters starting with / and not only /, of letters, digits and -/.%?#&",
                ));
            }
        }
        let http_codes = match codes {
            None => HTTP_CODES[0].to_string(),
            Some(c) => {
                let list: Vec<&str> = c.split(',').collect();
                let mut seen = Vec::new();
                for x in &list {
                    if !HTTP_CODES.contains(x) || seen.contains(x) {
                        return Err(self.bad(
                            ANNOTATION_HEALTH_CHECK_HTTP_CODE,
                            c,
                            "expected a comma-separated list of http_2xx, http_3xx, http_4xx, http_5xx, each once",
                        ));
                    }
                    seen.push(*x);
                }
                c.clone()
            }
        };
        Ok(Some(HttpCheck {
            domain: domain.cloned(),
            uri: uri.cloned(),
            http_codes,
        }))
    }
}

fn valid_domain(d: &str) -> bool {
    d == "$_ip"
        || ((1..=80).contains(&d.len())
            && d.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-'))
}

fn valid_uri(u: &str) -> bool {
    (1..=80).contains(&u.len())
        && u.starts_with('/')
        && u.chars().any(|c| c != '/')
        && u.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-/.%?#&".contains(c))
}

/// The provider's default health check: what a listener gets with no annotation.
pub fn default_check(profile: &impl Profile) -> HealthCheck {
    let lim = profile.health_limits();
    HealthCheck {
        healthy_threshold: lim.healthy_threshold.default,
        unhealthy_threshold: lim.unhealthy_threshold.default,
        connect_timeout: lim.connect_timeout.default,
        interval: lim.interval.default,
        connect_port: None,
        http: None,
    }
}

/// The health check the Service's annotations ask for (TCP form; see [`for_protocol`]).
pub fn from_annotations(
    profile: &impl Profile,
    service: &str,
    annotations: &BTreeMap<String, String>,
) -> Result<HealthCheck, PlanError> {
    let r = Reader {
        service,
        annotations,
    };
    let lim = profile.health_limits();
    let d = default_check(profile);
    r.switch(ANNOTATION_HEALTH_CHECK_FLAG)?;
    r.switch(ANNOTATION_HEALTH_CHECK_SWITCH)?;
    let seconds = " of seconds";
    Ok(HealthCheck {
        healthy_threshold: r
            .number(ANNOTATION_HEALTHY_THRESHOLD, lim.healthy_threshold, "")?
            .unwrap_or(d.healthy_threshold),
        unhealthy_threshold: r
            .number(ANNOTATION_UNHEALTHY_THRESHOLD, lim.unhealthy_threshold, "")?
            .unwrap_or(d.unhealthy_threshold),
        connect_timeout: r
            .number(
                ANNOTATION_HEALTH_CHECK_CONNECT_TIMEOUT,
                lim.connect_timeout,
                seconds,
            )?
            .unwrap_or(d.connect_timeout),
        interval: r
            .number(ANNOTATION_HEALTH_CHECK_INTERVAL, lim.interval, seconds)?
            .unwrap_or(d.interval),
        connect_port: r.port()?,
        http: r.http()?,
    })
}

/// The check a listener of `protocol` gets: UDP listeners have no HTTP probe.
pub fn for_protocol(check: &HealthCheck, protocol: Protocol) -> HealthCheck {
    match protocol {
        Protocol::Tcp => check.clone(),
        Protocol::Udp => HealthCheck {
            http: None,
            ..check.clone()
        },
    }
}

#[cfg(test)]
#[path = "health_tests.rs"]
mod tests;
