//! Election for 10 000 IPs over 1 000 nodes: cold (index the view, elect
//! everything) and after one change (one node declared down: re-index and
//! re-elect everything, or re-elect incrementally from the previous results,
//! which is what the daemon loop does on a membership event).
//! A 100-node run in the same process gives the baseline for the ratio.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use edgelb_daemon::election::{
    Candidate, ElectionRequest, ElectionView, InterfaceFacts, Mode, NodeSelector, RequestTerms,
    SelectorOperator, SelectorRequirement,
};

const IPS: u32 = 10_000;

/// Nodes spread over 4 zones; every node carries 2001:db8::/64 (documentation
/// range, RFC 3849) on eth0; one node in 97 carries the exclusion label.
fn nodes(n: usize) -> Vec<Candidate> {
    (0..n)
        .map(|i| Candidate {
            node: format!("node-{i:04}"),
            labels: BTreeMap::from([
                ("zone".to_string(), format!("z{}", i % 4)),
                ("kubernetes.io/os".to_string(), "linux".to_string()),
            ]),
            ready: true,
            network_unavailable: false,
            excluded_label: i % 97 == 0,
            node_pool: Some("pool-1".into()),
            live: true,
            interfaces: vec![InterfaceFacts {
                name: "eth0".into(),
                up: true,
                subnets: vec!["2001:db8::/64".parse().expect("literal")],
            }],
        })
        .collect()
}

/// Half the IPs in L2 restricted to three zones, half in BGP for all nodes.
fn requests() -> Vec<ElectionRequest> {
    let three_zones = vec![NodeSelector {
        match_labels: BTreeMap::new(),
        match_expressions: vec![SelectorRequirement {
            key: "zone".into(),
            operator: SelectorOperator::In,
            values: vec!["z0".into(), "z1".into(), "z2".into()],
        }],
    }];
    let l2_terms = Arc::new(RequestTerms {
        mode: Mode::L2 { interfaces: None },
        node_selectors: three_zones,
        pool: Some("pool-1".into()),
        local_endpoints: None,
    });
    let bgp_terms = Arc::new(RequestTerms {
        mode: Mode::Bgp,
        node_selectors: vec![],
        pool: Some("pool-1".into()),
        local_endpoints: None,
    });
    (0..IPS)
        .map(|i| {
            let ip = IpAddr::V6(Ipv6Addr::new(
                0x2001,
                0xdb8,
                0,
                0,
                0,
                0,
                (i >> 16) as u16,
                i as u16 + 1,
            ));
            let l2 = i % 2 == 0;
            ElectionRequest::new(ip, if l2 { &l2_terms } else { &bgp_terms }.clone())
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let reqs = requests();
    let mut group = c.benchmark_group("election");
    group.sample_size(10);
    for n in [100usize, 1_000] {
        let cands = nodes(n);
        group.bench_function(format!("cold_{IPS}ips_{n}nodes"), |b| {
            b.iter(|| {
                let view = ElectionView::new(black_box(cands.clone()));
                black_box(view.elect_many(&reqs))
            })
        });
        let mut changed = cands.clone();
        changed[n / 2].live = false;
        let view_before = ElectionView::new(cands.clone());
        let before = view_before.elect_many(&reqs);
        group.bench_function(format!("one_node_down_{IPS}ips_{n}nodes"), |b| {
            b.iter(|| {
                let view = ElectionView::new(black_box(changed.clone()));
                black_box(view.elect_many(&reqs))
            })
        });
        let down = changed[n / 2].node.clone();
        group.bench_function(
            format!("one_node_down_incremental_{IPS}ips_{n}nodes"),
            |b| {
                b.iter(|| {
                    let view = ElectionView::new(black_box(changed.clone()));
                    black_box(view.reelect_after_change(&reqs, &before, &down))
                })
            },
        );
        // Not timed: how many L2 owners the change moved (only the dead node's).
        let after = ElectionView::new(changed.clone()).elect_many(&reqs);
        let moved = before
            .iter()
            .zip(&after)
            .filter(|(b, a)| {
                b.owner() != a.owner() && b.mode == edgelb_daemon::election::ModeKind::L2
            })
            .count();
        eprintln!(
            "{n} nodes: one node down moved {moved} of {} L2 owners",
            IPS / 2
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
