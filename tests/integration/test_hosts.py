"""Host lists in [databases]: pgwharf picks one host per server connection
(load_balance_hosts), with a circuit breaker per host.

The test cluster listens on 127.0.0.1 and 127.0.0.2 (tests/pgcluster.sh),
so inet_server_addr() tells which host a server went to; nothing listens
on 127.0.0.3 or 127.0.0.4 (connection refused at once).  A host that does
not match target_session_attrs is a small fake server in this file: it
answers the startup with default_transaction_read_only=on, which libpq 15
reads (with in_hot_standby) instead of asking SHOW transaction_read_only.

  - round-robin (the default): successive server connections alternate
    between the hosts; SHOW SERVERS shows the address used, SHOW DATABASES
    the list, SHOW BREAKERS one row per host;
  - a dead host first in the list: every client is served by the live
    host, the dead host's breaker opens (its own SHOW BREAKERS row and
    metric series), the live one's stays closed; with every host dead,
    clients get the breaker's error;
  - load_balance_hosts=disable: all servers on the first host; with the
    first host dead, one failure moves it to the next, where it stays;
  - a bad load_balance_hosts value, or a port list that does not pair with
    the hosts, is a config error (file:line);
  - target_session_attrs=read-write: a read-only host is passed over for
    the next one, without counting against its breaker; with no host
    matching, clients get libpq's reason; the verdict of a login a reload
    overtook (target_session_attrs dropped) is not the pool's;
  - each target_session_attrs value against real servers of each kind
    (SideClusters: a hot standby, a read-only primary, on unix sockets),
    prefer-standby's two passes (a standby while one is up, else any host)
    included; a value libpq does not know is a config error;
  - a host that stops matching after login (a standby promoted, a primary
    read-only by default): its servers are closed at their next check,
    reset or release, and new ones go to the other hosts;
  - a host skipped for its kind is rechecked early when no other host can
    be tried (the primary dead, or every host a standby): clients that
    come meanwhile wait for that login, one for every pool on the host
    (SocketGate holds it), and a host that matched is skipped no more.
"""

import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time

import psycopg2
import psycopg2.extras

import pgw_hardening as hz
import pgwharf_test as pt

SETTINGS = {
    "pool_mode": "session",
    "default_pool_size": 10,
    "breaker_threshold": 3,
    "breaker_cooldown": "60s",       # an open breaker stays open for the test
    "breaker_max_cooldown": "60s",
    "server_login_retry": "60s",
    "query_wait_timeout": "10s",
}


def _ts(line):
    """A log line's ts= as seconds (the wall clock: no step in these tests)."""
    m = re.search(r"ts=\d{4}-\d\d-\d\dT(\d\d):(\d\d):(\d\d\.\d+)Z", line)
    return int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))


def assert_rechecks_spaced(tc, log, db, logins):
    """Every login of db's one read-only host is refused and logged
    (server_connect_failed); the first is the client's, any later one a
    recheck, which the host's clock lets go a second after the refusal
    before it at the soonest.  Not "one login": on a loaded machine (ASan,
    CI) the test's clients may well span more than that second."""
    lines = [l for l in log.splitlines()
             if re.search(r"event=server_connect_failed db=%s .*session is read-only" % db, l)]
    tc.assertEqual(len(lines), logins, log)
    tc.assertGreaterEqual(logins, 1)
    times = [_ts(l) for l in lines]
    for a, b in zip(times, times[1:]):
        tc.assertGreaterEqual(b - a, 0.99, "a recheck within the clock's second:\n%s" % log)


class FakeReadOnlyServer(hz.FakeServer):
    """A PostgreSQL look-alike on 127.0.0.1 (port 0) that lets anyone in and
    reports a read-only session; libpq with target_session_attrs=read-write
    then says "session is read-only" and hangs up.  held: each login waits,
    its startup packet read (counted in self.arrived), until release()."""

    def __init__(self, held=False):
        self.logins = 0
        self.arrived = 0
        self.gate = threading.Event()
        if not held:
            self.gate.set()
        super().__init__()

    def release(self):
        self.gate.set()

    def close(self):
        self.gate.set()
        super().close()

    def session(self, conn):
        self.read_startup(conn)
        self.arrived += 1
        self.gate.wait(30)
        self.logins += 1
        conn.sendall(self.login_ok((("server_version", "15.0"),
                                    ("default_transaction_read_only", "on"),
                                    ("in_hot_standby", "off"), ("client_encoding", "UTF8"))))
        while conn.recv(1024):
            pass


class SideClusters:
    """Small PostgreSQL clusters of the test cluster's binaries, each on
    its own unix socket only (listen_addresses = '', so no TCP port: the
    socket file takes the test cluster's port number in another
    directory).  One cleanly stopped template (database pgwharf, superuser
    pgwharf, trust), copied for each cluster:

      start("standby")  a real hot standby: the copy with standby.signal
                        (no primary: it stays in recovery, read-only,
                        in_hot_standby = on)
      start("ro")       a primary with default_transaction_read_only = on
      start("rw")       a plain primary

    (start(kind, name) for a second one of a kind.)  Each returns its
    socket directory (sock_dir(name) before it starts) (a `host` for libpq); its
    cluster_name is the name given, which `select
    current_setting('cluster_name')` shows (the test cluster's is "").
    close() stops every one (pg_ctl, by its data directory) and removes
    the files."""

    def __init__(self, pg):
        self.pg = pg
        self.root = tempfile.mkdtemp(prefix="pgwharf-side.")
        os.chmod(self.root, 0o755)
        self.started = []
        self.template = os.path.join(self.root, "template")
        self._chown(self.root)
        self._run("initdb", "-D", self.template, "-U", pg.user, "--auth=trust", "-E", "UTF8",
                  "--no-locale", "--no-sync")
        with open(os.path.join(self.template, "postgresql.conf"), "a") as f:
            f.write("\nlisten_addresses = ''\nport = %d\nfsync = off\n"
                    "shared_buffers = 16MB\nmax_connections = 40\nmax_wal_senders = 0\n"
                    "log_min_messages = warning\n" % pg.port)
        sock = self._start(self.template, "template")
        pt._run_psql(sock, pg.port, pg.user, None, "postgres",
                     "create database %s" % pg.database)
        self.stop(self.template)

    def _chown(self, path):
        if os.geteuid() == 0 and self.pg.osuser and self.pg.osuser != "root":
            shutil.chown(path, user=self.pg.osuser)

    def _run(self, prog, *args):
        path = prog if prog.startswith("/") else pt.pg_bin(prog)
        cmd = self.pg._as_osuser([path] + list(args))
        cp = subprocess.run(cmd, cwd="/", stdin=subprocess.DEVNULL, capture_output=True,
                            text=True, timeout=120)
        if cp.returncode != 0:
            raise pt.PgwharfError("%s failed: %s%s" % (prog, cp.stdout, cp.stderr))
        return cp

    def sock_dir(self, name):
        return os.path.join(self.root, name + ".sock")

    def _start(self, data, name, conf=""):
        sock = self.sock_dir(name)
        os.mkdir(sock)
        self._chown(sock)
        with open(os.path.join(data, "postgresql.auto.conf"), "a") as f:
            f.write("unix_socket_directories = '%s'\ncluster_name = '%s'\n%s"
                    % (sock, name, conf))
        self.started.append(data)
        self._run("pg_ctl", "start", "-D", data, "-w", "-t", "60",
                  "-l", os.path.join(self.root, name + ".log"))
        return sock

    def start(self, kind, name=None, conf=""):
        """conf: more postgresql.conf lines for this one."""
        name = name or kind
        data = os.path.join(self.root, name)
        self._run("/bin/cp", "-a", self.template, data)
        if kind == "standby":
            open(os.path.join(data, "standby.signal"), "w").close()
            self._chown(os.path.join(data, "standby.signal"))
        conf = ("default_transaction_read_only = on\n" if kind == "ro" else "") + conf
        return self._start(data, name, conf)

    def promote(self, name):
        """pg_ctl promote: the standby leaves recovery (a primary now)."""
        self._run("pg_ctl", "promote", "-D", os.path.join(self.root, name), "-w", "-t", "60")

    def psql(self, name, sql):
        return pt._run_psql(self.sock_dir(name), self.pg.port, self.pg.user, None,
                            self.pg.database, sql)

    def stop(self, data):
        if os.path.exists(os.path.join(data, "postmaster.pid")):
            self._run("pg_ctl", "stop", "-D", data, "-m", "fast", "-w", "-t", "60")
        if data in self.started:
            self.started.remove(data)

    def close(self):
        for data in list(self.started):
            try:
                self.stop(data)
            except pt.PgwharfError:
                pass
        shutil.rmtree(self.root, ignore_errors=True)


def pump(c, up, closed, frozen=None):
    """Relay bytes between sockets c and up until either ends or closed()
    (while frozen is set, relay nothing and keep both open); then close
    both."""
    import selectors
    sel = selectors.DefaultSelector()
    sel.register(c, selectors.EVENT_READ, up)
    sel.register(up, selectors.EVENT_READ, c)
    try:
        while not closed():
            if frozen is not None and frozen.is_set():
                time.sleep(0.2)
                continue
            for key, _ in sel.select(0.2):
                data = key.fileobj.recv(65536)
                if not data:
                    return
                key.data.sendall(data)
    except OSError:
        pass
    finally:
        sel.close()
        up.close()
        c.close()


