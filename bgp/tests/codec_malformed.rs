//! Malformed messages, each with the exact NOTIFICATION (code, subcode, data) RFC 4271 §6
//! prescribes, or the RFC 7606 action and the error behind it.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
use bytes::Bytes;
use edgelb_bgp::packet::{frame_len, CodecContext, Message, Update, UpdateAction};

enum Expect {
    /// The session is reset with this NOTIFICATION (code, subcode, data).
    Reset(u8, u8, &'static str),
    /// RFC 7606 keeps the session: the action, and the (code, subcode, data) of the error
    /// that called for it (what a NOTIFICATION would have carried under RFC 4271).
    Keep(UpdateAction, u8, u8, &'static str),
}
use Expect::{Keep, Reset};
use UpdateAction::{AttributeDiscard as Discard, TreatAsWithdraw as Withdraw};

struct Case {
    name: &'static str,
    four_octet_as: bool,
    frame: Vec<u8>,
    expect: Expect,
}

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// A frame with a correct header around `body`.
fn frame(kind: u8, body: &str) -> Vec<u8> {
    let body = hex(body);
    let mut f = vec![0xff; 16];
    f.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
    f.push(kind);
    f.extend_from_slice(&body);
    f
}

/// An UPDATE with no withdrawn routes, `attrs` and `nlri` (lengths computed).
fn update(attrs: &str, nlri: &str) -> Vec<u8> {
    let a = hex(attrs);
    frame(2, &format!("0000 {:04x} {attrs} {nlri}", a.len()))
}

/// A header as given, whatever the real length.
fn raw(s: &str) -> Vec<u8> {
    hex(s)
}

const M: &str = "ffffffffffffffffffffffffffffffff";
/// ORIGIN IGP, AS_PATH [65001] (4-octet), NEXT_HOP 192.0.2.1.
const BASE4: &str = "400101 00 400206 0201 0000fde9 400304 c0000201";
/// The same with a 2-octet AS_PATH.
const BASE2: &str = "400101 00 400204 0201 fde9 400304 c0000201";
const NLRI: &str = "18 cb0071";
/// OPEN fields after the version: AS 65001, hold 90, id 192.0.2.1.
const OPEN_FIXED: &str = "fde9 005a c0000201";

fn cases() -> Vec<Case> {
    let c = |name, four_octet_as, frame, expect| Case {
        name,
        four_octet_as,
        frame,
        expect,
    };
    vec![
        // ---- Message header (RFC 4271 §6.1) ----
        c(
            "marker_not_all_ones_is_connection_not_synchronized",
            false,
            raw("ffffffffffffffffffffffffffffff00 0013 04"),
            Reset(1, 1, ""),
        ),
        c(
            "length_below_19_is_bad_message_length_with_the_length",
            false,
            raw(&format!("{M} 0012 04")),
            Reset(1, 2, "0012"),
        ),
        c(
            "length_above_4096_without_extended_message_is_bad_message_length",
            false,
            raw(&format!("{M} 1001 02")),
            Reset(1, 2, "1001"),
        ),
        c(
            "unknown_message_type_6_is_bad_message_type_with_the_type",
            false,
            raw(&format!("{M} 0013 06")),
            Reset(1, 3, "06"),
        ),
        c(
            "keepalive_with_a_body_is_bad_message_length",
            false,
            frame(4, "00"),
            Reset(1, 2, "0014"),
        ),
        c(
            "open_shorter_than_29_is_bad_message_length",
            false,
            frame(1, "04 fde9 005a c0000201"),
            Reset(1, 2, "001c"),
        ),
        c(
            "update_shorter_than_23_is_bad_message_length",
            false,
            frame(2, "0000 00"),
            Reset(1, 2, "0016"),
        ),
        c(
            "notification_shorter_than_21_is_bad_message_length",
            false,
            frame(3, "06"),
            Reset(1, 2, "0014"),
        ),
        c(
            "route_refresh_of_22_octets_is_bad_message_length",
            false,
            frame(5, "0001 00"),
            Reset(1, 2, "0016"),
        ),
        c(
            "plain_route_refresh_of_24_octets_is_bad_message_length",
            false,
            frame(5, "0001 00 01 00"),
            Reset(1, 2, "0018"),
        ),
        c(
            "enhanced_route_refresh_of_24_octets_is_rfc7313_invalid_length_with_the_message",
            false,
            frame(5, "0001 01 01 00"),
            Reset(
                7,
                1,
                "ffffffffffffffffffffffffffffffff 0018 05 0001 01 01 00",
            ),
        ),
        // ---- OPEN (RFC 4271 §6.2, RFC 5492, RFC 7607) ----
        c(
            "open_version_3_is_unsupported_version_with_our_version_4",
            false,
            frame(1, &format!("03 {OPEN_FIXED} 00")),
            Reset(2, 1, "0004"),
        ),
        c(
            "open_hold_time_1_is_unacceptable_hold_time",
            false,
            frame(1, "04 fde9 0001 c0000201 00"),
            Reset(2, 6, ""),
        ),
        c(
            "open_hold_time_2_is_unacceptable_hold_time",
            false,
            frame(1, "04 fde9 0002 c0000201 00"),
            Reset(2, 6, ""),
        ),
        c(
            "open_bgp_identifier_zero_is_bad_bgp_identifier",
            false,
            frame(1, "04 fde9 005a 00000000 00"),
            Reset(2, 3, ""),
        ),
        c(
            "open_my_as_zero_is_bad_peer_as",
            false,
            frame(1, "04 0000 005a c0000201 00"),
            Reset(2, 2, ""),
        ),
        c(
            "open_four_octet_as_capability_zero_is_bad_peer_as",
            false,
            frame(1, &format!("04 {OPEN_FIXED} 08 02 06 4104 00000000")),
            Reset(2, 2, ""),
        ),
        c(
            "open_optional_parameter_type_1_is_unsupported_optional_parameter",
            false,
            frame(1, &format!("04 {OPEN_FIXED} 04 01 02 abcd")),
            Reset(2, 4, ""),
        ),
        c(
            "open_parameter_length_beyond_the_message_is_open_error_unspecific",
            false,
            frame(1, &format!("04 {OPEN_FIXED} 08 02 06 4104")),
            Reset(2, 0, ""),
        ),
        c(
            "open_multiprotocol_capability_of_3_octets_is_open_error_unspecific",
            false,
            frame(1, &format!("04 {OPEN_FIXED} 07 02 05 0103 000100")),
            Reset(2, 0, ""),
        ),
        c(
            "open_graceful_restart_capability_of_3_octets_is_open_error_unspecific",
            false,
            frame(1, &format!("04 {OPEN_FIXED} 07 02 05 4003 000000")),
            Reset(2, 0, ""),
        ),
        // ---- UPDATE framing (RFC 4271 §6.3, RFC 7606 §5.3) ----
        c(
            "withdrawn_length_beyond_the_message_is_malformed_attribute_list",
            false,
            frame(2, "0010 0000"),
            Reset(3, 1, ""),
        ),
        c(
            "total_attribute_length_beyond_the_message_is_malformed_attribute_list",
            false,
            frame(2, "0000 0020 400101 00"),
            Reset(3, 1, ""),
        ),
        c(
            "nlri_prefix_length_33_is_invalid_network_field",
            false,
            update(BASE2, "21 cb007101 00"),
            Reset(3, 10, ""),
        ),
        c(
            "withdrawn_prefix_cut_short_is_invalid_network_field",
            false,
            frame(2, "0002 18cb 0000"),
            Reset(3, 10, ""),
        ),
        // ---- attribute errors, RFC 7606 §7 per attribute ----
        c(
            "origin_value_3_is_treat_as_withdraw_invalid_origin",
            false,
            update("400101 03 400204 0201 fde9 400304 c0000201", NLRI),
            Keep(Withdraw, 3, 6, "400101 03"),
        ),
        c(
            "origin_of_2_octets_is_treat_as_withdraw_attribute_length",
            false,
            update("400102 0000 400204 0201 fde9 400304 c0000201", NLRI),
            Keep(Withdraw, 3, 5, "400102 0000"),
        ),
        c(
            "as_path_segment_type_5_is_treat_as_withdraw_malformed_as_path",
            false,
            update("400101 00 400204 0501 fde9 400304 c0000201", NLRI),
            Keep(Withdraw, 3, 11, ""),
        ),
        c(
            "as_path_segment_of_zero_asns_is_treat_as_withdraw_malformed_as_path",
            true,
            update("400101 00 400202 0200 400304 c0000201", NLRI),
            Keep(Withdraw, 3, 11, ""),
        ),
        c(
            "as_path_segment_overrunning_the_attribute_is_treat_as_withdraw",
            true,
            update("400101 00 400206 0202 0000fde9 400304 c0000201", NLRI),
            Keep(Withdraw, 3, 11, ""),
        ),
        c(
            "as_path_with_one_trailing_octet_is_treat_as_withdraw",
            false,
            update("400101 00 400205 0201 fde9 02 400304 c0000201", NLRI),
            Keep(Withdraw, 3, 11, ""),
        ),
        c(
            "next_hop_of_5_octets_is_treat_as_withdraw_attribute_length",
            false,
            update("400101 00 400204 0201 fde9 400305 c000020101", NLRI),
            Keep(Withdraw, 3, 5, "400305 c000020101"),
        ),
        c(
            "next_hop_multicast_is_treat_as_withdraw_invalid_next_hop",
            false,
            update("400101 00 400204 0201 fde9 400304 e0000001", NLRI),
            Keep(Withdraw, 3, 8, "400304 e0000001"),
        ),
        c(
            "med_of_3_octets_is_treat_as_withdraw",
            false,
            update(&format!("{BASE2} 800403 000001"), NLRI),
            Keep(Withdraw, 3, 5, "800403 000001"),
        ),
        c(
            "local_pref_of_5_octets_is_treat_as_withdraw",
            false,
            update(&format!("{BASE2} 400505 0000006400"), NLRI),
            Keep(Withdraw, 3, 5, "400505 0000006400"),
        ),
        c(
            "atomic_aggregate_of_1_octet_is_attribute_discard",
            false,
            update(&format!("{BASE2} 400601 00"), NLRI),
            Keep(Discard, 3, 5, "400601 00"),
        ),
        c(
            "aggregator_of_7_octets_is_attribute_discard",
            false,
            update(&format!("{BASE2} c00707 fde9 c000020900"), NLRI),
            Keep(Discard, 3, 5, "c00707 fde9c000020900"),
        ),
        c(
            "four_octet_aggregator_of_6_octets_is_attribute_discard",
            true,
            update(&format!("{BASE4} c00706 fde9 c0000209"), NLRI),
            Keep(Discard, 3, 5, "c00706 fde9c0000209"),
        ),
        c(
            "communities_of_5_octets_is_treat_as_withdraw",
            false,
            update(&format!("{BASE2} c00805 fde9000100"), NLRI),
            Keep(Withdraw, 3, 5, "c00805 fde9000100"),
        ),
        c(
            "empty_communities_is_treat_as_withdraw",
            false,
            update(&format!("{BASE2} c00800"), NLRI),
            Keep(Withdraw, 3, 5, "c00800"),
        ),
        c(
            "large_communities_of_13_octets_is_treat_as_withdraw",
            false,
            update(&format!("{BASE2} c0200d 000000010000000200000003ff"), NLRI),
            Keep(Withdraw, 3, 5, "c0200d 000000010000000200000003ff"),
        ),
        c(
            "malformed_as4_path_on_a_two_octet_session_is_attribute_discard",
            false,
            update(&format!("{BASE2} c01103 020100"), NLRI),
            Keep(Discard, 3, 11, ""),
        ),
        c(
            "as4_path_with_a_confederation_segment_is_attribute_discard",
            false,
            update(&format!("{BASE2} c01106 0301 0000fde9"), NLRI),
            Keep(Discard, 3, 11, ""),
        ),
        c(
            "as4_aggregator_of_6_octets_is_attribute_discard",
            false,
            update(&format!("{BASE2} c01206 fde9 c0000209"), NLRI),
            Keep(Discard, 3, 5, "c01206 fde9c0000209"),
        ),
        // ---- flags (RFC 7606 §3(c)) ----
        c(
            "origin_marked_optional_is_treat_as_withdraw_flags_error",
            false,
            update("c00101 00 400204 0201 fde9 400304 c0000201", NLRI),
            Keep(Withdraw, 3, 4, "c00101 00"),
        ),
        c(
            "med_marked_transitive_is_treat_as_withdraw_flags_error",
            false,
            update(&format!("{BASE2} c00404 00000001"), NLRI),
            Keep(Withdraw, 3, 4, "c00404 00000001"),
        ),
        c(
            "mp_reach_marked_transitive_is_session_reset_flags_error",
            true,
            update(
                "c00e15 0002 01 10 20010db8000000000000000000000001 00 400101 00 400200",
                "",
            ),
            Reset(
                3,
                4,
                "c00e15 0002 01 10 20010db8000000000000000000000001 00",
            ),
        ),
        // ---- presence and repetition (RFC 7606 §3(d), §3(g)) ----
        c(
            "unrecognized_well_known_attribute_is_session_reset_with_the_attribute",
            false,
            update(&format!("{BASE2} 406302 abcd"), NLRI),
            Reset(3, 2, "406302 abcd"),
        ),
        c(
            "missing_origin_with_nlri_is_treat_as_withdraw_with_type_1",
            false,
            update("400204 0201 fde9 400304 c0000201", NLRI),
            Keep(Withdraw, 3, 3, "01"),
        ),
        c(
            "missing_as_path_with_nlri_is_treat_as_withdraw_with_type_2",
            false,
            update("400101 00 400304 c0000201", NLRI),
            Keep(Withdraw, 3, 3, "02"),
        ),
        c(
            "missing_next_hop_with_ipv4_nlri_is_treat_as_withdraw_with_type_3",
            false,
            update("400101 00 400204 0201 fde9", NLRI),
            Keep(Withdraw, 3, 3, "03"),
        ),
        c(
            "duplicate_med_keeps_the_first_and_discards_the_rest",
            false,
            update(&format!("{BASE2} 800404 00000001 800404 00000002"), NLRI),
            Keep(Discard, 3, 1, ""),
        ),
        c(
            "duplicate_mp_unreach_is_session_reset_malformed_attribute_list",
            true,
            update("800f03 000201 800f03 000201", ""),
            Reset(3, 1, ""),
        ),
        // ---- MP_REACH / MP_UNREACH (RFC 7606 §7.11, §7.12: we reset) ----
        c(
            "mp_reach_next_hop_of_5_octets_is_session_reset_optional_attribute_error",
            true,
            update("800e0a 0002 01 05 2001 0db8 00 00 400101 00 400200", ""),
            Reset(3, 9, "800e0a 0002 01 05 20010db800 00"),
        ),
        c(
            "mp_reach_prefix_length_129_is_session_reset",
            true,
            update(
                "800e16 0002 01 10 20010db8000000000000000000000001 00 81 400101 00 400200",
                "",
            ),
            Reset(
                3,
                9,
                "800e16 0002 01 10 20010db8000000000000000000000001 00 81",
            ),
        ),
        c(
            "mp_unreach_shorter_than_afi_and_safi_is_session_reset",
            true,
            update("800f02 0002", ""),
            Reset(3, 9, "800f02 0002"),
        ),
        c(
            "mp_reach_overrunning_the_attributes_is_session_reset",
            true,
            update("800e30 0002 01 10 20010db8000000000000000000000001", ""),
            Reset(3, 5, "800e30 0002 01 10 20010db8000000000000000000000001"),
        ),
        // ---- attribute list overruns (RFC 7606 §4) and combinations (§3(f)) ----
        c(
            "attribute_overrunning_the_attribute_list_is_treat_as_withdraw",
            false,
            update(&format!("{BASE2} 800408 00000001"), NLRI),
            Keep(Withdraw, 3, 1, ""),
        ),
        c(
            "two_octets_left_for_an_attribute_header_is_treat_as_withdraw",
            false,
            update(&format!("{BASE2} 8004"), NLRI),
            Keep(Withdraw, 3, 1, ""),
        ),
        c(
            "treat_as_withdraw_wins_over_attribute_discard",
            false,
            update("400101 03 400204 0201 fde9 400304 c0000201 400601 00", NLRI),
            Keep(Withdraw, 3, 6, "400101 03"),
        ),
        c(
            "session_reset_wins_over_treat_as_withdraw",
            true,
            update("400101 03 400200 800f02 0002", ""),
            Reset(3, 9, "800f02 0002"),
        ),
    ]
}

fn check(case: &Case) -> Result<(), String> {
    let ctx = CodecContext {
        four_octet_as: case.four_octet_as,
        extended_message: false,
    };
    // Framing first, as the session does; a header error stops there.
    let err = match frame_len(&case.frame, &ctx) {
        Err(e) => e,
        Ok(Some(n)) if n == case.frame.len() => match Message::decode(&case.frame, &ctx) {
            Ok(m) => return Err(format!("decoded without error: {m:?}")),
            Err(e) => e,
        },
        Ok(other) => return Err(format!("frame_len returned {other:?}")),
    };
    let n = err.notification();
    let got = (n.code, n.subcode, n.data.clone());
    let (action, code, subcode, data) = match &case.expect {
        Reset(c, s, d) => (UpdateAction::SessionReset, *c, *s, *d),
        Keep(a, c, s, d) => (*a, *c, *s, *d),
    };
    let want = (code, subcode, Bytes::from(hex(data)));
    if got != want || err.action() != action {
        return Err(format!(
            "got {:?} {got:02x?} ({err}), want {action:?} {want:02x?}",
            err.action()
        ));
    }
    // An UPDATE that RFC 7606 keeps still decodes through Update::decode, with the action.
    if let Keep(..) = case.expect {
        let d = Update::decode(&case.frame, &ctx).map_err(|e| format!("Update::decode: {e}"))?;
        let (a, e) = d.action.ok_or("Update::decode reported no action")?;
        if a != action || e != err {
            return Err(format!("Update::decode reported {a:?} {e}"));
        }
    }
    Ok(())
}

#[test]
fn every_malformed_input_maps_to_its_notification_or_rfc7606_action() {
    let cases = cases();
    assert!(cases.len() >= 30, "the issue asks for at least 30 cases");
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|c| check(c).err().map(|e| format!("{}: {e}", c.name)))
        .collect();
    eprintln!("{} malformed cases, {} failed", cases.len(), failures.len());
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn case_names_are_unique() {
    let mut names: Vec<_> = cases().iter().map(|c| c.name).collect();
    names.sort();
    let n = names.len();
    names.dedup();
    assert_eq!(names.len(), n);
}

#[test]
fn duplicate_attribute_keeps_the_first_value() {
    let ctx = CodecContext::PRE_OPEN;
    let f = update(&format!("{BASE2} 800404 00000001 800404 00000002"), NLRI);
    let d = Update::decode(&f, &ctx).unwrap();
    assert_eq!(d.update.attributes.med, Some(1));
}

#[test]
fn discarded_attribute_is_left_out_and_the_rest_is_kept() {
    let ctx = CodecContext::PRE_OPEN;
    let f = update(
        &format!("{BASE2} c00707 fde9 c000020900 c00804 fde90001"),
        NLRI,
    );
    let d = Update::decode(&f, &ctx).unwrap();
    assert_eq!(d.action.map(|a| a.0), Some(Discard));
    assert_eq!(d.update.attributes.aggregator, None);
    assert_eq!(d.update.attributes.communities.len(), 1);
    assert_eq!(d.update.nlri.len(), 1);
}

#[test]
fn treat_as_withdraw_still_reports_the_prefixes_to_withdraw() {
    let ctx = CodecContext::PRE_OPEN;
    let f = update(
        "400101 03 400204 0201 fde9 400304 c0000201",
        "18 cb0071 18 c63364",
    );
    let d = Update::decode(&f, &ctx).unwrap();
    assert_eq!(d.action.map(|a| a.0), Some(Withdraw));
    assert_eq!(
        d.update.nlri,
        vec![
            "203.0.113.0/24".parse().unwrap(),
            "198.51.100.0/24".parse().unwrap()
        ]
    );
}
