#!/usr/bin/env bash
# L2 failover bench: edgelb against keepalived (VRRPv3, adverts every 0.1 s) in one run,
# with the same LAN, client and faults. Three node namespaces and a client on one bridge
# (namespaces this script creates and removes); each node serves TCP :8080 with its name.
#   edgelb:     three edgelb-speakers (standalone file, authenticated gossip), the service IP
#               192.0.2.100 on lo with kube-proxy's strictARP settings;
#   keepalived: one VRRP instance per node for 192.0.2.101 (priorities 150/100/50, preempt).
# Faults, REPS of each (default 20), on the node that serves the client at that moment:
#   kill   SIGKILL of the daemon and the listener (the node's software dies);
#   link   the node's switch port down (cable cut);
#   freeze SIGSTOP of the daemon and the listener (a hung node).
# After each fault it waits for the client to be served by another node, then heals (restart,
# port up, SIGCONT) and lets the cluster settle. The client connects every 10 ms (timeout
# 50 ms: a frozen or cut node is noticed within 60 ms of the move). Per fault and system: the gap from the fault to the first success elsewhere
# (p50/p90/p99/max) and the failed connects in it; then edgelb/keepalived ratios.
# Prints the load average with the figures and writes them to target/tmp/figures/.
# SYSTEMS="edgelb" (default "edgelb keepalived") runs only those; LAB_KEEP=1 keeps the logs.
# NODES=N (default 3, at most 9) runs N nodes on the LAN (issue 16: "the larger pools you can
# simulate"); the figures then go to l2_failover-N.txt.
# Needs root. Usage: bash bench/l2_failover.sh [REPS]   (SPEAKER=path to a built speaker)
set -euo pipefail
cd "$(dirname "$0")/.."
reps="${1:-20}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
if [ -z "${SPEAKER:-}" ]; then
  cargo build --quiet -p edgelb-daemon --bin edgelb-speaker
  SPEAKER="$CARGO_TARGET_DIR/debug/edgelb-speaker"
fi
command -v keepalived >/dev/null || { echo "keepalived is not installed (.ci/install)" >&2; exit 1; }
source bench/lib.sh
W="$LAB_DIR"
figures="$CARGO_TARGET_DIR/tmp/figures"
mkdir -p "$figures"

n_nodes="${NODES:-3}"
[ "$n_nodes" -ge 2 ] && [ "$n_nodes" -le 9 ] || { echo "NODES must be 2..9, not $n_nodes" >&2; exit 1; }
all=$(seq 0 $((n_nodes - 1)))
nodes=() addrs=()
for i in $all; do nodes+=("node-$i"); addrs+=("192.0.2.1$i"); done
client=192.0.2.50
key=bench-gossip-key-0123456789abcdef

lab_ns sw
ip -n "$LAB_TAG-sw" link add br0 type bridge
ip -n "$LAB_TAG-sw" link set br0 type bridge stp_state 0 forward_delay 0
ip -n "$LAB_TAG-sw" link set br0 up
attach() { # NAME PORT
  lab_ns "$1"
  ip -n "$LAB_TAG-$1" link add eth0 type veth peer name "$2" netns "$LAB_TAG-sw"
  ip -n "$LAB_TAG-sw" link set "$2" master br0
  ip -n "$LAB_TAG-sw" link set "$2" up
  ip -n "$LAB_TAG-$1" link set eth0 up
}
attach cl pc
ip -n "$LAB_TAG-cl" addr add "$client/24" dev eth0

cat >"$W/serve.py" <<'EOF'
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8080))
s.listen(512)
while True:
    c, _ = s.accept()
    try:
        c.sendall(sys.argv[1].encode())
    finally:
        c.close()
EOF
cat >"$W/probe.py" <<'EOF'
import socket, sys, time
ip, gap = sys.argv[1], 0.01
while True:
    t = time.time()
    try:
        c = socket.create_connection((ip, 8080), timeout=0.05)
        c.settimeout(0.05)
        name = c.recv(64).decode()
        c.close()
        print("%.6f ok %s" % (t, name) if name else "%.6f err closed" % t, flush=True)
    except Exception as e:
        print("%.6f err %s" % (t, type(e).__name__), flush=True)
    time.sleep(gap)
EOF

