"""Fault injection: PostgreSQL fails under load and pgwharf must keep every
promise it can.

Each scenario runs pgbench (200 clients, transaction mode, a pool of 20,
bounded by -T) and a fleet of raw-protocol clients that time every login
and query, through one pgwharf, then breaks the test cluster:

  kill -9        the postmaster and every backend die; down for 3 s
  freeze         SIGSTOP of the postmaster and every backend for 10 s, SIGCONT
  restart        pg_ctl restart -m fast
  refusing       ALTER ROLE app CONNECTION LIMIT 0 + its backends terminated
  password       ALTER ROLE app PASSWORD changed + its backends terminated

and checks, for each:
  - every request of the fleet ends with its result or an ErrorResponse
    carrying a SQLSTATE, never a bare disconnect or a hang (the longest
    is printed, not timed: the configured deadline, query_wait_timeout +
    query_timeout or client_login_timeout, plus the load's share);
  - the circuit breaker goes open -> half-open -> closed (pgwharf's log:
    event=breaker_open / breaker_half_open / breaker_closed) where the
    failure lasts long enough to trip it, and SHOW BREAKERS says closed
    at the end;
  - pgwharf serves again once PostgreSQL is back (how soon is printed;
    the breaker's cooldown never grew past breaker_max_cooldown);
  - pgbench finishes by its -T plus the deadline (no client stuck);
  - pgwharf's fds, server connections and RSS return to the baseline
    (polled with a bound), and it exits 0 on SIGTERM (the harness).
"""

import glob
import os
import re
import signal
import socket
import struct
import threading
import time
import unittest

import pgwharf_test as pt
import pgw_hardening as hz

try:
    import psycopg2
except ImportError:          # those tests skip; scripts/deps.sh installs it
    psycopg2 = None

QUERY_WAIT = 3.0
QUERY_TIMEOUT = 5.0
CONNECT_TIMEOUT = 2.0
LOGIN_TIMEOUT = 8.0
MAX_COOLDOWN = 2.0
POOL = 20
SETTINGS = {
    "pool_mode": "transaction",
    "default_pool_size": POOL,
    "max_client_conn": 1000,
    "query_wait_timeout": "%gs" % QUERY_WAIT,
    "query_timeout": "%gs" % QUERY_TIMEOUT,
    "server_connect_timeout": "%gs" % CONNECT_TIMEOUT,
    "client_login_timeout": "%gs" % LOGIN_TIMEOUT,
    "server_login_retry": "0.5s",
    "breaker_threshold": 3,
    "breaker_cooldown": "0.5s",
    "breaker_max_cooldown": "%gs" % MAX_COOLDOWN,
    "log_connections": 0,
    "log_disconnections": 0,
    "shutdown_timeout": "10s",
}


class FaultCase(pt.AppRoleTestCase):
    BENCH_CLIENTS = 200
    FLEET = 40

    def setUp(self):
        super().setUp()
        self.addCleanup(self._restore_role)

    def _restore_role(self):
        # Whatever a scenario changed on the role, put it back.
        self.pg.ensure_running()
        self.pg.psql("alter role %s connection limit -1 password '%s'"
                     % (self.user, self.password), db="postgres", via_socket=True)

    def terminate_app_backends(self):
        return self.pg.terminate_backends(user=self.user)

    def scenario(self, name, inject, recover, hold, expect_breaker=True, expect_errors=None):
        px = self.start_pgwharf(settings=dict(SETTINGS))
        slow = hz.sanitized(px)
        slack = 6.0 if slow else 3.0
        deadline = max(QUERY_WAIT + QUERY_TIMEOUT, LOGIN_TIMEOUT) + slack
        self.assertEqual(px.psql("select 1", user=self.user), "1")
        base = hz.Baseline(px, self.pg, self.user)

        run_for = int(2 + hold + 12)
        bench = hz.Pgbench(px, ["-c", str(self.BENCH_CLIENTS), "-j", "2", "-T", str(run_for)],
                           self.user, self.password, self.db)
        self.addCleanup(bench.kill)
        # hang_after only tells a request pgwharf never answers (a SQLSTATE
        # or a result ends every one; how soon is the machine's load's).
        fleet = hz.Fleet(px, self.FLEET, self.user, self.password, self.db,
                         hang_after=deadline + 30, pause=0.02).start()
        try:
            hz.wait_until(lambda: fleet.oks() > 50 and bench.sockets() >= self.BENCH_CLIENTS,
                          30, what="load flowing (pgbench clients all connected)")
            log_mark = len(px.log())
            inject()
            time.sleep(hold)
            recover()
            t_back = time.monotonic()
            ok_before = fleet.oks()
            # Serving again: fresh successes after PostgreSQL is back.
            hz.wait_until(lambda: fleet.last_ok > t_back and fleet.oks() > ok_before + 20,
                          60, what="%s: pgwharf serving again" % name)
            recovery = fleet.last_ok - t_back
            time.sleep(1.0)
        finally:
            fleet.stop()
        rc = bench.wait(run_for + deadline + 30)
        print("%s: fleet ok=%d errors=%s broken=%d max_latency=%.2fs (%s); recovery %.2fs; "
              "pgbench rc=%s tx=%s failed=%s"
              % (name, fleet.ok, fleet.errors, len(fleet.broken), fleet.max_latency,
                 fleet.max_latency_what, recovery, rc, bench.transactions(),
                 bench.failed_transactions()))
        print("pgbench: " + " | ".join((bench.out + bench.err).strip().splitlines()[-6:]))
        self.assertTrue(px.alive(), "pgwharf died during %s:\n%s" % (name, px.log_tail()))
        self.assertEqual(fleet.broken, [], "requests that ended without a SQLSTATE or hung")
        if expect_errors:
            self.assertTrue(set(fleet.errors) & set(expect_errors),
                            "expected some of %s among %s" % (expect_errors, fleet.errors))

        new_log = px.log()[log_mark:]
        if expect_breaker:
            self.assert_breaker_cycle(new_log)
            # What bounds the time to serve again once PostgreSQL is back:
            # the breaker's cooldown never grew past breaker_max_cooldown
            # (the latency and recovery are printed above, not timed: on a
            # loaded machine they are the load's).
            cooldowns = [float(c) for c in
                         re.findall(r"event=breaker_open [^\n]*cooldown=([0-9.]+)", new_log)]
            self.assertTrue(cooldowns, new_log[-3000:])
            self.assertLessEqual(max(cooldowns), MAX_COOLDOWN, cooldowns)
        # Closed again: a burst of logins right after recovery may run past
        # server_connect_timeout on a loaded machine (ASan) and open it once
        # more; it must close again by itself (a breaker stuck open fails).
        def closed():
            states = [r["state"] for r in px.show("BREAKERS")]
            return states and all(s == "closed" for s in states)
        pt.wait_until(closed, timeout=4 * (MAX_COOLDOWN + CONNECT_TIMEOUT) + 10,
                      what="every breaker closed again")
        # Serving: a fresh client, and pgbench with no failures.
        self.assertEqual(px.psql("select 'after %s'" % name, user=self.user), "after " + name)
        after = hz.Pgbench(px, ["-c", "20", "-j", "2", "-t", "50"], self.user, self.password,
                           self.db)
        self.assertEqual(after.wait(30), 0, after.out + after.err)
        self.assertEqual(after.failed_transactions() or 0, 0, after.out)
        self.assertEqual(after.transactions(), 20 * 50, after.out)
        base.settle(self, max_servers=POOL, what=name,
                    rss_margin_kb=(128 if slow else 32) * 1024)
        return px, fleet, bench

    def assert_breaker_cycle(self, log):
        events = re.findall(r"event=(breaker_open|breaker_half_open|breaker_closed)\b", log)
        self.assertIn("breaker_open", events, "breaker never opened; log:\n" + log[-3000:])
        i = events.index("breaker_open")
        self.assertIn("breaker_half_open", events[i:], "no half-open after open: %s" % events)
        j = events.index("breaker_half_open", i)
        self.assertIn("breaker_closed", events[j:], "never closed after half-open: %s" % events)


