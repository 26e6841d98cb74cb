#!/usr/bin/env bash
# bench/durable-load.sh: the sustained REGISTER+PUBLISH pair rate of `mcx-authz serve` with the
# embedded store (redb, every 2xx after a durable commit) beside the same server in memory, in
# the same run (issue 13). For each rate the two modes alternate, each on a fresh server (and a
# fresh data dir), so that both see the same machine load.
#
#   bench/durable-load.sh                 # RATES="500 1000 2000 3000 4000", 5 s steps
#   RATES="1000 2000" STEP_SECS=3 bench/durable-load.sh
#   PG_URL="host=127.0.0.1 port=25432 user=mcx dbname=postgres" bench/durable-load.sh
#       # adds three PostgreSQL modes (schema by `mcx-authz store migrate`; its tables are
#       # emptied with psql before each start): `postgres` (one instance, group commit),
#       # `pg-sh1` (one instance, `[store] shared = true`: read first, compare-and-set per input)
#       # and `pg-sh2` (two shared instances on the one database, each offered half the rate by
#       # its own `mcx-authz load` with its own half of the users; the figures are the sums)
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

server_pids=()
stop_server() {
  for pid in "${server_pids[@]}"; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  server_pids=()
}
trap stop_server EXIT

start_server() { # mode [instance: 0, 1]
  local mode=$1 i=${2:-0} store port
  port=$(( PORT + 10 * i ))
  if [[ $mode == pg-sh* ]]; then
    if [[ $i == 0 ]]; then
      "$bin" store migrate --url "$PG_URL" >/dev/null
      psql "$PG_URL" -q -c "TRUNCATE mcx_impu, mcx_csk, mcx_token_owner, mcx_key_message; UPDATE mcx_meta SET value = '0' WHERE key = 'seq'"
    fi
    store="[store]
backend = \"postgres\"
url = \"$PG_URL\"
shared = true"
  elif [[ $mode == redb ]]; then
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
  cat >"$WORK/mcx$i.toml" <<EOF
[sip]
udp = ["127.0.0.1:$port"]
tcp = ["127.0.0.1:$port"]

[admin]
listen = "127.0.0.1:$(( port + 1 ))"

[http]
enabled = false

[policy]
token_protection = "optional"

$store
EOF
  RUST_LOG=warn "$bin" serve --data-dir "$WORK/lab" --config "$WORK/mcx$i.toml" >"$WORK/serve$i.out" 2>"$WORK/serve$i.err" &
  server_pids+=($!)
  for _ in $(seq 100); do
    grep -q '^policy' "$WORK/serve$i.out" 2>/dev/null && return 0
    sleep 0.05
  done
  log "server did not start: $(cat "$WORK/serve$i.err")"
  exit 1
}

metric() { # name: summed over the running instances
  local sum=0 v
  for i in $(seq 0 $(( ${#server_pids[@]} - 1 ))); do
    v=$(curl -s "http://127.0.0.1:$(( PORT + 10 * i + 1 ))/metrics" | awk -v n="$1" '$1 == n { print $2 }')
    sum=$(( sum + ${v:-0} ))
  done
  echo "$sum"
}

# The users, and each half for the two-instance mode.
{ head -1 "$WORK/users.csv"; tail -n +2 "$WORK/users.csv" | awk 'NR % 2 == 1'; } >"$WORK/users0.csv"
{ head -1 "$WORK/users.csv"; tail -n +2 "$WORK/users.csv" | awk 'NR % 2 == 0'; } >"$WORK/users1.csv"

printf '%-6s %-7s %-5s %9s %9s %9s %7s %10s %9s %9s %9s\n' rate mode pass ok retrans "p99 ms" "p50 ms" commits/s "mean grp" "max grp" conflicts
for rate in $RATES; do
  calls=$(( rate * STEP_SECS ))
  modes="memory redb"
  [[ -n ${PG_URL:-} ]] && modes="$modes postgres pg-sh1 pg-sh2"
  for mode in $modes; do
    if [[ $mode == pg-sh2 ]]; then
      start_server "$mode" 0
      start_server "$mode" 1
      # Each instance is offered half the rate, with its own half of the users.
      lpids=()
      for i in 0 1; do
        "$bin" load "127.0.0.1:$(( PORT + 10 * i ))" --scenario register-publish --rate $(( rate / 2 )) \
          --calls $(( calls / 2 )) --csv "$WORK/users$i.csv" --json "$WORK/load-$rate-$mode-$i.json" >/dev/null 2>&1 &
        lpids+=($!)
      done
      wait "${lpids[@]}" || true
      jsons=("$WORK/load-$rate-$mode-0.json" "$WORK/load-$rate-$mode-1.json")
      calls=$(( calls / 2 * 2 ))
    else
      start_server "$mode"
      jsons=("$WORK/load-$rate-$mode.json")
      # Users from the top of the CSV; each step uses its own server, so reuse is fine.
      "$bin" load "127.0.0.1:$PORT" --scenario register-publish --rate "$rate" --calls "$calls" \
        --csv "$WORK/users.csv" --json "${jsons[0]}" >/dev/null 2>&1 || true
    fi
    # Summed over the load generators; the p99 and p50 are the worse generator's.
    read -r ok retrans p99 p50 <<<"$(python3 - "${jsons[@]}" <<'PY'
import json, sys
rs = [json.load(open(f)) for f in sys.argv[1:]]
ps = [r["methods"]["PUBLISH"]["latency_us"] for r in rs]
print(sum(r["calls_ok"] for r in rs), sum(r["retransmissions"] for r in rs),
      max(p["p99"] for p in ps) / 1000, max(p["p50"] for p in ps) / 1000)
PY
)"
    cps="-"; mean="-"; maxg="-"; conflicts="-"
    if [[ $mode == pg-sh* ]]; then
      # One commit per state-changing input (no group commit); conflicts re-run the input.
      commits=$(metric mcx_store_commits_total); conflicts=$(metric mcx_store_conflicts_total)
      cps=$(python3 -c "print(round(${commits:-0} / $STEP_SECS))")
      mean=1; maxg=1
    elif [[ $mode != memory ]]; then
      commits=$(metric mcx_store_commits_total); batches=$(metric mcx_store_batches_total)
      maxg=$(metric mcx_store_max_group)
      cps=$(python3 -c "print(round(${commits:-0} / $STEP_SECS))")
      mean=$(python3 -c "print(round(${batches:-0} / max(1, ${commits:-0}), 2))")
    fi
    pass=no
    if [[ $ok == "$calls" && $retrans == 0 ]] && python3 -c "import sys; sys.exit(0 if $p99 <= $P99_MS else 1)"; then
      pass=yes
    fi
    printf '%-6s %-7s %-5s %9s %9s %9s %7s %10s %9s %9s %9s\n' "$rate" "$mode" "$pass" "$ok/$calls" "$retrans" "$p99" "$p50" "$cps" "$mean" "$maxg" "$conflicts"
    calls=$(( rate * STEP_SECS ))
    stop_server
  done
done
log "load average $(cut -d' ' -f1-3 /proc/loadavg); work dir $WORK"
