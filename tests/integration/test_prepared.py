"""Protocol-level named prepared statements in transaction mode.

pgbench -M prepared, asyncpg with its statement cache, psycopg 3 with
prepare=True (also in a pipeline), node-postgres named queries, JDBC;
sharing across clients, the per-server LRU, and PostgreSQL's own errors.
"""

import asyncio
import contextlib
import json
import os
import shutil
import signal
import random
import resource
import select
import socket
import struct
import subprocess
import tempfile
import threading
import unittest

import psycopg2

import pgw_hardening as ph
import pgwharf_test as pt

HERE = os.path.dirname(os.path.abspath(__file__))


class Raw:
    """A bare-bones protocol client (trust auth) to send exact messages."""

    def __init__(self, host, port, user, db, **params):
        self.s = socket.create_connection((host, port))
        self.s.settimeout(20)
        body = b"user\x00%s\x00database\x00%s\x00" % (user.encode(), db.encode())
        for k, v in params.items():
            body += b"%s\x00%s\x00" % (k.encode(), v.encode())
        body += b"\x00"
        self.s.sendall(struct.pack("!II", len(body) + 8, 196608) + body)
        self.buf = b""
        self.until_ready()

    def msg(self, t, body=b""):
        return t + struct.pack("!I", len(body) + 4) + body

    def send(self, *msgs):
        self.s.sendall(b"".join(msgs))

    def read_msg(self):
        while len(self.buf) < 5 or len(self.buf) < 1 + struct.unpack("!I", self.buf[1:5])[0]:
            chunk = self.s.recv(65536)
            if not chunk:
                raise EOFError("connection closed; buffered %r" % self.buf)
            self.buf += chunk
        n = 1 + struct.unpack("!I", self.buf[1:5])[0]
        m, self.buf = self.buf[:n], self.buf[n:]
        return m[:1], m[5:]

    def until_ready(self):
        """Messages up to and including ReadyForQuery: [(type, body)]."""
        out = []
        while True:
            t, b = self.read_msg()
            out.append((t, b))
            if t == b"Z":
                return out

    # Names and texts: str, or bytes sent as they are.
    def parse(self, name, sql):
        return self.msg(b"P", raw(name) + b"\x00" + raw(sql) + b"\x00\x00\x00")

    def bind(self, stmt, portal=""):
        return self.msg(b"B", raw(portal) + b"\x00" + raw(stmt) + b"\x00" +
                        b"\x00\x00" + b"\x00\x00" + b"\x00\x00")

    def execute(self, portal=""):
        return self.msg(b"E", raw(portal) + b"\x00" + b"\x00\x00\x00\x00")

    def close_stmt(self, name):
        return self.msg(b"C", b"S" + raw(name) + b"\x00")

    def describe_stmt(self, name):
        return self.msg(b"D", b"S" + raw(name) + b"\x00")

    def query(self, sql):
        return self.msg(b"Q", raw(sql) + b"\x00")

    def sync(self):
        return self.msg(b"S")

    def close(self):
        try:
            self.send(self.msg(b"X"))
        except OSError:
            pass
        self.s.close()


@contextlib.contextmanager
def address_space_limited(pid, extra):
    """pid's RLIMIT_AS set to its address space now plus extra bytes (as a
    cgroup's memory limit would leave it little more to map), then put back."""
    with open("/proc/%d/status" % pid) as f:
        vm = [int(l.split()[1]) * 1024 for l in f if l.startswith("VmSize:")][0]
    old = resource.prlimit(pid, resource.RLIMIT_AS)
    resource.prlimit(pid, resource.RLIMIT_AS, (vm + extra, old[1]))
    try:
        yield
    finally:
        resource.prlimit(pid, resource.RLIMIT_AS, old)


def raw(x):
    return x if isinstance(x, bytes) else x.encode()


def sqlstate(body):
    for field in body.split(b"\x00"):
        if field[:1] == b"C":
            return field[1:].decode()
    return None


def types(msgs):
    return b"".join(t for t, _ in msgs).decode()


