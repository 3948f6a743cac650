#!/usr/bin/env bash
# Announce benchmark: how fast does a speaker get N /32 prefixes into a real router, and at
# what cost? For each N, receiver and announcer, in fresh namespaces (announcer 192.0.2.2
# AS 65002 --eBGP-- receiver 192.0.2.1 AS 65001, one veth), it prints one line:
#
#   announcer receiver N  est->99%  est->all  announcer-cpu(run) announcer-cpu(total) announcer-peak-rss
#   receiver-cpu(run)
#
# est->all: from session Established (as the receiver reports it) to the receiver holding
# all N prefixes from the announcer (est->99%: 99 % of them; BIRD 2.0.12 sends its last
# partial UPDATE and End-of-RIB about 3 s after the rest). cpu(run): CPU time (utime+stime, /proc/PID/stat) spent
# from just before the receiver starts (the announcer idles until then) to all-received,
# the receiver's from its start (so it includes its start-up); cpu(total) includes start-up and loading the routes
# (BIRD parses N static routes, GoBGP takes an MRT inject). Peak RSS is VmHWM.
#
# Usage: bench/announce.sh [N ...]            (default: 10000 100000; root; N <= 131072)
# Env:   ANNOUNCERS="bird gobgp edgelb"  RECEIVERS="frr bird"  RUN_TIMEOUT=180 (seconds)
#        REPEAT=1 (runs per combination). Wall times suffer when other work shares the CPUs:
#        the header prints the load average; compare announcers within one invocation.
#
# Adding an announcer: write announce_<name> (start it in namespace "$1" so that it
# announces N prefixes from 198.18.0.0/32 upwards to 192.0.2.1 AS 65001 as AS 65002,
# router id 192.0.2.2, and set ANN_PID to its pid). The prefixes must be fully loaded before
# the session comes up (or the time to load them is part of what is measured: say so).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
# shellcheck source=bench/lib.sh
. "$here/lib.sh"

NS=("$@")
[ "${#NS[@]}" -gt 0 ] || NS=(10000 100000)
ANNOUNCERS=${ANNOUNCERS:-bird gobgp edgelb}
RECEIVERS=${RECEIVERS:-frr bird}
RUN_TIMEOUT=${RUN_TIMEOUT:-180}
REPEAT=${REPEAT:-1}
RUN=0
ANN_PID=""
RCV_PID=""

# ---- announcers ------------------------------------------------------------------------

announce_bird() {
  local ns=$1 n=$2 d="$LAB_DIR/ann$RUN"
  mkdir -p "$d"
  {
    echo "router id 192.0.2.2;"
    echo "log stderr { warning, error, fatal };"
    echo "protocol device {}"
    echo "protocol static bench { ipv4;"
    python3 "$here/prefixes.py" bird-static "$n"
    echo "}"
    echo "protocol bgp rcv { local as 65002; neighbor 192.0.2.1 as 65001;"
    echo "  connect delay time 1; connect retry time 1; ipv4 { import none; export all; }; }"
  } >"$d/bird.conf"
  bird_start "ann$RUN" "$ns"
  ANN_PID=$(cat "$d/bird.pid")
  # The static routes are in BIRD's table once it answers; nothing else to wait for.
}

announce_gobgp() {
  local ns=$1 n=$2 d="$LAB_DIR/ann$RUN" loaded=0 try
  mkdir -p "$d"
  cat >"$d/gobgpd.toml" <<EOF
[global.config]
  as = 65002
  router-id = "192.0.2.2"
[[neighbors]]
  [neighbors.config]
    neighbor-address = "192.0.2.1"
    peer-as = 65001
  [neighbors.transport.config]
    passive-mode = true
EOF
  gobgp_start "ann$RUN" "$ns"
  eval "ANN_PID=\$PID_ann$RUN"
  # `gobgp mrt inject` in 3.10 drops the end of a file now and then: inject, count, and
  # inject the tail again (re-adding a present path changes nothing) until all are there.
  for try in 1 2 3 4 5; do
    python3 "$here/prefixes.py" mrt "$n" 192.0.2.2 "$d/routes.mrt" "$(( loaded > 4096 ? loaded - 4096 : 0 ))"
    gocl "ann$RUN" mrt inject global "$d/routes.mrt"
    loaded=$(gocl "ann$RUN" global rib summary -a ipv4 | sed -n 's/.*Destination: \([0-9]*\).*/\1/p')
    [ "$loaded" -ge "$n" ] && break
    echo "  (gobgp: $loaded of $n loaded after inject $try, injecting the tail again)" >&2
  done
  [ "$loaded" -eq "$n" ] || die "gobgp holds $loaded prefixes, not $n"
}

