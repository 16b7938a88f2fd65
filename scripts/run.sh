#!/usr/bin/env bash
# run.sh - pgwharf's one run command: see it work in front of a real
# PostgreSQL.
#
#   scripts/run.sh [--keep] [--no-deps] [--port N] [--scale N] [--clients N] [--time S]
#   scripts/run.sh --stop
#
# On a fresh Debian 12 machine: installs the dependencies (scripts/deps.sh,
# as root), builds pgwharf in build/, starts a throwaway PostgreSQL on
# 127.0.0.1 as a non-root user (tests/pgcluster.sh), starts pgwharf in front
# of it with a copy of examples/pgwharf.ini (transaction pooling, md5 auth
# against examples/userlist.txt: user pgwharf, password pgwharf), runs
# `pgbench -i -s 10` through pgwharf, then `pgbench -S -c 10 -T 10`
# through pgwharf and directly, prints both, and stops everything it started.
#
#   --keep        leave PostgreSQL and pgwharf running and print how to
#                 connect; `scripts/run.sh --stop` stops them later
#   --no-deps     skip apt (same as PGW_SKIP_APT=1)
#   --port N      pgwharf's port (default 6432, or a free one below 32768
#                 when 6432 is taken)
#   --scale N     pgbench scale (default 10)   --clients N (default 10)
#   --time S      seconds per pgbench run (default 10)
# Environment: PGW_BUILD_DIR (default build), PGW_RUN_DIR (default
# $PGW_BUILD_DIR/run), PGW_SKIP_APT=1.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd -P)

keep=0 stop_only=0 port="" scale=10 clients=10 secs=10
while [[ $# -gt 0 ]]; do
    case $1 in
        --keep) keep=1 ;;
        --stop) stop_only=1 ;;
        --no-deps) export PGW_SKIP_APT=1 ;;
        --port) port=$2; shift ;;
        --scale) scale=$2; shift ;;
        --clients) clients=$2; shift ;;
        --time) secs=$2; shift ;;
        -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
        *) echo "run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

BUILD=${PGW_BUILD_DIR:-build}
RUNDIR=${PGW_RUN_DIR:-$ROOT/$BUILD/run}
PGDIR=$RUNDIR/pg
PIDFILE=$RUNDIR/pgwharf.pid
LOG=$RUNDIR/pgwharf.log
CONF=$RUNDIR/pgwharf.ini

say() { printf '\n=== %s\n' "$*"; }
die() { echo "run.sh: $*" >&2; exit 1; }

# --- stopping ---------------------------------------------------------------

# Stop the pgwharf this script started (by the PID it recorded) and the
# cluster in $PGDIR.
stop_all() {
    local pid i cmdline
    if [[ -f $PIDFILE ]]; then
        pid=$(cat "$PIDFILE")
        cmdline=$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" || true)
        if [[ $pid =~ ^[0-9]+$ && $cmdline == *pgwharf* ]] && kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            for ((i = 0; i < 100; i++)); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
            kill -KILL "$pid" 2>/dev/null || true
        fi
        rm -f "$PIDFILE"
    fi
    if [[ -f $PGDIR/cluster.state || -d $PGDIR/data ]]; then
        tests/pgcluster.sh stop "$PGDIR" || true
    fi
}

if [[ $stop_only == 1 ]]; then
    stop_all
    echo "run.sh: stopped"
    exit 0
fi

# --- dependencies and build ------------------------------------------------

say "dependencies"
if [[ ${PGW_SKIP_APT:-0} == 1 ]]; then
    echo "skipped (PGW_SKIP_APT=1)"
else
    scripts/deps.sh
fi

say "build ($BUILD)"
scripts/build.sh "$BUILD" --target pgwharf >/dev/null
BIN=$ROOT/$BUILD/pgwharf
[[ -x $BIN ]] || die "no binary at $BIN"

# --- PostgreSQL -------------------------------------------------------------

mkdir -p "$RUNDIR"
stop_all                                    # a previous --keep run
trap 'stop_all' EXIT                        # cleared at the end with --keep
trap 'exit 130' INT TERM

say "PostgreSQL"
tests/pgcluster.sh start "$PGDIR"
# shellcheck disable=SC1091
. "$PGDIR/env"
PGBENCH=$PGW_TEST_PGBIN/pgbench
PSQL=$PGW_TEST_PGBIN/psql
export PGPASSWORD=$PGW_TEST_PGPASSWORD PGCONNECT_TIMEOUT=10
"$PSQL" -X -q -h 127.0.0.1 -p "$PGW_TEST_PGPORT" -U pgwharf -d pgwharf -Atc 'select version()'

# --- pgwharf ----------------------------------------------------------------

port_free() {
    /usr/bin/python3 - "$1" <<'EOF' 2>/dev/null
import socket, sys
s = socket.socket()
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
EOF
}

if [[ -z $port ]]; then
    if port_free 6432; then
        port=6432
    else
        start=$((20000 + RANDOM % 12000))
        for ((i = 0; i < 12000; i++)); do
            p=$((20000 + (start - 20000 + i) % 12000))
            if port_free "$p" && [[ $p -ne $PGW_TEST_PGPORT ]]; then port=$p; break; fi
        done
        [[ -n $port ]] || die "no free port below 32768"
        echo "port 6432 is taken; using $port"
    fi
fi

