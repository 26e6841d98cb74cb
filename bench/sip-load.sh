#!/usr/bin/env bash
# bench/sip-load.sh: mcx-authz beside Kamailio under the same open-loop SIP load (issues 6, 15).
#
#   bench/sip-load.sh              # full: 10^5 users, rates up to 18 000 pairs/s, 5 s steps
#   QUICK=1 bench/sip-load.sh      # quick: 20 000 users, 3 rates, 3 s steps
#
# Servers (TARGETS, in this order by default):
#   kamailio-stateless     Kamailio answering every request with a stateless 200 (the SIP-stack
#                          ceiling of this machine; tokens are not looked at)
#   mcx-es256 / mcx-rs256  `mcx-authz serve`, PUBLISHes carrying distinct ES256 / RS256 tokens,
#                          state in memory (`[store] backend = "memory"`, as `--in-memory`;
#                          STORE=redb makes these durable too)
#   mcx-es256-protected / mcx-rs256-protected
#                          TS 33.180 clause 9 as post-cr serves it (`token_protection =
#                          "required"`): each PUBLISH's token and client ID encrypted under the
#                          user's CSK and its info body signed (`mcx-authz load --scenario
#                          register-publish-protected`; CSV and CSK table from `token mint-csv
#                          --protect-csks`), state in memory. No Kamailio peer does this work.
#   mcx-es256-redb / mcx-rs256-redb
#                          the same with the default durable store (redb, group commit; no 2xx
#                          before its state is on disk), a fresh data dir per start
#   mcxb-es256[-redb] / mcxb-rs256[-redb]
#                          the same served by MCX_BEFORE (another build, e.g. main before a
#                          change), measured in the same run with the same driver
#   kamailio-pyjwt-es256 / kamailio-pyjwt-rs256
#                          Kamailio + registrar + app_python3/PyJWT verifying the same tokens
#                          (bench/kamailio-pyjwt.cfg, bench/kamailio_jwt.py)
#
# Equal settings for every server:
#   - the same driver, `mcx-authz load` (open loop, latency from each call's scheduled time, no
#     coordinated omission; RFC 3261 retransmissions), under `chrt -f 1` where allowed (root) so
#     that its own wake-up delays on a loaded machine are not charged to any server;
#   - the same scenario (third-party REGISTER, then PUBLISH with the user's own token), the same
#     users, the same rates;
#   - the same UDP receive buffer: mcx-authz asks for 4 MiB, Kamailio gets `maxbuffer` = 4 MiB
#     (UDP_RCVBUF); the kernel caps both at net.core.rmem_max and doubles. The buffer each server
#     really got (`ss` skmem rb) is printed, and a difference is flagged;
#   - a fresh server per step (empty tables, no token served from a cache), warmed up with WARM
#     calls of users the measurement never uses.
# A step passes only with < 0.1 % failed calls and p99 < P99_MS (10) ms for REGISTER and for
# PUBLISH. Stepping stops at the first failing step (after one retry: RETRY=1, the same for every
# server). Then every server is measured at HALF_RATE (default: half of Kamailio stateless's
# highest passing rate) for 2×STEP_SECS: p50/p90/p99/p99.9/max per method (the issue 15 latency
# criterion), and the de-registration scenario at the same rate.
# The crypto-bound ceiling of mcx-authz is computed from the CPU cost of one verification
# (`mcx-authz load --verify-cost`, one thread, the server's validator), the server's CPU per pair
# at its highest passing rate, and the driver's CPU per pair: 2 cores / (server + driver).
#
# Environment: QUICK, TARGETS, RATES, STEP_SECS [5], USERS [100000], WARM [300], P99_MS [10],
# RETRY [1], HALF_RATE, UDP_RCVBUF [4194304], KAMAILIO_WORKERS [4], PORT_BASE [25170],
# SKIP_BUILD=1, WORK (work dir; the CSVs are kept there between runs), CHRT [auto|0], MCX_BIN
# (another mcx-authz binary to serve, e.g. a build before a change; the driver stays the same),
# MCX_BEFORE (the binary the mcxb-* targets serve, beside this build's in one run).
# Loopback only; every process is started here and stopped by its PID (trap on exit).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then
  RATES=${RATES:-"1000 2000 4000"}
  STEP_SECS=${STEP_SECS:-3}
  USERS=${USERS:-20000}
