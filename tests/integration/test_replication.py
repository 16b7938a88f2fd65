"""Replication connections through pgwharf (the startup parameter
replication, as PgBouncer 1.23+): pg_basebackup, pg_receivewal, a logical
stream with psycopg2's LogicalReplicationConnection and test_decoding.

Each replication client gets a server of its own, made with its mode and
application_name, closed when it leaves, whatever the pool_mode; SHOW
CLIENTS / SERVERS say physical or logical.  A refusal by the server (no
REPLICATION privilege) goes to that client and opens no breaker; a bad
value is 22023; auth_type=hba matches physical connections to the
replication keyword only.  A client waiting for its server (PAUSE) is
a waiting client of its pool (SHOW CLIENTS, cl_waiting, maxwait); the
pool's own refused logins leave it alone; on a host list every host gets
one attempt (more than 64 too), and a list whose every host the pool
skips for target_session_attrs refuses it at once.  Needs
wal_level=logical (tests/pgcluster.sh).
"""

import os
import select
import shutil
import subprocess
import tempfile
import time
import unittest

import psycopg2
import psycopg2.extras

import pgw_hardening as hz
import pgwharf_test as pt

one = pt.one
TX = {"pool_mode": "transaction", "default_pool_size": 1}


class ReplicationCase(pt.PgwharfTestCase):
    """Physical clients (pg_basebackup, pg_receivewal, psycopg2's
    PhysicalReplicationConnection) always ask for the database
    "replication": an entry of that name leads them to the cluster."""

    def start_pgwharf(self, start=True, **kw):
        dbs = {db: self.pg.conn_string(db)
               for db in (self.pg.database, self.pg.database2, "postgres")}
        dbs["replication"] = self.pg.conn_string(self.pg.database)
        kw.setdefault("databases", dbs)
        return super().start_pgwharf(start=start, **kw)

    def setUp(self):
        super().setUp()
        self.assertEqual(one(self.direct(), "show wal_level"), "logical",
                         "the test cluster needs wal_level=logical (tests/pgcluster.sh)")

    def direct(self):
        if not hasattr(self, "_direct"):
            self._direct = psycopg2.connect(self.pg.dsn())
            self._direct.autocommit = True
            self.addCleanup(self._direct.close)
        return self._direct

    def scratch(self):
        d = tempfile.mkdtemp(prefix="pgwharf-repl-")
        self.addCleanup(shutil.rmtree, d, True)
        return d

    def tool_env(self, password=None):
        e = dict(os.environ)
        e["PGPASSWORD"] = password or self.pg.password
        return e

    def walsenders(self, app=None):
        sql = "select count(*) from pg_stat_activity where backend_type = 'walsender'"
        if app is not None:
            return one(self.direct(), sql + " and application_name = %s", (app,))
        return one(self.direct(), sql)

    def wait_walsenders(self, n, app=None, timeout=15):
        pt.wait_until(lambda: self.walsenders(app) == n, timeout=timeout,
                      what="%d walsender(s) %s" % (n, app or ""))

    def rows(self, px, what, **match):
        return pt.show(self.console_conn(px), what, **match)

    def repl_conn(self, px, factory, **dsn):
        conn = psycopg2.connect(px.dsn(**dsn), connection_factory=factory)
        self.addCleanup(conn.close)
        return conn


