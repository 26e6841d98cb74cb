#!/usr/bin/env bash
# bench/durable-load.sh: the sustained REGISTER+PUBLISH pair rate of `mcx-authz serve` with the
# embedded store (redb, every 2xx after a durable commit) beside the same server in memory, in
# the same run (issue 13). For each rate the two modes alternate, each on a fresh server (and a
# fresh data dir), so that both see the same machine load.
#
#   bench/durable-load.sh                 # RATES="500 1000 2000 3000 4000", 5 s steps
#   RATES="1000 2000" STEP_SECS=3 bench/durable-load.sh
#   PG_URL="host=127.0.0.1 port=25432 user=mcx dbname=postgres" bench/durable-load.sh
#       # adds a third mode, PostgreSQL (schema by `mcx-authz store migrate`; its tables are
#       # emptied with psql before each start)
#
# A step passes when every call got its two 200s, nothing was retransmitted and the PUBLISH p99
# (from the scheduled send time) is at most P99_MS. Per durable step the server's /metrics give
# the commits (each is one durable redb commit: fsync'd), the batches written (one per
# state-changing request) and the largest group; the script prints commits/s and the mean and
# largest batches per commit. Everything runs on loopback, bounded, and stops by PID.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
RATES=${RATES:-"500 1000 2000 3000 4000"}
STEP_SECS=${STEP_SECS:-5}
P99_MS=${P99_MS:-10}
PORT=${PORT:-25370}
WORK=${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/mcx-durable-load.XXXXXX")}
bin=${MCX_BIN:-$repo/target/release/mcx-authz}
[[ -x $bin ]] || cargo build --release --quiet
mkdir -p "$WORK"

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

max_rate=0
for r in $RATES; do (( r > max_rate )) && max_rate=$r; done
users=$(( max_rate * STEP_SECS ))
"$bin" token keygen --alg ES256 --data-dir "$WORK/lab" >/dev/null
"$bin" token mint-csv --users "$users" --data-dir "$WORK/lab" --out "$WORK/users.csv" >/dev/null
log "minted $users users in $WORK/users.csv; load average $(cut -d' ' -f1-3 /proc/loadavg)"

server_pid=""
stop_server() {
  if [[ -n $server_pid ]]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
  fi
}
trap stop_server EXIT

start_server() { # mode
  local mode=$1 store
  if [[ $mode == redb ]]; then
    store="[store]
dir = \"$(mktemp -d "$WORK/store.XXXXXX")\""
  elif [[ $mode == postgres ]]; then
    "$bin" store migrate --url "$PG_URL" >/dev/null
    psql "$PG_URL" -q -c "TRUNCATE mcx_impu, mcx_csk, mcx_token_owner, mcx_key_message; UPDATE mcx_meta SET value = '0' WHERE key = 'seq'"
    store="[store]
backend = \"postgres\"
url = \"$PG_URL\""
  else
    store="[store]
backend = \"memory\""
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

$store
EOF
  RUST_LOG=warn "$bin" serve --data-dir "$WORK/lab" --config "$WORK/mcx.toml" >"$WORK/serve.out" 2>"$WORK/serve.err" &
  server_pid=$!
  for _ in $(seq 100); do
    grep -q '^policy' "$WORK/serve.out" 2>/dev/null && return 0
    sleep 0.05
  done
  log "server did not start: $(cat "$WORK/serve.err")"
  exit 1
}

metric() { # name
  curl -s "http://127.0.0.1:$(( PORT + 1 ))/metrics" | awk -v n="$1" '$1 == n { print $2 }'
}

printf '%-6s %-7s %-5s %9s %9s %9s %7s %10s %9s %9s\n' rate mode pass ok retrans "p99 ms" "p50 ms" commits/s "mean grp" "max grp"
for rate in $RATES; do
  calls=$(( rate * STEP_SECS ))
  modes="memory redb"
  [[ -n ${PG_URL:-} ]] && modes="$modes postgres"
  for mode in $modes; do
    start_server "$mode"
    json="$WORK/load-$rate-$mode.json"
    # Users from the top of the CSV; each step uses its own server, so reuse is fine.
    "$bin" load "127.0.0.1:$PORT" --scenario register-publish --rate "$rate" --calls "$calls" \
      --csv "$WORK/users.csv" --json "$json" >/dev/null 2>&1 || true
    read -r ok retrans p99 p50 <<<"$(python3 - "$json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
p = r["methods"]["PUBLISH"]["latency_us"]
print(r["calls_ok"], r["retransmissions"], p["p99"] / 1000, p["p50"] / 1000)
PY
)"
    cps="-"; mean="-"; maxg="-"
    if [[ $mode != memory ]]; then
      commits=$(metric mcx_store_commits_total); batches=$(metric mcx_store_batches_total)
      maxg=$(metric mcx_store_max_group)
      cps=$(python3 -c "print(round(${commits:-0} / $STEP_SECS))")
      mean=$(python3 -c "print(round(${batches:-0} / max(1, ${commits:-0}), 2))")
    fi
    pass=no
    if [[ $ok == "$calls" && $retrans == 0 ]] && python3 -c "import sys; sys.exit(0 if $p99 <= $P99_MS else 1)"; then
      pass=yes
    fi
    printf '%-6s %-7s %-5s %9s %9s %9s %7s %10s %9s %9s\n' "$rate" "$mode" "$pass" "$ok/$calls" "$retrans" "$p99" "$p50" "$cps" "$mean" "$maxg"
    stop_server
  done
done
log "load average $(cut -d' ' -f1-3 /proc/loadavg); work dir $WORK"