# Hook for our own speaker: the `announce` example of edgelb-bgp (bgp/examples/announce.rs;
# build it with `cargo build --release -p edgelb-bgp --example announce`), or any binary
# given as $EDGELB_ANNOUNCE or found as `edgelb-bgp-announce` on PATH, called as
#   BIN --local-as 65002 --remote-as 65001 --peer 192.0.2.1 --router-id 192.0.2.2 \
#       --count N --base 198.18.0.0 --connect-retry 1
# inside the announcer namespace; it announces N consecutive /32 from --base and stays up
# until SIGTERM. Without a binary the run prints "edgelb: not built yet" and is skipped.
find_edgelb() {
  local p
  for p in "${EDGELB_ANNOUNCE:-}" "$(command -v edgelb-bgp-announce || true)" \
    "${CARGO_TARGET_DIR:-/nonexistent}/release/examples/announce" \
    "$repo/target/release/examples/announce"; do
    if [ -n "$p" ] && [ -x "$p" ]; then echo "$p"; return 0; fi
  done
  return 1
}

announce_edgelb() {
  local ns=$1 n=$2 bin d="$LAB_DIR/ann$RUN"
  bin=$(find_edgelb) || { echo "edgelb: not built yet"; return 2; }
  mkdir -p "$d"
  ip netns exec "${LAB_TAG}-$ns" "$bin" --local-as 65002 --remote-as 65001 --peer 192.0.2.1 \
    --router-id 192.0.2.2 --count "$n" --base 198.18.0.0 --connect-retry 1 \
    >"$d/edgelb.log" 2>&1 &
  ANN_PID=$!
  LAB_PIDS+=("$ANN_PID")
  # Let it build its table before the receiver exists (it cannot connect until then).
  sleep 1
  kill -0 "$ANN_PID" 2>/dev/null || { cat "$d/edgelb.log" >&2; die "edgelb announce exited"; }
}

# ---- receivers: start, then "rcv_<name>_poll" prints "STATE COUNT EST_MS" --------------

receive_frr() {
  local ns=$1 d="$LAB_DIR/rcv$RUN"
  mkdir -p "$d"
  cat >"$d/bgpd.conf" <<EOF
frr defaults traditional
hostname rcv
log timestamp precision 3
router bgp 65001
 bgp router-id 192.0.2.1
 bgp log-neighbor-changes
 no bgp ebgp-requires-policy
 neighbor 192.0.2.2 remote-as 65002
 neighbor 192.0.2.2 timers connect 1
EOF
  frr_start "rcv$RUN" "$ns"
  RCV_PID=$(cat "$d/bgpd.pid")
}

# FRR logs "%ADJCHANGE: neighbor ... Up" with a millisecond timestamp (its JSON uptime is
# in whole seconds): that line is the Established time.
poll_frr() {
  local out state count line est=0
  out=$(vty "rcv$RUN" "show bgp ipv4 unicast summary json" 2>/dev/null) || { echo "none 0 0"; return; }
  state=$(grep -o '"state":"[A-Za-z]*"' <<<"$out" | head -1 | cut -d'"' -f4)
  count=$(grep -o '"pfxRcd":[0-9]*' <<<"$out" | head -1 | cut -d: -f2)
  if [ "$state" = Established ]; then
    line=$(grep -a 'ADJCHANGE: neighbor 192.0.2.2.* Up' "$LAB_DIR/rcv$RUN/bgpd.log" | tail -1)
    est=$(date -d "$(awk '{gsub("/", "-", $1); print $1, $2}' <<<"$line")" +%s%3N 2>/dev/null || echo 0)
  fi
  echo "${state:-none} ${count:-0} $est"
}

receive_bird() {
  local ns=$1 d="$LAB_DIR/rcv$RUN"
  mkdir -p "$d"
  cat >"$d/bird.conf" <<EOF
router id 192.0.2.1;
log stderr { warning, error, fatal };
protocol device {}
protocol bgp ann { local as 65001; neighbor 192.0.2.2 as 65002;
  connect delay time 1; connect retry time 1; ipv4 { import all; export none; }; }
EOF
  bird_start "rcv$RUN" "$ns"
  RCV_PID=$(cat "$d/bird.pid")
}

