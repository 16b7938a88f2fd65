#!/usr/bin/env bash
# test.sh - pgwharf's one test command (what CI runs, through .ci/run).
#
#   scripts/test.sh [--quick | --asan-only] [--fuzz | --no-fuzz] [--no-deps] [-- CTEST_ARGS...]
#
# On a fresh Debian 12 machine: installs the dependencies (scripts/deps.sh,
# as root), the Node test clients (npm ci in tests/integration), then
#   1. builds in build/ (RelWithDebInfo) and runs every ctest test: unit,
#      C integration and Python integration tests, the latter against a
#      throwaway PostgreSQL the ctest fixture starts (tests/pgcluster.sh);
#   2. builds again in build-asan/ with -DPGW_SANITIZE=ON (ASan + UBSan) and
#      runs ctest there with leak detection on;
#   3. builds the libFuzzer targets (tests/fuzz) with clang in build-fuzz/
#      and runs each for a few seconds from its seed corpus (scripts/fuzz.sh).
# Exits non-zero if any step fails; prints a summary at the end.
#
#   --quick       step 1 only (no sanitizer pass, no fuzzing)
#   --asan-only   step 2 only
#   --fuzz        run step 3 even with --quick or --asan-only
#   --no-fuzz     skip step 3 (and do not install clang)
#   --no-deps     skip apt and npm (same as PGW_SKIP_APT=1 PGW_SKIP_NPM=1)
#   -- ARGS       passed to ctest (e.g. -- -R unit.)
# Environment: PGW_BUILD_DIR / PGW_ASAN_BUILD_DIR / PGW_FUZZ_BUILD_DIR (default
# build, build-asan, build-fuzz), PGW_FUZZ_SECONDS (per target, default 10),
# PGW_JOBS (default nproc), PGW_SKIP_APT=1, PGW_SKIP_NPM=1.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd -P)

quick=0 asan_only=0 fuzz=auto
ctest_args=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --quick) quick=1 ;;
        --asan-only) asan_only=1 ;;
        --fuzz) fuzz=1 ;;
        --no-fuzz) fuzz=0 ;;
        --no-deps) export PGW_SKIP_APT=1 PGW_SKIP_NPM=1 ;;
        --) shift; ctest_args=("$@"); break ;;
        -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
        *) echo "test.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
if [[ $quick == 1 && $asan_only == 1 ]]; then
    echo "test.sh: --quick and --asan-only exclude each other" >&2
    exit 2
fi

if [[ $fuzz == auto ]]; then
    fuzz=$(( quick == 0 && asan_only == 0 ))
fi

BUILD=${PGW_BUILD_DIR:-build}
BUILD_ASAN=${PGW_ASAN_BUILD_DIR:-build-asan}
BUILD_FUZZ=${PGW_FUZZ_BUILD_DIR:-build-fuzz}
FUZZ_SECONDS=${PGW_FUZZ_SECONDS:-10}
JOBS=${PGW_JOBS:-$(nproc 2>/dev/null || echo 2)}
T0=$SECONDS

# --- bookkeeping for the summary -------------------------------------------

declare -a SUMMARY=()
failed=0

# step NAME CMD...: run, time, record PASS/FAIL; never aborts the script.
step() {
    local name=$1 t rc
    shift
    echo
    echo "=== $name"
    t=$SECONDS
    set +e
    "$@"
    rc=$?
    set -e
    if [[ $rc -eq 0 ]]; then
        SUMMARY+=("$(printf 'PASS  %-34s %4ss' "$name" $((SECONDS - t)))")
    else
        SUMMARY+=("$(printf 'FAIL  %-34s %4ss  (exit %d)' "$name" $((SECONDS - t)) "$rc")")
        failed=1
    fi
    return $rc
}

skip() { SUMMARY+=("$(printf 'SKIP  %-34s        %s' "$1" "$2")"); }

summary() {
    echo
    echo "=== summary ($((SECONDS - T0))s)"
    printf '%s\n' "${SUMMARY[@]}"
    if [[ $failed -eq 0 ]]; then
        echo "ALL PASSED"
    else
        echo "FAILED"
    fi
}