class TestFaults(FaultCase):
    def test_kill9(self):
        self.scenario("kill9", lambda: self.pg.kill9(), lambda: self.pg.start(), hold=3.0,
                      expect_errors=["08006", "08001", "57P01"])

    def test_freeze_sigstop_sigcont(self):
        # The freeze held: every process of the cluster was still stopped
        # when the hold ended.  (pause_all did nothing when it found no
        # postmaster, and pgbench ran 120 000 transactions through the
        # "freeze"; it raises now, and returns once all have stopped.)
        frozen, thawed = [], {}

        def freeze():
            frozen.extend(self.pg.pause_all())

        def thaw():
            thawed.update((p, pt.proc_state(p)) for p in frozen)
            self.pg.resume()

        _, fleet, bench = self.scenario("freeze", freeze, thaw, hold=10.0,
                                        expect_errors=["57014", "08006", "08001"])
        self.assertGreater(len(frozen), 1, "the postmaster and no other process")
        self.assertEqual([p for p in frozen if thawed[p] not in ("T", "Z", None)], [],
                         "not stopped at the end of the freeze: %s" % thawed)
        # 10 s frozen: requests on a frozen server met query_timeout, those
        # queued for one query_wait_timeout (their wait is not timed here).
        # Whose requests were on the 20 servers when it froze, the fleet's
        # or pgbench's 200 clients', is the scheduler's: either tells
        # (pgbench prints the message, not the SQLSTATE).
        self.assertTrue("57014" in fleet.errors or
                        "canceling statement due to query timeout" in bench.out + bench.err,
                        "no request met query_timeout: fleet %s, pgbench %s"
                        % (fleet.errors, (bench.out + bench.err)[-2000:]))

    def test_restart(self):
        self.scenario("restart", lambda: None, lambda: self.pg.restart(), hold=0.0,
                      expect_breaker=False)

    def test_refusing_logins(self):
        def inject():
            self.pg.psql("alter role %s connection limit 0" % self.user, db="postgres",
                         via_socket=True)
            self.terminate_app_backends()

        def recover():
            self.pg.psql("alter role %s connection limit -1" % self.user, db="postgres",
                         via_socket=True)

        # The role's own limit: that pool waits server_login_retry between
        # tries; the breaker (other roles on the backend) stays out of it.
        self.scenario("refusing", inject, recover, hold=4.0, expect_breaker=False,
                      expect_errors=["53300"])

    def test_password_changed(self):
        def inject():
            self.pg.psql("alter role %s password 'changed-by-test'" % self.user, db="postgres",
                         via_socket=True)
            self.terminate_app_backends()

        def recover():
            self.pg.psql("alter role %s password '%s'" % (self.user, self.password),
                         db="postgres", via_socket=True)

        # The server refuses the pool's login: that pool waits
        # server_login_retry between tries; the breaker stays out of it.
        self.scenario("password", inject, recover, hold=4.0, expect_breaker=False,
                      expect_errors=["28P01"])



class TestRecoveryAfterAnOutage(pt.PgwharfTestCase):
    """The breaker at pgwharf's defaults (breaker_cooldown 1 s,
    breaker_max_cooldown 2 s) through an outage of PostgreSQL: no
    client traffic, the once-a-second maintenance tick probes."""

    OPEN = re.compile(r"event=breaker_open [^\n]*cooldown=([0-9.]+)")

    def test_a_backend_back_is_probed_within_the_default_cap(self):
        # With the cooldown doubled after each failed probe up to 30 s,
        # logins were refused 08001 for ~12 s after PostgreSQL came back
        # from a ~20 s outage (hunt), where PgBouncer with
        # server_login_retry 1 let clients in after ~2 s.  The default cap
        # is 2 s now: one probe connection per 2 s at most while the
        # backend is down, and the first probe after it is back closes the
        # breaker.  Measured in the breaker's terms: its log events.
        px = self.start_pgwharf(settings={"log_connections": 0, "log_disconnections": 0})
        self.assertEqual(px.psql("select 1"), "1")
        self.addCleanup(self.pg.ensure_running)
        mark = len(px.log())
        self.pg.stop()

        def opens():
            return [float(c) for c in self.OPEN.findall(px.log()[mark:])]

        def refused():
            with self.assertRaises(psycopg2.OperationalError) as cm:
                psycopg2.connect(px.dsn(connect_timeout=10)).close()
            return str(cm.exception)
        pt.wait_until(lambda: refused() and opens(), timeout=30, what="the breaker opened")
        # A client meanwhile: the breaker's error at once, no wait.
        self.assertIn("Connection refused", refused())
        # Three probes failed in a row (the cooldown would be 8 s by the
        # last under the old cap): each cooldown no more than the cap.
        pt.wait_until(lambda: len(opens()) >= 4 or max(opens()) > 2.0, timeout=60,
                      what="three failed probes")
        self.assertLessEqual(max(opens()), 2.0, opens())
        self.assertEqual(opens()[-1], 2.0, opens())

        back = len(px.log())
        self.pg.start()
        ready = len(px.log())
        pt.wait_until(lambda: "event=breaker_closed" in px.log()[back:], timeout=30,
                      what="the breaker closed again")
        after = px.log()[back:]
        after = after[:after.index("event=breaker_closed")]
        # The cooldown before the probe that closed it: no more than the
        # cap (a probe under way while PostgreSQL started may fail once).
        self.assertLessEqual(max(opens() or [0]), 2.0, opens())
        self.assertLessEqual(after.count("event=breaker_open"), 1, after)
        # Since PostgreSQL was ready: one probe, which closed it.
        since = px.log()[ready:]
        since = since[:since.index("event=breaker_closed")] if "event=breaker_closed" in since \
            else ""
        self.assertLessEqual(since.count("event=breaker_half_open"), 1, since)
        self.assertEqual(px.psql("select 'back'"), "back")


class TestEventRegistrationFails(pt.PgwharfTestCase):
    """epoll_ctl failing (ENOMEM: the kernel short of memory) made libev
    stop the socket's watchers and say so once (EV_ERROR), which pgwharf
    ignored: a client whose socket it could not watch waited for ever (its
    descriptor held, shutdown waiting for it).  Its session ends now, and
    the next client is served.  (tests/nss_gate.c fails one epoll_ctl.)"""

    def test_a_socket_libev_cannot_watch_ends_its_session(self):
        px, fail = self.start_pgwharf_epoll_fail({
            "pool_mode": "transaction", "default_pool_size": 2, "client_login_timeout": 0})
        self.assertEqual(px.psql("select 1"), "1")
        open(fail, "w").close()
        cp = px.psql("select 2", check=False, timeout=60)
        self.assertFalse(os.path.exists(fail))            # the failure happened
        self.assertNotEqual(cp.returncode, 0, cp.stdout)
        self.assertIn("could not watch", px.log())
        self.assertEqual(px.psql("select 3"), "3")
        pt.wait_until(lambda: [r for r in px.show("CLIENTS") if r["database"] != "pgbouncer"]
                      == [], 20, what="no session left behind")
        self.assertEqual(px.stop(timeout=20), 0, px.log_tail())


class TestClosingAServerThatReadsNothing(pt.AppRoleTestCase):
    """A client's query waits on a gate (an advisory lock the test holds)
    with more queries pipelined behind it, which PostgreSQL does not read
    meanwhile: pgwharf sends them until the server's socket is full (the
    pool's server on PostgreSQL's Unix socket, whose buffer is small) and
    keeps the rest.  KILL_CLIENT closes that server: libpq's PQfinish, in
    its blocking mode, waited in poll(2) for the socket to take its
    Terminate, and pgwharf's whole loop stopped until PostgreSQL read again
    (the gate open): the KILL_CLIENT, every other client, got no answer."""

    def test_closing_a_server_whose_socket_is_full_stops_nothing(self):
        px = self.start_pgwharf(settings={"pool_mode": "transaction", "default_pool_size": 1},
                                databases={self.db: pt.entry_conninfo(
                                    host=self.pg.sockdir, port=self.pg.port, dbname=self.db)})
        import psycopg2
        g = psycopg2.connect(host=self.pg.sockdir, port=self.pg.port, user=self.pg.user,
                             dbname=self.db)
        g.autocommit = True
        self.addCleanup(g.close)
        pt.one(g, "select pg_advisory_lock(4401)")
        c = socket.create_connection((px.host, px.port), timeout=30)
        self.addCleanup(c.close)
        hz.sync_login(c, self.user, self.db, self.password)
        port = str(c.getsockname()[1])
        c.sendall(hz.query_msg("select pg_advisory_xact_lock_shared(4401) as marker_q4401"))
        pt.wait_until(lambda: self.pg.queries_running("marker_q4401") == 1, 30,
                      what="the query at the gate")
        more = b"".join(hz.query_msg("select length('%s')" % ("x" * 30000)) for _ in range(12))

        def send_more():
            try:
                c.sendall(more)
            except OSError:
                pass                    # (killed before it was all read)
        threading.Thread(target=send_more, daemon=True).start()

        def unsent():
            rows = px.show("SOCKETS", port=port)
            return len(rows) == 1 and int(rows[0]["send_avail"]) > 0
        pt.wait_until(unsent, 30, what="queries left unsent, the server's socket full")
        cid = px.show("CLIENTS", port=port)[0]["id"]
        px.admin("KILL_CLIENT %s" % cid, user=self.pg.user)
        self.assertEqual(px.show("CLIENTS", port=port), [])
        self.assertEqual(px.psql("select 'next'", user=self.user), "next")
        pt.one(g, "select pg_advisory_unlock(4401)")