else
  RATES=${RATES:-"2000 4000 6000 7000 8000 9000 10000 11000 12000 14000 16000 18000"}
  STEP_SECS=${STEP_SECS:-5}
  USERS=${USERS:-100000}
fi
TARGETS=${TARGETS:-"kamailio-stateless mcx-es256 mcx-es256-redb mcx-rs256 mcx-rs256-redb kamailio-pyjwt-es256 kamailio-pyjwt-rs256"}
P99_MS=${P99_MS:-10}
RETRY=${RETRY:-1}
WARM=${WARM:-300}
UDP_RCVBUF=${UDP_RCVBUF:-4194304}
KAMAILIO_WORKERS=${KAMAILIO_WORKERS:-4}
PORT_BASE=${PORT_BASE:-25170}
PY=${PY:-/usr/bin/python3}
WORK=${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/mcx-sip-load.XXXXXX")}
mkdir -p "$WORK"
stats="$PY $repo/bench/load_stats.py"

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

for tool in kamailio ss "$PY"; do
  command -v "$tool" >/dev/null || [[ -x /usr/sbin/$tool ]] || die "$tool missing (.ci/install-deps.sh)"
done
"$PY" -c 'import jwt, cryptography' 2>/dev/null || die "python3 jwt/cryptography missing (.ci/install-deps.sh)"
PATH=$PATH:/usr/sbin

chrt=()
if [[ ${CHRT:-auto} != 0 ]] && chrt -f 1 true 2>/dev/null; then chrt=(chrt -f 1); fi

server_pid=""
stop_server() {
  if [[ -n $server_pid ]]; then
    kill "$server_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
  fi
}
trap stop_server EXIT
trap 'exit 130' INT TERM

# --- build, keys, tokens ----------------------------------------------------------------------
bin=$repo/target/release/mcx-authz
if [[ ${SKIP_BUILD:-0} != 1 ]]; then
  log "building the release binary"
  cargo build --release --quiet --bin mcx-authz
fi
[[ -x $bin ]] || die "$bin missing"

idms=$WORK/idms
mkdir -p "$idms"
for alg in ES256 RS256; do
  lower=$(tr 'A-Z' 'a-z' <<<"$alg")
  [[ -f $idms/idms-$lower.pem ]] || "$bin" token --data-dir "$idms" keygen --alg "$alg" >/dev/null
  csv=$WORK/users-$lower.csv
  if [[ ! -f $csv ]] || [[ $(($(wc -l <"$csv") - 1)) -lt $USERS ]]; then
    log "minting $USERS $alg tokens with the lab IdMS"
    "$bin" token --data-dir "$idms" mint-csv --alg "$alg" --users "$USERS" --out "$csv"
  fi
  pcsv=$WORK/users-$lower-protected.csv
  if [[ " $TARGETS " == *"-$lower-protected"* ]] \
    && { [[ ! -f $pcsv ]] || [[ $(($(wc -l <"$pcsv") - 1)) -lt $USERS ]]; }; then
    log "minting $USERS $alg tokens protected under a CSK per user (clause 9)"
    "$bin" token --data-dir "$idms" mint-csv --alg "$alg" --users "$USERS" --out "$pcsv" \
      --impu-prefix pue --protect-csks "$WORK/csks-$lower.toml"
  fi
  # Public half, for Kamailio + PyJWT (same tokens, same key).
  "$PY" - "$idms/idms-$lower.pem" "$WORK/idms-$lower-public.pem" <<'EOF'
import sys
from cryptography.hazmat.primitives import serialization
k = serialization.load_pem_private_key(open(sys.argv[1], "rb").read(), password=None)
open(sys.argv[2], "wb").write(k.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
EOF
done
max_calls=$(( USERS - WARM ))

# --- servers ----------------------------------------------------------------------------------
alg_of() { case $1 in *-es256*) echo es256 ;; *-rs256*) echo rs256 ;; *) echo es256 ;; esac; }
port_of() {
  local i=0 t
  for t in kamailio-stateless mcx-es256 mcx-rs256 kamailio-pyjwt-es256 kamailio-pyjwt-rs256 \
    mcx-es256-redb mcx-rs256-redb mcxb-es256 mcxb-rs256 mcxb-es256-redb mcxb-rs256-redb \
    mcx-es256-protected mcx-rs256-protected; do
    [[ $t == "$1" ]] && { echo $(( PORT_BASE + 2 * i )); return; }
    i=$(( i + 1 ))
  done
  die "unknown target $1"
}
# The users' CSV of a target, and what it runs for a clear-token scenario.
csv_of() { case $1 in *-protected) echo "$WORK/users-$(alg_of "$1")-protected.csv" ;; *) echo "$WORK/users-$(alg_of "$1").csv" ;; esac; }
scenario_of() { case $1 in *-protected) echo "${2/register-publish/register-publish-protected}" ;; *) echo "$2" ;; esac; }

