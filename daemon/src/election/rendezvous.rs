//! Rendezvous (highest random weight) hashing: the score of a node for an IP.
//!
//! Every speaker must compute the same owner from the same view, across
//! versions, CPU architectures and restarts, so the score is fully specified
//! here and pinned by golden values in the tests. Never change it without a
//! migration plan: a changed score moves every IP at once during a rolling
//! upgrade.
//!
//! ```text
//! K0 = 0x6564_6765_6c62_2d68   ("edgelb-h" as big-endian ASCII)
//! K1 = 0x6173_6876_3100_0000   ("ashv1\0\0\0")
//! ip_key(ip)     = SipHash-2-4(K0, K1, [4] ++ 4 octets)     for IPv4
//!                = SipHash-2-4(K0, K1, [6] ++ 16 octets)    for IPv6
//! node_key(name) = SipHash-2-4(K0, K1, [0x6e] ++ UTF-8 bytes of the node name)
//! score(ip, n)   = mix64(ip_key(ip) XOR node_key(n))
//! mix64(z)       = the SplitMix64 finalizer:
//!                  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
//!                  z = (z ^ (z >> 27)) * 0x94d049bb133111eb
//!                  z ^ (z >> 31)            (wrapping 64-bit arithmetic)
//! owner(ip)      = the eligible node with the highest score; on a tie the
//!                  node whose name sorts first (byte order).
//! ```
//!
//! SipHash (Aumasson and Bernstein, 2012) has a fixed specification and the
//! `siphasher` crate implements it bit for bit; `std`'s `DefaultHasher` is
//! explicitly unstable across releases and must not be used. Hashing each side
//! once and combining with a bijective mixer keeps a full election of 10 000
//! IPs over 1 000 nodes at ten million cheap mixes instead of ten million
//! SipHash runs. Rendezvous hashing (Thaler and Ravishankar, 1996) gives the
//! two properties the election needs whatever the score function: removing a
//! node moves only the IPs it owned, and adding one moves only the IPs it now
//! wins (about 1/N of them for a well-mixed score).

use std::hash::Hasher;
use std::net::IpAddr;

use siphasher::sip::SipHasher24;

const K0: u64 = 0x6564_6765_6c62_2d68;
const K1: u64 = 0x6173_6876_3100_0000;

fn siphash(tag: u8, bytes: &[u8]) -> u64 {
    let mut h = SipHasher24::new_with_keys(K0, K1);
    h.write(&[tag]);
    h.write(bytes);
    h.finish()
}

/// The hash of an IP address (see the module documentation).
pub fn ip_key(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(v4) => siphash(4, &v4.octets()),
        IpAddr::V6(v6) => siphash(6, &v6.octets()),
    }
}

/// The hash of a node name (see the module documentation).
pub fn node_key(node: &str) -> u64 {
    siphash(0x6e, node.as_bytes())
}

/// The SplitMix64 finalizer: a bijection on `u64` with good avalanche.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The score of a node for an IP from the precomputed keys.
pub fn score(ip_key: u64, node_key: u64) -> u64 {
    mix64(ip_key ^ node_key)
}

/// Whether candidate `(score_a, name_a)` beats `(score_b, name_b)`:
/// higher score first, then the name that sorts first.
pub fn beats(score_a: u64, name_a: &str, score_b: u64, name_b: &str) -> bool {
    score_a > score_b || (score_a == score_b && name_a < name_b)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Golden values: these pin the hash across versions and platforms. If
    /// this test fails, the election changed for every deployed cluster.
    #[test]
    fn scores_are_pinned_by_golden_values() {
        let ip4: IpAddr = "192.0.2.10".parse().expect("literal");
        let ip6: IpAddr = "2001:db8::10".parse().expect("literal");
        let got = [
            score(ip_key(ip4), node_key("node-a")),
            score(ip_key(ip4), node_key("node-b")),
            score(ip_key(ip6), node_key("node-a")),
        ];
        assert_eq!(got, GOLDEN, "rendezvous score changed: {got:#x?}");
    }

    const GOLDEN: [u64; 3] = [0x0c56a4d095dad3fe, 0xa6d90b9058686229, 0xf69c3a4a2d4dceba];

    #[test]
    fn siphash_matches_the_reference_vector() {
        // The SipHash-2-4 paper's test vector: key 00..0f, message 00..0e.
        let k0 = u64::from_le_bytes([0, 1, 2, 3, 4, 5, 6, 7]);
        let k1 = u64::from_le_bytes([8, 9, 10, 11, 12, 13, 14, 15]);
        let mut h = SipHasher24::new_with_keys(k0, k1);
        h.write(&(0u8..15).collect::<Vec<u8>>());
        assert_eq!(h.finish(), 0xa129_ca61_49be_45e5);
    }

    #[test]
    fn mix64_is_the_splitmix64_finalizer() {
        // SplitMix64 seeded with 0: first output is mix64(0x9e3779b97f4a7c15).
        assert_eq!(mix64(0x9e37_79b9_7f4a_7c15), 0xe220_a839_7b1d_cdaf);
    }

    #[test]
    fn ties_go_to_the_name_that_sorts_first() {
        assert!(beats(5, "b", 4, "a"));
        assert!(beats(5, "a", 5, "b"));
        assert!(!beats(5, "b", 5, "a"));
    }
}
