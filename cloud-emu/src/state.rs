//! The emulated cloud's resources and the ENS actions over them. Time comes in as a value:
//! resources walk their asynchronous states (`Creating` → `Active`, `Associating` →
//! `InUse`, ...) when a request looks at them after their deadline.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// An API error as the cloud returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub code: String,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, code: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code: code.into(),
            message: message.into(),
        }
    }

    /// `InvalidParameter.<Field>`: "The specified field %s invalid." (ENS reference).
    pub fn invalid(field: &str) -> ApiError {
        ApiError::new(
            400,
            format!("InvalidParameter.{field}"),
            format!("The specified field {field} invalid. Please check it again."),
        )
    }

    pub fn missing(field: &str) -> ApiError {
        ApiError::new(
            400,
            "MissingParameter",
            format!("The input parameter \"{field}\" that is mandatory for processing this request is not supplied."),
        )
    }

    pub fn incorrect_status(what: &str, status: &str) -> ApiError {
        ApiError::new(
            400,
            "IncorrectStatus",
            format!("The current status of {what} ({status}) does not support this operation."),
        )
    }
}

type Params = BTreeMap<String, String>;

fn req<'a>(p: &'a Params, k: &str) -> Result<&'a str, ApiError> {
    p.get(k)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ApiError::missing(k))
}

fn num(p: &Params, k: &str, range: std::ops::RangeInclusive<u64>) -> Result<Option<u64>, ApiError> {
    match p.get(k) {
        None => Ok(None),
        Some(v) => match v.parse::<u64>() {
            Ok(n) if range.contains(&n) => Ok(Some(n)),
            _ => Err(ApiError::invalid(k)),
        },
    }
}

#[derive(Clone, Debug)]
pub enum ListenerState {
    Stopped,
    Starting(Instant),
    Running,
}

#[derive(Clone, Debug)]
pub struct Listener {
    pub backend_port: u16,
    pub state: ListenerState,
    pub description: String,
    pub health: Health,
}

/// A listener's health check as ENS stores it (always on: the TCP and UDP listener calls
/// have no switch).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    pub healthy_threshold: u64,
    pub unhealthy_threshold: u64,
    pub connect_timeout: u64,
    pub interval: u64,
    /// `None`: the backend port.
    pub connect_port: Option<u16>,
    /// `tcp` or `http` (TCP listeners).
    pub check_type: String,
    pub domain: String,
    pub uri: String,
    pub http_code: String,
}

impl Default for Health {
    /// CreateLoadBalancerTCPListener's documented defaults.
    fn default() -> Health {
        Health {
            healthy_threshold: 3,
            unhealthy_threshold: 3,
            connect_timeout: 5,
            interval: 2,
            connect_port: None,
            check_type: "tcp".into(),
            domain: String::new(),
            uri: String::new(),
            http_code: "http_2xx".into(),
        }
    }
}