class TestPhysical(ReplicationCase):

    def test_basebackup_in_transaction_mode(self):
        px = self.start_pgwharf(settings=TX)
        d = os.path.join(self.scratch(), "backup")
        r = subprocess.run(
            [pt.pg_bin("pg_basebackup"), "-h", px.host, "-p", str(px.port),
             "-U", self.pg.user, "-D", d, "-X", "stream", "-c", "fast", "--no-sync"],
            env=self.tool_env(), capture_output=True, text=True, timeout=300)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(os.path.exists(os.path.join(d, "PG_VERSION")))
        self.assertTrue(os.listdir(os.path.join(d, "pg_wal")))
        # Its two servers (the backup, the WAL stream) left with it.
        self.wait_walsenders(0, "pg_basebackup")
        pt.wait_until(lambda: not self.rows(px, "SERVERS", replication="physical"),
                      what="no replication server left")
        # The pool's own servers were not touched: a normal client works.
        self.assertEqual(one(self.db_conn(px), "select 1"), 1)

    def test_receivewal_shows_physical_and_leaves(self):
        px = self.start_pgwharf()
        d = self.scratch()
        c = self.direct().cursor()
        endpos = one(self.direct(), "select (pg_current_wal_lsn() + 16777216)::text")
        proc = subprocess.Popen(
            [pt.pg_bin("pg_receivewal"), "-h", px.host, "-p", str(px.port),
             "-U", self.pg.user, "-d", "application_name=pgw_rw",
             "-D", d, "-n", "--endpos", endpos, "--no-sync"],
            env=self.tool_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.addCleanup(lambda: proc.poll() is None and proc.kill())
        self.wait_walsenders(1, "pgw_rw")
        cl = self.rows(px, "CLIENTS", replication="physical")
        self.assertEqual(len(cl), 1, cl)
        self.assertEqual(cl[0]["application_name"], "pgw_rw")
        sv = self.rows(px, "SERVERS", replication="physical")
        self.assertEqual(len(sv), 1, sv)
        self.assertEqual(sv[0]["link"], cl[0]["ptr"])
        self.assertEqual(one(self.direct(), "select application_name from pg_stat_replication"),
                         "pgw_rw")
        # Outside pool_size: SHOW POOLS counts no server for it.
        pool = pt.pool_row(self.console_conn(px), "replication", self.pg.user)
        self.assertEqual(int(pool["sv_active"]), 0)
        # The stream is no query that query_timeout could end: more WAL, two
        # segment switches, and pg_receivewal stops at --endpos by itself.
        c.execute("create table if not exists pgw_repl_t (i int)")
        for _ in range(6):
            if proc.poll() is not None:
                break
            c.execute("insert into pgw_repl_t values (1)")
            c.execute("select pg_switch_wal()")
            try:
                proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                pass
        out, err = proc.communicate(timeout=30)
        self.assertEqual(proc.returncode, 0, err)
        self.assertTrue([f for f in os.listdir(d) if len(f) == 24], os.listdir(d))
        self.wait_walsenders(0, "pgw_rw")
        pt.wait_until(lambda: not self.rows(px, "SERVERS", replication="physical"),
                      what="its server closed")

    def test_server_gone_closes_client(self):
        px = self.start_pgwharf()
        conn = self.repl_conn(px, psycopg2.extras.PhysicalReplicationConnection,
                              application_name="pgw_kill")
        cur = conn.cursor()
        cur.execute("IDENTIFY_SYSTEM")
        self.assertEqual(len(cur.fetchone()), 4)
        self.wait_walsenders(1, "pgw_kill")
        self.direct().cursor().execute(
            "select pg_terminate_backend(pid) from pg_stat_activity "
            "where backend_type = 'walsender' and application_name = 'pgw_kill'")
        with self.assertRaises(psycopg2.Error):
            cur.execute("IDENTIFY_SYSTEM")
            cur.fetchall()
        pt.wait_until(lambda: not self.rows(px, "CLIENTS", replication="physical"),
                      what="the client closed with its server")

    def test_shutdown_waits_for_a_stream_up_to_shutdown_timeout(self):
        # A replication client never gives its server back: SIGTERM waits
        # for it only up to shutdown_timeout, then closes it (57P01).
        px = self.start_pgwharf(settings={"shutdown_timeout": "1s"})
        conn = self.repl_conn(px, psycopg2.extras.PhysicalReplicationConnection,
                              application_name="pgw_shut")
        cur = conn.cursor()
        cur.execute("IDENTIFY_SYSTEM")
        cur.fetchall()
        self.wait_walsenders(1, "pgw_shut")
        self.assertEqual(px.stop(timeout=15), 0, px.log_tail())
        self.assertFalse(px.killed)
        self.assertIn("shutdown_timeout", px.log())
        with self.assertRaises(psycopg2.Error):
            cur.execute("IDENTIFY_SYSTEM")
            cur.fetchall()
        self.wait_walsenders(0, "pgw_shut")

    def test_wait_close_does_not_wait_for_a_stream(self):
        # RECONNECT marked the replication servers of the database for
        # WAIT_CLOSE, though it never closes them (SHOW SERVERS says
        # close_needed 0): WAIT_CLOSE waited as long as a standby streamed.
        px = self.start_pgwharf()
        conn = self.repl_conn(px, psycopg2.extras.PhysicalReplicationConnection,
                              application_name="pgw_wait")
        cur = conn.cursor()
        cur.execute("IDENTIFY_SYSTEM")
        cur.fetchall()
        self.wait_walsenders(1, "pgw_wait")
        console = self.console_conn(px)
        console.cursor().execute("RECONNECT replication")
        waiter = self.console_conn(px)
        t = pt.Background(lambda: waiter.cursor().execute("WAIT_CLOSE replication"))
        try:
            t.join(10)
            self.assertFalse(t.is_alive(), "WAIT_CLOSE still waits for the stream")
            self.assertEqual(self.walsenders("pgw_wait"), 1)     # it streams on
        finally:
            conn.close()          # the stream ends: a waiting WAIT_CLOSE answers
            t.join(15)
        self.assertIsNone(t.error)

    def test_pause_holds_new_replication_clients(self):
        # PAUSE (and KILL, which leaves the database paused) stops new
        # server connections, a replication client's too, until RESUME:
        # the server may be on its way down for a restart.
        px = self.start_pgwharf()
        console = self.console_conn(px)
        console.cursor().execute("PAUSE replication")
        t = pt.Background(lambda: psycopg2.connect(
            px.dsn(application_name="pgw_paused"),
            connection_factory=psycopg2.extras.PhysicalReplicationConnection))
        self.addCleanup(lambda: t.result and t.result.close())
        # Logged in: its server would be on its way now (started in the
        # same callback).
        self.assertTrue(px.wait_for_log(r"event=login .*db=replication"))
        self.assertEqual(self.rows(px, "SERVERS", replication="physical"), [])
        self.assertEqual(self.walsenders("pgw_paused"), 0)
        console.cursor().execute("RESUME replication")
        t.join(15)
        self.assertIsNone(t.error)
        self.assertIsNotNone(t.result)
        self.wait_walsenders(1, "pgw_paused")


    def test_client_idle_timeout_leaves_replication_clients(self):
        # README: client_idle_timeout does not apply to replication
        # connections (they hold their own server from login, and
        # PgBouncer skips a client linked to a server); a client quiet
        # before its first command, and one whose login waited past it
        # for a PAUSE, were closed with 08P01.
        px = self.start_pgwharf(settings={"client_idle_timeout": "1s"})
        quiet = self.repl_conn(px, psycopg2.extras.PhysicalReplicationConnection,
                               application_name="pgw_quiet")
        # (the console is a client too: a connection per command)
        px.admin("PAUSE replication")
        t = pt.Background(lambda: psycopg2.connect(
            px.dsn(application_name="pgw_held"),
            connection_factory=psycopg2.extras.PhysicalReplicationConnection))
        self.addCleanup(lambda: t.join(30) or (t.result and t.result.close()))
        pt.wait_until(lambda: px.show("CLIENTS", application_name="pgw_held", state="waiting"),
                      what="pgw_held waiting")
        time.sleep(2)            # twice client_idle_timeout, quiet and held
        px.admin("RESUME replication")
        t.join(15)
        self.assertIsNone(t.error)
        for conn in (quiet, t.result):
            cur = conn.cursor()
            cur.execute("IDENTIFY_SYSTEM")
            self.assertEqual(len(cur.fetchall()), 1)
        self.assertNotRegex(px.log(), r"db=replication .*client_idle_timeout")


class TestHeldClients(ReplicationCase):
    """A replication client waiting for its server (PAUSE, the connect-rate
    bucket) is a waiting client of its pool, and only its own server's
    answer ends that wait."""

    def held_client(self, px, app):
        """A physical client logging in in the background, held (waiting
        in SHOW CLIENTS) when this returns."""
        t = pt.Background(lambda: psycopg2.connect(
            px.dsn(application_name=app),
            connection_factory=psycopg2.extras.PhysicalReplicationConnection))
        self.addCleanup(lambda: t.join(30) or (t.result and t.result.close()))
        pt.wait_until(lambda: self.rows(px, "CLIENTS", application_name=app, state="waiting"),
                      what="%s waiting" % app)
        return t

    def test_paused_client_counts_as_waiting(self):
        # PgBouncer's users watch SHOW POOLS cl_waiting / maxwait and SHOW
        # CLIENTS during PAUSE: a held replication login is a waiting
        # client of its pool (its server is in no count: it has none yet).
        # maxwait ignored it, and the wait was never added to
        # total_wait_time once its server came.
        px = self.start_pgwharf()
        console = self.console_conn(px)
        console.cursor().execute("PAUSE replication")
        t = self.held_client(px, "pgw_held")
        cl = self.rows(px, "CLIENTS", application_name="pgw_held")
        self.assertEqual((cl[0]["replication"], cl[0]["state"]), ("physical", "waiting"), cl)

        def waited():
            p = pt.pool_row(console, "replication", self.pg.user)
            return p["cl_waiting"] == 1 and p["maxwait"] * 1000000 + p["maxwait_us"] > 0
        pt.wait_until(waited, what="SHOW POOLS maxwait counting the held client")
        c = self.rows(px, "CLIENTS", application_name="pgw_held")[0]
        self.assertGreater(c["wait"] * 1000000 + c["wait_us"], 0, c)
        p = pt.pool_row(console, "replication", self.pg.user)
        self.assertEqual((p["sv_login"], p["sv_active"]), (0, 0), p)
        console.cursor().execute("RESUME replication")
        t.join(15)
        self.assertIsNone(t.error)
        self.wait_walsenders(1, "pgw_held")
        p = pt.pool_row(console, "replication", self.pg.user)
        self.assertEqual((p["cl_waiting"], p["cl_active"], p["maxwait"], p["maxwait_us"]),
                         (0, 1, 0, 0), p)
        st = self.rows(px, "STATS", database="replication")
        self.assertGreater(int(st[0]["total_wait_time"]), 0, st)

    def test_pool_login_refusal_leaves_replication_clients(self):
        # The pool's refused login (here its connect_query, which never
        # runs on a replication server) failed the replication clients
        # waiting in the pool too, though their own servers log in
        # differently (no connect_query; pg_hba's replication lines; no
        # database for a physical one).  One token a minute: the normal
        # server takes it at RESUME, the replication client waits for the
        # next one while the refusal comes.
        dbs = {"replication": self.pg.conn_string(
            self.pg.database, connect_query="select pgw_no_such_function()")}
        px = self.start_pgwharf(databases=dbs, settings={
            "server_connect_rate": "0.2", "server_connect_burst": 1,
            "server_login_retry": "60s"})
        console = self.console_conn(px)
        console.cursor().execute("PAUSE replication")
        t = self.held_client(px, "pgw_refused_pool")
        normal = pt.Background(lambda: psycopg2.connect(px.dsn(db="replication")))
        self.addCleanup(lambda: normal.join(30) or (normal.result and normal.result.close()))
        pt.wait_pool(console, "replication", self.pg.user, cl_waiting=2)
        console.cursor().execute("RESUME replication")
        normal.join(15)
        self.assertIsInstance(normal.error, psycopg2.OperationalError, normal.error)
        self.assertIn("pgw_no_such_function", str(normal.error))
        t.join(30)
        self.assertIsNone(t.error)
        self.assertIsNotNone(t.result)
        self.wait_walsenders(1, "pgw_refused_pool")


class TestHostLists(ReplicationCase):
    """A replication client on a host list with target_session_attrs (the
    read-only fake server of test_hosts)."""

    def setUp(self):
        super().setUp()
        from test_hosts import FakeReadOnlyServer
        self.fake = FakeReadOnlyServer()
        self.addCleanup(self.fake.close)

    def entry(self, ports, lb="round-robin"):
        return ("host=%s port=%s dbname=%s target_session_attrs=read-write "
                "load_balance_hosts=%s" % (",".join(h for h, _ in ports),
                                           ",".join(str(p) for _, p in ports),
                                           self.pg.database, lb))

    def logical_addr(self, px, db):
        return pt.replication_server_addr(px, db, application_name="pgw_hosts")

    def test_more_than_64_hosts_each_tried_once(self):
        # The hosts a client tried were a 64-bit mask: with disable, a
        # host past the 64th that did not match was taken again (the
        # cursor stays on a host until it fails to connect), and the
        # client failed before reaching the host that matched.
        n = 70
        ports = [("127.0.0.1", self.fake.port)] * (n - 1) + [("127.0.0.2", self.pg.port)]
        for lb in ("disable", "round-robin"):
            with self.subTest(load_balance_hosts=lb):
                before = self.fake.logins
                px = self.start_pgwharf(databases={"many": self.entry(ports, lb)},
                                        settings={"server_login_retry": "60s"})
                self.assertEqual(self.logical_addr(px, "many"), "127.0.0.2")
                self.assertEqual(self.fake.logins - before, n - 1)
                self.assertEqual(px.stop(), 0, px.log_tail())

    def test_every_host_skipped_fails_at_once(self):
        # A normal client found the only host read-only: the pool skips it
        # for server_login_retry and its clients get that refusal at once.
        # A replication client waited for client_login_timeout instead.
        px = self.start_pgwharf(databases={"ro": self.entry([("127.0.0.1", self.fake.port)])},
                                settings={"server_login_retry": "60s",
                                          "client_login_timeout": "60s"})
        cp = px.psql("select 1", db="ro", check=False)
        self.assertIn("server login failed", cp.stderr)
        self.assertIn("session is read-only", cp.stderr)
        t = pt.Background(lambda: self.logical_addr(px, "ro"))
        t.join(20)
        self.assertFalse(t.is_alive(), "the replication client still waits")
        self.assertIsInstance(t.error, psycopg2.OperationalError, t.error)
        self.assertIn("server login failed", str(t.error))
        self.assertIn("session is read-only", str(t.error))
        self.assertRegex(px.log(), r"event=disconnect .*db=ro .*sqlstate=08001")
        self.assertEqual(self.fake.logins, 1)

    def test_hosts_tried_follow_a_reload_that_reorders_the_list(self):
        # The hosts a client tried were kept by position: a reload that
        # reordered the list while the client's first attempt ran made it
        # take the read-only host (now second) again and skip the real one
        # (now first, at the position it had tried), so it failed with no
        # host left.  Its attempt is held at the fake's gate over the
        # reload.
        from test_hosts import FakeReadOnlyServer

        # Two hosts; then more than 64 (the marks in a heap array), the
        # class's ungated read-only fake padding the list.
        for pad in (0, 68):
            with self.subTest(hosts=2 + pad):
                fake = FakeReadOnlyServer(held=True)     # each login held
                self.addCleanup(fake.close)
                gated, real = ("127.0.0.1", fake.port), ("127.0.0.2", self.pg.port)
                padding = [("127.0.0.1", self.fake.port)] * pad
                px = self.start_pgwharf(
                    databases={"hl": self.entry([gated] + padding + [real], "disable")},
                    settings={"server_login_retry": "60s"})
                t = pt.Background(lambda: self.logical_addr(px, "hl"))
                self.addCleanup(lambda t=t: t.join(30))
                pt.wait_until(lambda: fake.arrived == 1,
                              what="the first attempt at the fake")
                reloads = px.log().count("event=reload ")
                px.databases["hl"] = self.entry([real, gated] + padding, "disable")
                px.reload()
                pt.wait_until(lambda: px.log().count("event=reload ") > reloads,
                              what="the reload")
                fake.release()
                t.join(30)
                self.assertFalse(t.is_alive(), "the replication client still waits")
                self.assertIsNone(t.error)
                self.assertEqual(t.result, "127.0.0.2")
                self.assertEqual(fake.logins, 1)
                self.assertEqual(self.fake.logins, 0)
                self.assertEqual(px.stop(), 0, px.log_tail())


    def test_a_refusal_of_a_login_started_before_a_reload_does_not_end_the_client(self):
        # A replication client's login, held at a server that then refused
        # it (28P01), was under way when a reload moved the entry to the
        # cluster: that refusal, of the old settings, ended the client
        # (normal clients get a server logging in with the new ones).  It
        # logs in again now, with the new settings.
        import threading

        class RefusingFake(hz.FakeServer):
            def __init__(self):
                self.arrived = 0
                self.gate = threading.Event()
                super().__init__()

            def session(self, conn):
                self.read_startup(conn)
                self.arrived += 1
                self.gate.wait(30)
                conn.sendall(self._msg(b"E", b"SFATAL\0VFATAL\0C28P01\0Mpassword "
                                       b"authentication failed for user \"old\"\0\0"))

        fake = RefusingFake()
        self.addCleanup(fake.close)
        self.addCleanup(fake.gate.set)
        px = self.start_pgwharf(databases={"hl": self.entry([("127.0.0.1", fake.port)])},
                                settings={"server_login_retry": "60s"})
        t = pt.Background(lambda: self.logical_addr(px, "hl"))
        self.addCleanup(lambda: t.join(30))
        pt.wait_until(lambda: fake.arrived == 1, what="the login at the refusing server")
        reloads = px.log().count("event=reload ")
        px.databases["hl"] = self.entry([("127.0.0.2", self.pg.port)])
        px.reload()
        pt.wait_until(lambda: px.log().count("event=reload ") > reloads, what="the reload")
        fake.gate.set()
        t.join(30)
        self.assertFalse(t.is_alive(), "the replication client still waits")
        self.assertIsNone(t.error)
        self.assertEqual(t.result, "127.0.0.2")
        self.assertEqual(fake.arrived, 1)
        self.assertEqual(px.stop(), 0, px.log_tail())

class TestLogical(ReplicationCase):

    SLOT = "pgw_test_slot"

    def drop_slot(self):
        c = self.direct()

        def gone():
            try:
                c.cursor().execute(
                    "select pg_drop_replication_slot(slot_name) from pg_replication_slots "
                    "where slot_name = %s", (self.SLOT,))
                return True
            except psycopg2.errors.ObjectInUse:
                return False
        pt.wait_until(gone, what="slot dropped")

    def test_stream_in_transaction_mode(self):
        px = self.start_pgwharf(settings=TX)
        self.addCleanup(self.drop_slot)
        self.drop_slot()
        conn = self.repl_conn(px, psycopg2.extras.LogicalReplicationConnection,
                              application_name="pgw_logical")
        cur = conn.cursor()
        cur.create_replication_slot(self.SLOT, output_plugin="test_decoding")
        cur.start_replication(slot_name=self.SLOT, decode=True)
        cl = self.rows(px, "CLIENTS", replication="logical")
        self.assertEqual([r["application_name"] for r in cl], ["pgw_logical"])
        sv = self.rows(px, "SERVERS", replication="logical")
        self.assertEqual(len(sv), 1)
        c = self.direct()
        c.cursor().execute("create table if not exists pgw_repl_l (i int)")
        c.cursor().execute("insert into pgw_repl_l values (42)")
        got = []
        deadline = time.monotonic() + 20
        # (the row's change, not any message with 42 in it: "BEGIN 742")
        while time.monotonic() < deadline and not any("pgw_repl_l" in m and "42" in m
                                                      for m in got):
            msg = cur.read_message()
            if msg is None:
                select.select([conn], [], [], 0.5)
                continue
            got.append(msg.payload)
            cur.send_feedback(flush_lsn=msg.data_start)
        self.assertTrue(any("pgw_repl_l" in m and "42" in m for m in got), got)
        # A normal client of the same pool (one server) is not held up.
        self.assertEqual(one(self.db_conn(px), "select 2"), 2)
        conn.close()
        self.wait_walsenders(0, "pgw_logical")
        pt.wait_until(lambda: not self.rows(px, "SERVERS", replication="logical"),
                      what="its server closed")

    def test_startup_parameters_reach_the_server(self):
        # Its server takes no SET: what the client sent at login (here in
        # options, a space escaped; a subscription's walreceiver sends
        # DateStyle and extra_float_digits so) is in the server's startup,
        # after the entry's own options.
        dbs = {"pgwharf": self.pg.conn_string(
            self.pg.database, options="-c extra_float_digits=2 -c lock_timeout=7s")}
        px = self.start_pgwharf(settings=TX, databases=dbs)
        conn = self.repl_conn(px, psycopg2.extras.LogicalReplicationConnection,
                              options=r"-c DateStyle=SQL,\ DMY -c extra_float_digits=3")
        self.assertEqual(conn.get_parameter_status("DateStyle"), "SQL, DMY")
        cur = conn.cursor()
        cur.execute("select current_setting('DateStyle'), current_setting('extra_float_digits'),"
                    " current_setting('lock_timeout')")
        self.assertEqual(cur.fetchone(), ("SQL, DMY", "3", "7s"))

    def test_a_parameter_given_twice_reaches_the_server_in_turn(self):
        # Each value in the order PostgreSQL applies them (options, then
        # the packet's own): a bad earlier one refuses the login as
        # PostgreSQL does; good ones leave the last.
        px = self.start_pgwharf(settings=TX)
        with self.assertRaises(psycopg2.OperationalError) as cm:
            self.repl_conn(px, psycopg2.extras.LogicalReplicationConnection,
                           options="-c TimeZone=bogus -c TimeZone=UTC")
        self.assertIn('invalid value for parameter "TimeZone": "bogus"', str(cm.exception))
        conn = self.repl_conn(px, psycopg2.extras.LogicalReplicationConnection,
                              options=r"-c DateStyle=German -c DateStyle=SQL,\ DMY")
        self.assertEqual(conn.get_parameter_status("DateStyle"), "SQL, DMY")

    def test_sql_on_logical_connection(self):
        px = self.start_pgwharf(settings=TX)
        conn = self.repl_conn(px, psycopg2.extras.LogicalReplicationConnection)
        cur = conn.cursor()
        cur.execute("IDENTIFY_SYSTEM")
        row = cur.fetchone()
        self.assertEqual(row[3], self.pg.database)    # dbname: logical
        cur.execute("select current_database()")
        self.assertEqual(cur.fetchone()[0], self.pg.database)


class TestRefusals(ReplicationCase):

    def test_bad_value_and_false(self):
        px = self.start_pgwharf()
        with self.assertRaises(psycopg2.OperationalError) as cm:
            psycopg2.connect(px.dsn(replication="maybe"))
        self.assertIn('invalid value for parameter "replication": "maybe"', str(cm.exception))
        self.assertTrue(px.wait_for_log(r"sqlstate=22023"))
        for v in ("false", "off", "0", "no"):
            conn = psycopg2.connect(px.dsn(replication=v))
            self.addCleanup(conn.close)
            conn.autocommit = True
            self.assertEqual(one(conn, "select 1"), 1)
        self.assertEqual(self.rows(px, "CLIENTS", replication="physical"), [])

    def test_admin_console_refused(self):
        px = self.start_pgwharf()
        with self.assertRaises(psycopg2.OperationalError) as cm:
            psycopg2.connect(px.dsn(db="pgbouncer", replication="database"))
        self.assertIn("admin console", str(cm.exception))

    def test_no_replication_privilege_is_the_clients_error(self):
        px = self.start_pgwharf()
        for _ in range(5):       # more than breaker_threshold (3)
            with self.assertRaises(psycopg2.OperationalError) as cm:
                psycopg2.connect(px.dsn(user=self.pg.app_user),
                                 connection_factory=psycopg2.extras.PhysicalReplicationConnection)
            self.assertRegex(str(cm.exception),
                             "replication role|permission denied to start WAL sender")
        breakers = self.rows(px, "BREAKERS")
        self.assertEqual([b["state"] for b in breakers], ["closed"], breakers)
        self.assertEqual(int(breakers[0]["failures"]), 0)
        # Nor the pool's server_login_retry: app's normal logins work.
        self.assertEqual(one(self.db_conn(px, user=self.pg.app_user), "select 3"), 3)


HBA = """\
host replication {su}   127.0.0.1/32 md5
host {db}    {app}    127.0.0.1/32 md5
host all         all    127.0.0.1/32 reject
"""


class TestHba(ReplicationCase):

    def test_physical_matches_replication_keyword_only(self):
        d = self.scratch()
        path = os.path.join(d, "hba.conf")
        with open(path, "w") as f:
            f.write(HBA.format(su=self.pg.user, db=self.pg.database, app=self.pg.app_user))
        px = self.start_pgwharf(settings={"auth_type": "hba", "auth_hba_file": path})
        phys = psycopg2.extras.PhysicalReplicationConnection
        logi = psycopg2.extras.LogicalReplicationConnection
        # physical, superuser: line 1
        conn = self.repl_conn(px, phys)
        cur = conn.cursor()
        cur.execute("IDENTIFY_SYSTEM")
        self.assertIsNone(cur.fetchone()[3])
        conn.close()
        # logical, superuser: as a normal connection, line 3 rejects
        with self.assertRaises(psycopg2.OperationalError):
            psycopg2.connect(px.dsn(), connection_factory=logi)
        # physical, app: neither line 2 (a database name) nor line 3 (all)
        # is for it, as in PostgreSQL: pgwharf refuses it, the server never
        # sees it (its refusal would come as "server login failed")
        with self.assertRaises(psycopg2.OperationalError) as cm:
            psycopg2.connect(px.dsn(user=self.pg.app_user), connection_factory=phys)
        self.assertIn("no pg_hba.conf entry for host", str(cm.exception))
        self.assertNotIn("server login failed", str(cm.exception))
        # normal, app: line 2
        self.assertEqual(one(self.db_conn(px, user=self.pg.app_user), "select 4"), 4)


if __name__ == "__main__":
    unittest.main()
