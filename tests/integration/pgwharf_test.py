"""pgwharf_test - helpers for pgwharf's Python integration tests.

Standard library only; runs under /usr/bin/python3 (ctest starts the tests
with `python3 -m unittest -v test_<name>` from this directory).

The ctest fixture "pg" (tests/pgcluster.sh) starts one throwaway PostgreSQL
cluster and describes it in the file named by $PGW_TEST_ENV; ctest also sets
$PGW_BINARY (the pgwharf executable), $PGW_SOURCE_DIR and $PGW_BUILD_DIR.

    import pgwharf_test as pt

    class TestSomething(pt.PgwharfTestCase):
        def test_select(self):
            px = self.start_pgwharf(settings={"pool_mode": "transaction"})
            self.assertEqual(px.psql("select 1"), "1")
            with psycopg2.connect(px.dsn()) as conn: ...

The pieces:
  env(key)                 a value from $PGW_TEST_ENV (None when missing)
  free_port()              a free TCP port on 127.0.0.1 below 32768
  Postgres                 the test cluster: dsn(), psql(), stop/start/
                           restart/kill9/pause/resume (pause and pause_all
                           raise without a postmaster, return once stopped),
                           backend_count()
  Pgwharf                  one pgwharf process with its own config, auth file
                           and log in a temp dir; a context manager
  PgwharfTestCase          unittest.TestCase that skips without a cluster,
                           stops every pgwharf it started and puts the
                           cluster back up after each test; db_conn/
                           console_conn: psycopg2 connections through a
                           pgwharf, closed at the test's end
  AppRoleTestCase          the same, logging in as the app role (self.user,
                           self.password, self.db)
  PgbenchTestCase          the same with pgbench's tables; bench(px, args, t):
                           pgbench through px, t transactions a client, each
                           processed, none failed
  wait_until(fn, timeout)  poll a condition with a deadline
  Background(fn)           fn in a thread; .result / .error afterwards
  one(conn, sql)           the first value of a query (DB-API connection)
  show(conn, what, **m)    SHOW <what> on a console connection: dict rows
                           (those matching m); show_table adds the names;
                           pool_row / wait_pool: one SHOW POOLS row, or
                           wait until it has given values
  px.show(what, **m)       the same through psql, values as text
"""

import csv
import errno
import os
import re
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

__all__ = ["env", "load_env", "free_port", "wait_port", "wait_until", "Postgres", "Pgwharf",
           "PgwharfTestCase", "AppRoleTestCase", "PgwharfError", "parse_tps", "pg_bin",
           "PgbenchTestCase", "Background", "one", "show", "show_table", "pool_row",
           "wait_pool"]


class PgwharfError(Exception):
    pass


# --- the environment file ----------------------------------------------------

_ENV = None


def load_env(path=None):
    """Parse a KEY=value file as tests/pgcluster.sh writes it ({} if absent)."""
    path = path or os.environ.get("PGW_TEST_ENV")
    out = {}
    if not path or not os.path.exists(path):
        return out
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\r\n")
            if not line or line.startswith("#") or "=" not in line:
                continue
            key, val = line.split("=", 1)
            if len(val) >= 2 and val[0] in "'\"" and val[-1] == val[0]:
                val = val[1:-1]
            out[key.strip()] = val
    return out


def env(key, default=None):
    """A value from the $PGW_TEST_ENV file, or default."""
    global _ENV
    if _ENV is None:
        _ENV = load_env()
    return _ENV.get(key, default)


def pg_bin(name):
    """Path of a PostgreSQL client/server program (psql, pgbench, pg_ctl...)."""
    d = env("PGW_TEST_PGBIN")
    if d and os.path.exists(os.path.join(d, name)):
        return os.path.join(d, name)
    found = shutil.which(name)
    if found:
        return found
    raise PgwharfError("cannot find %s (no PGW_TEST_PGBIN and not on PATH)" % name)


# --- ports -------------------------------------------------------------------

_handed_out = set()


def free_port(lo=20000, hi=32000):
    """A TCP port on 127.0.0.1 that nothing holds now, below the ephemeral
    range (32768-60999).  Not reserved: bind soon.  Never the same port twice
    in one process."""
    span = hi - lo
    start = random.randrange(span)
    for i in range(span):
        port = lo + (start + i) % span
        if port in _handed_out:
            continue
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(("127.0.0.1", port))     # no SO_REUSEADDR: TIME_WAIT counts as taken
        except OSError:
            continue
        finally:
            s.close()
        _handed_out.add(port)
        return port
    raise PgwharfError("no free port in %d-%d" % (lo, hi))


def sigcont(pid):
    """SIGCONT pid (a backend a test SIGSTOPped); gone already is fine."""
    try:
        os.kill(pid, signal.SIGCONT)
    except ProcessLookupError:
        pass


def wait_until(fn, timeout=10.0, interval=0.05, what="condition"):
    """fn()'s first true value, polled every interval; AssertionError (with
    the last value) after timeout seconds (fn is asked once more at the
    deadline, so a slow fn still gets a last look)."""
    deadline = time.monotonic() + timeout
    while True:
        last = fn()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %ss waiting for %s (last: %r)"
                                 % (timeout, what, last))
        time.sleep(interval)


class Background(threading.Thread):
    """Run fn in a (daemon) thread; .result / .error afterwards."""

    def __init__(self, fn):
        super().__init__(daemon=True)
        self.fn, self.result, self.error = fn, None, None
        self.start()

    def run(self):
        try:
            self.result = self.fn()
        except Exception as e:          # reported by the test
            self.error = e


# --- a slow NSS: getpwuid_r / getaddrinfo held at a FIFO (tests/nss_gate.c) -----