def run_clients(case, client, n):
    """client(0) ... client(n - 1), each in a thread of its own, all
    finished (two minutes at the most)."""
    threads = [threading.Thread(target=client, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    case.assertFalse(any(t.is_alive() for t in threads), "a client still runs")


def read_types(r, n):
    """The types of r's next n messages, as a str."""
    got = b""
    while len(got) < n:
        got += r.read_msg()[0]
    return got.decode()


def assert_another_client_runs(case, px):
    """A second client gets a server (the pool's one) and runs a query."""
    other = Raw(px.host, px.port, case.pg.user, case.pg.database)
    try:
        other.send(other.msg(b"Q", b"select 8\x00"))
        case.assertEqual(types(other.until_ready()), "TDCZ")
    finally:
        other.close()


def copy_setup(case, table, max_prepared):
    """A fresh table, a pgwharf lending one server in transaction mode, a
    Raw client: (px, the COPY FROM STDIN statement, the client)."""
    case.pg.psql("drop table if exists %s; create table %s (a int)" % (table, table))
    px = case.start_pgwharf(settings={"pool_mode": "transaction", "auth_type": "trust",
                                      "default_pool_size": 1, "query_wait_timeout": 5,
                                      "max_prepared_statements": max_prepared})
    return px, "copy %s from stdin" % table, Raw(px.host, px.port, case.pg.user,
                                                 case.pg.database)


def raw_on_one_server(case, mode, **settings):
    """A pgwharf in mode (trust, a pool of one server, plus settings) and a
    Raw client logged in to it."""
    base = {"pool_mode": mode, "auth_type": "trust", "default_pool_size": 1}
    base.update(settings)
    px = case.start_pgwharf(settings=base)
    return px, Raw(px.host, px.port, case.pg.user, case.pg.database)


def exchange_on_one_server(case, mode, talk, **settings):
    """talk(r, out) run by a Raw client of raw_on_one_server(case, mode,
    settings), which is stopped after: the lists of replies talk put in
    out, each error as its SQLSTATE."""
    px, r = raw_on_one_server(case, mode, **settings)
    out = []
    try:
        talk(r, out)
    finally:
        r.close()
    px.stop()
    return [[(t, sqlstate(b) if t == b"E" else b) for t, b in m] for m in out]


class TestPgbenchPrepared(pt.PgbenchTestCase):
    def test_select_only_100_clients_pool_5(self):
        px = self.start_pgwharf(settings={"pool_mode": "transaction", "default_pool_size": 5,
                                          "max_client_conn": 200})
        self.bench(px, ["-S", "-M", "prepared", "-c", "100"], 20)

    def test_show_stats_counts_parses_and_binds(self):
        # PgBouncer's total_client_parse_count, total_server_parse_count and
        # total_bind_count: 4 pgbench clients prepare their one statement
        # once each and bind it once per transaction.  The two servers get
        # it prepared once each at most for a Parse sent to them (the rest
        # are served from the registry), and once more for each client
        # whose prepare, made while both servers were lent, was answered
        # with no server (its name is read at its first Bind): at most
        # once a client in all.
        px = self.start_pgwharf(settings={"pool_mode": "transaction", "default_pool_size": 2,
                                          "metrics_port": "auto"})
        self.assert_pgbench_ok(px, ["-S", "-M", "prepared", "-c", "4", "-j", "2", "-t", "50"])
        db = self.pg.database
        row = px.show("STATS", database=db)[0]
        self.assertEqual(row["total_client_parse_count"], "4", row)
        self.assertEqual(row["total_bind_count"], "200", row)
        self.assertIn(row["total_server_parse_count"], ("1", "2", "3", "4"), row)
        totals = px.show("STATS_TOTALS", database=db)[0]
        self.assertEqual((totals["client_parse_count"], totals["server_parse_count"],
                          totals["bind_count"]),
                         ("4", row["total_server_parse_count"], "200"))
        named = {r["name"]: r["value"] for r in px.show("TOTALS")}
        self.assertEqual((named["total_ps_client_parse_count"], named["total_ps_bind_count"],
                          named["total_ps_server_parse_count"]),
                         ("4", "200", row["total_server_parse_count"]))
        self.assertEqual((px.metric("pgwharf_client_parses_total"),
                          px.metric("pgwharf_server_parses_total"),
                          px.metric("pgwharf_binds_total")),
                         (4, int(row["total_server_parse_count"]), 200))

    def test_tpcb_prepared_no_more_clients_than_servers(self):
        # pgbench prepares each client's statements with blocking calls: with
        # more clients than servers its own thread can deadlock (any pooler).
        px = self.start_pgwharf(settings={"pool_mode": "transaction", "default_pool_size": 5})
        self.bench(px, ["-M", "prepared", "-c", "5"], 40)


class TestPgbenchPreparedOnOneThread(pt.PgwharfTestCase):
    """pgbench -M prepared with more clients than threads and than servers
    (scale 1: every TPC-B transaction updates the one branch)."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.pg.pgbench(["-i", "-s", "1", "-q"])

    def test_tpcb_prepared_more_clients_than_servers_on_one_thread(self):
        # pgbench 15 prepares a client's statements with blocking calls
        # (PQprepare: a Parse and a Sync each), from the thread that reads
        # its other clients' replies: 4 clients on one thread, a pool of 2,
        # both servers held by clients inside BEGIN..END, and the next
        # client's prepare waited for a server until query_wait_timeout
        # (the run aborted).  A prepare of a statement the pool has
        # prepared is answered with no server now.  (-t, not -T: every
        # transaction must run.)
        px = self.start_pgwharf(settings={"pool_mode": "transaction", "default_pool_size": 2,
                                          "query_wait_timeout": 5})
        cp, n = self.assert_pgbench_ok(px, ["-M", "prepared", "-c", "4", "-j", "1",
                                            "-t", "50"])
        self.assertEqual(n, 200, cp.stdout)
        self.assertEqual(self.pg.psql("select count(*) from pgbench_history"), "200")


class TestDriversPrepared(pt.PgwharfTestCase):
    def setUp(self):
        super().setUp()
        self.px = self.start_pgwharf(settings={"pool_mode": "transaction",
                                               "default_pool_size": 2})

    def test_asyncpg_default_statement_cache(self):
        import asyncpg

        async def main():
            conns = [await asyncpg.connect(self.px.url()) for _ in range(6)]
            try:
                for i in range(40):
                    res = await asyncio.gather(*[
                        c.fetchval("select $1::int * %d" % (k + 2), i)
                        for k, c in enumerate(conns)])
                    self.assertEqual(res, [i * (k + 2) for k in range(6)])
                    # A transaction with several statements on one server.
                    async with conns[i % 6].transaction():
                        v = await conns[i % 6].fetchval("select $1::text || 'x'", str(i))
                        self.assertEqual(v, "%dx" % i)
            finally:
                for c in conns:
                    await c.close()

        asyncio.run(main())

    def test_psycopg3_prepare_and_pipeline(self):
        import psycopg
        conns = [psycopg.connect(self.px.dsn(), autocommit=True) for _ in range(4)]
        try:
            for i in range(20):
                for k, c in enumerate(conns):
                    r = c.execute("select %s::int + %s::int", (i, k), prepare=True).fetchone()
                    self.assertEqual(r[0], i + k)
            with conns[0].pipeline():
                curs = [conns[0].execute("select %s::int * 7", (i,), prepare=True)
                        for i in range(15)]
            self.assertEqual([c.fetchone()[0] for c in curs], [i * 7 for i in range(15)])
        finally:
            for c in conns:
                c.close()

    def test_node_postgres_named_queries(self):
        script = r"""
const { Client } = require('pg');
(async () => {
  const clients = [];
  for (let i = 0; i < 4; i++) { const c = new Client(process.argv[1]); await c.connect(); clients.push(c); }
  let sum = 0;
  for (let r = 0; r < 25; r++) {
    const res = await Promise.all(clients.map((c, i) =>
      c.query({ name: 'add-' + (i % 2), text: 'select $1::int + $2::int as v', values: [r, i] })));
    for (const x of res) sum += x.rows[0].v;
  }
  for (const c of clients) await c.end();
  console.log(JSON.stringify({ sum }));
})().catch(e => { console.error(e); process.exit(1); });
"""
        cp = subprocess.run(["node", "-e", script, self.px.url()], cwd=HERE,
                            capture_output=True, text=True, timeout=120)
        self.assertEqual(cp.returncode, 0, cp.stderr)
        self.assertEqual(json.loads(cp.stdout)["sum"],
                         sum(r + i for r in range(25) for i in range(4)))

    @unittest.skipUnless(shutil.which("javac") and os.path.exists(
        "/usr/share/java/postgresql.jar"), "needs javac and libpostgresql-jdbc-java")
    def test_jdbc_prepare_threshold_1(self):
        src = r"""
import java.sql.*;
public class T {
  public static void main(String[] a) throws Exception {
    long sum = 0;
    Connection[] cs = new Connection[4];
    for (int i = 0; i < 4; i++) cs[i] = DriverManager.getConnection(a[0], a[1], a[2]);
    for (int r = 0; r < 30; r++)
      for (int i = 0; i < 4; i++) {
        PreparedStatement ps = cs[i].prepareStatement("select ?::int + ?::int");
        ps.setInt(1, r); ps.setInt(2, i);
        ResultSet rs = ps.executeQuery(); rs.next(); sum += rs.getInt(1); rs.close(); ps.close();
      }
    for (Connection c : cs) c.close();
    System.out.println(sum);
  }
}
"""
        d = tempfile.mkdtemp(prefix="pgwharf-jdbc-")
        try:
            with open(os.path.join(d, "T.java"), "w") as f:
                f.write(src)
            jar = "/usr/share/java/postgresql.jar"
            subprocess.run(["javac", "-cp", jar, "T.java"], cwd=d, check=True, timeout=120)
            url = "jdbc:postgresql://%s:%d/%s?prepareThreshold=1&sslmode=disable" % (
                self.px.host, self.px.port, self.pg.database)
            cp = subprocess.run(["java", "-cp", jar + ":.", "T", url, self.pg.user,
                                 self.pg.password], cwd=d, capture_output=True, text=True,
                                timeout=120)
            self.assertEqual(cp.returncode, 0, cp.stderr)
            self.assertEqual(int(cp.stdout.strip()),
                             sum(r + i for r in range(30) for i in range(4)))
        finally:
            shutil.rmtree(d, ignore_errors=True)


class TestLargeMessages(pt.PgwharfTestCase):
    """Messages bigger than a relay buffer (32 KiB) with prepared
    statements on: Query, Bind and Parse are all held whole or streamed."""

    def test_large_query_bind_and_parse(self):
        import psycopg
        px = self.start_pgwharf(settings={"pool_mode": "transaction", "default_pool_size": 2})
        big = "x" * 200000
        # A large simple Query (psql sends Q).
        out = px.psql("select length('%s')" % big)
        self.assertEqual(out, str(len(big)))
        with psycopg.connect(px.dsn(), autocommit=True) as c:
            # A large Bind parameter (unnamed and named statements).
            self.assertEqual(c.execute("select length(%s)", (big,)).fetchone()[0], len(big))
            for _ in range(3):
                v = c.execute("select length(%s::text)", (big,), prepare=True).fetchone()[0]
                self.assertEqual(v, len(big))
            # A large named Parse (long statement text), prepared and reused.
            long_sql = "select %s::int + 1 /* " + ("y" * 100000) + " */"
            for i in range(3):
                self.assertEqual(c.execute(long_sql, (i,), prepare=True).fetchone()[0], i + 1)
            # A large result back.
            self.assertEqual(len(c.execute("select repeat('z', 500000)").fetchone()[0]), 500000)


    def test_large_binds_in_a_row(self):
        # Two Binds of 40 MB in one batch, behind a statement that waits
        # for a lock: the first is read and sent on, most of it still in
        # pgwharf's buffer when the second comes.  pgwharf made room for
        # both at once, over its 64 MiB, and ended the session with 54000
        # where each Bind alone fits (hunt: asyncpg's executemany of rows
        # of 34 MB); it waits for the one ahead to drain now.
        px = self.start_pgwharf(settings={"pool_mode": "transaction", "default_pool_size": 1})
        holder = psycopg2.connect(self.pg.dsn())
        self.addCleanup(holder.close)
        holder.autocommit = True
        holder.cursor().execute("select pg_advisory_lock(4242)")
        a = socket.create_connection((px.host, px.port), timeout=60)
        self.addCleanup(a.close)
        ph.sync_login(a, self.pg.user, self.pg.database, self.pg.password)
        big = [bytes([65 + i]) * 40000000 for i in range(2)]

        def bind(value):
            return ph.msg(b"B", b"\0pgw_bb\0" + struct.pack("!HHI", 0, 1, len(value)) + value +
                          struct.pack("!H", 0))

        execute = ph.msg(b"E", b"\0" + struct.pack("!I", 0))
        batch = (ph.parse_msg("", "select pg_advisory_lock(4242)") +
                 ph.msg(b"B", b"\0\0" + struct.pack("!HHH", 0, 0, 0)) + execute +
                 ph.parse_msg("pgw_bb", "select length($1::bytea)") +
                 bind(big[0]) + execute + bind(big[1]) + execute + ph.msg(b"S"))
        writer = pt.Background(lambda: a.sendall(batch))
        pt.wait_until(lambda: self.pg.psql("select count(*) from pg_locks where locktype = "
                                           "'advisory' and not granted") == "1", 30,
                      what="the first statement waiting for the lock")
        port = a.getsockname()[1]

        def second_read_first_unsent():
            rows = px.show("SOCKETS", port=port)
            self.assertEqual(len(rows), 1, "the client's session ended")
            r = {k: int(rows[0][k]) for k in ("send_pos", "pkt_pos", "recv_pos")}
            return r["send_pos"] < r["pkt_pos"] < r["recv_pos"]

        pt.wait_until(second_read_first_unsent, 60,
                      what="the second Bind read while the first waits to be sent")
        holder.cursor().execute("select pg_advisory_unlock(4242)")
        got = ph.read_until_ready(a)
        writer.join(60)
        self.assertEqual([ph.data_row(m) for t, m in got if t == b"D"],
                         [[b""], [b"40000000"], [b"40000000"]], got[:3])


    def test_a_deallocate_rewritten_in_a_full_buffer_is_not_too_large(self):
        # SQL DEALLOCATE of one of the client's statements among others in
        # a Query is rewritten (prepared.c, query_dealloc): a Close and a
        # Parse of pgwharf's go ahead of it and its text grows, some tens
        # of bytes.  A Bind of 64 MB grows the client's buffer to
        # PGW_IOBUF_MAX less its 32-byte header (pgw_iobuf_reserve's 64 kB
        # steps) and waits for a lock, the first bytes of the Query behind
        # it (the buffer is kept); then the client sends the rest of the
        # Query and, behind it, two Queries of 32 MB, none of them too
        # large, until the buffer holds all but 8 bytes.  The room
        # for the rewrite was refused past PGW_IOBUF_MAX and the session
        # ended with 54000 "too much pipelined behind a DEALLOCATE"; it is
        # made now, up to PGW_IOBUF_EDIT_MAX.
        big = 64 * 2**20                             # PGW_IOBUF_MAX
        px = self.start_pgwharf(settings={"pool_mode": "transaction", "default_pool_size": 1,
                                          "max_prepared_statements": 100})
        holder = psycopg2.connect(self.pg.dsn())
        self.addCleanup(holder.close)
        holder.autocommit = True
        holder.cursor().execute("select pg_advisory_lock(4343)")
        a = socket.create_connection((px.host, px.port), timeout=60)
        self.addCleanup(a.close)
        ph.sync_login(a, self.pg.user, self.pg.database, self.pg.password)
        a.sendall(ph.parse_msg("s1", "select length($1::text), pg_advisory_xact_lock_shared(4343)")
                  + ph.parse_msg("s2", "select 2") + ph.msg(b"S"))
        self.assertEqual([t for t, _ in ph.read_until_ready(a)], [b"1", b"1", b"Z"])

        def bind(n):                                 # of s1, n bytes of text
            return ph.msg(b"B", b"\0s1\0" + struct.pack("!HHI", 0, 1, n) + b"x" * n +
                          struct.pack("!H", 0))

        # The Bind, held whole with 1 kB to spare (relay.c, read_on): 32 kB
        # under a step, the buffer grows to big - 32 bytes.
        n1 = big - 32768 - 1024 - len(bind(0))
        query = ph.query_msg("select 1; deallocate s2")
        writer = pt.Background(lambda: a.sendall(
            bind(n1) + ph.msg(b"E", b"\0" + struct.pack("!I", 0)) + ph.msg(b"S") + query[:3]))
        self.addCleanup(writer.join, 60)
        pt.wait_until(lambda: self.pg.psql("select count(*) from pg_locks where locktype = "
                                           "'advisory' and not granted") == "1", 60,
                      what="the Bind's statement waiting for the lock")
        writer.join(60)
        full = big - 32

        def big_query(n):                            # n bytes
            return ph.query_msg("select length('%s')" % ("y" * (n - 23)))

        rest = full - 8 - len(query)
        behind = query + big_query(rest // 2) + big_query(rest - rest // 2)
        self.assertEqual(len(behind), full - 8)
        writer = pt.Background(lambda: a.sendall(behind[3:]))
        self.addCleanup(writer.join, 60)
        port = a.getsockname()[1]

        def all_read_behind_the_bind():
            rows = px.show("SOCKETS", port=port)
            self.assertEqual(len(rows), 1, "the client's session ended")
            return int(rows[0]["recv_pos"]) - int(rows[0]["send_pos"]) == len(behind)

        pt.wait_until(all_read_behind_the_bind, 60,
                      what="all of the Query and what is behind it read, the Bind sent")
        holder.cursor().execute("select pg_advisory_unlock(4343)")
        got = []
        for _ in range(4):
            msgs = ph.read_until_ready(a)
            self.assertEqual([ph.parse_fields(m) for t, m in msgs if t == b"E"], [])
            got += msgs
        writer.join(60)
        self.assertIsNone(writer.error)
        self.assertEqual([m for t, m in got if t == b"C"],
                         [b"SELECT 1\0", b"SELECT 1\0", b"DEALLOCATE\0", b"SELECT 1\0",
                          b"SELECT 1\0"])
        self.assertEqual([ph.data_row(m) for t, m in got if t == b"D"],
                         [[str(n1).encode(), b""], [b"1"], [str(rest // 2 - 23).encode()],
                          [str(rest - rest // 2 - 23).encode()]])
        # s2 is gone
        a.sendall(ph.msg(b"B", b"\0s2\0" + struct.pack("!HHH", 0, 0, 0)) + ph.msg(b"S"))
        msgs = ph.read_until_ready(a)
        self.assertEqual([ph.parse_fields(m).get("C") for t, m in msgs if t == b"E"], ["26000"])

    def test_a_bind_over_the_limit_gets_its_fatal_not_a_reset(self):
        # A Bind of 70 MB, over the 64 MiB a held message may have: the
        # session ends with FATAL 54000 while the client still sends it.
        # pgwharf closed the socket at once, its input unread, which the
        # kernel turns into a reset: the client's write failed and the
        # FATAL was lost (psycopg 3: "server closed the connection
        # unexpectedly").  The rest of what the client sends is read and
        # dropped now, so it finishes its message and reads the FATAL.
        px = self.start_pgwharf(settings={"pool_mode": "transaction",
                                          "max_prepared_statements": 100})
        c = socket.create_connection((px.host, px.port), timeout=60)
        self.addCleanup(c.close)
        ph.sync_login(c, self.pg.user, self.pg.database, self.pg.password)
        big = b"z" * (70 * 2**20)
        bind = ph.msg(b"B", b"\0\0" + struct.pack("!HHI", 0, 1, len(big)) + big +
                      struct.pack("!H", 0))
        c.sendall(ph.msg(b"P", b"\0select length($1::text)\0\0\0") + bind +
                  ph.msg(b"E", b"\0\0\0\0\0") + ph.msg(b"S"))
        c.shutdown(socket.SHUT_WR)
        data, closed = ph.read_until_closed(c, 30)
        self.assertTrue(closed)
        self.assertEqual([(f.get("S"), f.get("C")) for f in ph.error_fields_in(data)],
                         [("FATAL", "54000")], data[:200])
        px.wait_for_log(r"event=disconnect .*sqlstate=54000 reason=\S*message of type B too large")
        self.assertEqual(px.psql("select 'usable'"), "usable")

    def test_lingering_sockets_stay_within_the_open_files_budget(self):
        # Sockets lingering after a FATAL 54000 (linger.c) hold client
        # descriptors after their sessions ended; uncounted, 16 of them
        # under an open-files limit of 32 (client_cap 8) ran pgwharf out of
        # descriptors: accept paused on EMFILE with 7 clients, logins
        # stalled for the 5 s of the linger.  They take free client places
        # only now, the oldest closed when a client needs its place.
        px = self.start_pgwharf(settings={"pool_mode": "transaction",
                                          "max_prepared_statements": 100,
                                          "default_pool_size": 2},
                                binary="prlimit",
                                args=["--nofile=32:32", "--", os.environ["PGW_BINARY"]])
        socks = []

        def login():
            c = socket.create_connection((px.host, px.port), timeout=10)
            socks.append(c)
            ph.sync_login(c, self.pg.user, self.pg.database, self.pg.password)
            return c
        self.addCleanup(lambda: [c.close() for c in socks])
        body = b"\0\0" + struct.pack("!HHI", 0, 1, 70 * 2**20)
        for i in range(16):        # a Bind over the limit begun, the client then silent
            login().sendall(b"B" + struct.pack("!I", 4 + len(body) + 70 * 2**20 + 2) + body +
                            b"z" * 1000)
            pt.wait_until(lambda: px.log().count("sqlstate=54000") > i, 10, what="54000 %d" % i)
        for i in range(8):         # client_cap under 32 open files
            self.assertEqual(ph.simple_query(login(), "select 1"), ([[b"1"]], []))
        self.assertNotIn("Too many open files", px.log())

    def test_a_safe_shutdown_lets_a_lingering_socket_finish(self):
        # A socket lingering after its FATAL 54000 (linger.c) is shown as
        # pgwharf_lingering_sockets, and SIGTERM waits for it as for a
        # client (within its 5 s): it was closed at once at the exit, the
        # client's input unread, and the client still sending its message
        # got a reset.  Now it sends the rest and reads the end cleanly.
        px = self.start_pgwharf(settings={"pool_mode": "transaction",
                                          "max_prepared_statements": 100,
                                          "metrics_port": "auto"})
        c = socket.create_connection((px.host, px.port), timeout=60)
        self.addCleanup(c.close)
        ph.sync_login(c, self.pg.user, self.pg.database, self.pg.password)
        size = 70 * 2**20
        body = b"\0\0" + struct.pack("!HHI", 0, 1, size)
        c.sendall(b"B" + struct.pack("!I", 4 + len(body) + size + 2) + body + b"z" * 1000)
        data = b""
        while not ph.error_fields_in(data):
            got = c.recv(65536)
            self.assertTrue(got, "closed before its FATAL")
            data += got
        self.assertEqual([(f.get("S"), f.get("C")) for f in ph.error_fields_in(data)],
                         [("FATAL", "54000")])
        pt.wait_until(lambda: px.metric("pgwharf_lingering_sockets") == 1, 10,
                      what="its socket lingering")
        px.send_signal(signal.SIGTERM)
        px.wait_for_log(r"event=shutdown mode=wait_for_clients")
        c.sendall(b"z" * (size - 1000) + b"\0\0")
        c.shutdown(socket.SHUT_WR)
        # Its end of stream, not a reset: read_until_closed would take a
        # ConnectionResetError for a close too.
        c.settimeout(30)
        self.assertEqual(c.recv(65536), b"")
        px.proc.wait(30)
        self.assertEqual(px.proc.returncode, 0)

    def test_no_memory_for_a_held_parse_is_53200_not_too_large(self):
        # A Parse of 50 MB, under the 64 MiB a message may have, held whole
        # (max_prepared_statements on) while pgwharf cannot map the buffer
        # for it (RLIMIT_AS, as a cgroup's memory limit would): the session
        # ended with 54000 "message of type P too large", which tells the
        # client to send less.  It is pgwharf's shortage: 53200.
        px = self.start_pgwharf(settings={"pool_mode": "transaction",
                                          "max_prepared_statements": 100})
        if ph.sanitized(px):
            self.skipTest("sanitizer build: its runtime needs address space of its own")
        c = socket.create_connection((px.host, px.port), timeout=60)
        self.addCleanup(c.close)
        ph.sync_login(c, self.pg.user, self.pg.database, self.pg.password)
        self.assertEqual(ph.simple_query(c, "select 1"), ([[b"1"]], []))
        me = "event=disconnect client=%s:%d " % c.getsockname()[:2]

        def ends():
            return [l for l in px.log().splitlines() if me in l]

        with address_space_limited(px.pid, 20 * 2**20):
            parse = ph.parse_msg("s1", "select length('%s')" % ("z" * 50000000))
            try:
                c.sendall(parse + ph.msg(b"S"))
            except OSError:
                pass                         # closed before all of it was sent
            pt.wait_until(ends, 60, what="the session ended")
        self.assertEqual(len(ends()), 1, ends())
        self.assertIn('sqlstate=53200 reason="out of memory for a message of type P '
                      '(%d bytes)"' % len(parse), ends()[0])
        self.assertEqual(px.psql("select 'served'"), "served")

    def test_a_53200_mid_message_lingers_and_is_counted_too(self):
        # The session ended with 53200 (no buffer for a message within the
        # limit) while the client still sends it lingers as one ended with
        # 54000 does, and pgwharf_lingering_sockets counts it: the docs
        # said 54000 only.
        px = self.start_pgwharf(settings={"pool_mode": "transaction",
                                          "max_prepared_statements": 100,
                                          "metrics_port": "auto"})
        if ph.sanitized(px):
            self.skipTest("sanitizer build: its runtime needs address space of its own")
        c = socket.create_connection((px.host, px.port), timeout=60)
        self.addCleanup(c.close)
        ph.sync_login(c, self.pg.user, self.pg.database, self.pg.password)
        with address_space_limited(px.pid, 20 * 2**20):
            parse = ph.parse_msg("s1", "select length('%s')" % ("z" * 50000000))
            c.sendall(parse[:2**20])         # the rest not sent: it lingers
            px.wait_for_log(r"sqlstate=53200 reason=\"out of memory for a message of type P")
        self.assertEqual(px.metric("pgwharf_lingering_sockets"), 1)
        c.close()
        pt.wait_until(lambda: px.metric("pgwharf_lingering_sockets") == 0, 10,
                      what="its socket closed")


class TestStatementsKeepTheirClientsSettings(pt.PgwharfTestCase):
    def test_clients_reading_text_differently_share_no_statement(self):
        # PostgreSQL reads a statement's constants with the settings of the
        # session that Parses it, and keeps what it read.  A statement was
        # shared by text alone: the second client got the first's reading
        # (its time zone's epoch, its DateStyle's day and month).
        px = self.start_pgwharf(settings={"pool_mode": "transaction", "auth_type": "trust",
                                          "default_pool_size": 1})
        sql = ("select extract(epoch from '2020-01-01 00:00'::timestamptz)::bigint::text, "
               "'01/02/2020'::date::text")
        utc = Raw(px.host, px.port, self.pg.user, self.pg.database,
                  TimeZone="UTC", DateStyle="ISO, DMY")
        tokyo = Raw(px.host, px.port, self.pg.user, self.pg.database,
                    TimeZone="Asia/Tokyo", DateStyle="ISO, MDY")
        self.addCleanup(utc.close)
        self.addCleanup(tokyo.close)

        def run(c, first):
            msgs = ([c.parse("s1", sql)] if first else []) + [c.bind("s1"), c.execute(),
                                                                c.sync()]
            c.send(*msgs)
            got = c.until_ready()
            rows = [ph.data_row(b) for t, b in got if t == b"D"]
            self.assertEqual(len(rows), 1, got)
            return tuple(v.decode() for v in rows[0])

        for first in (True, False):
            self.assertEqual(run(utc, first), ("1577836800", "2020-02-01"))
            self.assertEqual(run(tokyo, first), ("1577804400", "2020-01-02"))
        self.assertEqual(len(px.admin("SHOW PREPARED_STATEMENTS")), 2)

    EPOCH = "select extract(epoch from '2020-01-01 00:00'::timestamptz)::bigint::text"
    UTC, TOKYO = "1577836800", "1577804400"

    def clients(self, *zones, **settings):
        """A transaction-mode pgwharf with one server (and `settings`), and
        a Raw client per time zone in `zones`."""
        px = self.start_pgwharf(settings={"pool_mode": "transaction", "auth_type": "trust",
                                          "default_pool_size": 1, **settings})
        out = []
        for tz in zones:
            c = Raw(px.host, px.port, self.pg.user, self.pg.database, TimeZone=tz)
            self.addCleanup(c.close)
            out.append(c)
        return out

    def epoch(self, c, *msgs):
        """Send msgs (ending in a Sync), read to its ReadyForQuery: the
        rows' first values."""
        c.send(*msgs)
        got = []
        while not got or got[-1][0] != b"Z":
            got.append(c.read_msg())
        errors = [b for t, b in got if t == b"E"]
        self.assertEqual(errors, [])
        return [ph.data_row(b)[0].decode() for t, b in got if t == b"D"]

    def test_databases_share_no_statement(self):
        # What pgwharf learns of a statement (its parameter types, whether
        # it returns rows, used to answer in a failed transaction) is its
        # database's: the same text in another database is another
        # statement (its tables are others).
        px = self.start_pgwharf(settings={"pool_mode": "transaction", "auth_type": "trust"})
        for db in (self.pg.database, self.pg.database2, self.pg.database):
            c = Raw(px.host, px.port, self.pg.user, db)
            self.addCleanup(c.close)
            self.assertEqual(self.epoch(c, c.parse("s1", "select current_database()"),
                                        c.bind("s1"), c.execute(), c.sync()), [db])
        self.assertEqual(len(px.admin("SHOW PREPARED_STATEMENTS")), 2)

    def test_a_parse_behind_an_unanswered_set_is_not_shared(self):
        # A SET and a Parse in one pipeline: the server reads the Parse
        # with the new value before pgwharf has the SET's answer, and the
        # statement was filed under the old one, for its other clients.
        a, b = self.clients("UTC", "UTC")
        a.send(a.query("set timezone = 'Asia/Tokyo'"), a.parse("s1", self.EPOCH),
               a.bind("s1"), a.execute(), a.sync())
        a.until_ready()
        self.assertEqual(self.epoch(a, a.bind("s1"), a.execute(), a.sync()), [self.TOKYO])
        self.assertEqual(self.epoch(b, b.parse("s1", self.EPOCH), b.bind("s1"), b.execute(),
                                    b.sync()), [self.UTC])

    def test_a_parse_behind_an_unnamed_set_is_not_shared(self):
        # The SET through the unnamed statement (psycopg 3's pipeline
        # sends a SET so): its Bind names nothing to look its words up by.
        a, b = self.clients("UTC", "UTC")
        self.assertEqual(self.epoch(a, a.parse("", "set timezone = 'Asia/Tokyo'"), a.bind(""),
                                    a.execute(), a.parse("s1", self.EPOCH), a.bind("s1"),
                                    a.execute(), a.sync()), [self.TOKYO])
        self.assertEqual(self.epoch(b, b.parse("s1", self.EPOCH), b.bind("s1"), b.execute(),
                                    b.sync()), [self.UTC])

    def test_a_parse_behind_a_commit_that_takes_a_set_back_is_not_shared(self):
        # COMMIT takes SET LOCAL back: a Parse behind it in one pipeline is
        # read with the value after it, not the client's record before.
        a, b = self.clients("UTC", "Asia/Tokyo")
        self.assertEqual(self.epoch(a, a.query("begin")), [])
        self.assertEqual(self.epoch(a, a.query("set local timezone = 'Asia/Tokyo'")), [])
        a.send(a.query("commit"), a.parse("s1", self.EPOCH), a.bind("s1"), a.execute(),
               a.sync())
        a.until_ready()
        self.assertEqual(self.epoch(a, a.bind("s1"), a.execute(), a.sync()), [self.UTC])
        self.assertEqual(self.epoch(b, b.parse("s1", self.EPOCH), b.bind("s1"), b.execute(),
                                    b.sync()), [self.TOKYO])

    def test_a_failed_parse_of_a_name_moved_to_its_settings_leaves_no_name(self):
        # The name moved to its settings' statement (its server lacked the
        # first, a SET pending) while its own Parse was still unanswered;
        # that Parse failed, and the name stayed: 42P05 at the next Parse.
        a, = self.clients("UTC", max_prepared_statements=1)
        self.assertEqual(self.epoch(a, a.parse("setx", "set timezone = 'Asia/Tokyo'"),
                                    a.sync()), [])
        a.send(a.parse("s1", "select no_such_col"), a.bind("setx"), a.execute(),
               a.bind("s1"), a.execute(), a.sync())
        errors = [sqlstate(b) for t, b in a.until_ready() if t == b"E"]
        self.assertEqual(errors, ["42703"])
        self.assertEqual(self.epoch(a, a.parse("s1", "select 1"), a.bind("s1"), a.execute(),
                                    a.sync()), ["1"])

    def test_a_statement_prepared_again_after_a_set_is_not_shared(self):
        # The client's statement, gone from its server (the LRU), was
        # prepared there again under its first settings' context but read
        # with the client's settings since: the next client of those first
        # settings got that reading.
        a, b = self.clients("UTC", "UTC", max_prepared_statements=1)
        self.assertEqual(self.epoch(a, a.parse("s1", self.EPOCH), a.bind("s1"), a.execute(),
                                    a.sync()), [self.UTC])
        self.assertEqual(self.epoch(a, a.query("set timezone = 'Asia/Tokyo'")), [])
        self.assertEqual(self.epoch(a, a.parse("s2", "select 2"), a.sync()), [])   # evicts s1's
        a.send(a.bind("s1"), a.execute(), a.sync())
        a.until_ready()
        self.assertEqual(self.epoch(b, b.parse("s1", self.EPOCH), b.bind("s1"), b.execute(),
                                    b.sync()), [self.UTC])

    def test_a_failed_transaction_after_a_set_answers_as_the_clients_statement(self):
        # In a failed transaction PostgreSQL checks a Bind's parameter
        # count (08P01) and describes a statement returning no rows before
        # it refuses anything.  After a SET the client's statement goes,
        # on a server that lacks it, as the statement of its new settings,
        # which had learnt none of that: the Bind got 25P02, the Describe
        # 25P02 in place of ParameterDescription and NoData (session 50
        # h1's differential hunt: another client's DISCARD ALL emptied
        # the server).
        a, b = self.clients("UTC", "UTC")
        self.assertEqual(self.epoch(a, a.parse("s1", "select 2 + 1"),
                                    a.parse("s2", "do $$ begin end $$"), a.sync()), [])
        self.assertEqual(self.epoch(a, a.query("set timezone = 'Asia/Tokyo'")), [])
        self.assertEqual(self.epoch(b, b.query("discard all")), [])
        a.send(a.query("begin; select 1/0"))
        self.assertEqual([sqlstate(m) for t, m in a.until_ready() if t == b"E"], ["22012"])
        one = b"\x00\x00" + b"\x00\x01" + struct.pack("!i", 1) + b"7" + b"\x00\x00"
        a.send(a.msg(b"B", b"\x00s1\x00" + one), a.sync())
        got = a.until_ready()
        self.assertEqual([(t, sqlstate(m) if t == b"E" else m) for t, m in got],
                         [(b"E", "08P01"), (b"Z", b"E")])
        self.assertIn(b'bind message supplies 1 parameters, but prepared statement "s1" '
                      b'requires 0', got[0][1])
        a.send(a.describe_stmt("s2"), a.sync())
        self.assertEqual([t for t, m in a.until_ready()], [b"t", b"n", b"Z"])
        self.assertEqual(self.epoch(a, a.query("rollback")), [])
        self.assertEqual(self.epoch(a, a.bind("s1"), a.execute(), a.sync()), ["3"])


class TestAFailedTransactionReadsPastLeadingComments(pt.PgwharfTestCase):
    """In a failed transaction PostgreSQL refuses the Parse of any
    statement but one that ends the transaction.  pgwharf judged that by
    the text's first word and took a text starting with a comment (as
    ORMs and sqlcommenter send) or a parenthesis as one it might take: a
    Parse of it, which the server already had, was answered ParseComplete
    by pgwharf where PostgreSQL answers 25P02 (the client then had a name
    PostgreSQL never made), and a Bind with the wrong number of
    parameters on a server lacking it got 25P02 for 08P01 (session 50
    h1's differential hunt)."""

    TEXTS = ["/* app:web */ select 1", "-- note\nselect 1", "/* a /* nested */ b */select 1",
             "(select 1)", " \f/**/ -- x\r\n  select 1", "-- ends at CR\rselect 1"]

    def client(self):
        px = self.start_pgwharf(settings={"pool_mode": "transaction", "auth_type": "trust",
                                          "default_pool_size": 1})
        a = Raw(px.host, px.port, self.pg.user, self.pg.database)
        self.addCleanup(a.close)
        return px, a

    def abort(self, a):
        a.send(a.query("begin; select 1/0"))
        self.assertEqual([sqlstate(m) for t, m in a.until_ready() if t == b"E"], ["22012"])

    def replies(self, a, *msgs):
        a.send(*msgs)
        return [(t, sqlstate(m) if t == b"E" else m if t == b"Z" else b"")
                for t, m in a.until_ready()]

    def test_a_parse_the_server_has_is_refused(self):
        _, a = self.client()
        for i, text in enumerate(self.TEXTS):
            with self.subTest(text=text):
                self.assertEqual(self.replies(a, a.parse("k%d" % i, text), a.bind("k%d" % i),
                                              a.execute(), a.sync())[-1], (b"Z", b"I"))
                self.abort(a)
                self.assertEqual(self.replies(a, a.parse("s%d" % i, text), a.sync()),
                                 [(b"E", "25P02"), (b"Z", b"E")])
                self.assertEqual(self.replies(a, a.query("rollback"))[-1], (b"Z", b"I"))
                self.assertEqual(self.replies(a, a.bind("s%d" % i), a.sync()),
                                 [(b"E", "26000"), (b"Z", b"I")])

    def test_a_bind_of_too_many_parameters_is_08p01(self):
        px, a = self.client()
        b = Raw(px.host, px.port, self.pg.user, self.pg.database)
        self.addCleanup(b.close)
        one = b"\x00\x00" + b"\x00\x01" + struct.pack("!i", 1) + b"7" + b"\x00\x00"
        for i, text in enumerate(self.TEXTS):
            with self.subTest(text=text):
                name = "s%d" % i
                self.assertEqual(self.replies(a, a.parse(name, text), a.sync()),
                                 [(b"1", b""), (b"Z", b"I")])
                self.assertEqual(self.replies(b, b.query("discard all"))[-1], (b"Z", b"I"))
                self.abort(a)
                bind = a.msg(b"B", b"\x00" + name.encode() + b"\x00" + one)
                self.assertEqual(self.replies(a, bind, a.sync()),
                                 [(b"E", "08P01"), (b"Z", b"E")])
                self.assertEqual(self.replies(a, a.query("rollback"))[-1], (b"Z", b"I"))

    def test_a_commit_after_a_comment_is_still_taken(self):
        _, a = self.client()
        text = "/* app:web */ commit"
        self.assertEqual(self.replies(a, a.parse("c1", text), a.sync())[-1], (b"Z", b"I"))
        self.abort(a)
        self.assertEqual([t for t, _ in self.replies(a, a.parse("c2", text), a.bind("c2"),
                                                     a.execute(), a.sync())],
                         [b"1", b"2", b"C", b"Z"])
        self.assertEqual(self.replies(a, a.sync()), [(b"Z", b"I")])


class TestAStatementKeepsItsParsesReading(pt.PgwharfTestCase):
    """A client's statement is read with the client's settings at its
    Parse, as PostgreSQL keeps it.  On a server that lacks that reading,
    after a SET, it is read with the settings now (README); once they are
    back to the Parse's, the client gets the Parse's reading again."""

    SQL = ("select extract(epoch from '2020-01-01 00:00'::timestamptz)::bigint::text, "
           "pg_backend_pid()::text")
    UTC, TOKYO, PARIS = "1577836800", "1577804400", "1577833200"

    def setUp(self):
        super().setUp()
        self.px = self.start_pgwharf(settings={"pool_mode": "transaction", "auth_type": "trust",
                                               "default_pool_size": 2})
        self.a, self.h1, self.h2 = [self.raw(TimeZone="UTC") for _ in range(3)]

    def raw(self, **params):
        c = Raw(self.px.host, self.px.port, self.pg.user, self.pg.database, **params)
        self.addCleanup(c.close)
        return c

    def run_on(self, pid, *msgs):
        """msgs (ending in a Sync) sent by a, on the server of backend pid
        (None: any): (the first value of its row, the pid)."""
        held = []
        if pid is not None:
            for h in (self.h1, self.h2):
                h.send(h.query("begin; select pg_backend_pid()"))
                held.append((h, [b[6:] for t, b in h.until_ready() if t == b"D"][0].decode()))
            other = [h for h, p in held if p != pid]
            self.assertEqual(len(other), 1, held)
            mine = [h for h, p in held if p == pid][0]
            mine.send(mine.query("commit"))
            mine.until_ready()
        a = self.a
        a.send(*msgs)
        got = a.until_ready()
        for h in [h for h, p in held if p != pid]:
            h.send(h.query("commit"))
            h.until_ready()
        self.assertEqual([t for t, b in got if t == b"E"], [], got)
        rows = [ph.data_row(b) for t, b in got if t == b"D"]
        self.assertEqual(len(rows), 1, got)
        return rows[0][0].decode(), rows[0][1].decode()

    def set(self, tz):
        self.a.send(self.a.query("set timezone = '%s'" % tz))
        got = self.a.until_ready()
        self.assertEqual([t for t, b in got if t == b"E"], [], got)

    def test_back_to_its_parses_settings_it_gets_its_parses_reading(self):
        # Read under Asia/Tokyo on the server that lacked the UTC reading,
        # the client's name went to the Tokyo statement for good: in
        # Europe/Paris, and back in UTC, that server still gave it Tokyo's
        # reading (PostgreSQL: the Parse's, UTC), the other server UTC's:
        # the answer flipped with the server (hunt: drivers).
        a = self.a
        bind = (a.bind("s1"), a.execute(), a.sync())
        first, x = self.run_on(None, a.parse("s1", self.SQL), *bind)
        self.assertEqual(first, self.UTC)
        self.set("Asia/Tokyo")
        held = []
        for h in (self.h1, self.h2):
            h.send(h.query("begin; select pg_backend_pid()"))
            held.append([b[6:] for t, b in h.until_ready() if t == b"D"][0].decode())
        for h in (self.h1, self.h2):
            h.send(h.query("commit"))
            h.until_ready()
        y = [p for p in held if p != x][0]
        # The documented reading: the server lacks the Parse's, so it reads
        # the text with the client's settings now.
        self.assertEqual(self.run_on(y, *bind), (self.TOKYO, y))
        # There, in Europe/Paris: Paris's reading (the settings now), not
        # the Tokyo one the server has, a value the client had in between.
        self.set("Europe/Paris")
        self.assertEqual(self.run_on(y, *bind), (self.PARIS, y))
        self.set("UTC")
        for pid in (y, x, y):
            self.assertEqual(self.run_on(pid, *bind), (self.UTC, pid))
        # Both servers have the Parse's reading now: it, whatever the SET.
        self.set("Europe/Paris")
        for pid in (x, y):
            self.assertEqual(self.run_on(pid, *bind), (self.UTC, pid))


class TestAStatementReadWhileASetIsUnanswered(pt.PgwharfTestCase):
    """A Bind of a client's statement, on a server that lacks its Parse's
    reading, after a SET not answered yet: the server reads the text with
    the settings of that moment, in that batch, never a reading made after
    another SET (in the batch or an earlier one) (hunt: review of
    40b7296)."""

    SQL = TestAStatementKeepsItsParsesReading.SQL
    UTC, TOKYO, PARIS = "1577836800", "1577804400", "1577833200"

    def test_each_set_gets_its_own_reading(self):
        px = self.start_pgwharf(settings={"pool_mode": "transaction", "auth_type": "trust",
                                          "default_pool_size": 1,
                                          "max_prepared_statements": 1})
        a = Raw(px.host, px.port, self.pg.user, self.pg.database, TimeZone="UTC")
        b = Raw(px.host, px.port, self.pg.user, self.pg.database, TimeZone="UTC")
        self.addCleanup(a.close)
        self.addCleanup(b.close)

        def values(msgs):
            self.assertNotIn("E", types(msgs), msgs)
            return [ph.data_row(m)[0].decode() for t, m in msgs if t == b"D"]

        def set_(tz):
            return (a.parse("", "set timezone = '%s'" % tz), a.bind(""), a.execute())

        a.send(a.parse("s1", self.SQL), a.bind("s1"), a.execute(), a.sync())
        self.assertEqual(values(a.until_ready()), [self.UTC])
        # b's statement pushes s1's out of the one server's LRU of one.
        b.send(b.parse("x", "select 1"), b.bind("x"), b.execute(), b.sync())
        b.until_ready()
        # Both Binds came after a SET still unanswered: the second ran the
        # statement made for the first, read in Asia/Tokyo.
        a.send(*set_("Asia/Tokyo"), a.bind("s1"), a.execute(),
               *set_("UTC"), a.bind("s1"), a.execute(), a.sync())
        self.assertEqual(values(a.until_ready()), [self.TOKYO, self.UTC])
        # And in the next batch, after SET Europe/Paris, that Tokyo reading
        # again: settings the client had in between.
        b.send(b.parse("y", "select 2"), b.bind("y"), b.execute(), b.sync())
        b.until_ready()
        a.send(*set_("Europe/Paris"), a.bind("s1"), a.execute(), a.sync())
        self.assertEqual(values(a.until_ready()), [self.PARIS])
        a.send(*set_("Asia/Tokyo"), a.bind("s1"), a.execute(), a.sync())
        self.assertEqual(values(a.until_ready()), [self.TOKYO])
        # The same with SETs by simple Query.
        a.send(a.query("set timezone = 'UTC'"))
        a.until_ready()
        b.send(b.bind("y"), b.execute(), b.sync())
        b.until_ready()
        a.send(a.query("set timezone = 'Europe/Paris'"), a.bind("s1"), a.execute(), a.sync(),
               a.query("set timezone = 'Asia/Tokyo'"), a.bind("s1"), a.execute(), a.sync())
        self.assertEqual(values(sum((a.until_ready() for _ in range(4)), [])),
                         [self.PARIS, self.TOKYO])
        # Settled back in UTC: the Parse's reading.
        a.send(a.query("set timezone = 'UTC'"))
        a.until_ready()
        a.send(a.bind("s1"), a.execute(), a.sync())
        self.assertEqual(values(a.until_ready()), [self.UTC])


class TestSharingAndLru(pt.PgwharfTestCase):
    def server_statements(self, px, n_servers):
        """Hold every server in a transaction and list its statements."""
        conns = [psycopg2.connect(px.dsn()) for _ in range(n_servers)]
        try:
            out = {}
            for c in conns:
                cur = c.cursor()
                cur.execute("select pg_backend_pid(), array(select name from "
                            "pg_prepared_statements order by name)")
                pid, names = cur.fetchone()
                out[pid] = names
            return out
        finally:
            for c in conns:
                c.close()

    def test_fifty_clients_three_statements_share(self):
        import psycopg
        px = self.start_pgwharf(settings={"pool_mode": "transaction", "default_pool_size": 2,
                                          "max_client_conn": 100})
        sqls = ["select %s::int + 1", "select %s::int + 2", "select %s::int + 3"]
        errors = []

        def client(n):
            try:
                with psycopg.connect(px.dsn(), autocommit=True) as c:
                    for r in range(3):
                        for k, q in enumerate(sqls):
                            v = c.execute(q, (n,), prepare=True).fetchone()[0]
                            if v != n + k + 1:
                                errors.append((n, k, v))
            except Exception as e:       # reported below
                errors.append(repr(e))

        run_clients(self, client, 50)
        self.assertEqual(errors, [])
        # The admin console lists the three shared statements.
        rows = px.admin("SHOW PREPARED_STATEMENTS")
        self.assertEqual(sorted(r[3] for r in rows),
                         sorted(q.replace("%s", "$1") for q in sqls))
        self.assertTrue(all(r[0].startswith("PGW_") and r[1] == "1" for r in rows), rows)
        per_server = self.server_statements(px, 2)
        self.assertEqual(len(per_server), 2)
        for pid, names in per_server.items():
            self.assertLessEqual(len(names), 3, (pid, names))
            for name in names:
                self.assertTrue(name.startswith("PGW_"), names)

    def test_lru_two_statements_five_distinct(self):
        px = self.start_pgwharf(settings={"pool_mode": "transaction", "default_pool_size": 1,
                                          "max_prepared_statements": 2})
        import psycopg
        with psycopg.connect(px.dsn(), autocommit=True) as c:
            for r in range(4):
                for k in range(5):
                    v = c.execute("select %%s::int * %d" % (k + 1), (r,), prepare=True).fetchone()
                    self.assertEqual(v[0], r * (k + 1))
        names = list(self.server_statements(px, 1).values())[0]
        self.assertLessEqual(len(names), 2, names)

    def test_a_reload_lowering_the_lru_shrinks_it_as_statements_are_prepared(self):
        # 30 statements on the one server; a reload lowers the LRU to 2.
        # Each later prepare closes at most two (the room it reserved), so
        # the server's set comes down step by step, and every statement,
        # old or new, keeps answering as its own.
        px = self.start_pgwharf(settings={"pool_mode": "transaction", "default_pool_size": 1,
                                          "max_prepared_statements": 50})
        import psycopg
        with psycopg.connect(px.dsn(), autocommit=True) as c:
            for k in range(30):
                self.assertEqual(c.execute("select %%s::int + %d" % k, (1,),
                                           prepare=True).fetchone()[0], 1 + k)
            self.assertEqual(len(list(self.server_statements(px, 1).values())[0]), 30)
            px.settings["max_prepared_statements"] = 2
            px.write_config()
            px.admin("RELOAD")
            counts = []
            for r in range(2):
                for k in range(30, 0, -1):
                    self.assertEqual(c.execute("select %%s::int + %d" % k, (r,),
                                               prepare=True).fetchone()[0], r + k)
                counts.append(len(list(self.server_statements(px, 1).values())[0]))
            self.assertLessEqual(counts[-1], 2, counts)


class TestEvictionInAFailedBatch(pt.PgwharfTestCase):
    """max_prepared_statements = 2 and one server: an error early in a batch
    makes the server skip the Close pgwharf injected for an LRU victim
    further on, so the server still has the victim.  Using it again must
    not end in 42P05 "prepared statement PGW_n already exists"."""

    def test_victim_used_again_after_the_failed_batch(self):
        px = self.start_pgwharf(settings={
            "pool_mode": "transaction", "default_pool_size": 1, "max_db_connections": 1,
            "max_prepared_statements": 2, "auth_type": "trust"})
        r = Raw(px.host, px.port, self.pg.user, self.pg.database)
        try:
            r.send(r.parse("e", "select 1/(random()*0)::int"), r.parse("s1", "select 11"),
                   r.sync())
            self.assertEqual(types(r.until_ready()), "11Z")
            # e fails at Execute; the Close of s1 (evicted for s2) is skipped.
            r.send(r.bind("e"), r.execute(), r.parse("s2", "select 22"), r.sync())
            msgs = r.until_ready()
            self.assertEqual(types(msgs), "2EZ", msgs)
            self.assertEqual(sqlstate(msgs[1][1]), "22012")
            for _ in range(2):
                r.send(r.bind("s1"), r.execute(), r.sync())
                msgs = r.until_ready()
                self.assertEqual(types(msgs), "2DCZ", msgs)
                self.assertEqual(msgs[1][1][-2:], b"11")
            r.send(r.parse("s2", "select 22"), r.bind("s2"), r.execute(), r.sync())
            msgs = r.until_ready()
            self.assertEqual(types(msgs), "12DCZ", msgs)
        finally:
            r.close()

    def test_failed_parse_leaves_no_name(self):
        # PostgreSQL keeps no statement from a Parse that failed or was
        # skipped, so a client (pgjdbc after a batch error, say) may Parse
        # the name again; pgwharf once answered 42P05 to that.
        px = self.start_pgwharf(settings={"pool_mode": "transaction", "auth_type": "trust"})
        r = Raw(px.host, px.port, self.pg.user, self.pg.database)
        try:
            r.send(r.parse("s3", "selec 3"), r.sync())
            msgs = r.until_ready()
            self.assertEqual((types(msgs), sqlstate(msgs[0][1])), ("EZ", "42601"))
            r.send(r.parse("s4", "select 4"), r.sync())           # known to the server...
            self.assertEqual(types(r.until_ready()), "1Z")
            r.send(r.parse("bad", "selec"), r.parse("s5", "select 4"), r.sync())
            self.assertEqual(types(r.until_ready()), "EZ")       # ...s5's Parse skipped
            for name, want in (("s3", b"3"), ("s5", b"4")):
                r.send(r.parse(name, "select %s" % want.decode()), r.bind(name), r.execute(),
                       r.sync())
                msgs = r.until_ready()
                self.assertEqual(types(msgs), "12DCZ", msgs)
                self.assertEqual(msgs[2][1][-1:], want)
        finally:
            r.close()


class TestRepliesInOrder(pt.PgwharfTestCase):
    """ParseComplete answered by pgwharf (the server has the statement
    already) right after a result of any size: it must come out between
    that result's CommandComplete and the next BindComplete, whatever the
    reads cut.  (Once it waited for the next server message when the
    CommandComplete came in two reads, or was lost when a large result
    filled the buffer.  Sizes vary so that the cuts fall everywhere.)"""

    def test_fake_parse_complete_after_results_of_every_size(self):
        px = self.start_pgwharf(settings={"pool_mode": "transaction", "auth_type": "trust",
                                          "default_pool_size": 1})
        r = Raw(px.host, px.port, self.pg.user, self.pg.database)
        try:
            r.send(r.parse("k", "select 1"), r.sync())
            self.assertEqual(types(r.until_ready()), "1Z")
            rnd = random.Random(8)
            for i in range(2000):
                rows, width = rnd.randint(5, 120), rnd.randint(100, 2000)
                name = "n%d" % i            # another name for "select 1": no Parse sent
                r.send(r.parse("", "select repeat('x', %d) from generate_series(1, %d)"
                               % (width, rows)), r.bind(""), r.execute(),
                       r.parse(name, "select 1"), r.bind(name), r.execute(), r.sync())
                got = types(r.until_ready())
                self.assertEqual(got, "12" + "D" * rows + "C" + "12DCZ", (i, rows, width))
        finally:
            r.close()


def count_replies(sock, n):
    """Read n answers of "select 1" (T, D, C, Z) off sock: {"ready": the
    ReadyForQuery count, "bad": messages out of that order}."""
    want = b"TDCZ"
    buf = bytearray()
    off = ready = bad = k = 0
    while ready < n:
        chunk = sock.recv(1 << 20)
        if not chunk:
            raise EOFError("closed after %d of %d replies" % (ready, n))
        buf += chunk
        while len(buf) - off >= 5:
            size = 1 + struct.unpack("!I", buf[off + 1:off + 5])[0]
            if len(buf) - off < size:
                break
            t = buf[off:off + 1]
            bad += t != want[k:k + 1]
            k = (k + 1) % 4
            ready += t == b"Z"
            off += size
        del buf[:off]
        off = 0
    return {"ready": ready, "bad": bad}


class TestClientsThatDoNotRead(pt.PgwharfTestCase):
    """While a client held a server, the replies pgwharf makes itself
    (CloseComplete of a statement no server has) and the queue entry of
    each Sync had no backpressure: a client that sent them and never read
    grew pgwharf's memory by hundreds of MB (the server's backpressure
    does not help: a Sync is 5 bytes, the kernel holds a million of them).
    Its next bytes now wait until it reads."""

    LIMIT = 32 << 20

    def flood(self, r, m):
        """m again and again until pgwharf stops reading (2 s without room)
        or LIMIT bytes; returns the bytes sent."""
        r.s.setblocking(False)
        chunk = m * (65536 // len(m))
        sent = 0
        while sent < self.LIMIT:
            try:
                off = sent % len(chunk)          # whole messages, in order
                sent += r.s.send(chunk[off:])
            except BlockingIOError:
                if not select.select([], [r.s], [], 2.0)[1]:
                    break
        return sent

    def test_a_client_that_does_not_read_holds_little_memory(self):
        px = self.start_pgwharf(settings={"pool_mode": "transaction", "auth_type": "trust",
                                          "default_pool_size": 1})
        for name, m in (("CloseComplete", b"C\0\0\0\x09Sfoo\0"), ("Sync", b"S\0\0\0\x04")):
            with self.subTest(reply=name):
                r = Raw(px.host, px.port, self.pg.user, self.pg.database)
                r.send(r.msg(b"Q", b"begin\0"))
                r.until_ready()                 # in a transaction: it holds the server
                before = px.rss_kb()
                sent = self.flood(r, m)
                grown = px.rss_kb() - before
                self.assertLess(sent, self.LIMIT, "pgwharf read all the client sent")
                # (a few MB; more under ASan, whose freed memory waits in
                # quarantine; 117 MB for the Syncs before the fix)
                self.assertLess(grown, 32 * 1024, "pgwharf grew by %d kB" % grown)
                r.close()
                self.assertEqual(px.psql("select 'served'"), "served")


    CLIENTS = 12

    def test_pipelined_queries_unread_keep_the_queue_below_its_cap(self):
        """Not in a transaction, each of CLIENTS sends small Queries and
        never reads: the server answers them, so the backlog check stopped
        reading only after a whole read past 16384 entries, which doubled
        the queue to 32768 entries of 176 bytes (5.6 MB a client; 40 such
        clients, 230 MB).  The check is per message now (8192 entries,
        1.4 MB); each client then gets every reply, in order."""
        px = self.start_pgwharf(settings={"pool_mode": "transaction", "auth_type": "trust",
                                          "default_pool_size": self.CLIENTS + 2})
        q = b"Q\0\0\0\x0dselect 1\0"
        clients = [Raw(px.host, px.port, self.pg.user, self.pg.database)
                   for _ in range(self.CLIENTS)]
        try:
            before = px.rss_kb()
            sent = []
            for r in clients:
                sent.append(self.flood(r, q))
                self.assertLess(sent[-1], self.LIMIT, "pgwharf read all the client sent")
            grown = px.rss_kb() - before
            print("%d clients sent %s kB unread; pgwharf grew by %d kB"
                  % (self.CLIENTS, [n >> 10 for n in sent], grown))
            # (about 1.5 MB a client; 5.6 MB before the fix: 67 MB.  Under
            # ASan the RSS is mostly its quarantine and shadow: not checked.)
            if not ph.sanitized(px):
                self.assertLess(grown, self.CLIENTS * 3 * 1024, "pgwharf grew by %d kB" % grown)
            for r, n in zip(clients, sent):
                # The rest of the last Query, then every reply in order.
                got = {}
                r.s.settimeout(60)
                reader = pt.Background(lambda: got.update(count_replies(r.s, -(-n // len(q)))))
                r.s.sendall(q[n % len(q):] if n % len(q) else b"")
                reader.join(90)
                self.assertFalse(reader.is_alive(), "the replies stopped %r" % (got,))
                self.assertIsNone(reader.error)
                self.assertEqual(got, {"bad": 0, "ready": -(-n // len(q))})
            self.assertEqual(px.psql("select 'served'"), "served")
        finally:
            for r in clients:
                r.close()


class TestABacklogOfRepliesPgwharfMakes(pt.PgwharfTestCase):
    """Replies pgwharf makes itself (CloseComplete of a statement no server
    has, ParseComplete of one the server has) wait in the queue behind the
    server's replies to what was sent before them, which PostgreSQL holds
    until a Sync or a Flush.  Past the backlog's cap (8000 replies) the
    client's next message, its Sync among them, waited for answers that
    never came: the client hung, and its server stayed held after it left.
    A Flush of pgwharf's asks the server for them now."""

    N = 9000

    def test_a_batch_of_closes_and_parses_pgwharf_answers(self):
        px = self.start_pgwharf(settings={"pool_mode": "transaction", "auth_type": "trust",
                                          "default_pool_size": 1})
        r = Raw(px.host, px.port, self.pg.user, self.pg.database)
        try:
            r.send(r.parse("s2", "select 2"), r.sync())
            self.assertEqual(types(r.until_ready()), "1Z")
            cases = (("Close", r.close_stmt("nosuch"), "3"),
                     ("Close and Parse", r.close_stmt("s2") + r.parse("s2", "select 2"), "31"))
            for name, m, want in cases:
                with self.subTest(batch=name):
                    batch = (r.parse("", "select 1") + r.bind("") + r.execute() +
                             m * self.N + r.sync())
                    writer = pt.Background(lambda: r.s.sendall(batch))
                    got = types(r.until_ready())     # (a socket timeout: it hung)
                    writer.join(30)
                    self.assertIsNone(writer.error)
                    self.assertEqual(got, "12DC" + want * self.N + "Z")
            assert_another_client_runs(self, px)
        finally:
            r.close()

    def test_syncs_past_the_cap_in_a_copy_from_stdin(self):
        # PostgreSQL reads and ignores a Sync in a COPY FROM STDIN; held at
        # the cap, the data behind it never went: the client hung, and its
        # server stayed held after it left (shutdown waited for it).  The
        # session ends now, its server with it.
        px = self.start_pgwharf(settings={"pool_mode": "transaction", "auth_type": "trust",
                                          "default_pool_size": 1})
        r = Raw(px.host, px.port, self.pg.user, self.pg.database)
        try:
            batch = (r.parse("", "create temp table if not exists t_cap_copy (a int)") +
                     r.bind("") + r.execute() + r.parse("", "copy t_cap_copy from stdin") +
                     r.bind("") + r.execute() + r.sync() * 8500 + r.msg(b"d", b"1\n") +
                     r.msg(b"c") + r.sync())
            writer = pt.Background(lambda: r.s.sendall(batch))
            got = []
            with self.assertRaises(EOFError):  # (a timeout: it hung)
                while True:
                    got.append(r.read_msg())
            writer.join(30)
            # PostgreSQL's FATAL at a limit: the client is told why.
            self.assertEqual(types(got[-1:]), "E", types(got))
            self.assertEqual(sqlstate(got[-1][1]), "54000", got[-1])
            self.assertIn(b"VFATAL\x00", got[-1][1])
            self.assertIn(b"too many Syncs sent during COPY FROM STDIN", got[-1][1])
            assert_another_client_runs(self, px)
        finally:
            r.close()

    def test_syncs_past_the_cap_in_a_copy_the_answers_owed_then_the_fatal(self):
        # The answers the client was given before (rows, the COPY's start)
        # still to be written, the client not reading: pgwharf wrote what
        # its socket took at once, then closed -- the rest lost, the FATAL
        # too (its write found no room), the client's data unread under
        # it reset the connection.  They are written now, then the FATAL.
        self.pg.psql("drop table if exists t_cap_owed; create table t_cap_owed (a int)")
        px = self.start_pgwharf(settings={"pool_mode": "transaction", "auth_type": "trust",
                                          "default_pool_size": 1, "tcp_socket_buffer": 4096})
        a, port = ph.slow_reader_login(px.host, px.port, self.pg.user, self.pg.database)
        r = Raw.__new__(Raw)            # (its message makers only)
        try:
            n = 90                      # ~19 kB of rows: more than the sockets between hold
            a.sendall(r.parse("", "select repeat('x', 200) from generate_series(1, %d)" % n) +
                      r.bind("") + r.execute() +
                      r.parse("", "copy t_cap_owed from stdin /* pgw_cap_owed */") +
                      r.bind("") + r.execute())
            # The COPY waits for data: PostgreSQL sent all before it (it
            # flushes at its CopyInResponse); pgwharf read it, and the
            # client's socket is full.
            pt.wait_until(lambda: int(self.pg.psql(
                "select count(*) from pg_stat_activity where query like '%pgw_cap_owed%' "
                "and state = 'active' and wait_event = 'ClientRead' and pid <> pg_backend_pid()",
                db="postgres", via_socket=True)) == 1, 20, what="the COPY waiting for data")
            pt.wait_until(lambda: not any(ph.unread_on_port(px.pid, self.pg.port,
                                                            peer=True).values()),
                          20, what="pgwharf read the server's answers")
            pt.wait_until(lambda: ph.tcp_zero_window(px.port, port), 20,
                          what="the client's socket full")
            writer = pt.Background(lambda: a.sendall(r.sync() * 8500 + r.msg(b"d", b"1\n") +
                                                     r.msg(b"c") + r.sync()))
            px.wait_for_log(r"sqlstate=54000 reason=.too many Syncs", 20)
            data, closed = ph.read_until_closed(a, 30)
            writer.join(30)
            self.assertTrue(closed, "the session did not end")
            got = []
            while data:
                size = 1 + struct.unpack("!I", data[1:5])[0]
                got.append((data[:1], data[5:size]))
                data = data[size:]
            self.assertEqual(types(got), "12" + "D" * n + "C" + "12GE",
                             "answers lost: %d messages" % len(got))
            self.assertEqual(sqlstate(got[-1][1]), "54000", got[-1])
            self.assertIn(b"VFATAL\x00", got[-1][1])
            assert_another_client_runs(self, px)
        finally:
            a.close()


class TestErrors(pt.PgwharfTestCase):
    def setUp(self):
        super().setUp()
        self.px = self.start_pgwharf(settings={"pool_mode": "transaction",
                                               "default_pool_size": 2, "auth_type": "trust"})

    def raw(self):
        return Raw(self.px.host, self.px.port, self.pg.user, self.pg.database)

    def test_duplicate_name_42P05_and_unknown_26000(self):
        r = self.raw()
        try:
            r.send(r.parse("s1", "select 1"), r.sync())
            self.assertEqual(types(r.until_ready()), "1Z")
            r.send(r.parse("s1", "select 2"), r.bind("s1"), r.execute(), r.sync())
            msgs = r.until_ready()
            self.assertEqual(types(msgs), "EZ", msgs)
            self.assertEqual(sqlstate(msgs[0][1]), "42P05")
            self.assertIn(b'prepared statement "s1" already exists', msgs[0][1])
            r.send(r.bind("nosuch"), r.execute(), r.sync())
            msgs = r.until_ready()
            self.assertEqual(types(msgs), "EZ")
            self.assertEqual(sqlstate(msgs[0][1]), "26000")
            # s1 still works, and Close is answered; then it is gone.
            r.send(r.bind("s1"), r.execute(), r.close_stmt("s1"), r.sync())
            self.assertEqual(types(r.until_ready()), "2DC3Z")
            r.send(r.bind("s1"), r.execute(), r.sync())
            msgs = r.until_ready()
            self.assertEqual(sqlstate(msgs[0][1]), "26000")
        finally:
            r.close()

    def test_a_listen_parse_of_a_name_in_use_is_42P05(self):
        # A Parse of LISTEN (or UNLISTEN) text between transactions is one
        # pgwharf answers itself: into a name the client already has a
        # statement under, it was accepted and replaced that statement
        # (the next Bind ran the LISTEN).  PostgreSQL refuses it (42P05).
        for text in ("listen ch_9", "unlisten *"):
            with self.subTest(text=text):
                r = self.raw()
                try:
                    r.send(r.parse("s5", "select 1"), r.sync())
                    self.assertEqual(types(r.until_ready()), "1Z")
                    r.send(r.parse("s5", text), r.sync())
                    msgs = r.until_ready()
                    self.assertEqual(types(msgs), "EZ", msgs)
                    self.assertEqual(sqlstate(msgs[0][1]), "42P05")
                    r.send(r.bind("s5"), r.execute(), r.sync())
                    msgs = r.until_ready()
                    self.assertEqual(types(msgs), "2DCZ", msgs)
                    self.assertEqual(msgs[1][1][6:7], b"1")
                finally:
                    r.close()

    def test_a_skipped_close_behind_deallocate_all_brings_nothing_back(self):
        # DEALLOCATE ALL (DISCARD ALL) as a Query, then in the same write a
        # batch whose Execute fails, so PostgreSQL skips its Close of s2:
        # s2 is gone (DEALLOCATE ALL ran first).  pgwharf took the skipped
        # Close for one that leaves s2 as it was before it, and brought s2
        # back: the Bind ran it, a new Parse of s2 got 42P05.
        for cmd in ("deallocate all", "discard all"):
            with self.subTest(cmd=cmd):
                r = self.raw()
                try:
                    r.send(r.parse("s2", "select 42"), r.sync())
                    self.assertEqual(types(r.until_ready()), "1Z")
                    r.send(r.query(cmd), r.execute("p1"), r.close_stmt("s2"), r.sync())
                    self.assertEqual(types(r.until_ready()), "CZ")
                    msgs = r.until_ready()
                    self.assertEqual(types(msgs), "EZ", msgs)
                    self.assertEqual(sqlstate(msgs[0][1]), "34000")
                    r.send(r.bind("s2"), r.execute(), r.sync())
                    msgs = r.until_ready()
                    self.assertEqual(sqlstate(msgs[0][1]), "26000", msgs)
                    r.send(r.parse("s2", "select 43"), r.bind("s2"), r.execute(), r.sync())
                    self.assertEqual(types(r.until_ready()), "12DCZ")
                finally:
                    r.close()

    def test_a_shared_statement_whose_parse_was_skipped_is_prepared_again(self):
        # s2 and s3 share one statement.  On a server that lacks it, behind
        # a SET Parsed unnamed (so the client's names move to a statement
        # of their own), a batch fails before pgwharf's Parse of it for s2;
        # a Bind of s3 after the Sync was sent without a Parse, as if the
        # server had it: 26000 "prepared statement "s3" does not exist",
        # where PostgreSQL runs it.
        a, b = self.raw(), self.raw()
        try:
            a.send(a.parse("s2", "select 42"), a.sync(), a.parse("s3", "select 42"), a.sync())
            self.assertEqual(types(a.until_ready() + a.until_ready()), "1Z1Z")
            b.send(b.query("begin"))                 # holds the server that has it
            b.until_ready()
            a.send(a.parse("", "set application_name = 'x'"), a.execute("p1"),
                   a.bind("s2", "p1"), a.sync(),
                   a.bind("s3", "p1"), a.execute("p1"), a.sync())
            first = a.until_ready()
            self.assertEqual(types(first), "1EZ", first)
            self.assertEqual(sqlstate(first[1][1]), "34000")
            second = a.until_ready()
            self.assertEqual(types(second), "2DCZ", second)
            b.send(b.query("commit"))
            b.until_ready()
        finally:
            a.close()
            b.close()

    def test_cached_plan_error_then_reprepared(self):
        self.pg.psql("drop table if exists ps_ddl; create table ps_ddl(a int); "
                     "insert into ps_ddl values (1)")
        r = self.raw()
        try:
            r.send(r.parse("q", "select * from ps_ddl"), r.bind("q"), r.execute(), r.sync())
            self.assertEqual(types(r.until_ready()), "12DCZ")
            self.pg.psql("alter table ps_ddl add column b int default 7")
            r.send(r.bind("q"), r.execute(), r.sync())
            msgs = r.until_ready()
            self.assertEqual(types(msgs)[-2:], "EZ")
            err = [b for t, b in msgs if t == b"E"][0]
            self.assertEqual(sqlstate(err), "0A000")
            self.assertIn(b"cached plan must not change result type", err)
            # The client re-prepares: it works again.
            r.send(r.close_stmt("q"), r.parse("q", "select * from ps_ddl"), r.bind("q"),
                   r.execute(), r.sync())
            msgs = r.until_ready()
            self.assertEqual(types(msgs), "312DCZ", msgs)
            row = [b for t, b in msgs if t == b"D"][0]
            self.assertEqual(struct.unpack("!H", row[:2])[0], 2)   # two columns now
        finally:
            r.close()

    def test_a_parse_after_a_cached_plan_error_is_read_afresh_on_every_server(self):
        # asyncpg answers 0A000 "cached plan must not change result type"
        # by preparing the text again under a new name, once.  Both servers
        # had the shared statement with the old plan: that new Parse got it
        # again, on the other server, and 0A000 again (asyncpg's
        # InvalidCachedStatementError for the application), where
        # PostgreSQL reads a new Parse afresh (hunt: drivers).
        self.pg.psql("drop table if exists ps_stale; create table ps_stale(id int, a int); "
                     "insert into ps_stale values (1, 10)")
        sql = "select * from ps_stale where id = 1"
        h1, h2, r = self.raw(), self.raw(), self.raw()
        self.addCleanup(h1.close)
        self.addCleanup(h2.close)
        self.addCleanup(r.close)

        def hold(h):
            """h begins a transaction, holding a server: its backend PID."""
            h.send(h.query("begin; select pg_backend_pid()"))
            return [b[6:] for t, b in h.until_ready() if t == b"D"][0]

        def commit(h):
            h.send(h.query("commit"))
            self.assertEqual(types(h.until_ready()), "CZ")

        def run(c, name):
            c.send(c.parse(name, sql), c.bind(name), c.execute(), c.sync())
            return c.until_ready()

        # Both servers prepare it.
        self.assertNotEqual(hold(h1), hold(h2))
        for h, name in ((h1, "w1"), (h2, "w2")):
            self.assertEqual(types(run(h, name)), "12DCZ")
        commit(h1)
        commit(h2)
        self.pg.psql("alter table ps_stale alter column a type bigint")
        # A new client's Parse meets the shared statement's old plan on one
        # server (as README says: once) ...
        held = hold(h1)
        msgs = run(r, "q")
        self.assertEqual([sqlstate(b) for t, b in msgs if t == b"E"], ["0A000"], msgs)
        commit(h1)
        # ... and its new Parse, on the other server, is read afresh there.
        p1, p2 = hold(h1), hold(h2)
        self.assertIn(held, (p1, p2))
        commit(h1 if p1 == held else h2)    # free: the server the 0A000 did not come from
        msgs = run(r, "q2")
        self.assertEqual([t for t, b in msgs if t == b"E"], [], msgs)
        self.assertEqual(types(msgs), "12DCZ", msgs)

    def test_a_cached_plan_error_in_another_language_is_seen(self):
        # The 0A000 was known by its English text: with lc_messages German
        # on the server nothing was marked, and a new Parse of the text got
        # the old plan again (review of 44da192).  Its routine field is
        # never translated.
        try:
            self.pg.psql("set lc_messages = 'de_DE.utf8'")
        except Exception as e:       # no such locale in this cluster
            self.skipTest("no de_DE.utf8 locale: %s" % e)
        px = self.start_pgwharf(settings={"pool_mode": "transaction", "auth_type": "trust",
                                          "default_pool_size": 1},
                                databases={"de": self.pg.conn_string(
                                    self.pg.database,
                                    connect_query="set lc_messages = 'de_DE.utf8'")})
        self.pg.psql("drop table if exists ps_stale_de; create table ps_stale_de(id int, a int); "
                     "insert into ps_stale_de values (1, 10)")
        sql = "select * from ps_stale_de where id = 1"
        w, r = [Raw(px.host, px.port, self.pg.user, "de") for _ in range(2)]
        self.addCleanup(w.close)
        self.addCleanup(r.close)

        def run(c, name):
            c.send(c.parse(name, sql), c.bind(name), c.execute(), c.sync())
            return c.until_ready()

        self.assertEqual(types(run(w, "w1")), "12DCZ")
        self.pg.psql("alter table ps_stale_de alter column a type bigint")
        msgs = run(r, "q")
        errs = [m for t, m in msgs if t == b"E"]
        self.assertEqual([sqlstate(m) for m in errs], ["0A000"], msgs)
        if b"cached plan must not change result type" in errs[0]:
            self.skipTest("no German messages installed: %r" % errs[0])
        msgs = run(r, "q2")
        self.assertEqual(types(msgs), "12DCZ", msgs)

    def test_a_parse_with_an_unterminated_text_is_refused(self):
        # The text is read as a C string later (SHOW PREPARED_STATEMENTS,
        # pipelining): such a Parse never reaches the registry.  The
        # server refuses it (ERROR 08P01), as PostgreSQL does, and the
        # session goes on (TestMalformedMessages).
        r = self.raw()
        try:
            r.send(r.msg(b"P", b"bad\x00select 1, 'no terminating nul'"), r.sync())
            msgs = r.until_ready()
            self.assertEqual((types(msgs), sqlstate(msgs[0][1])), ("EZ", "08P01"))
            self.assertIn(b"invalid string in message", msgs[0][1])
            r.send(r.bind("bad"), r.execute(), r.sync())
            msgs = r.until_ready()
            self.assertEqual((types(msgs), sqlstate(msgs[0][1])), ("EZ", "26000"))
        finally:
            r.close()
        self.assertEqual(self.px.psql("select 1", user=self.pg.user), "1")

    def test_discard_all_clears_names(self):
        r = self.raw()
        try:
            r.send(r.parse("d1", "select 1"), r.sync())
            self.assertEqual(types(r.until_ready()), "1Z")
            r.send(r.msg(b"Q", b"DISCARD ALL\x00"))
            self.assertEqual(types(r.until_ready()), "CZ")
            r.send(r.parse("d1", "select 1"), r.bind("d1"), r.execute(), r.sync())
            self.assertEqual(types(r.until_ready()), "12DCZ")
        finally:
            r.close()

    def test_a_reload_turning_it_off_keeps_the_names_a_client_has(self):
        # Statements a client prepared while max_prepared_statements was on
        # live under pgwharf's names on the servers: after a reload sets it
        # to 0 they keep working for that client (new clients pass theirs
        # through untouched).
        r = self.raw()
        try:
            r.send(r.parse("k1", "select 41 + 1"), r.sync())
            self.assertEqual(types(r.until_ready()), "1Z")
            self.px.settings["max_prepared_statements"] = 0
            self.px.write_config()
            self.px.admin("RELOAD")
            for _ in range(3):
                r.send(r.bind("k1"), r.execute(), r.sync())
                msgs = r.until_ready()
                self.assertEqual(types(msgs), "2DCZ", msgs)
            r.send(r.close_stmt("k1"), r.sync())
            self.assertEqual(types(r.until_ready()), "3Z")
            # A new client's statement goes to the server under its own name.
            n = self.raw()
            try:
                n.send(n.parse("k2", "select 2"), n.bind("k2"), n.execute(), n.sync())
                self.assertEqual(types(n.until_ready()), "12DCZ")
                n.send(n.msg(b"Q", b"select count(*) from pg_prepared_statements "
                             b"where name = 'k2'\x00"))
                msgs = n.until_ready()
                self.assertEqual(types(msgs), "TDCZ", msgs)
            finally:
                n.close()
        finally:
            r.close()


class TestParameterTypesKeptAfterASchemaChange(pt.PgwharfTestCase):
    """PostgreSQL keeps a prepared statement's parameter types when its
    tables change.  A server that prepares a shared statement later (the
    client's request landed there) got the text alone and read the
    client's binary parameters as the new types."""

    def setUp(self):
        super().setUp()
        self.px = self.start_pgwharf(settings={"pool_mode": "transaction",
                                               "default_pool_size": 2, "auth_type": "trust"})
        self.pg.psql("drop table if exists ps_pin; create table ps_pin(id bigint, v text); "
                     "insert into ps_pin values (1, 'one')")
        self.r = Raw(self.px.host, self.px.port, self.pg.user, self.pg.database)
        self.addCleanup(self.r.close)
        self.holder = None

    def bind_int8(self, stmt, value):
        """A Bind of one binary int8 parameter, results in text."""
        body = (b"\x00" + stmt.encode() + b"\x00" + struct.pack("!HH", 1, 1) +
                struct.pack("!H", 1) + struct.pack("!i", 8) + struct.pack("!q", value) +
                struct.pack("!H", 0))
        return self.r.msg(b"B", body)

    def run_on_a_new_server(self, *msgs):
        """The client's next request, on a server that has not prepared
        its statement: its first server is held by another client."""
        if self.holder is None:
            self.holder = psycopg2.connect(self.px.dsn())
            self.addCleanup(self.holder.close)
            self.holder.cursor().execute("begin; select 1")
        self.r.send(*msgs)
        return self.r.until_ready()

    def prepare_s1(self):
        """s1, prepared and run on the first server with a binary int8:
        the types pgwharf learns are the first server's."""
        r = self.r
        r.send(r.parse("s1", "select v from ps_pin where id = $1"), self.bind_int8("s1", 1),
               r.execute(), r.sync())
        self.assertEqual([b[6:] for t, b in r.until_ready() if t == b"D"], [b"one"])

    def test_a_server_preparing_it_after_an_alter_reads_the_old_types(self):
        r = self.r
        self.prepare_s1()
        self.pg.psql("alter table ps_pin alter column id type double precision")
        msgs = self.run_on_a_new_server(self.bind_int8("s1", 1), r.execute(), r.sync())
        self.assertEqual([t for t, b in msgs if t == b"E"], [], msgs)
        # Read as float8, the int8 1's bits are 5e-324: no row.
        self.assertEqual([b[6:] for t, b in msgs if t == b"D"], [b"one"], msgs)
        self.assertEqual(len(self.px.admin("SHOW SERVERS")), 2)

    def test_a_failed_transaction_keeps_the_types(self):
        # The Parse a server gets in a failed transaction is refused with
        # 25P02: no sign of types that no longer fit.  Taken for one, the
        # pin was dropped and the next server read the int8 as a float8.
        r = self.r
        self.prepare_s1()
        self.pg.psql("alter table ps_pin alter column id type double precision")
        self.run_on_a_new_server(r.query("begin"))
        r.send(r.query("select 1/0"))
        r.until_ready()
        r.send(self.bind_int8("s1", 1), r.execute(), r.sync())
        msgs = r.until_ready()
        self.assertEqual([sqlstate(b) for t, b in msgs if t == b"E"], ["25P02"], msgs)
        r.send(r.query("rollback"))
        r.until_ready()
        msgs = self.run_on_a_new_server(self.bind_int8("s1", 1), r.execute(), r.sync())
        self.assertEqual([b[6:] for t, b in msgs if t == b"D"], [b"one"], msgs)

    def test_a_name_moved_to_its_settings_statement_keeps_the_types(self):
        # The client SET its TimeZone: on a server without the statement,
        # its name goes to the statement of its settings now -- still the
        # client's statement, with the types it was given.
        r = self.r
        self.prepare_s1()
        r.send(r.query("set timezone = 'Asia/Tokyo'"))
        r.until_ready()
        self.pg.psql("alter table ps_pin alter column id type double precision")
        msgs = self.run_on_a_new_server(self.bind_int8("s1", 1), r.execute(), r.sync())
        self.assertEqual([t for t, b in msgs if t == b"E"], [], msgs)
        self.assertEqual([b[6:] for t, b in msgs if t == b"D"], [b"one"], msgs)

    def test_a_retired_statement_pins_no_types_on_its_settings_statement(self):
        # A statement a server answered 0A000 for after an ALTER (retired),
        # then run by its client after a SET on a server without a fresh
        # copy: the statement of the settings now, a shared one, was made
        # with the old statement's parameter types pinned, and another
        # client's new Parse of the text got int4 for a bigint column
        # (hunt: review of 40b7296).
        px = self.start_pgwharf(settings={"pool_mode": "transaction", "default_pool_size": 1,
                                          "auth_type": "trust"})
        self.pg.psql("drop table if exists ps_ret; create table ps_ret(id int, v text); "
                     "insert into ps_ret values (1, 'one')")
        sql = "select id, v from ps_ret where id = $1"
        a = Raw(px.host, px.port, self.pg.user, self.pg.database, TimeZone="UTC")
        b = Raw(px.host, px.port, self.pg.user, self.pg.database, TimeZone="Asia/Tokyo")
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        bind_1 = a.msg(b"B", b"\x00s1\x00" + struct.pack("!HHi", 0, 1, 1) + b"1" +
                       struct.pack("!H", 0))

        def param_oids(msgs):
            body = [m for t, m in msgs if t == b"t"][0]
            n = struct.unpack("!H", body[:2])[0]
            return list(struct.unpack("!%dI" % n, body[2:2 + 4 * n]))

        a.send(a.parse("s1", sql), a.describe_stmt("s1"), bind_1, a.execute(), a.sync())
        msgs = a.until_ready()
        self.assertEqual(param_oids(msgs), [23])
        self.pg.psql("alter table ps_ret alter column id type bigint")
        a.send(bind_1, a.execute(), a.sync())
        msgs = a.until_ready()
        self.assertEqual([sqlstate(m) for t, m in msgs if t == b"E"], ["0A000"], msgs)
        a.send(a.query("set timezone = 'Asia/Tokyo'"))
        a.until_ready()
        # Run as the statement of a's settings now, made for it: its result
        # (id an int8) is not s1's, and a gets 0A000 as from PostgreSQL.
        a.send(bind_1, a.execute(), a.sync())
        msgs = a.until_ready()
        self.assertEqual([sqlstate(m) for t, m in msgs if t == b"E"], ["0A000"], msgs)
        # b's new Parse, in a's settings now: read afresh, as PostgreSQL does.
        b.send(b.parse("q", sql), b.describe_stmt("q"), b.sync())
        self.assertEqual(param_oids(b.until_ready()), [20])

    def test_types_that_no_longer_fit_are_dropped_after_one_error(self):
        # int8 against a text column: no operator.  PostgreSQL fails the old
        # statement but reads a new Parse afresh; here the statement is
        # shared, and it failed on every new server until it was gone.
        r = self.r
        self.prepare_s1()
        self.pg.psql("alter table ps_pin alter column id type text")
        msgs = self.run_on_a_new_server(self.bind_int8("s1", 1), r.execute(), r.sync())
        self.assertEqual([sqlstate(b) for t, b in msgs if t == b"E"], ["42883"], msgs)
        # The client prepares it again (text parameter now): it works.
        msgs = self.run_on_a_new_server(
            r.close_stmt("s1"), r.parse("s1", "select v from ps_pin where id = $1"),
            r.msg(b"B", b"\x00s1\x00" + struct.pack("!HHi", 0, 1, 1) + b"1" +
                  struct.pack("!H", 0)),
            r.execute(), r.sync())
        self.assertEqual([t for t, b in msgs if t == b"E"], [], msgs)
        self.assertEqual([b[6:] for t, b in msgs if t == b"D"], [b"one"], msgs)

    def test_a_server_that_has_it_reads_it_afresh_after_one_error(self):
        # The same on the server that prepared it before the ALTER: there
        # PostgreSQL reads it again at each Bind with the types of its
        # Parse, and every new client got 42883 until RECONNECT.
        px = self.start_pgwharf(settings={"pool_mode": "transaction", "default_pool_size": 1,
                                          "auth_type": "trust"})
        bind_1 = self.r.msg(b"B", b"\x00s\x00" + struct.pack("!HHi", 0, 1, 1) + b"1" +
                            struct.pack("!H", 0))

        def new_client_runs():
            c = Raw(px.host, px.port, self.pg.user, self.pg.database)
            try:
                c.send(c.parse("s", "select v from ps_pin where id = $1"), bind_1, c.execute(),
                       c.sync())
                msgs = c.until_ready()
            finally:
                c.close()
            return [sqlstate(b) for t, b in msgs if t == b"E"], \
                [b[6:] for t, b in msgs if t == b"D"]

        self.assertEqual(new_client_runs(), ([], [b"one"]))
        self.pg.psql("alter table ps_pin alter column id type text")
        self.assertEqual(new_client_runs(), (["42883"], []))
        for _ in range(3):
            self.assertEqual(new_client_runs(), ([], [b"one"]))
        self.assertEqual(len(px.admin("SHOW SERVERS")), 1)


    def test_a_type_dropped_and_made_again_is_read_afresh_after_one_error(self):
        # An enum dropped and created again (a migration) has a new OID: a
        # server preparing the statement with the old one fails with XX000
        # "cache lookup failed for type", as every new server did for good.
        r = self.r
        self.pg.psql("drop table if exists ps_enum; drop type if exists ps_mood; "
                     "create type ps_mood as enum ('ok', 'sad'); "
                     "create table ps_enum(m ps_mood, v text); insert into ps_enum values ('ok', 'one')")
        bind_ok = r.msg(b"B", b"\x00s1\x00" + struct.pack("!HHi", 0, 1, 2) + b"ok" +
                        struct.pack("!H", 0))
        r.send(r.parse("s1", "select v from ps_enum where m = $1"), bind_ok, r.execute(), r.sync())
        self.assertEqual([b[6:] for t, b in r.until_ready() if t == b"D"], [b"one"])
        self.pg.psql("drop table ps_enum; drop type ps_mood; "
                     "create type ps_mood as enum ('ok', 'sad'); "
                     "create table ps_enum(m ps_mood, v text); insert into ps_enum values ('ok', 'one')")
        msgs = self.run_on_a_new_server(bind_ok, r.execute(), r.sync())
        self.assertEqual([sqlstate(b) for t, b in msgs if t == b"E"], ["XX000"], msgs)
        for _ in range(2):
            msgs = self.run_on_a_new_server(bind_ok, r.execute(), r.sync())
            self.assertEqual([t for t, b in msgs if t == b"E"], [], msgs)
            self.assertEqual([b[6:] for t, b in msgs if t == b"D"], [b"one"], msgs)


class TestResultShapeKeptAfterASchemaChange(pt.PgwharfTestCase):
    """PostgreSQL fixes a prepared statement's result at its Parse: once
    ALTER TABLE changes what the text returns, a Bind or Describe of it
    gets 0A000 "cached plan must not change result type" (nothing run).  A
    server that prepared the shared statement after the change returned
    rows of the new shape to a client that had Described the old one:
    asyncpg got ProtocolError or BufferError, and for a dropped column
    silently the next column's bytes as the values (hunt s40: drivers)."""

    def setUp(self):
        super().setUp()
        self.px = self.start_pgwharf(settings={"pool_mode": "transaction",
                                               "default_pool_size": 2, "auth_type": "trust"})
        self.pg.psql("drop table if exists ps_shape; "
                     "create table ps_shape(id int, a int, b text, c int); "
                     "insert into ps_shape values (1, 10, 'x1', 7), (2, 20, 'x2', 8)")

    def raw(self):
        r = Raw(self.px.host, self.px.port, self.pg.user, self.pg.database)
        self.addCleanup(r.close)
        return r

    def prepare_and_run(self, r, name, sql):
        """r prepares sql as name, Describes and runs it (one row of
        ps_shape's first shape)."""
        r.send(r.parse(name, sql), r.describe_stmt(name), r.bind(name), r.execute(), r.sync())
        self.assertEqual(types(r.until_ready()), "1tT2DCZ")

    def hold(self):
        """Another client holds the server used last: the next request
        goes to one that has not prepared the statement."""
        holder = psycopg2.connect(self.px.dsn())
        self.addCleanup(holder.close)
        holder.cursor().execute("begin; select 1")

    def test_a_dropped_column_gives_0A000_not_the_next_columns_bytes(self):
        r = self.raw()
        sql = "select * from ps_shape where id = 1"
        self.prepare_and_run(r, "s1", sql)
        self.pg.psql("alter table ps_shape drop column b")
        self.hold()
        # Twice in one write: the second Bind meets what the first learnt.
        r.send(r.bind("s1"), r.execute(), r.sync(), r.bind("s1"), r.execute(), r.sync())
        for _ in range(2):
            msgs = r.until_ready()
            self.assertEqual(types(msgs), "EZ", msgs)
            self.assertEqual(sqlstate(msgs[0][1]), "0A000")
            self.assertIn(b"Mcached plan must not change result type\x00", msgs[0][1])
            self.assertIn(b"RRevalidateCachedQuery\x00", msgs[0][1])
        # A Describe too, after the ParameterDescription, as PostgreSQL.
        r.send(r.describe_stmt("s1"), r.sync())
        msgs = r.until_ready()
        self.assertEqual((types(msgs), sqlstate(msgs[1][1])), ("tEZ", "0A000"), msgs)
        # A new Parse of the text reads the table as it is now.
        r.send(r.parse("s2", sql), r.describe_stmt("s2"), r.bind("s2"), r.execute(), r.sync())
        msgs = r.until_ready()
        self.assertEqual(types(msgs), "1tT2DCZ", msgs)
        row = [b for t, b in msgs if t == b"D"][0]
        self.assertEqual(struct.unpack("!H", row[:2])[0], 3)

    def test_an_insert_returning_is_not_run(self):
        r = self.raw()

        def ins(k):
            return r.msg(b"B", b"\x00ins\x00" + struct.pack("!HHi", 0, 1, 1) + str(k).encode() +
                         struct.pack("!H", 0))

        r.send(r.parse("ins", "insert into ps_shape(id, a) values ($1, 0) returning *"),
               r.describe_stmt("ins"), ins(3), r.execute(), r.sync())
        self.assertEqual(types(r.until_ready()), "1tT2DCZ")
        self.pg.psql("alter table ps_shape add column d int default 5")
        self.hold()
        r.send(ins(4), r.execute(), r.sync())
        msgs = r.until_ready()
        self.assertEqual([sqlstate(b) for t, b in msgs if t == b"E"], ["0A000"], msgs)
        self.assertEqual(self.pg.psql("select count(*) from ps_shape where id = 4"), "0")
        # A parameter PostgreSQL cannot read fails first, as there.
        r.send(ins("x"), r.execute(), r.sync())
        msgs = r.until_ready()
        self.assertEqual([sqlstate(b) for t, b in msgs if t == b"E"], ["22P02"], msgs)

    def test_in_a_transaction_block_the_0A000_fails_it(self):
        r = self.raw()
        r.send(r.parse("s1", "select * from ps_shape where id = 1"), r.bind("s1"), r.execute(),
               r.sync())
        self.assertEqual(types(r.until_ready()), "12DCZ")
        self.pg.psql("alter table ps_shape alter column a type bigint")
        self.hold()
        r.send(r.query("begin"))
        self.assertEqual(types(r.until_ready()), "CZ")
        r.send(r.bind("s1"), r.execute(), r.sync())
        msgs = r.until_ready()
        self.assertEqual((types(msgs), sqlstate(msgs[0][1]), msgs[-1][1]), ("EZ", "0A000", b"E"),
                         msgs)
        r.send(r.query("select 1"))
        msgs = r.until_ready()
        self.assertEqual(sqlstate(msgs[0][1]), "25P02", msgs)
        r.send(r.query("rollback"))
        self.assertEqual(r.until_ready()[-1], (b"Z", b"I"))

    def test_a_new_parse_on_a_server_without_it_reads_the_table_as_it_is(self):
        # Another client's Parse of the same text after the change, on a
        # server that lacks the statement: as in PostgreSQL it gets the
        # new result (not the statement first described, nor 0A000).
        r = self.raw()
        sql = "select * from ps_shape where id = 1"
        self.prepare_and_run(r, "s1", sql)
        self.pg.psql("alter table ps_shape drop column b")
        self.hold()
        n = self.raw()
        for _ in range(2):
            n.send(n.parse("q", sql), n.describe_stmt("q"), n.bind("q"), n.execute(),
                   n.close_stmt("q"), n.sync())
            msgs = n.until_ready()
            self.assertEqual(types(msgs), "1tT2DC3Z", msgs)
            rd, row = [b for t, b in msgs if t in (b"T", b"D")]
            self.assertEqual(struct.unpack("!H", rd[:2])[0], 3)
            self.assertEqual(row, struct.pack("!HI", 3, 1) + b"1" + struct.pack("!I", 2) + b"10" +
                             struct.pack("!I", 1) + b"7")
        # The first client's statement there: 0A000.
        r.send(r.bind("s1"), r.execute(), r.sync())
        msgs = r.until_ready()
        self.assertEqual([sqlstate(b) for t, b in msgs if t == b"E"], ["0A000"], msgs)

    def test_a_prepared_fetch_gives_the_rows_of_the_cursor_it_meets(self):
        # PostgreSQL never holds a utility statement to its first result: a
        # FETCH returns what its cursor is when it runs (bd6c377 answered
        # 0A000 on a server that prepared it later).
        self.pg.psql("drop table if exists ps_shape2; create table ps_shape2(x text, y text); "
                     "insert into ps_shape2 values ('p', 'q')")
        r = self.raw()
        r.send(r.query("begin; declare c1 cursor for select a from ps_shape where id = 1"))
        r.until_ready()
        r.send(r.parse("sf", "fetch all from c1"), r.describe_stmt("sf"), r.bind("sf"),
               r.execute(), r.sync())
        self.assertEqual(types(r.until_ready()), "1tT2DCZ")
        r.send(r.query("commit"))
        r.until_ready()
        self.hold()
        r.send(r.query("begin; declare c1 cursor for select * from ps_shape2"))
        r.until_ready()
        r.send(r.bind("sf"), r.execute(), r.sync())
        msgs = r.until_ready()
        self.assertEqual(types(msgs), "2DCZ", msgs)
        row = [b for t, b in msgs if t == b"D"][0]
        self.assertEqual(row, struct.pack("!HI", 2, 1) + b"p" + struct.pack("!I", 1) + b"q")
        r.send(r.query("commit"))
        r.until_ready()

    def test_a_query_after_a_comment_is_still_checked(self):
        # The first word is read past comments (nested ones too) and case.
        r = self.raw()
        sql = "/* a /* nested */ comment */ -- and a line\n WiTh w as (select * from ps_shape) " \
              "select * from w where id = 1"
        self.prepare_and_run(r, "s1", sql)
        self.pg.psql("alter table ps_shape drop column b")
        self.hold()
        r.send(r.bind("s1"), r.execute(), r.sync())
        msgs = r.until_ready()
        self.assertEqual([sqlstate(b) for t, b in msgs if t == b"E"], ["0A000"], msgs)

    def test_a_reading_of_a_change_rolled_back_is_read_again(self):
        # A server that read the statement in a transaction that changed its
        # table, rolled back since: PostgreSQL reads its copy again and runs
        # it; bd6c377 trusted that reading for ever and answered 0A000.
        r = self.raw()
        sql = "select * from ps_shape where id = 1"
        self.prepare_and_run(r, "s1", sql)
        self.hold()                      # r's server: m gets the other one
        m = self.raw()
        m.send(m.query("begin; alter table ps_shape add column d int"))
        self.assertEqual(m.until_ready()[-1], (b"Z", b"T"))
        m.send(m.parse("q", sql), m.describe_stmt("q"), m.bind("q"), m.execute(), m.sync())
        msgs = m.until_ready()
        self.assertEqual(types(msgs), "1tT2DCZ", msgs)
        self.assertEqual(struct.unpack("!H", [b for t, b in msgs if t == b"T"][0][:2])[0], 5)
        m.send(m.query("rollback"))
        self.assertEqual(m.until_ready()[-1], (b"Z", b"I"))
        for _ in range(2):               # on m's server, the other held
            r.send(r.describe_stmt("s1"), r.sync())
            msgs = r.until_ready()
            self.assertEqual(types(msgs), "tTZ", msgs)
            r.send(r.bind("s1"), r.execute(), r.sync())
            msgs = r.until_ready()
            self.assertEqual(types(msgs), "2DCZ", msgs)
            row = [b for t, b in msgs if t == b"D"][0]
            self.assertEqual(struct.unpack("!H", row[:2])[0], 4)

    def test_names_of_64_bytes_or_more(self):
        # PostgreSQL keys a name by its first 63 bytes: a new client's Parse
        # and Bind of such a name in one write go on at once (the reading
        # is that name's), an older name of the statement gets 0A000.
        old, new = "o" * 70, "n" * 64 + "x" * 6
        sql = "select * from ps_shape where id = 1"
        r = self.raw()
        self.prepare_and_run(r, old, sql)
        self.pg.psql("alter table ps_shape add column d int default 5")
        self.hold()
        n = self.raw()
        n.send(n.parse(new, sql), n.bind(new), n.execute(), n.describe_stmt(new[:63] + "y"),
               n.sync())
        msgs = n.until_ready()
        self.assertEqual(types(msgs), "12DCtTZ", msgs)
        self.assertEqual(struct.unpack("!H", [b for t, b in msgs if t == b"D"][0][:2])[0], 5)
        r.send(r.bind(old[:63] + "z"), r.execute(), r.sync())
        msgs = r.until_ready()
        self.assertEqual([sqlstate(b) for t, b in msgs if t == b"E"], ["0A000"], msgs)

    def test_a_request_waiting_for_the_check_is_not_idle(self):
        # The Parse pgwharf sends ahead of the client's Bind waits on a
        # lock; the Bind waits for its answer.  Neither client_idle_timeout
        # nor, in a transaction, idle_transaction_timeout ends the client
        # meanwhile: its request is under way.  The client is idle (and
        # may rightly be closed) from its first ReadyForQuery to its Bind:
        # the direct connection logs in before that, so that only a trust
        # login to pgwharf and two round trips fall in the gap (a server
        # login and a direct SCRAM login took over 300 ms under CPU load
        # and the client was closed before its Bind, hunt s46).
        for setting, begin in (("client_idle_timeout", False),
                               ("idle_transaction_timeout", True)):
            with self.subTest(setting=setting):
                px = self.start_pgwharf(settings={"pool_mode": "transaction",
                                                  "default_pool_size": 2, "auth_type": "trust",
                                                  setting: "1s"})
                lock = psycopg2.connect(self.pg.dsn())
                holder = None
                r = Raw(px.host, px.port, self.pg.user, self.pg.database)
                try:
                    r.send(r.parse("s1", "select a from ps_shape where id = 1"),
                           r.describe_stmt("s1"), r.sync())
                    self.assertEqual(types(r.until_ready()), "1tTZ")
                    # (A login to pgwharf with trust: no server login.)
                    holder = psycopg2.connect(px.dsn())
                    holder.cursor().execute("begin; select 1")
                    lock.cursor().execute("lock table ps_shape in access exclusive mode")
                    if begin:
                        r.send(r.query("begin"))
                        self.assertEqual(types(r.until_ready()), "CZ")
                    r.send(r.bind("s1"), r.execute(), r.sync())
                    pt.wait_until(lambda: self.pg.psql(
                        "select count(*) from pg_stat_activity where wait_event_type = 'Lock' "
                        "and query like '%ps_shape%'") == "1", 20, what="the Parse waiting")
                    # Past the timeout (1 s) while the Parse waits: the
                    # client is still there once the lock goes.
                    self.assertEqual(select.select([r.s], [], [], 1.5)[0], [])
                    lock.rollback()
                    msgs = r.until_ready()
                    self.assertEqual(types(msgs), "2DCZ", msgs)
                    if begin:
                        r.send(r.query("commit"))
                        self.assertEqual(types(r.until_ready()), "CZ")
                finally:
                    # A failure must not leave the lock to the next subTest.
                    for c in (lock, holder, r):
                        if c is not None:
                            c.close()
                    px.stop()

    def asyncpg_after(self, ddl):
        """asyncpg fetches a query (its statement cached, Described once),
        the table changes, and it fetches again on a server that has not
        prepared the statement: what it gets, and what PostgreSQL gives."""
        import asyncpg
        q = "select * from ps_shape where id <= $1 order by id"

        async def main():
            c = await asyncpg.connect(self.px.url())
            try:
                await c.fetch(q, 2)
                self.pg.psql(ddl)
                self.hold()
                got = [tuple(x) for x in await c.fetch(q, 2)]
                again = [tuple(x) for x in await c.fetch(q, 2)]
            finally:
                await c.close()
            d = await asyncpg.connect(self.pg.url())
            try:
                want = [tuple(x) for x in await d.fetch(q, 2)]
            finally:
                await d.close()
            return got, again, want

        got, again, want = asyncio.run(main())
        self.assertEqual(got, want)
        self.assertEqual(again, want)

    def test_asyncpg_after_a_column_is_dropped(self):
        # ProtocolError: number of columns (3) different from described (4).
        self.asyncpg_after("alter table ps_shape drop column b")

    def test_asyncpg_after_a_column_is_dropped_and_another_added(self):
        # As many columns as described: no error, and b read as text from
        # the int4 bytes of column c (b"\x00\x00\x00\x07").
        self.asyncpg_after("alter table ps_shape drop column b, add column e int default 9")

    def test_asyncpg_after_a_column_is_added(self):
        # ProtocolError: number of columns (5) different from described (4).
        self.asyncpg_after("alter table ps_shape add column d int default 5")

    def test_asyncpg_after_a_column_type_change(self):
        # BufferError: an int8 read as an int4.
        self.asyncpg_after("alter table ps_shape alter column a type bigint")


class TestDiscardAndDeallocateAll(pt.PgwharfTestCase):
    """DISCARD ALL / DEALLOCATE ALL drop every statement on the server that
    runs them, whoever's and however they are sent; one that fails drops
    nothing.  Once only a simple Query of exactly that text was seen, when
    sent (even if it then failed), and server_reset_query not at all: the
    server's statements and what pgwharf thought it had parted ways, and
    other clients got 26000 "PGW_n does not exist" or 42P05 "PGW_n already
    exists" on that server from then on."""

    def start(self, **extra):
        settings = {"pool_mode": "transaction", "auth_type": "trust",
                    "default_pool_size": 1, "max_db_connections": 1}
        settings.update(extra)
        px = self.start_pgwharf(settings=settings)
        return px, lambda: Raw(px.host, px.port, self.pg.user, self.pg.database)

    def prepare(self, r, name, sql):
        r.send(r.parse(name, sql), r.sync())
        self.assertEqual(types(r.until_ready()), "1Z")

    def assert_runs(self, r, name):
        r.send(r.bind(name), r.execute(), r.sync())
        msgs = r.until_ready()
        self.assertEqual(types(msgs), "2DCZ", msgs)
        return msgs

    def test_any_spelling_of_the_drop(self):
        # Only one space between the words was read as the drop: with two,
        # a tab or a comment, the client's Parse of a name behind it got
        # 42P05 "already exists" and its Bind 26000 (found by a review of
        # prepared.c).
        px, raw = self.start()
        for text in ("DISCARD  ALL", "deallocate\tprepare all", "DEALLOCATE ALL /*x*/",
                     "-- drop\nDISCARD /* all of */ ALL ;"):
            with self.subTest(text=text):
                r = raw()
                try:
                    self.prepare(r, "s1", "select 1")
                    r.send(r.query(text), r.parse("s1", "select 2"), r.bind("s1"), r.execute(),
                           r.sync())
                    msgs = r.until_ready()          # the Query's
                    self.assertEqual(types(msgs), "CZ", msgs)
                    msgs = r.until_ready()
                    self.assertEqual(types(msgs), "12DCZ", msgs)
                    self.assertEqual(msgs[2][1][-1:], b"2")
                    self.assertEqual(self.assert_runs(r, "s1")[1][1][-1:], b"2")
                finally:
                    r.close()

    def test_deallocate_all_in_the_extended_protocol(self):
        import psycopg
        px, raw = self.start()
        a, b = raw(), raw()
        try:
            b.send(b.parse("t", "select 1"), b.sync())
            self.assertEqual(types(b.until_ready()), "1Z")
            a.send(a.parse("s1", "select 1"), a.sync())
            self.assertEqual(types(a.until_ready()), "1Z")
            # A statement parsed after it in the same batch stays.
            a.send(a.parse("", "DEALLOCATE ALL"), a.bind(""), a.execute(),
                   a.parse("s9", "select 9"), a.sync())
            self.assertEqual(types(a.until_ready()), "12C1Z")
            a.send(a.bind("s1"), a.execute(), a.sync())
            msgs = a.until_ready()
            self.assertEqual((types(msgs), sqlstate(msgs[0][1])), ("EZ", "26000"), msgs)
            a.send(a.bind("s9"), a.execute(), a.sync())
            msgs = a.until_ready()
            self.assertEqual(types(msgs), "2DCZ", msgs)
            self.assertEqual(msgs[1][1][-1:], b"9")
            for _ in range(2):
                b.send(b.bind("t"), b.execute(), b.sync())
                msgs = b.until_ready()
                self.assertEqual(types(msgs), "2DCZ", msgs)
        finally:
            a.close()
            b.close()
        # psycopg 3 sends everything in the extended protocol: one
        # connection's DEALLOCATE ALL, another's statements.
        with psycopg.connect(px.dsn(), autocommit=True) as c1, \
                psycopg.connect(px.dsn(), autocommit=True) as c2:
            for i in range(3):
                self.assertEqual(c1.execute("select %s::int + 5", (i,), prepare=True)
                                 .fetchone()[0], i + 5)
                c2.execute("DEALLOCATE ALL")

    def test_a_shared_text_parsed_behind_it_in_the_same_batch_runs(self):
        # psycopg 3.1 in pipeline mode sends DEALLOCATE ALL after a ROLLBACK
        # (TO SAVEPOINT) ahead of the next statements it prepares, in one
        # batch.  A Parse of a text the server had was answered by pgwharf
        # as prepared there, which it no longer was when the Bind came:
        # 26000.  Likewise a named statement of DEALLOCATE ALL Bound again.
        px, raw = self.start()
        a, b = raw(), raw()
        try:
            self.prepare(b, "t", "select 2")
            self.prepare(a, "d", "DEALLOCATE ALL")
            for n, (drop, head) in enumerate(
                    (([a.parse("", "DEALLOCATE ALL"), a.bind("")], "12"),
                     ([a.parse("", "DEALLOCATE PREPARE ALL"), a.bind("")], "12"),
                     ([a.bind("d")], "2"))):
                with self.subTest(drop=drop):
                    self.prepare(a, "s%d" % n, "select 1")
                    a.send(*drop, a.execute(), a.parse("x%d" % n, "select 1"),
                           a.bind("x%d" % n), a.execute(), a.parse("y%d" % n, "select 2"),
                           a.bind("y%d" % n), a.execute(), a.sync())
                    msgs = a.until_ready()
                    self.assertEqual(types(msgs), head + "C12DC12DCZ", msgs)
                    self.assertEqual([m[1][-1:] for m in msgs if m[0] == b"D"], [b"1", b"2"])
                    self.prepare(a, "d", "DEALLOCATE ALL")
                    for _ in range(2):
                        self.assert_runs(b, "t")
        finally:
            a.close()
            b.close()

    def test_its_names_are_free_again_for_what_is_sent_behind_it(self):
        # A Parse reusing one of the client's names, sent behind a
        # DEALLOCATE ALL / DISCARD ALL before its answer (a simple Query
        # pipelined, or earlier in the same batch), got 42P05 "already
        # exists" -- and the name was gone after.  PostgreSQL runs the
        # drop first: the Parse makes the name anew.  A Bind of a dropped
        # name behind a simple-Query drop gets 26000, as in PostgreSQL; and
        # a Parse of a text the server had (another client's) behind one
        # is prepared again there.
        px, raw = self.start()
        a, b = raw(), raw()
        try:
            self.prepare(b, "t", "select 3")
            for n, drop in enumerate(("DEALLOCATE ALL", "DISCARD ALL",
                                      "DEALLOCATE PREPARE ALL")):
                with self.subTest(drop=drop):
                    self.prepare(a, "d1", "select 1")
                    self.prepare(a, "d2", "select 1")
                    a.send(a.query(drop), a.parse("d1", "select 3"), a.bind("d1"),
                           a.execute(), a.sync())
                    msgs = a.until_ready() + a.until_ready()
                    self.assertEqual(types(msgs), "CZ12DCZ", msgs)
                    self.assertEqual(msgs[4][1][-1:], b"3")
                    self.assertEqual(self.assert_runs(a, "d1")[1][1][-1:], b"3")
                    a.send(a.bind("d2"), a.execute(), a.sync())
                    msgs = a.until_ready()
                    self.assertEqual((types(msgs), sqlstate(msgs[0][1])), ("EZ", "26000"))
                    # in one batch
                    a.send(a.parse("", drop), a.bind(""), a.execute(),
                           a.parse("d1", "select 4"), a.bind("d1"), a.execute(), a.sync())
                    msgs = a.until_ready()
                    self.assertEqual(types(msgs), "12C12DCZ", msgs)
                    self.assertEqual(self.assert_runs(a, "d1")[1][1][-1:], b"4")
                    a.send(a.query("DEALLOCATE ALL"), a.bind("d1"), a.execute(), a.sync())
                    msgs = a.until_ready() + a.until_ready()
                    self.assertEqual(types(msgs), "CZEZ", msgs)
                    self.assertEqual(sqlstate(msgs[2][1]), "26000")
                    for _ in range(2):
                        self.assert_runs(b, "t")
            # A drop that does not run (a failed transaction: 25P02, the
            # rest of its batch skipped) frees no name: d1 is still the
            # statement it was, as in PostgreSQL.
            self.prepare(a, "d9", "select 9")
            a.send(a.query("begin"), a.query("select 1/0"))
            self.assertEqual(types(a.until_ready() + a.until_ready()), "CZEZ")
            a.send(a.parse("", "DEALLOCATE ALL"), a.bind(""), a.execute(),
                   a.parse("d9", "select 10"), a.bind("d9"), a.execute(), a.sync())
            msgs = a.until_ready()
            self.assertEqual((types(msgs), sqlstate(msgs[0][1])), ("EZ", "25P02"))
            a.send(a.query("rollback"))
            self.assertEqual(types(a.until_ready()), "CZ")
            self.assertEqual(self.assert_runs(a, "d9")[1][1][-1:], b"9")
        finally:
            a.close()
            b.close()

    def test_psycopg_pipeline_after_a_rollback_to_savepoint(self):
        # The psycopg 3.1 pipeline that met it (see above).
        import psycopg
        px, _ = self.start()
        with psycopg.connect(px.dsn()) as c:
            c.prepare_threshold = 0
            self.assertEqual(c.execute("select %s::int + 100", (1,)).fetchone(), (101,))
            c.execute("SAVEPOINT sp")
            with c.pipeline() as p:
                c.execute("ROLLBACK TO SAVEPOINT sp")
                p.sync()
                c.execute("select 1", prepare=False)
                cur = c.execute("select %s::int + 100", (2,))
                p.sync()
                self.assertEqual(cur.fetchone(), (102,))

    def test_statements_dropped_where_pgwharf_cannot_see_it(self):
        # DEALLOCATE ALL run inside a function (or DEALLOCATE "PGW_1" typed
        # by hand) drops the server's statements unseen: the first Bind
        # that meets the gap fails with 26000 as on PostgreSQL, after which
        # each statement is prepared there again instead of failing on that
        # server for good, the other client's as well.
        px, raw = self.start()
        a, b = raw(), raw()
        try:
            self.prepare(b, "t", "select 2")          # PGW_1
            self.prepare(a, "s1", "select 1")         # PGW_2
            for drop in ("DO $$ begin execute 'deallocate all'; end $$",
                         'DEALLOCATE "PGW_2"'):
                with self.subTest(drop=drop):
                    a.send(a.query(drop))
                    self.assertNotIn(b"E", [t for t, _ in a.until_ready()])
                    a.send(a.bind("s1"), a.execute(), a.sync())
                    msgs = a.until_ready()
                    self.assertEqual((types(msgs), sqlstate(msgs[0][1])), ("EZ", "26000"), msgs)
                    for _ in range(2):
                        self.assert_runs(a, "s1")
                        self.assert_runs(b, "t")
        finally:
            a.close()
            b.close()

    def test_discard_all_that_fails_forgets_nothing(self):
        px, raw = self.start()
        a, b = raw(), raw()
        try:
            self.prepare(b, "t", "select 1")
            self.prepare(a, "s1", "select 1")
            a.send(a.msg(b"Q", b"BEGIN\x00"))
            self.assertEqual(types(a.until_ready()), "CZ")
            a.send(a.msg(b"Q", b"DISCARD ALL\x00"))
            msgs = a.until_ready()
            self.assertEqual((types(msgs), sqlstate(msgs[0][1])), ("EZ", "25001"), msgs)
            a.send(a.msg(b"Q", b"ROLLBACK\x00"))
            self.assertEqual(types(a.until_ready()), "CZ")
            self.assert_runs(a, "s1")
            self.assert_runs(b, "t")
        finally:
            a.close()
            b.close()

    def test_server_reset_query_always(self):
        px, raw = self.start(server_reset_query_always=1)
        r = raw()
        try:
            r.send(r.parse("s1", "select 1"), r.sync())
            self.assertEqual(types(r.until_ready()), "1Z")
            for _ in range(3):
                # The server ran DISCARD ALL since: prepared again.
                r.send(r.bind("s1"), r.execute(), r.sync())
                msgs = r.until_ready()
                self.assertEqual(types(msgs), "2DCZ", msgs)
                r.send(r.parse("s2", "select 1"), r.bind("s2"), r.execute(),
                       r.close_stmt("s2"), r.sync())
                msgs = r.until_ready()
                self.assertEqual(types(msgs), "12DC3Z", msgs)
        finally:
            r.close()


class TestACloseWithoutSync(pt.PgwharfTestCase):
    """A Close of a statement with a Flush and no Sync, from a client with
    nothing under way (ts-postgres's Statement.close()): pgwharf answers
    it, so it took a server only to link it to the client, whose batch
    then stayed open until its next Sync -- the idle client held the
    server and others waited for query_wait_timeout (found by a hunt with
    ts-postgres; PgBouncer holds it too).  It is answered with no server
    now."""

    def one_server(self):
        return raw_on_one_server(self, "transaction", query_wait_timeout=5)

    def test_close_and_flush_take_no_server(self):
        px, r = self.one_server()
        self.addCleanup(r.close)
        r.send(r.parse("s1", "select 1"), r.sync())
        self.assertEqual(types(r.until_ready()), "1Z")
        r.send(r.close_stmt("s1"), r.msg(b"H"))
        self.assertEqual(r.read_msg()[0], b"3")
        assert_another_client_runs(self, px)
        # The name is gone, and may be prepared again.
        r.send(r.bind("s1"), r.execute(), r.sync())
        got = r.until_ready()
        self.assertEqual(types(got), "EZ")
        self.assertEqual(sqlstate(got[0][1]), "26000")
        r.send(r.parse("s1", "select 2"), r.bind("s1"), r.execute(), r.sync())
        got = r.until_ready()
        self.assertEqual(types(got), "12DCZ")
        self.assertEqual(got[2][1][-1:], b"2")

    def test_close_of_an_unknown_name_and_flush(self):
        # No error in PostgreSQL either.
        px, r = self.one_server()
        self.addCleanup(r.close)
        r.send(r.close_stmt("never_prepared"), r.msg(b"H"), r.close_stmt("nor_this"))
        self.assertEqual(r.read_msg()[0], b"3")
        self.assertEqual(r.read_msg()[0], b"3")
        assert_another_client_runs(self, px)
        r.send(r.sync())
        self.assertEqual(types(r.until_ready()), "Z")

    BE = ph.msg(b"B", b"\x00\x00" + b"\x00" * 6) + ph.msg(b"E", b"\x00" + b"\x00" * 4)
    CLOSE = ph.msg(b"C", b"S\x00")

    def unnamed_close(self, at, check, rounds, tail=b""):
        """On a connection to at, for each round (ahead, readys, apart):
        ahead and then a Close of the unnamed statement and a Flush -- sent
        apart, ahead's readys ReadyForQuerys read before the Close goes, or
        in one write behind it --, the CloseComplete read, check() run,
        then a Bind and Execute of the statement and a Sync; then tail, if
        any, read to its ReadyForQuery.  The messages, each error as its
        SQLSTATE."""
        sock = socket.create_connection((at.host, at.port), timeout=20)
        self.addCleanup(sock.close)
        ph.sync_login(sock, self.pg.user, self.pg.database, self.pg.password)
        out = []
        close = self.CLOSE + ph.msg(b"H")
        for ahead, readys, apart in rounds:
            sock.sendall(ahead if apart else ahead + close)
            for _ in range(readys):
                out += ph.read_until_ready(sock)
            if apart:
                sock.sendall(close)
            out.append(ph.recv_msg(sock))
            check()
            sock.sendall(self.BE + ph.msg(b"S"))
            out += ph.read_until_ready(sock)
        if tail:
            sock.sendall(tail)
            out += ph.read_until_ready(sock)
        return [(t, sqlstate(b) if t == b"E" else b) for t, b in out]

    def test_close_of_the_unnamed_statement_and_flush(self):
        """A Close of the unnamed statement and a Flush, with nothing under
        way: pgw_ps_close_alone left it to a server (the unnamed statement
        is not one of the pool's), taken for it and held with the idle
        client until its next Sync (fails before: the other client's
        57014 after query_wait_timeout).  The client's unnamed statement
        is gone all the same (drops_unnamed): answered with no server now.
        Each step on a direct connection and through pgwharf, the messages
        compared: a Bind of it after is 26000, not the copy still on the
        server."""
        px, r = self.one_server()
        r.close()
        def run(at, check):
            return self.unnamed_close(
                at, check, [(ph.parse_msg("", "select 'a'") + ph.msg(b"S"), 1, True)],
                ph.parse_msg("", "select 'b'") + self.CLOSE + self.BE + ph.msg(b"S"))
        want = run(self.pg, lambda: None)
        self.assertEqual([t for t, _ in want], [b"1", b"Z", b"3", b"E", b"Z", b"1", b"3",
                                                b"E", b"Z"])
        self.assertEqual(run(px, lambda: assert_another_client_runs(self, px)), want)

    def test_close_of_the_unnamed_statement_behind_a_request(self):
        """As above, the Close and Flush sent behind a request not yet
        answered (a Query; an extended batch with its Sync): the Close went
        on to the server (prepared.c's queue has it pass), which stayed
        with the idle client until its next Sync (fails before: the other
        client's 57014 after query_wait_timeout).  It waits for the
        request's ReadyForQuery, as a Close of the unnamed portal does
        (close_waits), and is answered with no server then, after it.
        Each step on a direct connection and through pgwharf, the messages
        compared: a Bind of it after is 26000."""
        px, r = self.one_server()
        r.close()
        def run(at, check):
            return self.unnamed_close(at, check, [
                (ph.parse_msg("", "select 'a'") + self.BE + ph.msg(b"S"), 1, False),
                (ph.parse_msg("", "select 'b'") + ph.msg(b"S") + ph.query_msg("select 2"), 2,
                 False)])
        want = run(self.pg, lambda: None)
        self.assertEqual([t for t, _ in want], [b"1", b"2", b"D", b"C", b"Z", b"3", b"E", b"Z",
                                                b"1", b"Z", b"T", b"D", b"C", b"Z", b"3",
                                                b"E", b"Z"])
        self.assertEqual(run(px, lambda: assert_another_client_runs(self, px)), want)

    def test_close_of_the_unnamed_statement_with_a_cancel_in_flight(self):
        """As above, the request a Query the client cancels: its
        ReadyForQuery 'I' mostly comes before the cancel's connection is
        done, and the server stays linked until it is (cancel.c).  The
        Close went on to the server there (close_waits held it only while
        answers were due), a batch opened, and once the cancel was done
        the idle client kept the server until its next Sync (fails before:
        the other client's 57014 after query_wait_timeout, most rounds).
        It waits for the cancel too now, then is answered with no server;
        a Parse and Bind of the unnamed statement sent behind it use the
        new statement, a Bind alone after it gets 26000.  Each round on a
        direct connection and through pgwharf, the messages compared."""
        px, r = self.one_server()
        r.close()
        be, close = self.BE, self.CLOSE
        def run(at, check):
            out = []
            for behind in (ph.msg(b"H"), ph.parse_msg("", "select 'n'") + be + ph.msg(b"S")):
                for _ in range(3):
                    sock = socket.create_connection((at.host, at.port), timeout=20)
                    keys = []
                    ph.sync_login(sock, self.pg.user, self.pg.database, self.pg.password,
                                  key_data=keys)
                    sock.sendall(ph.parse_msg("", "select 'a'") + ph.msg(b"S"))
                    out += ph.read_until_ready(sock)
                    sock.sendall(ph.query_msg("select pg_sleep(10)") + close + behind)
                    # (The cancel once the query runs: one that reaches an
                    # idle backend does nothing, the sleep then ran out.)
                    pt.wait_until(lambda: self.pg.psql(
                        "select count(*) from pg_stat_activity where query = "
                        "'select pg_sleep(10)' and state = 'active'") == "1", 20,
                        what="the query to run")
                    c = socket.create_connection((at.host, at.port), timeout=20)
                    c.sendall(struct.pack("!IIII", 16, 80877102, *keys[0]))
                    c.close()
                    out += ph.read_until_ready(sock)
                    if behind == ph.msg(b"H"):
                        out.append(ph.recv_msg(sock))
                        check()
                        sock.sendall(be + ph.msg(b"S"))
                    out += ph.read_until_ready(sock)
                    check()
                    sock.close()
            return [(t, sqlstate(b) if t == b"E" else b) for t, b in out]
        want = run(self.pg, lambda: None)
        self.assertEqual([t for t, _ in want[:9]], [b"1", b"Z", b"T", b"E", b"Z", b"3", b"E",
                                                    b"Z", b"1"])
        self.assertEqual(want[3][1], "57014")
        self.assertEqual(want[6][1], "26000")
        self.assertEqual(run(px, lambda: assert_another_client_runs(self, px)), want)

    def test_close_and_sync_in_a_full_pool(self):
        # pgx deallocates with Close + Sync; a Sync alone after it (or a
        # stray one) is answered too: no wait for a server another client
        # holds (before, the Sync waited in the queue, query_wait_timeout).
        px, r = self.one_server()
        self.addCleanup(r.close)
        r.send(r.parse("s1", "select 1"), r.sync())
        self.assertEqual(types(r.until_ready()), "1Z")
        holder = Raw(px.host, px.port, self.pg.user, self.pg.database)
        self.addCleanup(holder.close)
        holder.send(holder.query("begin"))
        self.assertEqual(types(holder.until_ready()), "CZ")
        r.send(r.close_stmt("s1"), r.sync())
        self.assertEqual(types(r.until_ready()), "3Z")
        r.send(r.sync(), r.sync())
        self.assertEqual(types(r.until_ready()), "Z")
        self.assertEqual(types(r.until_ready()), "Z")
        holder.send(holder.query("commit"))
        self.assertEqual(types(holder.until_ready()), "CZ")
        r.send(r.bind("s1"), r.execute(), r.sync())
        got = r.until_ready()
        self.assertEqual(types(got), "EZ")
        self.assertEqual(sqlstate(got[0][1]), "26000")

    def test_ts_postgres_statement_close(self):
        # Two clients of the driver itself on a pool of one server: the
        # first closes its statement and stays connected.
        px, r = self.one_server()
        r.close()
        script = r"""
const { connect } = require('ts-postgres');
const [host, port, user, password, database] = process.argv.slice(1);
(async () => {
  const cfg = { host, port: +port, user, password, database, ssl: 'disable' };
  const a = await connect(cfg), b = await connect(cfg);
  const sa = await a.prepare('select $1::int + 1 as v');
  const ra = await sa.execute([1]);
  await sa.close();
  const sb = await b.prepare('select $1::int * 2 as v');
  const rb = await sb.execute([21]);
  await sb.close();
  console.log(JSON.stringify([ra.rows[0][0], rb.rows[0][0]]));
  await a.end(); await b.end();
})().catch(e => { console.error(e); process.exit(1); });
"""
        cp = subprocess.run(["node", "-e", script, px.host, str(px.port), self.pg.user,
                             self.pg.password, self.pg.database], cwd=HERE,
                            capture_output=True, text=True, timeout=60)
        self.assertEqual(cp.returncode, 0, cp.stderr)
        self.assertEqual(json.loads(cp.stdout), [2, 42])


class TestACloseOfAnSqlPreparedStatement(pt.PgwharfTestCase):
    """A protocol Close of a name the client PREPAREd in SQL: PostgreSQL
    keeps both kinds in one namespace, and the Close deallocates it.
    pgwharf answered every Close of a name it did not know itself, so the
    statement stayed on the server (an EXECUTE of it ran where PostgreSQL
    answers 26000).  With the server the client's it goes to it now: in a
    transaction (a failed one too, where PostgreSQL closes it all the
    same), in a batch open there, and behind requests not answered yet,
    where it waits for their answers (in a transaction then)."""

    def run_steps(self, at, steps):
        """steps on a connection to at: (bytes sent, how many
        ReadyForQuerys to read, or None for one message): the replies,
        each error as its SQLSTATE."""
        sock = socket.create_connection((at.host, at.port), timeout=20)
        self.addCleanup(sock.close)
        ph.sync_login(sock, self.pg.user, self.pg.database, self.pg.password)
        out = []
        for data, readys in steps:
            sock.sendall(data)
            if readys is None:
                out.append(ph.recv_msg(sock))
            for _ in range(readys or 0):
                out += ph.read_until_ready(sock)
        sock.close()
        return [(t, sqlstate(b) if t == b"E" else b) for t, b in out]

    def test_a_close_of_an_sql_prepared_statement_deallocates_it(self):
        px, r = raw_on_one_server(self, "transaction", query_wait_timeout=5)
        r.close()
        Q, S, H = ph.query_msg, ph.msg(b"S"), ph.msg(b"H")
        def close(name):
            return ph.msg(b"C", b"S" + name.encode() + b"\x00")
        be = ph.msg(b"B", b"\x00\x00" + b"\x00" * 6) + ph.msg(b"E", b"\x00" + b"\x00" * 4)
        steps = [
            # In a transaction.
            (Q("begin; prepare p1 as select 1"), 1), (close("p1") + S, 1),
            (Q("execute p1"), 1), (Q("rollback"), 1),
            # In a failed transaction: the Close runs there, as its
            # statement outlives the ROLLBACK.
            (Q("begin; prepare p2 as select 2"), 1), (Q("select 1/0"), 1),
            (close("p2") + S, 1), (Q("rollback"), 1), (Q("execute p2"), 1),
            # Behind the Query not answered yet that opens the transaction.
            (Q("begin; prepare p3 as select 3") + close("p3") + S, 2),
            (Q("execute p3"), 1), (Q("rollback"), 1),
            # In a batch (with no transaction open before it).
            (ph.parse_msg("", "prepare p4 as select 4") + be + close("p4") + S, 1),
            (Q("execute p4"), 1),
            # With a Flush in a transaction: the COMMIT ends it all.
            (Q("begin; prepare p5 as select 5"), 1), (close("p5") + H, None),
            (Q("commit"), 1), (Q("execute p5"), 1),
        ]
        want = self.run_steps(self.pg, steps)
        self.assertEqual(sum(1 for t, v in want if t == b"E" and v == "26000"), 5, want)
        self.assertEqual(self.run_steps(px, steps), want)       # base: rows of 1 to 5
        pt.wait_until(lambda: [(p["sv_active"], p["sv_idle"]) for p in px.show(
            "POOLS", database=self.pg.database, user=self.pg.user)] == [("0", "1")], 10,
            what="the server back in the pool")
        assert_another_client_runs(self, px)

    def test_a_close_behind_a_request_ending_a_transaction_takes_no_server(self):
        """Waiting for the answers ahead of it, it is answered with no
        server once the server goes back at the ReadyForQuery 'I' (sent on,
        the Close and its Flush kept the server with the idle client until
        its next Sync).  Not as PostgreSQL: the statement is server-local,
        and stays there (README)."""
        px, r = raw_on_one_server(self, "transaction", query_wait_timeout=5)
        self.addCleanup(r.close)
        r.send(r.query("prepare p6 as select 6"), r.close_stmt("p6"), r.msg(b"H"))
        self.assertEqual(types(r.until_ready()), "CZ")
        self.assertEqual(r.read_msg()[0], b"3")
        assert_another_client_runs(self, px)
        r.send(r.query("execute p6"))
        self.assertEqual(types(r.until_ready()), "TDCZ")
        r.send(r.query("deallocate p6"))
        self.assertEqual(types(r.until_ready()), "CZ")

    def test_a_close_of_a_name_of_pgwharfs_is_answered_here(self):
        """PGW_... names the pool's statements: a Close of one, even in a
        transaction, drops nothing on the server."""
        px, r = raw_on_one_server(self, "transaction", query_wait_timeout=5)
        self.addCleanup(r.close)
        r.send(r.parse("s1", "select 7"), r.sync())
        self.assertEqual(types(r.until_ready()), "1Z")
        r.send(r.query("begin; select name from pg_prepared_statements "
                       "where name like 'PGW\\_%' and statement = 'select 7'"))
        got = r.until_ready()
        self.assertEqual(types(got), "CTDCZ", got)
        name = got[2][1][6:]
        r.send(r.msg(b"C", b"S" + name + b"\x00"), r.sync())
        self.assertEqual(types(r.until_ready()), "3Z")
        r.send(r.bind("s1"), r.execute(), r.sync())
        got = r.until_ready()
        self.assertEqual(types(got), "2DCZ", got)
        r.send(r.query("commit"))
        self.assertEqual(types(r.until_ready()), "CZ")


    def test_a_close_and_a_flush_in_a_transaction_leave_it_idle(self):
        """The Close sent on in a transaction, with a Flush and no Sync
        (ts-postgres closes so): once its CloseComplete is in nothing is
        under way, and a client silent in its transaction then meets
        idle_transaction_timeout, as after a Close pgwharf answers (fails
        before: the open batch was taken for a request running, the client
        held its server and transaction past the timeout, and the read of
        the FATAL timed out).  A Sync after it is answered in the
        transaction, the statement gone.  Likewise with a Close pgwharf
        answers itself in the batch (of a name the client Parsed)."""
        px, r = raw_on_one_server(self, "transaction", query_wait_timeout=5,
                                  idle_transaction_timeout=3)
        self.addCleanup(r.close)
        r.send(r.parse("k", "select 1"), r.sync())
        self.assertEqual(types(r.until_ready()), "1Z")
        r.send(r.query("begin; prepare p8 as select 8"))
        self.assertEqual(types(r.until_ready()), "CCZ")
        r.send(r.close_stmt("p8"), r.msg(b"H"))
        self.assertEqual(r.read_msg()[0], b"3")
        r.send(r.sync())
        self.assertEqual(r.until_ready(), [(b"Z", b"T")])
        r.send(r.query("execute p8"))
        self.assertEqual([(t, sqlstate(b) if t == b"E" else b) for t, b in r.until_ready()],
                         [(b"E", "26000"), (b"Z", b"E")])
        r.send(r.query("rollback; begin; prepare p9 as select 9"))
        self.assertEqual(types(r.until_ready()), "CCCZ")
        r.send(r.close_stmt("p9"), r.close_stmt("k"), r.msg(b"H"))
        self.assertEqual([r.read_msg() for _ in range(2)], [(b"3", b""), (b"3", b"")])
        t, body = r.read_msg()            # (20 s at most: Raw's timeout)
        self.assertEqual((t, sqlstate(body)), (b"E", "25P03"))
        pt.wait_until(lambda: [(p["sv_active"], p["sv_idle"]) for p in px.show(
            "POOLS", database=self.pg.database, user=self.pg.user)] in ([("0", "0")], [("0", "1")]),
            10, what="the server closed")
        assert_another_client_runs(self, px)


class TestACloseWithoutSyncFirstOrOfAPortal(pt.PgwharfTestCase):
    """Close + Flush from a client with nothing under way, left over from
    TestACloseWithoutSync (found by difftest's idle check): a Close of a
    portal still took a server, kept by the idle client until its next
    Sync (no transaction is open without a server, so PostgreSQL has no
    portal left and answers CloseComplete); so did a Close of a statement
    as a client's first message after a login that took no server (the
    prepared-statement layer was switched on only at a client's first
    link).  A Close of a statement sent behind a Sync, before its
    ReadyForQuery, kept the server the same way."""

    def portal_close(self, max_prepared):
        px, r = raw_on_one_server(self, "transaction", query_wait_timeout=5,
                                  max_prepared_statements=max_prepared)
        self.addCleanup(r.close)
        r.send(r.msg(b"C", b"Pp1\x00"), r.msg(b"H"), r.msg(b"C", b"P\x00"), r.msg(b"H"))
        self.assertEqual(r.read_msg()[0], b"3")
        self.assertEqual(r.read_msg()[0], b"3")
        assert_another_client_runs(self, px)
        r.send(r.msg(b"Q", b"select 5\x00"))
        self.assertEqual(types(r.until_ready()), "TDCZ")

    def test_close_of_portals_and_flush_take_no_server(self):
        self.portal_close(200)

    def test_close_of_portals_and_flush_take_no_server_without_prepared(self):
        self.portal_close(0)

    def test_close_of_a_portal_inside_a_transaction_goes_to_its_server(self):
        px, r = raw_on_one_server(self, "transaction", query_wait_timeout=5)
        self.addCleanup(r.close)
        r.send(r.msg(b"Q", b"begin; declare c cursor for select 1\x00"))
        self.assertEqual(types(r.until_ready()), "CCZ")
        r.send(r.msg(b"C", b"Pc\x00"), r.msg(b"Q", b"fetch c\x00"))
        got = r.until_ready()
        self.assertEqual(types(got), "3EZ")
        self.assertEqual(sqlstate(got[1][1]), "34000")     # closed: gone on the server
        r.send(r.msg(b"Q", b"rollback\x00"))
        self.assertEqual(types(r.until_ready()), "CZ")

    def test_close_sent_behind_a_sync_leaves_the_server_free(self):
        # Sent before the Sync's ReadyForQuery, the Close (answered by
        # pgwharf) waited in the queue of replies and the server stayed
        # with the client until its next Sync.
        # (Seen after a batch that failed: difftest's seed 1.)
        px, r = raw_on_one_server(self, "transaction", query_wait_timeout=5)
        self.addCleanup(r.close)
        r.send(r.parse("s2", "select 3"), r.sync())
        self.assertEqual(types(r.until_ready()), "1Z")
        r.send(r.bind("never_prepared"), r.execute(), r.sync(), r.close_stmt("s2"), r.msg(b"H"))
        got = r.until_ready()
        self.assertEqual(types(got), "EZ")
        self.assertEqual(sqlstate(got[0][1]), "26000")
        self.assertEqual(r.read_msg()[0], b"3")
        assert_another_client_runs(self, px)
        r.send(r.bind("s2"), r.execute(), r.sync())
        got = r.until_ready()
        self.assertEqual(types(got), "EZ")
        self.assertEqual(sqlstate(got[0][1]), "26000")

    def test_close_first_after_a_login_without_a_server(self):
        px, first = raw_on_one_server(self, "transaction", query_wait_timeout=5)
        self.addCleanup(first.close)
        # The pool knows a fresh server's parameters now: the next login
        # is welcomed with no server.
        r = Raw(px.host, px.port, self.pg.user, self.pg.database)
        self.addCleanup(r.close)
        self.assertEqual(px.show("CLIENTS", port=r.s.getsockname()[1])[0]["state"], "idle")
        r.send(r.close_stmt("s1"), r.msg(b"H"))
        self.assertEqual(r.read_msg()[0], b"3")
        assert_another_client_runs(self, px)
        r.send(r.parse("s1", "select 2"), r.bind("s1"), r.execute(), r.sync())
        got = r.until_ready()
        self.assertEqual(types(got), "12DCZ")


def bind1(r, stmt, value):
    """A Bind of stmt with one parameter, value, as text."""
    v = value.encode()
    return r.msg(b"B", b"\x00" + raw(stmt) + b"\x00" + struct.pack("!HHi", 0, 1, len(v)) + v +
                 struct.pack("!H", 0))


def param_types(body):
    """The parameter type OIDs of a ParameterDescription."""
    n = struct.unpack("!H", body[:2])[0]
    return list(struct.unpack("!%dI" % n, body[2:2 + 4 * n]))


def column_names(body):
    """The column names of a RowDescription."""
    n, p, out = struct.unpack("!H", body[:2])[0], 2, []
    for _ in range(n):
        z = body.index(b"\x00", p)
        out.append(body[p:z].decode())
        p = z + 1 + 18
    return out


def data_row(body):
    """A DataRow's values, as str (None for NULL)."""
    n, p, out = struct.unpack("!H", body[:2])[0], 2, []
    for _ in range(n):
        k = struct.unpack("!i", body[p:p + 4])[0]
        p += 4
        out.append(None if k < 0 else body[p:p + k].decode())
        p += max(k, 0)
    return out


class NoServerCase(pt.PgwharfTestCase):
    """A pgwharf in transaction mode (trust, query_wait_timeout 5 s) and
    the steps of the tests of a prepare answered with no server."""

    POOL = 1

    def setUp(self):
        super().setUp()
        self.px = self.start_pgwharf(settings={
            "pool_mode": "transaction", "auth_type": "trust", "default_pool_size": self.POOL,
            "query_wait_timeout": 5})

    def raw(self, **params):
        r = Raw(self.px.host, self.px.port, self.pg.user, self.pg.database, **params)
        self.addCleanup(r.close)
        return r

    def prepared_once(self, sql, expect="1Z"):
        """Another client prepares sql (taking a server) and leaves."""
        first = self.raw()
        first.send(first.parse("p0", sql), first.sync())
        self.assertEqual(types(first.until_ready()), expect)
        first.close()

    def hold_a_server(self):
        """A client in a transaction block (holding a server); its backend's pid."""
        holder = self.raw()
        holder.send(holder.query("begin; select pg_backend_pid()"))
        got = holder.until_ready()
        self.assertEqual(types(got), "CTDCZ")
        return holder, data_row([b for t, b in got if t == b"D"][0])[0]

    def waiting(self, n):
        pt.wait_pool(self.console_conn(self.px), self.pg.database, self.pg.user,
                     cl_waiting=n)

    def release(self, holder):
        holder.send(holder.query("commit"))
        self.assertEqual(types(holder.until_ready()), "CZ")

    def answered(self, r, name, sql):
        """r prepares sql as name (Parse, Sync): answered at once (the
        caller holds every server)."""
        r.send(r.parse(name, sql), r.sync())
        self.assertEqual(types(r.until_ready()), "1Z")   # base: query_wait_timeout's error

    def assert_waits(self, r, msgs, expect):
        holder, _ = self.hold_a_server()
        r.send(*msgs)
        self.waiting(1)
        self.release(holder)
        got = r.until_ready()
        self.assertEqual(types(got), expect, got)
        return got


class TestAPrepareAnsweredWithNoServer(NoServerCase):
    """A client with no server, between transactions, whose Parse of a
    statement the pool has prepared already is followed by a Sync and
    nothing else (libpq's PQprepare), is answered by pgwharf: no wait for
    a server.  pgbench -M prepared prepares that way from the thread that
    reads its other clients' replies: with every server held by a client
    of that thread inside BEGIN..END, the prepare waited for a server no
    one would free, until query_wait_timeout."""

    KNOWN = "select 40 + 2 as v"

    def known_answered(self, *names, sql=None):
        """sql (KNOWN) prepared once on the pool's server, that server then
        held: the holder and a new client whose Parses of sql as each of
        names were answered with no server."""
        sql = sql or self.KNOWN
        self.prepared_once(sql)
        holder, _ = self.hold_a_server()
        r = self.raw()
        for name in names:
            self.answered(r, name, sql)
        return holder, r

    def statements_of(self, r):
        """SHOW CLIENTS' prepared_statements of client r."""
        row = pt.show(self.console_conn(self.px), "CLIENTS", port=r.s.getsockname()[1])[0]
        return str(row["prepared_statements"])

    def test_a_known_text_is_answered_while_every_server_is_held(self):
        holder, r = self.known_answered("s1", "s2")
        self.assertEqual(self.statements_of(r), "2")
        # Run once a server is free.
        r.send(r.bind("s1"), r.execute(), r.bind("s2"), r.execute(), r.sync())
        self.waiting(1)
        self.release(holder)
        got = r.until_ready()
        self.assertEqual(types(got), "2DC2DCZ")
        self.assertEqual([b for t, b in got if t == b"D"], [b"\x00\x01\x00\x00\x00\x0242"] * 2)
        # The names are the client's: a Parse of one again is PostgreSQL's
        # 42P05, raised on a server.
        r.send(r.parse("s2", self.KNOWN), r.sync())
        got = r.until_ready()
        self.assertEqual(types(got), "EZ")
        self.assertEqual(sqlstate(got[0][1]), "42P05")
        r.send(r.close_stmt("s2"), r.sync())
        self.assertEqual(types(r.until_ready()), "3Z")
        r.send(r.bind("s2"), r.execute(), r.sync())
        got = r.until_ready()
        self.assertEqual(sqlstate(got[0][1]), "26000")

    def test_a_prepare_pipelined_before_its_run_is_answered_first(self):
        # Parse, Sync, then Bind, Execute, Sync in the same write: the
        # prepare is answered, the run waits for the server.
        self.prepared_once(self.KNOWN)
        holder, _ = self.hold_a_server()
        r = self.raw()
        r.send(r.parse("s1", self.KNOWN), r.sync(), r.bind("s1"), r.execute(), r.sync())
        self.assertEqual(types(r.until_ready()), "1Z")
        self.waiting(1)
        self.release(holder)
        self.assertEqual(types(r.until_ready()), "2DCZ")

    def test_a_parse_in_a_transaction_goes_to_its_server(self):
        # A client in a transaction block holds its server: its Parse goes
        # there, and in a failed transaction gets PostgreSQL's 25P02 (not
        # pgwharf's ParseComplete).  That 25P02 says nothing of the text:
        # its prepares are still answered with no server after.
        self.prepared_once(self.KNOWN)
        b = self.raw()
        b.send(b.query("begin"))
        self.assertEqual(types(b.until_ready()), "CZ")
        b.send(b.query("select 1/0"))
        self.assertEqual(types(b.until_ready()), "EZ")
        b.send(b.parse("s9", self.KNOWN), b.sync())
        got = b.until_ready()
        self.assertEqual((types(got), sqlstate(got[0][1])), ("EZ", "25P02"))
        b.send(b.query("rollback"))
        self.assertEqual(types(b.until_ready()), "CZ")
        holder, _ = self.hold_a_server()
        r = self.raw()
        self.answered(r, "s1", self.KNOWN)
        self.release(holder)
        r.send(r.bind("s1"), r.execute(), r.sync())
        self.assertEqual(types(r.until_ready()), "2DCZ")

    def test_a_utility_statement_runs_as_prepared(self):
        # (pgbench's BEGIN and END: nothing of their result is fixed.)
        self.prepared_once("begin")
        self.prepared_once("end")
        holder, _ = self.hold_a_server()
        r = self.raw()
        self.answered(r, "b", "begin")
        self.answered(r, "e", "end")
        self.release(holder)
        r.send(r.bind("b"), r.execute(), r.sync())
        self.assertEqual(r.until_ready()[-1], (b"Z", b"T"))
        r.send(r.bind("e"), r.execute(), r.sync())
        self.assertEqual(r.until_ready()[-1], (b"Z", b"I"))

    def test_described_in_a_failed_transaction_after_its_check_was_skipped(self):
        """A Bind of an unread name after a SET, in a batch that failed
        before it (its check skipped with it): the name stays the
        statement its Parse was answered with.  It moved to the new
        settings' statement, never described, and in a later failed
        transaction its Describe got 25P02 where PostgreSQL describes a
        statement returning no rows (ParameterDescription, NoData).  The
        steps after the Parse run on a direct connection too, and the
        messages are compared."""
        sql = "insert into ps_unread_skip values ($1::int)"
        self.pg.psql("drop table if exists ps_unread_skip; "
                     "create table ps_unread_skip(a int)")
        self.addCleanup(self.pg.psql, "drop table if exists ps_unread_skip", check=False)
        holder, r = self.known_answered("s1", sql=sql)
        self.release(holder)
        steps = [
            ((r.query("set TimeZone = 'Asia/Kathmandu'"),), 1),
            # 34000 at the Execute: the Bind (and its check) skipped.
            ((r.execute("nope"), bind1(r, "s1", "1"), r.sync()), 1),
            ((r.query("begin"), r.query("select 1/0")), 2),
            ((r.describe_stmt("s1"), r.sync()), 1),      # base: EZ, 25P02
            ((r.query("rollback"),), 1),
            ((bind1(r, "s1", "7"), r.execute(), r.sync()), 1),
        ]
        got, want = self.steps_here_and_direct(r, "s1", sql, steps)
        self.assertIn((b"n", b""), want)
        self.assertEqual(got, want)

    def steps_here_and_direct(self, r, name, sql, steps):
        """Run steps ((messages, ReadyForQuerys to read)...) on r, through
        pgwharf, and on a direct connection that Parsed name as sql first:
        the messages of each (an error's SQLSTATE for its body)."""
        def read(ready):
            return [(t, sqlstate(b) if t == b"E" else b) for t, b in ready]
        got = []
        for msgs, n in steps:
            r.send(*msgs)
            for _ in range(n):
                got += read(r.until_ready())
        d = socket.create_connection((self.pg.host, self.pg.port), timeout=20)
        self.addCleanup(d.close)
        ph.sync_login(d, self.pg.user, self.pg.database, self.pg.password)
        d.sendall(r.parse(name, sql) + r.sync())
        ph.read_until_ready(d)
        want = []
        for msgs, n in steps:
            d.sendall(b"".join(msgs))
            for _ in range(n):
                want += read(ph.read_until_ready(d))
        return got, want

    def test_bound_then_deallocated_behind_the_batch(self):
        """Bind and Execute of an unread name, then SQL DEALLOCATE of it as
        a Query, no Sync (0ec8acd rewrites it in the batch): the Bind waits
        for its check, and the Query was rewritten when the check's answer
        came -- then left waiting to be scanned again (its rewrite's return
        is PGW_NOTIFY_MORE's value) for answers the server, with no Sync,
        never sends: the client hung, holding the pool's one server (the
        next client's 57014).  Compared with a direct connection."""
        sql = "select 1 as unread_dealloc"
        holder, r = self.known_answered("s1", sql=sql)
        self.release(holder)
        steps = [
            ((r.bind("s1"), r.execute(), r.query("DEALLOCATE s1")), 1),
            ((r.bind("s1"), r.execute(), r.sync()), 1),          # 26000
        ]
        got, want = self.steps_here_and_direct(r, "s1", sql, steps)
        self.assertIn((b"C", b"DEALLOCATE\x00"), want)
        self.assertEqual(got, want)
        other = self.raw()
        other.send(other.query("select 1"))
        self.assertEqual(types(other.until_ready()), "TDCZ")

    def test_an_sql_deallocate_of_an_unread_name_is_answered(self):
        # A client that never had a server: its SQL DEALLOCATE of a name
        # answered with no server is answered as PostgreSQL answers it (a
        # DEALLOCATE of a protocol-level name drops it), with no server,
        # as its Close is (session 50 d2; fails before: it waited for the
        # held server, query_wait_timeout's error).  The name is gone:
        # PostgreSQL's 26000 at its Bind, and the name may be prepared
        # again.
        holder, r = self.known_answered("s1", "S2")
        r.send(r.query("deallocate s1"))
        got = r.until_ready()
        self.assertEqual(got, [(b"C", b"DEALLOCATE\x00"), (b"Z", b"I")])
        r.send(r.query('deallocate prepare "S2"'))
        self.assertEqual(r.until_ready(), [(b"C", b"DEALLOCATE\x00"), (b"Z", b"I")])
        self.assertEqual(self.statements_of(r), "0")
        self.answered(r, "s1", self.KNOWN)
        r.send(r.close_stmt("s1"), r.sync())          # (a Close: answered so already)
        self.assertEqual(types(r.until_ready()), "3Z")
        # psycopg 3.1's DEALLOCATE (Parsed into the unnamed statement)
        # takes a server, as before: the server deallocates one of
        # pgwharf's in its place.
        self.answered(r, "s3", self.KNOWN)
        self.release(holder)
        r.send(r.parse("", "DEALLOCATE s3"), r.bind(""), r.msg(b"D", b"P\x00"), r.execute(),
               r.sync())
        self.assertEqual(r.until_ready(), [(b"1", b""), (b"2", b""), (b"n", b""),
                                           (b"C", b"DEALLOCATE\x00"), (b"Z", b"I")])
        for name in ("S2", "s3"):
            r.send(r.bind(name), r.execute(), r.sync())
            got = r.until_ready()
            self.assertEqual((types(got), sqlstate(got[0][1])), ("EZ", "26000"))

    # What still takes a server (each passes before too).

    def test_an_unknown_text_waits_for_a_server(self):
        self.prepared_once(self.KNOWN)
        r = self.raw()
        self.assert_waits(r, [r.parse("s1", "select 'not prepared yet'"), r.sync()], "1Z")

    def test_a_text_that_failed_waits_for_the_servers_error(self):
        self.prepared_once("select * from no_such_table_here", expect="EZ")
        r = self.raw()
        got = self.assert_waits(r, [r.parse("s1", "select * from no_such_table_here"),
                                    r.sync()], "EZ")
        self.assertEqual(sqlstate(got[0][1]), "42P01")

    def test_other_parameter_types_wait(self):
        self.prepared_once("select $1 as v")
        r = self.raw()
        typed = r.msg(b"P", b"s1\x00select $1 as v\x00" + struct.pack("!HI", 1, 25))
        self.assert_waits(r, [typed, r.sync()], "1Z")

    def test_a_parse_with_more_in_its_batch_waits(self):
        self.prepared_once(self.KNOWN)
        r = self.raw()
        self.assert_waits(r, [r.parse("s1", self.KNOWN), r.bind("s1"), r.execute(), r.sync()],
                          "12DCZ")

    def test_a_parse_and_describe_waits(self):
        # (asyncpg's prepare; psycopg 3's only in a pipeline, where no Sync
        # follows its Parse.)
        self.prepared_once(self.KNOWN)
        r = self.raw()
        self.assert_waits(r, [r.parse("s1", self.KNOWN), r.describe_stmt("s1"), r.sync()],
                          "1tTZ")

    def test_two_parses_then_a_sync_wait(self):
        self.prepared_once(self.KNOWN)
        r = self.raw()
        self.assert_waits(r, [r.parse("s1", self.KNOWN), r.parse("s2", self.KNOWN), r.sync()],
                          "11Z")

    def test_a_parse_without_its_sync_waits(self):
        # Parse and Flush: the client reads before it sends more.
        self.prepared_once(self.KNOWN)
        r = self.raw()
        holder, _ = self.hold_a_server()
        r.send(r.parse("s1", self.KNOWN), r.msg(b"H"))
        self.waiting(1)
        self.release(holder)
        self.assertEqual(r.read_msg()[0], b"1")
        r.send(r.sync())
        self.assertEqual(types(r.until_ready()), "Z")

    def test_another_reading_of_settings_waits(self):
        # Prepared in the pool's TimeZone, not in Tokyo's.
        self.prepared_once("select '2020-01-02 03:04'::timestamptz::text")
        r = self.raw(TimeZone="Asia/Tokyo")
        self.assert_waits(r, [r.parse("s1", "select '2020-01-02 03:04'::timestamptz::text"),
                              r.sync()], "1Z")

    def test_the_unnamed_statement_waits(self):
        self.prepared_once(self.KNOWN)
        r = self.raw()
        self.assert_waits(r, [r.parse("", self.KNOWN), r.sync()], "1Z")

    def test_a_name_the_client_has_waits_for_the_servers_42P05(self):
        self.prepared_once(self.KNOWN)
        r = self.raw()
        holder, _ = self.hold_a_server()
        self.answered(r, "s1", self.KNOWN)
        self.release(holder)
        got = self.assert_waits(r, [r.parse("s1", self.KNOWN), r.sync()], "EZ")
        self.assertEqual(sqlstate(got[0][1]), "42P05")

    def test_max_prepared_statements_0_takes_a_server(self):
        px = self.start_pgwharf(settings={
            "pool_mode": "transaction", "auth_type": "trust", "default_pool_size": 1,
            "query_wait_timeout": 5, "max_prepared_statements": 0})
        self.px = px
        first = self.raw()
        first.send(first.parse("s1", "select 1"), first.sync())
        self.assertEqual(types(first.until_ready()), "1Z")
        r = self.raw()
        self.assert_waits(r, [r.parse("s2", "select 1"), r.sync()], "1Z")


class TestAnUnreadNameMeetsASchemaChange(NoServerCase):
    """A name answered with no server has no reading yet: its reading is
    the one a server gives at its first Bind or Describe, as if its Parse
    were sent then -- what PostgreSQL gives a statement prepared at that
    moment, even on a server that still has the statement read before the
    tables changed.  The reverted first answer (17cf6cb) gave the name the
    shared statement's old reading: 0A000 "cached plan must not change
    result type" at every Bind after a column was added (review r6), and
    on a server that had the statement its check was never made (r7)."""

    POOL = 2
    SQL = "select t.*, pg_backend_pid()::text as pid from ps_unread t where a = $1"

    def setUp(self):
        super().setUp()
        self.pg.psql("drop table if exists ps_unread; "
                     "create table ps_unread(a int, b int, c int); "
                     "insert into ps_unread values (1, 2, 3)")
        self.addCleanup(self.pg.psql, "drop table if exists ps_unread", check=False)

    def unread_then(self, ddl, on_the_server_that_has_it):
        """A prepares SQL on a server (X) and keeps it; both servers are
        held (X first) while r's prepare is answered; ddl runs; then the
        server that has the statement (X) or the one that never had it is
        let go, and r Describes and runs its name there (twice).  Returns
        (r, A, the replies to r's Describe, to its two runs, the pid of the
        server r ran on)."""
        a = self.raw()
        a.send(a.parse("p0", self.SQL), bind1(a, "p0", "1"), a.execute(), a.sync())
        got = a.until_ready()
        self.assertEqual(types(got), "12DCZ", got)
        x_pid = data_row([b for t, b in got if t == b"D"][0])[-1]
        hx, hx_pid = self.hold_a_server()        # X, the idle one
        hy, hy_pid = self.hold_a_server()        # Y, made for it
        self.assertEqual(hx_pid, x_pid)
        r = self.raw()
        self.answered(r, "s1", self.SQL)
        if ddl:
            self.pg.psql(ddl)
        self.release(hx if on_the_server_that_has_it else hy)
        r.send(r.describe_stmt("s1"), r.sync())
        described = r.until_ready()
        runs = []
        for _ in range(2):
            r.send(bind1(r, "s1", "1"), r.execute(), r.sync())
            runs.append(r.until_ready())
        self.release(hy if on_the_server_that_has_it else hx)
        return r, a, described, runs, (hx_pid if on_the_server_that_has_it else hy_pid)

    def assert_read_now(self, described, runs, pid, columns, row):
        """The Describe and the runs give what PostgreSQL gives a statement
        prepared now: parameter int4, these columns, this row."""
        self.assertEqual(types(described), "tTZ", described)
        self.assertEqual(param_types(described[0][1]), [23])
        self.assertEqual(column_names(described[1][1]), columns + ["pid"])
        for got in runs:
            self.assertEqual(types(got), "2DCZ", got)
            self.assertEqual(data_row([b for t, b in got if t == b"D"][0]), row + [pid])
        # As a new session of PostgreSQL reads the text:
        direct = psycopg2.connect(self.pg.dsn())
        try:
            cur = direct.cursor()
            cur.execute(self.SQL.replace("$1", "1"))
            self.assertEqual([d[0] for d in cur.description], columns + ["pid"])
            self.assertEqual([str(v) for v in cur.fetchone()[:-1]], row)
        finally:
            direct.close()

    def assert_0A000(self, a):
        """A's statement, Parsed before the change: PostgreSQL's 0A000."""
        a.send(bind1(a, "p0", "1"), a.execute(), a.sync())
        got = a.until_ready()
        self.assertEqual([sqlstate(b) for t, b in got if t == b"E"], ["0A000"], got)

    def test_unchanged_on_the_server_that_has_it(self):
        r, a, described, runs, pid = self.unread_then(None, True)
        self.assert_read_now(described, runs, pid, ["a", "b", "c"], ["1", "2", "3"])

    def test_a_column_added_on_the_server_that_has_it(self):
        # r7: the server kept the statement read before the ALTER.
        r, a, described, runs, pid = self.unread_then(
            "alter table ps_unread add column d int default 5", True)
        self.assert_read_now(described, runs, pid, ["a", "b", "c", "d"], ["1", "2", "3", "5"])
        self.assert_0A000(a)

    def test_a_column_added_on_a_server_that_lacks_it(self):
        # r6: the other server still has the statement read before.
        r, a, described, runs, pid = self.unread_then(
            "alter table ps_unread add column d int default 5", False)
        self.assert_read_now(described, runs, pid, ["a", "b", "c", "d"], ["1", "2", "3", "5"])
        self.assert_0A000(a)

    def test_a_column_dropped_on_the_server_that_has_it(self):
        r, a, described, runs, pid = self.unread_then("alter table ps_unread drop column b",
                                                      True)
        self.assert_read_now(described, runs, pid, ["a", "c"], ["1", "3"])
        self.assert_0A000(a)

    def test_a_column_dropped_on_a_server_that_lacks_it(self):
        r, a, described, runs, pid = self.unread_then("alter table ps_unread drop column b",
                                                      False)
        self.assert_read_now(described, runs, pid, ["a", "c"], ["1", "3"])
        self.assert_0A000(a)

    def test_a_column_added_in_a_transaction_rolled_back(self):
        # r reads its name inside its own transaction that adds a column,
        # then rolls it back: the server that has the statement (X) has it
        # read with the column.  A's statement, Parsed before, runs there
        # as PostgreSQL runs it (its table is as it was): the unread
        # name's check left X's reading to be read again before A's Bind
        # fails (it gave A a 0A000 once); r's own reading, with the
        # column, gets PostgreSQL's 0A000.
        a = self.raw()
        a.send(a.parse("p0", self.SQL), bind1(a, "p0", "1"), a.execute(), a.sync())
        got = a.until_ready()
        self.assertEqual(types(got), "12DCZ", got)
        x_pid = data_row([b for t, b in got if t == b"D"][0])[-1]
        hx, _ = self.hold_a_server()
        hy, _ = self.hold_a_server()
        r = self.raw()
        self.answered(r, "s1", self.SQL)
        self.release(hx)
        r.send(r.query("begin; alter table ps_unread add column d int default 5"))
        self.assertEqual(types(r.until_ready()), "CCZ")
        r.send(bind1(r, "s1", "1"), r.execute(), r.sync())
        got = r.until_ready()
        self.assertEqual(types(got), "2DCZ", got)
        self.assertEqual(data_row([b for t, b in got if t == b"D"][0]), ["1", "2", "3", "5", x_pid])
        r.send(r.query("rollback"))
        self.assertEqual(types(r.until_ready()), "CZ")
        for _ in range(2):
            a.send(bind1(a, "p0", "1"), a.execute(), a.sync())
            got = a.until_ready()
            self.assertEqual(types(got), "2DCZ", got)
            self.assertEqual(data_row([b for t, b in got if t == b"D"][0]), ["1", "2", "3", x_pid])
        r.send(bind1(r, "s1", "1"), r.execute(), r.sync())
        got = r.until_ready()
        self.assertEqual([sqlstate(b) for t, b in got if t == b"E"], ["0A000"], got)
        self.release(hy)

    def test_psycopg3_prepare_is_answered_and_read_at_its_first_execute(self):
        # psycopg 3 outside a pipeline prepares with PQsendPrepare (a Parse
        # and a Sync, no Describe): answered with no server while both are
        # held (its name counted in SHOW CLIENTS while its execute waits),
        # then read at that execute, after the ALTER, as PostgreSQL reads a
        # statement prepared then; A's, Parsed before, gets 0A000.
        import psycopg
        sql = "select * from ps_unread where a = %s"
        a = psycopg.connect(self.px.dsn(), autocommit=True, prepare_threshold=0)
        self.addCleanup(a.close)
        self.assertEqual(a.execute(sql, [1], prepare=True).fetchall(), [(1, 2, 3)])
        hx, _ = self.hold_a_server()
        hy, _ = self.hold_a_server()
        b = psycopg.connect(self.px.dsn(), autocommit=True, prepare_threshold=0)
        self.addCleanup(b.close)

        def run():
            cur = b.execute(sql, [1], prepare=True)
            return [d.name for d in cur.description], cur.fetchall()
        runner = pt.Background(run)
        self.waiting(1)
        console = self.console_conn(self.px)
        counts = [str(r["prepared_statements"]) for r in pt.show(console, "CLIENTS")
                  if r["state"] == "waiting"]
        self.assertEqual(counts, ["1"])          # base: 0, its Parse waits
        self.pg.psql("alter table ps_unread add column d int default 5")
        self.release(hx)
        runner.join(20)
        self.assertIsNone(runner.error)
        self.assertEqual(runner.result, (["a", "b", "c", "d"], [(1, 2, 3, 5)]))
        with self.assertRaises(psycopg.errors.FeatureNotSupported):
            a.execute(sql, [1], prepare=True)
        self.release(hy)

    def test_with_a_server_idle_the_parse_goes_there(self):
        # (Passes before too.)  No wait to spare: the Parse is read there
        # and then, as before, and its name meets a later ALTER as
        # PostgreSQL's statement Parsed before it does (0A000).
        a = self.raw()
        a.send(a.parse("p0", self.SQL), bind1(a, "p0", "1"), a.execute(), a.sync())
        self.assertEqual(types(a.until_ready()), "12DCZ")
        r = self.raw()
        r.send(r.parse("s1", self.SQL), r.sync())
        self.assertEqual(types(r.until_ready()), "1Z")
        self.pg.psql("alter table ps_unread add column d int default 5")
        r.send(bind1(r, "s1", "1"), r.execute(), r.sync())
        got = r.until_ready()
        self.assertEqual([sqlstate(b) for t, b in got if t == b"E"], ["0A000"], got)

    def test_a_table_dropped_fails_at_the_describe_and_the_bind(self):
        # The text fails when a server reads it for the name: PostgreSQL's
        # 42P01 in place of the Describe or the Bind (where a statement
        # Parsed before the DROP gets it from PostgreSQL too), the rest up
        # to the Sync skipped; the session goes on, and the name is read
        # again at its next use: once the table is back, as it is then.
        r, a, described, runs, pid = self.unread_then("drop table ps_unread", True)
        self.assertEqual((types(described), sqlstate(described[0][1])), ("EZ", "42P01"))
        for got in runs:
            self.assertEqual((types(got), sqlstate(got[0][1])), ("EZ", "42P01"))
        r.send(r.query("select 1"))
        self.assertEqual(types(r.until_ready()), "TDCZ")
        self.pg.psql("create table ps_unread(a int, z text); insert into ps_unread values (1, 'z')")
        r.send(r.describe_stmt("s1"), bind1(r, "s1", "1"), r.execute(), r.sync())
        got = r.until_ready()
        self.assertEqual(types(got), "tT2DCZ", got)
        self.assertEqual(column_names(got[1][1]), ["a", "z", "pid"])
        self.assertEqual(data_row([b for t, b in got if t == b"D"][0])[:2], ["1", "z"])


class TestSqlDeallocateOfAClientStatement(pt.PgwharfTestCase):
    """Drivers that cache statements drop the oldest with SQL DEALLOCATE:
    PHP's PDO as a simple Query, psycopg 3.1 in the extended protocol
    (Parse, Bind, Describe, Execute, Sync).  The client's name is one
    pgwharf keeps (servers have PGW_<n>), so the server answered 26000 and
    the driver failed; psycopg raised on every query past prepared_max."""

    def run_at(self, at, steps):
        """Log in to at (PostgreSQL or pgwharf) and send steps ((messages,
        ReadyForQuerys to read)...): every message read (an error's
        SQLSTATE for its body)."""
        sock = socket.create_connection((at.host, at.port), timeout=20)
        self.addCleanup(sock.close)
        ph.sync_login(sock, self.pg.user, self.pg.database, self.pg.password)
        out = []
        for msgs, n in steps:
            sock.sendall(b"".join(msgs))
            for _ in range(n):
                for t, body in ph.read_until_ready(sock):
                    out.append((t, sqlstate(body) if t == b"E" else body))
        return out

    def with_s1(self, **settings):
        """A client of a pool of one (transaction mode) that prepared s1."""
        px, r = raw_on_one_server(self, "transaction", **settings)
        self.addCleanup(r.close)
        r.send(r.parse("s1", "select 1"), r.sync())
        self.assertEqual(types(r.until_ready()), "1Z")
        return px, r

    def fail_a_transaction(self, r):
        r.send(r.query("begin"))
        r.until_ready()
        r.send(r.query("select 1/0"))
        r.until_ready()

    def assert_s3_runs(self, r):
        r.send(r.bind("s3"), r.execute(), r.sync())
        self.assertEqual(types(r.until_ready()), "2DCZ")

    def test_a_simple_query(self):
        px, r = raw_on_one_server(self, "transaction")
        self.addCleanup(r.close)
        r.send(r.parse("s1", "select 1"), r.parse("s2", "select 2"), r.parse("s3", "select 3"),
               r.sync())
        self.assertEqual(types(r.until_ready()), "111Z")
        r.send(r.query("DEALLOCATE s1"))
        msgs = r.until_ready()
        self.assertEqual(msgs, [(b"C", b"DEALLOCATE\x00"), (b"Z", b"I")])
        r.send(r.bind("s1"), r.execute(), r.sync())
        msgs = r.until_ready()
        self.assertEqual((types(msgs), sqlstate(msgs[0][1])), ("EZ", "26000"), msgs)
        # the name is free again
        r.send(r.parse("s1", "select 11"), r.bind("s1"), r.execute(), r.sync())
        msgs = r.until_ready()
        self.assertEqual(types(msgs), "12DCZ", msgs)
        self.assertEqual(msgs[2][1][-2:], b"11")
        # read as PostgreSQL reads it, inside a transaction too
        r.send(r.query("begin"))
        r.until_ready()
        r.send(r.query('  deallocate PREPARE "s2" ;'))
        self.assertEqual(r.until_ready(), [(b"C", b"DEALLOCATE\x00"), (b"Z", b"T")])
        r.send(r.query("commit"))
        r.until_ready()
        r.send(r.bind("s2"), r.execute(), r.sync())
        self.assertEqual(sqlstate(r.until_ready()[0][1]), "26000")
        # in a failed transaction the server refuses it and the name stays
        self.fail_a_transaction(r)
        r.send(r.query("DEALLOCATE s3"))
        msgs = r.until_ready()
        self.assertEqual((types(msgs), sqlstate(msgs[0][1])), ("EZ", "25P02"), msgs)
        r.send(r.query("rollback"))
        r.until_ready()
        self.assert_s3_runs(r)
        # a name the client does not have: the server's 26000
        r.send(r.query("DEALLOCATE nosuch"))
        msgs = r.until_ready()
        self.assertEqual((types(msgs), sqlstate(msgs[0][1])), ("EZ", "26000"), msgs)

    def test_the_extended_protocol(self):
        px, r = raw_on_one_server(self, "transaction")
        self.addCleanup(r.close)
        describe_portal = r.msg(b"D", b"P\x00")
        r.send(r.parse("s1", "select 1"), r.parse("s3", "select 3"), r.sync())
        self.assertEqual(types(r.until_ready()), "11Z")
        r.send(r.parse("", "DEALLOCATE S1"), r.bind(""), describe_portal, r.execute(), r.sync())
        msgs = r.until_ready()
        self.assertEqual(types(msgs), "12nCZ", msgs)
        self.assertEqual(msgs[3][1], b"DEALLOCATE\x00")      # PostgreSQL's tag
        r.send(r.bind("s1"), r.execute(), r.sync())
        self.assertEqual(sqlstate(r.until_ready()[0][1]), "26000")
        # refused in a failed transaction (25P02 at the Parse), the name kept
        self.fail_a_transaction(r)
        r.send(r.parse("", "DEALLOCATE s3"), r.bind(""), describe_portal, r.execute(), r.sync())
        msgs = r.until_ready()
        self.assertEqual((types(msgs), sqlstate(msgs[0][1])), ("EZ", "25P02"), msgs)
        r.send(r.query("rollback"))
        r.until_ready()
        self.assert_s3_runs(r)
        # skipped after an error earlier in its batch: the name kept
        r.send(r.parse("", "select 1/0"), r.bind(""), r.execute(),
               r.parse("", "DEALLOCATE s3"), r.bind(""), r.execute(), r.sync())
        msgs = r.until_ready()
        self.assertEqual(types(msgs), "1EZ", msgs)        # 1/0 fails at its Bind (planning)
        self.assert_s3_runs(r)

    def test_an_idle_client_keeps_no_server(self):
        # Answered by pgwharf, the DEALLOCATE took a server and kept it
        # linked to the idle client: with a pool of one the next client
        # waited until query_wait_timeout.
        px, r = self.with_s1(query_wait_timeout=3)
        r.send(r.query("DEALLOCATE s1"))
        self.assertEqual(types(r.until_ready()), "CZ")
        assert_another_client_runs(self, px)
        # behind a query that takes the server: given back at its end
        r.send(r.parse("s2", "select 2"), r.sync())
        r.until_ready()
        r.send(r.query("select pg_sleep(0.2)"), r.query("DEALLOCATE s2"))
        self.assertEqual(types(r.until_ready()), "TDCZ")
        self.assertEqual(r.until_ready(), [(b"C", b"DEALLOCATE\x00"), (b"Z", b"I")])
        assert_another_client_runs(self, px)

    def test_disable_pqexec_still_refuses_it(self):
        # Answered before a server is taken, it still gets the checks every
        # simple Query gets.
        px, r = self.with_s1(disable_pqexec=1)
        r.send(r.query("DEALLOCATE s1"))
        t, body = r.read_msg()
        self.assertEqual((t, sqlstate(body)), (b"E", "08P01"))
        self.assertIn(b"PQexec disallowed", body)

    def test_behind_an_open_batch_or_a_pending_close(self):
        px, r = raw_on_one_server(self, "transaction", query_wait_timeout=3)
        self.addCleanup(r.close)
        r.send(r.parse("s1", "select 1"), r.parse("s3", "select 3"), r.sync())
        self.assertEqual(types(r.until_ready()), "11Z")
        # An extended batch with no Sync, then the Query: its answers come
        # with the Query's (it waited for them for ever).
        r.send(r.parse("", "select 5"), r.bind(""), r.execute(), r.query("DEALLOCATE s1"))
        self.assertEqual(types(r.until_ready())[:4], "12DC")
        # A Close the server skips (an earlier error), then DEALLOCATE of
        # the same name: the Close does not count, the DEALLOCATE does.
        r.send(r.parse("", "select 1/0"), r.bind(""), r.execute(), r.close_stmt("s3"),
               r.sync(), r.query("DEALLOCATE s3"))
        self.assertEqual(types(r.until_ready()), "1EZ")
        self.assertEqual(types(r.until_ready()), "CZ")
        r.send(r.bind("s3"), r.execute(), r.sync())
        self.assertEqual(sqlstate(r.until_ready()[0][1]), "26000")
        # pipelined through a failed transaction, in the extended protocol
        r.send(r.parse("s3", "select 3"), r.sync())
        r.until_ready()
        dealloc = (r.parse("", "DEALLOCATE s3"), r.bind(""), r.execute(), r.sync())
        r.send(r.query("begin"), r.query("select 1/0"), *dealloc, r.query("rollback"), *dealloc)
        got = [types(r.until_ready()) for _ in range(5)]
        self.assertEqual(got, ["CZ", "EZ", "EZ", "CZ", "12CZ"])
        r.send(r.bind("s3"), r.execute(), r.sync())
        self.assertEqual(sqlstate(r.until_ready()[0][1]), "26000")

    def test_behind_an_open_batch_it_runs_as_in_postgresql(self):
        """A Query after Bind and Execute with no Sync: PostgreSQL runs it
        after them (it ends their implicit transaction), or skips it after
        an error among them.  pgwharf sent it on as it was: 26000, and s1
        stayed the client's.  Each step on a direct connection and through
        pgwharf, their messages compared."""
        px, r = raw_on_one_server(self, "transaction")
        r.close()
        dealloc = (r.parse("s1", "select 1"), r.parse("s2", "select 2"), r.sync())
        steps = [
            (dealloc, 1),
            ((r.bind("s1"), r.execute(), r.query("DEALLOCATE s1")), 1),
            ((r.sync(),), 1),
            ((r.bind("s1"), r.execute(), r.sync()), 1),
            # skipped after an error in the batch: s2 stays
            ((r.bind("nope"), r.execute(), r.query("deallocate prepare S2"), r.sync()), 1),
            ((r.bind("s2"), r.execute(), r.sync()), 1),
            # in a transaction, among other statements
            ((r.query("begin"), r.bind("s2"), r.execute(),
              r.query("select 3; DEALLOCATE s2; select 4")), 2),
            ((r.query("commit"), r.bind("s2"), r.execute(), r.sync()), 2),
            ((r.parse("s2", "select 5"), r.bind("s2"), r.execute(), r.sync()), 1),
        ]

        want = self.run_at(self.pg, steps)
        self.assertIn((b"C", b"DEALLOCATE\x00"), want)
        self.assertEqual(self.run_at(px, steps), want)

    def test_a_statement_the_client_named_as_pgwharfs_own_stays(self):
        """pgwharf deallocates a statement of its own in place of the
        client's (a Close and a Parse of it go ahead): its name was the
        fixed PGW_DEALLOC, which a client may PREPARE in SQL too -- that
        statement was closed under it, and its EXECUTE got 26000 where
        PostgreSQL runs it.  As a simple Query and as psycopg 3.1 sends
        it, in a transaction block (one server), each step on a direct
        connection and through pgwharf, their messages compared."""
        px, r = raw_on_one_server(self, "transaction")
        r.close()
        dealloc_ext = (r.parse("", "DEALLOCATE s1"), r.bind(""), r.execute(), r.sync())
        # (A Query of DEALLOCATE alone is answered with no server.)
        dealloc_query = (r.query("select 1; DEALLOCATE s1"),)
        for how, dealloc in (("query", dealloc_query), ("extended", dealloc_ext)):
            with self.subTest(how=how):
                steps = [
                    ((r.query("begin"),), 1),
                    ((r.query('prepare "PGW_DEALLOC" as select 7'),), 1),
                    ((r.parse("s1", "select 1"), r.sync()), 1),
                    (dealloc, 1),
                    ((r.query('execute "PGW_DEALLOC"'),), 1),
                    ((r.query("commit"),), 1),
                    ((r.query('deallocate "PGW_DEALLOC"'),), 1),
                ]
                want = self.run_at(self.pg, steps)
                self.assertIn((b"D", b"\x00\x01\x00\x00\x00\x017"), want)
                self.maxDiff = None
                self.assertEqual(self.run_at(px, steps), want)   # base: 26000

    def test_an_error_after_the_rewritten_statement_has_the_clients_position(self):
        """Among other statements of a Query the DEALLOCATE is rewritten to
        one of pgwharf's own name, longer than the client's: an error in a
        statement after it had its Position (P) counted in the rewritten
        text (33 characters further on with s1, 10 before the name was
        PGW_DEALLOC_ and 16 hex digits), not in the client's, where psql
        puts its caret.  Each step on a direct connection and through
        pgwharf, the errors' fields compared (a name of UTF-8 characters
        too: PostgreSQL counts characters)."""
        px, r = raw_on_one_server(self, "transaction")
        r.close()
        def run(at, name):
            sock = socket.create_connection((at.host, at.port), timeout=20)
            self.addCleanup(sock.close)
            ph.sync_login(sock, self.pg.user, self.pg.database, self.pg.password)
            out = []
            q = name.replace('"', '""')
            for sql in ('select 1; DEALLOCATE "%s"; select nocol' % q,
                        'select nocol; DEALLOCATE "%s"; select 1' % q,
                        'DEALLOCATE "%s"; select 1;\nselect 2 +' % q):
                sock.sendall(ph.parse_msg(name, "select 1") + ph.msg(b"S"))
                ph.read_until_ready(sock)
                sock.sendall(ph.query_msg(sql))
                for t, body in ph.read_until_ready(sock):
                    if t == b"E":
                        f = ph.parse_fields(body)
                        out.append((t, f["C"], f.get("P")))
                    else:
                        out.append((t, body))
            return out
        for name in ("s1", "caf\u00e9 \u00e0 1"):
            with self.subTest(name=name):
                want = run(self.pg, name)
                self.assertEqual([m[2] for m in want if m[0] == b"E"],
                                 ["35", "8", "38"] if name == "s1" else ["41", "8", "44"])
                self.maxDiff = None
                self.assertEqual(run(px, name), want)   # base: 62 and 65 for s1

    def test_two_rewritten_queries_pipelined_have_their_own_positions(self):
        """As above, two such Queries sent together, each behind an
        extended batch with no Sync (so both are rewritten before the first
        is answered), of names of different lengths: each error's Position
        is moved by its own Query's (ps_queue.pos), in either order.  Each
        step on a direct connection and through pgwharf, the errors'
        fields compared."""
        px, r = raw_on_one_server(self, "transaction")
        r.close()
        long_name = "caf\u00e9 \u00e0 1"
        def run(at, names):
            sock = socket.create_connection((at.host, at.port), timeout=20)
            self.addCleanup(sock.close)
            ph.sync_login(sock, self.pg.user, self.pg.database, self.pg.password)
            sock.sendall(b"".join(r.parse(n, "select 1") for n in names) + r.sync())
            ph.read_until_ready(sock)
            batch = b""
            for n in names:
                batch += (r.parse("", "select 2") + r.bind("") + r.execute() +
                          r.query('select 1; DEALLOCATE "%s"; select nocol'
                                  % n.replace('"', '""')))
            sock.sendall(batch)
            out = []
            for _ in names:
                for t, body in ph.read_until_ready(sock):
                    if t == b"E":
                        f = ph.parse_fields(body)
                        out.append((t, f["C"], f.get("P")))
                    else:
                        out.append((t, body))
            return out
        for names in (("s1", long_name), (long_name, "s1")):
            with self.subTest(names=names):
                want = run(self.pg, names)
                self.assertEqual(want.count((b"C", b"DEALLOCATE\x00")), 2)
                self.assertEqual([m[2] for m in want if m[0] == b"E"],
                                 ["35", "41"] if names[0] == "s1" else ["41", "35"])
                self.maxDiff = None
                self.assertEqual(run(px, names), want)

    def test_behind_an_open_batch_after_a_parse_not_yet_answered(self):
        """As above, with a Parse of the name (or a Close) before a Sync
        ahead of the batch, not yet answered: the DEALLOCATE waits for its
        answer, then is rewritten in the batch.  It went to the server as
        it was: 26000 where PostgreSQL deallocates s3, and s3 stayed the
        client's."""
        px, r = raw_on_one_server(self, "transaction")
        r.close()
        steps = [
            ((r.parse("s1", "select 1"), r.parse("s2", "select 2"), r.sync()), 1),
            ((r.parse("s3", "select 3"), r.sync(), r.bind("s2"), r.execute(),
              r.query("DEALLOCATE s3")), 2),
            ((r.bind("s3"), r.execute(), r.sync()), 1),            # 26000
            ((r.close_stmt("s1"), r.sync(), r.bind("s2"), r.execute(),
              r.query("DEALLOCATE s1")), 2),                     # 26000
            ((r.parse("s3", "select 33"), r.sync(), r.bind("s2"), r.execute(),
              r.query("select 1/0; DEALLOCATE s3")), 2),         # s3 stays
            ((r.bind("s3"), r.execute(), r.sync()), 1),
        ]

        want = self.run_at(self.pg, steps)
        self.assertEqual(want.count((b"C", b"DEALLOCATE\x00")), 1)
        self.assertEqual(self.run_at(px, steps), want)

    def test_behind_an_open_batch_after_a_deallocate_all(self):
        """A DEALLOCATE ALL or DISCARD ALL not yet answered -- ahead of the
        batch or in it -- then the batch and a Query's DEALLOCATE of a name
        that statement drops: PostgreSQL answers 26000 (the name is gone).
        The DEALLOCATE was rewritten in the batch all the same, answered
        DEALLOCATE (0ec8acd; review r5); so was one Parsed as the unnamed
        statement (older).  Each step on a direct connection and through
        pgwharf, their messages compared."""
        px, r = raw_on_one_server(self, "transaction")
        r.close()
        batch = (r.parse("", "select 2"), r.bind(""), r.execute(), r.query("DEALLOCATE s1"))
        again = [((r.parse("s1", "select 11"), r.sync()), 1),
                 ((r.bind("s1"), r.execute(), r.sync()), 1)]
        cases = {
            "a query ahead": [((r.query("DEALLOCATE ALL"),) + batch, 2)],
            "discard all ahead": [((r.query("DISCARD ALL"),) + batch, 2)],
            "a sync ahead": [((r.parse("", "DEALLOCATE ALL"), r.bind(""), r.execute(),
                               r.sync()) + batch, 2)],
            "in the batch": [((r.parse("", "DEALLOCATE ALL"), r.bind(""), r.execute(),
                               r.query("DEALLOCATE s1")), 1)],
            # the DEALLOCATE Parsed as the unnamed statement (dealloc_parse;
            # older than 0ec8acd)
            "parsed, a query ahead": [((r.query("DEALLOCATE ALL"),
                                        r.parse("", "DEALLOCATE s1"), r.bind(""), r.execute(),
                                        r.sync()), 2)],
            "parsed, in the batch": [((r.parse("", "DEALLOCATE ALL"), r.bind(""), r.execute(),
                                       r.parse("", "DEALLOCATE s1"), r.bind(""), r.execute(),
                                       r.sync()), 1)],
            # failed: the name stays, and the DEALLOCATE ahead of the batch
            # waited for that answer deallocates it, as in PostgreSQL
            "failed ahead": [((r.query("begin"),), 1),
                             ((r.query("select 1/0"), r.query("DEALLOCATE ALL"),
                               r.query("rollback")) + batch, 4)],
            # a failed transaction as last answered, a ROLLBACK ahead of the
            # batch: PostgreSQL deallocates (it was sent as it was: 26000)
            "rollback ahead": [((r.query("begin"),), 1), ((r.query("select 1/0"),), 1),
                               ((r.query("rollback"),) + batch, 2)],
        }

        for name, middle in cases.items():
            with self.subTest(case=name):
                steps = [((r.parse("s1", "select 1"), r.sync()), 1)] + middle + again
                want = self.run_at(self.pg, steps)
                self.assertIn((b"C", b"DEALLOCATE\x00")
                              if name in ("failed ahead", "rollback ahead")
                              else (b"E", "26000"), want)
                self.assertEqual(self.run_at(px, steps), want)   # base: DEALLOCATE, no 26000

    def test_among_other_statements_of_a_query(self):
        # psqlODBC with autocommit off drops a statement with "SAVEPOINT
        # _per_query_svp_;DEALLOCATE \"_PLAN0x...\";RELEASE _per_query_svp_":
        # the server answered 26000, the transaction failed, the name stayed
        # (the next Parse of it 42P05, a Bind ran the old statement).
        px, r = raw_on_one_server(self, "transaction")
        self.addCleanup(r.close)
        r.send(r.parse("_PLAN0x1", "select 1"), r.parse("s3", "select 3"), r.sync())
        self.assertEqual(types(r.until_ready()), "11Z")
        r.send(r.query("begin"))
        r.until_ready()
        r.send(r.query('SAVEPOINT _per_query_svp_;DEALLOCATE "_PLAN0x1";'
                       'RELEASE _per_query_svp_'))
        self.assertEqual(r.until_ready(), [(b"C", b"SAVEPOINT\x00"), (b"C", b"DEALLOCATE\x00"),
                                           (b"C", b"RELEASE\x00"), (b"Z", b"T")])
        # the name is free: prepared again, pipelined with no wait
        r.send(r.parse("_PLAN0x1", "select 11"), r.bind("_PLAN0x1"), r.execute(), r.sync())
        msgs = r.until_ready()
        self.assertEqual(types(msgs), "12DCZ", msgs)
        self.assertEqual(msgs[2][1][-2:], b"11")
        r.send(r.query("commit"))
        self.assertEqual(types(r.until_ready()), "CZ")
        # A statement before it fails: it never ran, the name stays
        # (PostgreSQL's); one after it fails: it ran, the name is gone.
        r.send(r.query("select 1/0; deallocate s3"))
        msgs = r.until_ready()
        self.assertEqual((types(msgs), sqlstate(msgs[0][1])), ("EZ", "22012"), msgs)
        self.assert_s3_runs(r)
        r.send(r.query("/* x */ ;; deallocate prepare S3 ; select 1/0"))
        msgs = r.until_ready()
        self.assertEqual(types(msgs), "CEZ", msgs)
        self.assertEqual(msgs[0][1], b"DEALLOCATE\x00")
        r.send(r.bind("s3"), r.execute(), r.sync())
        self.assertEqual(sqlstate(r.until_ready()[0][1]), "26000")
        # in a literal it is no statement; a name the client does not have
        # is the server's 26000
        r.send(r.parse("s4", "select 4"), r.sync())
        r.until_ready()
        r.send(r.query("select 'x;deallocate s4'; select $$;deallocate s4;$$"))
        self.assertEqual(types(r.until_ready()), "TDCTDCZ")
        r.send(r.bind("s4"), r.execute(), r.sync())
        self.assertEqual(types(r.until_ready()), "2DCZ")
        r.send(r.query("select 1; deallocate nosuch"))
        msgs = r.until_ready()
        self.assertEqual(types(msgs), "TDCEZ", msgs)
        self.assertEqual(sqlstate(msgs[3][1]), "26000")
        # An E'' literal goes on across a newline into the next quoted part,
        # \' escaping there too: one literal, never rewritten.
        r.send(r.parse("s5", "select 5"), r.sync())
        r.until_ready()
        r.send(r.query("select E'a'\n'\\';DEALLOCATE s5;--'"))
        msgs = r.until_ready()
        self.assertEqual(types(msgs), "TDCZ", msgs)
        self.assertTrue(msgs[1][1].endswith(b"a';DEALLOCATE s5;--"), msgs)
        # A lone CR ends a -- comment: two statements before the DEALLOCATE,
        # the second fails, so it never runs and s5 stays.
        r.send(r.query("--c\rselect 1\n;--c\rselect 1/0\n;DEALLOCATE s5"))
        msgs = r.until_ready()
        self.assertEqual(types(msgs), "TDCEZ", msgs)
        r.send(r.bind("s5"), r.execute(), r.sync())
        self.assertEqual(types(r.until_ready()), "2DCZ")
        # Behind a DEALLOCATE ALL (which drops everything) it is the
        # server's, which names the client's statement.
        r.send(r.query("DEALLOCATE ALL; DEALLOCATE s5"))
        msgs = r.until_ready()
        self.assertEqual(types(msgs), "CEZ", msgs)
        self.assertIn(b'"s5"', msgs[1][1])
        # with standard_conforming_strings off \' escapes a quote: this is
        # one literal, never rewritten
        r.send(r.query("set standard_conforming_strings = off"))
        r.until_ready()
        lit = "a\\'; deallocate s4; select '"
        r.send(r.query("select '" + lit))
        msgs = r.until_ready()
        rows = [m for m in msgs if m[0] == b"D"]
        self.assertEqual(len(rows), 1, msgs)
        self.assertTrue(rows[0][1].endswith(b"a'; deallocate s4; select "), rows)

    def test_a_long_deallocate_among_other_statements(self):
        """A DEALLOCATE of 64 bytes or more among other statements (a
        name of 50 to 63 characters, white space, a comment): taken for a
        DEALLOCATE ALL (DEALLOCATE holds the letters ALL), it was left to
        the server, which has no statement of the client's name: 26000,
        the statements after it skipped, the name still the client's.
        Now rewritten as a short one is; DEALLOCATE ALL and DISCARD ALL
        written long are still the server's.  Each step on a direct
        connection and through pgwharf, the replies compared."""
        px, r = raw_on_one_server(self, "transaction")
        r.close()
        def run(at):
            sock = socket.create_connection((at.host, at.port), timeout=20)
            self.addCleanup(sock.close)
            ph.sync_login(sock, self.pg.user, self.pg.database, self.pg.password)
            out = []
            for n, sql in (("c" * 50, 'select 1; DEALLOCATE "%s"'),
                           ("c" * 60, 'DEALLOCATE "%s"; select 1'),
                           ("c" * 63, 'select 1;DEALLOCATE PREPARE "%s";select 2'),
                           ("s1", "select 1; DEALLOCATE    /* a comment, long enough "
                                  "to pass 64 bytes */   %s"),
                           ("s3", "select 1; DEALLOCATE /* a comment to pass 64 bytes "
                                  "here */ ALL; select '%s'")):
                sock.sendall(r.parse(n, "select 1") + r.sync())
                ph.read_until_ready(sock)
                sock.sendall(r.query(sql % n))
                out.append([(t, sqlstate(b) if t == b"E" else b)
                            for t, b in ph.read_until_ready(sock)])
                # the name is free again (or, after an error, still there)
                sock.sendall(r.parse(n, "select 2") + r.sync())
                out.append([(t, sqlstate(b) if t == b"E" else b)
                            for t, b in ph.read_until_ready(sock)])
            return out
        want = run(self.pg)
        self.assertNotIn(b"E", [t for m in want for t, _ in m], want)
        self.maxDiff = None
        self.assertEqual(run(px), want)

    def test_a_deallocate_beside_a_name_that_holds_a_keyword(self):
        """A DEALLOCATE among other statements where a name holds the
        letters of RULE, ATOMIC or STANDARD_CONFORMING_STRINGS (a table
        "rules", a column atomic_count), or, in a statement of 64 bytes or
        more with the word ALL (UNION ALL), of DISCARD or DEALLOCATE (a
        column discarded): a substring match took the text for one where a
        ';' may stand inside a statement, or for a DISCARD ALL, and left it
        to the server, which has no statement of the client's name: 26000,
        the statements after it skipped, the name still the client's.  Now
        only a word of its own counts.  Each step on a direct connection
        and through pgwharf, the replies compared."""
        px, r = raw_on_one_server(self, "transaction")
        r.close()
        def run(at):
            sock = socket.create_connection((at.host, at.port), timeout=20)
            self.addCleanup(sock.close)
            ph.sync_login(sock, self.pg.user, self.pg.database, self.pg.password)
            out = []
            for sql in ("select 1 as rules; DEALLOCATE s1; select 2",
                        "select 1 as atomic_count; DEALLOCATE s1",
                        "DEALLOCATE s1; select 1 as standard_conforming_strings_seen",
                        "select discarded from (select 1 as discarded union all "
                        "select 2) as t order by 1; DEALLOCATE s1; select 3",
                        "select 1 as deallocated union all select 2 as deallocated "
                        "order by 1; DEALLOCATE s1"):
                sock.sendall(r.parse("s1", "select 1") + r.sync())
                ph.read_until_ready(sock)
                sock.sendall(r.query(sql))
                out.append([(t, sqlstate(b) if t == b"E" else b)
                            for t, b in ph.read_until_ready(sock)])
                # the name is free again (or, after an error, still there)
                sock.sendall(r.parse("s1", "select 2") + r.sync())
                out.append([(t, sqlstate(b) if t == b"E" else b)
                            for t, b in ph.read_until_ready(sock)])
            return out
        want = run(self.pg)
        self.assertNotIn(b"E", [t for m in want for t, _ in m], want)
        self.maxDiff = None
        self.assertEqual(run(px), want)

    def test_psqlodbc_with_autocommit_off(self):
        # The driver itself (UseServerSidePrepare=1, its default): each new
        # text on a statement handle drops the handle's plan first.
        import glob
        import pyodbc
        driver = glob.glob("/usr/lib/*/odbc/psqlodbcw.so")
        self.assertTrue(driver, "psqlODBC (odbc-postgresql) is not installed")
        px = self.start_pgwharf(settings={"pool_mode": "transaction", "default_pool_size": 1})
        cs = ("Driver=%s;Server=%s;Port=%d;Database=%s;Uid=%s;Pwd=%s;SSLMode=disable"
              % (driver[0], px.host, px.port, self.pg.database, self.pg.user, self.pg.password))
        conn = pyodbc.connect(cs, autocommit=False)
        self.addCleanup(conn.close)
        cur = conn.cursor()
        got = []
        for q, a in (("select ?::int + 1", 1), ("select ?::text || 'x'", "a"),
                     ("select ?::int * 2", 5), ("select ?::int + 1", 7)):
            cur.execute(q, a)
            got.append(cur.fetchall()[0][0])
        conn.commit()
        self.assertEqual(got, [2, "ax", 10, 8])

    def test_psycopg_past_prepared_max(self):
        import psycopg
        px = self.start_pgwharf(settings={"pool_mode": "transaction", "default_pool_size": 2})
        with psycopg.connect(px.dsn(), autocommit=True, prepare_threshold=0) as conn:
            conn.prepared_max = 2
            for rnd in range(3):
                for i in range(5):
                    got = conn.execute("select %%s::int + %d" % i, (rnd,)).fetchone()[0]
                    self.assertEqual(got, rnd + i)
            with conn.transaction():
                for i in range(5, 9):
                    self.assertEqual(conn.execute("select %%s::int * %d" % i, (2,))
                                     .fetchone()[0], 2 * i)

    def test_psycopg_clients_evicting_on_a_small_pool(self):
        # Four psycopg 3.1 connections (default prepare_threshold: prepared
        # at the sixth run) taking 60 texts through caches of 20, twice, on
        # two servers that keep 50: each eviction is a DEALLOCATE of a name
        # the others' statements share on the servers.
        import psycopg
        px = self.start_pgwharf(settings={"pool_mode": "transaction", "default_pool_size": 2,
                                          "max_prepared_statements": 50})
        errors = []

        def client(k):
            try:
                with psycopg.connect(px.dsn(), autocommit=k % 2 == 0) as conn:
                    conn.prepared_max = 20
                    for i in list(range(60)) * 2:    # the second pass prepares again
                        for rnd in range(8):
                            got = conn.execute("select %%s::int + %d" % i, (rnd,)).fetchone()[0]
                            if got != rnd + i:
                                raise AssertionError("client %d: %r for %d" % (k, got, rnd + i))
                        if k % 2:
                            conn.commit()
                    if len(conn._prepared._names) < 20:      # it did prepare (and evict)
                        raise AssertionError("client %d: psycopg keeps %d statements"
                                             % (k, len(conn._prepared._names)))
            except Exception as e:           # reported below, with the others'
                errors.append(repr(e))
        run_clients(self, client, 4)
        self.assertEqual(errors, [])


class TestTheUnnamedStatementAcrossTransactions(pt.PgwharfTestCase):
    """lib/pq (Go) Parses into the unnamed statement and Describes it with a
    Sync, then Binds it in the next round trip: PostgreSQL keeps the
    statement until the next unnamed Parse or simple Query, across
    transactions.  In transaction mode the Bind reached a server that had
    another client's unnamed statement (dropped at the link) or none: 26000
    on every query.  The client's is Parsed there first now."""

    def two_clients(self):
        px, a = raw_on_one_server(self, "transaction")
        self.addCleanup(a.close)
        b = Raw(px.host, px.port, self.pg.user, self.pg.database)
        self.addCleanup(b.close)
        return px, a, b

    def other_client_runs(self, b, text="select 'b'::text"):
        b.send(b.parse("", text), b.bind(""), b.execute(), b.sync())
        self.assertEqual(types(b.until_ready()), "12DCZ")

    def run_unnamed(self, r):
        r.send(r.bind(""), r.execute(), r.sync())
        return r.until_ready()

    def test_bound_in_a_later_transaction_after_another_clients(self):
        px, a, b = self.two_clients()
        a.send(a.parse("", "select $1::text || 'a'"), a.describe_stmt(""), a.sync())
        self.assertEqual(types(a.until_ready()), "1tTZ")
        self.other_client_runs(b)
        a.send(a.msg(b"B", b"\x00\x00\x00\x00\x00\x01\x00\x00\x00\x01x\x00\x00"),
               a.execute(), a.sync())
        msgs = a.until_ready()
        self.assertEqual(types(msgs), "2DCZ", msgs)
        self.assertTrue(msgs[1][1].endswith(b"xa"), msgs)
        # Described on a server that lost it: Parsed there first too.
        self.other_client_runs(b)
        a.send(a.describe_stmt(""), a.sync())
        self.assertEqual(types(a.until_ready()), "tTZ")
        # Again and again, the other client in between each time.
        for i in range(3):
            self.other_client_runs(b, "select %d" % i)
            a.send(a.msg(b"B", b"\x00\x00\x00\x00\x00\x01\x00\x00\x00\x01%d\x00\x00" % i),
                   a.execute(), a.sync())
            msgs = a.until_ready()
            self.assertEqual(types(msgs), "2DCZ", msgs)
            self.assertTrue(msgs[1][1].endswith(b"%da" % i), msgs)

    def test_an_older_one_of_its_own_on_another_server_is_not_it(self):
        # X Parsed on one server, Y on the other: a Bind back on the first
        # found X there (the client's, but not its statement now) and ran
        # it -- also before the copy was kept.  The pool lends its most
        # recently used idle server first.
        self.older_one_elsewhere([b"Y"])
        # With max_prepared_statements = 0 no copy is kept: X is dropped
        # there, and the Bind gets PostgreSQL's 26000 rather than X.
        self.older_one_elsewhere([b"E"], max_prepared_statements=0)

    def older_one_elsewhere(self, want, **extra):
        settings = {"pool_mode": "transaction", "auth_type": "trust", "default_pool_size": 2}
        settings.update(extra)
        px = self.start_pgwharf(settings=settings)
        a, b = (Raw(px.host, px.port, self.pg.user, self.pg.database) for _ in range(2))
        for r in (a, b):
            self.addCleanup(r.close)

        def q(r, sql):
            r.send(r.query(sql))
            return [m[1][6:] for m in r.until_ready() if m[0] == b"D"]

        def a_runs(text=None):
            if text:
                a.send(a.parse("", text), a.describe_stmt(""), a.sync())
                self.assertEqual(types(a.until_ready()), "1tTZ")
            a.send(a.bind(""), a.execute(), a.sync())
            msgs = a.until_ready()
            if msgs[0][0] == b"E":
                self.assertEqual(sqlstate(msgs[0][1]), "26000", msgs)
                return [b"E"]
            self.assertEqual(types(msgs), "2DCZ", msgs)
            return msgs[1][1][6:].split(b",")
        q(b, "begin")
        b_pid = q(b, "select pg_backend_pid()")[0]
        v, x_pid = a_runs("select 'X'::text || ',' || pg_backend_pid()")     # the other one
        q(b, "commit")
        v, y_pid = a_runs("select 'Y'::text || ',' || pg_backend_pid()")     # b's, last used
        self.assertEqual((x_pid != b_pid, y_pid), (True, b_pid))
        q(b, "begin")
        self.assertEqual(q(b, "select pg_backend_pid()"), [y_pid])
        self.assertEqual(a_runs(), want + [x_pid] if want == [b"Y"] else want)
        q(b, "commit")
        a.close()
        b.close()
        px.stop()

    def test_a_parse_of_it_skipped_in_its_batch_is_tried_again(self):
        # The copy sent ahead of a Bind that an error earlier in the batch
        # skips: the server does not have it, and the next Bind sends it
        # again (the server was taken for having it: 26000).
        px, a, b = self.two_clients()
        a.send(a.parse("", "select 'a'::text"), a.describe_stmt(""), a.sync())
        a.until_ready()
        self.other_client_runs(b)
        a.send(a.parse("bad", "select 1/0"), a.bind("bad"), a.execute(),
               a.bind(""), a.execute(), a.sync())
        msgs = a.until_ready()
        self.assertEqual(types(msgs), "1EZ", msgs)      # 1/0 fails at its Bind (planning)
        msgs = self.run_unnamed(a)
        self.assertEqual(types(msgs), "2DCZ", msgs)
        self.assertTrue(msgs[1][1].endswith(b"a"), msgs)

    def test_parsed_in_a_request_queued_on_a_busy_server(self):
        # server_pipeline_depth: the Parse and Describe went behind another
        # client's query on its server, by the queue's own path.
        px = self.start_pgwharf(settings={"pool_mode": "transaction", "auth_type": "trust",
                                          "default_pool_size": 1, "server_pipeline_depth": 2,
                                          "metrics_port": "auto"})
        a, b = (Raw(px.host, px.port, self.pg.user, self.pg.database) for _ in range(2))
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        gate = ph.Gate(self.pg, 7301)
        self.addCleanup(gate.close)
        b.send(b.query("select %s" % gate.sql()))
        self.pg.wait_running(gate.sql(), lock_wait=True)
        a.send(a.parse("", "select 'Y'::text"), a.describe_stmt(""), a.sync())
        pt.wait_until(lambda: px.metric("pgwharf_pipelined_queries_total") >= 1,
                      what="a's request queued")
        gate.open()
        b.until_ready()
        self.assertEqual(types(a.until_ready()), "1tTZ")
        self.other_client_runs(b)
        msgs = self.run_unnamed(a)
        self.assertEqual(types(msgs), "2DCZ", msgs)
        self.assertTrue(msgs[1][1].endswith(b"Y"), msgs)

    def test_after_pgwharfs_own_queries_on_its_server(self):
        # server_check_query before a lend (server_check_delay = 0: at
        # every lend after the first), and the SETs or RESETs that give a
        # server the client's settings (after a FunctionCall, which may
        # change one unseen), are simple Queries: they drop the unnamed
        # statement, and the server was still taken for having the
        # client's (26000, with nobody else on the pool).
        for settings, between in (({"server_check_delay": 0}, None),
                                  ({}, struct.pack("!IHHH", 2026, 0, 0, 0))):
            px, a = raw_on_one_server(self, "transaction", **settings)
            self.addCleanup(a.close)
            a.send(a.parse("", "select 'a'::text"), a.describe_stmt(""), a.sync())
            self.assertEqual(types(a.until_ready()), "1tTZ")
            if between:
                a.send(a.msg(b"F", between))         # pg_backend_pid()
                self.assertEqual(types(a.until_ready()), "VZ")
            msgs = self.run_unnamed(a)
            self.assertEqual(types(msgs), "2DCZ", (settings, msgs))
            self.assertTrue(msgs[1][1].endswith(b"a"), msgs)
            a.close()
            px.stop()

    def test_gone_where_postgresql_drops_it(self):
        px, a, b = self.two_clients()
        # a simple Query drops it
        a.send(a.parse("", "select 'a'::text"), a.sync())
        a.until_ready()
        a.send(a.query("select 1"))
        a.until_ready()
        self.other_client_runs(b)
        msgs = self.run_unnamed(a)
        self.assertEqual((types(msgs), sqlstate(msgs[0][1])), ("EZ", "26000"), msgs)
        # so does a Close of it
        a.send(a.parse("", "select 'a'::text"), a.sync())
        a.until_ready()
        a.send(a.msg(b"C", b"S\x00"), a.sync())
        self.assertEqual(types(a.until_ready()), "3Z")
        self.other_client_runs(b)
        msgs = self.run_unnamed(a)
        self.assertEqual((types(msgs), sqlstate(msgs[0][1])), ("EZ", "26000"), msgs)
        # and a Parse of it that fails
        a.send(a.parse("", "select 'a'::text"), a.sync())
        a.until_ready()
        a.send(a.parse("", "selec"), a.sync())
        msgs = a.until_ready()
        self.assertEqual((types(msgs), sqlstate(msgs[0][1])), ("EZ", "42601"), msgs)
        self.other_client_runs(b)
        msgs = self.run_unnamed(a)
        self.assertEqual((types(msgs), sqlstate(msgs[0][1])), ("EZ", "26000"), msgs)
        # a client that never Parsed one gets none of another's
        self.other_client_runs(b)
        c = Raw(px.host, px.port, self.pg.user, self.pg.database)
        self.addCleanup(c.close)
        msgs = self.run_unnamed(c)
        self.assertEqual((types(msgs), sqlstate(msgs[0][1])), ("EZ", "26000"), msgs)


class TestShowPreparedStatementsColumn(pt.PgwharfTestCase):
    """SHOW CLIENTS / SERVERS prepared_statements, as in PgBouncer: the
    statements a client prepared under its names, and those a server has
    under pgwharf's."""

    def test_counts_follow_parse_and_close(self):
        px, r = raw_on_one_server(self, "transaction")
        try:
            r.send(r.parse("a", "select 1"), r.parse("b", "select 2"),
                   r.parse("c", "select 1"), r.sync())
            self.assertEqual(types(r.until_ready()), "111Z")
            client = px.show("CLIENTS", database=self.pg.database)
            self.assertEqual([c["prepared_statements"] for c in client], ["3"], client)
            # "a" and "c" are one statement on the server
            servers = px.show("SERVERS", database=self.pg.database)
            self.assertEqual([v["prepared_statements"] for v in servers], ["2"], servers)
            r.send(r.close_stmt("a"), r.close_stmt("b"), r.sync())
            self.assertEqual(types(r.until_ready()), "33Z")
            client = px.show("CLIENTS", database=self.pg.database)
            self.assertEqual([c["prepared_statements"] for c in client], ["1"], client)
        finally:
            r.close()


class TestCloseSkippedAfterAnError(pt.PgwharfTestCase):
    """A Close after an error in the batch is skipped by PostgreSQL: the
    statement stays.  pgwharf, answering Close itself, once forgot the
    client's name anyway (26000 on its next Bind).  The same exchange in
    session mode (passed through untouched) is PostgreSQL's own answer."""

    def exchange(self, mode):
        px, r = raw_on_one_server(self, mode)
        out = []
        try:
            for batch in ([r.parse("s1", "select 1")],
                          [r.parse("", "selec"), r.close_stmt("s1")],
                          [r.bind("s1"), r.execute()],
                          # Close, then a Parse of that name and an error.
                          [r.close_stmt("s1"), r.parse("s1", "select 2"), r.parse("", "selec")],
                          # An error, then Close and a Parse of that name.
                          [r.parse("", "selec"), r.close_stmt("s1"), r.parse("s1", "select 3")],
                          [r.bind("s1"), r.execute()]):
                r.send(*(batch + [r.sync()]))
                out.append([(t, sqlstate(b) if t == b"E" else b) for t, b in r.until_ready()])
        finally:
            r.close()
        px.stop()
        return out

    def test_the_name_stands(self):
        got = self.exchange("transaction")
        self.assertEqual([types(m) for m in got], ["1Z", "EZ", "2DCZ", "31EZ", "EZ", "2DCZ"],
                         got)
        self.assertEqual(got[-1][1][1][-1:], b"2")
        self.assertEqual(got, self.exchange("session"))


class TestMessagesAfterAnError(pt.PgwharfTestCase):
    """After an error in an extended-protocol batch PostgreSQL skips every
    message up to the next Sync, answering none.  Messages the client sends
    once the error has come (it sent Flush, read the error, went on) were
    handled as if they ran: pgwharf answered Close and Parse itself
    (CloseComplete, ParseComplete the client never gets from PostgreSQL),
    took or dropped the names, and recorded a Parse it injected for a Bind
    as prepared on the server, which skipped it (26000 "PGW_n" at the next
    Bind).  And with a Parse and a Close of one name both skipped in one
    batch, the name came back (a Bind of a statement PostgreSQL never made
    ran).  The same exchanges in session mode are PostgreSQL's answers."""

    def exchange(self, mode):
        px, r = raw_on_one_server(self, mode, max_prepared_statements=1)
        out = []

        def replies():
            return [(t, sqlstate(b) if t == b"E" else b) for t, b in r.until_ready()]
        try:
            r.send(r.parse("s1", "select 1"), r.parse("s3", "select 3"), r.sync())
            out.append(replies())     # s1 is evicted from the server (LRU of 1)
            r.send(r.bind("nosuch"), r.msg(b"H"))
            t, b = r.read_msg()
            out.append([(t, sqlstate(b))])
            # All skipped by the server: no reply but ReadyForQuery.
            r.send(r.close_stmt("s3"), r.parse("s2", "select 2"), r.bind("s1"), r.execute(),
                   r.sync())
            out.append(replies())
            for name in ("s3", "s1", "s2"):
                r.send(r.bind(name), r.execute(), r.sync())
                out.append(replies())
            # A Parse and a Close of one name, skipped after an error.
            r.send(r.parse("", "selec"), r.parse("s4", "select 4"), r.close_stmt("s4"),
                   r.sync())
            out.append(replies())
            r.send(r.bind("s4"), r.execute(), r.sync())
            out.append(replies())
        finally:
            r.close()
        px.stop()
        return out

    def test_skipped_messages_are_not_answered_or_recorded(self):
        got = self.exchange("transaction")
        self.assertEqual([types(m) for m in got],
                         ["11Z", "E", "Z", "2DCZ", "2DCZ", "EZ", "EZ", "EZ"], got)
        self.assertEqual(got[-1][0], (b"E", "26000"))
        self.assertEqual(got, self.exchange("session"))


class TestMalformedMessages(pt.PgwharfTestCase):
    """A Parse, Bind, Describe or Close PostgreSQL cannot read (a name
    without its NUL, a parameter count past the end) ended the session
    with FATAL 08P01 when max_prepared_statements was on.  PostgreSQL
    answers ERROR 08P01 and goes on, or skips it after an error in the
    batch; session mode relays PostgreSQL's answers."""

    def exchange(self, mode):
        px, r = raw_on_one_server(self, mode)
        out = []
        try:
            for bad in (r.msg(b"D", b"Sd1"), r.msg(b"C", b"Sd1"), r.msg(b"D", b""),
                        r.msg(b"B", b"portal"), r.msg(b"P", b"d1"),
                        r.msg(b"P", b"d1\x00select 1\x00\x00\x01"),
                        r.msg(b"P", b"d1\x00select 1\x00\x00\x00extra")):
                r.send(bad, r.sync())
                out.append([(t, sqlstate(b) if t == b"E" else b) for t, b in r.until_ready()])
                r.send(r.parse("", "selec"), bad, r.sync())     # skipped after the error
                out.append([(t, sqlstate(b) if t == b"E" else b) for t, b in r.until_ready()])
            r.send(r.parse("d1", "select 1"), r.bind("d1"), r.execute(), r.sync())
            out.append(types(r.until_ready()))
        finally:
            r.close()
        px.stop()
        return out

    def test_malformed_messages_are_errors_as_in_postgres(self):
        got = self.exchange("transaction")
        self.assertEqual(got[0], [(b"E", "08P01"), (b"Z", b"I")])
        self.assertEqual(got[1], [(b"E", "42601"), (b"Z", b"I")])
        self.assertEqual(got[-1], "12DCZ")
        self.assertEqual(got, self.exchange("session"))


class TestErrorsNameTheClientsStatement(pt.PgwharfTestCase):
    """PostgreSQL quotes a statement's name in some errors: a Bind with the
    wrong number of parameters (08P01 "bind message supplies 1 parameters,
    but prepared statement "s1" requires 0"), a Bind of a statement whose
    Parse failed earlier in the same pipeline (26000).  The client got
    pgwharf's name (PGW_n) in them.  And the 42P05 pgwharf raises for a
    Parse of a name in use came with a CONTEXT line (the DO block raising
    it) PostgreSQL does not send.  The same exchanges in session mode are
    PostgreSQL's answers."""

    def exchange(self, mode):
        px, r = raw_on_one_server(self, mode)
        out = []
        one = b"\x00\x00\x00\x01\x00\x00\x00\x011\x00\x00"   # 1 parameter, '1'
        try:
            for batch in ([r.parse("s1", "select 1")],
                          [r.msg(b"B", b"\x00s1\x00" + one)],
                          [r.parse("s1", "select 2")],
                          [r.msg(b"Q", b"begin\x00"), r.msg(b"Q", b"select 1/0\x00"),
                           r.parse("s2", "select 3")],
                          [r.bind("s2")],
                          [r.msg(b"Q", b"rollback\x00")]):
                r.send(*(batch + [r.sync()]))
                got = []
                for _ in range(1 + sum(m[:1] == b"Q" for m in batch)):
                    # Fields up to the source file (F, L, R differ: pgwharf
                    # raises 42P05 from PL/pgSQL).
                    got += [(t, b.split(b"\x00F")[0] if t == b"E" else b)
                            for t, b in r.until_ready()]
                out.append(got)
        finally:
            r.close()
        px.stop()
        return out

    def test_the_clients_name_and_postgres_fields(self):
        got = self.exchange("transaction")
        self.assertNotIn(b"PGW_", repr(got).encode(), got)
        self.assertEqual(got, self.exchange("session"))

    def test_a_long_name_run_as_the_statement_of_the_settings_now(self):
        # A name of 64 bytes or more, run after a SET on a server without
        # its Parse's reading: the Bind goes out as the statement of the
        # settings now, which no name of the client's has, and its 08P01
        # quoted "PGW_n" (review of 40b7296).
        px = self.start_pgwharf(settings={"pool_mode": "transaction", "auth_type": "trust",
                                          "default_pool_size": 1,
                                          "max_prepared_statements": 1})
        a = Raw(px.host, px.port, self.pg.user, self.pg.database, TimeZone="UTC")
        b = Raw(px.host, px.port, self.pg.user, self.pg.database)
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        name = "long_" + "n" * 65
        one = b"\x00\x00\x00\x01\x00\x00\x00\x011\x00\x00"   # 1 parameter, '1'
        a.send(a.parse(name, "select $1::int"), a.msg(b"B", b"\x00" + name.encode() + b"\x00" + one),
               a.execute(), a.sync())
        self.assertEqual(types(a.until_ready()), "12DCZ")
        b.send(b.parse("x", "select 1"), b.bind("x"), b.execute(), b.sync())   # pushes it out
        b.until_ready()
        a.send(a.query("set timezone = 'Asia/Tokyo'"))
        a.until_ready()
        a.send(a.bind(name), a.execute(), a.sync())
        msgs = a.until_ready()
        errs = [m for t, m in msgs if t == b"E"]
        self.assertEqual([sqlstate(m) for m in errs], ["08P01"], msgs)
        self.assertNotIn(b"PGW_", errs[0])
        self.assertIn(b'prepared statement "%s" requires 1' % name.encode(), errs[0])


class TestDuplicateNameInAnyQuoting(pt.PgwharfTestCase):
    """The 42P05 pgwharf raises for a Parse of a name in use comes from a
    DO block whose message names the client's statement.  The name sat in
    a '' literal with only quotes doubled: under standard_conforming_strings
    off a backslash in it was an escape, so "a\\'b" ended the literal
    (42601 syntax error in place of 42P05) and "c\\" lost its backslash
    from the message.  Session mode gives PostgreSQL's own answers."""

    NAMES = ("a\\'b", "c\\", "d'e", "$pgw$f", "g$pgw", "h\\''")

    def exchange(self, mode):
        px, r = raw_on_one_server(self, mode)
        out = []
        try:
            for scs in ("off", "on"):
                r.send(r.msg(b"Q", b"set standard_conforming_strings = %s\x00" % scs.encode()))
                r.until_ready()
                for name in self.NAMES:
                    name = scs + name
                    r.send(r.parse(name, "select 1"), r.sync())
                    r.until_ready()
                    r.send(r.parse(name, "select 2"), r.sync())
                    out.append([(t, sqlstate(b), [f for f in b.split(b"\x00")
                                                  if f[:1] == b"M"])
                                if t == b"E" else (t,) for t, b in r.until_ready()])
        finally:
            r.close()
        px.stop()
        return out

    def test_42P05_names_the_statement_whatever_its_characters(self):
        self.maxDiff = None
        got = self.exchange("transaction")
        want = self.exchange("session")
        self.assertEqual(want[0][0][1], "42P05")
        self.assertEqual(got, want)


def exchange_steps(case, mode, steps, err=None, **settings):
    """Start a pgwharf in mode (trust, a pool of 1, plus settings), send each
    step of steps(r, q) at once (r: a Raw client, q(sql): a Query message)
    and collect what comes back up to the ReadyForQuery of each Query or
    Sync in it: one list of (type, body) per step, an ErrorResponse kept as
    err(body) (its SQLSTATE by default).  Session mode gives PostgreSQL's
    own answers to compare with."""
    err = err or sqlstate
    px, r = raw_on_one_server(case, mode, **settings)

    def q(sql):
        return r.msg(b"Q", sql.encode() + b"\x00")
    out = []
    try:
        for step in steps(r, q):
            r.send(*step)
            got = []
            for _ in range(sum(m[:1] in (b"Q", b"S") for m in step)):
                got += [(t, err(b) if t == b"E" else b) for t, b in r.until_ready()]
            out.append(got)
    finally:
        r.close()
    px.stop()
    return out


class TestRepeatedDuplicateParse(pt.PgwharfTestCase):
    def test_statements_of_duplicates_do_not_pile_up_on_the_server(self):
        # Each Parse of a name the client has (42P05) prepares its text
        # under a name of pgwharf's own, closed "later": only at the next
        # new statement on that server.  A client re-preparing what it
        # has, its statements all prepared, left one per attempt on the
        # server, past max_prepared_statements (found by a review of
        # prepared.c).
        px = self.start_pgwharf(settings={"pool_mode": "transaction", "default_pool_size": 1,
                                          "max_prepared_statements": 5, "auth_type": "trust"})
        r = Raw(px.host, px.port, self.pg.user, self.pg.database)
        self.addCleanup(r.s.close)
        r.send(r.parse("s1", "select 1"), r.sync())
        self.assertEqual(types(r.until_ready()), "1Z")
        for _ in range(30):
            r.send(r.parse("s1", "select 1"), r.sync())
            msgs = r.until_ready()
            self.assertEqual(types(msgs), "EZ", msgs)
            self.assertEqual(sqlstate(msgs[0][1]), "42P05")
        r.send(r.query("select count(*) from pg_prepared_statements"))
        rows = [ph.data_row(b) for t, b in r.until_ready() if t == b"D"]
        self.assertLessEqual(int(rows[0][0]), 5, "statements on the server")


class TestDuplicateParseOfAFailingText(pt.PgwharfTestCase):
    """PostgreSQL parses and analyses a Parse's text before it looks at the
    name: a Parse of a name in use whose text fails gets the text's error
    (42P01, 42601, 25P02 in a failed transaction), not 42P05 (found by
    difftest.py).  pgwharf raised 42P05 for all of them."""

    def exchange(self, mode):
        return exchange_steps(self, mode, lambda r, q: [b + [r.sync()] for b in (
            [r.parse("s1", "select 1")],
            [r.parse("s1", "select * from no_such_table_dup")],
            [r.parse("s1", "selec 1")],
            [r.parse("s1", "select $1::int"), r.bind("s1"), r.execute()],
            [q("begin"), q("select 1/0"), r.parse("s1", "select 3")],
            [q("rollback"), r.bind("s1"), r.execute()])])

    def test_the_texts_own_error(self):
        got = self.exchange("transaction")
        self.assertEqual([e for batch in got for t, e in batch if t == b"E"],
                         ["42P01", "42601", "42P05", "22012", "25P02"], got)
        self.assertEqual(got, self.exchange("session"))


class TestParseInAFailedTransaction(pt.PgwharfTestCase):
    """A Parse in a failed transaction is refused by PostgreSQL (25P02) and
    makes no name, even when the server has the statement already (where
    pgwharf would otherwise answer ParseComplete itself)."""

    def test_refused_and_no_name(self):
        px = self.start_pgwharf(settings={"pool_mode": "transaction", "default_pool_size": 1,
                                          "auth_type": "trust"})
        r = Raw(px.host, px.port, self.pg.user, self.pg.database)
        try:
            # The one server gets the statement; the client keeps no name.
            r.send(r.parse("s1", "select 1"), r.close_stmt("s1"), r.sync())
            self.assertEqual(types(r.until_ready()), "13Z")
            r.send(r.msg(b"Q", b"begin\x00"))
            self.assertEqual(types(r.until_ready()), "CZ")
            r.send(r.msg(b"Q", b"select 1/0\x00"))
            msgs = r.until_ready()
            self.assertEqual(types(msgs), "EZ")
            self.assertEqual(msgs[-1][1], b"E")
            r.send(r.parse("s1", "select 1"), r.bind("s1"), r.execute(), r.sync())
            msgs = r.until_ready()
            self.assertEqual(types(msgs), "EZ", msgs)
            self.assertEqual(sqlstate(msgs[0][1]), "25P02")
            r.send(r.msg(b"Q", b"rollback\x00"))
            self.assertEqual(types(r.until_ready()), "CZ")
            r.send(r.bind("s1"), r.execute(), r.sync())
            msgs = r.until_ready()
            self.assertEqual(types(msgs), "EZ", msgs)
            self.assertEqual(sqlstate(msgs[0][1]), "26000")
            self.assertIn(b'"s1"', msgs[0][1])
            # So after a message that cannot end the transaction (a Close).
            r.send(r.msg(b"Q", b"begin\x00"))
            r.until_ready()
            r.send(r.msg(b"Q", b"select 1/0\x00"))
            r.until_ready()
            r.send(r.msg(b"C", b"P\x00"), r.parse("s1", "select 1"), r.sync())
            msgs = r.until_ready()
            self.assertEqual(types(msgs), "3EZ", msgs)
            self.assertEqual(sqlstate(msgs[1][1]), "25P02")
            r.send(r.msg(b"Q", b"rollback\x00"))
            self.assertEqual(types(r.until_ready()), "CZ")
            # Out of the failed transaction the name is made as usual, and
            # the server's statement serves it.
            r.send(r.parse("s1", "select 1"), r.bind("s1"), r.execute(), r.sync())
            self.assertEqual(types(r.until_ready()), "12DCZ")
            # A statement ending the transaction is accepted in it.
            r.send(r.parse("c1", "rollback"), r.close_stmt("c1"), r.sync())
            self.assertEqual(types(r.until_ready()), "13Z")
            r.send(r.msg(b"Q", b"begin\x00"))
            r.until_ready()
            r.send(r.msg(b"Q", b"select 1/0\x00"))
            r.until_ready()
            r.send(r.parse("c1", "rollback"), r.bind("c1"), r.execute(), r.sync())
            msgs = r.until_ready()
            self.assertEqual(types(msgs), "12CZ", msgs)
            self.assertEqual(msgs[-1][1], b"I")
        finally:
            r.close()


class TestQueryAfterAnError(pt.PgwharfTestCase):
    """After an error in an extended-protocol batch PostgreSQL skips every
    message up to the next Sync, a Query too, which then gets no
    ReadyForQuery.  pgwharf counted one for it and kept the server with the
    client until it left: the next client waited for it (found by
    difftest.py).  Whether the Query was sent before the error came or
    after, and whether its Sync came with it or later."""

    def test_the_server_goes_back_to_the_pool(self):
        px = self.start_pgwharf(settings={"pool_mode": "transaction", "default_pool_size": 1,
                                          "auth_type": "trust", "query_wait_timeout": "10s"})
        a = Raw(px.host, px.port, self.pg.user, self.pg.database)
        b = Raw(px.host, px.port, self.pg.user, self.pg.database)
        q = a.msg(b"Q", b"select 1\x00")
        try:
            # Sent before the error came, the Sync with them.
            a.send(a.parse("", "selec"), a.bind(""), a.execute(), q, a.sync())
            msgs = a.until_ready()
            self.assertEqual(types(msgs), "EZ", msgs)
            self.assertEqual(sqlstate(msgs[0][1]), "42601")
            b.send(b.msg(b"Q", b"select 2\x00"))
            self.assertEqual(types(b.until_ready()), "TDCZ")
            # Sent after the error came (a Flush asked for it), then the Sync.
            a.send(a.parse("s1", "select 1/g from generate_series(0, 0) g"), a.bind("s1"), a.execute(), a.msg(b"H"))
            msgs = [a.read_msg() for _ in range(3)]
            self.assertEqual(types(msgs), "12E", msgs)
            self.assertEqual(sqlstate(msgs[2][1]), "22012")
            a.send(q, a.msg(b"Q", b"select 3\x00"), a.bind("s1"))
            a.send(a.sync())
            self.assertEqual(types(a.until_ready()), "Z")
            b.send(b.msg(b"Q", b"select 2\x00"))
            self.assertEqual(types(b.until_ready()), "TDCZ")
            # The statement is there, and both clients go on.
            a.send(a.bind("s1"), a.execute(), a.sync())
            msgs = a.until_ready()
            self.assertEqual(types(msgs), "2EZ", msgs)
            a.send(q)
            self.assertEqual(types(a.until_ready()), "TDCZ")
            b.send(b.msg(b"Q", b"select 2\x00"))
            self.assertEqual(types(b.until_ready()), "TDCZ")
        finally:
            a.close()
            b.close()


class TestSkippedQueryWithoutRewriting(pt.PgwharfTestCase):
    """The same skipping with max_prepared_statements = 0, where nothing
    tells the relay which message an error answers: a Query or
    FunctionCall that the server skipped after an extended-protocol error
    (sent after a Flush brought the error, or pipelined behind the failing
    message before its Sync) kept a ReadyForQuery expected that never came,
    and the server stayed with the client until it left (in a pool of one,
    the next client got 57014 at query_wait_timeout).  Each step is sent at
    once and its replies read (their types); after each step that ends
    with nothing outstanding another client must get the server.  Also
    with the prepared-statement layer on, and in session mode
    (PostgreSQL's answers)."""

    def exchange(self, mode, **settings):
        px, r = raw_on_one_server(self, mode, query_wait_timeout="5s", **settings)
        other = Raw(px.host, px.port, self.pg.user, self.pg.database) \
            if mode == "transaction" else None

        def q(sql):
            return r.msg(b"Q", sql.encode() + b"\x00")
        flush, sync = r.msg(b"H"), r.sync()
        bad = r.parse("", "SELEC 1")
        div = r.parse("", "select 1/g from generate_series(0, 0) g")
        describe = r.msg(b"D", b"P\x00")
        fcall = r.msg(b"F", b"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00")
        steps = [
            # The error after a Flush, the Query after it, the Sync later.
            ([bad, flush], "E", False), ([q("select 1")], "", False), ([sync], "Z", True),
            ([q("select 1")], "TDCZ", True),
            # A Bind, a Describe or an Execute failing.
            ([r.parse("", "select 1"), r.bind("nosuch"), flush], "1E", False),
            ([sync], "Z", True), ([q("select 1")], "TDCZ", True),
            ([div, r.bind(""), describe, r.execute(), flush], "12TE", False),
            ([q("select 1"), fcall, q("select 2")], "", False), ([sync], "Z", True),
            ([r.msg(b"D", b"Snosuch\x00"), flush], "E", False),
            ([q("select 1"), sync, q("select 2")], "ZTDCZ", True),
            # Pipelined before the error came: skipped up to the Sync.
            ([bad, r.bind(""), r.execute(), q("select 1"), q("select 2"), sync, q("select 3")],
             "EZTDCZ", True),
            ([bad, q("select 1")], "E", False), ([sync], "Z", True),
            # The Query's own error, and a batch with none, before a Sync.
            ([r.parse("", "select 1"), r.bind(""), r.execute(), q("selec"), sync],
             "12DCEZZ", True),
            ([r.parse("", "select 1"), r.bind(""), r.execute(), q("selec")], "12DCEZ", True),
            ([r.parse("", "select 1"), r.bind(""), describe, r.execute(), q("select 2")],
             "12TDCTDCZ", False), ([sync], "Z", True),
            # A second such Query fails, after the first one's answers.
            ([r.parse("", "select 1"), r.bind(""), r.execute(), q("select 2"), bad,
              q("select 3"), sync], "12DCTDCZEZ", True),
            # A failing Execute behind a Query: a new batch, skipped to its Sync.
            ([q("select 1"), div, r.bind(""), r.execute(), q("select 2"), sync],
             "TDCZ12EZ", True),
        ]
        out = []
        try:
            for msgs, want, idle in steps:
                r.send(*msgs)
                got = [r.read_msg() for _ in want]
                out.append("".join(t.decode() for t, _ in got) + "".join(
                    "/" + sqlstate(b) for t, b in got if t == b"E"))
                if idle and other:
                    other.send(other.msg(b"Q", b"select 2\x00"))
                    msgs = other.until_ready()
                    self.assertEqual(types(msgs), "TDCZ", (out, msgs))
        finally:
            r.close()
            if other:
                other.close()
        px.stop()
        return out

    def test_the_server_goes_back_to_the_pool(self):
        want = self.exchange("session")
        self.assertEqual(want[0], "E/42601")
        for mps in (0, 100):
            with self.subTest(max_prepared_statements=mps):
                self.assertEqual(self.exchange("transaction", max_prepared_statements=mps), want)


class MixedQueryCase(pt.PgwharfTestCase):
    """max_prepared_statements = 0, a pool of one server: client A sends a
    sequence ending with a Query held on the server by an advisory lock
    (key); B asks meanwhile and must wait until A's Query is done (then,
    when a_leaves, until A leaves: a ReadyForQuery A's sequence never gets
    is still expected)."""

    def last_query_stays(self, key, sequence, a_leaves):
        px, a = raw_on_one_server(self, "transaction", max_prepared_statements=0,
                                  query_wait_timeout="20s")
        b = Raw(px.host, px.port, self.pg.user, self.pg.database)
        gate = psycopg2.connect(self.pg.dsn())
        gate.autocommit = True
        lock = "pg_advisory_xact_lock(" + str(key) + ")"
        try:
            gate.cursor().execute("select pg_advisory_lock(" + str(key) + ")")
            sequence(a, lambda sql: a.msg(b"Q", sql.encode() + b"\x00"),
                     "select 'A' from " + lock)
            self.pg.wait_running(lock, lock_wait=True)
            b.send(b.msg(b"Q", b"select 'B'\x00"))
            # The server is still A's: B waits for it.
            pt.wait_until(lambda: px.show("POOLS", database=self.pg.database)[0]["cl_waiting"]
                          == "1", timeout=5, what="the next client waiting for the server")
            gate.cursor().execute("select pg_advisory_unlock(" + str(key) + ")")
            msgs = a.until_ready()
            self.assertEqual(types(msgs), "TDCZ", msgs)
            self.assertIn(b"A", msgs[1][1])
            if a_leaves:
                a.close()
            msgs = b.until_ready()
            self.assertEqual(types(msgs), "TDCZ", msgs)
            self.assertIn(b"B", msgs[1][1])
        finally:
            gate.close()
            a.close()
            b.close()


class TestMixedQueryAnsweredAfterAFlush(MixedQueryCase):
    """max_prepared_statements = 0: a client flushes a Parse/Bind/Execute
    and reads their answers, then sends a Query that fails, its Sync and
    one more Query.  The tracker counted the answers of the Execute's batch
    only once the Query was sent, so it took the Query's own error for the
    Execute's (the Query skipped): it expected one ReadyForQuery too few and
    gave the server back at the Sync's, with the last Query still running;
    its rows went to the next client.  An advisory lock holds that Query
    on the server while the next client asks; with a pool of one server it
    must wait for it."""

    def test_the_last_query_stays_with_its_client(self):
        def sequence(a, q, locked):
            a.send(a.parse("", "select 1"), a.bind(""), a.execute(), a.msg(b"H"))
            self.assertEqual(types([a.read_msg() for _ in range(4)]), "12DC")
            a.send(q("selec"), a.sync(), q(locked))
            msgs = [a.read_msg() for _ in range(3)]
            self.assertEqual(types(msgs), "EZZ", msgs)
            self.assertEqual(sqlstate(msgs[0][1]), "42601")
        self.last_query_stays(4242, sequence, a_leaves=False)


class TestMixedQueriesBeyondTheLimit(MixedQueryCase):
    """max_prepared_statements = 0: nine Queries each after a Parse of
    their batch, sent at once, the last Parse failing (PostgreSQL skips
    that Query).  The tracker keeps eight such Queries: the ninth kept a
    ReadyForQuery expected, as documented, but the next such Query was
    kept with a number counting it, so the tracker took the Query after it
    for that one, its own error for a skipping, and gave the server back
    two ReadyForQuery early, with the last Query still running (its rows to
    the next client).  An advisory lock holds that Query on the server."""

    def test_the_last_query_stays_with_its_client(self):
        def sequence(a, q, locked):
            a.send(*([a.parse("", "select 1"), q("select 1")] * 8),
                   a.parse("", "selec"), q("select 1"), a.sync())
            msgs = [a.read_msg() for _ in range(8 * 5 + 2)]
            self.assertEqual(types(msgs), "1TDCZ" * 8 + "EZ", msgs)
            a.send(a.parse("", "select 1"), q("select 1"), q("selec"), a.sync(), q(locked))
            msgs = [a.read_msg() for _ in range(8)]
            self.assertEqual(types(msgs), "1TDCZEZZ", msgs)
        # The skipped Query's ReadyForQuery is still expected: the server
        # stays A's until A leaves.
        self.last_query_stays(4243, sequence, a_leaves=True)


class TestMixedQueryAfterACopy(MixedQueryCase):
    """max_prepared_statements = 0: a COPY FROM STDIN reads the messages
    sent after its Query as its own, and a Sync there is read and ignored:
    no ReadyForQuery answers it, and the tracker, expecting one, numbered
    the requests after it one too high.  A mixed Query after the COPY
    (Parse, Query, a failing Query, Sync, Query) was kept with that number:
    the tracker took the next Query for it, that Query's own error for
    the skipping of it, and gave the server back two ReadyForQuery early,
    with the client's last Query still running (its rows to the next
    client).  An advisory lock holds that Query there."""

    def test_the_last_query_stays_with_its_client(self):
        self.pg.psql("create table if not exists copy_gate (a int)")

        def sequence(a, q, locked):
            a.send(q("copy copy_gate from stdin"), a.sync(), a.msg(b"c"))
            self.assertEqual(types([a.read_msg() for _ in range(3)]), "GCZ")
            a.send(a.parse("", "select 1"), q("select 1"), q("selec"), a.sync(), q(locked))
            msgs = [a.read_msg() for _ in range(8)]
            self.assertEqual(types(msgs), "1TDCZEZZ", msgs)
        # The ignored Sync's ReadyForQuery is still expected: the server
        # stays A's until A leaves.
        self.last_query_stays(4244, sequence, a_leaves=True)


class TestCloseAnsweredAfterAnEagerCopy(pt.PgwharfTestCase):
    """A client sends a COPY FROM STDIN Query, a Sync, its data, CopyDone,
    then a Close of a statement and a Sync, all at once (not waiting for
    the CopyInResponse).  The COPY reads the first Sync and ignores it:
    PostgreSQL answers G C Z 3 Z.  pgwharf, answering the Close itself,
    queued its CloseComplete behind the ignored Sync's ReadyForQuery,
    which never comes: it sent it after the next one (G C Z Z 3), and every
    reply of its own after that one ReadyForQuery late.  The same
    exchanges in session mode are PostgreSQL's answers."""

    def exchange(self, mode):
        self.pg.psql("create table if not exists eager_copy (a int)")
        px, r = raw_on_one_server(self, mode, max_prepared_statements=2)
        out = []

        def q(sql):
            return r.msg(b"Q", sql.encode() + b"\x00")

        def replies(n):
            return [(t, sqlstate(b) if t == b"E" else b) for t, b in
                    (r.read_msg() for _ in range(n))]
        try:
            r.send(q("copy eager_copy from stdin"), r.sync(), r.msg(b"d", b"1\n"),
                   r.msg(b"c"), r.close_stmt("nosuch"), r.sync())
            out.append(replies(5))
            # Then a statement prepared, closed and prepared again: each
            # answer of pgwharf's own comes where PostgreSQL's does.
            r.send(q("copy eager_copy from stdin"), r.sync(), r.sync(), r.msg(b"d", b"2\n"),
                   r.msg(b"c"), r.parse("s1", "select 1"), r.close_stmt("s1"),
                   r.parse("s1", "select 1"), r.bind("s1"), r.execute(), r.sync())
            out.append(replies(10))
            # The COPY in the extended protocol: its Execute's Sync ignored.
            r.send(r.parse("", "copy eager_copy from stdin"), r.bind(""), r.execute(),
                   r.sync(), r.msg(b"d", b"3\n"), r.msg(b"c"), r.close_stmt("s1"), r.sync())
            out.append(replies(6))
            r.send(r.parse("s2", "select 2"), r.bind("s2"), r.execute(), r.sync())
            out.append(r.until_ready())
        finally:
            r.close()
        px.stop()
        return out

    def test_replies_in_postgres_order(self):
        got = self.exchange("transaction")
        self.assertEqual([types(m) for m in got], ["GCZ3Z", "GCZ1312DCZ", "12GC3Z", "12DCZ"],
                         got)
        self.assertEqual(got, self.exchange("session"))


class TestSyncsEveryCopyOfAQueryIgnores(pt.PgwharfTestCase):
    """Syncs a COPY FROM STDIN reads as its own besides the one right
    after its Query/Execute: one sent after its data, before its CopyDone
    (read and ignored when the COPY goes well), and one sent before the
    data of a Query's second COPY (after the first one's CopyDone).
    PostgreSQL answers neither; pgwharf, answering a Close or Parse after
    them itself, queued its reply behind their ReadyForQuery, which never
    comes: the client got the COPY's ReadyForQuery, the request's, and its
    CloseComplete only at the head of the next request's replies
    (G C Z Z, then 3 T D C Z).  The same exchanges in session mode are
    PostgreSQL's answers."""

    def exchange(self, mode):
        self.pg.psql("create table if not exists copy_syncs (a int)")
        two = "copy copy_syncs from stdin; copy copy_syncs from stdin"

        def talk(r, out):
            def q(sql):
                return r.msg(b"Q", sql.encode() + b"\x00")

            def d(row):
                return r.msg(b"d", row)
            r.send(r.parse("s1", "select 1"), r.sync())
            out.append(r.until_ready())
            steps = [
                # A Sync after the data, before CopyDone.
                (q("copy copy_syncs from stdin"), d(b"1\n"), r.sync(), r.msg(b"c"),
                 r.close_stmt("s1"), r.sync()),
                # The second COPY's Syncs, before and after its data.
                (q(two), d(b"2\n"), r.msg(b"c"), r.sync(), d(b"3\n"), r.sync(), r.msg(b"c"),
                 r.parse("s1", "select 1"), r.sync()),
                # Its second COPY failing: that Sync was ignored all the same.
                (q(two), r.msg(b"c"), r.sync(), d(b"x\n"), r.msg(b"c"),
                 r.close_stmt("s1"), r.sync()),
                # In the extended protocol.
                (r.parse("", "copy copy_syncs from stdin"), r.bind(""), r.execute(),
                 d(b"4\n"), r.sync(), r.msg(b"c"), r.parse("s1", "select 1"), r.sync()),
            ]
            for step in steps:
                r.send(*step)
                got = r.until_ready()
                if got[-1][0] == b"Z" and step[0][:1] == b"Q":
                    got += r.until_ready()
                out.append(got)
                r.send(q("select 5"))
                out.append(r.until_ready())
        return exchange_on_one_server(self, mode, talk, max_prepared_statements=2)

    def test_replies_in_postgres_order(self):
        got = self.exchange("transaction")
        # But for the second COPY failing: pgwharf cannot tell whether it
        # read the Sync before its data (it fails before it reads anything
        # in a BEFORE STATEMENT trigger, TestCopyFailingBeforeItReadsASync),
        # so it waits for that Sync's ReadyForQuery, and sends the
        # CloseComplete behind it only after the next one.
        self.assertEqual([types(m) for m in got],
                         ["1Z", "GCZ3Z", "TDCZ", "GCGCZ1Z", "TDCZ", "GCGEZZ", "3TDCZ",
                          "12GC1Z", "TDCZ"], got)
        session = self.exchange("session")
        self.assertEqual([types(m) for m in session[5:7]], ["GCGEZ3Z", "TDCZ"], session)
        self.assertEqual(got[:5] + got[7:], session[:5] + session[7:])


class TestOwnReplyAfterAFailedExtendedCopy(pt.PgwharfTestCase):
    """libpq's extended COPY FROM STDIN (Execute and Sync, then data,
    CopyDone and Sync) failing on a row, then a Close that pgwharf answers
    itself, an Execute of no portal and a Sync.  Whether the COPY read the
    Sync after its Execute pgwharf learns only from the replies that come
    after (TestCopyFailingBeforeItReadsASync): the Execute's error showed
    it was read, but was taken for the Close's, and the client never got
    its CloseComplete (found by difftest.py, seed 19).  The same exchange
    in session mode is PostgreSQL's answer."""

    def exchange(self, mode):
        self.pg.psql("create table if not exists copy_own_reply (a int)")

        def talk(r, out):
            r.send(r.parse("s1", "select 1"), r.sync())
            out.append(r.until_ready())
            r.send(r.parse("", "copy copy_own_reply from stdin"), r.bind(""), r.execute(),
                   r.sync())
            out.append([r.read_msg() for _ in range(3)])
            r.send(r.msg(b"d", b"x\n"), r.msg(b"c"), r.sync())
            out.append(r.until_ready())
            r.send(r.close_stmt("s1"), r.execute("nosuch"), r.sync())
            out.append(r.until_ready())
            r.send(r.query("select 5"))
            out.append(r.until_ready())
        return exchange_on_one_server(self, mode, talk, max_prepared_statements=2)

    def test_replies_in_postgres_order(self):
        got = self.exchange("transaction")
        self.assertEqual([types(m) for m in got], ["1Z", "12G", "EZ", "3EZ", "TDCZ"], got)
        self.assertEqual(got, self.exchange("session"))


def raw_to_postgres(case, db=None):
    """A Raw client logged in to the test cluster itself (no pgwharf), to
    db (default: the test database)."""
    r = Raw.__new__(Raw)
    r.s = socket.create_connection((case.pg.host, case.pg.port))
    r.s.settimeout(20)
    r.buf = b""
    ph.sync_login(r.s, case.pg.user, db or case.pg.database, password=case.pg.password)
    return r


class TestMessageInsideACopyFromStdin(pt.PgwharfTestCase):
    """A Close or Parse a COPY FROM STDIN reads as its own (sent after the
    COPY's Query or Execute and before its CopyDone): PostgreSQL (14 and
    later) fails the COPY with 08P01 "unexpected message type 0x43 during
    COPY from stdin" and ends the connection, FATAL 08P01 "terminating
    connection because protocol synchronization was lost".  pgwharf,
    answering that Close or Parse itself (the statement is on the server),
    never sent it: the COPY went on, and the client got COPY 1,
    ReadyForQuery and the CloseComplete.  Each exchange is sent to
    PostgreSQL directly too, and must get the same replies."""

    def exchange(self, connect, steps):
        r = connect()
        out = []
        try:
            r.send(r.parse("s1", "select 1"), r.sync())
            out.append(types(r.until_ready()))
            for send, n in steps(r):
                r.send(*send)
                for _ in range(n):
                    t, b = r.read_msg()
                    out.append((t, ph.parse_fields(b)) if t == b"E" else t)
            r.s.settimeout(10)
            try:
                extra = r.read_msg()
            except EOFError:
                extra = "closed"
            out.append(extra)
        finally:
            r.s.close()
        return out

    def test_refused_and_the_connection_ends_as_postgres_does(self):
        self.pg.psql("create table if not exists copy_inside (a int)")
        px = self.start_pgwharf(settings={"pool_mode": "transaction", "auth_type": "trust",
                                          "default_pool_size": 1,
                                          "max_prepared_statements": 2})
        copy = "copy copy_inside from stdin"

        def norm(m):
            """An error as its severity, SQLSTATE and text."""
            return (m[0], m[1]["S"], m[1]["C"], m[1]["M"]) if isinstance(m, tuple) else m

        def q(r, sql):
            return r.msg(b"Q", sql.encode() + b"\x00")

        cases = {
            "eager Close": lambda r: [((q(r, copy), r.close_stmt("s1"), r.msg(b"d", b"1\n"),
                                        r.msg(b"c"), r.sync()), 3)],
            "Parse after the CopyInResponse": lambda r: [
                ((r.close_stmt("s1"), r.sync()), 2), ((q(r, copy),), 1),
                ((r.parse("s1", "select 1"), r.msg(b"d", b"1\n"), r.msg(b"c"), r.sync()), 2)],
            "Close after an ignored Sync": lambda r: [
                ((r.parse("", copy), r.bind(""), r.execute(), r.sync(), r.close_stmt("s1"),
                  r.msg(b"d", b"1\n"), r.msg(b"c"), r.sync()), 5)],
            "Close after data": lambda r: [((q(r, copy), r.msg(b"d", b"1\n"), r.close_stmt("s1"),
                                             r.msg(b"c"), r.sync()), 3)],
            # s1 no longer on the server: pgwharf would close another and
            # prepare it first, the server reading those (0x43, not 0x42).
            "Bind of an evicted statement": lambda r: [
                ((r.parse("s2", "select 2"), r.parse("s3", "select 3"), r.sync()), 3),
                ((q(r, copy), r.bind("s1"), r.execute(), r.sync(), r.msg(b"d", b"1\n"),
                  r.msg(b"c"), r.sync()), 3)],
            "Close in a Query's second COPY": lambda r: [
                ((q(r, copy + "; " + copy), r.msg(b"d", b"1\n"), r.msg(b"c"), r.close_stmt("s1"),
                  r.msg(b"d", b"2\n"), r.msg(b"c"), r.sync()), 5)],
        }
        for name, steps in cases.items():
            with self.subTest(name):
                got = self.exchange(lambda: Raw(px.host, px.port, self.pg.user,
                                                self.pg.database), steps)
                err, fatal = got[-3], got[-2]
                self.assertEqual(got[-1], "closed", got)
                self.assertEqual((err[1]["S"], err[1]["C"]), ("ERROR", "08P01"), got)
                self.assertRegex(err[1]["M"], "^unexpected message type 0x(42|43|50) during COPY",
                                 got)
                self.assertEqual((fatal[1]["S"], fatal[1]["C"]), ("FATAL", "08P01"), got)
                want = self.exchange(lambda: raw_to_postgres(self), steps)
                self.assertEqual([norm(m) for m in got], [norm(m) for m in want])
                # The server went (closed mid-COPY): the next client gets one.
                r = Raw(px.host, px.port, self.pg.user, self.pg.database)
                r.send(q(r, "select 7"))
                self.assertEqual(types(r.until_ready()), "TDCZ")
                r.close()


class TestServerBackAfterCopyReadSyncs(pt.PgwharfTestCase):
    """A client whose COPY FROM STDIN read Syncs as its own (sent before
    its data, in it, or before a Query's second COPY) and which then stays
    connected, idle: its server goes back to the pool at the request's
    ReadyForQuery.  The relay counted those Syncs as requests still to be
    answered, for ever: the server stayed with the idle client, and with a
    pool of one every other client waited until query_wait_timeout (with
    max_prepared_statements, pgwharf knows which Syncs the COPY read)."""

    def test_another_client_gets_the_server(self):
        px, copy, r = copy_setup(self, "copy_back", 2)

        def q(sql):
            return r.msg(b"Q", sql.encode() + b"\x00")

        def d(row):
            return r.msg(b"d", row)
        steps = {
            "Query, Sync, data": ((q(copy), r.sync(), d(b"1\n"), r.msg(b"c"), r.sync()),
                                  "GCZZ"),
            "Sync in the data": ((q(copy), d(b"1\n"), r.sync(), r.msg(b"c"), r.sync()), "GCZZ"),
            "Execute, Sync, data": ((r.parse("", copy), r.bind(""), r.execute(), r.sync(),
                                     d(b"1\n"), r.msg(b"c"), r.sync()), "12GCZ"),
            "second COPY": ((q(copy + "; " + copy), r.msg(b"c"), r.sync(), d(b"1\n"),
                             r.msg(b"c"), r.sync()), "GCGCZZ"),
        }
        try:
            for name, (send, want) in steps.items():
                with self.subTest(name):
                    r.send(*send)
                    self.assertEqual(read_types(r, len(want)), want)
                    assert_another_client_runs(self, px)
        finally:
            r.close()


class TestServerBackAfterCopyReadSyncsUntracked(pt.PgwharfTestCase):
    """The same with max_prepared_statements = 0, where the relay's tracker
    alone counts: a client that waits for the CopyInResponse, then sends
    Syncs among its data (the COPY reads and ignores them).  They were
    counted as requests for good and the server stayed with the client;
    now the COPY's CommandComplete takes them back.  A COPY that fails
    on a row before it reads such a Sync answers it and every Sync after;
    whether it read the Sync sent with its Execute first is not known (a
    BEFORE STATEMENT trigger fails it before it reads anything): the
    server stays with the client until it leaves, never handed on with a
    ReadyForQuery to come."""

    def test_another_client_gets_the_server(self):
        px, copy, r = copy_setup(self, "copy_back2", 0)
        d = lambda row: r.msg(b"d", row)
        try:
            for name, rows, want in (("rows that load", (b"1\n", b"2\n"), "CZ"),
                                     ("a row that fails", (b"x\n", b"2\n"), "EZZZ")):
                with self.subTest(name):
                    r.send(r.parse("", copy), r.bind(""), r.execute(), r.sync())
                    self.assertEqual(read_types(r, 3), "12G")
                    r.send(d(rows[0]), r.sync(), d(rows[1]), r.sync(), r.msg(b"c"), r.sync())
                    self.assertEqual(read_types(r, len(want)), want)
                    if want == "CZ":
                        assert_another_client_runs(self, px)
            r.send(r.query("select 1"))
            self.assertEqual(types(r.until_ready()), "TDCZ")
        finally:
            r.close()
        assert_another_client_runs(self, px)
        self.assertEqual(self.pg.psql("select count(*) from copy_back2"), "2")


class TestCopyFailingBeforeItReadsASync(pt.PgwharfTestCase):
    """A COPY FROM STDIN can fail before it reads any input: PostgreSQL
    sends the CopyInResponse, then runs the table's BEFORE STATEMENT
    triggers, and an error there leaves the Syncs the client sent after
    the COPY's Query or Execute unread, so each is answered.  pgwharf took
    a Sync sent there before any data as read and ignored by the COPY (at
    the CopyInResponse, or when sent after it) and expected one
    ReadyForQuery too few: the server went back to the pool with the
    client's next Query still running, and the next client (a pool of
    one) got that Query's row (found by a review).  The trigger waits for
    an advisory lock the test holds, so the client's messages are all
    with pgwharf first; the client's two Queries after the COPY wait for
    two more, so that the next client asks while each runs."""

    TRIG, Q1, Q2 = 4311, 4312, 4313

    def setUp(self):
        super().setUp()
        self.pg.psql(
            "drop table if exists copy_bs_fails cascade; create table copy_bs_fails (a int); "
            "create or replace function copy_bs_fails() returns trigger language plpgsql as "
            "$$ begin perform pg_advisory_xact_lock(%d); "
            "raise exception 'copy_bs_fails says no'; end $$; "
            "create trigger copy_bs_fails before insert on copy_bs_fails "
            "for each statement execute function copy_bs_fails()" % self.TRIG)

    def exchange(self, first, rest, want):
        """Client A sends first (a COPY of copy_bs_fails, up to its
        CopyInResponse), then rest and two Queries, each held by a lock,
        the trigger's lock held meanwhile; B asks for the server while the
        first Query runs, and must still wait while the second one does.
        want: A's replies up to the CopyInResponse, and after it up to
        the Queries'."""
        px, a = raw_on_one_server(self, "transaction", max_prepared_statements=8,
                                  query_wait_timeout="20s")
        b = Raw(px.host, px.port, self.pg.user, self.pg.database)
        gate = psycopg2.connect(self.pg.dsn())
        gate.autocommit = True
        locks = ["pg_advisory_xact_lock(%d)" % k for k in (self.Q1, self.Q2)]

        def q(sql):
            return a.msg(b"Q", sql.encode() + b"\x00")

        def unlock(key):
            gate.cursor().execute("select pg_advisory_unlock(%d)" % key)

        def b_waits():
            return px.show("POOLS", database=self.pg.database)[0]["cl_waiting"] == "1"
        try:
            gate.cursor().execute("select pg_advisory_lock(%d), pg_advisory_lock(%d), "
                                  "pg_advisory_lock(%d)" % (self.TRIG, self.Q1, self.Q2))
            a.send(*first(a, q))
            self.assertEqual(read_types(a, len(want[0])), want[0])
            a.send(*rest(a, q), q("select 'A-private' from " + locks[0]),
                   q("select 'A-too' from " + locks[1]))
            # A round trip through pgwharf's loop: it has read A's messages.
            px.show("POOLS", database=self.pg.database)
            unlock(self.TRIG)
            self.pg.wait_running(locks[0], lock_wait=True)
            b.send(b.msg(b"Q", b"select 'B-own'\x00"))
            # The server is still A's: B waits for it.
            pt.wait_until(b_waits, timeout=5, what="the next client waiting for the server")
            unlock(self.Q1)
            msgs = [a.read_msg() for _ in range(len(want[1]) + 4)]
            self.assertEqual(types(msgs), want[1] + "TDCZ", msgs)
            self.assertEqual(sqlstate(msgs[0][1]), "P0001")
            self.assertIn(b"A-private", msgs[-3][1])
            # A's second Query runs: B waits still (pgwharf has passed the
            # first one's replies on, and answered the SHOW since).
            self.pg.wait_running(locks[1], lock_wait=True)
            self.assertTrue(b_waits())
            unlock(self.Q2)
            msgs = a.until_ready()
            self.assertEqual(types(msgs), "TDCZ", msgs)
            self.assertIn(b"A-too", msgs[1][1])
            msgs = b.until_ready()
            self.assertEqual(types(msgs), "TDCZ", msgs)
            self.assertIn(b"B-own", msgs[1][1])
            self.assertEqual(self.pg.psql("select count(*) from copy_bs_fails"), "0")
        finally:
            gate.close()
            a.close()
            b.close()
            px.stop()

    def test_sync_sent_on_the_copy_in_response(self):
        # As in the review: Parse, Bind, Execute, Flush; on the
        # CopyInResponse at once Sync, CopyDone and the Queries.
        copy = "copy copy_bs_fails from stdin"
        self.exchange(lambda a, q: (a.parse("", copy), a.bind(""), a.execute(), a.msg(b"H")),
                      lambda a, q: (a.sync(), a.msg(b"c")), ("12G", "EZ"))

    def test_sync_sent_with_the_execute(self):
        copy = "copy copy_bs_fails from stdin"
        self.exchange(lambda a, q: (a.parse("", copy), a.bind(""), a.execute(), a.sync(),
                                    a.msg(b"c")),
                      lambda a, q: (), ("12G", "EZ"))

    def test_sync_sent_with_the_query(self):
        self.exchange(lambda a, q: (q("copy copy_bs_fails from stdin"), a.sync(), a.msg(b"c")),
                      lambda a, q: (), ("G", "EZZ"))


class TestServerBackAfterAFailedCopy(pt.PgwharfTestCase):
    """max_prepared_statements on: libpq's COPY in the extended protocol
    (Execute and Sync, the data, CopyDone and Sync).  When it loads, the
    server goes back to the pool at the last ReadyForQuery.  When a row
    fails, pgwharf cannot tell whether the COPY read the Sync after the
    Execute before it failed (it would have failed before reading it in
    a BEFORE STATEMENT trigger): that Sync's ReadyForQuery is still
    counted due.  With nothing else under way, pgwharf asks the server (a
    Sync and a Close of its own, their replies dropped): the server goes
    back to the pool once the answer shows it never comes, the client
    idle (the reply to its next request told, before: the server stayed
    with the idle client until then)."""

    def test_another_client_gets_the_server(self):
        px, copy, r = copy_setup(self, "copy_back3", 2)
        d = lambda row: r.msg(b"d", row)
        try:
            r.send(r.parse("", copy), r.bind(""), r.execute(), r.sync())
            self.assertEqual(read_types(r, 3), "12G")
            r.send(d(b"1\n"), d(b"2\n"), r.msg(b"c"), r.sync())
            self.assertEqual(read_types(r, 2), "CZ")
            assert_another_client_runs(self, px)
            r.send(r.parse("", copy), r.bind(""), r.execute(), r.sync())
            self.assertEqual(read_types(r, 3), "12G")
            r.send(d(b"x\n"), r.msg(b"c"), r.sync())
            self.assertEqual(read_types(r, 2), "EZ")
            # The client waits: pgwharf's probe tells the first Sync was
            # read, and the server goes back to the pool.
            assert_another_client_runs(self, px)
            r.send(r.msg(b"Q", b"select 1\x00"))
            self.assertEqual(types(r.until_ready()), "TDCZ")
            assert_another_client_runs(self, px)
        finally:
            r.close()
        self.assertEqual(self.pg.psql("select count(*) from copy_back3"), "2")


class TestMessagesAfterAFailedExtendedCopy(pt.PgwharfTestCase):
    """A COPY FROM STDIN by Execute, its Sync sent with it; on the
    CopyInResponse the client sends its data, CopyDone and, before its next
    Sync, a Parse, Bind and Execute of a named statement.  When a row fails
    the COPY, it has read the Sync and ignored it: PostgreSQL skips the
    Parse up to the next Sync.  When the COPY fails before it reads
    anything (its BEFORE STATEMENT trigger), the Sync is answered and the
    Parse runs.  Which, pgwharf learns only after the error: taking the
    Sync for one the COPY may have read (answered or not, as the replies
    would tell), it took the Parse for run in both cases, and the client's
    next Bind of the name met pgwharf's own: 26000 'prepared statement
    "PGW_n" does not exist' (found by difftest.py, seed 1, on a first
    version of the change).  pgwharf holds such messages until the COPY's
    end is in, and after its error asks the server itself (a Sync and a
    Close of its own) whether it skips them.  Each exchange is sent to
    PostgreSQL directly too, and must get the same replies."""

    def setUp(self):
        super().setUp()
        self.pg.psql(
            "drop table if exists copy_gap_rows, copy_gap_trig cascade; "
            "create table copy_gap_rows (a int); create table copy_gap_trig (a int); "
            "create or replace function copy_gap_no() returns trigger language plpgsql as "
            "$$ begin perform pg_sleep(0.3); raise exception 'copy_gap_no'; end $$; "
            "create trigger copy_gap_no before insert on copy_gap_trig "
            "for each statement execute function copy_gap_no()")
        self.addCleanup(self.pg.psql, "drop table if exists copy_gap_rows, copy_gap_trig "
                        "cascade; drop function if exists copy_gap_no()", check=False)

    def exchange(self, r, table, rows, answers):
        def norm(msgs):
            out = []
            for t, b in msgs:
                if t in (b"E", b"N"):
                    f = dict((x[:1], x[1:]) for x in b.split(b"\x00") if x)
                    b = (f.get(b"C"), f.get(b"M"))
                out.append((t, b))
            return out
        out = []
        try:
            r.send(r.parse("", "copy %s from stdin" % table), r.bind(""), r.execute(), r.sync())
            out.append(norm([r.read_msg() for _ in range(3)]))
            r.send(*[r.msg(b"d", row) for row in rows], r.msg(b"c"),
                   r.parse("s1", "select 'ran'"), r.bind("s1"), r.execute(), r.sync())
            for _ in range(answers):       # the Sync's, if answered, and the Parse's batch
                out.append(norm(r.until_ready()))
            r.send(r.bind("s1"), r.execute(), r.sync())
            out.append(norm(r.until_ready()))
            r.send(r.query("select 5"))
            out.append(norm(r.until_ready()))
        finally:
            r.close()
        return out

    def compare(self, table, rows, want):
        answers = len(want) - 3
        px, r = raw_on_one_server(self, "transaction", max_prepared_statements=8)
        got = self.exchange(r, table, rows, answers)
        assert_another_client_runs(self, px)
        px.stop()
        self.assertEqual(got, self.exchange(raw_to_postgres(self), table, rows, answers))
        self.assertEqual([types(m) for m in got], want, got)

    def test_a_row_fails(self):
        # The Parse is skipped: the name is unknown to the Bind after.
        self.compare("copy_gap_rows", [b"1\n", b"x\n"], ["12G", "EZ", "EZ", "TDCZ"])

    def test_the_trigger_fails_before_any_row(self):
        # The Sync is answered, the CopyDone ignored, the Parse runs.
        self.compare("copy_gap_trig", [b"1\n"], ["12G", "EZ", "12DCZ", "2DCZ", "TDCZ"])


class TestOwnReplyBehindTheSyncAfterAFailedCopy(TestMessagesAfterAFailedExtendedCopy):
    """The same COPY, the client sending its data, CopyDone, a Sync and a
    Close of a statement and a Flush, all before the error comes.  When a
    row fails the COPY, it read the Sync sent with its Execute: the one
    ReadyForQuery is the second Sync's.  pgwharf took it for the first one
    (it may have been: a trigger fails the COPY before it reads anything),
    and the CloseComplete it makes itself for the Close waited behind the
    second Sync for a ReadyForQuery that had come: the client waited for
    ever.  With only Syncs and such replies outstanding, and nothing of the
    client's open batch sent, pgwharf asks the server (found by a
    review)."""

    def exchange(self, r, table, rows, answers):
        try:
            r.send(r.parse("", "copy %s from stdin" % table), r.bind(""), r.execute(), r.sync())
            out = [[r.read_msg()[0] for _ in range(3)]]
            r.send(*[r.msg(b"d", row) for row in rows], r.msg(b"c"), r.sync(),
                   r.close_stmt("x"), r.msg(b"H"))
            got = []
            while len(got) < answers:
                got.append(r.read_msg()[0])
            out.append(got)
            r.send(r.sync())
            out.append([t for t, _ in r.until_ready()])
            r.send(r.query("select 5"))
            out.append([t for t, _ in r.until_ready()])
        finally:
            r.close()
        return out

    def compare(self, table, rows, want):
        px, r = raw_on_one_server(self, "transaction", max_prepared_statements=8)
        got = self.exchange(r, table, rows, len(want))
        assert_another_client_runs(self, px)
        px.stop()
        self.assertEqual(got, self.exchange(raw_to_postgres(self), table, rows, len(want)))
        self.assertEqual(b"".join(got[1]).decode(), want, got)

    def test_a_row_fails(self):
        self.compare("copy_gap_rows", [b"1\n", b"x\n"], "EZ3")

    def test_the_trigger_fails_before_any_row(self):
        self.compare("copy_gap_trig", [b"1\n"], "EZZ3")


class TestPipelinedPastAFailingBatch(pt.PgwharfTestCase):
    """A client that pipelines past a Sync and uses, in the next batch, a
    name whose Parse or Close sits in a batch that fails: PostgreSQL skips
    that Parse or Close, and the next batch finds the name as it was
    before.  pgwharf rewrote the next batch before the error came, under
    the name it expected: a statement PostgreSQL never made ran (or a
    second Parse of the name got 42P05), one PostgreSQL kept got 26000, and
    a Parse or Close pgwharf injected and the server skipped left it
    preparing a statement the server already had (42P05 "PGW_n") (found by
    difftest.py).  Each batch of a step is sent at once; the same exchanges
    in session mode are PostgreSQL's answers."""

    def exchange(self, mode):
        px, r = raw_on_one_server(self, mode, max_prepared_statements=2)
        bad = r.parse("", "selec")
        out = []
        try:
            for step in (
                    [[r.parse("s1", "select 1"), r.parse("s9", "select 3")]],
                    # A Parse skipped, the name Parsed again.
                    [[bad, r.parse("s2", "select 2")], [r.parse("s2", "select 22")],
                     [r.bind("s2"), r.execute()]],
                    # A Close skipped: the statement stays.
                    [[bad, r.close_stmt("s1")], [r.bind("s1"), r.execute()]],
                    # A Parse of a statement the server has, skipped.
                    [[bad, r.parse("s3", "select 3")], [r.bind("s3"), r.execute()]],
                    [[bad, r.parse("s4", "select 4")], [r.parse("s5", "select 4"),
                                                        r.bind("s5"), r.execute()]],
                    # A Close pgwharf injects (LRU) skipped, then the victim used.
                    [[r.bind("s1"), r.execute()]],
                    [[bad, r.parse("s6", "select 6"), r.parse("s7", "select 7")],
                     [r.bind("s9"), r.execute()], [r.bind("s1"), r.execute()]],
                    # A Close and a Parse of the name, skipped, a Bind of it.
                    [[bad, r.close_stmt("s2"), r.parse("s2", "select 2")],
                     [r.bind("s2"), r.execute()]],
                    # Without an error the next batch goes on as usual.
                    [[r.parse("s8", "select 8"), r.close_stmt("s1")],
                     [r.bind("s8"), r.execute(), r.bind("s1")]]):
                r.send(*[m for batch in step for m in batch + [r.sync()]])
                out.append([[(t, sqlstate(b) if t == b"E" else b) for t, b in r.until_ready()]
                            for _ in step])
        finally:
            r.close()
        px.stop()
        return out

    def test_the_next_batch_finds_the_names_as_postgres_does(self):
        got = self.exchange("transaction")
        self.assertNotIn(b"PGW_", repr(got).encode(), got)
        self.assertEqual(got, self.exchange("session"))
        self.assertEqual(got[1][1:], [[(b"1", b""), (b"Z", b"I")],
                                      [(b"2", b""), (b"D", b"\x00\x01\x00\x00\x00\x0222"),
                                       (b"C", b"SELECT 1\x00"), (b"Z", b"I")]])


class TestPipelinedPastAFailingBatchAfterACopy(pt.PgwharfTestCase):
    """The same behind a COPY FROM STDIN the client has ended: a Parse of
    a name that fails (sent after the CopyDone, before the COPY's
    CommandComplete came) and, past its Sync, a Parse of the same name.
    PostgreSQL refuses the first (42P01) and makes the second.  pgwharf
    took no wait while the COPY was under way (until its ReadyForQuery):
    the first Parse still held the name, and pgwharf answered the second
    42P05 itself -- or, a Close of the name between them, ParseComplete
    and then no statement: 26000 for the client's s3, which PostgreSQL has
    (found by difftest.py, seed 2089 --more).  Each exchange is sent to
    PostgreSQL directly too, and must get the same replies."""

    def exchange(self, r, start, ends, close):
        # (A Query's COPY: its ReadyForQuery comes on its own.)
        zs = 1 if start(r)[0][:1] == b"Q" else 0
        out = []
        try:
            r.send(*start(r))
            t = None
            while t != b"G":
                t, _ = r.read_msg()
            r.send(r.msg(b"d", b"1\n"), r.msg(b"c"), *ends(r),
                   r.parse("s3", "select * from no_such_table_xyz"),
                   *([r.close_stmt("s3")] if close else []),
                   r.sync(), r.parse("s3", "select 2"), r.sync())
            for _ in range(zs + 2 + len(ends(r))):
                out.append([(t, sqlstate(b) if t == b"E" else b) for t, b in r.until_ready()])
            # Once all is answered: the client's s3 is the second Parse's.
            r.send(r.describe_stmt("s3"), r.sync())
            out.append([(t, sqlstate(b) if t == b"E" else b) for t, b in r.until_ready()])
        finally:
            r.close()
        return out

    def test_the_name_is_as_postgres_has_it(self):
        self.pg.psql("drop table if exists copy_then_s3; create table copy_then_s3 (a int)")
        px = self.start_pgwharf(settings={"pool_mode": "transaction", "auth_type": "trust",
                                          "default_pool_size": 1})
        copy = "copy copy_then_s3 from stdin"
        cases = {
            "Execute and Sync": (lambda r: [r.parse("", copy), r.bind(""), r.execute(),
                                            r.sync()], lambda r: []),
            "Execute and Flush": (lambda r: [r.parse("", copy), r.bind(""), r.execute(),
                                             r.msg(b"H")], lambda r: []),
            "Execute, its batch ended": (lambda r: [r.parse("", copy), r.bind(""), r.execute(),
                                                    r.sync()], lambda r: [r.sync()]),
            "Query": (lambda r: [r.query(copy)], lambda r: []),
        }
        for name, (start, ends) in cases.items():
            for close in (False, True):
                with self.subTest(name, close=close):
                    got = self.exchange(Raw(px.host, px.port, self.pg.user, self.pg.database),
                                        start, ends, close)
                    want = self.exchange(raw_to_postgres(self), start, ends, close)
                    self.assertEqual(got, want)
                    self.assertEqual(got[-2], [(b"1", b""), (b"Z", b"I")])
                    self.assertEqual([t for t, _ in got[-1]], [b"t", b"T", b"Z"])


class TestPipelinedParseInAFailedTransaction(pt.PgwharfTestCase):
    """A Parse of a statement the server has, sent behind requests not yet
    answered that leave the transaction failed: PostgreSQL refuses it
    (25P02) and makes no name.  pgwharf could not know the transaction's
    state when it read the Parse and answered ParseComplete itself (found
    by difftest.py).  Each step is sent at once; the same exchanges in
    session mode are PostgreSQL's answers."""

    def exchange(self, mode):
        return exchange_steps(self, mode, lambda r, q: (
            [r.parse("s9", "select 1"), r.sync()],
            # The failure and the Parse in one pipeline.
            [q("begin"), q("select 1/0"), r.parse("s1", "select 1"), r.bind("s1"),
             r.execute(), r.sync(), q("rollback"), r.bind("s1"), r.execute(), r.sync()],
            # In a block already, a Bind behind a Sync fails it.
            [q("begin")],
            [r.bind("nosuch"), r.sync(), r.parse("s2", "select 1"), r.sync(),
             q("rollback"), r.bind("s2"), r.execute(), r.sync()],
            # Not failed: answered as usual.
            [r.parse("s3", "select 1"), r.bind("s3"), r.execute(), r.sync(),
             r.parse("s4", "select 1"), r.bind("s4"), r.execute(), r.sync()]))

    def test_refused_as_postgres_does(self):
        got = self.exchange("transaction")
        self.assertEqual([e for step in got for t, e in step if t == b"E"],
                         ["22012", "25P02", "26000", "26000", "25P02", "26000"], got)
        self.assertEqual(got, self.exchange("session"))


class TestStatementTheServerLacksInAFailedTransaction(pt.PgwharfTestCase):
    """In a failed transaction PostgreSQL looks at a statement before it
    refuses it: a Bind whose parameters do not match gets 08P01, a
    Describe of a statement returning no rows gets ParameterDescription
    and NoData.  A server lacking the statement (here its LRU of 1
    evicted it) cannot prepare it then: the Parse pgwharf sent ahead was
    refused, and the client got 25P02 (found by difftest.py).  The same
    exchanges in session mode are PostgreSQL's answers."""

    def exchange(self, mode):
        one = b"\x00\x00\x00\x01\x00\x00\x00\x011\x00\x00"   # 1 parameter, '1'
        two_formats = b"\x00\x02\x00\x00\x00\x00\x00\x01\x00\x00\x00\x011\x00\x00"
        return exchange_steps(self, mode, lambda r, q: (
            [r.parse("s1", "select $1::int"), r.msg(b"B", b"\x00s1\x00" + one),
             r.execute(), r.sync()],
            [r.parse("s2", "do $$ begin end $$"), r.bind("s2"), r.execute(), r.sync()],
            [r.parse("s3", "select 3"), r.bind("s3"), r.execute(), r.sync()],
            [q("begin")], [q("select 1/0")],
            [r.bind("s1"), r.execute(), r.sync()],
            [r.msg(b"B", b"\x00s1\x00" + two_formats), r.sync()],
            [r.msg(b"D", b"Ss2\x00"), r.msg(b"D", b"Ss3\x00"), r.sync()],
            [r.msg(b"D", b"Ss2\x00"), r.bind("s1"), r.sync()],
            [r.msg(b"B", b"\x00s1\x00" + one), r.sync()],
            # Pipelined behind the failing query.
            [q("rollback")],
            [q("begin"), q("select 1/0"), r.bind("s1"), r.sync(),
             r.msg(b"D", b"Ss2\x00"), r.sync(), q("rollback")]),
            max_prepared_statements=1)

    def test_the_statement_looked_at_first(self):
        got = self.exchange("transaction")
        self.assertEqual(got, self.exchange("session"))
        self.assertEqual([e for step in got for t, e in step if t == b"E"],
                         ["22012", "08P01", "08P01", "25P02", "08P01", "25P02", "22012", "08P01"],
                         got)
        self.assertEqual([t for t, _ in got[7]], [b"t", b"n", b"E", b"Z"], got)


class TestAFailedTransactionBehindACopysReplies(pt.PgwharfTestCase):
    """A COPY ends with its CommandComplete (or its error), but pgwharf
    counted it under way up to the ReadyForQuery after it.  A Bind of a
    statement the server lacked, sent in one write behind that Sync and a
    query failing the transaction, was not held for their answers (a
    message sent during a COPY may be the COPY's to read): the Parse
    pgwharf sent ahead of it was refused, and the client got 25P02 where
    PostgreSQL checks the parameters first (08P01), or a Describe 25P02
    for ParameterDescription and NoData (session 50 h1's differential
    hunt, after a COPY FROM STDIN ended by CopyFail; h2 made it
    deterministic).  The same exchanges in session mode are PostgreSQL's
    answers."""

    def exchange(self, mode, copy):
        px, r = raw_on_one_server(self, mode, max_prepared_statements=1)
        out = []
        try:
            def step(*msgs):
                r.send(*msgs)
                got = []
                for _ in range(sum(m[:1] in (b"Q", b"S") for m in msgs)):
                    got += [(t, sqlstate(b) if t == b"E" else b) for t, b in r.until_ready()]
                out.append(got)
            step(r.parse("s1", "select $1::int / ($1::int - 2)"),
                 r.parse("s2", "do $$ begin end $$"), r.sync())
            # The LRU of 1 drops s1 and s2 from the server.
            step(r.parse("s3", "select 3"), r.bind("s3"), r.execute(), r.sync())
            for msgs in ([r.bind("s1"), r.sync()], [r.msg(b"D", b"Ss2\x00"), r.sync()]):
                # A COPY's replies, and no ReadyForQuery yet: waited for
                # (the COPY's last reply), then the rest in one write.
                if copy == "out":
                    r.send(r.parse("", "copy (select 1) to stdout"), r.bind(""), r.execute(),
                           r.msg(b"H"))
                    last = b"C"
                else:
                    r.send(r.parse("", "copy pgw_cp_t from stdin"), r.bind(""), r.execute(),
                           r.sync(), r.msg(b"f", b"no\x00"))
                    last = b"E"
                got = [r.read_msg()]
                while got[-1][0] != last:
                    got.append(r.read_msg())
                out.append([(t, sqlstate(b) if t == b"E" else b) for t, b in got])
                step(r.sync(), r.msg(b"Q", b"begin; select 1/0\x00"), *msgs,
                     r.msg(b"Q", b"rollback\x00"))
        finally:
            r.close()
        px.stop()
        return out

    def check(self, copy):
        got = self.exchange("transaction", copy)
        self.assertEqual(got, self.exchange("session", copy))
        self.assertEqual([e for t, e in got[3] if t == b"E"], ["22012", "08P01"], got)
        self.assertEqual([t for t, _ in got[5]],
                         [b"Z", b"C", b"E", b"Z", b"t", b"n", b"Z", b"C", b"Z"], got)

    def test_after_a_copy_to_stdout_ended_by_a_flush(self):
        self.check("out")

    def test_after_a_copy_from_stdin_ended_by_copyfail(self):
        self.pg.psql("drop table if exists pgw_cp_t; create table pgw_cp_t(a int)")
        self.addCleanup(self.pg.psql, "drop table if exists pgw_cp_t")
        self.check("in")


class TestDuplicateEndingParseInAFailedTransaction(pt.PgwharfTestCase):
    """In a failed transaction PostgreSQL accepts the text of a Parse that
    ends it (ROLLBACK...), so a Parse of a name in use with such a text gets
    42P05 there.  pgwharf raises its 42P05 from a DO block, whose Parse the
    failed transaction refused: the client got 25P02 (found by
    difftest.py).  The same exchanges in session mode are PostgreSQL's
    answers."""

    def exchange(self, mode):
        def err(body):
            return sqlstate(body), body.split(b"\x00M")[1].split(b"\x00")[0]
        return exchange_steps(self, mode, lambda r, q: (
            [r.parse("s1", "select 1"), r.sync()],
            [q("begin")], [q("select 1/0")],
            [r.parse("s1", "rollback"), r.sync()],
            [r.parse("s1", "commit"), r.bind("s1"), r.sync()],
            [r.parse("s1", "rollback garbage"), r.sync()],
            [r.parse("s1", "rollback /* %s */" % ("x" * 100000)), r.sync()],
            [q("rollback")],
            # Pipelined behind the failing query.
            [q("begin"), q("select 1/0"), r.parse("s1", "rollback"), r.sync(), q("rollback")],
            [r.bind("s1"), r.execute(), r.parse("s2", "rollback"), r.sync()]), err=err)

    def test_42P05_as_postgres_raises_it(self):
        got = self.exchange("transaction")
        self.assertEqual([e[0] for step in got for t, e in step if t == b"E"],
                         ["22012", "42P05", "42P05", "42601", "42P05", "22012", "42P05"], got)
        self.assertIn((b"E", ("42P05", b'prepared statement "s1" already exists')), got[3])
        self.assertEqual(got, self.exchange("session"))


class TestDuplicateParseLeavesTheUnnamedAlone(pt.PgwharfTestCase):
    """A Parse of a name in use must touch nothing but the transaction: in
    a transaction block PostgreSQL keeps the unnamed statement and portal
    across Syncs.  pgwharf raised its 42P05 by parsing the client's text
    and then a DO block into the unnamed statement and running that in the
    unnamed portal: the client's unnamed ROLLBACK became the DO (a Bind of
    it refused with 25P02), and a Describe of the unnamed portal found the
    failed DO's (NoData) where PostgreSQL has none (34000; found by
    difftest.py, seed 2608 of 40 steps).  Session mode gives PostgreSQL's
    answers."""

    def exchange(self, mode):
        def describe_portal(r, name):
            return r.msg(b"D", b"P" + name.encode() + b"\x00")
        return exchange_steps(self, mode, lambda r, q: (
            [r.parse("s1", "select 1"), r.sync()],
            [q("begin")],
            [r.parse("", "rollback"), r.sync()],
            [r.parse("s1", "select 2"), r.sync()],
            [describe_portal(r, ""), r.sync()],
            [r.bind(""), r.execute(), r.sync()],
            [q("rollback")]))

    def test_the_unnamed_statement_and_portal_stay(self):
        got = self.exchange("transaction")
        self.assertEqual([e for step in got for t, e in step if t == b"E"],
                         ["42P05", "34000"], got)
        self.assertIn((b"C", b"ROLLBACK\x00"), got[5])
        self.assertEqual(got, self.exchange("session"))


if __name__ == "__main__":
    unittest.main()


class TestNamesKeptToTheirFirst63Bytes(pt.PgwharfTestCase):
    """PostgreSQL keeps a statement's name to its first 63 bytes
    (NAMEDATALEN - 1) once converted to the database's encoding: a Bind,
    Describe or Close of a name equal to a prepared one there finds it,
    and a second Parse of such a name gets 42P05.  pgwharf matched the
    client's whole name: the Bind got 26000, the Close closed nothing, the
    second Parse made a statement.  Here a LATIN1 client's names of 32
    characters are 64 bytes in the UTF8 database, equal in the first 63
    when only the last character differs.  The unnamed statement and
    portals (the server's own names) are as before.  Each step is sent to
    pgwharf in transaction mode and to PostgreSQL directly; the replies
    must be the same."""

    def exchange(self, r):
        def m(t, *fields):
            return r.msg(t, b"".join(fields))

        def parse(name, sql):
            return m(b"P", name, b"\x00", sql.encode(), b"\x00\x00\x00")

        def bind(name, portal=b""):
            return m(b"B", portal, b"\x00", name, b"\x00\x00\x00\x00\x00\x00\x00")

        def execute(portal=b""):
            return m(b"E", portal, b"\x00\x00\x00\x00\x00")

        def q(sql):
            return m(b"Q", sql.encode(), b"\x00")
        s = b"s" * 63
        e32, e31 = "\u00e9".encode("latin-1") * 32, "\u00e9".encode("latin-1") * 31
        steps = (
            [parse(s + b"s" * 7, "select 1")],
            [bind(s), execute()],
            [m(b"D", b"S", s, b"tail\x00")],
            [parse(s + b"x", "select 2")],
            [m(b"C", b"S", s, b"yz\x00"), bind(s + b"s" * 7), execute()],
            [parse(s + b"y", "select 3"), bind(s + b"q"), execute()],
            # The unnamed statement, and a portal under a long name.
            [parse(b"", "select 4"), bind(b"", b"p" * 70), execute(b"p" * 63)],
            [bind(s, b"p" * 64), execute(b"p" * 63), execute(b"p" * 65)],
            [q("set client_encoding to 'LATIN1'")],
            [parse(e32, "select 5"), bind(e31 + "\u00e8".encode("latin-1")), execute()],
            [parse(e31 + b"\xea", "select 6")],
            [m(b"C", b"S", e31, b"\xe0\x00"), bind(e32), execute()],
            [parse(e31 + b"e", "select 7"), bind(e31 + b"e"), execute(), bind(e32)])
        out = []
        try:
            for step in steps:
                r.send(*(step + [r.sync()]))
                got = r.until_ready()
                if step[0][:1] == b"Q":
                    got += r.until_ready()
                out.append([(t, sqlstate(b) if t == b"E" else b) for t, b in got])
        finally:
            r.close()
        return out

    def test_bind_describe_close_and_parse_as_postgres_keys_them(self):
        self.maxDiff = None
        want = self.exchange(raw_to_postgres(self))
        self.assertEqual([e for step in want for t, e in step if t == b"E"],
                         ["42P05", "26000", "42P05", "26000", "26000"], want)
        px, r = raw_on_one_server(self, "transaction")
        got = self.exchange(r)
        px.stop()
        self.assertEqual(got, want)


class TestNamesPostgresRefuses(pt.PgwharfTestCase):
    """PostgreSQL reads a Parse's, Bind's, Describe's or Close's statement
    name as text in the client's encoding, checked even where nothing is
    converted, and refuses the message when it is not (22021) or has a
    character the database's encoding lacks (22P05).  pgwharf renamed such
    a name for the server, which never saw it: the Parse made a statement,
    a Close was answered.  Each step goes to pgwharf in transaction mode
    and to PostgreSQL directly; the replies must be the same."""

    def exchange(self, r, steps):
        out = []
        try:
            for step in steps(r):
                if step[0][:1] == b"Q":
                    r.send(*step)
                else:
                    r.send(*(step + [r.sync()]))
                got = r.until_ready()
                out.append([(t, sqlstate(b) if t == b"E" else b) for t, b in got
                            if t not in (b"S", b"N")])
        finally:
            r.close()
        return out

    def compare(self, steps, errors, db=None):
        self.maxDiff = None
        want = self.exchange(raw_to_postgres(self, db), steps)
        self.assertEqual([e for step in want for t, e in step if t == b"E"], errors, want)
        databases = {db: self.pg.conn_string(db)} if db else None
        px = self.start_pgwharf(settings={"pool_mode": "transaction", "auth_type": "trust",
                                          "default_pool_size": 1}, databases=databases)
        got = self.exchange(Raw(px.host, px.port, self.pg.user, db or self.pg.database),
                            steps)
        px.stop()
        self.assertEqual(got, want)

    def test_not_well_formed_in_a_utf8_database(self):
        bad = b"s\xff"

        def steps(r):
            return (
                [r.parse(bad, "select 1"), r.bind(bad), r.execute()],
                [r.bind(bad), r.execute()],
                [r.describe_stmt(b"\xc3(")],
                [r.close_stmt(bad)],
                [r.parse(b"l\xe9", "listen pgw_refused")],       # a LISTEN pgwharf keeps
                [r.parse("good", "select 2"), r.bind("good"), r.execute()],
                # Its first 63 bytes are a statement's name (PostgreSQL
                # keeps no more), but PostgreSQL reads the whole name first.
                [r.parse("a" * 63 + "b", "select 6")],
                [r.bind(b"a" * 63 + b"\xff"), r.execute()],
                [r.close_stmt(b"a" * 63 + b"\xff")],
                [r.query("begin")],
                [r.query("select 1/0")],
                [r.parse(bad, "select 3")],                        # 22021 before 25P02
                [r.query("rollback")],
                [r.query("set client_encoding to 'SQL_ASCII'")],   # checked as UTF-8 still
                [r.parse(bad, "select 4")],
                [r.query("set client_encoding to 'LATIN1'")],      # converted: a good name
                [r.parse(bad, "select 5"), r.bind(bad), r.execute(), r.close_stmt(bad)],
                [r.bind("good"), r.execute()])
        self.compare(steps, ["22021"] * 7 + ["22012", "22021", "22021"])

    def test_a_name_taken_after_all_stays_with_no_other_client(self):
        # A SET client_encoding sent ahead of the Parse, its answer not in
        # yet: the name is checked in the old encoding (UTF-8, where it is
        # not well-formed) and goes as it is; the server, in LATIN1 by
        # then, takes it.  That server must not reach another client with
        # the statement (pg_prepared_statements would show its text).
        px = self.start_pgwharf(settings={"pool_mode": "transaction", "auth_type": "trust",
                                          "default_pool_size": 1})
        a = Raw(px.host, px.port, self.pg.user, self.pg.database)
        a.send(a.query("set client_encoding to 'LATIN1'"), a.parse(b"s\xe9", "select 'secret'"),
               a.sync())
        self.assertEqual(types(a.until_ready()), "CSZ")     # its ParameterStatus
        self.assertEqual(types(a.until_ready()), "1Z")
        b = Raw(px.host, px.port, self.pg.user, self.pg.database)
        b.send(b.query("select count(*) from pg_prepared_statements where name !~ '^PGW_'"))
        got = b.until_ready()
        self.assertEqual([m for t, m in got if t == b"D"], [b"\x00\x01\x00\x00\x00\x010"], got)
        a.close()
        b.close()

    def test_a_character_a_latin1_database_lacks(self):
        db = "pgw_ps_latin1"
        self.pg.psql("create database %s encoding 'LATIN1' template template0 locale 'C'" % db,
                     db="postgres")
        self.addCleanup(self.pg.psql, "drop database if exists %s with (force)" % db,
                        db="postgres")
        lacks, has = "s\u017f".encode(), "s\u00e9".encode()     # UTF-8 names

        def steps(r):
            return (
                [r.query("set client_encoding to 'UTF8'")],
                [r.parse(lacks, "select 1"), r.bind(lacks), r.execute()],
                [r.close_stmt(lacks)],
                [r.parse(has, "select 2"), r.bind(has), r.execute()],
                [r.parse(b"s\xe9", "select 3")],                  # not UTF-8: 22021
                [r.bind(has), r.execute(), r.close_stmt(has)])
        self.compare(steps, ["22P05", "22P05", "22021"], db=db)
