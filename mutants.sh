#!/usr/bin/env bash
# Mutation testing where a wrong line matters most (issue 16): the machine, the SIP edge's
# translation and parser, and the token validator. For each file, cargo-mutants changes one line
# at a time and runs the tests that cover that file; a mutant that no test notices is a gap.
#
#   ./mutants.sh                      # the four files below, one after the other
#   ./mutants.sh src/sip/adapter.rs   # one file
#   ./mutants.sh --in-diff FILE.diff  # only mutants in lines FILE.diff touches (.ci/mutants-diff.sh)
#
# Environment:
#   MUTANTS_TIMEOUT        per test run, seconds (default 300); a mutant that hangs is "timeout"
#   MUTANTS_BUILD_TIMEOUT  per build, seconds (default 900)
#   MUTANTS_IN_PLACE=1     mutate this tree and use its target/ (CI's fresh clone); otherwise
#                          cargo-mutants works in a copy (with a copy of target/), so you can keep
#                          editing here while it runs
#   MUTANTS_OUT            where the reports go (default target/mutants)
#   MUTANTS_EXTRA          extra cargo-mutants arguments (e.g. "--shard 1/4" or "-F parse_u32")
#
# Tests per file: the fastest targets that cover it (the machine is 2 cores shared by many
# builders; the whole workspace suite per mutant would take days). Named in `targets_for`.
#
# Report: killed / viable per file (killed = caught + timeout; unviable mutants do not build and
# do not count), every survivor, and whether it is explained in docs/assurance.md. Exit status:
# 0 if every file reaches 95 % and every survivor is explained there, 1 otherwise, 2 on a usage or
# tool error.
set -uo pipefail
cd "$(dirname "$0")"

FILES_DEFAULT=(model/src/machine.rs src/sip/adapter.rs src/sip/parse.rs src/token/validator.rs)
TIMEOUT=${MUTANTS_TIMEOUT:-300}
BUILD_TIMEOUT=${MUTANTS_BUILD_TIMEOUT:-900}
OUT=${MUTANTS_OUT:-target/mutants}
ASSURANCE=docs/assurance.md

if ! cargo mutants --version >/dev/null 2>&1; then
    echo "mutants.sh: cargo-mutants is missing: cargo install cargo-mutants --locked --version 27.1.0" >&2
    exit 2
fi

# The package and the test targets that cover a source file.
targets_for() {
    case "$1" in
        model/src/*)
            echo "mcx-model --lib --test machine --test model_scenarios --test model_variants" ;;
        src/sip/*)
            echo "mcx-authz --lib --test sip_edge --test translation --test conformance" ;;
        src/token/*)
            echo "mcx-authz --lib --test token_catalogue --test token_mutation" ;;
        sec/src/*)
            echo "mcx-sec --lib --tests" ;;
        src/*)
            echo "mcx-authz --lib --test sip_edge --test translation --test conformance --test server" ;;
        *) return 1 ;;
    esac
}

common_args=(--profile release --timeout "$TIMEOUT" --build-timeout "$BUILD_TIMEOUT"
    --baseline skip --no-times --colors never)
if [ "${MUTANTS_IN_PLACE:-0}" = 1 ]; then
    common_args+=(--in-place)
else
    common_args+=(--copy-target true)
fi
# shellcheck disable=SC2206
extra=(${MUTANTS_EXTRA:-})

# Runs cargo-mutants on `file` (optionally restricted to a diff); reports; returns 1 on a gap.
run_one() {
    local file=$1 diff=${2:-}
    local spec pkg name out
    spec=$(targets_for "$file") || { echo "mutants.sh: no test targets known for $file" >&2; return 2; }
    pkg=${spec%% *}
    # shellcheck disable=SC2206
    local tests=(${spec#* })
    name=$(echo "$file" | tr '/.' '__')
    out="$OUT/$name"
    mkdir -p "$out"
    local args=("${common_args[@]}" --package "$pkg" --test-package "$pkg" --file "$file" -o "$out")
    [ -n "$diff" ] && args+=(--in-diff "$diff")
    echo "== $file: tests: -p $pkg ${tests[*]}"
    nice -n 10 cargo mutants "${args[@]}" "${extra[@]}" -- "${tests[@]}" >"$out/log.txt" 2>&1
    local rc=$?
    report "$file" "$out/mutants.out" "$rc"
}

count() { if [ -f "$1" ]; then grep -c . "$1" || true; else echo 0; fi; }

report() {
    local file=$1 dir=$2 rc=$3
    if [ ! -d "$dir" ]; then
        echo "   cargo-mutants produced no report (exit $rc); see ${dir%/mutants.out}/log.txt"
        return 2
    fi
    local caught missed timeout unviable killed viable
    caught=$(count "$dir/caught.txt")
    missed=$(count "$dir/missed.txt")
    timeout=$(count "$dir/timeout.txt")
    unviable=$(count "$dir/unviable.txt")
    killed=$((caught + timeout))
    viable=$((killed + missed))
    if [ "$viable" -eq 0 ]; then
        echo "   no viable mutants (unviable $unviable)"
        return 0
    fi
    local pct=$((1000 * killed / viable))
    printf '   %s: killed %d of %d viable (%d.%d %%): caught %d, timeout %d, missed %d; unviable %d\n' \
        "$file" "$killed" "$viable" $((pct / 10)) $((pct % 10)) "$caught" "$timeout" "$missed" "$unviable"
    local gap=0 line
    if [ "$missed" -gt 0 ]; then
        while IFS= read -r line; do
            # A survivor is explained when one line of docs/assurance.md names its file and
            # quotes its mutation ("replace < with <= in Machine::publish"); line numbers move.
            local what=${line#*: }
            if grep -F -- "$file" "$ASSURANCE" 2>/dev/null | grep -qF -- "$what"; then
                echo "   survivor (explained in $ASSURANCE): $line"
            else
                echo "   SURVIVOR (not explained): $line"
                gap=1
            fi
        done <"$dir/missed.txt"
    fi
    if [ "$pct" -lt 950 ]; then gap=1; fi
    return $gap
}

status=0
if [ "${1:-}" = "--in-diff" ]; then
    diff=${2:?--in-diff needs a diff file}
    # The .rs files the diff touches that have known test targets.
    mapfile -t changed < <(grep -E '^\+\+\+ b/.*\.rs$' "$diff" | sed 's|^+++ b/||' | sort -u)
    for f in "${changed[@]}"; do
        targets_for "$f" >/dev/null || { echo "== $f: not mutated (no test targets, e.g. a test or bench)"; continue; }
        [ -f "$f" ] || continue
        run_one "$f" "$diff" || status=1
    done
    exit $status
fi

files=("$@")
[ ${#files[@]} -eq 0 ] && files=("${FILES_DEFAULT[@]}")
for f in "${files[@]}"; do
    run_one "$f" || status=1
done
exit $status
