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
#   MUTANTS_TIMEOUT        per test run, seconds (default 120); a mutant that hangs a test is
#                          "timeout" (killed)
#   MUTANTS_BUILD_TIMEOUT  per build, seconds (default 900); a build that takes longer is listed
#                          as not run (neither killed nor missed)
#   MUTANTS_JOBS           mutants built and tested at once in copies (default 2)
#   MUTANTS_IN_PLACE=1     mutate this tree and use its target/ (CI's fresh clone, or a `cp -a`
#                          copy per shard); one mutant at a time, after an unmutated warm-up build.
#                          Otherwise cargo-mutants works in copies (each with a copy of target/,
#                          ~5 GB, whose lost modification times make cargo rebuild every
#                          dependency once per copy), so you can keep editing here while it runs
#   MUTANTS_CONFORMANCE=1  also run tests/conformance.rs for each SIP-edge mutant (+~13 s each)
#   MUTANTS_OUT            where the reports go (default target/mutants)
#   MUTANTS_EXTRA          extra cargo-mutants arguments ("--shard 1/2 --sharding round-robin",
#                          "-F parse_u32")
#
# Sharded on one machine (what docs/assurance.md measured), e.g. two shards:
#   for k in 0 1; do cp -a . /tmp/mut-$k; (cd /tmp/mut-$k && MUTANTS_IN_PLACE=1 \
#     MUTANTS_EXTRA="--shard $k/2 --sharding round-robin" ./mutants.sh src/sip/adapter.rs) & done
#
# Tests per file: the fastest targets that cover it (the whole workspace suite per mutant would
# take days on a shared 2-core machine). Named in `targets_for`; passed to cargo-mutants' build as
# well as to its test run. Files that share their targets are mutated in one cargo-mutants run.
# Build the release profile first (`cargo test --release --no-run`): the mutants reuse its
# dependencies; only the mutated crate is built differently (`cheap_build_args`).
#
# Report: killed / viable per file (killed = caught + test timeout; unviable mutants do not build
# and do not count), seconds a mutant, every survivor, and whether it is explained in
# docs/assurance.md. Exit status: 0 if every file reaches 95 %, every survivor is explained there
# and no mutant went unrun, 1 otherwise, 2 on a usage or tool error.
set -uo pipefail
cd "$(dirname "$0")"

FILES_DEFAULT=(src/sip/adapter.rs src/sip/parse.rs src/token/validator.rs model/src/machine.rs)
TIMEOUT=${MUTANTS_TIMEOUT:-120}
BUILD_TIMEOUT=${MUTANTS_BUILD_TIMEOUT:-900}
OUT=${MUTANTS_OUT:-target/mutants}
ASSURANCE=docs/assurance.md

if ! cargo mutants --version >/dev/null 2>&1; then
    echo "mutants.sh: cargo-mutants is missing: cargo install cargo-mutants --locked --version 27.1.0" >&2
    exit 2
fi

