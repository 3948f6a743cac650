//! BFD Echo frames read off the packet socket (RFC 5880 §6.4): whatever arrives on the
//! wire, parsing never panics.
#![no_main]
use edgelb_bgp::bfd::echo::parse_returned;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse_returned(data);
});