def serve_each(sock, closed, serve, took=None):
    """In a thread of its own: accept on sock until it closes or closed(),
    calling took() for each connection and serve(conn) in a thread each."""
    def loop():
        while not closed():
            try:
                c, _ = sock.accept()
            except OSError:
                return
            if took is not None:
                took()
            threading.Thread(target=serve, args=(c,), daemon=True).start()
    threading.Thread(target=loop, daemon=True).start()


class SocketGate:
    """A stand-in for a PostgreSQL socket directory (self.dir) that passes
    each connection to target_dir's socket, or, while held (hold()), keeps
    it waiting, a login under way, until release().  accepted: the
    connections it took; waiting(): those held now."""

    def __init__(self, root, name, target_dir, port):
        self.dir = os.path.join(root, name + ".sock")
        os.mkdir(self.dir)
        self.target = os.path.join(target_dir, ".s.PGSQL.%d" % port)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(os.path.join(self.dir, ".s.PGSQL.%d" % port))
        self.sock.listen(16)
        self.open = threading.Event()
        self.open.set()
        self.lock = threading.Lock()
        self.accepted = self.held = 0
        self.closed = False
        serve_each(self.sock, lambda: self.closed, self._serve, self._took)

    def hold(self):
        self.open.clear()

    def release(self):
        self.open.set()

    def waiting(self):
        with self.lock:
            return self.held

    def _took(self):
        with self.lock:
            self.accepted += 1

    def _serve(self, c):
        with self.lock:
            self.held += 1
        self.open.wait(120)
        with self.lock:
            self.held -= 1
        up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            up.connect(self.target)
        except OSError:
            up.close()
            c.close()
            return
        pump(c, up, lambda: self.closed)

    def close(self):
        self.closed = True
        self.sock.close()
        self.open.set()


class FreezableRelay:
    """127.0.0.1:port relaying TCP to target until freeze(): from then on
    it relays nothing more, either way, and leaves the connections open (a
    frozen host: SIGSTOP, a hung kernel, a dead link with no RST)."""

    def __init__(self, port, target):
        self.target = target
        self.frozen = threading.Event()
        self.closed = False
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(64)
        self.port = port
        serve_each(self.sock, lambda: self.closed, self._serve)

    def freeze(self):
        self.frozen.set()


    def _serve(self, c):
        try:
            up = socket.create_connection(self.target)
        except OSError:
            c.close()
            return
        pump(c, up, lambda: self.closed, self.frozen)

    def close(self):
        self.closed = True
        self.sock.close()


