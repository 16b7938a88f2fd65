#!/usr/bin/env bash
# deps.sh - install what pgwharf needs to build, test, run and benchmark, on
# Debian 12 (bookworm), with apt.  Used by scripts/test.sh and scripts/run.sh.
#
#   scripts/deps.sh [--fuzz | --build-only | --runtime-only]
#   scripts/deps.sh --list build|runtime|all
#
# Runs apt only as root and only when a package is missing (then
# `apt-get update` + `apt-get install -y --no-install-recommends`).
# PGW_SKIP_APT=1 skips apt altogether.  --fuzz (or PGW_FUZZ=1) adds clang and
# the libFuzzer/sanitizer runtimes.  --build-only installs just what building
# the binary needs and --runtime-only just the libraries it runs with: the
# two stages of docker/Dockerfile call them, so the image is built with the
# packages the tests build with (tests/integration/test_docker.py checks
# the binary needs nothing beyond the runtime group).  --list prints a group.
#
# Where things come from on Debian 12: the PostgreSQL 15 server binaries
# (initdb, pg_ctl, postgres, and the real pgbench) are in postgresql-15,
# pulled in by `postgresql`; /usr/bin/pgbench and /usr/bin/psql are wrappers
# from postgresql-client-common.  `postgresql-contrib` is an empty
# metapackage on 15 (contrib ships inside postgresql-15) but keeps the list
# stable across versions.
set -euo pipefail

BUILD_PACKAGES=(build-essential cmake pkg-config libev-dev libpq-dev libssl-dev libcmocka-dev liburing-dev)
# what the binary links against (libc6 comes with every Debian system)
RUNTIME_PACKAGES=(libev4 libpq5 libssl3 liburing2 ca-certificates)
PACKAGES=(
    "${BUILD_PACKAGES[@]}"
    # PostgreSQL server, clients, pgbench
    postgresql postgresql-client postgresql-contrib
    # test clients
    python3 python3-psycopg2 python3-psycopg python3-asyncpg python3-prometheus-client
    libpostgresql-jdbc-java
    # psqlODBC through pyodbc (py.prepared: its DEALLOCATE among statements)
    odbc-postgresql unixodbc python3-pyodbc
    # benchmarks against PgBouncer
    pgbouncer
    # tools the scripts use: ps/pgrep, ss, openssl (test certificates),
    # runuser (util-linux), useradd (passwd)
    procps iproute2 openssl util-linux passwd ca-certificates
    # docker/: `docker-compose config` validates the compose file, PyYAML reads it
    docker-compose python3-yaml
    # py.clock steps pgwharf's wall clock (LD_PRELOAD libfaketime)
    libfaketime
    # py.faults: a server writing German (the de_DE locale's sources)
    locales
)
FUZZ_PACKAGES=(clang libclang-rt-14-dev)

fuzz=${PGW_FUZZ:-0} group=all
while [[ $# -gt 0 ]]; do
    case $1 in
        --fuzz) fuzz=1 ;;
        --build-only) group=build ;;
        --runtime-only) group=runtime ;;
        --list)
            case ${2:-} in
                build) printf '%s\n' "${BUILD_PACKAGES[@]}" ;;
                runtime) printf '%s\n' "${RUNTIME_PACKAGES[@]}" ;;
                all) printf '%s\n' "${PACKAGES[@]}" ;;
                *) echo "deps.sh: --list build|runtime|all" >&2; exit 2 ;;
            esac
            exit 0 ;;
        -h|--help) sed -n '/^set -euo/q; 2,$p' "$0"; exit 0 ;;
        *) echo "deps.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

case $group in
    build) want=("${BUILD_PACKAGES[@]}") ;;
    runtime) want=("${RUNTIME_PACKAGES[@]}") ;;
    *)
        want=("${PACKAGES[@]}" "${RUNTIME_PACKAGES[@]}")
        [[ $fuzz == 1 ]] && want+=("${FUZZ_PACKAGES[@]}")
        # Node.js comes preinstalled on some machines (e.g. from NodeSource,
        # whose nodejs bundles npm and conflicts with Debian's npm): only
        # install Debian's when there is no node at all.
        command -v node >/dev/null 2>&1 || want+=(nodejs npm)
        # JDBC tests need a compiler; many machines carry a JDK already.
        command -v javac >/dev/null 2>&1 || want+=(default-jdk-headless)
        ;;
esac

missing=()
for p in "${want[@]}"; do
    if [[ $(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null) != ii* ]]; then
        missing+=("$p")
    fi
done

# py.faults reads a server's refusals in another language (lc_messages
# de_DE.UTF-8): the locale, made from the `locales` package's sources.
test_locale() {
    [[ $group == all && $(id -u) -eq 0 ]] || return 0
    locale -a 2>/dev/null | grep -qix 'de_DE.utf8' && return 0
    command -v localedef >/dev/null 2>&1 || return 0
    localedef -i de_DE -f UTF-8 de_DE.UTF-8 ||
        echo "deps.sh: could not make the de_DE.UTF-8 locale (its test skips)" >&2
}

if [[ ${#missing[@]} -eq 0 ]]; then
    echo "deps.sh: all ${#want[@]} packages present"
    test_locale
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
test_locale
echo "deps.sh: done"
