"""Startup parameters: the `options` startup parameter (PGOPTIONS) and
track_extra_parameters, against a real PostgreSQL.

options is read as PostgreSQL reads it (-c name=value, -cname=value,
--name=value, backslash escapes); each parameter inside it is taken as if
it had been a startup parameter of its own.  track_extra_parameters adds
names to the tracked set: accepted at login, followed from ParameterStatus
and SET again on whichever server the client gets.
"""

import os
import re
import socket
import struct
import threading
import unittest

import psycopg2
import psycopg2.errors

import pgwharf_test as pt
import pgw_hardening as hz

one = pt.one


def connect(px, case=None, **kw):
    """A psycopg2 connection in autocommit; closed at case's cleanup."""
    conn = psycopg2.connect(px.dsn(**kw))
    conn.autocommit = True
    if case is not None:
        case.addCleanup(conn.close)
    return conn


def psql_with_pgoptions(px, sql, pgoptions, check=True, dsn=None):
    kw = pt._parse_conninfo(dsn or px.dsn())
    return pt._run_psql(kw["host"], kw["port"], kw["user"], kw.get("password"),
                        kw["dbname"], sql, check=check,
                        env_extra={"PGOPTIONS": pgoptions})


TX1 = {"pool_mode": "transaction", "default_pool_size": 1}


def cancel_loop(pg, stop):
    """pg_cancel_backend on every backend whose application_name is
    pgw_cancel_target, from a side connection, until stop is set.  (Not
    `with side`: psycopg2 2.9 opens a transaction there even in
    autocommit, and pg_stat_activity stays as it first read.)"""
    side = psycopg2.connect(pg.dsn(), connect_timeout=10)
    side.autocommit = True
    try:
        cur = side.cursor()
        while not stop.is_set():
            cur.execute("select pg_cancel_backend(pid) from pg_stat_activity "
                        "where application_name = 'pgw_cancel_target'")
    finally:
        side.close()


def run_under_cancels(pg, client, stop, done, timeout, what):
    """client("a") and client("b") in threads, with cancel_loop beside
    them, until done() or both clients stop (bounded by their own count of
    rounds); then stop is set and all are joined."""
    workers = [threading.Thread(target=client, args=(t,)) for t in ("a", "b")]
    side = threading.Thread(target=cancel_loop, args=(pg, stop))
    for t in workers + [side]:
        t.start()
    try:
        pt.wait_until(lambda: done() or not any(t.is_alive() for t in workers),
                      timeout=timeout, what=what)
    finally:
        stop.set()
        for t in workers + [side]:
            t.join(30)


def direct_row(case, sql, **dsn):
    """sql's first row straight from PostgreSQL, on a connection of its
    own with dsn's keys (options, client_encoding...)."""
    conn = psycopg2.connect(case.pg.dsn(**dsn))
    case.addCleanup(conn.close)
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchone()


def assert_reads_in_turn(case, conn, sql, want, other, other_sql, other_want):
    """conn and other take turns on one server (a pool of one): twice,
    conn's sql gives the row want and other's other_sql other_want."""
    for _ in range(2):
        with conn.cursor() as cur:
            cur.execute(sql)
            case.assertEqual(cur.fetchone(), want)
        case.assertEqual(one(other, other_sql), other_want)
    case.assertEqual(one(conn, "select pg_backend_pid()"), one(other, "select pg_backend_pid()"))


class TestOptions(pt.PgwharfTestCase):
    def test_tracked_parameter_in_options_is_applied_and_kept(self):
        # One server: b runs between a's transactions with its own TimeZone;
        # a's from options comes back at a's next one.
        px = self.start_pgwharf(settings=TX1)
        a = connect(px, self, options="-c TimeZone=Asia/Tokyo")
        b = connect(px, self, options="--TimeZone=Europe/Paris")
        self.assertEqual(a.get_parameter_status("TimeZone"), "Asia/Tokyo")
        self.assertEqual(b.get_parameter_status("TimeZone"), "Europe/Paris")
        for _ in range(2):
            self.assertEqual(one(a, "show timezone"), "Asia/Tokyo")
            self.assertEqual(one(b, "show timezone"), "Europe/Paris")
        self.assertEqual(one(a, "select pg_backend_pid()"), one(b, "select pg_backend_pid()"))

    def test_pgoptions_forms_and_escapes(self):
        px = self.start_pgwharf(settings=TX1)
        out = psql_with_pgoptions(
            px, "show timezone; show datestyle; show extra_float_digits",
            "-cTimeZone=Asia/Tokyo  --DateStyle=German\t-c extra-float-digits=2")
        self.assertEqual(out.splitlines(), ["Asia/Tokyo", "German, DMY", "2"])
        # (psql sends an application_name of its own, which wins: psycopg2)
        os.environ.pop("PGAPPNAME", None)
        # (a backslash at the very end is dropped, as PostgreSQL does)
        conn = connect(px, self, options="-c application_name=my\\ app\\\\x\\  -c TimeZone=UTC\\")
        self.assertEqual(one(conn, "show application_name"), "my app\\x ")
        self.assertEqual(conn.get_parameter_status("application_name"), "my app\\x ")
        self.assertEqual(one(conn, "show timezone"), "UTC")

    def test_parameter_of_its_own_wins_over_options(self):
        px = self.start_pgwharf(settings=dict(TX1, auth_type="trust"))
        s = socket.create_connection((px.host, px.port), timeout=10)
        self.addCleanup(s.close)
        hz.sync_login(s, self.pg.user, self.pg.database,
                      options="-c TimeZone=Asia/Tokyo -c DateStyle=German",
                      TimeZone="Europe/Paris")
        rows, errs = hz.simple_query(s, "select current_setting('TimeZone'), "
                                        "current_setting('DateStyle')")
        self.assertEqual(errs, [])
        self.assertEqual(rows, [[b"Europe/Paris", b"German, DMY"]])

    def test_unknown_parameter_in_options_refused(self):
        px = self.start_pgwharf()
        with self.assertRaises(psycopg2.OperationalError) as cm:
            psycopg2.connect(px.dsn(options="-c TimeZone=UTC -c work_mem=1MB"))
        self.assertIn("unsupported startup parameter in options: work_mem", str(cm.exception))
        self.assertIn("sqlstate=08P01", px.log())

    def test_other_switches_and_malformed_options_refused(self):
        px = self.start_pgwharf()
        for opts, text in (("-B 100", 'unsupported options startup parameter: "-B" is not '
                                      '-c name=value'),
                           ("-c TimeZone", "-c TimeZone: no value"),
                           ("-c", "-c: no name=value after it"),
                           ("-c =UTC", "no parameter name")):
            with self.assertRaises(psycopg2.OperationalError, msg=opts) as cm:
                psycopg2.connect(px.dsn(options=opts))
            self.assertIn(text, str(cm.exception), opts)
        self.assertEqual(px.psql("select 1"), "1")

    def test_a_long_refusal_is_cut_between_utf8_characters(self):
        # The refusal names the parameter; cut to fit, it must still be
        # UTF-8 (a decoding client refuses the whole message otherwise).
        # "a" puts each two-byte character at an odd offset.
        px = self.start_pgwharf()
        name = "a" + "\u00e9" * 600
        s = socket.create_connection((px.host, px.port), timeout=20)
        self.addCleanup(s.close)
        s.sendall(hz.startup_packet(self.pg.user, self.pg.database, **{name: "x"}))
        t, body = hz.recv_msg(s)
        self.assertEqual(t, b"E")
        fields = dict((f[:1], f[1:]) for f in body.split(b"\x00") if f)
        self.assertEqual(fields[b"C"], b"08P01")
        msg = fields[b"M"].decode("utf-8")          # raises on a cut character
        self.assertTrue(msg.startswith("unsupported startup parameter: a\u00e9\u00e9"), msg)
        self.assertGreater(len(fields[b"M"]), 500)

    def test_ignored_parameter_inside_options(self):
        # work_mem is in ignore_startup_parameters: dropped, the tracked
        # parameter next to it still applies.
        px = self.start_pgwharf(settings=dict(TX1, ignore_startup_parameters="work_mem"))
        default = self.pg.psql("show work_mem")
        conn = connect(px, self, options="-c work_mem=1234kB -c TimeZone=Asia/Tokyo")
        self.assertEqual(one(conn, "show timezone"), "Asia/Tokyo")
        self.assertEqual(one(conn, "show work_mem"), default)

    def test_options_in_ignore_list_ignores_unknown_inside_it(self):
        # As PgBouncer: options listed in ignore_startup_parameters lets
        # anything it does not know inside options through, ignored; the
        # tracked parameters inside it are still taken.
        px = self.start_pgwharf(settings=dict(TX1, ignore_startup_parameters="options"))
        conn = connect(px, self, options="-c work_mem=1234kB -B 100 -c TimeZone=Asia/Tokyo -c x")
        self.assertEqual(one(conn, "show timezone"), "Asia/Tokyo")
        self.assertEqual(conn.get_parameter_status("TimeZone"), "Asia/Tokyo")


