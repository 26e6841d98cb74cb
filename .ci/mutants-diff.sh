#!/usr/bin/env bash
# CI: mutation testing of the lines the last commit changed (issue 16), capped at 10 minutes.
#
#   bash .ci/mutants-diff.sh [REV]      # default REV = HEAD~1 (the diff REV..HEAD)
#
# Runs ../mutants.sh --in-diff on `git diff REV` (only .rs files of the three crates with known
# test targets; tests, benches and docs are not mutated), in place (CI's clone is fresh and its
# target/ is warm from `cargo test --release`; mutants.sh builds the mutated crate once unmutated
# with its cheap overrides, then each mutant incrementally), each mutant with a per-run timeout,
# the whole run under a 10-minute cap (MUTANTS_DIFF_CAP seconds).
# Exit status: 0 when nothing changed or every mutant in the diff was killed or explained in
# docs/assurance.md; 1 when one was missed; when the cap cuts the run, the mutants finished so
# far decide (a note says how far it got).
set -uo pipefail
cd "$(dirname "$0")/.."
rev=${1:-HEAD~1}
cap=${MUTANTS_DIFF_CAP:-600}

if ! git rev-parse --verify -q "$rev" >/dev/null; then
    echo "mutants-diff: no $rev (first commit?): nothing to compare"
    exit 0
fi
diff=$(mktemp --suffix=.diff)
trap 'rm -f "$diff"' EXIT
git diff "$rev" -- '*.rs' >"$diff"
if ! grep -qE '^\+\+\+ b/(model/src|src|sec/src)/.*\.rs$' "$diff"; then
    echo "mutants-diff: no library source changed since $rev: nothing to mutate"
    exit 0
fi
if ! cargo mutants --version >/dev/null 2>&1; then
    echo "mutants-diff: installing cargo-mutants"
    cargo install cargo-mutants --locked --version 27.1.0 --quiet || exit 2
fi
export MUTANTS_IN_PLACE=1 MUTANTS_TIMEOUT=${MUTANTS_TIMEOUT:-120} MUTANTS_OUT=target/mutants-diff
# SIGINT lets cargo-mutants restore the tree and write what it has.
timeout --signal=INT --kill-after=60 "$cap" ./mutants.sh --in-diff "$diff"
rc=$?
if [ $rc -eq 124 ] || [ $rc -eq 130 ]; then
    echo "mutants-diff: cut at the ${cap}s cap; judging the mutants finished so far"
    missed=$(cat target/mutants-diff/*/mutants.out/missed.txt 2>/dev/null | grep -c .)
    # (mutants the cap left unrun are not judged: the next commit's run or ./mutants.sh does)
    if [ "${missed:-0}" -gt 0 ]; then
        cat target/mutants-diff/*/mutants.out/missed.txt
        exit 1
    fi
    exit 0
fi
exit $rc
