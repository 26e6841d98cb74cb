#!/usr/bin/env bash
# Runs the tests/sipp functional scenarios against one SIP server and reports each result.
#
#   tests/sipp/run-suite.sh [-t u1|t1] [-s "scenario ..."] [-- extra sipp args] HOST:PORT CSV_DIR
#
# CSV_DIR holds one <scenario>.csv per scenario (tests/sipp/mint_csv.py suite, or the Rust
# harness's own minting). Exit status: number of failed scenarios (0 = all passed). SIPp's error
# and message logs of failed scenarios stay in CSV_DIR/logs/. Loopback targets only; every
# sipp run is bounded by -timeout and by `timeout`.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
transport=u1
scenarios="register_authorize refresh_stale_etag settings_only user_switch impu_change deregistration log_off bad_tokens"
extra=()
while [[ $# -gt 0 ]]; do
  case $1 in
    -t) transport=$2; shift 2 ;;
    -s) scenarios=$2; shift 2 ;;
    --) shift; while [[ $# -gt 2 ]]; do extra+=("$1"); shift; done ;;
    *) break ;;
  esac
done
[[ $# -eq 2 ]] || { sed -n '2,10p' "$0"; exit 64; }
target=$1
csv_dir=$2
case ${target%:*} in
  127.*|localhost|::1|\[::1\]) ;;
  *) echo "refusing non-loopback target $target" >&2; exit 64 ;;
esac
logs=$csv_dir/logs
mkdir -p "$logs"

failed=0
port=$(( 20000 + RANDOM % 20000 ))
for s in $scenarios; do
  port=$(( port + 1 ))
  rm -f "$logs/$s".*
  set +e
  timeout 60 sipp -sf "$here/$s.xml" "$target" -t "$transport" -i 127.0.0.1 -p "$port" \
    -m 1 -inf "$csv_dir/$s.csv" -nostdin -timeout 30s -timeout_error -default_behaviors all,-bye \
    -trace_err -error_file "$logs/$s.err" -trace_msg -message_file "$logs/$s.msg" \
    -trace_logs -log_file "$logs/$s.log" "${extra[@]}" >"$logs/$s.out" 2>&1
  rc=$?
  set -e
  if [[ $rc -eq 0 ]]; then
    echo "PASS $s"
    rm -f "$logs/$s".*
  else
    echo "FAIL $s (sipp exit $rc; logs in $logs/$s.*)"
    failed=$(( failed + 1 ))
  fi
done
exit "$failed"