# The package and the test targets that cover a source file: the unit tests of the library (each
# of the four files has its own), the edge's fixture and translation tests, the token catalogue
# and the JWKS URL tests. Conformance (about 10 s a mutant at load) only with
# MUTANTS_CONFORMANCE=1. Files with the same targets share one cargo-mutants run.
targets_for() {
    local conformance=""
    [ "${MUTANTS_CONFORMANCE:-0}" = 1 ] && conformance=" --test=conformance"
    case "$1" in
        model/src/*)
            echo "mcx-model --lib --test=machine --test=machine_decisions --test=model_scenarios --test=model_variants" ;;
        src/sip/*)
            echo "mcx-authz --lib --test=sip_edge --test=translation$conformance" ;;
        src/token/*)
            echo "mcx-authz --lib --test=token_catalogue --test=token_mutation --test=token_jwks_url" ;;
        sec/src/*)
            echo "mcx-sec --lib --tests" ;;
        src/*)
            echo "mcx-authz --lib --test=sip_edge --test=translation --test=server$conformance" ;;
        *) return 1 ;;
    esac
}

# Tests a group's run leaves out, as arguments to the test binaries. The three largest
# configurations of tests/model_variants.rs (22 s, 10 s and 6 s in release; several times that in
# the opt-level 0 build below, past the per-test timeout when two shards share the machine) are
# skipped for the machine: the seven others check the same properties on smaller configurations.
skips_for() {
    case "$1" in
        model/src/*) echo "--skip duplicating_network --skip a_restart_and_a_device_limit --skip ct1_rel18_small" ;;
        *) echo "" ;;
    esac
}

# A cheap build for a mutant (issue 16): only the mutated workspace crate is built differently
# (opt-level 1, no debug info, incremental, 256 codegen units), through per-package overrides of
# the release profile, so every dependency is the one `cargo build --release` already built. A
# dedicated [profile.mutants] would rebuild all ~400 dependencies into target/mutants first.
# Measured on this 2-core machine at load ~9: a one-line change in src/sip/parse.rs rebuilds the
# library and its test binaries in ~24 s (release as is: 4-5 min).
cheap_build_args() {
    local pkg=$1 k
    for k in opt-level=0 debug=0 codegen-units=256 incremental=true; do
        printf -- '--cargo-arg=--config=profile.release.package.%s.%s\n' "$pkg" "$k"
    done
}

common_args=(--profile release --timeout "$TIMEOUT" --build-timeout "$BUILD_TIMEOUT"
    --baseline skip --no-times --colors never)
if [ "${MUTANTS_IN_PLACE:-0}" = 1 ]; then
    common_args+=(--in-place)
else
    # cargo-mutants' copy of target/ does not keep modification times, so cargo rebuilds every
    # dependency once in each copy (~15 min here); MUTANTS_IN_PLACE=1 in a `cp -a` copy of the
    # tree (one per --shard) avoids that.
    common_args+=(--copy-target true --jobs "${MUTANTS_JOBS:-2}")
fi
# shellcheck disable=SC2206
extra=(${MUTANTS_EXTRA:-})

# Runs cargo-mutants once on `files` (which share their test targets; optionally restricted to a
# diff); reports per file; returns 1 on a gap.
run_group() {
    local diff=$1
    shift
    local files=("$@")
    local spec pkg name out
    spec=$(targets_for "${files[0]}") || { echo "mutants.sh: no test targets known for ${files[0]}" >&2; return 2; }
    pkg=${spec%% *}
    # shellcheck disable=SC2206
    local tests=(${spec#* })
    # One report directory per group (two groups of one package must not share one).
    name=$(echo "$pkg-${files[0]##*/}" | tr '/.-' '___')
    out="$OUT/$name"
    mkdir -p "$out"
    local args=("${common_args[@]}" --package "$pkg" --test-package "$pkg" -o "$out")
    local f
    for f in "${files[@]}"; do args+=(--file "$f"); done
    mapfile -t cheap < <(cheap_build_args "$pkg")
    args+=("${cheap[@]}")
    [ -n "$diff" ] && args+=(--in-diff "$diff")
    echo "== ${files[*]}: tests: -p $pkg ${tests[*]}"
    local start=$SECONDS
    if [ "${MUTANTS_IN_PLACE:-0}" = 1 ]; then
        # Warm up: the unmutated tree built the way the mutants are, so the first mutant is an
        # incremental build too and does not hit the build timeout.
        local cfg=()
        mapfile -t cfg < <(cheap_build_args "$pkg" | sed 's/^--cargo-arg=//')
        nice -n 10 cargo test --no-run --release -p "$pkg" "${cfg[@]}" "${tests[@]}" \
            >"$out/warm-up.txt" 2>&1 || { echo "   warm-up build failed: $out/warm-up.txt"; return 2; }
    fi
    # The targets go to every cargo command as --cargo-arg, not after `--`: cargo-mutants passes
    # what follows `--` only to the test run, so its build (`cargo test --no-run`) would build
    # all ~25 test targets of mcx-authz for every mutant (that was most of the 4-5 minutes).
    local t
    for t in "${tests[@]}"; do args+=("--cargo-arg=$t"); done
    local skips
    skips=$(skips_for "${files[0]}")
    local post=()
    # shellcheck disable=SC2206
    [ -n "$skips" ] && post=(-- -- $skips)
    nice -n 10 cargo mutants "${args[@]}" "${extra[@]}" "${post[@]}" >"$out/log.txt" 2>&1
    local rc=$?
    echo "   cargo-mutants exit $rc after $((SECONDS - start)) s; log: $out/log.txt"
    local status=0
    for f in "${files[@]}"; do
        report "$f" "$out/mutants.out" "$rc" || status=1
    done
    return $status
}

