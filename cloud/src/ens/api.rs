//! The ENS actions the load balancer provider uses, with their documented parameter names
//! (OpenAPI 2017-11-10), and the decoding of their answers into the neutral model.
//!
//! Where the reference is silent we assumed (and the emulator does the same):
//! `DescribeEnsEipAddresses` items carry `Name` and `IpAddress`; `DescribeLoadBalancers`
//! filters by `LoadBalancerName` exactly; `ReleaseInstance` releases an ELB with its
//! listeners and backends.

use serde_json::Value;

use super::client::{EnsClient, EnsError};
use crate::model::{
    EipStatus, HealthCheck, HttpCheck, LbStatus, ListenerKey, ListenerSpec, ListenerStatus,
    NetworkRef, ObservedEip, ObservedLb, ObservedListener, Protocol,
};

/// ENS takes at most 20 backend servers per Add/Set/RemoveBackendServers call.
pub const BACKENDS_PER_CALL: usize = 20;

/// `DescribeEnsEipAddresses` takes at most 50 comma-separated `AllocationId`s.
pub const EIP_IDS_PER_CALL: usize = 50;

/// An instance's attributes as `DescribeLoadBalancerAttribute` gives them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LbAttributes {
    pub lb: ObservedLb,
    pub backends: Vec<(String, u32)>,
}

fn str_of(v: &Value, key: &str) -> Option<String> {
    match v.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn num_of(v: &Value, key: &str) -> Option<u64> {
    match v.get(key)? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// The items of a list that the API returns either bare (`"Key": [...]`) or wrapped
/// (`"Keys": {"Key": [...]}`), as the SDK models show both.
fn items<'a>(v: &'a Value, outer: &str, inner: &str) -> Vec<&'a Value> {
    match v.get(outer) {
        Some(Value::Array(a)) => a.iter().collect(),
        Some(Value::Object(o)) => match o.get(inner) {
            Some(Value::Array(a)) => a.iter().collect(),
            _ => vec![],
        },
        _ => vec![],
    }
}

fn decode(action: &str, detail: impl Into<String>) -> EnsError {
    EnsError::Decode {
        action: action.into(),
        detail: detail.into(),
    }
}

fn lb_status(s: &str) -> LbStatus {
    match s {
        "Active" => LbStatus::Active,
        "Creating" => LbStatus::Creating,
        "Inactive" => LbStatus::Inactive,
        "Deleting" | "Releasing" => LbStatus::Deleting,
        other => LbStatus::Other(other.to_string()),
    }
}

fn listener_status(s: &str) -> ListenerStatus {
    match s.to_ascii_lowercase().as_str() {
        "running" => ListenerStatus::Running,
        "stopped" => ListenerStatus::Stopped,
        "starting" => ListenerStatus::Starting,
        "stopping" => ListenerStatus::Stopping,
        "configuring" => ListenerStatus::Configuring,
        _ => ListenerStatus::Other(s.to_string()),
    }
}

fn eip_status(s: &str) -> EipStatus {
    match s {
        "Available" => EipStatus::Available,
        "Associating" => EipStatus::Associating,
        "InUse" => EipStatus::InUse,
        "Unassociating" => EipStatus::Unassociating,
        other => EipStatus::Other(other.to_string()),
    }
}

fn lb_of(action: &str, v: &Value) -> Result<ObservedLb, EnsError> {
    Ok(ObservedLb {
        id: str_of(v, "LoadBalancerId").ok_or_else(|| decode(action, "no LoadBalancerId"))?,
        name: str_of(v, "LoadBalancerName").unwrap_or_default(),
        status: lb_status(&str_of(v, "LoadBalancerStatus").unwrap_or_default()),
        address: str_of(v, "Address").filter(|a| !a.is_empty()),
    })
}

/// Pages through a Describe action until `TotalCount` items (or an empty page) were seen.
async fn paged(
    client: &EnsClient,
    action: &str,
    params: &[(&str, String)],
    outer: &str,
    inner: &str,
) -> Result<Vec<Value>, EnsError> {
    let size = client.config().page_size.clamp(1, 100);
    let mut out = Vec::new();
    for page in 1u32.. {
        let mut p = params.to_vec();
        p.push(("PageNumber", page.to_string()));
        p.push(("PageSize", size.to_string()));
        let v = client.call(action, &p).await?;
        let got = items(&v, outer, inner);
        let n = got.len();
        out.extend(got.into_iter().cloned());
        let total = num_of(&v, "TotalCount").unwrap_or(0) as usize;
        if n == 0 || out.len() >= total {
            break;
        }
    }
    Ok(out)
}

