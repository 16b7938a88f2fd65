"""server_pipeline_depth: a client's lone SELECT queued on a busy server
behind another client's query, when the pool has no free server.

Each test uses a pool of one server and raw-protocol clients
(pgw_hardening.RawConn), so who is queued behind whom is known:
  A runs a query that waits on a gate (a transaction-level advisory lock
  the test holds on its own connection to PostgreSQL) and so holds the
  only server; B (and C) send theirs once A's is seen running in
  pg_stat_activity, and are queued once pgwharf_pipelined_queries_total
  says so; then the test opens the gate.  No step waits on a clock.
Every answer must be the client's own; what happens when the client ahead
leaves, changes settings or is canceled, or a client in the queue leaves,
is checked against what the README promises.
"""

import asyncio
import os
import re
import select
import shutil
import signal
import socket
import struct
import tempfile
import unittest

import pgwharf_test as pt
import pgw_hardening as hz


def metric(px, name):
    return px.metric(name)


parse_msg = hz.parse_msg
ext_msgs = hz.ext_msgs


async def read_ext(conn):
    """The reply to ext_msgs: (message types, rows, error fields), to its
    ReadyForQuery."""
    types, rows, err = [], [], None
    while True:
        t, body = await conn.read_msg()
        types.append(t.decode())
        if t == b"D":
            rows.append([c.decode() if c is not None else None for c in hz.data_row(body)])
        elif t == b"E":
            err = hz.parse_fields(body)
        elif t == b"Z":
            return types, rows, err


QUEUED = "pgwharf_pipelined_queries_total"
FAILED = "pgwharf_pipelined_failed_total"
ASSIGNED = "pgwharf_server_assignments_total"      # SHOW STATS total_server_assignment_count


# Sets a parameter as set_config does, under a name the text scan does not
# take for a setting change (a function that SETs: only a ParameterStatus
# tells pgwharf).
PUT_FN = ("create or replace function pgw_test_put(k text, v text) returns text "
          "language sql as $$ select set_config(k, v, false) $$")


