"""Cross-talk: in transaction mode, on a pool of 3, every client only ever
sees its own rows, however the others behave.

40 asyncio clients (the raw-protocol client of pgw_hardening) each own a
token and runs OPS requests, each picked at random (seeded per client)
from a mix of:

  small        SELECT 'token', pg_backend_pid(), now() = statement_timestamp()
               (the last column proves no transaction was left open on the
               server by whoever had it before)
  large        SELECT repeat('token', 10000) (~90 kB through the relay)
  transaction  BEGIN; small; large; COMMIT, all on one backend
  pipelined    three queries sent at once, results read afterwards
  extended     Parse/Bind/Execute/Sync with the token as a parameter
  prepared     the same through a named statement (prepared once per
               connection, the same text for every client)
  drop-in-tx   BEGIN; small; then the socket is closed abruptly
  drop-mid-row a large result (simple or extended protocol) half read, then
               the socket is closed abruptly
  mixed        (with max_prepared_statements = 0) Parse/Bind/Execute and a
               Flush, their answers read, then a Query that fails, a Sync
               and a Query of the token; or a failing Parse, a Query
               (skipped) and a Sync, then that Query

Every DataRow must carry the client's own token (and the right value);
any other token, a wrong value, an unexpected error or a protocol error
fails the test.  Afterwards pgwharf is back to its baseline (fds, at most
3 idle servers, RSS).
"""

import asyncio
import random
import re
import struct
import time
import unittest
import urllib.request

import pgwharf_test as pt
import pgw_hardening as hz

CLIENTS = 40
POOL = 3
OPS = 40           # per client: 1600 in all, the rarest kinds (5 in 100) ~80 times
FAIR = 5           # what every client has done when the first is through


def token(k):
    return "T%03dT" % k


class Violation(Exception):
    pass


