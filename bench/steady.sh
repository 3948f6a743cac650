#!/usr/bin/env bash
# Steady-state benchmark of the speaker (issue 17): how long until N Services are announced
# at a real router, and what the speaker costs afterwards, at rest.
#
# Standalone mode: one YAML file (bench/services.py: one /16 pool, one BGPPeer, one
# BGPAdvertisement, node-a, N LoadBalancer Services each with a ready EndpointSlice), the
# speaker in namespace "node" (192.0.2.11, AS 64512) opening a session to FRR bgpd in
# namespace "router" (192.0.2.1, AS 64500) over one veth. Per N it prints one line:
#
#   mode N  start->all  rest-cpu/min  rest-%core  rss  peak-rss | frr-rest-cpu/min  frr-rss
#
# start->all: from just before the speaker is started to FRR holding all N /32 (polled
#   every 50 ms with vtysh, so ~50 ms of resolution); this is also issue 13's "end-to-end
#   speaker (N Services in a file -> all /32 at FRR)" figure.
# rest: after all are announced and SETTLE seconds more, the speaker's CPU time
#   (utime+stime from /proc/PID/stat, 10 ms ticks) over REST seconds with nothing changing
#   and nobody polling either process; given per minute and as % of one core.
# rss: VmRSS at the end of the rest window; peak-rss: VmHWM; the line below each gives
#   the resident memory by mapping (heap, other anonymous, file pages, stack).
# N = 0 is the speaker's own baseline (no Services): `bench/steady.sh 0 10000`.
# Baseline, same run and same window: FRR bgpd's own CPU at rest and its RSS (it holds the
#   same N routes). The header prints the load average: other work on the machine skews
#   CPU and wall times; compare lines of one invocation.
#
# Cluster mode (CLUSTER=1, after the standalone lines): per N, tests/benches/cluster_scale.rs
#   with STEADY=N: 3 speakers deployed as shipped on a real kube-apiserver (tests/src/kube),
#   N Services with a ready EndpointSlice each created through the API server, then each
#   speaker's CPU per minute and RSS over REST seconds at rest, beside the same speakers'
#   figures with 0 Services measured before the creates (the baseline). Lines start with
#   "cluster-steady"; also in target/tmp/figures/cluster_scale.txt. The pool is announced
#   as ADVERTISE says (default l2: one L2Advertisement; bgp: the standalone half's scenario,
#   FRR bgpd in a namespace on the LAN with one BGPPeer for all three speakers and one
#   BGPAdvertisement, and the line adds the time from the last create to all N /32 at
#   FRR from each speaker, and bgpd's CPU at rest and RSS beside its 0-route baseline).
#
# Usage: bench/steady.sh [N ...]    (default: 1000 10000 50000; root; N <= 65536)
# Env:   SPEAKER=path/to/edgelb-speaker (default: target/release, else target/debug)
#        REST=60 (seconds at rest)  SETTLE=5  RUN_TIMEOUT=300 (seconds to all announced)
#        CLUSTER=1: also the cluster-mode half (builds the bench with cargo, profile dev)
#        ADVERTISE=l2|bgp|none: how the cluster-mode half announces (passed to the bench)
#        GOALS=1: exit 1 when a goal of issue 17 is missed at N = 10000 (rest <= 1 % of
#        a core, RSS <= 48 MiB); off by default (CI runs small N on a loaded machine).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
# shellcheck source=bench/lib.sh
. "$here/lib.sh"

NS=("$@")
[ "${#NS[@]}" -gt 0 ] || NS=(1000 10000 50000)
REST=${REST:-60}
SETTLE=${SETTLE:-5}
RUN_TIMEOUT=${RUN_TIMEOUT:-300}
GOALS=${GOALS:-0}
target=${CARGO_TARGET_DIR:-$repo/target}
SPEAKER=${SPEAKER:-}
if [ -z "$SPEAKER" ]; then
  for p in "$target/release/edgelb-speaker" "$target/debug/edgelb-speaker"; do
    if [ -x "$p" ]; then SPEAKER=$p; break; fi
  done
fi
[ -n "$SPEAKER" ] && [ -x "$SPEAKER" ] ||
  die "no edgelb-speaker binary: cargo build --release -p edgelb-daemon (or set SPEAKER)"
RUN=0
MISSED=0

