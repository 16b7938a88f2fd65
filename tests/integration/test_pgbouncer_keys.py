"""PgBouncer 1.24/1.25 general keys that pgwharf once refused or ignored:
login_notify_message, pool_idle_timeout, dns_nxdomain_ttl, and Unix
sockets in the abstract namespace (unix_socket_dir and host= starting
with "@").
"""

import errno
import os
import shutil
import socket
import tempfile
import threading
import time
import unittest

import psycopg2

import pgwharf_test as pt
import pgw_hardening as hz


def config_value(conn, key):
    for r in pt.show_table(conn, "CONFIG")[1]:
        if r["key"] == key:
            return r["value"]
    return None


def login_messages(px, user, password, db):
    """Every backend message of a raw login up to its first ReadyForQuery:
    [(type, body)], from the startup packet on."""
    sock = socket.create_connection((px.host, px.port), timeout=30)
    try:
        sock.sendall(hz.startup_packet(user, db))
        got, state = [], {}
        while True:
            t, body = hz.recv_msg(sock)
            got.append((t, body))
            if t == b"E":
                raise hz.PgError(hz.parse_fields(body))
            if t == b"R":
                reply = hz.auth_reply(body, user, password, state)
                if reply:
                    sock.sendall(reply)
            if t == b"Z":
                return got
    finally:
        sock.close()


class TestLoginNotifyMessage(pt.PgwharfTestCase):
    """login_notify_message (PgBouncer 1.25): a NOTICE (SQLSTATE 00000)
    between AuthenticationOk and the ReadyForQuery of the welcome, on pool
    logins only; empty (the default) = none; a reload changes it for the
    logins after it."""

    MSG = "you are connected to pgwharf, not to PostgreSQL directly"

    def notices_of(self, types_bodies):
        return [hz.parse_fields(b) for t, b in types_bodies if t == b"N"]

    def test_notice_in_welcome_order_and_fields(self):
        for mode in ("session", "transaction"):
            with self.subTest(mode=mode):
                px = self.start_pgwharf(settings={"login_notify_message": self.MSG,
                                                  "pool_mode": mode})
                # twice: the second login of transaction mode is welcomed
                # without a server (the pool's record of one)
                for _ in range(2):
                    got = login_messages(px, self.pg.user, self.pg.password, self.pg.database)
                    types = [t for t, _ in got]
                    auth_ok = types.index(b"R", max(i for i, t in enumerate(types)
                                                    if t == b"R"))
                    self.assertEqual(got[auth_ok][1][:4], b"\x00\x00\x00\x00")
                    notices = [i for i, t in enumerate(types) if t == b"N"]
                    self.assertEqual(len(notices), 1, types)
                    self.assertGreater(notices[0], auth_ok)
                    self.assertEqual(types[-1], b"Z")
                    f = hz.parse_fields(got[notices[0]][1])
                    self.assertEqual(f.get("S"), "NOTICE")
                    self.assertEqual(f.get("V"), "NOTICE")
                    self.assertEqual(f.get("C"), "00000")
                    self.assertEqual(f.get("M"), self.MSG)
                px.stop()

    def notice_texts(self, px, db=None):
        got = login_messages(px, self.pg.user, self.pg.password, db or self.pg.database)
        return [f.get("M") for f in self.notices_of(got)]

    def test_reload_changes_it_not_on_the_console(self):
        px = self.start_pgwharf(settings={"login_notify_message": self.MSG})
        self.assertEqual(self.notice_texts(px), [self.MSG])
        # not on the admin console (its welcome is its own, as PgBouncer's)
        self.assertEqual(self.notice_texts(px, db="pgbouncer"), [])
        console = self.console_conn(px)
        self.assertEqual(config_value(console, "login_notify_message"), self.MSG)

        px.settings["login_notify_message"] = "second message"
        px.reload()
        pt.wait_until(lambda: config_value(console, "login_notify_message") == "second message",
                      what="reload applied")
        self.assertEqual(self.notice_texts(px), ["second message"])

        px.settings["login_notify_message"] = None   # back to the default: none
        px.reload()
        pt.wait_until(lambda: config_value(console, "login_notify_message") == "",
                      what="reload applied")
        self.assertEqual(self.notice_texts(px), [])

    def test_psql_prints_it(self):
        # (psycopg2 sets its notice handler after the login: libpq prints a
        # login's notices on stderr, as psql does)
        px = self.start_pgwharf(settings={"login_notify_message": self.MSG})
        cp = pt._run_psql(px.host, px.port, self.pg.user, self.pg.password,
                          self.pg.database, "select 7", check=False)
        self.assertEqual(cp.returncode, 0, cp.stderr)
        self.assertIn("NOTICE:  " + self.MSG, cp.stderr)
        self.assertIn("7", cp.stdout)