class FatalAfterLoginServer(hz.QueryServer):
    """Its first connection logs in and is ended at once: the FATAL of a
    pg_terminate_backend in the same packet as the login's ReadyForQuery,
    then the close.  The others answer each query with a row 'ok'."""

    LOGIN = hz.QueryServer.LOGIN + (("application_name", ""), ("IntervalStyle", "postgres"),
                                    ("is_superuser", "off"))

    def __init__(self):
        self.lock = threading.Lock()
        self.logins = 0
        super().__init__()

    def session(self, conn):
        with self.lock:
            self.logins += 1
            first = self.logins == 1
        if not first:
            return super().session(conn)
        self.read_startup(conn)
        conn.sendall(self.login_ok(self.LOGIN) + self._msg(
            b"E", b"SFATAL\0VFATAL\0C57P01\0Mterminating connection due to administrator "
            b"command\0\0"))

    def answer(self, sql):
        out = self._msg(b"T", struct.pack("!H", 1) + b"x\0" +
                        struct.pack("!IHIhih", 0, 0, 25, -1, -1, 0))
        out += self._msg(b"D", struct.pack("!HI", 1, 2) + b"ok")
        return out + self._msg(b"C", b"SELECT 1\0"), True


def start_on_fake(tc, fake, db, start=True, args=(), **settings):
    """pgwharf (transaction mode, auth_type any) with one entry db for
    user u on the fake server fake, closed at the test's end."""
    tc.addCleanup(fake.close)
    entry = dict(host="127.0.0.1", port=fake.port, dbname="x", user="u", password="p")
    return tc.start_pgwharf(start=start, args=args,
                            settings=dict({"pool_mode": "transaction", "auth_type": "any"},
                                          **settings),
                            databases={db: pt.entry_conninfo(**entry)})


class TestFatalRightAfterLogin(pt.PgwharfTestCase):
    def test_a_fatal_in_the_login_packet_is_logged_and_the_server_not_lent(self):
        # libpq parsed the FATAL behind the ReadyForQuery at takeover
        # (PQisBusy) as a notice: its default notice processor wrote it on
        # pgwharf's stderr, past -q and the logfile, and the bytes were
        # gone, so the server was lent and its client got 08006.
        fake = FatalAfterLoginServer()
        px = start_on_fake(self, fake, "fatal", start=False, args=("-q",),
                           default_pool_size=1, breaker_threshold=1)
        events = os.path.join(px.dir, "events.log")
        px.settings["logfile"] = events
        px.start()
        with socket.create_connection((px.host, px.port), timeout=20) as s:
            hz.sync_login(s, "u", "fatal")
            rows, errs = hz.simple_query(s, "select 'ok'")
        self.assertEqual((rows, errs), ([[b"ok"]], []))
        self.assertEqual(fake.logins, 2)            # a fresh server served it
        with open(events) as f:
            log = f.read()
        # pid= the BackendKeyData's, though libpq's PQbackendPID says 0
        # until the login is over (it was pid=0 before session 47)
        self.assertRegex(log, r"level=warning event=server_notice db=fatal user=u .*pid=4242 "
                              r"severity=FATAL sqlstate=57P01 message=\"terminating connection")
        self.assertRegex(log, r"event=server_close .*pid=4242 reason=\"server error right after login: "
                              r"terminating connection due to administrator command \(57P01\)")
        # a session ended by the server is no failed login of the backend
        self.assertNotIn("open", [r["state"] for r in px.show("BREAKERS")])
        self.assertNotIn("FATAL", px.log())        # the process's stdout and stderr


class SilentLoginServer(hz.FakeServer):
    """Takes the startup packet and never answers: a login held open (a
    backend stuck in authentication, a blackholed host)."""

    TIMEOUT = 120

    def session(self, conn):
        self.read_startup(conn)
        self._read(conn, 1)             # until pgwharf closes it


class TestFastShutdownWithLoginsUnderWay(pt.PgwharfTestCase):
    def test_sigquit_does_not_wait_for_a_server_login(self):
        # A guard (passes before too; a soak once saw a SIGQUIT take 6 s
        # while servers logged in, not reproduced): a fast shutdown waits
        # for no server login, check or reset under way -- only client
        # sessions keep the loop, and the pool set closes the rest after
        # it.  With no server_connect_timeout this login never ends.
        fake = SilentLoginServer()
        px = start_on_fake(self, fake, "hold", server_connect_timeout=0, query_wait_timeout=0)
        s = socket.create_connection((px.host, px.port), timeout=60)
        self.addCleanup(s.close)
        s.sendall(hz.startup_packet("u", "hold"))
        pt.wait_until(lambda: px.show("POOLS", database="hold", sv_login="1"), 20,
                      what="a server logging in")
        self.assertEqual(px.stop(sig=signal.SIGQUIT, timeout=60), 0)
        self.assertFalse(px.killed)
        kind, body = hz.recv_msg(s)
        while kind != b"E":                 # (an AuthenticationOk first)
            kind, body = hz.recv_msg(s)
        self.assertEqual(hz.parse_fields(body)["C"], "57P01")
        log = px.log()
        self.assertRegex(log, r"event=server_close db=hold user=u .*pid=0 reason=shutdown")
        self.assertIn("event=stopped", log)


FAKETIME_LIBS = glob.glob("/usr/lib/*/faketime/libfaketimeMT.so.1")


class TestFastShutdownEndsAtOnce(pt.PgwharfTestCase):
    def test_sigquit_ends_without_waiting_for_a_timer(self):
        # The sessions a fast shutdown closes are freed, and the loop
        # ended, by the proxy's reaper, an ev_check: it ran only after the
        # loop's next poll returned, which, with nothing else to wake it,
        # was the pool's one-second tick.  Here pgwharf's clock runs a
        # thousand times slower (libfaketime, which stretches the poll's
        # timeout too): the tick is 1000 s away, and the base hung there
        # until the test's timeout killed it.  An idle watcher started
        # with the reaper keeps that poll from blocking now.  The client
        # is idle in transaction mode: it holds no server, whose close
        # would have woken the loop through the pool set's reaper.
        if not FAKETIME_LIBS:
            raise unittest.SkipTest("no libfaketime (apt install libfaketime; scripts/deps.sh)")
        asan = os.environ.get("ASAN_OPTIONS")
        px = self.start_pgwharf(
            settings={"pool_mode": "transaction", "stats_period": 3600},
            env={"LD_PRELOAD": FAKETIME_LIBS[0], "FAKETIME": "+0 x0.001",
                 "ASAN_OPTIONS": (asan + ":" if asan else "") + "verify_asan_link_order=0"})
        conn = self.db_conn(px)
        self.addCleanup(conn.close)
        self.assertEqual(pt.one(conn, "select 1"), 1)
        pt.wait_until(lambda: px.show("POOLS", database=self.pg.database, cl_active="1",
                                      sv_active="0"), 20, what="a client with no server")
        self.assertEqual(px.stop(sig=signal.SIGQUIT, timeout=60), 0)
        self.assertFalse(px.killed, "it waited for its next timer: %s" % px.log_tail())
        self.assertIn("event=stopped", px.log())


class AlwaysFatalAfterLoginServer(FatalAfterLoginServer):
    """Every login is ended at once, the FATAL behind its ReadyForQuery."""

    def session(self, conn):
        with self.lock:
            self.logins += 1
        self.read_startup(conn)
        conn.sendall(self.login_ok(self.LOGIN) + self._msg(
            b"E", b"SFATAL\0VFATAL\0C57P01\0Mterminating connection due to administrator "
            b"command\0\0"))


class TestEveryLoginEnded(pt.PgwharfTestCase):
    def test_a_backend_ending_every_login_is_not_logged_into_in_a_loop(self):
        # A second login ended so in a row is a refusal: the client gets
        # it, instead of a login per round trip until query_wait_timeout.
        fake = AlwaysFatalAfterLoginServer()
        px = start_on_fake(self, fake, "fatal", default_pool_size=1, query_wait_timeout=5)
        with socket.create_connection((px.host, px.port), timeout=20) as s:
            with self.assertRaises(hz.PgError) as cm:
                hz.sync_login(s, "u", "fatal")
                hz.simple_query(s, "select 'ok'")
        self.assertIn("57P01", str(cm.exception))
        self.assertLessEqual(fake.logins, 3)


