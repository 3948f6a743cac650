//! Pure formatting: a [`LocalView`] in, text out. Tables look like kubectl's (upper-case
//! headers, columns three spaces apart, `<none>` for empty cells, ages as `5m`); colour is a
//! parameter so the caller decides (only on a terminal, never under `NO_COLOR`).

use edgelb_view::{
    AllocationView, AnnouncementView, CandidateView, Health, IpRankView, LocalView, MemberView,
    PeerView, PoolView,
};
use serde::Serialize;

/// How to print.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Human table.
    Table,
    /// Table with more columns.
    Wide,
    /// The view's JSON.
    Json,
    /// The view's YAML.
    Yaml,
}

/// The age of something that started at `since`, seen at `now` (Unix seconds), the way
/// kubectl prints ages (`45s`, `3m20s`, `15m`, `5h10m`, `3d4h`, `40d`).
pub fn age(now: u64, since: Option<u64>) -> String {
    let Some(since) = since else {
        return "<none>".into();
    };
    let s = now.saturating_sub(since);
    let (m, h, d) = (s / 60, s / 3600, s / 86_400);
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        if s % 60 == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{}s", s % 60)
        }
    } else if h < 3 {
        format!("{m}m")
    } else if h < 8 {
        if m % 60 == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{}m", m % 60)
        }
    } else if h < 48 {
        format!("{h}h")
    } else if d < 8 {
        if h % 24 == 0 {
            format!("{d}d")
        } else {
            format!("{d}d{}h", h % 24)
        }
    } else if d < 365 * 2 {
        format!("{d}d")
    } else {
        format!("{}y{}d", d / 365, d % 365)
    }
}

/// ANSI colour of a cell, applied after padding so columns stay aligned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Colour {
    /// Healthy.
    Green,
    /// In between.
    Yellow,
    /// Broken.
    Red,
}

/// The colour of a BGP state.
pub fn state_colour(state: &str) -> Colour {
    match state {
        "Established" => Colour::Green,
        "OpenSent" | "OpenConfirm" | "Connect" => Colour::Yellow,
        _ => Colour::Red,
    }
}

/// The colour of a member health.
pub fn health_colour(h: Health) -> Colour {
    match h {
        Health::Alive => Colour::Green,
        Health::Suspect | Health::Unknown => Colour::Yellow,
        Health::Dead => Colour::Red,
    }
}

/// One cell, maybe coloured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cell {
    text: String,
    colour: Option<Colour>,
}

impl Cell {
    fn plain(text: impl Into<String>) -> Cell {
        let text = text.into();
        Cell {
            text: if text.is_empty() {
                "<none>".into()
            } else {
                text
            },
            colour: None,
        }
    }

    fn coloured(text: impl Into<String>, colour: Colour) -> Cell {
        Cell {
            colour: Some(colour),
            ..Cell::plain(text)
        }
    }
}

