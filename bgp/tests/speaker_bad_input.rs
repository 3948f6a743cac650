//! A raw TCP peer sends the speaker bytes no router would: it answers with the NOTIFICATION
//! RFC 4271 §6 prescribes, closes, and keeps running.
#![allow(clippy::unwrap_used)]
use edgelb_bgp::fsm::State;
use edgelb_bgp::{PeerConfig, Speaker, SpeakerConfig};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const PEER: &str = "127.0.0.2";

fn speaker() -> (Speaker, u16) {
    let mut s = Speaker::new(SpeakerConfig {
        router_id: Ipv4Addr::new(192, 0, 2, 1),
        listen: Some("127.0.0.1:0".parse().unwrap()),
    })
    .unwrap();
    let port = s.local_addr().unwrap().port();
    let mut p = PeerConfig::new(PEER.parse().unwrap(), 65001, 65002);
    p.passive = true;
    p.import = true;
    s.set_peer(p).unwrap();
    (s, port)
}

async fn connect(port: u16) -> TcpStream {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::new(PEER.parse().unwrap(), 0))
        .unwrap();
    sock.connect(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port))
        .await
        .unwrap()
}

/// Everything the speaker sends until it closes (bounded by a timeout).
async fn read_all(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    out
}

/// (code, subcode) of every NOTIFICATION in a byte stream of well-formed messages.
fn notifications(mut bytes: &[u8]) -> Vec<(u8, u8)> {
    let mut out = Vec::new();
    while bytes.len() >= 19 {
        let len = usize::from(u16::from_be_bytes([bytes[16], bytes[17]]));
        if len < 19 || len > bytes.len() {
            break;
        }
        if bytes[18] == 3 && len >= 21 {
            out.push((bytes[19], bytes[20]));
        }
        bytes = &bytes[len..];
    }
    out
}

fn header(len: u16, kind: u8) -> Vec<u8> {
    let mut v = vec![0xff; 16];
    v.extend_from_slice(&len.to_be_bytes());
    v.push(kind);
    v
}

#[tokio::test]
async fn bad_marker_is_answered_with_1_1() {
    let (s, port) = speaker();
    let mut c = connect(port).await;
    let mut msg = header(19, 4);
    msg[0] = 0;
    c.write_all(&msg).await.unwrap();
    let got = read_all(&mut c).await;
    assert_eq!(notifications(&got), vec![(1, 1)]);
    let st = s.peers().remove(0);
    assert_eq!(st.last_error.unwrap().code, Some((1, 1)));
}

#[tokio::test]
async fn oversized_length_is_answered_with_1_2_before_reading_the_body() {
    let (_s, port) = speaker();
    let mut c = connect(port).await;
    // 65535 without the Extended Message capability: rejected from the header alone.
    c.write_all(&header(65535, 2)).await.unwrap();
    let got = read_all(&mut c).await;
    assert_eq!(notifications(&got), vec![(1, 2)]);
}

#[tokio::test]
async fn update_before_open_is_fsm_error_5_1() {
    let (_s, port) = speaker();
    let mut c = connect(port).await;
    let mut msg = header(23, 2);
    msg.extend_from_slice(&[0, 0, 0, 0]);
    c.write_all(&msg).await.unwrap();
    let got = read_all(&mut c).await;
    assert_eq!(notifications(&got), vec![(5, 1)]);
}

#[tokio::test]
async fn garbage_never_brings_the_speaker_down() {
    let (s, port) = speaker();
    // A fixed-seed generator: reproducible garbage, no extra dependency.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for round in 0..20 {
        let mut c = connect(port).await;
        let mut buf = Vec::new();
        let len = 1 + (round * 97) % 700;
        for _ in 0..len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            buf.push(x as u8);
        }
        // Half the rounds start with a valid marker so the header checks run too.
        if round % 2 == 0 && buf.len() >= 16 {
            buf[..16].fill(0xff);
        }
        let _ = c.write_all(&buf).await;
        let _ = c.shutdown().await;
        let got = read_all(&mut c).await;
        assert!(
            got.len() < 10_000,
            "round {round}: {} bytes back",
            got.len()
        );
    }
    let st = s.peers().remove(0);
    assert_ne!(st.state, State::Established);
    assert!(st.last_error.is_some());
}