class TestPipeline(pt.AppRoleTestCase):
    put_fn_made = False

    def setUp(self):
        super().setUp()
        if not TestPipeline.put_fn_made:
            self.pg.psql(PUT_FN, db=self.db)
            TestPipeline.put_fn_made = True
        self.px = self.start_pgwharf(settings={
            "pool_mode": "transaction", "default_pool_size": 1, "server_pipeline_depth": 2,
            "metrics_port": "auto", "query_wait_timeout": "60s"})

    def test_a_queued_client_is_idle_from_its_answer(self):
        # Queued behind a query on the pool's one server, the client's
        # answer came in the same read as the end of the one ahead (handed
        # over with the server): client_idle_timeout counted from its
        # query's sending, and closed it (08P01) right after the answer.
        px = self.start_pgwharf(settings={
            "pool_mode": "transaction", "default_pool_size": 1, "server_pipeline_depth": 2,
            "client_idle_timeout": "1s", "query_wait_timeout": "60s"})
        a, b = (socket.create_connection((px.host, px.port), timeout=20) for _ in range(2))
        for c in (a, b):
            self.addCleanup(c.close)
            hz.sync_login(c, self.user, self.db, self.password)
        a.sendall(hz.query_msg("select pg_sleep(1.5) /* pgw_pipe_ahead */"))
        pt.wait_until(lambda: self.running("pgw_pipe_ahead"), 20, what="the query ahead")
        self.assertEqual(hz.simple_query(b, "select 1"), ([[b"1"]], []))   # queued: ~1.5 s
        hz.read_until_ready(a)
        # idle for a second from the answer: nothing comes in half of it
        # (the FATAL came at once, its deadline long past)
        self.assertEqual(select.select([b], [], [], 0.5)[0], [], "closed as idle at its answer")
        self.assertEqual(hz.simple_query(b, "select 2"), ([[b"2"]], []))

    async def conn(self, px=None, **params):
        px = px or self.px
        return await hz.RawConn.connect(px.host, px.port, self.user, self.db,
                                        self.password, timeout=30, **params)

    async def cancel(self, conn):
        r, w = await asyncio.open_connection(self.px.host, self.px.port)
        w.write(struct.pack("!IIII", 16, 80877102, conn.key[0], conn.key[1]))
        await w.drain()
        await r.read()            # pgwharf closes it once handled
        w.close()

    def ask(self, conn, px=None):
        """A CancelRequest for conn on a new (blocking) connection, left
        open: pgwharf keeps it open until the cancel is over."""
        px = px or self.px
        k = socket.create_connection((px.host, px.port), timeout=30)
        self.addCleanup(k.close)
        k.sendall(struct.pack("!IIII", 16, 80877102, conn.key[0], conn.key[1]))
        return k

    def assert_open(self, k, why):
        """k is not closed (nothing to read) a second on."""
        self.assertEqual(select.select([k], [], [], 1.0)[0], [], why)

    def assert_closed(self, k):
        self.assertEqual(hz.read_until_closed(k, 30), (b"", True))

    def running(self, marker):
        return self.pg.queries_running(marker) == 1

    async def until(self, fn, what):
        """pt.wait_until off the event loop (its checks block)."""
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: pt.wait_until(fn, 30, what=what))

    async def wait_running(self, marker):
        await self.until(lambda: self.running(marker), "%s running" % marker)

    async def wait_queued(self, n, px=None):
        await self.until(lambda: metric(px or self.px, QUEUED) >= n, "%d queries queued" % n)

    async def gate(self, key):
        """Hold advisory lock `key` on a direct connection; a query doing
        pg_advisory_xact_lock_shared(key) waits until gate.open()."""
        g = await hz.RawConn.connect(self.pg.host, self.pg.port, self.pg.user, self.db,
                                     self.pg.password, timeout=30)
        self.rows(await g.query("select pg_advisory_lock(%d)" % key))

        async def open_():
            if g.opened:
                return             # (a test's finally: opened already)
            g.opened = True
            self.rows(await g.query("select pg_advisory_unlock(%d)" % key))
            await g.close()
        g.opened = False
        g.open = open_
        return g

    async def hold(self, key, conn, cols="'H'", rest=""):
        """conn runs "select <cols>, pg_advisory_xact_lock_shared(key) as
        marker_q<key><rest>" behind a new gate `key` (cols None: no column
        before the lock), holding the pool's one server until the gate
        opens; back once it runs.  The gate (opened here should the query
        not be seen running)."""
        g = await self.gate(key)
        try:
            lock = "pg_advisory_xact_lock_shared(%d) as marker_q%d" % (key, key)
            conn.send(hz.query_msg("select " + ", ".join(c for c in (cols, lock) if c) + rest))
            await self.wait_running("marker_q%d" % key)
        except BaseException:
            await g.open()
            raise
        return g

    async def queue(self, *queued, px=None):
        """Each (conn, request) of queued in order sends its request (SQL
        for a simple Query, bytes as they are) once the one before it is
        queued on the busy server, and is queued in turn
        (pgwharf_pipelined_queries_total one up each time)."""
        px = px or self.px
        base = metric(px, QUEUED)
        for n, (conn, req) in enumerate(queued, 1):
            conn.send(req if isinstance(req, bytes) else hz.query_msg(req))
            await self.wait_queued(base + n, px)

    async def hold_and_queue(self, key, held, *queued, px=None, leaves=None):
        """hold (held: (conn, cols)), then queue; then, with leaves (one
        of queued's connections), that client leaves, and is waited for
        until the others of queued are the pool's waiting clients.  The
        gate (opened here should a step fail)."""
        px = px or self.px
        g = await self.hold(key, *held)
        try:
            await self.queue(*queued, px=px)
            if leaves:
                leaves.abort()
                await self.until(lambda: metric(px, "pgwharf_pool_client_waiting")
                                 == len(queued) - 1, "the client that left gone")
        except BaseException:
            await g.open()
            raise
        return g

    def run_async(self, coro):
        return asyncio.run(asyncio.wait_for(coro, 120))

    def rows(self, result):
        rows, err = result
        self.assertIsNone(err, "unexpected error %r" % (err,))
        return [[c.decode() if c is not None else None for c in r] for r in rows]

    def test_queued_clients_get_their_own_answers_in_order(self):
        async def main():
            a, b, c = await self.conn(), await self.conn(), await self.conn()
            g = await self.hold_and_queue(1, (a, "'A'"), (b, "select 'B', pg_backend_pid()"),
                                          (c, "select 'C', pg_backend_pid()"))
            await g.open()
            ra, rb, rc = await asyncio.gather(a.read_result(), b.read_result(),
                                              c.read_result())
            self.assertEqual(self.rows(ra)[0][0], "A")
            rb, rc = self.rows(rb), self.rows(rc)
            self.assertEqual(rb[0][0], "B")
            self.assertEqual(rc[0][0], "C")
            self.assertEqual(rb[0][1], rc[0][1], "both ran on the one server")
            # Each client goes on as usual.
            for x, tag in ((a, "A2"), (b, "B2"), (c, "C2")):
                self.assertEqual(self.rows(await x.query("select '%s'" % tag)), [[tag]])
            for x in (a, b, c):
                await x.close()
        self.run_async(main())
        self.assertEqual(metric(self.px, FAILED), 0)

    def test_a_queued_clients_wait_shows_in_maxwait_and_the_wait_time(self):
        # B queued behind A waits for the server as a client in the pool's
        # queue does: maxwait grows while it is queued, and its wait is
        # added to the wait time (SHOW STATS) when the server gets to it.
        async def main():
            a, b = await self.conn(), await self.conn()
            g = await self.hold(2, a, "'A'")
            self.assertEqual(metric(self.px, "pgwharf_pool_maxwait_seconds"), 0)
            waited0 = metric(self.px, "pgwharf_wait_seconds_total")
            await self.queue((b, "select 'B'"))
            seen = []

            def grown():
                seen.append(metric(self.px, "pgwharf_pool_maxwait_seconds"))
                return seen[-1] >= 0.2
            await self.until(grown, "maxwait of the queued client at 0.2 s")
            await g.open()
            self.assertEqual(self.rows(await a.read_result()), [["A", ""]])
            self.assertEqual(self.rows(await b.read_result()), [["B"]])
            for x in (a, b):
                await x.close()
            return seen[-1], waited0
        queued, waited0 = self.run_async(main())
        pt.wait_until(lambda: metric(self.px, "pgwharf_wait_seconds_total") - waited0 >= queued,
                      10, what="B's queued time in pgwharf_wait_seconds_total")
        self.assertEqual(metric(self.px, "pgwharf_pool_maxwait_seconds"), 0)
        self.assertEqual(metric(self.px, FAILED), 0)

    def test_a_queued_clients_next_query_waits_for_the_queue_behind_it(self):
        # B's second query arrives while B is queued.  When B gets the
        # server (with W waiting in the pool, so nobody new may queue) C is
        # still queued behind B: B's second query must wait for C's reply,
        # or B would read C's reply as its own.
        async def main():
            a, b, c, w = (await self.conn(), await self.conn(), await self.conn(),
                          await self.conn())
            g2 = await self.gate(80)
            # B1 still waits when B gets the server, so B's second query
            # arrives at a borrower with a reply outstanding.
            g = await self.hold_and_queue(8, (a, "'A'"),
                                          (b, "select 'B1', pg_advisory_xact_lock_shared(80)"),
                                          (c, "select 'C'"))
            w.send(hz.query_msg("select 'W1'; select 'W2'"))     # waits in the pool
            # Queued clients count as waiting (they hold no server): B, C, W.
            await self.until(lambda: self.waiting() == 3, "W waiting")
            await self.send_and_wait_read(b, hz.query_msg("select 'B2'"))
            await g.open()
            self.assertEqual(self.rows(await a.read_result())[0][0], "A")
            await g2.open()
            self.assertEqual(self.rows(await b.read_result())[0][0], "B1")
            self.assertEqual(self.rows(await b.read_result()), [["B2"]])
            self.assertEqual(self.rows(await c.read_result())[0][0], "C")
            self.assertEqual(self.rows(await w.read_result()), [["W1"], ["W2"]])
            for x in (a, b, c, w):
                await x.close()
        self.run_async(main())
        self.assertEqual(metric(self.px, FAILED), 0)

    def received(self):
        """Bytes pgwharf has read from clients (held or not)."""
        return metric(self.px, "pgwharf_bytes_received_total")

    def waiting(self):
        """Clients waiting for a server; queued ones count (they hold none),
        and one handed a server that still runs the query of a client that
        left ahead of its own."""
        return metric(self.px, "pgwharf_pool_client_waiting")

    def handed(self, conn, px=None):
        """Does conn's client hold a server (SHOW SERVERS' link to it)?  One
        still waiting for the query of a client that left ahead of it does,
        though its own SHOW CLIENTS row shows no link (it waits)."""
        px = px or self.px
        port = str(conn.w.get_extra_info("sockname")[1])
        ptr = [r["ptr"] for r in px.show("CLIENTS", port=port)]
        return len(ptr) == 1 and ptr[0] in [r["link"] for r in px.show("SERVERS")]

    async def wait_handed(self, conn, px=None):
        """Until conn's client holds a server (handed)."""
        await self.until(lambda: self.handed(conn, px), "handed the server")

    async def send_and_wait_read(self, conn, data):
        """Send data and wait until pgwharf has read it."""
        before = self.received()
        conn.send(data)
        await self.until(lambda: self.received() >= before + len(data),
                         "%d bytes read by pgwharf" % len(data))

    def test_only_a_lone_select_is_queued(self):
        async def main():
            a, b, c = await self.conn(), await self.conn(), await self.conn()
            g = await self.hold(2, a, "'A'")
            # Two statements (the second could be BEGIN) wait for the server
            # as usual.
            b.send(hz.query_msg("select 'B1'; select 'B2'"))
            await self.until(lambda: self.waiting() == 1, "B waiting")
            await g.open()
            self.rows(await a.read_result())
            self.assertEqual(self.rows(await b.read_result()), [["B1"], ["B2"]])
            # Behind an open transaction nobody is queued: A's SELECT would
            # run inside C's transaction (now() would be C's start).
            self.rows(await c.query("begin"))
            self.rows(await c.query("select 'C1'"))
            # A's query is at pgwharf while C's transaction holds the server.
            await self.send_and_wait_read(
                a, hz.query_msg("select 'A', now() = statement_timestamp()"))
            self.rows(await c.query("select 'C2'"))
            self.rows(await c.query("commit"))
            self.assertEqual(self.rows(await a.read_result()), [["A", "t"]])
            for x in (a, b, c):
                await x.close()
        self.run_async(main())
        self.assertEqual(metric(self.px, QUEUED), 0)

    def nothing_queues_behind_a_select_into(self, lock, into, first=None):
        """A's lone SELECT ... INTO (into: the rest of its text) runs
        behind the gate; B's SELECT of the table must wait for the server
        (and the cleanup) instead of queuing behind it.  first: A's
        Query before."""
        table = into.split()[-1]

        async def main():
            a, b = await self.conn(), await self.conn()
            if first:
                self.rows(await a.query(first))
            g = await self.gate(lock)
            try:
                a.send(hz.query_msg("select 'secret' as s, (select 1 from (select "
                                    "pg_advisory_xact_lock_shared(%d)) l) as marker_q%d "
                                    "into %s" % (lock, lock, into)))
                await self.wait_running("marker_q%d" % lock)
                b.send(hz.query_msg("select s from %s" % table))
                await self.until(lambda: self.waiting() == 1, "B waiting")
            finally:
                await g.open()
            try:
                self.rows(await a.read_result())
                rows, err = await b.read_result()
                self.assertEqual(rows, [])
                self.assertEqual((err or {}).get("C"), "42P01", err)
            finally:
                for x in (a, b):
                    await x.close()
        self.run_async(main())
        self.assertEqual(metric(self.px, QUEUED), 0)

    def a_select_into_does_not_queue(self, lock, into, first=None):
        """B's lone SELECT ... INTO (into: the rest of its text), sent while
        A holds the server, must not queue behind A's SELECT: it waits, its
        table is cleaned up, and D, the next client of the server, does not
        read it (gone from pg_class: temporary, not made in public, which
        would make the 42P01 pass for nothing).  first: B's Query before."""
        table = into.split()[-1]

        async def main():
            a, b = await self.conn(), await self.conn()
            if first:
                self.rows(await b.query(first))
            g = await self.hold(lock, a)
            try:
                b.send(hz.query_msg("select 'secret' as s into %s" % into))
                await self.until(lambda: self.waiting() == 1 or metric(self.px, QUEUED) == 1,
                                 "B waiting or queued")
            finally:
                await g.open()
            try:
                self.rows(await a.read_result())
                self.assertEqual(await b.read_result(), ([], None))
                d = await self.conn()
                d.send(hz.query_msg("select s from pg_temp.%s" % table))
                rows, err = await d.read_result()
                self.assertEqual(rows, [])
                self.assertEqual((err or {}).get("C"), "42P01", err)
                d.send(hz.query_msg("select relname from pg_class where relname = '%s'" % table))
                self.assertEqual(await d.read_result(), ([], None))
                await d.close()
            finally:
                for x in (a, b):
                    await x.close()
        self.run_async(main())

    def test_nothing_queues_behind_a_select_into_temp(self):
        # A's lone SELECT ... INTO TEMP leaves a temporary table that the
        # pool drops before B gets the server (server_reset_session_state):
        # B's SELECT queued behind it ran before that, and read A's table
        # (fails before: B got A's row).  B waits for the server instead.
        self.nothing_queues_behind_a_select_into(3, "temp pgw_queued_t")

    def test_a_select_into_temp_does_not_queue(self):
        # B's lone SELECT ... INTO TEMP queued behind A's SELECT ran there
        # unseen by note_setting_words: its tag did not mark the server for
        # the cleanup, and D, the next client of the server, read B's
        # table (fails before: D got 'secret').  B waits for the server.
        self.a_select_into_does_not_queue(4, "temp pgw_queued_t2")
        self.assertEqual(metric(self.px, QUEUED), 0)

    def test_nothing_queues_behind_a_select_into_with_pg_temp_first(self):
        # The search_path has pg_temp first (A's SET in an earlier
        # transaction, not tracked: the server keeps it), and A's lone
        # SELECT ... INTO, no word TEMP, makes a temporary table: B's
        # SELECT queued behind it ran before the cleanup and read A's table
        # (fails before: B got A's row).  B waits for the server instead.
        self.nothing_queues_behind_a_select_into(51, "pgw_queued_sp",
                                                 first="set search_path = pg_temp, public")

    def test_a_select_into_with_pg_temp_first_does_not_queue(self):
        # B's lone SELECT ... INTO, no word TEMP, queued behind A's SELECT
        # on a server whose search_path has pg_temp first (B's SET before,
        # not tracked) ran there unseen: no cleanup, and D, the next client
        # of the server, read B's table (fails before: D got 'secret').
        self.a_select_into_does_not_queue(52, "pgw_queued_sp2",
                                          first="set search_path = pg_temp, public")

    def test_the_client_ahead_leaving_mid_query_costs_the_queue_nothing(self):
        pids_before = None

        async def main():
            nonlocal pids_before
            a, b = await self.conn(), await self.conn()
            pids_before = self.rows(await b.query("select pg_backend_pid()"))[0][0]
            g = await self.hold(4, a, "'A'",
                                ", repeat('a', 100000) from generate_series(1, 3)")
            await self.queue((b, "select 'B', pg_backend_pid()"))
            a.abort()
            await self.wait_handed(b)            # A gone, B has the server
            await g.open()
            rb = self.rows(await b.read_result())
            self.assertEqual(rb[0][0], "B")
            # The same server: its rest of A's reply was dropped, not the
            # server closed.
            self.assertEqual(rb[0][1], pids_before)
            await b.close()
        self.run_async(main())
        self.assertEqual(metric(self.px, FAILED), 0)

    def test_a_queued_client_leaving_costs_the_others_nothing(self):
        async def main():
            a, b, c = await self.conn(), await self.conn(), await self.conn()
            g = await self.hold_and_queue(5, (a, "'A'"), (b, "select 'B', repeat('b', 100000)"),
                                          (c, "select 'C'"), leaves=b)
            await g.open()
            self.assertEqual(self.rows(await a.read_result())[0][0], "A")
            self.assertEqual(self.rows(await c.read_result()), [["C"]])
            self.assertEqual(self.rows(await c.query("select 'C2'")), [["C2"]])
            for x in (a, c):
                await x.close()
        self.run_async(main())
        self.assertEqual(metric(self.px, FAILED), 0)

    def test_a_queued_client_sending_a_refused_message_type_leaves_as_at_a_terminate(self):
        # A message of a type PostgreSQL refuses (a PasswordMessage) from a
        # client whose query is queued on the busy server ends it as a
        # Terminate there does: at once, with PostgreSQL's FATAL, its reply
        # dropped; the others get their own answers.
        async def main():
            a, b, c = await self.conn(), await self.conn(), await self.conn()
            g = await self.hold(12, a, "'A'")
            try:
                await self.queue((b, "select 'B'"), (c, "select 'C'"))
                for x, end in ((b, hz.msg(b"p", b"garbage\x00")), (c, hz.msg(b"X"))):
                    x.send(end)
                    await self.until(lambda: metric(self.px, "pgwharf_pool_client_waiting")
                                     == (1 if x is b else 0), "the client gone")
                t, body = await b.read_msg()
                self.assertEqual((t, hz.parse_fields(body).get("M")),
                                 (b"E", "invalid frontend message type 112"))
            finally:
                await g.open()
            self.assertEqual(self.rows(await a.read_result())[0][0], "A")
            self.assertEqual(self.rows(await a.query("select 'A2'")), [["A2"]])
            await a.close()
        self.run_async(main())

    def test_the_last_queued_client_leaving_keeps_its_reply_from_the_next_borrower(self):
        async def main():
            a, b, c, d = (await self.conn(), await self.conn(), await self.conn(),
                          await self.conn())
            g2 = await self.gate(90)
            g = await self.hold_and_queue(9, (a, "'A'"), (b, "select 'B'"),
                                          (c, "select 'C', pg_advisory_xact_lock_shared(90)"))
            c.abort()
            # D waits in the pool: it must never be lent the server while
            # C's reply is still to come on it.
            d.send(hz.query_msg("select 'D1'; select 'D2'"))
            await self.until(lambda: self.waiting() == 2, "C gone, D waiting")
            await g.open()
            self.assertEqual(self.rows(await a.read_result())[0][0], "A")
            self.assertEqual(self.rows(await b.read_result())[0][0], "B")
            await g2.open()
            self.assertEqual(self.rows(await d.read_result()), [["D1"], ["D2"]])
            for x in (a, b, d):
                await x.close()
        self.run_async(main())

    def test_the_client_ahead_sends_more_after_the_queue_behind_it_left(self):
        async def main():
            a, b = await self.conn(), await self.conn()
            g = await self.hold_and_queue(10, (a, "'A1'"), (b, "select 'B'"), leaves=b)
            # A2 reaches pgwharf while B's reply is still due.
            await self.send_and_wait_read(a, hz.query_msg("select 'A2'"))
            await g.open()
            self.assertEqual(self.rows(await a.read_result())[0][0], "A1")
            self.assertEqual(self.rows(await a.read_result()), [["A2"]])
            await a.close()
        self.run_async(main())

    def test_a_tainted_client_leaving_as_borrower_costs_the_queue_one_reply(self):
        async def main():
            x = await self.conn(application_name="app")
            a = await self.conn(application_name="app")
            b = await self.conn(application_name="app")
            g2 = await self.gate(110)
            g = await self.hold_and_queue(
                11, (x, "pgw_test_put('application_name', 'evil')"),
                (a, "select 'A', pg_advisory_xact_lock_shared(110)"), (b, "select 'B'"))
            await g.open()
            self.rows(await x.read_result())
            a.abort()           # A has the server now, its own reply dropped
            await self.wait_handed(b)            # A gone, B has the server
            await g2.open()
            rows, err = await asyncio.wait_for(b.read_result(), 20)
            self.assertEqual(rows, [])
            self.assertEqual((err or {}).get("C"), "08006")
            self.assertEqual(self.rows(await b.query("select 'B2'")), [["B2"]])
            for y in (x, b):
                await y.close()
        self.run_async(main())

    def test_a_queued_clients_cancel_is_sent_when_its_query_runs(self):
        async def main():
            a, b = await self.conn(), await self.conn()
            g = await self.hold_and_queue(12, (a, "'A'"), (b, "select pg_sleep(60)"))
            k = self.ask(b)
            await self.until(lambda: "event=cancel_deferred" in self.px.log(), "deferred")
            # Open while deferred, as PostgreSQL keeps it until it has
            # signalled the backend (it used to close at once).
            self.assert_open(k, "cancel connection closed while the cancel was deferred")
            await g.open()
            self.assertEqual(self.rows(await a.read_result())[0][0], "A")
            rows, err = await asyncio.wait_for(b.read_result(), 20)
            self.assertEqual((err or {}).get("C"), "57014")
            self.assert_closed(k)
            # closed once the deferred forward was done
            self.assertRegex(self.px.log(), r"event=cancel_forwarded client=deferred ")
            self.assertEqual(self.rows(await b.query("select 'B2'")), [["B2"]])
            for x in (a, b):
                await x.close()
        self.run_async(main())

    async def _deferred_cancel_try(self, key, first_sql, pipelined):
        """B queued behind A's query sends first_sql (and, pipelined, its
        next query while queued) and asks for a cancel, held (deferred)
        until B has the server.  True when B's first query ended before
        the cancel went out (the cancel is then dropped, not sent to B's
        next query); False when it landed on B's first after all."""
        a, b = await self.conn(), await self.conn()
        g2 = await self.gate(key + 100)
        g = await self.hold_and_queue(key, (a, "'A'"), (b, first_sql))
        second = hz.query_msg("select 'B2', pg_advisory_xact_lock_shared(%d) as marker_s%d"
                              % (key + 100, key))
        if pipelined:
            await self.send_and_wait_read(b, second)
        mark = len(self.px.log())
        k = self.ask(b)
        await self.until(lambda: "event=cancel_deferred" in self.px.log()[mark:], "deferred")
        await g.open()
        self.assertEqual(self.rows(await a.read_result())[0][0], "A")
        rows, err = await b.read_result()
        if err is None:
            self.assertEqual(rows[0][0], b"B")
            if not pipelined:
                b.send(second)
            await self.until(lambda: "its query ended before the deferred cancel" in
                             self.px.log()[mark:], "the deferred cancel dropped")
            await self.wait_running("marker_s%d" % key)
            await g2.open()
            self.assertEqual(self.rows(await b.read_result())[0][0], "B2")
            self.assert_closed(k)
        else:
            self.assertEqual(err.get("C"), "57014")
            await g2.open()
            if pipelined:
                await b.read_result()
        for x in (a, b):
            await x.close()
        return err is None

    def test_a_deferred_cancel_whose_query_ended_is_not_sent(self):
        # B's cancel, held while B was queued, goes out a moment after B's
        # query starts (PIPE_CANCEL_DELAY).  B's query was over by then and
        # B's next one, on the same server, got the cancel (57014).  (When
        # the cancel lands on B's first query after all, on a slow host,
        # the case is tried again.)
        async def main():
            for key in (21, 22, 23):
                if await self._deferred_cancel_try(key, "select 'B'", pipelined=False):
                    return
            self.skipTest("the cancel landed on its own query in every try")
        self.run_async(main())

    def test_a_deferred_cancel_whose_request_ended_inside_a_pipeline_is_not_sent(self):
        # As above, but B has sent its next query while queued (it goes to
        # the server behind B's first once B has the server).  The check
        # made before the deferred cancel goes out looked for a
        # ReadyForQuery ending all B had sent, not the one ending the
        # request the cancel was for: B's first query over, the cancel
        # went out anyway and canceled B's second (57014).  (B's first
        # sleeps a little so that its answer comes after B's second went
        # to the server, well before the cancel's delay is over; should it
        # take longer, the cancel lands on it and the case is tried again.)
        async def main():
            for key in (24, 25, 26):
                if await self._deferred_cancel_try(key, "select 'B', pg_sleep(0.03)",
                                                   pipelined=True):
                    return
            self.skipTest("the cancel landed on B's first query in every try")
        self.run_async(main())

    def test_a_client_gone_while_its_deferred_cancel_waited_is_ended(self):
        # A's request is queued behind C's running query; A sends another
        # (held until its turn) and ends its stream; a cancel for it is
        # held (deferred) and dropped, A's first query having ended
        # meanwhile.  The session was never ended: listed in SHOW CLIENTS,
        # its socket and max_client_conn slot held for ever, as nothing
        # looked at its end of stream again once the cancel was over.
        # (A client whose stream ends while it waits in the pool's queue
        # leaves at once now: its stream ends once its request is queued
        # on the server.)
        async def main():
            x, c, a, b = (await self.conn(), await self.conn(), await self.conn(),
                          await self.conn())
            port = a.w.get_extra_info("sockname")[1]
            g = await self.gate(31)
            self.rows(await x.query("begin"))             # holds the one server
            # C, A, B wait in the pool's queue in that order
            for n, (y, sql) in enumerate(((c, "select 'C', pg_advisory_xact_lock_shared(31) "
                                               "as marker_d31"),
                                          (a, "select 'A'"), (b, "select 'B'"))):
                y.send(hz.query_msg(sql))
                await self.until(lambda: self.px.show("POOLS", database=self.db)[0]
                                 ["cl_waiting"] == str(n + 1), "%d clients waiting" % (n + 1))
            self.rows(await x.query("commit"))
            await self.wait_running("marker_d31")
            await self.wait_queued(2)                      # A and B behind C
            a.send(hz.query_msg("select 'A2'"))            # held until A's turn
            a.w.write_eof()                                # A's stream ends; it still reads
            await self.until(lambda: "event=client_eof client=127.0.0.1:%d " % port
                             in self.px.log(), "A's end of stream read")
            mark = len(self.px.log())
            k = self.ask(a)
            await self.until(lambda: "event=cancel_deferred" in self.px.log()[mark:],
                             "deferred")
            await g.open()
            self.assertEqual(self.rows(await c.read_result())[0][0], "C")
            self.assertEqual(self.rows(await a.read_result())[0][0], "A")
            self.assert_closed(k)
            self.assertEqual(self.rows(await a.read_result())[0][0], "A2")
            # then the end of A's session, as PostgreSQL ends it
            self.assertEqual(await asyncio.wait_for(a.r.read(), 20), b"")
            await self.until(lambda: "event=disconnect client=127.0.0.1:%d " % port
                             in self.px.log(), "A's session ended")
            for y in (x, c, b):
                await y.close()
        self.run_async(main())

    def test_a_deferred_cancel_waits_for_replies_of_clients_that_left(self):
        # X leaves while queued ahead of B, its query still to run: when B
        # gets the server, X's query runs first and B drops its reply.
        # B's cancel must not go out then (it would cancel X's query and
        # leave B's running), only once B's own query runs.
        async def main():
            a, x, b = await self.conn(), await self.conn(), await self.conn()
            g2 = await self.gate(150)
            g = await self.hold_and_queue(
                15, (a, "'A'"),
                (x, "select 'X', pg_advisory_xact_lock_shared(150) as marker_q16"),
                (b, "select pg_sleep(60)"))
            x.abort()
            k = self.ask(b)
            await g.open()
            self.assertEqual(self.rows(await a.read_result())[0][0], "A")
            await self.wait_running("marker_q16")          # X's query, B dropping it
            await g2.open()
            rows, err = await asyncio.wait_for(b.read_result(), 20)
            self.assertEqual((err or {}).get("C"), "57014")
            self.assert_closed(k)
            self.assertEqual(self.rows(await b.query("select 'B2'")), [["B2"]])
            for y in (a, b):
                await y.close()
        self.run_async(main())

    def test_a_deferred_cancel_dropped_closes_its_connection(self):
        """The connection that asked for a deferred cancel closes when the
        cancel is dropped: the query is answered with 08006 instead (the
        client ahead was canceled), or the client leaves."""
        async def main():
            a, b, c = await self.conn(), await self.conn(), await self.conn()
            a.send(hz.query_msg("select pg_sleep(30) as marker_q40"))
            await self.wait_running("marker_q40")
            await self.queue((b, "select 'B'"))
            kb = self.ask(b)
            await self.until(lambda: "event=cancel_deferred" in self.px.log(), "deferred")
            self.assert_open(kb, "closed while deferred")
            await self.cancel(a)
            rows, err = await a.read_result()
            self.assertEqual((err or {}).get("C"), "57014")
            rows, err = await b.read_result()
            self.assertEqual((err or {}).get("C"), "08006")
            self.assert_closed(kb)
            # the client leaves while its cancel is deferred
            a.send(hz.query_msg("select pg_sleep(30) as marker_q41"))
            await self.wait_running("marker_q41")
            await self.queue((c, "select 'C'"))
            kc = self.ask(c)
            await self.until(lambda: self.px.log().count("event=cancel_deferred") == 2,
                             "deferred again")
            self.assert_open(kc, "closed while deferred")
            c.abort()
            self.assert_closed(kc)
            await self.cancel(a)
            rows, err = await a.read_result()
            self.assertEqual((err or {}).get("C"), "57014")
            self.assertEqual(self.rows(await a.query("select 'A2'")), [["A2"]])
            await a.close()
            await b.close()
        self.run_async(main())
        self.assertNotIn("event=cancel_forwarded client=deferred", self.px.log())

    def test_a_deferred_cancel_outlives_its_connection(self):
        """The asker may close first, or be closed by cancel_wait_timeout
        while the query ahead runs on: the cancel stays deferred and still
        reaches the client's query once it runs."""
        px = self.start_pgwharf(settings={
            "pool_mode": "transaction", "default_pool_size": 1, "server_pipeline_depth": 2,
            "metrics_port": "auto", "cancel_wait_timeout": "1s"})

        async def main():
            a, b = await self.conn(px), await self.conn(px)
            for n, key in enumerate((42, 43)):
                g = await self.hold_and_queue(key, (a, "'A'"), (b, "select pg_sleep(60)"),
                                              px=px)
                k = self.ask(b, px)
                await self.until(lambda: px.log().count("event=cancel_deferred") == n + 1,
                                 "deferred")
                if n == 0:
                    k.close()                 # gone first
                else:
                    self.assert_closed(k)     # after cancel_wait_timeout
                    self.assertIn("event=cancel_wait_timeout", px.log())
                await g.open()
                self.assertEqual(self.rows(await a.read_result())[0][0], "A")
                rows, err = await asyncio.wait_for(b.read_result(), 20)
                self.assertEqual((err or {}).get("C"), "57014")
                self.assertEqual(self.rows(await b.query("select 'again'")), [["again"]])
            for x in (a, b):
                await x.close()
        self.run_async(main())

    def test_a_cancel_wait_timeout_set_by_a_reload_reaches_a_deferred_cancel(self):
        """The connection of a cancel deferred while cancel_wait_timeout was
        0 (no bound) kept it when a reload set one (the reload re-armed the
        logins only): it closes at its deferral + the new value now, as
        PgBouncer checks each cancel against the current value."""
        px = self.start_pgwharf(settings={
            "pool_mode": "transaction", "default_pool_size": 1, "server_pipeline_depth": 2,
            "metrics_port": "auto", "cancel_wait_timeout": "0"})

        async def main():
            a, b = await self.conn(px), await self.conn(px)
            g = await self.hold_and_queue(42, (a, "'A'"), (b, "select pg_sleep(60)"), px=px)
            k = self.ask(b, px)
            await self.until(lambda: "event=cancel_deferred" in px.log(), "deferred")
            px.settings["cancel_wait_timeout"] = "500ms"
            reloads = px.log().count("event=reload ")
            px.reload()
            await self.until(lambda: px.log().count("event=reload ") > reloads, "the reload")
            self.assertEqual(hz.read_until_closed(k, 10), (b"", True))
            self.assertIn("event=cancel_wait_timeout", px.log())
            await g.open()
            self.assertEqual(self.rows(await a.read_result())[0][0], "A")
            rows, err = await asyncio.wait_for(b.read_result(), 20)
            self.assertEqual((err or {}).get("C"), "57014")
            for x in (a, b):
                await x.close()
        self.run_async(main())

    def test_shutdown_with_a_deferred_cancel_waiting(self):
        """SIGINT (wait for servers) closes the connection waiting for a
        deferred cancel, and the queued query still gets it; SIGQUIT exits
        at once.  Either way the exit is clean (under ASan: no leak, no
        use after free of the waiting connection or its target)."""
        for sig in (signal.SIGINT, signal.SIGQUIT):
            px = self.start_pgwharf(settings={
                "pool_mode": "transaction", "default_pool_size": 1,
                "server_pipeline_depth": 2, "metrics_port": "auto"})

            async def main():
                a, b = await self.conn(px), await self.conn(px)
                g = await self.hold_and_queue(44, (a, "'A'"), (b, "select pg_sleep(60)"),
                                              px=px)
                k = self.ask(b, px)
                await self.until(lambda: "event=cancel_deferred" in px.log(), "deferred")
                if sig == signal.SIGQUIT:
                    # b's pg_sleep(60) is on the server already, behind A's
                    # query, and nothing will cancel it now: end the
                    # backend, which would outlive the test by a minute
                    # (py.pool_limits waits for the test databases'
                    # backends to be gone).
                    pid = int(self.pg.psql("select pid from pg_stat_activity where "
                                           "strpos(query, 'marker_q44') > 0 and "
                                           "pid <> pg_backend_pid()"))
                    self.assertEqual(px.stop(sig=sig), 0, px.log_tail())
                    self.assert_closed(k)
                    self.pg.psql("select pg_terminate_backend(%d)" % pid)
                    await g.open()
                    await self.until(lambda: self.pg.psql(
                        "select count(*) from pg_stat_activity where pid = %d" % pid) == "0",
                        "the server's backend gone")
                    return
                px.proc.send_signal(sig)
                self.assert_closed(k)          # not waited for: it holds no server
                await g.open()
                self.assertEqual(self.rows(await a.read_result())[0][0], "A")
                rows, err = await asyncio.wait_for(b.read_result(), 20)
                self.assertEqual((err or {}).get("C"), "57014")
            self.run_async(main())
            self.assertEqual(px.stop(), 0, px.log_tail())

    def test_a_query_timeout_ahead_hands_nobody_the_stuck_server(self):
        px = self.start_pgwharf(settings={
            "pool_mode": "transaction", "default_pool_size": 1, "server_pipeline_depth": 2,
            "metrics_port": "auto", "query_timeout": 2})

        async def main():
            a, b, c = await self.conn(px), await self.conn(px), await self.conn(px)
            a.send(hz.query_msg("select pg_sleep(30) as marker_q13"))
            await self.wait_running("marker_q13")
            await self.queue((b, "select 'B'"), px=px)
            rows, err = await asyncio.wait_for(a.read_result(), 20)
            self.assertEqual((err or {}).get("C"), "57014")       # A's query_timeout
            rows, err = await asyncio.wait_for(b.read_result(), 20)
            self.assertEqual((err or {}).get("C"), "08006")
            # The server stuck in A's sleep was closed: C gets a new one at
            # once, not a place behind the sleep.
            self.assertEqual(self.rows(await asyncio.wait_for(c.query("select 'C'"), 10)),
                             [["C"]])
            for x in (b, c):
                await x.close()
        self.run_async(main())

    def test_a_query_timeout_ahead_fails_the_pulled_clients_but_keeps_them(self):
        # B is granted the server and C pulled behind it at the same moment:
        # only B's query_timeout runs (C's query has not started), so C gets
        # 08006 and stays logged in, whatever order timers fire in.
        px = self.start_pgwharf(settings={
            "pool_mode": "transaction", "default_pool_size": 1, "server_pipeline_depth": 2,
            "metrics_port": "auto", "query_timeout": 2})

        async def main():
            x, b, c = await self.conn(px), await self.conn(px), await self.conn(px)
            self.rows(await x.query("begin"))
            b.send(hz.query_msg("select pg_sleep(30) as marker_q17"))
            await self.until(lambda: metric(px, "pgwharf_pool_client_waiting") == 1, "B waiting")
            c.send(hz.query_msg("select 'C'"))
            await self.until(lambda: metric(px, "pgwharf_pool_client_waiting") == 2, "C waiting")
            self.rows(await x.query("commit"))
            await self.wait_queued(1, px)
            rows, err = await asyncio.wait_for(b.read_result(), 20)
            self.assertEqual((err or {}).get("C"), "57014")       # B's query_timeout
            rows, err = await asyncio.wait_for(c.read_result(), 20)
            self.assertEqual((rows, (err or {}).get("C"), err.get("S")), ([], "08006", "ERROR"))
            self.assertEqual(self.rows(await asyncio.wait_for(c.query("select 'C2'"), 10)),
                             [["C2"]])
            for y in (x, c):
                await y.close()
        self.run_async(main())

    # query_timeout for the next tests: far more than a queued client's own
    # query takes, or than the steps a test takes before its KILL_CLIENT on a
    # loaded machine (2 s was not), less than the query held ahead of it.
    QT = 5

    def past_query_timeout(self):
        """Long enough for a held query to outlast QT (what is asserted
        after it does not depend on how much longer)."""
        return asyncio.sleep(self.QT + 1)

    FORCED = "pipeforced"

    def start_mixed_query_timeouts(self):
        """pgwharf whose database FORCED pools every client as the app role
        (a forced user: one pool), where the superuser's clients have no
        query_timeout and the app role's have QT: a client that leaves
        ahead of others may run its query as long as it likes."""
        return self.start_pgwharf(
            settings={"pool_mode": "transaction", "default_pool_size": 1,
                      "server_pipeline_depth": 4, "metrics_port": "auto",
                      "query_timeout": self.QT, "query_wait_timeout": "60s"},
            databases={self.FORCED: self.pg.conn_string(user=self.pg.app_user,
                                                        password=self.pg.app_password)},
            users={self.pg.user: "query_timeout=0"})

    async def conn_untimed(self, px):
        """A client of FORCED without a query_timeout."""
        return await hz.RawConn.connect(px.host, px.port, self.pg.user, self.FORCED,
                                        self.pg.password, timeout=30)

    async def conn_timed(self, px):
        """A client of FORCED with query_timeout QT."""
        return await hz.RawConn.connect(px.host, px.port, self.user, self.FORCED,
                                        self.password, timeout=30)

    def test_a_queued_client_that_left_costs_the_next_nothing_of_its_query_timeout(self):
        # H holds the server; A queues behind it, B behind A; A leaves.  B
        # is handed the server with A's query still to run there: B waits
        # for it, and B's query_timeout runs from when the server gets to
        # B's query.  It ran from the handoff: A's query, held past B's
        # query_timeout (A has none of its own), cut B off (FATAL 57014)
        # though B's own query is instant.
        px = self.start_mixed_query_timeouts()

        async def main():
            h, a, b = (await self.conn_untimed(px), await self.conn_untimed(px),
                       await self.conn_timed(px))
            ga = await self.gate(201)
            gh = await self.hold_and_queue(
                200, (h, "'H'"),
                (a, "select 'A', pg_advisory_xact_lock_shared(201) as marker_q201"),
                (b, "select 'B'"), px=px, leaves=a)
            await gh.open()
            self.assertEqual(self.rows(await h.read_result())[0][0], "H")
            await self.wait_running("marker_q201")       # A's query, which nobody reads
            await self.past_query_timeout()
            await ga.open()
            self.assertEqual(self.rows(await asyncio.wait_for(b.read_result(), 20)), [["B"]])
            self.assertEqual(self.rows(await b.query("select 'B2'")), [["B2"]])
            for x in (h, b):
                await x.close()
        self.run_async(main())
        self.assertEqual(metric(px, FAILED), 0)
        self.assertNotIn("query_timeout", px.log())

    def test_a_killed_client_ahead_costs_the_queue_nothing_of_its_query_timeout(self):
        # KILL_CLIENT of H, whose query runs with Q0 and Q1 queued behind:
        # Q0 gets the server while H's query still runs, and waits for it.
        # Its query_timeout started at once: H's query (H has none of its
        # own), held past Q0's, cut Q0 off (FATAL 57014) and Q1 got 08006.
        px = self.start_mixed_query_timeouts()

        async def main():
            h, q0, q1 = (await self.conn_untimed(px), await self.conn_timed(px),
                         await self.conn_timed(px))
            port = str(h.w.get_extra_info("sockname")[1])
            g = await self.hold_and_queue(202, (h, "'H'"), (q0, "select 'Q0'"),
                                          (q1, "select 'Q1'"), px=px)
            head = px.show("CLIENTS", port=port)[0]["id"]
            px.admin("KILL_CLIENT %s" % head, user=self.pg.user)
            await self.until(lambda: not px.show("CLIENTS", port=port), "H gone")
            await self.past_query_timeout()
            await g.open()
            self.assertEqual(self.rows(await asyncio.wait_for(q0.read_result(), 20)), [["Q0"]])
            self.assertEqual(self.rows(await asyncio.wait_for(q1.read_result(), 20)), [["Q1"]])
            for x in (q0, q1):
                await x.close()
        self.run_async(main())
        self.assertEqual(metric(px, FAILED), 0)

    def test_a_queued_query_ended_here_counts_its_transaction(self):
        # Q0 (57014, query_wait_timeout) and Q1 (08006) queued behind a
        # client that left get pgwharf's error and ReadyForQuery 'I'
        # (pipe_end_request): each was counted a query when it queued, and
        # no transaction, unlike the 08006 that replaces a reply
        # (pipe_failed_reply) and pgwharf's other own 'I'.
        px = self.start_pgwharf(settings={
            "pool_mode": "transaction", "default_pool_size": 1, "server_pipeline_depth": 4,
            "metrics_port": "auto", "query_wait_timeout": 2})

        def counts():
            st = px.show("STATS", database=self.db)[0]
            return int(st["total_xact_count"]), int(st["total_query_count"])

        async def main():
            h, q0, q1 = await self.conn(px), await self.conn(px), await self.conn(px)
            g = await self.hold(204, h)
            try:
                xacts, queries = counts()
                await self.queue((q0, "select 'Q0'"), (q1, "select 'Q1'"), px=px)
                h.abort()
                rows, err = await asyncio.wait_for(q0.read_result(), 30)
                self.assertEqual((rows, err.get("C")), ([], "57014"))
                rows, err = await asyncio.wait_for(q1.read_result(), 30)
                self.assertEqual((rows, err.get("C")), ([], "08006"))
                self.assertEqual(counts(), (xacts + 2, queries + 2))
            finally:
                await g.open()
                for x in (q0, q1):
                    await x.close()
        self.run_async(main())

    def test_query_wait_timeout_ends_a_wait_for_the_query_of_a_client_that_left(self):
        # What bounds the wait for a query nobody reads (its client left
        # ahead of Q0's): query_wait_timeout, from when Q0 began to wait.
        # Q0 gets its 57014 and stays; the server, stuck in that query,
        # closes, and Q1 behind gets 08006 and stays.
        px = self.start_pgwharf(settings={
            "pool_mode": "transaction", "default_pool_size": 1, "server_pipeline_depth": 4,
            "metrics_port": "auto", "query_wait_timeout": 2})

        async def main():
            h, q0, q1 = await self.conn(px), await self.conn(px), await self.conn(px)
            g = await self.hold(203, h)
            assigned = metric(px, ASSIGNED)                   # H's
            await self.queue((q0, "select 'Q0'"), (q1, "select 'Q1'"), px=px)
            h.abort()
            rows, err = await asyncio.wait_for(q0.read_result(), 30)
            self.assertEqual((rows, err.get("C"), err.get("S")), ([], "57014", "ERROR"))
            self.assertIn("query_wait_timeout", err.get("M"))
            rows, err = await asyncio.wait_for(q1.read_result(), 30)
            self.assertEqual((rows, err.get("C"), err.get("S")), ([], "08006", "ERROR"))
            # A wait that timed out is no assignment (SHOW STATS), as in
            # the pool's queue.
            self.assertEqual(metric(px, ASSIGNED), assigned)
            # A new server for both: not a place behind the stuck one.
            self.assertEqual(self.rows(await asyncio.wait_for(q0.query("select 'Q0b'"), 20)),
                             [["Q0b"]])
            self.assertEqual(self.rows(await asyncio.wait_for(q1.query("select 'Q1b'"), 20)),
                             [["Q1b"]])
            await g.open()
            for x in (q0, q1):
                await x.close()
        self.run_async(main())
        self.assertEqual(metric(px, FAILED), 1)
        self.assertEqual(metric(px, "pgwharf_wait_timeouts_total"), 1)

    def test_the_query_timeout_of_a_killed_client_ahead_ends_the_wait_for_its_query(self):
        # KILL_CLIENT of H, whose query runs with Q0 and Q1 queued behind,
        # without query_wait_timeout: Q0 is handed the server while H's
        # query still runs there, and waits for it until H's query meets
        # H's own query_timeout, as it would have had H stayed.  Then the
        # server (stuck in it) closes, Q0 gets 57014 naming query_timeout
        # and stays, Q1 behind gets 08006 and stays.  Q0 waited for as long
        # as H's query ran (here: until the test opened the gate).
        self.killed_client_ahead("query_timeout", 205)

    def test_the_transaction_timeout_of_a_killed_client_ahead_ends_the_wait_for_its_query(self):
        # As the test above, with transaction_timeout in place of
        # query_timeout: H's query is one statement in its own transaction,
        # which H's transaction_timeout would have ended had H stayed.  Q0,
        # handed the server after H was killed, waited for H's query with
        # no end (query_wait_timeout off): only query_timeout was carried.
        self.killed_client_ahead("transaction_timeout", 213)

    def killed_client_ahead(self, timeout, key):
        """H's query held (gate key) with Q0 and Q1 queued behind it, H
        killed; H's timeout (QT) must end Q0's wait for H's query."""
        px = self.start_pgwharf(settings={
            "pool_mode": "transaction", "default_pool_size": 1, "server_pipeline_depth": 4,
            "metrics_port": "auto", timeout: self.QT, "query_wait_timeout": 0})

        async def main():
            h, q0, q1 = await self.conn(px), await self.conn(px), await self.conn(px)
            port = str(h.w.get_extra_info("sockname")[1])
            g = await self.hold(key, h)
            try:
                assigned = metric(px, ASSIGNED)               # H's
                await self.queue((q0, "select 'Q0'"), (q1, "select 'Q1'"), px=px)
                head = px.show("CLIENTS", port=port)[0]["id"]
                px.admin("KILL_CLIENT %s" % head, user=self.pg.user)
                # (far past H's deadline: QT from its query's start)
                rows, err = await asyncio.wait_for(q0.read_result(), 30)
                self.assertEqual((rows, err.get("C"), err.get("S")), ([], "57014", "ERROR"))
                self.assertIn(timeout, err.get("M"))
                self.assertNotIn("query_wait_timeout", err.get("M"))
                rows, err = await asyncio.wait_for(q1.read_result(), 30)
                self.assertEqual((rows, err.get("C"), err.get("S")), ([], "08006", "ERROR"))
                # Neither got to its query: no assignment, and no wait
                # timeout (query_wait_timeout is off).
                self.assertEqual(metric(px, ASSIGNED), assigned)
                self.assertEqual(metric(px, "pgwharf_wait_timeouts_total"), 0)
                # A new server for both: not a place behind the stuck one.
                self.assertEqual(self.rows(await asyncio.wait_for(q0.query("select 'Q0b'"), 20)),
                                 [["Q0b"]])
                self.assertEqual(self.rows(await asyncio.wait_for(q1.query("select 'Q1b'"), 20)),
                                 [["Q1b"]])
                for x in (q0, q1):
                    await x.close()
            finally:
                await g.open()
        self.run_async(main())
        self.assertEqual(metric(px, FAILED), 1)

    def test_the_query_timeout_of_a_queued_client_that_left_ends_the_wait_for_its_query(self):
        # H holds the server; A queues behind it, B behind A; A leaves, and
        # query_wait_timeout is off.  When H's answer is through, B is
        # handed the server, which runs A's query now: as if A had stayed,
        # A's query_timeout runs from then, and ends B's wait for it.  The
        # server closes; B gets 57014 naming query_timeout and stays.  B
        # waited for as long as A's query ran.
        self.queued_client_left("query_timeout", 206)

    def test_the_transaction_timeout_of_a_queued_client_that_left_ends_the_wait_for_its_query(self):
        # As the test above, with transaction_timeout in place of
        # query_timeout: A's query is one statement in its own transaction,
        # which A's transaction_timeout would have ended had A stayed (the
        # killed client ahead's test has the same for a client that held
        # the server when it went).
        self.queued_client_left("transaction_timeout", 214)

    def queued_client_left(self, timeout, key):
        """H's query held (gate key), A's queued behind it (its own query
        held by gate key + 1) and B's behind A's; A leaves, then H's gate
        opens: A's timeout (QT, from when its query starts) must end B's
        wait for A's query."""
        px = self.start_pgwharf(settings={
            "pool_mode": "transaction", "default_pool_size": 1, "server_pipeline_depth": 4,
            "metrics_port": "auto", timeout: self.QT, "query_wait_timeout": 0})

        async def main():
            h, a, b = await self.conn(px), await self.conn(px), await self.conn(px)
            ga = await self.gate(key + 1)
            try:
                gh = await self.hold_and_queue(
                    key, (h, "'H'"),
                    (a, "select 'A', pg_advisory_xact_lock_shared(%d) as marker_q%d"
                     % (key + 1, key + 1)),
                    (b, "select 'B'"), px=px, leaves=a)
                await gh.open()
                self.assertEqual(self.rows(await h.read_result())[0][0], "H")
                # What fails without the timeout is this wait (the message
                # names query_timeout and transaction_timeout alike).
                rows, err = await asyncio.wait_for(b.read_result(), 30)
                self.assertEqual((rows, err.get("C"), err.get("S")), ([], "57014", "ERROR"))
                self.assertIn(timeout, err.get("M"))
                self.assertNotIn("query_wait_timeout", err.get("M"))
                self.assertEqual(self.rows(await asyncio.wait_for(b.query("select 'B2'"), 20)),
                                 [["B2"]])
                for x in (h, b):
                    await x.close()
            finally:
                await ga.open()
        self.run_async(main())
        self.assertEqual(metric(px, FAILED), 0)

    def test_a_client_waiting_for_the_query_of_one_that_left_shows_as_waiting(self):
        # B is handed the server while it still runs the query of A, who
        # left ahead of B: B waits for it, its own query not started, and
        # shows as a client waiting in the pool's queue does: SHOW CLIENTS
        # "waiting" with its wait, in SHOW POOLS' cl_waiting and maxwait.
        # Once the server gets to its query, its wait counts, once, in
        # SHOW STATS (an assignment and the wait time) as in the wait-time
        # histogram.  It showed as active with wait 0, and SHOW STATS
        # counted its wait up to the handoff only.
        px = self.px

        async def main():
            h, a, b = await self.conn(), await self.conn(), await self.conn()
            port = str(b.w.get_extra_info("sockname")[1])
            ga = await self.gate(209)
            try:
                gh = await self.hold_and_queue(
                    208, (h, "'H'"),
                    (a, "select 'A', pg_advisory_xact_lock_shared(209) as marker_q209"),
                    (b, "select 'B'"), leaves=a)
                before = [metric(px, m) for m in (ASSIGNED, "pgwharf_wait_seconds_total",
                                                   "pgwharf_acquire_wait_seconds_sum",
                                                   "pgwharf_acquire_wait_seconds_count")]
                await gh.open()
                self.assertEqual(self.rows(await h.read_result())[0][0], "H")
                await self.wait_running("marker_q209")       # A's, which nobody reads

                def b_waits():
                    row = px.show("CLIENTS", port=port)[0]
                    waited = int(row["wait"]) + int(row["wait_us"]) / 1e6
                    return row["state"] == "waiting" and waited >= 0.2
                await self.until(b_waits, "B waiting in SHOW CLIENTS")
                # Waiting, it shows no server in SHOW CLIENTS (nor SOCKETS),
                # as PgBouncer's waiting clients; the server's SHOW SERVERS
                # row still links to it.  (It showed the server.)
                row = px.show("CLIENTS", port=port)[0]
                self.assertEqual(row["link"], "")
                self.assertEqual([r["link"] for r in px.show("SOCKETS", port=port)], [""])
                self.assertEqual([(r["state"], r["link"]) for r in
                                  px.show("SERVERS", database=self.db, user=self.user)],
                                 [("active", row["ptr"])])
                pool = px.show("POOLS", database=self.db, user=self.user)[0]
                self.assertEqual((pool["cl_active"], pool["cl_waiting"]), ("1", "1"))   # H, B
                self.assertGreaterEqual(int(pool["maxwait"]) + int(pool["maxwait_us"]) / 1e6,
                                        0.2)
                self.assertEqual([r["state"] for r in px.show("SOCKETS", port=port)],
                                 ["cl_waiting"])
                self.assertEqual(metric(px, ASSIGNED), before[0])
                await ga.open()
                self.assertEqual(self.rows(await asyncio.wait_for(b.read_result(), 20)), [["B"]])
                row = px.show("CLIENTS", port=port)[0]
                self.assertEqual((row["state"], row["wait"], row["wait_us"]), ("idle", "0", "0"))
                after = [metric(px, m) for m in (ASSIGNED, "pgwharf_wait_seconds_total",
                                                  "pgwharf_acquire_wait_seconds_sum",
                                                  "pgwharf_acquire_wait_seconds_count")]
                d = [x - y for x, y in zip(after, before)]
                self.assertEqual((d[0], d[3]), (1, 1))          # B's; A never got there
                self.assertGreaterEqual(d[1], 0.2)
                self.assertAlmostEqual(d[1], d[2], delta=0.002)   # one wait, counted alike
                for x in (h, b):
                    await x.close()
            finally:
                await ga.open()
        self.run_async(main())
        self.assertEqual(metric(px, FAILED), 0)

    def test_a_server_lost_while_a_client_waits_for_the_query_of_one_that_left_keeps_it(self):
        # KILL_CLIENT of H, whose query runs with Q0 and Q1 queued behind:
        # Q0 is handed the server and waits for H's query, its own not
        # started.  The server is lost meanwhile: Q0's query did not run,
        # and Q0 stays logged in with 08006 as Q1 behind it does (it got
        # FATAL 08006 and lost its connection), and waits no more.
        px = self.px

        async def main():
            h, q0, q1 = await self.conn(), await self.conn(), await self.conn()
            hp = str(h.w.get_extra_info("sockname")[1])
            g = await self.hold_and_queue(210, (h, "'H'"), (q0, "select 'Q0'"),
                                          (q1, "select 'Q1'"))
            try:
                px.admin("KILL_CLIENT %s" % px.show("CLIENTS", port=hp)[0]["id"],
                         user=self.pg.user)
                await self.wait_handed(q0)
                self.pg.psql("select pg_terminate_backend(pid) from pg_stat_activity "
                             "where query like '%marker_q210%' and pid <> pg_backend_pid()",
                             db=self.db)
                for c in (q0, q1):
                    rows, err = await asyncio.wait_for(c.read_result(), 20)
                    self.assertEqual((rows, err.get("C"), err.get("S")), ([], "08006", "ERROR"))
                pool = px.show("POOLS", database=self.db, user=self.user)[0]
                self.assertEqual((pool["cl_waiting"], pool["maxwait"]), ("0", "0"))
                self.assertEqual(self.rows(await asyncio.wait_for(q0.query("select 'Q0b'"), 20)),
                                 [["Q0b"]])
                self.assertEqual(self.rows(await asyncio.wait_for(q1.query("select 'Q1b'"), 20)),
                                 [["Q1b"]])
                for x in (q0, q1):
                    await x.close()
            finally:
                await g.open()
        self.run_async(main())

    def test_a_server_lost_as_it_is_written_to_for_a_client_waiting_for_the_query_of_one_that_left_keeps_it(self):
        # As test_a_server_lost_while_a_client_waits_for_the_query_of_one_that_left_keeps_it,
        # but the loss comes as pgwharf writes to the server: H's query
        # runs, Q0 and fillers F queued behind it, until the last filler's
        # request no longer fits the server's socket (PostgreSQL reads
        # nothing while H's query waits at the gate; the pool's server is
        # on PostgreSQL's Unix socket, whose buffer is small).  KILL_CLIENT
        # of H hands the server to Q0, with that unsent request to send;
        # the send fails (tests/nss_gate.c, PGW_SEND_FAIL).  Q0's query
        # did not run: it gets ERROR 08006 and stays (it got FATAL 08006
        # and lost its connection), as the fillers queued on the server do.
        d = tempfile.mkdtemp(prefix="pgw-send-")
        self.addCleanup(shutil.rmtree, d, True)
        fail = os.path.join(d, "fail")
        px = self.start_pgwharf(start=False, settings={
            "pool_mode": "transaction", "default_pool_size": 1, "server_pipeline_depth": 16,
            "metrics_port": "auto", "query_wait_timeout": "60s", "io_batch": "off"},
            databases={self.db: pt.entry_conninfo(host=self.pg.sockdir, port=self.pg.port,
                                                  dbname=self.db)})
        px.extra_env.update(pt.nss_gate_env(PGW_SEND_FAIL=fail))
        px.start()
        big = "x" * 30000

        def h_unsent(hp):
            rows = px.show("SOCKETS", port=hp)
            return len(rows) == 1 and int(rows[0]["send_avail"]) > 0

        async def main():
            h, q0 = await self.conn(px), await self.conn(px)
            hp = str(h.w.get_extra_info("sockname")[1])
            g = await self.gate(212)
            fillers = []
            try:
                h.send(hz.query_msg("select 'H', pg_advisory_xact_lock_shared(212) as marker_q212"))
                await self.wait_running("marker_q212")
                q0.send(hz.query_msg("select 'Q0'"))
                await self.wait_queued(1, px)
                for i in range(14):
                    f = await self.conn(px)
                    fillers.append(f)
                    f.send(hz.query_msg("select 'F%d', length('%s')" % (i, big)))
                    await self.until(lambda: px.show("POOLS", database=self.db, user=self.user)
                                     [0]["cl_waiting"] == str(i + 2), "F%d waiting" % i)
                    if h_unsent(hp):
                        break
                self.assertTrue(h_unsent(hp), "a request left unsent on the server's socket")
                self.assertEqual(metric(px, QUEUED), len(fillers) + 1)     # Q0's, all F's
                with open(fail, "w"):
                    pass
                px.admin("KILL_CLIENT %s" % px.show("CLIENTS", port=hp)[0]["id"],
                         user=self.pg.user)
                rows, err = await asyncio.wait_for(q0.read_result(), 20)
                self.assertEqual((rows, err.get("C"), err.get("S")), ([], "08006", "ERROR"))
                self.assertFalse(os.path.exists(fail), "the send failed")
                for f in fillers:
                    rows, err = await asyncio.wait_for(f.read_result(), 20)
                    self.assertEqual((rows, err.get("C"), err.get("S")), ([], "08006", "ERROR"))
                await g.open()
                h.abort()
                self.assertEqual(self.rows(await asyncio.wait_for(q0.query("select 'Q0b'"), 20)),
                                 [["Q0b"]])
                pool = px.show("POOLS", database=self.db, user=self.user)[0]
                self.assertEqual((pool["cl_waiting"], pool["maxwait"]), ("0", "0"))
                for x in [q0] + fillers:
                    await x.close()
            finally:
                await g.open()
        self.run_async(main())

    def _reload_with_queued_clients(self, key, **new):
        # A reload that makes the next client need a reset server comes
        # while Q0 and Q1 are queued behind H: their queries are on the
        # server, and run before any reset could.  They get their answers
        # (all were thrown away for 08006), and the server is reset after
        # the last of them.
        px = self.start_pgwharf(settings={
            "pool_mode": "transaction", "default_pool_size": 1, "server_pipeline_depth": 4,
            "metrics_port": "auto", "query_wait_timeout": "60s",
            "server_reset_query": "discard all"})

        async def main():
            h, q0, q1, c = (await self.conn(px), await self.conn(px), await self.conn(px),
                            await self.conn(px))
            g = await self.hold_and_queue(key, (h, "'H'"), (q0, "select 'Q0'"),
                                          (q1, "select 'Q1'"), px=px)
            px.settings.update(new)
            px.write_config()
            px.admin("RELOAD", user=self.pg.user)
            # Nobody queues behind them now: C waits for the server.
            c.send(hz.query_msg("select 'C'"))
            await self.until(lambda: metric(px, "pgwharf_pool_client_waiting") == 3,
                             "C waiting")
            await g.open()
            self.assertEqual(self.rows(await h.read_result())[0][0], "H")
            self.assertEqual(self.rows(await asyncio.wait_for(q0.read_result(), 20)), [["Q0"]])
            self.assertEqual(self.rows(await asyncio.wait_for(q1.read_result(), 20)), [["Q1"]])
            self.assertEqual(self.rows(await asyncio.wait_for(c.read_result(), 20)), [["C"]])
            self.assertEqual(self.rows(await q0.query("select 'Q0b'")), [["Q0b"]])
            for x in (h, q0, q1, c):
                await x.close()
        self.run_async(main())
        self.assertEqual(metric(px, FAILED), 0)
        self.assertEqual(metric(px, QUEUED), 2)

    def test_a_reload_to_session_mode_delivers_the_queued_answers(self):
        self._reload_with_queued_clients(204, pool_mode="session")

    def test_a_reload_to_server_reset_query_always_delivers_the_queued_answers(self):
        self._reload_with_queued_clients(205, server_reset_query_always=1)

    def test_nothing_queues_while_the_reserve_pool_could_grow(self):
        # pool 1 + reserve 1.  B gets the server when X commits; C, waiting
        # too, is not queued behind B's stuck query: it gets the reserve
        # server after reserve_pool_timeout, as without queueing, and so
        # does D later (the reserve server is then idle).
        px = self.start_pgwharf(settings={
            "pool_mode": "transaction", "default_pool_size": 1, "reserve_pool_size": 1,
            "reserve_pool_timeout": 1, "server_pipeline_depth": 2, "metrics_port": "auto",
            "query_wait_timeout": "60s"})

        async def main():
            x, b, c, d = (await self.conn(px), await self.conn(px), await self.conn(px),
                          await self.conn(px))
            self.rows(await x.query("begin"))
            g = await self.gate(18)
            b.send(hz.query_msg("select 'B', pg_advisory_xact_lock_shared(18) as marker_q18"))
            c.send(hz.query_msg("select 'C'"))
            await self.until(lambda: metric(px, "pgwharf_pool_client_waiting") == 2,
                             "B and C waiting")
            self.rows(await x.query("commit"))
            await self.wait_running("marker_q18")
            self.assertEqual(self.rows(await asyncio.wait_for(c.read_result(), 20)), [["C"]])
            self.assertEqual(self.rows(await asyncio.wait_for(d.query("select 'D'"), 20)),
                             [["D"]])
            await g.open()
            self.assertEqual(self.rows(await b.read_result())[0][0], "B")
            for y in (x, b, c, d):
                await y.close()
        self.run_async(main())
        self.assertEqual(metric(px, QUEUED), 0)

    def test_queues_at_a_database_limit_below_the_pool_size(self):
        # pool 4, max_db_connections 2: the app pool's own limit is never
        # reached.  While the other user's pool has an idle server under
        # the database's limit, B gets a server of its own (that one
        # closes to make way); once both are the app pool's and busy, C is
        # queued behind A's query rather than waiting (it was not: the
        # pool was taken to have room to grow).
        px = self.start_pgwharf(settings={
            "pool_mode": "transaction", "default_pool_size": 4, "max_db_connections": 2,
            "server_pipeline_depth": 2, "metrics_port": "auto", "query_wait_timeout": "60s"})

        async def main():
            o = await hz.RawConn.connect(px.host, px.port, self.pg.user, self.db,
                                         self.pg.password, timeout=30)
            self.rows(await o.query("select 'other'"))      # its server: idle
            a, b, c = await self.conn(px), await self.conn(px), await self.conn(px)
            g = await self.hold(19, a, "'A'")
            b.send(hz.query_msg("select 'B', pg_advisory_xact_lock_shared(19) as marker_r19"))
            await self.until(lambda: self.pg.queries_running("marker_r19") == 1,
                             "B on a server of its own")
            self.assertEqual(metric(px, QUEUED), 0)
            await self.queue((c, "select 'C'"), px=px)
            await g.open()
            self.assertEqual(self.rows(await a.read_result())[0][0], "A")
            self.assertEqual(self.rows(await b.read_result())[0][0], "B")
            self.assertEqual(self.rows(await c.read_result()), [["C"]])
            for y in (o, a, b, c):
                await y.close()
        self.run_async(main())
        self.assertEqual(metric(px, FAILED), 0)

    def test_a_tainted_clients_next_query_runs_with_its_own_settings(self):
        async def main():
            a = await self.conn(TimeZone="UTC")
            x = await self.conn(TimeZone="UTC")
            g = await self.hold_and_queue(14, (a, "pgw_test_put('TimeZone', 'Asia/Tokyo')"),
                                          (x, "select 'X1'"))
            await self.send_and_wait_read(x, hz.query_msg("select current_setting('TimeZone')"))
            await g.open()
            self.rows(await a.read_result())
            rows, err = await x.read_result()
            self.assertEqual((err or {}).get("C"), "08006")
            self.assertEqual(self.rows(await x.read_result()), [["UTC"]])
            for y in (a, x):
                await y.close()
        self.run_async(main())

    def test_a_settings_change_ahead_fails_the_queued_query(self):
        async def main():
            # The same settings, so that B may queue behind A.
            a = await self.conn(application_name="app")
            b = await self.conn(application_name="app")
            g = await self.hold_and_queue(6, (a, "pgw_test_put('application_name', 'evil')"),
                                          (b, "select current_setting('application_name')"))
            await g.open()
            self.assertEqual(self.rows(await a.read_result())[0][0], "evil")
            rows, err = await b.read_result()
            self.assertEqual(rows, [], "b must not see a result run with a's settings")
            self.assertIsNotNone(err)
            self.assertEqual(err.get("C"), "08006")
            # B's session goes on, with its own settings back.
            self.assertEqual(self.rows(await b.query(
                "select current_setting('application_name')")), [["app"]])
            for x in (a, b):
                await x.close()
        self.run_async(main())
        self.assertEqual(metric(self.px, FAILED), 1)

    def test_a_select_changing_an_unreported_setting_queues_nothing(self):
        # search_path (tracked through track_extra_parameters) gives no
        # ParameterStatus when it changes: B, queued behind A's set_config
        # of it, ran in A's schema and read A's table.  A SELECT that
        # changes a setting has nobody queued behind it (nor queues).
        px = self.start_pgwharf(settings={
            "pool_mode": "transaction", "default_pool_size": 1, "server_pipeline_depth": 2,
            "metrics_port": "auto", "query_wait_timeout": "60s",
            "track_extra_parameters": "search_path"})
        self.pg.psql("drop schema if exists pgw_sa cascade; drop schema if exists pgw_sb cascade; "
                     "create schema pgw_sa; create schema pgw_sb; "
                     "create table pgw_sa.t(v text); create table pgw_sb.t(v text); "
                     "insert into pgw_sa.t values ('A'); insert into pgw_sb.t values ('B'); "
                     "grant usage on schema pgw_sa, pgw_sb to %s; "
                     "grant select on pgw_sa.t, pgw_sb.t to %s" % (self.user, self.user),
                     db=self.db)

        async def main():
            a = await self.conn(px, search_path="pgw_sb")
            b = await self.conn(px, search_path="pgw_sb")
            g = await self.hold(16, a, "set_config('search_path', 'pgw_sa', false)")
            b.send(hz.query_msg("select v from t"))
            await self.until(lambda: metric(px, "pgwharf_pool_client_waiting") == 1,
                             "b waiting")
            await g.open()
            self.assertEqual(self.rows(await a.read_result())[0][0], "pgw_sa")
            self.assertEqual(self.rows(await b.read_result()), [["B"]])
            for x in (a, b):
                await x.close()
        self.run_async(main())
        self.assertEqual(metric(px, QUEUED), 0)

    def test_a_cancel_of_the_client_ahead_never_lands_on_the_queue(self):
        async def main():
            a, b = await self.conn(), await self.conn()
            a.send(hz.query_msg("select pg_sleep(30) as marker_q7"))
            await self.wait_running("marker_q7")
            await self.queue((b, "select 'B'"))
            await self.cancel(a)
            rows, err = await a.read_result()
            self.assertEqual((err or {}).get("C"), "57014")
            rows, err = await b.read_result()
            self.assertEqual(rows, [])
            self.assertEqual((err or {}).get("C"), "08006")
            self.assertEqual(self.rows(await b.query("select 'B2'")), [["B2"]])
            for x in (a, b):
                await x.close()
        self.run_async(main())
        self.assertEqual(metric(self.px, FAILED), 1)

    def test_a_lost_cancel_of_the_client_ahead_never_lands_on_the_queue(self):
        # A's cancel goes to a stopped postmaster and is not confirmed
        # within cancel_wait_timeout (cancel_lost_srv): B, queued behind,
        # gets 08006 in place of its reply; A gave its server back ('I')
        # and goes on; that server is closed, and the late signal, landing
        # once the postmaster runs again, hits no query of A's or B's.
        px = self.start_pgwharf(settings={
            "pool_mode": "transaction", "default_pool_size": 1, "server_pipeline_depth": 2,
            "metrics_port": "auto", "query_wait_timeout": "60s", "cancel_wait_timeout": "1s"})
        self.px = px

        async def main():
            a, b = await self.conn(), await self.conn()
            g = await self.hold(79, a)
            try:
                await self.queue((b, "select 'B'"))
                self.pg.pause()
                self.addCleanup(self.pg.resume)
                k = self.ask(a)
                await self.until(lambda: "event=cancel_failed" in px.log(), "the cancel lost")
                self.assert_closed(k)
            finally:
                await g.open()
            rows, err = await a.read_result()
            self.assertEqual((rows, err), ([[b"H", b""]], None))
            rows, err = await b.read_result()
            self.assertEqual((rows, (err or {}).get("C")), ([], "08006"))
            self.assertIn("reason=\"a cancel sent to it was not confirmed\"", px.log())
            self.pg.resume()
            for x, tag in ((a, "A2"), (b, "B2")):
                self.assertEqual(self.rows(await x.query("select '%s' from pg_sleep(0.2)" % tag)),
                                 [[tag]])
            for x in (a, b):
                await x.close()
        self.run_async(main())

    # ---- clients waiting in the pool ----

    def test_clients_waiting_in_the_pool_queue_in_order_behind_the_next_borrower(self):
        # A's transaction holds the server: B and C wait in the pool.
        # When A is done B gets the server and C, next in the pool's queue,
        # is queued behind B's query at once.
        async def main():
            a, b, c = await self.conn(), await self.conn(), await self.conn()
            self.rows(await a.query("begin"))
            self.rows(await a.query("select 'A1'"))
            g = await self.gate(30)
            b.send(hz.query_msg("select 'B', pg_advisory_xact_lock_shared(30) as marker_q30, "
                                "pg_backend_pid()"))
            await self.until(lambda: self.waiting() == 1, "B waiting")
            c.send(hz.query_msg("select 'C', pg_backend_pid()"))
            await self.until(lambda: self.waiting() == 2, "C waiting")
            self.assertEqual(metric(self.px, QUEUED), 0)
            self.rows(await a.query("commit"))
            await self.wait_running("marker_q30")
            await self.wait_queued(1)            # C, behind B's running query
            await g.open()
            rb, rc = self.rows(await b.read_result()), self.rows(await c.read_result())
            self.assertEqual((rb[0][0], rc[0][0]), ("B", "C"))
            self.assertEqual(rb[0][2], rc[0][1])
            for x in (a, b, c):
                await x.close()
        self.run_async(main())
        self.assertEqual(metric(self.px, FAILED), 0)

    def test_a_free_server_takes_the_next_waiter_rather_than_a_queue(self):
        # Two clients wait while the pool is paused (PAUSE closed its
        # servers); after RESUME two servers connect. The first takes W1,
        # whose query then waits on a gate: W2 gets the second server, not a
        # place behind W1 on the first.
        px = self.start_pgwharf(settings={
            "pool_mode": "transaction", "default_pool_size": 2, "server_pipeline_depth": 2,
            "metrics_port": "auto", "admin_users": self.pg.user})

        def waiting(n):
            return lambda: metric(px, "pgwharf_pool_client_waiting") == n

        async def main():
            w1, w2 = await self.conn(px), await self.conn(px)
            for x in (w1, w2):               # two servers, then both idle
                self.rows(await x.query("begin"))
            for x in (w1, w2):
                self.rows(await x.query("commit"))
            gate = await self.gate(91)
            px.admin("PAUSE %s" % self.db, user=self.pg.user)
            w1.send(hz.query_msg("select 'W1', pg_backend_pid(), "
                                 "pg_advisory_xact_lock_shared(91)"))
            await self.until(waiting(1), "W1 waiting")
            w2.send(hz.query_msg("select 'W2', pg_backend_pid()"))
            await self.until(waiting(2), "W2 waiting")
            px.admin("RESUME %s" % self.db, user=self.pg.user)
            r2 = self.rows(await w2.read_result())    # while W1 waits on the gate
            await gate.open()
            r1 = self.rows(await w1.read_result())
            self.assertEqual((r1[0][0], r2[0][0]), ("W1", "W2"))
            self.assertNotEqual(r1[0][1], r2[0][1], "W2 waited behind W1 on one server")
            for x in (w1, w2):
                await x.close()
        self.run_async(main())
        self.assertEqual(metric(px, QUEUED), 0)

    def test_an_auth_query_lookup_waiting_in_the_pool_keeps_its_place(self):
        # auth_query lookups wait in the auth_user's pool as clients do,
        # but they are no clients: one at the head of the pool's queue is
        # neither queued on a server nor passed by the clients behind it.
        px = self.start_pgwharf(
            settings={"pool_mode": "transaction", "default_pool_size": 1,
                      "server_pipeline_depth": 2, "metrics_port": "auto",
                      "query_wait_timeout": "60s", "auth_type": "scram-sha-256",
                      "auth_user": self.pg.user, "auth_dbname": self.db, "verbose": 1},
            databases={self.db: self.pg.conn_string(self.db),
                       "aqdb": self.pg.conn_string(self.db, password=self.pg.app_password)},
            auth_users={self.pg.user: self.pg.password})

        async def main():
            async def su():
                return await hz.RawConn.connect(px.host, px.port, self.pg.user, self.db,
                                                self.pg.password, timeout=30)
            a, b, c, e = await su(), await su(), await su(), await su()
            g = await self.hold_and_queue(50, (a, "'A'"), (b, "select 'B'"), (c, "select 'C'"),
                                          px=px)
            # app is not in auth_file: its login looks it up, and the lookup
            # waits for the pool's one server.
            login = asyncio.ensure_future(hz.RawConn.connect(
                px.host, px.port, self.pg.app_user, "aqdb", self.pg.app_password, timeout=60))
            # (maxwait would not do: B and C, queued on the server, count)
            await self.until(lambda: re.search(r"event=auth_query .*user=%s result=waiting"
                                               % self.pg.app_user, px.log()),
                             "the lookup waiting")
            e.send(hz.query_msg("select 'E'"))
            await self.until(lambda: metric(px, "pgwharf_pool_client_waiting") == 3,
                             "E waiting")
            await g.open()
            for x, tag in ((a, "A"), (b, "B"), (c, "C"), (e, "E")):
                self.assertEqual(self.rows(await x.read_result())[0][0], tag)
            d = await login
            self.assertEqual(self.rows(await d.query("select current_user")),
                             [[self.pg.app_user]])
            for x in (a, b, c, d, e):
                await x.close()
        self.run_async(main())
        self.assertEqual(metric(px, QUEUED), 2)
        self.assertEqual(metric(px, FAILED), 0)

    def test_a_waiting_client_that_may_not_queue_keeps_its_place(self):
        # B (a lone SELECT), D (two statements), C (a lone SELECT) wait in
        # that order.  B gets the server; D may not queue, and C is not
        # queued past it: D runs after B, C after D.
        async def main():
            a, b, c, d = (await self.conn(), await self.conn(), await self.conn(),
                          await self.conn())
            self.rows(await a.query("begin"))
            g = await self.gate(31)
            b.send(hz.query_msg("select 'B', pg_advisory_xact_lock_shared(31) as marker_q31"))
            await self.until(lambda: self.waiting() == 1, "B waiting")
            d.send(hz.query_msg("select 'D1'; select 'D2', statement_timestamp()"))
            await self.until(lambda: self.waiting() == 2, "D waiting")
            c.send(hz.query_msg("select 'C', statement_timestamp()"))
            await self.until(lambda: self.waiting() == 3, "C waiting")
            self.rows(await a.query("commit"))
            await self.wait_running("marker_q31")
            self.assertEqual(self.waiting(), 2, "D and C still wait in the pool")
            self.assertEqual(metric(self.px, QUEUED), 0)
            await g.open()
            self.assertEqual(self.rows(await b.read_result())[0][0], "B")
            rd, rc = self.rows(await d.read_result()), self.rows(await c.read_result())
            self.assertEqual((rd[0][0], rd[1][0], rc[0][0]), ("D1", "D2", "C"))
            self.assertLess(rd[1][1], rc[0][1], "C ran after D")
            for x in (a, b, c, d):
                await x.close()
        self.run_async(main())

    # ---- the extended protocol (unnamed statement) ----

    def test_extended_protocol_requests_queue_and_get_their_own_answers(self):
        # A's request is extended too (five messages: none of it may be
        # taken for more than one SELECT); B sends a simple Query, C and D
        # extended ones, C's failing.
        async def main():
            a, b, c, d = (await self.conn(), await self.conn(), await self.conn(),
                          await self.conn())
            g = await self.gate(11)
            a.send(ext_msgs("select $1::text, pg_advisory_xact_lock_shared(11) as marker_q11",
                            "A"))
            await self.wait_running("marker_q11")
            await self.queue((b, "select 'B', pg_backend_pid()"),
                             (c, ext_msgs("select $1::text, 1 / $2::int", "C", "0")))
            await g.open()
            types, rows, err = await read_ext(a)
            self.assertIsNone(err)
            self.assertEqual(types, ["1", "2", "T", "D", "C", "Z"])
            self.assertEqual(rows[0][0], "A")
            rb = self.rows(await b.read_result())
            self.assertEqual(rb[0][0], "B")
            types, rows, err = await read_ext(c)
            self.assertEqual(rows, [])
            self.assertEqual((err or {}).get("C"), "22012")
            self.assertEqual(types, ["1", "E", "Z"])     # 1/0 folded at Bind
            # B now holds the server; D queues behind B's next query.
            g2 = await self.hold_and_queue(12, (b, "'B2'"),
                                           (d, ext_msgs("select $1::text, pg_backend_pid()", "D")))
            await g2.open()
            self.assertEqual(self.rows(await b.read_result())[0][0], "B2")
            types, rows, err = await read_ext(d)
            self.assertIsNone(err)
            self.assertEqual(types, ["1", "2", "T", "D", "C", "Z"])
            self.assertEqual(rows, [["D", rb[0][1]]], "D ran on the one server")
            # Everyone goes on with the extended protocol.
            for x, tag in ((a, "a2"), (b, "b2"), (c, "c2"), (d, "d2")):
                x.send(ext_msgs("select $1::text", tag))
                types, rows, err = await read_ext(x)
                self.assertEqual((types, rows, err), (["1", "2", "T", "D", "C", "Z"],
                                                      [[tag]], None))
            for x in (a, b, c, d):
                await x.close()
        self.run_async(main())
        self.assertEqual(metric(self.px, FAILED), 0)

    def test_only_an_unnamed_parse_of_a_select_queues(self):
        # A named statement may exist on one server and not another; a Bind
        # with no Parse before it would bind whatever the server has in its
        # unnamed statement; a Parse without Sync is not a whole request.
        async def main():
            a, b = await self.conn(), await self.conn()
            # B's own prepared statement that is not a SELECT.
            b.send(parse_msg("w", "show application_name") + hz.msg(b"S"))
            self.assertEqual((await read_ext(b))[0], ["1", "Z"])
            for n, req in enumerate((
                    ext_msgs("select $1::text", "named", stmt="s1"),
                    ext_msgs("", parse=False),
                    ext_msgs("", parse=False, stmt="w"),
                    ext_msgs("", parse=False, stmt="unknown"),
                    ext_msgs("update pgbench_nothing set x = $1", "1"),
                    ext_msgs("select 1; select 2"),
                    ext_msgs("select $1::text", "nosync")[:-5])):
                g = await self.hold(20 + n, a, None)
                b.send(req)
                await self.until(lambda: self.waiting() == 1, "B waiting")
                await g.open()
                self.rows(await a.read_result())
                if n == 6:
                    b.send(hz.msg(b"S"))
                types, rows, err = await read_ext(b)
                self.assertEqual(types[-1], "Z")
            for x in (a, b):
                await x.close()
        self.run_async(main())
        self.assertEqual(metric(self.px, QUEUED), 0)

    def test_an_extended_request_of_a_client_that_left_is_dropped_whole(self):
        async def main():
            a, b, c = await self.conn(), await self.conn(), await self.conn()
            g = await self.hold_and_queue(
                13, (a, "'A'"), (b, ext_msgs("select $1::text, repeat('b', 100000)", "B")),
                (c, ext_msgs("select $1::text", "C")), leaves=b)
            await g.open()
            self.assertEqual(self.rows(await a.read_result())[0][0], "A")
            types, rows, err = await read_ext(c)
            self.assertEqual((types, rows, err), (["1", "2", "T", "D", "C", "Z"], [["C"]],
                                                  None))
            for x in (a, c):
                await x.close()
        self.run_async(main())
        self.assertEqual(metric(self.px, FAILED), 0)

    def test_a_settings_change_ahead_fails_a_queued_extended_request_cleanly(self):
        # Its whole reply (ParseComplete to ReadyForQuery) is replaced by
        # 08006, and what pgwharf expected of it is forgotten: its next
        # request gets every message of its reply.
        async def main():
            a = await self.conn(application_name="app")
            b = await self.conn(application_name="app")
            g = await self.hold_and_queue(
                14, (a, "pgw_test_put('application_name', 'evil')"),
                (b, ext_msgs("select current_setting($1)", "application_name")))
            await g.open()
            self.assertEqual(self.rows(await a.read_result())[0][0], "evil")
            types, rows, err = await read_ext(b)
            self.assertEqual((types, rows), (["E", "Z"], []))
            self.assertEqual(err.get("C"), "08006")
            b.send(ext_msgs("select current_setting($1)", "application_name"))
            types, rows, err = await read_ext(b)
            self.assertEqual((types, rows, err), (["1", "2", "T", "D", "C", "Z"], [["app"]],
                                                  None))
            for x in (a, b):
                await x.close()
        self.run_async(main())
        self.assertEqual(metric(self.px, FAILED), 1)

    # ---- the extended protocol (named statements, max_prepared_statements) ----

    def test_prepared_statement_requests_queue_on_a_server_that_has_them(self):
        # B and C prepared the same text under their own names (one
        # statement on the server); their Bind/Execute queue behind A.
        async def main():
            a, b, c = await self.conn(), await self.conn(), await self.conn()
            text = "select $1::text, pg_backend_pid()"
            for x, name in ((b, "b_stmt"), (c, "c_stmt")):
                x.send(parse_msg(name, text) + hz.msg(b"S"))
                self.assertEqual((await read_ext(x))[0], ["1", "Z"])
            g = await self.hold_and_queue(15, (a, "'A'"),
                                          (b, ext_msgs("", "B", parse=False, stmt="b_stmt")),
                                          (c, ext_msgs("", "C", parse=False, stmt="c_stmt")))
            await g.open()
            self.assertEqual(self.rows(await a.read_result())[0][0], "A")
            tb, rb, eb = await read_ext(b)
            tc, rc, ec = await read_ext(c)
            self.assertEqual((tb, eb, tc, ec), (["2", "T", "D", "C", "Z"], None,
                                                ["2", "T", "D", "C", "Z"], None))
            self.assertEqual(rb[0][0], "B")
            self.assertEqual(rc[0][0], "C")
            self.assertEqual(rb[0][1], rc[0][1])
            for x in (a, b, c):
                await x.close()
        self.run_async(main())
        self.assertEqual(metric(self.px, FAILED), 0)

    def test_a_prepared_statement_request_never_queues_on_another_clients_unnamed(self):
        # A's request runs in the unnamed statement.  B's request on its
        # prepared statement, queued behind it, would leave A's statement
        # in place, and B's next request (a Bind of the unnamed statement,
        # sent while B waited) would then run A's: A's rows to B.
        async def main():
            a, b = await self.conn(), await self.conn()
            b.send(parse_msg("b_stmt", "select 'B'::text") + hz.msg(b"S"))
            self.assertEqual((await read_ext(b))[0], ["1", "Z"])
            g = await self.gate(19)
            a.send(ext_msgs("select 'rows of A', pg_advisory_xact_lock_shared(19) as marker_q19"))
            await self.wait_running("marker_q19")
            b.send(ext_msgs("", parse=False, stmt="b_stmt"))
            await self.until(lambda: any(r["state"] == "waiting"
                                         for r in self.px.show("CLIENTS")), "B waiting")
            # B's next request reaches pgwharf (SHOW STATS counts its bytes)
            # while B is still queued: it goes to the server B is handed.
            def received():
                return int(self.px.show("STATS", database=self.db)[0]["total_received"])
            before = received()
            second = ext_msgs("", parse=False, stmt="")
            b.send(second)
            await self.until(lambda: received() >= before + len(second), "B's next request read")
            await g.open()
            self.assertEqual((await read_ext(a))[1], [["rows of A", ""]])
            self.assertEqual((await read_ext(b))[1], [["B"]])
            types, rows, err = await read_ext(b)
            self.assertEqual(rows, [], "B ran A's unnamed statement")
            self.assertEqual(err and err["C"], "26000", types)
            for x in (a, b):
                await x.close()
        self.run_async(main())

    def test_a_prepared_statement_the_server_lacks_waits_for_a_server(self):
        # With max_prepared_statements = 1 the server keeps one statement:
        # B's first one was closed there when B prepared a second.  Its
        # Bind of the first must not queue (PGW_n would not exist there):
        # it waits, and pgwharf prepares the statement again when B gets
        # the server.
        px = self.start_pgwharf(settings={
            "pool_mode": "transaction", "default_pool_size": 1, "server_pipeline_depth": 2,
            "metrics_port": "auto", "max_prepared_statements": 1})

        async def main():
            a, b = await self.conn(px), await self.conn(px)
            for name, text in (("one", "select $1::text, 1"), ("two", "select $1::text, 2")):
                b.send(parse_msg(name, text) + hz.msg(b"S"))
                self.assertEqual((await read_ext(b))[0], ["1", "Z"])
            g = await self.hold(16, a, "'A'")
            b.send(ext_msgs("", "B", parse=False, stmt="one"))
            await self.until(lambda: metric(px, "pgwharf_pool_client_waiting") == 1,
                             "B waiting")
            await g.open()
            self.assertEqual(self.rows(await a.read_result())[0][0], "A")
            self.assertEqual(await read_ext(b), (["2", "T", "D", "C", "Z"], [["B", "1"]], None))
            for x in (a, b):
                await x.close()
        self.run_async(main())
        self.assertEqual(metric(px, QUEUED), 0)
        self.assertEqual(metric(px, FAILED), 0)

    def test_a_borrower_leaving_while_preparing_leaves_the_server_usable(self):
        # B's Bind needs its statement prepared on the server again (the
        # LRU closed it there): pgwharf sends a Parse first, which waits on
        # a lock; C comes; B leaves.  Then the table goes, so that Parse
        # fails, and C gets the server.  pgwharf must not believe the
        # server has the statement: once the table is back, binding it
        # works (it is closed and prepared again), rather than 26000 for
        # good.  (C queued behind B's request once, and got the server as
        # B left.  B's Bind now waits for the server's reading of the
        # statement to be checked against the one B has -- test_prepared
        # TestResultShapeKeptAfterASchemaChange -- and nothing queues
        # behind a request not sent whole: C waits for a server, and B's
        # request, whole, is answered before its session ends.)
        px = self.start_pgwharf(settings={
            "pool_mode": "transaction", "default_pool_size": 1, "server_pipeline_depth": 2,
            "metrics_port": "auto", "max_prepared_statements": 1})
        self.pg.psql("drop table if exists t_pipe_ps; create table t_pipe_ps(x int); "
                     "grant all on t_pipe_ps to %s" % self.user)

        async def main():
            b, c, e = await self.conn(px), await self.conn(px), await self.conn(px)
            text = "select count(*) from t_pipe_ps"
            for x, name, sql in ((e, "ex", text), (b, "bx", text), (e, "ey", "select 2")):
                x.send(parse_msg(name, sql) + hz.msg(b"S"))
                self.assertEqual((await read_ext(x))[0], ["1", "Z"])
            lock = await hz.RawConn.connect(self.pg.host, self.pg.port, self.pg.user, self.db,
                                            self.pg.password, timeout=30)
            self.rows(await lock.query("begin"))
            self.rows(await lock.query("lock table t_pipe_ps in access exclusive mode"))
            b.send(ext_msgs("", parse=False, stmt="bx"))
            await self.until(lambda: self.pg.psql(
                "select count(*) from pg_stat_activity where wait_event_type = 'Lock' "
                "and backend_type = 'client backend'") == "1", "B's Parse waiting on the lock")
            c.send(ext_msgs("select $1::text", "C"))
            await self.until(lambda: metric(px, "pgwharf_pool_client_waiting") == 1,
                             "C waiting")
            self.assertEqual(metric(px, QUEUED), 0)
            b.abort()
            self.rows(await lock.query("drop table t_pipe_ps"))
            self.rows(await lock.query("commit"))
            await lock.close()
            await self.until(lambda: metric(px, "pgwharf_clients_total") == 2, "B gone")
            self.assertEqual(await read_ext(c), (["1", "2", "T", "D", "C", "Z"], [["C"]], None))
            self.pg.psql("create table t_pipe_ps(x int); grant all on t_pipe_ps to %s"
                         % self.user)
            for _ in range(2):
                e.send(ext_msgs("", parse=False, stmt="ex"))
                self.assertEqual(await read_ext(e), (["2", "T", "D", "C", "Z"], [["0"]], None))
            for x in (c, e):
                await x.close()
        self.run_async(main())
        self.assertEqual(metric(px, FAILED), 0)

    def eof_table(self):
        self.pg.psql("drop table if exists t_pipe_eof; create table t_pipe_eof(x int); "
                     "grant all on t_pipe_eof to %s" % self.user)
        self.addCleanup(self.pg.psql, "drop table if exists t_pipe_eof", check=False)

    def eof_read(self, conn):
        """pgwharf has read conn's end of stream: it waits on (client_eof),
        or (before the fix) let it go."""
        port = conn.w.get_extra_info("sockname")[1]
        self.px.wait_for_log(r'event=client_eof client=127\.0\.0\.1:%d |event=disconnect '
                             r'client=127\.0\.0\.1:%d .*reason="client closed the connection"'
                             % (port, port), 30)

    async def results_then_end(self, conn, n):
        """n results, then the end of the session."""
        out = [self.rows(await conn.read_result()) for _ in range(n)]
        self.assertEqual(await conn.r.read(), b"", "the session did not end")
        conn.abort()
        return out

    def test_a_queued_client_ending_its_stream_has_its_next_request_run(self):
        # B's SELECT is queued behind A's; B sends an INSERT (held: B has
        # no server yet) and shuts down its sending side.  PostgreSQL runs
        # what it read before the end of the stream: the INSERT ran too,
        # and B reads both answers.  It was dropped with the session.
        self.eof_table()

        async def main():
            a, b = await self.conn(), await self.conn()
            g = await self.hold_and_queue(111, (a, "'A'"), (b, "select 'B'"))
            await self.send_and_wait_read(b, hz.query_msg("insert into t_pipe_eof values (1)"))
            b.w.write_eof()
            self.eof_read(b)
            await g.open()
            self.assertEqual(self.rows(await a.read_result())[0][0], "A")
            self.assertEqual(await self.results_then_end(b, 2), [[["B"]], []])
            await a.close()
        self.run_async(main())
        self.assertEqual(self.pg.psql("select count(*) from t_pipe_eof"), "1")
        self.assertEqual(metric(self.px, FAILED), 0)

    def test_a_borrower_ending_its_stream_with_a_queue_behind_has_its_next_request_run(self):
        # The same for A, ahead of B: its INSERT is held while B is queued
        # behind it, and runs (on the next server A gets) after the end of
        # A's stream.  pgwharf is stopped while the gate opens, until B's
        # query is done too, so that it reads both answers at once: B gives
        # the server back before A's INSERT asks for one, which A gets at
        # once.  (Read apart, A's INSERT would find the pool's one server
        # B's and wait in the pool's queue, which a client whose stream
        # ended leaves: the test below.)
        self.eof_table()

        async def main():
            a, b = await self.conn(), await self.conn()
            g = await self.hold_and_queue(112, (a, "'A'"), (b, "select 'B'"))
            await self.send_and_wait_read(a, hz.query_msg("insert into t_pipe_eof values (1)"))
            a.w.write_eof()
            self.eof_read(a)
            os.kill(self.px.pid, signal.SIGSTOP)
            try:
                await g.open()
                await self.until(lambda: self.pg.psql(
                    "select count(*) from pg_stat_activity where state = 'idle' "
                    "and wait_event = 'ClientRead' and datname = current_database() "
                    "and query = 'select ''B'''") == "1", "B's query done")
            finally:
                os.kill(self.px.pid, signal.SIGCONT)
            got = await self.results_then_end(a, 2)
            self.assertEqual(got[0][0][0], "A")
            self.assertEqual(got[1], [])
            self.assertEqual(self.rows(await b.read_result()), [["B"]])
            await b.close()
        self.run_async(main())
        self.assertEqual(self.pg.psql("select count(*) from t_pipe_eof"), "1")
        self.assertEqual(metric(self.px, FAILED), 0)

    def held_request_finds_the_pool_full(self, key, terminate):
        """A's INSERT, held behind its first query, finds the pool's one
        server B's (B's query waits on a second gate, key + 1) after A's
        stream ended or a Terminate came behind it: A leaves the pool's
        queue, its INSERT never runs, and the answer to its first query,
        which came in the same callback, is written before the session
        ends.  Its close's log line says the state it left, waiting (it
        said idle, the state it is in while that answer goes out)."""
        self.eof_table()
        port = []

        async def main():
            a, b = await self.conn(), await self.conn()
            port.append(a.w.get_extra_info("sockname")[1])
            g2 = await self.gate(key + 1)
            try:
                g = await self.hold_and_queue(
                    key, (a, "'A'"),
                    (b, "select 'B', pg_advisory_xact_lock_shared(%d) as marker_q%d"
                     % (key + 1, key + 1)))
                insert = hz.query_msg("insert into t_pipe_eof values (1)")
                await self.send_and_wait_read(a, insert + (b"X\0\0\0\4" if terminate else b""))
                if not terminate:
                    a.w.write_eof()
                    self.eof_read(a)
                await g.open()
                # A's answer, its turn's end and its next request's acquire
                # are one callback in pgwharf: by now A is queued or gone.
                self.assertEqual(self.rows(await a.read_result())[0][0], "A")
                self.assertEqual(metric(self.px, "pgwharf_pool_client_waiting"), 0,
                                 "A waits for a server after it left")
                self.assertEqual(await a.r.read(), b"", "A's session did not end")
                a.abort()
                await self.wait_running("marker_q%d" % (key + 1))
            finally:
                await g2.open()
            self.assertEqual(self.rows(await b.read_result()), [["B", ""]])
            await b.close()
        self.run_async(main())
        self.assertEqual(self.pg.psql("select count(*) from t_pipe_eof"), "0")
        self.assertEqual(metric(self.px, FAILED), 0)
        line = self.px.wait_for_log(r"event=disconnect client=127\.0\.0\.1:%d .*" % port[0],
                                    20).group(0)
        self.assertIn(" state=waiting ", line)

    def test_a_borrower_whose_stream_ended_leaves_when_its_held_request_finds_the_pool_full(self):
        # (It waited, as a client still there, and ran for nobody once B
        # gave the server back.)
        self.held_request_finds_the_pool_full(113, terminate=False)

    def test_a_borrower_that_terminated_gets_the_answer_owed_when_its_held_request_finds_the_pool_full(self):
        # (The answer was lost: a close at once forgot the batch of writes.)
        self.held_request_finds_the_pool_full(115, terminate=True)

    def test_drivers_queue_and_every_one_reads_its_own_rows(self):
        # asyncpg (its statement cache: named statements) and psycopg 3
        # (the unnamed statement, then its own prepared ones after five
        # runs) on a pool of one server.  First one request of each queues
        # behind a gated query; then all of them run at once, queueing as it
        # comes.
        import asyncpg
        import psycopg

        sql = "select $1::text || %d, pg_backend_pid()"

        async def worker(run, tok, n):
            for i in range(n):
                row = await run(sql % (i % 3), tok)
                self.assertEqual(row[0], "%s%d" % (tok, i % 3))

        async def main():
            apg = [await asyncpg.connect(self.px.url()) for _ in range(5)]
            pg3 = [await psycopg.AsyncConnection.connect(self.px.dsn(), autocommit=True)
                   for _ in range(5)]

            def via_asyncpg(c):
                async def run(sql, tok):
                    return await c.fetchrow(sql, tok)
                return run

            def via_psycopg(c):
                async def run(sql, tok):
                    cur = await c.execute(sql.replace("$1", "%s"), (tok,))
                    return await cur.fetchone()
                return run
            runs = [via_asyncpg(c) for c in apg[:4]] + [via_psycopg(c) for c in pg3[:4]]
            try:
                # asyncpg prepares its statements on the (one) server.
                for c in apg:
                    for i in range(3):
                        await c.fetchrow(sql % i, "warm")
                # One request of each queues behind a gated query of the
                # same driver (drivers set different startup parameters).
                for key, holder, run in ((40, apg[4], runs[0]), (41, pg3[4], runs[5])):
                    # The server takes the driver's settings first: a query
                    # that needs SETs before it takes nobody behind it.
                    await holder.execute("select 1")
                    g = await self.gate(key)
                    held = asyncio.ensure_future(holder.execute(
                        "select pg_advisory_xact_lock_shared(%d) as marker_q%d" % (key, key)))
                    await self.wait_running("marker_q%d" % key)
                    queued = metric(self.px, QUEUED)
                    first = asyncio.ensure_future(worker(run, "first%d-" % key, 1))
                    await self.wait_queued(queued + 1)
                    await g.open()
                    await asyncio.gather(held, first)
                await asyncio.gather(*[worker(run, "c%d-" % k, 150)
                                       for k, run in enumerate(runs)])
            finally:
                for c in apg:
                    await c.close()
                for c in pg3:
                    await c.close()
        self.run_async(main())
        print("drivers: %d requests queued" % metric(self.px, QUEUED))
        self.assertEqual(metric(self.px, FAILED), 0)


if __name__ == "__main__":
    unittest.main()
