#!/usr/bin/env bash
# The edgelb demo: one command, as root, on a fresh Debian/Ubuntu machine.
#
#   client --- router (FRR: zebra + bgpd) --- LAN --- node-a (edgelb-speaker)
#                                                 \-- node-b (edgelb-speaker)
#
# Everything lives in network namespaces named edgelb-demo-*, uses documentation addresses
# (192.0.2.0/24 LAN, 203.0.113.0/24 client side, 198.51.100.0/24 Service IPs) and is removed
# on exit, even on failure or Ctrl-C. Only processes this script started are stopped, by pid.
# Bounded: every wait has a deadline; the whole run takes about a minute after the build.
#
# Part 2 (deploy/demo/regions.sh): ONE Service in two regions against a real API server (etcd
# and kube-apiserver from .ci/k8s's cache, in namespace edgelb-demo-ctl): node pool np-hefei
# announced by BGP to the same router, node pool np-chengdu behind an ENS Edge Load Balancer of
# the emulated cloud (edgelb-ens-emulator, its data plane in edgelb-demo-cloud); the Service's
# status lists both addresses and the client reaches both.
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ "$(id -u)" != 0 ]; then
    echo "run as root (it creates network namespaces): sudo $0" >&2
    exit 1
fi

if [ -t 1 ]; then B=$'\e[1m'; G=$'\e[32m'; R=$'\e[31m'; N=$'\e[0m'; else B= G= R= N=; fi
step() { printf '\n%s==> %s%s\n' "$B" "$*" "$N"; }
ok() { printf '%s    ok%s %s\n' "$G" "$N" "$*"; }
die() { printf '%s    FAILED%s %s\n' "$R" "$N" "$*" >&2; exit 1; }
now_ms() { date +%s%3N; }
# The router as the speakers' BGP peer and a BGPAdvertisement named $1 with spec $2, as YAML
# documents: both parts of the demo peer with the same router.
peer_yaml() {
    cat <<EOF
apiVersion: edgelb.io/v1alpha1
kind: BGPPeer
metadata: {name: router, namespace: edgelb-system}
spec: {myASN: 64512, peerASN: 64500, peerAddress: "192.0.2.1", holdTime: 9s}
---
apiVersion: edgelb.io/v1alpha1
kind: BGPAdvertisement
metadata: {name: $1, namespace: edgelb-system}
spec: $2
EOF
}

P=edgelb-demo
SVC_IP=198.51.100.10
WORK=$(mktemp -d /tmp/edgelb-demo.XXXXXX)
PIDS=()

