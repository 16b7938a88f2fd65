"""Load: many clients, slow clients, clients that never read.

  10 000 idle clients   logged in (md5) through a compact asyncio
                        raw-protocol client; pgwharf's RSS per client is
                        printed; a sample of them and a fresh client still
                        get answers; all go away and pgwharf is back to its
                        baseline.  RLIMIT_NOFILE is raised in this process
                        before pgwharf starts (pgwharf inherits it).
  5 000 slowloris       connections that send nothing or half a startup
                        packet are closed at client_login_timeout (with
                        08P01 where they can read it), while a pgbench run
                        beside them completes with no failures.
  unread results        clients send many queries with large results and
                        never read: pgwharf's RSS stays bounded
                        (backpressure), other clients keep working, and once
                        the readers-that-never-read go away their servers
                        are closed, not lent on dirty.
  fd exhaustion         pgwharf at its RLIMIT_NOFILE with clients still
                        knocking: it must not spin on accept() nor flood
                        its log, and serves again once fds free up; a
                        server's socket() or host-name lookup that fails
                        for want of a descriptor is pgwharf's shortage
                        (53300), not the backend's.
  servers held without  a client that holds its server with a request it
  a Sync                never ends (the header of a Parse and nothing more,
                        Execute + Flush of a long query and no Sync) meets
                        query_timeout: 57014, its server closed, and the
                        client waiting for that server is served.
  buffer reuse          after a burst of 300 queued clients the freed
                        I/O buffers stay on the free list (more than the
                        floor of 64: a busy pool does not map and unmap a
                        buffer every few transactions) and go back to the
                        system once they have gone unused for a second.
  open-files budget     pgwharf raises its soft RLIMIT_NOFILE to what the
                        config needs (up to the hard limit); under a hard
                        limit too low for max_client_conn it caps clients
                        (53300 past the cap, a warning at start) so that
                        the pools can still open servers.

Only sanity bounds on sizes and times (generous, and looser under ASan).
"""

import asyncio
import os
import random
import re
import resource
import socket
import struct
import time
import unittest

import pgwharf_test as pt
import pgw_hardening as hz

IDLE_CLIENTS = 10000
SLOWLORIS = 5000


class LoadCase(pt.AppRoleTestCase):
    def setUp(self):
        super().setUp()
        # This process holds the clients' fds, pgwharf theirs: each needs
        # a little more than IDLE_CLIENTS.
        old, new = hz.raise_nofile(IDLE_CLIENTS + 1000)
        self.addCleanup(hz.set_nofile, old)
        self.nofile = new

    def start(self, nofile=None, env=None, **settings):
        """pgwharf for load; nofile=(soft, hard) runs it under that
        RLIMIT_NOFILE, env adds to its environment."""
        base = {"pool_mode": "transaction", "default_pool_size": 20,
                "max_client_conn": IDLE_CLIENTS + 1000, "listen_backlog": 4096,
                "log_connections": 0, "log_disconnections": 0}
        base.update(settings)
        return self.start_pgwharf(settings=base, env=env,
                                  **(with_nofile(*nofile) if nofile else {}))