/// `DescribeLoadBalancers` by exact name in one ENS node, every page.
pub async fn load_balancers_named(
    client: &EnsClient,
    region: &str,
    name: &str,
) -> Result<Vec<ObservedLb>, EnsError> {
    let action = "DescribeLoadBalancers";
    let params = [
        ("EnsRegionId", region.to_string()),
        ("LoadBalancerName", name.to_string()),
    ];
    let all = paged(client, action, &params, "LoadBalancers", "LoadBalancer").await?;
    let mut lbs = all
        .iter()
        .map(|v| lb_of(action, v))
        .collect::<Result<Vec<_>, _>>()?;
    lbs.retain(|lb| lb.name == name);
    Ok(lbs)
}

/// `DescribeLoadBalancers` of one ENS node, every page, whatever their names (the sweep
/// that finds what a writer of record created for PoolServices that are gone).
pub async fn load_balancers_in(
    client: &EnsClient,
    region: &str,
) -> Result<Vec<ObservedLb>, EnsError> {
    let action = "DescribeLoadBalancers";
    let params = [("EnsRegionId", region.to_string())];
    let all = paged(client, action, &params, "LoadBalancers", "LoadBalancer").await?;
    all.iter().map(|v| lb_of(action, v)).collect()
}

/// `DescribeLoadBalancerAttribute`; `None` when the instance does not exist.
pub async fn load_balancer(client: &EnsClient, id: &str) -> Result<Option<LbAttributes>, EnsError> {
    let action = "DescribeLoadBalancerAttribute";
    let v = match client
        .call(action, &[("LoadBalancerId", id.to_string())])
        .await
    {
        Ok(v) => v,
        Err(e) if e.not_found() => return Ok(None),
        Err(e) => return Err(e),
    };
    let lb = lb_of(action, &v)?;
    let mut backends = Vec::new();
    for b in items(&v, "BackendServers", "BackendServer") {
        let id = str_of(b, "ServerId").ok_or_else(|| decode(action, "backend without ServerId"))?;
        backends.push((id, num_of(b, "Weight").unwrap_or(100) as u32));
    }
    Ok(Some(LbAttributes { lb, backends }))
}

/// `DescribeLoadBalancerListeners`, every page.
pub async fn listeners(client: &EnsClient, lb_id: &str) -> Result<Vec<ObservedListener>, EnsError> {
    let action = "DescribeLoadBalancerListeners";
    let all = paged(
        client,
        action,
        &[("LoadBalancerId", lb_id.to_string())],
        "Listeners",
        "Listener",
    )
    .await?;
    let mut out = Vec::new();
    for v in all {
        let port = num_of(&v, "ListenerPort").ok_or_else(|| decode(action, "no ListenerPort"))?;
        let proto = str_of(&v, "Protocol").unwrap_or_default();
        let Some(protocol) = Protocol::parse(&proto) else {
            // http/https listeners are not ours to manage; leave them out of the view.
            continue;
        };
        out.push(ObservedListener {
            port: port as u16,
            protocol,
            backend_port: num_of(&v, "BackendServerPort").unwrap_or(0) as u16,
            status: listener_status(&str_of(&v, "Status").unwrap_or_default()),
            health: None,
        });
    }
    Ok(out)
}

fn eip_of(v: &Value) -> Option<(String, ObservedEip)> {
    Some((
        str_of(v, "Name").unwrap_or_default(),
        ObservedEip {
            allocation_id: str_of(v, "AllocationId")?,
            ip: str_of(v, "IpAddress").unwrap_or_default(),
            status: eip_status(&str_of(v, "Status").unwrap_or_default()),
            instance_id: str_of(v, "InstanceId").filter(|s| !s.is_empty()),
        },
    ))
}

/// `DescribeEnsEipAddresses` of one ENS node, every page, as (name, EIP).
pub async fn eips(
    client: &EnsClient,
    region: &str,
) -> Result<Vec<(String, ObservedEip)>, EnsError> {
    let all = paged(
        client,
        "DescribeEnsEipAddresses",
        &[("EnsRegionId", region.to_string())],
        "EipAddresses",
        "EipAddress",
    )
    .await?;
    Ok(all.iter().filter_map(eip_of).collect())
}

/// `DescribeEnsEipAddresses` of the given allocation ids in one ENS node (at most 50 ids
/// per call, as the reference allows), as (name, EIP); none asked, no call.
pub async fn eips_by_id(
    client: &EnsClient,
    region: &str,
    ids: &[&str],
) -> Result<Vec<(String, ObservedEip)>, EnsError> {
    let mut out = Vec::new();
    for chunk in ids.chunks(EIP_IDS_PER_CALL) {
        let all = paged(
            client,
            "DescribeEnsEipAddresses",
            &[
                ("EnsRegionId", region.to_string()),
                ("AllocationId", chunk.join(",")),
            ],
            "EipAddresses",
            "EipAddress",
        )
        .await?;
        out.extend(all.iter().filter_map(eip_of));
    }
    Ok(out)
}

