#!/usr/bin/env bash
# Captures real BGP messages from FRR, BIRD and GoBGP and writes them as codec fixtures:
# bgp/tests/fixtures/<router>_<what>.hex (one message per file, hex of the whole message
# including the 16-byte marker), the pcaps under bgp/tests/fixtures/pcap/, and README.md
# with versions, configs, commands and a decode of every fixture.
#
# For each peer P in (bird, gobgp): FRR (AS 65001, 192.0.2.1 / 2001:db8::1) and P (AS 65001,
# 192.0.2.2 / 2001:db8::2) in two namespaces joined by a veth; two iBGP sessions (IPv4 over
# IPv4, IPv6 over IPv6) so LOCAL_PREF is sent; tcpdump on FRR's interface. Sequence: both
# sessions up, each side originates one IPv4 and one IPv6 prefix with communities, large
# communities, MED and LOCAL_PREF; both withdraw them; FRR shuts the IPv4 session down
# (FRR's Cease), re-enables it; P shuts it down (P's Cease). FRR's messages are taken from
# the BIRD run. Usage: bench/capture-fixtures.sh [OUTDIR]  (root; about 30 s)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/../bgp/tests/fixtures}
mkdir -p "$out/pcap"
out=$(cd "$out" && pwd)
# shellcheck source=bench/lib.sh
. "$here/lib.sh"

F4=192.0.2.1 F6=2001:db8::1 P4=192.0.2.2 P6=2001:db8::2

frr_conf() {
  cat <<EOF
frr defaults traditional
hostname frr
log stdout informational
route-map ANN4 permit 10
 set community 65001:7 65001:8
 set large-community 65001:1:1
 set metric 33
 set local-preference 150
exit
route-map ANN6 permit 10
 set community 65001:9
 set large-community 65001:6:1
 set metric 34
 set local-preference 160
exit
router bgp 65001
 bgp router-id $F4
 no bgp ebgp-requires-policy
 no bgp default ipv4-unicast
 no bgp network import-check
 neighbor $P4 remote-as 65001
 neighbor $P4 timers connect 1
 neighbor $P4 advertisement-interval 0
 neighbor $P6 remote-as 65001
 neighbor $P6 timers connect 1
 neighbor $P6 advertisement-interval 0
 address-family ipv4 unicast
  neighbor $P4 activate
  network 203.0.113.0/24 route-map ANN4
 exit-address-family
 address-family ipv6 unicast
  neighbor $P6 activate
  network 2001:db8:200::/48 route-map ANN6
 exit-address-family
EOF
}

bird_conf() {
  cat <<EOF
router id $P4;
log stderr all;
protocol device {}
protocol static s4 { ipv4; route 198.51.100.0/24 blackhole; }
protocol static s6 { ipv6; route 2001:db8:100::/48 blackhole; }
filter export_attrs {
  if net = 198.51.100.0/24 then { bgp_community.add((65001,100)); bgp_community.add((65001,101)); bgp_large_community.add((65001,1,2)); bgp_med = 50; bgp_local_pref = 200; }
  if net = 2001:db8:100::/48 then { bgp_community.add((65001,600)); bgp_large_community.add((65001,6,6)); bgp_med = 60; bgp_local_pref = 250; }
  accept;
}
protocol bgp frr4 {
  local $P4 as 65001; neighbor $F4 as 65001;
  connect delay time 1; connect retry time 2;
  ipv4 { import all; export filter export_attrs; next hop self; };
}
protocol bgp frr6 {
  local $P6 as 65001; neighbor $F6 as 65001;
  connect delay time 1; connect retry time 2;
  ipv6 { import all; export filter export_attrs; next hop self; };
}
EOF
}

gobgp_conf() {
  cat <<EOF
[global.config]
  as = 65001
  router-id = "$P4"
[[neighbors]]
  [neighbors.config]
    neighbor-address = "$F4"
    peer-as = 65001
  [neighbors.transport.config]
    passive-mode = true
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv4-unicast"
[[neighbors]]
  [neighbors.config]
    neighbor-address = "$F6"
    peer-as = 65001
  [neighbors.transport.config]
    passive-mode = true
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv6-unicast"
EOF
}
GOBGP_ROUTES=(
  "-a ipv4 198.51.100.0/24 community 65001:100,65001:101 large-community 65001:1:2 med 50 local-pref 200"
  "-a ipv6 2001:db8:100::/48 community 65001:600 large-community 65001:6:6 med 60 local-pref 250"
)