class TestIdleClients(LoadCase):
    def test_10000_idle_clients(self):
        n = min(IDLE_CLIENTS, self.nofile - 500)
        if n < IDLE_CLIENTS:
            print("RLIMIT_NOFILE %d: %d idle clients instead of %d" % (self.nofile, n, IDLE_CLIENTS))
        px = self.start()
        slow = hz.sanitized(px)
        self.assertEqual(px.psql("select 1", user=self.user), "1")
        base = hz.Baseline(px, self.pg, self.user)
        rss0 = px.rss_kb()

        async def main():
            sem = asyncio.Semaphore(200)
            conns = []
            failures = []

            async def one(k):
                async with sem:
                    for attempt in range(3):
                        try:
                            c = await hz.RawConn.connect(px.host, px.port, self.user, self.db,
                                                         self.password, timeout=60)
                            conns.append(c)
                            return
                        except (OSError, asyncio.TimeoutError, hz.PgError,
                                asyncio.IncompleteReadError) as e:
                            err = e
                            await asyncio.sleep(0.2)
                    failures.append(repr(err))

            t0 = time.monotonic()
            await asyncio.gather(*[one(k) for k in range(n)])
            took = time.monotonic() - t0
            try:
                self.assertEqual(failures[:5], [], "%d logins failed" % len(failures))
                self.assertEqual(len(conns), n)
                rss1 = px.rss_kb()
                per = (rss1 - rss0) * 1024.0 / n
                print("%d idle clients logged in in %.1fs; pgwharf RSS %d kB -> %d kB "
                      "(%.0f bytes per idle client), %d fds"
                      % (n, took, rss0, rss1, per, px.fd_count()))
                # Sanity only: an idle client must not cost a buffer's worth or more.
                self.assertLess(per, (256 if slow else 64) * 1024)
                # A sample of them, and a fresh client, still get answers.
                sample = random.Random(1).sample(conns, 50)
                res = await asyncio.gather(*[c.query("select %d" % i)
                                             for i, c in enumerate(sample)])
                self.assertEqual([r[0][0][0] for r in res],
                                 [str(i).encode() for i in range(50)])
                self.assertEqual(px.psql("select 'fresh'", user=self.user), "fresh")
            finally:
                for c in conns:
                    c.abort()
                await asyncio.sleep(0.1)

        asyncio.run(main())
        base.settle(self, max_servers=20, what="10000 idle clients",
                    rss_margin_kb=(512 if slow else 128) * 1024, timeout=60)


