# Shared by bench/announce.sh and bench/capture-fixtures.sh: namespaces and routers for
# scripts, with the same flags as the Rust lab (tests/src/lab/). Source it; needs root.
#
# Everything a script creates is recorded and removed by lab_cleanup (installed as the EXIT
# trap): namespaces named "${LAB_TAG}-NAME" and daemons by the pids they were started with
# (`ip netns exec` execs the daemon, so `$!` is the daemon itself). Nothing in /etc or /run
# is used: every router has its config, socket, pid file and log in "$LAB_DIR/NAME".

LAB_TAG="elbs$$"
LAB_DIR=$(mktemp -d /tmp/edgelb-bench-XXXXXX)
LAB_NS=()
LAB_PIDS=()
GOBGP_API_PORT=50151

lab_cleanup() {
  local pid ns
  for pid in "${LAB_PIDS[@]}"; do
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    rm -rf "/var/tmp/frr/bgpd.$pid"
  done
  rmdir /var/tmp/frr 2>/dev/null || true
  for ns in "${LAB_NS[@]}"; do
    ip netns del "$ns" 2>/dev/null || true
  done
  if [ "${LAB_KEEP:-0}" = 1 ]; then
    echo "lab: kept $LAB_DIR" >&2
  else
    rm -rf "$LAB_DIR"
  fi
}
trap lab_cleanup EXIT
trap 'exit 130' INT TERM

die() { echo "error: $*" >&2; exit 1; }

# lab_ns NAME: creates namespace ${LAB_TAG}-NAME with lo up; prints nothing.
lab_ns() {
  local ns="${LAB_TAG}-$1"
  ip netns add "$ns" || die "ip netns add $ns (root needed)"
  LAB_NS+=("$ns")
  ip -n "$ns" link set lo up
}

# lab_link A AIF B BIF: a veth pair between namespaces A and B (short names), both up.
lab_link() {
  ip -n "${LAB_TAG}-$1" link add "$2" type veth peer name "$4" netns "${LAB_TAG}-$3"
  ip -n "${LAB_TAG}-$1" link set "$2" up
  ip -n "${LAB_TAG}-$3" link set "$4" up
}

# lab_addr NS IF CIDR
lab_addr() {
  case "$3" in
    *:*) ip -n "${LAB_TAG}-$1" addr add "$3" dev "$2" nodad ;;
    *) ip -n "${LAB_TAG}-$1" addr add "$3" dev "$2" ;;
  esac
}

# lab_exec NS CMD...: runs CMD inside the namespace.
lab_exec() { local ns="${LAB_TAG}-$1"; shift; ip netns exec "$ns" "$@"; }

# wait_for DESC SECONDS CMD...: polls CMD every 0.1 s until it succeeds, else dies.
wait_for() {
  local desc=$1 secs=$2; shift 2
  local end=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -ge "$end" ] && die "timed out after ${secs}s waiting for $desc"
    sleep 0.1
  done
}

# wait_daemon PID DESC SECONDS CMD...: like wait_for, but dies at once (with the log in
# $LAB_DIR/NAME) if the daemon PID exits.
wait_daemon() {
  local pid=$1 desc=$2 secs=$3; shift 3
  local end=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if ! kill -0 "$pid" 2>/dev/null; then
      cat "$LAB_DIR"/*/*.log >&2 2>/dev/null || true
      die "$desc exited"
    fi
    [ "$SECONDS" -ge "$end" ] && die "timed out after ${secs}s waiting for $desc"
    sleep 0.1
  done
}

# frr_start NAME NS: runs bgpd with "$LAB_DIR/NAME/bgpd.conf" (write it first).
frr_start() {
  local d="$LAB_DIR/$1"
  ip netns exec "${LAB_TAG}-$2" /usr/lib/frr/bgpd -Z -S -P 0 -f "$d/bgpd.conf" \
    -i "$d/bgpd.pid" --vty_socket "$d" --log stdout >"$d/bgpd.log" 2>&1 &
  LAB_PIDS+=("$!")
  eval "PID_$1=$!"
  wait_daemon "$!" "bgpd $1" 10 vty "$1" "show bgp summary json"
}

# vty NAME CMD...: one vtysh command per argument against router NAME.
vty() {
  local d="$LAB_DIR/$1"; shift
  local args=() c
  for c in "$@"; do args+=(-c "$c"); done
  vtysh --vty_socket "$d" -d bgpd "${args[@]}"
}

# bird_start NAME NS: runs bird with "$LAB_DIR/NAME/bird.conf".
bird_start() {
  local d="$LAB_DIR/$1"
  ip netns exec "${LAB_TAG}-$2" bird -f -c "$d/bird.conf" -s "$d/bird.ctl" -P "$d/bird.pid" \
    >"$d/bird.log" 2>&1 &
  LAB_PIDS+=("$!")
  eval "PID_$1=$!"
  wait_daemon "$!" "bird $1" 60 birdcl "$1" show status
}

# birdcl NAME ARGS...: birdc against router NAME.
birdcl() { local d="$LAB_DIR/$1"; shift; birdc -s "$d/bird.ctl" "$@"; }

# gobgp_start NAME NS: runs gobgpd with "$LAB_DIR/NAME/gobgpd.toml" and its own API port.
gobgp_start() {
  local d="$LAB_DIR/$1"
  GOBGP_API_PORT=$((GOBGP_API_PORT + 1))
  echo "$GOBGP_API_PORT" >"$d/api.port"
  echo "${LAB_TAG}-$2" >"$d/netns"
  ip netns exec "${LAB_TAG}-$2" gobgpd -f "$d/gobgpd.toml" -p \
    --api-hosts "127.0.0.1:$GOBGP_API_PORT" --pprof-disable >"$d/gobgpd.log" 2>&1 &
  LAB_PIDS+=("$!")
  eval "PID_$1=$!"
  wait_daemon "$!" "gobgpd $1" 10 gocl "$1" global
}

# gocl NAME ARGS...: the gobgp CLI against router NAME.
gocl() {
  local d="$LAB_DIR/$1"; shift
  ip netns exec "$(cat "$d/netns")" gobgp -u 127.0.0.1 -p "$(cat "$d/api.port")" "$@"
}

# cpu_ms PID: user+system CPU time in ms (/proc/PID/stat fields 14 and 15, USER_HZ=100).
cpu_ms() {
  local stat rest
  stat=$(cat "/proc/$1/stat") || return 1
  rest=${stat##*) }
  # shellcheck disable=SC2086
  set -- $rest
  echo $(( (${12} + ${13}) * 1000 / $(getconf CLK_TCK) ))
}

# peak_rss_kib PID: VmHWM from /proc/PID/status.
peak_rss_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }

# now_ms: monotonic-enough wall clock in ms.
now_ms() { date +%s%3N; }