# If we are interrupted, the ctest fixture cleanup may not run: stop any
# cluster the fixtures left behind (by its PID, via pgcluster.sh).
cleanup() {
    local d
    for d in "$BUILD" "$BUILD_ASAN"; do
        if [[ -f $d/pgtest/cluster.state ]]; then
            tests/pgcluster.sh stop "$d/pgtest" >/dev/null 2>&1 || true
        fi
    done
}
trap cleanup EXIT
trap 'echo "test.sh: interrupted" >&2; exit 130' INT TERM

# --- dependencies -----------------------------------------------------------

deps() {
    if [[ $fuzz == 1 ]]; then scripts/deps.sh --fuzz; else scripts/deps.sh; fi
}

npm_install() {
    (
        cd tests/integration
        if [[ -f package-lock.json ]]; then
            npm ci --no-audit --no-fund --loglevel=error
        else
            npm install --no-audit --no-fund --loglevel=error
        fi
    )
}

# --- build + test -----------------------------------------------------------

build() {   # DIR [cmake args...]: scripts/build.sh, as the Dockerfile uses it
    local dir=$1
    shift
    PGW_JOBS=$JOBS scripts/build.sh "$dir" -- "$@"
}

run_ctest() {   # DIR
    ctest --test-dir "$1" --output-on-failure -j "$JOBS" "${ctest_args[@]}"
}

run_ctest_asan() {
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        run_ctest "$1"
}

# pass NAME DIR CMAKE_ARGS...: configure, build, test one build directory.
pass() {
    local name=$1 dir=$2
    shift 2
    if step "$name: build ($dir)" build "$dir" "$@"; then
        if [[ $name == asan ]]; then
            step "$name: ctest" run_ctest_asan "$dir" || true
        else
            step "$name: ctest" run_ctest "$dir" || true
        fi
    else
        skip "$name: ctest" "(build failed)"
    fi
}

if [[ ${PGW_SKIP_APT:-0} == 1 ]]; then
    skip "deps (apt)" "(PGW_SKIP_APT=1)"
else
    step "deps (apt)" deps || true
fi

if [[ ${PGW_SKIP_NPM:-0} == 1 ]]; then
    skip "npm ci (tests/integration)" "(PGW_SKIP_NPM=1)"
elif [[ ! -f tests/integration/package.json ]]; then
    skip "npm ci (tests/integration)" "(no package.json)"
elif ! command -v npm >/dev/null 2>&1; then
    step "npm ci (tests/integration)" false || true
    echo "test.sh: npm not found (scripts/deps.sh installs it as root)" >&2
else
    step "npm ci (tests/integration)" npm_install || true
fi

if [[ $asan_only == 0 ]]; then
    pass release "$BUILD"
fi
if [[ $quick == 0 ]]; then
    pass asan "$BUILD_ASAN" -DPGW_SANITIZE=ON
else
    skip "asan" "(--quick)"
fi

# --- fuzzing (tests/fuzz): clang + libFuzzer, ASan + UBSan -------------------

fuzz_build() {
    CC=clang PGW_JOBS=$JOBS scripts/build.sh "$BUILD_FUZZ" --target fuzzers -- \
        -DPGW_FUZZ=ON -DPGW_SANITIZE=ON -DPGW_TESTS=ON
}

if [[ $fuzz == 1 ]]; then
    if step "fuzz: build ($BUILD_FUZZ)" fuzz_build; then
        step "fuzz: run (each target ${FUZZ_SECONDS}s)" \
            env PGW_FUZZ_BUILD_DIR="$BUILD_FUZZ" PGW_FUZZ_NO_BUILD=1 \
            scripts/fuzz.sh all "$FUZZ_SECONDS" || true
    else
        skip "fuzz: run" "(build failed)"
    fi
else
    skip "fuzz" "(--quick, --asan-only or --no-fuzz)"
fi

summary
exit $failed