start_server() { # target logfile
  local target=$1 out=$2 port alg
  port=$(port_of "$target")
  alg=$(alg_of "$target")
  case $target in
    mcx-*|mcxb-*)
      # The load CSV carries tokens in clear (as Kamailio's does): post-cr with clause 9
      # protection optional, so the comparison measures the same work.
      cat >"$WORK/mcx-$port.toml" <<EOF
[sip]
udp = ["127.0.0.1:$port"]
tcp = ["127.0.0.1:$port"]

[admin]
listen = "127.0.0.1:$(( port + 1 ))"

[http]
enabled = false

[policy]
token_protection = "$([[ $target == *-protected ]] && echo required || echo optional)"
EOF
      if [[ $target == *-protected ]]; then cat "$WORK/csks-$alg.toml" >>"$WORK/mcx-$port.toml"; fi
      # The store: in memory unless STORE=redb (durable, a fresh data dir per start); STORE=omit
      # writes no [store] table, for an MCX_BIN built before issue 13.
      local store=${STORE:-memory}
      [[ $target == *-redb ]] && store=redb
      case $store in
        omit) ;;
        redb) printf '\n[store]\ndir = "%s"\n' "$(mktemp -d "$WORK/store.XXXXXX")" >>"$WORK/mcx-$port.toml" ;;
        *) printf '\n[store]\nbackend = "memory"\n' >>"$WORK/mcx-$port.toml" ;;
      esac
      local serve_bin=${MCX_BIN:-$bin}
      if [[ $target == mcxb-* ]]; then
        [[ -n ${MCX_BEFORE:-} ]] || die "$target needs MCX_BEFORE (the other build)"
        serve_bin=$MCX_BEFORE
      fi
      RUST_LOG=${RUST_LOG:-warn} "$serve_bin" serve --data-dir "$idms" --config "$WORK/mcx-$port.toml" >"$out" 2>&1 &
      ;;
    kamailio-stateless)
      mkdir -p "$WORK/krun"
      kamailio -f bench/kamailio-stateless.cfg -DD -E -Y "$WORK/krun" -m 256 \
        -A "SIP_PORT=$port" -A "WORKERS=$KAMAILIO_WORKERS" -A "UDP_RCVBUF=$UDP_RCVBUF" >"$out" 2>&1 &
      ;;
    kamailio-pyjwt-*)
      mkdir -p "$WORK/krun"
      local algs=ES256
      [[ $alg == rs256 ]] && algs=RS256
      MCX_JWT_PUBKEY=$WORK/idms-$alg-public.pem MCX_JWT_ALGS=$algs kamailio -f bench/kamailio-pyjwt.cfg \
        -DD -E -Y "$WORK/krun" -m 1024 -A "SIP_PORT=$port" -A "WORKERS=$KAMAILIO_WORKERS" \
        -A "UDP_RCVBUF=$UDP_RCVBUF" -A "PY_SCRIPT=\"$repo/bench/kamailio_jwt.py\"" >"$out" 2>&1 &
      ;;
  esac
  server_pid=$!
  for _ in $(seq 100); do
    kill -0 "$server_pid" 2>/dev/null || { tail -n 20 "$out" >&2; die "$target exited at start"; }
    if ss -Hlun "sport = :$port" 2>/dev/null | grep -q .; then
      sleep 0.3
      # Warm-up (worker start-up, lazy imports, first allocations): users never measured.
      drive "$target" 300 "$WARM" register-publish "$(dirname "$out")/warmup.json" $max_calls >/dev/null || true
      return 0
    fi
    sleep 0.1
  done
  die "$target did not bind 127.0.0.1:$port"
}

