#!/usr/bin/env bash
# run.sh - benchmark pgwharf against PgBouncer and a direct connection.
#
#   bench/run.sh [--quick] [--duration S] [--reps N] [--cells LIST]
#                [--targets LIST] [--idle-clients N] [--pgwharf PATH]
#                [--server-socket tcp|unix] [--out FILE] [--no-build] [--keep]
#
# One command, as root on Debian 12 (scripts/deps.sh installs what it needs):
#   1. builds pgwharf (Release) in build-bench/ unless --pgwharf/--no-build;
#   2. starts a throwaway PostgreSQL (tests/pgcluster.sh), creates database
#      `bench` and runs `pgbench -i -s 10` once;
#   3. starts PgBouncer and pgwharf on 127.0.0.1 with equivalent configs
#      (transaction pooling, pool size 20, md5 client auth from a userlist,
#      no unix socket), both as the cluster's non-root OS user;
#   4. for every cell, runs pgbench against direct, pgbouncer, pgwharf in
#      turn, --reps times (interleaved), and reports medians: TPS, latency
#      average and p99, proxy CPU ms per 1000 transactions (utime+stime
#      from /proc/PID/stat), proxy peak RSS (VmRSS sampled every 0.5 s);
#   5. idle cell: restarts each proxy, opens --idle-clients (10000)
#      logged-in idle connections to it (bench/idle_clients.py) and reports
#      its RSS per client;
#   6. prints the table and writes it to bench/results.md (overwritten).
# Everything it starts is stopped on exit, by PID.
#
# Cells (ids for --cells): S10 S50 S200 S1000 (select-only -S at 10..1000
# clients), TPCB50 (built-in TPC-B-like script), C50 (-S -C, a new
# connection per transaction), EXT50 (-S -M extended), PREP50 (-S -M
# prepared).  All with -j 2 and -n (no vacuum through the proxies; the
# TPC-B cell truncates pgbench_history and vacuums directly before each run).
# Cells with 200 or more clients run clients/100 s longer than --duration:
# pgbench's -T includes connecting, which takes seconds at 200+ clients.
# Direct runs above 250 clients are skipped: the cluster has
# max_connections = 300, and each proxy holds up to 20 more.
#
#   --quick            --duration 3 --reps 1
#   --duration S       seconds per pgbench run (default 10)
#   --reps N           repetitions per cell and target (default 3)
#   --cells LIST       comma-separated cell ids (default: all)
#   --targets LIST     subset of direct,pgbouncer,pgwharf,pgwharf-nobatch,
#                      pgwharf-pipe (default: direct,pgbouncer,pgwharf;
#                      pgwharf-nobatch is the same binary with io_batch = off,
#                      pgwharf-pipe with server_pipeline_depth = 2, each for
#                      an A/B in the same interleaved run)
#   --idle-clients N   idle connections per proxy (default 10000; 0 = skip)
#   --server-socket S  how both proxies reach PostgreSQL: tcp (default,
#                      127.0.0.1) or unix (the cluster's socket directory,
#                      as a pooler on the database's host is often run;
#                      direct pgbench stays on TCP)
#   --out FILE         write the table here (default bench/results.md)
#   --pgwharf PATH     use this binary (implies --no-build)
#   --no-build         use build-bench/pgwharf as it is
#   --keep             keep the work directory (logs, configs) under /tmp
#
# Per-transaction latency logs (pgbench -l) go to the work directory and are
# deleted after each run; with --duration above 10 they are sampled
# (--sampling-rate 10/duration) so that a run's log stays near the size of a
# 10 s full log.
set -euo pipefail

COMMAND="bench/run.sh${*:+ $*}"
SELF=$(realpath "$0")
CALLER_PWD=$PWD
cd "$(dirname "$SELF")/.."
ROOT=$(pwd -P)
PY=/usr/bin/python3