class TestRefusedLoginEdges(pt.PgwharfTestCase):
    """A pool that the server refused (server_login_retry) must stop
    refusing as soon as the refusal no longer stands, and only the
    server's own refusal of the pool counts as one."""

    def client_query(self, px, sql, db=None, timeout=20):
        """sql through px as the app role: ("ok", value) or ("err", sqlstate)."""
        with socket.create_connection((px.host, px.port), timeout=timeout) as s:
            try:
                hz.sync_login(s, self.pg.app_user, db or self.pg.database, self.pg.app_password)
            except hz.PgError as e:
                return "err", e.sqlstate
            rows, errs = hz.simple_query(s, sql)
            if errs:
                return "err", errs[-1].get("C")
            return "ok", rows[-1][0].decode() if rows else None

    def test_backend_terminated_during_connect_query_is_no_login_refusal(self):
        # A FATAL while connect_query runs (pg_terminate_backend, a restart)
        # ends the connection: the server's state, not an answer to this
        # pool's connect_query.  It must not hold the pool for
        # server_login_retry (30 s here) with "terminating connection" for
        # every client while PostgreSQL is fine.
        # connect_query waits at a gate until the backend running it is
        # terminated.
        gate = hz.Gate(self.pg, 7031)
        self.addCleanup(gate.close)
        px = self.start_pgwharf(
            settings={"pool_mode": "transaction", "server_login_retry": "30s",
                      "query_wait_timeout": "20s"},
            databases={self.pg.database: self.pg.conn_string(
                self.pg.database, connect_query="select %s" % gate.sql())})
        first = {}
        t = threading.Thread(target=lambda: first.update(r=self.client_query(px, "select 'a'")))
        t.start()
        self.pg.wait_running("select %s" % gate.sql(), lock_wait=True)
        self.assertEqual(self.terminate_app(), 1)
        gate.open()
        t.join(30)
        self.assertFalse(t.is_alive(), "the first client hangs")
        # Its wait goes on: the pool connects again at once.
        self.assertEqual(first.get("r"), ("ok", "a"), px.log_tail())
        self.assertEqual(self.client_query(px, "select 'b'"), ("ok", "b"), px.log_tail())

    def terminate_app(self):
        return self.pg.terminate_backends(user=self.pg.app_user)

    def test_role_or_database_limit_is_the_pools_refusal_not_the_backends(self):
        # A role's CONNECTION LIMIT (53300 "too many connections for
        # role"), a database's, or ALLOW_CONNECTIONS false (55000) refuses
        # that role or database only: PostgreSQL is up for everyone else.
        # Counted as the backend's failures they opened its breaker, and
        # every other pool on it got the app role's error at once.
        pg = self.pg
        cases = [
            ("alter role %s connection limit 0" % pg.app_user,
             "alter role %s connection limit -1" % pg.app_user, "53300"),
            ("alter database %s connection limit 0" % pg.database2,
             "alter database %s connection limit -1" % pg.database2, "53300"),
            ("alter database %s allow_connections false" % pg.database2,
             "alter database %s allow_connections true" % pg.database2, "55000"),
        ]
        for inject, restore, sqlstate in cases:
            with self.subTest(inject):
                pg.psql(inject, db="postgres", via_socket=True)
                try:
                    self.refused_by(pg, sqlstate)
                finally:
                    pg.psql(restore, db="postgres", via_socket=True)

    def test_a_pg_hba_reject_line_is_the_pools_refusal_not_the_backends(self):
        # "pg_hba.conf rejects connection" (a reject line for one role) was
        # read as a broken server (08006): it opened the breaker, and every
        # other pool on the backend got the app role's error.
        pg = self.pg
        hba = pg.psql("show hba_file", db="postgres", via_socket=True)
        with open(hba) as f:
            orig = f.read()

        def write(text):
            with open(hba, "w") as f:
                f.write(text)
            pg.psql("select pg_reload_conf()", db="postgres", via_socket=True)
        self.addCleanup(write, orig)
        write("host %s %s 127.0.0.1/32 reject\n%s" % (pg.database2, pg.app_user, orig))
        self.refused_by(pg, "28000")

    def change_app_password(self, pg):
        """The app role's password changed behind pgwharf's back (restored
        at cleanup): its next server login is refused with 28P01."""
        pg.psql("alter role %s password 'changed-by-test'" % pg.app_user, db="postgres",
                via_socket=True)
        self.addCleanup(pg.psql, "alter role %s password '%s'"
                        % (pg.app_user, pg.app_password), db="postgres", via_socket=True)

    def test_a_refusal_in_the_servers_language_is_read_by_its_sqlstate(self):
        # pgwharf read a refused login's SQLSTATE from libpq's English text:
        # a server with lc_messages de_DE ("Datenbank »x« existiert nicht",
        # "Passwort-Authentifizierung ... fehlgeschlagen") matched nothing,
        # so one client of a missing database or a wrong server password
        # opened the backend's breaker (08006) for every pool on it.
        pg = self.pg
        try:
            pg.psql("alter system set lc_messages = 'de_DE.UTF-8'", db="postgres",
                    via_socket=True)
        except Exception as e:        # no such locale here (scripts/deps.sh makes it)
            self.skipTest("no de_DE.UTF-8 locale: %s" % e)

        def reset():
            pg.psql("alter system reset lc_messages", db="postgres", via_socket=True)
            pg.psql("select pg_reload_conf()", db="postgres", via_socket=True)
        self.addCleanup(reset)
        pg.psql("select pg_reload_conf()", db="postgres", via_socket=True)
        hz.wait_until(lambda: pg.psql("show lc_messages", db="postgres", via_socket=True)
                      == "de_DE.UTF-8")
        self.refused_by(pg, "3D000", pg.conn_string("pgwharf_no_such_db", user=pg.app_user,
                                                    password=pg.app_password))
        self.refused_by(pg, "28P01", pg.conn_string(pg.database, user=pg.app_user,
                                                    password="wrong"))
        # A database's and a role's CONNECTION LIMIT (53300, as the
        # server-wide max_connections): told apart by English text, so in
        # German they opened the breaker too.
        for obj, name in (("database", pg.database2), ("role", pg.app_user)):
            with self.subTest(limit=obj):
                pg.psql("alter %s %s connection limit 0" % (obj, name), db="postgres",
                        via_socket=True)
                try:
                    self.refused_by(pg, "53300")
                finally:
                    pg.psql("alter %s %s connection limit -1" % (obj, name), db="postgres",
                            via_socket=True)

    def test_an_entrys_own_libpq_settings_are_the_pools_refusal_not_the_backends(self):
        # channel_binding=require against a server without TLS, or a
        # service= pg_service.conf lacks: libpq refuses for that entry's
        # settings alone.  Counted as the backend's failures they opened
        # its breaker, and every other pool on it got that entry's error.
        pg = self.pg
        self.refused_by(pg, "08001", pg.conn_string(pg.database, user=pg.app_user,
                                                    password=pg.app_password,
                                                    channel_binding="require"))
        self.refused_by(pg, "F0000", pg.conn_string(pg.database, user=pg.app_user,
                                                    password=pg.app_password,
                                                    service="pgwharf_no_such_service"))

    def refused_by(self, pg, sqlstate, refused=None):
        px = self.start_pgwharf(
            settings={"pool_mode": "transaction", "breaker_threshold": 2,
                      "breaker_cooldown": "30s", "server_login_retry": "30s"},
            databases={"refused": refused or pg.conn_string(pg.database2, user=pg.app_user,
                                                            password=pg.app_password),
                       pg.database: pg.conn_string(pg.database)})
        for _ in range(3):
            self.assertEqual(self.client_query(px, "select 1", db="refused"),
                             ("err", sqlstate))
        self.assertEqual([r["state"] for r in px.show("BREAKERS")], ["closed"])
        # The superuser's pool on the same backend is served.
        with socket.create_connection((px.host, px.port), timeout=20) as s:
            hz.sync_login(s, pg.user, pg.database, pg.password)
            rows, errs = hz.simple_query(s, "select 'other'")
        self.assertEqual(errs, [], px.log_tail())
        self.assertEqual(rows[-1][0].decode(), "other")
        px.stop()

    def test_a_refused_login_leaves_the_clients_a_server_being_checked_will_serve(self):
        # The pool's one server is in its server_check_query (held at a
        # gate) when a new login is refused (the role's password changed):
        # that server comes back, as a lent one would, so the clients
        # waiting (and those coming meanwhile) wait for it.  They got the
        # refusal at once, with a server about to be free.
        pg = self.pg
        gate = hz.Gate(pg, 7061)
        self.addCleanup(gate.close)
        gate.open()                                 # held again below
        px = self.start_pgwharf(
            settings={"pool_mode": "transaction", "default_pool_size": 2,
                      "server_login_retry": "30s", "query_wait_timeout": "20s",
                      "server_check_delay": 0,
                      "server_check_query": "select %s" % gate.sql()},
            databases={pg.database: pg.conn_string(pg.database, user=pg.app_user,
                                                   password=pg.app_password)})
        self.assertEqual(self.client_query(px, "select 'first'"), ("ok", "first"))
        gate = hz.Gate(pg, 7061)                    # the next check waits
        self.addCleanup(gate.close)
        self.change_app_password(pg)
        con = self.console_conn(px)
        results = {}

        def ask(k):
            results[k] = self.client_query(px, "select 'q%d'" % k)

        threads = [threading.Thread(target=ask, args=(0,))]
        threads[0].start()
        pg.wait_running("select %s" % gate.sql(), lock_wait=True)  # its check
        threads.append(threading.Thread(target=ask, args=(1,)))
        threads[1].start()                          # needs a new server: refused
        px.wait_for_log(r"event=server_connect_failed [^\n]*password authentication failed")
        threads.append(threading.Thread(target=ask, args=(2,)))
        threads[2].start()
        pt.wait_until(lambda: results or pt.pool_row(con, pg.database,
                                                     pg.app_user)["cl_waiting"] == 3,
                      timeout=10, what="three clients waiting")
        self.assertEqual(results, {})
        gate.open()
        for t in threads:
            t.join(30)
        self.assertEqual(results, {k: ("ok", "q%d" % k) for k in range(3)}, px.log_tail())

    def test_waiters_get_the_refusal_once_no_server_will_come_back(self):
        # A client waits for the pool's one lent server, a new login having
        # been refused (the role's password changed, server_login_retry
        # 30 s).  When that server closes (its client left mid-transaction)
        # nothing will serve the waiter before the retry: it gets the
        # refusal then, as a client coming now does, not 57014 at
        # query_wait_timeout.
        pg = self.pg
        px = self.start_pgwharf(
            settings={"pool_mode": "transaction", "default_pool_size": 2,
                      "server_login_retry": "30s", "query_wait_timeout": "5s"},
            databases={pg.database: pg.conn_string(pg.database, user=pg.app_user,
                                                   password=pg.app_password)})
        holder = socket.create_connection((px.host, px.port), timeout=20)
        self.addCleanup(holder.close)
        hz.sync_login(holder, pg.app_user, pg.database, pg.app_password)
        self.assertEqual(hz.simple_query(holder, "begin")[1], [])
        self.change_app_password(pg)
        con = self.console_conn(px)
        result = {}
        t = threading.Thread(target=lambda: result.update(r=self.client_query(px, "select 1")))
        t.start()
        px.wait_for_log(r"event=server_connect_failed [^\n]*password authentication failed")
        pt.wait_pool(con, pg.database, pg.app_user, cl_waiting=1)
        self.assertEqual(result, {})
        holder.close()                              # its server closes
        t.join(30)
        self.assertEqual(result.get("r"), ("err", "28P01"), px.log_tail())

    def test_reload_fixing_the_server_password_ends_the_refusal(self):
        # The pool was refused with the old password; after RELOAD with the
        # right one, the old refusal must not answer clients for the rest
        # of server_login_retry.
        px = self.start_pgwharf(
            settings={"pool_mode": "transaction", "server_login_retry": "30s"},
            databases={self.pg.database: self.pg.conn_string(
                self.pg.database, user=self.pg.app_user, password="wrong-password")})
        self.assertEqual(self.client_query(px, "select 1"), ("err", "28P01"))
        self.assertEqual(self.client_query(px, "select 1"), ("err", "28P01"))
        px.databases[self.pg.database] = self.pg.conn_string(
            self.pg.database, user=self.pg.app_user, password=self.pg.app_password)
        mark = px.log().count("event=reload ")
        px.reload()
        hz.wait_until(lambda: px.log().count("event=reload ") > mark, 10, what="reload")
        self.assertEqual(self.client_query(px, "select 'fixed'"), ("ok", "fixed"),
                         px.log_tail())

