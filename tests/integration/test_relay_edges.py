"""test_relay_edges - when a server may go back to the pool, and what the
next client finds on it, at the edges of the protocol (transaction mode,
one server, so the next client gets the very same one).

- A client still streaming CopyData after the server ended its COPY with an
  error (ReadyForQuery 'I' arrives while a CopyData message is half
  received): the server must not go back until the message is through,
  else the next client's query is read as the rest of the CopyData, and the
  first client's tail as a message of its next server.
- A client whose first query is larger than the relay buffer must still get
  its own settings (the SETs pgwharf puts in front): before the fix they
  were dropped when the buffer was full and the server recorded as set.
- A CopyDone (or CopyFail) sent outside a COPY, which the server ignores,
  took back the Sync before it: the server went back to the pool at that
  Sync's ReadyForQuery with the client's next query still running, and the
  next client read that query's rows as its own.  An extended-protocol
  COPY as libpq sends it (Execute and Sync, CopyInResponse, data,
  CopyDone and Sync) still gives the server back.
- The same COPY as the second Execute of its batch (Execute of a SELECT,
  then of the COPY, then Sync; found by difftest.py): the Sync the COPY
  ignores was not taken back, so the client kept the server until it
  left, and the prepared-statement reply queue stayed one Sync behind:
  the errors of its later Binds named pgwharf's statement (PGW_n).
- extra_float_digits, which PostgreSQL does not report: a client that never
  set it got the value another client's startup packet had made pgwharf
  SET on the server (transaction mode), and after server_reset_query (which
  resets it) pgwharf still took the server for set (session mode).
- The unnamed prepared statement outlives transactions: a client's Bind of
  it without a Parse ran the statement another client had left on the
  server (its rows to this client), in transaction mode and in session
  mode without server_reset_query.
- LISTEN lives in the server connection: in transaction mode the next
  client on a server where another client ran LISTEN got that client's
  notifications.
- A cancel that came while the server ran the SETs in front of the
  client's query was forwarded at once: it could hit a SET (the query then
  ran with another client's settings) or be dropped between messages.
- CopyData still on its way when the server failed the COPY and went back
  to the pool (and a CopyDone, CopyFail or Flush sent with nothing under
  way) took a server, as a request would; PostgreSQL ignores them, nothing
  answered, and the idle client held that server until its next query.
- A session closed while a server message was half relayed to the client
  (a query_timeout in a large DataRow) got its FATAL error written into
  that message.
"""

import os
import select
import signal
import socket
import struct
import threading
import unittest

import pgwharf_test as pt
import pgw_hardening as hz


def copy_data(payload):
    return hz.msg(b"d", payload)