frr_established() { vty "$1" "show bgp neighbors $2 json" | grep -q '"bgpState":"Established"'; }
frr_has() { vty "$1" "show bgp $2 unicast $3 json" | grep -q '"paths"'; }
frr_lacks() { ! frr_has "$@"; }

capture() {
  local peer=$1 frr="frr_$1" pcap="$out/pcap/frr-$1.pcap"
  lab_ns "f$peer"
  lab_ns "p$peer"
  lab_link "f$peer" eth0 "p$peer" eth0
  lab_addr "f$peer" eth0 "$F4/24"; lab_addr "f$peer" eth0 "$F6/64"
  lab_addr "p$peer" eth0 "$P4/24"; lab_addr "p$peer" eth0 "$P6/64"
  mkdir -p "$LAB_DIR/$frr" "$LAB_DIR/$peer"
  frr_conf >"$LAB_DIR/$frr/bgpd.conf"
  # Started directly (not through a shell function) so that $! is tcpdump itself.
  ip netns exec "${LAB_TAG}-f$peer" tcpdump -Z root -i eth0 -U -s 0 -w "$pcap" 'tcp port 179' \
    2>"$LAB_DIR/tcpdump-$peer.log" &
  local tcpdump=$!
  LAB_PIDS+=("$tcpdump")
  wait_for "tcpdump" 10 grep -q "listening on" "$LAB_DIR/tcpdump-$peer.log"
  if [ "$peer" = bird ]; then
    bird_conf >"$LAB_DIR/$peer/bird.conf"
    bird_start "$peer" "p$peer"
  else
    gobgp_conf >"$LAB_DIR/$peer/gobgpd.toml"
    gobgp_start "$peer" "p$peer"
    local r
    # shellcheck disable=SC2086
    for r in "${GOBGP_ROUTES[@]}"; do gocl "$peer" global rib add $r >/dev/null; done
  fi
  frr_start "$frr" "f$peer"
  wait_for "FRR-$peer IPv4 session" 30 frr_established "$frr" "$P4"
  wait_for "FRR-$peer IPv6 session" 30 frr_established "$frr" "$P6"
  wait_for "$peer IPv4 route at FRR" 15 frr_has "$frr" ipv4 198.51.100.0/24
  wait_for "$peer IPv6 route at FRR" 15 frr_has "$frr" ipv6 2001:db8:100::/48
  sleep 2
  # Withdraws from both sides.
  if [ "$peer" = bird ]; then
    birdcl "$peer" disable s4 >/dev/null
    birdcl "$peer" disable s6 >/dev/null
  else
    gocl "$peer" global rib del -a ipv4 198.51.100.0/24
    gocl "$peer" global rib del -a ipv6 2001:db8:100::/48
  fi
  vty "$frr" "configure terminal" "router bgp 65001" "address-family ipv4 unicast" \
    "no network 203.0.113.0/24" "exit-address-family" "address-family ipv6 unicast" \
    "no network 2001:db8:200::/48" >/dev/null
  wait_for "$peer IPv4 withdraw at FRR" 15 frr_lacks "$frr" ipv4 198.51.100.0/24
  wait_for "$peer IPv6 withdraw at FRR" 15 frr_lacks "$frr" ipv6 2001:db8:100::/48
  sleep 2
  # FRR's Cease (administrative shutdown), then the peer's.
  # The second run adds a Shutdown Communication (RFC 9003) to FRR's Cease.
  local msg=""
  [ "$peer" = gobgp ] && msg=' message edgelb lab'
  vty "$frr" "configure terminal" "router bgp 65001" "neighbor $P4 shutdown$msg" >/dev/null
  sleep 1
  vty "$frr" "configure terminal" "router bgp 65001" "no neighbor $P4 shutdown" >/dev/null
  wait_for "FRR-$peer IPv4 session again" 30 frr_established "$frr" "$P4"
  sleep 1
  if [ "$peer" = bird ]; then
    birdcl "$peer" disable frr4 >/dev/null
  else
    gocl "$peer" neighbor "$F4" disable
  fi
  sleep 1
  kill -INT "$tcpdump"
  local i
  for i in $(seq 50); do kill -0 "$tcpdump" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$tcpdump" 2>/dev/null || true
}