@unittest.skipIf(psycopg2 is None, "psycopg2 is not installed")
class TestServerCheck(pt.PgwharfTestCase):
    """server_check_query runs on an idle server due for it (idle longer
    than server_check_delay; any reused one with 0) before it is lent
    (found by a review of pool/)."""

    def states(self, con):
        return [r["state"] for r in pt.show(con, "SERVERS", database=self.pg.database)]

    def start_checked(self, key, pool_size, delay):
        """pgwharf whose server_check_query waits at gate key while it is
        held (open now): (px, its console)."""
        gate = hz.Gate(self.pg, key)
        self.addCleanup(gate.close)
        gate.open()
        px = self.start_pgwharf(settings={
            "pool_mode": "transaction", "default_pool_size": pool_size,
            "server_check_delay": delay, "server_check_query": "select %s" % gate.sql(),
            "query_wait_timeout": "20s"})
        return px, self.console_conn(px)

    def hold(self, key):
        gate = hz.Gate(self.pg, key)
        self.addCleanup(gate.close)
        return gate

    def test_a_check_whose_client_left_is_trusted_only_for_the_delay(self):
        # The client the check ran for stopped waiting (a cancel, or
        # query_wait_timeout) before it ended: the server was then
        # "checked" until its next lend, never due again however long it
        # stayed idle.
        px, con = self.start_checked(7071, 1, 1)
        self.assertEqual(px.psql("select 1"), "1")
        pt.wait_until(lambda: self.states(con) == ["used"], what="the idle server due a check")
        gate = self.hold(7071)                          # the check waits
        s = socket.create_connection((px.host, px.port), timeout=20)
        self.addCleanup(s.close)
        keys = []
        hz.sync_login(s, self.pg.user, self.pg.database, self.pg.password, key_data=keys)
        s.sendall(hz.query_msg("select 'never'"))
        self.pg.wait_running("select %s" % gate.sql(), lock_wait=True)
        with socket.create_connection((px.host, px.port), timeout=20) as c:
            c.sendall(struct.pack("!IIII", 16, 80877102, keys[0][0], keys[0][1]))
        got = hz.read_until_ready(s)                    # it waits no more
        self.assertEqual([hz.parse_fields(b)["C"] for t, b in got if t == b"E"], ["57014"])
        gate.open()
        pt.wait_until(lambda: self.states(con) == ["idle"], what="the check over")
        gate = self.hold(7071)
        pt.wait_until(lambda: self.states(con) == ["used"], timeout=10,
                      what="the checked server due again after server_check_delay")
        c = self.db_conn(px)
        bg = pt.Background(lambda: pt.one(c, "select 'checked first'"))
        self.pg.wait_running("select %s" % gate.sql(), lock_wait=True)   # its check
        self.assertTrue(bg.is_alive())
        gate.open()
        bg.join(20)
        self.assertEqual((bg.error, bg.result), (None, "checked first"))

    def test_a_stuck_check_leaves_its_waiter_the_pools_room_past_a_turn(self):
        # The pool's one server, reused, is checked (server_check_delay 0)
        # for a client, and the check gets no answer (it waits at the
        # gate: a backend that hangs, a frozen host).  The pool has room
        # for another server, but the check counted as a server on its way
        # to the client until server_connect_timeout (60 s here; for ever
        # with 0): the client waited out query_wait_timeout.  A check (or
        # reset) sent a turn ago and more covers no waiter now, as a login
        # stuck that long: a login starts for the client.
        gate = hz.Gate(self.pg, 7076)
        self.addCleanup(gate.close)
        gate.open()
        px = self.start_pgwharf(settings={
            "pool_mode": "transaction", "default_pool_size": 2,
            "server_check_delay": 0, "server_check_query": "select %s" % gate.sql(),
            "query_wait_timeout": "10s", "server_connect_timeout": "60s"})
        con = self.console_conn(px)
        self.assertEqual(px.psql("select 1"), "1")
        pt.wait_until(lambda: self.states(con) == ["used"], what="the reused server idle")
        gate = self.hold(7076)                          # the next check waits
        c = self.db_conn(px)
        bg = pt.Background(lambda: pt.one(c, "select 'served'"))
        self.pg.wait_running("select %s" % gate.sql(), lock_wait=True)   # its check
        bg.join(30)
        self.assertEqual((bg.error, bg.result), (None, "served"), px.log_tail())
        self.assertEqual(self.pg.queries_running("select %s" % gate.sql(), lock_wait=True), 1,
                         "the check no longer waits: the client was not served past it")
        gate.open()
        # (the checked one idle, the new one reused: due a check)
        pt.wait_until(lambda: sorted(self.states(con)) == ["idle", "used"],
                      what="the check over, the new server back")

    def test_one_check_for_one_waiter(self):
        # Three reused servers, all due (server_check_delay 0), and one
        # client: every idle server was checked for it.
        px, con = self.start_checked(7072, 3, 0)
        holders = [self.db_conn(px, autocommit=False) for _ in range(3)]
        for h in holders:
            pt.one(h, "select 1")                       # three servers at once
        for h in holders:
            h.commit()
        pt.wait_until(lambda: sorted(self.states(con)) == ["used"] * 3,
                      what="three reused servers due a check")
        gate = self.hold(7072)
        c = self.db_conn(px)
        bg = pt.Background(lambda: pt.one(c, "select 'served'"))
        self.pg.wait_running("select %s" % gate.sql(), lock_wait=True)
        # Each pass over the pool (the tick every second, a reload: here)
        # checked one more for the same waiter.
        con.cursor().execute("RELOAD")
        self.assertEqual(pt.pool_row(con, self.pg.database, self.pg.user)["sv_tested"], 1)
        self.assertEqual(sorted(self.states(con)), ["tested", "used", "used"])
        gate.open()
        bg.join(20)
        self.assertIsNone(bg.error)
        self.assertEqual(bg.result, "served")
        for h in holders:
            h.close()