class HostListTest(pt.PgwharfTestCase):

    def start_gated_lookups(self):
        """A pgwharf whose entry nm names localhost, its getaddrinfo held at
        a gate (tests/nss_gate.c) from the moment this returns: (px, fifo)."""
        fifo = os.path.join(tempfile.mkdtemp(prefix="pgwharf-gate-"), "gate")
        self.addCleanup(shutil.rmtree, os.path.dirname(fifo), True)
        px = self.start_pgwharf(start=False, settings=dict(SETTINGS),
                                databases={"nm": self.entry("localhost")})
        px.extra_env.update(pt.nss_gate_env(PGW_GETADDRINFO_GATE=fifo))
        px.start()
        os.mkfifo(fifo)                 # from now on getaddrinfo waits
        return px, fifo

    def entry(self, hosts, port=None, **extra):
        port = port if port is not None else self.pg.port
        s = "host=%s port=%s dbname=%s" % (hosts, port, self.pg.database)
        for k, v in extra.items():
            s += " %s=%s" % (k, v)
        return s

    def start(self, databases, **settings):
        s = dict(SETTINGS)
        s.update(settings)
        return self.start_pgwharf(settings=s, databases=databases)

    def server_addrs(self, px, db, n):
        """n clients of db, each holding its own server (session mode):
        the server address each one's queries ran on."""
        addrs = []
        for _ in range(n):
            conn = self.db_conn(px, db=db)
            addrs.append(pt.one(conn, "select host(inet_server_addr())"))
        return addrs

    def breakers(self, px):
        return {r["backend"]: r for r in px.show("BREAKERS")}

    def repl_client_addr(self, px, db):
        """A logical replication client of db (its own server, closed with
        it): the address its server was on."""
        return pt.replication_server_addr(px, db)

    def test_a_host_that_stops_answering_checks(self):
        # The first host's idle servers stop answering (a frozen host: here
        # their server_check_query waits at a gate).  Each failed its check
        # in turn, server_connect_timeout each, and the next new server
        # went to the same host: a client waited pool_size times the
        # timeout with the other host up (hunt).  Now the first check that
        # gets no reply closes the host's other idle servers, and new
        # servers go to the other host.
        gate = hz.Gate(self.pg, 7091)
        self.addCleanup(gate.close)
        gate.open()
        px = self.start({"fz": self.entry("127.0.0.1,127.0.0.2", load_balance_hosts="disable")},
                        pool_mode="transaction", default_pool_size=3, server_check_delay=0,
                        server_check_query="select %s" % gate.sql(),
                        server_connect_timeout="1s", query_wait_timeout="30s")
        held = [self.db_conn(px, autocommit=False, db="fz") for _ in range(3)]
        for conn in held:                            # three servers at once, each
            self.assertEqual(pt.one(conn, "select host(inet_server_addr())"), "127.0.0.1")
        for conn in held:
            conn.commit()
        gate = hz.Gate(self.pg, 7091)                # the checks wait from now on
        self.addCleanup(gate.close)
        conn = self.db_conn(px, db="fz")
        self.assertEqual(pt.one(conn, "select host(inet_server_addr())"), "127.0.0.2")
        self.assertEqual(px.log().count("server_check_query: no reply in time"), 1,
                         px.log_tail())

    def test_a_host_that_stops_answering_resets(self):
        # A frozen host (a relay that stops relaying) gives no reply to the
        # reset of a server given back: that reset no longer closed the
        # host's other idle servers (a reset may wait on a lock on a
        # healthy host), and the next client was lent one of them
        # unchecked (server_check_delay) and hung there with the other
        # host up (review r1b of session 48).  Now they are checked before
        # they are lent: the first check with no reply passes the host over.
        relay = FreezableRelay(pt.free_port(),
                               (self.pg.host, self.pg.port))
        self.addCleanup(relay.close)
        entry = "host=127.0.0.1,127.0.0.2 port=%d,%d dbname=%s load_balance_hosts=disable" % (
            relay.port, self.pg.port, self.pg.database)
        px = self.start({"fz": entry}, pool_mode="session", default_pool_size=3,
                        server_reset_query="DISCARD ALL", server_connect_timeout="1s",
                        query_wait_timeout="30s")
        held = [self.db_conn(px, db="fz") for _ in range(3)]
        for conn in held:                      # three servers, all on the relay
            self.assertEqual(pt.one(conn, "select host(inet_server_addr())"), "127.0.0.1")
        held[0].close()
        held[1].close()
        pt.wait_until(lambda: px.show("POOLS", database="fz")[0]["sv_idle"] == "2",
                      what="two idle servers")
        relay.freeze()
        held[2].close()                        # its reset gets no reply
        px.wait_for_log(r"server_reset_query: no reply in time")
        bg = pt.Background(lambda: pt.one(psycopg2.connect(px.dsn(db="fz")),
                                          "select host(inet_server_addr())"))
        bg.join(20)                            # (hung for good before)
        self.assertFalse(bg.is_alive(), px.log_tail())
        self.assertIsNone(bg.error)
        self.assertEqual(bg.result, "127.0.0.2")
        self.assertEqual(px.log().count("server_check_query: no reply in time"), 1,
                         px.log_tail())

    def reset_frozen_beside_fy(self, **settings):
        """Two entries fz and fy naming one host:port (through a relay),
        a server of each there, fy's idle (not due for a check); the host
        freezes and fz's session-mode reset gets no reply in time."""
        relay = FreezableRelay(pt.free_port(),
                               (self.pg.host, self.pg.port))
        self.addCleanup(relay.close)
        entry = "host=127.0.0.1,127.0.0.2 port=%d,%d dbname=%s load_balance_hosts=disable" % (
            relay.port, self.pg.port, self.pg.database)
        px = self.start({"fz": entry, "fy": entry}, pool_mode="session", default_pool_size=3,
                        server_reset_query="DISCARD ALL", server_connect_timeout="1s",
                        query_wait_timeout="30s", **settings)
        held = self.db_conn(px, db="fz")
        other = self.db_conn(px, db="fy")
        for conn in (held, other):             # both on the relay
            self.assertEqual(pt.one(conn, "select host(inet_server_addr())"), "127.0.0.1")
        other.close()
        pt.wait_until(lambda: px.show("POOLS", database="fy")[0]["sv_idle"] == "1",
                      what="fy's idle server")
        self.assertEqual(px.show("POOLS", database="fy")[0]["sv_used"], "0")
        relay.freeze()
        held.close()                           # its reset gets no reply
        px.wait_for_log(r"server_reset_query: no reply in time")
        return px

    def test_a_host_that_stops_answering_resets_other_pools(self):
        # The same frozen host seen from two pools (two entries naming the
        # same host:port, one backend): the reset with no reply in fz had
        # fz's idle servers there checked before they were lent, not fy's:
        # fy's idle server was lent unchecked (server_check_delay) and its
        # client hung with the entry's other host up (session 49, A).
        # Now every pool's idle servers on that host are doubted.
        px = self.reset_frozen_beside_fy()
        # fy's idle server is to be checked before it is lent (sv_used)
        self.assertEqual(px.show("POOLS", database="fy")[0]["sv_used"], "1", px.log_tail())
        bg = pt.Background(lambda: pt.one(psycopg2.connect(px.dsn(db="fy")),
                                          "select host(inet_server_addr())"))
        bg.join(20)                            # (hung for good before)
        self.assertFalse(bg.is_alive(), px.log_tail())
        self.assertIsNone(bg.error)
        self.assertEqual(bg.result, "127.0.0.2")
        checks = [l for l in px.log().splitlines() if "server_check_query: no reply in time" in l]
        self.assertEqual(len(checks), 1, px.log_tail())
        self.assertIn("db=fy", checks[0])

    def test_a_host_that_stops_answering_resets_other_pools_unchecked(self):
        # The same with no server_check_query: the reset's pool closes its
        # idle servers on the host as a check's would, and now so do the
        # other pools on that host:port (fy's was kept, lent, and hung).
        px = self.reset_frozen_beside_fy(server_check_query="")
        px.wait_for_log(r"event=server_close db=fy .*reason=\"another server of its host "
                        r"did not answer in time\"")
        self.assertEqual(px.show("POOLS", database="fy")[0]["sv_idle"], "0")

    def test_round_robin(self):
        px = self.start({"rr": self.entry("127.0.0.1,127.0.0.2")})
        addrs = self.server_addrs(px, "rr", 4)
        # each new server takes the next host of the list
        self.assertEqual(addrs, ["127.0.0.1", "127.0.0.2", "127.0.0.1", "127.0.0.2"])
        servers = px.show("SERVERS", database="rr")
        self.assertEqual(sorted(s["addr"] for s in servers),
                         ["127.0.0.1", "127.0.0.1", "127.0.0.2", "127.0.0.2"])
        self.assertEqual({s["port"] for s in servers}, {str(self.pg.port)})
        db = px.show("DATABASES", name="rr")[0]
        self.assertEqual(db["host"], "127.0.0.1,127.0.0.2")
        self.assertEqual(db["port"], str(self.pg.port))
        self.assertEqual(db["load_balance_hosts"], "round-robin")
        pool = px.show("POOLS", database="rr")[0]
        self.assertEqual(pool["load_balance_hosts"], "round-robin")
        br = self.breakers(px)
        for host in ("127.0.0.1", "127.0.0.2"):
            self.assertEqual(br["%s:%d" % (host, self.pg.port)]["state"], "closed", br)
        self.assertIn("backend=127.0.0.2:%d" % self.pg.port, px.log())

    def test_round_robin_with_a_host_name(self):
        # the name is resolved off the loop; its addresses go to libpq as a
        # list for that one host.  (The first attempt may go to .2 while the
        # name is being looked up: round-robin passes over a host that
        # asks to wait.)
        px = self.start({"nm": self.entry("localhost,127.0.0.2")})
        addrs = []
        while not {"127.0.0.1", "127.0.0.2"} <= set(addrs) and len(addrs) < 6:
            addrs += self.server_addrs(px, "nm", 1)
        self.assertIn("127.0.0.1", addrs)
        self.assertIn("127.0.0.2", addrs)
        # SHOW SERVERS: the address each server reached, as PgBouncer shows
        # it, not the name of the entry (it showed "localhost")
        servers = [s["addr"] for s in px.show("SERVERS", database="nm")]
        self.assertEqual(sorted(servers), sorted(addrs))
        self.assertIn("localhost:%d" % self.pg.port, self.breakers(px))

    def test_a_name_with_several_addresses_takes_them_in_turn(self):
        # As PgBouncer ("if DNS returns several results, they are used in a
        # round-robin manner"): every server went to the first address,
        # the others only tried when it failed.  With disable, the first.
        # (The name's addresses come from tests/nss_gate.c.)
        for lb, want in (("round-robin", ["127.0.0.1", "127.0.0.2"] * 2),
                         ("disable", ["127.0.0.1"] * 4)):
            with self.subTest(load_balance_hosts=lb):
                px = self.start_pgwharf(start=False, settings=dict(SETTINGS), databases={
                    "mn": self.entry("pgw-multi.test", load_balance_hosts=lb)})
                px.extra_env.update(pt.nss_gate_env(
                    PGW_FAKE_HOSTS="pgw-multi.test=127.0.0.1,127.0.0.2"))
                px.start()
                self.assertEqual(self.server_addrs(px, "mn", 4), want)
                self.assertEqual(sorted(s["addr"] for s in px.show("SERVERS", database="mn")),
                                 sorted(want))
                self.assertEqual(px.show("DNS_HOSTS")[0]["addrs"], "127.0.0.1,127.0.0.2")

    def test_backend_whose_lookup_runs_goes_when_it_returns(self):
        # A reload moves the entry off a host name while that name's lookup
        # still runs (getaddrinfo held at a gate, tests/nss_gate.c): the
        # backend has nobody left, but its thread writes into it, so it goes
        # when the answer comes back, not before (ASan) and not never.
        px, fifo = self.start_gated_lookups()
        name = "localhost:%d" % self.pg.port
        client = pt.Background(lambda: px.psql("select 'served'", db="nm"))
        gate = pt.nss_gate_wait(fifo, what="the lookup of localhost")
        try:
            self.assertIn(name, self.breakers(px))
            reloads = px.log().count("event=reload ")
            px.databases["nm"] = self.entry("127.0.0.1")
            px.reload()
            pt.wait_until(lambda: px.log().count("event=reload ") > reloads, what="the reload")
            client.join(60)
            self.assertIsNone(client.error)
            self.assertEqual(client.result, "served")    # by the new address
            self.assertIn(name, self.breakers(px))       # the lookup still runs
        finally:
            pt.nss_gate_release(fifo, gate)
        pt.wait_until(lambda: name not in self.breakers(px), timeout=30, interval=0.1,
                      what="the backend of localhost freed")
        self.assertEqual(set(self.breakers(px)), {"127.0.0.1:%d" % self.pg.port})
        self.assertEqual(px.stop(), 0, px.log_tail())

    def test_shutdown_with_a_lookup_still_waiting(self):
        # The DNS server never answers (getaddrinfo held at a gate): a
        # SIGQUIT or SIGINT still ends pgwharf at once and cleanly (exit 0,
        # the ASan build's leak check included); the lookup's thread is not
        # waited for.  (It was joined: the exit waited for the gate.)
        for sig in (signal.SIGQUIT, signal.SIGINT):
            with self.subTest(signal=sig.name):
                px, fifo = self.start_gated_lookups()
                client = pt.Background(lambda: px.psql("select 1", db="nm", check=False))
                gate = pt.nss_gate_wait(fifo, what="the lookup of localhost")
                try:
                    self.assertEqual(px.stop(sig=sig, timeout=10), 0, px.log_tail())
                    self.assertFalse(px.killed)
                finally:
                    pt.nss_gate_release(fifo, gate)
                client.join(30)

    def test_dead_host_first(self):
        dead, live = "127.0.0.3:%d" % self.pg.port, "127.0.0.1:%d" % self.pg.port
        px = self.start({"d": self.entry("127.0.0.3,127.0.0.1")}, metrics_port="auto")
        # every client is served, by the live host, while the dead one's
        # breaker opens: three of the attempts went there and failed
        addrs = self.server_addrs(px, "d", 6)
        self.assertEqual(addrs, ["127.0.0.1"] * 6)
        br = self.breakers(px)
        self.assertEqual(br[dead]["state"], "open", br)
        self.assertEqual(br[dead]["failures"], "3", br)
        self.assertEqual(br[dead]["last_sqlstate"], "08001", br)
        self.assertEqual(br[live]["state"], "closed", br)
        self.assertEqual(br[live]["failures"], "0", br)
        # the metrics have a series per host too
        import urllib.request
        url = "http://127.0.0.1:%d/metrics" % int(px.settings["metrics_port"])
        with urllib.request.urlopen(url, timeout=10) as r:
            body = r.read().decode()
        self.assertIn('pgwharf_breaker_state{backend="%s"} 1\n' % dead, body)
        self.assertIn('pgwharf_breaker_state{backend="%s"} 0\n' % live, body)
        log = px.log()
        self.assertRegex(log, r"event=server_connect_failed .*backend=%s" % re.escape(dead))
        self.assertRegex(log, r"event=breaker_open backend=%s" % re.escape(dead))
        self.assertNotRegex(log, r"event=breaker_open backend=%s" % re.escape(live))
        # with the breaker open, new clients are still served (not failed
        # fast): the open host is passed over
        self.assertEqual(self.server_addrs(px, "d", 2), ["127.0.0.1"] * 2)
        self.assertEqual(self.breakers(px)[dead]["failures"], "3")

    def test_replication_client_passes_a_dead_host(self):
        # A replication client's own server goes to the next host when one
        # cannot be reached, as a pool's would (it used to fail the client):
        # each client's first attempt goes to the dead host (round-robin: the
        # cursor is back on it; disable: only until the first failure moves
        # it), then the live one serves it; every host dead: the client
        # fails once each was tried.
        dead, live = "127.0.0.3:%d" % self.pg.port, "127.0.0.1:%d" % self.pg.port
        for lb, failures in (("round-robin", "2"), ("disable", "1")):
            with self.subTest(load_balance_hosts=lb):
                px = self.start({"d": self.entry("127.0.0.3,127.0.0.1", load_balance_hosts=lb),
                                 "x": self.entry("127.0.0.3,127.0.0.4")})
                for _ in range(2):
                    self.assertEqual(self.repl_client_addr(px, "d"), "127.0.0.1")
                br = self.breakers(px)
                self.assertEqual(br[dead]["failures"], failures, br)
                self.assertEqual(br[live]["failures"], "0", br)
                with self.assertRaises(psycopg2.OperationalError) as cm:
                    self.repl_client_addr(px, "x")
                self.assertIn("server login failed", str(cm.exception))
                log = px.log()
                for h in ("127.0.0.3", "127.0.0.4"):
                    self.assertRegex(log, r"event=server_connect_failed .*backend=%s:%d"
                                     % (re.escape(h), self.pg.port))
                self.assertEqual(px.stop(), 0, px.log_tail())

    def test_hostaddr_list_one_breaker_per_address(self):
        # one host name, two addresses (hostaddr): two servers, each with
        # its own breaker; the dead one's opens and is passed over
        dead, live = "127.0.0.3:%d" % self.pg.port, "127.0.0.1:%d" % self.pg.port
        px = self.start({"ha": self.entry("localhost,localhost",
                                          hostaddr="127.0.0.3,127.0.0.1")})
        self.assertEqual(self.server_addrs(px, "ha", 6), ["127.0.0.1"] * 6)
        br = self.breakers(px)
        self.assertEqual((br[dead]["state"], br[dead]["failures"]), ("open", "3"), br)
        self.assertEqual((br[live]["state"], br[live]["failures"]), ("closed", "0"), br)
        self.assertEqual({s["addr"] for s in px.show("SERVERS", database="ha")}, {"127.0.0.1"})

    def test_every_host_dead(self):
        px = self.start({"x": self.entry("127.0.0.3,127.0.0.4")})
        errors = []
        for _ in range(3):
            cp = px.psql("select 1", db="x", check=False)
            self.assertNotEqual(cp.returncode, 0)
            errors.append(cp.stderr)
        br = self.breakers(px)
        for host in ("127.0.0.3", "127.0.0.4"):
            self.assertEqual(br["%s:%d" % (host, self.pg.port)]["state"], "open", br)
        # now the breaker's error, at once
        cp = px.psql("select 1", db="x", check=False)
        self.assertNotEqual(cp.returncode, 0)
        self.assertIn("server connection failed", cp.stderr)
        self.assertIn("Connection refused", cp.stderr)
        rows = px.show("POOLS", database="x")
        self.assertEqual(rows[0]["sv_login"], "0")

    def test_disable_stays_on_one_host(self):
        px = self.start({"one": self.entry("127.0.0.1,127.0.0.2",
                                           load_balance_hosts="disable")})
        self.assertEqual(self.server_addrs(px, "one", 4), ["127.0.0.1"] * 4)
        self.assertEqual([s["addr"] for s in px.show("SERVERS", database="one")],
                         ["127.0.0.1"] * 4)
        self.assertEqual(px.show("DATABASES", name="one")[0]["load_balance_hosts"], "disable")
        self.assertEqual(px.show("POOLS", database="one")[0]["load_balance_hosts"], "disable")

    def test_a_hostaddr_entry_on_pgwharfs_own_port_is_not_its_socket(self):
        # An entry with a hostaddr and no host connects over TCP to that
        # address (pool_conf.c make_hosts), not to unix_socket_dir; the check
        # for an entry reaching pgwharf's own socket took it for one when
        # its port was listen_port (5432 by default: a pgwharf on 5432 in
        # front of a server elsewhere), and the start was refused ("its
        # server socket .../.s.PGSQL.N is pgwharf's own").  Here pgwharf
        # listens on the cluster's port at a loopback address the cluster does
        # not listen on (it has 127.0.0.1 and 127.0.0.2).
        px = self.start({
            "viaaddr": "hostaddr=127.0.0.1 port=%d dbname=%s" % (self.pg.port, self.pg.database),
        }, listen_addr="127.0.0.4", listen_port=self.pg.port)
        self.assertEqual(px.psql("select host(inet_server_addr()) || ':' || "
                                 "current_setting('port')", db="viaaddr"),
                         "127.0.0.1:%d" % self.pg.port)

    def test_show_databases_host_list(self):
        # SHOW DATABASES as PgBouncer 1.24: host as configured, one port,
        # load_balance_hosts only for a list; a port list whose ports
        # differ has no one port (NULL), not its first one
        px = self.start({
            "one": self.entry("127.0.0.1"),
            "same": self.entry("127.0.0.1,127.0.0.2", port="%d,%d" % (self.pg.port, self.pg.port)),
            "mixed": self.entry("127.0.0.1,127.0.0.2", port="%d,5999" % self.pg.port),
            "dflt": self.entry("127.0.0.1,127.0.0.2", port=",5432"),
            "addrs": "hostaddr=127.0.0.1,127.0.0.2 port=%d dbname=%s" % (self.pg.port,
                                                                        self.pg.database),
        })
        dbs = {r["name"]: r for r in px.show("DATABASES")}
        got = {n: (dbs[n]["host"], dbs[n]["port"], dbs[n]["load_balance_hosts"])
               for n in ("one", "same", "mixed", "dflt", "addrs")}
        port = str(self.pg.port)
        self.assertEqual(got, {
            "one": ("127.0.0.1", port, ""),                  # NULL
            "same": ("127.0.0.1,127.0.0.2", port, "round-robin"),
            "mixed": ("127.0.0.1,127.0.0.2", "", "round-robin"),
            "dflt": ("127.0.0.1,127.0.0.2", "5432", "round-robin"),
            "addrs": ("", port, "round-robin"),
        })
        # SHOW POOLS: the pool's (NULL for one host)
        self.assertEqual(px.psql("select 1", db="one"), "1")
        self.assertEqual(px.psql("select 1", db="same"), "1")
        pools = {r["database"]: r["load_balance_hosts"] for r in px.show("POOLS")}
        self.assertEqual((pools["one"], pools["same"]), ("", "round-robin"))

    def test_disable_moves_on_after_a_failure(self):
        dead = "127.0.0.3:%d" % self.pg.port
        px = self.start({"mv": self.entry("127.0.0.3,127.0.0.2",
                                          load_balance_hosts="disable")})
        # the first attempt fails on .3, the next goes to .2 and every
        # later one stays there: one failure, the breaker still closed
        self.assertEqual(self.server_addrs(px, "mv", 5), ["127.0.0.2"] * 5)
        br = self.breakers(px)[dead]
        self.assertEqual((br["state"], br["failures"]), ("closed", "1"))

    def test_disable_moves_on_from_a_name_that_does_not_resolve(self):
        # the first host's lookup fails (kept for dns_nxdomain_ttl): with
        # disable the pool moves to the next host, as after a failed
        # connect, instead of waiting for a lookup it will not make
        px = self.start({"nx": self.entry("nosuch.invalid,127.0.0.2",
                                          load_balance_hosts="disable")},
                        query_wait_timeout="5s")
        for _ in range(3):
            cp = px.psql("select host(inet_server_addr())", db="nx", check=False)
            self.assertEqual((cp.returncode, cp.stdout.strip()), (0, "127.0.0.2"), cp.stderr)
        self.assertIn("event=server_resolve_failed", px.log())

    def test_config_errors(self):
        px = self.start_pgwharf(start=False, settings=dict(SETTINGS), databases={
            "a": self.entry("127.0.0.1,127.0.0.2", load_balance_hosts="random"),
            "b": self.entry("127.0.0.1,127.0.0.2", port="1,2,3"),
            # libpq refuses it on every connect: that looked like the
            # server being down and opened its breaker for every entry
            "c": self.entry("127.0.0.1", target_session_attrs="master"),
        })
        cp = px.check()
        self.assertNotEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        out = cp.stdout + cp.stderr
        self.assertRegex(out, r'pgwharf\.ini:\d+: database "a": load_balance_hosts: expected one '
                              r'of round-robin, disable; got "random"')
        self.assertRegex(out, r'pgwharf\.ini:\d+: database "b": port: 3 ports for 2 hosts')
        self.assertRegex(out, r'pgwharf\.ini:\d+: database "c": target_session_attrs: expected '
                              r'one of any, read-write, read-only, primary, standby, '
                              r'prefer-standby; got "master"')
        # round-robin and disable are fine, and libpq (15) never sees the key
        px.databases = {"a": self.entry("127.0.0.1,127.0.0.2", load_balance_hosts="round-robin")}
        cp = px.check()
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        px.start()
        self.assertEqual(px.psql("select 1", db="a"), "1")