/// `DescribeEnsEipAddresses` bound to one instance.
pub async fn eip_of_instance(
    client: &EnsClient,
    instance_id: &str,
) -> Result<Option<ObservedEip>, EnsError> {
    let all = paged(
        client,
        "DescribeEnsEipAddresses",
        &[("AssociatedInstanceId", instance_id.to_string())],
        "EipAddresses",
        "EipAddress",
    )
    .await?;
    Ok(all.iter().filter_map(eip_of).map(|(_, e)| e).next())
}

/// `CreateLoadBalancer` (PostPaid, the only billing the API takes); the new id. The client
/// token makes a retried create return the first instance instead of a second.
pub async fn create_load_balancer(
    client: &EnsClient,
    name: &str,
    network: &NetworkRef,
    spec: &str,
    client_token: &str,
) -> Result<String, EnsError> {
    let action = "CreateLoadBalancer";
    let v = client
        .call(
            action,
            &[
                ("EnsRegionId", network.region.clone()),
                ("LoadBalancerSpec", spec.to_string()),
                ("LoadBalancerName", name.to_string()),
                ("PayType", "PostPaid".to_string()),
                ("NetworkId", network.network_id.clone()),
                ("VSwitchId", network.vswitch_id.clone()),
                ("ClientToken", client_token.to_string()),
            ],
        )
        .await?;
    str_of(&v, "LoadBalancerId").ok_or_else(|| decode(action, "no LoadBalancerId"))
}

/// The listener call of `key`'s protocol: `<verb>LoadBalancerTCPListener<suffix>` or UDP.
fn listener_action(verb: &str, key: ListenerKey, suffix: &str) -> String {
    let proto = match key.0 {
        Protocol::Tcp => "TCP",
        Protocol::Udp => "UDP",
    };
    format!("{verb}LoadBalancer{proto}Listener{suffix}")
}

/// The health-check parameters of a create or set call. Every value is sent, the probed
/// port too (the backend port when unset, which is ENS's own default), so a set call brings
/// back a value the Service no longer overrides. UDP calls take no type and no HTTP fields.
fn health_params(key: ListenerKey, spec: &ListenerSpec) -> Vec<(&'static str, String)> {
    let h = &spec.health;
    let mut p = vec![
        ("HealthyThreshold", h.healthy_threshold.to_string()),
        ("UnhealthyThreshold", h.unhealthy_threshold.to_string()),
        ("HealthCheckConnectTimeout", h.connect_timeout.to_string()),
        ("HealthCheckInterval", h.interval.to_string()),
        (
            "HealthCheckConnectPort",
            h.port_for(spec.backend_port).to_string(),
        ),
    ];
    if key.0 == Protocol::Tcp {
        p.push(("HealthCheckType", h.kind().to_string()));
        if let Some(http) = &h.http {
            if let Some(d) = &http.domain {
                p.push(("HealthCheckDomain", d.clone()));
            }
            if let Some(u) = &http.uri {
                p.push(("HealthCheckURI", u.clone()));
            }
            p.push(("HealthCheckHttpCode", http.http_codes.clone()));
        }
    }
    p
}

/// `CreateLoadBalancerTCPListener` / `CreateLoadBalancerUDPListener`, weighted round robin,
/// forwarding to the spec's backend port (the NodePort), with its health check. Created
/// `Stopped`.
pub async fn create_listener(
    client: &EnsClient,
    lb_id: &str,
    key: ListenerKey,
    spec: &ListenerSpec,
    description: &str,
) -> Result<(), EnsError> {
    let mut params = vec![
        ("LoadBalancerId", lb_id.to_string()),
        ("ListenerPort", key.1.to_string()),
        ("BackendServerPort", spec.backend_port.to_string()),
        ("Scheduler", "wrr".to_string()),
        ("Description", description.to_string()),
    ];
    params.extend(health_params(key, spec));
    client
        .call(&listener_action("Create", key, ""), &params)
        .await
        .map(drop)
}

/// `SetLoadBalancerTCPListenerAttribute` / `...UDP...`: the health check in place.
pub async fn set_listener_health(
    client: &EnsClient,
    lb_id: &str,
    key: ListenerKey,
    spec: &ListenerSpec,
) -> Result<(), EnsError> {
    let mut params = vec![
        ("LoadBalancerId", lb_id.to_string()),
        ("ListenerPort", key.1.to_string()),
    ];
    params.extend(health_params(key, spec));
    client
        .call(&listener_action("Set", key, "Attribute"), &params)
        .await
        .map(drop)
}