class TestParameterGivenTwice(pt.PgwharfTestCase):
    """A tracked parameter given twice -- in options and on its own, or
    twice in options -- with different values.  PostgreSQL applies each in
    turn (options' switches first, then the packet's own parameters) and
    refuses the login at the first value it refuses; pgwharf kept only the
    last and let the client in."""

    def refusal(self, host, port, password, **startup):
        """The ErrorResponse fields of a raw login to host:port, None when
        it logged in."""
        with socket.create_connection((host, port), timeout=20) as s:
            try:
                hz.sync_login(s, self.pg.user, self.pg.database, password, **startup)
            except hz.PgError as e:
                return e.fields
            return None

    def test_a_refused_earlier_value_refuses_the_login_as_postgresql_does(self):
        bad = [dict(options="-c TimeZone=bogus", TimeZone="UTC"),
               dict(options="-c TimeZone=bogus -c TimeZone=UTC"),
               dict(options="--TimeZone=bogus", timezone="UTC"),
               dict(options="-c DateStyle=German -c DateStyle=nonsense", DateStyle="ISO"),
               dict(options="-c extra_float_digits=x -c extra_float_digits=2"),
               # the first PostgreSQL refuses is the one named
               dict(options="-c DateStyle=bogusD -c TimeZone=bogus", TimeZone="UTC")]
        for mode in ("transaction", "session"):
            px = self.start_pgwharf(settings=dict(pool_mode=mode, default_pool_size=1,
                                                  auth_type="trust"))
            for startup in bad:
                with self.subTest(mode=mode, **startup):
                    want = self.refusal(self.pg.host, self.pg.port, self.pg.password, **startup)
                    self.assertIsNotNone(want)
                    self.assertEqual(want["C"], "22023")
                    got = self.refusal(px.host, px.port, None, **startup)
                    self.assertIsNotNone(got, "pgwharf let the client in")
                    self.assertEqual((got["S"], got["C"], got["M"], got.get("D")),
                                     (want["S"], want["C"], want["M"], want.get("D")))
            # the pool's one server is fine for the next client
            self.assertEqual(px.psql("show timezone"), self.pg.psql("show timezone"))

    def test_the_first_refused_is_named_even_before_the_sets(self):
        # client_encoding and statement_timeout are SET before the check:
        # a bad last value of one must not be named over an earlier value
        # of another that PostgreSQL refuses first.
        px = self.start_pgwharf(settings=dict(pool_mode="transaction", auth_type="trust",
                                              track_extra_parameters="statement_timeout"))
        for startup in (dict(options="-c TimeZone=bogus -c TimeZone=UTC", client_encoding="bogus"),
                        dict(options="-c DateStyle=bogus -c DateStyle=ISO",
                             statement_timeout="bogus")):
            with self.subTest(**startup):
                want = self.refusal(self.pg.host, self.pg.port, self.pg.password, **startup)
                got = self.refusal(px.host, px.port, None, **startup)
                self.assertEqual((got["S"], got["C"], got["M"], got.get("D")),
                                 (want["S"], want["C"], want["M"], want.get("D")))

    def test_an_earlier_client_encoding_is_checked_by_its_name_only(self):
        # PostgreSQL checks only the name of a client_encoding a later one
        # replaces (no conversion is looked up before the backend has
        # started): MULE_INTERNAL, which has none to UTF8, logs in there.
        cases = [(dict(options="-c client_encoding=MULE_INTERNAL", client_encoding="UTF8"), None),
                 (dict(options="-c client_encoding=bogus", client_encoding="UTF8"), "22023")]
        for mode in ("transaction", "session"):
            px = self.start_pgwharf(settings=dict(pool_mode=mode, auth_type="trust"))
            for startup, code in cases:
                with self.subTest(mode=mode, **startup):
                    want = self.refusal(self.pg.host, self.pg.port, self.pg.password, **startup)
                    self.assertEqual(want and want["C"], code)
                    got = self.refusal(px.host, px.port, None, **startup)
                    self.assertEqual(got and (got["S"], got["C"], got["M"]),
                                     want and (want["S"], want["C"], want["M"]))

    def test_values_that_are_fine_still_work_the_last_winning(self):
        for mode in ("transaction", "session"):
            px = self.start_pgwharf(settings=dict(pool_mode=mode, default_pool_size=1,
                                                  auth_type="trust",
                                                  track_extra_parameters="search_path"))
            for startup, sql, want in (
                    (dict(options="-c TimeZone=Asia/Tokyo", TimeZone="Europe/Paris"),
                     "show timezone", "Europe/Paris"),
                    (dict(options="-c TimeZone=Asia/Tokyo -c TimeZone=UTC -c TimeZone=UTC"),
                     "show timezone", "UTC"),
                    (dict(options="-c search_path=a -c search_path=b"), "show search_path", "b"),
                    (dict(options="-c DateStyle=German -c DateStyle=SQL,DMY",
                          client_encoding="LATIN1"),
                     "select current_setting('DateStyle') || current_setting('client_encoding')",
                     "SQL, DMYLATIN1")):
                with self.subTest(mode=mode, **startup):
                    self.assertIsNone(self.refusal(self.pg.host, self.pg.port, self.pg.password,
                                                   **startup))
                    s = socket.create_connection((px.host, px.port), timeout=20)
                    self.addCleanup(s.close)
                    params = hz.sync_login(s, self.pg.user, self.pg.database, **startup)
                    if sql == "show timezone":
                        self.assertEqual(params["TimeZone"], want)
                    for _ in range(2):
                        rows, errs = hz.simple_query(s, sql)
                        self.assertEqual(errs, [])
                        self.assertEqual(rows, [[want.encode()]])
                        if mode == "transaction":    # another client between, same server
                            self.assertEqual(px.psql("show timezone"),
                                             self.pg.psql("show timezone"))
                    s.close()
                    # what it SET and checked stays with it
                    self.assertEqual(px.psql("show timezone"), self.pg.psql("show timezone"))
            self.assertNotIn("param_sync", px.log())


