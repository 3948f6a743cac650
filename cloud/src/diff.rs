//! Pure differences between what a PoolService's load balancer should be and what the cloud
//! has, as the next cloud calls. Level-triggered: each round sees a fresh observation and
//! emits only calls that are valid now (a listener needs the instance's id, so the instance
//! is created in one round and its listeners in the next). Repeating a round after a crash
//! or a lost reply is safe: the observation already shows what was done.

use std::collections::BTreeSet;

use crate::model::{
    Action, AddressType, Desired, EipStatus, HealthCheck, LbStatus, ListenerKey, ListenerStatus,
    Observed, ObservedEip, ObservedListener, Ownership, Step, Target,
};

/// The next calls that move `observed` toward `desired`.
pub fn diff(desired: &Desired, observed: &Observed) -> Step {
    let mut step = Step::default();
    let target = &desired.target;
    let managed = target.ownership == Ownership::Managed;
    if managed {
        release_duplicates(observed, &mut step);
    }
    let Some(lb) = &observed.lb else {
        match &target.ownership {
            Ownership::Managed => step.actions.push(Action::CreateLoadBalancer {
                name: target.name.clone(),
                network: desired.network.clone(),
                spec: desired.spec.clone(),
            }),
            Ownership::UserManaged { lb_id, .. } => {
                step.waiting = Some(format!("user-managed load balancer {lb_id} does not exist"))
            }
        }
        return step;
    };
    if lb.status != LbStatus::Active {
        step.waiting = Some(format!("load balancer {} is {:?}", lb.id, lb.status));
        return step;
    }
    listeners(desired, observed, &lb.id, &mut step);
    backends(desired, observed, &lb.id, &mut step);
    if managed {
        eip(desired, observed, &lb.id, &mut step);
    }
    step
}

/// The next calls that remove what we made for `target`: for a managed target every named
/// instance (EIP unbound first); for a user-managed one only our backends and, if we manage
/// them, our listeners. A user's instance and EIP are never released.
pub fn diff_delete(target: &Target, observed: &Observed) -> Step {
    let mut step = Step::default();
    match &target.ownership {
        Ownership::Managed => {
            let eips = observed.eip.iter().chain(&observed.duplicate_eips);
            for e in eips {
                retire_eip(e, &mut step);
            }
            let lbs = observed.lb.iter().chain(&observed.duplicate_lbs);
            for lb in lbs {
                if lb.status == LbStatus::Deleting {
                    step.waiting = Some(format!("load balancer {} is being deleted", lb.id));
                } else {
                    step.actions.push(Action::ReleaseLoadBalancer {
                        lb_id: lb.id.clone(),
                    });
                }
            }
        }
        Ownership::UserManaged {
            manage_listeners, ..
        } => {
            let Some(lb) = &observed.lb else { return step };
            if *manage_listeners {
                for l in &observed.listeners {
                    let key = (l.protocol, l.port);
                    if target.listener_keys.contains(&key) {
                        step.actions.push(Action::DeleteListener {
                            lb_id: lb.id.clone(),
                            key,
                        });
                    }
                }
            }
            if target.shared_with.is_empty() {
                let ours: Vec<String> = observed
                    .backends
                    .keys()
                    .filter(|id| target.owned_backends.contains(*id))
                    .cloned()
                    .collect();
                if !ours.is_empty() {
                    step.actions.push(Action::RemoveBackends {
                        lb_id: lb.id.clone(),
                        server_ids: ours,
                    });
                }
            }
        }
    }
    step
}

/// The address clients use: the EIP bound to the load balancer, else (intranet, or a user's
/// instance without an EIP) the load balancer's own address. `None` until it exists.
pub fn ingress(desired: &Desired, observed: &Observed) -> Option<String> {
    let lb = observed
        .lb
        .as_ref()
        .filter(|lb| lb.status == LbStatus::Active)?;
    let bound = observed
        .eip
        .as_ref()
        .filter(|e| e.status == EipStatus::InUse && e.instance_id.as_deref() == Some(&lb.id));
    match (desired.address_type, &desired.target.ownership, bound) {
        (_, _, Some(e)) if desired.address_type == AddressType::Internet => Some(e.ip.clone()),
        (AddressType::Internet, Ownership::Managed, None) => None,
        _ => lb.address.clone(),
    }
}

fn release_duplicates(observed: &Observed, step: &mut Step) {
    for lb in &observed.duplicate_lbs {
        if lb.status != LbStatus::Deleting {
            step.actions.push(Action::ReleaseLoadBalancer {
                lb_id: lb.id.clone(),
            });
        }
    }
    for e in &observed.duplicate_eips {
        retire_eip(e, step);
    }
}

/// Unbinds a bound EIP, releases an unbound one, waits on one in transition.
fn retire_eip(e: &ObservedEip, step: &mut Step) {
    match e.status {
        EipStatus::InUse => step.actions.push(Action::UnassociateEip {
            allocation_id: e.allocation_id.clone(),
        }),
        EipStatus::Available => step.actions.push(Action::ReleaseEip {
            allocation_id: e.allocation_id.clone(),
        }),
        _ => step.waiting = Some(format!("EIP {} is {:?}", e.allocation_id, e.status)),
    }
}

/// Which listener keys we may touch on this load balancer.
fn may_touch(target: &Target, key: &ListenerKey) -> bool {
    match &target.ownership {
        Ownership::Managed => true,
        Ownership::UserManaged {
            manage_listeners, ..
        } => *manage_listeners && target.listener_keys.contains(key),
    }
}