class TestPoolIdleTimeout(pt.PgwharfTestCase):
    """pool_idle_timeout (PgBouncer 1.25): any pool (a [databases] entry's
    too, not only the "*" entry's) with no client and no server for that
    long is freed; 0 (the default) = never.  A pool with a waiter or a
    server still connecting is in use and stays."""

    def pools(self, conn):
        return {(r["database"], r["user"]) for r in pt.show_table(conn, "POOLS")[1]}

    def stats_lines(self, px):
        return px.log().count("event=stats ")

    def wait_ticks(self, px, n=3):
        """Until n more stats lines (stats_period = 1 s) are logged: the
        pool maintenance (every 1 s) has run at least n - 1 times since."""
        start = self.stats_lines(px)
        pt.wait_until(lambda: self.stats_lines(px) >= start + n, timeout=30,
                      what="%d stats periods" % n)

    def test_empty_pool_freed_after_timeout_and_not_with_0(self):
        key = (self.pg.database, self.pg.user)
        px = self.start_pgwharf(settings={"pool_mode": "transaction", "stats_period": 1,
                                          "server_idle_timeout": "1s",
                                          "pool_idle_timeout": 0})
        console = self.console_conn(px)
        self.assertEqual(px.psql("select 1"), "1")
        self.assertIn(key, self.pools(console))
        # the client has left; its server goes after server_idle_timeout
        px.wait_for_log(r"event=server_close .*reason=server_idle_timeout", timeout=30)
        pt.wait_until(lambda: (pt.pool_row(console, *key) or {}).get("sv_idle") == 0,
                      what="no server left")
        # 0: the pool stays, empty, tick after tick
        self.wait_ticks(px)
        self.assertIn(key, self.pools(console))
        self.assertNotIn("event=pool_free", px.log())

        px.settings["pool_idle_timeout"] = "1s"
        px.reload()
        pt.wait_until(lambda: key not in self.pools(console), timeout=30, interval=0.1,
                      what="the empty pool freed")
        px.wait_for_log(r"event=pool_free db=%s user=%s reason=pool_idle_timeout" % key)
        # the console's own pool is not one; a new client makes the pool again
        self.assertEqual(px.psql("select 2"), "2")
        self.assertIn(key, self.pools(console))

    def test_pool_with_idle_servers_stays(self):
        # "no client connections and no server connections": an idle server
        # keeps its pool (server_idle_timeout closes it first)
        key = (self.pg.database, self.pg.user)
        px = self.start_pgwharf(settings={"pool_mode": "transaction", "stats_period": 1,
                                          "server_idle_timeout": 0,
                                          "pool_idle_timeout": "1s"})
        console = self.console_conn(px)
        self.assertEqual(px.psql("select 1"), "1")
        self.wait_ticks(px)
        row = pt.pool_row(console, *key)
        self.assertIsNotNone(row)
        self.assertEqual(row["sv_idle"], 1)

    def test_not_freed_while_a_server_connects(self):
        # A pool no client holds whose only server is still logging in
        # (its connect_query waits on a gate) past pool_idle_timeout: it
        # stays, and the server, once through, is its idle server.
        cq = "select pg_advisory_xact_lock_shared(7201)"
        px = self.start_pgwharf(
            settings={"pool_mode": "transaction", "stats_period": 1, "min_pool_size": 1,
                      "pool_idle_timeout": "1s", "server_idle_timeout": 0},
            databases={"warm": self.pg.conn_string(self.pg.database, connect_query=cq),
                       self.pg.database: self.pg.conn_string()})
        console = self.console_conn(px)
        self.assertEqual(px.psql("select 1", db="warm"), "1")   # makes the pool
        pt.wait_pool(console, "warm", self.pg.user, sv_idle=1)
        gate = hz.Gate(self.pg, 7201)
        self.addCleanup(gate.close)
        # the idle server goes; min_pool_size opens another, held by the gate
        console.cursor().execute("RECONNECT warm")
        self.pg.wait_running("7201", lock_wait=True)
        self.wait_ticks(px)
        row = pt.pool_row(console, "warm", self.pg.user)
        self.assertIsNotNone(row, self.pools(console))
        self.assertEqual(row["sv_idle"], 0)
        self.assertNotIn("event=pool_free", px.log())
        gate.open()
        pt.wait_pool(console, "warm", self.pg.user, timeout=30, sv_idle=1)
        self.wait_ticks(px)
        self.assertIsNotNone(pt.pool_row(console, "warm", self.pg.user))
        self.assertEqual(px.psql("select 3", db="warm"), "3")