class TargetSessionAttrsTest(pt.PgwharfTestCase):

    def setUp(self):
        super().setUp()
        self.fake = FakeReadOnlyServer()
        self.addCleanup(self.fake.close)

    def test_read_only_host_is_passed_over(self):
        ro = "127.0.0.1:%d" % self.fake.port
        entry = "host=127.0.0.1,127.0.0.2 port=%d,%d dbname=%s target_session_attrs=read-write" % (
            self.fake.port, self.pg.port, self.pg.database)
        px = self.start_pgwharf(settings=dict(SETTINGS), databases={"rw": entry})
        addrs = []
        for _ in range(5):
            conn = self.db_conn(px, db="rw")
            addrs.append(pt.one(conn, "select host(inet_server_addr())"))
        self.assertEqual(addrs, ["127.0.0.2"] * 5)
        self.assertGreaterEqual(self.fake.logins, 1)
        # answered: not a failure of that host, and skipped afterwards
        # (server_login_retry), so tried once
        br = {r["backend"]: r for r in px.show("BREAKERS")}
        self.assertEqual((br[ro]["state"], br[ro]["failures"]), ("closed", "0"), br)
        self.assertEqual(self.fake.logins, 1)
        self.assertIn("session is read-only", px.log())

    def test_replication_client_passes_a_read_only_host(self):
        # target_session_attrs=read-write, the read-only host first: a
        # replication client's server goes on to the next host, as a pool's
        # would (the wrong kind used to fail the client).
        entry = "host=127.0.0.1,127.0.0.2 port=%d,%d dbname=%s target_session_attrs=read-write" % (
            self.fake.port, self.pg.port, self.pg.database)
        px = self.start_pgwharf(settings=dict(SETTINGS), databases={"rw": entry})
        self.assertEqual(pt.replication_server_addr(px, "rw"), "127.0.0.2")
        self.assertEqual(self.fake.logins, 1)
        self.assertIn("session is read-only", px.log())
        br = {r["backend"]: r for r in px.show("BREAKERS")}
        ro = br["127.0.0.1:%d" % self.fake.port]
        self.assertEqual((ro["state"], ro["failures"]), ("closed", "0"), br)

    def test_no_host_matches(self):
        entry = "host=127.0.0.1 port=%d dbname=%s target_session_attrs=read-write" % (
            self.fake.port, self.pg.database)
        px = self.start_pgwharf(settings=dict(SETTINGS), databases={"ro": entry})
        for _ in range(3):
            cp = px.psql("select 1", db="ro", check=False)
            self.assertNotEqual(cp.returncode, 0)
            self.assertIn("session is read-only", cp.stderr)
        br = {r["backend"]: r for r in px.show("BREAKERS")}
        ro = br["127.0.0.1:%d" % self.fake.port]
        self.assertEqual((ro["state"], ro["failures"]), ("closed", "0"), br)
        # server_login_retry: one attempt, the later clients got its error
        # (and, the host skipped for its kind, a recheck a second after a
        # refusal at the soonest: psql's start-ups may span that second)
        assert_rechecks_spaced(self, px.log(), "ro", self.fake.logins)


    def test_no_host_matches_with_server_login_retry_0(self):
        # server_login_retry = 0 blocks no login, but the host is skipped a
        # second: a client right after the first was queued for that
        # second (and the next tick), then got the same error from a new
        # login; the error comes at once now, as libpq's would.
        entry = "host=127.0.0.1 port=%d dbname=%s target_session_attrs=read-write" % (
            self.fake.port, self.pg.database)
        px = self.start_pgwharf(settings=dict(SETTINGS, server_login_retry="0"),
                                databases={"ro": entry})
        for _ in range(2):
            with socket.create_connection((px.host, px.port), timeout=20) as s:
                with self.assertRaises(hz.PgError) as cm:
                    hz.sync_login(s, self.pg.user, "ro", self.pg.password)
            self.assertEqual(cm.exception.sqlstate, "08001")
            self.assertIn("session is read-only", cm.exception.fields["M"])
        assert_rechecks_spaced(self, px.log(), "ro", self.fake.logins)

    def test_a_mismatch_found_by_a_login_started_before_a_reload_is_ignored(self):
        # target_session_attrs=read-write on the one (read-only) host; a
        # reload drops it while the first login is under way.  libpq's
        # verdict on that login ("session is read-only") is of the old
        # setting: it skipped the host, and with no host left refused the
        # waiting client and every client for server_login_retry, though
        # the entry now takes the host as it is.
        held = FakeReadOnlyServer(held=True)
        self.addCleanup(held.close)
        entry = "host=127.0.0.1 port=%d dbname=%s" % (held.port, self.pg.database)
        px = self.start_pgwharf(settings=dict(SETTINGS),
                                databases={"ro": entry + " target_session_attrs=read-write"})
        s = socket.create_connection((px.host, px.port), timeout=20)
        self.addCleanup(s.close)
        login = pt.Background(lambda: hz.sync_login(s, self.pg.user, "ro", self.pg.password))
        pt.wait_until(lambda: held.arrived == 1, what="the server login at the fake server")
        px.databases["ro"] = entry
        px.write_config()
        px.admin("RELOAD")
        held.release()
        login.join(20)
        self.assertFalse(login.is_alive())
        self.assertIsNone(login.error)
        self.assertEqual(held.logins, 2)
        self.assertIn("session is read-only", px.log())
        # the host is not skipped: the next client gets a server there too
        # (welcomed from the pool's record, at its first query: the fake
        # answers none)
        s2 = socket.create_connection((px.host, px.port), timeout=20)
        self.addCleanup(s2.close)
        hz.sync_login(s2, self.pg.user, "ro", self.pg.password)
        q = b"select 1\x00"
        s2.sendall(b"Q" + struct.pack("!I", len(q) + 4) + q)
        pt.wait_until(lambda: held.logins == 3, what="a server login for the next client")

    def test_a_set_kept_by_the_reset_query_is_the_clients(self):
        # server_reset_query = DEALLOCATE ALL leaves a client's SET in place
        # (PgBouncer's semantics): what the server reports after it is not
        # its default.  Taken for the host's, it closed the server, skipped
        # the host, and the next client was sent to the read-only one.
        entry = ("host=127.0.0.1,127.0.0.1 port=%d,%d dbname=%s target_session_attrs=read-write "
                 "load_balance_hosts=disable" % (self.pg.port, self.fake.port, self.pg.database))
        px = self.start_pgwharf(settings=dict(SETTINGS, server_reset_query="DEALLOCATE ALL"),
                                databases={"rw": entry})
        conn = self.db_conn(px, db="rw")
        pid = pt.one(conn, "select pg_backend_pid()")
        conn.cursor().execute("set default_transaction_read_only = on")
        conn.close()
        pt.wait_until(lambda: all(r["sv_tested"] == "0" and r["cl_active"] == "0"
                                  for r in px.show("POOLS", database="rw")),
                      what="the server reset")
        conn = self.db_conn(px, db="rw")
        self.assertEqual(pt.one(conn, "select pg_backend_pid()"), pid)
        self.assertNotIn("server_kind_changed", px.log())
        self.assertEqual(self.fake.logins, 0)


