#!/usr/bin/env bash
# build.sh - configure and build pgwharf with CMake.  The one build step
# scripts/test.sh, scripts/run.sh and docker/Dockerfile share.
#
#   scripts/build.sh DIR [--type TYPE] [--target TARGET] [-- CMAKE_ARGS...]
#
#   DIR              build directory (relative to the repository root)
#   --type TYPE      CMAKE_BUILD_TYPE (default RelWithDebInfo)
#   --target TARGET  build only this target (default: everything)
#   -- CMAKE_ARGS    passed to the configure step (e.g. -DPGW_TESTS=OFF)
# Environment: PGW_JOBS (default nproc); CC as cmake reads it.
set -euo pipefail

cd "$(dirname "$0")/.."

[[ ${1:-} == -h || ${1:-} == --help ]] && { sed -n '/^set -euo/q; 2,$p' "$0"; exit 0; }
[[ $# -ge 1 && $1 != -* ]] || { echo "build.sh: usage: build.sh DIR [--type T] [--target T] [-- CMAKE_ARGS...]" >&2; exit 2; }
dir=$1
shift
type=RelWithDebInfo target=()
cmake_args=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --type) type=${2:?--type needs a value}; shift ;;
        --target) target=(--target "${2:?--target needs a value}"); shift ;;
        --) shift; cmake_args=("$@"); break ;;
        -h|--help) sed -n '/^set -euo/q; 2,$p' "$0"; exit 0 ;;
        *) echo "build.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE="$type" "${cmake_args[@]}"
cmake --build "$dir" -j "${PGW_JOBS:-$(nproc 2>/dev/null || echo 2)}" "${target[@]}"
