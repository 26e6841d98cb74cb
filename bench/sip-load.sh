#!/usr/bin/env bash
# bench/sip-load.sh: SIPp load against (a) mcx-authz, (b) Kamailio stateless reply, (c) Kamailio +
# app_python3 + PyJWT + htable, one after the other, same scenario, same stepped rates (issue 6).
#
#   bench/sip-load.sh                 # full: 10^5 users, rates up to 14 000 pairs/s, 10 s steps
#   QUICK=1 bench/sip-load.sh         # quick: 20 000 users, 4 rates, 3 s steps (< 3 minutes)
#
# Environment (defaults in brackets):
#   QUICK=1               small counts
#   TARGETS               which servers, in order ["mcx kamailio-stateless kamailio-pyjwt"]
#   RATES                 stepped call rates; one call = third-party REGISTER + PUBLISH pair
#   STEP_SECS             seconds per step [10; quick 3]
#   USERS                 distinct users/tokens in the CSV [100000; quick 20000]
#   MCX_PORT              mcx-authz SIP port; unset = embedded defaults (127.0.0.1:5060)
#   KS_PORT / KP_PORT     Kamailio stateless / PyJWT ports [25072 / 25073]
#   KAMAILIO_WORKERS      Kamailio UDP worker processes [4]
#   SKIP_BUILD=1          use the existing target/release/mcx-authz
#   WORK                  work dir (CSV, logs, results) [mktemp]
#
# Per server and rate step the server is started fresh (empty tables and token cache, so every
# PUBLISH costs one ES256 verification) and warmed up with WARM [200] calls of users the
# measurement never uses, then SIPp runs `-m rate*STEP_SECS` calls of
# tests/sipp/load_register_publish.xml at that rate over UDP, each call with its own CSV line.
# A step passes with < 0.1% failed calls, no retransmissions and the calls done within 110% of
# the intended time (+1 s). Stepping stops at the first failure. Reported per server: highest
# passing rate; CPU seconds (utime+stime from /proc, server processes only) per 1 000 requests
# at that rate; p50/p99 response time of REGISTER and PUBLISH at half that rate (SIPp
# -trace_rtt), then tests/sipp/load_deregister.xml at that half rate against the same server.
# SIPp shares the machine with the server under test: the figures are a floor, not a ceiling.
# Loopback only; every process is started here and stopped by its PID (trap on exit).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then
  RATES=${RATES:-"500 1000 2000 4000"}
  STEP_SECS=${STEP_SECS:-3}
  USERS=${USERS:-20000}
else
  RATES=${RATES:-"500 1000 2000 3000 4000 5000 6000 7000 8000 10000 12000 14000"}
  STEP_SECS=${STEP_SECS:-10}
  USERS=${USERS:-100000}