class SideClusterTestCase(pt.PgwharfTestCase):
    """self.side: SideClusters for the class's tests."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.side = SideClusters(cls.pg)

    @classmethod
    def tearDownClass(cls):
        cls.side.close()
        super().tearDownClass()

    @staticmethod
    def where(conn):
        """The cluster conn's server is on (the test cluster: "main")."""
        return pt.one(conn, "select current_setting('cluster_name')") or "main"


class RealTargetSessionAttrsTest(SideClusterTestCase):
    """target_session_attrs against real servers: the test cluster (a
    read-write primary, over TCP), a hot standby and a primary with
    default_transaction_read_only = on (SideClusters, over unix
    sockets)."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        try:
            cls.ro = cls.side.start("ro")
            cls.standby = cls.side.start("standby")
        except Exception:
            cls.side.close()
            raise

    def host(self, name):
        return {"main": "127.0.0.1", "ro": self.ro, "standby": self.standby,
                "dead": os.path.join(self.side.root, "nothing-here")}[name]

    def entry(self, hosts, tsa=None, **extra):
        s = "host=%s port=%d dbname=%s" % (",".join(self.host(h) for h in hosts.split()),
                                           self.pg.port, self.pg.database)
        if tsa:
            s += " target_session_attrs=" + tsa
        for k, v in extra.items():
            s += " %s=%s" % (k, v)
        return s

    def clusters(self, px, db, n):
        """n clients of db, each holding its own server (session mode):
        the cluster each one's server is on."""
        return [self.where(self.db_conn(px, db=db)) for _ in range(n)]

    def test_each_value(self):
        # (entry, hosts in list order, target_session_attrs, where 6
        # servers may go; each of them gets one at least)
        cases = [
            ("rw", "ro standby main", "Read-Write", {"main"}),
            ("ro", "main ro standby", "read-only", {"ro", "standby"}),
            ("pri", "standby ro main", "primary", {"ro", "main"}),
            ("sb", "main ro standby", "standby", {"standby"}),
            ("any", "main ro standby", "any", {"main", "ro", "standby"}),
            ("unset", "main ro standby", None, {"main", "ro", "standby"}),
        ]
        px = self.start_pgwharf(settings=dict(SETTINGS), databases={
            name: self.entry(hosts, tsa) for name, hosts, tsa, _ in cases})
        for name, _, _, where in cases:
            got = self.clusters(px, name, 6)
            self.assertEqual(set(got), where, (name, got))
        # the hosts of the wrong kind answered: no breaker counted them
        br = {r["backend"]: r for r in px.show("BREAKERS")}
        for host in ("ro", "standby"):
            row = br["%s:%d" % (self.host(host), self.pg.port)]
            self.assertEqual((row["state"], row["failures"]), ("closed", "0"), br)

    def test_standby_without_one(self):
        px = self.start_pgwharf(settings=dict(SETTINGS),
                                databases={"sb": self.entry("main ro", "standby")})
        cp = px.psql("select 1", db="sb", check=False)
        self.assertNotEqual(cp.returncode, 0)
        self.assertIn("server is not in hot standby mode", cp.stderr)

    def test_standby_without_one_behind_a_dead_host(self):
        # A dead host and a primary, target_session_attrs=standby: every
        # client was told only of the dead host ("No such file or
        # directory"), not that the live one is no standby (hunt); libpq
        # names each host's reason.
        px = self.start_pgwharf(settings=dict(SETTINGS),
                                databases={"sb": self.entry("dead main", "standby")})
        for _ in range(3):
            cp = px.psql("select 1", db="sb", check=False)
            self.assertNotEqual(cp.returncode, 0)
            self.assertIn("No such file or directory", cp.stderr)
            self.assertIn("another host of the list does not match "
                          "target_session_attrs=standby", cp.stderr)

    def test_prefer_standby(self):
        # libpq: the standby when there is one, wherever it is in the list
        px = self.start_pgwharf(settings=dict(SETTINGS), databases={
            "first": self.entry("standby main ro", "prefer-standby"),
            "last": self.entry("main ro standby", "prefer-standby"),
            "disable": self.entry("main ro standby", "prefer-standby",
                                  load_balance_hosts="disable"),
        })
        for db in ("first", "last", "disable"):
            self.assertEqual(self.clusters(px, db, 5), ["standby"] * 5, db)

    def test_prefer_standby_without_one(self):
        # no standby in the list, or the only one down: any host
        px = self.start_pgwharf(settings=dict(SETTINGS), databases={
            "none": self.entry("main ro", "prefer-standby"),
            "down": self.entry("dead main", "prefer-standby"),
            "none_disable": self.entry("ro main", "prefer-standby", load_balance_hosts="disable"),
        })
        self.assertEqual(set(self.clusters(px, "none", 4)), {"main", "ro"})
        self.assertEqual(self.clusters(px, "down", 4), ["main"] * 4)
        self.assertEqual(self.clusters(px, "none_disable", 4), ["ro"] * 4)

    def test_prefer_standby_when_one_comes(self):
        # while the only standby is down, any host; once it is up (and the
        # standby pass tries it again: server_login_retry, and its breaker's
        # cooldown), the standby
        late = self.side.sock_dir("late")
        settings = dict(SETTINGS, server_login_retry="1s", breaker_cooldown="1s",
                        breaker_max_cooldown="1s")
        px = self.start_pgwharf(settings=settings, databases={
            "late": "host=127.0.0.1,%s port=%d dbname=%s target_session_attrs=prefer-standby "
                    "pool_size=50" % (late, self.pg.port, self.pg.database)})
        self.assertEqual(self.clusters(px, "late", 3), ["main"] * 3)
        self.side.start("standby", "late")
        pt.wait_until(lambda: self.clusters(px, "late", 1) == ["late"], timeout=10,
                      interval=0.3, what="a server on the standby")
        self.assertEqual(self.clusters(px, "late", 3), ["late"] * 3)