duration=10 reps=3 cells_arg="" targets_arg="direct,pgbouncer,pgwharf"
idle_clients=10000 pgwharf_bin="" build=1 keep=0 server_socket=tcp out_file=""
while [[ $# -gt 0 ]]; do
    case $1 in
        --quick) duration=3 reps=1 ;;
        --duration) duration=${2:?}; shift ;;
        --reps) reps=${2:?}; shift ;;
        --cells) cells_arg=${2:?}; shift ;;
        --targets) targets_arg=${2:?}; shift ;;
        --idle-clients) idle_clients=${2:?}; shift ;;
        --pgwharf) pgwharf_bin=$(realpath "${2:?}"); build=0; shift ;;
        --server-socket) server_socket=${2:?}; shift ;;
        --out) out_file=${2:?}; shift ;;
        --no-build) build=0 ;;
        --keep) keep=1 ;;
        -h|--help) sed -n '2,/^set -euo/{/^#/p}' "$SELF"; exit 0 ;;
        *) echo "run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
[[ $duration =~ ^[0-9]+$ && $duration -ge 1 ]] || { echo "run.sh: bad --duration" >&2; exit 2; }
[[ $reps =~ ^[0-9]+$ && $reps -ge 1 ]] || { echo "run.sh: bad --reps" >&2; exit 2; }
[[ $idle_clients =~ ^[0-9]+$ ]] || { echo "run.sh: bad --idle-clients" >&2; exit 2; }
[[ $server_socket == tcp || $server_socket == unix ]] || { echo "run.sh: bad --server-socket (tcp or unix)" >&2; exit 2; }
[[ -z $out_file ]] && out_file=$ROOT/bench/results.md
[[ $out_file == /* ]] || out_file=$CALLER_PWD/$out_file

# id|label|clients|pgbench options
ALL_CELLS=(
    "S10|-S, 10 clients|10|-S"
    "S50|-S, 50 clients|50|-S"
    "S200|-S, 200 clients|200|-S"
    "S1000|-S, 1000 clients|1000|-S"
    "TPCB50|TPC-B-like, 50 clients|50|"
    "C50|-S -C, 50 clients|50|-S -C"
    "EXT50|-S -M extended, 50 clients|50|-S -M extended"
    "PREP50|-S -M prepared, 50 clients|50|-S -M prepared"
)
readonly DIRECT_MAX_CLIENTS=250
readonly POOL_SIZE=20
readonly MAX_CLIENT_CONN=20000
readonly NOFILE=30000
readonly DB=bench USER_NAME=pgwharf PASSWORD=pgwharf

log() { echo "run.sh: $*" >&2; }
die() { log "$*"; exit 1; }

want_target() { [[ ,$targets_arg, == *,$1,* ]]; }
want_cell() { [[ -z $cells_arg || ,$cells_arg, == *,$1,* ]]; }

for t in ${targets_arg//,/ }; do
    [[ $t == direct || $t == pgbouncer || $t == pgwharf || $t == pgwharf-nobatch ||
       $t == pgwharf-pipe ]] || die "unknown target $t"
done

# --- limits -----------------------------------------------------------------

if [[ $(ulimit -Hn) != unlimited && $(ulimit -Hn) -lt $NOFILE ]]; then
    ulimit -Hn "$NOFILE" 2>/dev/null || log "cannot raise the hard open-files limit to $NOFILE (needs root with CAP_SYS_RESOURCE); it stays $(ulimit -Hn)"
fi
ulimit -Sn "$(ulimit -Hn)" 2>/dev/null || true
nofile=$(ulimit -Sn)
if [[ $nofile != unlimited && $idle_clients -gt $((nofile - 200)) ]]; then
    log "open-files limit $nofile: idle clients reduced from $idle_clients to $((nofile - 200))"
    idle_clients=$((nofile - 200))
fi

# --- tools and the pgwharf binary -------------------------------------------

command -v pgbench >/dev/null || die "pgbench not found (scripts/deps.sh installs it)"
[[ -x $PY ]] || die "$PY not found"
if want_target pgbouncer; then
    PGBOUNCER=$(command -v pgbouncer || echo /usr/sbin/pgbouncer)
    [[ -x $PGBOUNCER ]] || die "pgbouncer not found (scripts/deps.sh installs it)"
fi
if want_target pgwharf || want_target pgwharf-nobatch || want_target pgwharf-pipe; then
    if [[ -z $pgwharf_bin ]]; then
        pgwharf_bin=$ROOT/build-bench/pgwharf
        if [[ $build == 1 ]]; then
            log "building pgwharf (Release) in build-bench/"
            "$ROOT/scripts/build.sh" build-bench --type Release --target pgwharf >/dev/null \
                || die "pgwharf does not build (try: scripts/build.sh build-bench --type Release --target pgwharf)"
        fi
    fi
    [[ -x $pgwharf_bin ]] || die "no pgwharf binary at $pgwharf_bin"
fi

# --- work directory and cleanup ---------------------------------------------

WORK=$(mktemp -d /tmp/pgwharf-bench.XXXXXX)
chmod 0755 "$WORK"
declare -A PID=()          # proxy name -> PID
BG_PIDS=()                 # pgbench, samplers, idle clients: whatever runs now
cluster_started=0

bg_forget() {   # PID: no longer ours to stop
    local p rest=()
    for p in "${BG_PIDS[@]}"; do [[ $p == "$1" ]] || rest+=("$p"); done
    BG_PIDS=("${rest[@]}")
}

stop_pid() {   # PID [seconds]: TERM, wait, then KILL
    local pid=$1 i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < ${2:-50}; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$? p name
    trap - EXIT INT TERM
    for p in "${BG_PIDS[@]}"; do stop_pid "$p" 10; done
    for name in "${!PID[@]}"; do
        # SIGINT would wait for servers; SIGTERM then SIGKILL after 5 s.
        stop_pid "${PID[$name]}" 50
    done
    if [[ $cluster_started == 1 ]]; then
        "$ROOT/tests/pgcluster.sh" stop "$WORK/pg" >/dev/null 2>&1 || log "pgcluster.sh stop failed"
    fi
    if [[ $keep == 1 ]]; then
        log "work directory kept: $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

# --- PostgreSQL -------------------------------------------------------------

log "starting PostgreSQL"
cluster_started=1
"$ROOT/tests/pgcluster.sh" start "$WORK/pg" >"$WORK/pgcluster.log" 2>&1 \
    || { cat "$WORK/pgcluster.log" >&2; die "tests/pgcluster.sh start failed"; }
# shellcheck disable=SC1091
. "$WORK/pg/env"
PGPORT=$PGW_TEST_PGPORT
OSUSER=$PGW_TEST_PGOSUSER
PGBENCH=$PGW_TEST_PGBIN/pgbench
PSQL=$PGW_TEST_PGBIN/psql
[[ -x $PGBENCH ]] || PGBENCH=$(command -v pgbench)
[[ -x $PSQL ]] || PSQL=$(command -v psql)
export PGPASSWORD=$PASSWORD PGCONNECT_TIMEOUT=10

psql_direct() { "$PSQL" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PGPORT" -U "$USER_NAME" "$@"; }

psql_direct -d postgres -c "CREATE DATABASE $DB" >/dev/null
log "pgbench -i -s 10"
timeout 600 "$PGBENCH" -i -s 10 -q -h 127.0.0.1 -p "$PGPORT" -U "$USER_NAME" "$DB" \
    >"$WORK/pgbench-init.log" 2>&1 || { cat "$WORK/pgbench-init.log" >&2; die "pgbench -i failed"; }

# --- proxies ----------------------------------------------------------------

# free_port: set FREE_PORT to a port in 20000-32000 (below the ephemeral
# range) that binds now and that we have not handed out before.
declare -A TAKEN=(["$PGPORT"]=1)
FREE_PORT=""
free_port() {
    local p i
    for ((i = 0; i < 200; i++)); do
        p=$((20000 + (RANDOM * 32768 + RANDOM) % 12000))
        [[ -n ${TAKEN[$p]:-} ]] && continue
        if "$PY" -c 'import socket,sys; s=socket.socket(); s.bind(("127.0.0.1", int(sys.argv[1])))' \
                "$p" 2>/dev/null; then
            TAKEN[$p]=1
            FREE_PORT=$p
            return
        fi
    done
    die "no free port in 20000-32000"
}

declare -A PORT=([direct]=$PGPORT)
SERVER_HOST=127.0.0.1
[[ $server_socket == tcp ]] || SERVER_HOST=$PGW_TEST_PGSOCKDIR
PXDIR=$WORK/proxy
mkdir -p "$PXDIR"
printf '"%s" "%s"\n' "$USER_NAME" "$PASSWORD" >"$PXDIR/userlist.txt"

# write_ini NAME SECTION PORT: the shared settings; both proxies get the same
# (pgwharf-nobatch: plus io_batch = off; pgwharf-pipe: plus
# server_pipeline_depth = 2).
write_ini() {
    local name=$1 section=$2 port=$3
    {
        cat <<EOF
; generated by bench/run.sh
[databases]
$DB = host=$SERVER_HOST port=$PGPORT dbname=$DB user=$USER_NAME password=$PASSWORD

[$section]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = md5
auth_file = $PXDIR/userlist.txt
pool_mode = transaction
default_pool_size = $POOL_SIZE
max_client_conn = $MAX_CLIENT_CONN
ignore_startup_parameters = extra_float_digits
server_tls_sslmode = disable
log_connections = 0
log_disconnections = 0
EOF
        [[ $name != pgwharf-nobatch ]] || echo "io_batch = off"
        [[ $name != pgwharf-pipe ]] || echo "server_pipeline_depth = 2"
    } >"$PXDIR/$name.ini"
}

# start_proxy NAME CMD...: run as the cluster's OS user (PgBouncer refuses
# root), keeping our raised open-files limit (setpriv, unlike runuser, does
# not go through pam_limits).
start_proxy() {
    local name=$1 i
    shift
    if [[ $(id -u) -eq 0 && $OSUSER != root ]]; then
        setpriv --reuid="$OSUSER" --regid="$(id -g "$OSUSER")" --init-groups -- "$@" \
            </dev/null >"$PXDIR/$name.log" 2>&1 &
    else
        "$@" </dev/null >"$PXDIR/$name.log" 2>&1 &
    fi
    PID[$name]=$!
    for ((i = 0; i < 100; i++)); do
        kill -0 "${PID[$name]}" 2>/dev/null || { tail -n 20 "$PXDIR/$name.log" >&2; die "$name exited at startup"; }
        if "$PSQL" -X -q -h 127.0.0.1 -p "${PORT[$name]}" -U "$USER_NAME" -d "$DB" -Atc 'select 1' \
                >/dev/null 2>&1; then
            log "$name ready on 127.0.0.1:${PORT[$name]} (pid ${PID[$name]})"
            return
        fi
        sleep 0.2
    done
    tail -n 20 "$PXDIR/$name.log" >&2
    die "$name does not answer on port ${PORT[$name]}"
}

if want_target pgbouncer; then
    free_port
    PORT[pgbouncer]=$FREE_PORT
    write_ini pgbouncer pgbouncer "${PORT[pgbouncer]}"
fi
if want_target pgwharf; then
    free_port
    PORT[pgwharf]=$FREE_PORT
    write_ini pgwharf pgwharf "${PORT[pgwharf]}"
fi
if want_target pgwharf-nobatch; then
    free_port
    PORT[pgwharf-nobatch]=$FREE_PORT
    write_ini pgwharf-nobatch pgwharf "${PORT[pgwharf-nobatch]}"
fi
if want_target pgwharf-pipe; then
    free_port
    PORT[pgwharf-pipe]=$FREE_PORT
    write_ini pgwharf-pipe pgwharf "${PORT[pgwharf-pipe]}"
fi
if want_target pgwharf || want_target pgwharf-nobatch || want_target pgwharf-pipe; then
    cp "$pgwharf_bin" "$PXDIR/pgwharf"      # reachable by $OSUSER wherever the tree is
fi
chown -R "$OSUSER" "$PXDIR" 2>/dev/null || true
chmod 0600 "$PXDIR/userlist.txt"
proxy_cmd() {   # NAME: the command line that runs this proxy
    case $1 in
        pgbouncer) echo "$PGBOUNCER" "$PXDIR/pgbouncer.ini" ;;
        pgwharf) echo "$PXDIR/pgwharf" "$PXDIR/pgwharf.ini" ;;
        pgwharf-nobatch) echo "$PXDIR/pgwharf" "$PXDIR/pgwharf-nobatch.ini" ;;
        pgwharf-pipe) echo "$PXDIR/pgwharf" "$PXDIR/pgwharf-pipe.ini" ;;
    esac
}
# shellcheck disable=SC2046
for name in pgbouncer pgwharf pgwharf-nobatch pgwharf-pipe; do
    want_target "$name" && start_proxy "$name" $(proxy_cmd "$name")
done

# restart_proxy NAME: stop it by PID, start it again on a new port.
restart_proxy() {
    local name=$1
    stop_pid "${PID[$name]}" 50
    wait "${PID[$name]}" 2>/dev/null || true
    unset "PID[$name]"
    mv -f "$PXDIR/$name.log" "$PXDIR/$name.log.1"
    free_port
    PORT[$name]=$FREE_PORT
    write_ini "$name" "$([[ $name == pgbouncer ]] && echo pgbouncer || echo pgwharf)" "${PORT[$name]}"
    chown "$OSUSER" "$PXDIR/$name.ini" 2>/dev/null || true
    # shellcheck disable=SC2046
    start_proxy "$name" $(proxy_cmd "$name")
}

# --- measurements -----------------------------------------------------------

CLK_TCK=$(getconf CLK_TCK)
cpu_ticks() {   # utime + stime of PID, in clock ticks
    local s
    s=$(<"/proc/$1/stat")
    s=${s##*) }
    # shellcheck disable=SC2086
    set -- $s
    echo $(( ${12} + ${13} ))
}
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

# Sample VmRSS of PID every 0.5 s; the running maximum goes to FILE.
rss_sampler() {
    local pid=$1 out=$2 max=0 v
    while kill -0 "$pid" 2>/dev/null; do
        v=$(rss_kb "$pid" 2>/dev/null || echo 0)
        if [[ -n $v && $v -gt $max ]]; then max=$v; echo "$max" >"$out"; fi
        sleep 0.5
    done
}

proxy_alive() {
    [[ $1 == direct ]] && return 0
    kill -0 "${PID[$1]}" 2>/dev/null
}

RUNS=$WORK/runs.tsv IDLE=$WORK/idle.tsv META=$WORK/meta
: >"$RUNS"
: >"$IDLE"

sampling=""
if ((duration > 10)); then
    sampling="--sampling-rate=$("$PY" -c "import sys; print(round(10 / int(sys.argv[1]), 4))" "$duration")"
fi
dead_reported=""

# run_one CELL LABEL CLIENTS TARGET REP OPTS: one pgbench run; one line in RUNS.
run_one() {
    local cell=$1 label=$2 clients=$3 target=$4 rep=$5 opts=$6
    local tag=$cell.$target.$rep out logdir rc=0 c0=0 c1=0 sampler="" rssf cpu="-" rss="-" stats
    local status tps lat p99 ntx err limit v run_s
    out=$WORK/out/$tag.txt
    logdir=$WORK/txlog/$tag
    rssf=$WORK/out/$tag.rss
    mkdir -p "$WORK/out" "$logdir"

    if [[ $target == direct && $clients -gt $DIRECT_MAX_CLIENTS ]]; then
        printf '%s\t%s\t%s\t%s\t%s\tskip\t-\t-\t-\t-\t-\t-\t%s\n' "$cell" "$label" "$clients" \
            "$target" "$rep" "more than $DIRECT_MAX_CLIENTS clients; PostgreSQL max_connections is 300" >>"$RUNS"
        return
    fi
    if ! proxy_alive "$target"; then
        printf '%s\t%s\t%s\t%s\t%s\tfail\t-\t-\t-\t-\t-\t-\t%s\n' "$cell" "$label" "$clients" \
            "$target" "$rep" "$target is not running (died earlier)" >>"$RUNS"
        return
    fi
    if [[ $cell == TPCB* ]]; then
        psql_direct -d "$DB" -c "TRUNCATE pgbench_history" -c "VACUUM pgbench_branches, pgbench_tellers" \
            >/dev/null 2>&1 || log "TPC-B prep failed (continuing)"
    fi

    if [[ $target != direct ]]; then
        c0=$(cpu_ticks "${PID[$target]}")
        rss_sampler "${PID[$target]}" "$rssf" &
        sampler=$!
        BG_PIDS+=("$sampler")
    fi
    # pgbench's -T clock starts before its clients connect; 200 scram logins
    # to PostgreSQL on a busy 2-core machine take seconds, so big cells get
    # clients/100 s extra (tps excludes the initial connection time).
    run_s=$((duration + (clients >= 200 ? clients / 100 : 0)))
    limit=$((run_s + 120))
    # shellcheck disable=SC2086
    timeout -k 5 "$limit" "$PGBENCH" -n -j 2 -c "$clients" -T "$run_s" $opts \
        -l --log-prefix="$logdir/tx" $sampling \
        -h 127.0.0.1 -p "${PORT[$target]}" -U "$USER_NAME" "$DB" >"$out" 2>&1 &
    local pgb=$!
    BG_PIDS+=("$pgb")
    wait "$pgb" || rc=$?
    bg_forget "$pgb"
    if [[ -n $sampler ]]; then
        if proxy_alive "$target"; then
            c1=$(cpu_ticks "${PID[$target]}")
            v=$(rss_kb "${PID[$target]}")
            [[ -f $rssf && $(<"$rssf") -gt $v ]] || echo "$v" >"$rssf"
        fi
        stop_pid "$sampler" 10
        wait "$sampler" 2>/dev/null || true
        bg_forget "$sampler"
    fi

    stats=$("$PY" "$ROOT/bench/pgbench_stats.py" --stdout "$out" --rc "$rc" --log-prefix "$logdir/tx")
    rm -rf "$logdir"
    IFS=$'\t' read -r status tps lat p99 ntx err <<<"$stats"
    if [[ $target != direct ]]; then
        if ! proxy_alive "$target"; then
            status=fail
            err="$target died during the run (pid ${PID[$target]}); $err"
            if [[ -z $dead_reported ]]; then
                log "$target died; last lines of its log:"
                tail -n 30 "$PXDIR/$target.log" >&2
                dead_reported=1
            fi
        elif [[ $ntx != - && $ntx -gt 0 ]]; then
            cpu=$(awk -v d=$((c1 - c0)) -v hz="$CLK_TCK" -v n="$ntx" 'BEGIN { printf "%.2f", d * 1000 / hz / (n / 1000) }')
        fi
        [[ -f $rssf ]] && rss=$(<"$rssf")
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$cell" "$label" "$clients" "$target" \
        "$rep" "$status" "$tps" "$lat" "$p99" "$ntx" "$cpu" "$rss" "$err" >>"$RUNS"
    log "$(printf '%-7s %-9s rep %d: %-4s tps=%s lat=%sms p99=%sms cpu/1k=%sms rss=%skB%s' \
        "$cell" "$target" "$rep" "$status" "$tps" "$lat" "$p99" "$cpu" "$rss" \
        "$([[ $status == ok ]] || echo " ($err)")")"
    if [[ $status != ok && $target == pgwharf* ]]; then
        grep -iE 'error|abort|fatal' "$out" | sort | uniq -c | sort -rn | head -n 5 >&2 || true
        log "pgwharf log tail:"
        tail -n 10 "$PXDIR/$target.log" >&2 || true
    fi
}

# --- the cells, interleaved -------------------------------------------------

for spec in "${ALL_CELLS[@]}"; do
    IFS='|' read -r cell label clients opts <<<"$spec"
    want_cell "$cell" || continue
    for ((rep = 1; rep <= reps; rep++)); do
        for target in direct pgbouncer pgwharf pgwharf-nobatch pgwharf-pipe; do
            want_target "$target" || continue
            run_one "$cell" "$label" "$clients" "$target" "$rep" "$opts"
        done
    done
done

# --- idle clients -----------------------------------------------------------

# Last, on freshly started proxies (new ports): after the pgbench cells a
# proxy's heap and free lists hold memory for up to 1000 clients, which
# would hide part of the per-client cost.
if [[ $idle_clients -gt 0 ]]; then
    for target in pgbouncer pgwharf; do
        want_target "$target" || continue
        restart_proxy "$target"
        log "idle cell: $idle_clients idle clients to $target"
        res=$(timeout -k 5 600 "$PY" "$ROOT/bench/idle_clients.py" --port "${PORT[$target]}" \
                --pid "${PID[$target]}" --clients "$idle_clients" --user "$USER_NAME" \
                --password "$PASSWORD" --dbname "$DB" 2>"$WORK/idle.$target.err") \
            || res="idle_clients.py failed: $(tail -n 3 "$WORK/idle.$target.err" | tr '\n' ' ')"
        printf '%s\t%s\n' "$target" "$res" >>"$IDLE"
        log "idle $target: $res"
        proxy_alive "$target" || { log "$target died in the idle cell"; tail -n 30 "$PXDIR/$target.log" >&2; }
        sleep 2
    done
fi

# --- report -----------------------------------------------------------------

{
    echo "date=$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    # shellcheck disable=SC1091
    echo "machine=$(nproc) CPUs, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), $(awk '/^MemTotal/ { printf "%.0f GiB RAM", $2 / 1048576 }' /proc/meminfo), Linux $(uname -r), $(. /etc/os-release && echo "$PRETTY_NAME")"
    echo "command=$COMMAND"
    echo "versions=PostgreSQL $("$PGW_TEST_PGBIN/postgres" --version | awk '{ print $3 }'), $("$PGBENCH" --version | awk '{ print $1, $3 }')$(want_target pgbouncer && echo ", $("$PGBOUNCER" --version | head -n 1)")$(want_target pgwharf && echo ", $("$pgwharf_bin" --version 2>/dev/null | head -n 1) (git $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$([[ -n $(git -C "$ROOT" status --porcelain 2>/dev/null) ]] && echo ', uncommitted changes'))")"
    echo "setup=everything on 127.0.0.1 on this one machine (pgbench, proxies and PostgreSQL share the CPUs); pgbench -i -s 10; both proxies: server connections over $([[ $server_socket == tcp ]] && echo "TCP to 127.0.0.1" || echo "PostgreSQL's unix socket (pgbench direct: TCP)"), pool_mode=transaction, default_pool_size=$POOL_SIZE, auth_type=md5 (userlist), max_client_conn=$MAX_CLIENT_CONN, server_tls_sslmode=disable, log_connections=0, run as $OSUSER; PostgreSQL: fsync=off, max_connections=300"
    echo "method=pgbench -n -j 2 -T $duration (plus clients/100 s at 200+ clients: -T includes connecting), targets interleaved (direct, pgbouncer, pgwharf, direct, ...); TPS without initial connection time (with reconnection time under -C); latency average and p99 from pgbench -l per-transaction logs${sampling:+ ($sampling)}; CPU = proxy utime+stime over the run / transactions; RSS = peak proxy VmRSS sampled every 0.5 s"
    echo "reps=$reps"
    echo "duration=$duration"
} >"$META"

echo
"$PY" "$ROOT/bench/report.py" --runs "$RUNS" --idle "$IDLE" --meta "$META" --out "$out_file"
log "wrote $out_file"