class TestTrackExtraParameters(pt.PgwharfTestCase):
    def setUp(self):
        super().setUp()
        self.pg.psql("drop table if exists pgw_extra_t; create table pgw_extra_t(a int); "
                     "grant all on pgw_extra_t to public")
        self.addCleanup(self.pg.psql, "drop table if exists pgw_extra_t")

    def insert(self, conn):
        with conn.cursor() as cur:
            cur.execute("insert into pgw_extra_t values (1)")

    def test_extra_parameter_applied_per_client_on_one_server(self):
        px = self.start_pgwharf(settings=dict(
            TX1, auth_type="trust", track_extra_parameters="default_transaction_read_only"))
        # a: read-only by its startup packet (raw: libpq sends only known keys)
        s = socket.create_connection((px.host, px.port), timeout=10)
        self.addCleanup(s.close)
        ps = hz.sync_login(s, self.pg.user, self.pg.database,
                           default_transaction_read_only="on")
        self.assertEqual(ps.get("default_transaction_read_only"), "on")
        # b: plain; c: read-only through options
        b = connect(px, self)
        c = connect(px, self, options="-c default_transaction_read_only=on")
        self.assertEqual(c.get_parameter_status("default_transaction_read_only"), "on")
        self.assertEqual(b.get_parameter_status("default_transaction_read_only"), "off")
        for _ in range(2):
            rows, errs = hz.simple_query(s, "insert into pgw_extra_t values (1)")
            self.assertEqual([e.get("C") for e in errs], ["25006"])
            self.insert(b)
            with self.assertRaises(psycopg2.errors.ReadOnlySqlTransaction):
                self.insert(c)
        self.assertEqual(one(b, "select count(*) from pgw_extra_t"), 2)
        rows, _ = hz.simple_query(s, "select pg_backend_pid()")
        self.assertEqual(int(rows[0][0]), one(b, "select pg_backend_pid()"))
        # a SET by the client is followed: kept across b's and c's turns
        rows, errs = hz.simple_query(s, "set default_transaction_read_only = off")
        self.assertEqual(errs, [])
        with self.assertRaises(psycopg2.errors.ReadOnlySqlTransaction):
            self.insert(c)
        rows, errs = hz.simple_query(s, "insert into pgw_extra_t values (1)")
        self.assertEqual(errs, [])
        execute_set = "set default_transaction_read_only = on"
        with b.cursor() as cur:
            cur.execute(execute_set)
        with self.assertRaises(psycopg2.errors.ReadOnlySqlTransaction):
            self.insert(b)
        rows, errs = hz.simple_query(s, "insert into pgw_extra_t values (1)")
        self.assertEqual(errs, [])
        self.assertEqual(one(c, "show default_transaction_read_only"), "on")

    def test_statement_timeout_is_set_first(self):
        # The SETs at a link ran in tracked order, built-in ones first: under
        # a tiny statement_timeout the last client left on the server, one
        # could be cancelled and the client's query ran with that client's
        # TimeZone (hunt).  statement_timeout goes first now (order read
        # from PostgreSQL's statement log).
        role = "alter role %s set log_statement = %%s" % self.pg.user
        self.pg.psql(role % "'all'")
        self.addCleanup(self.pg.psql, role.replace("set log_statement = %s",
                                                   "reset log_statement"))
        px = self.start_pgwharf(settings=dict(TX1, track_extra_parameters="statement_timeout"))
        a = connect(px, self, options="-c statement_timeout=1234 -c TimeZone=Europe/Paris")
        b = connect(px, self, options="-c statement_timeout=4321 -c TimeZone=Asia/Tokyo")
        self.assertEqual(one(a, "select 1"), 1)
        start = os.path.getsize(self.pg.logfile)
        self.assertEqual(one(b, "show statement_timeout"), "4321ms")
        with open(self.pg.logfile, "rb") as f:
            f.seek(start)
            after = f.read().decode(errors="replace")
        st = after.find("set_config('statement_timeout'")
        ds = after.find("set_config('TimeZone'")
        self.assertTrue(0 <= st < ds, after[:3000])

    def test_a_refused_set_never_runs_the_request_with_another_clients_value(self):
        # The SETs at a link went with the client's request behind them:
        # where the server refused one (here a tracked role whose
        # membership was revoked since the login; an outside
        # pg_cancel_backend landing on a SET did the same, hunt), the
        # request ran with what the last client left on the server -- its
        # role.  The request waits for the SETs' answers now, a refused one
        # is tried again, and after three refusals the client gets the
        # server's SQLSTATE, its request never run.
        app = self.pg.app_user
        roles = "pgw_sync_r1, pgw_sync_r2"
        self.pg.psql("drop role if exists %s; create role pgw_sync_r1; create role pgw_sync_r2; "
                     "grant %s to %s" % (roles, roles, app))
        self.addCleanup(self.pg.psql, "drop role if exists %s" % roles)
        px = self.start_pgwharf(settings=dict(TX1, track_extra_parameters="role"))
        b = connect(px, self, options="-c role=pgw_sync_r2", user=app,
                    password=self.pg.app_password)
        a = socket.create_connection((px.host, px.port), timeout=10)   # (libpq reports a
        self.addCleanup(a.close)                 # FATAL then EOF mid-query as EOF alone)
        hz.sync_login(a, app, self.pg.database, self.pg.app_password, role="pgw_sync_r1")
        self.assertEqual(hz.simple_query(a, "select current_user"), ([[b"pgw_sync_r1"]], []))
        self.assertEqual(one(b, "select current_user"), "pgw_sync_r2")   # the server's now
        self.pg.psql("revoke pgw_sync_r1 from %s" % app)
        a.sendall(hz.query_msg("insert into pgw_extra_t values (1)"))
        t, body = hz.recv_msg(a)
        self.assertEqual((t, hz.parse_fields(body).get("C")), (b"E", "42501"), body)
        self.assertIn('permission denied to set role "pgw_sync_r1"', hz.parse_fields(body)["M"])
        with self.assertRaises(EOFError):
            hz.recv_msg(a)
        self.assertEqual(one(b, "select count(*) from pgw_extra_t"), 0)
        self.assertEqual(one(b, "select current_user"), "pgw_sync_r2")
        self.assertEqual(px.log().count("event=param_sync"), 3)

    def test_outside_cancels_on_the_sets_never_mix_two_clients_settings(self):
        # Two clients with their own tracked values take turns on one
        # server while a side connection cancels its backend in a loop
        # (any client of the same role may): a cancel landing on one of
        # the SETs at a link left the last client's value, and the query
        # behind the SETs ran with it (hunt: 145 wrong answers in 40 000).
        # Now the query waits for the SETs and a failed one is sent again;
        # each client sees its own values or an error, never the other's.
        # Client b sets half of them: the rest are RESET for it, and a
        # cancelled RESET was not sent again (review).
        names = ["myapp.v%d" % i for i in range(8)]
        px = self.start_pgwharf(settings=dict(
            TX1, track_extra_parameters=", ".join(names), query_timeout="20"))
        sql = "select " + ", ".join("current_setting('%s', true)" % n for n in names)
        wrong, counts, stop = [], {"ok": 0, "errors": 0}, threading.Event()

        def client(tag):
            mine = len(names) if tag == "a" else len(names) // 2
            opts = " ".join("-c %s=%s_%d" % (n, tag, i) for i, n in enumerate(names[:mine]))
            want = tuple("%s_%d" % (tag, i) for i in range(mine))
            conn = None
            for _ in range(50000):
                if stop.is_set():
                    break
                try:
                    if conn is None or conn.closed:
                        conn = psycopg2.connect(px.dsn(options=opts), connect_timeout=10,
                                                application_name="pgw_cancel_target")
                        conn.autocommit = True
                    cur = conn.cursor()
                    cur.execute(sql)
                    row = cur.fetchone()
                    if row[:mine] != want or any(v not in (None, "") for v in row[mine:]):
                        wrong.append((tag, row))
                    counts["ok"] += 1
                except psycopg2.Error:
                    counts["errors"] += 1      # a cancel on its own query, or its SETs'
                    if conn is not None and conn.closed:
                        conn = None
            if conn is not None:
                conn.close()

        # Until cancels landed on SETs a few times (each logged), and
        # enough queries ran: the load is bounded by the clients' count.
        run_under_cancels(self.pg, client, stop, lambda: (
            counts["ok"] >= 3000 and px.log().count("event=param_sync") >= 3),
            60, "cancels landing on SETs")
        self.assertEqual(wrong[:5], [])
        self.assertGreaterEqual(px.log().count("event=param_sync"), 3, counts)

    def test_an_outside_cancel_on_a_login_set_does_not_end_the_login(self):
        # In session mode a login that takes a server (the pool's first:
        # no server has logged in yet) has the client's values SET there
        # before the welcome.  A SET cancelled from outside (any client of
        # the role may) ended the login with 57014, as if the server had
        # refused the value; now the SETs go again, as at a link in
        # transaction mode.  The cancel lands on the SET for sure: the
        # SET of default_tablespace looks the name up in pg_tablespace,
        # which the test holds locked, so the SET waits on the lock until
        # cancelled -- and its second round until the test lets go.  (A
        # cancel loop beside logins in turn left it to chance: a login
        # takes a server only while the pool has none, and under load no
        # cancel met such a login's SET within the test's 90 s.)
        names = ["myapp.v%d" % i for i in range(3)]
        key, marker = 4501, "set_config('default_tablespace'"
        cq = "select pg_advisory_xact_lock_shared(%d) /* pgw_login_cq */" % key
        px = self.start_pgwharf(
            settings=dict(pool_mode="session", default_pool_size=1, query_timeout="60",
                          server_connect_timeout="60",
                          track_extra_parameters=", ".join(["default_tablespace"] + names)),
            databases={self.pg.database: self.pg.conn_string(self.pg.database,
                                                             connect_query=cq)})
        opts = "-c default_tablespace=pg_default " + " ".join(
            "-c %s=v_%d" % (n, i) for i, n in enumerate(names))
        gate = psycopg2.connect(self.pg.dsn(), connect_timeout=10)
        self.addCleanup(gate.close)
        gate.autocommit = True
        cur = gate.cursor()
        cur.execute("select pg_advisory_lock(%d)" % key)
        c = socket.create_connection((px.host, px.port), timeout=60)
        self.addCleanup(c.close)
        login = pt.Background(lambda: hz.sync_login(c, self.pg.user, self.pg.database,
                                                    self.pg.password, options=opts))
        # The login's server is held in its connect_query; pg_tablespace is
        # locked then, once that backend has started: one starting while
        # it is locked may have to read every catalog (its relcache init
        # file gone) and would wait on the lock too.  For the same reason
        # the test asks PostgreSQL only on the gate's connection from here.
        self.pg.wait_running("pgw_login_cq", lock_wait=True)
        gate.autocommit = False
        cur.execute("lock table pg_catalog.pg_tablespace in access exclusive mode")
        cur.execute("select pg_advisory_unlock(%d)" % key)

        def set_waiting():
            cur.execute("select pg_stat_clear_snapshot()")
            cur.execute("select pid from pg_stat_activity where wait_event_type = 'Lock' "
                        "and query like %s and pid <> pg_backend_pid()", ("%" + marker + "%",))
            return [r[0] for r in cur.fetchall()]
        try:
            pid = pt.wait_until(set_waiting, 30, what="the login's SET waiting on the lock")[0]
            cur.execute("select pg_cancel_backend(%s)", (pid,))
            self.assertEqual(cur.fetchone(), (True,))
            pt.wait_until(lambda: "sqlstate=57014" in px.log() or not login.is_alive(), 30,
                          what="the cancelled SET logged (event=param_sync)")
            if login.is_alive():
                pt.wait_until(set_waiting, 30, what="its second round waiting on the lock")
        finally:
            gate.rollback()
        login.join(60)
        self.assertFalse(login.is_alive(), "the login still waits")
        self.assertIsNone(login.error, px.log_tail())
        self.assertEqual(len(re.findall(r"event=param_sync .*sqlstate=57014", px.log())), 1,
                         px.log_tail())
        rows, errs = hz.simple_query(c, "show default_tablespace")
        self.assertEqual((rows, errs), ([[b"pg_default"]], []))
        rows, errs = hz.simple_query(c, "select " + ", ".join(
            "current_setting('%s')" % n for n in names))
        self.assertEqual((rows, errs), ([[b"v_0", b"v_1", b"v_2"]], []))

    def test_a_refused_reset_is_sent_again(self):
        # A RESET queued at a link (the client never set the parameter,
        # the last client did) dropped pgwharf's record of the value at
        # once; refused, the next round found nothing to do, and the
        # request ran with the last client's value (review).  Here the
        # RESET is refused for good (SET privilege on the parameter revoked
        # since client a set it): the client gets the refusal, never a's
        # value.
        app = self.pg.app_user
        grant = "grant set on parameter session_replication_role to %s" % app
        self.pg.psql(grant)
        self.addCleanup(self.pg.psql, grant.replace("grant", "revoke").replace(" to ", " from "))
        px = self.start_pgwharf(settings=dict(
            TX1, track_extra_parameters="session_replication_role"))
        kw = dict(user=app, password=self.pg.app_password)
        a = connect(px, self, options="-c session_replication_role=replica", **kw)
        self.assertEqual(one(a, "show session_replication_role"), "replica")
        self.pg.psql(grant.replace("grant", "revoke").replace(" to ", " from "))
        b = socket.create_connection((px.host, px.port), timeout=10)
        self.addCleanup(b.close)
        hz.sync_login(b, app, self.pg.database, self.pg.app_password)
        b.sendall(hz.query_msg("show session_replication_role"))
        t, body = hz.recv_msg(b)
        self.assertEqual((t, hz.parse_fields(body).get("C")), (b"E", "42501"), body)
        with self.assertRaises(EOFError):
            hz.recv_msg(b)

    def test_a_large_message_behind_the_sets_is_read_whole(self):
        # With max_prepared_statements on, a Bind is read whole before it
        # goes on.  One larger than the buffer, sent while the SETs at its
        # link ran, filled the buffer unscanned (the read stopped there);
        # once they were answered the buffer grew for it but nothing read
        # the rest: the session hung with its server (review).
        px = self.start_pgwharf(settings=dict(TX1, max_prepared_statements="100"))
        a = connect(px, self, application_name="pgw_a")
        s = socket.create_connection((px.host, px.port), timeout=20)
        self.addCleanup(s.close)
        hz.sync_login(s, self.pg.user, self.pg.database, self.pg.password,
                      application_name="pgw_b")
        s.sendall(hz.parse_msg("s1", "select length($1::text)") + hz.msg(b"S"))
        hz.read_until_ready(s)
        for _ in range(2):
            self.assertEqual(one(a, "select 1"), 1)      # the server has a's name now
            s.sendall(hz.ext_msgs(None, "y" * 3000000, parse=False, stmt="s1"))
            got = hz.read_until_ready(s)
            self.assertEqual([hz.data_row(m) for t, m in got if t == b"D"], [[b"3000000"]])

    def test_not_tracked_without_the_key(self):
        px = self.start_pgwharf(settings=TX1)
        with self.assertRaises(psycopg2.OperationalError) as cm:
            psycopg2.connect(px.dsn(options="-c default_transaction_read_only=on"))
        self.assertIn("unsupported startup parameter in options: "
                      "default_transaction_read_only", str(cm.exception))

    def test_unreported_extra_parameter_set_at_login(self):
        # search_path is not reported (PostgreSQL 15): kept as the client
        # logged in with it, SET again where another client's value was.
        px = self.start_pgwharf(settings=dict(TX1, track_extra_parameters="Search_Path"))
        a = connect(px, self, options=r"-c search_path=pg_catalog,\ public")
        b = connect(px, self)
        # a long one, whole (list elements as a startup parameter gives them)
        c = connect(px, self,
                    options="-c search_path=" + ",\\ ".join("s%03d" % i for i in range(150)))
        default = self.pg.psql("show search_path")
        for _ in range(2):
            self.assertEqual(one(a, "show search_path"), "pg_catalog, public")
            self.assertEqual(one(b, "show search_path"), default)
            self.assertEqual(one(c, "show search_path"), ", ".join("s%03d" % i for i in range(150)))

    def test_a_clients_own_set_of_an_unreported_parameter_does_not_reach_the_next(self):
        # The server does not report extra_float_digits or search_path: a
        # client's own SET, set_config() or DISCARD ALL went unseen, the
        # record of what pgwharf had SET stayed, and the next client on
        # that server got the value instead of its login's.
        px = self.start_pgwharf(settings=dict(TX1, track_extra_parameters="search_path"))
        opts = "-c extra_float_digits=2 -c search_path=pg_catalog"
        a, b = connect(px, self, options=opts), connect(px, self, options=opts)
        plain = connect(px, self)
        default = self.pg.psql("show search_path")
        self.assertEqual(one(a, "show search_path"), "pg_catalog")
        for change in (# names that are expressions, not literals
                       "select set_config('extra_float' || '_digits', '0', false), "
                       "set_config('search_' || 'path', 'public', false)",
                       "update pg_settings set setting = 'public' where name = 'search_' || 'path';"
                       "update pg_settings set setting = '0' where name = 'extra_float' || '_digits'",
                       "SET extra_float_digits = 0; SET search_path = public",
                       "select set_config('extra_float_digits', '0', false), "
                       "set_config('search_path', 'public', false)",
                       "DISCARD ALL", "RESET ALL"):
            with self.subTest(change=change):
                a.cursor().execute(change)
                self.assertEqual(one(b, "show extra_float_digits"), "2")
                self.assertEqual(one(b, "show search_path"), "pg_catalog")
                a.cursor().execute(change)
                self.assertEqual(one(plain, "show extra_float_digits"), "1")
                self.assertEqual(one(plain, "show search_path"), default)
        self.assertEqual(one(a, "select pg_backend_pid()"), one(b, "select pg_backend_pid()"))

    def test_a_prepared_set_config_bound_later_does_not_reach_the_next(self):
        # With max_prepared_statements, a statement Parsed in one
        # transaction runs later from a Bind alone: its text is what may
        # change the parameter.
        px = self.start_pgwharf(settings=dict(TX1, auth_type="trust", max_prepared_statements=10))
        a = socket.create_connection((px.host, px.port), timeout=10)
        self.addCleanup(a.close)
        hz.sync_login(a, self.pg.user, self.pg.database)
        b = connect(px, self)
        sync = b"S\0\0\0\x04"
        a.sendall(hz.parse_msg("s1", "select set_config('extra_float_digits', '0', false)") +
                  sync)
        hz.read_until_ready(a)
        self.assertEqual(one(b, "show extra_float_digits"), "1")
        bind = b"B" + struct.pack("!I", 4 + 1 + 3 + 6) + b"\0s1\0" + struct.pack("!HHH", 0, 0, 0)
        execute = b"E" + struct.pack("!I", 9) + b"\0" + struct.pack("!I", 0)
        a.sendall(bind + execute + sync)
        hz.read_until_ready(a)
        self.assertEqual(one(b, "show extra_float_digits"), "1")

    def test_changes_not_naming_the_parameter_do_not_reach_the_next(self):
        # set_config with its name bound ($1: psycopg 3, asyncpg), and
        # SQL's own spellings (SET SCHEMA, SET XML OPTION, SET SESSION
        # CHARACTERISTICS) changed an unreported tracked parameter with no
        # word of its name: unseen, they reached the next client.
        names = ("extra_float_digits", "search_path", "xmloption",
                 "default_transaction_isolation")
        px = self.start_pgwharf(settings=dict(TX1, auth_type="trust", track_extra_parameters=
                                              ", ".join(names[1:])))
        a = socket.create_connection((px.host, px.port), timeout=10)
        self.addCleanup(a.close)
        hz.sync_login(a, self.pg.user, self.pg.database)
        b = connect(px, self)
        fresh = {n: one(b, "show " + n) for n in names}
        for change in (hz.ext_msgs("select set_config($1, $2, false)", "extra_float_digits", "0"),
                       hz.ext_msgs("select set_config($1, $2, false)", "search_path", "pg_catalog"),
                       hz.query_msg("SET SCHEMA 'pg_catalog'"),
                       hz.query_msg("SET XML OPTION DOCUMENT"),
                       hz.query_msg("SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL "
                                    "SERIALIZABLE")):
            with self.subTest(change=change):
                a.sendall(change)
                got = hz.read_until_ready(a)
                self.assertNotIn(b"E", [t for t, _ in got], got)
                self.assertEqual({n: one(b, "show " + n) for n in names}, fresh)
        rows, _ = hz.simple_query(a, "select pg_backend_pid()")
        self.assertEqual(int(rows[0][0]), one(b, "select pg_backend_pid()"))

    def test_a_statement_prepared_before_and_run_later_does_not_reach_the_next(self):
        # A SET run from a statement prepared in an earlier transaction (SQL
        # PREPARE then EXECUTE; a named Parse then a Bind with
        # max_prepared_statements = 0): the text that runs was not seen.
        for ps in (10, 0):
            with self.subTest(max_prepared_statements=ps):
                px = self.start_pgwharf(settings=dict(
                    TX1, auth_type="trust", max_prepared_statements=ps,
                    track_extra_parameters="search_path"))
                a = socket.create_connection((px.host, px.port), timeout=10)
                self.addCleanup(a.close)
                hz.sync_login(a, self.pg.user, self.pg.database)
                b = connect(px, self)
                fresh = one(b, "show search_path")
                runs = [hz.query_msg("EXECUTE p('pg_catalog')"),
                        hz.query_msg("EXPLAIN ANALYZE EXECUTE p('pg_catalog')"),
                        hz.query_msg("CREATE TEMP TABLE x AS EXECUTE p('pg_catalog')")]
                _, errs = hz.simple_query(
                    a, "PREPARE p(text) AS SELECT set_config('search_path', $1, false)")
                self.assertEqual(errs, [])
                if ps == 0:
                    a.sendall(hz.parse_msg("s1", "SET search_path = pg_catalog") + hz.msg(b"S"))
                    self.assertEqual(hz.read_until_ready(a)[0][0], b"1")
                    runs.insert(0, hz.ext_msgs("", parse=False, stmt="s1", describe=False))
                for run in runs:
                    self.assertEqual(one(b, "show search_path"), fresh)
                    a.sendall(run)
                    self.assertNotIn(b"E", [t for t, _ in hz.read_until_ready(a)])
                    self.assertEqual(one(b, "show search_path"), fresh)
                rows, _ = hz.simple_query(a, "select pg_backend_pid()")
                self.assertEqual(int(rows[0][0]), one(b, "select pg_backend_pid()"))

    def test_connect_querys_values_stay_for_clients_that_never_set_them(self):
        # connect_query SETs search_path and extra_float_digits, which the
        # server does not report.  Once a client's text named one (a SHOW
        # is enough), pgwharf RESET it for the next client, to the server's
        # default, not the fresh server's connect_query value.
        cq = "SET search_path = pg_catalog; SET extra_float_digits = 0"
        px = self.start_pgwharf(
            settings=dict(TX1, track_extra_parameters="search_path"),
            databases={self.pg.database: self.pg.conn_string(self.pg.database,
                                                             connect_query=cq)})
        names = ("search_path", "extra_float_digits")
        fresh = {"search_path": "pg_catalog", "extra_float_digits": "0"}
        a = connect(px, self)
        b = connect(px, self, options="-c search_path=public -c extra_float_digits=2")
        for touch in ("show search_path", "SET search_path = public; SET extra_float_digits = 3",
                      "RESET ALL"):
            with self.subTest(touch=touch):
                self.assertEqual({n: one(a, "show " + n) for n in names}, fresh)
                a.cursor().execute(touch)
                self.assertEqual({n: one(b, "show " + n) for n in names},
                                 {"search_path": "public", "extra_float_digits": "2"})
                self.assertEqual({n: one(a, "show " + n) for n in names}, fresh)
        self.assertEqual(one(a, "select pg_backend_pid()"), one(b, "select pg_backend_pid()"))

    def test_show_config_and_reload_keeps_it(self):
        px = self.start_pgwharf(settings=dict(TX1, track_extra_parameters=
                                              "default_transaction_read_only, IntervalStyle"))
        row = px.show("CONFIG", key="track_extra_parameters")[0]
        self.assertEqual(row["value"], "default_transaction_read_only, IntervalStyle")
        self.assertEqual(row["changeable"], "no")
        px.settings["track_extra_parameters"] = "search_path"
        px.reload()
        px.wait_for_log(r"key=track_extra_parameters running=.*restart applies it")
        row = px.show("CONFIG", key="track_extra_parameters")[0]
        self.assertEqual(row["value"], "default_transaction_read_only, IntervalStyle")
        conn = connect(px, self, options="-c default_transaction_read_only=on")
        self.assertEqual(one(conn, "show default_transaction_read_only"), "on")
        with self.assertRaises(psycopg2.OperationalError):
            psycopg2.connect(px.dsn(options="-c search_path=x"))

    def test_bad_values_refused_with_their_line(self):
        px = self.start_pgwharf(start=False)
        for value, text in (("default-transaction-read-only", "is not a parameter name"),
                            ("a..b", "is not a parameter name"),
                            ("x" * 48, "is not a parameter name"),
                            (",".join("p%d" % i for i in range(17)), "more than 16 names")):
            px.settings["track_extra_parameters"] = value
            cp = px.check()
            self.assertNotEqual(cp.returncode, 0, value)
            self.assertRegex(cp.stdout + cp.stderr,
                             r"pgwharf\.ini:\d+: track_extra_parameters: .*" + text)
        px.settings["track_extra_parameters"] = ",".join("p%d" % i for i in range(16)) + ",P0"
        self.assertEqual(px.check().returncode, 0)


