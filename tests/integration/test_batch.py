"""io_batch: the relay's writes of a loop iteration go out in one
io_uring_enter.  Checked with real clients: the relay path really goes
through the batches (the metrics count at least two sends per pgbench
transaction), results stay whole and in order when sends come up short
(multi-megabyte rows, pipelined queries, a client that reads slowly),
turning io_batch off and on under load loses nothing, and io_batch = off
writes at once (no batch counted)."""

import hashlib
import re
import socket
import threading
import unittest
import urllib.request

import pgw_hardening as hz
import pgwharf_test as pt

try:
    import psycopg2
except ImportError:          # the tests skip; scripts/deps.sh installs it
    psycopg2 = None


def metrics(px):
    url = "http://127.0.0.1:%d/metrics" % int(px.settings["metrics_port"])
    with urllib.request.urlopen(url, timeout=10) as r:
        body = r.read().decode("utf-8")
    out = {}
    for name in ("pgwharf_io_batch_enabled", "pgwharf_io_batches_total",
                 "pgwharf_io_batched_sends_total"):
        m = re.search(r"^%s (\d+)$" % name, body, re.M)
        if not m:
            raise AssertionError("%s missing from /metrics" % name)
        out[name] = int(m.group(1))
    return out


@unittest.skipIf(psycopg2 is None, "psycopg2 is not installed")
class TestBatch(pt.PgwharfTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        # pgbench tables in their own database, made directly on PostgreSQL.
        cls.bench_db = cls.pg.database
        cp = cls.pg.pgbench(["-i", "-s", "1", "-q"], db=cls.bench_db)
        assert cp.returncode == 0, cp.stdout + cp.stderr

    def start(self, **settings):
        base = {"pool_mode": "transaction", "default_pool_size": 4, "metrics_port": "auto",
                "max_client_conn": 200}
        base.update(settings)
        return self.start_pgwharf(settings=base)

    def bench(self, px, args):
        return self.assert_pgbench_ok(px, ["-n"] + args)[1]

    def test_relay_writes_go_through_batches(self):
        px = self.start()
        before = metrics(px)
        self.assertEqual(before["pgwharf_io_batch_enabled"], 1,
                         "io_uring unavailable here? log:\n" + px.log_tail())
        tx = self.bench(px, ["-S", "-c", "20", "-j", "2", "-t", "300"])
        self.assertEqual(tx, 20 * 300)
        after = metrics(px)
        batches = after["pgwharf_io_batches_total"] - before["pgwharf_io_batches_total"]
        sends = after["pgwharf_io_batched_sends_total"] - before["pgwharf_io_batched_sends_total"]
        # Every transaction is a query to the server and a reply to the
        # client: two relay writes at least, all of them batched.
        self.assertGreaterEqual(sends, 2 * tx)
        self.assertGreater(batches, 0)
        self.assertGreaterEqual(sends, batches)

    def test_off_writes_at_once(self):
        px = self.start(io_batch="off")
        tx = self.bench(px, ["-S", "-c", "10", "-j", "2", "-t", "100"])
        self.assertEqual(tx, 1000)
        m = metrics(px)
        self.assertEqual(m["pgwharf_io_batch_enabled"], 0)
        self.assertEqual(m["pgwharf_io_batches_total"], 0)
        self.assertEqual(m["pgwharf_io_batched_sends_total"], 0)

    def test_toggle_under_load(self):
        px = self.start()
        result = {}

        def load():
            result["tx"] = self.bench(px, ["-c", "16", "-j", "2", "-t", "400"])

        t = threading.Thread(target=load)
        t.start()
        admin = psycopg2.connect(px.dsn(db="pgbouncer"))
        admin.autocommit = True
        self.addCleanup(admin.close)
        seen = []
        try:
            for value in ("off", "on", "off", "on"):
                admin.cursor().execute("SET io_batch = %s" % value)
                seen.append(metrics(px)["pgwharf_io_batch_enabled"])
                # Some load under each setting before the next switch.
                px.psql("select pg_sleep(0.2)")
        finally:
            t.join(timeout=300)
        self.assertFalse(t.is_alive())
        self.assertEqual(seen, [0, 1, 0, 1])
        self.assertEqual(result.get("tx"), 16 * 400)

    def test_big_rows_stay_whole(self):
        # Rows of several MB: every send comes up short of the socket
        # buffer, so each batch falls back to the write watcher.
        px = self.start()
        sql = ("select i, repeat(md5(i::text), 100000) from generate_series(1, 6) i")
        conns = [psycopg2.connect(px.dsn()) for _ in range(4)]
        for c in conns:
            c.autocommit = True
            self.addCleanup(c.close)
        errors = []

        def run(c):
            try:
                for _ in range(3):
                    cur = c.cursor()
                    cur.execute(sql)
                    rows = cur.fetchall()
                    if [r[0] for r in rows] != list(range(1, 7)):
                        errors.append("row order %r" % [r[0] for r in rows])
                    for i, v in rows:
                        if v != hashlib.md5(str(i).encode()).hexdigest() * 100000:
                            errors.append("row %d corrupted" % i)
            except Exception as e:          # reported below, not lost in the thread
                errors.append(repr(e))

        threads = [threading.Thread(target=run, args=(c,)) for c in conns]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        self.assertEqual(errors, [])

    def test_slow_reader_and_pipelined_queries(self):
        # A raw client pipelines 200 queries without reading, then reads
        # with a tiny receive buffer: the answers arrive complete, in order.
        px = self.start()
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(30)
        s.connect(("127.0.0.1", px.port))
        self.addCleanup(s.close)
        hz.sync_login(s, self.pg.user, self.pg.database, self.pg.password)
        n = 200
        s.sendall(b"".join(hz.query_msg("select %d, repeat('y', 3000)" % i)
                           for i in range(n)))
        got = []
        while len(got) < n:
            t, body = hz.recv_msg(s)        # small reads: the kernel buffer is 4 KiB
            if t == b"E":
                self.fail("error: %r" % hz.parse_fields(body))
            if t == b"D":
                i, text = hz.data_row(body)
                got.append(int(i))
                self.assertEqual(text, b"y" * 3000)
        self.assertEqual(got, list(range(n)))


if __name__ == "__main__":
    unittest.main()
