#!/usr/bin/env bash
# fuzz.sh - build and run pgwharf's libFuzzer targets (tests/fuzz).
#
#   scripts/fuzz.sh TARGET|all [SECONDS] [-- LIBFUZZER_ARGS...]
#   scripts/fuzz.sh --list
#
# Builds the targets with clang, ASan and UBSan in build-fuzz/ (configured
# on first use: CC=clang cmake -DPGW_FUZZ=ON -DPGW_SANITIZE=ON), then runs
# each chosen target for SECONDS (default 60) on one core, starting from its
# seeds in tests/fuzz/corpus/TARGET and the inputs earlier runs found
# (build-fuzz/corpus/TARGET, which grows across runs).  Crashes, leaks and
# timeouts land in build-fuzz/artifacts/TARGET/ and make the script exit 1;
# reproduce one with build-fuzz/tests/fuzz/fuzz_TARGET FILE.
# Prints one line per target: runs, execs/s, coverage, corpus size.
#
# Targets: startup wire_error conf authfile scram hba track track_model aq_reply.
# Environment: PGW_FUZZ_BUILD_DIR (default build-fuzz), PGW_JOBS,
# PGW_FUZZ_NO_BUILD=1 (use what is built).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd -P)
BUILD=${PGW_FUZZ_BUILD_DIR:-build-fuzz}
JOBS=${PGW_JOBS:-$(nproc 2>/dev/null || echo 2)}
ALL=(startup wire_error conf authfile scram hba track track_model aq_reply words)

usage() { sed -n '2,19p' "$0"; }

[[ $# -ge 1 ]] || { usage >&2; exit 2; }
case $1 in
    -h|--help) usage; exit 0 ;;
    --list) printf '%s\n' "${ALL[@]}"; exit 0 ;;
esac
what=$1
shift
secs=60
if [[ $# -gt 0 && $1 != -- ]]; then
    secs=$1
    shift
fi
[[ $secs =~ ^[0-9]+$ ]] || { echo "fuzz.sh: SECONDS must be a number" >&2; exit 2; }
extra=()
if [[ $# -gt 0 && $1 == -- ]]; then
    shift
    extra=("$@")
fi

if [[ $what == all ]]; then
    targets=("${ALL[@]}")
else
    targets=()
    for t in ${what//,/ }; do
        [[ " ${ALL[*]} " == *" $t "* ]] || { echo "fuzz.sh: unknown target $t (see --list)" >&2; exit 2; }
        targets+=("$t")
    done
fi

if ! command -v clang >/dev/null 2>&1; then
    echo "fuzz.sh: clang not found (scripts/deps.sh --fuzz installs clang and libclang-rt-14-dev)" >&2
    exit 1
fi

if [[ ${PGW_FUZZ_NO_BUILD:-0} != 1 ]]; then
    CC=clang PGW_JOBS=$JOBS scripts/build.sh "$BUILD" --target fuzzers -- \
        -DPGW_FUZZ=ON -DPGW_SANITIZE=ON -DPGW_TESTS=ON >/dev/null
fi

# The sanitizers stop at the first report; libFuzzer saves the input.
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

failed=()
for t in "${targets[@]}"; do
    # Absolute paths: fuzz_conf works in a temp directory of its own.
    bdir=$(cd "$BUILD" && pwd -P)
    bin=$bdir/tests/fuzz/fuzz_$t
    work=$bdir/corpus/$t
    art=$bdir/artifacts/$t
    log=$bdir/fuzz-$t.log
    mkdir -p "$work" "$art"
    dict=()
    [[ -f tests/fuzz/$t.dict ]] && dict=(-dict="$ROOT/tests/fuzz/$t.dict")
    set +e
    "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=16384 \
        -print_final_stats=1 -artifact_prefix="$art/" "${dict[@]}" "${extra[@]}" \
        "$work" "$ROOT/tests/fuzz/corpus/$t" >"$log" 2>&1
    rc=$?
    set -e
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
    corp=$(find "$work" -type f | wc -l)
    if [[ $rc -eq 0 ]]; then
        printf 'fuzz %-11s ok    %10s runs %7s/s  cov %5s  corpus %5s  (%ss)\n' \
            "$t" "${runs:-?}" "${speed:-?}" "${cov:-?}" "$corp" "$secs"
    else
        printf 'fuzz %-11s FAIL  exit %d after %s runs; log %s, artifacts %s\n' \
            "$t" "$rc" "${runs:-?}" "$log" "$art"
        grep -E '^(==[0-9]+==|SUMMARY|.*runtime error)' "$log" | head -5 >&2 || true
        ls "$art" >&2 || true
        failed+=("$t")
    fi
done

if [[ ${#failed[@]} -gt 0 ]]; then
    echo "fuzz.sh: failed: ${failed[*]}" >&2
    exit 1
fi
