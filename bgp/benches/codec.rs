//! Encode and decode speed of UPDATEs (issue 2): one UPDATE with 1 000 /32 prefixes, and
//! 100 000 prefixes packed by `encode_announce`. Prints prefixes per second for each.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
use bytes::BytesMut;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use edgelb_bgp::packet::*;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::net::{Ipv4Addr, Ipv6Addr};

fn attrs() -> PathAttributes {
    PathAttributes {
        origin: Some(Origin::Igp),
        as_path: Some(AsPath {
            segments: vec![AsSegment {
                kind: AsSegmentKind::Sequence,
                asns: vec![64512, 4_200_000_000],
            }],
        }),
        med: Some(10),
        communities: vec![Community(0xfde9_0001)],
        large_communities: vec![LargeCommunity {
            global_admin: 4_200_000_000,
            local_data1: 1,
            local_data2: 2,
        }],
        ..PathAttributes::default()
    }
}

/// /32s in 198.18.0.0/15 and beyond: distinct, cheap to generate.
fn v4_hosts(n: u32) -> Vec<IpNet> {
    (0..n)
        .map(|i| IpNet::V4(Ipv4Net::new(Ipv4Addr::from(0xc612_0000 + i), 32).unwrap()))
        .collect()
}

fn v6_hosts(n: u32) -> Vec<IpNet> {
    let base = u128::from(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0));
    (0..n)
        .map(|i| IpNet::V6(Ipv6Net::new(Ipv6Addr::from(base + u128::from(i)), 128).unwrap()))
        .collect()
}

fn split_frames<'a>(buf: &'a [u8], ctx: &CodecContext) -> Vec<&'a [u8]> {
    let mut frames = Vec::new();
    let mut rest = buf;
    while let Ok(Some(n)) = frame_len(rest, ctx) {
        frames.push(&rest[..n]);
        rest = &rest[n..];
    }
    frames
}

fn bench(c: &mut Criterion) {
    let ctx = CodecContext {
        four_octet_as: true,
        extended_message: true,
    };
    let nlri: Vec<Ipv4Net> = v4_hosts(1000)
        .into_iter()
        .map(|p| match p {
            IpNet::V4(p) => p,
            IpNet::V6(_) => unreachable!(),
        })
        .collect();
    let update = Message::Update(Update {
        attributes: PathAttributes {
            next_hop: Some(Ipv4Addr::new(192, 0, 2, 1)),
            ..attrs()
        },
        nlri,
        withdrawn: vec![],
    });
    let mut encoded = BytesMut::new();
    update.encode(&ctx, &mut encoded).unwrap();

    let mut g = c.benchmark_group("update_1000_v4_prefixes");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("encode", |b| {
        let mut out = BytesMut::with_capacity(8192);
        b.iter(|| {
            out.clear();
            black_box(&update).encode(&ctx, &mut out).unwrap();
        })
    });
    g.bench_function("decode", |b| {
        b.iter(|| Message::decode(black_box(&encoded), &ctx).unwrap())
    });
    g.finish();

    for (name, family, prefixes, next_hop) in [
        (
            "pack_100k_v4",
            Family::Ipv4Unicast,
            v4_hosts(100_000),
            MpNextHop::V4(Ipv4Addr::new(192, 0, 2, 1)),
        ),
        (
            "pack_100k_v6",
            Family::Ipv6Unicast,
            v6_hosts(100_000),
            MpNextHop::V6 {
                global: "2001:db8::1".parse().unwrap(),
                link_local: Some("fe80::1".parse().unwrap()),
            },
        ),
    ] {
        for (ctx_name, ctx) in [
            (
                "4096",
                CodecContext {
                    four_octet_as: true,
                    extended_message: false,
                },
            ),
            ("65535", ctx),
        ] {
            let mut packed = BytesMut::new();
            let messages =
                encode_announce(family, &attrs(), next_hop, &prefixes, &ctx, &mut packed).unwrap();
            eprintln!(
                "{name}/{ctx_name}: {messages} UPDATEs, {} octets",
                packed.len()
            );
            let mut g = c.benchmark_group(format!("{name}_max_{ctx_name}"));
            g.throughput(Throughput::Elements(prefixes.len() as u64));
            g.sample_size(20);
            g.bench_function("encode_announce", |b| {
                let mut out = BytesMut::with_capacity(packed.len());
                b.iter(|| {
                    out.clear();
                    encode_announce(
                        family,
                        &attrs(),
                        next_hop,
                        black_box(&prefixes),
                        &ctx,
                        &mut out,
                    )
                    .unwrap()
                })
            });
            let frames = split_frames(&packed, &ctx);
            g.bench_function("decode", |b| {
                b.iter(|| {
                    for f in &frames {
                        black_box(Message::decode(f, &ctx).unwrap());
                    }
                })
            });
            g.finish();
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