# Per-file figures from cargo-mutants' outcomes.json: caught, missed, timeouts in the test phase
# (killed: a mutant that hangs a test), timeouts in the build phase (not killed and not missed:
# the build took longer than MUTANTS_BUILD_TIMEOUT, which says nothing about the tests; listed
# as not run), unviable (does not build; not counted), and the mean seconds a mutant took.
tally() {
    python3 - "$1" "$2" <<'PY'
import json, sys
path, file = sys.argv[1], sys.argv[2]
try:
    outcomes = json.load(open(path))["outcomes"]
except (OSError, ValueError, KeyError):
    sys.exit(0)
n = {"caught": 0, "missed": 0, "timeout": 0, "build_timeout": 0, "unviable": 0}
secs, runs, missed, not_run = 0.0, 0, [], []
for o in outcomes:
    m = o.get("scenario", {})
    m = m.get("Mutant") if isinstance(m, dict) else None
    if not m or m.get("file") != file:
        continue
    phases = o.get("phase_results", [])
    secs += sum(p.get("duration", 0) for p in phases)
    runs += 1
    summary = o.get("summary")
    last = phases[-1]["phase"] if phases else ""
    if summary == "CaughtMutant":
        n["caught"] += 1
    elif summary == "MissedMutant":
        n["missed"] += 1
        missed.append(m["name"])
    elif summary == "Timeout" and last == "Build":
        n["build_timeout"] += 1
        not_run.append(m["name"])
    elif summary == "Timeout":
        n["timeout"] += 1
    elif summary == "Unviable":
        n["unviable"] += 1
print(" ".join(str(n[k]) for k in ("caught", "missed", "timeout", "build_timeout", "unviable")),
      round(secs / runs) if runs else 0)
for name in missed:
    print("M " + name)
for name in not_run:
    print("N " + name)
PY
}

report() {
    local file=$1 dir=$2 rc=$3
    if [ ! -f "$dir/outcomes.json" ]; then
        # The changed lines hold no mutable code (e.g. only a #[cfg(test)] module changed).
        if [ "$rc" -eq 0 ] && grep -q "No mutants to filter" "${dir%/mutants.out}/log.txt" 2>/dev/null; then
            echo "   $file: no mutants in the lines given (nothing to test)"
            return 0
        fi
        echo "   cargo-mutants produced no report (exit $rc); see ${dir%/mutants.out}/log.txt"
        return 2
    fi
    local out caught missed timeout build_timeout unviable secs
    out=$(tally "$dir/outcomes.json" "$file")
    read -r caught missed timeout build_timeout unviable secs <<<"$(head -1 <<<"$out")"
    local killed=$((caught + timeout)) viable=$((caught + timeout + missed))
    if [ "$viable" -eq 0 ]; then
        echo "   $file: no viable mutants tested (unviable $unviable, build timeouts $build_timeout)"
        return 0
    fi
    local pct=$((1000 * killed / viable))
    printf '   %s: killed %d of %d viable (%d.%d %%): caught %d, test timeout %d, missed %d; unviable %d; build timeout (not run) %d; %d s a mutant\n' \
        "$file" "$killed" "$viable" $((pct / 10)) $((pct % 10)) "$caught" "$timeout" "$missed" \
        "$unviable" "$build_timeout" "$secs"
    local gap=0 line
    while IFS= read -r line; do
        case "$line" in
        "M "*)
            line=${line#M }
            # A survivor is explained when one line of docs/assurance.md names its file and
            # quotes its mutation ("replace < with <= in Machine::publish"); line numbers move.
            local what=${line#*: }
            if grep -F -- "$file" "$ASSURANCE" 2>/dev/null | grep -qF -- "$what"; then
                echo "   survivor (explained in $ASSURANCE): $line"
            else
                echo "   SURVIVOR (not explained): $line"
                gap=1
            fi
            ;;
        "N "*)
            echo "   not run (build timeout): ${line#N }"
            gap=1
            ;;
        esac
    done < <(tail -n +2 <<<"$out")
    if [ "$pct" -lt 950 ]; then gap=1; fi
    return $gap
}

# Runs `files` in groups that share their test targets (one cargo-mutants run per group).
run_all() {
    local diff=$1
    shift
    local -A groups=()
    local order=() f spec
    for f in "$@"; do
        spec=$(targets_for "$f") || { echo "== $f: not mutated (no test targets, e.g. a test or bench)"; continue; }
        [ -f "$f" ] || continue
        [ -n "${groups[$spec]:-}" ] || order+=("$spec")
        groups[$spec]+="$f "
    done
    local status=0
    for spec in "${order[@]}"; do
        # shellcheck disable=SC2086
        run_group "$diff" ${groups[$spec]} || status=1
    done
    return $status
}

if [ "${1:-}" = "--in-diff" ]; then
    diff=${2:?--in-diff needs a diff file}
    # The .rs files the diff touches.
    mapfile -t changed < <(grep -E '^\+\+\+ b/.*\.rs$' "$diff" | sed 's|^+++ b/||' | sort -u)
    run_all "$diff" "${changed[@]}"
    exit $?
fi

files=("$@")
[ ${#files[@]} -eq 0 ] && files=("${FILES_DEFAULT[@]}")
run_all "" "${files[@]}"
exit $?