rows_bird=""; rows_gobgp=""
rm -f "$out"/*.hex
capture bird
rows_bird=$(python3 "$here/bgp_pcap.py" fixtures "$out/pcap/frr-bird.pcap" "$out" \
  "frr=$F4,$F6" "bird=$P4,$P6")
capture gobgp
rows_gobgp=$(python3 "$here/bgp_pcap.py" fixtures "$out/pcap/frr-gobgp.pcap" "$out" \
  "frr=$F4,$F6" "gobgp=$P4,$P6")

{
  cat <<EOF
# BGP message fixtures from real routers

Each \`<router>_<what>.hex\` holds exactly one BGP message: the hex of the whole message,
16-byte marker, length and type included, on one line. They were captured by
\`bench/capture-fixtures.sh\` (run it as root to regenerate; it rewrites this file) with
\`tcpdump -i eth0 -U -s 0 -w FILE 'tcp port 179'\` in FRR's namespace, and cut out of the TCP
streams by \`bench/bgp_pcap.py\` (its \`list\` command prints every message of a pcap). The
pcaps are in \`pcap/\`.

Routers (Debian 12 packages): $(/usr/lib/frr/bgpd --version | head -1), $(bird --version 2>&1),
GoBGP $(gobgpd --version | awk '{print $3}'). Captured $(date -u +%Y-%m-%d).

Setup: FRR (AS 65001, router id 192.0.2.1, 192.0.2.1/24 and 2001:db8::1/64 on eth0) and the
peer (AS 65001, 192.0.2.2 / 2001:db8::2) in two network namespaces joined by a veth. Two
**iBGP** sessions (so LOCAL_PREF is carried): ipv4/unicast over IPv4 and ipv6/unicast over
IPv6; every AS_PATH is empty and 4-octet AS numbers are negotiated (AS_PATH segments use
4-byte ASNs). FRR runs as \`bgpd -Z -S -P 0 -f bgpd.conf -i bgpd.pid --vty_socket DIR\`,
BIRD as \`bird -f -c bird.conf -s bird.ctl -P bird.pid\`, GoBGP as
\`gobgpd -f gobgpd.toml -p --api-hosts 127.0.0.1:PORT --pprof-disable\` (passive; routes
added with \`gobgp global rib add ${GOBGP_ROUTES[0]}\` and
\`gobgp global rib add ${GOBGP_ROUTES[1]}\`).

Sequence: sessions up; each side originates one IPv4 and one IPv6 prefix; both withdraw
them (BIRD: \`birdc disable s4\`/\`s6\`; GoBGP: \`gobgp global rib del\`; FRR: \`no network\`);
FRR shuts the IPv4 session down (\`neighbor 192.0.2.2 shutdown\`: FRR's Cease) and
re-enables it; then the peer shuts it down (\`birdc disable frr4\` /
\`gobgp neighbor 192.0.2.1 disable\`: the peer's Cease). FRR's messages come from the BIRD
run, except \`frr_notification_cease_message\` (GoBGP run, \`neighbor 192.0.2.2 shutdown
message edgelb lab\`). A file is missing when that router did not send such a message.

Names: \`open\` (first OPEN on the IPv4 session), \`open_ipv6_session\` (first OPEN on the
IPv6 session), \`keepalive\`, \`update_ipv4\` (first UPDATE
with IPv4 NLRI), \`update_ipv6\` (first UPDATE with MP_REACH_NLRI for ipv6/unicast),
\`withdraw_ipv4\` (withdrawn routes field), \`withdraw_ipv6\` (MP_UNREACH_NLRI with
prefixes), \`eor_ipv4\` / \`eor_ipv6\` (End-of-RIB, RFC 4724 §2), \`notification_cease\`
(NOTIFICATION code 6; subcode 2 is Administrative Shutdown, RFC 4486).
GoBGP sent no End-of-RIB here (no graceful restart configured). The FQDN capability carries
the machine's host name for GoBGP (\`vm\` here) and FRR's \`hostname\` (\`frr\`).

## Contents (decoded by bench/bgp_pcap.py)

| file | bytes | content |
| --- | --- | --- |
$rows_bird
$rows_gobgp

## FRR bgpd.conf
\`\`\`
$(frr_conf)
\`\`\`

## BIRD bird.conf
\`\`\`
$(bird_conf)
\`\`\`

## GoBGP gobgpd.toml
\`\`\`
$(gobgp_conf)
\`\`\`
EOF
} >"$out/README.md"
echo "wrote $(ls "$out"/*.hex | wc -l) fixtures to $out"