# A POSIX TimeZone spec of 206 bytes (PostgreSQL takes up to 255) and a
# search_path of some 1,700: longer than a server's record of a parameter
# held before (80 bytes), than what it keeps without allocating, and (the
# search_path) than the 1,024 bytes a server's reply was kept to at login.
LONG_TZ = "<" + "PGWLONGZONE" * 18 + "Z>+3"
LONG_SCHEMA = "pgw_long_cq_schema"
LONG_SEARCH_PATH = ", ".join([LONG_SCHEMA] + ["pgw_absent_schema_%03d_%s" % (i, "x" * 32)
                                             for i in range(30)] + ["public"])


class TestLongParameterValues(pt.PgwharfTestCase):
    """Parameter values of any length PostgreSQL takes are what pgwharf
    records of a server and a pool: a long one was dropped from the record
    (connect_query's, a [databases] timezone=), and the client got another
    value than a fresh server's, or none in its welcome."""

    def test_connect_querys_long_search_path_stays_for_a_client_that_never_set_it(self):
        self.pg.psql("drop schema if exists %s cascade; drop table if exists public.pgw_long_t; "
                     "create schema %s; create table %s.pgw_long_t(x text); "
                     "insert into %s.pgw_long_t values ('schema'); "
                     "create table public.pgw_long_t(x text); "
                     "insert into public.pgw_long_t values ('public'); "
                     "grant usage on schema %s to public"
                     % ((LONG_SCHEMA,) * 5))
        self.addCleanup(self.pg.psql, "drop schema if exists %s cascade; "
                        "drop table if exists public.pgw_long_t" % LONG_SCHEMA)
        cq = "SET search_path = " + LONG_SEARCH_PATH
        self.assertGreater(len(LONG_SEARCH_PATH), 1024)
        px = self.start_pgwharf(
            settings=dict(TX1, track_extra_parameters="search_path"),
            databases={self.pg.database: self.pg.conn_string(self.pg.database,
                                                             connect_query=cq)})
        a = connect(px, self)
        b = connect(px, self, options="-c search_path=public")
        sql = "select current_setting('search_path'), (select x from pgw_long_t)"
        assert_reads_in_turn(self, a, sql, (LONG_SEARCH_PATH, "schema"),
                             b, "select x from pgw_long_t", "public")

    def test_a_value_past_pgwharfs_limit_fails_its_own_pool_alone(self):
        # A connect_query whose read-back value is longer than pgwharf keeps
        # (1 MiB) fails that pool's logins; it counted as the backend's
        # failure and opened the breaker for every pool on the host
        # (review): another entry's clients got the same FATAL.
        names = ",".join("pgw_%s_%05d" % ("n" * 44, i) for i in range(20000))
        self.assertGreater(len(names), 1 << 20)
        px = self.start_pgwharf(
            settings=dict(TX1, track_extra_parameters="search_path", breaker_threshold=2),
            databases={self.pg.database: self.pg.conn_string(
                           self.pg.database, connect_query="SET search_path = " + names),
                       "other": self.pg.conn_string(self.pg.database)})
        for _ in range(3):
            with self.assertRaises(psycopg2.Error) as cm:
                c = psycopg2.connect(px.dsn())
                try:
                    one(c, "select 1")
                finally:
                    c.close()
            self.assertIn("too long to keep", str(cm.exception))
        c = psycopg2.connect(px.dsn(db="other"))
        self.addCleanup(c.close)
        self.assertEqual(one(c, "select 'other'"), "other")
        self.assertNotIn("open", [r["state"] for r in px.show("BREAKERS")])

    def test_connect_querys_long_timezone_is_the_welcomes_and_stays(self):
        cq = "SET TimeZone = '%s'" % LONG_TZ
        px = self.start_pgwharf(
            settings=TX1,
            databases={self.pg.database: self.pg.conn_string(self.pg.database,
                                                             connect_query=cq)})
        a = connect(px, self)
        self.assertEqual(a.get_parameter_status("TimeZone"), LONG_TZ)
        b = connect(px, self, options="-c TimeZone=Asia/Tokyo")
        self.assertEqual(b.get_parameter_status("TimeZone"), "Asia/Tokyo")
        assert_reads_in_turn(self, a, "show timezone", (LONG_TZ,),
                             b, "show timezone", "Asia/Tokyo")
        # and for a client that comes after them, welcomed without a server
        c = connect(px, self)
        self.assertEqual(c.get_parameter_status("TimeZone"), LONG_TZ)
        self.assertEqual(one(c, "show timezone"), LONG_TZ)

    def test_a_long_timezone_of_the_entry_is_in_the_welcome(self):
        for mode in ("transaction", "session"):
            with self.subTest(mode=mode):
                px = self.start_pgwharf(
                    settings=dict(TX1, pool_mode=mode),
                    databases={self.pg.database: self.pg.conn_string(self.pg.database,
                                                                     timezone=LONG_TZ)})
                a = connect(px)
                try:
                    self.assertEqual(a.get_parameter_status("TimeZone"), LONG_TZ)
                    self.assertEqual(one(a, "show timezone"), LONG_TZ)
                finally:
                    a.close()
                px.stop()


