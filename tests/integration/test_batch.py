"""io_batch: the relay's writes of a loop iteration go out in one
io_uring_enter.  Checked with real clients: the relay path really goes
through the batches (the metrics count at least two sends per pgbench
transaction), results stay whole and in order when sends come up short
(multi-megabyte rows, pipelined queries, a client that reads slowly),
turning io_batch off and on under load loses nothing, and io_batch = off
writes at once (no batch counted)."""

import hashlib
import os
import re
import signal
import socket
import struct
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

    def start(self, databases=None, **settings):
        base = {"pool_mode": "transaction", "default_pool_size": 4, "metrics_port": "auto",
                "max_client_conn": 200}
        base.update(settings)
        return self.start_pgwharf(settings=base, databases=databases)

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

    def test_failed_server_send_does_not_resend_the_clients_bytes(self):
        # One loop iteration reads a chunk of rows from the server and the
        # client's next query; the batch sends both, the send to the
        # server fails (its backend is gone), and the session closes.  The
        # close wrote what the client was owed from before the batched
        # send, which the kernel had taken already: the client read the
        # same 32 kB twice.  Each byte of the stream must come once, in
        # order.  (pgwharf reaches PostgreSQL by its Unix socket: a send
        # to a peer that has gone fails there at once.)
        db = self.pg.database
        px = self.start(default_pool_size=1, databases={
            db: pt.entry_conninfo(host=self.pg.sockdir, port=self.pg.port, dbname=db)})
        mark = "batch_dup_probe"
        s = hz.raw_login(self, px)
        s.sendall(hz.query_msg("select '%s', i, repeat('r', 1000) "
                               "from generate_series(1, 1000000) i" % mark))
        got = bytearray()
        reading = threading.Event()
        reading.set()

        def drain():
            # Read as it comes while pgwharf runs: its writes to the
            # client never wait for the write watcher.
            s.settimeout(0.1)
            while reading.is_set():
                try:
                    d = s.recv(1 << 20)
                except socket.timeout:
                    continue
                if not d:
                    return
                got.extend(d)

        reader = threading.Thread(target=drain)
        reader.start()
        g = psycopg2.connect(host=self.pg.host, port=self.pg.port, user=self.pg.user,
                             password=self.pg.password, dbname=db)
        g.autocommit = True
        self.addCleanup(g.close)
        cur = g.cursor()

        def backend():
            cur.execute("select pid, wait_event from pg_stat_activity "
                        "where query like %s", ("select '%s'%%" % mark,))
            return cur.fetchone()

        try:
            pt.wait_until(backend, what="the query running")
            os.kill(px.proc.pid, signal.SIGSTOP)
            self.addCleanup(pt.sigcont, px.proc.pid)
            pt.wait_stopped([px.proc.pid])
        finally:
            reading.clear()
            reader.join(timeout=30)
        self.assertFalse(reader.is_alive())
        # pgwharf is stopped: what it wrote is all in the socket.
        s.setblocking(False)
        while True:
            try:
                d = s.recv(1 << 20)
            except BlockingIOError:
                break
            if not d:
                break
            got.extend(d)
        # The backend fills its socket, then blocks; it ends (without its
        # FATAL, which cannot go out) and its rows wait in pgwharf's socket.
        pt.wait_until(lambda: backend()[1] == "ClientWrite", what="the backend blocked")
        pid = backend()[0]
        cur.execute("select pg_terminate_backend(%s)", (pid,))
        # Gone from pg_stat_activity before its process ends, which closes
        # its socket.
        pt.wait_until(lambda: pt.proc_state(pid) in (None, "Z"), what="the backend gone")
        s.setblocking(True)
        s.settimeout(30)
        s.sendall(hz.query_msg("select 2"))
        os.kill(px.proc.pid, signal.SIGCONT)
        while True:
            try:
                d = s.recv(1 << 20)
            except ConnectionResetError:
                break
            if not d:
                break
            got.extend(d)

        def row(i):
            body = struct.pack("!h", 3)
            for v in (mark.encode(), str(i).encode(), b"r" * 1000):
                body += struct.pack("!i", len(v)) + v
            return b"D" + struct.pack("!I", len(body) + 4) + body

        # RowDescription, rows 1, 2, ... in order; at the end part of a
        # row (the connection ends mid-message) or an ErrorResponse.
        self.assertEqual(got[:1], b"T")
        at = 1 + struct.unpack("!I", bytes(got[1:5]))[0]
        i = 1
        while at < len(got):
            if got[at:at + 1] == b"E" and len(got) - at >= 5:
                n = 1 + struct.unpack("!I", bytes(got[at + 1:at + 5]))[0]
                self.assertEqual(at + n, len(got), "bytes after the ErrorResponse")
                break
            want = row(i)
            part = bytes(got[at:at + len(want)])
            self.assertEqual(part, want[:len(part)],
                             "row %d: not the next bytes of the stream (at %d of %d)"
                             % (i, at, len(got)))
            at += len(want)
            i += 1


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
