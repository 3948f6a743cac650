//! Any bytes given to the frame parser, and to the answer decision after it, must neither
//! panic nor produce an answer for an address that is not owned or from our own MAC.
#![no_main]
use edgelb_l2::frame::{self, Incoming};
use edgelb_l2::respond::{self, Answer};
use edgelb_l2::MacAddr;
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeSet;
use std::net::IpAddr;

const MAC: MacAddr = MacAddr(0x02, 0, 0, 0, 0, 0x0a);

fuzz_target!(|data: &[u8]| {
    let owned: BTreeSet<IpAddr> = ["192.0.2.100", "2001:db8::100"]
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect();
    let _ = frame::parse_advert(data);
    let _ = frame::parse_any_arp(data);
    let Ok(incoming) = frame::parse(data) else {
        return;
    };
    let Some(answer) = respond::answer(&incoming, &owned, MAC) else {
        return;
    };
    assert!(owned.contains(&answer.ip()), "answered for {}", answer.ip());
    let eth_src = match incoming {
        Incoming::ArpRequest { eth_src, .. } | Incoming::NeighborSolicit { eth_src, .. } => eth_src,
    };
    assert_ne!(eth_src, MAC, "answered our own frame");
    let reply = answer.to_frame(MAC);
    // What we send must read back as what we meant.
    match answer {
        Answer::Arp { ip, .. } => {
            let seen = frame::parse_any_arp(&reply).expect("our ARP reply parses");
            assert!(seen.reply && seen.sender_ip == ip && seen.sender_mac == MAC);
        }
        Answer::Na { target, .. } => {
            let na = frame::parse_advert(&reply).expect("our advert parses");
            assert!(na.target == target && na.target_ll == Some(MAC));
        }
    }
});
