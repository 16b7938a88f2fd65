"""LISTEN/NOTIFY in transaction and statement mode (proxy/notify.c).

A client's lone LISTEN runs on one server per pool that pgwharf keeps for
listening (the hub's); notifications go out from there to every client
listening on the channel, between its transactions.  Raw protocol
clients (pgw_hardening) check the messages and their order; psycopg2,
psycopg 3 and node-postgres check that real clients get their
notifications through a pool in transaction mode.
"""

import json
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import threading
import unittest

import pgwharf_test as pt
import pgw_hardening as hz


login = hz.raw_login


def login_app_user(test, px):
    """A client of the other user's pool of the same database."""
    s = socket.create_connection((px.host, px.port), timeout=20)
    test.addCleanup(s.close)
    hz.sync_login(s, test.pg.app_user, test.pg.database, test.pg.app_password)
    return s


def notification(body):
    """(pid, channel, payload) of a NotificationResponse body."""
    pid = struct.unpack("!i", body[:4])[0]
    chan, payload, _ = body[4:].split(b"\0", 2)
    return pid, chan.decode(), payload.decode()


def read_notifications(sock, n, timeout=20):
    """The next n messages of an idle client: all NotificationResponses."""
    sock.settimeout(timeout)
    got = []
    for _ in range(n):
        t, body = hz.recv_msg(sock)
        if t != b"A":
            raise AssertionError("expected a notification, got %r %r" % (t, body))
        got.append(notification(body))
    return got


def tcp_rx_queue(local_port, remote_port):
    """Bytes received and not read yet on the TCP connection from
    local_port to remote_port, -1 when there is none."""
    for r in hz.socket_rows():
        if (r.local[1], r.remote[1]) == (local_port, remote_port):
            return r.rx_queue
    return -1


def assert_ended(test, sock, sqlstate, text, before=()):
    """sock's next messages: those of types `before`, then a FATAL
    ErrorResponse of sqlstate whose message has text, and the end of the
    connection."""
    got = []
    sock.settimeout(20)
    try:
        while True:
            got.append(hz.recv_msg(sock))
    except (EOFError, ConnectionResetError):
        pass
    test.assertEqual([t for t, _ in got], list(before) + [b"E"], got)
    f = hz.parse_fields(got[-1][1])
    test.assertEqual((f["S"], f["C"]), ("FATAL", sqlstate), f)
    test.assertIn(text, f["M"])
    return f


def slow_login(test, px, key_data=None):
    """A raw client logged in to px with a 4 kB receive buffer: the
    sockets hold little of what it does not read, the rest waits in
    pgwharf."""
    sock = socket.socket()
    test.addCleanup(sock.close)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(20)
    sock.connect((px.host, px.port))
    hz.sync_login(sock, test.pg.user, test.pg.database, test.pg.password, key_data=key_data)
    return sock


def start_backlog_64k(test, pool_size):
    """pgwharf with max_notify_backlog at 64 kB, and the metrics."""
    return test.start_pgwharf(settings={
        "pool_mode": test.MODE, "default_pool_size": pool_size, "log_connections": 0,
        "log_disconnections": 0, "metrics_port": "auto", "max_notify_backlog": 65536})


LOST = "notifications may have been missed"


def nothing_to_read(sock):
    r, _, _ = select.select([sock], [], [], 0)
    return not r


def prepare(case, a, stmts):
    """Parse each name: sql of the dict stmts in one request with a Sync;
    each gets its ParseComplete."""
    a.sendall(b"".join(hz.parse_msg(n, sql) for n, sql in stmts.items()) + hz.msg(b"S"))
    case.assertEqual([t for t, _ in hz.read_until_ready(a)], [b"1"] * len(stmts) + [b"Z"])


def deallocate_forgets(case, sql, name):
    """SQL DEALLOCATE sql of name, a prepared LISTEN pgwharf keeps for a new
    client of case.px, is answered and forgets it (a Bind of it: 26000)."""
    a = login(case, case.px)
    prepare(case, a, {name: "LISTEN pgw_sql_dealloc"})
    a.sendall(hz.query_msg(sql))
    case.assertEqual(hz.read_until_ready(a), [(b"C", b"DEALLOCATE\x00"), (b"Z", b"I")])
    a.sendall(bind_exec(name))
    got = hz.read_until_ready(a)
    case.assertEqual([t for t, _ in got], [b"E", b"Z"], got)
    case.assertEqual(hz.parse_fields(got[0][1])["C"], "26000")
    a.close()


class NotifyCase(pt.PgwharfTestCase):
    MODE = "transaction"

    def setUp(self):
        super().setUp()
        self.px = self.start_pgwharf(settings={
            "pool_mode": self.MODE, "default_pool_size": 3, "log_connections": 0,
            "log_disconnections": 0})

    def use_max_prepared_statements(self, n):
        """self.px runs with max_prepared_statements = n from now on."""
        self.px.settings["max_prepared_statements"] = n
        self.px.write_config()
        self.px.admin("RELOAD")

    def listeners(self):
        """Backends of the cluster whose last statement was a LISTEN."""
        return int(self.pg.psql(
            "select count(*) from pg_stat_activity where query ilike 'listen%%' "
            "and datname = '%s'" % self.pg.database))

    def stop_listening_backend(self):
        """SIGSTOP the listening server's backend: (pid, its client port)."""
        pid, port = [int(x) for x in self.pg.psql(
            "select pid, client_port from pg_stat_activity where query ilike 'listen%%'"
        ).split("|")]
        os.kill(pid, signal.SIGSTOP)
        return pid, port

    def send_listen_to_stopped(self, sock, sql, port):
        """sock's LISTEN, until it is in the stopped backend's socket."""
        sock.sendall(hz.query_msg(sql))
        pt.wait_until(lambda: tcp_rx_queue(self.pg.port, port) > 0, 20,
                      what="the LISTEN sent to the stopped backend")

    def expect(self, sock, sql, tags, status):
        """sql answered with these command tags, then ReadyForQuery status."""
        sock.sendall(hz.query_msg(sql))
        got = hz.read_until_ready(sock)
        self.assertEqual([t for t, _ in got], [b"C"] * len(tags) + [b"Z"], got)
        self.assertEqual([b.rstrip(b"\0").decode() for _, b in got[:-1]], tags)
        self.assertEqual(got[-1][1], status)

    def notify(self, chan, payload):
        self.pg.psql("select pg_notify('%s', '%s')" % (chan, payload))

    def hears_between_transactions(self, sock, chan):
        """sock runs a query, then hears a NOTIFY on chan: its LISTEN went
        to the hub (heard between transactions)."""
        self.assertEqual(hz.simple_query(sock, "select 1"), ([[b"1"]], []))
        self.hears(sock, chan, "heard")

    def witness(self, chan):
        """A client listening on chan through the hub: once it has a
        notification, every other listener of the hub has it too."""
        w = login(self, self.px)
        self.listen(w, "listen " + chan)
        return w

    def hears(self, sock, chan, payload):
        """sock hears a NOTIFY on chan: the hub listens on it for sock
        (a witness's LISTEN, which the hub runs after the one sock's
        statement asked for, has heard it first)."""
        w = self.witness(chan)
        self.notify(chan, payload)
        self.assertEqual([n[1:] for n in read_notifications(w, 1)], [(chan, payload)])
        self.assertEqual([n[1:] for n in read_notifications(sock, 1)], [(chan, payload)])
        w.close()

    def listen(self, sock, sql):
        sock.sendall(hz.query_msg(sql))
        got = hz.read_until_ready(sock)
        self.assertEqual([t for t, _ in got], [b"C", b"Z"], got)
        self.assertEqual(got[0][1].rstrip(b"\0"), sql.split()[0].upper().encode())
        return got


class TestFanOut(NotifyCase):
    def test_many_clients_one_listening_server(self):
        clients = [login(self, self.px) for _ in range(5)]
        for c in clients[:4]:
            self.listen(c, "listen pgw_fan")
        self.listen(clients[4], 'LISTEN "PGW other";')
        # One server listens for all of them; the pool has 3.
        self.assertEqual(self.listeners(), 1)
        self.notify("pgw_fan", "hello")
        for c in clients[:4]:
            self.assertEqual([x[1:] for x in read_notifications(c, 1)], [("pgw_fan", "hello")])
        self.notify("PGW other", "quoted")
        self.assertEqual([x[1:] for x in read_notifications(clients[4], 1)],
                         [("PGW other", "quoted")])
        self.assertTrue(all(nothing_to_read(c) for c in clients[:4]))
        # Queries go on as usual on the other servers.
        for c in clients:
            self.assertEqual(hz.simple_query(c, "select 42"), ([[b"42"]], []))

    def test_unlisten(self):
        a, b = login(self, self.px), login(self, self.px)
        self.listen(a, "listen pgw_u1")
        self.listen(a, "listen pgw_u2")
        self.listen(b, "listen pgw_u1")
        self.listen(a, "unlisten pgw_u1")
        self.notify("pgw_u1", "one")
        self.notify("pgw_u2", "two")
        self.assertEqual([x[1:] for x in read_notifications(b, 1)], [("pgw_u1", "one")])
        self.assertEqual([x[1:] for x in read_notifications(a, 1)], [("pgw_u2", "two")])
        self.listen(a, "unlisten *")
        self.listen(b, "unlisten *")
        self.notify("pgw_u2", "none")
        # Nobody listens: the hub lets its server go.
        pt.wait_until(lambda: self.listeners() == 0, 20, what="the hub's server closed")
        self.assertEqual(hz.simple_query(a, "select 'after'"), ([[b"after"]], []))
        self.assertTrue(nothing_to_read(a) and nothing_to_read(b))

    def test_a_name_longer_than_63_bytes(self):
        # PostgreSQL truncates a longer name to 63 bytes (NOTIFY's too, so
        # the two meet; pg_notify() refuses one).  pgwharf took such a
        # LISTEN for something else and ran it on the client's own
        # server, closed when given back: the client was deaf between
        # its transactions.  Inside a transaction and among other
        # statements too; UNLISTEN of the long name ends it.
        long = "pgw_" + "x" * 70
        cut = long[:63]
        for n, sql in enumerate(("listen " + long, 'LISTEN "%s";' % long.upper(),
                                 "begin; listen %s; commit" % long)):
            with self.subTest(sql=sql):
                a = login(self, self.px)
                a.sendall(hz.query_msg(sql))
                got = hz.read_until_ready(a)
                self.assertEqual([t for t, _ in got if t not in (b"N", b"C")], [b"Z"], got)
                chan = cut.upper() if n == 1 else cut
                self.pg.psql('notify "%s", \'long %d\'' % (long.upper() if n == 1 else long, n))
                self.assertEqual([x[1:] for x in read_notifications(a, 1)], [(chan, "long %d" % n)])
                # Between transactions: the hub's, not the server's it ran on.
                self.assertEqual(hz.simple_query(a, "select 1"), ([[b"1"]], []))
                self.pg.psql("select pg_notify('%s', 'again')" % chan)
                self.assertEqual([x[1:] for x in read_notifications(a, 1)], [(chan, "again")])
                # PostgreSQL's NOTICE 42622 for the cut name, as for LISTEN.
                a.sendall(hz.query_msg('unlisten "%s"' % (long.upper() if n == 1 else long)))
                got = hz.read_until_ready(a)
                self.assertEqual([t for t, _ in got], [b"N", b"C", b"Z"], got)
                self.assertEqual(hz.parse_fields(got[0][1])["C"], "42622")
                a.close()
        pt.wait_until(lambda: self.listeners() == 0, 20, what="the hub's server closed")

    def test_listen_error_comes_from_postgresql(self):
        a = login(self, self.px)
        rows, errors = hz.simple_query(a, "listen select")     # a reserved word
        self.assertEqual([e["C"] for e in errors], ["42601"])
        self.assertEqual(hz.simple_query(a, "select 1"), ([[b"1"]], []))

    def test_pipelined_after_listen_waits_its_turn(self):
        a = login(self, self.px)
        a.sendall(hz.query_msg("listen pgw_pipe") + hz.query_msg("select 'next'"))
        first = hz.read_until_ready(a)
        self.assertEqual([t for t, _ in first], [b"C", b"Z"])
        self.assertEqual(hz.read_until_ready(a)[1][0], b"D")
        self.notify("pgw_pipe", "x")
        self.assertEqual([x[1:] for x in read_notifications(a, 1)], [("pgw_pipe", "x")])

    def test_listens_pipelined_past_the_relays_buffer(self):
        # b pipelines more LISTENs than the relay's buffer holds (32 KiB)
        # while its first one waits on the listening server (its backend
        # stopped): the buffer fills and pgwharf stops reading b.  Each
        # answer resumes the next LISTEN; after the last one in the buffer
        # pgwharf must read on.  It did not when the buffer ended at a
        # message's end (every message here is 32 bytes: it always does)
        # or inside a header: b waited for ever, its end of stream was
        # never read (session and descriptor kept) and a SIGTERM waited
        # for it.
        a = login(self, self.px)
        self.listen(a, "listen pgw_full_ctl")
        n = 2 * 1024 + 7
        msgs = [hz.query_msg("LISTEN pgw_full_%010d" % i) for i in range(n)]
        self.assertEqual({len(m) for m in msgs}, {32})
        total = 32 * n
        b = login(self, self.px)
        b_port = b.getsockname()[1]
        answered = []

        def read_answers():
            for _ in range(n):
                answered.append([t for t, _ in hz.read_until_ready(b)])

        pid, port = self.stop_listening_backend()
        try:
            b.sendall(msgs[0])
            pt.wait_until(lambda: tcp_rx_queue(self.pg.port, port) > 0, 20,
                          what="the first LISTEN sent to the stopped backend")
            sender = pt.Background(lambda: b.sendall(b"".join(msgs[1:])))
            # pgwharf has taken a full buffer (the first LISTEN's bytes
            # may be dropped from it) and reads no more
            pt.wait_until(lambda: 0 < hz.unread_on_port(self.px.pid, self.px.port).get(b_port, 0)
                          <= total - 32 * 1024, 20, what="b's buffer full")
        finally:
            os.kill(pid, signal.SIGCONT)
        reader = pt.Background(read_answers)
        pt.wait_until(lambda: not reader.is_alive(), 60,
                      what="every LISTEN answered (%d of %d so far)" % (len(answered), n))
        self.assertIsNone(reader.error)
        sender.join(20)
        self.assertIsNone(sender.error)
        self.assertEqual(answered, [[b"C", b"Z"]] * n)
        self.assertEqual(hz.simple_query(b, "select 'next'"), ([[b"next"]], []))
        self.notify("pgw_full_%010d" % (n - 1), "last")
        self.assertEqual([x[1:] for x in read_notifications(b, 1)],
                         [("pgw_full_%010d" % (n - 1), "last")])

    def test_held_until_the_transaction_ends(self):
        a = login(self, self.px)
        self.listen(a, "listen pgw_tx")
        self.assertEqual(hz.simple_query(a, "begin"), ([], []))
        self.notify("pgw_tx", "during")
        # Inside its transaction the client gets no notification ...
        a.sendall(hz.query_msg("select 'in'"))
        got = hz.read_until_ready(a)
        self.assertNotIn(b"A", [t for t, _ in got], got)
        # ... and gets it right after the transaction's ReadyForQuery.
        a.sendall(hz.query_msg("commit"))
        got = hz.read_until_ready(a)
        self.assertEqual([t for t, _ in got], [b"C", b"Z"])
        self.assertEqual([x[1:] for x in read_notifications(a, 1)], [("pgw_tx", "during")])

    def test_discard_all_unlistens(self):
        # DISCARD ALL includes UNLISTEN *: it ran on the client's server
        # and the client went on getting notifications from the hub.
        a, b = login(self, self.px), login(self, self.px)
        self.listen(a, "listen pgw_dis")
        self.listen(b, "listen pgw_dis")
        self.assertEqual(hz.simple_query(a, "discard all"), ([], []))
        self.notify("pgw_dis", "after")
        read_notifications(b, 1)            # a's would have gone out with it
        a.sendall(hz.query_msg("select 'nothing before'"))
        self.assertEqual([t for t, _ in hz.read_until_ready(a)], [b"T", b"D", b"C", b"Z"])
        self.listen(b, "unlisten *")
        pt.wait_until(lambda: self.listeners() == 0, 20, what="the hub's server closed")

    def test_client_leaves_mid_listen_and_hub_forgets(self):
        a = login(self, self.px)
        self.listen(a, "listen pgw_gone")
        pid = int(self.pg.psql("select pid from pg_stat_activity where query ilike 'listen%%'"))
        a.close()
        pt.wait_until(lambda: self.pg.psql(
            "select count(*) from pg_stat_activity where pid = %d" % pid) == "0", 20,
            what="the hub's server closed after its last client left")
        b = login(self, self.px)
        self.assertEqual(hz.simple_query(b, "select 1"), ([[b"1"]], []))


class TestUnlistenPgwharfDoesNotRead(NotifyCase):
    """An UNLISTEN pgwharf's parser did not take ran on the client's own
    server (not listening) and the client went on getting the hub's
    notifications: a comment in it, or text pgwharf does not read."""

    def unlistened(self, n, steps, kept=False):
        """A client listening on a channel through the hub runs steps (sql,
        tags, status); then a NOTIFY on it reaches it only if kept."""
        chan = "pgw_uc%d" % n
        a = login(self, self.px)
        self.listen(a, "listen " + chan)
        w = self.witness(chan)
        for sql, tags, status in steps:
            self.expect(a, sql.format(c=chan), tags, status)
        self.notify(chan, "after")
        self.assertEqual([x[1:] for x in read_notifications(w, 1)], [(chan, "after")])
        a.sendall(hz.query_msg("select 3"))
        got = hz.read_until_ready(a)
        self.assertEqual([notification(b)[1:] for t, b in got if t == b"A"],
                         [(chan, "after")] if kept else [])
        self.assertEqual([t for t, _ in got if t != b"A"], [b"T", b"D", b"C", b"Z"])
        w.close()
        a.close()

    def test_comments_between_the_words(self):
        # PostgreSQL's scanner reads a comment as white space (they nest).
        for n, sql in enumerate(("UNLISTEN /* app=x */ {c}", "UNLISTEN {c} -- trailing",
                                 "UNLISTEN /*x*/ *", "/* c */ unlisten\n-- d\n{c};",
                                 "unlisten /* a /* nested */ comment */{c}/**/;")):
            with self.subTest(sql=sql):
                self.unlistened(n, [(sql, ["UNLISTEN"], b"I")])
        # Inside a transaction too: the transaction decides it.
        for n, end, kept in ((5, "commit", False), (6, "rollback", True)):
            self.unlistened(n, [("begin", ["BEGIN"], b"T"),
                                ("/* c */ UNLISTEN {c} -- d", ["UNLISTEN"], b"T"),
                                (end, [end.upper()], b"I")], kept=kept)

    def test_an_unlisten_pgwharf_does_not_read_unlistens_all(self):
        # Its channel not known (a comment before UESCAPE: the server's to
        # read), it counts as UNLISTEN *, decided with its transaction.
        sql = "UNLISTEN U&\"{c}\" /* c */ UESCAPE '!'"
        self.unlistened(10, [(sql, ["UNLISTEN"], b"I")])
        self.unlistened(11, [("begin", ["BEGIN"], b"T"), (sql, ["UNLISTEN"], b"T"),
                             ("commit", ["COMMIT"], b"I")])
        self.unlistened(12, [("begin", ["BEGIN"], b"T"), (sql, ["UNLISTEN"], b"T"),
                             ("rollback", ["ROLLBACK"], b"I")], kept=True)
        self.unlistened(13, [("begin", ["BEGIN"], b"T"), ("savepoint s", ["SAVEPOINT"], b"T"),
                             (sql, ["UNLISTEN"], b"T"),
                             ("rollback to s", ["ROLLBACK"], b"T"),
                             ("commit", ["COMMIT"], b"I")], kept=True)

    def test_a_do_block_that_unlistens(self):
        # It runs on the client's server, with "DO" for its tag: as
        # UNLISTEN *, decided with its transaction.  One that holds no
        # UNLISTEN leaves the client listening.
        do = "DO $$ BEGIN EXECUTE 'UNLISTEN {c}'; END $$"
        self.unlistened(20, [(do, ["DO"], b"I")])
        self.unlistened(21, [("/* c */ " + do.lower() + ";", ["DO"], b"I")])
        self.unlistened(22, [("begin", ["BEGIN"], b"T"), (do, ["DO"], b"T"),
                             ("rollback", ["ROLLBACK"], b"I")], kept=True)
        self.unlistened(23, [("begin", ["BEGIN"], b"T"), (do, ["DO"], b"T"),
                             ("commit", ["COMMIT"], b"I")])
        self.unlistened(24, [("DO $$ BEGIN PERFORM 1; END $$", ["DO"], b"I")], kept=True)
        # "unlisten" only in a string, or a word of its own nowhere a
        # statement starts, is none (review: they dropped every channel).
        self.unlistened(25, [("DO $$ BEGIN PERFORM length('no unlisten here'); "
                              "PERFORM pg_catalog.pg_notify('x', 'unlisten'); END $$",
                              ["DO"], b"I")], kept=True)
        self.unlistened(26, [("DO $$ BEGIN UNLISTEN {c}; END $$", ["DO"], b"I")])

    def test_an_unread_unlisten_before_a_listen(self):
        # Its tag comes before the LISTEN's: UNLISTEN * goes before the
        # LISTEN, which stays (review: it went after it and left b too).
        sql = "UNLISTEN U&\"{c}\" /* c */ UESCAPE '!'; LISTEN {c}b"
        for n, steps in ((30, [(sql, ["UNLISTEN", "LISTEN"], b"I")]),
                         (31, [("begin", ["BEGIN"], b"T"), (sql, ["UNLISTEN", "LISTEN"], b"T"),
                               ("commit", ["COMMIT"], b"I")])):
            chan = "pgw_uc%d" % n
            a = login(self, self.px)
            self.listen(a, "listen " + chan)
            for q, tags, status in steps:
                self.expect(a, q.format(c=chan), tags, status)
            w = self.witness(chan + "b")
            self.notify(chan + "b", "after")
            read_notifications(w, 1)
            a.sendall(hz.query_msg("select 3"))
            got = hz.read_until_ready(a)
            self.assertEqual([notification(b)[1:] for t, b in got if t == b"A"],
                             [(chan + "b", "after")])
            w.close()
            a.close()

    def test_a_vertical_tab_is_no_white_space(self):
        # PostgreSQL 15 says 42601 (16 reads \v as white space); pgwharf
        # answered it as an UNLISTEN.
        chan = "pgw_uv"
        a = login(self, self.px)
        self.listen(a, "listen " + chan)
        rows, errors = hz.simple_query(a, "UNLISTEN\v" + chan)
        self.assertEqual([e["C"] for e in errors], ["42601"])
        self.hears_between_transactions(a, chan)
        a.close()