# drive target rate calls scenario json [user_offset]
drive() {
  local target=$1 rate=$2 calls=$3 scen=$4 json=$5 offset=${6:-0}
  "${chrt[@]}" "$bin" load "127.0.0.1:$(port_of "$target")" --scenario "$(scenario_of "$target" "$scen")" \
    --rate "$rate" --calls "$calls" --csv "$(csv_of "$target")" --user-offset "$offset" \
    --json "$json" >"${json%.json}.txt" 2>&1
}

declare -A best cpu_pair gen_pair rbuf
results=$WORK/results.txt
: >"$results"
hw="$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r)"
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
log "$hw; load average $load_start; driver ${chrt[*]:-(normal priority)} mcx-authz load"

for target in $TARGETS; do
  log "=== $target (127.0.0.1:$(port_of "$target"))"
  best[$target]=0 cpu_pair[$target]=- gen_pair[$target]=- rbuf[$target]=-
  for rate in $RATES; do
    calls=$(( rate * STEP_SECS ))
    (( calls > max_calls )) && calls=$max_calls
    verdict=FAIL
    for try in $(seq 0 "$RETRY"); do
      dir=$WORK/$target/step-$rate-$try
      mkdir -p "$dir"
      start_server "$target" "$dir/server.log"
      rbuf[$target]=$($stats rb "$(port_of "$target")")
      c0=$($stats cpu "$server_pid")
      drive "$target" "$rate" "$calls" register-publish "$dir/load.json" || true
      c1=$($stats cpu "$server_pid")
      stop_server
      read -r verdict ok failed retrans reg99 pub99 gcpu < <($stats step "$dir/load.json" "$P99_MS")
      cpu=$(awk -v a="$c0" -v b="$c1" -v n="$calls" 'BEGIN{printf "%.1f", (b-a) / n * 1e6}')
      gen=$(awk -v g="$gcpu" -v n="$calls" 'BEGIN{printf "%.1f", g / n * 1e6}')
      log "$target $rate/s try $try: $verdict ($ok ok, $failed failed, $retrans retrans of $calls; p99 REGISTER $reg99 ms, PUBLISH $pub99 ms; server $cpu CPU µs/pair, driver $gen)"
      echo "$target rate=$rate try=$try calls=$calls ok=$ok failed=$failed retrans=$retrans reg_p99_ms=$reg99 pub_p99_ms=$pub99 server_cpu_us_per_pair=$cpu driver_cpu_us_per_pair=$gen rb=${rbuf[$target]} verdict=$verdict" >>"$results"
      [[ $verdict == ok ]] && break
    done
    [[ $verdict == ok ]] || break
    best[$target]=$rate cpu_pair[$target]=$cpu gen_pair[$target]=$gen
  done
done

# --- latency at a common rate -----------------------------------------------------------------
half=${HALF_RATE:-}
if [[ -z $half ]]; then
  if [[ " $TARGETS " == *" kamailio-stateless "* ]] && (( ${best[kamailio-stateless]:-0} > 0 )); then
    half=$(( best[kamailio-stateless] / 2 ))
  else
    half=1000
  fi
fi
declare -A lat_reg lat_pub lat_dereg
for target in $TARGETS; do
  calls=$(( half * STEP_SECS * 2 ))
  (( calls > max_calls / 2 )) && calls=$(( max_calls / 2 ))
  dir=$WORK/$target/latency-$half
  mkdir -p "$dir"
  start_server "$target" "$dir/server.log"
  drive "$target" "$half" "$calls" register-publish "$dir/load.json" || true
  lat_reg[$target]=$($stats lat "$dir/load.json" REGISTER)
  lat_pub[$target]=$($stats lat "$dir/load.json" PUBLISH)
  # De-registration scenario, same server and rate, other users (no protected variant).
  if [[ $target == *-protected ]]; then
    lat_dereg[$target]="- - - - -"
  else
    drive "$target" "$half" "$calls" register-publish-deregister "$dir/dereg.json" "$calls" || true
    lat_dereg[$target]=$($stats lat "$dir/dereg.json" DEREGISTER)
  fi
  stop_server
  log "$target at $half/s: REGISTER ${lat_reg[$target]}, PUBLISH ${lat_pub[$target]}, DEREGISTER ${lat_dereg[$target]} (p50 p90 p99 p99.9 max, ms)"
  echo "$target latency rate=$half register_ms=[${lat_reg[$target]}] publish_ms=[${lat_pub[$target]}] deregister_ms=[${lat_dereg[$target]}]" >>"$results"