class ManyParamsServer(hz.QueryServer):
    """A PostgreSQL look-alike (no password asked) that reports `many`
    parameters of its own (ParameterStatus pgw.p0, pgw.p1, ...) in its
    answer to connect_query SET pgw.many = 1 -- a server with extensions
    that report more than PostgreSQL's -- and a row 'ok' to any other
    query (connect_query's read-back: none)."""

    LOGIN = (("server_version", "15.0"), ("server_encoding", "UTF8"),
             ("client_encoding", "UTF8"), ("DateStyle", "ISO, MDY"),
             ("IntervalStyle", "postgres"), ("TimeZone", "UTC"),
             ("integer_datetimes", "on"), ("standard_conforming_strings", "on"),
             ("application_name", ""), ("is_superuser", "off"),
             ("session_authorization", "u"), ("default_transaction_read_only", "off"),
             ("in_hot_standby", "off"))

    def __init__(self, many):
        self.many = many
        super().__init__()

    def answer(self, sql):
        if sql == "SET pgw.many = 1":
            out = b"".join(self._msg(b"S", b"pgw.p%d\0on\0" % i) for i in range(self.many))
            out += self._msg(b"C", b"SET\0")
        elif "pg_catalog.pg_settings" in sql:
            out = self._msg(b"T", struct.pack("!H", 2) +
                            2 * (b"x\0" + struct.pack("!IHIhih", 0, 0, 25, -1, -1, 0)))
            out += self._msg(b"C", b"SELECT 0\0")
        else:
            out = self._msg(b"T", struct.pack("!H", 1) + b"x\0" +
                            struct.pack("!IHIhih", 0, 0, 25, -1, -1, 0))
            out += self._msg(b"D", struct.pack("!HI", 1, 2) + b"ok")
            out += self._msg(b"C", b"SELECT 1\0")
        return out, True


