//! BFD Control packet decoder (RFC 5880 §4.1): never panics; what decodes re-encodes to a
//! packet that decodes to the same value.
#![no_main]
use edgelb_bgp::bfd::ControlPacket;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = ControlPacket::decode(data) {
        let again = p.to_vec();
        assert_eq!(ControlPacket::decode(&again), Ok(p));
    }
});