class TestReleaseMidMessage(pt.PgwharfTestCase):

    def setUp(self):
        super().setUp()
        self.px = self.start_pgwharf(settings={
            "pool_mode": "transaction", "default_pool_size": 1, "max_db_connections": 1,
            "query_wait_timeout": "20s", "log_connections": 0})
        self.pg.psql("drop table if exists relay_edges_copy; "
                     "create table relay_edges_copy (n int)", user=self.pg.user)
        self.addCleanup(self.pg.psql, "drop table if exists relay_edges_copy",
                        user=self.pg.user, check=False)

    def login(self):
        s = socket.create_connection((self.px.host, self.px.port), timeout=20)
        hz.sync_login(s, self.pg.user, self.pg.database, self.pg.password)
        return s

    read_until_ready = staticmethod(hz.read_until_ready)

    def test_copy_data_after_the_server_ended_the_copy(self):
        a = self.login()
        self.addCleanup(a.close)
        a.sendall(hz.query_msg("copy relay_edges_copy from stdin"))
        t, _ = hz.recv_msg(a)
        self.assertEqual(t, b"G", "no CopyInResponse")
        # A bad row, then the first half of a second CopyData: the server
        # fails the COPY and answers ReadyForQuery while that message is
        # still arriving.
        second = copy_data(b"2\n" * 50)
        a.sendall(copy_data(b"not a number\n") + second[:20])
        got = self.read_until_ready(a)
        errs = [hz.parse_fields(b) for t, b in got if t == b"E"]
        self.assertTrue(errs and errs[0]["C"] == "22P02", got)
        self.assertEqual(got[-1], (b"Z", b"I"))

        # Client B asks for the (only) server now.
        result = {}
        tb = threading.Thread(target=self.client_b, args=(result,))
        tb.start()
        self.wait_b_asked(result)
        # A finishes its message (and the COPY, which the server ignores
        # now), then runs a query of its own.
        a.sendall(second[20:] + hz.msg(b"c"))
        a.sendall(hz.query_msg("select 7"))
        got_a = self.read_until_ready(a)
        tb.join(30)
        self.assertFalse(tb.is_alive(), "client B hangs")
        self.assertNotIn("error", result, result.get("error"))
        rows_b = [hz.data_row(b) for t, b in result["msgs"] if t == b"D"]
        errs_b = [hz.parse_fields(b) for t, b in result["msgs"] if t == b"E"]
        self.assertEqual(errs_b, [])
        self.assertEqual(rows_b, [[b"42"]])
        rows_a = [hz.data_row(b) for t, b in got_a if t == b"D"]
        errs_a = [hz.parse_fields(b) for t, b in got_a if t == b"E"]
        self.assertEqual(errs_a, [])
        self.assertEqual(rows_a, [[b"7"]])
        self.assertEqual(self.pg.psql("select count(*) from relay_edges_copy"), "0")

    @staticmethod
    def ext_query(sql):
        """Parse, Bind, Execute, Sync (no Describe)."""
        return hz.ext_msgs(sql, describe=False)

    def client_b(self, result):
        """Client B logs in (it needs the one server) and runs select 42;
        result gets its port, its reply (msgs) or the error."""
        try:
            b = socket.create_connection((self.px.host, self.px.port), timeout=40)
            try:
                result["port"] = b.getsockname()[1]
                hz.sync_login(b, self.pg.user, self.pg.database, self.pg.password)
                b.sendall(hz.query_msg("select 42"))
                result["msgs"] = self.read_until_ready(b)
            finally:
                b.close()
        except Exception as e:              # reported by the caller
            result["error"] = e

    def assert_b_served(self):
        """Client B gets the one server and its own answer while A stays."""
        result = {}
        tb = threading.Thread(target=self.client_b, args=(result,))
        tb.start()
        tb.join(10)
        self.assertFalse(tb.is_alive(), "client B waits: A kept the server")
        self.assertNotIn("error", result, result.get("error"))
        self.assertEqual([hz.data_row(b) for t, b in result["msgs"] if t == b"D"], [[b"42"]])

    def wait_b_asked(self, result):
        """Until client B's query has reached pgwharf: B waits for a server
        or is linked to one (SHOW CLIENTS: state, link), or B failed."""
        def asked():
            if "error" in result or "msgs" in result:
                return True
            return any(row["state"] == "waiting" or row["link"]
                       for row in self.px.show("CLIENTS", port=result.get("port")))
        pt.wait_until(asked, 20, what="client B's query reached pgwharf")

    def test_copy_data_after_the_copy_ended_takes_no_server(self):
        a = self.login()
        self.addCleanup(a.close)
        a.sendall(hz.query_msg("copy relay_edges_copy from stdin"))
        t, _ = hz.recv_msg(a)
        self.assertEqual(t, b"G", "no CopyInResponse")
        a.sendall(copy_data(b"not a number\n"))
        got = self.read_until_ready(a)
        self.assertEqual(got[-1], (b"Z", b"I"))
        # The server is back in the pool.  CopyData that was already on its
        # way (libpq stops sending only once it has read the error), and the
        # CopyDone of a client that did not: PostgreSQL ignores them outside
        # a COPY, and no server must be taken for them -- nothing answers
        # them, so A would hold it while idle, and B would wait.
        a_port = a.getsockname()[1]
        a.sendall(copy_data(b"2\n" * 40000) + copy_data(b"3\n") + hz.msg(b"c") +
                  hz.msg(b"f", b"late\x00"))
        pt.wait_until(lambda: hz.unread_on_port(self.px.pid, self.px.port).get(a_port) == 0,
                      20, what="pgwharf read A's CopyData")
        self.assertEqual([r["link"] for r in self.px.show("CLIENTS", port=a_port)], [""])
        self.assert_b_served()
        self.assert_own_answer(a)
        self.assertEqual(self.pg.psql("select count(*) from relay_edges_copy"), "0")

    def assert_own_answer(self, a):
        a.sendall(hz.query_msg("select 7"))
        got = self.read_until_ready(a)
        self.assertEqual([hz.data_row(b) for t, b in got if t == b"D"], [[b"7"]], got)
        self.assertEqual(got[-1], (b"Z", b"I"))

    def test_copy_done_outside_a_copy(self):
        a = self.login()
        self.addCleanup(a.close)
        # A's query waits at a gate (an advisory lock the test holds), so
        # A keeps the server busy until the test opens it.
        gate = hz.Gate(self.pg, 7001)
        self.addCleanup(gate.close)
        # One Sync, a CopyDone the server ignores, and a query held at the
        # gate: two ReadyForQuery to come, the second after the rows of A's
        # query.
        a.sendall(self.ext_query("select 1") + hz.msg(b"c") +
                  hz.query_msg("select %s, 'only for A'" % gate.sql()))
        first = self.read_until_ready(a)
        self.assertEqual([hz.data_row(b) for t, b in first if t == b"D"], [[b"1"]])
        self.pg.wait_running("only for A", lock_wait=True)
        # B asks for the one server while A's query is still running: B
        # must wait (the bug linked B to it at once, and B read A's rows).
        result = {}
        tb = threading.Thread(target=self.client_b, args=(result,))
        tb.start()
        self.addCleanup(tb.join, 30)
        self.wait_b_asked(result)
        gate.open()
        tb.join(30)
        self.assertFalse(tb.is_alive(), "client B hangs")
        self.assertNotIn("error", result, result.get("error"))
        rows_b = [hz.data_row(b) for t, b in result["msgs"] if t == b"D"]
        self.assertEqual(rows_b, [[b"42"]])
        second = self.read_until_ready(a)
        self.assertEqual([hz.data_row(b) for t, b in second if t == b"D"],
                         [[b"", b"only for A"]])

    def test_extended_copy_gives_the_server_back(self):
        a = self.login()
        self.addCleanup(a.close)
        a.sendall(self.ext_query("copy relay_edges_copy from stdin"))
        while True:
            t, _ = hz.recv_msg(a)
            if t == b"G":
                break
            self.assertIn(t, (b"1", b"2"), "no CopyInResponse")
        a.sendall(copy_data(b"1\n") + copy_data(b"2\n") + hz.msg(b"c") + hz.msg(b"S"))
        got = self.read_until_ready(a)
        self.assertEqual([b for t, b in got if t == b"C"], [b"COPY 2\x00"])
        self.assertEqual(got[-1], (b"Z", b"I"))
        # The one server is back in the pool: B gets it while A stays.
        self.assert_b_served()
        a.sendall(hz.query_msg("select count(*) from relay_edges_copy"))
        got = self.read_until_ready(a)
        self.assertEqual([hz.data_row(b) for t, b in got if t == b"D"], [[b"2"]])

    def test_extended_copy_after_another_execute_gives_the_server_back(self):
        a = self.login()
        self.addCleanup(a.close)
        # A statement of A's own, then one batch: a SELECT and the COPY.
        a.sendall(hz.msg(b"P", b"s1\x00select 1\x00\x00\x00") + hz.msg(b"S"))
        self.assertEqual([t for t, _ in self.read_until_ready(a)], [b"1", b"Z"])
        a.sendall(self.ext_query("select 7")[:-5] + self.ext_query("copy relay_edges_copy from stdin"))
        got = []
        while True:
            t, _ = hz.recv_msg(a)
            got.append(t)
            if t == b"G":
                break
            self.assertNotIn(t, (b"E", b"Z"), "no CopyInResponse")
        self.assertEqual(got, [b"1", b"2", b"D", b"C", b"1", b"2", b"G"])
        a.sendall(copy_data(b"1\n") + hz.msg(b"c") + hz.msg(b"S"))
        got = self.read_until_ready(a)
        self.assertEqual([b for t, b in got if t == b"C"], [b"COPY 1\x00"])
        self.assertEqual(got[-1], (b"Z", b"I"))
        self.assert_b_served()
        # A Bind of s1 with one parameter too many: PostgreSQL's error,
        # naming the client's statement.
        a.sendall(hz.msg(b"B", b"\x00s1\x00\x00\x00\x00\x01\x00\x00\x00\x011\x00\x00") +
                  hz.msg(b"S"))
        got = self.read_until_ready(a)
        self.assertEqual([t for t, _ in got], [b"E", b"Z"], got)
        self.assertIn(b'prepared statement "s1" requires 0', got[0][1])