class TestBreakerAndFullPool(pt.PgwharfTestCase):
    """An open breaker concerns the pools that need a new connection: not
    the clients waiting for a busy pool (at its full size or below it) to
    give a server back (README: The circuit breaker), nor a paused pool;
    and its probe keeps to the pool's limits."""

    def forwarder(self):
        """The backend both entries of a test share (hz.Forwarder): its new
        connections fail once refuse() is called, as a server dying at
        every login, while those it forwards already go on."""
        fwd = hz.Forwarder(self.pg)
        self.addCleanup(fwd.close)
        return fwd

    def open_the_breaker(self, px, fwd, db="down", **dsn):
        """New connections to the backend fail: two clients of entry db
        get an error, and the breaker (threshold 2) is open."""
        fwd.refuse()
        for _ in range(2):
            with self.assertRaises(psycopg2.OperationalError):
                psycopg2.connect(px.dsn(db=db, **dsn)).close()
        self.assertEqual([r["state"] for r in px.show("BREAKERS")], ["open"])

    def start_one_server_pool(self, query_wait_timeout):
        """A pgwharf whose pool of one server shares its backend (a
        forwarder) with the entry "down", whose connects open the breaker
        once the forwarder refuses new connections."""
        pg = self.pg
        fwd = self.forwarder()
        px = self.start_pgwharf(
            settings={"pool_mode": "transaction", "default_pool_size": 1,
                      "breaker_threshold": 2, "breaker_cooldown": "30s",
                      "query_wait_timeout": query_wait_timeout},
            databases={"down": fwd.conn_string(pg),
                       pg.database: fwd.conn_string(pg)})
        return px, self.console_conn(px), fwd

    def wait_then_open_the_breaker(self, px, con, fwd):
        """A client waiting for the pool's one server (lent out), then the
        breaker opened by "down": the waiter's Background, still waiting."""
        pg = self.pg
        waiter = self.db_conn(px)
        bg = pt.Background(lambda: pt.one(waiter, "select 'waited'"))
        pt.wait_pool(con, pg.database, pg.user, cl_waiting=1)
        self.open_the_breaker(px, fwd)
        # The pool's one server is still lent; the waiter waits for it.
        self.assertEqual(pt.pool_row(con, pg.database, pg.user)["cl_waiting"], 1)
        return bg

    def test_the_probe_does_not_go_through_a_pool_waiting_out_its_login_retry(self):
        # The breaker's probe went through the first pool with room, one
        # whose login the server had refused too: its refusal again, and
        # that pool's server_login_retry restarted.
        pg = self.pg
        fwd = self.forwarder()
        px = self.start_pgwharf(
            settings={"pool_mode": "transaction", "breaker_threshold": 1,
                      "breaker_cooldown": "1s", "server_login_retry": "30s"},
            databases={"bad": fwd.conn_string(pg, db="pgwharf_no_such_db"),
                       "down": fwd.conn_string(pg)})
        with self.assertRaises(psycopg2.OperationalError):
            psycopg2.connect(px.dsn(db="bad")).close()
        px.wait_for_log(r"event=server_connect_failed [^\n]*db=bad")
        refused = px.log().count("event=server_connect_failed")
        fwd.refuse()
        with self.assertRaises(psycopg2.OperationalError):
            psycopg2.connect(px.dsn(db="down")).close()
        self.assertEqual([r["state"] for r in px.show("BREAKERS")], ["open"])
        refused = px.log().count("event=server_connect_failed")
        fwd.forward()
        pt.wait_until(lambda: [r["state"] for r in px.show("BREAKERS")] == ["closed"],
                      timeout=20, what="the probe closing the breaker")
        self.assertEqual(px.log().count("event=server_connect_failed"), refused, px.log_tail())
        self.assertEqual(pt.one(self.db_conn(px, db="down"), "select 'up'"), "up")

    def test_waiter_of_a_full_pool_outlives_a_breaker_opened_by_another_pool(self):
        px, con, fwd = self.start_one_server_pool("20s")
        holder = self.db_conn(px, autocommit=False)
        self.assertEqual(pt.one(holder, "select 'held'"), "held")
        bg = self.wait_then_open_the_breaker(px, con, fwd)
        holder.commit()
        bg.join(20)
        self.assertFalse(bg.is_alive())
        self.assertIsNone(bg.error, px.log_tail())
        self.assertEqual(bg.result, "waited")

    def test_waiters_of_a_pool_below_its_size_wait_for_its_lent_server(self):
        # Pool of two, one server lent (a client in a transaction), and
        # the second login fails until the breaker opens.  Both the client
        # queued then and one coming while it is open got the breaker's
        # error at once (hunt), where PgBouncer queues them for the lent
        # server: they wait for it now, under query_wait_timeout.  A pool
        # with no server at all still fails fast.
        pg = self.pg
        fwd = self.forwarder()
        px = self.start_pgwharf(
            settings={"pool_mode": "transaction", "default_pool_size": 2,
                      "breaker_threshold": 2, "breaker_cooldown": "30s",
                      "query_wait_timeout": "20s"},
            databases={pg.database: fwd.conn_string(pg), "down": fwd.conn_string(pg)})
        con = self.console_conn(px)
        holder = self.db_conn(px, autocommit=False)
        self.assertEqual(pt.one(holder, "select 'held'"), "held")
        first, second = self.db_conn(px), self.db_conn(px)
        fwd.refuse()
        bg1 = pt.Background(lambda: pt.one(first, "select 'first'"))
        pt.wait_until(lambda: [r["state"] for r in px.show("BREAKERS")] == ["open"],
                      timeout=20, what="the breaker opened by the pool's own logins")
        self.assertIsNone(bg1.error, px.log_tail())
        self.assertEqual(pt.pool_row(con, pg.database, pg.user)["cl_waiting"], 1)
        bg2 = pt.Background(lambda: pt.one(second, "select 'second'"))
        pt.wait_pool(con, pg.database, pg.user, cl_waiting=2)
        # No server to come back: the breaker's error at once.
        with self.assertRaises(psycopg2.OperationalError) as cm:
            psycopg2.connect(px.dsn(db="down")).close()
        self.assertIn("server connection failed", str(cm.exception))
        self.assertEqual(pt.pool_row(con, pg.database, pg.user)["cl_waiting"], 2)
        holder.commit()
        for bg, want in ((bg1, "first"), (bg2, "second")):
            bg.join(20)
            self.assertFalse(bg.is_alive())
            self.assertIsNone(bg.error, px.log_tail())
            self.assertEqual(bg.result, want)
        self.assertEqual([r["state"] for r in px.show("BREAKERS")], ["open"])

    def test_waiter_gets_the_breaker_error_once_the_lent_server_closes(self):
        # As above, but the lent server closes (its client left
        # mid-transaction) instead of coming back: no server can serve the
        # waiter before the breaker lets a connection through (cooldown
        # 30 s), so it gets the breaker's error then, not 57014 at
        # query_wait_timeout.
        pg = self.pg
        px, con, fwd = self.start_one_server_pool("5s")
        holder = socket.create_connection((px.host, px.port), timeout=20)
        self.addCleanup(holder.close)
        hz.sync_login(holder, pg.user, pg.database, pg.password)
        self.assertEqual(hz.simple_query(holder, "begin")[1], [])
        bg = self.wait_then_open_the_breaker(px, con, fwd)
        holder.close()                              # its server closes
        bg.join(20)
        self.assertFalse(bg.is_alive())
        self.assertIsInstance(bg.error, psycopg2.Error)
        # The breaker's error: the backend's last failure (the forwarder
        # closing a new connection at once, 08006).
        self.assertEqual(bg.error.pgcode, "08006", str(bg.error))
        self.assertIn("server closed the connection unexpectedly", str(bg.error))

    def test_a_listening_server_is_no_server_to_wait_for(self):
        # The LISTEN hub's server (transaction mode) is lent for good: with
        # it the pool's only server and the breaker open, a client waited
        # out query_wait_timeout for it to come back (57014 after 20 s,
        # review of the change above) where it got the breaker's error at
        # once before: the held server is no server to wait for.
        pg = self.pg
        fwd = self.forwarder()
        px = self.start_pgwharf(
            settings={"pool_mode": "transaction", "default_pool_size": 4,
                      "breaker_threshold": 2, "breaker_cooldown": "30s",
                      "server_idle_timeout": "1s", "query_wait_timeout": "20s"},
            databases={pg.database: fwd.conn_string(pg), "down": fwd.conn_string(pg)})
        con = self.console_conn(px)
        listener = self.db_conn(px)
        listener.cursor().execute("LISTEN pgw_held")
        # the hub's server alone left (the idle one closes)
        pt.wait_pool(con, pg.database, pg.user, sv_active=1, sv_idle=0, sv_used=0)
        self.open_the_breaker(px, fwd)

        def ask():
            c = psycopg2.connect(px.dsn())
            try:
                c.autocommit = True
                return pt.one(c, "select 1")
            finally:
                c.close()

        with self.assertRaises(psycopg2.Error) as cm:
            ask()
        self.assertNotIn("query_wait_timeout", str(cm.exception))
        self.assertIn("server closed the connection unexpectedly", str(cm.exception))
        self.assertEqual(pt.pool_row(con, pg.database, pg.user)["cl_waiting"], 0)

    def test_a_session_waiter_times_out_with_the_breakers_reason(self):
        # Session mode: the pool's one server is another client's for its
        # session, the breaker open.  A client waits query_wait_timeout
        # for it (the session may end, as in PgBouncer), then got a bare
        # 57014 "query_wait_timeout", where transaction mode's client of a
        # pool whose server is held for good is told the breaker's reason
        # (test_a_listening_server_is_no_server_to_wait_for): the
        # backend's last failure, 08006.  Now the 57014 says it too.
        pg = self.pg
        fwd = self.forwarder()
        px = self.start_pgwharf(
            settings={"pool_mode": "session", "default_pool_size": 1,
                      "breaker_threshold": 2, "breaker_cooldown": "30s",
                      "query_wait_timeout": "1s"},
            databases={"down": fwd.conn_string(pg), pg.database: fwd.conn_string(pg)})
        holder = self.db_conn(px)
        self.assertEqual(pt.one(holder, "select 'held'"), "held")
        welcomed = self.db_conn(px)          # welcomed without a server
        self.open_the_breaker(px, fwd)

        def login_and_ask():
            c = psycopg2.connect(px.dsn())   # (its login waits for the server)
            self.addCleanup(c.close)
            return pt.one(c, "select 1")

        for name, ask in (("query", lambda: pt.one(welcomed, "select 1")),
                          ("login", login_and_ask)):
            with self.subTest(waiting=name):
                with self.assertRaises(psycopg2.Error) as cm:
                    ask()
                self.assertIn("query_wait_timeout", str(cm.exception))
                self.assertIn("circuit breaker open (08006 ", str(cm.exception))
                self.assertIn("server closed the connection unexpectedly", str(cm.exception))
                if name == "query":
                    self.assertEqual(cm.exception.pgcode, "57014", str(cm.exception))
        self.assertEqual(pt.one(holder, "select 'still held'"), "still held")

    def test_the_maintenance_probe_opens_no_server_in_a_paused_pool(self):
        # PAUSE promises no server on its database until RESUME (a
        # restart, a dump/restore may be under way).  The once-a-second
        # probe of an open breaker took the first pool on the backend with
        # room, paused or not, and logged a server in there.
        pg = self.pg
        fwd = self.forwarder()
        px = self.start_pgwharf(
            settings={"pool_mode": "transaction", "breaker_threshold": 2,
                      "breaker_cooldown": "0.5s", "breaker_max_cooldown": "0.5s"},
            databases={pg.database: fwd.conn_string(pg),
                       "down": fwd.conn_string(pg)})
        self.assertEqual(px.psql("select 1"), "1")     # its pool comes first
        px.admin("PAUSE %s" % pg.database)
        self.assertEqual(px.show("SERVERS", database=pg.database), [])
        mark = len(px.log())
        self.open_the_breaker(px, fwd)
        fwd.forward()             # a probe would log in now
        # No client asks: the tick probes, and the probe ends.
        pt.wait_until(lambda: re.search(r"event=breaker_open [\s\S]*event=breaker_half_open "
                                        r"[\s\S]*event=(breaker_open|breaker_closed) ",
                                        px.log()[mark:]),
                      timeout=15, what="a probe started by the tick, and its end")
        self.assertEqual(px.show("SERVERS", database=pg.database), [], px.log()[mark:])

    def test_the_maintenance_probe_keeps_to_max_user_connections(self):
        # The tick's probe went through the first pool on the backend
        # under its pool_size, past its user's max_user_connections (or
        # its database's max_db_connections).
        pg = self.pg
        fwd = self.forwarder()
        px = self.start_pgwharf(
            settings={"pool_mode": "transaction", "breaker_threshold": 2,
                      "breaker_cooldown": "0.5s", "breaker_max_cooldown": "0.5s",
                      "max_user_connections": 1},
            databases={pg.database: fwd.conn_string(pg),
                       "down": fwd.conn_string(pg, user=pg.app_user,
                                               password=pg.app_password)})
        holder = self.db_conn(px, autocommit=False)      # its pool comes first
        self.assertEqual(pt.one(holder, "select 'held'"), "held")
        mark = len(px.log())
        self.open_the_breaker(px, fwd, user=pg.app_user, password=pg.app_password)
        fwd.forward()             # a probe would log in now
        pt.wait_until(lambda: re.search(r"event=breaker_open [\s\S]*event=breaker_half_open "
                                        r"[\s\S]*event=(breaker_open|breaker_closed) ",
                                        px.log()[mark:]),
                      timeout=15, what="a probe started by the tick, and its end")
        self.assertEqual(len(px.show("SERVERS", user=pg.user)), 1, px.log()[mark:])
        holder.commit()