# The cluster file every speaker reads (the same as daemon/tests/speaker_l2.rs).
{
  echo "apiVersion: edgelb.io/v1alpha1"
  echo "kind: IPAddressPool"
  echo "metadata: {name: lan, namespace: edgelb-system}"
  echo 'spec: {addresses: ["192.0.2.100-192.0.2.100"]}'
  for i in $all; do
    echo "---"
    echo "apiVersion: v1"
    echo "kind: Node"
    echo "metadata: {name: ${nodes[$i]}}"
    echo "status: {addresses: [{type: InternalIP, address: \"${addrs[$i]}\"}]}"
  done
  cat <<'EOF'
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec: {type: LoadBalancer, loadBalancerClass: edgelb.io/speaker, loadBalancerIP: "192.0.2.100", externalTrafficPolicy: Cluster, ports: [{port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: default, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
EOF
  eps=$(for i in $all; do printf '{addresses: ["10.244.%d.%d"], nodeName: node-%d, conditions: {ready: true}}, ' $((i + 1)) $((i + 1)) "$i"; done)
  echo "endpoints: [${eps%, }]"
  cat <<'EOF'
---
apiVersion: edgelb.io/v1alpha1
kind: L2Advertisement
metadata: {name: lan, namespace: edgelb-system}
spec: {}
EOF
} >"$W/cluster.yaml"
echo "$key" >"$W/gossip.key"

for i in $all; do
  attach "${nodes[$i]}" "p$i"
  ns="$LAB_TAG-${nodes[$i]}"
  ip -n "$ns" addr add "${addrs[$i]}/24" dev eth0
  for dev in all eth0; do
    ip netns exec "$ns" sysctl -qw "net.ipv4.conf.$dev.arp_ignore=1" "net.ipv4.conf.$dev.arp_announce=2"
  done
  ip -n "$ns" addr add 192.0.2.100/32 dev lo
  peers=$(for j in $all; do [ "$j" = "$i" ] || printf '%s:7946,' "${addrs[$j]}"; done)
  cat >"$W/keepalived-$i.conf" <<EOF
global_defs {
  router_id ${nodes[$i]}
  vrrp_version 3
}
vrrp_instance web {
  state BACKUP
  interface eth0
  virtual_router_id 51
  priority $(if [ "$n_nodes" -le 3 ]; then echo $((150 - 50 * i)); else echo $((150 - 15 * i)); fi)
  advert_int 0.1
  virtual_ipaddress {
    192.0.2.101/24 dev eth0
  }
}
EOF
  echo "${peers%,}" >"$W/peers-$i"
done

declare -A daemon listener
start_listener() { # I
  ip netns exec "$LAB_TAG-${nodes[$1]}" python3 "$W/serve.py" "${nodes[$1]}" >/dev/null 2>&1 &
  listener[$1]=$!
  LAB_PIDS+=("$!")
}
start_daemon() { # SYSTEM I
  local ns="$LAB_TAG-${nodes[$2]}"
  if [ "$1" = edgelb ]; then
    ip netns exec "$ns" env RUST_LOG=info "$SPEAKER" run --node "${nodes[$2]}" \
      --file "$W/cluster.yaml" --socket "$W/speaker-$2.sock" \
      --member-addr "${addrs[$2]}:7946" --member-peers "$(cat "$W/peers-$2")" \
      --member-key-file "$W/gossip.key" >>"$W/speaker-$2.log" 2>&1 &
  else
    rm -f "$W/ka-$2.pid" "$W/ka-vrrp-$2.pid"
    ip netns exec "$ns" keepalived -n -l -D -P -f "$W/keepalived-$2.conf" \
      -p "$W/ka-$2.pid" -r "$W/ka-vrrp-$2.pid" >>"$W/keepalived-$2.log" 2>&1 &
  fi
  daemon[$2]=$!
  LAB_PIDS+=("$!")
}
stop_all() { # SYSTEM
  for i in $all; do
    # shellcheck disable=SC2046
    kill -9 $(pids_of "$1" "$i") 2>/dev/null || true
    wait "${daemon[$i]:-0}" "${listener[$i]:-0}" 2>/dev/null || true
    ip -n "$LAB_TAG-${nodes[$i]}" addr del 192.0.2.101/24 dev eth0 2>/dev/null || true
  done
}

# pids_of SYSTEM I: the processes that make node I's daemon (keepalived: parent and its VRRP
# child, which sends the adverts) and its listener.
pids_of() {
  local p="${daemon[$2]} ${listener[$2]}"
  if [ "$1" = keepalived ] && [ -s "$W/ka-vrrp-$2.pid" ]; then p="$p $(cat "$W/ka-vrrp-$2.pid")"; fi
  echo "$p"
}

# served_by LOG: the name in the last successful line.
served_by() { grep " ok " "$1" | tail -1 | awk '{print $3}' || true; }
index_of() { for i in $all; do if [ "${nodes[$i]}" = "$1" ]; then echo "$i"; fi; done; }

# run SYSTEM VIP: REPS of each fault; appends "system fault gap_ms failed" lines to results.
run() {
  local sys="$1" vip="$2" probe_log="$W/probe-$1.log"
  for i in $all; do start_listener "$i"; start_daemon "$sys" "$i"; done
  ip netns exec "$LAB_TAG-cl" python3 "$W/probe.py" "$vip" >"$probe_log" 2>&1 &
  local probe=$!
  LAB_PIDS+=("$probe")
  for _ in $(seq 150); do [ -n "$(served_by "$probe_log")" ] && break; sleep 0.1; done
  sleep 3
  for fault in kill link freeze; do
    for rep in $(seq "$reps"); do
      local victim v t0
      victim=$(served_by "$probe_log")
      v=$(index_of "$victim")
      [ -n "$v" ] || { echo "no node serves $vip" >&2; tail -5 "$probe_log" >&2; exit 1; }
      t0=$(date +%s.%N)
      case $fault in
        # shellcheck disable=SC2046
        kill) kill -9 $(pids_of "$sys" "$v") ;;
        link) ip -n "$LAB_TAG-sw" link set "p$v" down ;;
        # shellcheck disable=SC2046
        freeze) kill -STOP $(pids_of "$sys" "$v") ;;
      esac
      local back=""
      for _ in $(seq 100); do
        back=$(awk -v t0="$t0" -v me="$victim" '$1 > t0 && $2 == "ok" && $3 != me { print $1; exit }' "$probe_log")
        [ -n "$back" ] && break
        sleep 0.05
      done
      local failed
      failed=$(awk -v t0="$t0" -v t1="${back:-9e18}" '$1 > t0 && $1 < t1 && $2 == "err"' "$probe_log" | wc -l)
      if [ -n "$back" ]; then
        echo "$sys $fault $(awk -v a="$t0" -v b="$back" 'BEGIN { printf "%.0f", (b - a) * 1000 }') $failed" >>"$W/results"
      else
        echo "$sys $fault 5000 $failed" >>"$W/results"
      fi
      local frozen
      frozen=$(pids_of "$sys" "$v")
      case $fault in
        kill)
          wait "${daemon[$v]}" "${listener[$v]}" 2>/dev/null || true
          # keepalived killed leaves its address behind; a restarted node starts clean.
          ip -n "$LAB_TAG-${nodes[$v]}" addr del 192.0.2.101/24 dev eth0 2>/dev/null || true
          start_listener "$v"; start_daemon "$sys" "$v" ;;
        link) ip -n "$LAB_TAG-sw" link set "p$v" up ;;
        # shellcheck disable=SC2086
        freeze) kill -CONT $frozen ;;
      esac
      sleep 3
    done
  done
  kill "$probe" 2>/dev/null || true
  stop_all "$sys"
}