impl Health {
    /// `from` with the health-check parameters of a create or set call applied, each checked
    /// against the reference's range (`InvalidParameter.<Field>` otherwise). A parameter not
    /// given keeps its value. UDP listeners take no type and no HTTP fields.
    pub fn apply(from: &Health, p: &Params, proto: &str) -> Result<Health, ApiError> {
        let mut h = from.clone();
        if let Some(n) = num(p, "HealthyThreshold", 2..=10)? {
            h.healthy_threshold = n;
        }
        if let Some(n) = num(p, "UnhealthyThreshold", 2..=10)? {
            h.unhealthy_threshold = n;
        }
        if let Some(n) = num(p, "HealthCheckConnectTimeout", 1..=300)? {
            h.connect_timeout = n;
        }
        if let Some(n) = num(p, "HealthCheckInterval", 1..=50)? {
            h.interval = n;
        }
        if let Some(n) = num(p, "HealthCheckConnectPort", 1..=65535)? {
            h.connect_port = Some(n as u16);
        }
        if proto != "tcp" {
            return Ok(h);
        }
        let given = |k: &str| p.get(k).filter(|v| !v.is_empty());
        if let Some(t) = given("HealthCheckType") {
            if t != "tcp" && t != "http" {
                return Err(ApiError::invalid("HealthCheckType"));
            }
            h.check_type = t.clone();
        }
        if let Some(d) = given("HealthCheckDomain") {
            let ok = d == "$_ip"
                || (d.len() <= 80
                    && d.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-'));
            if !ok {
                return Err(ApiError::invalid("HealthCheckDomain"));
            }
            h.domain = d.clone();
        }
        if let Some(u) = given("HealthCheckURI") {
            let ok = u.len() <= 80
                && u.starts_with('/')
                && u.chars().any(|c| c != '/')
                && u.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-/.%?#&".contains(c));
            if !ok {
                return Err(ApiError::invalid("HealthCheckURI"));
            }
            h.uri = u.clone();
        }
        if let Some(c) = given("HealthCheckHttpCode") {
            let ok = c
                .split(',')
                .all(|x| ["http_2xx", "http_3xx", "http_4xx", "http_5xx"].contains(&x));
            if !ok {
                return Err(ApiError::invalid("HealthCheckHttpCode"));
            }
            h.http_code = c.clone();
        }
        Ok(h)
    }

    /// The health-check fields of a Describe...ListenerAttribute answer.
    pub fn json(&self, proto: &str, backend_port: u16) -> Value {
        let mut v = json!({
            "HealthCheck": "on",
            "HealthyThreshold": self.healthy_threshold,
            "UnhealthyThreshold": self.unhealthy_threshold,
            "HealthCheckConnectTimeout": self.connect_timeout,
            "HealthCheckInterval": self.interval,
            "HealthCheckConnectPort": self.connect_port.unwrap_or(backend_port),
        });
        if proto == "tcp" {
            v["HealthCheckType"] = json!(self.check_type);
            v["HealthCheckDomain"] = json!(self.domain);
            v["HealthCheckURI"] = json!(self.uri);
            v["HealthCheckHttpCode"] = json!(self.http_code);
        }
        v
    }
}

#[derive(Clone, Debug)]
pub struct Lb {
    pub id: String,
    pub name: String,
    pub region: String,
    pub network_id: String,
    pub vswitch_id: String,
    pub spec: String,
    pub active_at: Instant,
    pub address: Ipv4Addr,
    /// (protocol "tcp"/"udp", port) -> listener
    pub listeners: BTreeMap<(String, u16), Listener>,
    pub backends: BTreeMap<String, u32>,
}

#[derive(Clone, Debug)]
pub enum EipState {
    Available,
    Associating(Instant),
    InUse,
    Unassociating(Instant),
}

#[derive(Clone, Debug)]
pub struct Eip {
    pub id: String,
    pub name: String,
    pub region: String,
    pub ip: Ipv4Addr,
    pub bandwidth: u64,
    pub state: EipState,
    pub instance_id: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Instance {
    pub ip: Ipv4Addr,
    pub running: bool,
}

/// Everything the emulated account holds.
pub struct State {
    pub lbs: BTreeMap<String, Lb>,
    pub eips: BTreeMap<String, Eip>,
    pub instances: BTreeMap<String, Instance>,
    tokens: HashMap<String, String>,
    seq: u64,
    lb_pool: Vec<Ipv4Addr>,
    eip_pool: Vec<Ipv4Addr>,
    pub create_delay: Duration,
    pub transition_delay: Duration,
}

impl State {
    pub fn new(lb_pool: ipnet::Ipv4Net, eip_pool: ipnet::Ipv4Net) -> State {
        // Skip .0-.9 of each pool: room for the test's own addresses.
        let lb_pool = lb_pool
            .hosts()
            .skip(9)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let eip_pool = eip_pool
            .hosts()
            .skip(9)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        State {
            lbs: BTreeMap::new(),
            eips: BTreeMap::new(),
            instances: BTreeMap::new(),
            tokens: HashMap::new(),
            seq: 0,
            lb_pool,
            eip_pool,
            create_delay: Duration::from_millis(300),
            transition_delay: Duration::from_millis(100),
        }
    }

    fn next_id(&mut self, prefix: &str) -> String {
        self.seq += 1;
        format!("{prefix}-emu{:010}", self.seq)
    }

    /// Finishes every transition whose deadline has passed.
    pub fn advance(&mut self, now: Instant) {
        for lb in self.lbs.values_mut() {
            for l in lb.listeners.values_mut() {
                if let ListenerState::Starting(at) = l.state {
                    if now >= at {
                        l.state = ListenerState::Running;
                    }
                }
            }
        }
        for e in self.eips.values_mut() {
            match e.state {
                EipState::Associating(at) if now >= at => e.state = EipState::InUse,
                EipState::Unassociating(at) if now >= at => {
                    e.state = EipState::Available;
                    e.instance_id = None;
                }
                _ => {}
            }
        }
    }

    pub fn lb_status(lb: &Lb, now: Instant) -> &'static str {
        if now >= lb.active_at {
            "Active"
        } else {
            "Creating"
        }
    }