/// `DescribeLoadBalancerTCPListenerAttribute` / `...UDP...`: the listener's health check.
pub async fn listener_health(
    client: &EnsClient,
    lb_id: &str,
    key: ListenerKey,
) -> Result<HealthCheck, EnsError> {
    let action = listener_action("Describe", key, "Attribute");
    let v = client
        .call(
            &action,
            &[
                ("LoadBalancerId", lb_id.to_string()),
                ("ListenerPort", key.1.to_string()),
            ],
        )
        .await?;
    let n = |k: &str| -> Result<u32, EnsError> {
        num_of(&v, k)
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| decode(&action, format!("no {k}")))
    };
    let text = |k: &str| str_of(&v, k).filter(|s| !s.is_empty());
    let http = (key.0 == Protocol::Tcp
        && text("HealthCheckType").is_some_and(|t| t.eq_ignore_ascii_case("http")))
    .then(|| HttpCheck {
        domain: text("HealthCheckDomain"),
        uri: text("HealthCheckURI"),
        http_codes: text("HealthCheckHttpCode").unwrap_or_else(|| "http_2xx".to_string()),
    });
    Ok(HealthCheck {
        healthy_threshold: n("HealthyThreshold")?,
        unhealthy_threshold: n("UnhealthyThreshold")?,
        connect_timeout: n("HealthCheckConnectTimeout")?,
        interval: n("HealthCheckInterval")?,
        connect_port: num_of(&v, "HealthCheckConnectPort")
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0),
        http,
    })
}

/// `StartLoadBalancerListener` / `DeleteLoadBalancerListener` (by port and protocol).
pub async fn listener_call(
    client: &EnsClient,
    action: &str,
    lb_id: &str,
    key: ListenerKey,
) -> Result<(), EnsError> {
    client
        .call(
            action,
            &[
                ("LoadBalancerId", lb_id.to_string()),
                ("ListenerPort", key.1.to_string()),
                ("ListenerProtocol", key.0.as_str().to_string()),
            ],
        )
        .await
        .map(drop)
}

/// `AddBackendServers` / `SetBackendServers` / `RemoveBackendServers`: `BackendServers` is
/// a JSON array of `{ServerId, Weight, Type: "ens"}` (the SDKs send it JSON-encoded), at most
/// 20 per call.
pub async fn backend_call(
    client: &EnsClient,
    action: &str,
    lb_id: &str,
    servers: &[(String, Option<u32>)],
) -> Result<(), EnsError> {
    for chunk in servers.chunks(BACKENDS_PER_CALL) {
        let list: Vec<Value> = chunk
            .iter()
            .map(|(id, w)| {
                let mut o = serde_json::json!({"ServerId": id, "Type": "ens"});
                if let Some(w) = w {
                    o["Weight"] = Value::from(*w);
                }
                o
            })
            .collect();
        client
            .call(
                action,
                &[
                    ("LoadBalancerId", lb_id.to_string()),
                    ("BackendServers", Value::Array(list).to_string()),
                ],
            )
            .await?;
    }
    Ok(())
}

/// `CreateEipInstance`, pay-as-you-go by monthly 95th percentile bandwidth (the values the
/// API reference gives); the new `AllocationId`.
pub async fn create_eip(
    client: &EnsClient,
    name: &str,
    region: &str,
    bandwidth: u32,
) -> Result<String, EnsError> {
    let action = "CreateEipInstance";
    let v = client
        .call(
            action,
            &[
                ("EnsRegionId", region.to_string()),
                ("Name", name.to_string()),
                ("Bandwidth", bandwidth.to_string()),
                ("InstanceChargeType", "PostPaid".to_string()),
                ("InternetChargeType", "95BandwidthByMonth".to_string()),
            ],
        )
        .await?;
    str_of(&v, "AllocationId").ok_or_else(|| decode(action, "no AllocationId"))
}

/// `AssociateEnsEipAddress` with `InstanceType=SlbInstance` (an ELB).
pub async fn associate_eip(
    client: &EnsClient,
    allocation_id: &str,
    lb_id: &str,
) -> Result<(), EnsError> {
    client
        .call(
            "AssociateEnsEipAddress",
            &[
                ("AllocationId", allocation_id.to_string()),
                ("InstanceId", lb_id.to_string()),
                ("InstanceType", "SlbInstance".to_string()),
            ],
        )
        .await
        .map(drop)
}

/// `UnAssociateEnsEipAddress`.
pub async fn unassociate_eip(client: &EnsClient, allocation_id: &str) -> Result<(), EnsError> {
    client
        .call(
            "UnAssociateEnsEipAddress",
            &[("AllocationId", allocation_id.to_string())],
        )
        .await
        .map(drop)
}

/// `ReleaseInstance`: releases an EIP or an ELB instance (the reference lists both). Gone
/// already counts as released.
pub async fn release(client: &EnsClient, instance_id: &str) -> Result<(), EnsError> {
    match client
        .call(
            "ReleaseInstance",
            &[("InstanceId", instance_id.to_string())],
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.not_found() => Ok(()),
        Err(e) => Err(e),
    }
}