/// Renders rows under headers, kubectl style; `colour` enables ANSI colours.
pub fn table(headers: &[&str], rows: &[Vec<Cell>], colour: bool) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.text.chars().count());
            }
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<(String, Option<Colour>)>, out: &mut String| {
        let n = cells.len();
        let mut s = String::new();
        for (i, (text, c)) in cells.into_iter().enumerate() {
            let pad = if i + 1 < n {
                widths[i].saturating_sub(text.chars().count()) + 3
            } else {
                0
            };
            match (c, colour) {
                (Some(c), true) => {
                    let code = match c {
                        Colour::Green => "32",
                        Colour::Yellow => "33",
                        Colour::Red => "31",
                    };
                    s.push_str(&format!("\x1b[{code}m{text}\x1b[0m"));
                }
                _ => s.push_str(&text),
            }
            s.push_str(&" ".repeat(pad));
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(
        headers.iter().map(|h| (h.to_string(), None)).collect(),
        &mut out,
    );
    for r in rows {
        line(
            r.iter().map(|c| (c.text.clone(), c.colour)).collect(),
            &mut out,
        );
    }
    out
}

/// `peers`.
pub fn peers_table(v: &LocalView, wide: bool, colour: bool) -> String {
    let mut headers = vec!["PEER", "NAME", "STATE", "BFD", "UPTIME", "SENT", "RECEIVED"];
    if wide {
        headers.extend([
            "NOT-SENT",
            "MSGS-IN",
            "MSGS-OUT",
            "UPDATES-OUT",
            "FLAPS",
            "GR",
        ]);
    }
    headers.push("LAST-ERROR");
    let rows = v
        .peers
        .iter()
        .map(|p: &PeerView| {
            let mut r = vec![
                Cell::plain(&p.address),
                Cell::plain(&p.name),
                Cell::coloured(&p.state, state_colour(&p.state)),
                Cell::plain(bfd_cell(p)),
                Cell::plain(age(v.generated_at, p.established_since)),
                Cell::plain(p.prefixes_sent.to_string()),
                Cell::plain(p.prefixes_received.to_string()),
            ];
            if wide {
                r.extend([
                    Cell::plain(p.prefixes_not_sent.to_string()),
                    Cell::plain(p.messages_in.to_string()),
                    Cell::plain(p.messages_out.to_string()),
                    Cell::plain(p.updates_out.to_string()),
                    Cell::plain(
                        p.established_count
                            .saturating_sub(u64::from(p.is_up()))
                            .to_string(),
                    ),
                    Cell::plain(match (p.graceful_restart, p.graceful_notification) {
                        (true, true) => "yes+N",
                        (true, false) => "yes",
                        _ => "no",
                    }),
                ]);
            }
            let error = match (&p.last_error, p.last_error_at) {
                (Some(e), Some(at)) => format!("{e} ({} ago)", age(v.generated_at, Some(at))),
                (Some(e), None) => e.clone(),
                _ => String::new(),
            };
            // A family announced to nobody is worth more than the last error: say it first.
            let problems: Vec<String> = p
                .families_not_announced
                .iter()
                .map(|f| format!("{} not announced: {}", f.family, f.reason))
                .chain((!error.is_empty()).then_some(error))
                .collect();
            r.push(Cell::plain(problems.join("; ")));
            r
        })
        .collect::<Vec<_>>();
    table(&headers, &rows, colour)
}

/// `Up`, `Down (control detection time expired)`, or empty without BFD.
fn bfd_cell(p: &PeerView) -> String {
    match (&p.bfd, &p.bfd_diag) {
        (Some(s), Some(d)) if s != "Up" => format!("{s} ({d})"),
        (Some(s), _) => s.clone(),
        (None, _) => String::new(),
    }
}

fn targets(a: &AnnouncementView) -> String {
    if a.peers.is_empty() {
        a.interfaces.join(",")
    } else {
        a.peers.join(",")
    }
}

/// `announcements`.
/// With node pools, pool by pool: a `NODE-POOL` column, rows grouped by it (cluster-wide
/// IPs first).
pub fn announcements_table(v: &LocalView, wide: bool) -> String {
    let pooled = v.announcements.iter().any(|a| a.node_pool.is_some());
    let mut headers = vec!["IP", "SERVICE"];
    if pooled {
        headers.push("NODE-POOL");
    }
    headers.extend(["POOL", "MODE", "OWNER", "AGE"]);
    if wide {
        headers.extend(["PREFIX", "TO"]);
    }
    let mut list: Vec<&AnnouncementView> = v.announcements.iter().collect();
    list.sort_by(|a, b| a.node_pool.cmp(&b.node_pool));
    let rows = list
        .into_iter()
        .map(|a| {
            let mut r = vec![Cell::plain(&a.ip), Cell::plain(&a.service)];
            if pooled {
                r.push(Cell::plain(a.node_pool.clone().unwrap_or_default()));
            }
            r.extend([
                Cell::plain(&a.pool),
                Cell::plain(a.mode.as_str()),
                Cell::plain(&a.owner),
                Cell::plain(age(v.generated_at, a.since)),
            ]);
            if wide {
                r.push(Cell::plain(a.prefix.clone().unwrap_or_default()));
                r.push(Cell::plain(targets(a)));
            }
            r
        })
        .collect::<Vec<_>>();
    table(&headers, &rows, false)
}

/// `pools`: an invalid pool (bad spec, or one the speaker cannot read) says so in `STATE`,
/// with the reason in `REASON` (shown whenever some pool is invalid, and with `wide`).
pub fn pools_table(v: &LocalView, wide: bool) -> String {
    let mut headers = vec!["NAME", "SIZE", "USED", "FAILURES", "AUTO-ASSIGN", "STATE"];
    if wide {
        headers.push("ADDRESSES");
    }
    let reasons = wide || v.pools.iter().any(|p| p.error.is_some());
    if reasons {
        headers.push("REASON");
    }
    let rows = v
        .pools
        .iter()
        .map(|p: &PoolView| {
            let mut r = vec![
                Cell::plain(&p.name),
                Cell::plain(p.size.to_string()),
                Cell::plain(p.used.to_string()),
                Cell::plain(p.failures.to_string()),
                Cell::plain(p.auto_assign.to_string()),
                Cell::plain(if p.error.is_some() {
                    "Invalid"
                } else {
                    "Valid"
                }),
            ];
            if wide {
                r.push(Cell::plain(p.addresses.join(",")));
            }
            if reasons {
                r.push(Cell::plain(p.error.clone().unwrap_or_default()));
            }
            r
        })
        .collect::<Vec<_>>();
    table(&headers, &rows, false)
}

/// `routes`: one line per rule and per route of each `PolicyRoute` that selects the node
/// (`ip rule` / `ip route` fields), and one line for an object that installs nothing, whose
/// state says why. `wide` adds the condition's message.
pub fn routes_table(v: &LocalView, wide: bool) -> String {
    let mut headers = vec![
        "NAME", "TABLE", "KIND", "PRIORITY", "FROM", "TO", "GATEWAY", "DEV", "STATE",
    ];
    if wide {
        headers.push("MESSAGE");
    }
    let mut rows = Vec::new();
    for r in &v.policy_routes {
        let table = r.table.map(|t| t.to_string()).unwrap_or_default();
        let mut lines: Vec<[String; 6]> = Vec::new();
        for rule in &r.rules {
            lines.push([
                "rule".into(),
                rule.priority.to_string(),
                rule.from.clone(),
                rule.to.clone(),
                String::new(),
                String::new(),
            ]);
        }
        for route in &r.routes {
            lines.push([
                "route".into(),
                String::new(),
                String::new(),
                route.dst.clone(),
                route.gateway.clone().unwrap_or_default(),
                route.dev.clone(),
            ]);
        }
        if lines.is_empty() {
            lines.push(Default::default());
        }
        for [kind, priority, from, to, gateway, dev] in lines {
            let mut row = vec![
                Cell::plain(&r.name),
                Cell::plain(&table),
                Cell::plain(kind),
                Cell::plain(priority),
                Cell::plain(from),
                Cell::plain(to),
                Cell::plain(gateway),
                Cell::plain(dev),
                Cell::plain(&r.state),
            ];
            if wide {
                row.push(Cell::plain(&r.message));
            }
            rows.push(row);
        }
    }
    table(&headers, &rows, false)
}

/// `nodepools`: each node pool, where it comes from, its nodes (with their health when not
/// alive) and how many Services have an entry point in it; `wide` adds its labels.
pub fn node_pools_table(v: &LocalView, wide: bool, colour: bool) -> String {
    let mut headers = vec!["NAME", "SOURCE", "NODES", "MEMBERS", "ENTRY-POINTS"];
    if wide {
        headers.push("LABELS");
    }
    let health = |n: &str| v.members.iter().find(|m| m.name == n).map(|m| m.health);
    let rows = v
        .node_pools
        .iter()
        .map(|p| {
            let members: Vec<String> = p
                .nodes
                .iter()
                .map(|n| match health(n) {
                    Some(Health::Alive) | None => n.clone(),
                    Some(h) => format!("{n}({})", h.as_str()),
                })
                .collect();
            let entry_points = v
                .allocations
                .iter()
                .filter(|a| a.node_pool.as_deref() == Some(p.name.as_str()) && !a.ips.is_empty())
                .count();
            let down = p
                .nodes
                .iter()
                .any(|n| health(n).is_some_and(|h| h != Health::Alive));
            let mut r = vec![
                Cell::plain(&p.name),
                Cell::plain(&p.source),
                Cell::plain(p.nodes.len().to_string()),
                if down {
                    Cell::coloured(members.join(","), Colour::Yellow)
                } else {
                    Cell::plain(members.join(","))
                },
                Cell::plain(entry_points.to_string()),
            ];
            if wide {
                r.push(Cell::plain(
                    p.labels
                        .iter()
                        .map(|(k, val)| format!("{k}={val}"))
                        .collect::<Vec<_>>()
                        .join(","),
                ));
            }
            r
        })
        .collect::<Vec<_>>();
    table(&headers, &rows, colour)
}

/// `members`.
pub fn members_table(v: &LocalView, wide: bool, colour: bool) -> String {
    let mut headers = vec!["NAME", "HEALTH", "AGE", "LEADER"];
    if wide {
        headers.push("NODE-POOL");
    }
    let rows = v
        .members
        .iter()
        .map(|m: &MemberView| {
            let mut r = vec![
                Cell::plain(&m.name),
                Cell::coloured(m.health.as_str(), health_colour(m.health)),
                Cell::plain(age(v.generated_at, m.since)),
                Cell::plain(if v.leader.as_deref() == Some(m.name.as_str()) {
                    "*"
                } else {
                    ""
                }),
            ];
            if wide {
                r.push(Cell::plain(m.node_pool.clone().unwrap_or_default()));
            }
            r
        })
        .collect::<Vec<_>>();
    table(&headers, &rows, colour)
}

/// `status`: one line per subject.
pub fn status_text(v: &LocalView) -> String {
    let up = v.peers.iter().filter(|p| p.is_up()).count();
    let alive = v
        .members
        .iter()
        .filter(|m| m.health == Health::Alive)
        .count();
    let bgp = v
        .announcements
        .iter()
        .filter(|a| a.mode == edgelb_view::Mode::Bgp)
        .count();
    let failed = v.allocations.iter().filter(|a| a.error.is_some()).count();
    let ifaces_up = v.interfaces.iter().filter(|i| i.up).count();
    let lines = [
        ("Node", v.node.clone()),
        ("Version", v.version.clone()),
        ("Ready", v.ready.to_string()),
        (
            "Leader",
            v.leader.clone().unwrap_or_else(|| "<none>".into()),
        ),
        ("Members", format!("{} ({alive} alive)", v.members.len())),
        ("BGP peers", format!("{up}/{} established", v.peers.len())),
        (
            "Announcements",
            format!(
                "{} (BGP {bgp}, L2 {})",
                v.announcements.len(),
                v.announcements.len() - bgp
            ),
        ),
        (
            "L2 interfaces",
            format!("{} ({ifaces_up} up)", v.interfaces.len()),
        ),
        (
            "Policy routes",
            format!(
                "{} ({} installed)",
                v.policy_routes.len(),
                v.policy_routes.iter().filter(|r| r.installed()).count()
            ),
        ),
        (
            "Allocations",
            format!("{} ({failed} failed)", v.allocations.len()),
        ),
    ];
    let width = lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 3;
    lines
        .iter()
        .map(|(k, val)| format!("{:<width$}{val}\n", format!("{k}:")))
        .collect()
}

/// Everything `explain` shows about one Service, as seen by one node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Explain {
    /// The node that answered.
    pub node: String,
    /// `namespace/name`.
    pub service: String,
    /// `externalTrafficPolicy`, when the Service is known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traffic_policy: Option<String>,
    /// Allocation outcome(s): IPs and pool, or why none.
    pub allocations: Vec<AllocationView>,
    /// Candidate nodes, each with why it was excluded.
    pub candidates: Vec<CandidateView>,
    /// Each L2 IP: the nodes in its rendezvous order with why each was skipped, and the
    /// handoff this node waits for, if any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpRankView>,
    /// What this node announces for it (owner, since, peers or interfaces).
    pub announcements: Vec<AnnouncementView>,
    /// A Service with node pools: the same, pool by pool (the fields above then hold only
    /// what is not per pool: a Service-wide allocation error).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub node_pools: Vec<ExplainNodePool>,
}