def nss_gate_env(**gates):
    """The environment for a pgwharf with tests/nss_gate.c preloaded;
    gates: PGW_GETPW_GATE=, PGW_GETGR_GATE= (getgrnam) and/or
    PGW_GETADDRINFO_GATE= FIFO paths (calls pass through until the FIFO
    exists)."""
    lib = os.environ.get("PGW_NSS_GATE_LIB") or os.path.join(
        os.path.dirname(os.path.abspath(os.environ.get("PGW_BINARY", ""))), "tests",
        "libpgw_nss_gate.so")
    if not os.path.exists(lib):
        raise unittest.SkipTest("no %s (build the tests)" % lib)
    asan = os.environ.get("ASAN_OPTIONS")
    env = {"LD_PRELOAD": lib,
           # the sanitizer runtime wants to come first; the gate does
           "ASAN_OPTIONS": (asan + ":" if asan else "") + "verify_asan_link_order=0"}
    env.update(gates)
    return env


def nss_gate_wait(fifo, timeout=30, what="a call at the gate"):
    """Until a call waits at the gate fifo; returns the descriptor that
    holds it (and any call that comes meanwhile) until nss_gate_release."""
    def writer():
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as e:
            if e.errno == errno.ENXIO:            # nobody reads yet
                return None
            raise
    return wait_until(writer, timeout=timeout, interval=0.02, what=what)


def nss_gate_release(fifo, fd):
    """Every call let through, now and later."""
    os.unlink(fifo)
    os.close(fd)


# --- the admin console (and other DB-API connections) --------------------------

def one(conn, sql, args=None):
    """The first column of the first row of sql on a DB-API connection."""
    cur = conn.cursor()
    try:
        cur.execute(sql, args)
        return cur.fetchone()[0]
    finally:
        cur.close()


def show_table(conn, what):
    """(column names, rows as dicts) of SHOW <what> on a console connection
    (psycopg2 or psycopg, autocommit)."""
    cur = conn.cursor()
    try:
        cur.execute("SHOW " + what)
        names = [d.name for d in cur.description]
        return names, [dict(zip(names, r)) for r in cur.fetchall()]
    finally:
        cur.close()


def _matching(rows, match):
    return [r for r in rows if all(r.get(k) == v for k, v in match.items())]


def show(conn, what, **match):
    """The rows (dicts) of SHOW <what> whose columns equal match."""
    return _matching(show_table(conn, what)[1], match)


def replication_server_addr(px, db, **dsn):
    """A logical replication client of db through px (its own server,
    closed with it): the address its server was on."""
    import psycopg2.extras
    conn = psycopg2.extras.LogicalReplicationConnection(px.dsn(db=db, **dsn))
    try:
        cur = conn.cursor()
        cur.execute("select host(inet_server_addr())")
        return cur.fetchone()[0]
    finally:
        conn.close()


def paused_all(conn):
    """SHOW STATE's paused: a PAUSE of everything (SHOW DATABASES' paused is
    a PAUSE db's only, as PgBouncer's)."""
    return show(conn, "STATE", key="paused")[0]["value"] == "yes"


def pool_row(conn, db, user):
    """The SHOW POOLS row of (db, user), or None."""
    rows = show(conn, "POOLS", database=db, user=user)
    return rows[0] if rows else None


def wait_pool(conn, db, user, timeout=10.0, **want):
    """Poll SHOW POOLS until the row of (db, user) has the values of want
    (cl_waiting=1, ...); returns that row."""
    def ready():
        p = pool_row(conn, db, user)
        return p if p and all(p[k] == v for k, v in want.items()) else None
    return wait_until(ready, timeout, what="%s in pool %s/%s" % (
        ", ".join("%s = %r" % kv for kv in want.items()), db, user))