class TestDnsNxdomainTtl(pt.PgwharfTestCase):
    """dns_nxdomain_ttl: a host name that did not resolve is not looked up
    again for that long; logins meanwhile fail at once with the error of
    the lookup.  0 = not kept (each attempt looks it up, until the breaker
    opens).  Names under the reserved .invalid TLD never resolve; the
    lookups are counted by their server_resolve_failed lines."""

    HOST = "pgwtest2.invalid"

    def start(self, **settings):
        settings.setdefault("breaker_threshold", 3)
        return self.start_pgwharf(
            settings=settings,
            databases={"nx": "host=%s port=%d dbname=%s" % (self.HOST, self.pg.port,
                                                             self.pg.database),
                       self.pg.database: self.pg.conn_string()})

    def login_error(self, px):
        sock = socket.create_connection((px.host, px.port), timeout=30)
        try:
            with self.assertRaises(hz.PgError) as cm:
                hz.sync_login(sock, self.pg.user, "nx", self.pg.password)
            return cm.exception.fields.get("C"), cm.exception.fields.get("M")
        finally:
            sock.close()

    def lookups(self, px):
        return px.log().count("event=server_resolve_failed")

    def test_failure_cached_and_logins_fail_fast(self):
        px = self.start(dns_nxdomain_ttl=3600)
        first = self.login_error(px)
        self.assertEqual(first[0], "08001")
        self.assertIn('could not translate host name "%s"' % self.HOST, first[1])
        for _ in range(5):
            self.assertEqual(self.login_error(px), first)
        self.assertEqual(self.lookups(px), 1, px.log_tail())
        # the breaker counted the one lookup only
        rows = pt.show_table(self.console_conn(px), "BREAKERS")[1]
        row = [r for r in rows if r["backend"].startswith(self.HOST)][0]
        self.assertEqual(row["state"], "closed")
        self.assertEqual(px.psql("select 1"), "1")        # other databases unaffected

    def test_show_dns_hosts_counts_down_to_the_next_lookup(self):
        # SHOW DNS_HOSTS' ttl is the seconds until the name is looked up
        # again: after a failed lookup, what is left of dns_nxdomain_ttl
        # (it said 0 while no lookup was made for the hour).
        px = self.start(dns_nxdomain_ttl=3600)
        self.login_error(px)
        rows = [r for r in px.show("DNS_HOSTS") if r["hostname"] == self.HOST]
        self.assertEqual(len(rows), 1, px.show("DNS_HOSTS"))
        self.assertIn(int(rows[0]["ttl"]), range(3500, 3601), rows)
        self.assertEqual(rows[0]["addrs"], "")
        self.login_error(px)
        self.assertEqual(self.lookups(px), 1, px.log_tail())

    def test_looked_up_again_once_expired(self):
        px = self.start(dns_nxdomain_ttl="1s", breaker_threshold=1000)
        first = self.login_error(px)
        self.assertEqual(self.lookups(px), 1)

        def relooked():
            self.assertEqual(self.login_error(px), first)
            return self.lookups(px) >= 2
        pt.wait_until(relooked, timeout=30, interval=0.1, what="a new lookup after 1 s")
        self.assertEqual(self.lookups(px), 2, px.log_tail())

    def start_failing(self, var, **settings):
        """pgwharf with tests/nss_gate.c preloaded and an entry "byname" on
        localhost: each time the returned path is created, the next call
        var names fails once (nss_gate.c).  (px, path)."""
        d = tempfile.mkdtemp(prefix="pgw-dns-")
        self.addCleanup(shutil.rmtree, d, True)
        fail = os.path.join(d, "fail")
        settings.setdefault("dns_nxdomain_ttl", 3600)
        px = self.start_pgwharf(
            start=False, settings=settings,
            databases={"byname": "host=localhost port=%d dbname=%s"
                                 % (self.pg.port, self.pg.database)})
        px.extra_env.update(pt.nss_gate_env(**{var: fail}))
        px.start()
        return px, fail

    def assert_not_the_backends_failure(self, px):
        rows = pt.show_table(self.console_conn(px), "BREAKERS")[1]
        self.assertEqual([(r["failures"], r["last_error"]) for r in rows
                          if r["backend"].startswith("localhost:")], [(0, "")])

    def test_a_lookup_out_of_memory_is_not_kept_as_the_names_failure(self):
        # getaddrinfo's EAI_MEMORY (glibc short of memory) was kept as the
        # name's failure for dns_nxdomain_ttl, as an NXDOMAIN: the login
        # failed 08001, as would every other for the hour.  Nothing is kept
        # now and the breaker is left alone: the name is looked up again
        # after half a second, the client waiting for it.
        px, fail = self.start_failing("PGW_GETADDRINFO_FAIL")
        open(fail, "w").close()
        self.assertEqual(px.psql("select 'served'", db="byname"), "served")
        self.assertFalse(os.path.exists(fail))          # the one lookup failed
        self.assertIn('event=server_resolve_failed backend=localhost:%d reason="could not '
                      'translate host name \\"localhost\\" to address: Memory allocation '
                      'failure" retry_in=0.5' % self.pg.port, px.log())
        self.assert_not_the_backends_failure(px)

    def test_a_lookup_whose_thread_cannot_start_is_made_again(self):
        # No thread for the lookup (pthread_create EAGAIN: the threads
        # limit, or memory): the request was dropped without a word, the
        # lookup made again at the next maintenance tick.  It is said now
        # (the warning is what fails before), and made again after half a
        # second, as after EAI_MEMORY, the client waiting for it.  The
        # warning says pthread_create's error (it did not: session 46).
        px, fail = self.start_failing("PGW_THREAD_FAIL", query_wait_timeout=10)
        open(fail, "w").close()
        self.assertEqual(px.psql("select 'served'", db="byname"), "served")
        self.assertFalse(os.path.exists(fail))          # the one thread failed
        self.assertIn('event=server_resolve_failed backend=localhost:%d reason="could not '
                      'start a thread for the lookup: %s" retry_in=0.5'
                      % (self.pg.port, os.strerror(errno.EAGAIN)), px.log())
        self.assert_not_the_backends_failure(px)

    def test_a_wait_timeout_under_lookups_short_of_memory_names_the_lookup(self):
        # Every lookup of the name fails for want of memory (nss_gate.c's
        # "keep"): it is made again each half second, the client waiting
        # for a server meanwhile.  Its query_wait_timeout said only that
        # it waited (57014), nothing of the lookup; it adds the lookup's
        # error now, as it adds the breaker's where that is open.  The
        # SQLSTATE stays the timeout's.
        px, fail = self.start_failing("PGW_GETADDRINFO_FAIL", query_wait_timeout=2)
        with open(fail, "w") as f:
            f.write("keep")
        self.addCleanup(lambda: os.path.exists(fail) and os.unlink(fail))
        sock = socket.create_connection((px.host, px.port), timeout=30)
        self.addCleanup(sock.close)
        with self.assertRaises(hz.PgError) as cm:
            hz.sync_login(sock, self.pg.user, "byname", self.pg.password)
        code, msg = cm.exception.fields.get("C"), cm.exception.fields.get("M")
        self.assertEqual(code, "57014", msg)
        self.assertIn("query_wait_timeout: waited", msg)
        self.assertIn('host name lookup failing (could not translate host name "localhost" '
                      'to address: Memory allocation failure)', msg)
        self.assertTrue(os.path.exists(fail))           # kept: every lookup failed
        self.assert_not_the_backends_failure(px)

    def test_a_wait_timeout_during_a_slow_lookup_does_not_name_an_earlier_memory_failure(self):
        # The lookups failed for want of memory, then memory came back and
        # the next lookup is merely slow (held at nss_gate.c's gate): a
        # client's query_wait_timeout named the earlier EAI_MEMORY, kept
        # in dns_retry_error until a lookup is answered (review r4).
        px, fail = self.start_failing("PGW_GETADDRINFO_FAIL", query_wait_timeout=2)
        fifo = os.path.join(os.path.dirname(fail), "gate")
        px.stop()
        px.extra_env["PGW_GETADDRINFO_GATE"] = fifo
        px.start()
        with open(fail, "w") as f:
            f.write("keep")
        a = socket.create_connection((px.host, px.port), timeout=30)
        self.addCleanup(a.close)
        with self.assertRaises(hz.PgError) as cm:
            hz.sync_login(a, self.pg.user, "byname", self.pg.password)
        self.assertIn("Memory allocation failure", cm.exception.fields.get("M"))
        os.mkfifo(fifo)
        os.unlink(fail)
        b = socket.create_connection((px.host, px.port), timeout=30)
        self.addCleanup(b.close)
        got = []

        def login():
            try:
                hz.sync_login(b, self.pg.user, "byname", self.pg.password)
            except hz.PgError as e:
                got.append(e.fields)
        bg = pt.Background(login)
        fd = pt.nss_gate_wait(fifo, what="the lookup held at the gate")
        self.addCleanup(lambda: os.path.exists(fifo) and pt.nss_gate_release(fifo, fd))
        bg.join(30)
        self.assertEqual(got[0].get("C"), "57014")
        self.assertNotIn("Memory allocation failure", got[0].get("M"))

    def test_show_dns_hosts_lists_a_name_waiting_to_be_looked_up_again(self):
        # A name whose lookups fail for want of memory is looked up every
        # half second: SHOW DNS_HOSTS listed no row for it (README: a row
        # per name "from its first lookup on"), nor SHOW LISTS' dns_names.
        px, fail = self.start_failing("PGW_GETADDRINFO_FAIL", query_wait_timeout=5)
        with open(fail, "w") as f:       # each lookup fails (kept: nss_gate.c)
            f.write("keep")
        self.addCleanup(lambda: os.path.exists(fail) and os.unlink(fail))
        sock = socket.create_connection((px.host, px.port), timeout=30)
        self.addCleanup(sock.close)

        def login():                     # waits for a server (57014 at 5 s)
            try:
                hz.sync_login(sock, self.pg.user, "byname", self.pg.password)
            except (hz.PgError, OSError):
                pass
        waiter = threading.Thread(target=login)
        waiter.start()
        self.addCleanup(waiter.join)
        pt.wait_until(lambda: px.log().count("retry_in=0.5") >= 2, timeout=10,
                      what="two lookups short of memory")
        rows = [r for r in px.show("DNS_HOSTS") if r["hostname"] == "localhost"]
        self.assertEqual(len(rows), 1, px.show("DNS_HOSTS"))
        self.assertIn(int(rows[0]["ttl"]), (0, 1), rows)
        self.assertEqual(rows[0]["addrs"], "")

    def test_zero_does_not_cache(self):
        px = self.start(dns_nxdomain_ttl=0)
        code, msg = self.login_error(px)
        self.assertEqual(code, "08001")
        self.assertIn("could not translate host name", msg)
        # each attempt looked the name up again, until the breaker opened
        # (3 failures; a probe after its cooldown may add one)
        self.assertGreaterEqual(self.lookups(px), 3, px.log_tail())