class CrossTalkClient:
    def __init__(self, test, px, k):
        self.test, self.px, self.k = test, px, k
        self.tok = token(k)
        self.rnd = random.Random(1000 + k)
        self.conn = None
        self.counts = {}
        self.violations = []

    async def ensure(self):
        if self.conn is None or self.conn.closed:
            self.conn = await hz.RawConn.connect(self.px.host, self.px.port, self.test.user,
                                                 self.test.db, self.test.password, timeout=60)
            self.prepared_here = False

    def check_rows(self, rows, what, expect):
        for r in rows:
            texts = [c.decode() if c is not None else None for c in r]
            joined = "|".join(t or "" for t in texts)
            if self.tok not in joined:
                self.violations.append("%s: client %s got row %r" % (what, self.tok, joined[:80]))
                continue
            for other in set(hz_tokens(joined)) - {self.tok}:
                self.violations.append("%s: client %s saw %s" % (what, self.tok, other))
        if expect is not None and len(rows) != expect:
            self.violations.append("%s: %d rows instead of %d" % (what, len(rows), expect))

    async def q(self, sql, what, expect_rows=1):
        rows, err = await self.conn.query(sql)
        if err:
            raise Violation("%s: unexpected error %s %s" % (what, err.get("C"), err.get("M")))
        self.check_rows(rows, what, expect_rows)
        return rows

    async def small(self):
        rows = await self.q("select '%s', pg_backend_pid(), now() = statement_timestamp()"
                            % self.tok, "small")
        if rows and len(rows[0]) != 3:
            raise Violation("small: %s got a row of %d columns: %r"
                            % (self.tok, len(rows[0]), rows[0]))
        if rows and rows[0][2] != b"t":
            self.violations.append("small: %s ran inside a transaction it did not open "
                                   "(backend %s)" % (self.tok, rows[0][1]))
        return rows[0][1] if rows else None

    async def large(self):
        rows = await self.q("select repeat('%s', 10000)" % self.tok, "large")
        if rows and rows[0][0] != (self.tok * 10000).encode():
            self.violations.append("large: %s got a wrong value (%d bytes)"
                                   % (self.tok, len(rows[0][0] or b"")))

    async def transaction(self):
        await self.q("begin", "begin", 0)
        rows = await self.q("select '%s', pg_backend_pid()" % self.tok, "tx-small")
        await self.large()
        rows2 = await self.q("select '%s', pg_backend_pid()" % self.tok, "tx-small2")
        if rows and rows2 and rows[0][1] != rows2[0][1]:
            self.violations.append("transaction of %s moved from backend %s to %s"
                                   % (self.tok, rows[0][1], rows2[0][1]))
        await self.q("commit", "commit", 0)

    async def pipelined(self):
        sqls = ["select '%s', %d" % (self.tok, i) for i in range(3)]
        for s in sqls:
            self.conn.send(hz.query_msg(s))
        for i in range(3):
            rows, err = await self.conn.read_result()
            if err:
                raise Violation("pipelined: error %s" % err)
            self.check_rows(rows, "pipelined", 1)
            if rows and rows[0][1] != str(i).encode():
                self.violations.append("pipelined: %s result %d out of order: %r"
                                       % (self.tok, i, rows[0]))

    def bind_execute(self, stmt=b""):
        val = self.tok.encode()
        bind = hz.msg(b"B", b"\x00" + stmt + b"\x00" + struct.pack("!HHI", 0, 1, len(val)) + val
                      + struct.pack("!H", 0))
        return bind + hz.msg(b"E", b"\x00" + struct.pack("!I", 0)) + hz.msg(b"S")

    async def extended(self, stmt=b"", what="extended"):
        sql = b"select $1::text, pg_backend_pid()\x00"
        parse = hz.msg(b"P", stmt + b"\x00" + sql + struct.pack("!H", 0))
        if stmt and self.prepared_here:
            parse = b""
        self.conn.send(parse + self.bind_execute(stmt))
        self.prepared_here = self.prepared_here or bool(stmt)
        rows = []
        while True:
            t, body = await self.conn.read_msg()
            if t == b"D":
                rows.append(hz.data_row(body))
            elif t == b"E":
                raise Violation("%s: error %s" % (what, hz.parse_fields(body)))
            elif t == b"Z":
                break
        self.check_rows(rows, what, 1)

    async def prepared(self):
        await self.extended(b"st", "prepared")

    async def drop_in_tx(self):
        await self.q("begin", "begin", 0)
        await self.q("select '%s', pg_backend_pid()" % self.tok, "drop-in-tx")
        self.conn.abort()

    async def drop_mid_row(self):
        if self.rnd.random() < 0.5:
            self.conn.send(hz.query_msg("select repeat('%s', 10000)" % self.tok))
        else:
            sql = b"select repeat($1::text, 10000)\x00"
            self.conn.send(hz.msg(b"P", b"\x00" + sql + struct.pack("!H", 0)) +
                           self.bind_execute())
        got = await self.conn.r.read(self.rnd.randint(1, 40000))
        if self.tok.encode() not in got and len(got) > 200:
            # Past the headers there must be our token, nobody else's.
            self.violations.append("drop-mid-row: %s read %r" % (self.tok, got[:80]))
        for other in set(hz_tokens(got.decode("latin-1"))) - {self.tok}:
            self.violations.append("drop-mid-row: %s saw %s" % (self.tok, other))
        self.conn.abort()

    async def read_types(self, n, what):
        got = []
        for _ in range(n):
            t, body = await self.conn.read_msg()
            got.append(t)
            if t == b"D":
                self.check_rows([hz.data_row(body)], what, None)
        return b"".join(got).decode()

    async def mixed(self):
        """A Query after extended messages of its batch (no Sync between),
        its own error or theirs; the token's Query last."""
        sql = b"select $1::text, pg_backend_pid()\x00"
        mine = hz.query_msg("select '%s', pg_backend_pid()" % self.tok)
        if self.rnd.random() < 0.5:
            val = self.tok.encode()
            self.conn.send(hz.msg(b"P", b"\x00" + sql + struct.pack("!H", 0)) +
                           hz.msg(b"B", b"\x00\x00" + struct.pack("!HHI", 0, 1, len(val)) + val
                                  + struct.pack("!H", 0)) +
                           hz.msg(b"E", b"\x00" + struct.pack("!I", 0)) + hz.msg(b"H"))
            want = ["12DC", "EZZ"]
            first = await self.read_types(4, "mixed")
            self.conn.send(hz.query_msg("selec") + hz.msg(b"S") + mine)
        else:
            self.conn.send(hz.msg(b"P", b"\x00selec\x00" + struct.pack("!H", 0)) +
                           hz.query_msg("select 1") + hz.msg(b"S") + mine)
            want = ["", "EZ"]
            first = ""
        second = await self.read_types(len(want[1]), "mixed")
        if (first, second) != tuple(want):
            raise Violation("mixed: %s got %s %s instead of %s" % (self.tok, first, second, want))
        rows, err = await self.conn.read_result()
        if err:
            raise Violation("mixed: unexpected error %s %s" % (err.get("C"), err.get("M")))
        self.check_rows(rows, "mixed", 1)

    async def run(self):
        actions = [(self.small, 30), (self.large, 15), (self.transaction, 15),
                   (self.pipelined, 10), (self.extended, 10), (self.prepared, 10),
                   (self.drop_in_tx, 5),
                   (self.drop_mid_row, 5)]
        if self.test.mixed:
            # Named statements are server-local without max_prepared_statements.
            actions = [(fn, w) for fn, w in actions if fn != self.prepared] + [(self.mixed, 20)]
        total = sum(w for _, w in actions)
        for _ in range(OPS):
            if self.violations:
                break
            x = self.rnd.uniform(0, total)
            for fn, w in actions:
                x -= w
                if x <= 0:
                    break
            try:
                await self.ensure()
                await asyncio.wait_for(fn(), 60)
            except Violation as e:
                self.violations.append(str(e))
            except (asyncio.TimeoutError, OSError, asyncio.IncompleteReadError,
                    hz.ProtocolError, hz.PgError) as e:
                self.violations.append("%s: %s: %r" % (fn.__name__, self.tok, e))
            self.counts[fn.__name__] = self.counts.get(fn.__name__, 0) + 1
        if self.conn is not None:
            await self.conn.close()
            self.conn.abort()