/// What `explain` shows about one node pool of a Service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExplainNodePool {
    /// The node pool.
    pub node_pool: String,
    /// `externalTrafficPolicy`, and whether only the pool's endpoints count.
    pub traffic_policy: String,
    /// The pool's allocation: IPs and pool, or why none.
    pub allocations: Vec<AllocationView>,
    /// Candidate nodes for the pool's IPs, each with why it was excluded.
    pub candidates: Vec<CandidateView>,
    /// Each L2 IP of the pool: the nodes in rendezvous order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpRankView>,
    /// What this node announces for the pool.
    pub announcements: Vec<AnnouncementView>,
}

/// Collects what the view says about `service` (`namespace/name`); `None` when the view
/// knows nothing of it.
pub fn explain(v: &LocalView, service: &str) -> Option<Explain> {
    let allocations: Vec<AllocationView> = v
        .allocations
        .iter()
        .filter(|a| a.service == service)
        .cloned()
        .collect();
    let sv = v
        .services
        .iter()
        .find(|s| s.service == service && s.node_pool.is_none());
    let pooled: Vec<_> = v
        .services
        .iter()
        .filter(|s| s.service == service && s.node_pool.is_some())
        .collect();
    if allocations.is_empty() && sv.is_none() && pooled.is_empty() {
        return None;
    }
    if sv.is_none() && !pooled.is_empty() || allocations.iter().any(|a| a.node_pool.is_some()) {
        return Some(explain_by_pool(v, service, allocations, &pooled));
    }
    Some(Explain {
        node: v.node.clone(),
        service: service.to_string(),
        traffic_policy: sv.map(|s| s.traffic_policy.clone()),
        allocations,
        candidates: sv.map(|s| s.candidates.clone()).unwrap_or_default(),
        ips: sv.map(|s| s.ips.clone()).unwrap_or_default(),
        announcements: v
            .announcements
            .iter()
            .filter(|a| a.service == service)
            .cloned()
            .collect(),
        node_pools: Vec::new(),
    })
}