done

# --- the crypto-bound ceiling of mcx-authz ----------------------------------------------------
declare -A verify_us
for alg in es256 rs256; do
  if [[ " $TARGETS " == *" mcx"*"-$alg"* ]]; then
    v=$("$bin" load --csv "$WORK/users-$alg.csv" --data-dir "$idms" --verify-cost 3000)
    verify_us[$alg]=$("$PY" -c 'import json,sys; print(json.loads(sys.argv[1])["cpu_us_per_verification"])' "$v")
  fi
done

# --- table ------------------------------------------------------------------------------------
ratio() { awk -v a="${best[$1]:-0}" -v b="${best[$2]:-0}" 'BEGIN{ if (b > 0 && a > 0) printf "%.2f", a/b; else print "-" }'; }
{
  echo
  echo "SIP load, $(date -u +%Y-%m-%dT%H:%MZ); $hw"
  echo "load average at start $load_start, at end $(cut -d' ' -f1-3 /proc/loadavg) (other builds share the cores)"
  echo "driver: mcx-authz load ${chrt[*]:+under ${chrt[*]} }(open loop, latency from the scheduled send time); same host"
  echo "scenario: third-party REGISTER + PUBLISH with the user's own token, UDP; $USERS users; rates $RATES pairs/s, ${STEP_SECS} s per step"
  echo "step passes: < 0.1 % failed calls and p99 < $P99_MS ms for REGISTER and for PUBLISH (retries per step: $RETRY)"
  echo
  printf '%-22s %11s %13s %13s %19s\n' server "max pairs/s" "server µs/pair" "driver µs/pair" "UDP rcvbuf (bytes)"
  for t in $TARGETS; do
    printf '%-22s %11s %13s %13s %19s\n' "$t" "${best[$t]}" "${cpu_pair[$t]}" "${gen_pair[$t]}" "${rbuf[$t]}"
  done
  if [[ $(for t in $TARGETS; do echo "${rbuf[$t]}"; done | sort -u | wc -l) -gt 1 ]]; then
    echo "WARNING: the servers got different receive buffers"
  fi
  echo
  echo "latency at $half pairs/s, ms (p50 p90 p99 p99.9 max), from the scheduled send time:"
  printf '%-22s %-36s %-36s %-36s\n' server REGISTER PUBLISH "DEREGISTER (3-step scenario)"
  for t in $TARGETS; do
    printf '%-22s %-36s %-36s %-36s\n' "$t" "${lat_reg[$t]}" "${lat_pub[$t]}" "${lat_dereg[$t]}"
  done
  echo
  for t in $TARGETS; do
    [[ $t == mcx* ]] || continue
    alg=$(alg_of "$t")
    [[ " $TARGETS " == *" kamailio-stateless "* ]] && printf 'ratio %-16s / Kamailio stateless:       %s\n' "$t" "$(ratio "$t" kamailio-stateless)"
    [[ " $TARGETS " == *" kamailio-pyjwt-$alg "* ]] && printf 'ratio %-16s / Kamailio + PyJWT %s: %s\n' "$t" "${alg^^}" "$(ratio "$t" "kamailio-pyjwt-$alg")"
  done
  echo
  for t in $TARGETS; do
    [[ $t == mcx* ]] || continue
    alg=$(alg_of "$t")
    [[ -n ${verify_us[$alg]:-} && ${cpu_pair[$t]:-"-"} != - ]] || continue
    awk -v v="${verify_us[$alg]}" -v s="${cpu_pair[$t]}" -v g="${gen_pair[$t]}" -v best="${best[$t]}" -v name="$t" 'BEGIN{
      nc = s - v; if (nc < 0) nc = 0
      crypto_only = 2e6 / (v + g); cpu_bound = 2e6 / (s + g)
      printf "ceiling %s: one verification %.1f CPU µs; server %.1f µs/pair (non-crypto %.1f); driver %.1f µs/pair\n", name, v, s, nc, g
      printf "  2 cores / (verification + driver) = %.0f pairs/s; 2 cores / (server + driver) = %.0f pairs/s; held %d = %.0f %% of the latter\n", crypto_only, cpu_bound, best, 100 * best / cpu_bound
    }'
  done
  echo "(a max equal to the highest rate tried means the ceiling was not reached; raise RATES)"
  echo "per-step details: $results"
} | tee "$WORK/table.txt"