def abstract_sockets():
    """The names of the abstract Unix sockets listening now ("@..."), from
    /proc/net/unix."""
    names = set()
    with open("/proc/net/unix") as f:
        next(f)
        for line in f:
            parts = line.split()
            if len(parts) >= 8 and parts[7].startswith("@"):
                names.add(parts[7])
    return names


class TestAbstractUnixSockets(pt.PgwharfTestCase):
    """unix_socket_dir = @name: pgwharf listens on the Linux abstract
    socket "@name/.s.PGSQL.<port>" (no file; unix_socket_mode and
    unix_socket_group do not apply); libpq reaches it with host=@name.  A
    [databases] host=@name is PostgreSQL's abstract socket, passed to
    libpq untouched."""

    def test_listen_on_an_abstract_socket(self):
        tmp = self.start_pgwharf(start=False)          # only for its temp dir
        name = "@" + tmp.dir + "/abs"
        px = self.start_pgwharf(settings={"unix_socket_dir": name,
                                          "unix_socket_mode": "0600",
                                          "unix_socket_group": "no-such-group-pgwharf"})
        sock_name = "%s/.s.PGSQL.%d" % (name, px.port)
        self.assertIn(sock_name, abstract_sockets())
        self.assertFalse(os.path.exists(sock_name[1:]))
        self.assertFalse(os.path.exists(tmp.dir + "/abs"))
        px.wait_for_log(r"event=listening addr=%s" % sock_name.replace(".", r"\."))
        out = pt._run_psql(name, px.port, self.pg.user, self.pg.password, self.pg.database,
                           "select 'via ' || 'abstract'")
        self.assertEqual(out, "via abstract")
        conn = psycopg2.connect(host=name, port=px.port, user=self.pg.user,
                                password=self.pg.password, dbname=self.pg.database)
        conn.autocommit = True
        self.addCleanup(conn.close)
        self.assertEqual(pt.one(conn, "select 5"), 5)
        console = self.console_conn(px)
        addrs = {r["addr"] for r in pt.show_table(console, "CLIENTS")[1]
                 if r["database"] == self.pg.database}
        self.assertEqual(addrs, {"unix"})
        conn.close()
        console.close()
        # stop and start again: the name went with the process, nothing is
        # left behind, and the new process can take it
        self.assertEqual(px.stop(), 0)
        self.assertNotIn(sock_name, abstract_sockets())
        px.start()
        self.assertIn(sock_name, abstract_sockets())
        self.assertEqual(pt._run_psql(name, px.port, self.pg.user, self.pg.password,
                                      self.pg.database, "select 6"), "6")
        self.assertEqual(px.stop(), 0)
        self.assertNotIn(sock_name, abstract_sockets())
        self.assertEqual(os.listdir(tmp.dir) if os.path.isdir(tmp.dir) else [], [])

    def test_server_on_an_abstract_socket(self):
        # PostgreSQL 14+ listens on an abstract socket too: the test
        # cluster gets one for this test, from its command line (nothing
        # written to its config), and a plain restart takes it away again.
        name = "@%s-abs" % self.pg.sockdir
        self.addCleanup(self.pg.restart)
        self.pg.stop()
        self.pg.pg_ctl("start", "-w", "-t", "60", "-l", self.pg.logfile, "-o",
                       "-c unix_socket_directories='%s,%s'" % (self.pg.sockdir, name))
        self.pg.wait_ready()
        sock_name = "%s/.s.PGSQL.%d" % (name, self.pg.port)
        self.assertIn(sock_name, abstract_sockets())
        px = self.start_pgwharf(
            databases={"abs": "host=%s port=%d dbname=%s" % (name, self.pg.port,
                                                             self.pg.database)})
        out = px.psql("select inet_server_addr() is null, current_setting('port')", db="abs")
        self.assertEqual(out, "t|%d" % self.pg.port)    # no TCP address: a Unix socket
        console = self.console_conn(px)
        rows = pt.show_table(console, "DATABASES")[1]
        self.assertEqual([r["host"] for r in rows if r["name"] == "abs"], [name])
        servers = [r for r in pt.show_table(console, "SERVERS")[1] if r["database"] == "abs"]
        self.assertEqual({r["addr"] for r in servers}, {"unix"})
        breakers = {r["backend"] for r in pt.show_table(console, "BREAKERS")[1]}
        self.assertIn("%s:%d" % (name, self.pg.port), breakers)
        self.assertNotIn("server_resolve", px.log())    # not taken for a host name