load() { cut -d' ' -f1-3 /proc/loadavg; }
: >"$W/results"
echo "== L2 failover, $n_nodes nodes, $reps of each fault, speaker $SPEAKER, load average before: $(load)"
for sys in ${SYSTEMS:-edgelb keepalived}; do
  case $sys in
    edgelb) run edgelb 192.0.2.100 ;;
    keepalived) run keepalived 192.0.2.101 ;;
    *) echo "unknown system $sys (SYSTEMS: edgelb keepalived)" >&2; exit 1 ;;
  esac
  echo "$sys done, load average $(load)"
done
cp "$W/results" "$figures/l2_failover-reps.txt" # one line per fault: system fault gap_ms failed

out="$figures/l2_failover.txt"
[ "$n_nodes" = 3 ] || out="$figures/l2_failover-$n_nodes.txt"
python3 - "$W/results" "$reps" "$(load)" "$n_nodes" >"$out" <<'EOF'
import sys
rows = [l.split() for l in open(sys.argv[1])]
def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, round((len(v) - 1) * p))]
print("L2 failover bench: %s nodes, %s of each fault, client every 10 ms; load average after: %s" % (sys.argv[4], sys.argv[2], sys.argv[3]))
print("%-10s %-7s %6s %6s %6s %6s  %s" % ("system", "fault", "p50", "p90", "p99", "max", "failed connects (p50/max/total)"))
stats = {}
for system in ("edgelb", "keepalived"):
    for fault in ("kill", "link", "freeze"):
        gaps = [int(r[2]) for r in rows if r[0] == system and r[1] == fault]
        failed = [int(r[3]) for r in rows if r[0] == system and r[1] == fault]
        if not gaps:
            continue
        s = [pct(gaps, p) for p in (0.5, 0.9, 0.99)] + [max(gaps)]
        stats[(system, fault)] = s
        print("%-10s %-7s %5dms %5dms %5dms %5dms  %d/%d/%d" % (system, fault, *s, pct(failed, 0.5), max(failed), sum(failed)))
for fault in ("kill", "link", "freeze"):
    e, k = stats.get(("edgelb", fault)), stats.get(("keepalived", fault))
    if e and k:
        print("ratio edgelb/keepalived %-7s p50 %.2f  p99 %.2f  max %.2f" % (fault, e[0] / k[0], e[2] / k[2], e[3] / k[3]))
EOF
cat "$out"