/// [`explain`] of a Service with node pools: one section per pool (from the allocations
/// and the per-pool views), pools in name order.
fn explain_by_pool(
    v: &LocalView,
    service: &str,
    allocations: Vec<AllocationView>,
    pooled: &[&edgelb_view::ServiceView],
) -> Explain {
    let mut names: Vec<String> = allocations
        .iter()
        .filter_map(|a| a.node_pool.clone())
        .chain(pooled.iter().filter_map(|s| s.node_pool.clone()))
        .collect();
    names.sort();
    names.dedup();
    let node_pools = names
        .into_iter()
        .map(|np| {
            let sv = pooled
                .iter()
                .find(|s| s.node_pool.as_deref() == Some(np.as_str()));
            ExplainNodePool {
                traffic_policy: sv
                    .map(|s| s.traffic_policy.clone())
                    .unwrap_or_else(|| "<unknown>".into()),
                allocations: allocations
                    .iter()
                    .filter(|a| a.node_pool.as_deref() == Some(np.as_str()))
                    .cloned()
                    .collect(),
                candidates: sv.map(|s| s.candidates.clone()).unwrap_or_default(),
                ips: sv.map(|s| s.ips.clone()).unwrap_or_default(),
                announcements: v
                    .announcements
                    .iter()
                    .filter(|a| a.service == service && a.node_pool.as_deref() == Some(np.as_str()))
                    .cloned()
                    .collect(),
                node_pool: np,
            }
        })
        .collect();
    Explain {
        node: v.node.clone(),
        service: service.to_string(),
        traffic_policy: None,
        allocations: allocations
            .into_iter()
            .filter(|a| a.node_pool.is_none())
            .collect(),
        candidates: Vec::new(),
        ips: Vec::new(),
        announcements: Vec::new(),
        node_pools,
    }
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

/// Why one L2 IP is where it is: the owner, then every node in the IP's rendezvous order
/// with why the election skipped it (`-` for an eligible node below the owner), and the
/// handoff `node` (this view's node) waits for.
fn ip_rank_text(ip: &IpRankView, node: &str) -> String {
    let owner = ip.owner.as_deref().unwrap_or("<none>: no eligible node");
    let mut out = format!("L2 IP {}: owner {owner}\n", ip.ip);
    let owner_at = ip
        .ranked
        .iter()
        .position(|c| Some(&c.node) == ip.owner.as_ref());
    let rows: Vec<Vec<Cell>> = ip
        .ranked
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let why = match (&c.excluded, owner_at) {
                (Some(why), _) => format!("skipped: {why}"),
                (None, Some(o)) if o == i => "owner".to_string(),
                (None, Some(o)) if i > o => "next if the owner goes".to_string(),
                (None, _) => "eligible".to_string(),
            };
            vec![
                Cell::plain((i + 1).to_string()),
                Cell::plain(&c.node),
                Cell::plain(why),
            ]
        })
        .collect();
    out.push_str(&indent(&table(&["RANK", "NODE", "WHY"], &rows, false)));
    if ip.handoff_until_ms.is_some() {
        out.push_str(&format!(
            "  waiting for handoff: {node} won it but does not answer yet; the previous owner is alive and lets go first (the takeover hold)\n"
        ));
    }
    out
}

