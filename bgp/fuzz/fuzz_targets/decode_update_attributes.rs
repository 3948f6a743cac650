//! A valid UPDATE header around arbitrary path attribute octets. The first input octet picks
//! the AS context and whether IPv4 NLRI follow. Whatever `Update::decode` accepts (with or
//! without an RFC 7606 action) must re-encode and decode to the same UPDATE.
#![no_main]
use bytes::BytesMut;
use edgelb_bgp::packet::{CodecContext, EncodeError, Message, Update};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, attrs)) = data.split_first() else {
        return;
    };
    let ctx = CodecContext {
        four_octet_as: mode & 1 != 0,
        extended_message: mode & 2 != 0,
    };
    let nlri: &[u8] = if mode & 4 != 0 {
        &[24, 203, 0, 113]
    } else {
        &[]
    };
    let room = ctx.max_message_len() - 23 - nlri.len();
    let attrs = &attrs[..attrs.len().min(room)];
    let mut frame = vec![0xff; 16];
    frame.extend_from_slice(&((23 + attrs.len() + nlri.len()) as u16).to_be_bytes());
    frame.push(2);
    frame.extend_from_slice(&[0, 0]);
    frame.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    frame.extend_from_slice(attrs);
    frame.extend_from_slice(nlri);

    let Ok(decoded) = Update::decode(&frame, &ctx) else {
        return;
    };
    let mut out = BytesMut::new();
    match Message::Update(decoded.update.clone()).encode(&ctx, &mut out) {
        Ok(()) => {
            let again = Update::decode(&out, &ctx).expect("re-encoded UPDATE decodes");
            assert_eq!(
                again.update, decoded.update,
                "re-encoded UPDATE decodes to the same value"
            );
        }
        Err(EncodeError::MessageTooLong { .. }) => {}
        Err(e) => panic!("decoded UPDATE does not re-encode: {e}"),
    }
});