# pfx_rcd NAME: prefixes FRR router NAME holds from 192.0.2.11 (0 before Established).
pfx_rcd() {
  local out state count
  out=$(vty "$1" "show bgp ipv4 unicast summary json" 2>/dev/null) || { echo 0; return; }
  state=$(grep -o '"state":"[A-Za-z]*"' <<<"$out" | head -1 | cut -d'"' -f4)
  count=$(grep -o '"pfxRcd":[0-9]*' <<<"$out" | head -1 | cut -d: -f2)
  if [ "$state" = Established ]; then echo "${count:-0}"; else echo 0; fi
}

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# smaps_line PID: where the resident memory is, from /proc/PID/smaps: the main heap
# ([heap]), other anonymous mappings (malloc's thread arenas, large allocations, thread
# stacks), the binary's and libraries' file pages, the main [stack].
smaps_line() {
  awk '
    /^[0-9a-f]+-[0-9a-f]+ / { name = (NF >= 6) ? $6 : ""; kind = "anon"
      if (name == "[heap]") kind = "heap"; else if (name == "[stack]") kind = "stack"
      else if (name ~ /^\//) kind = "file" }
    /^Rss:/ { kib[kind] += $2 }
    END { printf "  memory map: heap %.1f MiB, other anon %.1f MiB, file %.1f MiB, stack %.1f MiB\n",
      kib["heap"] / 1024, kib["anon"] / 1024, kib["file"] / 1024, kib["stack"] / 1024 }' "/proc/$1/smaps"
}

run_standalone() {
  local n=$1 r d spk t0 t_all got cpu0 cpu1 f0 f1 rss hwm frss
  RUN=$((RUN + 1))
  r="r$RUN"; d="$LAB_DIR/$r"
  mkdir -p "$d" "$LAB_DIR/spk$RUN"
  lab_ns "router$RUN"; lab_ns "node$RUN"
  lab_link "router$RUN" eth0 "node$RUN" eth0
  lab_addr "router$RUN" eth0 192.0.2.1/24
  lab_addr "node$RUN" eth0 192.0.2.11/24
  cat >"$d/bgpd.conf" <<EOF
frr defaults traditional
hostname router
router bgp 64500
 bgp router-id 192.0.2.1
 no bgp ebgp-requires-policy
 neighbor 192.0.2.11 remote-as 64512
 neighbor 192.0.2.11 timers connect 1
EOF
  frr_start "$r" "router$RUN"
  local frr_pid
  frr_pid=$(cat "$d/bgpd.pid")
  python3 "$here/services.py" yaml "$n" node-a 192.0.2.11 >"$LAB_DIR/spk$RUN/cluster.yaml"

  t0=$(now_ms)
  ip netns exec "${LAB_TAG}-node$RUN" env RUST_LOG=warn ${SPEAKER_ENV:-} "$SPEAKER" run --node node-a \
    --file "$LAB_DIR/spk$RUN/cluster.yaml" --socket "$LAB_DIR/spk$RUN/speaker.sock" \
    --node-address 192.0.2.11 >"$LAB_DIR/spk$RUN/speaker.log" 2>&1 &
  spk=$!
  LAB_PIDS+=("$spk")
  got=0
  until [ "$got" -ge "$n" ]; do
    if ! kill -0 "$spk" 2>/dev/null; then
      cat "$LAB_DIR/spk$RUN/speaker.log" >&2
      die "the speaker exited"
    fi
    [ $(( $(now_ms) - t0 )) -ge $((RUN_TIMEOUT * 1000)) ] &&
      die "N=$n: FRR holds $got of $n prefixes after ${RUN_TIMEOUT}s"
    sleep 0.05
    got=$(pfx_rcd "$r")
  done
  t_all=$(now_ms)

  sleep "$SETTLE"
  cpu0=$(cpu_ms "$spk"); f0=$(cpu_ms "$frr_pid")
  sleep "$REST"
  cpu1=$(cpu_ms "$spk"); f1=$(cpu_ms "$frr_pid")
  rss=$(rss_kib "$spk"); hwm=$(peak_rss_kib "$spk"); frss=$(rss_kib "$frr_pid")
  got=$(pfx_rcd "$r")
  [ "$got" -eq "$n" ] || die "N=$n: FRR holds $got of $n prefixes after the rest window"

  awk -v n="$n" -v t="$((t_all - t0))" -v c="$((cpu1 - cpu0))" -v f="$((f1 - f0))" \
    -v rest="$REST" -v rss="$rss" -v hwm="$hwm" -v frss="$frss" 'BEGIN {
      printf "%-10s %6d  %8.3f s  %8.0f ms  %6.2f %%  %6.1f MiB  %6.1f MiB | %8.0f ms  %6.1f MiB\n",
        "standalone", n, t / 1000, c * 60 / rest, c / (rest * 10), rss / 1024, hwm / 1024,
        f * 60 / rest, frss / 1024 }'
  smaps_line "$spk"
  if [ "$n" -eq 10000 ]; then
    printf 'issue 13 figure: end-to-end speaker (%d Services in a file -> all /32 at FRR): %d ms\n' \
      "$n" "$((t_all - t0))"
    if [ "$GOALS" = 1 ]; then
      # Goals of issue 17 at 10 000 Services: rest <= 1 % of a core, RSS <= 48 MiB.
      [ $(( (cpu1 - cpu0) * 100 )) -le $((REST * 1000)) ] || { echo "GOAL MISSED: rest CPU"; MISSED=1; }
      [ "$rss" -le $((48 * 1024)) ] || { echo "GOAL MISSED: RSS"; MISSED=1; }
    fi
  fi
  teardown
}

teardown() {
  local pid ns
  for pid in "${LAB_PIDS[@]}"; do
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    rm -rf "/var/tmp/frr/bgpd.$pid"
  done
  for ns in "${LAB_NS[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
  LAB_PIDS=(); LAB_NS=()
}

echo "# steady: $SPEAKER ($(stat -c %y "$SPEAKER" | cut -d. -f1)), $(/usr/lib/frr/bgpd --version | head -1), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg), rest ${REST}s, $(date -u +%FT%TZ)"
printf '%-10s %6s  %10s  %11s  %8s  %10s  %10s | %11s  %10s\n' mode N start-\>all rest-cpu/min \
  rest-core rss peak-rss frr-cpu/min frr-rss
for n in "${NS[@]}"; do
  [ "$n" -le 65536 ] || die "N=$n: at most 65536 Services fit in the /16 pool"
  run_standalone "$n"
done
if [ "${CLUSTER:-0}" = 1 ]; then
  for n in "${NS[@]}"; do
    (cd "$repo" && SIZES= STEADY="$n" REST="$REST" SETTLE="$SETTLE" EDGELB_SPEAKER="$SPEAKER" \
      cargo bench -q -p edgelb-tests --bench cluster_scale --profile dev) | grep -E '^cluster-'
  done
fi
echo "# load at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
exit "$MISSED"