/// `explain` as text; a Service with node pools gets one indented section per pool.
pub fn explain_text(e: &Explain, now: u64) -> String {
    let mut out = format!("Service:         {}\n", e.service);
    if e.node_pools.is_empty() {
        out.push_str(&format!(
            "Traffic policy:  {}\n",
            e.traffic_policy.as_deref().unwrap_or("<unknown>")
        ));
        out.push_str(&section_text(
            &e.node,
            &e.allocations,
            &e.candidates,
            &e.ips,
            &e.announcements,
            now,
        ));
        return out;
    }
    out.push_str(&allocations_text(&e.allocations));
    out.push_str(&format!("Node pools:      {}\n", e.node_pools.len()));
    for p in &e.node_pools {
        out.push_str(&format!("Node pool {}:\n", p.node_pool));
        let mut inner = format!("Traffic policy:  {}\n", p.traffic_policy);
        inner.push_str(&section_text(
            &e.node,
            &p.allocations,
            &p.candidates,
            &p.ips,
            &p.announcements,
            now,
        ));
        out.push_str(&indent(&inner));
    }
    out
}

fn allocations_text(allocations: &[AllocationView]) -> String {
    let mut out = String::new();
    for a in allocations {
        let np = a
            .node_pool
            .as_ref()
            .map(|p| format!(" [node pool {p}]"))
            .unwrap_or_default();
        match (&a.error, &a.pool) {
            (Some(err), _) => out.push_str(&format!("IPs:             <none>{np}: {err}\n")),
            (None, pool) => out.push_str(&format!(
                "IPs:             {} (pool {}){np}\n",
                a.ips.join(", "),
                pool.as_deref().unwrap_or("<none>")
            )),
        }
    }
    out
}

