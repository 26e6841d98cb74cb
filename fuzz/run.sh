#!/usr/bin/env bash
# fuzz/run.sh: runs every cargo-fuzz target (or the ones named) for SECONDS each, one after the
# other, and prints per target the executions reached, the executions per second and the crashes
# found. Exit status 1 when any target crashed (its reproducer is in fuzz/artifacts/<target>/).
#
#   fuzz/run.sh [SECONDS] [TARGET...]        # default 60 s, every target of `cargo fuzz list`
#   SANITIZER=address fuzz/run.sh 600 sip_edge  # default: none (safe Rust; fastest executions)
#   JOBS=2 fuzz/run.sh 600                    # parallel libFuzzer jobs per target (default 1)
#   FUZZ_NO_BUILD=1 fuzz/run.sh 600           # run the binaries of the last build as they are
#
# The corpus of each target lives in fuzz/corpus/<target>/ (git-ignored) and grows from run to
# run; it is seeded from tests/fixtures/ the first time. cargo-fuzz needs a nightly compiler or
# RUSTC_BOOTSTRAP=1 (set here); `cargo install cargo-fuzz` if it is missing.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-60}
shift || true
export RUSTC_BOOTSTRAP=1
sanitizer=${SANITIZER:-none}
jobs=${JOBS:-1}

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "cargo-fuzz is not installed: run  cargo install cargo-fuzz" >&2
  exit 2
fi

targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
  mapfile -t targets < <(cargo fuzz list)
fi

seed() {
  local target=$1 dir=corpus/$1
  mkdir -p "$dir"
  [[ -n $(ls -A "$dir") ]] && return 0
  case $target in
    sip_edge) cp ../tests/fixtures/sip/*.sip ../tests/fixtures/sip/*.tcp "$dir"/ ;;
    mcptt_info)
      # Selector byte 0 (MCPTT) + each fixture's body, and the whole fixture for the splitter.
      local i=0 f
      for f in ../tests/fixtures/sip/*.sip; do
        { printf '\x00'; sed -n '/^\r\{0,1\}$/,$p' "$f"; } >"$dir/body-$i"
        { printf '\x05'; cat "$f"; } >"$dir/multipart-$i"
        i=$((i + 1))
      done ;;
    token)
      { printf '\x00'; cat ../tests/fixtures/token/expired-2017.jwt; } >"$dir/expired"
      printf '\x01{"alg":"ES256","typ":"JWT"}\x00{"iss":"https://idms.mcx-lab.invalid","exp":1800000600,"iat":1800000000,"scope":"3gpp:mc:ptt_service","mcptt_id":"sip:alice@example.org"}' >"$dir/signed" ;;
    *) : ;;
  esac
}

# One build for every target (the library is compiled once), then each fuzzer binary is run
# directly: editing the sources while a run goes on does not trigger a rebuild.
if [[ -z ${FUZZ_NO_BUILD:-} ]]; then
  echo "building every target (sanitizer $sanitizer)" >&2
  nice -n 10 cargo fuzz build -O -s "$sanitizer" >&2
fi
bindir=target/x86_64-unknown-linux-gnu/release

total=0
crashed=0
printf '%-12s %8s %14s %10s %8s\n' target seconds executions exec/s crashes
for t in "${targets[@]}"; do
  seed "$t"
  mkdir -p "artifacts/$t"
  before=$(find "artifacts/$t" -type f | wc -l)
  log=$(mktemp)
  status=0
  parallel=()
  if [[ $jobs -gt 1 ]]; then parallel=(-jobs="$jobs" -workers="$jobs"); fi
  nice -n 10 "$bindir/$t" -artifact_prefix="artifacts/$t/" -max_total_time="$secs" \
    -print_final_stats=1 "${parallel[@]}" "corpus/$t" >"$log" 2>&1 || status=$?
  if [[ $jobs -gt 1 ]]; then cat fuzz-*.log >>"$log" 2>/dev/null || true; rm -f fuzz-*.log; fi
  # libFuzzer's final stats: "stat::number_of_executed_units: N" (one per job).
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | awk '{s+=$2} END {print s+0}')
  after=$(find "artifacts/$t" -type f | wc -l)
  crashes=$((after - before))
  if [[ $status -ne 0 && $crashes -eq 0 ]]; then crashes=1; fi
  printf '%-12s %8s %14s %10s %8s\n' "$t" "$secs" "$execs" "$((execs / (secs > 0 ? secs : 1)))" "$crashes"
  if [[ $crashes -gt 0 ]]; then
    crashed=1
    echo "  $t: see fuzz/artifacts/$t/ and the log $log" >&2
    grep -m5 -E 'panicked|ERROR|SUMMARY' "$log" >&2 || true
  else
    rm -f "$log"
  fi
  total=$((total + execs))
done
echo "total executions: $total"
exit $crashed