def hz_tokens(text):
    import re
    return re.findall(r"T\d{3}T", text)


class TestCrossTalk(pt.AppRoleTestCase):
    mixed = False

    def test_every_client_sees_only_its_own_rows(self):
        self.cross_talk({})

    def test_every_client_sees_only_its_own_rows_without_prepared_statements(self):
        # max_prepared_statements = 0: the relay's tracker alone works out
        # which request an extended-protocol error answers (mixed).
        self.mixed = True
        self.cross_talk({"max_prepared_statements": 0})

    def test_every_client_sees_only_its_own_rows_with_queries_queued_on_servers(self):
        # server_pipeline_depth: small, large, extended and prepared are
        # lone SELECTs, queued behind one another; clients that drop mid-row or mid-transaction
        # leave replies for the queue to drop.
        px = self.cross_talk({"server_pipeline_depth": 2, "metrics_port": "auto"})
        url = "http://127.0.0.1:%d/metrics" % int(px.settings["metrics_port"])
        with urllib.request.urlopen(url, timeout=10) as r:
            body = r.read().decode("utf-8")
        queued = int(re.search(r"^pgwharf_pipelined_queries_total (\d+)$", body, re.M).group(1))
        failed = int(re.search(r"^pgwharf_pipelined_failed_total (\d+)$", body, re.M).group(1))
        print("cross-talk: %d queries queued on servers, %d failed" % (queued, failed))
        self.assertGreater(queued, 100)
        self.assertEqual(failed, 0)

    def cross_talk(self, extra):
        settings = {"pool_mode": "transaction", "default_pool_size": POOL,
                    "max_client_conn": 200, "query_wait_timeout": "60s",
                    "log_connections": 0, "log_disconnections": 0}
        settings.update(extra)
        px = self.start_pgwharf(settings=settings)
        slow = hz.sanitized(px)
        self.assertEqual(px.psql("select 1", user=self.user), "1")
        base = hz.Baseline(px, self.pg, self.user)
        clients = [CrossTalkClient(self, px, k) for k in range(CLIENTS)]

        first_through = []          # every client's count when the first had done OPS

        async def run(c):
            await c.run()
            if not first_through:
                first_through.extend(sum(x.counts.values()) for x in clients)

        async def main():
            await asyncio.gather(*[run(c) for c in clients])

        t0 = time.monotonic()
        asyncio.run(main())
        took = time.monotonic() - t0
        counts = {}
        for c in clients:
            for k, v in c.counts.items():
                counts[k] = counts.get(k, 0) + v
        violations = [v for c in clients for v in c.violations]
        print("cross-talk: %d clients, pool %d, %.1fs: %s; %d violations; the slowest had "
              "done %d when the first was through"
              % (CLIENTS, POOL, took, counts, len(violations), min(first_through or [0])))
        self.assertEqual(violations[:20], [])
        self.assertEqual([sum(c.counts.values()) for c in clients], [OPS] * CLIENTS)
        self.assertTrue(all(n >= FAIR for n in first_through),
                        "some clients starved: %s when the first was through" % first_through)
        self.assertTrue(px.alive())
        base.settle(self, max_servers=POOL, what="cross-talk",
                    rss_margin_kb=(128 if slow else 32) * 1024)
        return px


if __name__ == "__main__":
    unittest.main()