fi
TARGETS=${TARGETS:-"mcx kamailio-stateless kamailio-pyjwt"}
KS_PORT=${KS_PORT:-25072}
KP_PORT=${KP_PORT:-25073}
KAMAILIO_WORKERS=${KAMAILIO_WORKERS:-4}
SIPP_PORT=${SIPP_PORT:-25100}
PY=${PY:-/usr/bin/python3}
WORK=${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/mcx-sip-load.XXXXXX")}
mkdir -p "$WORK"
stats="$PY $repo/bench/sipp_stats.py"

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

for tool in sipp kamailio "$PY"; do command -v "$tool" >/dev/null || die "$tool missing (.ci/install-deps.sh)"; done
"$PY" -c 'import jwt, cryptography' 2>/dev/null || die "python3 jwt/cryptography missing (.ci/install-deps.sh)"

server_pid=""
sipp_pid=""
stop_server() {
  if [[ -n $server_pid ]]; then
    kill "$server_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
  fi
}
cleanup() {
  [[ -n $sipp_pid ]] && kill "$sipp_pid" 2>/dev/null || true
  stop_server
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- build and tokens -------------------------------------------------------------------------
bin=$repo/target/release/mcx-authz
if [[ ${SKIP_BUILD:-0} != 1 ]]; then
  log "building the release binary"
  cargo build --release --quiet --bin mcx-authz
fi
[[ -x $bin ]] || die "$bin missing"

idms=$WORK/idms
mkdir -p "$idms"
if [[ ! -f $idms/idms-es256.pem ]]; then
  "$bin" token --data-dir "$idms" keygen --alg ES256 >/dev/null
fi
kid=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["keys"][0].get("kid",""))' "$idms/jwks.json")
csv=$WORK/users.csv
if [[ ! -f $csv ]] || [[ $(($(wc -l <"$csv") - 1)) -lt $USERS ]]; then
  log "minting $USERS ES256 tokens with the lab IdMS key ($idms/idms-es256.pem)"
  if "$bin" token mint-csv --help >/dev/null 2>&1; then
    "$bin" token --data-dir "$idms" mint-csv --users "$USERS" --out "$csv"
  else
    "$PY" tests/sipp/mint_csv.py --dir "$WORK" --key "$idms/idms-es256.pem" --kid "$kid" users "$USERS"
  fi
fi
# Public half of the lab key, for Kamailio + PyJWT (same tokens, same key).
"$PY" - "$idms/idms-es256.pem" "$WORK/idms-public.pem" <<'EOF'
import sys
from cryptography.hazmat.primitives import serialization
k = serialization.load_pem_private_key(open(sys.argv[1], "rb").read(), password=None)
open(sys.argv[2], "wb").write(k.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
EOF

# Warm-up users: the last WARM lines of the CSV, never reached by a measured run (calls are capped
# at USERS - WARM), so the warm-up binds nobody the measurement then uses.
WARM=${WARM:-200}
warm_csv=$WORK/warm.csv
{ echo SEQUENTIAL; tail -n "$WARM" "$csv"; } >"$warm_csv"
max_calls=$(( USERS - WARM ))

# --- servers ----------------------------------------------------------------------------------
port_of() {
  case $1 in
    mcx) echo "${MCX_PORT:-5060}" ;;
    kamailio-stateless) echo "$KS_PORT" ;;
    kamailio-pyjwt) echo "$KP_PORT" ;;
  esac
}

start_server() { # target logfile
  local target=$1 out=$2 port
  port=$(port_of "$target")
  case $target in
    mcx)
      local args=(serve --data-dir "$idms" --config "$WORK/mcx.toml")
      # The load CSV carries tokens in clear (as Kamailio's does): post-cr with clause 9
      # protection optional, so the comparison measures the same work.
      {
        if [[ -n ${MCX_PORT:-} ]]; then
          printf '[sip]\nudp = ["127.0.0.1:%s"]\ntcp = ["127.0.0.1:%s"]\n\n[admin]\nlisten = "127.0.0.1:%s"\n\n' \
            "$MCX_PORT" "$MCX_PORT" "$((MCX_PORT + 1))"
        fi
        printf '[policy]\ntoken_protection = "optional"\n'
      } >"$WORK/mcx.toml"
      RUST_LOG=${RUST_LOG:-warn} "$bin" "${args[@]}" >"$out" 2>&1 &
      ;;
    kamailio-stateless)
      mkdir -p "$WORK/krun"
      kamailio -f bench/kamailio-stateless.cfg -DD -E -Y "$WORK/krun" -m 256 \
        -A "SIP_PORT=$port" -A "WORKERS=$KAMAILIO_WORKERS" >"$out" 2>&1 &
      ;;
    kamailio-pyjwt)
      mkdir -p "$WORK/krun"
      MCX_JWT_PUBKEY=$WORK/idms-public.pem kamailio -f bench/kamailio-pyjwt.cfg -DD -E \
        -Y "$WORK/krun" -m 1024 -A "SIP_PORT=$port" -A "WORKERS=$KAMAILIO_WORKERS" \
        -A "PY_SCRIPT=\"$repo/bench/kamailio_jwt.py\"" >"$out" 2>&1 &
      ;;
  esac
  server_pid=$!
  # Ready when the UDP port is bound.
  for _ in $(seq 100); do
    kill -0 "$server_pid" 2>/dev/null || { tail -n 20 "$out" >&2; die "$target exited at start"; }
    if ss -Hlun "sport = :$port" 2>/dev/null | grep -q .; then
      sleep 0.3
      # Warm-up (worker start-up, lazy imports, first allocations), not measured.
      SIPP_CSV=$warm_csv run_sipp "$target" 100 "$WARM" load_register_publish "$(dirname "$out")/warmup" >/dev/null
      return 0
    fi
    sleep 0.1
  done
  die "$target did not bind 127.0.0.1:$port"
}

