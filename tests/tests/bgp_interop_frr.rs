//! edgelb-bgp against FRR in a network namespace: the speaker is the `announce` example
//! process, the router a real FRR (see `bgp_support` for the scenarios).
mod bgp_support;

use edgelb_tests::lab::{self, Frr};

#[test]
fn frr_ebgp_and_ibgp_routes_carry_exact_attributes_and_withdrawals_disappear() -> anyhow::Result<()>
{
    if !lab::enabled("bgp_interop_frr") {
        return Ok(());
    }
    bgp_support::attributes_and_withdrawal::<Frr>()
}

#[test]
fn frr_md5_session_comes_up_with_the_right_password_only() -> anyhow::Result<()> {
    if !lab::enabled("bgp_interop_frr") {
        return Ok(());
    }
    bgp_support::md5::<Frr>()
}

#[test]
fn frr_sigterm_withdraws_at_once_and_sigkill_within_the_hold_time() -> anyhow::Result<()> {
    if !lab::enabled("bgp_interop_frr") {
        return Ok(());
    }
    bgp_support::sigterm_and_sigkill::<Frr>()
}

#[test]
fn frr_restart_brings_the_session_and_routes_back() -> anyhow::Result<()> {
    if !lab::enabled("bgp_interop_frr") {
        return Ok(());
    }
    bgp_support::router_restart::<Frr>()
}