class TestParameterLimit(pt.PgwharfTestCase):
    """A server's record holds PGW_MAX_PARAMS (40) parameters: one that
    reports more is refused as pgwharf's limit (54000), the pool's own
    refusal, not as "out of memory" (53200)."""

    def test_a_server_reporting_more_than_pgwharf_keeps_is_its_limit(self):
        # Past 40 names the record was full, and the login failed with
        # 53200 "out of memory for the server's pgw.p27 during
        # connect_query": no memory was short.
        fake = ManyParamsServer(many=40)
        self.addCleanup(fake.close)
        entry = dict(host="127.0.0.1", port=fake.port, dbname="x", user="u", password="p")
        px = self.start_pgwharf(
            settings=dict(TX1, auth_type="any", breaker_threshold=1),
            databases={"many": pt.entry_conninfo(connect_query="SET pgw.many = 1", **entry),
                       "other": pt.entry_conninfo(**entry)})
        for _ in range(3):
            s = socket.create_connection((px.host, px.port), timeout=20)
            self.addCleanup(s.close)
            with self.assertRaises(hz.PgError) as cm:
                hz.sync_login(s, "u", "many")
            self.assertEqual(cm.exception.sqlstate, "54000", cm.exception.fields)
            self.assertIn("more than 40 parameters", cm.exception.fields["M"])
        # the pool's refusal: the host is up for another entry
        s = socket.create_connection((px.host, px.port), timeout=20)
        self.addCleanup(s.close)
        hz.sync_login(s, "u", "other")
        rows, errs = hz.simple_query(s, "select 'ok'")
        self.assertEqual((rows, errs), ([[b"ok"]], []))
        self.assertNotIn("open", [r["state"] for r in px.show("BREAKERS")])