# BIRD prints when the protocol came up (HH:MM:SS.mmm today) and "Routes: N imported".
poll_bird() {
  local out state count since est
  out=$(birdcl "rcv$RUN" show protocols all ann 2>/dev/null) || { echo "none 0 0"; return; }
  state=$(sed -n 's/^ *BGP state: *\([A-Za-z]*\).*/\1/p' <<<"$out" | head -1)
  count=$(sed -n 's/^ *Routes: *\([0-9]*\) imported.*/\1/p' <<<"$out" | head -1)
  since=$(awk '$1 == "ann" {print $5}' <<<"$out")
  est=$(date -d "today $since" +%s%3N 2>/dev/null || echo 0)
  echo "${state:-none} ${count:-0} $est"
}

# ---- one run ---------------------------------------------------------------------------

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

run() {
  local ann=$1 rcv=$2 n=$3 rc=0
  RUN=$((RUN + 1))
  ANN_PID=""; RCV_PID=""
  lab_ns "a$RUN"; lab_ns "r$RUN"
  lab_link "a$RUN" eth0 "r$RUN" eth0
  lab_addr "a$RUN" eth0 192.0.2.2/24
  lab_addr "r$RUN" eth0 192.0.2.1/24
  "announce_$ann" "a$RUN" "$n" || rc=$?
  if [ "$rc" -ne 0 ]; then
    printf '%-7s %-5s %7d  skipped\n' "$ann" "$rcv" "$n"
    teardown
    return 0
  fi
  # The announcer is idle until the receiver exists: its CPU from here on is the session.
  local cpu_ann_est cpu_rcv_est=0 t_start state count est t_obs="" t99="" seen_est=0
  cpu_ann_est=$(cpu_ms "$ANN_PID")
  "receive_$rcv" "r$RUN"
  t_start=$SECONDS
  while :; do
    read -r state count est < <("poll_$rcv")
    if [ "$state" = Established ] && [ "$seen_est" = 0 ]; then
      seen_est=1
      t_obs=$(now_ms)
    fi
    if [ -z "$t99" ] && [ "$state" = Established ] && [ "${count:-0}" -ge $((n * 99 / 100)) ]; then
      t99=$(now_ms)
    fi
    if [ "$state" = Established ] && [ "${count:-0}" -ge "$n" ]; then break; fi
    if [ $((SECONDS - t_start)) -ge "$RUN_TIMEOUT" ]; then
      printf '%-7s %-5s %7d  TIMEOUT after %ss (state %s, %s prefixes)\n' "$ann" "$rcv" "$n" \
        "$RUN_TIMEOUT" "$state" "$count"
      teardown
      return 0
    fi
    sleep 0.05
  done
  local done_ms cpu_ann cpu_rcv rss
  done_ms=$(now_ms)
  cpu_ann=$(cpu_ms "$ANN_PID"); cpu_rcv=$(cpu_ms "$RCV_PID")
  rss=$(peak_rss_kib "$ANN_PID")
  # Both the receiver's own account (FRR's is whole seconds) and our first sighting are
  # upper bounds of the moment the session came up: take the earlier.
  [ "$est" -gt 0 ] && [ "$est" -lt "$t_obs" ] && t_obs=$est
  awk -v ann="$ann" -v rcv="$rcv" -v n="$n" -v t="$((done_ms - t_obs))" -v t99="$((t99 - t_obs))" \
    -v ca="$((cpu_ann - cpu_ann_est))" -v cat="$cpu_ann" -v rss="$rss" \
    -v cr="$((cpu_rcv - cpu_rcv_est))" 'BEGIN {
      printf "%-7s %-5s %7d  %7.3f s  %7.3f s  %7.3f s  %9.3f s  %7d KiB  %7.3f s\n",
        ann, rcv, n, t99 / 1000, t / 1000, ca / 1000, cat / 1000, rss, cr / 1000 }'
  teardown
}

echo "# $(/usr/lib/frr/bgpd --version | head -1), $(bird --version 2>&1), gobgp $(gobgpd --version | awk '{print $3}'), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%FT%TZ)"
printf '%-7s %-5s %7s  %9s  %9s  %9s  %11s  %11s  %9s\n' announcer rcv N "est->99%" "est->all" "ann-cpu" \
  "ann-cpu-tot" "ann-peakRSS" "rcv-cpu"
for n in "${NS[@]}"; do
  for rcv in $RECEIVERS; do
    for ann in $ANNOUNCERS; do
      for _ in $(seq "$REPEAT"); do run "$ann" "$rcv" "$n"; done
    done
  done
done