class TestSlowloris(LoadCase):
    def test_5000_slowloris_closed_at_login_timeout_while_pgbench_runs(self):
        login_timeout = 3.0
        px = self.start(client_login_timeout="%gs" % login_timeout)
        slow = hz.sanitized(px)
        self.assertEqual(px.psql("select 1", user=self.user), "1")
        base = hz.Baseline(px, self.pg, self.user)
        half = hz.startup_packet(self.user, self.db)
        half = half[:len(half) // 2]
        results = []       # (kind, seconds open, data, local port)
        opened = []

        async def loris(k):
            t0 = time.monotonic()
            try:
                r, w = await asyncio.open_connection(px.host, px.port)
            except OSError as e:
                results.append(("connect-failed", 0, repr(e).encode(), None))
                return
            port = w.get_extra_info("sockname")[1]
            if k % 2:
                w.write(half)
            opened.append(k)
            data = b""
            try:
                while True:
                    chunk = await asyncio.wait_for(r.read(65536), login_timeout + 60)
                    if not chunk:
                        break
                    data += chunk
                kind = "closed"
            except asyncio.TimeoutError:
                kind = "still-open"
            except ConnectionResetError:
                kind = "closed"
            results.append((kind, time.monotonic() - t0, data, port))
            w.close()

        async def main():
            tasks = [asyncio.ensure_future(loris(k)) for k in range(SLOWLORIS)]
            # pgbench starts once every slowloris is connected (or failed to).
            deadline = time.monotonic() + 60
            while len(opened) + len(results) < SLOWLORIS and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            bench = hz.Pgbench(px, ["-c", "20", "-j", "2", "-T", "5"], self.user,
                               self.password, self.db)
            self.addCleanup(bench.kill)
            await asyncio.gather(*tasks)
            rc = await asyncio.get_running_loop().run_in_executor(None, bench.wait, 60)
            return bench, rc

        t0 = time.monotonic()
        bench, rc = asyncio.run(main())
        took = time.monotonic() - t0
        kinds = {}
        for kind, _, _, _ in results:
            kinds[kind] = kinds.get(kind, 0) + 1
        longest = max(r[1] for r in results)
        shortest = min(r[1] for r in results)
        with_error = [r for r in results if r[2]]
        # Each slowloris was closed by pgwharf's login timer (not by the
        # kernel, by another limit or by this side's read timeout): its own
        # disconnect line says so, in state startup.
        timed_out = set(int(p) for p in re.findall(
            r'event=disconnect client=127\.0\.0\.1:(\d+) \S+ \S+ state=startup sqlstate=08P01 '
            r'reason="client_login_timeout: client did not log in in time"', px.log()))
        ports = [r[3] for r in results if r[3] is not None]
        print("%d slowloris in %.1fs: %s; open %.2f-%.2fs; %d got an ErrorResponse; "
              "%d closed at client_login_timeout; pgbench: %s transactions, %s failed"
              % (len(results), took, kinds, shortest, longest, len(with_error),
                 len(timed_out.intersection(ports)), bench.transactions(),
                 bench.failed_transactions()))
        self.assertEqual(rc, 0, bench.out + bench.err[-2000:])
        self.assertEqual(bench.failed_transactions() or 0, 0, bench.out)
        self.assertGreater(bench.transactions() or 0, 0, bench.out)
        self.assertEqual(kinds, {"closed": SLOWLORIS})
        self.assertEqual(len(ports), SLOWLORIS)
        missed = [p for p in ports if p not in timed_out]
        self.assertEqual(missed[:20], [], "%d slowloris not closed at client_login_timeout; "
                         "log tail:\n%s" % (len(missed), px.log_tail()))
        for _, _, data, _ in with_error:
            errs = hz.error_fields_in(data)
            self.assertTrue(errs and errs[0].get("C") == "08P01", data[:200])
            self.assertIn("client_login_timeout", errs[0].get("M", ""), data[:200])
        self.assertTrue(px.alive())
        base.settle(self, max_servers=20, what="slowloris",
                    rss_margin_kb=(256 if slow else 64) * 1024, timeout=60)


class TestUnreadResults(LoadCase):
    CLIENTS = 40
    QUERIES = 30
    # ~3 MB per query: 64 rows of 48 kB.
    SQL = "select repeat('x', 49152) from generate_series(1, 64)"

    def test_clients_that_never_read_keep_rss_bounded(self):
        px = self.start(default_pool_size=self.CLIENTS + 10)
        slow = hz.sanitized(px)
        self.assertEqual(px.psql("select 1", user=self.user), "1")
        base = hz.Baseline(px, self.pg, self.user)
        rss0 = px.rss_kb()
        socks = []
        try:
            batch = hz.query_msg(self.SQL) * self.QUERIES
            for _ in range(self.CLIENTS):
                s = socket.socket()
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                s.connect((px.host, px.port))
                s.settimeout(30)
                hz.sync_login(s, self.user, self.db, self.password)
                s.setblocking(False)
                try:
                    s.send(batch)         # as much as fits; never read
                except BlockingIOError:
                    pass
                socks.append(s)
            # pgwharf has filled every buffer it is going to fill once each
            # client's server is stuck writing (the client reads nothing).
            hz.wait_until(lambda: int(self.pg.psql(
                "select count(*) from pg_stat_activity where usename = '%s' "
                "and wait_event = 'ClientWrite'" % self.user,
                db="postgres", via_socket=True)) >= self.CLIENTS, 60,
                what="every server stuck writing to pgwharf")
            # A server stuck in ClientWrite means pgwharf reads nothing more
            # from it: what pgwharf holds now is all it will hold.
            rss1 = px.rss_kb()
            stuck = hz.server_conns(self.pg, self.user, states=True)
            print("unread results: %d clients x %d queries x ~3 MB; RSS %d kB -> %d kB; "
                  "servers %s" % (self.CLIENTS, self.QUERIES, rss0, rss1, stuck))
            if not slow:        # under ASan the RSS is mostly its quarantine
                self.assertLess(rss1 - rss0, 64 * 1024,
                                "RSS grew by %d kB with clients not reading" % (rss1 - rss0))
            # Everyone else is unaffected.
            self.assertEqual(px.psql("select 'others fine'", user=self.user), "others fine")
        finally:
            for s in socks:
                # RST: drop the connection with unread data.
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.close()
        # Their servers were mid-result: closed, not lent on.
        base.settle(self, max_servers=self.CLIENTS + 10, what="unread results",
                    rss_margin_kb=(256 if slow else 64) * 1024, timeout=60)
        conn_check = px.psql("select count(*) from pg_stat_activity where state = 'active' "
                             "and query like 'select repeat%'", user=self.user)
        self.assertEqual(conn_check, "0")


class TestServerHeldWithoutSync(LoadCase):
    """A request with no Sync behind it held its server for ever: the
    header of a Parse (read whole with max_prepared_statements on, so not
    yet counted as sent) or Execute + Flush of a long query ran under no
    timeout at all, query_timeout included; a few such clients took a
    pool for good.  Now such a request runs under query_timeout from its
    first byte, as a Query does."""

    QUERY_TIMEOUT = 1.0

    def start_one_server(self):
        """One server, shared (the entry's user=) by the holder, app under
        query_timeout, and the other, the superuser without one: its wait
        for the held server counts in query_timeout, as in PgBouncer."""
        pg = self.pg
        return self.start_pgwharf(
            settings={"pool_mode": "transaction", "default_pool_size": 1,
                      "query_wait_timeout": 60},
            databases={self.db: pg.conn_string(self.db, user=self.user,
                                               password=self.password)},
            users={self.user: "query_timeout=%gs" % self.QUERY_TIMEOUT})

    def login(self, px, user=None):
        s = socket.create_connection((px.host, px.port), timeout=10)
        s.settimeout(10)
        self.addCleanup(s.close)
        if user:
            hz.sync_login(s, user, self.db, self.pg.password)
        else:
            hz.sync_login(s, self.user, self.db, self.password)
        return s

    def sv_active(self, px):
        return [int(r["sv_active"]) for r in px.show("POOLS", database=self.db, user=self.user)]

    def check_held_then_freed(self, px, other, holder):
        # The other client waits for the one server, which the holder has.
        hz.wait_until(lambda: self.sv_active(px) == [1], 10, what="the holder linked")
        other.sendall(hz.query_msg("select 'other'"))
        t0 = time.monotonic()
        data, closed = hz.read_until_closed(holder, 10 * self.QUERY_TIMEOUT + 5)
        took = time.monotonic() - t0
        self.assertTrue(closed, "the holder was not closed %.0f s on with query_timeout = %s"
                        % (took, self.QUERY_TIMEOUT))
        self.assertEqual([e["C"] for e in hz.error_fields_in(data)], ["57014"], data)
        got = hz.read_until_ready(other)
        self.assertEqual([b for t, b in got if t == b"E"], [])
        self.assertEqual([hz.data_row(b) for t, b in got if t == b"D"], [[b"other"]])

    def test_header_of_a_parse(self):
        px = self.start_one_server()
        other, holder = self.login(px, self.pg.user), self.login(px)
        holder.sendall(b"P" + struct.pack("!I", 100))     # and nothing more
        self.check_held_then_freed(px, other, holder)

    def test_execute_and_flush_without_sync(self):
        px = self.start_one_server()
        other, holder = self.login(px, self.pg.user), self.login(px)
        sql = "select pg_sleep(60)"
        # Its server is closed, not cancelled: PostgreSQL notices only
        # when the sleep ends.
        self.addCleanup(self.pg.psql, "select pg_terminate_backend(pid) from pg_stat_activity "
                        "where query = '%s'" % sql)
        holder.sendall(hz.msg(b"P", b"\x00" + sql.encode() + b"\x00\x00\x00") +
                       hz.msg(b"B", b"\x00\x00" + b"\x00\x00" * 3) +
                       hz.msg(b"E", b"\x00\x00\x00\x00\x00") + hz.msg(b"H"))
        self.check_held_then_freed(px, other, holder)


class TestBufferReuse(LoadCase):
    """Free I/O buffers are kept up to 1024 and those unused for a whole
    trim period (1 s, proxy.c) go back to the system, down to 64."""

    CLIENTS = 300            # on 20 servers
    GATE_KEY = 7041

    def burst(self, px, console):
        """CLIENTS clients each with a query held in a buffer (20 at a gate
        on the servers, the rest waiting for one), then the gate opened and
        every answer read.  Returns the free iobufs right after."""
        socks = []
        for _ in range(self.CLIENTS):
            s = socket.create_connection((px.host, px.port), timeout=30)
            self.addCleanup(s.close)
            hz.sync_login(s, self.user, self.db, self.password)
            socks.append(s)
        gate = hz.Gate(self.pg, self.GATE_KEY)
        self.addCleanup(gate.close)
        for s in socks:
            s.sendall(hz.query_msg("select " + gate.sql()))
        pt.wait_pool(console, self.db, self.user, timeout=60, sv_active=20,
                     cl_waiting=self.CLIENTS - 20)
        self.assertGreater(self.iobuf(console)[0], self.CLIENTS - 20,
                           "iobufs held by the waiting clients")
        gate.open()
        for s in socks:
            hz.read_until_ready(s)        # its buffers are back on the free list
        free = self.iobuf(console)[1]
        for s in socks:
            s.close()
        print("buffer reuse: %d free iobufs after the burst" % free)
        return free

    @staticmethod
    def iobuf(console):
        row = pt.show(console, "MEM", name="iobuf")[0]
        return int(row["used"]), int(row["free"])

    def test_free_buffers_kept_through_a_burst(self):
        # No trim within the test (PGW_IOBUF_TRIM_PERIOD): what the free
        # list holds after the burst is what it kept, however long the
        # burst's end took to read on a loaded machine.
        px = self.start(env={"PGW_IOBUF_TRIM_PERIOD": "3600"})
        console = self.console_conn(px)   # logged in already: SHOW MEM at once
        free = self.burst(px, console)
        # Everything the burst held came back to the free list and stayed:
        # not unmapped at a fixed cap of 64.
        self.assertGreater(free, 64, "free iobufs right after the burst")
        self.assertLessEqual(free, 1024)
        self.assertEqual(px.psql("select 1", user=self.user), "1")

    def test_unused_free_buffers_returned(self):
        px = self.start()                 # the 1 s trim period
        console = self.console_conn(px)
        self.burst(px, console)
        # Down to the floor of 64, plus the buffers this polling console
        # takes each time.
        pt.wait_until(lambda: self.iobuf(console)[1] <= 64 + 2, timeout=30,
                      what="free iobufs trimmed to 64")
        self.assertEqual(px.psql("select 1", user=self.user), "1")


def with_nofile(soft, hard):
    """Start arguments running pgwharf under RLIMIT_NOFILE soft:hard."""
    return {"binary": "prlimit",
            "args": ["--nofile=%d:%d" % (soft, hard), "--", os.environ["PGW_BINARY"]]}


def nofile_of(pid):
    with open("/proc/%d/limits" % pid) as f:
        for line in f:
            if line.startswith("Max open files"):
                return int(line.split()[3])
    raise AssertionError("no open-files limit for pid %d" % pid)


class TestFdExhaustion(LoadCase):
    def test_at_rlimit_nofile_no_spin_no_log_flood(self):
        # Silent connections must be accepted to reach EMFILE.  pgwharf
        # sizes its client cap by the limit it starts with; lowering the
        # limit afterwards makes accept() itself fail.
        px = self.start(default_pool_size=2, tcp_defer_accept=0)
        resource.prlimit(px.pid, resource.RLIMIT_NOFILE, (40, 40))
        self.assertEqual(px.psql("select 1", user=self.user), "1")
        socks = []
        try:
            for _ in range(60):
                socks.append(socket.create_connection((px.host, px.port), timeout=5))
            hz.wait_until(lambda: "event=accept_paused" in px.log(), 20,
                          what="accept() failing for want of descriptors")
            c0, l0 = hz.cpu_seconds(px.pid), len(px.log())
            time.sleep(2.0)
            cpu = hz.cpu_seconds(px.pid) - c0
            logged = len(px.log()) - l0
            print("at RLIMIT_NOFILE: %.2f CPU-s in 2 s, %d bytes of log" % (cpu, logged))
            self.assertLess(cpu, 0.5, "pgwharf spins at RLIMIT_NOFILE (%.2f CPU-s in 2 s); "
                            "log tail:\n%s" % (cpu, px.log_tail(3)))
            self.assertLess(logged, 64 * 1024, "pgwharf floods its log at RLIMIT_NOFILE "
                            "(%d bytes in 2 s)" % logged)
        finally:
            for s in socks:
                s.close()
        hz.wait_until(lambda: px.psql("select 'back'", user=self.user, check=False).stdout.strip()
                      == "back", 20, what="serving again after fds free up")


    def test_no_descriptor_for_a_server_is_not_the_backends_failure(self):
        # pgwharf out of descriptors when it opens a server connection:
        # libpq's socket() fails.  That counted as the backend's failure
        # (08006; the breaker opened for every pool on it and stayed open
        # after descriptors came back).  Now the waiter gets 53300 and the
        # breaker is left alone.
        px = self.start(default_pool_size=2, tcp_defer_accept=0, breaker_threshold=1,
                        query_wait_timeout=30)
        console = self.console_conn(px)
        c = socket.create_connection((px.host, px.port), timeout=30)
        self.addCleanup(c.close)
        hz.sync_login(c, self.user, self.db, self.password)
        console.cursor().execute("RECONNECT")         # no idle server left
        pt.wait_until(lambda: not pt.show(console, "SERVERS"), 10, what="servers closed")
        fds = len(os.listdir("/proc/%d/fd" % px.pid))
        old = resource.prlimit(px.pid, resource.RLIMIT_NOFILE)
        resource.prlimit(px.pid, resource.RLIMIT_NOFILE, (fds, old[1]))
        try:
            rows, errs = hz.simple_query(c, "select 1")
        finally:
            resource.prlimit(px.pid, resource.RLIMIT_NOFILE, old)
        self.assertEqual([(e.get("C"), e.get("M")) for e in errs],
                         [("53300", "no server connection: pgwharf has no file descriptor "
                           "left (open-files limit)")])
        self.assertEqual([b["state"] for b in pt.show(console, "BREAKERS")], ["closed"])
        self.assertIn("not the backend's failure", px.log())
        self.assertEqual(hz.simple_query(c, "select 'back'"), ([[b"back"]], []))


    def test_no_descriptor_for_a_name_lookup_is_not_the_names_failure(self):
        # pgwharf out of descriptors while it looks up a server's host
        # name: glibc cannot open /etc/hosts ("Name or service not known",
        # errno EMFILE).  That was kept as the name's failure for
        # dns_nxdomain_ttl (every login refused 08001 long after the
        # descriptors came back) and counted for the breaker.  Now it is
        # answered as socket()'s EMFILE: 53300, nothing kept.
        px = self.start_pgwharf(
            settings={"tcp_defer_accept": 0, "dns_nxdomain_ttl": 3600},
            databases={"byname": pt.entry_conninfo(host="localhost", port=self.pg.port,
                                                   dbname=self.db)})
        console = self.console_conn(px)
        cm = self.login_with_no_descriptor_left(
            px, lambda c: hz.sync_login(c, self.user, "byname", self.password))
        self.assertEqual((cm.exception.fields.get("C"), cm.exception.fields.get("M")),
                         ("53300", "no server connection: pgwharf has no file descriptor "
                          "left (open-files limit)"), px.log_tail())
        self.assertIn("event=server_resolve_failed backend=localhost:%d reason=\"no file "
                      "descriptor left" % self.pg.port, px.log())
        self.assertEqual(px.psql("select 'back'", db="byname", user=self.user), "back")
        self.assertEqual([(b["backend"], b["failures"], b["last_error"])
                          for b in pt.show(console, "BREAKERS")
                          if b["backend"].startswith("localhost:")],
                         [("localhost:%d" % self.pg.port, 0, "")])


    def test_no_descriptor_for_a_replication_clients_lookup_fails_it_once(self):
        # A replication client waits for its own server; the lookup of
        # its host name fails for want of a descriptor.  It was left
        # queued, and the kick that followed started the next lookup at
        # once: ~10 000 lookups (two warnings each) a second for as long
        # as the descriptors were short.  It gets the 53300 now, once.
        px = self.start_pgwharf(
            settings={"tcp_defer_accept": 0, "dns_nxdomain_ttl": 3600},
            databases={"replication": pt.entry_conninfo(host="localhost", port=self.pg.port,
                                                        dbname=self.db)})
        cm = self.login_with_no_descriptor_left(
            px, lambda c: hz.sync_login(c, self.user, "replication", self.password,
                                        replication="true"))
        self.assertEqual(cm.exception.fields.get("C"), "53300", px.log_tail())
        # (a spin would have logged more meanwhile: the console's round trip
        # comes after it, on the same loop)
        self.assertTrue(px.admin("SHOW VERSION"))
        self.assertEqual(px.log().count("not the backend's failure"), 1, px.log_tail())

    def login_with_no_descriptor_left(self, px, login):
        """A client accepted, then pgwharf's open-files limit set to its
        lowest free descriptor while login(client socket) runs, which must
        raise PgError (restored after): the assertRaises context."""
        fd_dir = "/proc/%d/fd" % px.pid
        c = socket.create_connection((px.host, px.port), timeout=30)
        self.addCleanup(c.close)
        # (counting descriptors raced with the close of the harness's
        # start-up probe: one closed as c's came, and the count stayed)
        pt.wait_until(lambda: self.accepted_and_settled(px, c), 10,
                      what="the client accepted, the start-up probe's socket closed")
        used = set(int(fd) for fd in os.listdir(fd_dir))
        lowest_free = min(set(range(len(used) + 1)) - used)
        old = resource.prlimit(px.pid, resource.RLIMIT_NOFILE)
        resource.prlimit(px.pid, resource.RLIMIT_NOFILE, (lowest_free, old[1]))
        try:
            with self.assertRaises(hz.PgError) as cm:
                login(c)
        finally:
            resource.prlimit(px.pid, resource.RLIMIT_NOFILE, old)
        return cm

    @staticmethod
    def accepted_and_settled(px, c):
        """Has px a socket of its own for c's connection, and none whose
        other end has closed (CLOSE_WAIT: the harness's start-up probe,
        which px is still to close)?"""
        rows = hz.socket_rows(px.pid)
        return (all(r.state != "CLOSE_WAIT" for r in rows)
                and any(r.remote[1] == c.getsockname()[1] for r in rows))


class TestFdBudget(LoadCase):
    def test_soft_limit_raised_to_the_hard_limit(self):
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        if hard == resource.RLIM_INFINITY or hard < 1024:
            self.skipTest("hard open-files limit %s" % hard)
        px = self.start(nofile=(64, hard), max_client_conn=500, default_pool_size=4)
        self.assertEqual(nofile_of(px.pid), hard)
        self.assertIn("event=fd_limit nofile=%d raised=yes" % hard, px.log())
        socks = []
        self.addCleanup(lambda: [s.close() for s in socks])
        for _ in range(150):             # more than the 64 it started with
            s = socket.create_connection((px.host, px.port), timeout=10)
            socks.append(s)
            hz.sync_login(s, self.user, self.db, self.password)
        self.assertEqual(px.psql("select 'ok'", user=self.user), "ok")

    def test_clients_capped_so_servers_can_still_open(self):
        # tcp_defer_accept = 0: the start-up probe's session is gone at once
        # and cannot take a slot.
        px = self.start(nofile=(200, 200), max_client_conn=1000, default_pool_size=4,
                        tcp_defer_accept=0)
        m = re.search(r"level=warning event=fd_limit nofile=200 .*client_cap=(\d+)", px.log())
        self.assertIsNotNone(m, "no fd_limit warning:\n" + px.log_tail(5))
        cap = int(m.group(1))
        self.assertTrue(0 < cap < 200 - 3 * 4, cap)   # three databases' pools kept aside
        socks = []
        self.addCleanup(lambda: [s.close() for s in socks])
        for _ in range(cap):
            s = socket.create_connection((px.host, px.port), timeout=10)
            socks.append(s)
            hz.sync_login(s, self.user, self.db, self.password)
        extra = socket.create_connection((px.host, px.port), timeout=10)
        self.addCleanup(extra.close)
        with self.assertRaises(hz.PgError) as cm:
            hz.sync_login(extra, self.user, self.db, self.password)
        self.assertEqual(cm.exception.sqlstate, "53300")
        self.assertEqual(cm.exception.fields["M"], "no more connections allowed (open-files limit)")
        # With every client slot taken, four transactions at once still get
        # four servers: the clients did not eat the pools' descriptors.
        pids = set()
        for s in socks[:4]:
            for sql in ("begin", "select pg_backend_pid()"):
                rows, errs = hz.simple_query(s, sql)
                self.assertEqual(errs, [], "query failed")
                pids.update(r[0] for r in rows)
        self.assertEqual(len(pids), 4, pids)


if __name__ == "__main__":
    unittest.main()
