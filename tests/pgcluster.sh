#!/usr/bin/env bash
# pgcluster.sh - a throwaway PostgreSQL cluster for the integration tests.
#
#   tests/pgcluster.sh start DIR   initdb + start; writes DIR/env
#   tests/pgcluster.sh stop DIR    stop (by the postmaster's PID) and remove the data
#
# Used as the ctest fixture "pg" (pg.start / pg.stop, see tests/CMakeLists.txt)
# and by scripts/run.sh.  The cluster runs as a non-root OS user: as root,
# the `postgres` system user if it exists, else a system user `pgwharf-test`
# made on the spot; as any other user, that user.  It listens on 127.0.0.1
# and 127.0.0.2 (a second address of the same server, for host lists; a
# missing one is only a warning in its log), on a free port in 20000-32000 (below the kernel's ephemeral range),
# and on a unix socket in DIR.
#
# DIR/env describes the cluster as shell KEY=value lines (read by
# tests/testutil.c, tests/integration/pgwharf_test.py and `. DIR/env`):
#   PGW_TEST_PGHOST PGW_TEST_PGPORT PGW_TEST_PGUSER PGW_TEST_PGPASSWORD
#   PGW_TEST_PGDATABASE PGW_TEST_PGDATABASE2 PGW_TEST_APPUSER
#   PGW_TEST_APPPASSWORD PGW_TEST_PGBIN PGW_TEST_PGDATA PGW_TEST_PGSOCKDIR
#   PGW_TEST_PGLOG PGW_TEST_PGOSUSER PGW_TEST_PGVERSION PGW_TEST_DIR
# It appears only once the server accepts connections.
#
# Contents: superuser pgwharf/pgwharf (scram-sha-256 over TCP, trust on the
# socket), role app/app_pw (scram, no superuser), databases pgwharf and
# pgwharf2 (app may create objects in their public schemas).
#
# When the cluster's OS user cannot reach DIR (a checkout under /root, mode
# 0700), the data directory and socket go to a private directory under /tmp
# instead; PGW_TEST_PGDATA / PGW_TEST_PGSOCKDIR say where, and `stop`
# removes it.
#
# Environment: PGW_PGBIN=/path/to/bin overrides the choice of binaries;
# PGW_PGPORT=N asks for a fixed port.
set -euo pipefail

readonly SUPERUSER=pgwharf SUPERPASS=pgwharf
readonly APPUSER=app APPPASS=app_pw
readonly DB1=pgwharf DB2=pgwharf2
readonly READY_TIMEOUT=60

die() { echo "pgcluster.sh: $*" >&2; exit 1; }
note() { echo "pgcluster.sh: $*" >&2; }

usage() { die "usage: $0 start|stop DIR"; }