cleanup() {
    local rc=$?
    set +e
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    for f in "$WORK"/*.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null; done
    sleep 0.3
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
    for f in "$WORK"/*.pid; do [ -f "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null; done
    for ns in client router lan node-a node-b node-c cloud ctl; do ip netns del "$P-$ns" 2>/dev/null; done
    if [ "$rc" != 0 ] && [ -d "$WORK" ]; then
        echo "--- last log lines (kept in $WORK.logs)" >&2
        mkdir -p "$WORK.logs" && cp "$WORK"/*.log "$WORK.logs"/ 2>/dev/null
        tail -n 5 "$WORK"/*.log >&2 2>/dev/null
    fi
    rm -rf "$WORK"
    printf '\n%s==> cleaned up (namespaces %s-*, processes, %s)%s\n' "$B" "$P" "$WORK" "$N"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------------------
step "1. install what is missing (FRR, curl, python3 with yaml, openssl)"
missing=()
[ -x /usr/lib/frr/bgpd ] && [ -x /usr/lib/frr/zebra ] || missing+=(frr)
command -v curl >/dev/null || missing+=(curl)
command -v python3 >/dev/null || missing+=(python3)
command -v ip >/dev/null || missing+=(iproute2)
command -v openssl >/dev/null || missing+=(openssl)
python3 -c 'import yaml' 2>/dev/null || missing+=(python3-yaml)
if [ ${#missing[@]} -gt 0 ]; then
    echo "    apt-get install -y ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# Only the packaged daemons are used; stop nothing the system runs.
command -v cargo >/dev/null || die "cargo not found: install Rust first (https://rustup.rs)"
ok "FRR $(/usr/lib/frr/bgpd --version 2>/dev/null | head -1 | awk '{print $NF}'), $(cargo --version)"
# Part 2's control plane: etcd and kube-apiserver, built once from Go modules (.ci/k8s).
if ! [ -x "$(bash .ci/k8s bin)/kube-apiserver" ]; then
    command -v go >/dev/null || [ -x /usr/local/go/bin/go ] ||
        die "part 2 needs etcd and kube-apiserver: install Go (https://go.dev/dl) so that .ci/k8s build can build them, or put them in $(bash .ci/k8s bin)"
    echo "    bash .ci/k8s build (etcd, kube-apiserver from Go modules; once, cached)"
    timeout 3600 bash .ci/k8s build
fi

# EDGELB_DEMO_PROFILE=debug reuses the binaries a `cargo test` run already built (CI does).
profile="${EDGELB_DEMO_PROFILE:-release}"
step "2. build edgelb-speaker, edgelbctl and edgelb-ens-emulator ($profile)"
if [ "$profile" = release ]; then
    timeout 1800 cargo build --release --locked -q -p edgelb-daemon -p edgelbctl -p edgelb-cloud-emu
    BIN="${CARGO_TARGET_DIR:-$PWD/target}/release"
else
    timeout 1800 cargo build --locked -q -p edgelb-daemon -p edgelbctl -p edgelb-cloud-emu
    BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug"
fi
[ -x "$BIN/edgelb-speaker" ] && [ -x "$BIN/edgelbctl" ] && [ -x "$BIN/edgelb-ens-emulator" ] ||
    die "binaries not in $BIN"
ok "$BIN/edgelb-speaker, $BIN/edgelbctl, $BIN/edgelb-ens-emulator"

# ---------------------------------------------------------------------------------------
step "3. lab: namespaces $P-{router,node-a,node-b,client} on a LAN"
for ns in lan router node-a node-b client; do
    ip netns del "$P-$ns" 2>/dev/null || true
    ip netns add "$P-$ns"
    ip -n "$P-$ns" link set lo up
done
ip -n "$P-lan" link add br0 type bridge
ip -n "$P-lan" link set br0 up
attach() { # ns dev addr
    # Created under edgelb-demo names, renamed only inside the namespaces (never touches
    # the host's own eth0).
    ip link add "$P-v" type veth peer name "$P-t"
    ip link set "$P-v" netns "$P-lan"
    ip -n "$P-lan" link set "$P-v" name "p-$1"
    ip -n "$P-lan" link set "p-$1" master br0 up
    ip link set "$P-t" netns "$P-$1"
    ip -n "$P-$1" link set "$P-t" name "$2"
    ip -n "$P-$1" addr add "$3" dev "$2"
    ip -n "$P-$1" link set "$2" up
}
attach router eth0 192.0.2.1/24
attach node-a eth0 192.0.2.11/24
attach node-b eth0 192.0.2.12/24
ip link add "$P-c" type veth peer name "$P-r"
ip link set "$P-c" netns "$P-client"
ip link set "$P-r" netns "$P-router"
ip -n "$P-client" link set "$P-c" name eth0
ip -n "$P-router" link set "$P-r" name eth1
ip -n "$P-client" addr add 203.0.113.2/24 dev eth0
ip -n "$P-router" addr add 203.0.113.1/24 dev eth1
ip -n "$P-client" link set eth0 up
ip -n "$P-router" link set eth1 up
ip -n "$P-client" route add default via 203.0.113.1
ip netns exec "$P-router" sysctl -qw net.ipv4.ip_forward=1
for n in a b; do
    ip -n "$P-node-$n" route add default via 192.0.2.1
    # The Service IP is local on every node (what kube-proxy's IPVS dummy interface does);
    # the node never answers ARP for it (kube-proxy strictARP).
    ip -n "$P-node-$n" addr add $SVC_IP/32 dev lo
    ip netns exec "$P-node-$n" sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2
done
ok "router 192.0.2.1 / 203.0.113.1, node-a 192.0.2.11, node-b 192.0.2.12, client 203.0.113.2"

step "4. router: FRR (zebra + bgpd, AS 64500) accepting any node of 192.0.2.0/24"
# FRR drops to its own user (frr): it must write pid files and sockets in the work dir.
chown frr:frr "$WORK" && chmod 755 "$WORK"
cat >"$WORK/zebra.conf" <<EOF
hostname router
EOF
cat >"$WORK/bgpd.conf" <<EOF
hostname router
router bgp 64500
 bgp router-id 192.0.2.1
 no bgp ebgp-requires-policy
 neighbor NODES peer-group
 neighbor NODES remote-as 64512
 neighbor NODES timers 3 9
 bgp listen range 192.0.2.0/24 peer-group NODES
 address-family ipv4 unicast
  neighbor NODES activate
 exit-address-family
EOF
ip netns exec "$P-router" /usr/lib/frr/zebra -d -f "$WORK/zebra.conf" \
    -i "$WORK/zebra.pid" -z "$WORK/zserv.api" --vty_socket "$WORK" --log "file:$WORK/zebra.log" 2>>"$WORK/zebra.err"
ip netns exec "$P-router" /usr/lib/frr/bgpd -d -f "$WORK/bgpd.conf" \
    -i "$WORK/bgpd.pid" -z "$WORK/zserv.api" --vty_socket "$WORK" -p 179 --log "file:$WORK/bgpd.log"
vtysh() { ip netns exec "$P-router" vtysh --vty_socket "$WORK" -c "$1"; }
for _ in $(seq 100); do vtysh "show bgp summary" >/dev/null 2>&1 && break; sleep 0.1; done
vtysh "show bgp summary" >/dev/null 2>&1 || die "bgpd does not answer"
ok "bgpd pid $(cat "$WORK/bgpd.pid"), zebra pid $(cat "$WORK/zebra.pid")"

# ---------------------------------------------------------------------------------------
step "5. two speakers in standalone mode (one YAML file: pool, BGPPeer, BGPAdvertisement, Service)"
cat >"$WORK/cluster.yaml" <<EOF
apiVersion: edgelb.io/v1alpha1
kind: IPAddressPool
metadata: {name: demo, namespace: edgelb-system}
spec: {addresses: ["198.51.100.10-198.51.100.19"]}
---
$(peer_yaml all '{}')
---
apiVersion: v1
kind: Node
metadata: {name: node-a}
status: {addresses: [{type: InternalIP, address: "192.0.2.11"}]}
---
apiVersion: v1
kind: Node
metadata: {name: node-b}
status: {addresses: [{type: InternalIP, address: "192.0.2.12"}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec: {type: LoadBalancer, loadBalancerClass: edgelb.io/speaker, ports: [{port: 8080}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: default, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
endpoints:
  - {addresses: ["10.244.1.5"], nodeName: node-a, conditions: {ready: true}}
  - {addresses: ["10.244.2.5"], nodeName: node-b, conditions: {ready: true}}
EOF
declare -A SPK WEB
for n in a b; do
    addr=192.0.2.1$([ $n = a ] && echo 1 || echo 2)
    # The "application": a web server on the Service IP in each node.
    mkdir -p "$WORK/www-$n" && echo "hello from node-$n" >"$WORK/www-$n/index.html"
    ip netns exec "$P-node-$n" python3 -m http.server 8080 --bind $SVC_IP \
        --directory "$WORK/www-$n" >"$WORK/web-$n.log" 2>&1 &
    WEB[$n]=$!; PIDS+=("$!"); disown "$!"
    ip netns exec "$P-node-$n" env RUST_LOG=info NO_COLOR=1 "$BIN/edgelb-speaker" run \
        --node node-$n --file "$WORK/cluster.yaml" --socket "$WORK/node-$n.sock" \
        --metrics-addr $addr:7472 >"$WORK/speaker-$n.log" 2>&1 &
    SPK[$n]=$!; PIDS+=("$!"); disown "$!"
    echo "    node-$n: edgelb-speaker pid ${SPK[$n]} (socket $WORK/node-$n.sock, metrics $addr:7472)"
done

step "6. the router learns $SVC_IP/32 from both nodes"
paths() { vtysh "show bgp ipv4 unicast $SVC_IP/32 json" 2>/dev/null |
    python3 -c 'import json,sys
try: d=json.load(sys.stdin)
except Exception: d={}
ps=d.get("paths",[])
best=[p["peer"]["peerId"] for p in ps if p.get("bestpath",{}).get("overall")]
print(len(ps), best[0] if best else "-")'; }
t=$(now_ms)
for _ in $(seq 300); do
    read -r count best < <(paths)
    # FRR marks the best path a moment after the second path arrives: wait for both.
    [ "$count" = 2 ] && [ "$best" != "-" ] && break
    sleep 0.1
done
[ "$count" = 2 ] || die "router has $count paths for $SVC_IP/32 after 30 s"
[ "$best" != "-" ] || die "router has no best path for $SVC_IP/32 after 30 s"
ok "2 paths after $(($(now_ms) - t)) ms"
vtysh "show bgp ipv4 unicast" | sed 's/^/    /'

step "7. the client reaches $SVC_IP:8080 through the router"
reply=""
for _ in $(seq 50); do
    reply=$(ip netns exec "$P-client" curl -s -m 1 http://$SVC_IP:8080/ || true)
    [ -n "$reply" ] && break
    sleep 0.1
done
[ -n "$reply" ] || die "client cannot reach $SVC_IP:8080"
ok "client -> $SVC_IP:8080: \"$reply\""

step "8. edgelbctl against each node's local API"
# The view refreshes every 0.5 s: wait (bounded) until both speakers report the session up.
for n in a b; do
    for _ in $(seq 50); do
        "$BIN/edgelbctl" --socket "$WORK/node-$n.sock" peers --check >/dev/null 2>&1 && break
        sleep 0.1
    done
    "$BIN/edgelbctl" --socket "$WORK/node-$n.sock" peers --check >/dev/null || die "node-$n: peers --check"
done
ok "edgelbctl peers --check exits 0 on node-a and node-b"
for n in a b; do
    echo "${B}--- node-$n: edgelbctl status / peers / announcements${N}"
    "$BIN/edgelbctl" --socket "$WORK/node-$n.sock" status | sed 's/^/    /'
    "$BIN/edgelbctl" --socket "$WORK/node-$n.sock" peers | sed 's/^/    /'
    "$BIN/edgelbctl" --socket "$WORK/node-$n.sock" announcements -o wide | sed 's/^/    /'
done
echo "${B}--- node-a: edgelbctl explain svc/web${N}"
"$BIN/edgelbctl" --socket "$WORK/node-a.sock" explain svc/web | sed 's/^/    /'
echo "${B}--- node-a: a few metrics (curl http://192.0.2.11:7472/metrics)${N}"
ip netns exec "$P-node-a" curl -s -m 2 http://192.0.2.11:7472/metrics |
    grep -E '^edgelb_(bgp_session_up|bgp_prefixes_announced|bgp_updates_sent_total|owned_ips|pool_(size|used))' |
    sed 's/^/    /'

# ---------------------------------------------------------------------------------------
owner_ip=$best
case "$owner_ip" in
192.0.2.11) owner=a other=b ;;
192.0.2.12) owner=b other=a ;;
*) die "cannot tell the preferred path ($owner_ip)" ;;
esac
step "9. failover: node-$owner's path is the router's best; node-$owner fails (speaker and web server killed)"
# The client probes every 20 ms; the gap is from the kill to the first answer from node-$other.
(
    while true; do
        r=$(ip netns exec "$P-client" curl -s -m 0.2 http://$SVC_IP:8080/ 2>/dev/null || true)
        echo "$(now_ms) ${r:-timeout}"
        sleep 0.02
    done
) >"$WORK/probe.log" 2>&1 &
PROBE=$!; PIDS+=("$PROBE"); disown "$PROBE"
sleep 1
killed=$(now_ms)
kill -9 "${SPK[$owner]}" "${WEB[$owner]}"
echo "    killed node-$owner at $killed ms (speaker pid ${SPK[$owner]}, web pid ${WEB[$owner]})"
back=""
for _ in $(seq 200); do
    back=$(awk -v k="$killed" -v want="hello from node-$other" '$1 > k && index($0, want) {print $1; exit}' "$WORK/probe.log")
    [ -n "$back" ] && break
    sleep 0.05
done
kill "$PROBE" 2>/dev/null || true
[ -n "$back" ] || die "the client never reached node-$other within 10 s"
gap=$((back - killed))
lost=$(awk -v k="$killed" -v b="$back" '$1 > k && $1 < b' "$WORK/probe.log" | wc -l)
ok "client answered by node-$other ${B}$gap ms${N} after the kill ($lost probes failed in between)"
read -r count best < <(paths)
echo "    router now: $count path(s) for $SVC_IP/32, best via $best"
vtysh "show bgp ipv4 unicast" | sed 's/^/    /'

step "10. edgelbctl after the failover"
echo "${B}--- node-$other: peers, announcements (--check exits 0: its session is up)${N}"
"$BIN/edgelbctl" --socket "$WORK/node-$other.sock" peers --check | sed 's/^/    /'
"$BIN/edgelbctl" --socket "$WORK/node-$other.sock" announcements | sed 's/^/    /'
echo "${B}--- node-$owner: its speaker is gone${N}"
set +e
"$BIN/edgelbctl" --socket "$WORK/node-$owner.sock" status 2>&1 | sed 's/^/    /'
code=${PIPESTATUS[0]}
set -e
echo "    (edgelbctl exit code $code: 3 = speaker unreachable)"
[ "$code" = 3 ] || die "expected exit code 3 for a dead speaker, got $code"

# ---------------------------------------------------------------------------------------
# shellcheck source=deploy/demo/regions.sh
source deploy/demo/regions.sh

printf '\n%sdemo passed in %d s: failover gap %s ms; one Service in two regions (BGP %s, ELB EIP %s)%s\n' \
    "$G" "$SECONDS" "$gap" "$HEFEI_IP" "$EIP" "$N"
