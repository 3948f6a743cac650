//! The ENS actions over the emulated state, one function per action, with the
//! parameters, states and error codes of the API reference (see `cloud/src/ens/api.rs` for
//! the assumptions where it is silent).

use std::collections::BTreeMap;
use std::time::Instant;

use serde_json::{json, Value};

use super::{
    num, req, ApiError, Eip, EipState, Health, Lb, Listener, ListenerState, Params, State,
};

impl State {
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
            "DescribeLoadBalancerTCPListenerAttribute" => self.describe_listener(p, "tcp"),
            "DescribeLoadBalancerUDPListenerAttribute" => self.describe_listener(p, "udp"),
            "SetLoadBalancerTCPListenerAttribute" => self.set_listener(p, "tcp", now),
            "SetLoadBalancerUDPListenerAttribute" => self.set_listener(p, "udp", now),
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
        let health = Health::apply(&Health::default(), p, proto)?;
        let description = p.get("Description").cloned().unwrap_or_default();
        lb.listeners.insert(
            key,
            Listener {
                backend_port,
                state: ListenerState::Stopped,
                description,
                health,
            },
        );
        Ok(json!({}))
    }

    fn describe_listener(&self, p: &Params, proto: &str) -> Result<Value, ApiError> {
        let lb = self.lb(p)?;
        let key = Self::listener_key(p, lb, Some(proto))?;
        let l = lb
            .listeners
            .get(&key)
            .ok_or_else(|| listener_not_found(key.1))?;
        let mut v = l.health.json(proto, l.backend_port);
        v["ListenerPort"] = json!(key.1);
        v["BackendServerPort"] = json!(l.backend_port);
        v["Description"] = json!(l.description);
        v["Scheduler"] = json!("wrr");
        v["Status"] = json!(match l.state {
            ListenerState::Running => "running",
            ListenerState::Starting(_) => "starting",
            ListenerState::Stopped => "stopped",
        });
        Ok(v)
    }

    /// `Set...ListenerAttribute`: the given parameters change, the others stay.
    fn set_listener(&mut self, p: &Params, proto: &str, now: Instant) -> Result<Value, ApiError> {
        let lb = self.active_lb_mut(p, now)?;
        let key = Self::listener_key(p, lb, Some(proto))?;
        let l = lb
            .listeners
            .get_mut(&key)
            .ok_or_else(|| listener_not_found(key.1))?;
        l.health = Health::apply(&l.health, p, proto)?;
        if let Some(d) = p.get("Description").filter(|d| !d.is_empty()) {
            l.description = d.clone();
        }
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