[[ $# -eq 2 ]] || usage
readonly CMD=$1
mkdir -p "$2"
DIR=$(cd "$2" && pwd -P)
readonly DIR
readonly STATE=$DIR/cluster.state

# --- binaries ---------------------------------------------------------------

find_pgbin() {
    local d
    if [[ -n ${PGW_PGBIN:-} ]]; then
        [[ -x $PGW_PGBIN/initdb ]] || die "PGW_PGBIN=$PGW_PGBIN has no initdb"
        echo "$PGW_PGBIN"; return
    fi
    if [[ -x /usr/lib/postgresql/15/bin/initdb ]]; then
        echo /usr/lib/postgresql/15/bin; return
    fi
    if command -v pg_config >/dev/null 2>&1; then
        d=$(pg_config --bindir 2>/dev/null || true)
        if [[ -n $d && -x $d/initdb ]]; then echo "$d"; return; fi
    fi
    d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    if [[ -n $d && -x $d/initdb ]]; then echo "$d"; return; fi
    d=$(dirname "$(command -v initdb 2>/dev/null || echo /nonexistent/initdb)")
    [[ -x $d/initdb ]] || die "no PostgreSQL server binaries found (install postgresql, or set PGW_PGBIN)"
    echo "$d"
}

# --- the OS user ------------------------------------------------------------

pick_osuser() {
    if [[ $(id -u) -ne 0 ]]; then
        id -un; return
    fi
    if id -u postgres >/dev/null 2>&1; then
        echo postgres; return
    fi
    if ! id -u pgwharf-test >/dev/null 2>&1; then
        useradd -r -M -d /nonexistent -s /usr/sbin/nologin pgwharf-test >&2 \
            || die "cannot create the system user pgwharf-test"
    fi
    echo pgwharf-test
}

# Run a command as the cluster's OS user, from a directory it can read
# (initdb and pg_ctl complain when they cannot stat the current directory).
as_osuser() {
    if [[ $(id -u) -eq 0 && $OSUSER != root ]]; then
        (cd / && runuser -u "$OSUSER" -- "$@")
    else
        (cd / && "$@")
    fi
}

# --- ports ------------------------------------------------------------------

# Can we bind 127.0.0.1:$1?  (No SO_REUSEADDR: a port with sockets in
# TIME_WAIT counts as taken.)
port_free() {
    local p=$1 py
    for py in /usr/bin/python3 python3; do
        if command -v "$py" >/dev/null 2>&1; then
            "$py" - "$p" <<'EOF' 2>/dev/null
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
EOF
            return
        fi
    done
    if command -v ss >/dev/null 2>&1; then
        [[ -z $(ss -Htan "( sport = :$p )" 2>/dev/null) ]]
        return
    fi
    ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null
}

pick_port() {
    local lo=20000 hi=32000 span start i p
    if [[ -n ${PGW_PGPORT:-} ]]; then echo "$PGW_PGPORT"; return; fi
    span=$((hi - lo))
    start=$(( (RANDOM * 32768 + RANDOM) % span ))
    for ((i = 0; i < span; i++)); do
        p=$((lo + (start + i) % span))
        if port_free "$p" && [[ ! -e $SOCKDIR/.s.PGSQL.$p ]]; then
            echo "$p"; return
        fi
    done
    die "no free port in $lo-$hi"
}

# --- stop -------------------------------------------------------------------

is_postmaster() {
    local pid=$1 cmdline
    [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
    cmdline=$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline") || return 1
    [[ $cmdline == *postgres* ]]
}

# Stop whatever cluster DIR describes; quiet and successful when there is none.
cluster_stop() {
    local DATA="" RUNDIR="" PGBIN="" OSUSER="" LOG="" pid="" i
    if [[ -f $STATE ]]; then
        # shellcheck disable=SC1090
        . "$STATE"
    else
        DATA=$DIR/data RUNDIR=$DIR
    fi
    [[ -n $OSUSER ]] || OSUSER=$(stat -c %U "$DATA" 2>/dev/null || id -un)
    [[ -n $PGBIN ]] || PGBIN=$(find_pgbin 2>/dev/null || true)

    if [[ -f $DATA/postmaster.pid ]]; then
        pid=$(head -n 1 "$DATA/postmaster.pid" 2>/dev/null || true)
    fi
    if [[ -n $pid ]] && is_postmaster "$pid"; then
        kill -CONT "$pid" 2>/dev/null || true    # a test may have left it SIGSTOPped
        if [[ -n $PGBIN ]]; then
            as_osuser "$PGBIN/pg_ctl" stop -D "$DATA" -m fast -w -t 30 >/dev/null 2>&1 || true
        fi
        if is_postmaster "$pid"; then
            note "pg_ctl stop failed; killing postmaster $pid"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        for ((i = 0; i < 100; i++)); do
            is_postmaster "$pid" || break
            sleep 0.1
        done
        is_postmaster "$pid" && die "postmaster $pid does not go away"
    fi
    rm -rf "$DATA"
    if [[ -n $RUNDIR && $RUNDIR != "$DIR" && $RUNDIR == /tmp/pgwharf-pg.* ]]; then
        if [[ -L $DIR/postgres.log ]]; then
            rm -f "$DIR/postgres.log"
            if [[ -n $LOG && -f $LOG ]]; then cp -f "$LOG" "$DIR/postgres.log" || true; fi
        fi
        rm -rf "$RUNDIR"
    fi
    rm -f "$STATE" "$DIR/env"
}

# --- start ------------------------------------------------------------------

write_conf() {
    cat >>"$DATA/postgresql.conf" <<EOF

# --- pgwharf tests (tests/pgcluster.sh) ---
listen_addresses = '127.0.0.1,127.0.0.2'
port = $PORT
unix_socket_directories = '$SOCKDIR'
unix_socket_permissions = 0777
max_connections = 300
shared_buffers = 128MB
fsync = off
synchronous_commit = off
full_page_writes = off
wal_level = logical
max_wal_senders = 10
max_replication_slots = 10
max_wal_size = 1GB
password_encryption = 'scram-sha-256'
log_line_prefix = '%m [%p] %q%u@%d '
log_min_messages = warning
log_min_error_statement = error
EOF
}

psql_admin() {
    "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$SOCKDIR" -p "$PORT" -U "$SUPERUSER" "$@"
}

cluster_start() {
    local attempt pwfile i ver
    cluster_stop

    PGBIN=$(find_pgbin)
    OSUSER=$(pick_osuser)
    ver=$("$PGBIN/postgres" --version | awk '{ split($3, v, "."); print v[1] }')

    # Where the cluster lives: DIR itself when the OS user can reach it.
    if [[ $(id -u) -eq 0 && $OSUSER != root ]]; then
        chown "$OSUSER" "$DIR"
        chmod 0755 "$DIR"
    fi
    if as_osuser test -w "$DIR" -a -x "$DIR"; then
        RUNDIR=$DIR
    else
        RUNDIR=$(mktemp -d /tmp/pgwharf-pg.XXXXXX)
        chmod 0755 "$RUNDIR"
        if [[ $(id -u) -eq 0 ]]; then chown "$OSUSER" "$RUNDIR"; fi
        note "$OSUSER cannot write $DIR; the cluster lives in $RUNDIR"
    fi
    DATA=$RUNDIR/data
    SOCKDIR=$RUNDIR
    LOG=$RUNDIR/postgres.log
    if [[ $RUNDIR != "$DIR" ]]; then
        ln -sfn "$LOG" "$DIR/postgres.log"
    fi
    cat >"$STATE" <<EOF
DATA='$DATA'
RUNDIR='$RUNDIR'
PGBIN='$PGBIN'
OSUSER='$OSUSER'
LOG='$LOG'
EOF

    pwfile=$RUNDIR/.pwfile
    (umask 077 && printf '%s\n' "$SUPERPASS" >"$pwfile")
    if [[ $(id -u) -eq 0 ]]; then chown "$OSUSER" "$pwfile"; fi
    if ! as_osuser "$PGBIN/initdb" -D "$DATA" -U "$SUPERUSER" --pwfile="$pwfile" \
            --auth-host=scram-sha-256 --auth-local=trust -E UTF8 --no-locale \
            --no-sync >"$RUNDIR/initdb.log" 2>&1; then
        cat "$RUNDIR/initdb.log" >&2
        rm -f "$pwfile"
        die "initdb failed"
    fi
    rm -f "$pwfile"
    cp "$DATA/postgresql.conf" "$DATA/postgresql.conf.orig"
    # The server reads every file of its data directory (pg_basebackup).
    if [[ $(id -u) -eq 0 ]]; then chown "$OSUSER" "$DATA/postgresql.conf.orig"; fi
    # initdb's rules allow 127.0.0.1/32; the second address too.
    printf 'host    all             all             127.0.0.2/32            scram-sha-256\n' \
        >>"$DATA/pg_hba.conf"

    # A free port; if someone takes it between the check and the bind, try again.
    for attempt in 1 2 3 4 5; do
        PORT=$(pick_port)
        cp "$DATA/postgresql.conf.orig" "$DATA/postgresql.conf"
        write_conf
        rm -f "$LOG"
        if as_osuser "$PGBIN/pg_ctl" start -D "$DATA" -l "$LOG" -w -t "$READY_TIMEOUT" \
                </dev/null >/dev/null 2>&1; then
            break
        fi
        if [[ -n ${PGW_PGPORT:-} ]] || ! grep -qiE 'could not (bind|create any TCP)' "$LOG" 2>/dev/null; then
            cat "$LOG" >&2 2>/dev/null || true
            cluster_stop
            die "PostgreSQL did not start"
        fi
        note "port $PORT was taken; trying another"
        PORT=""
    done
    [[ -n $PORT ]] || { cluster_stop; die "PostgreSQL did not start (no port)"; }

    for ((i = 0; i < READY_TIMEOUT * 10; i++)); do
        "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$PORT" -t 1 && break
        sleep 0.1
    done
    if ! "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$PORT" -t 1; then
        cat "$LOG" >&2 || true
        cluster_stop
        die "PostgreSQL is not ready after ${READY_TIMEOUT}s"
    fi

    psql_admin -d postgres <<EOF
CREATE ROLE $APPUSER LOGIN PASSWORD '$APPPASS';
CREATE DATABASE $DB1 OWNER $SUPERUSER;
CREATE DATABASE $DB2 OWNER $SUPERUSER;
EOF
    for db in "$DB1" "$DB2"; do
        psql_admin -d "$db" -c "GRANT ALL ON SCHEMA public TO $APPUSER;"
    done

    cat >"$DIR/env.tmp" <<EOF
PGW_TEST_PGHOST=127.0.0.1
PGW_TEST_PGPORT=$PORT
PGW_TEST_PGUSER=$SUPERUSER
PGW_TEST_PGPASSWORD=$SUPERPASS
PGW_TEST_PGDATABASE=$DB1
PGW_TEST_PGDATABASE2=$DB2
PGW_TEST_APPUSER=$APPUSER
PGW_TEST_APPPASSWORD=$APPPASS
PGW_TEST_PGBIN=$PGBIN
PGW_TEST_PGDATA=$DATA
PGW_TEST_PGSOCKDIR=$SOCKDIR
PGW_TEST_PGLOG=$LOG
PGW_TEST_PGOSUSER=$OSUSER
PGW_TEST_PGVERSION=$ver
PGW_TEST_DIR=$DIR
EOF
    mv -f "$DIR/env.tmp" "$DIR/env"
    note "PostgreSQL $ver ready on 127.0.0.1:$PORT (socket $SOCKDIR, data $DATA, OS user $OSUSER)"
}

case $CMD in
    start) cluster_start ;;
    stop) cluster_stop ;;
    *) usage ;;
esac