class SideClusterCase(pt.PgwharfTestCase):
    """Tests on a cluster of their own (test_hosts' SideClusters, on a
    unix socket, cls.sock), started once for the class with CONF;
    side_ready() for what the class sets up on it."""

    NAME = CONF = None

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        from test_hosts import SideClusters
        cls.side = SideClusters(cls.pg)
        try:
            cls.sock = cls.side.start("primary", cls.NAME, conf=cls.CONF)
            cls.side_ready()
        except Exception:
            cls.side.close()
            raise

    @classmethod
    def side_ready(cls):
        pass

    @classmethod
    def tearDownClass(cls):
        cls.side.close()
        super().tearDownClass()


class TestMaxConnectionsUsedUp(SideClusterCase):
    """A real server-wide refusal: max_connections = 2, one taken by a
    pgwharf server, the other by a direct connection, so the pool's
    second login gets FATAL 53300 "sorry, too many clients already",
    which counts toward the breaker."""

    NAME = "full"
    CONF = "max_connections = 2\nsuperuser_reserved_connections = 0\n"
    LOCK = 7211

    def test_a_waiter_is_served_by_the_pools_busy_server(self):
        # Pool of two, its one server busy (blocked on an advisory lock
        # the direct connection holds).  The breaker opened on the 53300s
        # of the second login, and the queued client got that 53300 at
        # once (hunt), though the busy server came back a moment later:
        # PgBouncer queues it for that server.  A pool of the same backend
        # with no server still gets the 53300 at once.
        pg = self.pg
        entry = "host=%s port=%d dbname=%s" % (self.sock, pg.port, pg.database)
        px = self.start_pgwharf(
            settings={"pool_mode": "transaction", "default_pool_size": 2,
                      "breaker_threshold": 2, "breaker_cooldown": "30s",
                      "query_wait_timeout": "20s"},
            databases={"full": entry, "other": entry})
        con = self.console_conn(px)
        holder = self.db_conn(px, db="full")
        self.assertEqual(pt.one(holder, "select 'up'"), "up")       # the pool's server
        waiter = self.db_conn(px, db="full")
        direct = psycopg2.connect(host=self.sock, port=pg.port, user=pg.user,
                                  dbname=pg.database)             # the last slot
        direct.autocommit = True
        self.addCleanup(direct.close)
        pt.one(direct, "select pg_advisory_lock(%d)" % self.LOCK)
        held = pt.Background(lambda: pt.one(
            holder, "select pg_advisory_xact_lock(%d)::text || 'held'" % self.LOCK))
        pt.wait_until(lambda: pt.one(direct, "select count(*) from pg_stat_activity "
                                             "where wait_event_type = 'Lock'") == 1,
                      timeout=20, what="the pool's server waiting for the lock")
        bg = pt.Background(lambda: pt.one(waiter, "select 'waited'"))
        pt.wait_until(lambda: [r["state"] for r in px.show("BREAKERS")] == ["open"],
                      timeout=20, what="the breaker opened by 53300")
        self.assertIn("too many clients already", px.log())
        self.assertEqual(pt.pool_row(con, "full", pg.user)["cl_waiting"], 1, px.log_tail())
        with self.assertRaises(psycopg2.OperationalError) as cm:
            psycopg2.connect(px.dsn(db="other")).close()
        self.assertIn("too many clients already", str(cm.exception))
        pt.one(direct, "select pg_advisory_unlock(%d)" % self.LOCK)
        for b, want in ((held, "held"), (bg, "waited")):
            b.join(20)
            self.assertFalse(b.is_alive())
            self.assertIsNone(b.error, px.log_tail())
            self.assertEqual(b.result, want)
        # libpq's cancel data read for servers on a Unix socket too (its
        # address there is the whole sockaddr_un, getpeername's the path)
        self.assertNotIn("server_no_cancel", px.log())


    def test_too_many_clients_is_told_in_the_servers_language(self):
        # With lc_messages de_DE, "sorry, too many clients already" (53300
        # from InitProcess, in the server's language before the login
        # takes the client's) reached clients as 08006: the breaker's
        # error took its SQLSTATE from a guess at the English text, not
        # from the one libpq's verbose message carries.
        pg = self.pg
        set_lc_messages(self, self.sock, "de_DE.UTF-8")
        directs = []
        for _ in range(2):                                  # every slot
            c = psycopg2.connect(host=self.sock, port=pg.port, user=pg.user,
                                 dbname=pg.database)
            self.addCleanup(c.close)
            directs.append(c)
        entry = "host=%s port=%d dbname=%s" % (self.sock, pg.port, pg.database)
        px = self.start_pgwharf(
            settings={"pool_mode": "transaction", "breaker_threshold": 1,
                      "breaker_cooldown": "30s", "breaker_max_cooldown": "30s"},
            databases={"full": entry})
        for what in ("the refused login", "the breaker open"):
            with socket.create_connection((px.host, px.port), timeout=30) as s:
                with self.assertRaises(hz.PgError) as cm:
                    hz.sync_login(s, pg.user, "full", pg.password)
            self.assertEqual(cm.exception.sqlstate, "53300",
                             "%s: %s\n%s" % (what, cm.exception.fields, px.log_tail()))
        self.assertNotIn("too many clients already", px.log())     # German, not English
        self.assertIn("sqlstate=53300", px.log())
        self.assertEqual([r["state"] for r in px.show("BREAKERS")], ["open"])


