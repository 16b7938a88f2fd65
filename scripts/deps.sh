#!/usr/bin/env bash
# deps.sh - install what pgwharf needs to build, test, run and benchmark, on
# Debian 12 (bookworm), with apt.  Used by scripts/test.sh and scripts/run.sh.
#
#   scripts/deps.sh [--fuzz]
#
# Runs apt only as root and only when a package is missing (then
# `apt-get update` + `apt-get install -y --no-install-recommends`).
# PGW_SKIP_APT=1 skips apt altogether.  --fuzz (or PGW_FUZZ=1) adds clang and
# the libFuzzer/sanitizer runtimes.
#
# Where things come from on Debian 12: the PostgreSQL 15 server binaries
# (initdb, pg_ctl, postgres, and the real pgbench) are in postgresql-15,
# pulled in by `postgresql`; /usr/bin/pgbench and /usr/bin/psql are wrappers
# from postgresql-client-common.  `postgresql-contrib` is an empty
# metapackage on 15 (contrib ships inside postgresql-15) but keeps the list
# stable across versions.
set -euo pipefail

PACKAGES=(
    # build
    build-essential cmake pkg-config libev-dev libpq-dev libssl-dev libcmocka-dev liburing-dev
    # PostgreSQL server, clients, pgbench
    postgresql postgresql-client postgresql-contrib
    # test clients
    python3 python3-psycopg2 python3-psycopg python3-asyncpg python3-prometheus-client
    libpostgresql-jdbc-java
    # benchmarks against PgBouncer
    pgbouncer
    # tools the scripts use: ps/pgrep, ss, openssl (test certificates),
    # runuser (util-linux), useradd (passwd)
    procps iproute2 openssl util-linux passwd ca-certificates
)
FUZZ_PACKAGES=(clang libclang-rt-14-dev)

fuzz=${PGW_FUZZ:-0}
for arg in "$@"; do
    case $arg in
        --fuzz) fuzz=1 ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "deps.sh: unknown option $arg" >&2; exit 2 ;;
    esac
done

want=("${PACKAGES[@]}")
[[ $fuzz == 1 ]] && want+=("${FUZZ_PACKAGES[@]}")
# Node.js comes preinstalled on some machines (e.g. from NodeSource, whose
# nodejs bundles npm and conflicts with Debian's npm): only install Debian's
# when there is no node at all.
command -v node >/dev/null 2>&1 || want+=(nodejs npm)
# JDBC tests need a compiler; many machines carry a JDK already.
command -v javac >/dev/null 2>&1 || want+=(default-jdk-headless)

missing=()
for p in "${want[@]}"; do
    if [[ $(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null) != ii* ]]; then
        missing+=("$p")
    fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
    echo "deps.sh: all ${#want[@]} packages present"
    exit 0
fi
if [[ ${PGW_SKIP_APT:-0} == 1 ]]; then
    echo "deps.sh: PGW_SKIP_APT=1; not installing: ${missing[*]}" >&2
    exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "deps.sh: not root; not installing: ${missing[*]}" >&2
    echo "deps.sh: run as root, or: sudo apt-get install ${missing[*]}" >&2
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "deps.sh: no apt-get (not Debian?); install by hand: ${missing[*]}" >&2
    exit 1
fi

echo "deps.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt_opts=(-o Dpkg::Use-Pty=0 -o APT::Color=0 -q)
apt-get "${apt_opts[@]}" update
apt-get "${apt_opts[@]}" install -y --no-install-recommends "${missing[@]}"
echo "deps.sh: done"