# run_sipp target rate calls scenario dir [extra sipp args] -> prints "ok|FAIL created success failed retrans secs"
run_sipp() {
  local target=$1 rate=$2 calls=$3 scen=$4 dir=$5
  shift 5
  local port limit
  port=$(port_of "$target")
  limit=$(( calls / rate * 3 + 30 ))
  mkdir -p "$dir"
  rm -f "$dir"/*_rtt.csv "$dir/stat.csv" "$dir/err.log"
  local t0 t1
  t0=$(date +%s.%N)
  (cd "$dir" && exec timeout "$((limit + 15))" sipp -sf "$repo/tests/sipp/$scen.xml" "127.0.0.1:$port" \
    -t u1 -i 127.0.0.1 -p "$SIPP_PORT" -m "$calls" -r "$rate" -rp 1000 -l $(( rate * 4 + 100 )) \
    -inf "${SIPP_CSV:-$csv}" -nostdin -timeout "${limit}s" -default_behaviors all,-bye \
    -trace_stat -stf stat.csv -fd 3600 -trace_err -error_file err.log "$@" >sipp.out 2>&1) &
  sipp_pid=$!
  wait "$sipp_pid" || true
  sipp_pid=""
  t1=$(date +%s.%N)
  local created ok failed retrans secs verdict
  if [[ -s $dir/stat.csv ]]; then
    read -r created ok failed retrans < <($stats summary "$dir/stat.csv")
  else
    created=0 ok=0 failed=$calls retrans=0
  fi
  secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b-a}')
  verdict=$(awk -v n="$calls" -v ok="$ok" -v f="$failed" -v r="$retrans" -v s="$secs" -v rate="$rate" \
    'BEGIN{ if (ok + f >= n && f * 1000 < n && r == 0 && s <= 1.1 * n / rate + 1 + 0.5) print "ok"; else print "FAIL" }')
  echo "$verdict $created $ok $failed $retrans $secs"
}

declare -A best cpu1k reg50 reg99 pub50 pub99 dr50 dr99 drok
results=$WORK/results.txt
: >"$results"

for target in $TARGETS; do
  log "=== $target (127.0.0.1:$(port_of "$target"))"
  best[$target]=0
  cpu1k[$target]=-
  for rate in $RATES; do
    calls=$(( rate * STEP_SECS ))
    if (( calls > max_calls )); then calls=$max_calls; fi
    dir=$WORK/$target/step-$rate
    mkdir -p "$dir"
    start_server "$target" "$dir/server.log"
    c0=$($stats cpu "$server_pid")
    read -r verdict created ok failed retrans secs < <(run_sipp "$target" "$rate" "$calls" load_register_publish "$dir")
    c1=$($stats cpu "$server_pid")
    stop_server
    cpu=$(awk -v a="$c0" -v b="$c1" -v n="$calls" 'BEGIN{printf "%.3f", (b-a) / (2*n) * 1000}')
    log "$target rate $rate/s: $verdict ($ok ok, $failed failed, $retrans retrans of $calls in ${secs}s; ${cpu} CPU s/1000 req)"
    echo "$target rate=$rate calls=$calls ok=$ok failed=$failed retrans=$retrans secs=$secs cpu_s_per_1000_req=$cpu verdict=$verdict" >>"$results"
    if [[ $verdict != ok ]]; then break; fi
    best[$target]=$rate
    cpu1k[$target]=$cpu
  done

  reg50[$target]=- reg99[$target]=- pub50[$target]=- pub99[$target]=- dr50[$target]=- dr99[$target]=- drok[$target]=-
  if (( best[$target] > 0 )); then
    half=$(( best[$target] / 2 ))
    (( half > 0 )) || half=1
    calls=$(( half * STEP_SECS ))
    if (( calls > max_calls )); then calls=$max_calls; fi
    dir=$WORK/$target/latency-$half
    mkdir -p "$dir"
    start_server "$target" "$dir/server.log"
    read -r verdict created ok failed retrans secs < <(run_sipp "$target" "$half" "$calls" load_register_publish "$dir" -trace_rtt -rtt_freq 1)
    rtt=$(ls "$dir"/*_rtt.csv 2>/dev/null | head -n1 || true)
    if [[ -n $rtt ]]; then
      read -r _ _ reg50[$target] reg99[$target] < <($stats rtt "$rtt" 1) || true
      read -r _ _ pub50[$target] pub99[$target] < <($stats rtt "$rtt" 2) || true
    fi
    log "$target at $half/s: $verdict; REGISTER p50 ${reg50[$target]} p99 ${reg99[$target]} ms, PUBLISH p50 ${pub50[$target]} p99 ${pub99[$target]} ms"
    echo "$target latency rate=$half verdict=$verdict reg_p50=${reg50[$target]} reg_p99=${reg99[$target]} pub_p50=${pub50[$target]} pub_p99=${pub99[$target]}" >>"$results"
    # Second scenario: de-register the same users, same server, same rate.
    dir=$WORK/$target/deregister-$half
    read -r verdict created ok failed retrans secs < <(run_sipp "$target" "$half" "$calls" load_deregister "$dir" -trace_rtt -rtt_freq 1)
    rtt=$(ls "$dir"/*_rtt.csv 2>/dev/null | head -n1 || true)
    [[ -n $rtt ]] && { read -r _ _ dr50[$target] dr99[$target] < <($stats rtt "$rtt" 1) || true; }
    drok[$target]="$ok/$calls"
    log "$target de-registration at $half/s: $verdict ($ok/$calls ok), p50 ${dr50[$target]} p99 ${dr99[$target]} ms"
    echo "$target deregister rate=$half verdict=$verdict ok=$ok/$calls p50=${dr50[$target]} p99=${dr99[$target]}" >>"$results"
    stop_server
  fi
done

# --- table ------------------------------------------------------------------------------------
ratio() { awk -v a="${best[$1]:-0}" -v b="${best[$2]:-0}" 'BEGIN{ if (b > 0 && a > 0) printf "%.2f", a/b; else print "-" }'; }
{
  echo
  echo "SIP load, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
  echo "scenario tests/sipp/load_register_publish.xml (third-party REGISTER + PUBLISH with a distinct ES256 token), UDP,"
  echo "rates tried: $RATES pairs/s, ${STEP_SECS}s per step, $USERS users; SIPp on the same machine"
  echo
  printf '%-20s %14s %14s %17s %17s %17s %10s\n' server "max pairs/s" "CPU s/1000req" "REG p50/p99 ms" "PUB p50/p99 ms" "dereg p50/p99 ms" "dereg ok"
  for t in $TARGETS; do
    printf '%-20s %14s %14s %17s %17s %17s %10s\n' "$t" "${best[$t]}" "${cpu1k[$t]}" \
      "${reg50[$t]}/${reg99[$t]}" "${pub50[$t]}/${pub99[$t]}" "${dr50[$t]}/${dr99[$t]}" "${drok[$t]}"
  done
  echo
  if [[ " $TARGETS " == *" mcx "* ]]; then
    [[ " $TARGETS " == *" kamailio-stateless "* ]] && echo "ratio mcx-authz / Kamailio stateless: $(ratio mcx kamailio-stateless)"
    [[ " $TARGETS " == *" kamailio-pyjwt "* ]] && echo "ratio mcx-authz / Kamailio + PyJWT:    $(ratio mcx kamailio-pyjwt)"
  fi
  if [[ " $TARGETS " == *" kamailio-stateless "* && " $TARGETS " == *" kamailio-pyjwt "* ]]; then
    echo "ratio Kamailio + PyJWT / stateless:   $(ratio kamailio-pyjwt kamailio-stateless)"
  fi
  echo "(a max equal to the highest rate tried means the ceiling was not reached; raise RATES)"
  echo "per-step details: $results"
} | tee "$WORK/table.txt"
