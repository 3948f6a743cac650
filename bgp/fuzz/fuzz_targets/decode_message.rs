//! Arbitrary bytes through `frame_len` and `Message::decode` in both AS contexts: no panic,
//! and every message that decodes re-encodes and decodes to the same value. Each input is
//! tried twice: as a raw stream, and as type octet + body behind a valid marker and length
//! (so the fuzzer spends its time in the bodies, not in finding the marker).
#![no_main]
use bytes::BytesMut;
use edgelb_bgp::packet::{frame_len, CodecContext, EncodeError, Message, Update};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    check_stream(data);
    if let Some((&kind, body)) = data.split_first() {
        let body = &body[..body.len().min(65535 - 19)];
        let mut framed = vec![0xff; 16];
        framed.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
        framed.push(kind % 8);
        framed.extend_from_slice(body);
        check_stream(&framed);
    }
});

fn check_stream(data: &[u8]) {
    for ctx in [
        CodecContext {
            four_octet_as: false,
            extended_message: false,
        },
        CodecContext {
            four_octet_as: true,
            extended_message: true,
        },
    ] {
        let _ = Message::decode(data, &ctx);
        let mut rest = data;
        while let Ok(Some(n)) = frame_len(rest, &ctx) {
            let Some(frame) = rest.get(..n) else { break };
            let _ = Update::decode(frame, &ctx);
            if let Ok(msg) = Message::decode(frame, &ctx) {
                let mut out = BytesMut::new();
                match msg.encode(&ctx, &mut out) {
                    Ok(()) => {
                        let back = Message::decode(&out, &ctx).expect("re-encoded message decodes");
                        assert_eq!(back, msg, "re-encoded message decodes to the same value");
                    }
                    // A 2-octet session may need a longer AS4_PATH than the peer sent.
                    Err(EncodeError::MessageTooLong { .. }) => {}
                    Err(e) => panic!("decoded message does not re-encode: {e}"),
                }
            }
            rest = &rest[n..];
        }
    }
}