class TestEntryWithoutHost(pt.PgwharfTestCase):
    def test_an_entry_without_host_uses_unix_socket_dir(self):
        # PgBouncer: unix_socket_dir "applies to both the listening socket
        # and to server connections"; an entry with no host reaches
        # PostgreSQL's socket there (Debian's sample's foodb =).  pgwharf
        # left it to libpq's default directory, /var/run/postgresql.
        px = self.start_pgwharf(
            settings={"unix_socket_dir": self.pg.sockdir},
            databases={"sock": "port=%d dbname=%s" % (self.pg.port, self.pg.database)})
        out = px.psql("select inet_server_addr() is null, current_setting('port')", db="sock")
        self.assertEqual(out, "t|%d" % self.pg.port)    # no TCP address: the Unix socket


class TestServerCheckQueryEmpty(pt.PgwharfTestCase):
    """server_check_query = <empty> (PgBouncer 1.24's default): the check
    is an empty query, not SQL text "<empty>" (which failed every check
    and closed every reused server)."""

    def test_empty_check_keeps_the_server(self):
        px = self.start_pgwharf(settings={"pool_mode": "transaction", "default_pool_size": 1,
                                          "server_check_query": "<empty>",
                                          "server_check_delay": 0})
        conn = psycopg2.connect(px.dsn(), connect_timeout=10)
        conn.autocommit = True
        console = psycopg2.connect(px.dsn(db="pgbouncer"), connect_timeout=10)
        console.autocommit = True
        try:
            ids = []
            for _ in range(3):       # each reuse after the first is checked
                pt.one(conn, "select 1")
                ids.append([r["id"] for r in pt.show(console, "SERVERS")])
            self.assertEqual(len(ids[0]), 1)
            self.assertEqual(ids[0], ids[1])
            self.assertEqual(ids[1], ids[2])
            self.assertEqual(config_value(console, "server_check_query"), "<empty>")
        finally:
            conn.close()
            console.close()
        self.assertNotIn("server_check_query failed", px.log())