    fn lb(&self, p: &Params) -> Result<&Lb, ApiError> {
        let id = req(p, "LoadBalancerId")?;
        self.lbs.get(id).ok_or_else(|| {
            ApiError::new(
                404,
                "LoadBalancerNotFound",
                format!("The load balancer {id} does not exist."),
            )
        })
    }

    fn active_lb_mut(&mut self, p: &Params, now: Instant) -> Result<&mut Lb, ApiError> {
        let status = Self::lb_status(self.lb(p)?, now);
        if status != "Active" {
            return Err(ApiError::incorrect_status("the load balancer", status));
        }
        let id = req(p, "LoadBalancerId")?.to_string();
        self.lbs
            .get_mut(&id)
            .ok_or_else(|| ApiError::invalid("LoadBalancerId"))
    }

    fn lb_json(lb: &Lb, now: Instant) -> Value {
        json!({
            "LoadBalancerId": lb.id,
            "LoadBalancerName": lb.name,
            "LoadBalancerStatus": Self::lb_status(lb, now),
            "Address": lb.address.to_string(),
            "EnsRegionId": lb.region,
            "NetworkId": lb.network_id,
            "VSwitchId": lb.vswitch_id,
            "LoadBalancerSpec": lb.spec,
            "PayType": "PostPaid",
            "AddressIPVersion": "ipv4",
        })
    }

    /// Everything still alive: the leak report.
    pub fn inventory(&self, now: Instant) -> Value {
        json!({
            "LoadBalancers": self.lbs.values().map(|lb| {
                let mut v = Self::lb_json(lb, now);
                v["Listeners"] = lb.listeners.keys().map(|(pr, po)| json!(format!("{pr}/{po}"))).collect();
                v["ListenerAttributes"] = lb.listeners.iter().map(|((pr, po), l)| {
                    let mut a = l.health.json(pr, l.backend_port);
                    a["BackendServerPort"] = json!(l.backend_port);
                    (format!("{pr}/{po}"), a)
                }).collect::<serde_json::Map<String, Value>>().into();
                v["BackendServers"] = json!(lb.backends);
                v
            }).collect::<Vec<_>>(),
            "EipAddresses": self.eips.values().map(|e| json!({
                "AllocationId": e.id, "Name": e.name, "IpAddress": e.ip.to_string(),
                "InstanceId": e.instance_id, "State": format!("{:?}", e.state),
            })).collect::<Vec<_>>(),
        })
    }
}

impl State {
    /// Where traffic is taken now: every Running listener of an Active load balancer, on its
    /// own address and on the EIP bound to it. (address, protocol, port) -> load balancer id.
    pub fn forwarding(&self, now: Instant) -> BTreeMap<(Ipv4Addr, String, u16), String> {
        let mut out = BTreeMap::new();
        for lb in self
            .lbs
            .values()
            .filter(|lb| Self::lb_status(lb, now) == "Active")
        {
            let eip = self.eips.values().find(|e| {
                matches!(e.state, EipState::InUse)
                    && e.instance_id.as_deref() == Some(lb.id.as_str())
            });
            for ((proto, port), l) in &lb.listeners {
                if !matches!(l.state, ListenerState::Running) {
                    continue;
                }
                out.insert((lb.address, proto.clone(), *port), lb.id.clone());
                if let Some(e) = eip {
                    out.insert((e.ip, proto.clone(), *port), lb.id.clone());
                }
            }
        }
        out
    }

    /// A backend for one new connection or flow: weighted random among running instances
    /// with weight above 0; `roll` is a uniform random number. (instance ip, node port).
    pub fn pick_backend(
        &self,
        lb_id: &str,
        proto: &str,
        port: u16,
        roll: u64,
    ) -> Option<(Ipv4Addr, u16)> {
        let lb = self.lbs.get(lb_id)?;
        let l = lb.listeners.get(&(proto.to_string(), port))?;
        let live: Vec<(Ipv4Addr, u64)> = lb
            .backends
            .iter()
            .filter(|(_, w)| **w > 0)
            .filter_map(|(id, w)| {
                let i = self.instances.get(id).filter(|i| i.running)?;
                Some((i.ip, u64::from(*w)))
            })
            .collect();
        let total: u64 = live.iter().map(|(_, w)| w).sum();
        if total == 0 {
            return None;
        }
        let mut r = roll % total;
        for (ip, w) in live {
            if r < w {
                return Some((ip, l.backend_port));
            }
            r -= w;
        }
        None
    }
}

mod actions;
#[cfg(test)]
mod tests;