class KindChangeTest(SideClusterTestCase):
    """A host that stops matching target_session_attrs after its servers
    logged in (a standby promoted, a primary made read-only by default):
    its servers are closed at their next check, reset or release, and new
    ones go to the other hosts."""

    def test_standby_promoted(self):
        one, two = self.side.start("standby", "p1"), self.side.start("standby", "p2")
        dbs = {}
        for tsa in ("standby", "prefer-standby", "read-only"):
            dbs[tsa.replace("-", "_")] = (
                "host=%s,%s port=%d dbname=%s target_session_attrs=%s load_balance_hosts=disable"
                % (one, two, self.pg.port, self.pg.database, tsa))
        settings = dict(SETTINGS, pool_mode="transaction")
        # checked: server_check_query before each reuse; released: caught
        # when the server is given back after the query it ran
        checked = self.start_pgwharf(settings=dict(settings, server_check_delay=0), databases=dbs)
        released = self.start_pgwharf(settings=settings, databases=dbs)
        conns = {}
        for px in (checked, released):
            for db in dbs:
                conn = self.db_conn(px, db=db)
                self.assertEqual(self.where(conn), "p1")
                conns[px, db] = conn
        self.side.promote("p1")
        self.assertEqual(self.side.psql("p1", "select pg_is_in_recovery()"), "f")
        for db in dbs:
            conn = conns[checked, db]
            # the check ran on p1 and saw it promoted: the query went to p2
            self.assertEqual(self.where(conn), "p2", db)
            self.assertEqual(self.where(conn), "p2", db)
            conn = conns[released, db]
            # the query ran on p1, which said so at its end: not again
            self.assertEqual(self.where(conn), "p1", db)
            self.assertEqual(self.where(conn), "p2", db)
        for px in (checked, released):
            for db in dbs:
                addrs = {s["addr"] for s in px.show("SERVERS", database=db)}
                self.assertNotIn(one, addrs, (db, addrs))
            self.assertIn("event=server_kind_changed", px.log())
            self.assertIn("server is not in hot standby mode (target_session_attrs=standby)",
                          px.log())

    def test_primary_made_read_only(self):
        # read-write: a primary whose sessions become read-only by default
        # (ALTER SYSTEM, reload) is left for the next host once a server
        # there shows it at its defaults: after server_reset_query
        fenced = self.side.start("rw", "fenced")
        px = self.start_pgwharf(settings=dict(SETTINGS, server_check_delay=0), databases={
            "rw": "host=%s,127.0.0.1 port=%d dbname=%s target_session_attrs=read-write "
                  "load_balance_hosts=disable" % (fenced, self.pg.port, self.pg.database)})
        conn = self.db_conn(px, db="rw")
        self.assertEqual(self.where(conn), "fenced")
        # a client's own SET is not the host's: the server stays
        conn.cursor().execute("set default_transaction_read_only = on")
        conn.close()
        conn = self.db_conn(px, db="rw")
        self.assertEqual(self.where(conn), "fenced")
        conn.close()
        self.side.psql("fenced", "alter system set default_transaction_read_only = on")
        self.side.psql("fenced", "select pg_reload_conf()")
        pt.wait_until(lambda: self.side.psql("fenced", "show default_transaction_read_only")
                      == "on", what="the reload")
        conn = self.db_conn(px, db="rw")
        self.assertEqual(self.where(conn), "main")
        self.assertEqual(pt.one(conn, "show default_transaction_read_only"), "off")
        self.assertIn("session is read-only (target_session_attrs=read-write)", px.log())

    def test_primary_made_read_only_in_transaction_mode(self):
        # No reset in transaction mode: a server never comes back to its
        # defaults, so a fenced host was never told from a client's own
        # SET, and its servers were lent on for ever (writes failing).  A
        # server reporting a read-only session now closes at its release;
        # the next login finds the host read-only and goes on.
        fenced = self.side.start("rw", "fenced2")
        px = self.start_pgwharf(settings=dict(SETTINGS, pool_mode="transaction"), databases={
            "rw": "host=%s,127.0.0.1 port=%d dbname=%s target_session_attrs=read-write "
                  "load_balance_hosts=disable pool_size=2" % (fenced, self.pg.port,
                                                              self.pg.database)})
        conn = self.db_conn(px, db="rw")
        self.assertEqual(self.where(conn), "fenced2")
        self.side.psql("fenced2", "alter system set default_transaction_read_only = on")
        self.side.psql("fenced2", "select pg_reload_conf()")
        pt.wait_until(lambda: self.side.psql("fenced2", "show default_transaction_read_only")
                      == "on", what="the reload")
        # The server learns it at its next query: that one ran there.
        self.assertEqual(self.where(conn), "fenced2")
        for _ in range(3):
            self.assertEqual(self.where(conn), "main")
            self.assertEqual(pt.one(conn, "show transaction_read_only"), "off")
        self.assertNotIn(fenced, {s["addr"] for s in px.show("SERVERS", database="rw")})


    def test_a_primary_back_after_a_moment_is_not_held_off_by_server_login_retry(self):
        # The primary down a moment: its breaker opens, the standby is
        # tried and refused (target_session_attrs=primary), and with no
        # host left the whole pool was blocked for server_login_retry --
        # every login refused with the standby's error long after the
        # primary was back.  Now the breaker's probe decides.
        standby = self.side.start("standby", "standby3")
        prim_sock = self.side.start("rw", "prim3")
        prim_data = os.path.join(self.side.root, "prim3")
        px = self.start_pgwharf(settings=dict(SETTINGS, pool_mode="transaction",
                                              breaker_threshold=1, breaker_cooldown="3s",
                                              breaker_max_cooldown="3s",
                                              query_wait_timeout="5s"), databases={
            "pri": "host=%s,%s port=%d dbname=%s target_session_attrs=primary "
                   "load_balance_hosts=disable" % (prim_sock, standby, self.pg.port,
                                                   self.pg.database)})
        conn = self.db_conn(px, db="pri")
        conn.autocommit = True
        self.assertEqual(self.where(conn), "prim3")
        conn.close()
        self.side._run("pg_ctl", "stop", "-D", prim_data, "-m", "immediate", "-w", "-t", "60")

        def standby_refused():
            try:
                c = self.db_conn(px, db="pri")
                pt.one(c, "select 1")        # transaction mode: a server now
                c.close()
            except psycopg2.Error:
                pass
            return "hot standby mode" in px.log()
        pt.wait_until(standby_refused, 30, what="a login refused by the standby: %s"
                      % px.log_tail())
        # The primary's breaker decides now: its error, not the standby's.
        with self.assertRaises(psycopg2.Error) as cm:
            pt.one(self.db_conn(px, db="pri"), "select 1")
        self.assertIn("prim3", str(cm.exception))
        self.assertNotIn("hot standby mode", str(cm.exception))
        self.side._run("pg_ctl", "start", "-D", prim_data, "-w", "-t", "60",
                       "-l", os.path.join(self.side.root, "prim3.log"))

        def served():
            try:
                c = self.db_conn(px, db="pri")
                c.autocommit = True
                where = self.where(c)
                c.close()
                return where == "prim3"
            except psycopg2.Error:
                return False
        # server_login_retry is 60 s: well within it
        pt.wait_until(served, 20, what="the primary serving again")

    def test_a_standby_promoted_after_the_primary_failed_is_found_at_once(self):
        # Failover: the primary dies, the standby (refused meanwhile as
        # read-only, so skipped for server_login_retry) is promoted.
        # libpq's own multi-host connect found the new primary at once;
        # pgwharf refused every login ("another host of the list does not
        # match") until server_login_retry ended (hunt: 12.6 s with the
        # default).  Now, with every other host down, the skipped host is
        # tried again (a second after its refusal at the soonest).
        standby = self.side.start("standby", "standby4")
        prim_sock = self.side.start("rw", "prim4")
        prim_data = os.path.join(self.side.root, "prim4")
        px = self.start_pgwharf(settings=dict(SETTINGS, breaker_threshold=1,
                                              server_login_retry="600s",
                                              query_wait_timeout="60s"), databases={
            "rw": "host=%s,%s port=%d dbname=%s target_session_attrs=read-write "
                  "load_balance_hosts=disable" % (prim_sock, standby, self.pg.port,
                                                  self.pg.database)})
        self.assertEqual(self.where(self.db_conn(px, db="rw")), "prim4")
        self.side._run("pg_ctl", "stop", "-D", prim_data, "-m", "immediate", "-w", "-t", "60")

        def standby_refused():
            try:
                self.where(self.db_conn(px, db="rw"))
            except psycopg2.Error:
                pass
            return "session is read-only" in px.log()
        pt.wait_until(standby_refused, 30, what="a login refused by the standby: %s"
                      % px.log_tail())
        self.side.promote("standby4")

        def served():
            try:
                return self.where(self.db_conn(px, db="rw")) == "standby4"
            except psycopg2.Error:
                return False
        # server_login_retry is 600 s: the base waited it out
        pt.wait_until(served, 20, interval=0.2, what="the promoted standby serving: %s"
                      % px.log_tail())
        # The host matches again: each new server goes there, not one a
        # recheck (three clients at once, each holding its own).
        self.assertEqual([self.where(self.db_conn(px, db="rw")) for _ in range(3)],
                         ["standby4"] * 3)

    def where_closed(self, px, db):
        """where() of a new client of db, closed after."""
        conn = self.db_conn(px, db=db)
        try:
            return self.where(conn)
        finally:
            conn.close()

    def refused_by_the_standby(self, px, db):
        """Clients of db until a login of its pool is refused as read-only."""
        def refused():
            try:
                self.where_closed(px, db)
            except psycopg2.Error:
                pass
            return re.search(r"server_connect_failed db=%s .*session is read-only" % db,
                             px.log())
        pt.wait_until(refused, 30, what="a login of %s refused by the standby: %s"
                      % (db, px.log_tail()))

    def held_recheck(self, px, db, gate):
        """A client of db (pt.Background, where_closed) whose login waits
        on the recheck of the standby that gate holds.  Clients that come
        before a recheck is due are refused at once: the next one tries."""
        def held():
            c = pt.Background(lambda: self.where_closed(px, db))
            pt.wait_until(lambda: gate.waiting() or not c.is_alive(), 30,
                          what="a recheck or a refusal")
            return c if gate.waiting() else None
        return pt.wait_until(held, 30, interval=0.2, what="a recheck held: %s" % px.log_tail())

    def test_clients_wait_for_a_recheck_under_way_whatever_their_pool(self):
        # The primary dead, the standby skipped for its kind: a login to it
        # (a recheck) goes a second after its refusal.  A client that came
        # while it was under way got the breaker's 08001 at once, though
        # the standby, promoted, was found a moment later; a pool over the
        # same hosts made its own recheck (the clock was each pool's: N
        # pools, N logins a second on a standby that stays one).  Now
        # both wait for that one login, refused with it if it is refused.
        # Then the pool skips the host no more (pgw_pool_host_matched):
        # its next server logs in there with no recheck of its own.
        standby = self.side.start("standby", "standby5")
        prim_sock = self.side.start("rw", "prim5")
        prim_data = os.path.join(self.side.root, "prim5")
        gate = SocketGate(self.side.root, "gate5", standby, self.pg.port)
        self.addCleanup(gate.close)
        entry = ("host=%s,%s port=%d dbname=%s target_session_attrs=read-write "
                 "load_balance_hosts=disable" % (prim_sock, gate.dir, self.pg.port,
                                                 self.pg.database))
        px = self.start_pgwharf(settings=dict(SETTINGS, breaker_threshold=1,
                                              server_login_retry="600s",
                                              query_wait_timeout="60s",
                                              log_level="debug"),    # pool_kind_recheck
                                databases={"rw1": entry, "rw2": entry})
        for db in ("rw1", "rw2"):
            self.assertEqual(self.where_closed(px, db), "prim5")
        self.side._run("pg_ctl", "stop", "-D", prim_data, "-m", "immediate", "-w", "-t", "60")
        for db in ("rw1", "rw2"):
            self.refused_by_the_standby(px, db)

        def pool(db):
            return px.show("POOLS", database=db)[0]

        def queued(db, n, c):
            pt.wait_until(lambda: pool(db)["cl_waiting"] == str(n) or not c.is_alive(), 30,
                          what="%d waiting in %s" % (n, db))
            self.assertTrue(c.is_alive(), "refused at once: %s" % c.error)

        # A standby that stays one: the recheck's refusal fails them all.
        gate.hold()
        c1 = self.held_recheck(px, "rw1", gate)
        c2 = pt.Background(lambda: self.where_closed(px, "rw1"))
        queued("rw1", 2, c2)
        gate.release()
        for c in (c1, c2):
            c.join(60)
            self.assertIsInstance(c.error, psycopg2.Error)
            self.assertIn("another host of the list does not match", str(c.error))

        # Promoted while the recheck is under way: every client waiting
        # for it is served, the other pool's too, by a login of its own
        # once the recheck matched.
        mark = len(px.log())
        accepted = gate.accepted
        gate.hold()
        c1 = self.held_recheck(px, "rw1", gate)
        c2 = pt.Background(lambda: self.where_closed(px, "rw1"))
        queued("rw1", 2, c2)
        c3 = pt.Background(lambda: self.where_closed(px, "rw2"))
        queued("rw2", 1, c3)
        # rw2 made no recheck of its own: the one under way is the host's
        self.assertEqual(pool("rw2")["sv_login"], "0")
        self.assertEqual(gate.accepted - accepted, 1)
        self.side.promote("standby5")
        gate.release()
        for c in (c1, c2, c3):
            c.join(60)
            self.assertFalse(c.is_alive())
            self.assertEqual((c.result, c.error), ("standby5", None))
        # One recheck a pool: rw1's second server logged in as to any
        # host that matches (pgw_pool_host_matched), and rw2's after rw1's.
        log = px.log()[mark:]
        for db in ("rw1", "rw2"):
            self.assertEqual(len(re.findall(r"event=pool_kind_recheck db=%s " % db, log)), 1,
                             (db, log))

    def test_a_standby_promoted_when_every_host_is_a_standby_is_found_at_once(self):
        # Two standbys, no primary: each is skipped for its kind, and the
        # pool refused every login for server_login_retry, a standby
        # promoted meanwhile unseen.  Now every host skipped for its kind
        # counts as every other host down: each is rechecked, a second
        # after its refusal at the soonest, for a client that waits.
        one = self.side.start("standby", "standby6a")
        two = self.side.start("standby", "standby6b")
        px = self.start_pgwharf(settings=dict(SETTINGS, server_login_retry="600s",
                                              query_wait_timeout="60s"), databases={
            "rw": "host=%s,%s port=%d dbname=%s target_session_attrs=read-write "
                  "load_balance_hosts=disable" % (one, two, self.pg.port, self.pg.database)})
        with self.assertRaises(psycopg2.Error) as cm:
            self.where_closed(px, "rw")
        self.assertIn("session is read-only", str(cm.exception))
        self.side.promote("standby6b")

        def served():
            try:
                return self.where_closed(px, "rw") == "standby6b"
            except psycopg2.Error as e:
                self.assertIn("session is read-only", str(e))
                return False
        # server_login_retry is 600 s: the base waited it out
        pt.wait_until(served, 20, interval=0.2, what="the promoted standby serving: %s"
                      % px.log_tail())
        self.assertEqual(self.where_closed(px, "rw"), "standby6b")

    def test_a_refusal_for_another_kind_does_not_fail_a_pool_the_host_now_serves(self):
        # (review, session 46: the recheck clock and count were one per
        # host for every kind; they are per target_session_attrs now)
        # rw (read-write) and sb (standby) over [prim, standby].  The
        # primary dies, the standby is promoted: rw's host now matches,
        # sb's does not.  A recheck by sb (refused: not a standby) failed
        # the rw clients that waited for it and pushed rw's own recheck a
        # second back, though the host is what rw wants.
        standby = self.side.start("standby", "standby7")
        prim_sock = self.side.start("rw", "prim7")
        prim_data = os.path.join(self.side.root, "prim7")
        gate = SocketGate(self.side.root, "gate7", standby, self.pg.port)
        self.addCleanup(gate.close)
        base = ("host=%s,%s port=%d dbname=%s load_balance_hosts=disable "
                % (prim_sock, gate.dir, self.pg.port, self.pg.database))
        px = self.start_pgwharf(settings=dict(SETTINGS, breaker_threshold=1,
                                              server_login_retry="600s",
                                              query_wait_timeout="60s"),
                                databases={"rw": base + "target_session_attrs=read-write",
                                           "sb": base + "target_session_attrs=standby"})
        self.assertEqual(self.where_closed(px, "rw"), "prim7")
        self.assertEqual(self.where_closed(px, "sb"), "standby7")
        self.side._run("pg_ctl", "stop", "-D", prim_data, "-m", "immediate", "-w", "-t", "60")
        self.refused_by_the_standby(px, "rw")
        self.side.promote("standby7")

        mark = len(px.log())

        def sb_refused():
            try:
                self.where_closed(px, "sb")
            except psycopg2.Error:
                pass
            return re.search(r"server_connect_failed db=sb .*gate7.*not in hot standby", px.log()[mark:])
        pt.wait_until(sb_refused, 30, what="sb refused: %s" % px.log_tail())

        gate.hold()
        c1 = self.held_recheck(px, "sb", gate)
        c2 = pt.Background(lambda: self.where_closed(px, "rw"))
        pt.wait_until(lambda: px.show("POOLS", database="rw")[0]["cl_waiting"] == "1"
                      or not c2.is_alive(), 30, what="rw waiting")
        self.assertTrue(c2.is_alive(), "refused at once: %s" % c2.error)
        gate.release()
        c1.join(60)
        c2.join(60)
        self.assertEqual((c2.result, c2.error), ("standby7", None))
        # and the next read-write client at once, with no recheck of its own
        self.assertEqual(self.where_closed(px, "rw"), "standby7")


    def two_pools_skipping_a_promoted_standby(self, n):
        """rw (database pgwharf) and pg (database postgres), both
        target_session_attrs=read-write over [a primary, a standby behind a
        SocketGate]; the primary dead, both skip the standby (refused as
        read-only), then it is promoted.  (px, gate, standby's name)."""
        name = "standby%d" % n
        standby = self.side.start("standby", name)
        prim_sock = self.side.start("rw", "prim%d" % n)
        gate = SocketGate(self.side.root, "gate%d" % n, standby, self.pg.port)
        self.addCleanup(gate.close)
        base = ("host=%s,%s port=%d target_session_attrs=read-write load_balance_hosts=disable "
                % (prim_sock, gate.dir, self.pg.port))
        px = self.start_pgwharf(settings=dict(SETTINGS, breaker_threshold=1,
                                              server_login_retry="600s",
                                              query_wait_timeout="60s"),
                                databases={"rw": base + "dbname=" + self.pg.database,
                                           "pg": base + "dbname=postgres"})
        for db in ("rw", "pg"):
            self.assertEqual(self.where_closed(px, db), "prim%d" % n)
        self.side._run("pg_ctl", "stop", "-D", os.path.join(self.side.root, "prim%d" % n),
                       "-m", "immediate", "-w", "-t", "60")
        for db in ("rw", "pg"):
            self.refused_by_the_standby(px, db)
        self.side.promote(name)
        return px, gate, name

    def rw_waits_for_pg_recheck(self, px, gate):
        """pg's recheck held at the gate, and a client of rw waiting for
        it (rw makes no recheck of its own while one is under way)."""
        gate.hold()
        c1 = self.held_recheck(px, "pg", gate)
        t0 = time.monotonic()        # pg's recheck began (and moved the clock) before
        c2 = pt.Background(lambda: self.where_closed(px, "rw"))
        pt.wait_until(lambda: px.show("POOLS", database="rw")[0]["cl_waiting"] == "1"
                      or not c2.is_alive(), 30, what="rw waiting")
        self.assertTrue(c2.is_alive(), "refused at once: %s" % c2.error)
        self.assertEqual(px.show("POOLS", database="rw")[0]["sv_login"], "0")
        return c1, c2, t0

    def within_the_clock(self, elapsed, what):
        """These tests tell the fix from the base only when the other pool's
        client is let go within the second the recheck moved the clock on:
        later, the base rechecks too.  Past it (a loaded machine, ASan),
        the outcome was checked but says nothing: inconclusive, not a pass."""
        if elapsed >= 0.9:
            self.skipTest("inconclusive: %s took %.2f s, the recheck clock is 1 s" % (what, elapsed))

    def test_a_recheck_refused_for_its_pool_does_not_hold_off_another_pool(self):
        # (session 47) The recheck clock is the host's for each
        # target_session_attrs value, whatever the pool.  A recheck by pg
        # refused for pg's own database (pg_hba) said nothing of the
        # host's kind, yet it held rw's recheck off for a second: rw's
        # client, which waited for it, got the breaker's 08001 at once,
        # though the host, promoted, is what rw asks for.  Now such a
        # refusal puts the clock back and rw rechecks at once.
        px, gate, name = self.two_pools_skipping_a_promoted_standby(8)
        data = os.path.join(self.side.root, name)
        hba = os.path.join(data, "pg_hba.conf")
        with open(hba) as f:
            rules = f.read()
        with open(hba, "w") as f:
            f.write("local postgres all reject\n" + rules)
        self.side._run("pg_ctl", "reload", "-D", data)

        def rejected():
            try:
                pt._run_psql(self.side.sock_dir(name), self.pg.port, self.pg.user, None,
                             "postgres", "select 1")
            except pt.PgwharfError:
                return True
            return False
        pt.wait_until(rejected, 30, what="the standby refusing database postgres")
        c1, c2, t0 = self.rw_waits_for_pg_recheck(px, gate)
        elapsed = time.monotonic() - t0
        gate.release()
        c1.join(60)
        self.assertIsInstance(c1.error, psycopg2.Error)
        self.assertIn("pg_hba.conf rejects connection", str(c1.error))
        c2.join(60)
        self.assertEqual((c2.result, c2.error), (name, None))
        self.within_the_clock(elapsed, "holding pg's recheck")

    def test_a_recheck_closed_unanswered_leaves_the_host_to_the_next_pool(self):
        # (session 47) A recheck that ends with no answer (here: no file
        # descriptor for its socket) said nothing of the host, yet the
        # host's clock had moved a second on at its start: rw's client,
        # let go by RESUME then, got the breaker's 08001 at once, though
        # the host, promoted, is what rw asks for (and the pools waiting
        # for such a recheck were kicked only at the next tick).  Now
        # its close puts the clock back: rw rechecks and is served.
        import resource
        px, _, name = self.two_pools_skipping_a_promoted_standby(9)
        px.admin("PAUSE rw")
        c2 = pt.Background(lambda: self.where_closed(px, "rw"))
        pt.wait_until(lambda: px.show("POOLS", database="rw")[0]["cl_waiting"] == "1"
                      or not c2.is_alive(), 30, what="rw waiting")
        self.assertTrue(c2.is_alive(), "refused at once: %s" % c2.error)
        pid = px.proc.pid
        was, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
        mark = len(px.log())

        def recheck_failed():
            # room for one more descriptor: pg's client, not its recheck's
            # socket (a client that comes before the recheck is due is
            # refused at once: the next one tries)
            fds = {int(f) for f in os.listdir("/proc/%d/fd" % pid)}
            free = sorted(set(range(max(fds) + 3)) - fds)
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (free[1], hard))
            try:
                self.where_closed(px, "pg")
            except psycopg2.Error:
                pass
            finally:
                resource.prlimit(pid, resource.RLIMIT_NOFILE, (was, hard))
            return re.search(r"server_connect_failed db=pg .*no file descriptor left",
                             px.log()[mark:])
        pt.wait_until(recheck_failed, 30, interval=0.2,
                      what="pg's recheck failed for want of a descriptor: %s" % px.log_tail())
        failed = [l for l in px.log()[mark:].splitlines()
                  if re.search(r"server_connect_failed db=pg .*no file descriptor left", l)]
        elapsed = time.time() % 86400 - _ts(failed[-1])     # (log ts= is UTC)
        px.admin("RESUME rw")
        c2.join(60)
        self.assertEqual((c2.result, c2.error), (name, None))
        self.within_the_clock(elapsed, "from pg's failed recheck to RESUME")

if __name__ == "__main__":
    import unittest
    unittest.main()
