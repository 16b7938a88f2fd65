"""Malformed input from clients: random bytes, truncated messages, length
fields of 0, 0xFFFFFFFF and beyond the caps, messages in the wrong phase.

For each: the offending client gets a FATAL ErrorResponse with SQLSTATE
08P01 where it can read one (or, for bytes that never complete a packet,
is closed at client_login_timeout with 08P01), its connection is closed,
and a concurrent client running queries all along sees no error.  At the
end pgwharf is back to its baseline (fds, idle servers, RSS).
"""

import random
import socket
import struct
import threading
import time
import unittest

import psycopg2

import pgwharf_test as pt
import pgw_hardening as hz

LOGIN_TIMEOUT = 2.0
SSLREQ = struct.pack("!II", 8, 80877103)
GSSREQ = struct.pack("!II", 8, 80877104)


class Bystander(threading.Thread):
    """A well-behaved client running a query every 20 ms until stopped."""

    def __init__(self, px):
        super().__init__(daemon=True)
        self.px = px
        self.stop = threading.Event()
        self.ok = 0
        self.errors = []

    def run(self):
        try:
            conn = psycopg2.connect(self.px.dsn(user=self.px.pg.app_user))
            conn.autocommit = True
            cur = conn.cursor()
            while not self.stop.is_set():
                cur.execute("select %s::int", (self.ok,))
                if cur.fetchone()[0] != self.ok:
                    self.errors.append("wrong answer")
                self.ok += 1
                time.sleep(0.02)
            conn.close()
        except Exception as e:      # noqa: BLE001 - reported by the test
            self.errors.append(repr(e))


class TestResetDuringStartup(pt.PgwharfTestCase):
    """A client that asks for protocol 3.2 with options pgwharf refuses, and
    resets the connection at once: the NegotiateProtocolVersion (and the
    FATAL) cannot be written.  The session once went on after that failed
    write (and was freed while still in the cancel table), or was closed
    twice, each time lowering the client count, so max_client_conn stopped
    refusing anyone."""

    def attempts(self, px, n):
        seen = px.log().count("event=disconnect")
        for i in range(n):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.connect((px.host, px.port))
            body = struct.pack("!I", (3 << 16) | 2)
            params = [("user", self.pg.user), ("database", self.pg.database),
                      ("_pq_.pgwharf_test", "1")]
            if i % 2:
                params.append(("no_such_setting", "x"))        # refused: FATAL 08P01
            for k, v in params:
                body += k.encode() + b"\0" + v.encode() + b"\0"
            body += b"\0"
            s.sendall(struct.pack("!I", len(body) + 4) + body)
            s.close()                                           # RST
        hz.wait_until(lambda: px.log().count("event=disconnect") >= seen + n, 20,
                      what="pgwharf to see every reset")

    def test_client_count_and_cap_survive(self):
        for io_batch, auth in ((1, "trust"), (0, "trust"), (1, "md5"), (0, "md5")):
            with self.subTest(io_batch=io_batch, auth=auth):
                px = self.start_pgwharf(settings={
                    "max_client_conn": 3, "io_batch": io_batch, "auth_type": auth,
                    "log_disconnections": 1, "pool_mode": "transaction"})
                self.attempts(px, 12)
                conns = [psycopg2.connect(px.dsn()) for _ in range(3)]
                try:
                    with self.assertRaises(psycopg2.OperationalError) as cm:
                        psycopg2.connect(px.dsn()).close()
                    self.assertIn("no more connections allowed", str(cm.exception))
                    # and a cancel still finds the right session
                    cur = conns[0].cursor()
                    t = pt.Background(lambda: (self.pg.wait_running(
                        "select pg_sleep(30) /* to cancel */"), conns[0].cancel()))
                    with self.assertRaises(psycopg2.errors.QueryCanceled):
                        cur.execute("select pg_sleep(30) /* to cancel */")
                    t.join(20)
                    self.assertIsNone(t.error)
                finally:
                    for c in conns:
                        c.close()
                px.stop()
                self.assertTrue(px.returncode == 0, px.log_tail())