class TestDateStyleOfOnePart(pt.PgwharfTestCase):
    def test_a_login_datestyle_of_one_part_completes_as_on_a_fresh_server(self):
        # A DateStyle of one part (PGDATESTYLE=SQL) keeps the other part of
        # the value it replaces: pgwharf SET it on a server still holding
        # the last client's "ISO, DMY", and the client read 03/04/05 as
        # 3 April 2005 where PostgreSQL gives "SQL, MDY" (4 March).
        px = self.start_pgwharf(settings=TX1)
        a = connect(px, self, options=r"-c DateStyle=ISO,\ DMY")
        self.assertEqual(one(a, "show DateStyle"), "ISO, DMY")
        read = "select to_char('03/04/05'::date, 'YYYY-MM-DD'), current_setting('DateStyle')"
        for part in ("SQL", "YMD", "German"):
            with self.subTest(part=part):
                want = direct_row(self, read, options="-c DateStyle=" + part)
                b = connect(px, self, options="-c DateStyle=" + part)
                self.assertEqual(b.get_parameter_status("DateStyle"), want[1])
                assert_reads_in_turn(self, b, read, want, a, "show DateStyle", "ISO, DMY")


    def test_a_datestyle_of_one_part_after_another_completes_it_as_postgresql_does(self):
        # PostgreSQL applies a login's values in turn: a DateStyle of one
        # part keeps the other part of the one before it.  pgwharf SET the
        # last alone on a fresh server's "ISO, MDY": "-c DateStyle=German
        # -c DateStyle=SQL" gave "SQL, MDY" (03/04/05 read as 4 March)
        # where PostgreSQL gives "SQL, DMY" (3 April).
        px = self.start_pgwharf(settings=TX1)
        a = connect(px, self, options=r"-c DateStyle=ISO,\ YMD")
        self.assertEqual(one(a, "show DateStyle"), "ISO, YMD")
        read = "select to_char('03/04/05'::date, 'YYYY-MM-DD'), current_setting('DateStyle')"
        for opts in ("-c DateStyle=German -c DateStyle=SQL",
                     "-c DateStyle=SQL -c DateStyle=YMD",
                     "-c DateStyle=YMD -c DateStyle=German",
                     "-c DateStyle=euro --DateStyle=sql",
                     "-c DateStyle=German -c DateStyle=default",
                     r"-c DateStyle=SQL,\ YMD -c DateStyle=DEFAULT -c DateStyle=Postgres"):
            with self.subTest(options=opts):
                # (psycopg2 SETs DateStyle ISO where it is not: psql tells
                # the style part too.)
                self.assertEqual(psql_with_pgoptions(px, "show DateStyle", opts),
                                 psql_with_pgoptions(None, "show DateStyle", opts,
                                                     dsn=self.pg.dsn()))
                want = direct_row(self, read, options=opts)
                b = connect(px, self, options=opts)
                self.assertEqual(b.get_parameter_status("DateStyle"), want[1])
                assert_reads_in_turn(self, b, read, want, a, "show DateStyle", "ISO, YMD")


class TestClientEncodingSpelling(pt.PgwharfTestCase):
    def test_asyncpg_logs_in_without_a_server(self):
        # asyncpg sends client_encoding 'utf-8'; the server reports UTF8,
        # the same encoding to PostgreSQL (letters and digits, any case).
        # pgwharf took it for a value to SET, so every asyncpg login in
        # transaction mode waited for a server: with the pool busy, it
        # failed at query_wait_timeout (hunt).  It is welcomed at once now,
        # with the server's spelling, as PostgreSQL reports it.
        import asyncio
        import asyncpg
        px = self.start_pgwharf(settings=dict(TX1, query_wait_timeout="5"))
        holder = connect(px, self)
        self.assertEqual(one(holder, "select 1"), 1)      # the pool knows a fresh server
        holder.autocommit = False
        one(holder, "select 1")                           # holds the pool's one server

        async def main():
            c = await asyncpg.connect(px.url(), timeout=20)
            try:
                got = c.get_settings().client_encoding
                holder.commit()
                return got, await c.fetchval("show client_encoding")
            finally:
                await c.close()

        self.assertEqual(asyncio.run(asyncio.wait_for(main(), 60)), ("UTF8", "UTF8"))