def login(test, px, **params):
    """A raw client of px logged in as the cluster's user (closed at the
    test's end), startup parameters as keywords."""
    s = socket.create_connection((px.host, px.port), timeout=20)
    test.addCleanup(s.close)
    hz.sync_login(s, test.pg.user, test.pg.database, test.pg.password, **params)
    return s


class TestSyncsAndEndsOfAFailingCopy(pt.PgwharfTestCase):
    """COPY FROM STDIN that fails, with a Sync among its data or a Query
    after its end and no Sync between (one server, so the next client
    gets the very same one).

    - A Sync among the data of a COPY that then fails on a row: PostgreSQL
      ignores it when the COPY reads it, and answers it when the COPY
      failed before (which, only the server knows: the row that failed).
      With max_prepared_statements above 0 (the default) pgwharf took it
      for answered: the replies of its own Describe reached the client,
      the next request waited for ever, and after the client left its
      server stayed linked to it (the next client waited, shutdown too).
    - CopyFail, then a Query with no Sync, in an extended-protocol COPY:
      the server skips the Query (it skips to the next Sync after the
      error), but with max_prepared_statements = 0 (and in session mode)
      pgwharf counted it, and waited for its ReadyForQuery for ever, the
      client gone too."""

    def start(self, **settings):
        base = {"pool_mode": "transaction", "default_pool_size": 1, "max_db_connections": 1,
                "query_wait_timeout": "20s", "log_connections": 0}
        base.update(settings)
        px = self.start_pgwharf(settings=base)
        self.pg.psql("drop table if exists relay_copy_fail; "
                     "create table relay_copy_fail (n int)", user=self.pg.user)
        self.addCleanup(self.pg.psql, "drop table if exists relay_copy_fail",
                        user=self.pg.user, check=False)
        return px

    def login(self, px):
        return hz.raw_login(self, px)

    @staticmethod
    def types(sock, readys):
        got = []
        while readys > 0:
            t, _ = hz.recv_msg(sock)
            got.append(t.decode())
            readys -= t == b"Z"
        return "".join(got)

    def assert_served(self, px):
        """Another client gets the one server (and its own answer)."""
        self.assertEqual(px.psql("select 'next client'", timeout=60), "next client")

    def assert_gone(self, px, port):
        pt.wait_until(lambda: not [r for r in px.show("CLIENTS") if int(r["port"]) == port],
                      20, what="the session of the client that left")
        self.assert_served(px)

    def test_a_sync_among_the_data_of_a_copy_that_fails(self):
        copy = hz.query_msg("copy relay_copy_fail from stdin")
        good, bad = copy_data(b"1\n"), copy_data(b"bad\n")
        done, sync = hz.msg(b"c"), hz.msg(b"S")
        def prep(name):
            return hz.msg(b"P", name + b"\x00select 2\x00\x00\x00")

        def run(name):
            return (hz.msg(b"B", b"\x00" + name + b"\x00\x00\x00\x00\x00\x00\x00") +
                    hz.msg(b"E", b"\x00\x00\x00\x00\x00") + sync)
        # (what PostgreSQL answers, each case checked against it)
        cases = [
            # the COPY reads the Sync, then fails: no ReadyForQuery for it
            ("read", copy + good + sync + bad + done, 1, "GEZ"),
            # it failed before: the Sync is answered
            ("answered", copy + bad + sync + done, 2, "GEZZ"),
            # read, and a lone Sync after it: its ReadyForQuery is that one's
            ("read, a lone Sync after", copy + good + sync + bad + done + sync, 2, "GEZZ"),
            # all at once, a prepared statement after it
            ("pipelined", copy + good + sync + bad + done + sync + prep(b"s3") + run(b"s3"), 3,
             "GEZZ12DCZ"),
        ]
        for mps in (100, 0):
            px = self.start(max_prepared_statements=mps)
            for name, data, readys, want in cases:
                with self.subTest(max_prepared_statements=mps, case=name):
                    a = self.login(px)
                    a.sendall(data)
                    self.assertEqual(self.types(a, readys), want)
                    a.sendall(prep(b"s2") + sync)
                    self.assertEqual(self.types(a, 1), "1Z")
                    a.sendall(run(b"s2"))
                    self.assertEqual(self.types(a, 1), "2DCZ")
                    # (with max_prepared_statements = 0 the relay's count
                    # stays unsure: the server is the client's until it
                    # leaves, README "When a server goes back to the pool")
                    if mps:
                        self.assert_served(px)
                    # and the client leaving after such a COPY frees it
                    port = a.getsockname()[1]
                    a.sendall(copy + good + sync + bad + done)
                    self.assertEqual(self.types(a, 1), "GEZ")
                    a.close()
                    self.assert_gone(px, port)
            px.stop()

    def test_a_close_among_the_data_fails_the_copy_at_once(self):
        # PostgreSQL 14+ fails a COPY FROM STDIN at a message that is not
        # COPY data (08P01, then FATAL): nothing written.  A Close after
        # data, which pgwharf answers itself (max_prepared_statements),
        # was dropped from the stream: the COPY went on, was refused only
        # at the CopyDone, and its rows were committed.
        px = self.start(max_prepared_statements=100)
        for wait in (True, False):
            with self.subTest(wait_for_copy_in=wait):
                a = self.login(px)
                copy = hz.query_msg("copy relay_copy_fail from stdin")
                rest = copy_data(b"1\n") + hz.msg(b"C", b"Snosuch\x00") + hz.msg(b"S")
                if wait:
                    a.sendall(copy)
                    self.assertEqual(hz.recv_msg(a)[0], b"G")
                    a.sendall(rest)
                    got = []
                else:
                    a.sendall(copy + rest)
                    got = [hz.recv_msg(a)[0]]
                errs = []
                try:
                    while True:
                        t, body = hz.recv_msg(a)
                        got.append(t)
                        if t == b"E":
                            f = hz.parse_fields(body)
                            errs.append((f["S"], f["C"]))
                except (EOFError, ConnectionError, OSError):
                    pass
                self.assertEqual(errs, [("ERROR", "08P01"), ("FATAL", "08P01")], got)
                self.assertEqual(self.pg.psql("select count(*) from relay_copy_fail",
                                              user=self.pg.user), "0")
                self.assert_served(px)

    def test_a_query_after_copyfail_without_a_sync(self):
        # P B E S of the COPY (libpq's), then CopyFail and a Query with no
        # Sync between: PostgreSQL skips the Query (57014, then nothing).
        for mode, mps in (("transaction", 0), ("session", 0), ("transaction", 100)):
            with self.subTest(pool_mode=mode, max_prepared_statements=mps):
                px = self.start(pool_mode=mode, max_prepared_statements=mps)
                for leave in (False, True):
                    a = self.login(px)
                    port = a.getsockname()[1]
                    a.sendall(hz.ext_msgs("copy relay_copy_fail from stdin", describe=False))
                    self.assertEqual(self.types(a, 0) + hz.recv_msg(a)[0].decode() +
                                     hz.recv_msg(a)[0].decode() + hz.recv_msg(a)[0].decode(),
                                     "12G")
                    a.sendall(hz.msg(b"f", b"no\x00") + hz.query_msg("select 'skipped'"))
                    t, body = hz.recv_msg(a)
                    self.assertEqual((t, hz.parse_fields(body)["C"]), (b"E", "57014"))
                    if leave:
                        a.close()
                        self.assert_gone(px, port)
                        continue
                    # the Sync ends the skipping; the server is the client's
                    # own again, then back to the pool
                    a.sendall(hz.msg(b"S"))
                    self.assertEqual(self.types(a, 1), "Z")
                    a.sendall(hz.query_msg("select 'after'"))
                    self.assertEqual(self.types(a, 1), "TDCZ")
                    # The server is free at once: with
                    # max_prepared_statements = 0 the CopyFail's own error
                    # (57014 from CopyGetData) says the COPY read the Sync
                    # after its Execute; prepared.c asks the server.
                    if mode == "transaction":
                        self.assert_served(px)
                    a.close()
                px.stop()