class TestMalformed(pt.PgwharfTestCase):
    def setUp(self):
        super().setUp()
        self.px = self.start_pgwharf(settings={
            "pool_mode": "transaction", "default_pool_size": 3,
            "client_login_timeout": "%gs" % LOGIN_TIMEOUT,
            "log_connections": 0})
        self.assertEqual(self.px.psql("select 1", user=self.pg.app_user), "1")
        self.base = hz.Baseline(self.px, self.pg, self.pg.app_user)
        self.bystander = Bystander(self.px)
        self.bystander.start()
        hz.wait_until(lambda: self.bystander.ok > 3 or self.bystander.errors, 10,
                      what="bystander running")

    def tearDown(self):
        self.bystander.stop.set()
        self.bystander.join(10)
        super().tearDown()

    def finish(self, what):
        self.assertEqual(self.bystander.errors, [], "the bystander was affected")
        ok = self.bystander.ok
        hz.wait_until(lambda: self.bystander.ok > ok + 3 or self.bystander.errors, 10,
                      what="bystander still running")
        self.assertEqual(self.bystander.errors, [])
        self.assertTrue(self.px.alive())
        self.bystander.stop.set()
        self.bystander.join(10)
        self.base.settle(self, max_servers=3, what=what, rss_margin_kb=64 * 1024)

    # helpers
    def connect(self, login=False, user=None, password=None):
        s = socket.create_connection((self.px.host, self.px.port), timeout=10)
        if login:
            hz.sync_login(s, user or self.pg.app_user, self.pg.database,
                          password or self.pg.app_password)
        return s

    def expect_08p01(self, payload, what, login=False, at_login_timeout=False,
                     after_auth_request=False, message=None, code="08P01"):
        """Send payload; the connection must close with a FATAL 08P01 the
        client can read: at client_login_timeout if at_login_timeout (the
        bytes never complete what pgwharf waits for), else at once -- for
        its own error, not left to the login timer (which alone would end
        it: 08P01 "client_login_timeout"; after login, nothing would)."""
        s = self.connect(login=login)
        try:
            if after_auth_request:
                s.sendall(hz.startup_packet(self.pg.app_user, self.pg.database))
                t, _ = hz.recv_msg(s)
                self.assertEqual(t, b"R")
            s.sendall(payload)
            # Only a guard against a connection left open for ever.
            data, closed = hz.read_until_closed(s, LOGIN_TIMEOUT + 30)
        finally:
            s.close()
        if data[:1] == b"N":
            data = data[1:]
        errs = hz.error_fields_in(data)
        self.assertTrue(closed, "%s: connection left open; got %r" % (what, data[:100]))
        self.assertTrue(errs, "%s: closed without an ErrorResponse; got %r" % (what, data[:100]))
        self.assertEqual(errs[0].get("C"), code, "%s: %s" % (what, errs))
        self.assertEqual(errs[0].get("S"), "FATAL", "%s: %s" % (what, errs))
        if message:
            self.assertIn(message, errs[0].get("M", ""), what)
        if at_login_timeout:
            self.assertIn("client_login_timeout", errs[0].get("M", ""), what)
        else:
            self.assertNotIn("client_login_timeout", errs[0].get("M", ""),
                             "%s: not answered before client_login_timeout" % what)
        return errs

    # --- before and during the startup packet ---

    def test_bad_startup_lengths(self):
        cases = [
            ("length 0", b"\x00\x00\x00\x00"),
            ("length 3", b"\x00\x00\x00\x03"),
            ("length 7", b"\x00\x00\x00\x07\x00\x03\x00"),
            ("length 0xFFFFFFFF", b"\xff\xff\xff\xff"),
            ("length negative", struct.pack("!i", -8) + b"\x00" * 8),
            ("length beyond cap", struct.pack("!II", 10005, 196608) + b"x" * 100),   # 10000 + 4
            ("query before startup", hz.query_msg("select 1")),
            ("startup without terminator", struct.pack("!II", 17, 196608) + b"user\x00app\x00"),
        ]
        for what, payload in cases:
            with self.subTest(what):
                self.expect_08p01(payload, what)
        # PostgreSQL's SQLSTATEs and words (ProcessStartupPacket)
        for what, payload, code, message in (
                ("startup without user", struct.pack("!II", 9, 196608) + b"\x00", "28000",
                 "no PostgreSQL user name specified in startup packet"),
                ("protocol 2.0", struct.pack("!II", 8, 0x00020000), "0A000",
                 "unsupported frontend protocol 2.0: server supports 3.0 to 3.0"),
                ("protocol 4.0", struct.pack("!II", 8, 0x00040000), "0A000",
                 "unsupported frontend protocol 4.0: server supports 3.0 to 3.0")):
            with self.subTest(what):
                self.expect_08p01(payload, what, code=code, message=message)
        self.finish("bad startup lengths")

    def test_data_behind_an_encryption_request_and_odd_cancels(self):
        # As ProcessStartupPacket, compared with the PostgreSQL behind:
        # plaintext right behind an SSLRequest (GSSENCRequest) gets the
        # 'N' first, then FATAL 08P01 "received unencrypted data after
        # ..." (pgwharf sent the FATAL alone, in its own words); a
        # CancelRequest of a wrong length gets no answer, only the close
        # (pgwharf sent FATAL 08P01).
        startup = hz.startup_packet(self.pg.app_user, self.pg.database)
        for req, what in ((SSLREQ, "SSL request"), (GSSREQ, "GSSAPI encryption request")):
            with self.subTest(what):
                s = self.connect()
                try:
                    s.sendall(req + startup)
                    data, closed = hz.read_until_closed(s, LOGIN_TIMEOUT + 30)
                finally:
                    s.close()
                self.assertTrue(closed, data[:100])
                self.assertEqual(data[:1], b"N", data[:100])
                errs = hz.error_fields_in(data[1:])
                self.assertEqual([(e.get("S"), e.get("C"), e.get("M")) for e in errs],
                                 [("FATAL", "08P01", "received unencrypted data after " + what)])
                self.assertIn("man-in-the-middle", errs[0].get("D", ""))
        # PostgreSQL's own answer to the SSL case (it has no TLS here).
        with socket.create_connection((self.pg.host, self.pg.port), timeout=10) as s:
            s.sendall(SSLREQ + startup)
            data, closed = hz.read_until_closed(s, 30)
        self.assertTrue(closed)
        self.assertEqual(data[:1], b"N")
        self.assertEqual(hz.error_fields_in(data[1:])[0].get("M"),
                         "received unencrypted data after SSL request")
        for what, payload in (("12 bytes", struct.pack("!III", 12, 80877102, 1)),
                              ("20 bytes", struct.pack("!IIIII", 20, 80877102, 1, 2, 3))):
            with self.subTest("cancel of " + what):
                for host, port in ((self.px.host, self.px.port), (self.pg.host, self.pg.port)):
                    with socket.create_connection((host, port), timeout=10) as s:
                        s.sendall(payload)
                        data, closed = hz.read_until_closed(s, LOGIN_TIMEOUT + 30)
                    self.assertTrue(closed)
                    self.assertEqual(data, b"", (port, data[:100]))
        self.finish("data behind encryption request")

    def test_a_second_encryption_request_of_a_kind(self):
        # As ProcessStartupPacket: a second SSLRequest (or GSSENCRequest)
        # after its 'N' is FATAL 0A000 (pgwharf answered 'N' again, for
        # ever, until client_login_timeout).  One of the other kind in
        # between allows it again: libpq asks for GSS, then for SSL.
        for first, again, code in ((SSLREQ, SSLREQ, "1234.5679"), (GSSREQ, GSSREQ, "1234.5680"),
                                   (GSSREQ + SSLREQ, SSLREQ, "1234.5679")):
            with self.subTest(first=first, again=again):
                s = self.connect()
                try:
                    for i in range(0, len(first), 8):
                        s.sendall(first[i:i + 8])
                        self.assertEqual(s.recv(1), b"N")
                    errs = self.expect_on(s, again)
                finally:
                    s.close()
                self.assertEqual((errs[0].get("S"), errs[0].get("C"), errs[0].get("M")),
                                 ("FATAL", "0A000", "unsupported frontend protocol %s: server "
                                  "supports 3.0 to 3.0" % code))
        s = self.connect()
        try:
            for req in (GSSREQ, SSLREQ, GSSREQ):
                s.sendall(req)
                self.assertEqual(s.recv(1), b"N")
            hz.sync_login(s, self.pg.app_user, self.pg.database, self.pg.app_password)
            self.assertEqual(hz.simple_query(s, "select 1"), ([[b"1"]], []))
        finally:
            s.close()
        self.finish("second encryption request")

    def expect_on(self, s, payload):
        """payload sent on s: the ErrorResponses before it closed."""
        s.sendall(payload)
        data, closed = hz.read_until_closed(s, LOGIN_TIMEOUT + 30)
        self.assertTrue(closed, data[:100])
        errs = hz.error_fields_in(data)
        self.assertTrue(errs, data[:100])
        return errs

    def test_truncated_startup_closed_at_login_timeout(self):
        for what, payload in [
                ("nothing", b""),
                ("2 bytes of length", b"\x00\x00"),
                ("half a startup", hz.startup_packet("app", "pgwharf")[:20]),
                ("GSSENCRequest then nothing", GSSREQ)]:
            with self.subTest(what):
                self.expect_08p01(payload, what, at_login_timeout=True)
        self.finish("truncated startup")

    def test_random_bytes(self):
        # 40 connections at once (most wait for client_login_timeout, so
        # one after the other would take minutes).
        rnd = random.Random(20261130)
        payloads = []
        for i in range(40):
            n = rnd.choice([1, 3, 4, 5, 8, 16, 64, 500, 4096, 20000])
            payloads.append(bytes(rnd.getrandbits(8) for _ in range(n)))
        results = [None] * len(payloads)

        def one(i):
            s = self.connect()
            try:
                s.sendall(payloads[i])
            except OSError:
                pass                        # closed while we were still sending
            # At once or at client_login_timeout; only a guard against one
            # left open for ever.
            data, closed = hz.read_until_closed(s, LOGIN_TIMEOUT + 30)
            s.close()
            if data[:1] == b"N":
                data = data[1:]
            results[i] = (closed, hz.error_fields_in(data))

        threads = [threading.Thread(target=one, args=(i,)) for i in range(len(payloads))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(LOGIN_TIMEOUT + 60)
        for i, (closed, errs) in enumerate(results):
            with self.subTest(i=i, n=len(payloads[i])):
                self.assertTrue(closed, "left open: %r" % payloads[i][:16])
                # Whatever pgwharf said, it said it with a SQLSTATE.
                for e in errs:
                    self.assertTrue(e.get("C"), e)
        print("random first packets: %d closed, %d with an ErrorResponse"
              % (sum(r[0] for r in results), sum(1 for r in results if r[1])))
        self.finish("random bytes")

    # --- during authentication (md5) ---

    def test_wrong_messages_during_auth(self):
        cases = [
            ("query instead of password", hz.query_msg("select 1"), "expected password"),
            ("password length 0xFFFFFFFF", b"p\xff\xff\xff\xff", None),
            ("password length 3", b"p\x00\x00\x00\x03", None),
            # PostgreSQL's PG_MAX_AUTH_TOKEN_LENGTH is 65535
            ("password beyond the cap", b"p" + struct.pack("!I", 70000) + b"x" * 996, None),
            ("password without NUL", hz.msg(b"p", b"md5abc"), None),
            ("startup again", hz.startup_packet("app", "pgwharf"), None),
        ]
        for what, payload, message in cases:
            with self.subTest(what):
                self.expect_08p01(payload, what, after_auth_request=True, message=message)
        self.finish("wrong messages during auth")

    def test_malformed_sent_together_with_the_startup_packet(self):
        # The same violations, but in the same write as the startup packet
        # (so pgwharf has them in its buffer when it asks for the password):
        # PostgreSQL answers at once; pgwharf must not sit on them until
        # client_login_timeout.
        pk = hz.startup_packet(self.pg.app_user, self.pg.database)
        cases = [
            ("query instead of password", pk + hz.query_msg("select 1")),
            ("password length 0xFFFFFFFF", pk + b"p\xff\xff\xff\xff"),
            ("password length 3", pk + b"p\x00\x00\x00\x03"),
        ]
        for what, payload in cases:
            with self.subTest(what):
                self.expect_08p01(payload, what)
        self.finish("malformed with startup")

    def test_truncated_password_closed_at_login_timeout(self):
        self.expect_08p01(b"p\x00\x00\x00\x28md5", "truncated password",
                          after_auth_request=True, at_login_timeout=True)
        self.finish("truncated password")

    # --- after login ---

    def test_bad_lengths_after_login(self):
        cases = [
            ("length 0", b"Q\x00\x00\x00\x00"),
            ("length 3", b"Q\x00\x00\x00\x03"),
            ("length 0xFFFFFFFF", b"Q\xff\xff\xff\xff"),
            ("length beyond 1 GiB", b"P" + struct.pack("!I", (1 << 30) + 1)),
            ("second message bad", hz.query_msg("select 1") + b"Q\x00\x00\x00\x01"),
        ]
        for what, payload in cases:
            with self.subTest(what):
                self.expect_08p01(payload, what, login=True)
        self.finish("bad lengths after login")

    def test_wrong_phase_after_login(self):
        # Messages that only belong to the startup or auth phase, sent once
        # logged in: PostgreSQL (behind pgwharf) or pgwharf refuses them
        # with 08P01, and only this client is affected.
        cases = [
            ("password message when none was asked", hz.msg(b"p", b"secret\x00")),
            ("startup packet again", hz.startup_packet("app", "pgwharf")),
            ("SSLRequest after login", SSLREQ),
        ]
        for what, payload in cases:
            with self.subTest(what):
                self.expect_08p01(payload, what, login=True)
        # Servers killed by PostgreSQL over these are replaced.
        self.assertEqual(self.px.psql("select 'ok'", user=self.pg.app_user), "ok")
        self.finish("wrong phase after login")

    def test_random_bytes_after_login(self):
        rnd = random.Random(7)
        for i in range(20):
            n = rnd.choice([1, 5, 100, 5000, 70000])
            payload = bytes(rnd.getrandbits(8) for _ in range(n))
            s = self.connect(login=True)
            try:
                s.sendall(payload)
                s.shutdown(socket.SHUT_WR)      # and nothing more: EOF
            except OSError:
                pass
            data, closed = hz.read_until_closed(s, 10)
            s.close()
            with self.subTest(i=i, n=n):
                self.assertTrue(closed, "left open after %r" % payload[:16])
                for e in hz.error_fields_in(data):
                    self.assertTrue(e.get("C"), e)
        self.finish("random bytes after login")

    def test_pipelined_startup_and_query_with_trust(self):
        # Not malformed: a client may send its first query right behind the
        # startup packet; with trust auth it must be answered.
        px = self.start_pgwharf(settings={"pool_mode": "transaction", "auth_type": "trust",
                                          "default_pool_size": 2})
        s = socket.create_connection((px.host, px.port), timeout=10)
        s.sendall(hz.startup_packet(self.pg.app_user, self.pg.database)
                  + hz.query_msg("select 'pipelined'"))
        seen = []
        while True:
            t, body = hz.recv_msg(s)
            seen.append(t)
            if t == b"D":
                self.assertIn(b"pipelined", body)
            if t == b"Z" and b"D" in seen:
                break
            if t == b"E":
                self.fail("error: %s" % hz.parse_fields(body))
        s.close()
        px.stop()
        self.finish("pipelined startup")


if __name__ == "__main__":
    unittest.main()
