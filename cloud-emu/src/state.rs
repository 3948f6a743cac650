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

    /// One ENS action; the JSON body of the success (without `RequestId`).
    pub fn handle(&mut self, action: &str, p: &Params, now: Instant) -> Result<Value, ApiError> {
        self.advance(now);
        match action {
            "CreateLoadBalancer" => self.create_lb(p, now),
            "DescribeLoadBalancers" => self.describe_lbs(p, now),
            "DescribeLoadBalancerAttribute" => self.describe_lb(p, now),
            "DescribeLoadBalancerListeners" => self.describe_listeners(p),
            "CreateLoadBalancerTCPListener" => self.create_listener(p, "tcp", now),
            "CreateLoadBalancerUDPListener" => self.create_listener(p, "udp", now),
            "StartLoadBalancerListener" => self.listener_state(p, true, now),
            "StopLoadBalancerListener" => self.listener_state(p, false, now),
            "DeleteLoadBalancerListener" => self.delete_listener(p),
            "AddBackendServers" => self.backends(p, BackendOp::Add, now),
            "SetBackendServers" => self.backends(p, BackendOp::Set, now),
            "RemoveBackendServers" => self.backends(p, BackendOp::Remove, now),
            "CreateEipInstance" => self.create_eip(p),
            "DescribeEnsEipAddresses" => self.describe_eips(p),
            "AssociateEnsEipAddress" => self.associate(p, now),
            "UnAssociateEnsEipAddress" => self.unassociate(p, now),
            "ReleaseInstance" => self.release(p),
            other => Err(ApiError::new(
                404,
                "InvalidAction.NotFound",
                format!("Specified api {other} is not found, please check your url and method."),
            )),
        }
    }

    fn create_lb(&mut self, p: &Params, now: Instant) -> Result<Value, ApiError> {
        let region = req(p, "EnsRegionId")?.to_string();
        let spec = req(p, "LoadBalancerSpec")?.to_string();
        if req(p, "PayType")? != "PostPaid" {
            return Err(ApiError::invalid("PayType"));
        }
        let network_id = req(p, "NetworkId")?.to_string();
        let vswitch_id = req(p, "VSwitchId")?.to_string();
        let name = p.get("LoadBalancerName").cloned().unwrap_or_default();
        if name.chars().count() > 80 || name.starts_with("http://") || name.starts_with("https://")
        {
            return Err(ApiError::invalid("LoadBalancerName"));
        }
        let token = p
            .get("ClientToken")
            .filter(|t| !t.is_empty())
            .map(|t| format!("lb/{t}"));
        if let Some(id) = token.as_ref().and_then(|t| self.tokens.get(t)) {
            if let Some(lb) = self.lbs.get(id) {
                return Ok(json!({"LoadBalancerId": lb.id, "LoadBalancerName": lb.name,
                    "NetworkId": lb.network_id, "VSwitchId": lb.vswitch_id}));
            }
        }
        let address = self.lb_pool.pop().ok_or_else(|| {
            ApiError::new(
                400,
                "InsufficientResource",
                "No address is left in the vSwitch.",
            )
        })?;
        let id = self.next_id("lb");
        let name = if name.is_empty() { id.clone() } else { name };
        if let Some(t) = token {
            self.tokens.insert(t, id.clone());
        }
        let lb = Lb {
            id: id.clone(),
            name: name.clone(),
            region,
            network_id: network_id.clone(),
            vswitch_id: vswitch_id.clone(),
            spec,
            active_at: now + self.create_delay,
            address,
            listeners: BTreeMap::new(),
            backends: BTreeMap::new(),
        };
        self.lbs.insert(id.clone(), lb);
        Ok(
            json!({"LoadBalancerId": id, "LoadBalancerName": name, "NetworkId": network_id,
            "VSwitchId": vswitch_id}),
        )
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

    fn describe_lbs(&self, p: &Params, now: Instant) -> Result<Value, ApiError> {
        let matches = |lb: &&Lb| {
            p.get("EnsRegionId").is_none_or(|r| &lb.region == r)
                && p.get("LoadBalancerId").is_none_or(|i| &lb.id == i)
                && p.get("LoadBalancerName").is_none_or(|n| &lb.name == n)
                && p.get("NetworkId").is_none_or(|n| &lb.network_id == n)
        };
        let all: Vec<Value> = self
            .lbs
            .values()
            .filter(matches)
            .map(|lb| Self::lb_json(lb, now))
            .collect();
        page(p, all, "LoadBalancers", "LoadBalancer")
    }

    fn describe_lb(&self, p: &Params, now: Instant) -> Result<Value, ApiError> {
        let lb = self.lb(p)?;
        let mut v = Self::lb_json(lb, now);
        let backends: Vec<Value> = lb
            .backends
            .iter()
            .map(|(id, w)| {
                let ip = self
                    .instances
                    .get(id)
                    .map(|i| i.ip.to_string())
                    .unwrap_or_default();
                json!({"ServerId": id, "Weight": w, "Type": "ens", "Ip": ip})
            })
            .collect();
        v["BackendServers"] = Value::Array(backends);
        v["ListenerPorts"] = lb.listeners.keys().map(|(_, port)| json!(port)).collect();
        v["ListenerPortsAndProtocols"] = lb
            .listeners
            .iter()
            .map(|((proto, port), l)| {
                json!({"ListenerPort": port, "ListenerProtocol": proto, "Description": l.description})
            })
            .collect();
        Ok(v)
    }

    fn describe_listeners(&self, p: &Params) -> Result<Value, ApiError> {
        let lb = self.lb(p)?;
        let all: Vec<Value> = lb
            .listeners
            .iter()
            .map(|((proto, port), l)| {
                let status = match l.state {
                    ListenerState::Running => "running",
                    ListenerState::Starting(_) => "starting",
                    ListenerState::Stopped => "stopped",
                };
                json!({"LoadBalancerId": lb.id, "ListenerPort": port.to_string(),
                    "Protocol": proto, "Status": status, "BackendServerPort": l.backend_port,
                    "Description": l.description})
            })
            .collect();
        page(p, all, "Listeners", "Listener")
    }

    fn listener_key(p: &Params, lb: &Lb, proto: Option<&str>) -> Result<(String, u16), ApiError> {
        let port = num(p, "ListenerPort", 1..=65535)?
            .ok_or_else(|| ApiError::missing("ListenerPort"))? as u16;
        let proto = match proto.or(p.get("ListenerProtocol").map(String::as_str)) {
            Some(pr) => pr.to_ascii_lowercase(),
            None => {
                let on_port: Vec<_> = lb.listeners.keys().filter(|(_, q)| *q == port).collect();
                match on_port.as_slice() {
                    [(pr, _)] => pr.clone(),
                    [] => return Err(listener_not_found(port)),
                    _ => return Err(ApiError::missing("ListenerProtocol")),
                }
            }
        };
        if proto != "tcp" && proto != "udp" && proto != "http" && proto != "https" {
            return Err(ApiError::invalid("ListenerProtocol"));
        }
        Ok((proto, port))
    }

    fn create_listener(
        &mut self,
        p: &Params,
        proto: &str,
        now: Instant,
    ) -> Result<Value, ApiError> {
        let lb = self.active_lb_mut(p, now)?;
        let key = Self::listener_key(p, lb, Some(proto))?;
        let backend_port =
            num(p, "BackendServerPort", 1..=65535)?.unwrap_or(u64::from(key.1)) as u16;
        if let Some(s) = p.get("Scheduler") {
            if !["wrr", "wlc", "rr", "sch", "qch", "iqch", "tch"].contains(&s.as_str()) {
                return Err(ApiError::invalid("Scheduler"));
            }
        }
        if lb.listeners.contains_key(&key) {
            return Err(ApiError::new(
                400,
                "ListenerAlreadyExists",
                format!("The listener {} {} already exists.", key.0, key.1),
            ));
        }
        let description = p.get("Description").cloned().unwrap_or_default();
        lb.listeners.insert(
            key,
            Listener {
                backend_port,
                state: ListenerState::Stopped,
                description,
            },
        );
        Ok(json!({}))
    }

    fn listener_state(&mut self, p: &Params, start: bool, now: Instant) -> Result<Value, ApiError> {
        let delay = self.transition_delay;
        let lb = self.active_lb_mut(p, now)?;
        let key = Self::listener_key(p, lb, None)?;
        let l = lb
            .listeners
            .get_mut(&key)
            .ok_or_else(|| listener_not_found(key.1))?;
        match (&l.state, start) {
            (ListenerState::Stopped, true) => l.state = ListenerState::Starting(now + delay),
            (ListenerState::Running, false) => l.state = ListenerState::Stopped,
            (s, _) => {
                return Err(ApiError::incorrect_status(
                    "the listener",
                    &format!("{s:?}"),
                ))
            }
        }
        Ok(json!({}))
    }

    fn delete_listener(&mut self, p: &Params) -> Result<Value, ApiError> {
        let id = self.lb(p)?.id.clone();
        let lb = self
            .lbs
            .get_mut(&id)
            .ok_or_else(|| ApiError::invalid("LoadBalancerId"))?;
        let key = Self::listener_key(p, lb, None)?;
        lb.listeners
            .remove(&key)
            .ok_or_else(|| listener_not_found(key.1))?;
        Ok(json!({}))
    }

    fn backends(&mut self, p: &Params, op: BackendOp, now: Instant) -> Result<Value, ApiError> {
        let raw = req(p, "BackendServers")?;
        let list: Vec<Value> =
            serde_json::from_str(raw).map_err(|_| ApiError::invalid("BackendServers"))?;
        if list.is_empty() || list.len() > 20 {
            return Err(ApiError::invalid("BackendServers"));
        }
        let mut parsed = Vec::new();
        for b in &list {
            let id = b
                .get("ServerId")
                .and_then(Value::as_str)
                .ok_or_else(|| ApiError::invalid("ServerId"))?;
            let weight = match b.get("Weight") {
                None => 100,
                Some(w) => match w
                    .as_u64()
                    .or_else(|| w.as_str().and_then(|s| s.parse().ok()))
                {
                    Some(n) if n <= 100 => n as u32,
                    _ => return Err(ApiError::invalid("Weight")),
                },
            };
            if let Some(t) = b.get("Type").and_then(Value::as_str) {
                if t != "ens" {
                    return Err(ApiError::invalid("Type"));
                }
            }
            parsed.push((id.to_string(), weight));
        }
        if op == BackendOp::Add {
            for (id, _) in &parsed {
                match self.instances.get(id) {
                    Some(i) if i.running => {}
                    Some(_) => {
                        return Err(ApiError::incorrect_status(
                            &format!("instance {id}"),
                            "Stopped",
                        ))
                    }
                    None => {
                        return Err(ApiError::new(
                            404,
                            "InvalidInstanceId.NotFound",
                            format!("The instance {id} does not exist."),
                        ))
                    }
                }
            }
        }
        let lb = self.active_lb_mut(p, now)?;
        for (id, weight) in parsed {
            match op {
                BackendOp::Add => {
                    if lb.backends.contains_key(&id) {
                        return Err(ApiError::new(
                            400,
                            "BackendServerAlreadyExists",
                            format!("The backend server {id} is already added."),
                        ));
                    }
                    lb.backends.insert(id, weight);
                }
                BackendOp::Set => {
                    let slot = lb.backends.get_mut(&id).ok_or_else(|| {
                        ApiError::new(
                            404,
                            "BackendServer.NotFound",
                            format!("{id} is not a backend."),
                        )
                    })?;
                    *slot = weight;
                }
                BackendOp::Remove => {
                    lb.backends.remove(&id);
                }
            }
        }
        Ok(json!({}))
    }

    fn create_eip(&mut self, p: &Params) -> Result<Value, ApiError> {
        let region = req(p, "EnsRegionId")?.to_string();
        req(p, "InstanceChargeType")?;
        req(p, "InternetChargeType")?;
        let bandwidth = num(p, "Bandwidth", 5..=10_000)?.unwrap_or(5);
        let token = p
            .get("ClientToken")
            .filter(|t| !t.is_empty())
            .map(|t| format!("eip/{t}"));
        if let Some(id) = token.as_ref().and_then(|t| self.tokens.get(t)) {
            return Ok(json!({"AllocationId": id}));
        }
        let ip = self.eip_pool.pop().ok_or_else(|| {
            ApiError::new(400, "InsufficientResource", "No public address is left.")
        })?;
        let id = self.next_id("eip");
        if let Some(t) = token {
            self.tokens.insert(t, id.clone());
        }
        let name = p.get("Name").cloned().unwrap_or_default();
        self.eips.insert(
            id.clone(),
            Eip {
                id: id.clone(),
                name,
                region,
                ip,
                bandwidth,
                state: EipState::Available,
                instance_id: None,
            },
        );
        Ok(json!({"AllocationId": id}))
    }

    fn describe_eips(&self, p: &Params) -> Result<Value, ApiError> {
        let ids: Option<Vec<&str>> = p.get("AllocationId").map(|s| s.split(',').collect());
        let all: Vec<Value> = self
            .eips
            .values()
            .filter(|e| p.get("EnsRegionId").is_none_or(|r| &e.region == r))
            .filter(|e| ids.as_ref().is_none_or(|ids| ids.contains(&e.id.as_str())))
            .filter(|e| p.get("EipAddress").is_none_or(|a| e.ip.to_string() == *a))
            .filter(|e| {
                p.get("AssociatedInstanceId")
                    .is_none_or(|i| e.instance_id.as_ref() == Some(i))
            })
            .map(|e| {
                let status = match e.state {
                    EipState::Available => "Available",
                    EipState::Associating(_) => "Associating",
                    EipState::InUse => "InUse",
                    EipState::Unassociating(_) => "Unassociating",
                };
                let kind = e.instance_id.as_ref().map(|i| {
                    if i.starts_with("lb-") {
                        "SlbInstance"
                    } else {
                        "EnsInstance"
                    }
                });
                json!({"AllocationId": e.id, "IpAddress": e.ip.to_string(), "Name": e.name,
                    "Status": status, "InstanceId": e.instance_id.clone().unwrap_or_default(),
                    "InstanceType": kind.unwrap_or(""), "Bandwidth": e.bandwidth,
                    "EnsRegionId": e.region})
            })
            .collect();
        page(p, all, "EipAddresses", "EipAddress")
    }

    fn eip_mut(&mut self, p: &Params) -> Result<&mut Eip, ApiError> {
        let id = req(p, "AllocationId")?;
        self.eips.get_mut(id).ok_or_else(|| {
            ApiError::new(
                404,
                "InvalidAllocationId.NotFound",
                format!("The EIP {id} does not exist."),
            )
        })
    }

    fn associate(&mut self, p: &Params, now: Instant) -> Result<Value, ApiError> {
        let instance = req(p, "InstanceId")?.to_string();
        match p.get("InstanceType").map(String::as_str) {
            Some("SlbInstance") | None => {
                let lb = self.lbs.get(&instance).ok_or_else(|| {
                    ApiError::new(
                        404,
                        "LoadBalancerNotFound",
                        format!("The load balancer {instance} does not exist."),
                    )
                })?;
                let status = Self::lb_status(lb, now);
                if status != "Active" {
                    return Err(ApiError::incorrect_status("the load balancer", status));
                }
                if self
                    .eips
                    .values()
                    .any(|e| e.instance_id.as_ref() == Some(&instance))
                {
                    return Err(ApiError::incorrect_status(
                        "the load balancer",
                        "an EIP is bound already",
                    ));
                }
            }
            Some(_) => return Err(ApiError::invalid("InstanceType")),
        }
        let delay = self.transition_delay;
        let e = self.eip_mut(p)?;
        if !matches!(e.state, EipState::Available) {
            return Err(ApiError::incorrect_status(
                "the EIP",
                &format!("{:?}", e.state),
            ));
        }
        e.state = EipState::Associating(now + delay);
        e.instance_id = Some(instance);
        Ok(json!({}))
    }

    fn unassociate(&mut self, p: &Params, now: Instant) -> Result<Value, ApiError> {
        let delay = self.transition_delay;
        let e = self.eip_mut(p)?;
        if !matches!(e.state, EipState::InUse) {
            return Err(ApiError::incorrect_status(
                "the EIP",
                &format!("{:?}", e.state),
            ));
        }
        e.state = EipState::Unassociating(now + delay);
        Ok(json!({}))
    }

    fn release(&mut self, p: &Params) -> Result<Value, ApiError> {
        let id = req(p, "InstanceId")?;
        if let Some(lb) = self.lbs.remove(id) {
            for e in self.eips.values_mut() {
                if e.instance_id.as_deref() == Some(id) {
                    e.instance_id = None;
                    e.state = EipState::Available;
                }
            }
            self.lb_pool.push(lb.address);
            return Ok(json!({}));
        }
        if let Some(e) = self.eips.get(id) {
            if !matches!(e.state, EipState::Available) {
                return Err(ApiError::incorrect_status(
                    "the EIP",
                    "bound; unbind it first",
                ));
            }
            if let Some(e) = self.eips.remove(id) {
                self.eip_pool.push(e.ip);
            }
            return Ok(json!({}));
        }
        Err(ApiError::new(
            404,
            "InvalidInstanceId.NotFound",
            format!("The instance {id} does not exist."),
        ))
    }

    /// Everything still alive: the leak report.
    pub fn inventory(&self, now: Instant) -> Value {
        json!({
            "LoadBalancers": self.lbs.values().map(|lb| {
                let mut v = Self::lb_json(lb, now);
                v["Listeners"] = lb.listeners.keys().map(|(pr, po)| json!(format!("{pr}/{po}"))).collect();
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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BackendOp {
    Add,
    Set,
    Remove,
}

fn listener_not_found(port: u16) -> ApiError {
    ApiError::new(
        404,
        "ListenerNotFound",
        format!("The listener on port {port} does not exist."),
    )
}

/// `PageNumber` (from 1) and `PageSize` (1..=100, default 10) over a full result.
fn page(p: &Params, all: Vec<Value>, outer: &str, inner: &str) -> Result<Value, ApiError> {
    let number = num(p, "PageNumber", 1..=1_000_000)?.unwrap_or(1) as usize;
    let size = num(p, "PageSize", 1..=100)?.unwrap_or(10) as usize;
    let total = all.len();
    let items: Vec<Value> = all
        .into_iter()
        .skip((number - 1) * size)
        .take(size)
        .collect();
    let mut v = json!({"TotalCount": total, "PageNumber": number, "PageSize": size});
    v[outer] = json!({ inner: items });
    Ok(v)
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn params(kv: &[(&str, &str)]) -> Params {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn state() -> (State, Instant) {
        let mut s = State::new(
            "10.99.0.0/24".parse().unwrap(),
            "10.98.0.0/24".parse().unwrap(),
        );
        s.instances.insert(
            "i-1".into(),
            Instance {
                ip: Ipv4Addr::new(10, 0, 1, 2),
                running: true,
            },
        );
        (s, Instant::now())
    }

    fn create(s: &mut State, now: Instant, name: &str) -> String {
        let v = s
            .handle(
                "CreateLoadBalancer",
                &params(&[
                    ("EnsRegionId", "r"),
                    ("LoadBalancerSpec", "elb.s1.small"),
                    ("PayType", "PostPaid"),
                    ("NetworkId", "n"),
                    ("VSwitchId", "v"),
                    ("LoadBalancerName", name),
                ]),
                now,
            )
            .unwrap();
        v["LoadBalancerId"].as_str().unwrap().to_string()
    }

    #[test]
    fn a_creating_instance_refuses_listeners_with_incorrect_status_then_takes_them() {
        let (mut s, now) = state();
        let id = create(&mut s, now, "a");
        let l = params(&[
            ("LoadBalancerId", &id),
            ("ListenerPort", "80"),
            ("BackendServerPort", "30080"),
        ]);
        let e = s
            .handle("CreateLoadBalancerTCPListener", &l, now)
            .unwrap_err();
        assert_eq!(e.code, "IncorrectStatus");
        let later = now + s.create_delay;
        s.handle("CreateLoadBalancerTCPListener", &l, later)
            .unwrap();
        let e = s
            .handle("CreateLoadBalancerTCPListener", &l, later)
            .unwrap_err();
        assert_eq!(e.code, "ListenerAlreadyExists");
        let v = s
            .handle(
                "DescribeLoadBalancerListeners",
                &params(&[("LoadBalancerId", &id)]),
                later,
            )
            .unwrap();
        assert_eq!(v["Listeners"]["Listener"][0]["Status"], "stopped");
    }

    #[test]
    fn backends_must_be_running_known_instances_at_most_twenty_per_call() {
        let (mut s, now) = state();
        let id = create(&mut s, now, "a");
        let later = now + s.create_delay;
        let add = |list: &str| params(&[("LoadBalancerId", &id), ("BackendServers", list)]);
        let e = s
            .handle("AddBackendServers", &add(r#"[{"ServerId":"i-9"}]"#), later)
            .unwrap_err();
        assert_eq!(e.code, "InvalidInstanceId.NotFound");
        let many: Vec<String> = (0..21)
            .map(|n| format!(r#"{{"ServerId":"i-{n}"}}"#))
            .collect();
        let e = s
            .handle(
                "AddBackendServers",
                &add(&format!("[{}]", many.join(","))),
                later,
            )
            .unwrap_err();
        assert_eq!(e.code, "InvalidParameter.BackendServers");
        s.handle(
            "AddBackendServers",
            &add(r#"[{"ServerId":"i-1","Weight":30,"Type":"ens"}]"#),
            later,
        )
        .unwrap();
        assert_eq!(s.lbs[&id].backends["i-1"], 30);
    }

    #[test]
    fn a_bound_eip_cannot_be_released_and_pages_hold_what_they_say() {
        let (mut s, now) = state();
        let later = now + s.create_delay;
        let lb = create(&mut s, now, "a");
        for n in 0..5 {
            create(&mut s, now, &format!("x{n}"));
        }
        let eip = s
            .handle(
                "CreateEipInstance",
                &params(&[
                    ("EnsRegionId", "r"),
                    ("InstanceChargeType", "PostPaid"),
                    ("InternetChargeType", "95BandwidthByMonth"),
                    ("Name", "e"),
                ]),
                now,
            )
            .unwrap()["AllocationId"]
            .as_str()
            .unwrap()
            .to_string();
        let assoc = params(&[
            ("AllocationId", &eip),
            ("InstanceId", &lb),
            ("InstanceType", "SlbInstance"),
        ]);
        s.handle("AssociateEnsEipAddress", &assoc, later).unwrap();
        let e = s
            .handle("ReleaseInstance", &params(&[("InstanceId", &eip)]), later)
            .unwrap_err();
        assert_eq!(e.code, "IncorrectStatus");
        let mut page = |n: &str| {
            s.handle(
                "DescribeLoadBalancers",
                &params(&[("PageNumber", n), ("PageSize", "4")]),
                later,
            )
            .unwrap()
        };
        let (p1, p2) = (page("1"), page("2"));
        assert_eq!(p1["TotalCount"], 6);
        assert_eq!(
            p1["LoadBalancers"]["LoadBalancer"]
                .as_array()
                .unwrap()
                .len(),
            4
        );
        assert_eq!(
            p2["LoadBalancers"]["LoadBalancer"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
        let e = s
            .handle(
                "DescribeLoadBalancers",
                &params(&[("PageSize", "101")]),
                later,
            )
            .unwrap_err();
        assert_eq!(e.code, "InvalidParameter.PageSize");
    }
}