say "pgwharf on 127.0.0.1:$port (config $CONF)"
install -m 0600 examples/userlist.txt "$RUNDIR/userlist.txt"
sed -e "s|^listen_port = .*|listen_port = $port|" \
    -e "s|^auth_file = .*|auth_file = $RUNDIR/userlist.txt|" \
    -e "s|^unix_socket_dir = .*|unix_socket_dir = $RUNDIR|" \
    -e "/^\[databases\]/,/^\[/ s|port=5432|port=$PGW_TEST_PGPORT|" \
    examples/pgwharf.ini >"$CONF"
if ! "$BIN" --check "$CONF" >"$RUNDIR/check.txt" 2>&1; then
    cat "$RUNDIR/check.txt" >&2
    die "pgwharf --check $CONF failed"
fi

: >"$LOG"
setsid "$BIN" "$CONF" </dev/null >>"$LOG" 2>&1 &
echo $! >"$PIDFILE"
pgw_pid=$!
proxy_ok=0
for ((i = 0; i < 150; i++)); do
    if ! kill -0 "$pgw_pid" 2>/dev/null; then break; fi
    if "$PGW_TEST_PGBIN/pg_isready" -q -h 127.0.0.1 -p "$port" -t 1 >/dev/null 2>&1 ||
       (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        proxy_ok=1
        break
    fi
    sleep 0.1
done
if [[ $proxy_ok == 0 ]]; then
    echo "run.sh: pgwharf is not accepting connections on port $port; its log:" >&2
    tail -n 30 "$LOG" >&2 || true
    if ! kill -0 "$pgw_pid" 2>/dev/null; then
        wait "$pgw_pid" 2>/dev/null && rc=0 || rc=$?
        echo "run.sh: pgwharf exited with status $rc" >&2
    fi
    echo "run.sh: going on with the direct benchmark only" >&2
fi
echo "pgwharf pid $pgw_pid, log $LOG"

# --- pgbench ----------------------------------------------------------------

PROXY=(-h 127.0.0.1 -p "$port" -U pgwharf)
DIRECT=(-h 127.0.0.1 -p "$PGW_TEST_PGPORT" -U pgwharf)
threads=$(( $(nproc 2>/dev/null || echo 2) < clients ? $(nproc 2>/dev/null || echo 2) : clients ))

if [[ $proxy_ok == 1 ]]; then
    say "pgbench -i -s $scale, through pgwharf (database appdb)"
    "$PGBENCH" -i -q -s "$scale" "${PROXY[@]}" appdb
else
    say "pgbench -i -s $scale, directly (pgwharf is not up)"
    "$PGBENCH" -i -q -s "$scale" "${DIRECT[@]}" pgwharf
fi

bench() {   # LABEL OUTFILE pgbench-connection-args... DB
    local label=$1 out=$2
    shift 2
    say "pgbench -S -c $clients -j $threads -T $secs, $label"
    if "$PGBENCH" -n -S -c "$clients" -j "$threads" -T "$secs" "$@" >"$out" 2>&1; then
        grep -E '^(number of (transactions actually processed|failed)|latency average|initial connection time|tps)' "$out" || cat "$out"
        return 0
    fi
    cat "$out" >&2
    return 1
}

tps() { sed -n 's/^tps = \([0-9.]*\) (without initial.*/\1/p' "$1" | head -n 1; }

direct_ok=0 through_ok=0
bench "directly to PostgreSQL :$PGW_TEST_PGPORT" "$RUNDIR/bench-direct.txt" "${DIRECT[@]}" pgwharf && direct_ok=1
if [[ $proxy_ok == 1 ]]; then
    bench "through pgwharf :$port" "$RUNDIR/bench-pgwharf.txt" "${PROXY[@]}" appdb && through_ok=1
fi

say "results (select-only, $clients clients, ${secs}s)"
printf '%-28s %s\n' "directly to PostgreSQL" \
    "$([[ $direct_ok == 1 ]] && echo "$(tps "$RUNDIR/bench-direct.txt") tps" || echo FAILED)"
printf '%-28s %s\n' "through pgwharf" \
    "$([[ $through_ok == 1 ]] && echo "$(tps "$RUNDIR/bench-pgwharf.txt") tps" || echo FAILED)"
echo "(direct connections are few and long-lived here, so this shows pgwharf's"
echo " overhead, not its benefit: pooling pays off with many short connections)"

status=0
[[ $direct_ok == 1 && $through_ok == 1 ]] || status=1

if [[ $keep == 1 ]]; then
    trap - EXIT
    say "left running (--keep)"
    cat <<EOF
pgwharf     pid $pgw_pid on 127.0.0.1:$port, log $LOG, config $CONF
PostgreSQL  127.0.0.1:$PGW_TEST_PGPORT (data $PGW_TEST_PGDATA, log $PGW_TEST_PGLOG)

through pgwharf:  psql "host=127.0.0.1 port=$port dbname=appdb user=pgwharf password=pgwharf"
                  postgresql://pgwharf:pgwharf@127.0.0.1:$port/appdb
admin console:    psql "host=127.0.0.1 port=$port dbname=pgwharf user=pgwharf password=pgwharf" -c 'SHOW POOLS'
directly:         psql "host=127.0.0.1 port=$PGW_TEST_PGPORT dbname=pgwharf user=pgwharf password=pgwharf"
reload config:    kill -HUP $pgw_pid
stop both:        scripts/run.sh --stop
EOF
fi
exit $status
