#!/usr/bin/env bash
# bench/ab-load.sh: two builds of mcx-authz, A and B, under the same open-loop SIP load,
# alternating A, B, A, B, … at each rate, so that a change is judged by back-to-back ratios on a
# shared, noisy machine (issue 15: "one step at a time with before/after ratios").
#
#   A=/path/to/before B=/path/to/after bench/ab-load.sh
#
# Each run: a fresh `serve` (in memory unless STORE=redb), a warm-up of WARM calls of users never
# measured, then `mcx-authz load` (the driver is always B's; under `chrt -f 1` where allowed) at
# RATE for STEP_SECS, register-publish with distinct ES256 tokens (ALG=rs256 for RS256).
# Printed per run: p50/p99/p99.9 of REGISTER and PUBLISH (ms), retransmissions, server CPU µs per
# pair; at the end, per rate, the medians of each build over ROUNDS and their ratio B / A.
#
# Environment: A, B (binaries; required), RATES ["1500 2500"], ROUNDS [3], STEP_SECS [5],
# USERS [40000], WARM [300], ALG [es256], STORE [memory|redb], PORT [25300], WORK.
# Loopback only; each server is started here and stopped by its PID.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
: "${A:?A=/path/to/the before binary}" "${B:?B=/path/to/the after binary}"
RATES=${RATES:-"1500 2500"}
ROUNDS=${ROUNDS:-3}
STEP_SECS=${STEP_SECS:-5}
USERS=${USERS:-40000}
WARM=${WARM:-300}
ALG=${ALG:-es256}
PORT=${PORT:-25300}
PY=${PY:-/usr/bin/python3}
WORK=${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/mcx-ab-load.XXXXXX")}
mkdir -p "$WORK"
stats="$PY $repo/bench/load_stats.py"
log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

chrt=()
if chrt -f 1 true 2>/dev/null; then chrt=(chrt -f 1); fi

pid=""
stop() {
  if [[ -n $pid ]]; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    pid=""
  fi
}
trap stop EXIT
trap 'exit 130' INT TERM

idms=$WORK/idms
csv=$WORK/users-$ALG.csv
if [[ ! -f $csv ]]; then
  "$B" token --data-dir "$idms" keygen --alg "${ALG^^}" >/dev/null
  "$B" token --data-dir "$idms" mint-csv --alg "${ALG^^}" --users "$USERS" --out "$csv" >&2
fi

serve() { # binary logfile
  local store
  if [[ ${STORE:-memory} == redb ]]; then
    store="dir = \"$(mktemp -d "$WORK/store.XXXXXX")\""
  else
    store='backend = "memory"'
  fi
  cat >"$WORK/mcx.toml" <<EOF
[sip]
udp = ["127.0.0.1:$PORT"]
tcp = ["127.0.0.1:$PORT"]

[admin]
listen = "127.0.0.1:$(( PORT + 1 ))"

[http]
enabled = false

[policy]
token_protection = "optional"

[store]
$store
EOF
  RUST_LOG=warn "$1" serve --data-dir "$idms" --config "$WORK/mcx.toml" >"$2" 2>&1 &
  pid=$!
  for _ in $(seq 100); do
    if ss -Hlun "sport = :$PORT" 2>/dev/null | grep -q .; then
      sleep 0.3
      return 0
    fi
    sleep 0.1
  done
  echo "server did not bind" >&2
  exit 1
}

drive() { # rate calls offset json
  "${chrt[@]}" "$B" load "127.0.0.1:$PORT" --rate "$1" --calls "$2" --csv "$csv" \
    --user-offset "$3" --json "$4" >"${4%.json}.txt" 2>&1 || true
}

results=$WORK/ab.txt
: >"$results"
log "A=$A B=$B; $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg)"
for rate in $RATES; do
  calls=$(( rate * STEP_SECS ))
  (( calls + WARM > USERS )) && calls=$(( USERS - WARM ))
  for round in $(seq "$ROUNDS"); do
    for side in A B; do
      bin=${!side}
      dir=$WORK/$rate-$round-$side
      mkdir -p "$dir"
      serve "$bin" "$dir/server.log"
      drive 300 "$WARM" "$(( USERS - WARM ))" "$dir/warm.json"
      c0=$($stats cpu "$pid")
      drive "$rate" "$calls" 0 "$dir/load.json"
      c1=$($stats cpu "$pid")
      stop
      read -r _ ok _failed retrans _ _ _ < <($stats step "$dir/load.json" 10)
      reg=$($stats lat "$dir/load.json" REGISTER)
      pub=$($stats lat "$dir/load.json" PUBLISH)
      cpu=$(awk -v a="$c0" -v b="$c1" -v n="$calls" 'BEGIN{printf "%.1f", (b-a) / n * 1e6}')
      line="rate=$rate round=$round side=$side ok=$ok/$calls retrans=$retrans cpu_us_pair=$cpu reg=[$reg] pub=[$pub] load=$(cut -d' ' -f1 /proc/loadavg)"
      log "$line"
      echo "$line" >>"$results"
    done
  done
done
# Medians per rate and side: p99 REGISTER, p99 PUBLISH, p99.9 PUBLISH, CPU per pair.
"$PY" - "$results" <<'EOF'
import re, statistics, sys
rows = [dict(re.findall(r"(\w+)=(\[[^\]]*\]|\S+)", l)) for l in open(sys.argv[1])]
def med(rate, side, f):
    return statistics.median(f(r) for r in rows if r["rate"] == rate and r["side"] == side)
lat = lambda key, i: (lambda r: float(r[key].strip("[]").split()[i]))
cols = [("REGISTER p99", lat("reg", 2)), ("PUBLISH p99", lat("pub", 2)),
        ("PUBLISH p99.9", lat("pub", 3)), ("CPU µs/pair", lambda r: float(r["cpu_us_pair"]))]
print(f"{'rate':>6} " + " ".join(f"{n + ' A':>15} {n + ' B':>15} {'B/A':>5}" for n, _ in cols))
for rate in sorted({r["rate"] for r in rows}, key=int):
    out = []
    for _, f in cols:
        a, b = med(rate, "A", f), med(rate, "B", f)
        out.append(f"{a:15.3f} {b:15.3f} {b / a if a else float('nan'):5.2f}")
    print(f"{rate:>6} " + " ".join(out))
EOF
