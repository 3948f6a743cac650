use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;
use crate::local_api::view::{
    AnnouncementView, InterfaceView, LocalView, MemberView, PeerView, PoolView,
};

/// The value of the sample `name{labels}` (exact label text) in OpenMetrics text.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn peer(addr: &str, state: &str, established: u64, updates: u64, prefixes: u64) -> PeerView {
    PeerView {
        address: addr.into(),
        name: "r".into(),
        state: state.into(),
        established_count: established,
        updates_out: updates,
        prefixes_sent: prefixes,
        ..PeerView::default()
    }
}

fn view(peers: Vec<PeerView>, l2_announcements: u64, answered: u64) -> LocalView {
    LocalView {
        node: "n1".into(),
        version: "0.1.0".into(),
        ready: true,
        peers,
        interfaces: vec![InterfaceView {
            name: "eth0".into(),
            up: true,
            announcements: l2_announcements,
            requests_answered: answered,
            ..InterfaceView::default()
        }],
        announcements: vec![
            AnnouncementView {
                ip: "192.0.2.1".into(),
                service: "default/web".into(),
                pool: "lan".into(),
                node_pool: None,
                mode: Mode::Bgp,
                owner: "n1".into(),
                since: None,
                prefix: Some("192.0.2.1/32".into()),
                peers: vec![],
                interfaces: vec![],
            },
            AnnouncementView {
                ip: "192.0.2.2".into(),
                service: "default/db".into(),
                pool: "lan".into(),
                node_pool: None,
                mode: Mode::L2,
                owner: "n1".into(),
                since: None,
                prefix: None,
                peers: vec![],
                interfaces: vec!["eth0".into()],
            },
        ]
        .into(),
        pools: vec![PoolView {
            name: "lan".into(),
            addresses: vec!["192.0.2.0/30".into()],
            size: 4,
            used: 2,
            failures: 1,
            auto_assign: true,
            error: None,
        }]
        .into(),
        members: vec![
            MemberView {
                name: "n1".into(),
                health: Health::Alive,
                since: None,
                node_pool: None,
            },
            MemberView {
                name: "n2".into(),
                health: Health::Suspect,
                since: None,
                node_pool: None,
            },
        ],
        ..LocalView::default()
    }
}

#[test]
fn counter_delta_adds_growth_and_counts_a_restarted_source_in_full() {
    assert_eq!(counter_delta(None, 5), 5);
    assert_eq!(counter_delta(Some(5), 5), 0);
    assert_eq!(counter_delta(Some(5), 9), 4);
    assert_eq!(counter_delta(Some(9), 2), 2);
}

#[test]
fn suspicions_count_only_new_suspects() {
    let v = view(vec![], 0, 0);
    assert_eq!(new_suspicions(&BTreeMap::new(), &v.members), 1);
    let prev = BTreeMap::from([("n2".to_string(), Health::Suspect)]);
    assert_eq!(new_suspicions(&prev, &v.members), 0);
}

#[test]
fn failover_gap_runs_from_death_to_first_announcement_of_taken_ips() {
    let t = |s: u64| UNIX_EPOCH + Duration::from_millis(s);
    let dead = t(10_000);
    let gaps = failover_gaps(
        dead,
        &[
            ("192.0.2.1".parse().expect("ip"), t(10_010), Some(t(10_250))),
            ("192.0.2.2".parse().expect("ip"), t(9_000), Some(t(9_001))),
            ("192.0.2.3".parse().expect("ip"), t(10_020), None),
        ],
    );
    assert_eq!(
        gaps,
        vec![("192.0.2.1".parse().expect("ip"), Duration::from_millis(250))]
    );
    let _ = SystemTime::now();
}