class TestQueryWaitTimeoutPerEntry(pt.PgwharfTestCase):
    """query_wait_timeout in [databases] and [users] (PgBouncer 1.25): a
    pool's clients wait for a server under the [users] entry's value, else
    the [databases] entry's, else the general one; -1 = not set.  (A
    pgbouncer.ini with it did not load.)  The general value is 0 (wait
    without limit) where an entry's should apply: a wait that ends at all
    ended at the entry's value."""

    def wait_error(self, px, user, db):
        """A client of (db, user) whose pool's one server is held: the
        SQLSTATE, seconds its query waited and the message.  A wait without
        limit ends in the socket's timeout (60 s, a guard only)."""
        password = self.pg.app_password if user == self.pg.app_user else self.pg.password
        holder = psycopg2.connect(px.dsn(db=db, user=user, password=password),
                                  connect_timeout=10)
        waiter = socket.create_connection((px.host, px.port), timeout=60)
        try:
            hz.sync_login(waiter, user, db, password)
            pt.one(holder, "select 1")          # holds the pool's only server
            t0 = time.monotonic()
            try:
                rows, errors = hz.simple_query(waiter, "select 2")
            except socket.timeout:
                self.fail("%s/%s: still waiting for the server after 60 s" % (db, user))
            self.assertEqual(rows, [])
            self.assertEqual(len(errors), 1, errors)
            return errors[0].get("C"), time.monotonic() - t0, errors[0].get("M", "")
        finally:
            holder.close()
            waiter.close()

    def test_the_entrys_and_the_users_value(self):
        conn = self.pg.conn_string()
        px = self.start_pgwharf(
            settings={"pool_mode": "transaction", "default_pool_size": 1,
                      "query_wait_timeout": "0"},
            databases={"short": conn + " query_wait_timeout=1",
                       "unset": conn + " query_wait_timeout=-1",
                       self.pg.database: conn},
            users={self.pg.app_user: "query_wait_timeout=0.5"})
        code, waited, msg = self.wait_error(px, self.pg.user, "short")
        self.assertEqual(code, "57014", msg)
        self.assertIn("query_wait_timeout", msg)
        self.assertGreaterEqual(waited, 0.9)
        # the user's wins over the general one
        code, waited, msg = self.wait_error(px, self.pg.app_user, self.pg.database)
        self.assertEqual(code, "57014", msg)
        self.assertIn("query_wait_timeout", msg)
        # -1: not set, the general one (no limit; a reload to 1 s shows it
        # is read)
        px.settings["query_wait_timeout"] = "1s"
        px.reload()
        console = psycopg2.connect(px.dsn(db="pgbouncer"), connect_timeout=10)
        console.autocommit = True
        pt.wait_until(lambda: config_value(console, "query_wait_timeout") == "1",
                      what="the reload applied")
        console.close()
        code, waited, msg = self.wait_error(px, self.pg.user, "unset")
        self.assertEqual(code, "57014", msg)
        self.assertIn("query_wait_timeout", msg)


if __name__ == "__main__":
    unittest.main()