class TestInsideATransaction(NotifyCase):
    """A lone LISTEN or UNLISTEN Query inside a transaction runs on the
    client's server; the hub takes it over when the transaction commits."""

    def hub_listens(self, chan):
        """The hub's server has run its own LISTEN of chan (its form, with
        the name quoted)."""
        pt.wait_until(lambda: int(self.pg.psql(
            "select count(*) from pg_stat_activity where query = 'LISTEN \"%s\"' "
            "and state = 'idle'" % chan)) == 1, 20, what="the hub listening on " + chan)

    def test_a_listening_clients_new_listen_hears_what_committed_in_its_transaction(self):
        # "LISTEN, read the state, COMMIT" by a client listening already on
        # another channel: PostgreSQL reads what was committed during the
        # transaction at its end, from where the session was, and delivers
        # what is for a channel it listens on by then -- the new one too.
        # pgwharf dropped the hub's copies that came while no request ran.
        a = login(self, self.px)
        self.listen(a, "listen pgw_unrelated")
        self.expect(a, "begin", ["BEGIN"], b"T")
        self.expect(a, "listen pgw_cache", ["LISTEN"], b"T")
        w = self.witness("pgw_cache")
        self.notify("pgw_cache", "during")
        self.assertEqual([n[1:] for n in read_notifications(w, 1)], [("pgw_cache", "during")])
        self.expect(a, "commit", ["COMMIT"], b"I")
        self.assertEqual([n[1:] for n in read_notifications(a, 1)], [("pgw_cache", "during")])
        w.close()

    def test_held_for_a_new_channel_come_in_commit_order(self):
        # A client listening on a runs "BEGIN; LISTEN b", and b1, a2, b3
        # are committed meanwhile: PostgreSQL reads them at the end of its
        # transaction, in the queue's order, and delivers those of the
        # channels it listens on by then (b1 a2 b3; a2 after ROLLBACK).
        # pgwharf held the copies for b apart and sent them after those
        # for a (a2 b1 b3).
        sent = [("b", "1"), ("a", "2"), ("b", "3")]

        def run(sock, chans, end, heard=None):
            """The scenario on sock (a client of a server or of pgwharf):
            the notifications it gets at the end of its transaction."""
            self.expect(sock, "listen " + chans["a"], ["LISTEN"], b"I")
            self.expect(sock, "begin; listen " + chans["b"], ["BEGIN", "LISTEN"], b"T")
            for c, payload in sent:
                self.notify(chans[c], payload)      # committed when psql returns
                if heard:                           # and fanned out by the hub
                    self.assertEqual([n[1:] for n in read_notifications(heard, 1)],
                                     [(chans[c], payload)])
            sock.sendall(hz.query_msg(end))
            got = hz.read_until_ready(sock)
            sock.sendall(hz.query_msg("select 1"))     # behind what came at the end
            got += hz.read_until_ready(sock)
            self.assertEqual([t for t, _ in got if t != b"A"],
                             [b"C", b"Z", b"T", b"D", b"C", b"Z"], got)
            return [notification(b)[1:] for t, b in got if t == b"A"]

        for end in ("commit", "rollback"):
            with self.subTest(end=end):
                chans = {c: "pgw_order_%s_%s" % (end, c) for c in ("a", "b")}
                d = socket.create_connection((self.pg.host, self.pg.port), timeout=20)
                self.addCleanup(d.close)
                hz.sync_login(d, self.pg.user, self.pg.database, self.pg.password)
                want = run(d, chans, end)
                d.close()
                self.assertEqual(want, [(chans[c], p) for c, p in sent
                                        if end == "commit" or c == "a"])
                w = self.witness(chans["a"])
                self.listen(w, "listen " + chans["b"])
                a = login(self, self.px)
                self.assertEqual(run(a, chans, end, heard=w), want)
                w.close()
                a.close()

    def test_the_servers_copy_after_the_held_ones(self):
        # A client listening on a runs "BEGIN; LISTEN b", a1 is committed
        # meanwhile (held for its transaction's end), and it runs "NOTIFY
        # b, 'self'; COMMIT": PostgreSQL reads its queue at the commit and
        # sends a1, then b self.  Its own server, listening on b from its
        # COMMIT on, sends its copy of b self before its ReadyForQuery:
        # pgwharf passed it at once, before a1 (held until the
        # ReadyForQuery).  Each way the copies can come: as they do (plain);
        # the hub's first (the server's held behind a query in the COMMIT's
        # Query, until the hub's has come); the server's first (the hub's
        # server stopped until the client is between transactions); and
        # the last two for a LATIN1 client, with a character of its own (the
        # server's copy in LATIN1 among the held ones in UTF-8).
        def run(sock, chans, way, enc, heard=None):
            """The scenario on sock (a client of a server or of pgwharf):
            the notifications it gets at the end of its transaction."""
            mark = "" if enc == "utf-8" else " \u00e9"
            self.expect(sock, "listen " + chans["a"], ["LISTEN"], b"I")
            self.expect(sock, "begin; listen " + chans["b"], ["BEGIN", "LISTEN"], b"T")
            self.notify(chans["a"], "1" + mark)
            if heard:
                self.assertEqual([n[1:] for n in read_notifications(heard, 1)],
                                 [(chans["a"], "1" + mark)])
            stopped = None
            if way == "hub_first":
                gate = hz.Gate(self.pg, 7487)
                self.addCleanup(gate.close)
                sql = "notify %s, 'self%s'; commit; select %s as marker_%s" % (
                    chans["b"], mark, gate.sql(), chans["b"])
                sock.sendall(hz.msg(b"Q", sql.encode(enc) + b"\0"))
                self.pg.wait_running("marker_" + chans["b"], lock_wait=True)
                if heard:           # the hub's copy has come
                    self.assertEqual([n[1:] for n in read_notifications(heard, 1)],
                                     [(chans["b"], "self" + mark)])
                gate.open()
                tags = [b"C", b"C", b"T", b"D", b"C", b"Z"]
            else:
                sql = "notify %s, 'self%s'" % (chans["b"], mark)
                sock.sendall(hz.msg(b"Q", sql.encode(enc) + b"\0"))
                self.assertEqual(hz.read_until_ready(sock), [(b"C", b"NOTIFY\0"), (b"Z", b"T")])
                if way == "server_first" and heard:
                    stopped, _ = self.stop_listening_backend()
                sock.sendall(hz.query_msg("commit"))
                tags = [b"C", b"Z"]
            try:
                got = hz.read_until_ready(sock)
            finally:
                if stopped:
                    os.kill(stopped, signal.SIGCONT)
            self.assertEqual([t for t, _ in got if t != b"A"], tags, got)
            if heard and way != "hub_first":     # the hub's copy has come
                self.assertEqual([n[1:] for n in read_notifications(heard, 1)],
                                 [(chans["b"], "self" + mark)])
            sock.sendall(hz.query_msg("select 1"))     # behind what came at the end
            more = hz.read_until_ready(sock)
            self.assertEqual([t for t, _ in more if t != b"A"], [b"T", b"D", b"C", b"Z"], more)
            return [tuple(x.decode(enc) for x in b[4:].split(b"\0")[:2])
                    for t, b in got + more if t == b"A"]

        for way, enc in (("plain", "utf-8"), ("hub_first", "utf-8"), ("server_first", "utf-8"),
                         ("hub_first", "latin-1"), ("server_first", "latin-1")):
            with self.subTest(way=way, enc=enc):
                chans = {c: "pgw_self_%s_%s_%s" % (way, enc[0], c) for c in ("a", "b")}
                params = {} if enc == "utf-8" else {"client_encoding": "LATIN1"}
                d = socket.create_connection((self.pg.host, self.pg.port), timeout=20)
                self.addCleanup(d.close)
                hz.sync_login(d, self.pg.user, self.pg.database, self.pg.password, **params)
                want = run(d, chans, way, enc)
                d.close()
                mark = "" if enc == "utf-8" else " \u00e9"
                self.assertEqual(want, [(chans["a"], "1" + mark), (chans["b"], "self" + mark)])
                w = self.witness(chans["a"])
                self.listen(w, "listen " + chans["b"])
                a = login(self, self.px, **params)
                self.assertEqual(run(a, chans, way, enc, heard=w), want)
                self.assertTrue(nothing_to_read(a))
                w.close()
                a.close()

    def test_the_servers_copy_of_a_function_listen_after_the_held_ones(self):
        # The same for a channel the client's server listens on for a
        # LISTEN run inside a function in the transaction (the server's
        # alone, not the hub's): its copy passed before the held ones.
        # Held behind them, it stays when an UNLISTEN of another channel
        # ends with the transaction (implicit: decided at its
        # ReadyForQuery, after the copy came).
        self.pg.psql("create or replace function pgw_listen_in_fn(c text) returns void "
                     "language plpgsql as $$ begin execute 'listen ' || c; end $$")
        self.addCleanup(self.pg.psql, "drop function if exists pgw_listen_in_fn(text)")

        def run(sock, chans, way, heard=None):
            self.expect(sock, "listen " + chans["a"], ["LISTEN"], b"I")
            self.expect(sock, "listen " + chans["x"], ["LISTEN"], b"I")
            fn = "listen %s; select pgw_listen_in_fn('%s')" % (chans["b"], chans["c"])
            if way == "commit":
                sock.sendall(hz.query_msg("begin; " + fn))
                got = hz.read_until_ready(sock)
                self.assertEqual([t for t, _ in got], [b"C", b"C", b"T", b"D", b"C", b"Z"], got)
                self.notify(chans["a"], "1")
                if heard:
                    self.assertEqual([n[1:] for n in read_notifications(heard, 1)],
                                     [(chans["a"], "1")])
                self.expect(sock, "notify %s, 'self'" % chans["c"], ["NOTIFY"], b"T")
                sock.sendall(hz.query_msg("commit"))
                tags = [b"C", b"Z"]
            else:
                gate = hz.Gate(self.pg, 7488)
                self.addCleanup(gate.close)
                sock.sendall(hz.query_msg("%s; unlisten %s; notify %s, 'self'; select %s as "
                                          "marker_fn" % (fn, chans["x"], chans["c"], gate.sql())))
                self.pg.wait_running("marker_fn", lock_wait=True)
                self.notify(chans["a"], "1")
                if heard:
                    self.assertEqual([n[1:] for n in read_notifications(heard, 1)],
                                     [(chans["a"], "1")])
                gate.open()
                tags = [b"C", b"T", b"D", b"C", b"C", b"C", b"T", b"D", b"C", b"Z"]
            got = hz.read_until_ready(sock)
            self.assertEqual([t for t, _ in got if t != b"A"], tags, got)
            sock.sendall(hz.query_msg("select 1"))     # behind what came at the end
            more = hz.read_until_ready(sock)
            self.assertEqual([t for t, _ in more if t != b"A"], [b"T", b"D", b"C", b"Z"], more)
            return [notification(b)[1:] for t, b in got + more if t == b"A"]

        for way in ("commit", "implicit"):
            with self.subTest(way=way):
                chans = {c: "pgw_self_fn_%s_%s" % (way, c) for c in ("a", "b", "c", "x")}
                d = socket.create_connection((self.pg.host, self.pg.port), timeout=20)
                self.addCleanup(d.close)
                hz.sync_login(d, self.pg.user, self.pg.database, self.pg.password)
                want = run(d, chans, way)
                d.close()
                self.assertEqual(want, [(chans["a"], "1"), (chans["c"], "self")])
                w = self.witness(chans["a"])
                a = login(self, self.px)
                self.assertEqual(run(a, chans, way, heard=w), want)
                self.assertTrue(nothing_to_read(a))
                w.close()
                a.close()

    def test_a_reserved_keyword_is_no_channel(self):
        # "LISTEN select" is PostgreSQL's syntax error (42601): a ColId is
        # no reserved keyword unquoted.  Prepared, or an UNLISTEN (which
        # pgwharf answers), it was taken as the channel "select".
        a = login(self, self.px)
        for sql in ("unlisten select", "unlisten from", "listen table"):
            a.sendall(hz.query_msg(sql))
            got = hz.read_until_ready(a)
            self.assertEqual([t for t, _ in got], [b"E", b"Z"], (sql, got))
            self.assertEqual(hz.parse_fields(got[0][1])["C"], "42601", sql)
        a.sendall(hz.ext_msgs("listen select", describe=False))
        got = hz.read_until_ready(a)
        self.assertEqual([t for t, _ in got], [b"E", b"Z"], got)
        self.assertEqual(hz.parse_fields(got[0][1])["C"], "42601")
        self.expect(a, 'listen "select"', ["LISTEN"], b"I")      # quoted: a name
        self.notify("select", "q")
        self.assertEqual([n[1:] for n in read_notifications(a, 1)], [("select", "q")])

    def test_kept_after_commit(self):
        a = login(self, self.px)
        self.expect(a, "begin", ["BEGIN"], b"T")
        self.expect(a, "listen pgw_tx", ["LISTEN"], b"T")
        self.hub_listens("pgw_tx")      # from the LISTEN on: no gap at COMMIT
        self.expect(a, "commit", ["COMMIT"], b"I")
        self.notify("pgw_tx", "after commit")
        self.assertEqual([n[1:] for n in read_notifications(a, 1)], [("pgw_tx", "after commit")])
        # Once: the server it ran on was closed when given back.
        self.assertEqual(hz.simple_query(a, "select 1"), ([[b"1"]], []))
        self.assertTrue(nothing_to_read(a))

    def test_forgotten_after_rollback_or_a_failed_transaction(self):
        for end in ("rollback", "select 1/0"):
            with self.subTest(end=end):
                a = login(self, self.px)
                self.expect(a, "begin", ["BEGIN"], b"T")
                self.expect(a, "listen pgw_rb", ["LISTEN"], b"T")
                if end == "rollback":
                    self.expect(a, "rollback", ["ROLLBACK"], b"I")
                else:
                    self.assertEqual(hz.simple_query(a, end)[0], [])
                    self.expect(a, "commit", ["ROLLBACK"], b"I")
                w = self.witness("pgw_rb")
                self.notify("pgw_rb", end)
                self.assertEqual([n[1:] for n in read_notifications(w, 1)], [("pgw_rb", end)])
                a.sendall(hz.query_msg("select 2"))
                self.assertEqual([t for t, _ in hz.read_until_ready(a)],
                                 [b"T", b"D", b"C", b"Z"])
                w.close()
                a.close()

    def test_unlisten_inside_a_transaction(self):
        # A notification committed while the UNLISTEN is not yet is held
        # for the transaction's end, as PostgreSQL holds it; then, as
        # PostgreSQL, the client gets it only if it still listens on the
        # channel (it got it all the same after UNLISTEN or UNLISTEN *).
        for n, (sql, kept) in enumerate((("unlisten pgw_un{n}", False),
                                         ("unlisten *", False),
                                         ("unlisten pgw_un{n}; listen pgw_un{n}", True))):
            with self.subTest(sql=sql):
                chan = "pgw_un%d" % n
                a = login(self, self.px)
                w = self.witness(chan)
                self.listen(a, "listen " + chan)
                self.expect(a, "begin", ["BEGIN"], b"T")
                self.expect(a, sql.format(n=n), [x.split()[0].upper() for x in sql.split(";")],
                            b"T")
                self.notify(chan, "still open")   # the UNLISTEN is not committed yet
                self.assertEqual([x[1:] for x in read_notifications(w, 1)], [(chan, "still open")])
                self.expect(a, "commit", ["COMMIT"], b"I")
                self.notify(chan, "after")
                self.assertEqual([x[1:] for x in read_notifications(w, 1)], [(chan, "after")])
                a.sendall(hz.query_msg("select 3"))
                got = hz.read_until_ready(a)
                self.assertEqual([notification(b)[1:] for t, b in got if t == b"A"],
                                 [(chan, "still open"), (chan, "after")] if kept else [])
                self.assertEqual([t for t, _ in got if t != b"A"], [b"T", b"D", b"C", b"Z"])
                w.close()
                a.close()

    def test_pipelined_behind_a_query(self):
        # Not between transactions: it runs on the client's server in its
        # own implicit transaction, which commits.
        a = login(self, self.px)
        a.sendall(hz.query_msg("select 1") + hz.query_msg("listen pgw_behind"))
        got = hz.read_until_ready(a) + hz.read_until_ready(a)
        self.assertEqual([t for t, _ in got], [b"T", b"D", b"C", b"Z", b"C", b"Z"], got)
        self.hub_listens("pgw_behind")
        self.notify("pgw_behind", "p")
        self.assertEqual([n[1:] for n in read_notifications(a, 1)], [("pgw_behind", "p")])

    def test_among_other_statements_of_one_query(self):
        # Each statement of the Query in turn: BEGIN; LISTEN; COMMIT, two
        # LISTENs (their server is taken, and closed when given back), an
        # implicit transaction a later statement fails, a LISTEN inside a
        # string literal.
        a = login(self, self.px)
        self.expect(a, "begin; listen pgw_m1; commit", ["BEGIN", "LISTEN", "COMMIT"], b"I")
        self.expect(a, "listen pgw_m2; listen \"pgw;m3\";", ["LISTEN", "LISTEN"], b"I")
        a.sendall(hz.query_msg("listen pgw_m4; select 1/0"))
        self.assertEqual([t for t, _ in hz.read_until_ready(a)], [b"C", b"E", b"Z"])
        a.sendall(hz.query_msg("select 'x; listen pgw_m5'; select 2"))
        self.assertEqual([t for t, _ in hz.read_until_ready(a)],
                         [b"T", b"D", b"C", b"T", b"D", b"C", b"Z"])
        # The witness's LISTENs queue behind what the hub was asked before:
        # once they are answered, the hub listens on all five.
        chans = ["pgw_m1", "pgw_m2", "pgw;m3", "pgw_m4", "pgw_m5"]
        w = login(self, self.px)
        for chan in chans:
            self.listen(w, 'listen "%s"' % chan)
        for chan in chans:
            self.pg.psql("select pg_notify('%s', 'n')" % chan)
        self.assertEqual([n[1] for n in read_notifications(w, 5)], chans)
        self.assertEqual([n[1] for n in read_notifications(a, 3)], chans[:3])
        a.sendall(hz.query_msg("select 5"))
        self.assertEqual([t for t, _ in hz.read_until_ready(a)], [b"T", b"D", b"C", b"Z"])

    def test_in_a_long_query(self):
        # A Query over 4096 bytes was not read for a LISTEN: after COMMIT
        # the client never got the channel's notifications.  Now one up to
        # what the relay's buffer holds (32 KB) is read whole.
        for n, filler in enumerate(("x" * 5000, "y" * 30000)):
            with self.subTest(bytes=len(filler)):
                chan = "pgw_long%d" % n
                a = login(self, self.px)
                self.expect(a, "begin; listen %s; /* %s */ commit; -- %s" %
                            (chan, filler, filler[:1000]), ["BEGIN", "LISTEN", "COMMIT"], b"I")
                self.hub_listens(chan)
                self.notify(chan, "long")
                self.assertEqual([x[1:] for x in read_notifications(a, 1)], [(chan, "long")])
                a.close()

    def test_in_a_query_longer_than_the_relays_buffer(self):
        # A Query over 32 KB streamed through unread: a LISTEN in it ran
        # on the client's server only, closed when given back, and the
        # client silently never got the channel's notifications.  Now
        # its statements are read as they pass.  Literals, quoted names,
        # comments and dollar quotes that hide a "; listen" span the
        # pieces it comes in; the LISTEN last, in an implicit transaction.
        fake = "; listen pgw_fake; "
        hidden = ("'%s' as a, $q$%s$q$ as b, 1 as \"%s\", E'\\'%s' as d /* %s */" %
                  ((fake,) * 5))
        for n, size in enumerate((40000, 300000)):
            with self.subTest(bytes=size):
                chan = "pgw_huge%d" % n
                pad = " ".join(["select %s" % hidden] * (size // len(hidden) + 1))
                a = login(self, self.px)
                w = self.witness("pgw_fake")
                sql = "select 1; %s; listen %s" % (pad.replace(" select", "; select"), chan)
                tags = [b"LISTEN"]
                if n == 1:      # in a transaction block, behind a savepoint
                    sql = "begin; %s; savepoint s; listen %s; release s; commit" % (sql, chan)
                    tags = [b"SAVEPOINT", b"LISTEN", b"RELEASE", b"COMMIT"]
                self.assertGreater(len(sql), size)
                a.sendall(hz.query_msg(sql))
                got = hz.read_until_ready(a)
                self.assertEqual([t for t, _ in got if t == b"E"], [], got[-3:])
                self.assertEqual([b.rstrip(b"\0") for _, b in got[-1 - len(tags):-1]], tags)
                self.assertEqual(got[-1], (b"Z", b"I"))
                self.hub_listens(chan)
                self.notify(chan, "huge")
                self.notify("pgw_fake", "not for a")
                self.assertEqual([x[1:] for x in read_notifications(w, 1)],
                                 [("pgw_fake", "not for a")])
                self.assertEqual([x[1:] for x in read_notifications(a, 1)], [(chan, "huge")])
                self.assertEqual(hz.simple_query(a, "select 1"), ([[b"1"]], []))
                self.assertTrue(nothing_to_read(a))
                w.close()
                a.close()

    def test_prepared_inside_a_transaction(self):
        # pgjdbc outside autocommit: BEGIN and the LISTEN in one batch,
        # through the unnamed statement; COMMIT later.
        a = login(self, self.px)
        a.sendall(hz.ext_msgs("begin", describe=False)[:-5] + hz.ext_msgs("listen pgw_ext"))
        got = hz.read_until_ready(a)
        self.assertEqual([t for t, _ in got], [b"1", b"2", b"C", b"1", b"2", b"n", b"C", b"Z"])
        self.assertEqual(got[-1][1], b"T")
        # Parsed, never executed: not listening.
        prepare(self, a, {"pgw_never": "listen pgw_never"})
        self.expect(a, "commit", ["COMMIT"], b"I")
        # Its LISTEN ran after the hub's (which, with a server at once, ran
        # LISTEN and UNLISTEN pgw_never after it, too: hub_listens would
        # see the UNLISTEN last).
        self.witness("pgw_ext").close()
        w = self.witness("pgw_never")
        self.notify("pgw_never", "no")
        self.notify("pgw_ext", "yes")
        self.assertEqual([n[1:] for n in read_notifications(w, 1)], [("pgw_never", "no")])
        self.assertEqual([n[1:] for n in read_notifications(a, 1)], [("pgw_ext", "yes")])
        a.sendall(hz.query_msg("select 4"))
        self.assertEqual([t for t, _ in hz.read_until_ready(a)], [b"T", b"D", b"C", b"Z"])

    def not_listening(self, sock, chan):
        """sock gets no notification of chan (a witness got one first),
        and its session goes on."""
        w = self.witness(chan)
        self.notify(chan, "not for it")
        self.assertEqual([n[1:] for n in read_notifications(w, 1)], [(chan, "not for it")])
        sock.sendall(hz.query_msg("select 5"))
        self.assertEqual([t for t, _ in hz.read_until_ready(sock)], [b"T", b"D", b"C", b"Z"])
        w.close()

    def test_an_error_later_in_its_batch_rolls_it_back(self):
        # The LISTEN and a failing statement before one Sync run in one
        # implicit transaction: the error rolls the LISTEN back, though its
        # CommandComplete came (it was kept: the client got notifications).
        a = login(self, self.px)
        a.sendall(hz.ext_msgs("listen pgw_batch", describe=False)[:-5] +
                  hz.ext_msgs("select 1/(random() * 0)::int", describe=False))
        got = hz.read_until_ready(a)
        self.assertEqual([t for t, _ in got][:3], [b"1", b"2", b"C"], got)
        self.assertEqual([t for t, _ in got][-2:], [b"E", b"Z"], got)
        self.assertEqual(got[-1][1], b"I")
        self.not_listening(a, "pgw_batch")
        # So does a COMMIT that fails (a deferred constraint), BEGIN, the
        # LISTEN and the COMMIT in one batch.
        self.pg.psql("drop table if exists pgw_defer; create table pgw_defer (x int unique "
                     "deferrable initially deferred)")
        self.addCleanup(self.pg.psql, "drop table if exists pgw_defer")
        b = login(self, self.px)
        b.sendall(b"".join(hz.ext_msgs(q, describe=False)[:-5] for q in (
            "begin", "listen pgw_defer", "insert into pgw_defer values (1), (1)", "commit")) +
            hz.msg(b"S"))
        got = hz.read_until_ready(b)
        self.assertEqual([t for t, _ in got][-2:], [b"E", b"Z"], got)
        self.assertEqual(hz.parse_fields(got[-2][1])["C"], "23505")
        self.assertEqual(got[-1][1], b"I")
        self.not_listening(b, "pgw_defer")

    def test_behind_a_query_skipped_after_an_error(self):
        # A Parse that fails, a Query the server skips for it (no
        # ReadyForQuery answers it), the Sync, then a LISTEN: pgwharf
        # counted the skipped Query's ReadyForQuery as one still to come,
        # took the LISTEN's for it, and never handed the LISTEN over.
        for mps in (200, 0):
            with self.subTest(max_prepared_statements=mps):
                self.use_max_prepared_statements(mps)
                a = login(self, self.px)
                a.sendall(hz.parse_msg("", "selec 1") + hz.query_msg("select 1") +
                          hz.msg(b"S") + hz.query_msg("listen pgw_skipped%d" % mps))
                got = hz.read_until_ready(a)
                self.assertEqual([t for t, _ in got], [b"E", b"Z"], got)
                self.assertEqual([t for t, _ in hz.read_until_ready(a)], [b"C", b"Z"])
                self.hub_listens("pgw_skipped%d" % mps)
                self.notify("pgw_skipped%d" % mps, "s")
                self.assertEqual([n[1:] for n in read_notifications(a, 1)],
                                 [("pgw_skipped%d" % mps, "s")])
                a.close()

    def test_prepared_twice_in_one_batch_after_a_wait(self):
        # In a transaction, a Parse of a text the server has prepared, sent
        # behind a request not answered yet, waits for that answer
        # (prepared.c) and is scanned again: it was noted twice, and the
        # next LISTEN's CommandComplete was taken for the copy's.
        a = login(self, self.px)
        self.expect(a, "begin", ["BEGIN"], b"T")
        prepare(self, a, {"pgw_s1": "listen pgw_twice_a"})
        a.sendall(hz.query_msg("select 1") + hz.parse_msg("pgw_s2", "listen pgw_twice_a") +
                  hz.ext_msgs("", parse=False, stmt="pgw_s2", describe=False)[:-5] +
                  hz.ext_msgs("listen pgw_twice_b", describe=False))
        self.assertEqual([t for t, _ in hz.read_until_ready(a)], [b"T", b"D", b"C", b"Z"])
        self.assertEqual([t for t, _ in hz.read_until_ready(a)],
                         [b"1", b"2", b"C", b"1", b"2", b"C", b"Z"])
        self.expect(a, "commit", ["COMMIT"], b"I")
        self.hub_listens("pgw_twice_b")      # the hub's LISTENs run in order
        for chan in ("pgw_twice_a", "pgw_twice_b"):
            self.notify(chan, "t")
            self.assertEqual([n[1:] for n in read_notifications(a, 1)], [(chan, "t")])

    def test_prepared_wait_outlasts_the_server(self):
        # The same wait while the request ahead ends the transaction: the
        # server goes back before the Parse is scanned again (on the next
        # server, where the request numbers start again).  One server for
        # queries (the other listens): the one that prepared it.
        px = self.start_pgwharf(settings={"pool_mode": "transaction", "default_pool_size": 2})
        w = login(self, px)
        self.listen(w, "listen pgw_other")
        a = login(self, px)
        a.sendall(hz.query_msg("select 0") + hz.parse_msg("pgw_w1", "listen pgw_waited") +
                  hz.msg(b"S"))          # the server prepares it
        self.assertEqual([t for t, _ in hz.read_until_ready(a)], [b"T", b"D", b"C", b"Z"])
        self.assertEqual([t for t, _ in hz.read_until_ready(a)], [b"1", b"Z"])
        a.sendall(hz.ext_msgs("select 1", describe=False) +
                  hz.parse_msg("pgw_w2", "listen pgw_waited") +
                  hz.ext_msgs("", parse=False, stmt="pgw_w2", describe=False)[:-5] +
                  hz.ext_msgs("select 2", describe=False))
        self.assertEqual([t for t, _ in hz.read_until_ready(a)], [b"1", b"2", b"D", b"C", b"Z"])
        self.assertEqual([t for t, _ in hz.read_until_ready(a)],
                         [b"1", b"2", b"C", b"1", b"2", b"D", b"C", b"Z"])
        self.hub_listens("pgw_waited")
        self.notify("pgw_waited", "w")
        self.assertEqual([n[1:] for n in read_notifications(a, 1)], [("pgw_waited", "w")])

    def test_savepoint_parse_wait_outlasts_the_server(self):
        # A Parse of SAVEPOINT a first in its batch, waiting (prepared.c)
        # while the request ahead ends the transaction, was noted on that
        # server and again on the next, where the request numbers start
        # again: the first copy stayed, and in a later transaction gave its
        # name to SAVEPOINT b, so ROLLBACK TO b forgot a LISTEN run before b.
        px = self.start_pgwharf(settings={"pool_mode": "transaction", "default_pool_size": 2})
        a = login(self, px)
        self.listen(a, "listen pgw_spw_other")
        a.sendall(hz.query_msg("select 0") + hz.parse_msg("pgw_sw1", "savepoint a") +
                  hz.msg(b"S"))          # the server prepares it
        self.assertEqual([t for t, _ in hz.read_until_ready(a)], [b"T", b"D", b"C", b"Z"])
        self.assertEqual([t for t, _ in hz.read_until_ready(a)], [b"1", b"Z"])
        a.sendall(hz.ext_msgs("select 1", describe=False) +
                  hz.parse_msg("pgw_sw2", "savepoint a") +
                  hz.ext_msgs("", parse=False, stmt="pgw_sw2", describe=False))
        self.assertEqual([t for t, _ in hz.read_until_ready(a)], [b"1", b"2", b"D", b"C", b"Z"])
        got = hz.read_until_ready(a)     # outside a transaction block: 25P01
        self.assertEqual([t for t, _ in got], [b"1", b"2", b"E", b"Z"], got)
        for sql, tags, status in (
                ("begin; listen pgw_spw_kept", ["BEGIN", "LISTEN"], b"T"),
                ("savepoint b", ["SAVEPOINT"], b"T"),
                ("listen pgw_spw_gone", ["LISTEN"], b"T"),
                ("rollback to b", ["ROLLBACK"], b"T"),
                ("commit", ["COMMIT"], b"I")):
            self.expect(a, sql, tags, status)
        w = login(self, px)
        self.listen(w, "listen pgw_spw_kept")
        self.notify("pgw_spw_kept", "k")
        self.assertEqual([n[1:] for n in read_notifications(a, 1)], [("pgw_spw_kept", "k")])

    def test_behind_a_discard_all(self):
        # DISCARD ALL ends what the client listened to before it, not a
        # LISTEN it sent behind it (noted then, run after it).
        a = login(self, self.px)
        self.listen(a, "listen pgw_before_discard")
        a.sendall(hz.query_msg("discard all") + hz.query_msg("listen pgw_after_discard"))
        self.assertEqual([t for t, _ in hz.read_until_ready(a) + hz.read_until_ready(a)],
                         [b"C", b"Z", b"C", b"Z"])
        # The hub ran LISTEN pgw_after_discard when it was noted, then the
        # UNLISTEN of the channel a left.
        pt.wait_until(lambda: int(self.pg.psql(
            "select count(*) from pg_stat_activity where query like 'UNLISTEN %%' "
            "and state = 'idle'")) == 1, 20, what="the hub's UNLISTEN")
        self.notify("pgw_after_discard", "d")
        self.assertEqual([n[1:] for n in read_notifications(a, 1)], [("pgw_after_discard", "d")])
        self.not_listening(a, "pgw_before_discard")

    def test_behind_a_discard_all_in_its_batch(self):
        # The same in one extended-protocol batch (psycopg 3's pipeline:
        # DISCARD ALL, then LISTEN, one Sync): the LISTEN, noted in the
        # DISCARD's request, was dropped with it at its CommandComplete;
        # the client got its LISTEN tag and never a notification.
        a = login(self, self.px)
        self.listen(a, "listen pgw_before_discard2")
        a.sendall(hz.ext_msgs("discard all", describe=False)[:-5] +       # no Sync between
                  hz.ext_msgs("listen pgw_after_discard2", describe=False))
        self.assertEqual([t for t, _ in hz.read_until_ready(a)],
                         [b"1", b"2", b"C", b"1", b"2", b"C", b"Z"])
        self.hears(a, "pgw_after_discard2", "d")
        self.not_listening(a, "pgw_before_discard2")

    def test_rollback_and_chain(self):
        # ROLLBACK AND CHAIN ends the transaction (a new one starts): its
        # LISTEN was kept and became the hub's at the next COMMIT.
        a = login(self, self.px)
        self.expect(a, "begin", ["BEGIN"], b"T")
        self.expect(a, "listen pgw_chain", ["LISTEN"], b"T")
        self.expect(a, "rollback and chain", ["ROLLBACK"], b"T")
        self.expect(a, "commit", ["COMMIT"], b"I")
        self.not_listening(a, "pgw_chain")
        # Behind ROLLBACK in one Query, likewise.
        self.expect(a, "begin", ["BEGIN"], b"T")
        self.expect(a, "listen pgw_chain2", ["LISTEN"], b"T")
        self.expect(a, "rollback; listen pgw_other", ["ROLLBACK", "LISTEN"], b"I")
        self.not_listening(a, "pgw_chain2")
        # COMMIT AND CHAIN commits it, whatever comes after.
        self.expect(a, "begin", ["BEGIN"], b"T")
        self.expect(a, "listen pgw_cchain", ["LISTEN"], b"T")
        self.expect(a, "commit and chain", ["COMMIT"], b"T")
        self.expect(a, "rollback", ["ROLLBACK"], b"I")
        self.hears(a, "pgw_cchain", "c")

    def test_rollback_to_savepoint(self):
        # ROLLBACK TO SAVEPOINT takes back what ran after the savepoint.
        a = login(self, self.px)
        for sql, tags, status in (
                ("begin", ["BEGIN"], b"T"),
                ("listen pgw_sp_kept", ["LISTEN"], b"T"),
                ("savepoint one", ["SAVEPOINT"], b"T"),
                ("listen pgw_sp_gone", ["LISTEN"], b"T"),
                ("rollback to savepoint one", ["ROLLBACK"], b"T"),
                ("savepoint two", ["SAVEPOINT"], b"T"),
                ("listen pgw_sp_released", ["LISTEN"], b"T"),
                ("release two", ["RELEASE"], b"T"),       # part of the transaction now
                ("savepoint three", ["SAVEPOINT"], b"T"),
                ("listen pgw_sp_failed", ["LISTEN"], b"T")):
            self.expect(a, sql, tags, status)
        self.assertEqual(hz.simple_query(a, "select 1/(random() * 0)::int")[0], [])
        self.expect(a, "rollback to three", ["ROLLBACK"], b"T")
        self.expect(a, "commit", ["COMMIT"], b"I")
        self.witness("pgw_sp_released").close()   # the hub's LISTENs ran (a new server)
        self.notify("pgw_sp_kept", "k")
        self.notify("pgw_sp_released", "r")
        self.assertEqual([n[1:] for n in read_notifications(a, 2)],
                         [("pgw_sp_kept", "k"), ("pgw_sp_released", "r")])
        self.not_listening(a, "pgw_sp_gone")
        self.not_listening(a, "pgw_sp_failed")

    def commit_held(self, a, chan, gate, before=False):
        """a runs BEGIN, LISTEN chan (listening through the hub first when
        before), then COMMIT with a query behind it held at gate: its server,
        listening now, stays a's past the COMMIT."""
        if before:
            self.listen(a, "listen " + chan)
        self.expect(a, "begin", ["BEGIN"], b"T")
        self.expect(a, "listen " + chan, ["LISTEN"], b"T")
        if not before:
            self.hub_listens(chan)
        a.sendall(hz.query_msg("commit") + hz.query_msg("select %s as marker_held" % gate.sql()))
        self.assertEqual([t for t, _ in hz.read_until_ready(a)], [b"C", b"Z"])
        self.pg.wait_running("marker_held", lock_wait=True)

    def held_reply(self, a, gate):
        """gate opens: the reply to a's query behind its COMMIT; its own
        server sends the notification committed meanwhile before its end."""
        gate.open()
        return hz.read_until_ready(a)

    def once_at_commit(self, a, chan, got):
        """a gets n1 once (in got, or after it), then n2."""
        seen = [notification(b)[1:] for t, b in got if t == b"A"]
        self.notify(chan, "n2")
        while seen[-1:] != [(chan, "n2")]:
            seen += [n[1:] for n in read_notifications(a, 1)]
        self.assertEqual(seen, [(chan, "n1"), (chan, "n2")])
        a.sendall(hz.query_msg("select 6"))
        self.assertEqual([t for t, _ in hz.read_until_ready(a)], [b"T", b"D", b"C", b"Z"])

    def test_once_at_commit_the_hubs_copy_first(self):
        # The COMMIT hands the channel over while the client still holds
        # the server its LISTEN ran on (a query behind the COMMIT): the
        # hub's copy of a notification waits for the end of that query,
        # and the server, listening too, sends its own copy before it.
        # The client got both.
        for before in (False, True):
            with self.subTest(listening_through_the_hub_before=before):
                chan = "pgw_dup_hub%d" % before
                gate = hz.Gate(self.pg, 7480 + before)
                self.addCleanup(gate.close)
                a = login(self, self.px)
                self.commit_held(a, chan, gate, before)
                w = self.witness(chan)
                self.notify(chan, "n1")
                self.assertEqual([n[1:] for n in read_notifications(w, 1)], [(chan, "n1")])
                self.once_at_commit(a, chan, self.held_reply(a, gate))
                w.close()
                a.close()

    def test_once_at_commit_the_servers_copy_first(self):
        # The same with the hub's server behind (stopped): the client's
        # own server sent the notification, and the hub's copy followed
        # once the client was between transactions.
        chan = "pgw_dup_srv"
        gate = hz.Gate(self.pg, 7482)
        self.addCleanup(gate.close)
        a = login(self, self.px)
        self.commit_held(a, chan, gate)
        pid = int(self.pg.psql("select pid from pg_stat_activity where query = "
                               "'LISTEN \"%s\"'" % chan))
        os.kill(pid, signal.SIGSTOP)
        try:
            self.notify(chan, "n1")
            got = self.held_reply(a, gate)
            self.assertEqual([notification(b)[1:] for t, b in got if t == b"A"],
                             [(chan, "n1")], got)
        finally:
            os.kill(pid, signal.SIGCONT)
        self.once_at_commit(a, chan, got)

    def test_a_hub_copy_before_the_end_of_its_transaction_is_not_lost(self):
        # The transaction of a LISTEN (implicit, or BEGIN ... COMMIT in one
        # Query) has committed on the client's server, which has sent its
        # ReadyForQuery, but pgwharf has not read it yet (the client reads
        # slowly: the server's reply waits behind what pgwharf relays).  A
        # notification committed then reached the hub, whose copy pgwharf
        # skipped for the client (not listening yet); its own server, which
        # would send it after its ReadyForQuery (stopped here), was closed
        # when given back: the notification was lost.  (Not stopped, the
        # client gets one copy too: its server's, when pgwharf reads it
        # with the ReadyForQuery, else the hub's.)
        # The result (8 MB) is more than pgwharf's socket to the client can
        # take (tcp_wmem's 4 MB at most) and the client's 4 kB: the server
        # can be idle, every byte sent, only with some of them unread in
        # pgwharf's socket (its receive buffer grows to take them), its
        # ReadyForQuery among them.  At 3 MB pgwharf could take it all when
        # its send buffer grew large, read the ReadyForQuery and close the
        # server before the test looked.
        shapes = ("listen {c}; select repeat('x', 1000) as marker_{c} "
                  "from generate_series(1, 8000)",
                  "begin; listen {c}; select repeat('x', 1000) as marker_{c} "
                  "from generate_series(1, 8000); commit")
        for n, (sql, stop) in enumerate((x, stop) for stop in (True, False) for x in shapes):
            with self.subTest(sql=sql, stopped=stop):
                chan = "pgw_race%d" % n
                w = self.witness(chan)
                a = slow_login(self, self.px)
                pg = socket.create_connection((self.pg.host, self.pg.port), timeout=20)
                self.addCleanup(pg.close)
                hz.sync_login(pg, self.pg.user, self.pg.database, self.pg.password)
                a.sendall(hz.query_msg(sql.format(c=chan)))

                def server():
                    rows = hz.simple_query(pg, "select pid, client_port, state from "
                                           "pg_stat_activity where query like "
                                           "'%%marker_%s %%' and pid <> pg_backend_pid()"
                                           % chan)[0]
                    return rows[0] if rows else None
                pt.wait_until(lambda: server() is not None, 20, what="the client's server")
                got = bytearray()
                row = server()
                while row[2] != b"idle":     # its ReadyForQuery is sent
                    got += a.recv(4096)
                    row = server()
                pid, port = int(row[0]), int(row[1])
                # ... and not read by pgwharf: bytes from it wait in pgwharf's socket.
                self.assertGreater(tcp_rx_queue(port, self.pg.port), 0)

                def next_msg():
                    while len(got) < 5 or len(got) < 1 + struct.unpack("!I", got[1:5])[0]:
                        chunk = a.recv(65536)
                        if not chunk:
                            raise EOFError("pgwharf closed the connection")
                        got.extend(chunk)
                    size = 1 + struct.unpack("!I", got[1:5])[0]
                    m = (bytes(got[:1]), bytes(got[5:size]))
                    del got[:size]
                    return m
                if stop:
                    os.kill(pid, signal.SIGSTOP)
                try:
                    self.notify(chan, "n1")
                    self.assertEqual([x[1:] for x in read_notifications(w, 1)], [(chan, "n1")])
                    msgs = [next_msg()]
                    while msgs[-1][0] != b"Z":
                        msgs.append(next_msg())
                finally:
                    if stop:
                        os.kill(pid, signal.SIGCONT)
                self.assertEqual(msgs[-1], (b"Z", b"I"))
                # n1 once (from its server before the ReadyForQuery, or after it), then n2.
                seen = [notification(b)[1:] for t, b in msgs if t == b"A"]
                self.notify(chan, "n2")
                while seen[-1:] != [(chan, "n2")]:
                    t, b = next_msg()
                    self.assertEqual(t, b"A")
                    seen.append(notification(b)[1:])
                self.assertEqual(seen, [(chan, "n1"), (chan, "n2")])
                self.assertEqual(got, b"")
                self.assertEqual(hz.simple_query(a, "select 6"), ([[b"6"]], []))
                w.close()
                a.close()

    def test_not_one_committed_while_its_transaction_goes_on(self):
        # The hub's copy that came while a request of the LISTEN's
        # transaction ran, which left it open (ReadyForQuery 'T'), was
        # committed before the LISTEN: not the client's at COMMIT.
        chan = "pgw_goes_on"
        gate = hz.Gate(self.pg, 7484)
        self.addCleanup(gate.close)
        w = self.witness(chan)
        a = login(self, self.px)
        a.sendall(hz.query_msg("begin; listen %s; select %s as marker_on" % (chan, gate.sql())))
        self.pg.wait_running("marker_on", lock_wait=True)
        self.notify(chan, "before")
        self.assertEqual([x[1:] for x in read_notifications(w, 1)], [(chan, "before")])
        gate.open()
        self.assertEqual(hz.read_until_ready(a)[-1], (b"Z", b"T"))
        self.expect(a, "commit", ["COMMIT"], b"I")
        self.notify(chan, "after")
        self.assertEqual([x[1:] for x in read_notifications(a, 1)], [(chan, "after")])

    def test_one_barrier_while_the_hub_does_not_answer(self):
        # A copy its own server sent waits for the hub's barrier; while the
        # hub's server does not answer, each later transaction of the
        # client queued one more barrier (memory without bound, and a
        # Query each on the hub's server).
        chan = "pgw_dup_barrier"
        gate = hz.Gate(self.pg, 7483)
        self.addCleanup(gate.close)
        a = login(self, self.px)
        self.commit_held(a, chan, gate)
        pid, port = [int(x) for x in self.pg.psql(
            "select pid, client_port from pg_stat_activity where query = "
            "'LISTEN \"%s\"'" % chan).split("|")]
        os.kill(pid, signal.SIGSTOP)
        try:
            self.notify(chan, "n1")
            got = self.held_reply(a, gate)
            self.assertEqual([notification(b)[1:] for t, b in got if t == b"A"],
                             [(chan, "n1")], got)
            pt.wait_until(lambda: tcp_rx_queue(self.pg.port, port) > 0, 20,
                          what="the barrier sent to the stopped backend")
            for i in range(20):
                self.assertEqual(hz.simple_query(a, "select %d" % i)[0], [[str(i).encode()]])
            self.assertEqual(tcp_rx_queue(self.pg.port, port), 6)    # one empty Query
        finally:
            os.kill(pid, signal.SIGCONT)
        self.once_at_commit(a, chan, got)

    def test_rollback_to_an_earlier_savepoint_by_name(self):
        # ROLLBACK TO a savepoint made before a later one (or before the
        # first LISTEN) takes back what ran after it; names fold to lower
        # case unless quoted.
        a = login(self, self.px)
        for sql, tags, status in (
                ("begin", ["BEGIN"], b"T"),
                ("savepoint first", ["SAVEPOINT"], b"T"),
                ("listen pgw_sn_kept", ["LISTEN"], b"T"),
                ("savepoint Sp_Outer", ["SAVEPOINT"], b"T"),
                ("listen pgw_sn_gone1", ["LISTEN"], b"T"),
                ("savepoint \"Sp_In\"", ["SAVEPOINT"], b"T"),
                ("savepoint sp_in", ["SAVEPOINT"], b"T"),
                ("listen pgw_sn_gone2", ["LISTEN"], b"T"),
                ("release savepoint \"Sp_In\"", ["RELEASE"], b"T"),
                ("listen pgw_sn_gone3", ["LISTEN"], b"T"),
                ("rollback to savepoint SP_OUTER", ["ROLLBACK"], b"T"),
                ("listen pgw_sn_kept2", ["LISTEN"], b"T"),
                ("commit", ["COMMIT"], b"I")):
            self.expect(a, sql, tags, status)
        self.witness("pgw_sn_kept2").close()    # its LISTEN ran after the hub's
        self.notify("pgw_sn_kept", "k")
        self.notify("pgw_sn_kept2", "k2")
        self.assertEqual([n[1:] for n in read_notifications(a, 2)],
                         [("pgw_sn_kept", "k"), ("pgw_sn_kept2", "k2")])
        for chan in ("pgw_sn_gone1", "pgw_sn_gone2", "pgw_sn_gone3"):
            self.not_listening(a, chan)
        # To a savepoint made before the first LISTEN, past a later one.
        b = login(self, self.px)
        for sql, tags, status in (
                ("begin", ["BEGIN"], b"T"),
                ("savepoint a", ["SAVEPOINT"], b"T"),
                ("listen pgw_sn_gone4", ["LISTEN"], b"T"),
                ("savepoint b", ["SAVEPOINT"], b"T"),
                ("rollback to a", ["ROLLBACK"], b"T"),
                ("commit", ["COMMIT"], b"I")):
            self.expect(b, sql, tags, status)
        self.not_listening(b, "pgw_sn_gone4")
        # ROLLBACK AND CHAIN with a savepoint made after the LISTEN open.
        c = login(self, self.px)
        for sql, tags, status in (
                ("begin", ["BEGIN"], b"T"),
                ("listen pgw_sn_gone5", ["LISTEN"], b"T"),
                ("savepoint a", ["SAVEPOINT"], b"T"),
                ("rollback and chain", ["ROLLBACK"], b"T"),
                ("commit", ["COMMIT"], b"I")):
            self.expect(c, sql, tags, status)
        self.not_listening(c, "pgw_sn_gone5")

    def test_savepoint_of_an_unread_name_after_one_of_the_name(self):
        # SAVEPOINT a, then a savepoint whose name pgwharf did not read (a
        # comment beside it), which may be a again: ROLLBACK TO a and
        # RELEASE a may be to it, the latest.  Taken to be to the first a,
        # they forgot a LISTEN run between the two (and RELEASE a, later
        # ROLLBACK TO a, one run before them all).
        for end in ("rollback to a", "release a"):
            with self.subTest(end=end):
                kept, gone = "pgw_spu_kept_" + end[:3], "pgw_spu_gone_" + end[:3]
                a = login(self, self.px)
                for sql, tags, status in (
                        ("begin", ["BEGIN"], b"T"),
                        ("listen %s0" % kept, ["LISTEN"], b"T"),
                        ("savepoint a", ["SAVEPOINT"], b"T"),
                        ("listen %s1" % kept, ["LISTEN"], b"T"),
                        ("savepoint a /* again */", ["SAVEPOINT"], b"T"),
                        ("listen " + gone if end.startswith("rollback") else "select 1",
                         ["LISTEN" if end.startswith("rollback") else "SELECT 1"], b"T"),
                        (end, ["ROLLBACK" if end.startswith("rollback") else "RELEASE"], b"T"),
                        ("rollback to a" if end.startswith("release") else "select 2",
                         ["ROLLBACK" if end.startswith("release") else "SELECT 1"], b"T"),
                        ("commit", ["COMMIT"], b"I")):
                    if sql.startswith("select"):
                        self.assertEqual(len(hz.simple_query(a, sql)[0]), 1)
                        continue
                    self.expect(a, sql, tags, status)
                if end.startswith("rollback"):
                    self.witness(kept + "1").close()
                    self.notify(kept + "0", "k0")
                    self.notify(kept + "1", "k1")
                    self.assertEqual([n[1:] for n in read_notifications(a, 2)],
                                     [(kept + "0", "k0"), (kept + "1", "k1")])
                    self.not_listening(a, gone)
                else:
                    # RELEASE of the second a, then ROLLBACK TO the first:
                    # only what ran after the first is forgotten.
                    self.witness(kept + "0").close()
                    self.notify(kept + "0", "k0")
                    self.assertEqual([n[1:] for n in read_notifications(a, 1)],
                                     [(kept + "0", "k0")])
                    self.not_listening(a, kept + "1")
                a.close()

    def test_savepoint_parse_scanned_again_after_a_wait(self):
        # A Parse of SAVEPOINT a, first in its batch, that waits for the
        # answer ahead of it (the server has prepared its text) is scanned
        # again: noted twice, the copy gave its name to the next savepoint
        # of the batch (b, not read), so ROLLBACK TO b was taken for one to
        # a savepoint made before all, and forgot the LISTEN before them.
        a = login(self, self.px)
        self.expect(a, "begin", ["BEGIN"], b"T")
        self.expect(a, "listen pgw_sp_wait_kept", ["LISTEN"], b"T")
        prepare(self, a, {"pgw_sp1": "savepoint a"})
        a.sendall(hz.query_msg("select 1") + hz.parse_msg("pgw_sp2", "savepoint a") +
                  hz.ext_msgs("", parse=False, stmt="pgw_sp2", describe=False)[:-5] +
                  hz.ext_msgs("savepoint b", describe=False))
        self.assertEqual([t for t, _ in hz.read_until_ready(a)], [b"T", b"D", b"C", b"Z"])
        self.assertEqual([t for t, _ in hz.read_until_ready(a)],
                         [b"1", b"2", b"C", b"1", b"2", b"C", b"Z"])
        self.expect(a, "listen pgw_sp_wait_gone", ["LISTEN"], b"T")
        self.expect(a, "rollback to b", ["ROLLBACK"], b"T")
        self.expect(a, "commit", ["COMMIT"], b"I")
        self.witness("pgw_sp_wait_kept").close()   # the hub's LISTEN ran (a new server)
        self.notify("pgw_sp_wait_kept", "k")
        self.assertEqual([n[1:] for n in read_notifications(a, 1)], [("pgw_sp_wait_kept", "k")])
        self.not_listening(a, "pgw_sp_wait_gone")

    def test_prepared_listen_beside_an_unexecuted_parse(self):
        # The LISTEN tag of a statement prepared in an earlier batch,
        # executed in a batch with a Parse of another LISTEN that is not
        # executed: the Parse's LISTEN was taken to have run.
        a = login(self, self.px)
        self.expect(a, "begin", ["BEGIN"], b"T")
        prepare(self, a, {"pgw_p0": "listen pgw_executed"})
        a.sendall(hz.parse_msg("pgw_p1", "listen pgw_parsed_only") +
                  hz.ext_msgs("", parse=False, stmt="pgw_p0", describe=False))
        self.assertEqual([t for t, _ in hz.read_until_ready(a)], [b"1", b"2", b"C", b"Z"])
        self.expect(a, "commit", ["COMMIT"], b"I")
        self.not_listening(a, "pgw_parsed_only")
        self.hears(a, "pgw_executed", "e")      # its Bind noted it

    def test_prepared_in_one_request_bound_in_a_later_one(self):
        # A LISTEN prepared inside a transaction (the server has it, under
        # pgwharf's name), executed in later requests: the LISTEN ran on a
        # pooled server and its CommandComplete came, but the hub never
        # took it over, so the client heard nothing.
        a = login(self, self.px)
        a.sendall(hz.query_msg("begin") + hz.parse_msg("s_later", "listen pgw_later") +
                  hz.msg(b"S") + hz.query_msg("commit"))
        for types in ([b"C", b"Z"], [b"1", b"Z"], [b"C", b"Z"]):
            self.assertEqual([t for t, _ in hz.read_until_ready(a)], types)
        # Executed in a transaction that rolls back: not listening.
        a.sendall(hz.query_msg("begin") + bind_exec("s_later") + hz.query_msg("rollback"))
        for types in ([b"C", b"Z"], [b"2", b"C", b"Z"], [b"C", b"Z"]):
            self.assertEqual([t for t, _ in hz.read_until_ready(a)], types)
        self.not_listening(a, "pgw_later")
        # Executed between transactions (its own implicit one): listening.
        a.sendall(bind_exec("s_later"))
        self.assertEqual(hz.read_until_ready(a), [(b"2", b""), (b"C", b"LISTEN\x00"),
                                                  (b"Z", b"I")])
        self.hears(a, "pgw_later", "l")

    def test_bound_behind_a_parse_pgwharf_answers(self):
        # The server has the text of s_twin2 (as s_twin1): pgwharf answers
        # that Parse itself, which the tracker does not count, so the Bind
        # after it had the Parse's place in the batch and was taken for
        # it, scanned again: its LISTEN was not noted.
        a = login(self, self.px)
        self.expect(a, "begin", ["BEGIN"], b"T")
        prepare(self, a, {"s_one": "listen pgw_one", "s_twin1": "listen pgw_twin"})
        a.sendall(hz.parse_msg("s_twin2", "listen pgw_twin") + bind_exec("s_one"))
        self.assertEqual([t for t, _ in hz.read_until_ready(a)], [b"1", b"2", b"C", b"Z"])
        self.expect(a, "commit", ["COMMIT"], b"I")
        self.not_listening(a, "pgw_twin")
        self.hears(a, "pgw_one", "1")

    def test_kept_prepared_listen_bound_inside_a_transaction(self):
        # A LISTEN prepared between transactions is pgwharf's (no server
        # has it); bound inside a transaction, the client's server got the
        # Bind and answered 26000, "prepared statement does not exist".
        a = login(self, self.px)
        prepare(self, a, {"s_kept": "listen pgw_kept_tx"})
        self.expect(a, "begin", ["BEGIN"], b"T")
        a.sendall(bind_exec("s_kept"))
        self.assertEqual(hz.read_until_ready(a), [(b"2", b""), (b"C", b"LISTEN\x00"),
                                                  (b"Z", b"T")])
        self.expect(a, "commit", ["COMMIT"], b"I")
        self.hears(a, "pgw_kept_tx", "k")
        # The statement is still the client's: its UNLISTEN, then the
        # LISTEN again between transactions, then its Close.
        a.sendall(hz.ext_msgs("unlisten pgw_kept_tx"))
        self.assertEqual([t for t, _ in hz.read_until_ready(a)], [b"1", b"2", b"n", b"C", b"Z"])
        self.not_listening(a, "pgw_kept_tx")
        a.sendall(bind_exec("s_kept"))
        self.assertEqual([t for t, _ in hz.read_until_ready(a)], [b"2", b"C", b"Z"])
        self.hears(a, "pgw_kept_tx", "again")
        a.sendall(hz.msg(b"C", b"Ss_kept\x00") + hz.msg(b"S"))
        self.assertEqual([t for t, _ in hz.read_until_ready(a)], [b"3", b"Z"])
        a.sendall(bind_exec("s_kept"))
        got = hz.read_until_ready(a)
        self.assertEqual([t for t, _ in got], [b"E", b"Z"], got)
        self.assertEqual(hz.parse_fields(got[0][1])["C"], "26000")

    def test_parse_of_a_kept_name_inside_a_transaction_is_refused(self):
        # PostgreSQL refuses a Parse of a name it has (42P05); inside a
        # transaction the server got it and took it (pgwharf kept the
        # LISTEN under that name, no server had it): the name then meant
        # the LISTEN between transactions and the new text inside them.
        a = login(self, self.px)
        prepare(self, a, {"s_k": "listen pgw_kept_name"})
        self.expect(a, "begin", ["BEGIN"], b"T")
        a.sendall(hz.parse_msg("s_k", "select 1") + hz.msg(b"S"))
        got = hz.read_until_ready(a)
        self.assertEqual([t for t, _ in got], [b"E", b"Z"], got)
        self.assertEqual(hz.parse_fields(got[0][1])["C"], "42P05")
        self.assertEqual(got[-1][1], b"E")
        self.expect(a, "rollback", ["ROLLBACK"], b"I")
        # The statement is still the LISTEN, inside a transaction too.
        self.expect(a, "begin", ["BEGIN"], b"T")
        a.sendall(bind_exec("s_k"))
        self.assertEqual(hz.read_until_ready(a), [(b"2", b""), (b"C", b"LISTEN\x00"),
                                                  (b"Z", b"T")])
        self.expect(a, "commit", ["COMMIT"], b"I")
        self.hears(a, "pgw_kept_name", "n")

    def test_kept_prepared_listen_described_inside_a_transaction(self):
        a = login(self, self.px)
        prepare(self, a, {"s_desc": "listen pgw_kept_desc"})
        self.expect(a, "begin", ["BEGIN"], b"T")
        a.sendall(hz.msg(b"D", b"Ss_desc\x00") + hz.msg(b"S"))
        self.assertEqual([t for t, _ in hz.read_until_ready(a)], [b"t", b"n", b"Z"])
        a.sendall(bind_exec("s_desc"))
        self.assertEqual([t for t, _ in hz.read_until_ready(a)], [b"2", b"C", b"Z"])
        self.expect(a, "commit", ["COMMIT"], b"I")
        self.hears(a, "pgw_kept_desc", "d")

    def test_kept_prepared_listen_in_a_batch_with_other_statements(self):
        # Bound in a batch that is not only it: the batch takes a server.
        a = login(self, self.px)
        prepare(self, a, {"s_mixed": "listen pgw_kept_mixed"})
        a.sendall(bind_exec("s_mixed")[:-5] + hz.ext_msgs("select 7", describe=False))
        got = hz.read_until_ready(a)
        self.assertEqual([t for t, _ in got], [b"2", b"C", b"1", b"2", b"D", b"C", b"Z"], got)
        self.hears(a, "pgw_kept_mixed", "m")

    def test_listen_unlisten_listen_bound_in_one_batch(self):
        # Statements prepared in an earlier request, bound in one batch:
        # LISTEN, UNLISTEN, LISTEN again.  The second Bind of s_l was
        # taken for its first, scanned again: not noted, so the hub ran
        # the UNLISTEN last and the client, listening on its server,
        # heard nothing.
        a = login(self, self.px)
        self.expect(a, "begin", ["BEGIN"], b"T")
        prepare(self, a, {"s_l": "listen pgw_lul", "s_u": "unlisten pgw_lul"})
        a.sendall(bind_exec("s_l")[:-5] + bind_exec("s_u")[:-5] + bind_exec("s_l"))
        self.assertEqual([t for t, _ in hz.read_until_ready(a)],
                         [b"2", b"C", b"2", b"C", b"2", b"C", b"Z"])
        self.expect(a, "commit", ["COMMIT"], b"I")
        self.hears(a, "pgw_lul", "l")
        # The same with the first LISTEN's Parse in the batch.
        self.expect(a, "begin", ["BEGIN"], b"T")
        a.sendall(hz.parse_msg("s_l2", "listen pgw_lul2") + bind_exec("s_l2")[:-5] +
                  hz.parse_msg("s_u2", "unlisten pgw_lul2") + bind_exec("s_u2")[:-5] +
                  bind_exec("s_l2"))
        self.assertEqual([t for t, _ in hz.read_until_ready(a)],
                         [b"1", b"2", b"C", b"1", b"2", b"C", b"2", b"C", b"Z"])
        self.expect(a, "commit", ["COMMIT"], b"I")
        self.hears(a, "pgw_lul2", "l2")

    def test_unlisten_prepared_earlier_bound_inside_a_transaction(self):
        a = login(self, self.px)
        self.listen(a, "listen pgw_pu1")
        self.listen(a, "listen pgw_pu2")
        self.expect(a, "begin", ["BEGIN"], b"T")
        prepare(self, a, {"s_pu": "unlisten pgw_pu1", "s_pu_all": "unlisten *"})
        self.expect(a, "commit", ["COMMIT"], b"I")
        self.expect(a, "begin", ["BEGIN"], b"T")
        a.sendall(bind_exec("s_pu"))
        self.assertEqual([t for t, _ in hz.read_until_ready(a)], [b"2", b"C", b"Z"])
        self.expect(a, "commit", ["COMMIT"], b"I")
        self.not_listening(a, "pgw_pu1")
        self.hears(a, "pgw_pu2", "still")
        a.sendall(bind_exec("s_pu_all"))
        self.assertEqual([t for t, _ in hz.read_until_ready(a)], [b"2", b"C", b"Z"])
        self.not_listening(a, "pgw_pu2")

    def around_savepoints(self, name, before, between, after):
        """Statements prepared earlier: LISTEN name_gone, bound after the
        savepoint statements `before`, and LISTEN name_kept, bound after
        `between` (which rolls the first back); `after`, COMMIT: only the
        second is listened on."""
        a = login(self, self.px)
        self.expect(a, "begin", ["BEGIN"], b"T")
        prepare(self, a, {"s_1": "listen %s_gone" % name, "s_2": "listen %s_kept" % name})
        for stmt, sqls in (("s_1", before), ("s_2", between), (None, after)):
            for sql in sqls:
                self.expect(a, sql, [sql.split()[0].upper()], b"T")
            if stmt:
                a.sendall(bind_exec(stmt))
                self.assertEqual([t for t, _ in hz.read_until_ready(a)], [b"2", b"C", b"Z"])
        self.expect(a, "commit", ["COMMIT"], b"I")
        self.not_listening(a, name + "_gone")
        self.hears(a, name + "_kept", "kept")

    def test_prepared_listen_bound_then_rolled_back_to_a_savepoint(self):
        self.around_savepoints("pgw_sp", ["savepoint a"], ["rollback to a", "savepoint b"],
                               ["release b"])

    def test_prepared_listen_bound_between_savepoints(self):
        # A savepoint opened before the client had anything noted, one
        # after its LISTEN: rolled back to the first, the LISTEN goes; to
        # the second (c), what ran before it stays.
        self.around_savepoints("pgw_bs", ["savepoint a"], ["savepoint b", "rollback to a"],
                               ["savepoint c", "rollback to c"])

    def test_adopted_statement_closed_then_prepared_again(self):
        # A kept LISTEN that a server got (prepared.c's now): Closed, its
        # name prepared again as another LISTEN between transactions.
        a = login(self, self.px)
        prepare(self, a, {"s_ad": "listen pgw_ad1"})
        a.sendall(bind_exec("s_ad")[:-5] + hz.ext_msgs("select 7", describe=False))
        self.assertEqual([t for t, _ in hz.read_until_ready(a)],
                         [b"2", b"C", b"1", b"2", b"D", b"C", b"Z"])
        a.sendall(hz.msg(b"C", b"Ss_ad\x00") + hz.msg(b"S"))
        self.assertEqual([t for t, _ in hz.read_until_ready(a)], [b"3", b"Z"])
        prepare(self, a, {"s_ad": "listen pgw_ad2"})
        self.expect(a, "begin", ["BEGIN"], b"T")
        a.sendall(bind_exec("s_ad"))
        self.assertEqual([t for t, _ in hz.read_until_ready(a)], [b"2", b"C", b"Z"])
        self.expect(a, "commit", ["COMMIT"], b"I")
        self.hears(a, "pgw_ad2", "2")
        self.hears(a, "pgw_ad1", "1")

    def test_kept_prepared_listen_bound_in_a_failed_transaction(self):
        # PostgreSQL refuses it there (25P02); after the ROLLBACK the
        # statement is still the client's.
        a = login(self, self.px)
        prepare(self, a, {"s_failed": "listen pgw_kept_failed"})
        self.expect(a, "begin", ["BEGIN"], b"T")
        a.sendall(hz.query_msg("select 1/0"))
        self.assertEqual([t for t, _ in hz.read_until_ready(a)], [b"E", b"Z"])
        for msgs in (bind_exec("s_failed"), hz.msg(b"D", b"Ss_failed\x00") + hz.msg(b"S")):
            a.sendall(msgs)
            got = hz.read_until_ready(a)
            self.assertEqual([t for t, _ in got], [b"E", b"Z"], got)
            self.assertEqual(hz.parse_fields(got[0][1])["C"], "25P02")
            self.assertEqual(got[-1][1], b"E")
        self.expect(a, "rollback", ["ROLLBACK"], b"I")
        self.not_listening(a, "pgw_kept_failed")
        a.sendall(bind_exec("s_failed"))
        self.assertEqual([t for t, _ in hz.read_until_ready(a)], [b"2", b"C", b"Z"])
        self.hears(a, "pgw_kept_failed", "f")

    def test_psycopg2_outside_autocommit(self):
        conn = self.db_conn(self.px, autocommit=False)
        conn.cursor().execute("LISTEN pgw_py2tx")
        conn.commit()
        self.hub_listens("pgw_py2tx")
        self.notify("pgw_py2tx", "committed")

        def got():
            conn.poll()
            return bool(conn.notifies)
        pt.wait_until(got, 20, what="psycopg2 notification")
        n = conn.notifies.pop(0)
        self.assertEqual((n.channel, n.payload), ("pgw_py2tx", "committed"))

    def test_psycopg3_outside_autocommit(self):
        try:
            import psycopg
        except ImportError:
            self.skipTest("psycopg 3 not installed")
        with psycopg.connect(self.px.dsn()) as conn:
            conn.execute("LISTEN pgw_py3tx")
            conn.commit()
            self.hub_listens("pgw_py3tx")
            self.notify("pgw_py3tx", "three")
            got = []
            conn.add_notify_handler(lambda n: got.append((n.channel, n.payload)))

            def arrived():
                select.select([conn.fileno()], [], [], 1)
                conn.execute("select 1")     # psycopg reads (and runs handlers)
                conn.rollback()
                return got
            pt.wait_until(arrived, 20, what="psycopg 3 notification")
            self.assertEqual(got, [("pgw_py3tx", "three")])


    def test_held_copies_count_in_the_one_megabyte(self):
        # The hub's copies held for a channel only the transaction listens
        # on (while its request runs) and those held for a channel it
        # listened on before were bounded each on its own: with the first
        # near 1 MB, the second took up to 1 MB more, and at COMMIT the
        # client got both (the client's bound, max_notify_backlog, is 1 MB
        # in all; past it the client gets what was held, then FATAL 54000).
        gate = hz.Gate(self.pg, 7485)
        self.addCleanup(gate.close)
        w = self.witness("pgw_cap_w")
        a = login(self, self.px)
        self.listen(a, "listen pgw_cap_b")
        a.sendall(hz.query_msg("begin; listen pgw_cap_a; select %s as marker_cap; commit"
                               % gate.sql()))
        self.pg.wait_running("marker_cap", lock_wait=True)
        self.hub_listens("pgw_cap_a")
        n = 120       # 120 of 8 kB: less than 1 MB on each channel
        self.pg.psql("select count(pg_notify(c, repeat('x', 7990) || i)) from "
                     "unnest(array['pgw_cap_a', 'pgw_cap_b']) c, generate_series(1, %d) i; "
                     "select pg_notify('pgw_cap_w', 'done')" % n)
        self.assertEqual([x[1:] for x in read_notifications(w, 1)], [("pgw_cap_w", "done")])
        gate.open()
        a.settimeout(30)
        self.assertEqual(hz.read_until_ready(a)[-1], (b"Z", b"I"))
        kept = ended_for_its_backlog(self, a)
        held = sum(5 + 4 + len("pgw_cap_a") + 1 + len(p) + 1 for p in kept)
        self.assertLessEqual(held, 1 << 20)
        self.assertGreater(held, (1 << 20) - 8100)
        self.assertIn("event=notification_dropped", self.px.log())


    def test_held_copies_memory_goes_back_when_its_transaction_goes_on(self):
        # Copies held while a request of a LISTEN's transaction ran, which
        # left it open (ReadyForQuery 'T'), are dropped; their buffer (up
        # to 1 MB a client) stayed allocated as long as the client stayed.
        # (Read in the process's RSS: not under ASan, whose quarantine
        # keeps freed memory.)
        with open("/proc/%d/maps" % self.px.proc.pid) as f:
            if "libasan" in f.read():
                self.skipTest("ASan keeps freed memory")
        gate = hz.Gate(self.pg, 7486)
        self.addCleanup(gate.close)
        k = 16
        self.px.settings["default_pool_size"] = k + 2
        self.px.write_config()
        self.px.admin("RELOAD")
        w = self.witness("pgw_mem_w")
        clients = [login(self, self.px) for _ in range(k)]
        for i, a in enumerate(clients):
            self.expect(a, "begin; listen pgw_mem%d" % i, ["BEGIN", "LISTEN"], b"T")
            self.hub_listens("pgw_mem%d" % i)
            a.sendall(hz.query_msg("select %s as marker_mem" % gate.sql()))
        self.pg.wait_running("marker_mem", k, lock_wait=True)

        def rss():
            with open("/proc/%d/status" % self.px.proc.pid) as f:
                return [int(x.split()[1]) for x in f if x.startswith("VmRSS:")][0] * 1024
        before = rss()
        self.pg.psql("select count(pg_notify('pgw_mem' || c, repeat('x', 7990) || i)) from "
                     "generate_series(0, %d) c, generate_series(1, 120) i; "
                     "select pg_notify('pgw_mem_w', 'done')" % (k - 1))
        self.assertEqual([x[1:] for x in read_notifications(w, 1)], [("pgw_mem_w", "done")])
        held = rss()
        self.assertGreater(held - before, k * 700 * 1024)
        gate.open()
        for a in clients:
            self.assertEqual(hz.read_until_ready(a)[-1], (b"Z", b"T"))
        pt.wait_until(lambda: rss() < held - k * 500 * 1024, 10,
                      what="the held copies' memory given back")


class TestListenMeetsUnlisten(NotifyCase):
    def test_last_client_leaves_while_another_listen_runs(self):
        # b is the channel's only listener; a's LISTEN of it is on its way
        # through the listening server (its backend stopped) when b
        # UNLISTENs: the hub's UNLISTEN went in after a's LISTEN, and the
        # server stopped listening while a counted as listening.
        a, b = login(self, self.px), login(self, self.px)
        self.listen(a, "listen pgw_ctl")
        self.listen(b, "listen pgw_shared")
        pid, port = self.stop_listening_backend()
        try:
            self.send_listen_to_stopped(a, "listen pgw_shared", port)
            self.listen(b, "unlisten pgw_shared")
        finally:
            os.kill(pid, signal.SIGCONT)
        self.assertEqual([t for t, _ in hz.read_until_ready(a)], [b"C", b"Z"])
        self.notify("pgw_shared", "to a")
        self.notify("pgw_ctl", "after")
        self.assertEqual([x[1:] for x in read_notifications(a, 1)], [("pgw_shared", "to a")])
        self.assertEqual([x[1:] for x in read_notifications(a, 1)], [("pgw_ctl", "after")])
        self.assertTrue(nothing_to_read(b))

    def test_listener_leaves_while_its_listen_runs_and_another_follows(self):
        # b's LISTEN is on its way through the listening server (its
        # backend stopped) when b leaves; c's LISTEN of the same channel
        # queues behind it.  At the end of b's, nobody listened yet: the
        # hub queued an UNLISTEN behind c's LISTEN, which undid it.
        a = login(self, self.px)
        self.listen(a, "listen pgw_ctl2")
        pid, port = self.stop_listening_backend()
        try:
            b = login(self, self.px)
            self.send_listen_to_stopped(b, "listen pgw_left", port)
            b.close()
            c = login(self, self.px)
            c.sendall(hz.query_msg("listen pgw_left"))
        finally:
            os.kill(pid, signal.SIGCONT)
        self.assertEqual([t for t, _ in hz.read_until_ready(c)], [b"C", b"Z"])
        self.notify("pgw_left", "to c")
        self.notify("pgw_ctl2", "after")
        self.assertEqual([x[1:] for x in read_notifications(a, 1)], [("pgw_ctl2", "after")])
        self.assertFalse(nothing_to_read(c))
        self.assertEqual([x[1:] for x in read_notifications(c, 1)], [("pgw_left", "to c")])


class TestQueuedListener(pt.PgwharfTestCase):
    def test_held_while_queued_comes_when_the_queue_fails(self):
        # server_pipeline_depth: a listener's SELECT queued behind another
        # client's query (notifications for it are held meanwhile); that
        # query's query_timeout closes the server and the queued client
        # gets 08006 and ReadyForQuery.  What was held for it stayed held
        # (and every later notification behind it) until its next
        # transaction.
        px = self.start_pgwharf(settings={
            "pool_mode": "transaction", "default_pool_size": 2, "server_pipeline_depth": 2,
            "query_timeout": 2, "metrics_port": "auto", "log_connections": 0,
            "log_disconnections": 0})
        a, listener, other = login(self, px), login(self, px), login(self, px)
        for c in (listener, other):
            c.sendall(hz.query_msg("listen pgw_pq"))
            self.assertEqual([t for t, _ in hz.read_until_ready(c)], [b"C", b"Z"])
        a.sendall(hz.query_msg("select pg_sleep(30) as marker_nq"))
        self.pg.wait_running("marker_nq")
        listener.sendall(hz.query_msg("select 'queued'"))
        pt.wait_until(lambda: px.metric("pgwharf_pipelined_queries_total") >= 1, 20,
                      what="the listener's query queued")
        self.pg.psql("notify pgw_pq, 'held'")
        read_notifications(other, 1)        # the hub has it: the listener's is held
        got = hz.read_until_ready(listener)
        self.assertEqual([t for t, _ in got], [b"E", b"Z"], got)
        self.assertIn(b"C08006\0", got[0][1])
        self.assertEqual([x[1:] for x in read_notifications(listener, 1, timeout=10)],
                         [("pgw_pq", "held")])
        self.pg.psql("notify pgw_pq, 'next'")
        self.assertEqual([x[1:] for x in read_notifications(listener, 1)], [("pgw_pq", "next")])


    def test_listen_behind_a_queued_select(self):
        # A client whose SELECT is queued behind another client's query
        # (server_pipeline_depth) sends LISTEN behind it: noted once the
        # server is its own, decided at its own ReadyForQuery (the one
        # ahead, the other client's, is dropped for it).
        import psycopg2
        px = self.start_pgwharf(settings={
            "pool_mode": "transaction", "default_pool_size": 2, "server_pipeline_depth": 2,
            "metrics_port": "auto", "log_connections": 0, "log_disconnections": 0})
        gate = psycopg2.connect(self.pg.dsn())
        gate.autocommit = True
        self.addCleanup(gate.close)
        gate.cursor().execute("select pg_advisory_lock(4804)")
        w, a, b = login(self, px), login(self, px), login(self, px)
        self.assertEqual(hz.simple_query(w, "listen pgw_pl_other"), ([], []))   # the hub's
        a.sendall(hz.query_msg("select pg_advisory_lock(4804) as marker_pl"))
        self.pg.wait_running("marker_pl", lock_wait=True)
        b.sendall(hz.query_msg("select 'queued'"))
        pt.wait_until(lambda: px.metric("pgwharf_pipelined_queries_total") >= 1, 20,
                      what="b's query queued")
        b.sendall(hz.query_msg("listen pgw_pl"))
        gate.cursor().execute("select pg_advisory_unlock(4804)")
        self.assertEqual([t for t, _ in hz.read_until_ready(a)], [b"T", b"D", b"C", b"Z"])
        self.assertEqual([t for t, _ in hz.read_until_ready(b)], [b"T", b"D", b"C", b"Z"])
        self.assertEqual([t for t, _ in hz.read_until_ready(b)], [b"C", b"Z"])
        self.pg.psql("notify pgw_pl, 'after'")
        self.assertEqual([x[1:] for x in read_notifications(b, 1)], [("pgw_pl", "after")])
        self.assertEqual(hz.simple_query(a, "select pg_advisory_unlock_all()")[1], [])


class TestMetrics(pt.PgwharfTestCase):
    def test_channels_clients_and_notifications(self):
        import re
        import urllib.request
        px = self.start_pgwharf(settings={"pool_mode": "transaction", "default_pool_size": 3,
                                          "metrics_port": "auto"})

        def metric(name):
            url = "http://127.0.0.1:%d/metrics" % int(px.settings["metrics_port"])
            with urllib.request.urlopen(url, timeout=10) as r:
                body = r.read().decode()
            return int(re.search(r"^%s (\d+)$" % name, body, re.M).group(1))
        a, b, c = login(self, px), login(self, px), login(self, px)
        for sock, chan in ((a, "pgw_m1"), (a, "pgw_m2"), (b, "pgw_m1")):
            sock.sendall(hz.query_msg("listen " + chan))
            self.assertEqual([t for t, _ in hz.read_until_ready(sock)], [b"C", b"Z"])
        self.assertEqual(metric("pgwharf_listen_channels"), 2)
        self.assertEqual(metric("pgwharf_listen_clients"), 2)
        self.assertEqual(hz.simple_query(c, "notify pgw_m1, 'x'"), ([], []))
        read_notifications(a, 1)
        read_notifications(b, 1)
        self.assertEqual(metric("pgwharf_notifications_total"), 2)
        self.assertEqual(metric("pgwharf_notifications_dropped_total"), 0)
        self.assertEqual(hz.simple_query(a, "unlisten *"), ([], []))
        self.assertEqual(metric("pgwharf_listen_channels"), 1)
        self.assertEqual(metric("pgwharf_listen_clients"), 1)

        # More than 2 MB for a client inside a transaction: the rest is
        # dropped (memory stays bounded: its end may throw away up to 1 MB
        # of what is held, a committed UNLISTEN's), counted and logged as
        # it is, the client gets the first 1 MB of what was held at
        # COMMIT, then FATAL 54000; the rest held is counted then.
        self.assertEqual(hz.simple_query(b, "begin"), ([], []))
        # A marker after them, on a channel of its own: the hub has handed
        # out all 300 once its listener has it (the count read at COMMIT
        # missed those still on their way, and they came after it).
        d = login(self, px)
        d.sendall(hz.query_msg("listen pgw_m_end"))
        self.assertEqual([t for t, _ in hz.read_until_ready(d)], [b"C", b"Z"])
        self.assertEqual(hz.simple_query(c, "select count(pg_notify('pgw_m1', "
                                            "repeat('x', 7990) || i)) "
                                            "from generate_series(1, 300) i"), ([[b"300"]], []))
        self.assertEqual(hz.simple_query(c, "notify pgw_m_end"), ([], []))
        read_notifications(d, 1)
        # Counted as they are dropped, before the end decides whether they
        # were its (TestBacklogCountsWhatGoesOut, TestDroppedWhileHeld),
        # and not again at the end, which counts those it cuts.
        dropped = metric("pgwharf_notifications_dropped_total")
        self.assertGreater(dropped, 0)
        b.sendall(hz.query_msg("commit"))
        got = ended_for_its_backlog(self, b, before=(b"C", b"Z"))
        self.assertGreater(len(got), 100)
        self.assertLess(len(got), 200)
        self.assertEqual(len(got), metric("pgwharf_notifications_total") - 3)
        self.assertGreater(metric("pgwharf_notifications_dropped_total"), dropped)
        self.assertEqual(len(got) + metric("pgwharf_notifications_dropped_total"), 300)
        self.assertEqual([g[-2:] for g in got[:2]], ["x1", "x2"])    # in order
        self.assertIn("event=notification_dropped", px.log())


def ended_for_its_backlog(test, sock, before=()):
    """sock's messages to the end of the connection: those of types
    `before`, then notifications, then FATAL 54000 (max_notify_backlog);
    the notifications' payloads."""
    got = []
    sock.settimeout(30)
    try:
        while True:
            got.append(hz.recv_msg(sock))
    except EOFError:
        pass
    types = [t for t, _ in got]
    n = len(before)
    test.assertEqual(types[:n], list(before), types)
    test.assertEqual(types[n:], [b"A"] * (len(got) - n - 1) + [b"E"], types)
    f = hz.parse_fields(got[-1][1])
    test.assertEqual((f["S"], f["C"]), ("FATAL", "54000"), f)
    test.assertIn("max_notify_backlog", f["M"])
    return [notification(b)[2] for t, b in got[n:-1]]


class TestSlowListener(NotifyCase):
    """More notifications than max_notify_backlog waiting for a client
    were dropped for it (a log line and a counter), and the client went
    on none the wiser, its view stale; PostgreSQL drops none (its queue
    grows; full, NOTIFY fails).  Now the client gets what it was owed,
    in order, then FATAL 54000, and its subscriptions go at once; the
    channels' other listeners go on."""

    def setUp(self):
        pt.PgwharfTestCase.setUp(self)
        self.px = start_backlog_64k(self, 3)

    def overflowed(self):
        return "event=notification_dropped" in self.px.log()

    def test_a_client_that_does_not_read(self):
        # Its socket's receive buffer small: the sockets hold little of
        # what it does not read, and the rest waits in pgwharf.
        slow = slow_login(self, self.px)
        other = login(self, self.px)
        self.listen(slow, "listen pgw_slow")
        self.listen(other, "listen pgw_slow")
        self.listen(other, "listen pgw_other")
        self.assertEqual(self.px.metric("pgwharf_listen_clients"), 2)
        # 100 of 8 kB at a time until one is past its bound (at most 64).
        sent = 0
        for _ in range(64):
            self.pg.psql("select count(pg_notify('pgw_slow', repeat('x', 7990) || i)) "
                         "from generate_series(%d, %d) i" % (sent + 1, sent + 100))
            sent += 100
            for x in read_notifications(other, 100):      # the other listener reads
                self.assertEqual(x[1], "pgw_slow")
            if self.overflowed():
                break
        self.assertTrue(self.overflowed())
        # Its subscriptions went before it read a thing; the other's stay.
        pt.wait_until(lambda: self.px.metric("pgwharf_listen_clients") == 1, 20,
                      what="the slow client's subscriptions released")
        self.assertEqual(self.px.metric("pgwharf_listen_channels"), 2)
        self.notify("pgw_other", "still here")
        self.assertEqual([x[1:] for x in read_notifications(other, 1)],
                         [("pgw_other", "still here")])
        # What it was owed, whole and in order from the first, no gap; then
        # the error.
        kept = ended_for_its_backlog(self, slow)
        self.assertGreater(len(kept), 0)
        self.assertLess(len(kept), sent)
        self.assertTrue(all(p[:7990] == "x" * 7990 for p in kept))
        self.assertEqual([int(p[7990:]) for p in kept], list(range(1, len(kept) + 1)))
        self.assertGreater(self.px.metric("pgwharf_notifications_dropped_total"), 0)
        self.assertIn("sqlstate=54000", self.px.log())

    def test_a_request_sent_after_its_end_does_not_cut_what_it_was_owed(self):
        # Ended (its FATAL queued behind what it was owed), it sends a
        # request that is never read: the session closed with those bytes
        # unread, the kernel reset the connection and threw away what was
        # still in the send queue -- the client got ECONNRESET, no FATAL.
        slow = slow_login(self, self.px)
        self.listen(slow, "listen pgw_slow2")
        for k in range(64):
            self.pg.psql("select count(pg_notify('pgw_slow2', repeat('x', 7990) || i)) "
                         "from generate_series(%d, %d) i" % (k * 100 + 1, k * 100 + 100))
            if "sqlstate=54000" in self.px.log():
                break
        pt.wait_until(lambda: "sqlstate=54000" in self.px.log(), 20, what="its end logged")
        slow.sendall(hz.query_msg("select 'never runs'"))
        pt.wait_until(lambda: tcp_rx_queue(self.px.port, slow.getsockname()[1]) <= 0, 10,
                      what="the request read by pgwharf")
        kept = ended_for_its_backlog(self, slow)
        self.assertEqual([int(p[7990:]) for p in kept], list(range(1, len(kept) + 1)))

    def test_what_it_sends_after_its_end_is_not_received(self):
        # Ended (its FATAL queued), what it sends is read and thrown away
        # (discard_client_input): never relayed, it is no part of SHOW
        # STATS' total_received (PgBouncer's client_bytes, what it
        # relays).  It was: 20 kB read to be dropped counted as received.
        db = self.pg.database

        def received():
            return int(self.px.show("STATS", database=db)[0]["total_received"])
        slow = slow_login(self, self.px)
        self.listen(slow, "listen pgw_slow3")
        for k in range(64):
            self.pg.psql("select count(pg_notify('pgw_slow3', repeat('x', 7990) || i)) "
                         "from generate_series(%d, %d) i" % (k * 100 + 1, k * 100 + 100))
            if "sqlstate=54000" in self.px.log():
                break
        pt.wait_until(lambda: "sqlstate=54000" in self.px.log(), 20, what="its end logged")
        before = received()
        slow.sendall(hz.query_msg("select '%s'" % ("y" * 20000)))
        pt.wait_until(lambda: tcp_rx_queue(self.px.port, slow.getsockname()[1]) <= 0, 10,
                      what="the request read by pgwharf")
        self.assertGreater(len(ended_for_its_backlog(self, slow)), 0)
        pt.wait_until(lambda: not self.px.show("CLIENTS", database=db), 10,
                      what="the client gone")
        self.assertEqual(received(), before)

    def test_held_past_the_bound_inside_a_transaction(self):
        # Held for the end of its transaction: at COMMIT it gets its
        # ReadyForQuery, the held ones (at most max_notify_backlog, here
        # as a reload set it), then FATAL 54000; the channel's other
        # listener has them all.
        self.assertEqual(self.px.show("CONFIG", key="max_notify_backlog")[0]["value"], "65536")
        self.px.settings["max_notify_backlog"] = 131072
        self.px.write_config()
        self.px.admin("RELOAD")
        self.assertEqual(self.px.show("CONFIG", key="max_notify_backlog")[0]["value"], "131072")
        a, other = login(self, self.px), login(self, self.px)
        self.listen(a, "listen pgw_held")
        self.listen(other, "listen pgw_held")
        self.expect(a, "begin", ["BEGIN"], b"T")
        self.pg.psql("select count(pg_notify('pgw_held', repeat('x', 7990) || i)) "
                     "from generate_series(1, 40) i")
        self.assertEqual(len(read_notifications(other, 40)), 40)
        # Past twice the bound (up to which what its end may throw away is
        # held): logged as dropped; the end of its transaction decides
        # whether that ends it (the client's may not be:
        # TestBacklogCountsWhatGoesOut).
        pt.wait_until(self.overflowed, 20, what="the held copies' overflow logged")
        self.assertNotIn("sqlstate=54000", self.px.log())
        a.sendall(hz.query_msg("commit"))
        kept = ended_for_its_backlog(self, a, before=(b"C", b"Z"))
        self.assertEqual([int(p[7990:]) for p in kept], list(range(1, len(kept) + 1)))
        self.assertEqual(len(kept), 131072 // (5 + 4 + 9 + 7992 + 1))     # 16 of 8 kB
        self.notify("pgw_held", "after")
        self.assertEqual([x[1:] for x in read_notifications(other, 1)], [("pgw_held", "after")])
        pt.wait_until(lambda: self.px.metric("pgwharf_listen_clients") == 1, 20,
                      what="the ended client's subscriptions released")

    def test_a_client_behind_for_a_while_is_not_ended(self):
        # Ten times max_notify_backlog in all, to a client that reads
        # nothing while each batch of 48 kB comes (the witness has the
        # batch's marker: all of it went out), then reads it.
        a, w = login(self, self.px), self.witness("pgw_batch_end")
        self.listen(a, "listen pgw_reader")
        for b in range(14):
            self.pg.psql("select count(pg_notify('pgw_reader', repeat('x', 7990) || i)) "
                         "from generate_series(%d, %d) i; select pg_notify('pgw_batch_end', '')"
                         % (b * 6 + 1, b * 6 + 6))
            read_notifications(w, 1)
            got = read_notifications(a, 6)
            self.assertEqual([int(x[2][7990:]) for x in got], list(range(b * 6 + 1, b * 6 + 7)))
        self.assertEqual(hz.simple_query(a, "select 'alive'"), ([[b"alive"]], []))
        self.assertFalse(self.overflowed())


class TestBacklogCountsWhatGoesOut(NotifyCase):
    """Notifications held for the end of a client's transaction that the
    end then discards (the hub's copies of a channel whose LISTEN the
    transaction ran and rolled back; those of a channel the transaction
    UNLISTENs) counted toward its max_notify_backlog: past it, the client
    was ended with FATAL 54000 for bytes it was never to be sent, where
    PostgreSQL delivers none of them and no error.  Now only what goes out
    counts: a client past its bound with those is ended only if one that
    was its own was dropped."""

    def setUp(self):
        pt.PgwharfTestCase.setUp(self)
        self.px = self.start_pgwharf(settings={
            "pool_mode": self.MODE, "default_pool_size": 3, "log_connections": 0,
            "log_disconnections": 0, "max_notify_backlog": 8192})

    def run_ending(self, sock, chans, opening, closing, heard=None):
        """sock (of a server or of pgwharf) listens on b (and on a unless
        its transaction LISTENs it), runs BEGIN and opening, 12 kB of
        notifications on a are committed, it runs closing (which ends its
        transaction), then b small is committed: sock gets that, and
        nothing else, up to a query's answer behind it."""
        a, b = chans["a"], chans["b"]
        first = "listen %s" % b if "listen" in opening else "listen %s; listen %s" % (b, a)
        self.expect(sock, first, ["LISTEN"] * (first.count(";") + 1), b"I")
        self.expect(sock, "begin; " + opening, ["BEGIN", opening.split()[0].upper()], b"T")
        for i in range(3):     # one at a time: the witness reads each
            self.notify(a, "x" * 3990 + str(i))
            if heard:          # the hub has it (and has held it for sock)
                self.assertEqual(len(read_notifications(heard, 1)), 1)
        self.expect(sock, closing, [w.split()[0].upper() for w in closing.split(";")], b"I")
        self.notify(b, "small")
        self.assertEqual([n[1:] for n in read_notifications(sock, 1)], [(b, "small")])
        self.assertEqual(hz.simple_query(sock, "select 'alive'"), ([[b"alive"]], []))

    def check(self, name, opening, closing):
        chans = {c: "pgw_bl_%s_%s" % (name, c) for c in ("a", "b")}
        opening, closing = opening % chans, closing % chans
        d = socket.create_connection((self.pg.host, self.pg.port), timeout=20)
        self.addCleanup(d.close)
        hz.sync_login(d, self.pg.user, self.pg.database, self.pg.password)
        self.run_ending(d, chans, opening, closing)    # PostgreSQL: none of a, no error
        d.close()
        w = self.witness(chans["a"])
        a = login(self, self.px)
        self.run_ending(a, chans, opening, closing, heard=w)
        # Those past the bound were dropped (logged when the first was:
        # TestDroppedWhileHeld); the end did not end the client.
        self.assertNotIn("sqlstate=54000", self.px.log())

    def test_a_rolled_back_listen(self):
        self.check("rb", "listen %(a)s", "rollback")

    def test_an_unlisten_committed(self):
        self.check("ul", "savepoint s", "unlisten %(a)s; commit")

    def test_an_unlisten_before_the_burst(self):
        self.check("ub", "unlisten %(a)s", "commit")

    def burst(self, sock, a_, b_, n, closing, heard):
        """n of 4 kB on a_ are committed, then 500 bytes on b_ (each read
        by heard's witness of its channel first, if given), then sock runs
        closing: the types of its messages up to that ReadyForQuery."""
        for chan, p in [(a_, "x" * 3990 + str(i)) for i in range(n)] + [(b_, "y" * 500)]:
            self.notify(chan, p)
            if heard:
                self.assertEqual(len(read_notifications(heard[chan == b_], 1)), 1)
        sock.sendall(hz.query_msg(closing))
        return [t for t, _ in hz.read_until_ready(sock)]

    def b_alone_as_postgresql_sends(self, scenario, a_, b_, args, tags, none_dropped=True):
        """scenario(sock, a_, b_, *args, heard=...) on a client of
        PostgreSQL itself: tags, then b_'s Notification, then the
        ReadyForQuery; the same through pgwharf, with witnesses of a_ and
        b_: tags and the ReadyForQuery, b_'s Notification alone after
        them, and the client goes on (no 54000; with none_dropped, no
        notification dropped either)."""
        d = socket.create_connection((self.pg.host, self.pg.port), timeout=20)
        self.addCleanup(d.close)
        hz.sync_login(d, self.pg.user, self.pg.database, self.pg.password)
        self.assertEqual(scenario(d, a_, b_, *args), tags + [b"A", b"Z"])
        d.close()
        heard = self.witness(a_), self.witness(b_)
        a = login(self, self.px)
        self.assertEqual(scenario(a, a_, b_, *args, heard=heard), tags + [b"Z"])
        self.assertEqual([x[1:] for x in read_notifications(a, 1)], [(b_, "y" * 500)])
        self.assertEqual(hz.simple_query(a, "select 'alive'"), ([[b"alive"]], []))
        self.assertNotIn("sqlstate=54000", self.px.log())
        if none_dropped:
            self.assertNotIn("event=notification_dropped", self.px.log())

    def own_behind_maybe_copies(self, sock, a_, b_, closing, heard=()):
        """sock listens on b_, runs BEGIN; LISTEN a_; three of 4 kB on a_
        are committed, then b_'s 500 bytes, then it runs closing (burst)."""
        self.expect(sock, "listen " + b_, ["LISTEN"], b"I")
        self.expect(sock, "begin; listen " + a_, ["BEGIN", "LISTEN"], b"T")
        return self.burst(sock, a_, b_, 3, closing, heard)

    def test_its_own_behind_those_a_rollback_discards(self):
        # The copies of a, which the ROLLBACK throws away, filled the bound
        # while held; b's, the client's own, came past it and was lost, so
        # the client was ended with 54000 (a known gap, review of 42a3027).
        # The copies that are the client's only if its LISTEN commits are
        # held beside the rest now, each up to the bound.
        self.b_alone_as_postgresql_sends(self.own_behind_maybe_copies, "pgw_bl_own_a",
                                         "pgw_bl_own_b", ("rollback",), [b"C"],
                                         none_dropped=False)    # (a copy past the bound)

    def own_behind_unlistened(self, sock, a_, b_, opening, closing, heard=()):
        """sock listens on a_ and b_, runs BEGIN and opening; two of 4 kB
        on a_ are committed (the bound's worth), then 500 bytes on b_, then
        it runs closing, which ends its transaction (burst)."""
        self.expect(sock, "listen %s; listen %s" % (a_, b_), ["LISTEN", "LISTEN"], b"I")
        self.expect(sock, "begin; " + opening, ["BEGIN", opening.split()[0].upper()], b"T")
        return self.burst(sock, a_, b_, 2, closing, heard)

    def its_own_behind_unlistened(self, name, opening, closing):
        # PostgreSQL reads what was committed during the transaction at its
        # end, and skips what is for a channel it no longer listens on
        # then: the client gets b's alone.  The copies of a, its own when
        # they came, filled the bound; b's came past it and was dropped (a
        # mark), so the COMMIT that threw a's away ended the client with
        # 54000 (session 48's known gap).
        self.b_alone_as_postgresql_sends(self.own_behind_unlistened, "pgw_bl_%s_a" % name,
                                         "pgw_bl_%s_b" % name, (opening, closing),
                                         [b"C"] * (closing.count(";") + 1))

    def test_its_own_behind_those_of_a_channel_it_then_unlistens(self):
        self.its_own_behind_unlistened("ul_then", "savepoint s", "unlisten %s; commit"
                                       % "pgw_bl_ul_then_a")

    def test_its_own_behind_those_of_a_channel_it_unlistened(self):
        self.its_own_behind_unlistened("ul_first", "unlisten pgw_bl_ul_first_a", "commit")

    def test_its_own_behind_those_of_an_unlisten_rolled_back(self):
        # ROLLBACK: a's copies are the client's; b's is past the bound
        # behind them: it gets a's, then 54000 (PostgreSQL sends all three).
        a_, b_ = "pgw_bl_ul_rb_a", "pgw_bl_ul_rb_b"
        wa, wb = self.witness(a_), self.witness(b_)
        a = login(self, self.px)
        self.assertEqual(self.own_behind_unlistened(a, a_, b_, "unlisten " + a_, "rollback",
                                                    heard=(wa, wb)), [b"C", b"Z"])
        kept = ended_for_its_backlog(self, a)
        self.assertEqual([p[3990:] for p in kept], ["0", "1"])
        self.assertIn("event=notification_dropped", self.px.log())

    def copy_behind_unlistened(self, sock, a_, c_, closing, heard=()):
        """sock listens on a_, runs BEGIN; LISTEN c_; UNLISTEN a_; two of
        4 kB on a_ are committed (the bound's worth), then 500 bytes on c_
        (a copy: the client's only if its LISTEN commits), then it runs
        closing (burst)."""
        self.expect(sock, "listen " + a_, ["LISTEN"], b"I")
        self.expect(sock, "begin; listen %s; unlisten %s" % (c_, a_),
                    ["BEGIN", "LISTEN", "UNLISTEN"], b"T")
        return self.burst(sock, a_, c_, 2, closing, heard)

    def test_a_copy_of_its_listen_behind_those_of_a_channel_it_unlistens(self):
        # PostgreSQL, reading at the COMMIT what came during the
        # transaction, skips a's (unlistened) and sends c's (listened):
        # C, A, Z.  The copy of c came while a's, the client's then, filled
        # the bound: a copy was held only while all that was held fit the
        # bound, so c's was dropped (a mark), and the COMMIT that threw a's
        # away made it the client's: FATAL 54000 (review r3 of ecd485d).
        self.b_alone_as_postgresql_sends(self.copy_behind_unlistened, "pgw_bl_cp_a",
                                         "pgw_bl_cp_c", ("commit",), [b"C"])

    def test_a_copy_of_its_listen_behind_those_of_an_unlisten_rolled_back(self):
        # ROLLBACK: a's two are the client's (the bound's worth), c's copy
        # is not: a0, a1, and it goes on, as PostgreSQL.
        a_, c_ = "pgw_bl_cp_rb_a", "pgw_bl_cp_rb_c"
        wa, wc = self.witness(a_), self.witness(c_)
        a = login(self, self.px)
        self.assertEqual(self.copy_behind_unlistened(a, a_, c_, "rollback", heard=(wa, wc)),
                         [b"C", b"Z"])
        self.assertEqual([x[2][3990:] for x in read_notifications(a, 2)], ["0", "1"])
        self.assertEqual(hz.simple_query(a, "select 'alive'"), ([[b"alive"]], []))
        self.assertNotIn("sqlstate=54000", self.px.log())

    def beside_the_copies(self, a_, b_):
        """A client listening on b_ that runs BEGIN; LISTEN a_, then gets
        4 kB on a_ (payload ending 0: a copy, its only if the LISTEN
        commits) and two on b_ (1, 2: its own); the client."""
        wa, wb = self.witness(a_), self.witness(b_)
        a = login(self, self.px)
        self.listen(a, "listen " + b_)
        self.expect(a, "begin; listen " + a_, ["BEGIN", "LISTEN"], b"T")
        for chan, w, p in ((a_, wa, "0"), (b_, wb, "1"), (b_, wb, "2")):
            self.notify(chan, "x" * 3990 + p)
            self.assertEqual(len(read_notifications(w, 1)), 1)
        return a

    def test_its_own_beside_the_copies_when_the_listen_commits(self):
        # The same with one copy of a and two of b of 4 kB each, and a
        # COMMIT: PostgreSQL sends all three; past the bound once a's copy
        # is the client's, it gets those up to it (a, b), then 54000.
        a = self.beside_the_copies("pgw_bl_beside_a", "pgw_bl_beside_b")
        a.sendall(hz.query_msg("commit"))
        kept = ended_for_its_backlog(self, a, before=(b"C", b"Z"))
        self.assertEqual([p[3990:] for p in kept], ["0", "1"])

    def test_its_own_beside_the_copies_when_the_listen_rolls_back(self):
        # ... and with a ROLLBACK, both of b (which failed before: b's
        # second came past the bound behind a's copy, so b's first, then
        # 54000).
        a = self.beside_the_copies("pgw_bl_beside2_a", "pgw_bl_beside2_b")
        self.expect(a, "rollback", ["ROLLBACK"], b"I")
        self.assertEqual([x[2][3990:] for x in read_notifications(a, 2)], ["1", "2"])
        self.assertEqual(hz.simple_query(a, "select 'alive'"), ([[b"alive"]], []))
        self.assertNotIn("sqlstate=54000", self.px.log())

    def test_a_committed_listen_past_the_bound(self):
        # The same with COMMIT: PostgreSQL sends the client (which listened
        # already) the three, read at its transaction's end; pgwharf had
        # room for two: it sends those, then FATAL 54000.
        a_, b_ = "pgw_bl_cm_a", "pgw_bl_cm_b"
        w = self.witness(a_)
        a = login(self, self.px)
        self.listen(a, "listen " + b_)
        self.expect(a, "begin; listen " + a_, ["BEGIN", "LISTEN"], b"T")
        for i in range(3):
            self.notify(a_, "x" * 3990 + str(i))
            self.assertEqual(len(read_notifications(w, 1)), 1)
        a.sendall(hz.query_msg("commit"))
        kept = ended_for_its_backlog(self, a, before=(b"C", b"Z"))
        self.assertEqual([p[3990:] for p in kept], ["0", "1"])
        self.assertIn("event=notification_dropped", self.px.log())


class TestDroppedWhileHeld(NotifyCase):
    """Notifications held for the end of a client's transaction and
    dropped past max_notify_backlog (a mark, its end decides) were logged
    and counted only at that end: a transaction that never ended showed
    nothing, and a client that went before its end was never counted
    (review of 42a3027).  Now the first is logged as it is dropped (once a
    client) and each is counted then, once."""

    def setUp(self):
        pt.PgwharfTestCase.setUp(self)
        self.px = self.start_pgwharf(settings={
            "pool_mode": self.MODE, "default_pool_size": 3, "log_connections": 0,
            "log_disconnections": 0, "metrics_port": "auto", "max_notify_backlog": 8192})

    def dropped(self, n):
        pt.wait_until(lambda: self.px.metric("pgwharf_notifications_dropped_total") == n, 20,
                      what="%d notifications counted dropped" % n)

    def burst(self, sock, chan, w, n):
        self.listen(sock, "listen " + chan)
        self.expect(sock, "begin", ["BEGIN"], b"T")
        for i in range(n):     # 4 kB each: two fit in the 8 kB, four are held
            self.notify(chan, "x" * 3990 + str(i))
            self.assertEqual(len(read_notifications(w, 1)), 1)

    def test_logged_and_counted_as_dropped(self):
        a, w = login(self, self.px), self.witness("pgw_dw_a")
        self.burst(a, "pgw_dw_a", w, 6)
        # Still in its transaction: two dropped (past the 16 kB held for
        # what its end may throw away), logged once.
        self.dropped(2)
        pt.wait_until(lambda: "event=notification_dropped" in self.px.log(), 20,
                      what="the drop logged")
        self.assertEqual(self.px.log().count("event=notification_dropped"), 1)
        self.assertNotIn("sqlstate=54000", self.px.log())
        # Its end: the two it was owed, then 54000; the two held past the
        # bound counted then, the dropped ones not again.
        a.sendall(hz.query_msg("commit"))
        kept = ended_for_its_backlog(self, a, before=(b"C", b"Z"))
        self.assertEqual([p[3990:] for p in kept], ["0", "1"])
        self.assertEqual(self.px.metric("pgwharf_notifications_dropped_total"), 4)
        self.assertEqual(self.px.log().count("event=notification_dropped"), 1)

    def test_one_its_server_sent_too_counted_once(self):
        # COMMIT AND CHAIN makes a the client's (its server listens on it
        # from then on) and its own held past the bound; one more on a is
        # dropped as the hub's copy comes, and its server's copy of it, at
        # the end, found no room either: it was counted twice (4, for
        # b0 and b1 cut and a2).
        a_, b_ = "pgw_dw_chain_a", "pgw_dw_chain_b"
        wa, wb = self.witness(a_), self.witness(b_)
        a = login(self, self.px)
        self.listen(a, "listen " + b_)
        self.expect(a, "begin; listen " + a_, ["BEGIN", "LISTEN"], b"T")
        for chan, w, p in ((a_, wa, "a0"), (a_, wa, "a1"), (b_, wb, "b0"), (b_, wb, "b1")):
            self.notify(chan, "x" * 3990 + p)
            self.assertEqual(len(read_notifications(w, 1)), 1)
        self.expect(a, "commit and chain", ["COMMIT"], b"T")
        self.notify(a_, "z" * 400 + "a2")         # past the 16 kB held
        self.assertEqual(len(read_notifications(wa, 1)), 1)
        self.dropped(1)
        a.sendall(hz.query_msg("commit"))
        kept = ended_for_its_backlog(self, a, before=(b"C", b"Z"))
        self.assertEqual([p[3990:] for p in kept], ["a0", "a1"])
        self.assertEqual(self.px.metric("pgwharf_notifications_dropped_total"), 3)

    def test_a_drop_its_rollback_discards_does_not_spend_the_event(self):
        # A copy held for a's transaction's LISTEN of y, dropped past the
        # bound, was logged (its end decides); the ROLLBACK discarded it.
        # A drop of a's own, later, which its COMMIT keeps (FATAL 54000),
        # was not logged: the event, once a client, was spent (review r2d).
        x, y = "pgw_dw_x", "pgw_dw_y"
        a, wx, wy = login(self, self.px), self.witness(x), self.witness(y)
        self.listen(a, "listen " + x)
        self.expect(a, "begin", ["BEGIN"], b"T")
        self.expect(a, "listen " + y, ["LISTEN"], b"T")
        for i in range(3):     # 4 kB each: two fit in the 8 kB
            self.notify(y, "x" * 3990 + str(i))
            self.assertEqual(len(read_notifications(wy, 1)), 1)
        self.dropped(1)
        pt.wait_until(lambda: "event=notification_dropped" in self.px.log(), 20,
                      what="the drop logged")
        self.expect(a, "rollback", ["ROLLBACK"], b"I")
        self.assertTrue(nothing_to_read(a))
        self.expect(a, "begin", ["BEGIN"], b"T")
        for i in range(5):     # four held (what its end may throw away), one dropped
            self.notify(x, "x" * 3990 + str(i))
            self.assertEqual(len(read_notifications(wx, 1)), 1)
        self.dropped(2)
        pt.wait_until(lambda: self.px.log().count("event=notification_dropped") == 2, 20,
                      what="the kept drop logged")
        a.sendall(hz.query_msg("commit"))
        kept = ended_for_its_backlog(self, a, before=(b"C", b"Z"))
        self.assertEqual([p[3990:] for p in kept], ["0", "1"])
        self.assertEqual(self.px.log().count("event=notification_dropped"), 2)

    def test_a_client_gone_before_its_end_is_counted(self):
        b, w = login(self, self.px), self.witness("pgw_dw_b")
        self.burst(b, "pgw_dw_b", w, 5)
        b.close()
        pt.wait_until(lambda: self.px.metric("pgwharf_listen_clients") == 1, 20,
                      what="the client gone (the witness stays)")
        self.dropped(1)
        self.assertIn("event=notification_dropped", self.px.log())


class TestOneReadPastTheBound(NotifyCase):
    """Notifications the hub's server sent together, read by pgwharf at
    once, were all queued for a client before any was written (io_batch
    writes at the loop iteration's end): past max_notify_backlog (here
    three of 4 kB, the bound 8 kB) the client was ended with FATAL 54000
    though it had read everything before and its socket had room.  Now
    what waits for it is written before it counts as behind."""

    def setUp(self):
        pt.PgwharfTestCase.setUp(self)
        self.px = self.start_pgwharf(settings={
            "pool_mode": self.MODE, "default_pool_size": 3, "log_connections": 0,
            "log_disconnections": 0, "max_notify_backlog": 8192})

    def test_three_committed_together_reach_a_client_that_reads(self):
        a = login(self, self.px)
        self.listen(a, "listen pgw_one_read")
        port = int(self.pg.psql("select client_port from pg_stat_activity "
                                "where query ilike 'listen%%'"))
        payloads = ["x" * 3990 + str(i) for i in range(3)]
        size = sum(1 + 4 + 4 + len("pgw_one_read") + 1 + len(p) + 1 for p in payloads)
        # pgwharf stopped while the three come: it reads them in one go.
        os.kill(self.px.pid, signal.SIGSTOP)
        self.addCleanup(os.kill, self.px.pid, signal.SIGCONT)
        pt.wait_stopped([self.px.pid])
        self.pg.psql("select count(pg_notify('pgw_one_read', p)) from unnest(array['%s']) p"
                     % "', '".join(payloads))
        pt.wait_until(lambda: tcp_rx_queue(port, self.pg.port) >= size, 20,
                      what="the three in pgwharf's socket from the listening server")
        os.kill(self.px.pid, signal.SIGCONT)
        self.assertEqual([x[1:] for x in read_notifications(a, 3)],
                         [("pgw_one_read", p) for p in payloads])
        self.assertEqual(hz.simple_query(a, "select 'alive'"), ([[b"alive"]], []))
        self.assertNotIn("event=notification_dropped", self.px.log())


class TestStuckListenerCost(NotifyCase):
    """A listener stuck in its transaction past max_notify_backlog: each
    notification past the bound looked for its channel's mark through all
    that was held (lost_note), so two such clients made a burst of 60k
    small notifications past the default 1 MB cost the loop some 14 s of
    CPU (other clients' queries waited up to 1.3 s), where before the mark
    it cost nothing (some 0.01 s now).  The cost is not asserted (no timed
    assertions): this checks what such a burst leaves each client."""

    def test_a_burst_past_the_bound_costs_little(self):
        stuck = []
        for _ in range(2):
            c = login(self, self.px)
            self.listen(c, "listen pgw_stuck")
            self.expect(c, "begin", ["BEGIN"], b"T")
            stuck.append(c)
        w = self.witness("pgw_stuck_end")
        # ~18 bytes each: 58k fill the 1 MB, the rest go past it.
        self.pg.psql("select count(pg_notify('pgw_stuck', i::text)) "
                     "from generate_series(1, 120000) i")
        self.notify("pgw_stuck_end", "x")
        read_notifications(w, 1, timeout=120)
        for c in stuck:
            c.sendall(hz.query_msg("commit"))
            kept = ended_for_its_backlog(self, c, before=(b"C", b"Z"))
            self.assertEqual(kept[:3], ["1", "2", "3"])
            self.assertEqual(kept, [str(i) for i in range(1, len(kept) + 1)])


class TestHeldPastTheBoundConverted(NotifyCase):
    """A client whose client_encoding is not UTF-8, past max_notify_backlog
    inside its transaction: held_convert dropped every held notification
    once the client was marked (lost_cut marks it just before), so it got
    its COMMIT, then FATAL 54000 and none of those it was owed; a UTF-8
    client got them."""

    def setUp(self):
        pt.PgwharfTestCase.setUp(self)
        self.px = self.start_pgwharf(settings={
            "pool_mode": self.MODE, "default_pool_size": 3, "log_connections": 0,
            "log_disconnections": 0, "max_notify_backlog": 8192})

    def test_latin1_client_gets_what_was_held(self):
        w = self.witness("pgw_l1")
        a = login(self, self.px, client_encoding="LATIN1")
        self.listen(a, "listen pgw_l1")
        self.expect(a, "begin", ["BEGIN"], b"T")
        for i in range(3):          # about 4 kB each in UTF-8, 2 kB in LATIN1
            self.notify("pgw_l1", "\u00e9" * 1990 + str(i))
            self.assertEqual(len(read_notifications(w, 1)), 1)
        a.sendall(hz.query_msg("commit"))
        got = []
        a.settimeout(30)
        try:
            while True:
                got.append(hz.recv_msg(a))
        except EOFError:
            pass
        self.assertEqual([t for t, _ in got], [b"C", b"Z", b"A", b"A", b"E"], got)
        for i, (_, body) in enumerate(got[2:4]):
            self.assertEqual(body[4:].split(b"\0")[1], b"\xe9" * 1990 + str(i).encode())
        f = hz.parse_fields(got[-1][1])
        self.assertEqual((f["S"], f["C"]), ("FATAL", "54000"), f)


class TestSlowListenerCanceledWhileWaiting(NotifyCase):
    """A client marked past max_notify_backlog while it waited for a
    server (its next request queued), whose request then got no server
    (a cancel): idle again, it was never ended, and every later
    notification was dropped for it in silence."""

    def setUp(self):
        pt.PgwharfTestCase.setUp(self)
        self.px = start_backlog_64k(self, 2)

    def test_ended_once_idle_again(self):
        key = []
        a = slow_login(self, self.px, key)
        self.listen(a, "listen pgw_cw")
        b = login(self, self.px)       # holds the pool's other server (the hub has one)
        self.expect(b, "begin", ["BEGIN"], b"T")
        a.sendall(hz.query_msg("select 'waited'"))
        pt.wait_until(lambda: self.px.show("POOLS", database=self.pg.database)[0]["cl_waiting"]
                      in (1, "1"), 10, what="the listener queued")
        for k in range(64):
            self.pg.psql("select count(pg_notify('pgw_cw', repeat('x', 7990) || i)) "
                         "from generate_series(%d, %d) i" % (k * 100 + 1, k * 100 + 100))
            if "event=notification_dropped" in self.px.log():
                break
        pt.wait_until(lambda: "event=notification_dropped" in self.px.log(), 20,
                      what="the overflow logged")
        pid, secret = key[0]
        c = socket.create_connection((self.px.host, self.px.port), timeout=10)
        self.addCleanup(c.close)
        c.sendall(struct.pack("!iiII", 16, 80877102, pid & 0xffffffff, secret & 0xffffffff))
        # What it was owed, its canceled request's 57014 and ReadyForQuery,
        # then (idle, no request of its own) FATAL 54000.
        got = []
        while not got or got[-1][0] != b"Z":
            got.append(hz.recv_msg(a))
        self.assertEqual([hz.parse_fields(x)["C"] for t, x in got if t == b"E"], ["57014"])
        self.assertEqual(ended_for_its_backlog(self, a), [])
        self.expect(b, "commit", ["COMMIT"], b"I")


class TestHubServerLost(NotifyCase):
    """The listening server lost (terminated, the database restarted,
    RECONNECT, PAUSE): pgwharf took another one and listened again, but
    the notifications sent in between were lost and the listening clients
    were not told: one relying on LISTEN for cache invalidation went on
    with a stale cache.  A direct connection whose backend goes away
    ends; so now does each listening client, with FATAL 08006, between
    transactions (at once when it holds no server, else at its
    transaction's end), and it reconnects and listens again."""

    def hub_pid(self):
        return int(self.pg.psql("select pid from pg_stat_activity where query ilike 'listen%%'"))

    def test_listeners_are_told_and_a_new_listen_works(self):
        a, c, n = login(self, self.px), login(self, self.px), login(self, self.px)
        self.listen(a, "listen pgw_lost")
        self.listen(c, "listen pgw_lost")
        self.assertEqual(hz.simple_query(c, "begin"), ([], []))    # c holds a server
        old = self.hub_pid()
        self.pg.psql("select pg_terminate_backend(%d)" % old)
        pt.wait_until(lambda: "event=notify_server_lost" in self.px.log(), 20,
                      what="the loss logged")
        # a, between transactions, is told at once ...
        assert_ended(self, a, "08006", LOST)
        # ... c at its transaction's end, n (not listening) not at all.
        self.assertEqual(hz.simple_query(c, "select 1"), ([[b"1"]], []))
        c.sendall(hz.query_msg("commit"))
        assert_ended(self, c, "08006", LOST, [b"C", b"Z"])
        self.assertEqual(hz.simple_query(n, "select 2"), ([[b"2"]], []))
        # A client that listens again gets the next notifications.
        b = login(self, self.px)
        self.listen(b, "listen pgw_lost")
        self.notify("pgw_lost", "again")
        self.assertEqual([x[1:] for x in read_notifications(b, 1)], [("pgw_lost", "again")])
        self.assertIn("clients=2 reason=\"server closed the connection\"", self.px.log())

    def test_psycopg2_listener_learns_of_it(self):
        # As from a direct connection whose backend is terminated: the
        # FATAL wakes the listener's select(); poll() keeps it as a notice
        # (libpq takes an error between queries for one) and the next
        # statement fails with the connection.
        import psycopg2
        conn = self.db_conn(self.px)
        conn.cursor().execute("LISTEN pgw_py_lost")
        self.pg.psql("select pg_terminate_backend(%d)" % self.hub_pid())
        r, _, _ = select.select([conn], [], [], 20)
        self.assertTrue(r, "no word of the loss")
        conn.poll()
        self.assertEqual(len(conn.notices), 1, conn.notices)
        self.assertTrue(conn.notices[0].startswith("FATAL:  "), conn.notices)
        self.assertIn(LOST, conn.notices[0])
        with self.assertRaises(psycopg2.OperationalError):
            conn.cursor().execute("select 1")
        self.assertEqual(conn.closed, 2)
        del psycopg2

    def test_terminated_while_a_listen_runs(self):
        # The listening server is terminated with a client's LISTEN on it
        # (its backend stopped, so the LISTEN waits there): the LISTEN
        # runs again on the next server (a listened to nothing yet, so it
        # missed nothing); b, which listened, is told.
        a, b = login(self, self.px), login(self, self.px)
        self.listen(b, "listen pgw_t0")
        pid, port = self.stop_listening_backend()
        try:
            self.send_listen_to_stopped(a, "listen pgw_t1", port)
            self.pg.psql("select pg_terminate_backend(%d)" % pid)
        finally:
            os.kill(pid, signal.SIGCONT)
        got = hz.read_until_ready(a)
        self.assertEqual([t for t, _ in got], [b"C", b"Z"], got)
        assert_ended(self, b, "08006", LOST)
        self.notify("pgw_t1", "on the next server")
        self.assertEqual([x[1:] for x in read_notifications(a, 1)],
                         [("pgw_t1", "on the next server")])

    def test_lost_while_a_transactions_listen_is_on_it(self):
        # The hub's own LISTEN for a client's LISTEN inside a transaction
        # (its hold on the channel) is on the listening server when that
        # is lost: a notification committed before the next server
        # listens would be lost after the COMMIT, so the client is told
        # at its transaction's end (w, listening between transactions, at
        # once); after a ROLLBACK it listens to nothing and stays.
        for end in ("commit", "rollback"):
            with self.subTest(end=end):
                a, w = login(self, self.px), login(self, self.px)
                self.listen(w, "listen pgw_h0")
                pid, port = self.stop_listening_backend()
                try:
                    a.sendall(hz.query_msg("begin"))
                    hz.read_until_ready(a)
                    a.sendall(hz.query_msg("listen pgw_hold"))
                    self.assertEqual([t for t, _ in hz.read_until_ready(a)], [b"C", b"Z"])
                    pt.wait_until(lambda: tcp_rx_queue(self.pg.port, port) > 0, 20,
                                  what="the hub's LISTEN sent to the stopped backend")
                    self.pg.psql("select pg_terminate_backend(%d)" % pid)
                finally:
                    os.kill(pid, signal.SIGCONT)
                assert_ended(self, w, "08006", LOST)
                a.sendall(hz.query_msg(end))
                if end == "commit":
                    assert_ended(self, a, "08006", LOST, [b"C", b"Z"])
                else:
                    self.assertEqual([t for t, _ in hz.read_until_ready(a)], [b"C", b"Z"])
                    self.assertEqual(hz.simple_query(a, "select 1"), ([[b"1"]], []))
                    a.close()
                pt.wait_until(lambda: self.listeners() == 0, 20, what="the hub's server closed")

    def test_idle_session_timeout_does_not_end_the_listening_server(self):
        # With idle_session_timeout set for the role (or the database, or
        # in postgresql.conf), PostgreSQL ended the listening server, idle
        # between notifications, every time it ran out: the hub took
        # another one each time, and the notifications sent in between
        # were lost, the clients none the wiser.  The listening server
        # now turns it off for itself.
        user = self.pg.app_user
        self.pg.psql("alter role %s set idle_session_timeout = '1s'" % user)
        self.addCleanup(self.pg.psql, "alter role %s reset idle_session_timeout" % user)
        a = login_app_user(self, self.px)
        self.listen(a, "listen pgw_idle_hub")
        hub = int(self.pg.psql("select pid from pg_stat_activity where usename = '%s' and "
                               "query ilike 'listen%%'" % user))
        # A session of the role that idles from now on: once PostgreSQL
        # has ended it, the listening server (idle for longer) would be
        # ended too.
        w = socket.create_connection((self.pg.host, self.pg.port), timeout=20)
        self.addCleanup(w.close)
        hz.sync_login(w, user, self.pg.database, self.pg.app_password)
        data, closed = hz.read_until_closed(w, 20)
        self.assertTrue(closed)
        self.assertIn(b"57P05", data)
        self.assertEqual(self.pg.psql("select count(*) from pg_stat_activity where pid = %d"
                                      % hub), "1")
        self.assertNotIn("event=notify_server_lost", self.px.log())
        self.notify("pgw_idle_hub", "still listening")
        self.assertEqual([x[1:] for x in read_notifications(a, 1)],
                         [("pgw_idle_hub", "still listening")])

    def test_pause_takes_the_hub_server_back(self):
        # Notifications sent while the pool is paused reach no client:
        # its listeners are told.
        a = login(self, self.px)
        self.listen(a, "listen pgw_pause")
        console = self.console_conn(self.px)
        cur = console.cursor()
        cur.execute("PAUSE")            # returns once the servers are closed
        pt.wait_until(lambda: self.listeners() == 0, 20, what="the hub's backend gone")
        assert_ended(self, a, "08006", "(pool paused): " + LOST)
        cur.execute("RESUME")
        b = login(self, self.px)
        self.listen(b, "listen pgw_pause")
        self.notify("pgw_pause", "resumed")
        self.assertEqual([x[1:] for x in read_notifications(b, 1)], [("pgw_pause", "resumed")])

    def test_reconnect_tells_the_listeners(self):
        a = login(self, self.px)
        self.listen(a, "listen pgw_reconnect")
        self.px.admin("RECONNECT")
        assert_ended(self, a, "08006", "(server marked for closing): " + LOST)


class TestQueryTimeoutOnTheListeningServer(NotifyCase):
    """A lone LISTEN waits for the pool's listening server's answer: when
    that server hung (frozen, a host partitioned away) the client waited
    for ever -- query_timeout did not run (the client holds no server)
    and client_idle_timeout ended it as idle.  query_timeout runs from
    when it was sent: the client gets FATAL 57014, as for a query, and
    the stuck server is dropped (lost: its listeners are told), so the
    next LISTEN gets another."""

    def test_a_listen_on_a_stuck_listening_server_times_out(self):
        self.px = self.start_pgwharf(settings={
            "pool_mode": "transaction", "default_pool_size": 3, "query_timeout": "2s",
            "client_idle_timeout": "60s"})
        a, b = login(self, self.px), login(self, self.px)
        self.listen(a, "listen pgw_stuck")
        pid, port = self.stop_listening_backend()

        def resume():
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        self.addCleanup(resume)
        self.send_listen_to_stopped(b, "listen pgw_stuck2", port)
        assert_ended(self, b, "57014", "query timeout")
        self.assertIn("query_timeout: the listening server did not answer", self.px.log())
        assert_ended(self, a, "08006", LOST)
        resume()
        c = login(self, self.px)
        self.listen(c, "listen pgw_stuck")
        self.notify("pgw_stuck", "again")
        self.assertEqual([x[1:] for x in read_notifications(c, 1)], [("pgw_stuck", "again")])


class TestIdleAfterAWaitingListen(NotifyCase):
    """A LISTEN that waited for a server (every one busy) was taken for
    idle time: client_idle_timeout counted from its sending, so the
    client was closed (08P01) the moment its answer came, though it had
    been waiting, not idle (PgBouncer answers the LISTEN and goes on)."""

    def test_idle_counts_from_the_listens_answer(self):
        self.px = self.start_pgwharf(settings={
            "pool_mode": "transaction", "default_pool_size": 2, "client_idle_timeout": "1s",
            "query_wait_timeout": "60s"})
        a, c, b = login(self, self.px), login(self, self.px), login(self, self.px)
        for h in (a, c):
            h.sendall(hz.query_msg("begin; select pg_sleep(1.5) /* pgw_hold_pool */; commit"))
        pt.wait_until(lambda: self.pg.queries_running("pgw_hold_pool") == 2, 20,
                      what="the pool's two servers held")
        rows, errs = hz.simple_query(b, "listen pgw_idle_wait")    # waits ~1.5 s
        self.assertEqual(errs, [])
        hz.read_until_ready(a)
        hz.read_until_ready(c)
        # idle for a second from the answer: nothing comes in half of it
        # (the FATAL came at once, its deadline long past)
        self.assertEqual(select.select([b], [], [], 0.5)[0], [], "closed as idle at its answer")
        self.assertEqual(hz.simple_query(b, "select 2"), ([[b"2"]], []))


class TestQueryTimeoutOfAListenWaitingForAServer(NotifyCase):
    """query_timeout counts a query's wait in the pool's queue; a lone
    LISTEN waiting for a server (every one busy) for the pool's listening
    server waited past it, as long as the servers stayed busy (with
    query_wait_timeout = 0, for ever).  PgBouncer ends both at
    query_timeout."""

    def test_a_waiting_listen_ends_at_query_timeout(self):
        self.px = self.start_pgwharf(settings={
            "pool_mode": "transaction", "default_pool_size": 2, "query_timeout": "1s",
            "query_wait_timeout": "0"})
        holders = [login(self, self.px) for _ in range(2)]
        for h in holders:                # open transactions: the servers held, nothing runs
            self.assertEqual(hz.simple_query(h, "begin"), ([], []))
            self.assertEqual(hz.simple_query(h, "select 1"), ([[b"1"]], []))
        b = login(self, self.px)
        b.sendall(hz.query_msg("listen pgw_wait_timeout"))
        assert_ended(self, b, "57014", "query timeout")
        for h in holders:                # still theirs
            self.assertEqual(hz.simple_query(h, "commit"), ([], []))


    def test_a_waiting_listen_gets_the_query_wait_notify_notice(self):
        # As a query waiting for a server (PgBouncer queues a LISTEN as any
        # query): one NOTICE after query_wait_notify, the wait goes on, and
        # a client whose query waited before gets it again for its LISTEN's
        # wait.  It got none.
        px = self.start_pgwharf(settings={
            "pool_mode": "transaction", "default_pool_size": 2, "query_wait_notify": "300ms",
            "query_wait_timeout": 120})
        holders = [login(self, px) for _ in range(2)]
        for h in holders:                # open transactions: the servers held
            self.assertEqual(hz.simple_query(h, "begin"), ([], []))
            self.assertEqual(hz.simple_query(h, "select 1"), ([[b"1"]], []))
        c = login(self, px)
        port = c.getsockname()[1]
        for sql, answer in (("select 1", [b"T", b"D", b"C", b"Z"]),
                            ("listen pgw_wait_notice", [b"C", b"Z"])):
            c.sendall(hz.query_msg(sql))
            t, body = hz.recv_msg(c)
            self.assertEqual(t, b"N", sql)
            self.assertEqual(hz.parse_fields(body)["M"], "No server connection available in "
                             "postgres backend, client being queued")
            # still waiting well past three more periods: no second notice
            pt.wait_until(lambda: [int(r["wait"]) for r in px.show("CLIENTS")
                                   if int(r["port"]) == port] == [1], 20,
                          what="a wait of a second")
            self.assertEqual(hz.simple_query(holders[0], "commit"), ([], []))
            self.assertEqual([t for t, _ in hz.read_until_ready(c)], answer, sql)
            if sql == "select 1":        # both held again
                self.assertEqual(hz.simple_query(holders[0], "begin"), ([], []))
                self.assertEqual(hz.simple_query(holders[0], "select 1"), ([[b"1"]], []))
        self.assertEqual(hz.simple_query(holders[1], "commit"), ([], []))

    def test_a_hub_server_libev_cannot_watch_is_replaced(self):
        # epoll_ctl failing (ENOMEM) for the listening server the hub took:
        # libev stopped its watchers (EV_ERROR), which the hub read as a
        # write: the LISTEN waited for ever, every later one of the pool
        # too.  The hub drops that server and takes another now.
        # (tests/nss_gate.c fails one epoll_ctl.)
        px, fail = self.start_pgwharf_epoll_fail({
            "pool_mode": "transaction", "default_pool_size": 3, "query_wait_timeout": 120})
        a = login(self, px)
        self.assertEqual(hz.simple_query(a, "select 1"), ([[b"1"]], []))   # a server idle
        open(fail, "w").close()
        a.sendall(hz.query_msg("listen pgw_unwatched"))
        a.settimeout(60)
        self.assertEqual([t for t, _ in hz.read_until_ready(a)], [b"C", b"Z"])
        self.assertFalse(os.path.exists(fail))            # the failure happened
        self.pg.psql("notify pgw_unwatched, 'seen'")
        self.assertEqual([n[1:] for n in read_notifications(a, 1)], [("pgw_unwatched", "seen")])
        b = login(self, px)
        b.sendall(hz.query_msg("listen pgw_unwatched_b"))
        self.assertEqual([t for t, _ in hz.read_until_ready(b)], [b"C", b"Z"])


class CutAfterAnswer(hz.QueryServer):
    """A PostgreSQL look-alike on 127.0.0.1 (port 0) that lets anyone in
    and answers every Query (a CommandComplete per statement, tagged with
    its first word, then ReadyForQuery), except the first LISTEN of a
    channel in `cut`: that gets its CommandComplete (or, for a channel in
    `fail`, an ErrorResponse) and the connection closed before its
    ReadyForQuery, as a backend that dies right after writing its answer
    (PostgreSQL writes both together; the stream may still be cut between
    them).  queries: every Query's text, in order."""

    TIMEOUT = 30

    def __init__(self, cut, fail=()):
        self.cut, self.fail = set(cut), set(fail)
        self.queries = []
        self.lock = threading.Lock()
        super().__init__()

    def answer(self, sql):
        words = sql.replace('"', " ").replace(";", " ; ").split()
        with self.lock:
            self.queries.append(sql)
            chan = words[1] if len(words) > 1 and words[0].upper() == "LISTEN" else None
            cut = chan in self.cut
            self.cut.discard(chan)
        out = b""
        for stmt in (x.split() for x in " ".join(words).split(";")):
            if not stmt:
                continue
            if cut and chan in self.fail:
                out += self._msg(b"E", b"SERROR\0VERROR\0C42601\0Mno such channel\0\0")
            else:
                out += self._msg(b"C", stmt[0].upper().encode() + b"\0")
        return out, not cut


class TestHubLostAfterTheAnswer(pt.PgwharfTestCase):
    """The listening server lost after a client's LISTEN was answered
    (its CommandComplete or error sent to the client) and before its
    ReadyForQuery was read: pgwharf sent the LISTEN again on the next
    server, and the client got a second answer (C C Z, or E E Z) for one
    statement.  An answered request is now never sent again: the client
    gets its ReadyForQuery."""

    def start(self, fake):
        self.addCleanup(fake.close)
        return self.start_pgwharf(settings={"pool_mode": "transaction", "default_pool_size": 3},
                                  databases={"cut": "host=127.0.0.1 port=%d dbname=cut" % fake.port})

    def login(self, px):
        s = socket.create_connection((px.host, px.port), timeout=20)
        self.addCleanup(s.close)
        hz.sync_login(s, self.pg.user, "cut", self.pg.password)
        return s

    def test_command_complete_then_lost(self):
        fake = CutAfterAnswer(cut=["pgw_cut"])
        px = self.start(fake)
        a = self.login(px)
        a.sendall(hz.query_msg("listen pgw_cut"))
        got = hz.read_until_ready(a)
        self.assertEqual(got, [(b"C", b"LISTEN\0"), (b"Z", b"I")])
        # It listened on a server now lost: told, as any listener.
        assert_ended(self, a, "08006", LOST)
        # (pgw_hub_...: the listening server's own, for bridges' markers.)
        self.assertEqual([q for q in fake.queries
                          if q.lower().startswith("listen") and "pgw_hub_" not in q],
                         ["listen pgw_cut"])

    def test_error_then_lost(self):
        fake = CutAfterAnswer(cut=["pgw_bad"], fail=["pgw_bad"])
        px = self.start(fake)
        a = self.login(px)
        a.sendall(hz.query_msg("listen pgw_bad"))
        got = hz.read_until_ready(a)
        self.assertEqual([t for t, _ in got], [b"E", b"Z"], got)
        self.assertEqual(hz.parse_fields(got[0][1])["C"], "42601")
        # It listens to nothing: it stays, and runs its next statement.
        self.assertEqual(hz.simple_query(a, "select"), ([], []))
        pt.wait_until(lambda: "event=notify_server_lost" in px.log(), 20, what="the loss logged")
        # (pgw_hub_...: the listening server's own, for bridges' markers.)
        self.assertEqual([q for q in fake.queries
                          if q.lower().startswith("listen") and "pgw_hub_" not in q],
                         ["listen pgw_bad"])


def bind_exec(stmt, describe=False):
    """Bind stmt (no parameters) to the unnamed portal, [Describe it,] Execute, Sync."""
    out = hz.msg(b"B", b"\x00" + stmt.encode() + b"\x00" + struct.pack("!HHH", 0, 0, 0))
    if describe:
        out += hz.msg(b"D", b"P\x00")
    return out + hz.msg(b"E", b"\x00" + struct.pack("!I", 0)) + hz.msg(b"S")


class TestEncoding(NotifyCase):
    def test_listening_server_speaks_utf8(self):
        # The pool lends its most recently used server: the one a LATIN1
        # client just left (client_encoding LATIN1 on it).  Channel names
        # and payloads must still reach a UTF-8 client as UTF-8.
        if self.pg.psql("show server_encoding") != "UTF8":
            self.skipTest("the cluster is not UTF8")
        latin = login(self, self.px, client_encoding="LATIN1")
        self.assertEqual(hz.simple_query(latin, "select 1"), ([[b"1"]], []))
        a = login(self, self.px)
        a.sendall(hz.msg(b"Q", 'LISTEN "caf\u00e9"'.encode() + b"\0"))
        self.assertEqual([t for t, _ in hz.read_until_ready(a)], [b"C", b"Z"])
        self.pg.psql("select pg_notify('caf\u00e9', 'd\u00e9j\u00e0')")
        self.assertEqual([x[1:] for x in read_notifications(a, 1)],
                         [("caf\u00e9", "d\u00e9j\u00e0")])

    def raw_notification(self, sock):
        sock.settimeout(20)
        t, body = hz.recv_msg(sock)
        self.assertEqual(t, b"A", body)
        chan, payload, _ = body[4:].split(b"\0", 2)
        return chan, payload

    def test_each_client_in_its_own_encoding(self):
        # LISTEN's text comes in the client's encoding and notifications go
        # out in it, as PostgreSQL converts them; one with a character the
        # encoding lacks (the euro sign in LATIN1) does not reach it.
        if self.pg.psql("show server_encoding") != "UTF8":
            self.skipTest("the cluster is not UTF8")
        enc = {"latin1": ("LATIN1", "latin-1"), "win": ("WIN1252", "cp1252"),
               "utf8": ("UTF8", "utf-8")}
        socks = {}
        for k, (pg_name, py_name) in enc.items():
            socks[k] = login(self, self.px, client_encoding=pg_name)
            socks[k].sendall(hz.msg(b"Q", 'listen "caf\u00e9"'.encode(py_name) + b"\0"))
            self.assertEqual([t for t, _ in hz.read_until_ready(socks[k])], [b"C", b"Z"])
        # ASCII SQL text: the same whatever psql's own encoding.
        chan = "convert_from('\\x636166c3a9'::bytea, 'UTF8')"
        self.pg.psql("select pg_notify(%s, convert_from('\\xc3a974c3a9'::bytea, 'UTF8'))" % chan)
        self.pg.psql("select pg_notify(%s, convert_from('\\x3520e282ac'::bytea, 'UTF8'))" % chan)
        for k, (pg_name, py_name) in enc.items():
            with self.subTest(encoding=pg_name):
                want = [("caf\u00e9".encode(py_name), "\u00e9t\u00e9".encode(py_name))]
                if k != "latin1":
                    want.append(("caf\u00e9".encode(py_name), "5 \u20ac".encode(py_name)))
                self.assertEqual([self.raw_notification(socks[k]) for _ in want], want)
        self.assertTrue(nothing_to_read(socks["latin1"]))
        # UNLISTEN in LATIN1 names the same channel.
        socks["latin1"].sendall(hz.msg(b"Q", 'unlisten "caf\u00e9"'.encode("latin-1") + b"\0"))
        self.assertEqual([t for t, _ in hz.read_until_ready(socks["latin1"])], [b"C", b"Z"])
        self.pg.psql("select pg_notify(%s, 'x')" % chan)
        self.assertEqual(self.raw_notification(socks["utf8"]), ("caf\u00e9".encode(), b"x"))
        self.assertTrue(nothing_to_read(socks["latin1"]))

    def test_held_ones_in_the_encoding_of_the_transactions_end(self):
        # PostgreSQL converts a notification when it sends it: one committed
        # during a transaction that changed the client's client_encoding
        # (or in which a SET LOCAL of it ended) comes in the encoding in
        # force at the end.  pgwharf converted it when it came: in the old
        # encoding, or dropped when that one lacked a character of it.
        if self.pg.psql("show server_encoding") != "UTF8":
            self.skipTest("the cluster is not UTF8")
        e_acute, euro = "\u00e9", "5 \u20ac"
        # login encoding, the SET before or after the notification, the
        # notification's payload, the end, the encoding it comes in
        cases = [("UTF8", "", "set client_encoding to 'LATIN1'", e_acute, "commit", "latin-1"),
                 ("LATIN1", "set local client_encoding to 'UTF8'", "", e_acute, "commit",
                  "latin-1"),
                 ("LATIN1", "", "set client_encoding to 'UTF8'", euro, "commit", "utf-8"),
                 ("UTF8", "set client_encoding to 'LATIN1'", "", euro, "rollback", "utf-8"),
                 ("LATIN1", "set client_encoding to 'UTF8'", "", e_acute, "rollback",
                  "latin-1")]

        def run(sock, chan, before, after, payload, end, heard=None):
            """The notifications (channel, payload bytes) sock gets at the
            end of its transaction."""
            def query(q):
                sock.sendall(hz.query_msg(q))
                got = hz.read_until_ready(sock)
                self.assertEqual([t for t, _ in got if t not in (b"C", b"S")], [b"Z"], got)
                return got[-1][1]
            query("listen " + chan)
            self.assertEqual(query("begin; " + before), b"T")
            self.pg.psql("select pg_notify('%s', convert_from('\\x%s'::bytea, 'UTF8'))"
                         % (chan, payload.encode().hex()))
            if heard:                               # fanned out by the hub
                self.assertEqual([n[1:] for n in read_notifications(heard, 1)],
                                 [(chan, payload)])
            if after:
                self.assertEqual(query(after), b"T")
            sock.sendall(hz.query_msg(end))
            got = hz.read_until_ready(sock)
            sock.sendall(hz.query_msg("select 1"))     # behind what came at the end
            got += hz.read_until_ready(sock)
            return [tuple(b[4:].split(b"\0")[:2]) for t, b in got if t == b"A"]

        for i, (enc, before, after, payload, end, py_enc) in enumerate(cases):
            with self.subTest(login=enc, before=before, after=after, end=end):
                chan = "pgw_enc_held_%d" % i
                d = socket.create_connection((self.pg.host, self.pg.port), timeout=20)
                self.addCleanup(d.close)
                hz.sync_login(d, self.pg.user, self.pg.database, self.pg.password,
                              client_encoding=enc)
                want = run(d, chan, before, after, payload, end)
                d.close()
                self.assertEqual(want, [(chan.encode(), payload.encode(py_enc))])
                w = self.witness(chan)
                a = login(self, self.px, client_encoding=enc)
                self.assertEqual(run(a, chan, before, after, payload, end, heard=w), want)
                w.close()
                a.close()

    def test_held_ones_all_without_the_clients_characters(self):
        # Every notification held for a LATIN1 client's transaction has a
        # character LATIN1 lacks: all are dropped as they go out (logged,
        # counted), and the session goes on.  pgwharf sent the empty rest
        # (a null pointer copied: the sanitizer build stopped the proxy).
        if self.pg.psql("show server_encoding") != "UTF8":
            self.skipTest("the cluster is not UTF8")
        chan = "pgw_enc_all_dropped"
        w = self.witness(chan)
        a = login(self, self.px, client_encoding="LATIN1")
        self.listen(a, "listen " + chan)
        self.assertEqual(hz.simple_query(a, "begin"), ([], []))
        self.pg.psql("select pg_notify('%s', convert_from('\\x%s'::bytea, 'UTF8'))"
                     % (chan, "5 \u20ac".encode().hex()))
        self.assertEqual([n[1:] for n in read_notifications(w, 1)], [(chan, "5 \u20ac")])
        a.sendall(hz.query_msg("commit"))
        got = hz.read_until_ready(a)
        a.sendall(hz.query_msg("select 1"))
        got += hz.read_until_ready(a)
        self.assertEqual([t for t, _ in got], [b"C", b"Z", b"T", b"D", b"C", b"Z"], got)
        self.assertIsNone(self.px.proc.poll())
        self.assertIn("event=notification_dropped", self.px.log())

    def test_held_ones_of_a_channel_named_in_another_encoding(self):
        # Held in a LATIN1 client's encoding, a notification on "café" was
        # looked for by that name among the client's channels (kept in
        # UTF-8), and not found, when its transaction's UNLISTEN of another
        # channel committed, or its LISTEN of "café": dropped there, where
        # PostgreSQL delivers it.
        if self.pg.psql("show server_encoding") != "UTF8":
            self.skipTest("the cluster is not UTF8")
        for i, (listens, sql) in enumerate(((["x", "c"], "unlisten {x}"),
                                            (["x"], "listen {c}"))):
            with self.subTest(sql=sql):
                chan = "caf\u00e9%d" % i
                names = {"x": "pgw_x%d" % i, "c": '"%s"' % chan}

                def run(sock, heard=None):
                    def query(q):
                        sock.sendall(hz.msg(b"Q", q.encode("latin-1") + b"\0"))
                        got = hz.read_until_ready(sock)
                        self.assertEqual([t for t, _ in got if t not in (b"A", b"C")], [b"Z"],
                                         got)
                        return got
                    for k in listens:
                        query("listen " + names[k])
                    query("begin; " + sql.format(**names))
                    self.pg.psql("select pg_notify(convert_from('\\x%s'::bytea, 'UTF8'), 'held')"
                                 % chan.encode().hex())
                    if heard:                           # fanned out by the hub
                        self.assertEqual([n[1:] for n in read_notifications(heard, 1)],
                                         [(chan, "held")])
                    got = query("commit")
                    sock.sendall(hz.query_msg("select 1"))  # behind what came at the end
                    got += hz.read_until_ready(sock)
                    return [tuple(b[4:].split(b"\0")[:2]) for t, b in got if t == b"A"]

                d = socket.create_connection((self.pg.host, self.pg.port), timeout=20)
                self.addCleanup(d.close)
                hz.sync_login(d, self.pg.user, self.pg.database, self.pg.password,
                              client_encoding="LATIN1")
                want = run(d)
                d.close()
                self.assertEqual(want, [(chan.encode("latin-1"), b"held")])
                w = self.witness(names["c"])
                a = login(self, self.px, client_encoding="LATIN1")
                self.assertEqual(run(a, heard=w), want)
                w.close()
                a.close()

    def test_a_notify_to_itself_in_its_transaction_once_in_any_encoding(self):
        # BEGIN; LISTEN "café"; NOTIFY "café"; COMMIT from a LATIN1 client:
        # its own server's copy names the channel in LATIN1, which pgwharf
        # did not match with its (UTF-8) name: that copy went through as
        # not the listening server's, and the listening server's came too
        # (found by a review of notify.c).
        if self.pg.psql("show server_encoding") != "UTF8":
            self.skipTest("the cluster is not UTF8")
        for i in range(5):
            chan = "caf\u00e9%d" % i
            w = self.witness('"%s"' % chan)
            a = login(self, self.px, client_encoding="LATIN1")
            sql = 'BEGIN; LISTEN "%s"; NOTIFY "%s", \'self\'; COMMIT' % (chan, chan)
            a.sendall(hz.msg(b"Q", sql.encode("latin-1") + b"\0"))
            heard = [b for t, b in hz.read_until_ready(a) if t == b"A"]
            self.assertEqual([n[1:] for n in read_notifications(w, 1)], [(chan, "self")])
            # the listening server's copy, if any, came to a with w's
            heard += [b for t, b in hz.read_until_ready(a.sendall(hz.query_msg("select 1")) or a)
                      if t == b"A"]
            self.assertEqual([body[4:] for body in heard],
                             [chan.encode("latin-1") + b"\0self\0"], "round %d" % i)
            a.close()
            w.close()

    def test_inside_a_transaction_and_prepared(self):
        if self.pg.psql("show server_encoding") != "UTF8":
            self.skipTest("the cluster is not UTF8")
        a = login(self, self.px, client_encoding="LATIN1")
        a.sendall(hz.query_msg("begin") +
                  hz.msg(b"Q", 'listen "\u00e9t\u00e9"'.encode("latin-1") + b"\0") +
                  hz.query_msg("commit"))
        for _ in range(3):
            self.assertEqual([t for t, _ in hz.read_until_ready(a)], [b"C", b"Z"])
        b = login(self, self.px, client_encoding="LATIN1")
        # Parse of the unnamed statement (no parameter types), then Bind,
        # Execute, Sync: answered by pgwharf, run on the listening server.
        b.sendall(hz.msg(b"P", b"\0" + 'listen "\u00e9t\u00e9"'.encode("latin-1") + b"\0\0\0") +
                  bind_exec(""))
        self.assertEqual([t for t, _ in hz.read_until_ready(b)], [b"1", b"2", b"C", b"Z"])
        self.pg.psql("select pg_notify(convert_from('\\xc3a974c3a9'::bytea, 'UTF8'), 'y')")
        for sock in (a, b):
            self.assertEqual(self.raw_notification(sock), ("\u00e9t\u00e9".encode("latin-1"), b"y"))


class TestExtendedProtocol(NotifyCase):
    """LISTEN prepared and executed through the extended protocol."""

    def test_asyncpg_shape_named(self):
        # Parse, Describe statement, Flush; then Bind, Execute, Sync.
        a = login(self, self.px)
        a.sendall(hz.parse_msg("s1", 'LISTEN "pgw_ext"') + hz.msg(b"D", b"Ss1\x00") +
                  hz.msg(b"H"))
        self.assertEqual([hz.recv_msg(a)[0] for _ in range(3)], [b"1", b"t", b"n"])
        a.sendall(bind_exec("s1"))
        self.assertEqual(hz.read_until_ready(a), [(b"2", b""), (b"C", b"LISTEN\x00"),
                                                  (b"Z", b"I")])
        self.assertEqual(self.listeners(), 1)
        self.notify("pgw_ext", "e1")
        self.assertEqual([x[1:] for x in read_notifications(a, 1)], [("pgw_ext", "e1")])
        # The prepared UNLISTEN, all in one batch, then the LISTEN again by name.
        a.sendall(hz.ext_msgs("unlisten pgw_ext"))
        got = hz.read_until_ready(a)
        self.assertEqual([t for t, _ in got], [b"1", b"2", b"n", b"C", b"Z"])
        self.assertEqual(got[3][1], b"UNLISTEN\x00")
        self.notify("pgw_ext", "none")
        a.sendall(bind_exec("s1", describe=True))
        self.assertEqual([t for t, _ in hz.read_until_ready(a)], [b"2", b"n", b"C", b"Z"])
        self.notify("pgw_ext", "e2")
        self.assertEqual([x[1:] for x in read_notifications(a, 1)], [("pgw_ext", "e2")])
        # Other statements go to the servers as usual, the unnamed one too.
        a.sendall(hz.ext_msgs("select $1::int + 1", "41"))
        got = hz.read_until_ready(a)
        self.assertEqual([hz.data_row(m) for t, m in got if t == b"D"], [[b"42"]])

    def test_jdbc_shape_unnamed(self):
        a = login(self, self.px)
        a.sendall(hz.ext_msgs("LISTEN pgw_jdbc"))
        self.assertEqual([t for t, _ in hz.read_until_ready(a)], [b"1", b"2", b"n", b"C", b"Z"])
        self.notify("pgw_jdbc", "j")
        self.assertEqual([x[1:] for x in read_notifications(a, 1)], [("pgw_jdbc", "j")])

    def test_unnamed_prepared_listen_replaced_or_dropped_elsewhere(self):
        # pgwharf keeps an unnamed LISTEN prepared between transactions; a
        # Parse of the unnamed statement that is not first in its batch,
        # or any simple Query, replaces or drops it in PostgreSQL.  A lone
        # Bind of the unnamed statement after those ran the kept LISTEN
        # (rows of the new statement expected; 26000 after the Query).
        a = login(self, self.px)
        prepare(self, a, {"": "listen pgw_unnamed_kept"})
        prepare(self, a, {"s_first": "select 1", "": "select 2"})
        a.sendall(bind_exec(""))
        got = hz.read_until_ready(a)
        self.assertEqual([t for t, _ in got], [b"2", b"D", b"C", b"Z"], got)
        self.assertEqual(hz.data_row(got[1][1]), [b"2"])
        prepare(self, a, {"": "listen pgw_unnamed_kept"})
        self.assertEqual(hz.simple_query(a, "select 3"), ([[b"3"]], []))
        a.sendall(bind_exec(""))
        got = hz.read_until_ready(a)
        self.assertEqual([t for t, _ in got], [b"E", b"Z"], got)
        self.assertEqual(hz.parse_fields(got[0][1])["C"], "26000")
        # A Query pgwharf answers itself drops it too.
        prepare(self, a, {"": "listen pgw_unnamed_kept"})
        self.listen(a, "unlisten pgw_unnamed_other")
        a.sendall(bind_exec(""))
        got = hz.read_until_ready(a)
        self.assertEqual([t for t, _ in got], [b"E", b"Z"], got)
        self.assertEqual(hz.parse_fields(got[0][1])["C"], "26000")

    def test_not_a_lone_listen_goes_to_the_server(self):
        a = login(self, self.px)
        # With a parameter: PostgreSQL refuses it (LISTEN takes none).
        a.sendall(hz.ext_msgs("LISTEN pgw_x", "1"))
        got = hz.read_until_ready(a)
        self.assertEqual([t for t, _ in got], [b"1", b"E", b"Z"])
        self.assertEqual(hz.parse_fields(got[1][1])["C"], "08P01")   # PostgreSQL's
        self.assertEqual(hz.simple_query(a, "select 1"), ([[b"1"]], []))

    def test_a_sync_or_flush_with_a_body_goes_to_the_server(self):
        """A lone LISTEN's batch ending with a Sync or Flush with a body,
        which PostgreSQL answers with 08P01: pgwharf took the batch for one
        it answers and gave no error.  The server gets it now, and the
        client reads what PostgreSQL sends it."""
        d = socket.create_connection((self.pg.host, self.pg.port), timeout=30)
        self.addCleanup(d.close)
        hz.sync_login(d, self.pg.user, self.pg.database, self.pg.password)
        a = login(self, self.px)
        batch = hz.ext_msgs("LISTEN pgw_bodied")[:-5]     # (without its Sync)
        codes = lambda got: [(t, hz.parse_fields(b)["C"] if t == b"E" else None)
                             for t, b in got]
        parse = hz.parse_msg("", "LISTEN pgw_bodied")
        rest = batch[len(parse):]
        for msgs in (batch + hz.msg(b"S", b"x"),
                     parse + hz.msg(b"H", b"x") + rest + hz.msg(b"S")):
            with self.subTest(msgs=msgs):
                d.sendall(msgs)
                want = codes(hz.read_until_ready(d))
                self.assertIn((b"E", "08P01"), want)
                a.sendall(msgs)
                self.assertEqual(codes(hz.read_until_ready(a)), want)
                self.assertEqual(hz.simple_query(a, "select 1"), ([[b"1"]], []))

    def test_asyncpg(self):
        import asyncio
        try:
            import asyncpg
        except ImportError:
            self.skipTest("asyncpg not installed")

        async def run(cache):
            kw = dict(host=self.px.host, port=self.px.port, user=self.pg.user,
                      password=self.pg.password, database=self.pg.database, ssl=False,
                      statement_cache_size=cache)
            a, b, n = [await asyncpg.connect(**kw) for _ in range(3)]
            got = asyncio.Queue()
            await a.add_listener("pgw_apg", lambda c, pid, ch, p: got.put_nowait(("a", ch, p)))
            await b.add_listener("pgw_apg", lambda c, pid, ch, p: got.put_nowait(("b", ch, p)))
            await n.execute("select pg_notify('pgw_apg', 'async')")
            out = sorted([await asyncio.wait_for(got.get(), 20) for _ in range(2)])
            # Queries on the same connections go on as usual.
            self.assertEqual(await a.fetchval("select 1 + $1::int", 1), 2)
            await a.close(), await b.close(), await n.close()
            return out
        for cache in (100, 0):
            self.assertEqual(asyncio.run(run(cache)),
                             [("a", "pgw_apg", "async"), ("b", "pgw_apg", "async")], cache)

    def test_close_forgets_a_prepared_listen(self):
        # Close of a prepared LISTEN (asyncpg closes the statements its
        # cache evicts): pgwharf kept it, and a Bind of the name ran it
        # where PostgreSQL has no such statement (26000); a client
        # listening on channel after channel grew the table without end.
        for mps, closing in ((200, "between transactions"), (200, "inside a transaction"),
                             (0, "between transactions")):
            with self.subTest(closing=closing, max_prepared_statements=mps):
                self.use_max_prepared_statements(mps)
                a = login(self, self.px)
                a.sendall(hz.parse_msg("s1", "LISTEN pgw_closed") + hz.msg(b"D", b"Ss1\x00") +
                          hz.msg(b"H"))
                self.assertEqual([hz.recv_msg(a)[0] for _ in range(3)], [b"1", b"t", b"n"])
                a.sendall(bind_exec("s1"))
                self.assertEqual([t for t, _ in hz.read_until_ready(a)], [b"2", b"C", b"Z"])
                if closing == "inside a transaction":
                    self.assertEqual(hz.simple_query(a, "begin"), ([], []))
                a.sendall(hz.msg(b"C", b"Ss1\x00") + hz.msg(b"S"))
                self.assertEqual([t for t, _ in hz.read_until_ready(a)], [b"3", b"Z"])
                if closing == "inside a transaction":
                    self.assertEqual(hz.simple_query(a, "commit"), ([], []))
                a.sendall(bind_exec("s1"))
                got = hz.read_until_ready(a)
                self.assertEqual([t for t, _ in got], [b"E", b"Z"], got)
                self.assertEqual(hz.parse_fields(got[0][1])["C"], "26000")
                a.close()

    def test_a_flush_between_bind_and_execute_of_a_prepared_listen(self):
        # Parse, Bind, Flush, then Execute, Sync: the portal pgwharf bound
        # was gone at the Flush, and the Execute went to a server (34000
        # "portal does not exist"); the client listened to nothing.
        for mps in (200, 0):
            for split in (True, False):
                with self.subTest(max_prepared_statements=mps, split=split):
                    self.use_max_prepared_statements(mps)
                    a = login(self, self.px)
                    chan = "pgw_held_%d_%d" % (mps, split)
                    head = (hz.parse_msg("s1", "LISTEN " + chan) +
                            hz.msg(b"B", b"\x00s1\x00" + struct.pack("!HHH", 0, 0, 0)) +
                            hz.msg(b"H"))
                    tail = hz.msg(b"E", b"\x00" + struct.pack("!I", 0)) + hz.msg(b"S")
                    if split:
                        a.sendall(head)
                        self.assertEqual([hz.recv_msg(a)[0] for _ in range(2)], [b"1", b"2"])
                        a.sendall(tail)
                    else:
                        a.sendall(head + tail)
                    got = hz.read_until_ready(a)
                    self.assertEqual([t for t, _ in got], ([] if split else [b"1", b"2"]) +
                                     [b"C", b"Z"], got)
                    self.pg.psql("notify %s, 'held'" % chan)
                    self.assertEqual([n[1:] for n in read_notifications(a, 1)], [(chan, "held")])
                    a.close()
        # ... and ends where PostgreSQL's does: a Sync or Query between
        # (the Execute then gets 34000, and nothing is listened to)
        for between in (hz.msg(b"S"), hz.query_msg("select 1"),
                        # a Parse pgwharf refuses itself (42P05), then Sync
                        hz.parse_msg("s1", "select 1") + hz.msg(b"S")):
            with self.subTest(between=between[:1]):
                a = login(self, self.px)
                a.sendall(hz.parse_msg("s1", "LISTEN pgw_held_gone") +
                          hz.msg(b"B", b"\x00s1\x00" + struct.pack("!HHH", 0, 0, 0)) +
                          hz.msg(b"H"))
                self.assertEqual([hz.recv_msg(a)[0] for _ in range(2)], [b"1", b"2"])
                a.sendall(between)
                hz.read_until_ready(a)
                a.sendall(hz.msg(b"E", b"\x00" + struct.pack("!I", 0)) + hz.msg(b"S"))
                got = hz.read_until_ready(a)
                self.assertEqual([t for t, _ in got], [b"E", b"Z"], got)
                self.assertEqual(hz.parse_fields(got[0][1])["C"], "34000")
                a.close()

    def test_deallocate_all_forgets_a_prepared_listen(self):
        # DEALLOCATE ALL (as a Query, or a server_reset_query's) drops the
        # client's prepared statements: pgwharf kept its prepared LISTEN,
        # and a Bind of the name ran it where PostgreSQL has no such
        # statement (26000).
        for mps in (200, 0):
            with self.subTest(max_prepared_statements=mps):
                self.use_max_prepared_statements(mps)
                a = login(self, self.px)
                prepare(self, a, {"s1": "LISTEN pgw_dealloc"})
                self.assertEqual(hz.simple_query(a, "deallocate all"), ([], []))
                a.sendall(bind_exec("s1"))
                got = hz.read_until_ready(a)
                self.assertEqual([t for t, _ in got], [b"E", b"Z"], got)
                self.assertEqual(hz.parse_fields(got[0][1])["C"], "26000")
                a.close()

    def test_sql_deallocate_of_a_prepared_listen(self):
        # SQL DEALLOCATE of a prepared LISTEN pgwharf kept: it went to a
        # server, which has no such statement (26000), and pgwharf kept it
        # (a later Bind of the name still ran it).  The name as PostgreSQL
        # reads it: lowered unless quoted.
        for mps, sql, name in ((200, 'deallocate "S_1"', "S_1"), (0, "DEALLOCATE s1;", "s1"),
                               (200, "deallocate prepare S1", "s1"),
                               (0, ' deallocate prepare "pr""x"', 'pr"x')):
            with self.subTest(sql=sql, max_prepared_statements=mps):
                self.use_max_prepared_statements(mps)
                deallocate_forgets(self, sql, name)
        # Any other goes to the server, which answers: a name folded to
        # another one's, one the client did not prepare, DEALLOCATE ALL.
        a = login(self, self.px)
        prepare(self, a, {"S_1": "LISTEN pgw_sql_dealloc"})
        for sql in ("deallocate S_1", "deallocate other"):
            rows, errs = hz.simple_query(a, sql)
            self.assertEqual([e["C"] for e in errs], ["26000"], sql)
        a.sendall(bind_exec("S_1"))
        self.assertEqual([t for t, _ in hz.read_until_ready(a)], [b"2", b"C", b"Z"])
        self.assertEqual(hz.simple_query(a, "deallocate all"), ([], []))
        a.sendall(bind_exec("S_1"))
        got = hz.read_until_ready(a)
        self.assertEqual(hz.parse_fields(got[0][1])["C"], "26000")

    def test_sql_deallocate_of_a_prepared_listen_inside_a_transaction(self):
        # Inside a transaction it went to the server, which has no such
        # statement: 26000 failed the client's transaction (its COMMIT
        # rolled back), and pgwharf kept the statement.  PostgreSQL
        # deallocates it, and a prepared statement is not transactional:
        # it stays gone after ROLLBACK as after COMMIT.  Pipelined behind
        # a query it is answered in its turn; in a failed transaction
        # PostgreSQL refuses it (25P02) and keeps the statement.
        for mps in (0, 200):
            self.use_max_prepared_statements(mps)
            for end, pipelined in (("rollback", False), ("commit", False), ("commit", True)):
                with self.subTest(max_prepared_statements=mps, end=end, pipelined=pipelined):
                    a = login(self, self.px)
                    prepare(self, a, {"s1": "LISTEN pgw_tx_dealloc"})
                    self.assertEqual(hz.simple_query(a, "begin"), ([], []))
                    if pipelined:
                        gate = hz.Gate(self.pg, 7490)
                        self.addCleanup(gate.close)
                        a.sendall(hz.query_msg("select 7, " + gate.sql()))
                        pt.wait_until(lambda: self.pg.psql(
                            "select count(*) from pg_stat_activity where wait_event_type = "
                            "'Lock' and query like 'select 7%%'") == "1", 20,
                            what="the query ahead held by the gate")
                        a.sendall(hz.query_msg("deallocate s1"))
                        gate.open()
                        self.assertEqual([t for t, _ in hz.read_until_ready(a)],
                                         [b"T", b"D", b"C", b"Z"])
                    else:
                        a.sendall(hz.query_msg("deallocate s1"))
                    self.assertEqual(hz.read_until_ready(a),
                                     [(b"C", b"DEALLOCATE\x00"), (b"Z", b"T")])
                    self.assertEqual(hz.simple_query(a, "select 1"), ([[b"1"]], []))
                    a.sendall(hz.query_msg(end))
                    self.assertEqual(hz.read_until_ready(a),
                                     [(b"C", end.upper().encode() + b"\x00"), (b"Z", b"I")])
                    a.sendall(bind_exec("s1"))
                    got = hz.read_until_ready(a)
                    self.assertEqual([t for t, _ in got], [b"E", b"Z"], got)
                    self.assertEqual(hz.parse_fields(got[0][1])["C"], "26000")
                    a.close()
            with self.subTest(max_prepared_statements=mps, failed=True):
                a = login(self, self.px)
                prepare(self, a, {"s1": "LISTEN pgw_tx_dealloc"})
                self.assertEqual(hz.simple_query(a, "begin"), ([], []))
                self.assertEqual([e["C"] for e in hz.simple_query(a, "select 1/0")[1]], ["22012"])
                self.assertEqual([e["C"] for e in hz.simple_query(a, "deallocate s1")[1]],
                                 ["25P02"])
                self.assertEqual(hz.simple_query(a, "rollback"), ([], []))
                a.sendall(bind_exec("s1"))
                self.assertEqual([t for t, _ in hz.read_until_ready(a)], [b"2", b"C", b"Z"])
                a.close()

    def test_no_channel_left_gives_the_server_back(self):
        # asyncpg's remove_listener: the client's prepared LISTEN and
        # UNLISTEN stay with pgwharf, which kept the listening server with
        # no channel to listen to for as long as the client stayed.
        import asyncio
        try:
            import asyncpg
        except ImportError:
            self.skipTest("asyncpg not installed")

        def hub_backends():
            return int(self.pg.psql(
                "select count(*) from pg_stat_activity where (query ilike 'listen%%' or "
                "query ilike 'unlisten%%') and datname = '%s'" % self.pg.database))

        async def run():
            a = await asyncpg.connect(host=self.px.host, port=self.px.port, user=self.pg.user,
                                      password=self.pg.password, database=self.pg.database,
                                      ssl=False)
            got = asyncio.Queue()

            def on_note(c, pid, ch, p):
                got.put_nowait((ch, p))
            try:
                await a.add_listener("pgw_idle", on_note)
                self.assertEqual(hub_backends(), 1)
                await a.remove_listener("pgw_idle", on_note)
                await asyncio.get_running_loop().run_in_executor(None, lambda: pt.wait_until(
                    lambda: hub_backends() == 0, 20, what="the listening server given back"))
                # Listening again takes a server again.
                await a.add_listener("pgw_idle", on_note)
                await a.execute("select pg_notify('pgw_idle', 'again')")
                self.assertEqual(await asyncio.wait_for(got.get(), 20), ("pgw_idle", "again"))
            finally:
                a.terminate()
        asyncio.run(run())


class LongNamesCase(NotifyCase):
    """Exchanges run on a direct connection and through pgwharf, and their
    messages compared."""

    E = "\u00e9"

    def direct(self, **params):
        s = socket.create_connection((self.pg.host, self.pg.port), timeout=20)
        self.addCleanup(s.close)
        hz.sync_login(s, self.pg.user, self.pg.database, self.pg.password, **params)
        return s

    @staticmethod
    def exchange(sock, data, n=1):
        """data sent on sock, then its messages up to the n-th
        ReadyForQuery: types, and (S, C, M) of a notice or error."""
        sock.sendall(data)
        out = []
        for _ in range(n):
            for t, body in hz.read_until_ready(sock):
                if t in (b"N", b"E"):
                    f = hz.parse_fields(body)
                    out.append((t, f["S"], f["C"], f["M"]))
                else:
                    out.append((t, body))
        return out

    def login(self, **params):
        """A client of self.px logged in."""
        return login(self, self.px, **params)

    def compare(self, data, n=1, **params):
        a, got = self.compare_steps([(data, n)], **params)
        return a, got[0]

    def compare_steps(self, steps, **params):
        """Each step (data, n) sent once the one before is answered, on a
        direct connection and through pgwharf: (pgwharf's client, its
        messages of each step)."""
        d = self.direct(**params)
        want = [self.exchange(d, data, n) for data, n in steps]
        d.close()
        a = self.login(**params)
        got = [self.exchange(a, data, n) for data, n in steps]
        self.assertEqual(got, want)
        return a, got


class TestLongNames(LongNamesCase):
    """A channel name over 63 bytes, as PostgreSQL 15 (in a UTF8 database)
    truncates it: at 63 bytes, or at the last whole character before
    (pg_mbcliplen), with NOTICE 42622 "identifier ... will be truncated
    to ...".  pgwharf ran a non-ASCII one on the client's own server
    (closed when given back: the client was deaf between transactions),
    and answered an UNLISTEN of a long name, or the Parse of a LISTEN,
    without the NOTICE.  Each exchange is run on a direct connection and
    through pgwharf, and their messages compared."""

    def test_as_postgresql_names_and_tells_it(self):
        e40, e29 = "pgw_" + self.E * 40, "pgw_" + self.E * 29      # 84 and 62 bytes
        esc = 'U&"pgw_' + "\\00e9" * 35 + '"'
        for sql, chan, notify in (
                ("listen pgw_" + "x" * 70, "pgw_" + "x" * 59, "pgw_" + "x" * 70),
                ('LISTEN "%s"' % e40, e29, '"%s"' % e40),
                ("listen %s" % e40, e29, e40),
                ("LISTEN " + esc, e29, '"%s"' % e29)):
            with self.subTest(sql=sql):
                a, got = self.compare(hz.query_msg(sql))
                self.assertEqual([x[0] for x in got], [b"N", b"C", b"Z"], got)
                self.assertEqual(got[0][1:3], ("NOTICE", "42622"))
                # It listens on the name PostgreSQL uses (NOTIFY's cut too).
                self.pg.psql("notify %s, 'cut'" % notify)
                self.assertEqual([x[1:] for x in read_notifications(a, 1)], [(chan, "cut")])
                # Between transactions: the hub's, not the server's it ran on.
                self.assertEqual(hz.simple_query(a, "select 1"), ([[b"1"]], []))
                self.pg.psql("notify %s, 'again'" % notify)
                self.assertEqual([x[1:] for x in read_notifications(a, 1)], [(chan, "again")])
                # An UNLISTEN of the long name: pgwharf's answer, its NOTICE too.
                unlisten = hz.query_msg("UN" + sql)
                d = self.direct()
                self.exchange(d, hz.query_msg(sql))
                self.assertEqual(self.exchange(a, unlisten), self.exchange(d, unlisten))
                d.close()
                a.close()
                pt.wait_until(lambda: self.listeners() == 0, 20, what="the hub's server closed")

    def test_extended_protocol(self):
        # PostgreSQL's scanner reads the name at the Parse: the NOTICE
        # comes before its ParseComplete.
        e40 = "pgw_" + self.E * 40
        data = (hz.parse_msg("", 'LISTEN "%s"' % e40) + hz.msg(b"S") +
                bind_exec(""))
        a, got = self.compare(data, 2)
        self.assertEqual([x[0] for x in got], [b"N", b"1", b"Z", b"2", b"C", b"Z"], got)
        self.pg.psql("notify \"%s\", 'ext'" % e40)
        self.assertEqual([x[1:] for x in read_notifications(a, 1)],
                         [("pgw_" + self.E * 29, "ext")])

    def test_statement_names_over_63_bytes(self):
        # PostgreSQL keeps a statement's name's first 63 bytes (its tables
        # of them keep no more), and its scanner cuts a DEALLOCATE's name
        # there with NOTICE 42622.  pgwharf sent a prepared LISTEN of a
        # longer name to the client's own server (deaf between
        # transactions), answered a DEALLOCATE of a longer name without
        # the NOTICE, and kept a statement a Close of a longer name, or
        # of the same 63 bytes, closed.
        name = "pgw_stmt_" + "s" * 61
        for mps in (200, 0):
            self.use_max_prepared_statements(mps)
            for data, n in (
                    (hz.parse_msg(name, "LISTEN pgw_long_stmt") + hz.msg(b"S") + bind_exec(name) +
                     hz.query_msg("DEALLOCATE " + name) + bind_exec(name[:63]), 4),
                    (hz.parse_msg(name[:63], "LISTEN pgw_long_stmt") + hz.msg(b"S") +
                     bind_exec(name) + hz.query_msg("deallocate prepare " + name + "_x") +
                     bind_exec(name[:63]), 4),
                    (hz.parse_msg(name, "LISTEN pgw_long_stmt") + hz.msg(b"S") +
                     bind_exec(name[:63] + "_z") +
                     hz.msg(b"C", b"S" + name[:63].encode() + b"_y\x00") + hz.msg(b"S") +
                     bind_exec(name), 4)):
                with self.subTest(max_prepared_statements=mps, data=data):
                    a, got = self.compare(data, n)
                    self.assertIn((b"C", b"LISTEN\x00"), got)
                    self.assertEqual([x[2] for x in got if x[0] in (b"N", b"E")][-1], "26000")
                    self.hears_between_transactions(a, "pgw_long_stmt")
                    a.close()

    def test_statement_names_in_the_databases_encoding(self):
        # PostgreSQL converts a statement's or portal's name to the
        # database's encoding before it keeps its first 63 bytes (even
        # inside a character), and its scanner cuts a DEALLOCATE's there
        # at a whole character.  pgwharf cut the client's bytes: for a
        # LATIN1 client of this UTF8 database, a Bind of 35 "é" (70 bytes
        # here) did not find the prepared LISTEN of 40 (80 bytes), both
        # cut to the same 63, and a Close of 33 did not close it.
        e = self.E

        def parse(name, sql="LISTEN pgw_enc_stmt"):
            return hz.msg(b"P", name.encode("latin1") + b"\0" + sql.encode() + b"\0\0\0")

        def bind(name):
            return hz.msg(b"B", b"\0" + name.encode("latin1") + b"\0" + struct.pack("!HHH", 0, 0, 0))

        def run(name):
            return bind(name) + hz.msg(b"E", b"\0\0\0\0\0") + hz.msg(b"S")

        def dealloc(name):
            return hz.msg(b"Q", ('DEALLOCATE "%s"' % name).encode("latin1") + b"\0")

        def close(name):
            return hz.msg(b"C", b"S" + name.encode("latin1") + b"\0") + hz.msg(b"S")

        def compare_steps(steps):
            a, got = self.compare_steps(steps, client_encoding="LATIN1")
            return a, [m for step in got for m in step]

        sync = hz.msg(b"S")
        for steps, heard in (
                ([(parse(e * 40) + sync + run(e * 35), 2)], True),
                ([(parse(e * 40) + sync + close(e * 33) + run(e * 40), 3)], False),
                # (a DEALLOCATE the server answers: the next Bind once its
                # server is given back)
                ([(parse(e * 40) + sync + dealloc(e * 40), 2), (run(e * 40), 1)], True),
                ([(parse("x" + e * 40) + sync + dealloc("x" + e * 40), 2),
                  (run("x" + e * 31), 1)], False),
                ([(parse(e * 10) + sync + dealloc(e * 10) + run(e * 10), 3)], False)):
            with self.subTest(steps=steps):
                a, got = compare_steps(steps)
                self.assertEqual((b"C", b"LISTEN\x00") in got, heard, got)
                if heard:
                    self.hears_between_transactions(a, "pgw_enc_stmt")
                a.close()

    def test_statement_names_in_the_databases_encoding_inside_a_transaction(self):
        # The same inside a transaction: the Parse is noted when a Bind of
        # its statement follows in its batch.  pgwharf compared the
        # client's bytes: the Bind of 35 "é" was not of the Parse of 40, so
        # the LISTEN PostgreSQL ran was not the hub's after the COMMIT.
        # (max_prepared_statements off: its statements keep their names on
        # the server, where PostgreSQL matches them.)
        self.use_max_prepared_statements(0)
        e = self.E
        run = (hz.msg(b"P", (e * 40).encode("latin1") + b"\0LISTEN pgw_enc_tx\0\0\0") +
               hz.msg(b"B", b"\0" + (e * 35).encode("latin1") + b"\0" +
                      struct.pack("!HHH", 0, 0, 0)) +
               hz.msg(b"E", b"\0\0\0\0\0") + hz.msg(b"S"))
        a, got = self.compare(hz.query_msg("BEGIN") + run + hz.query_msg("COMMIT"), 3,
                              client_encoding="LATIN1")
        self.assertEqual([t[0] for t in got], [b"C", b"Z", b"1", b"2", b"C", b"Z", b"C", b"Z"])
        self.hears_between_transactions(a, "pgw_enc_tx")

    def test_in_the_clients_encoding(self):
        # A LATIN1 client: its name converted (40 bytes here, 80 in UTF-8),
        # the NOTICE converted back.
        sql = ('LISTEN "pgw_%s"' % (self.E * 40)).encode("latin1") + b"\0"
        a, got = self.compare(hz.msg(b"Q", sql), client_encoding="LATIN1")
        self.assertEqual([x[0] for x in got], [b"N", b"C", b"Z"], got)
        self.pg.psql("notify \"pgw_%s\", 'latin1'" % (self.E * 40))
        a.settimeout(20)
        t, body = hz.recv_msg(a)
        self.assertEqual(t, b"A")
        self.assertEqual(body[4:].split(b"\0")[0], ("pgw_" + self.E * 29).encode("latin1"))


class TestVeryLongNames(LongNamesCase):
    """A name over 1023 bytes: PostgreSQL cuts it as any other, whatever
    its length.  pgwharf read none (it kept the whole name in a 1 kB
    buffer): the LISTEN ran on the client's own server, given back
    closed, and the client got no notifications between transactions."""

    def test_listen_and_unlisten(self):
        x = "pgw_" + "x" * 1996
        e = "pgw_" + self.E * 1000                     # 2004 bytes in UTF-8
        for sql, chan, quoted in (('LISTEN "%s"' % x, x[:63], '"%s"' % x),
                                  ("listen " + e, e[:33], e),
                                  ('LISTEN U&"pgw_' + "\\00e9" * 600 + '"', e[:33], '"%s"' % e)):
            with self.subTest(sql=sql[:20]):
                a, got = self.compare(hz.query_msg(sql))
                self.assertEqual([(t[0], t[2]) for t in got[:1]], [(b"N", "42622")], got)
                self.assertEqual(hz.simple_query(a, "select 1"), ([[b"1"]], []))
                self.pg.psql("notify %s, 'long'" % quoted)
                self.assertEqual([n[1:] for n in read_notifications(a, 1)], [(chan, "long")])
                self.assertEqual(self.listeners(), 1)       # the hub's server only
                d = self.direct()
                self.exchange(d, hz.query_msg(sql))
                unlisten = hz.query_msg("UN" + sql)
                self.assertEqual(self.exchange(a, unlisten), self.exchange(d, unlisten))
                d.close()
                a.close()
                pt.wait_until(lambda: self.listeners() == 0, 20, what="the hub's server closed")

    def test_extended_protocol(self):
        x = "pgw_" + "y" * 2000
        data = hz.parse_msg("", 'LISTEN "%s"' % x) + hz.msg(b"S") + bind_exec("")
        a, got = self.compare(data, 2)
        self.assertEqual([t[0] for t in got], [b"N", b"1", b"Z", b"2", b"C", b"Z"], got)
        self.assertEqual(hz.simple_query(a, "select 1"), ([[b"1"]], []))
        self.pg.psql("notify \"%s\", 'ext'" % x)
        self.assertEqual([n[1:] for n in read_notifications(a, 1)], [(x[:63], "ext")])

    def test_extended_protocol_parse_over_4_kb(self):
        # A Parse over 4096 bytes (a long name, or white space, making it
        # so) is read whole as a Query is, up to the relay's 32 kB buffer,
        # which grows for the rest of its batch.  pgwharf read none over
        # 4096 bytes: the LISTEN ran on the client's own server (and its
        # Parse, not Bound in its batch, was not noted there), given back
        # closed, and the client got no notifications between transactions.
        head = len(hz.parse_msg("pgw_big", 'LISTEN ""'))
        for stmt, x, describe in (
                ("", "pgw_" + "v" * 6000, False),
                # a Parse of 32766 bytes: with its Sync, more than the buffer
                ("pgw_big", "pgw_" + "u" * (32766 - head - 4), True)):
            parse = hz.parse_msg(stmt, 'LISTEN "%s"' % x)
            data = parse + hz.msg(b"S") + bind_exec(stmt, describe=describe)
            with self.subTest(parse_bytes=len(parse)):
                a, got = self.compare(data, 2)
                self.assertEqual([t[0] for t in got], [b"N", b"1", b"Z", b"2"] +
                                 [b"n"] * describe + [b"C", b"Z"], got)
                self.assertEqual(hz.simple_query(a, "select 1"), ([[b"1"]], []))
                self.pg.psql("notify \"%s\", 'big'" % x[:63])
                self.assertEqual([m[1:] for m in read_notifications(a, 1)], [(x[:63], "big")])
                self.assertEqual(self.listeners(), 1)       # the hub's server only
                a.close()
                pt.wait_until(lambda: self.listeners() == 0, 20, what="the hub's server closed")


class TestPreparedAsPostgreSQL(LongNamesCase):
    def test_parse_of_a_kept_name_is_refused(self):
        # PostgreSQL refuses a Parse of a statement name it has (42P05, the
        # rest of the batch skipped) and keeps the statement.  pgwharf
        # answered ParseComplete and kept the new text (a LISTEN: a Bind
        # then listened on the other channel), or sent the Parse to the
        # server, which ran it and forgot the prepared LISTEN.
        listen_a = hz.parse_msg("pgw_kept", "LISTEN pgw_kept_a") + hz.msg(b"S")
        steps = [(listen_a, 1),
                 (hz.parse_msg("pgw_kept", "LISTEN pgw_kept_b") + hz.msg(b"S") +
                  bind_exec("pgw_kept"), 2),
                 (hz.parse_msg("pgw_kept", "SELECT 1") + bind_exec("pgw_kept"), 1),
                 (bind_exec("pgw_kept"), 1)]
        a, got = self.compare_steps(steps)
        self.assertEqual([[m[0] for m in step] for step in got],
                         [[b"1", b"Z"], [b"E", b"Z", b"2", b"C", b"Z"], [b"E", b"Z"],
                          [b"2", b"C", b"Z"]], got)
        self.assertEqual(got[1][0][2], "42P05")
        self.assertEqual(hz.simple_query(a, "select 1"), ([[b"1"]], []))
        self.notify("pgw_kept_b", "not heard")
        self.notify("pgw_kept_a", "heard")
        self.assertEqual([m[1:] for m in read_notifications(a, 1)], [("pgw_kept_a", "heard")])


    def test_names_longer_than_the_buffer(self):
        # With a prepared LISTEN kept, a Bind's or Parse's names are read
        # before it goes on.  A name longer than the relay's 32 kB buffer
        # filled it, the read stopped, and nothing grew it: the client
        # waited for ever, its server held (and pgwharf's shutdown with it).
        # (A Describe or Execute over 10000 bytes is not PostgreSQL's.)
        long = "x" * 40000
        listen = (hz.parse_msg("pgw_big", "LISTEN pgw_big") + hz.msg(b"S"), 1)
        long_stmt = (hz.msg(b"B", b"\0" + long.encode() + b"\0" + struct.pack("!HHH", 0, 0, 0)) +
                     hz.msg(b"S"), 1)
        long_parse = (hz.parse_msg(long, "select 1") + hz.msg(b"S"), 1)
        # A Bind of the kept LISTEN to a portal of that name: a message
        # longer than those pgwharf answers itself, for the server, which
        # has the statement only with max_prepared_statements on.
        long_portal = (hz.msg(b"B", long.encode() + b"\0pgw_big\0" +
                              struct.pack("!HHH", 0, 0, 0)) + hz.msg(b"S"), 1)
        for mps, steps, want in (
                (0, [listen, long_stmt, long_parse], [[b"1", b"Z"], [b"E", b"Z"], [b"1", b"Z"]]),
                (100, [listen, long_stmt, long_parse, long_portal],
                 [[b"1", b"Z"], [b"E", b"Z"], [b"1", b"Z"], [b"2", b"Z"]])):
            with self.subTest(max_prepared_statements=mps):
                self.use_max_prepared_statements(mps)
                a, got = self.compare_steps(steps + [(bind_exec("pgw_big"), 1)])
                self.assertEqual([[m[0] for m in step] for step in got],
                                 want + [[b"2", b"C", b"Z"]], got)
                self.hears_between_transactions(a, "pgw_big")
                a.close()

    def test_a_bind_read_in_two_parts(self):
        # A Bind of a kept prepared LISTEN first in its batch, of which
        # pgwharf has read only a part (a pipelining client's write cut at
        # a read): pgwharf answers it once it is whole.  It went to a
        # server, which has no such statement with max_prepared_statements
        # off: 26000 for a LISTEN PostgreSQL would have run.
        self.use_max_prepared_statements(0)
        a = self.login()
        self.assertEqual([m[0] for m in self.exchange(
            a, hz.parse_msg("pgw_cut", "LISTEN pgw_cut") + hz.msg(b"S"))], [b"1", b"Z"])
        here, peer = a.getsockname()[1], a.getpeername()[1]

        def in_two_parts(data, cut):
            a.sendall(data[:cut])
            pt.wait_until(lambda: tcp_rx_queue(peer, here) == 0, 20,
                          what="pgwharf read the first part")
            return [m[0] for m in self.exchange(a, data[cut:])]

        for cut in (3, 9):
            with self.subTest(bind_cut=cut):
                self.assertEqual(in_two_parts(bind_exec("pgw_cut"), cut), [b"2", b"C", b"Z"])
        with self.subTest("a Describe of it"):
            self.assertEqual(in_two_parts(hz.msg(b"D", b"Spgw_cut\0") + hz.msg(b"S"), 8),
                             [b"t", b"n", b"Z"])
        execute = hz.msg(b"E", b"\0" + struct.pack("!I", 0)) + hz.msg(b"S")
        for first, cut, want in ((b"", 7, [b"C", b"Z"]),
                                 (hz.msg(b"D", b"P\0"), 6, [b"n", b"C", b"Z"])):
            with self.subTest("a Describe or Execute of its portal, held since a Bind and "
                              "a Flush", cut=cut):
                a.sendall(hz.msg(b"B", b"\0pgw_cut\0" + struct.pack("!HHH", 0, 0, 0)) +
                          hz.msg(b"H"))
                self.assertEqual(hz.recv_msg(a)[0], b"2")
                self.assertEqual(in_two_parts(first + execute, cut), want)
        self.hears_between_transactions(a, "pgw_cut")

    def test_close_after_the_execute(self):
        # A driver that closes what it ran (Bind, Execute, Close, Sync):
        # PostgreSQL answers CloseComplete after the Execute's
        # CommandComplete, and a Close of the statement drops it.  pgwharf
        # sent such a batch to a server, which has no such statement with
        # max_prepared_statements = 0: 26000 where PostgreSQL listens.
        close_p = hz.msg(b"C", b"P\0")
        close_s = hz.msg(b"C", b"Spgw_closed\0")
        run = bind_exec("pgw_closed")[:-5]                 # (without its Sync)
        parse = hz.parse_msg("pgw_closed", "LISTEN pgw_closed")
        unlisten = hz.parse_msg("pgw_closed_u", "UNLISTEN pgw_closed_u")
        steps = [(parse + hz.msg(b"S"), 1),
                 (run + close_p + hz.msg(b"S"), 1),
                 (run + close_p + close_s + hz.msg(b"S"), 1),
                 (bind_exec("pgw_closed"), 1),              # closed: 26000
                 (parse + run + close_s + hz.msg(b"S"), 1),
                 (unlisten + bind_exec("pgw_closed_u")[:-5] + close_p +
                  hz.msg(b"C", b"Spgw_closed_u\0") + hz.msg(b"S"), 1),
                 (bind_exec("pgw_closed_u"), 1)]
        for mps in (0, 100):
            with self.subTest(max_prepared_statements=mps):
                self.use_max_prepared_statements(mps)
                a, got = self.compare_steps(steps)
                self.assertEqual([[m[0] for m in step] for step in got],
                                 [[b"1", b"Z"], [b"2", b"C", b"3", b"Z"],
                                  [b"2", b"C", b"3", b"3", b"Z"], [b"E", b"Z"],
                                  [b"1", b"2", b"C", b"3", b"Z"],
                                  [b"1", b"2", b"C", b"3", b"3", b"Z"], [b"E", b"Z"]], got)
                self.assertEqual(got[3][0][2], "26000")
                self.hears_between_transactions(a, "pgw_closed")
                a.close()

    def test_describe_of_a_kept_statement(self):
        # A Describe of a prepared LISTEN in a batch of its own (a driver
        # asking what a cached statement takes and returns): PostgreSQL
        # answers ParameterDescription and NoData.  pgwharf sent it to a
        # server, which has no such statement: 26000.
        steps = [(hz.parse_msg("pgw_desc", "LISTEN pgw_desc") + hz.msg(b"S"), 1),
                 (hz.msg(b"D", b"Spgw_desc\0") + hz.msg(b"S"), 1),
                 (hz.msg(b"D", b"Spgw_desc\0") + hz.msg(b"H") + bind_exec("pgw_desc"), 1),
                 (hz.msg(b"D", b"Spgw_other\0") + hz.msg(b"S"), 1)]
        a, got = self.compare_steps(steps)
        self.assertEqual([[m[0] for m in step] for step in got],
                         [[b"1", b"Z"], [b"t", b"n", b"Z"], [b"t", b"n", b"2", b"C", b"Z"],
                          [b"E", b"Z"]], got)
        self.hears_between_transactions(a, "pgw_desc")


class TestLongNamesInALatin1Database(LongNamesCase):
    """A database in LATIN1 cuts a name at 63 of its bytes: 63 characters,
    up to 126 bytes of the UTF-8 the listening server speaks; a longer
    UTF-8 name may be no longer than 63 there.  pgwharf read no long
    non-ASCII name in a database not in UTF8: the LISTEN ran on the
    client's own server, given back closed, and the client got no
    notifications between transactions."""

    DB = "pgw_latin1"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        if cls.pg.psql("select count(*) from pg_database where datname = '%s'" % cls.DB,
                       db="postgres") == "0":
            cls.pg.psql("create database %s encoding 'LATIN1' template template0 locale 'C'"
                        % cls.DB, db="postgres")
        cls.addClassCleanup(cls.pg.psql, "drop database if exists %s with (force)" % cls.DB,
                            db="postgres")

    def setUp(self):
        pt.PgwharfTestCase.setUp(self)
        self.px = self.start_pgwharf(settings={
            "pool_mode": "transaction", "default_pool_size": 3, "log_connections": 0,
            "log_disconnections": 0}, databases={self.DB: self.pg.conn_string(self.DB)})

    def direct(self, **params):
        s = socket.create_connection((self.pg.host, self.pg.port), timeout=20)
        self.addCleanup(s.close)
        hz.sync_login(s, self.pg.user, self.DB, self.pg.password, **params)
        return s

    def login(self, **params):
        s = socket.create_connection((self.px.host, self.px.port), timeout=20)
        self.addCleanup(s.close)
        hz.sync_login(s, self.pg.user, self.DB, self.pg.password, **params)
        return s

    def listeners(self):
        return int(self.pg.psql(
            "select count(*) from pg_stat_activity where query ilike 'listen%%' "
            "and datname = '%s'" % self.DB))

    def notify(self, chan, payload):
        # NOTIFY cuts its name as LISTEN does (pg_notify refuses a long one);
        # psql would print the NOTICE in LATIN1.
        d = self.direct(client_encoding="UTF8")
        self.exchange(d, hz.query_msg("notify %s, '%s'" % (chan, payload)))
        d.close()

    def test_as_postgresql_names_and_tells_it(self):
        e70, e59, e40 = "pgw_" + self.E * 70, "pgw_" + self.E * 59, "pgw_" + self.E * 40
        for sql, chan, notify, client_encoding in (
                ('LISTEN "%s"' % e70, e59, '"%s"' % e70, "UTF8"),   # 144 bytes: 63 kept
                ("listen %s" % e40, e40, e40, "UTF8"),              # 84 bytes, 44 there
                ('LISTEN U&"pgw_' + "\\00e9" * 70 + '"', e59, '"%s"' % e59, "UTF8"),
                ('LISTEN "%s"' % e70, e59, '"%s"' % e70, "LATIN1"),
                ('listen "%s"' % ("pgw_" + "x" * 1500), "pgw_" + "x" * 59,
                 '"pgw_%s"' % ("x" * 70), "UTF8")):
            with self.subTest(sql=sql[:30], client_encoding=client_encoding):
                enc = "latin1" if client_encoding == "LATIN1" else "utf8"
                q = hz.msg(b"Q", sql.encode(enc) + b"\0")
                a, got = self.compare(q, client_encoding=client_encoding)
                self.assertEqual([t[0] for t in got], [b"N", b"C", b"Z"] if len(chan) < len(
                    sql) - 9 else [b"C", b"Z"], got)
                # Between transactions: the hub's, not the server's it ran on.
                self.assertEqual(hz.simple_query(a, "select 1"), ([[b"1"]], []))
                self.notify(notify, "cut")
                a.settimeout(20)
                t, body = hz.recv_msg(a)
                self.assertEqual(t, b"A")
                self.assertEqual(body[4:].split(b"\0")[0], chan.encode(enc))
                self.assertEqual(self.listeners(), 1)       # the hub's server only
                d = self.direct(client_encoding=client_encoding)
                self.exchange(d, q)
                unlisten = hz.msg(b"Q", b"UN" + sql.encode(enc) + b"\0")
                self.assertEqual(self.exchange(a, unlisten), self.exchange(d, unlisten))
                d.close()
                a.close()
                pt.wait_until(lambda: self.listeners() == 0, 20, what="the hub's server closed")

    def test_extended_protocol(self):
        e70 = "pgw_" + self.E * 70
        data = hz.parse_msg("", 'LISTEN "%s"' % e70) + hz.msg(b"S") + bind_exec("")
        a, got = self.compare(data, 2, client_encoding="UTF8")
        self.assertEqual([x[0] for x in got], [b"N", b"1", b"Z", b"2", b"C", b"Z"], got)
        self.assertEqual(hz.simple_query(a, "select 1"), ([[b"1"]], []))
        self.notify('"%s"' % e70, "ext")
        self.assertEqual([x[1:] for x in read_notifications(a, 1)], [("pgw_" + self.E * 59, "ext")])

    def test_statement_names_in_the_databases_encoding(self):
        # 40 "é" are 80 bytes of the client's UTF-8 but 40 here: PostgreSQL
        # keeps the name whole.  pgwharf cut the client's bytes to 63, so a
        # Bind of 32 "é" and an "x" (the same 63 bytes of UTF-8) ran the
        # prepared LISTEN where PostgreSQL answers 26000, and it sent a
        # DEALLOCATE of the name to the server (26000 where PostgreSQL
        # deallocates it).
        e = "\u00e9"
        for data, n, tags in (
                (hz.parse_msg(e * 40, "LISTEN pgw_enc_stmt") + hz.msg(b"S") +
                 bind_exec(e * 32 + "x"), 2, [b"1", b"Z", b"E", b"Z"]),
                (hz.parse_msg(e * 40, "LISTEN pgw_enc_stmt") + hz.msg(b"S") +
                 hz.query_msg('DEALLOCATE "%s"' % (e * 40)) + bind_exec(e * 40), 3,
                 [b"1", b"Z", b"C", b"Z", b"E", b"Z"])):
            with self.subTest(data=data):
                a, got = self.compare(data, n, client_encoding="UTF8")
                self.assertEqual([t[0] for t in got], tags, got)

    def test_a_character_latin1_lacks(self):
        # PostgreSQL refuses the text (22P05) before reading the name, on
        # the listening server as on a direct connection.
        sql = 'LISTEN "pgw_%s\u20ac"' % (self.E * 70)
        a, got = self.compare(hz.query_msg(sql), client_encoding="UTF8")
        self.assertEqual([(t[0], t[2]) for t in got[:1]], [(b"E", "22P05")], got)



class TestUnicodeEscapeNames(NotifyCase):
    """U&"..." names, with or without UESCAPE: PostgreSQL decodes them.
    pgwharf read none, so such a LISTEN ran on the client's own server
    (given back closed: notifications sent while the client was idle never
    reached it), an UNLISTEN left the client listening through the hub, and
    a DEALLOCATE of a kept prepared LISTEN went to a server (26000)."""

    def test_listen_and_unlisten(self):
        a, b = login(self, self.px), login(self, self.px)
        self.listen(b, "listen pgw_data")
        self.listen(a, 'LISTEN U&"pgw_d\\0061t\\+000061"')
        self.assertEqual(self.listeners(), 1)           # the hub's server only
        self.notify("pgw_data", "one")
        self.assertEqual([x[1:] for x in read_notifications(a, 1)], [("pgw_data", "one")])
        self.assertEqual([x[1:] for x in read_notifications(b, 1)], [("pgw_data", "one")])
        self.listen(a, "UNLISTEN U&\"pgw_d!0061ta\" UESCAPE '!';")
        self.notify("pgw_data", "two")
        self.assertEqual([x[1:] for x in read_notifications(b, 1)], [("pgw_data", "two")])
        a.sendall(hz.query_msg("select 'nothing before'"))
        self.assertEqual([t for t, _ in hz.read_until_ready(a)], [b"T", b"D", b"C", b"Z"])
        # Not lowered, as PostgreSQL reads it; a bad escape is PostgreSQL's error.
        self.listen(a, 'listen u&"PGW_\\0041"')
        self.notify("PGW_A", "three")
        self.assertEqual([x[1:] for x in read_notifications(a, 1)], [("PGW_A", "three")])
        rows, errors = hz.simple_query(a, 'listen U&"pgw_\\zz"')
        self.assertEqual([e["C"] for e in errors], ["42601"])

    def test_extended_protocol_listen(self):
        a = login(self, self.px)
        a.sendall(hz.ext_msgs('LISTEN U&"pgw_\\0065xt"'))
        self.assertEqual([t for t, _ in hz.read_until_ready(a)], [b"1", b"2", b"n", b"C", b"Z"])
        self.notify("pgw_ext", "e")
        self.assertEqual([x[1:] for x in read_notifications(a, 1)], [("pgw_ext", "e")])

    def test_sql_deallocate_of_a_prepared_listen(self):
        for mps, sql, name in ((200, 'deallocate U&"S\\005f1"', "S_1"),
                               (0, "DEALLOCATE PREPARE U&\"p!0078\" UESCAPE '!'", "px")):
            with self.subTest(sql=sql, max_prepared_statements=mps):
                self.use_max_prepared_statements(mps)
                deallocate_forgets(self, sql, name)


class TestStatementMode(NotifyCase):
    MODE = "statement"

    def test_fan_out(self):
        a, b = login(self, self.px), login(self, self.px)
        self.listen(a, "listen pgw_stmt")
        self.listen(b, "listen pgw_stmt")
        self.notify("pgw_stmt", "s")
        for c in (a, b):
            self.assertEqual([x[1:] for x in read_notifications(c, 1)], [("pgw_stmt", "s")])


    def test_prepared_listen_bound_in_a_later_request(self):
        # Prepared in a batch with another statement (a server has it, as
        # pgwharf's), bound alone in a later request: the hub takes it.
        a = login(self, self.px)
        a.sendall(hz.parse_msg("s_stmt", "listen pgw_stmt_later") +
                  hz.ext_msgs("select 1", describe=False))
        self.assertEqual([t for t, _ in hz.read_until_ready(a)], [b"1", b"1", b"2", b"D", b"C",
                                                                  b"Z"])
        a.sendall(bind_exec("s_stmt"))
        self.assertEqual([t for t, _ in hz.read_until_ready(a)], [b"2", b"C", b"Z"])
        w = login(self, self.px)
        self.listen(w, "listen pgw_stmt_later")
        self.notify("pgw_stmt_later", "s")
        for c in (w, a):
            self.assertEqual([x[1:] for x in read_notifications(c, 1)],
                             [("pgw_stmt_later", "s")])

class TestPoolOfOne(pt.PgwharfTestCase):
    def test_listen_runs_on_the_clients_server(self):
        # With one server there is none to spare for listening: LISTEN goes
        # to the client's server as before and the pool stays usable.
        px = self.start_pgwharf(settings={"pool_mode": "transaction", "default_pool_size": 1})
        a, b = login(self, px), login(self, px)
        self.assertEqual(hz.simple_query(a, "listen pgw_one"), ([], []))
        self.assertEqual(hz.simple_query(b, "select 2"), ([[b"2"]], []))

    def test_a_reserve_turned_off_is_no_room(self):
        # reserve_pool_timeout = 0 turns the reserve off (as PgBouncer): a
        # pool of one plus that reserve is a pool of one, and a listening
        # server there would leave the clients' queries none.
        px = self.start_pgwharf(settings={"pool_mode": "transaction", "default_pool_size": 1,
                                          "reserve_pool_size": 1, "reserve_pool_timeout": 0,
                                          "query_wait_timeout": 5})
        a, b = login(self, px), login(self, px)
        self.assertEqual(hz.simple_query(a, "listen pgw_one"), ([], []))
        self.assertEqual(hz.simple_query(b, "select 2"), ([[b"2"]], []))

    def test_max_user_connections_of_one(self):
        # pool_size 3, but the user may have one server: listening on it
        # left the clients' queries none (query_wait_timeout).
        px = self.start_pgwharf(settings={"pool_mode": "transaction", "default_pool_size": 3,
                                          "max_user_connections": 1, "query_wait_timeout": 5})
        a, b = login(self, px), login(self, px)
        self.assertEqual(hz.simple_query(a, "listen pgw_one"), ([], []))
        self.assertEqual(hz.simple_query(b, "select 2"), ([[b"2"]], []))

    def test_max_db_connections_shared_by_two_pools(self):
        # Two users' pools of one database under max_db_connections = 2:
        # the second pool's listening server took the last one and no
        # query of either pool got a server.
        px = self.start_pgwharf(settings={"pool_mode": "transaction", "default_pool_size": 3,
                                          "max_db_connections": 2, "query_wait_timeout": 5})
        a = login(self, px)
        b = login_app_user(self, px)
        self.assertEqual(hz.simple_query(a, "listen pgw_two"), ([], []))
        self.assertEqual(hz.simple_query(b, "listen pgw_two"), ([], []))
        self.assertEqual(hz.simple_query(b, "select 2"), ([[b"2"]], []))
        self.assertEqual(hz.simple_query(a, "select 3"), ([[b"3"]], []))
        # (b's own server, where its LISTEN ran, closed: its backend may
        # still be leaving.)
        pt.wait_until(lambda: int(self.pg.psql(
            "select count(*) from pg_stat_activity where query ilike 'listen%%' and "
            "datname = '%s'" % self.pg.database)) == 1, 20, what="one listening backend")

    def test_an_unlisten_through_the_extended_protocol_makes_no_hub(self):
        # A prepared UNLISTEN answered by pgwharf made the pool's hub (to
        # keep the statement), and a LISTEN after it found a hub and took
        # the pool's one server for it: other clients' queries waited.
        px = self.start_pgwharf(settings={"pool_mode": "transaction", "default_pool_size": 1,
                                          "query_wait_timeout": 5})
        a, b = login(self, px), login(self, px)
        a.sendall(hz.ext_msgs("unlisten pgw_one"))
        self.assertEqual([t for t, _ in hz.read_until_ready(a)], [b"1", b"2", b"n", b"C", b"Z"])
        self.assertEqual(hz.simple_query(a, "listen pgw_one"), ([], []))
        self.assertEqual(hz.simple_query(b, "select 2"), ([[b"2"]], []))
        self.assertEqual(hz.simple_query(a, "select 1"), ([[b"1"]], []))
        self.assertNotIn("event=notify_", px.log())


def hub_waits(px, db):
    """SHOW POOLS maxwait of db's pool is above 0 (the hub waits)."""
    pool = px.show("POOLS", database=db)[0]
    return int(pool["maxwait_us"]) > 0 or int(pool["maxwait"]) > 0


class TestCancelWhileTheHubWaits(pt.PgwharfTestCase):
    def test_cancel_of_a_listen_waiting_for_the_hubs_server(self):
        # Both servers of the pool are held: the hub waits in the pool's
        # queue with the client's LISTEN.  A cancel (psql's ^C) was ignored
        # ("no query in progress") and the client waited until a server
        # came; now its LISTEN ends with 57014 and it stays.
        px = self.start_pgwharf(settings={"pool_mode": "transaction", "default_pool_size": 2,
                                          "query_wait_timeout": 120})
        holders = [login(self, px) for _ in range(2)]
        for h in holders:
            self.assertEqual(hz.simple_query(h, "begin"), ([], []))
        keys = []
        c = socket.create_connection((px.host, px.port), timeout=30)
        self.addCleanup(c.close)
        hz.sync_login(c, self.pg.user, self.pg.database, self.pg.password, key_data=keys)
        c.sendall(hz.query_msg("listen pgw_canceled"))
        # The hub's wait for a server is the pool's only one.
        pt.wait_until(lambda: hub_waits(px, self.pg.database), 20, what="the hub waiting")
        k = socket.create_connection((px.host, px.port), timeout=30)
        k.sendall(struct.pack("!IIII", 16, 80877102, keys[0][0], keys[0][1]))
        hz.read_until_closed(k, 10)
        k.close()
        got = hz.read_until_ready(c)
        self.assertEqual([t for t, _ in got], [b"E", b"Z"], got)
        self.assertEqual(hz.parse_fields(got[0][1])["C"], "57014")
        px.wait_for_log("event=cancel_waiting")
        for h in holders:
            self.assertEqual(hz.simple_query(h, "commit"), ([], []))
        # It listens to nothing: a LISTEN of another channel after it gets
        # that one's notification and never the canceled one's.
        self.assertEqual(hz.simple_query(c, "listen pgw_kept"), ([], []))
        self.pg.psql("select pg_notify('pgw_canceled', 'no'), pg_notify('pgw_kept', 'yes')")
        self.assertEqual([n[1:] for n in read_notifications(c, 1)], [("pgw_kept", "yes")])
        self.assertEqual(hz.simple_query(c, "select 1"), ([[b"1"]], []))

    def test_a_listen_waiting_for_the_hubs_server_counts_as_waiting(self):
        # Its LISTEN not sent yet (the hub has no server: both of the pool's
        # are held), the client waits for a server as any other: it showed
        # as idle in SHOW CLIENTS, with no wait, and in SHOW POOLS (and the
        # metrics) as cl_active, not cl_waiting.
        import re
        import urllib.request
        px = self.start_pgwharf(settings={"pool_mode": "transaction", "default_pool_size": 2,
                                          "query_wait_timeout": 120, "metrics_port": "auto"})

        def metric(name):
            url = "http://127.0.0.1:%d/metrics" % int(px.settings["metrics_port"])
            with urllib.request.urlopen(url, timeout=10) as r:
                body = r.read().decode()
            return int(re.search(r'^%s\{[^}]*\} (\d+)$' % name, body, re.M).group(1))
        holders = [login(self, px) for _ in range(2)]
        for h in holders:
            self.assertEqual(hz.simple_query(h, "begin"), ([], []))
        c = login(self, px)
        port = c.getsockname()[1]

        def row():
            return [r for r in px.show("CLIENTS") if int(r["port"]) == port][0]
        c.sendall(hz.query_msg("listen pgw_waits"))
        pt.wait_until(lambda: hub_waits(px, self.pg.database), 20, what="the hub waiting")
        self.assertEqual(row()["state"], "waiting")
        pt.wait_until(lambda: int(row()["wait_us"]) > 0 or int(row()["wait"]) > 0, 20,
                      what="its wait counted")
        pool = px.show("POOLS", database=self.pg.database)[0]
        self.assertEqual((int(pool["cl_active"]), int(pool["cl_waiting"])), (2, 1))
        self.assertEqual(metric("pgwharf_pool_client_waiting"), 1)
        self.assertEqual(metric("pgwharf_pool_client_active"), 2)
        self.assertEqual([r["state"] for r in px.show("SOCKETS")
                          if r["type"] == "C" and int(r["port"]) == port], ["cl_waiting"])
        self.assertEqual(hz.simple_query(holders[0], "commit"), ([], []))
        self.assertEqual([t for t, _ in hz.read_until_ready(c)], [b"C", b"Z"])
        self.assertEqual((row()["state"], int(row()["wait"]), int(row()["wait_us"])),
                         ("idle", 0, 0))
        pool = px.show("POOLS", database=self.pg.database)[0]
        self.assertEqual((int(pool["cl_active"]), int(pool["cl_waiting"])), (3, 0))
        self.assertEqual(metric("pgwharf_pool_client_waiting"), 0)
        self.assertEqual(hz.simple_query(holders[1], "commit"), ([], []))


class CommitHeldCase(pt.PgwharfTestCase):
    """A transaction's LISTEN (BEGIN; LISTEN; COMMIT: psycopg2's and
    psycopg 3's default) on a pool whose hub has no server yet: the
    COMMIT's ReadyForQuery went out at once, while the hub still waited
    for a server, and what was committed after the COMMIT returned and
    before the hub listened was lost (PostgreSQL delivers all of it).  Now
    that ReadyForQuery, and all behind it, waits until the hub's server
    listens on the channel; when the hub cannot listen the client gets the
    error a lone LISTEN gets."""

    CHAN = "pgw_tx_gap"

    def setUp(self):
        super().setUp()
        settings = {
            "pool_mode": "transaction", "default_pool_size": 2,
            # (no NOTICE for the held client's wait, which query_wait_notify
            # sends it as to a queued one)
            "query_wait_notify": 0,
            "query_wait_timeout": getattr(self, "QUERY_WAIT", 120)}
        if hasattr(self, "BRIDGE_TIMEOUT"):
            settings["notify_bridge_timeout"] = self.BRIDGE_TIMEOUT
        settings.update(getattr(self, "LIMITS", {}))
        self.px = self.start_pgwharf(settings=settings, databases=self.databases())

    def databases(self):
        """[databases] (None: the harness's own)."""
        return None

    def two_in_transactions(self):
        """b and l (a raw socket) each in a transaction, holding the
        pool's two servers; (b, l, keys of l)."""
        b = login(self, self.px)
        self.assertEqual(hz.simple_query(b, "begin"), ([], []))
        keys = []
        l = socket.create_connection((self.px.host, self.px.port), timeout=30)
        self.addCleanup(l.close)
        hz.sync_login(l, self.pg.user, self.pg.database, self.pg.password, key_data=keys)
        self.assertEqual(hz.simple_query(l, "begin"), ([], []))
        return b, l, keys

    def fill_the_pool(self):
        """b holds one server, l (in a transaction) the other; c's
        transaction waits in the queue, ahead of the hub: once l's server
        goes back, b and c hold the pool's two and the hub waits.  (b, l,
        keys of l, c.)"""
        b, l, keys = self.two_in_transactions()
        c = login(self, self.px)
        c.sendall(hz.query_msg("begin"))
        pt.wait_until(lambda: int(self.px.show("POOLS", database=self.pg.database)[0]
                                  ["cl_waiting"]) == 1, 20, what="c queued")
        return b, l, keys, c

    def state(self, sock):
        return self.client_row(sock)["state"]

    def ptr(self, sock):
        return self.client_row(sock)["ptr"]

    def client_row(self, sock):
        port = sock.getsockname()[1]
        return [r for r in self.px.show("CLIENTS") if int(r["port"]) == port][0]

    def hub_listens(self):
        pt.wait_until(lambda: int(self.pg.psql(
            "select count(*) from pg_stat_activity where query = 'LISTEN \"%s\"' "
            "and state = 'idle'" % self.CHAN)) == 1, 20, what="the hub listening")

    def commit_sent(self, l, c):
        """l's LISTEN and COMMIT; c gets the server l gave back."""
        self.assertEqual(hz.simple_query(l, "listen " + self.CHAN), ([], []))
        l.sendall(hz.query_msg("commit"))
        self.assertEqual([t for t, _ in hz.read_until_ready(c)], [b"C", b"Z"])


    def delivered_after_the_end(self, b, l, c, first, rest):
        """l's transaction ended (its server went to c; l gets the messages
        `first`, and `rest` from the ReadyForQuery that ends it on: at once
        before the fix, else once the hub listens, after b gave its server
        back): a notification committed after that reaches l."""
        l.settimeout(20)
        self.assertEqual([hz.recv_msg(l) for _ in first], first)
        # What is left comes (before the fix: at once), or waits for the
        # hub (SHOW CLIENTS: waiting for a server): then the hub gets b's
        # server.
        pt.wait_until(lambda: not nothing_to_read(l) or self.state(l) == "waiting", 20,
                      what="the transaction's end answered or held")
        held = nothing_to_read(l)
        if held:
            self.assertEqual(hz.simple_query(b, "commit"), ([], []))
        got = []
        for _ in range(sum(t == b"Z" for t, _ in rest)):
            got += hz.read_until_ready(l)
        self.assertEqual(got, rest)
        # Committed after the transaction's end returned: PostgreSQL
        # delivers it.
        self.pg.psql("select pg_notify('%s', 'after')" % self.CHAN)
        if not held:
            self.assertEqual(hz.simple_query(b, "commit"), ([], []))
        self.hub_listens()
        self.pg.psql("select pg_notify('%s', 'marker')" % self.CHAN)
        got = []
        while not got or got[-1] != (self.CHAN, "marker"):     # in commit order
            got += [n[1:] for n in read_notifications(l, 1)]
        self.assertEqual(got, [(self.CHAN, "after"), (self.CHAN, "marker")])
        self.assertEqual(hz.simple_query(c, "commit"), ([], []))
        self.assertEqual(hz.simple_query(l, "select 1"), ([[b"1"]], []))


class TestCommitWaitsForTheHub(CommitHeldCase):
    def test_notifications_after_the_commit_returned_are_delivered(self):
        b, l, _, c = self.fill_the_pool()
        self.commit_sent(l, c)
        self.delivered_after_the_end(b, l, c, [(b"C", b"COMMIT\x00")], [(b"Z", b"I")])

    def test_a_notification_committed_while_held_is_delivered(self):
        # Committed by another session after l's COMMIT (its server listens
        # from there on), before the hub listens (it waits for a server,
        # b's, behind c): PostgreSQL delivers it to l after the COMMIT's
        # ReadyForQuery.  It was lost (pinned in session 48): l's server,
        # which listened, was closed when given back, and the hub's own
        # LISTEN had not run.  That server now stays (the bridge) until the
        # hub listens, and its copy is l's.
        b, l, _, c = self.fill_the_pool()
        self.commit_sent(l, c)
        l.settimeout(20)
        self.assertEqual(hz.recv_msg(l), (b"C", b"COMMIT\x00"))
        pt.wait_until(lambda: self.state(l) == "waiting", 20, what="l held")
        self.pg.psql("select pg_notify('%s', 'between')" % self.CHAN)
        self.assertTrue(nothing_to_read(l))
        self.assertEqual(hz.simple_query(b, "commit"), ([], []))
        self.assertEqual(hz.recv_msg(l), (b"Z", b"I"))
        self.hub_listens()
        self.pg.psql("select pg_notify('%s', 'marker')" % self.CHAN)
        got = []
        while not got or got[-1] != (self.CHAN, "marker"):     # in commit order
            got += [n[1:] for n in read_notifications(l, 1)]
        self.assertEqual(got, [(self.CHAN, "between"), (self.CHAN, "marker")])
        self.assertEqual(hz.simple_query(c, "commit"), ([], []))

    def test_commit_and_chain(self):
        # The ReadyForQuery that ends the chain waits the same (a COMMIT
        # sent behind COMMIT AND CHAIN ends the chained transaction at
        # once); COMMIT AND CHAIN's own ('T') goes at once: the client is
        # in a transaction, to which PostgreSQL sends nothing (session 47).
        b, l, _, c = self.fill_the_pool()
        self.assertEqual(hz.simple_query(l, "listen " + self.CHAN), ([], []))
        l.sendall(hz.query_msg("commit and chain") + hz.query_msg("commit"))
        self.assertEqual([t for t, _ in hz.read_until_ready(c)], [b"C", b"Z"])
        self.delivered_after_the_end(b, l, c, [(b"C", b"COMMIT\x00"), (b"Z", b"T"),
                                               (b"C", b"COMMIT\x00")], [(b"Z", b"I")])

    def test_an_implicit_transaction(self):
        # Statements through the extended protocol up to one Sync are one
        # implicit transaction: its LISTEN's is the Sync's ReadyForQuery.
        # (A Flush after the first keeps l's server while c queues, ahead
        # of the hub, which the LISTEN kicks.)
        b = login(self, self.px)
        self.assertEqual(hz.simple_query(b, "begin"), ([], []))
        l = login(self, self.px)
        l.sendall(hz.ext_msgs("select 1")[:-5] + hz.msg(b"H"))     # (no Sync: a Flush)
        l.settimeout(20)
        self.assertEqual([hz.recv_msg(l)[0] for _ in range(5)], [b"1", b"2", b"T", b"D", b"C"])
        c = login(self, self.px)
        c.sendall(hz.query_msg("begin"))
        pt.wait_until(lambda: int(self.px.show("POOLS", database=self.pg.database)[0]
                                  ["cl_waiting"]) == 1, 20, what="c queued")
        l.sendall(hz.ext_msgs("listen " + self.CHAN))
        self.assertEqual([t for t, _ in hz.read_until_ready(c)], [b"C", b"Z"])
        self.delivered_after_the_end(b, l, c, [(b"1", b""), (b"2", b""), (b"n", b""),
                                               (b"C", b"LISTEN\x00")], [(b"Z", b"I")])

    def test_what_the_client_sent_behind_the_commit_comes_after_it(self):
        # COMMIT and a query behind it, in one write: the query's answer
        # waits behind the held ReadyForQuery, in the client's order.
        b, l, _, c = self.fill_the_pool()
        self.assertEqual(hz.simple_query(l, "listen " + self.CHAN), ([], []))
        l.sendall(hz.query_msg("commit") + hz.query_msg("select 2"))
        self.assertEqual([t for t, _ in hz.read_until_ready(c)], [b"C", b"Z"])
        pt.wait_until(lambda: self.state(l) == "waiting", 20, what="l waiting")
        self.assertEqual(hz.simple_query(b, "commit"), ([], []))
        self.hub_listens()
        self.assertEqual(hz.simple_query(c, "commit"), ([], []))     # a server for select 2
        got = hz.read_until_ready(l) + hz.read_until_ready(l)
        self.assertEqual([t for t, _ in got], [b"C", b"Z", b"T", b"D", b"C", b"Z"], got)
        self.pg.psql("select pg_notify('%s', 'heard')" % self.CHAN)
        self.assertEqual([n[1:] for n in read_notifications(l, 1)], [(self.CHAN, "heard")])

    def test_a_cancel_while_held_ends_the_wait_and_keeps_the_channel(self):
        # The hub waits for a server: a cancel (psql's ^C, a driver's
        # timeout) ends the wait.  The transaction committed, so no error
        # (a driver would report the COMMIT failed), and the channel stays
        # (review, session 46: it got 57014 and lost the channel).  Its own
        # server (the bridge) listens for it until the hub does, so nothing
        # is missed and no WARNING is due (TestWithoutABridge: there is).
        b, l, keys, c = self.fill_the_pool()
        self.commit_sent(l, c)
        pt.wait_until(lambda: self.state(l) == "waiting", 20, what="l waiting")
        k = socket.create_connection((self.px.host, self.px.port), timeout=30)
        k.sendall(struct.pack("!IIII", 16, 80877102, keys[0][0], keys[0][1]))
        hz.read_until_closed(k, 10)
        k.close()
        self.assertEqual(hz.read_until_ready(l), [(b"C", b"COMMIT\x00"), (b"Z", b"I")])
        self.px.wait_for_log("event=cancel_waiting")
        # Before the hub listens: from the bridge.
        self.pg.psql("select pg_notify('%s', 'gap')" % self.CHAN)
        self.assertEqual([n[1:] for n in read_notifications(l, 1)], [(self.CHAN, "gap")])
        self.assertEqual(hz.simple_query(b, "commit"), ([], []))
        self.hub_listens()
        self.pg.psql("select pg_notify('%s', 'kept')" % self.CHAN)
        self.assertEqual([n[1:] for n in read_notifications(l, 1)], [(self.CHAN, "kept")])
        self.assertEqual(hz.simple_query(c, "commit"), ([], []))

    def test_killed_while_held_gets_its_ready_for_query_first(self):
        # KILL: the transaction committed, so its ReadyForQuery goes out,
        # then the FATAL (not the FATAL alone, which reads as a COMMIT
        # that may have failed).
        b, l, _, c = self.fill_the_pool()
        self.commit_sent(l, c)
        pt.wait_until(lambda: self.state(l) == "waiting", 20, what="l waiting")
        self.px.admin("KILL " + self.pg.database)
        assert_ended(self, l, "57P01", "administrator command", before=(b"C", b"Z"))
        self.px.admin("RESUME " + self.pg.database)

    def test_a_rollback_does_not_wait(self):
        # Its LISTEN did not happen: nothing to wait for, though the hub
        # (kicked by the LISTEN) waits for a server.
        b, l, _, c = self.fill_the_pool()
        self.assertEqual(hz.simple_query(l, "listen " + self.CHAN), ([], []))
        l.sendall(hz.query_msg("rollback"))
        self.assertEqual([t for t, _ in hz.read_until_ready(c)], [b"C", b"Z"])
        self.assertEqual(hz.read_until_ready(l), [(b"C", b"ROLLBACK\x00"), (b"Z", b"I")])
        self.assertEqual(hz.simple_query(b, "commit"), ([], []))
        self.assertEqual(hz.simple_query(c, "commit"), ([], []))


    def test_through_the_extended_protocol(self):
        # LISTEN and COMMIT as Parse, Bind, Execute, Sync: the Sync's
        # ReadyForQuery waits.
        b, l, _, c = self.fill_the_pool()
        l.sendall(hz.ext_msgs("listen " + self.CHAN))
        self.assertEqual([t for t, _ in hz.read_until_ready(l)], [b"1", b"2", b"n", b"C", b"Z"])
        l.sendall(hz.ext_msgs("commit"))
        self.assertEqual([t for t, _ in hz.read_until_ready(c)], [b"C", b"Z"])
        pt.wait_until(lambda: self.state(l) == "waiting", 20, what="l waiting")
        self.assertEqual(hz.simple_query(b, "commit"), ([], []))
        got = hz.read_until_ready(l)
        self.assertEqual([t for t, _ in got], [b"1", b"2", b"n", b"C", b"Z"], got)
        self.assertEqual(got[-1][1], b"I")
        self.pg.psql("select pg_notify('%s', 'heard')" % self.CHAN)
        self.assertEqual([n[1:] for n in read_notifications(l, 1)], [(self.CHAN, "heard")])
        self.assertEqual(hz.simple_query(c, "commit"), ([], []))

    def test_psycopg2_outside_autocommit(self):
        # The driver's default (what the hunt's repro ran): conn.commit()
        # returns once the hub listens; what is committed after it
        # reaches the client.
        import psycopg2
        b = login(self, self.px)
        self.assertEqual(hz.simple_query(b, "begin"), ([], []))
        conn = psycopg2.connect(self.px.dsn())
        self.addCleanup(conn.close)
        conn.cursor().execute("select 1")            # BEGIN: holds the other server
        c = login(self, self.px)
        c.sendall(hz.query_msg("begin"))
        pt.wait_until(lambda: int(self.px.show("POOLS", database=self.pg.database)[0]
                                  ["cl_waiting"]) == 1, 20, what="c queued")
        conn.cursor().execute("LISTEN " + self.CHAN)
        sock = socket.socket(fileno=os.dup(conn.fileno()))
        port = sock.getsockname()[1]
        sock.detach()
        returned = threading.Event()

        def commit():
            conn.commit()
            self.pg.psql("select pg_notify('%s', 'after')" % self.CHAN)
            returned.set()
        t = threading.Thread(target=commit)
        t.start()
        self.addCleanup(t.join, 30)
        self.assertEqual([t for t, _ in hz.read_until_ready(c)], [b"C", b"Z"])

        def state():
            return [r for r in self.px.show("CLIENTS") if int(r["port"]) == port][0]["state"]
        pt.wait_until(lambda: returned.is_set() or state() == "waiting", 20,
                      what="the COMMIT returned or held")
        self.assertEqual(hz.simple_query(b, "commit"), ([], []))
        self.assertTrue(returned.wait(20), "the COMMIT did not return")
        self.hub_listens()
        self.pg.psql("select pg_notify('%s', 'marker')" % self.CHAN)
        got = []

        def marker():
            conn.poll()
            while conn.notifies:
                n = conn.notifies.pop(0)
                got.append(n.payload)
            return "marker" in got
        pt.wait_until(marker, 20, what="the marker")
        self.assertEqual(got, ["after", "marker"])
        self.assertEqual(hz.simple_query(c, "commit"), ([], []))


class TestWithoutABridge(CommitHeldCase):
    """notify_bridge_timeout = 0 turns the bridges off: the server a
    committed LISTEN ran on is closed when given back, as before."""
    BRIDGE_TIMEOUT = 0

    def test_a_notification_committed_while_held_is_lost(self):
        # The known gap the bridge closes (README "LISTEN/NOTIFY in
        # transaction and statement mode"): committed after l's COMMIT,
        # before the hub listens, it reaches no server that listens for l.
        b, l, _, c = self.fill_the_pool()
        self.commit_sent(l, c)
        l.settimeout(20)
        self.assertEqual(hz.recv_msg(l), (b"C", b"COMMIT\x00"))
        pt.wait_until(lambda: self.state(l) == "waiting", 20, what="l held")
        self.assertEqual(len(self.px.show("SERVERS", database=self.pg.database)), 2)
        self.pg.psql("select pg_notify('%s', 'between')" % self.CHAN)
        self.assertEqual(hz.simple_query(b, "commit"), ([], []))
        self.assertEqual(hz.recv_msg(l), (b"Z", b"I"))
        self.hub_listens()
        self.pg.psql("select pg_notify('%s', 'marker')" % self.CHAN)
        self.assertEqual([n[1:] for n in read_notifications(l, 1)], [(self.CHAN, "marker")])
        self.assertEqual(hz.simple_query(c, "commit"), ([], []))

    def test_a_cancel_while_held_gives_a_warning_and_keeps_the_channel(self):
        # The hub waits for a server: a cancel (psql's ^C, a driver's
        # timeout) ends the wait.  The transaction committed, so no error
        # (a driver would report the COMMIT failed): a WARNING before the
        # ReadyForQuery, and the channel is listened on once the hub has
        # its server (review, session 46: it got 57014 and lost the
        # channel).
        b, l, keys, c = self.fill_the_pool()
        self.commit_sent(l, c)
        pt.wait_until(lambda: self.state(l) == "waiting", 20, what="l waiting")
        k = socket.create_connection((self.px.host, self.px.port), timeout=30)
        k.sendall(struct.pack("!IIII", 16, 80877102, keys[0][0], keys[0][1]))
        hz.read_until_closed(k, 10)
        k.close()
        got = hz.read_until_ready(l)
        self.assertEqual([t for t, _ in got], [b"C", b"N", b"Z"], got)
        f = hz.parse_fields(got[1][1])
        self.assertEqual((f["S"], f["C"]), ("WARNING", "01000"), f)
        self.assertEqual(got[2][1], b"I")
        self.px.wait_for_log("event=cancel_waiting")
        self.assertEqual(hz.simple_query(b, "commit"), ([], []))
        self.hub_listens()
        self.pg.psql("select pg_notify('%s', 'kept')" % self.CHAN)
        self.assertEqual([n[1:] for n in read_notifications(l, 1)], [(self.CHAN, "kept")])
        self.assertEqual(hz.simple_query(c, "commit"), ([], []))



def backend_alive(pg, pid):
    return int(pg.psql("select count(*) from pg_stat_activity where pid = %d" % pid)) == 1


class TestTheBridge(CommitHeldCase):
    """The server a committed LISTEN ran on stays (the bridge), out of
    pool_size, listening for its client until the hub's server listens on
    the channel; the two hand over at a marker notification that both get,
    so that each notification reaches the client once, in commit order."""

    def held_with_a_bridge(self):
        """fill_the_pool; l's LISTEN committed, its ReadyForQuery held:
        (b, l, c, the bridge's backend PID)."""
        b, l, _, c = self.fill_the_pool()
        pid = int(hz.simple_query(l, "select pg_backend_pid()")[0][0][0])
        self.commit_sent(l, c)
        l.settimeout(20)
        self.assertEqual(hz.recv_msg(l), (b"C", b"COMMIT\x00"))
        pt.wait_until(lambda: self.state(l) == "waiting", 20, what="l held")
        return b, l, c, pid

    def stop(self, pid):
        os.kill(pid, signal.SIGSTOP)

        def cont():
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        self.addCleanup(cont)
        return cont

    def heard(self, sock, last):
        """sock's notifications of CHAN up to the one whose payload is last
        (its ReadyForQuery, held, may come among them)."""
        got = []
        sock.settimeout(20)
        while not got or got[-1] != last:
            t, body = hz.recv_msg(sock)
            if t == b"Z":
                continue
            self.assertEqual(t, b"A", body)
            chan, payload = notification(body)[1:]
            self.assertEqual(chan, self.CHAN)
            got.append(payload)
        return got

    def test_no_notification_twice_around_the_hubs_listen(self):
        # Committed before the hub listens (the bridge's alone), after its
        # LISTEN and before the marker (the bridge's backend, stopped, has
        # not run it: both servers have it), and after the hand-over (the
        # hub's): each once, in order.
        b, l, c, pid = self.held_with_a_bridge()
        cont = self.stop(pid)
        self.pg.psql("select pg_notify('%s', 'before')" % self.CHAN)
        self.assertEqual(hz.simple_query(b, "commit"), ([], []))
        self.assertEqual(hz.recv_msg(l), (b"Z", b"I"))          # the hub listens
        self.hub_listens()
        self.pg.psql("select pg_notify('%s', 'between')" % self.CHAN)
        cont()
        self.assertEqual(self.heard(l, "between"), ["before", "between"])
        pt.wait_until(lambda: not backend_alive(self.pg, pid), 20, what="the bridge closed")
        self.pg.psql("select pg_notify('%s', 'after')" % self.CHAN)
        self.pg.psql("select pg_notify('%s', 'end')" % self.CHAN)
        self.assertEqual(self.heard(l, "end"), ["after", "end"])
        self.assertTrue(nothing_to_read(l))
        self.assertEqual(hz.simple_query(c, "commit"), ([], []))
        self.assertEqual(hz.simple_query(l, "select 1"), ([[b"1"]], []))
        self.assertNotIn("event=notify_bridge_lost", self.px.log())

    def test_commit_order_through_the_hand_over(self):
        # A session commits numbered notifications, one a transaction, from
        # l's commit on, through the hand-over (the markers come in either
        # order) and past it: l gets each once, in order.
        import psycopg2
        b, l, c, pid = self.held_with_a_bridge()
        stop, sent, failed = threading.Event(), [0], []

        def notifier():
            try:
                conn = psycopg2.connect(self.pg.dsn())
                conn.autocommit = True
                cur = conn.cursor()
                while not stop.is_set() and sent[0] < 20000:
                    cur.execute("select pg_notify(%s, %s)", (self.CHAN, str(sent[0] + 1)))
                    sent[0] += 1
                conn.close()
            except Exception as e:        # (seen by the test)
                failed.append(e)
        t = threading.Thread(target=notifier)
        t.start()
        self.addCleanup(t.join, 30)
        self.addCleanup(stop.set)
        pt.wait_until(lambda: sent[0] >= 20 or failed, 20, what="notifications before the hub")
        self.assertEqual(hz.simple_query(b, "commit"), ([], []))
        pt.wait_until(lambda: not backend_alive(self.pg, pid), 20, what="the hand-over")
        n0 = sent[0]
        pt.wait_until(lambda: sent[0] >= n0 + 20 or failed, 20, what="notifications after it")
        stop.set()
        t.join(30)
        self.assertEqual(failed, [])
        self.assertLess(sent[0], 20000)
        self.assertEqual(self.heard(l, str(sent[0])), [str(i) for i in range(1, sent[0] + 1)])
        self.assertTrue(nothing_to_read(l))
        self.assertEqual(hz.simple_query(c, "commit"), ([], []))
        self.assertNotIn("event=notify_bridge_lost", self.px.log())

    def test_the_bridge_is_out_of_pool_size(self):
        # The pool's two servers are b's and c's (the bridge's room went to
        # c) and the hub waits for one of them: the bridge is one more
        # connection, shown in SHOW SERVERS (state bridge, linked to its
        # client), not in SHOW POOLS.  It goes at the hand-over.
        b, l, c, pid = self.held_with_a_bridge()
        pool = self.px.show("POOLS", database=self.pg.database)[0]
        self.assertEqual([int(pool[k]) for k in ("sv_active", "sv_idle", "sv_used",
                                                  "sv_tested", "sv_login")], [2, 0, 0, 0, 0])
        self.assertEqual(int(pool["cl_waiting"]), 1)            # l (the hub's wait)
        rows = self.px.show("SERVERS", database=self.pg.database)
        self.assertEqual(len(rows), 3)
        bridge = [r for r in rows if int(r["remote_pid"]) == pid]
        self.assertEqual([(r["state"], r["link"]) for r in bridge], [("bridge", self.ptr(l))])
        self.assertTrue(all(backend_alive(self.pg, int(r["remote_pid"])) for r in rows))
        self.assertEqual(hz.simple_query(b, "commit"), ([], []))
        self.assertEqual(hz.recv_msg(l), (b"Z", b"I"))
        pt.wait_until(lambda: not backend_alive(self.pg, pid), 20, what="the hand-over")
        self.assertEqual(len(self.px.show("SERVERS", database=self.pg.database)), 2)
        self.assertEqual(hz.simple_query(c, "commit"), ([], []))
        self.assertEqual(hz.simple_query(l, "select 1"), ([[b"1"]], []))

    def test_a_client_leaving_ends_its_bridge(self):
        # Its stream ends while it waits: it gets its ReadyForQuery (nothing
        # reaches it after that, as PostgreSQL ends the session) and leaves;
        # its bridge is closed.
        b, l, c, pid = self.held_with_a_bridge()
        self.assertEqual(len(self.px.show("SERVERS", database=self.pg.database)), 3)
        l.close()
        pt.wait_until(lambda: not backend_alive(self.pg, pid), 20, what="the bridge closed")
        self.assertEqual(len(self.px.show("SERVERS", database=self.pg.database)), 2)
        self.assertEqual(hz.simple_query(b, "commit"), ([], []))
        self.assertEqual(hz.simple_query(c, "commit"), ([], []))
        # The pool goes on; its listening server too.
        d = login(self, self.px)
        self.assertEqual(hz.simple_query(d, "listen " + self.CHAN), ([], []))
        self.pg.psql("select pg_notify('%s', 'heard')" % self.CHAN)
        self.assertEqual([n[1:] for n in read_notifications(d, 1)], [(self.CHAN, "heard")])
        self.assertNotIn("event=notify_bridge_lost", self.px.log())

    def test_its_server_terminated_ends_the_client(self):
        # Its own server, listening for it, is gone before the hub listens:
        # what was committed meanwhile may be lost, as when the listening
        # server is lost.  It gets its ReadyForQuery (the commit stands),
        # then FATAL 08006, and reconnects to LISTEN again.
        b, l, c, pid = self.held_with_a_bridge()
        self.pg.psql("select pg_terminate_backend(%d)" % pid)
        f = assert_ended(self, l, "08006", LOST, before=(b"Z",))
        self.assertIn("terminating connection due to administrator command", f["M"])
        self.px.wait_for_log("event=notify_bridge_lost")
        self.assertEqual(len(self.px.show("SERVERS", database=self.pg.database)), 2)
        self.assertEqual(hz.simple_query(b, "commit"), ([], []))
        self.assertEqual(hz.simple_query(c, "commit"), ([], []))


    def test_a_shutdown_closes_the_bridge(self):
        # SIGQUIT (SHUTDOWN): every client and server closed at once, the
        # bridge too; its client gets its ReadyForQuery (its COMMIT stands),
        # then FATAL 57P01; pgwharf exits 0 (under ASan: nothing leaked).
        b, l, c, pid = self.held_with_a_bridge()
        self.assertEqual(self.px.stop(signal.SIGQUIT), 0)
        assert_ended(self, l, "57P01", "", before=(b"Z",))
        pt.wait_until(lambda: not backend_alive(self.pg, pid), 20, what="the bridge closed")


class TestABridgeThatTimesOut(CommitHeldCase):
    BRIDGE_TIMEOUT = 1

    def test_its_client_is_ended(self):
        # The hub gets no server within notify_bridge_timeout (b keeps its
        # transaction open): the bridge is closed, and its client, which
        # may miss notifications from then on, is ended (08006) after its
        # ReadyForQuery.
        b, l, _, c = self.fill_the_pool()
        pid = int(hz.simple_query(l, "select pg_backend_pid()")[0][0][0])
        self.commit_sent(l, c)
        f = assert_ended(self, l, "08006", LOST, before=(b"C", b"Z"))
        self.assertIn("notify_bridge_timeout", f["M"])
        self.px.wait_for_log("event=notify_bridge_lost")
        self.assertIn("reason=notify_bridge_timeout", self.px.log())
        pt.wait_until(lambda: not backend_alive(self.pg, pid), 20, what="the bridge closed")
        self.assertEqual(hz.simple_query(b, "commit"), ([], []))
        self.assertEqual(hz.simple_query(c, "commit"), ([], []))


class TestBridgesShown(CommitHeldCase):
    """A bridge looked exactly like the hub's server in SHOW SERVERS
    (active, no link) and no metric counted bridges (review r1).  Now its
    state is bridge and its link its client's; /metrics has
    pgwharf_pool_notify_bridges per pool."""
    LIMITS = {"metrics_port": "auto"}

    held_with_a_bridge = TestTheBridge.held_with_a_bridge
    stop = TestTheBridge.stop

    def bridges(self):
        return self.px.metric("pgwharf_pool_notify_bridges")

    def test_in_show_servers_and_metrics(self):
        b, l, c, pid = self.held_with_a_bridge()
        self.assertEqual(self.bridges(), 1)
        # The hub listens (b's server); the bridge's backend, stopped, has
        # not run its marker: both are there.
        cont = self.stop(pid)
        self.assertEqual(hz.simple_query(b, "commit"), ([], []))
        self.assertEqual(hz.recv_msg(l), (b"Z", b"I"))
        self.hub_listens()
        rows = self.px.show("SERVERS", database=self.pg.database)
        c_ptr = self.ptr(c)
        self.assertEqual(sorted((r["state"], r["link"]) for r in rows),
                         sorted([("active", ""), ("active", c_ptr), ("bridge", self.ptr(l))]))
        self.assertEqual([int(r["remote_pid"]) for r in rows if r["state"] == "bridge"], [pid])
        # The client's own row links to no server (it holds none); SHOW
        # POOLS counts the hub's and c's servers, not the bridge.
        self.assertEqual(self.client_row(l)["link"], "")
        pool = self.px.show("POOLS", database=self.pg.database)[0]
        self.assertEqual(int(pool["sv_active"]), 2)
        # SHOW SOCKETS: PgBouncer's list names, the bridge's as before.
        socks = [r for r in self.px.show("SOCKETS") if r["type"] == "S"
                 and r["database"] == self.pg.database]
        self.assertEqual(sorted(r["state"] for r in socks), ["sv_active"] * 3)
        self.assertEqual(self.bridges(), 1)
        cont()
        pt.wait_until(lambda: not backend_alive(self.pg, pid), 20, what="the hand-over")
        pt.wait_until(lambda: self.bridges() == 0, 20, what="the gauge back to 0")
        self.assertEqual(sorted(r["state"] for r in
                                self.px.show("SERVERS", database=self.pg.database)),
                         ["active", "active"])
        self.assertEqual(hz.simple_query(c, "commit"), ([], []))
        self.assertEqual(hz.simple_query(l, "select 1"), ([[b"1"]], []))


class OneWayRelay:
    """127.0.0.1 (a port of its own) relaying TCP to target.  freeze(p)
    stops passing on what PostgreSQL sends on the connection whose local
    port toward it (its backend's client_port) is p -- what pgwharf sends
    still goes through, so the backend runs it and its replies wait --
    until thaw(p).  freeze returns once that connection's relay stopped
    reading from PostgreSQL.  cut(p) closes that connection (both sides),
    what it held back unsent: pgwharf reads the end of its server."""

    def __init__(self, target):
        self.target = target
        self.lock = threading.Lock()
        self.frozen = {}                 # port -> Event set once it took effect
        self.cuts = {}                   # port -> Event set once it is closed
        self.closed = False
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        import selectors
        try:
            up = socket.create_connection(self.target)
        except OSError:
            c.close()
            return
        key = up.getsockname()[1]
        sel = selectors.DefaultSelector()
        sel.register(c, selectors.EVENT_READ, up)
        up_on = False
        try:
            while not self.closed:
                with self.lock:
                    frozen = self.frozen.get(key)
                    cut = self.cuts.get(key)
                if cut is not None:
                    return
                if frozen is not None and up_on:
                    sel.unregister(up)
                    up_on = False
                elif frozen is None and not up_on:
                    sel.register(up, selectors.EVENT_READ, c)
                    up_on = True
                if frozen is not None:
                    frozen.set()
                # (the timeout only to see freeze, thaw and close)
                for k, _ in sel.select(0.1):
                    data = k.fileobj.recv(65536)
                    if not data:
                        return
                    k.data.sendall(data)
        except OSError:
            pass
        finally:
            sel.close()
            up.close()
            c.close()
            with self.lock:
                if key in self.cuts:
                    self.cuts[key].set()

    def freeze(self, port):
        took = threading.Event()
        with self.lock:
            self.frozen[port] = took
        if not took.wait(20):
            raise AssertionError("no relayed connection from port %d" % port)

    def thaw(self, port):
        with self.lock:
            self.frozen.pop(port, None)

    def cut(self, port):
        done = threading.Event()
        with self.lock:
            self.cuts[port] = done
        if not done.wait(20):
            raise AssertionError("no relayed connection from port %d" % port)

    def close(self):
        self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


class TestABridgesMarkerHeldBack(CommitHeldCase):
    """The hub's marker comes before the bridge's (a relay holds back what
    the bridge's backend sends): the hub's copies after its marker wait
    for the bridge's, up to max_notify_backlog.  Past that bound the
    client got its ReadyForQuery and FATAL 54000 at once, none of what it
    was owed: the bridge's copies before its marker, and the hub's that
    had room (review r1).  Now it gets those, in commit order, then
    54000."""
    LIMITS = {"max_notify_backlog": 8192, "metrics_port": "auto"}

    def databases(self):
        self.relay = OneWayRelay((self.pg.host, int(self.pg.port)))
        self.addCleanup(self.relay.close)
        return {self.pg.database: "host=127.0.0.1 port=%d dbname=%s"
                % (self.relay.port, self.pg.database)}

    held_with_a_bridge = TestTheBridge.held_with_a_bridge

    def backend_port(self, pid):
        return int(self.pg.psql("select client_port from pg_stat_activity where pid = %d" % pid))

    def marker_ran(self, pid):
        """The bridge's backend ran its marker (LISTEN and NOTIFY of the
        hub's marker channel) and is idle again: committed."""
        return self.pg.psql("select count(*) from pg_stat_activity where pid = %d and "
                            "query like 'LISTEN \"pgw_hub_%%NOTIFY%%' and state = 'idle'"
                            % pid) == "1"

    def test_past_the_bound_it_gets_what_it_was_owed(self):
        b, l, c, pid = self.held_with_a_bridge()
        port = self.backend_port(pid)
        self.relay.freeze(port)
        self.pg.psql("select pg_notify('%s', 'bridge')" % self.CHAN)     # the bridge's alone
        self.assertEqual(hz.simple_query(b, "commit"), ([], []))           # to the hub
        self.assertEqual(hz.recv_msg(l), (b"Z", b"I"))                     # the hub listens
        pt.wait_until(lambda: self.marker_ran(pid), 20, what="the bridge's marker ran")
        # After both markers: the hub's copies, kept for the bridge's
        # marker; two of about 4 kB fit in 8192 bytes, the third does not.
        for i in range(3):
            self.pg.psql("select pg_notify('%s', repeat('x', 3990) || '%d')" % (self.CHAN, i))
        self.px.wait_for_log("event=notification_dropped", 20)
        self.relay.thaw(port)
        kept = ended_for_its_backlog(self, l)
        self.assertEqual([p if p == "bridge" else (p[:3990] == "x" * 3990, p[3990:])
                          for p in kept], ["bridge", (True, "0"), (True, "1")])
        self.assertEqual(self.px.metric("pgwharf_notifications_dropped_total"), 1)
        pt.wait_until(lambda: not backend_alive(self.pg, pid), 20, what="the bridge closed")
        self.assertNotIn("event=notify_bridge_lost", self.px.log())
        self.assertEqual(hz.simple_query(c, "commit"), ([], []))

    def past_the_bound(self):
        """held_with_a_bridge, the bridge's backend's replies held back by
        the relay: a notification the bridge's alone, then the markers ran,
        then three of about 4 kB after them, for 8192 bytes: the third
        dropped.  (b, l, c, pid, the bridge's port toward PostgreSQL.)"""
        b, l, c, pid = self.held_with_a_bridge()
        port = self.backend_port(pid)
        self.relay.freeze(port)
        self.pg.psql("select pg_notify('%s', 'bridge')" % self.CHAN)
        self.assertEqual(hz.simple_query(b, "commit"), ([], []))
        self.assertEqual(hz.recv_msg(l), (b"Z", b"I"))
        pt.wait_until(lambda: self.marker_ran(pid), 20, what="the bridge's marker ran")
        for i in range(3):
            self.pg.psql("select pg_notify('%s', repeat('x', 3990) || '%d')" % (self.CHAN, i))
        self.px.wait_for_log("event=notification_dropped", 20)
        return b, l, c, pid, port

    def test_its_bridge_lost_past_the_bound_ends_it_with_54000(self):
        # Past the bound (event=notification_dropped: 54000 once it has
        # read what it was owed), then the bridge is lost before its marker
        # came (its connection cut, 'bridge' with it): the client got FATAL
        # 08006, which the event never said (session 49's leftover).  Now
        # 54000, as past the bound anywhere, after what reached it: nothing
        # here -- x0 and x1, kept for the hand-over, come after the lost
        # 'bridge' in commit order, so they are dropped (counted) too.
        b, l, c, pid, port = self.past_the_bound()
        self.relay.cut(port)
        self.assertEqual(ended_for_its_backlog(self, l), [])
        self.assertEqual(self.px.metric("pgwharf_notifications_dropped_total"), 3)
        self.px.wait_for_log("event=notify_bridge_lost")
        self.assertIn("is disconnected (54000)", self.px.log())
        pt.wait_until(lambda: not backend_alive(self.pg, pid), 20, what="the bridge closed")
        self.assertEqual(hz.simple_query(c, "commit"), ([], []))

    def test_its_hubs_server_lost_past_the_bound_ends_it_with_54000(self):
        # The same, the hub's server lost (terminated) before the bridge's
        # marker came: the bridge goes with it; 54000, not 08006.
        b, l, c, pid, port = self.past_the_bound()
        hub = [int(r["remote_pid"]) for r in self.px.show("SERVERS", database=self.pg.database)
               if (r["state"], r["link"]) == ("active", "")]
        self.assertEqual(len(hub), 1)
        self.pg.psql("select pg_terminate_backend(%d)" % hub[0])
        self.assertEqual(ended_for_its_backlog(self, l), [])
        self.assertEqual(self.px.metric("pgwharf_notifications_dropped_total"), 3)
        self.px.wait_for_log("event=notify_server_lost")
        self.relay.thaw(port)
        pt.wait_until(lambda: not backend_alive(self.pg, pid), 20, what="the bridge closed")
        self.assertEqual(hz.simple_query(c, "commit"), ([], []))


class TestNoBridgeAtMaxDbConnections(CommitHeldCase):
    """A bridge is one more connection to PostgreSQL: it counts in
    max_db_connections and max_user_connections, the caps an operator sets
    to PostgreSQL's own (max_connections, a role's CONNECTION LIMIT).  At
    one of them no bridge is kept, as before (review r1: a login past the
    cap got PostgreSQL's 53300, which opened the backend's breaker, and
    the held client was ended when the hub got no server)."""
    LIMITS = {"max_db_connections": 2}

    def test_the_server_is_closed_as_before(self):
        b, l, _, c = self.fill_the_pool()
        pid = int(hz.simple_query(l, "select pg_backend_pid()")[0][0][0])
        self.commit_sent(l, c)                  # (c got l's room under the cap)
        l.settimeout(20)
        self.assertEqual(hz.recv_msg(l), (b"C", b"COMMIT\x00"))
        pt.wait_until(lambda: self.state(l) == "waiting", 20, what="l held")
        pt.wait_until(lambda: not backend_alive(self.pg, pid), 20, what="l's server closed")
        self.assertEqual(len(self.px.show("SERVERS", database=self.pg.database)), 2)
        self.assertEqual(hz.simple_query(b, "commit"), ([], []))
        self.assertEqual(hz.recv_msg(l), (b"Z", b"I"))
        self.hub_listens()
        self.pg.psql("select pg_notify('%s', 'heard')" % self.CHAN)
        self.assertEqual([n[1:] for n in read_notifications(l, 1)], [(self.CHAN, "heard")])
        self.assertEqual(hz.simple_query(c, "commit"), ([], []))
        self.assertNotIn("event=notify_bridge", self.px.log())


class TestABridgeCountsInMaxUserConnections(CommitHeldCase):
    """Room for one more under the cap: the bridge is kept, and another
    pool of the user waits for room while it lasts."""
    LIMITS = {"max_user_connections": 3}

    def test_another_pool_of_the_user_waits_for_it(self):
        b, l, _, c = self.fill_the_pool()
        pid = int(hz.simple_query(l, "select pg_backend_pid()")[0][0][0])
        self.commit_sent(l, c)
        l.settimeout(20)
        self.assertEqual(hz.recv_msg(l), (b"C", b"COMMIT\x00"))
        pt.wait_until(lambda: self.state(l) == "waiting", 20, what="l held")
        rows = self.px.show("SERVERS", database=self.pg.database)
        self.assertIn(pid, [int(r["remote_pid"]) for r in rows])      # the bridge
        self.assertEqual(len(rows), 3)
        # SHOW USERS' current_connections counts as max_user_connections
        # does: the bridge too (review r5).
        self.assertEqual([int(u["current_connections"]) for u in self.px.show("USERS")
                          if u["name"] == self.pg.user], [3])
        # The user's third connection is the bridge: d, the first client of
        # another pool of the same user, waits for a server to log in
        # (before, it got a fourth).
        d = socket.create_connection((self.px.host, self.px.port), timeout=20)
        self.addCleanup(d.close)
        d_in = []
        t = threading.Thread(target=lambda: d_in.append(
            hz.sync_login(d, self.pg.user, self.pg.database2, self.pg.password)))
        t.start()
        self.addCleanup(t.join, 30)
        pt.wait_until(lambda: [int(p["cl_waiting"]) for p in
                               self.px.show("POOLS", database=self.pg.database2)] == [1],
                      20, what="d waiting")
        self.assertEqual(self.px.show("SERVERS", database=self.pg.database2), [])
        self.assertEqual(d_in, [])
        self.assertEqual(hz.simple_query(b, "commit"), ([], []))    # to the hub
        self.assertEqual(hz.recv_msg(l), (b"Z", b"I"))
        pt.wait_until(lambda: not backend_alive(self.pg, pid), 20, what="the hand-over")
        t.join(20)                                                  # its room
        self.assertEqual(len(d_in), 1)
        self.assertEqual(hz.simple_query(d, "select 1"), ([[b"1"]], []))
        self.assertEqual(hz.simple_query(c, "commit"), ([], []))
        self.assertNotIn("event=notify_bridge_lost", self.px.log())


class TestHeldWithItsOwnServer(CommitHeldCase):
    """A client whose ReadyForQuery is held while it still has a server
    (a query sent behind the COMMIT): review of session 46."""
    QUERY_WAIT = 60

    def sleeping(self, q):
        return int(self.pg.psql("select count(*) from pg_stat_activity where state = 'active' "
                                "and query = '%s'" % q))

    def test_two_pipelining_listeners_do_not_pin_the_pool(self):
        # Each commits its LISTEN with a large select behind it, in one
        # write, holding the pool's two servers: the select's answer
        # filled the buffer behind the held ReadyForQuery, its server
        # could not finish, and the hub waited for one of them till
        # query_wait_timeout (then an error after the COMMIT).  The hold
        # gives way (notify_hold_given_up) when its own server's answer
        # fills the buffer.
        # (Both servers taken before a LISTEN kicks the hub, which queues.)
        ls = []
        for i in range(2):
            l = login(self, self.px)
            self.assertEqual(hz.simple_query(l, "begin"), ([], []))
            ls.append(l)
        for i, l in enumerate(ls):
            self.assertEqual(hz.simple_query(l, "listen %s%d" % (self.CHAN, i)), ([], []))
        for l in ls:
            l.sendall(hz.query_msg("commit") +
                      hz.query_msg("select repeat('x', 1000) from generate_series(1, 5000)"))
        for l in ls:
            l.settimeout(50)     # (under query_wait_timeout: an error there fails it)
            got = hz.read_until_ready(l) + hz.read_until_ready(l)
            types = [t for t, _ in got]
            self.assertEqual(types[:3] + types[-2:], [b"C", b"Z", b"T", b"C", b"Z"], types[:8])
            self.assertNotIn(b"E", types)
        self.px.wait_for_log("event=notify_hold_given_up")

    def test_a_cancel_reaches_the_query_on_its_server(self):
        # A query sent behind the COMMIT keeps l's server, its ReadyForQuery
        # held; a cancel is for the query running there, not for the hold.
        b, l, keys = self.two_in_transactions()
        self.assertEqual(hz.simple_query(l, "listen " + self.CHAN), ([], []))
        l.sendall(hz.query_msg("commit") + hz.query_msg("select pg_sleep(60)"))
        pt.wait_until(lambda: self.sleeping("select pg_sleep(60)") == 1, 20, what="sleeping")
        k = socket.create_connection((self.px.host, self.px.port), timeout=30)
        k.sendall(struct.pack("!IIII", 16, 80877102, keys[0][0], keys[0][1]))
        hz.read_until_closed(k, 10)
        k.close()
        pt.wait_until(lambda: self.sleeping("select pg_sleep(60)") == 0, 30,
                      what="the cancel reaching pg_sleep")
        self.assertEqual(hz.simple_query(b, "commit"), ([], []))
        got = hz.read_until_ready(l) + hz.read_until_ready(l)
        self.assertEqual([t for t, _ in got][:2], [b"C", b"Z"], got)
        errors = [hz.parse_fields(m)["C"] for t, m in got if t == b"E"]
        self.assertEqual(errors, ["57014"], got)

    def test_its_servers_fatal_comes_after_the_held_ready_for_query(self):
        b, l, _ = self.two_in_transactions()
        self.assertEqual(hz.simple_query(l, "listen " + self.CHAN), ([], []))
        l.sendall(hz.query_msg("commit") + hz.query_msg("select pg_sleep(61)"))
        pt.wait_until(lambda: self.sleeping("select pg_sleep(61)") == 1, 20, what="sleeping")
        self.pg.psql("select pg_terminate_backend(pid) from pg_stat_activity "
                     "where query = 'select pg_sleep(61)'")
        assert_ended(self, l, "57P01", "terminating", before=(b"C", b"Z", b"T"))


class TestHeldIsNotIdle(CommitHeldCase):
    def setUp(self):
        pt.PgwharfTestCase.setUp(self)
        self.px = self.start_pgwharf(settings={
            "pool_mode": "transaction", "default_pool_size": 2,
            "query_wait_timeout": 60, "client_idle_timeout": 1})

    def test_client_idle_timeout_does_not_end_a_held_commit(self):
        # Waiting for its COMMIT to return is no idleness (it was closed
        # 08P01 client_idle_timeout: review, session 46).
        b, l, _, c = self.fill_the_pool()
        self.commit_sent(l, c)
        pt.wait_until(lambda: self.state(l) == "waiting", 20, what="l waiting")
        self.assertEqual(hz.recv_msg(l), (b"C", b"COMMIT\x00"))
        # Past client_idle_timeout (1 s) while held: nothing comes.
        self.assertEqual(select.select([l], [], [], 2.5)[0], [])
        self.assertEqual(hz.simple_query(b, "commit"), ([], []))
        self.assertEqual(hz.read_until_ready(l), [(b"Z", b"I")])
        self.assertEqual(hz.simple_query(c, "commit"), ([], []))


class TestCommitWaitsForAHubThatGetsNoServer(CommitHeldCase):
    QUERY_WAIT = 5

    def test_the_client_is_disconnected_after_its_commit(self):
        # The hub's wait for a server ends in query_wait_timeout: a lone
        # LISTEN waiting with it gets the error; the committed LISTEN's
        # client gets its COMMIT's answer clean (it did commit), then
        # FATAL 08006 with that error, as when the hub's server is lost,
        # and reconnects to LISTEN again (review, session 46: an
        # ErrorResponse after CommandComplete COMMIT made drivers report
        # a committed transaction as failed).
        b, l, _, c = self.fill_the_pool()
        d = login(self, self.px)
        self.commit_sent(l, c)
        pt.wait_until(lambda: self.state(l) == "waiting", 20, what="l waiting")
        d.sendall(hz.query_msg("listen " + self.CHAN))
        got_d = hz.read_until_ready(d)
        self.assertEqual([t for t, _ in got_d], [b"E", b"Z"], got_d)
        fd = hz.parse_fields(got_d[0][1])
        assert_ended(self, l, "08006", fd["M"], before=(b"C", b"Z"))
        self.assertEqual(hz.simple_query(b, "commit"), ([], []))
        self.assertEqual(hz.simple_query(c, "commit"), ([], []))


class TestChainedListensDoNotPinThePool(CommitHeldCase):
    """COMMIT AND CHAIN's ReadyForQuery ('T') was held while the client
    kept its server: a pool full of such clients left the listening server
    none, so each waited for query_wait_timeout, then was disconnected
    08006 at its chain's end (review, session 46).  The client is in a
    transaction still: PostgreSQL sends it nothing before that ends, and
    its own server, listening since the commit, sends what was committed
    meanwhile before the chain's last ReadyForQuery.  So 'T' goes at once
    and the wait is for the ReadyForQuery that ends the chain."""
    QUERY_WAIT = 10

    def test_a_pool_full_of_chained_listens_runs_on(self):
        ls = []
        for i in range(2):            # the pool's two servers
            l = login(self, self.px)
            self.assertEqual(hz.simple_query(l, "begin"), ([], []))
            ls.append(l)
        chans = ["%s%d" % (self.CHAN, i) for i in range(2)]
        for l, ch in zip(ls, chans):
            self.assertEqual(hz.simple_query(l, "listen " + ch), ([], []))
        for l in ls:
            l.sendall(hz.query_msg("commit and chain"))
        for l in ls:
            l.settimeout(30)
            got = hz.read_until_ready(l)
            self.assertEqual(got, [(b"C", b"COMMIT\x00"), (b"Z", b"T")])
        # Committed after the chain's COMMIT returned: PostgreSQL gives it
        # to the client at the end of the chained transaction.
        self.pg.psql("select pg_notify('%s', 'during'), pg_notify('%s', 'during')" %
                     tuple(chans))
        for l in ls:
            self.assertEqual(hz.simple_query(l, "select 1"), ([[b"1"]], []))
        heard = []
        for l in ls:
            l.sendall(hz.query_msg("commit"))
            got = hz.read_until_ready(l)
            self.assertEqual([m for m in got if m[0] != b"A"],
                             [(b"C", b"COMMIT\x00"), (b"Z", b"I")], got)
            heard.append([notification(b)[1:] for t, b in got if t == b"A"])
        # Its ReadyForQuery came once the listening server listened.
        self.pg.psql("select pg_notify('%s', 'marker'), pg_notify('%s', 'marker')" %
                     tuple(chans))
        for l, ch, h in zip(ls, chans, heard):
            while not h or h[-1] != (ch, "marker"):
                h += [n[1:] for n in read_notifications(l, 1)]
            self.assertEqual(h, [(ch, "during"), (ch, "marker")])
            self.assertEqual(hz.simple_query(l, "select 2"), ([[b"2"]], []))


class FailListen(hz.QueryServer):
    """A PostgreSQL look-alike (as CutAfterAnswer) whose LISTEN of a
    channel in `fail` gets an ErrorResponse 55000 (the connection goes
    on); a LISTEN among other statements of a Query (a transaction's) is
    answered as the rest.  The listening server's own LISTEN (its name
    quoted) fails `times` times (-1: always), a client's lone one when
    `lone_fails`; with `gated`, the first of the listening server's waits
    for `gate` (`seen` set as it comes, `hub_peer` its connection's
    port).  hub_listens: the channels of the listening server's LISTENs."""

    TIMEOUT = 30
    ERROR = b"SERROR\0VERROR\0C55000\0Mcannot listen on this channel here\0\0"

    def __init__(self, fail, times=-1, lone_fails=True, gated=False):
        self.fail = set(fail)
        self.times = times
        self.lone_fails = lone_fails
        self.gate = threading.Event()
        if not gated:
            self.gate.set()
        self.seen = threading.Event()
        self.hub_listens = []
        self.hub_peer = None
        self.lock = threading.Lock()
        self.local = threading.local()
        super().__init__()

    def opened(self, conn):
        self.local.conn = conn
        self.local.tx = False

    def status(self):
        return b"T" if self.local.tx else b"I"

    def answer(self, sql):
        w = sql.strip().lower()
        if w == "begin":
            self.local.tx = True
        elif w in ("commit", "rollback"):
            self.local.tx = False
        words = sql.replace('"', " ").replace(";", " ; ").split()
        if len(words) == 2 and words[0].upper() == "LISTEN" and words[1] in self.fail:
            if '"' in sql:
                with self.lock:
                    first = not self.hub_listens
                    self.hub_listens.append(words[1])
                if first:
                    self.hub_peer = self.local.conn.getpeername()[1]
                    self.seen.set()
                    self.gate.wait(20)
                with self.lock:
                    fails = self.times != 0
                    if self.times > 0:
                        self.times -= 1
            else:
                fails = self.lone_fails
            if fails:
                return self._msg(b"E", self.ERROR), True
        out = b""
        for stmt in (x.split() for x in " ".join(words).split(";")):
            if stmt:
                out += self._msg(b"C", stmt[0].upper().encode() + b"\0")
        return out, True


class GateEachListen(FailListen):
    """FailListen whose listening server's LISTENs each wait for a release
    of `go` (`arrived`: how many came), but that of its channel for the
    bridges' markers (pgw_hub_...)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.go = threading.Semaphore(0)
        self.arrived = 0

    def answer(self, sql):
        if '"' in sql and sql.strip().upper().startswith("LISTEN") and "pgw_hub_" not in sql:
            with self.lock:
                self.arrived += 1
            self.go.acquire(timeout=self.TIMEOUT)
        return super().answer(sql)


# The listening server's own LISTEN of a channel, tried that many times in
# a row for the clients that wait for it (NOTIFY_LISTEN_TRIES).
LISTEN_TRIES = 3


def ended_for_a_failed_listen(test, sock, state, text, before=(b"C", b"C", b"Z")):
    """sock, whose transaction committed a LISTEN the listening server
    could not make: its ReadyForQuery, then FATAL 08006 (reconnect), with
    PostgreSQL's error (state, text) in the message and the DETAIL."""
    f = assert_ended(test, sock, "08006", text, before=before)
    test.assertIn("the LISTEN this client's transaction committed failed", f["M"])
    test.assertEqual(f["D"], "PostgreSQL's error for that LISTEN: SQLSTATE %s: %s" % (state, text))


class TestHubListenFails(pt.PgwharfTestCase):
    """The listening server's own LISTEN of a channel a transaction
    committed failed: the hold was lifted as if it listened, and the
    client went on, listening to nothing (review, session 46).  It gets
    that ReadyForQuery (the commit stands), then FATAL 08006, as when the
    listening server is lost (it reconnects: its COMMIT succeeded, so the
    LISTEN's own SQLSTATE would misread), PostgreSQL's error in the
    DETAIL."""

    def login(self, px):
        s = socket.create_connection((px.host, px.port), timeout=20)
        self.addCleanup(s.close)
        hz.sync_login(s, self.pg.user, "fk", self.pg.password)
        return s

    def start(self, fake):
        self.addCleanup(fake.close)
        return self.start_pgwharf(settings={"pool_mode": "transaction", "default_pool_size": 3},
                                  databases={"fk": "host=127.0.0.1 port=%d dbname=fk" % fake.port})

    def a_waits_b_notes(self, fake):
        """a's committed LISTEN of pgw_t waits for the listening server's
        own (gated), b's transaction notes one; then the gate opens."""
        px = self.start(fake)
        a = self.login(px)
        a.sendall(hz.query_msg("select 1; listen pgw_t"))
        self.assertTrue(fake.seen.wait(20))
        b = self.login(px)
        self.assertEqual(hz.simple_query(b, "begin"), ([], []))
        self.assertEqual(hz.simple_query(b, "listen pgw_t"), ([], []))
        fake.gate.set()
        return px, a, b

    def test_a_committed_listen_the_hub_cannot_run_ends_the_client(self):
        px = self.start(FailListen(["pgw_bad"]))
        # A LISTEN among other statements: an implicit transaction's.
        a = self.login(px)
        a.sendall(hz.query_msg("select 1; listen pgw_bad"))
        ended_for_a_failed_listen(self, a, "55000", "cannot listen on this channel here")
        # A lone LISTEN gets PostgreSQL's error itself (and goes on).
        d = self.login(px)
        d.sendall(hz.query_msg("listen pgw_bad"))
        got = hz.read_until_ready(d)
        self.assertEqual([t for t, _ in got], [b"E", b"Z"], got)
        f = hz.parse_fields(got[0][1])
        self.assertEqual((f["S"], f["C"], f["M"]),
                         ("ERROR", "55000", "cannot listen on this channel here"))
        self.assertEqual(hz.simple_query(d, "select 1"), ([], []))
        px.wait_for_log("event=notify_server")

    def test_a_lone_listen_failing_behind_the_hubs_own_keeps_the_channel_failed(self):
        # The listening server's own LISTEN fails with a client's lone
        # LISTEN of the channel queued behind it (so its end did not mark
        # the channel failed), and that one fails too: the committed
        # client's hold was lifted as if the channel were listened on
        # (review, session 47).
        fake = FailListen(["pgw_bad"], gated=True)
        px = self.start(fake)
        a = self.login(px)
        a.sendall(hz.query_msg("select 1; listen pgw_bad"))
        self.assertTrue(fake.seen.wait(20))
        d = self.login(px)
        d.sendall(hz.query_msg("listen pgw_bad"))
        pt.wait_until(lambda: tcp_rx_queue(fake.port, fake.hub_peer) > 0, 20,
                      what="d's LISTEN queued behind the listening server's own")
        fake.gate.set()
        got = hz.read_until_ready(d)
        self.assertEqual([t for t, _ in got], [b"E", b"Z"], got)
        self.assertEqual(hz.parse_fields(got[0][1])["C"], "55000")
        ended_for_a_failed_listen(self, a, "55000", "cannot listen on this channel here")

    def test_a_listen_noted_while_the_hubs_own_failed_is_tried_again(self):
        # The listening server's own LISTEN fails for good (three times in
        # a row, LISTEN_TRIES).  b's transaction noted its LISTEN while
        # the first ran (no LISTEN sent for it) and commits after the
        # failure: it was ended though no LISTEN was tried for it (review,
        # session 47).  Now its commit sends one, which succeeds.  (a,
        # waiting as the errors came, is ended.)
        fake = FailListen(["pgw_t"], times=LISTEN_TRIES, lone_fails=False, gated=True)
        px, a, b = self.a_waits_b_notes(fake)
        ended_for_a_failed_listen(self, a, "55000", "cannot listen on this channel here")
        self.assertEqual(hz.simple_query(b, "commit"), ([], []))
        self.assertEqual(hz.simple_query(b, "select 1"), ([], []))
        self.assertEqual(fake.hub_listens, ["pgw_t"] * (LISTEN_TRIES + 1))
        # A third client's LISTEN: the channel is listened on.
        c = self.login(px)
        c.sendall(hz.query_msg("select 1; listen pgw_t"))
        self.assertEqual([t for t, _ in hz.read_until_ready(c)], [b"C", b"C", b"Z"])
        self.assertEqual(hz.simple_query(c, "select 1"), ([], []))
        self.assertEqual(fake.hub_listens, ["pgw_t"] * (LISTEN_TRIES + 1))

    def test_a_failure_is_tried_again_for_the_waiting_clients(self):
        # The listening server's own LISTEN fails twice (a cancel, a lock
        # or statement timeout, a lack of memory), with a waiting: a was
        # ended at the first failure, with no retry, while a LISTEN noted
        # later got one (review, session 48).  Now the hub tries it again
        # for them, up to LISTEN_TRIES times in a row: the third succeeds,
        # and a goes on, listening.
        fake = FailListen(["pgw_t"], times=LISTEN_TRIES - 1, lone_fails=False, gated=True)
        px, a, b = self.a_waits_b_notes(fake)
        got = hz.read_until_ready(a)
        self.assertEqual([t for t, _ in got], [b"C", b"C", b"Z"], got)
        self.assertEqual(hz.simple_query(a, "select 1"), ([], []))
        self.assertEqual(hz.simple_query(b, "commit"), ([], []))
        self.assertEqual(hz.simple_query(b, "select 1"), ([], []))
        self.assertEqual(fake.hub_listens, ["pgw_t"] * LISTEN_TRIES)
        # Failing for good (the bound reached): the client is ended.
        fake2 = FailListen(["pgw_bad"])
        px2 = self.start(fake2)
        d = self.login(px2)
        d.sendall(hz.query_msg("select 1; listen pgw_bad"))
        ended_for_a_failed_listen(self, d, "55000", "cannot listen on this channel here")
        self.assertEqual(fake2.hub_listens, ["pgw_bad"] * LISTEN_TRIES)

    def test_listens_noted_during_the_retries_do_not_put_off_the_end(self):
        # The listening server's LISTEN fails for good; while its retry
        # runs, two transactions note a LISTEN of the channel.  Each sent
        # one more LISTEN (the channel was marked failed), whose failure
        # did not count (a LISTEN of it was queued behind): a was ended
        # after five, not LISTEN_TRIES, and would wait as long as
        # transactions kept noting it (review, session 48).
        fake = GateEachListen(["pgw_t"], times=-1, lone_fails=False)
        px = self.start(fake)
        a = self.login(px)
        a.sendall(hz.query_msg("select 1; listen pgw_t"))
        pt.wait_until(lambda: fake.arrived == 1, 20, what="the first LISTEN")
        fake.go.release()
        pt.wait_until(lambda: fake.arrived == 2, 20, what="its retry")
        noted = []
        for _ in range(2):
            b = self.login(px)
            self.assertEqual(hz.simple_query(b, "begin"), ([], []))
            self.assertEqual(hz.simple_query(b, "listen pgw_t"), ([], []))
            noted.append(b)
        for _ in range(2 * LISTEN_TRIES):
            fake.go.release()
        ended_for_a_failed_listen(self, a, "55000", "cannot listen on this channel here")
        self.assertEqual(fake.hub_listens, ["pgw_t"] * LISTEN_TRIES)
        # Their commits try it again (await_add), LISTEN_TRIES times each.
        fake.go.release(2 * LISTEN_TRIES)
        for b in noted:
            b.sendall(hz.query_msg("commit"))
            ended_for_a_failed_listen(self, b, "55000", "cannot listen on this channel here",
                                      before=(b"C", b"Z"))
        self.assertEqual(fake.hub_listens, ["pgw_t"] * (3 * LISTEN_TRIES))

    def test_an_error_pgwharf_cannot_parse_still_ends_with_08006(self):
        # The listening server's LISTEN got an ErrorResponse with no final
        # NUL: the channel was marked failed with its SQLSTATE and message
        # never written (heap-buffer-overflow under ASan).
        fake = FailListen(["pgw_m"])
        fake.ERROR = b"SERROR\0VERROR\0C55000\0Mno terminator"
        px = self.start(fake)
        a = self.login(px)
        a.sendall(hz.query_msg("select 1; listen pgw_m"))
        ended_for_a_failed_listen(self, a, "08006", "LISTEN failed on the listening server")


class TestReloadLeavesNoRoom(pt.PgwharfTestCase):
    """A reload that leaves a pool with listeners room for one server only:
    the listening server kept it (the room check ran only when the pool's
    first client listened), and every query waited for
    query_wait_timeout.  The hub now gives its server back; its clients'
    listening can end only with their connections (as in PostgreSQL), so
    each gets FATAL 57P01 between transactions, and a LISTEN after that
    runs on the client's own server, as in a pool of one."""

    def assert_ended(self, sock, before=()):
        """sock's next messages: those of types `before`, then FATAL 57P01
        and the end of the connection."""
        assert_ended(self, sock, "57P01", "no room for a listening server", before)

    def test_pool_size_lowered_to_one(self):
        px = self.start_pgwharf(settings={"pool_mode": "transaction", "default_pool_size": 3,
                                          "query_wait_timeout": 10})
        console = self.console_conn(px)
        a, c, b = login(self, px), login(self, px), login(self, px)
        self.assertEqual(hz.simple_query(a, "listen pgw_shrink"), ([], []))
        self.assertEqual(hz.simple_query(c, "listen pgw_shrink"), ([], []))
        self.assertEqual(hz.simple_query(c, "begin"), ([], []))   # c holds a server
        px.settings["default_pool_size"] = 1
        px.write_config()
        px.admin("RELOAD")

        def servers():
            p = pt.pool_row(console, self.pg.database, self.pg.user)
            return sum(p[k] for k in ("sv_active", "sv_idle", "sv_used", "sv_tested",
                                      "sv_login"))
        # The listening server goes back: c's is the pool's one server.
        pt.wait_until(lambda: servers() == 1, 10, what="the pool down to c's server")
        self.assertIn("event=notify_no_room", px.log())
        # a, between transactions, is told at once; c at its transaction's end.
        self.assert_ended(a)
        self.assertEqual(hz.simple_query(c, "select 1"), ([[b"1"]], []))
        c.sendall(hz.query_msg("commit"))
        self.assert_ended(c, [b"C", b"Z"])
        # The one server serves queries, and a LISTEN as in a pool of one.
        self.assertEqual(hz.simple_query(b, "select 2"), ([[b"2"]], []))
        d = login(self, px)
        self.assertEqual(hz.simple_query(d, "listen pgw_shrink"), ([], []))
        self.assertEqual(hz.simple_query(b, "select 3"), ([[b"3"]], []))
        self.assertEqual(hz.simple_query(d, "select 4"), ([[b"4"]], []))

    def test_max_db_connections_lowered_the_first_hub_stays(self):
        # Two users' pools of one database, each with a listener, under
        # max_db_connections = 3; lowered to 2, the newer pool's listening
        # server goes, the older one's stays.
        px = self.start_pgwharf(settings={"pool_mode": "transaction", "default_pool_size": 3,
                                          "max_db_connections": 3, "query_wait_timeout": 10})
        a = login(self, px)
        b = login_app_user(self, px)
        self.assertEqual(hz.simple_query(a, "listen pgw_cap"), ([], []))
        self.assertEqual(hz.simple_query(b, "listen pgw_cap"), ([], []))
        px.settings["max_db_connections"] = 2
        px.write_config()
        px.admin("RELOAD")
        # Both listening servers held the two: the query waited for
        # query_wait_timeout.  Now b's goes (b is told), a's stays.
        self.assertEqual(hz.simple_query(a, "select 1"), ([[b"1"]], []))
        self.assert_ended(b)
        self.pg.psql("notify pgw_cap, 'still'")
        self.assertEqual([x[1:] for x in read_notifications(a, 1)], [("pgw_cap", "still")])
        self.assertIn("event=notify_no_room db=%s user=%s" % (self.pg.database,
                                                              self.pg.app_user), px.log())


class TestAnsweredAtOnce(pt.PgwharfTestCase):
    def test_pipelined_listens_refused_at_once(self):
        # A pool whose database a reload removed refuses the listening
        # server at once (3D000): each LISTEN is answered from inside the
        # one before it, and what the client sent after is read once, in
        # order (pgwharf read the client's buffer after relay.c had let it
        # go: a NULL dereference).
        db = self.pg.database
        px = self.start_pgwharf(settings={"pool_mode": "transaction", "default_pool_size": 3},
                                databases={db: self.pg.conn_string(db),
                                           "pgw_gone": self.pg.conn_string(db)})
        s = socket.create_connection((px.host, px.port), timeout=20)
        self.addCleanup(s.close)
        hz.sync_login(s, self.pg.user, "pgw_gone", self.pg.password)
        self.assertEqual(hz.simple_query(s, "select 1"), ([[b"1"]], []))
        del px.databases["pgw_gone"]
        px.reload()
        px.wait_for_log("event=pool_orphaned db=pgw_gone")
        px.wait_for_log("event=reload ")
        s.sendall(hz.query_msg("listen pgw_a1") + hz.query_msg("listen pgw_a2") +
                  hz.query_msg("select 3"))
        for _ in range(3):
            got = hz.read_until_ready(s)
            self.assertEqual([t for t, _ in got], [b"E", b"Z"], got)
            self.assertIn(b"C3D000\0", got[0][1])
        self.assertTrue(px.alive())
        self.assertEqual(hz.simple_query(login(self, px), "select 4"), ([[b"4"]], []))
        # The same through the extended protocol: ParseComplete, BindComplete
        # and NoData from pgwharf, then the pool's error.
        s.sendall(hz.ext_msgs("listen pgw_a3") + hz.ext_msgs("listen pgw_a4") +
                  hz.query_msg("select 5"))
        for _ in range(2):
            got = hz.read_until_ready(s)
            self.assertEqual([t for t, _ in got], [b"1", b"2", b"n", b"E", b"Z"], got)
            self.assertIn(b"C3D000\0", got[3][1])
        got = hz.read_until_ready(s)
        self.assertEqual([t for t, _ in got], [b"E", b"Z"], got)
        self.assertTrue(px.alive())


class TestShutdown(NotifyCase):
    def test_listen_while_waiting_for_clients(self):
        # SIGTERM waits for the clients, which go on working: a LISTEN then
        # (the first: the pool has no listening server yet) got no server
        # and its client waited for ever.
        a, b = login(self, self.px), login(self, self.px)
        self.assertEqual(hz.simple_query(a, "select 1"), ([[b"1"]], []))
        self.px.send_signal(signal.SIGTERM)
        self.px.wait_for_log("event=shutdown mode=wait_for_clients")
        a.settimeout(10)
        self.listen(a, "listen pgw_sd")
        self.notify("pgw_sd", "bye")
        self.assertEqual([x[1:] for x in read_notifications(a, 1)], [("pgw_sd", "bye")])
        a.close()
        b.close()
        self.assertEqual(self.px.proc.wait(timeout=20), 0)


class TestHeldForAClientThatLeft(pt.PgwharfTestCase):
    def test_flush_to_a_client_gone_meanwhile(self):
        # A listener's transaction ends while it has notifications held and
        # its socket is closed, pgwharf not having seen that yet: the
        # transaction's reply is written (and the client's kernel resets
        # the connection), the held notifications' write fails and closes
        # the session, which freed what pgw_notify_flush went on to use
        # (heap-use-after-free under ASan).  Whether pgwharf sees the
        # reply or the close first is up to its event loop's order, so the
        # scene plays several times (io_batch off: the writes are made at
        # once, as they are for a TLS client).
        import psycopg2
        px = self.start_pgwharf(settings={"pool_mode": "transaction", "default_pool_size": 3,
                                          "io_batch": "off"})
        b = login(self, px)
        b.sendall(hz.query_msg("listen pgw_gone"))
        hz.read_until_ready(b)
        gate = psycopg2.connect(self.pg.dsn())
        gate.autocommit = True
        self.addCleanup(gate.close)
        sql = "select pg_advisory_xact_lock_shared(74201); commit"
        for _ in range(6):
            gate.cursor().execute("select pg_advisory_lock(74201)")
            a = login(self, px)
            a.sendall(hz.query_msg("listen pgw_gone"))
            hz.read_until_ready(a)
            self.assertEqual(hz.simple_query(a, "begin"), ([], []))
            self.pg.psql("notify pgw_gone, 'held'")
            read_notifications(b, 1)            # the hub has it: a's is held
            a.sendall(hz.query_msg(sql))
            self.pg.wait_running("pg_advisory_xact_lock_shared(74201)", lock_wait=True)
            # The one waiting now (an earlier round's server, idle in the
            # pool, still shows the same last query).
            port = int(self.pg.psql("select client_port from pg_stat_activity "
                                    "where query = '%s' and state = 'active'" % sql))
            os.kill(px.pid, signal.SIGSTOP)
            try:
                a.close()
                gate.cursor().execute("select pg_advisory_unlock(74201)")
                pt.wait_until(lambda: tcp_rx_queue(port, self.pg.port) > 0, 20,
                              what="the reply waiting in pgwharf's socket")
            finally:
                os.kill(px.pid, signal.SIGCONT)
            self.assertEqual(hz.simple_query(b, "select 1"), ([[b"1"]], []))
        self.assertTrue(px.alive())


class TestRealClients(NotifyCase):
    def test_psycopg2(self):
        import psycopg2
        conns = [self.db_conn(self.px) for _ in range(3)]
        for c in conns:
            c.cursor().execute("LISTEN pgw_py")
        self.db_conn(self.px).cursor().execute("NOTIFY pgw_py, 'from a client'")
        for c in conns:
            def got():
                c.poll()
                return bool(c.notifies)
            pt.wait_until(got, 20, what="psycopg2 notification")
            n = c.notifies.pop(0)
            self.assertEqual((n.channel, n.payload), ("pgw_py", "from a client"))
        self.assertEqual(self.listeners(), 1)
        del psycopg2

    def test_psycopg3(self):
        try:
            import psycopg
        except ImportError:
            self.skipTest("psycopg 3 not installed")
        with psycopg.connect(self.px.dsn(), autocommit=True) as conn:
            conn.execute("LISTEN pgw_py3")
            self.notify("pgw_py3", "three")
            got = []
            conn.add_notify_handler(lambda n: got.append((n.channel, n.payload)))

            def arrived():
                # Handlers run as psycopg reads; a query makes it read.
                select.select([conn.fileno()], [], [], 1)
                conn.execute("select 1")
                return got
            pt.wait_until(arrived, 20, what="psycopg 3 notification")
            self.assertEqual(got, [("pgw_py3", "three")])

    def test_node_postgres(self):
        node = shutil.which("node")
        here = os.path.dirname(os.path.abspath(__file__))
        if not node or not os.path.isdir(os.path.join(here, "node_modules", "pg")):
            self.skipTest("node or node_modules/pg missing")
        script = """
const { Client } = require('pg');
(async () => {
  const cfg = JSON.parse(process.argv[1]);
  const a = new Client(cfg), b = new Client(cfg), n = new Client(cfg);
  await a.connect(); await b.connect(); await n.connect();
  const got = [];
  const done = new Promise((resolve) => {
    const on = (who) => (m) => { got.push([who, m.channel, m.payload]); if (got.length === 2) resolve(); };
    a.on('notification', on('a')); b.on('notification', on('b'));
  });
  await a.query('LISTEN pgw_node'); await b.query('LISTEN pgw_node');
  await n.query("NOTIFY pgw_node, 'js'");
  const t = setTimeout(() => { console.log(JSON.stringify({timeout: got})); process.exit(2); }, 20000);
  await done; clearTimeout(t);
  got.sort();
  console.log(JSON.stringify(got));
  await a.end(); await b.end(); await n.end();
})().catch((e) => { console.error(e); process.exit(1); });
"""
        cfg = {"host": self.px.host, "port": self.px.port, "user": self.pg.user,
               "password": self.pg.password, "database": self.pg.database}
        cp = subprocess.run([node, "-e", script, json.dumps(cfg)], cwd=here, capture_output=True,
                            text=True, timeout=60)
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        self.assertEqual(json.loads(cp.stdout), [["a", "pgw_node", "js"], ["b", "pgw_node", "js"]])


if __name__ == "__main__":
    unittest.main()