class TestUnreportedParameter(pt.PgwharfTestCase):
    """extra_float_digits = 0 prints 0.1::float8 * 3 as 0.3; PostgreSQL's
    default (1) as 0.30000000000000004."""

    SQL = "select 0.1::float8 * 3"

    def login(self, px, **params):
        return login(self, px, **params)

    def test_transaction_mode_client_without_it(self):
        px = self.start_pgwharf(settings={
            "pool_mode": "transaction", "default_pool_size": 1, "max_db_connections": 1,
            "log_connections": 0})
        a = self.login(px, extra_float_digits="0")
        self.assertEqual(hz.simple_query(a, self.SQL),
                         ([[b"0.3"]], []))
        # B logs in through the server A used, and never sets it.
        b = self.login(px)
        self.assertEqual(hz.simple_query(b, self.SQL),
                         ([[b"0.30000000000000004"]], []))
        self.assertEqual(hz.simple_query(a, self.SQL),
                         ([[b"0.3"]], []))
        self.assertEqual(hz.simple_query(b, self.SQL),
                         ([[b"0.30000000000000004"]], []))

    def test_a_set_of_it_by_an_escaped_name(self):
        # A's SET of it names it with escapes the scan did not read as its
        # name: a U& quoted name (UESCAPE, no backslash, or a backslash),
        # a backslash in set_config's plain literal with
        # standard_conforming_strings off.  B then printed with A's 0
        # (review r4 of session 53; each fails before).  (A itself keeps
        # the value it logged in with: not reported.)
        px = self.start_pgwharf(settings={
            "pool_mode": "transaction", "default_pool_size": 1, "max_db_connections": 1,
            "log_connections": 0})
        for scs_off, sql in [
                (False, 'set U&"extra!005ffloat!005fdigits" uescape \'!\' = 0'),
                (False, 'set U&"extra\\005ffloat\\005fdigits" = 0'),
                (True, "select set_config('extra\\_float\\_digits', '0', false)")]:
            with self.subTest(sql=sql):
                a = self.login(px)
                if scs_off:
                    self.assertEqual(hz.simple_query(
                        a, "set standard_conforming_strings = off")[1], [])
                rows, errors = hz.simple_query(a, sql + "; " + self.SQL)
                self.assertEqual((rows[-1:], errors), ([[b"0.3"]], []))    # (it took)
                b = self.login(px)
                self.assertEqual(hz.simple_query(b, self.SQL),
                                 ([[b"0.30000000000000004"]], []))
                a.close()
                b.close()

    def test_a_set_of_an_extension_parameter_with_comments_in_its_name(self):
        # A sets a tracked extension parameter naming it in parts with
        # PostgreSQL's comments between them: a -- comment a lone '\r'
        # ends, a nested comment whose closing star and slash stand before
        # another star.  tracked_word's own comment skipping read on to
        # the next '\n', and read the slash as opening another comment:
        # the SET unseen, B (which logged in with the value A did) got A's
        # (session 54; each fails before).
        px = self.start_pgwharf(settings={
            "pool_mode": "transaction", "default_pool_size": 1, "max_db_connections": 1,
            "log_connections": 0, "track_extra_parameters": "myext.mode"})
        got = "select current_setting('myext' || '.mode', true)"    # (naming it not)
        for sql in ["set myext -- a comment\r. mode = 'leak'",
                    "set myext./* /* */* x */mode = 'leak'"]:
            with self.subTest(sql=sql):
                a = self.login(px, **{"myext.mode": "x"})
                rows, errors = hz.simple_query(a, sql + "; " + got)
                self.assertEqual((rows, errors), ([[b"leak"]], []))    # (it took)
                b = self.login(px, **{"myext.mode": "x"})
                self.assertEqual(hz.simple_query(b, got), ([[b"x"]], []))
                a.close()
                b.close()

    def test_a_set_of_an_extension_parameter_named_in_parts_across_a_form_feed(self):
        # PostgreSQL reads a form feed as a blank: set myext\f. mode is
        # SET myext.mode.  tracked_word skipped spaces, tabs, newlines and
        # comments only: the SET unseen, B got A's value (review r4 of
        # session 54; fails before).
        px = self.start_pgwharf(settings={
            "pool_mode": "transaction", "default_pool_size": 1, "max_db_connections": 1,
            "log_connections": 0, "track_extra_parameters": "myext.mode"})
        got = "select current_setting('myext' || '.mode', true)"    # (naming it not)
        a = self.login(px, **{"myext.mode": "x"})
        rows, errors = hz.simple_query(a, "set myext\f. mode = 'leak'; " + got)
        self.assertEqual((rows, errors), ([[b"leak"]], []))    # (it took)
        b = self.login(px, **{"myext.mode": "x"})
        self.assertEqual(hz.simple_query(b, got), ([[b"x"]], []))
        a.close()
        b.close()

    def test_a_set_of_a_tracked_parameter_behind_a_backslash_with_scs_off(self):
        # standard_conforming_strings off: 'a\'; --' is one literal and
        # the SET behind it PostgreSQL's, where the scan reads a comment
        # to the end (a blind text, its words read loose).  Read loose, an
        # extension's name in parts (myext . mode, "myext"."mode", parts
        # the scan's comment ends between) or a U&"" name was none: the
        # SET unseen, B got A's value (review r4 of session 54; each
        # fails before).
        px = self.start_pgwharf(settings={
            "pool_mode": "transaction", "default_pool_size": 1, "max_db_connections": 1,
            "log_connections": 0, "track_extra_parameters": "myext.mode"})
        got = "select current_setting('myext' || '.mode', true)"    # (naming it not)
        efd = "select 0.1::float8 * 3"
        for sql, query, before, after in [
                ("select 'a\\'; --'; set myext . mode = 'leak'", got, b"leak", b"x"),
                ("select 'a\\'; --'; set \"myext\".\"mode\" = 'leak'", got, b"leak", b"x"),
                ("select 'a\\'; --'; set myext -- c\n. mode = 'leak'", got, b"leak", b"x"),
                ("select 'a\\'; --'; set U&\"extra!005ffloat!005fdigits\" uescape '!' = 0",
                 efd, b"0.3", b"0.30000000000000004")]:
            with self.subTest(sql=sql):
                a = self.login(px, **{"myext.mode": "x"})
                self.assertEqual(hz.simple_query(
                    a, "set standard_conforming_strings = off")[1], [])
                rows, errors = hz.simple_query(a, sql + "; " + query)
                self.assertEqual((rows[-1:], errors), ([[before]], []))    # (it took)
                b = self.login(px, **{"myext.mode": "x"})
                self.assertEqual(hz.simple_query(b, query), ([[after]], []))
                a.close()
                b.close()

    def test_a_long_text_is_scanned_in_linear_time(self):
        # The scan looked ahead from each word to the end of a run of
        # dotted words (a blind text's comment) or of a comment behind a
        # tracked extension name's first part: a 256 kB Parse (held whole,
        # prepared statements on) kept the loop 25 s, every client of it
        # waiting (review r7 of session 54; fails before).  1 MB here:
        # minutes of the loop before (quadratic), a fraction of a second
        # now, so the read's 120 s bound is a hang check, not a timing.
        px = self.start_pgwharf(settings={
            "pool_mode": "transaction", "default_pool_size": 1, "max_db_connections": 1,
            "max_prepared_statements": 10, "log_connections": 0,
            "track_extra_parameters": "myext.mode"})
        n = 1024 * 1024
        for sql in ["select 1 /* \\ */; -- " + "a." * (n // 2),
                    "select 1 -- " + "myext --" * (n // 8)]:
            with self.subTest(sql=sql[:30]):
                a = self.login(px)
                a.settimeout(120)
                a.sendall(hz.ext_msgs(sql, stmt="s1"))
                got = [t for t, _ in hz.read_until_ready(a)]
                self.assertEqual(got, [b"1", b"2", b"T", b"D", b"C", b"Z"])
                a.close()

    def test_session_mode_after_server_reset_query(self):
        px = self.start_pgwharf(settings={
            "pool_mode": "session", "default_pool_size": 1, "max_db_connections": 1,
            "log_connections": 0})
        a = self.login(px, extra_float_digits="0")
        self.assertEqual(hz.simple_query(a, self.SQL),
                         ([[b"0.3"]], []))
        a.sendall(hz.msg(b"X"))
        a.close()
        # DISCARD ALL resets it on the one server; B asks for it again.
        b = self.login(px, extra_float_digits="0")
        self.assertEqual(hz.simple_query(b, self.SQL),
                         ([[b"0.3"]], []))
        b.sendall(hz.msg(b"X"))
        b.close()
        c = self.login(px)
        self.assertEqual(hz.simple_query(c, self.SQL),
                         ([[b"0.30000000000000004"]], []))


class TestSettingsWithALargeFirstQuery(pt.PgwharfTestCase):

    def login(self, px, **params):
        return login(self, px, **params)

    query = staticmethod(hz.simple_query)

    def test_set_goes_in_front_of_a_full_buffer(self):
        px = self.start_pgwharf(settings={
            "pool_mode": "transaction", "default_pool_size": 1, "max_db_connections": 1,
            "log_connections": 0})
        b = self.login(px, TimeZone="UTC")
        a = self.login(px)
        # A leaves TimeZone at something unusual on the one server.
        self.assertEqual(self.query(a, "set timezone = 'Asia/Kathmandu'"), ([], []))
        # B's next query is far larger than the relay buffer: the buffer is
        # full when B gets the server and the SET has to go in front.
        filler = "/*" + "x" * 200000 + "*/"
        rows, errs = self.query(b, "select current_setting('TimeZone') " + filler)
        self.assertEqual(errs, [])
        self.assertEqual(rows, [[b"UTC"]])
        # and the server's record is right: A still gets its own setting
        self.assertEqual(self.query(a, "show timezone"), ([[b"Asia/Kathmandu"]], []))


def bind_unnamed_and_execute():
    """Bind of the unnamed statement (no Parse), Execute, Sync."""
    return (hz.msg(b"B", b"\x00\x00" + struct.pack("!HHH", 0, 0, 0)) +
            hz.msg(b"E", b"\x00" + struct.pack("!I", 0)) + hz.msg(b"S"))


class TestUnnamedStatementOfAnotherClient(pt.PgwharfTestCase):
    """The unnamed prepared statement lasts on its server until the next
    Parse into it or simple Query, transactions and clients
    notwithstanding: a client's Bind of it without a Parse of its own on
    that server ran the statement the client before it left there, and got
    that statement's rows.  It must get PostgreSQL's 26000 instead."""

    SECRET = "select 'rows of client a'::text"

    def setup_px(self, **settings):
        conf = {"default_pool_size": 1, "max_db_connections": 1, "log_connections": 0}
        conf.update(settings)
        return self.start_pgwharf(settings=conf)

    def leave_unnamed(self, px):
        a = login(self, px)
        a.sendall(hz.parse_msg("", self.SECRET) + hz.msg(b"S"))
        self.assertEqual([t for t, _ in hz.read_until_ready(a)], [b"1", b"Z"])
        return a

    def assert_not_a_rows(self, sock):
        sock.sendall(bind_unnamed_and_execute())
        got = hz.read_until_ready(sock)
        rows = [hz.data_row(b) for t, b in got if t == b"D"]
        errs = [hz.parse_fields(b) for t, b in got if t == b"E"]
        self.assertEqual(rows, [], "another client's unnamed statement ran")
        self.assertEqual([e["C"] for e in errs], ["26000"], got)
        self.assertEqual(got[-1], (b"Z", b"I"))
        # and the session goes on, its own statements as usual
        sock.sendall(hz.ext_msgs("select 'own'::text"))
        got = hz.read_until_ready(sock)
        self.assertEqual([hz.data_row(b) for t, b in got if t == b"D"], [[b"own"]], got)

    def test_transaction_mode(self):
        px = self.setup_px(pool_mode="transaction")
        a = self.leave_unnamed(px)
        self.assert_not_a_rows(login(self, px))
        # A's own next request that parses first is untouched
        a.sendall(hz.ext_msgs("select 'a again'::text"))
        got = hz.read_until_ready(a)
        self.assertEqual([hz.data_row(b) for t, b in got if t == b"D"], [[b"a again"]], got)

    def test_transaction_mode_without_prepared_statement_support(self):
        px = self.setup_px(pool_mode="transaction", max_prepared_statements=0)
        self.leave_unnamed(px)
        self.assert_not_a_rows(login(self, px))

    def test_session_mode_without_server_reset_query(self):
        px = self.setup_px(pool_mode="session", server_reset_query="")
        a = self.leave_unnamed(px)
        a.sendall(hz.msg(b"X"))
        a.close()
        self.assert_not_a_rows(login(self, px))


class TestTheClientsOwnUnnamedAcrossTheSets(pt.PgwharfTestCase):
    """With max_prepared_statements = 0 a client's unnamed statement,
    Parsed and Synced in one transaction and Bound in the next on the same
    server, works (as on PostgreSQL) -- but a statement that may have
    changed a parameter the server does not report (its text says RESET,
    DISCARD, extra_float_digits...) made pgwharf SET or RESET it at the
    next link with a simple Query, which drops the unnamed statement: the
    Bind got 26000 (hunt: libpq's PQprepare then PQexecPrepared of "",
    asyncpg with statement_cache_size = 0).  Those go by the extended
    protocol there now, and leave it."""

    def test_a_bind_after_the_reset(self):
        px = self.start_pgwharf(settings={
            "pool_mode": "transaction", "default_pool_size": 1, "max_db_connections": 1,
            "max_prepared_statements": 0, "log_connections": 0})
        a = login(self, px)
        a.sendall(hz.parse_msg("", "select pg_catalog.set_config('extra_float_digits', '3', "
                               "false)") + bind_unnamed_and_execute()[:-5] +
                  hz.parse_msg("", "select 'reset'::text, "
                               "pg_catalog.current_setting('extra_float_digits')") +
                  hz.msg(b"S"))
        self.assertEqual([t for t, _ in hz.read_until_ready(a)],
                         [b"1", b"2", b"D", b"C", b"1", b"Z"])
        a.sendall(bind_unnamed_and_execute())
        got = hz.read_until_ready(a)
        # (A parameter the server does not report, not tracked: the RESET
        # ran before the Bind, as at any link -- README.)
        self.assertEqual([hz.data_row(b) for t, b in got if t == b"D"], [[b"reset", b"1"]], got)
        self.assertEqual(got[-1], (b"Z", b"I"))
        # and again, the same statement (its text touches it again)
        a.sendall(bind_unnamed_and_execute())
        got = hz.read_until_ready(a)
        self.assertEqual([hz.data_row(b) for t, b in got if t == b"D"], [[b"reset", b"1"]], got)
        # another client finds no statement of a's, nor pgwharf's own
        b = login(self, px)
        b.sendall(bind_unnamed_and_execute())
        self.assertEqual([hz.parse_fields(m)["C"] for t, m in hz.read_until_ready(b)
                          if t == b"E"], ["26000"])
        self.assertEqual(hz.simple_query(b, "select count(*) from pg_prepared_statements"),
                         ([[b"0"]], []))


class TestNotificationOfAnotherClient(pt.PgwharfTestCase):
    """A NotificationResponse goes to whichever client holds the server when
    PostgreSQL sends it (at the end of that client's transaction, or while
    it waits): in transaction mode, after a client's LISTEN the next client
    on that server got the notifications meant for the listener, payload
    and all.  Only a client that ran LISTEN on the server may get them."""

    def setUp(self):
        super().setUp()
        self.px = self.start_pgwharf(settings={
            "pool_mode": "transaction", "default_pool_size": 1, "max_db_connections": 1,
            "log_connections": 0})

    def waiting_on_gate(self):
        return self.pg.psql("select count(*) from pg_locks "
                            "where locktype = 'advisory' and not granted") == "1"

    def assert_b_gets_no_notification(self, listen_sql, key):
        a = login(self, self.px)
        self.assertEqual(hz.simple_query(a, listen_sql), ([], []))
        gate = hz.Gate(self.pg, key)
        self.addCleanup(gate.close)
        b = login(self, self.px)
        # B's query holds the (only, or a new) server while the NOTIFY comes.
        b.sendall(hz.query_msg("select 'b', %s" % gate.sql()))
        pt.wait_until(self.waiting_on_gate, 20, what="B's query waiting on the gate")
        self.pg.psql("notify pgw_edges_chan, 'for a only'")
        gate.open()
        got = hz.read_until_ready(b)
        self.assertEqual([t for t, _ in got if t == b"A"], [], got)
        self.assertEqual([hz.data_row(m) for t, m in got if t == b"D"], [[b"b", b""]])
        # B goes on as usual.
        self.assertEqual(hz.simple_query(b, "select 1"), ([[b"1"]], []))

    def test_after_listen(self):
        self.assert_b_gets_no_notification("listen pgw_edges_chan", 7302)

    def test_after_listen_inside_a_function(self):
        self.assert_b_gets_no_notification(
            "do $$ begin execute 'listen pgw_edges_chan'; end $$", 7303)

    def test_the_listener_gets_its_own(self):
        a = login(self, self.px)
        a.sendall(hz.query_msg("listen pgw_edges_chan; notify pgw_edges_chan, 'mine'"))
        got = hz.read_until_ready(a)
        notes = [m for t, m in got if t == b"A"]
        self.assertEqual(len(notes), 1, got)
        self.assertIn(b"mine", notes[0])
        self.assertEqual(got[-1], (b"Z", b"I"))


class TestCancelWhileSettingsAreRestored(pt.PgwharfTestCase):
    """A client's query goes to the server behind the SETs that give the
    server the client's settings (their replies swallowed).  A cancel that
    came while they ran was forwarded at once: it hit a SET, which then
    failed, and the query ran on with the settings another client left --
    or, with the backend between messages, PostgreSQL dropped it and the
    query was not canceled at all.  It must wait for the SETs and cancel
    the client's own query."""

    def test_cancel_waits_for_the_sets(self):
        px = self.start_pgwharf(settings={
            "pool_mode": "transaction", "default_pool_size": 1, "max_db_connections": 1,
            "log_connections": 0})
        keys = []
        b = socket.create_connection((px.host, px.port), timeout=30)
        self.addCleanup(b.close)
        hz.sync_login(b, self.pg.user, self.pg.database, self.pg.password, key_data=keys,
                      TimeZone="Asia/Kathmandu")
        a = login(self, px)
        pid = int(hz.simple_query(a, "select pg_backend_pid()")[0][0][0])
        # The one server, A's settings on it, stops: B's SETs and query
        # wait in its socket.
        os.kill(pid, signal.SIGSTOP)
        self.addCleanup(pt.sigcont, pid)
        b.sendall(hz.query_msg("select 'b', pg_sleep(60)"))
        pt.wait_until(lambda: px.show("CLIENTS", port=b.getsockname()[1])[0]["state"]
                      == "active", 20, what="B linked to the stopped server")
        c = socket.create_connection((px.host, px.port), timeout=30)
        self.addCleanup(c.close)
        c.sendall(struct.pack("!IIII", 16, 80877102, keys[0][0], keys[0][1]))
        px.wait_for_log("event=cancel_(forwarded|deferred)")
        # The cancel connection stays open while the cancel is deferred,
        # as PostgreSQL keeps it until it has signalled the backend.
        self.assertEqual(select.select([c], [], [], 1.0)[0], [],
                         "cancel connection closed while the cancel was deferred")
        pt.sigcont(pid)
        got = hz.read_until_ready(b)
        errs = [hz.parse_fields(m) for t, m in got if t == b"E"]
        self.assertEqual([e["C"] for e in errs], ["57014"], got)
        self.assertEqual(got[-1], (b"Z", b"I"))
        self.assertEqual(hz.read_until_closed(c, 30), (b"", True))
        self.assertEqual(hz.simple_query(b, "show timezone"), ([[b"Asia/Kathmandu"]], []))


class TestClosedMidMessage(pt.PgwharfTestCase):
    """A session closed by pgwharf (a timeout, KILL_CLIENT, its server
    lost) while a server message is half relayed to the client: the
    FATAL error went out after the bytes already sent, read by the client
    as the rest of that message (a DataRow's column here) and whatever
    followed as more messages.  Mid-message the client may only see the
    connection end."""

    def test_query_timeout_in_the_middle_of_a_data_row(self):
        px = self.start_pgwharf(settings={
            "pool_mode": "transaction", "default_pool_size": 1, "log_connections": 0})
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.settimeout(30)
        sock.connect((px.host, px.port))
        self.addCleanup(sock.close)
        hz.sync_login(sock, self.pg.user, self.pg.database, self.pg.password)
        size = 48 * 1024 * 1024          # more than every socket buffer on the way holds
        sock.sendall(hz.query_msg("select repeat('x', %d) /* mid row */" % size))
        self.assertEqual(hz.recv_msg(sock)[0], b"T")
        head = hz._recv_exact(sock, 5)
        self.assertEqual(head[:1], b"D")
        pid, link = [int(x) for x in self.pg.psql(
            "select pid, client_port from pg_stat_activity where query like "
            "'select repeat(%% /* mid row */'").split("|")]
        # The backend stops in the middle of writing the row.
        os.kill(pid, signal.SIGSTOP)
        self.addCleanup(pt.sigcont, pid)
        got = []
        reader = pt.Background(lambda: got.append(hz.read_until_closed(sock, 60)))
        # Everything the backend wrote is through pgwharf and at the client.
        pt.wait_until(lambda: hz.tcp_queues(self.pg.port, link)[1] == 0 and
                      hz.tcp_queues(link, self.pg.port)[0] == 0 and
                      hz.tcp_queues(px.port, sock.getsockname()[1]) == (0, 0), 30,
                      what="pgwharf waiting for the rest of the row")
        px.admin("SET query_timeout = '500ms'")
        reader.join(60)
        self.assertIsNone(reader.error)
        data, closed = got[0]
        self.assertTrue(closed)
        body = struct.unpack("!I", head[1:])[0] - 4
        self.assertLess(len(data), body)                  # the row was cut
        # ncols, the column's length, then only the column's bytes.
        self.assertEqual(data[:6], struct.pack("!hi", 1, size))
        self.assertEqual(data[6:].strip(b"x"), b"", data[-200:])
        px.wait_for_log("event=disconnect .*query_timeout")


if __name__ == "__main__":
    unittest.main()