/// Deletes listeners that are extra or forward to the wrong port (created again next round:
/// a port cannot hold two), creates missing ones, starts stopped ones, sets the health check
/// of running ones that differ.
fn listeners(desired: &Desired, observed: &Observed, lb_id: &str, step: &mut Step) {
    let mut present = BTreeSet::new();
    for l in &observed.listeners {
        let key = (l.protocol, l.port);
        if !may_touch(&desired.target, &key) {
            continue;
        }
        present.insert(key);
        match desired.listeners.get(&key) {
            Some(spec) if spec.backend_port == l.backend_port => match l.status {
                ListenerStatus::Running if !health_matches(&spec.health, l) => {
                    step.actions.push(Action::SetListenerHealthCheck {
                        lb_id: lb_id.to_string(),
                        key,
                        spec: spec.clone(),
                    })
                }
                ListenerStatus::Running => {}
                ListenerStatus::Stopped => step.actions.push(Action::StartListener {
                    lb_id: lb_id.to_string(),
                    key,
                }),
                _ => {
                    step.waiting = Some(format!("listener {key:?} is {:?}", l.status));
                }
            },
            _ => step.actions.push(Action::DeleteListener {
                lb_id: lb_id.to_string(),
                key,
            }),
        }
    }
    for (key, spec) in &desired.listeners {
        if may_touch(&desired.target, key) && !present.contains(key) {
            step.actions.push(Action::CreateListener {
                lb_id: lb_id.to_string(),
                key: *key,
                spec: spec.clone(),
            });
        }
    }
}

/// Whether the listener's health check (when it was read) is the one we want. The probed
/// port is compared as probed (unset = the backend port); an HTTP check's domain and URI
/// only when we set them (ENS keeps an attribute a Set call does not name, so an unset one
/// cannot be asked back to a default); status classes as a set.
pub fn health_matches(want: &HealthCheck, l: &ObservedListener) -> bool {
    let Some(have) = &l.health else {
        return true;
    };
    let codes = |c: &str| -> BTreeSet<String> {
        c.split(',')
            .map(|x| x.trim().to_ascii_lowercase())
            .filter(|x| !x.is_empty())
            .collect()
    };
    let http = match (&want.http, &have.http) {
        (None, None) => true,
        (Some(w), Some(h)) => {
            w.domain
                .as_ref()
                .is_none_or(|d| h.domain.as_ref() == Some(d))
                && w.uri.as_ref().is_none_or(|u| h.uri.as_ref() == Some(u))
                && codes(&w.http_codes) == codes(&h.http_codes)
        }
        _ => false,
    };
    http && want.healthy_threshold == have.healthy_threshold
        && want.unhealthy_threshold == have.unhealthy_threshold
        && want.connect_timeout == have.connect_timeout
        && want.interval == have.interval
        && want.port_for(l.backend_port) == have.port_for(l.backend_port)
}

/// Adds missing backends first, then fixes weights, then removes extra ones, so a node
/// change never leaves the load balancer with fewer backends than either end state.
fn backends(desired: &Desired, observed: &Observed, lb_id: &str, step: &mut Step) {
    let mut add = Vec::new();
    let mut set = Vec::new();
    for (id, weight) in &desired.backends {
        match observed.backends.get(id) {
            None => add.push((id.clone(), *weight)),
            Some(w) if w != weight => set.push((id.clone(), *weight)),
            Some(_) => {}
        }
    }
    let remove: Vec<String> = observed
        .backends
        .keys()
        .filter(|id| !desired.backends.contains_key(*id))
        .filter(|id| match desired.target.ownership {
            Ownership::Managed => true,
            Ownership::UserManaged { .. } => desired.target.owned_backends.contains(*id),
        })
        .cloned()
        .collect();
    if !add.is_empty() {
        step.actions.push(Action::AddBackends {
            lb_id: lb_id.to_string(),
            backends: add,
        });
    }
    if !set.is_empty() {
        step.actions.push(Action::SetBackendWeights {
            lb_id: lb_id.to_string(),
            backends: set,
        });
    }
    if !remove.is_empty() {
        step.actions.push(Action::RemoveBackends {
            lb_id: lb_id.to_string(),
            server_ids: remove,
        });
    }
}

/// Internet: one EIP with our name, bound to the instance. Intranet: none.
fn eip(desired: &Desired, observed: &Observed, lb_id: &str, step: &mut Step) {
    let Some(e) = &observed.eip else {
        if desired.address_type == AddressType::Internet {
            step.actions.push(Action::CreateEip {
                name: desired.target.name.clone(),
                region: desired.network.region.clone(),
                bandwidth: desired.eip_bandwidth,
            });
        }
        return;
    };
    if desired.address_type == AddressType::Intranet {
        retire_eip(e, step);
        return;
    }
    match e.status {
        EipStatus::InUse if e.instance_id.as_deref() == Some(lb_id) => {}
        EipStatus::InUse => step.actions.push(Action::UnassociateEip {
            allocation_id: e.allocation_id.clone(),
        }),
        EipStatus::Available => step.actions.push(Action::AssociateEip {
            allocation_id: e.allocation_id.clone(),
            lb_id: lb_id.to_string(),
        }),
        _ => step.waiting = Some(format!("EIP {} is {:?}", e.allocation_id, e.status)),
    }
}