def set_lc_messages(case, sock, value):
    """ALTER SYSTEM SET lc_messages on the side cluster at sock, reset at
    the test's end; skips where the locale is missing."""
    pg = case.pg

    def connect():
        # A test's own connections may have just closed (its cleanups run
        # before this one): their backends free their slots as they exit.
        got = []

        def attempt():
            try:
                got.append(psycopg2.connect(host=sock, port=pg.port, user=pg.user,
                                            dbname=pg.database))
                return True
            except psycopg2.OperationalError as e:
                if "too many" not in str(e) and "zu viele" not in str(e):
                    raise                            # 53300, English or German
                return False
        hz.wait_until(attempt, what="a free connection slot on the side cluster")
        return got[0]

    def run(*sqls):
        c = connect()
        try:
            c.autocommit = True
            for sql in sqls:
                c.cursor().execute(sql)
            return pt.one(c, "show lc_messages")
        finally:
            c.close()
    try:
        run("alter system set lc_messages = '%s'" % value)
    except psycopg2.Error as e:   # no such locale here (scripts/deps.sh makes it)
        case.skipTest("no %s locale: %s" % (value, e))
    case.addCleanup(run, "alter system reset lc_messages", "select pg_reload_conf()")
    run("select pg_reload_conf()")
    hz.wait_until(lambda: run() == value)


class TestReservedSlotsUsedUp(SideClusterCase):
    """PostgreSQL's reserved slots: max_connections = 2 and
    superuser_reserved_connections = 1, its one ordinary slot taken by a
    direct connection of role app, so an ordinary login gets FATAL 53300
    "remaining connection slots are reserved for non-replication
    superuser connections" and a superuser's gets in."""

    NAME = "reserved"
    CONF = "max_connections = 2\nsuperuser_reserved_connections = 1\n"

    @classmethod
    def side_ready(cls):
        admin = psycopg2.connect(host=cls.sock, port=cls.pg.port, user=cls.pg.user,
                                 dbname=cls.pg.database)
        admin.autocommit = True
        try:
            admin.cursor().execute("create role %s login" % cls.pg.app_user)
        finally:
            admin.close()

    def test_ordinary_refusals_leave_the_reserved_slots_to_a_superuser(self):
        # Ordinary logins refused for the reserved slots opened the
        # backend's breaker (three in a row, breaker_threshold 2), and the
        # superuser -- the DBA come to end the exhaustion -- was refused
        # 53300 at once, where PostgreSQL and PgBouncer let it in (hunt).
        # The refusal is that pool's (server_login_retry), not the
        # backend's failure.
        self.reserved_slots_refused("remaining connection slots are reserved")

    def test_reserved_slots_are_told_in_the_servers_language(self):
        # The same with lc_messages de_DE: told by the routine that raised
        # the 53300 (InitPostgres), not by English text.
        admin = psycopg2.connect(host=self.sock, port=self.pg.port, user=self.pg.user,
                                 dbname=self.pg.database)
        admin.autocommit = True
        try:
            cur = admin.cursor()
            try:
                cur.execute("alter system set lc_messages = 'de_DE.UTF-8'")
            except psycopg2.Error as e:   # no such locale here (scripts/deps.sh makes it)
                self.skipTest("no de_DE.UTF-8 locale: %s" % e)
            cur.execute("select pg_reload_conf()")
            hz.wait_until(lambda: pt.one(admin, "show lc_messages") == "de_DE.UTF-8")
        finally:
            admin.close()

        def connect():
            # The test's own backends (pgwharf's server, the direct one)
            # may not have left yet: max_connections is 2.
            try:
                return psycopg2.connect(host=self.sock, port=self.pg.port,
                                        user=self.pg.user, dbname=self.pg.database)
            except psycopg2.OperationalError as e:
                if "zu viele" in str(e) or "too many clients" in str(e):
                    return None
                raise

        def reset():
            c = pt.wait_until(connect, what="a free connection slot")
            try:
                c.autocommit = True
                c.cursor().execute("alter system reset lc_messages")
                c.cursor().execute("select pg_reload_conf()")
            finally:
                c.close()
        self.addCleanup(reset)
        self.reserved_slots_refused("53300")

    def reserved_slots_refused(self, says):
        """Ordinary logins through pgwharf refused for the reserved slots
        (the client's error has says, the log line the SQLSTATE) leave the
        breaker closed, and the superuser gets in."""
        pg = self.pg
        entry = "host=%s port=%d dbname=%s" % (self.sock, pg.port, pg.database)
        px = self.start_pgwharf(
            settings={"pool_mode": "transaction", "default_pool_size": 2,
                      "breaker_threshold": 2, "breaker_cooldown": "30s"},
            databases={"reserved": entry})
        direct = psycopg2.connect(host=self.sock, port=pg.port, user=pg.app_user,
                                  dbname=pg.database)             # the ordinary slot
        self.addCleanup(direct.close)
        for _ in range(3):
            with self.assertRaises(psycopg2.OperationalError) as cm:
                psycopg2.connect(px.dsn(db="reserved", user=pg.app_user,
                                        password=pg.app_password)).close()
            self.assertIn(says, str(cm.exception) + px.log())
        self.assertIn("sqlstate=53300", px.log())
        self.assertEqual([r["state"] for r in px.show("BREAKERS")], ["closed"], px.log_tail())
        su = self.db_conn(px, db="reserved")
        self.assertEqual(pt.one(su, "select current_user"), pg.user)

if __name__ == "__main__":
    unittest.main()