/// IPs, candidates, L2 ranks and what `node` announces: of a Service, or of one of its pools.
fn section_text(
    node: &str,
    allocations: &[AllocationView],
    candidates: &[CandidateView],
    ips: &[IpRankView],
    announcements: &[AnnouncementView],
    now: u64,
) -> String {
    let mut out = allocations_text(allocations);
    out.push_str("Candidates:\n");
    let rows: Vec<Vec<Cell>> = candidates
        .iter()
        .map(|c| {
            vec![
                Cell::plain(&c.node),
                Cell::plain(if c.excluded.is_some() { "no" } else { "yes" }),
                Cell::plain(c.excluded.clone().unwrap_or_default()),
            ]
        })
        .collect();
    out.push_str(&indent(&table(
        &["NODE", "ELIGIBLE", "EXCLUDED-BECAUSE"],
        &rows,
        false,
    )));
    for ip in ips {
        out.push_str(&ip_rank_text(ip, node));
    }
    out.push_str(&format!("Announced by {node}:\n"));
    if announcements.is_empty() {
        out.push_str("  <nothing>\n");
    } else {
        let rows: Vec<Vec<Cell>> = announcements
            .iter()
            .map(|a| {
                vec![
                    Cell::plain(&a.ip),
                    Cell::plain(a.mode.as_str()),
                    Cell::plain(&a.owner),
                    Cell::plain(age(now, a.since)),
                    Cell::plain(targets(a)),
                ]
            })
            .collect();
        out.push_str(&indent(&table(
            &["IP", "MODE", "OWNER", "SINCE", "TO"],
            &rows,
            false,
        )));
    }
    out
}