#[test]
fn families_follow_the_view_and_counters_only_grow() {
    let m = Metrics::new();
    let v = view(vec![peer("198.51.100.1", "Established", 1, 3, 1)], 2, 5);
    m.update(&v);
    m.set_owned_ips(&v.announcements);
    let text = m.encode();
    assert_eq!(
        sample(&text, "edgelb_bgp_session_up{peer=\"198.51.100.1\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "edgelb_bgp_session_state{peer=\"198.51.100.1\",state=\"Established\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "edgelb_bgp_prefixes_announced{peer=\"198.51.100.1\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "edgelb_bgp_updates_sent_total{peer=\"198.51.100.1\"}"
        ),
        Some(3.0)
    );
    assert_eq!(
        sample(
            &text,
            "edgelb_bgp_session_up_transitions_total{peer=\"198.51.100.1\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "edgelb_bgp_session_down_transitions_total{peer=\"198.51.100.1\"}"
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &text,
            "edgelb_l2_announcements_sent_total{interface=\"eth0\"}"
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &text,
            "edgelb_l2_requests_answered_total{interface=\"eth0\"}"
        ),
        Some(5.0)
    );
    assert_eq!(sample(&text, "edgelb_owned_ips{mode=\"BGP\"}"), Some(1.0));
    assert_eq!(sample(&text, "edgelb_owned_ips{mode=\"L2\"}"), Some(1.0));
    assert_eq!(sample(&text, "edgelb_pool_size{pool=\"lan\"}"), Some(4.0));
    assert_eq!(sample(&text, "edgelb_pool_used{pool=\"lan\"}"), Some(2.0));
    assert_eq!(
        sample(&text, "edgelb_allocation_failures{pool=\"lan\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "edgelb_members{health=\"Suspect\"}"),
        Some(1.0)
    );
    assert_eq!(sample(&text, "edgelb_member_suspicions_total"), Some(1.0));
    assert_eq!(sample(&text, "edgelb_ready"), Some(1.0));

    // The session drops: state moves, a down transition counts, the UPDATE counter holds.
    m.update(&view(vec![peer("198.51.100.1", "Active", 1, 3, 0)], 4, 5));
    let text = m.encode();
    assert_eq!(
        sample(&text, "edgelb_bgp_session_up{peer=\"198.51.100.1\"}"),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &text,
            "edgelb_bgp_session_state{peer=\"198.51.100.1\",state=\"Established\"}"
        ),
        None,
        "the old state is gone"
    );
    assert_eq!(
        sample(
            &text,
            "edgelb_bgp_session_down_transitions_total{peer=\"198.51.100.1\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "edgelb_bgp_updates_sent_total{peer=\"198.51.100.1\"}"
        ),
        Some(3.0)
    );
    assert_eq!(
        sample(
            &text,
            "edgelb_l2_announcements_sent_total{interface=\"eth0\"}"
        ),
        Some(4.0)
    );
    assert_eq!(
        sample(&text, "edgelb_member_suspicions_total"),
        Some(1.0),
        "same suspect"
    );

    // Back up: a second up transition; the peer was re-created so its UPDATE count restarted.
    m.update(&view(
        vec![peer("198.51.100.1", "Established", 1, 2, 1)],
        4,
        5,
    ));
    let text = m.encode();
    assert_eq!(
        sample(
            &text,
            "edgelb_bgp_updates_sent_total{peer=\"198.51.100.1\"}"
        ),
        Some(5.0)
    );
}

#[test]
fn histograms_record_reconcile_and_failover() {
    let m = Metrics::new();
    m.observe_reconcile(Duration::from_millis(3));
    m.observe_failover(Duration::from_millis(400));
    m.observe_failover(Duration::from_millis(700));
    let text = m.encode();
    assert_eq!(
        sample(&text, "edgelb_reconcile_duration_seconds_count"),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "edgelb_failover_duration_seconds_count"),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &text,
            "edgelb_failover_duration_seconds_bucket{le=\"0.64\"}"
        ),
        Some(1.0)
    );
}

#[test]
fn readyz_is_503_until_the_first_snapshot() {
    let m = Metrics::new();
    let mut v = LocalView::default();
    assert_eq!(
        server::route("/readyz", &m, &v).status,
        http::StatusCode::SERVICE_UNAVAILABLE
    );
    v.ready = true;
    assert_eq!(
        server::route("/readyz", &m, &v).status,
        http::StatusCode::OK
    );
    assert_eq!(
        server::route("/healthz", &m, &v).status,
        http::StatusCode::OK
    );
    let metrics = server::route("/metrics", &m, &v);
    assert_eq!(metrics.content_type, server::CONTENT_TYPE);
    assert!(metrics.body.ends_with("# EOF\n"), "{}", metrics.body);
    // The host-network port serves no view: peers, ASNs and members stay on the socket.
    for path in ["/v1/peers", "/v1/view", "/v1", "/v1/members"] {
        assert_eq!(
            server::route(path, &m, &v).status,
            http::StatusCode::NOT_FOUND,
            "{path}"
        );
    }
}
