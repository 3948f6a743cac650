#!/usr/bin/env bash
# Benchmark of the L2 announcer (edgelb-l2), in network namespaces this script creates:
#   1. 1 000 owned addresses (500 IPv4 by gratuitous ARP, 500 IPv6 by unsolicited NA):
#      time from set_owned to the last *first* announcement seen on the client's wire;
#   2. ARP reply latency for an owned address (answered by the announcer) against the
#      kernel's own reply for an address configured on the interface, interleaved in the
#      same run; prints both medians and the ratio.
# Needs root. Touches only its own namespaces (elbbench<pid>-*), which it removes on exit.
# Usage: bash bench/l2.sh [ARP_ROUNDS]   (default 2000)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-2000}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release --quiet -p edgelb-l2 --examples
bin="$CARGO_TARGET_DIR/release/examples"

p="elbbench$$"
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for n in sw node client; do ip netns del "$p-$n" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

for n in sw node client; do ip netns add "$p-$n"; ip -n "$p-$n" link set lo up; done
ip -n "$p-sw" link add br0 type bridge
ip -n "$p-sw" link set br0 type bridge stp_state 0 forward_delay 0
ip -n "$p-sw" link set br0 up
i=0
for n in node client; do
  ip -n "$p-$n" link add eth0 type veth peer name "p$i" netns "$p-sw"
  ip -n "$p-sw" link set "p$i" master br0
  ip -n "$p-sw" link set "p$i" up
  ip -n "$p-$n" link set eth0 up
  i=$((i + 1))
done
ip -n "$p-node" addr add 192.0.2.1/24 dev eth0        # the kernel answers ARP for this one
ip -n "$p-client" addr add 192.0.2.10/24 dev eth0
ip -n "$p-node" addr add 2001:db8::1/64 dev eth0 nodad
ip -n "$p-client" addr add 2001:db8::10/64 dev eth0 nodad
ips=()
for x in $(seq 1 250); do ips+=("198.51.100.$x" "203.0.113.$x"); done
for x in $(seq 1 500); do ips+=("2001:db8:1::$(printf '%x' "$x")"); done
state="eth0=$(IFS=,; echo "${ips[*]}")"

# Capture on the client's side of the LAN, with a large buffer so nothing is dropped.
ip netns exec "$p-client" tcpdump -i eth0 -n -tt -l -U -B 16384 'arp or icmp6' \
  >"$work/cap.txt" 2>"$work/cap.err" &
pids+=($!)
for _ in $(seq 100); do grep -q "listening on" "$work/cap.err" 2>/dev/null && break; sleep 0.05; done

mkfifo "$work/in"
ip netns exec "$p-node" "$bin/announce" <"$work/in" >"$work/announce.log" 2>"$work/announce.err" &
pids+=($!)
exec 3>"$work/in"
for _ in $(seq 100); do grep -q ready "$work/announce.log" && break; sleep 0.05; done

echo "own $state" >&3
for _ in $(seq 200); do grep -q '^applied' "$work/announce.log" && break; sleep 0.05; done
sleep 1.5
echo stats >&3
for _ in $(seq 200); do grep -q '^end' "$work/announce.log" && break; sleep 0.05; done

read -r _ set_at done_at errs < <(grep '^applied' "$work/announce.log")
echo "== 1 000 owned addresses (500 IPv4 + 500 IPv6) =="
echo "set_owned returned after $(awk -v a="$set_at" -v b="$done_at" 'BEGIN{printf "%.1f", (b-a)*1e3}') ms ($errs)"
grep '^error' "$work/announce.log" | head -5 || true
# First announcement per address on the wire: GARP request form or unsolicited NA.
awk -v t0="$set_at" '
  /Request who-has/ { t = $7; sub(/,$/, "", t);
      if ($5 == t && !(t in seen)) { seen[t] = $1; last = ($1 > last ? $1 : last) } }
  /neighbor advertisement, tgt is/ {
      for (i = 1; i <= NF; i++) if ($i == "is") ip = $(i + 1); sub(/,$/, "", ip);
      if (!(ip in seen)) { seen[ip] = $1; last = ($1 > last ? $1 : last) } }
  END {
    n = 0; first = 0; for (k in seen) { n++; if (first == 0 || seen[k] < first) first = seen[k] }
    printf "addresses announced on the wire: %d\n", n
    printf "set_owned -> first announcement on the wire: %.1f ms\n", (first - t0) * 1e3
    printf "set_owned -> last first-announcement on the wire: %.1f ms\n", (last - t0) * 1e3
  }' "$work/cap.txt"
awk -v t0="$set_at" '/^ip / { for (i = 1; i <= NF; i++) if ($i ~ /^first=/) { v = substr($i, 7); if (v != "-" && v > m) m = v } }
  END { printf "set_owned -> last first_announced (announcer stats): %.1f ms\n", (m - t0) * 1e3 }' "$work/announce.log"

echo "== ARP reply latency, $rounds rounds interleaved =="
out=$(ip netns exec "$p-client" "$bin/lab_tool" arp-rtt eth0 192.0.2.10 "$rounds" 192.0.2.1 198.51.100.1)
echo "$out" | sed 's/^rtt 192.0.2.1 /kernel    (192.0.2.1 on eth0)   /; s/^rtt 198.51.100.1 /announcer (198.51.100.1 owned)  /'
k=$(echo "$out" | awk '$2 == "192.0.2.1" { for (i = 1; i <= NF; i++) if ($i ~ /^median_us=/) print substr($i, 11) }')
a=$(echo "$out" | awk '$2 == "198.51.100.1" { for (i = 1; i <= NF; i++) if ($i ~ /^median_us=/) print substr($i, 11) }')
awk -v a="$a" -v k="$k" 'BEGIN { printf "ratio announcer/kernel (median): %.2f\n", a / k }'

exec 3>&-
tail -n 3 "$work/cap.err" | grep -i dropped || true