def port_open(host, port, timeout=0.5):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_port(host, port, timeout=15.0, proc=None):
    """Wait until host:port accepts TCP connections; False on timeout or if
    proc (a Popen) exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        if port_open(host, port):
            return True
        time.sleep(0.05)
    return False


def _conninfo(**kw):
    """libpq keyword/value string; values quoted when needed."""
    parts = []
    for k, v in kw.items():
        if v is None:
            continue
        v = str(v)
        if v == "" or re.search(r"[\s'\\]", v):
            v = "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"
        parts.append("%s=%s" % (k, v))
    return " ".join(parts)


def entry_conninfo(**kw):
    """A [databases] / [users] value: key=value pairs as PgBouncer (and
    pgwharf) read them, where a quote inside quotes is '' and a backslash
    is a plain character (not libpq's escapes: see _conninfo)."""
    parts = []
    for k, v in kw.items():
        if v is None:
            continue
        v = str(v)
        if v == "" or re.search(r"[\s']", v):
            v = "'" + v.replace("'", "''") + "'"
        parts.append("%s=%s" % (k, v))
    return " ".join(parts)


def _url(host, port, db, user, password):
    from urllib.parse import quote
    auth = quote(user, safe="")
    if password is not None:
        auth += ":" + quote(password, safe="")
    return "postgresql://%s@%s:%d/%s" % (auth, host, int(port), quote(db, safe=""))


def _run_psql(host, port, user, password, db, sql, check=True, timeout=60,
              extra_args=(), env_extra=None, connect_timeout=10):
    """psql -X -A -t -q with ON_ERROR_STOP, sql on stdin (meta-commands such
    as \\c work).  Returns stdout without the trailing newline, or the
    CompletedProcess when check is False."""
    e = dict(os.environ)
    e.pop("PGSERVICE", None)
    e["PGCONNECT_TIMEOUT"] = str(connect_timeout)
    if password is not None:
        e["PGPASSWORD"] = password
    else:
        e.pop("PGPASSWORD", None)
    if env_extra:
        e.update(env_extra)
    cmd = [pg_bin("psql"), "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1",
           "-h", str(host), "-p", str(port), "-U", user, "-d", db] + list(extra_args)
    cp = subprocess.run(cmd, input=sql, capture_output=True, text=True,
                        timeout=timeout, env=e)
    if not check:
        return cp
    if cp.returncode != 0:
        raise PgwharfError("psql %s@%s:%s/%s failed (rc %d): %s\nSQL: %s"
                           % (user, host, port, db, cp.returncode,
                              cp.stderr.strip(), sql))
    return cp.stdout.rstrip("\n")


def parse_tps(pgbench_output):
    """The 'tps = N (without initial connection time)' figure, or None."""
    m = re.search(r"tps = ([0-9.]+) \(without initial", pgbench_output)
    if not m:
        m = re.search(r"tps = ([0-9.]+)", pgbench_output)
    return float(m.group(1)) if m else None


# --- PostgreSQL --------------------------------------------------------------

class Postgres:
    """The cluster tests/pgcluster.sh started.  Connection defaults are the
    superuser and database pgwharf; app/app_pw is a plain role, pgwharf2 a
    second database."""

    def __init__(self):
        if not env("PGW_TEST_PGPORT"):
            raise PgwharfError("no test cluster: $PGW_TEST_ENV is unset or has no "
                               "PGW_TEST_PGPORT (run through ctest, or "
                               "tests/pgcluster.sh start DIR and export "
                               "PGW_TEST_ENV=DIR/env)")
        self.host = env("PGW_TEST_PGHOST", "127.0.0.1")
        self.port = int(env("PGW_TEST_PGPORT"))
        self.user = env("PGW_TEST_PGUSER", "pgwharf")
        self.password = env("PGW_TEST_PGPASSWORD", "pgwharf")
        self.database = env("PGW_TEST_PGDATABASE", "pgwharf")
        self.database2 = env("PGW_TEST_PGDATABASE2", "pgwharf2")
        self.app_user = env("PGW_TEST_APPUSER", "app")
        self.app_password = env("PGW_TEST_APPPASSWORD", "app_pw")
        self.bindir = env("PGW_TEST_PGBIN")
        self.datadir = env("PGW_TEST_PGDATA")
        self.sockdir = env("PGW_TEST_PGSOCKDIR")
        self.logfile = env("PGW_TEST_PGLOG")
        self.osuser = env("PGW_TEST_PGOSUSER")

    @staticmethod
    def available():
        return bool(env("PGW_TEST_PGPORT"))

    # connection strings
    def dsn(self, db=None, user=None, password=None, **extra):
        """libpq keyword string straight to PostgreSQL over TCP."""
        user = user or self.user
        if password is None:
            password = self._default_password(user)
        return _conninfo(host=self.host, port=self.port, dbname=db or self.database,
                         user=user, password=password, **extra)

    def url(self, db=None, user=None, password=None):
        user = user or self.user
        if password is None:
            password = self._default_password(user)
        return _url(self.host, self.port, db or self.database, user, password)

    def conn_string(self, db=None, user=None, password=None, **extra):
        """A [databases] value for pgwharf pointing here: host, port, dbname,
        and user/password only when given."""
        return entry_conninfo(host=self.host, port=self.port, dbname=db or self.database,
                              user=user, password=password, **extra)

    def _default_password(self, user):
        return {self.user: self.password, self.app_user: self.app_password}.get(user)

    def psql(self, sql, db=None, user=None, password=None, check=True, timeout=60,
             via_socket=False, connect_timeout=10):
        """Run sql with psql; returns unaligned, tuples-only output.  Over TCP
        with a password by default; via_socket=True goes through the unix socket
        (trust auth, works while TCP auth is being broken on purpose)."""
        user = user or self.user
        if password is None:
            password = self._default_password(user)
        host = self.sockdir if via_socket else self.host
        return _run_psql(host, self.port, user, password, db or self.database, sql,
                         check=check, timeout=timeout, connect_timeout=connect_timeout)

    def pgbench(self, args, db=None, timeout=300, check=True):
        """pgbench straight against the cluster as its superuser (pgbench -i
        for a test's tables)."""
        return run_pgbench(self.host, self.port, self.user, self.password,
                           db or self.database, args, timeout=timeout, check=check)

    def queries_running(self, marker, lock_wait=False):
        """How many backends (not the asking one) run a query containing
        marker now; with lock_wait, only those waiting on a lock (an
        advisory-lock gate)."""
        cond = "wait_event_type = 'Lock'" if lock_wait else "state = 'active'"
        return int(self.psql("select count(*) from pg_stat_activity where %s and query like "
                             "'%%%s%%' and pid <> pg_backend_pid()"
                             % (cond, marker.replace("'", "''")), db="postgres",
                             via_socket=True))

    def wait_running(self, marker, n=1, lock_wait=False, timeout=20):
        """Until n backends run a query containing marker (see
        queries_running)."""
        wait_until(lambda: self.queries_running(marker, lock_wait) >= n, timeout,
                   what="%d queries like %r %s" % (n, marker,
                                                    "waiting on a lock" if lock_wait else "running"))

    def backend_count(self, db=None, user=None):
        """Client backends connected, not counting the one asking."""
        cond = ["backend_type = 'client backend'", "pid <> pg_backend_pid()"]
        if db:
            cond.append("datname = '%s'" % db.replace("'", "''"))
        if user:
            cond.append("usename = '%s'" % user.replace("'", "''"))
        return int(self.psql("select count(*) from pg_stat_activity where "
                             + " and ".join(cond), db="postgres", via_socket=True))

    def terminate_backends(self, db=None, user=None):
        """pg_terminate_backend() for matching client backends; returns count."""
        cond = ["backend_type = 'client backend'", "pid <> pg_backend_pid()"]
        if db:
            cond.append("datname = '%s'" % db.replace("'", "''"))
        if user:
            cond.append("usename = '%s'" % user.replace("'", "''"))
        out = self.psql("select count(pg_terminate_backend(pid)) from pg_stat_activity "
                        "where " + " and ".join(cond), db="postgres", via_socket=True)
        return int(out)

    # process control
    def _as_osuser(self, cmd):
        if os.geteuid() == 0 and self.osuser and self.osuser != "root":
            return ["runuser", "-u", self.osuser, "--"] + cmd
        return cmd

    def pg_ctl(self, *args, check=True, timeout=90):
        cmd = self._as_osuser([pg_bin("pg_ctl"), "-D", self.datadir] + list(args))
        cp = subprocess.run(cmd, cwd="/", stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=timeout)
        if check and cp.returncode != 0:
            raise PgwharfError("pg_ctl %s failed (rc %d): %s %s"
                               % (" ".join(args), cp.returncode, cp.stdout, cp.stderr))
        return cp

    def postmaster_pid(self):
        """PID of the running postmaster, or None."""
        try:
            with open(os.path.join(self.datadir, "postmaster.pid")) as f:
                pid = int(f.readline().strip())
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) else None

    def is_running(self):
        return self.postmaster_pid() is not None

    def is_ready(self, timeout=2):
        """pg_isready's answer (libpq's PQping), without a process per
        look: the server is up when it answers a startup packet with an
        authentication request or any error but 57P03 (starting up,
        shutting down, in recovery)."""
        body = struct.pack("!I", 196608) + ("user\0%s\0database\0%s\0\0"
                                            % (self.user, self.database)).encode()
        try:
            with socket.create_connection((self.host, self.port), timeout=timeout) as s:
                s.sendall(struct.pack("!I", len(body) + 4) + body)
                data = b""
                while len(data) < 5 or len(data) < 1 + struct.unpack("!I", data[1:5])[0]:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                    if data[:1] == b"R":
                        return True
        except (OSError, struct.error):
            return False
        if data[:1] != b"E":
            return False
        m = re.search(rb"\0C([0-9A-Z]{5})\0", b"\0" + data[5:])
        return m is not None and m.group(1) != b"57P03"

    def wait_ready(self, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.is_ready(timeout=1):
                return
            time.sleep(0.1)
        raise PgwharfError("PostgreSQL not ready after %ss; log:\n%s"
                           % (timeout, self.log_tail()))

    def start(self, timeout=60):
        """Start the postmaster (after stop() or kill9()) and wait until ready."""
        if self.is_running():
            self.resume()
            self.wait_ready(timeout)
            return
        # Right after a kill -9 the old postmaster may linger as a zombie
        # (kill(pid, 0) still succeeds, so PostgreSQL thinks its lock file
        # is live) or orphaned backends may still hold the shared memory:
        # retry until those are gone.
        deadline = time.monotonic() + timeout
        while True:
            cp = self.pg_ctl("start", "-w", "-t", str(int(timeout)), "-l", self.logfile,
                             check=False)
            if cp.returncode == 0:
                break
            tail = self.log_tail(5)
            # (pg_ctl's own word for a lock file left by a killed
            # postmaster: the log's line may not be the last five yet)
            transient = ("lock file" in tail or "shared memory block" in tail or
                         "another server might be running" in cp.stdout + cp.stderr)
            if not transient or time.monotonic() > deadline:
                raise PgwharfError("pg_ctl start failed (rc %d): %s%s\nlog:\n%s"
                                   % (cp.returncode, cp.stdout, cp.stderr,
                                      self.log_tail()))
            time.sleep(0.2)
        self.wait_ready(timeout)

    def stop(self, mode="fast", timeout=60):
        """pg_ctl stop -m fast|smart|immediate; waits until it is gone."""
        pid = self.postmaster_pid()
        if pid is None:
            return
        self.resume()
        self.pg_ctl("stop", "-m", mode, "-w", "-t", str(int(timeout)), check=False)
        _wait_gone(pid, timeout)

    def restart(self, mode="fast", timeout=60):
        self.stop(mode=mode, timeout=timeout)
        self.start(timeout=timeout)

    def kill9(self, children=True, timeout=30):
        """SIGKILL the postmaster, as a crash would; with children=True also
        every backend and auxiliary process, so clients see their connections
        die at once and start() can follow right away.  Returns the old PID;
        raises when there is no postmaster (a crash of nothing tests
        nothing)."""
        pid = self.running_postmaster("kill9")
        if children:
            # Stopped first, the postmaster forks no backend between the
            # listing of its children and its death: one forked then (a
            # client connecting meanwhile) was left holding the port and
            # the shared memory, and start() failed ("another server might
            # be running").
            os.kill(pid, signal.SIGSTOP)
        kids = _children(pid) if children else []
        for p in [pid] + kids:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for p in [pid] + kids:
            _wait_gone(p, timeout)
        return pid

    def running_postmaster(self, what):
        """The postmaster's PID, for what (a step that needs one): raises
        PgwharfError saying why there is none, where a signal to nobody
        would leave the test checking nothing (a "freeze" that froze
        nothing let pgbench run 120 000 transactions through it)."""
        pidfile = os.path.join(self.datadir or "", "postmaster.pid")
        try:
            with open(pidfile) as f:
                first = f.readline().strip()
        except OSError as e:
            raise PgwharfError("%s: no postmaster (cannot read %s: %s)" % (what, pidfile, e))
        if not first.isdigit() or not _alive(int(first)):
            raise PgwharfError("%s: no postmaster (%s names PID %r, %s)"
                               % (what, pidfile, first,
                                  "not running" if first.isdigit() else "not a PID"))
        return int(first)

    def pause(self):
        """SIGSTOP the postmaster: new connections hang (the kernel still
        completes TCP handshakes), running backends keep going.  Back once
        it is stopped; raises when there is no postmaster to stop."""
        pid = self.running_postmaster("pause")
        os.kill(pid, signal.SIGSTOP)
        wait_stopped([pid])
        return pid

    def pause_all(self):
        """SIGSTOP the postmaster and every backend: the whole server
        hangs.  Back once every one of them is stopped (wait_stopped);
        raises when there is no postmaster.  Returns their PIDs, the
        postmaster's first."""
        pid = self.running_postmaster("pause_all")
        os.kill(pid, signal.SIGSTOP)
        wait_stopped([pid])           # stopped: it forks no more, its list of children is whole
        kids = _children(pid)
        for p in kids:
            try:
                os.kill(p, signal.SIGSTOP)
            except ProcessLookupError:
                pass
        wait_stopped(kids)
        return [pid] + kids

    def resume(self):
        """SIGCONT the postmaster and its children (undoes pause/pause_all)."""
        pid = self.postmaster_pid()
        if pid is not None:
            for p in [pid] + _children(pid):
                try:
                    os.kill(p, signal.SIGCONT)
                except ProcessLookupError:
                    pass
        return pid

    def enable_ssl(self, cert_file, key_file, prefix="pgwharf_"):
        """Turn ssl on in the cluster with this certificate and key (copied
        into the data directory, owned by the cluster's OS user).  Returns a
        function that turns it off again and removes the copies; call it in
        cleanup."""
        if not self.datadir or not os.path.isdir(self.datadir):
            raise unittest.SkipTest("no PGW_TEST_PGDATA to put certificates in")
        files = []
        for src in (cert_file, key_file):
            dst = os.path.join(self.datadir, prefix + os.path.basename(src))
            shutil.copy(src, dst)
            os.chmod(dst, 0o600)
            if os.geteuid() == 0 and self.osuser and self.osuser != "root":
                shutil.chown(dst, self.osuser, None)
            files.append(dst)

        def off():
            self.ensure_running()
            self.psql("alter system reset ssl; alter system reset ssl_cert_file;"
                      "alter system reset ssl_key_file; select pg_reload_conf();",
                      db="postgres", via_socket=True)
            for f in files:
                try:
                    os.unlink(f)
                except OSError:
                    pass

        self.psql("alter system set ssl_cert_file = '%s'; alter system set ssl_key_file = '%s';"
                  "alter system set ssl = on; select pg_reload_conf();" % tuple(files),
                  db="postgres", via_socket=True)
        deadline = time.monotonic() + 10
        while self.psql("show ssl", db="postgres", via_socket=True) != "on":
            if time.monotonic() > deadline:
                off()
                raise PgwharfError("ssl did not come on: " + self.log_tail())
            time.sleep(0.1)
        return off

    def ensure_running(self):
        """Put the cluster back after a test that stopped, killed or paused it."""
        if self.is_running():
            self.resume()
        else:
            self.start()
        self.wait_ready()

    def log_tail(self, lines=40):
        return _tail(self.logfile, lines)


def _alive(pid):
    """Alive and not a zombie."""
    return proc_state(pid) not in (None, "Z", "X")


def proc_state(pid):
    """The state letter of /proc/PID/stat (R, S, D, T stopped, Z...); None
    when there is no such process."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def wait_stopped(pids, timeout=30):
    """Until each of pids is stopped by a signal (state T), or gone (or a
    zombie: it ended meanwhile); PgwharfError with the others' states
    after timeout.  A SIGSTOP takes effect when the process next runs, not
    when kill() returns."""
    deadline = time.monotonic() + timeout
    while True:
        states = dict((p, proc_state(p)) for p in pids)
        running = dict((p, st) for p, st in states.items() if st not in (None, "T", "Z", "X"))
        if not running:
            return
        if time.monotonic() >= deadline:
            raise PgwharfError("not stopped %ss after SIGSTOP: %s (PID: state)"
                               % (timeout, running))
        time.sleep(0.02)


def _wait_gone(pid, timeout):
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            raise PgwharfError("process %d does not go away" % pid)
        time.sleep(0.05)


def _children(pid):
    kids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            kids.append(int(name))
    return kids


def _tail(path, lines):
    if not path:
        return ""
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError as e:
        return "(cannot read %s: %s)" % (path, e)


# --- pgwharf -----------------------------------------------------------------

def _ini_value(v):
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, dict):
        return entry_conninfo(**v)
    return str(v)


class Pgwharf:
    """One pgwharf process in its own temp dir (config, auth file, log).

    settings   [pgwharf] keys; merged over the defaults: listen_addr
               127.0.0.1, listen_port a free port, unix_socket_dir the temp
               dir, auth_type md5, auth_file the generated file,
               admin_users/stats_users pgwharf.  A value of None drops a key.
    databases  [databases]: name -> connection string or dict of libpq
               keywords.  Default: pgwharf, pgwharf2 and postgres on the
               test cluster, without user/password (the client's are used).
    users      [users]: name -> string or dict ("pool_mode=session").
    auth_users the auth file: user -> secret (plaintext, md5..., SCRAM-...).
               Default: the cluster's superuser and app role, plaintext.
    extra      raw text appended to the config.
    binary     default $PGW_BINARY.
    args       extra command-line arguments before the config path.
    env        extra environment for the process.

    start() is implicit in `with Pgwharf(...) as px:`; stop() always runs.
    """

    ready_timeout = 15.0

    def __init__(self, pg=None, settings=None, databases=None, users=None,
                 auth_users=None, extra="", binary=None, args=(), env=None,
                 tmpdir=None):
        self.pg = pg if pg is not None else (Postgres() if Postgres.available() else None)
        self.binary = binary or os.environ.get("PGW_BINARY")
        if not self.binary:
            raise PgwharfError("$PGW_BINARY is not set (run through ctest)")
        self.args = list(args)
        self.extra_env = dict(env or {})
        self.dir = tmpdir or tempfile.mkdtemp(prefix="pgwharf-test-")
        self._own_dir = tmpdir is None
        self.config_path = os.path.join(self.dir, "pgwharf.ini")
        self.auth_path = os.path.join(self.dir, "userlist.txt")
        self.log_path = os.path.join(self.dir, "pgwharf.log")
        self.proc = None
        self.returncode = None
        self.killed = False          # stop() had to SIGKILL
        self.preexec_fn = None       # run in the child before exec (a resource limit)

        self.settings = {
            "listen_addr": "127.0.0.1",
            "listen_port": None,     # filled by start()
            "unix_socket_dir": self.dir,
            "auth_type": "md5",
            "auth_file": self.auth_path,
            "admin_users": self.pg.user if self.pg else "pgwharf",
            "stats_users": self.pg.user if self.pg else "pgwharf",
        }
        self.settings.update(settings or {})
        if databases is None:
            databases = {}
            if self.pg:
                for db in (self.pg.database, self.pg.database2, "postgres"):
                    databases[db] = self.pg.conn_string(db)
        self.databases = dict(databases)
        self.users = dict(users or {})
        if auth_users is None:
            auth_users = {}
            if self.pg:
                auth_users = {self.pg.user: self.pg.password,
                              self.pg.app_user: self.pg.app_password}
        self.auth_users = dict(auth_users)
        self.extra = extra

    # files
    @property
    def port(self):
        p = self.settings.get("listen_port")
        return int(p) if p not in (None, "") else None

    @property
    def host(self):
        addr = str(self.settings.get("listen_addr") or "127.0.0.1")
        first = addr.split(",")[0].strip()
        return "127.0.0.1" if first in ("*", "0.0.0.0", "") else first

    def config_text(self):
        out = ["; written by tests/integration/pgwharf_test.py", "[pgwharf]"]
        for k, v in self.settings.items():
            if v is not None:
                out.append("%s = %s" % (k, _ini_value(v)))
        out += ["", "[databases]"]
        for k, v in self.databases.items():
            out.append("%s = %s" % (k, _ini_value(v)))
        out += ["", "[users]"]
        for k, v in self.users.items():
            out.append("%s = %s" % (k, _ini_value(v)))
        out.append("")
        if self.extra:
            out.append(self.extra)
        return "\n".join(out) + "\n"

    def auth_text(self):
        def q(s):
            return '"' + str(s).replace('"', '""') + '"'
        return "".join("%s %s\n" % (q(u), q(s)) for u, s in self.auth_users.items())

    def write_config(self):
        """(Re)write the config and auth files; start() and reload() call it."""
        if self.settings.get("listen_port") in (None, "", 0, "0", "auto"):
            self.settings["listen_port"] = free_port()
        for k in ("metrics_port",):
            if self.settings.get(k) == "auto":
                self.settings[k] = free_port()
        _write(self.auth_path, self.auth_text())
        _write(self.config_path, self.config_text())

    # process
    def start(self, wait=True):
        """Write the files, start the binary, wait until the port accepts
        connections.  Retries with a new port if the chosen one was taken."""
        if self.proc is not None and self.proc.poll() is None:
            raise PgwharfError("already running (pid %d)" % self.proc.pid)
        fixed_port = self.settings.get("listen_port") not in (None, "", 0, "0", "auto")
        # ports picked here (listen_port unset, metrics_port "auto"): on
        # "in use" (another process took one after free_port), pick again
        auto = [k for k in ("metrics_port",) if self.settings.get(k) == "auto"]
        for attempt in range(3):
            self.write_config()
            e = dict(os.environ)
            e.update(self.extra_env)
            logf = open(self.log_path, "ab")
            try:
                self.proc = subprocess.Popen(
                    [self.binary] + self.args + [self.config_path],
                    stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                    cwd=self.dir, env=e, start_new_session=True,
                    preexec_fn=self.preexec_fn)
            finally:
                logf.close()
            self.returncode = None
            self.killed = False
            if not wait:
                return self
            if wait_port(self.host, self.port, self.ready_timeout, proc=self.proc):
                return self
            rc = self.proc.poll()
            if rc is None:
                self.stop()
                raise PgwharfError("pgwharf did not listen on %s:%d within %ss; log:\n%s"
                                   % (self.host, self.port, self.ready_timeout,
                                      self.log_tail()))
            self.returncode = rc
            if (not fixed_port or auto) and "in use" in self.log():
                if not fixed_port:
                    self.settings["listen_port"] = None
                for k in auto:
                    self.settings[k] = "auto"
                continue
            raise PgwharfError("pgwharf exited with %s before listening; log:\n%s"
                               % (rc, self.log_tail()))
        raise PgwharfError("pgwharf could not find a free port; log:\n%s" % self.log_tail())

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def send_signal(self, sig):
        if self.alive():
            os.kill(self.proc.pid, sig)

    def reload(self, rewrite=True):
        """Rewrite the files from the current attributes (unless rewrite is
        False) and send SIGHUP."""
        if rewrite:
            self.write_config()
        self.send_signal(signal.SIGHUP)

    def stop(self, sig=signal.SIGTERM, timeout=15.0):
        """Send sig (SIGTERM: graceful), wait up to timeout, then SIGKILL.
        Returns the exit status (negative: killed by that signal).  Safe to
        call twice."""
        if self.proc is None:
            return self.returncode
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.killed = True
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.returncode = self.proc.returncode
        return self.returncode

    def kill(self, sig=signal.SIGKILL):
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            self.proc.wait(10)
            self.returncode = self.proc.returncode
        return self.returncode

    def cleanup(self):
        """stop() and remove the temp dir (kept when $PGW_KEEP_TMP is set)."""
        self.stop()
        if self._own_dir and not os.environ.get("PGW_KEEP_TMP"):
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *exc):
        self.cleanup()
        return False

    def check(self, timeout=30):
        """`pgwharf --check CONFIG` on the current files: CompletedProcess."""
        self.write_config()
        return subprocess.run([self.binary, "--check", self.config_path],
                              capture_output=True, text=True, timeout=timeout,
                              cwd=self.dir)

    # clients
    def dsn(self, db=None, user=None, password=None, **extra):
        """libpq keyword string to pgwharf (psycopg2.connect, psycopg.connect)."""
        db = db or (self.pg.database if self.pg else "pgwharf")
        user = user or (self.pg.user if self.pg else "pgwharf")
        if password is None:
            password = self.auth_users.get(user)
            if password is None or str(password).startswith(("md5", "SCRAM-SHA-256$")):
                password = self.pg._default_password(user) if self.pg else None
        return _conninfo(host=self.host, port=self.port, dbname=db, user=user,
                         password=password, **extra)

    def url(self, db=None, user=None, password=None):
        """postgresql:// URL to pgwharf (asyncpg, node-postgres)."""
        kw = _parse_conninfo(self.dsn(db, user, password))
        return _url(kw["host"], kw["port"], kw["dbname"], kw["user"], kw.get("password"))

    def psql(self, sql, db=None, user=None, password=None, check=True, timeout=60,
             extra_args=(), connect_timeout=10):
        """psql through pgwharf: unaligned, tuples-only output (see _run_psql)."""
        kw = _parse_conninfo(self.dsn(db, user, password))
        return _run_psql(kw["host"], kw["port"], kw["user"], kw.get("password"),
                         kw["dbname"], sql, check=check, timeout=timeout,
                         extra_args=extra_args, connect_timeout=connect_timeout)

    def admin(self, sql, db="pgbouncer", user=None, password=None, check=True):
        """A command on the admin console (SHOW POOLS; ...): rows as lists."""
        out = self.psql(sql, db=db, user=user, password=password, check=check,
                        extra_args=("-F", "\t"))
        if not check:
            return out
        return [line.split("\t") for line in out.splitlines() if line]

    def metric(self, name):
        """The value of an unlabelled metric on /metrics (metrics_port must be
        set: "auto" picks one), or the sum over a labelled one's series."""
        import urllib.request
        url = "http://127.0.0.1:%d/metrics" % int(self.settings["metrics_port"])
        with urllib.request.urlopen(url, timeout=10) as r:
            body = r.read().decode("utf-8")
        vals = re.findall(r"^%s(?:\{[^}]*\})? ([0-9.eE+-]+)$" % re.escape(name), body, re.M)
        if not vals:
            raise AssertionError("%s missing from /metrics" % name)
        return sum(float(v) for v in vals)

    def show(self, what, **match):
        """SHOW <what> on the admin console through psql: rows as dicts of
        text values (NULL as ""), only those whose columns equal match
        (compare with strings: port="5432")."""
        out = self.psql("SHOW " + what, db="pgbouncer",
                        extra_args=("--csv", "-P", "tuples_only=off"))
        lines = list(csv.reader(out.splitlines()))
        if not lines:
            return []
        rows = [dict(zip(lines[0], r)) for r in lines[1:]]
        return _matching(rows, {k: str(v) for k, v in match.items()})

    def pgbench(self, args, db=None, user=None, password=None, timeout=300, check=True):
        """Run pgbench against pgwharf; args a list (e.g. ["-S", "-c", "10",
        "-T", "5"]).  Returns the CompletedProcess (parse_tps(cp.stdout))."""
        kw = _parse_conninfo(self.dsn(db, user, password))
        return run_pgbench(kw["host"], kw["port"], kw["user"], kw.get("password"),
                           kw["dbname"], args, timeout=timeout, check=check)

    # observation
    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def log_tail(self, lines=60):
        return _tail(self.log_path, lines)

    def wait_for_log(self, pattern, timeout=10.0):
        """Wait until the log matches the regex; returns the match or raises."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.log())
            if m:
                return m
            if time.monotonic() > deadline:
                raise PgwharfError("log never matched %r; tail:\n%s"
                                   % (pattern, self.log_tail()))
            time.sleep(0.05)

    def fd_count(self):
        return len(os.listdir("/proc/%d/fd" % self.pid))

    def rss_kb(self):
        with open("/proc/%d/status" % self.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def threads(self):
        return len(os.listdir("/proc/%d/task" % self.pid))


def run_pgbench(host, port, user, password, db, args, timeout=300, check=True):
    e = dict(os.environ)
    if password is not None:
        e["PGPASSWORD"] = password
    cmd = [pg_bin("pgbench"), "-h", str(host), "-p", str(port), "-U", user] + list(args) + [db]
    cp = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=e)
    if check and cp.returncode != 0:
        raise PgwharfError("pgbench %s failed (rc %d):\n%s\n%s"
                           % (" ".join(args), cp.returncode, cp.stdout, cp.stderr))
    return cp


def _parse_conninfo(s):
    out = {}
    for m in re.finditer(r"(\w+)=('(?:[^'\\]|\\.)*'|\S*)", s):
        v = m.group(2)
        if v.startswith("'"):
            v = re.sub(r"\\(.)", r"\1", v[1:-1])
        out[m.group(1)] = v
    return out


def _write(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


# --- the test case base ------------------------------------------------------

class PgwharfTestCase(unittest.TestCase):
    """Skips when there is no test cluster.  self.pg is the Postgres helper;
    self.start_pgwharf(**kw) starts a Pgwharf that is always stopped.  After
    every pgwharf stops, the test fails if the process did not exit with 0
    on SIGTERM (crash, sanitizer report, hang that needed SIGKILL) unless
    the test set self.expect_clean_exit = False.  The cluster is put back up
    after each test."""

    expect_clean_exit = True

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        if not Postgres.available():
            raise unittest.SkipTest("no test cluster ($PGW_TEST_ENV)")
        cls.pg = Postgres()

    def setUp(self):
        super().setUp()
        self._pgwharfs = []
        self.addCleanup(self._cleanup_all)

    def assert_pgbench_ok(self, px, args):
        """Run pgbench through px; it must exit 0 with no failed transaction
        and a TPS figure.  Returns (CompletedProcess, transactions processed)."""
        cp = px.pgbench(args, check=False)
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        failed = [l for l in cp.stdout.splitlines() if "failed transactions" in l]
        if failed:                   # pgbench 15 prints the line; older ones do not
            self.assertIn(": 0 (", failed[0], cp.stdout)
        self.assertGreater(parse_tps(cp.stdout) or 0, 0, cp.stdout)
        m = re.search(r"number of transactions actually processed: (\d+)", cp.stdout)
        self.assertIsNotNone(m, cp.stdout)
        return cp, int(m.group(1))

    def db_conn(self, px, autocommit=True, **dsn):
        """A psycopg2 connection through px (px.dsn(**dsn)), closed at the
        test's end; autocommit unless told otherwise."""
        import psycopg2              # only for the tests that use it
        conn = psycopg2.connect(px.dsn(**dsn))
        conn.autocommit = autocommit
        self.addCleanup(conn.close)
        return conn

    def cancel_while_running(self, conn, sql, running=None):
        """sql on psycopg2 connection conn, cancelled by conn.cancel() once
        PostgreSQL runs it (running: the text pg_stat_activity shows, sql
        by default): it fails with QueryCanceled."""
        import psycopg2.errors
        canceller = Background(lambda: (self.pg.wait_running(running or sql), conn.cancel()))
        with self.assertRaises(psycopg2.errors.QueryCanceled):
            one(conn, sql)
        canceller.join(20)
        self.assertIsNone(canceller.error)

    def console_conn(self, px, **dsn):
        """A psycopg2 connection to px's admin console (autocommit)."""
        dsn.setdefault("db", "pgbouncer")
        return self.db_conn(px, **dsn)

    def start_pgwharf(self, start=True, **kw):
        kw.setdefault("pg", self.pg)
        px = Pgwharf(**kw)
        self._pgwharfs.append(px)
        if start:
            px.start()
        return px

    def start_pgwharf_epoll_fail(self, settings):
        """pgwharf with tests/nss_gate.c preloaded: each time the returned
        path is created, one epoll_ctl adding or changing a descriptor
        fails (ENOMEM).  (px, path)."""
        d = tempfile.mkdtemp(prefix="pgw-epoll-")
        self.addCleanup(shutil.rmtree, d, True)
        px = self.start_pgwharf(start=False, settings=settings)
        fail = os.path.join(d, "fail")
        px.extra_env.update(nss_gate_env(PGW_EPOLL_FAIL=fail))
        px.start()
        return px, fail

    def _failed_so_far(self):
        """True when this test has already failed or errored (unittest
        records it as it happens, before the cleanups run)."""
        result = getattr(getattr(self, "_outcome", None), "result", None)
        if result is None:
            return False
        # A failed subTest is recorded as its _SubTest (whose test_case is
        # this test), not as the test itself.
        return any(t is self or getattr(t, "test_case", None) is self
                   for t, _ in list(result.failures) + list(result.errors))

    def _cleanup_all(self):
        problems = []
        failed = self._failed_so_far()
        for px in self._pgwharfs:
            was_running = px.alive()
            rc = px.stop()
            if self.expect_clean_exit and was_running and (px.killed or rc != 0):
                problems.append("pgwharf pid %s %s; log tail:\n%s"
                                % (px.pid, "hung on SIGTERM and was killed" if px.killed
                                   else "exited with %s" % rc, px.log_tail()))
            elif os.environ.get("PGW_TEST_VERBOSE"):
                sys.stderr.write("--- pgwharf log %s ---\n%s" % (px.log_path, px.log()))
            elif failed:            # what CI shows of a failure: the log's end
                sys.stderr.write("--- %s failed: pgwharf log %s, last lines ---\n%s"
                                 % (self.id(), px.log_path, px.log_tail(80)))
            if not problems:
                px.cleanup()
        try:
            self.pg.ensure_running()
        except PgwharfError as e:
            problems.append(str(e))
        if problems:
            self.fail("\n".join(problems))


class PgbenchTestCase(PgwharfTestCase):
    """A PgwharfTestCase with pgbench's tables (scale 2) in the test
    database.  bench(px, args, t) runs pgbench through px on 2 threads,
    t transactions a client (-t; args: -c clients, -S, -M...), and asserts
    it ran with no failed transaction and processed every one (a client
    cut off or stuck fails it; a fixed -T would let the others make up
    its count); returns assert_pgbench_ok's (CompletedProcess,
    transactions processed)."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.pg.pgbench(["-i", "-s", "2", "-q"])

    def bench(self, px, args, t):
        cp, n = self.assert_pgbench_ok(px, list(args) + ["-t", str(t), "-j", "2"])
        self.assertEqual(n, int(args[args.index("-c") + 1]) * t, cp.stdout)
        return cp, n


class AppRoleTestCase(PgwharfTestCase):
    """A PgwharfTestCase whose clients log in as the cluster's unprivileged
    app role: self.user, self.password, self.db."""

    def setUp(self):
        super().setUp()
        self.user = self.pg.app_user
        self.password = self.pg.app_password
        self.db = self.pg.database