class TestSetConfigQuoting(pt.PgwharfTestCase):
    """A tracked value is SET again on the server with set_config(); the
    server reads that query in the client's client_encoding.  In SJIS (and
    BIG5, GBK, UHC, GB18030) the second byte of a character may be 0x5C,
    a backslash: an E'' literal built byte by byte (backslashes doubled)
    loses the doubling to that character, and what follows the lone
    backslash is read as an escape: a quote after it goes unescaped."""

    NOTE = "pgw.note"                # a custom parameter: takes any text

    def login(self, px, **startup):
        s = socket.create_connection((px.host, px.port), timeout=10)
        self.addCleanup(s.close)
        hz.sync_login(s, self.pg.user, self.pg.database, client_encoding="SJIS", **startup)
        return s

    def test_sjis_character_ending_in_backslash_byte(self):
        # 0x95 0x5C is one SJIS character; before, the login failed with
        # 22P06 "unsafe use of \' in a string literal".
        px = self.start_pgwharf(settings=dict(TX1, auth_type="trust",
                                              track_extra_parameters=self.NOTE))
        value = b"\x95\x5c"
        s = self.login(px, **{self.NOTE: value})
        for _ in range(2):
            rows, errs = hz.simple_query(s, "select current_setting('%s')" % self.NOTE)
            self.assertEqual(errs, [])
            self.assertEqual(rows, [[value]])
        self.assertNotIn("param_sync", px.log())

    def test_sjis_value_cannot_leave_the_literal(self):
        # With backslash_quote on (any user may set it), the quote after
        # the lone backslash was taken as escaped and the next one ended
        # the literal: the rest of the value ran as SQL (here a SET the
        # proxy never saw).
        px = self.start_pgwharf(settings=dict(
            TX1, auth_type="trust", track_extra_parameters="backslash_quote, " + self.NOTE))
        default = self.pg.psql("show work_mem")
        value = b"\x95\x5c', false); set work_mem = 1234; --"
        s = self.login(px, backslash_quote="on", **{self.NOTE: value})
        for _ in range(2):
            rows, errs = hz.simple_query(
                s, "select current_setting('work_mem'), current_setting('%s')" % self.NOTE)
            self.assertEqual(errs, [])
            self.assertEqual(rows, [[default.encode(), value]])
        # and dollar quoting is not fooled by the delimiter in the value
        for value in (b"$pgw$', false); set work_mem = 1234; --", b"a$pgw", b"$", b"",
                      b"$pgw$$pgw1$\\'"):
            s = self.login(px, **{self.NOTE: value})
            rows, errs = hz.simple_query(
                s, "select current_setting('work_mem'), current_setting('%s')" % self.NOTE)
            self.assertEqual(errs, [], value)
            self.assertEqual(rows, [[default.encode(), value]], value)


if __name__ == "__main__":
    unittest.main()


class TestNonAsciiLoginValue(pt.PgwharfTestCase):
    def test_a_login_value_is_taken_as_it_came_in_any_client_encoding(self):
        # PostgreSQL takes a startup value's bytes as they came.  pgwharf
        # SET an unreported one (search_path) with set_config after the
        # client's client_encoding: a LATIN1 client's UTF-8 'sché' was
        # read as LATIN1, 'schÃ©', and its schema was not found.
        self.pg.psql('create schema if not exists "sch\u00e9"')
        self.addCleanup(self.pg.psql, 'drop schema if exists "sch\u00e9"')
        px = self.start_pgwharf(settings=dict(TX1, track_extra_parameters="search_path"))
        read = ("select encode(convert_to(current_setting('search_path'), 'UTF8'), 'hex'), "
                "current_schema()")
        opts = "-c search_path=sch\u00e9"
        other = connect(px, self, client_encoding="UTF8")
        default = one(other, "show search_path")
        for enc in ("LATIN1", "UTF8"):
            with self.subTest(client_encoding=enc):
                want = direct_row(self, read, options=opts, client_encoding=enc)
                self.assertEqual(want[0], "736368c3a9")
                c = connect(px, self, options=opts, client_encoding=enc)
                assert_reads_in_turn(self, c, read, want, other, "show search_path", default)


    def test_an_application_name_postgresql_cleans(self):
        # PostgreSQL cleans a startup application_name's bytes that are not
        # printable ASCII ('?' up to 15, \xNN from 16).  pgwharf's SET of
        # the value was read in the client's encoding first: a LATIN1
        # client's UTF-8 'é' came out '????' where PostgreSQL says '??',
        # and bytes that are not UTF-8 failed the login (22021).
        px = self.start_pgwharf(settings=TX1)
        read = "select encode(convert_to(current_setting('application_name'), 'UTF8'), 'hex')"
        other = connect(px, self)
        for enc, name in (("LATIN1", b"\xc3\xa9"), ("UTF8", b"x\xff\xfey")):
            with self.subTest(client_encoding=enc, name=name):
                s = socket.create_connection((self.pg.host, self.pg.port), timeout=10)
                self.addCleanup(s.close)
                params = {"client_encoding": enc, "application_name": name}
                hz.sync_login(s, self.pg.user, self.pg.database, self.pg.password, **params)
                want, errs = hz.simple_query(s, read)
                self.assertEqual(errs, [])
                c = socket.create_connection((px.host, px.port), timeout=10)
                self.addCleanup(c.close)
                hz.sync_login(c, self.pg.user, self.pg.database, self.pg.password, **params)
                for _ in range(2):
                    self.assertEqual(hz.simple_query(c, read), (want, []))
                    self.assertEqual(one(other, "show application_name"), "")

    def test_a_long_application_name_is_cut_before_it_is_cleaned(self):
        # PostgreSQL cuts a startup application_name to 63 bytes, not
        # splitting a character of the database's encoding, and then
        # cleans what is left.  pgwharf cleaned first and the server cut
        # the cleaned text: 'é' x 40 came out 63 '?' where PostgreSQL
        # keeps 62, and 'a' x 62 + 'é' as 'a' x 62 + '?'.
        px = self.start_pgwharf(settings=TX1)
        read = ("select current_setting('application_name'), application_name "
                "from pg_stat_activity where pid = pg_backend_pid()")
        for name in ("\u00e9" * 40, "a" * 62 + "\u00e9", "a" * 61 + "\u20ac",
                     "a" * 60 + "\U0001f600", "a" * 70):
            with self.subTest(name=name):
                got = []
                for host, port in ((self.pg.host, self.pg.port), (px.host, px.port)):
                    s = socket.create_connection((host, port), timeout=10)
                    self.addCleanup(s.close)
                    ps = hz.sync_login(s, self.pg.user, self.pg.database, self.pg.password,
                                       application_name=name.encode())
                    got.append((ps.get("application_name"), hz.simple_query(s, read)))
                    s.close()
                self.assertLessEqual(len(got[0][0]), 63)
                self.assertEqual(got[1], got[0])


class TestLibpqEnvironment(pt.PgwharfTestCase):
    """pgwharf makes server connections with libpq, which would fill what
    the config leaves out from PG* variables and send PGTZ/PGDATESTYLE as
    settings: the environment pgwharf was started in must not reach its
    servers (the config alone says how they log in)."""

    def test_pg_variables_do_not_reach_server_connections(self):
        env = {"PGOPTIONS": "-c pgw.leak=from_env", "PGTZ": "Pacific/Chatham",
               "PGDATESTYLE": "SQL, DMY", "PGAPPNAME": "from_env"}
        px = self.start_pgwharf(env=env, settings={"pool_mode": "transaction",
                                                   "default_pool_size": 1})
        got = px.psql("select coalesce(current_setting('pgw.leak', true), '-'), "
                      "current_setting('TimeZone'), current_setting('DateStyle'), "
                      "(select application_name from pg_stat_activity "
                      " where pid = pg_backend_pid())")
        leak, tz, datestyle, app = got.split("|")
        self.assertIn(leak, ("-", ""))
        self.assertNotEqual(tz, "Pacific/Chatham")
        self.assertNotEqual(datestyle, "SQL, DMY")
        self.assertNotEqual(app, "from_env")
        # the same server, seen directly: nothing of the environment either
        direct = self.pg.psql("select count(*) from pg_stat_activity "
                              "where application_name = 'from_env'")
        self.assertEqual(direct, "0")
        log = px.log()
        for name in ("PGOPTIONS", "PGTZ", "PGDATESTYLE", "PGAPPNAME"):
            self.assertIn(name, log)
        self.assertIn("libpq's environment variables are ignored", log)