/// `elb`: one line per (Service, node pool) cloud load balancer, then the deletions in
/// progress and the calls per action. `wide` adds the skipped nodes and the last calls.
pub fn elb_table(v: &LocalView, wide: bool) -> String {
    let Some(c) = &v.cloud else {
        return "no cloud load balancers: this speaker runs without --elb-credentials-secret\n"
            .into();
    };
    let mut out = String::new();
    if !c.active {
        out.push_str("this speaker does not drive the cloud now (not the Lease holder");
        if let Some(p) = &c.problem {
            out.push_str(&format!("; {p}"));
        }
        out.push_str(")\n");
    }
    let mut headers = vec![
        "SERVICE",
        "POOL",
        "LOAD-BALANCER",
        "STATUS",
        "EIP",
        "LISTENERS",
        "BACKENDS",
        "STATE",
        "LAST-ERROR",
    ];
    if wide {
        headers.extend(["NAME", "SKIPPED", "LAST-CALLS"]);
    }
    let rows: Vec<Vec<Cell>> = c
        .load_balancers
        .iter()
        .map(|l| {
            let lb = match (&l.load_balancer, l.user_managed) {
                (Some(id), true) => format!("{id} (user's)"),
                (Some(id), false) => id.clone(),
                (None, _) => "-".into(),
            };
            let state = if l.last_error.is_some() {
                "Error".to_string()
            } else if l.converged {
                "Converged".into()
            } else {
                l.waiting.clone().unwrap_or_else(|| "Pending".into())
            };
            let mut r = vec![
                Cell::plain(&l.service),
                Cell::plain(&l.pool),
                Cell::plain(lb),
                Cell::plain(l.status.clone().unwrap_or_else(|| "-".into())),
                Cell::plain(
                    l.eip
                        .clone()
                        .or_else(|| l.address.clone())
                        .unwrap_or_else(|| "-".into()),
                ),
                Cell::plain(l.listeners.join(", ")),
                Cell::plain(l.backends.join(",")),
                Cell::plain(state),
                Cell::plain(l.last_error.clone().unwrap_or_default()),
            ];
            if wide {
                r.push(Cell::plain(&l.name));
                r.push(Cell::plain(l.skipped.join("; ")));
                r.push(Cell::plain(l.last_actions.join("; ")));
            }
            r
        })
        .collect();
    out.push_str(&table(&headers, &rows, false));
    for d in &c.deleting {
        out.push_str(&format!("deleting: {d}\n"));
    }
    if wide && !c.calls.is_empty() {
        let rows: Vec<Vec<Cell>> = c
            .calls
            .iter()
            .map(|k| {
                vec![
                    Cell::plain(&k.action),
                    Cell::plain(k.requests.to_string()),
                    Cell::plain(k.ok.to_string()),
                    Cell::plain(k.failed.to_string()),
                    Cell::plain(k.retried.to_string()),
                    Cell::plain(k.latency_ms.to_string()),
                ]
            })
            .collect();
        out.push('\n');
        out.push_str(&table(
            &[
                "ACTION",
                "REQUESTS",
                "OK",
                "FAILED",
                "RETRIED",
                "LATENCY-MS",
            ],
            &rows,
            false,
        ));
    }
    out
}
