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
"""

import hashlib
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

    def read_until_ready(self, s):
        got = []
        while True:
            t, body = hz.recv_msg(s)
            got.append((t, body))
            if t == b"Z":
                return got

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

        def run_b():
            try:
                b = socket.create_connection((self.px.host, self.px.port), timeout=40)
                try:
                    result["port"] = b.getsockname()[1]
                    hz.sync_login(b, self.pg.user, self.pg.database, self.pg.password)
                    b.sendall(hz.query_msg("select 42"))
                    result["msgs"] = self.read_until_ready(b)
                finally:
                    b.close()
            except Exception as e:          # reported below
                result["error"] = e

        tb = threading.Thread(target=run_b)
        tb.start()

        def b_asked():
            if "error" in result:
                return True
            port = str(result.get("port"))
            return any(row[4] in ("active", "waiting") and row[6] == port
                       for row in self.px.admin("show clients"))
        hz.wait_until(b_asked, 20, what="client B's query reached pgwharf")
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


class TestSettingsWithALargeFirstQuery(pt.PgwharfTestCase):

    def login(self, px, **params):
        s = socket.create_connection((px.host, px.port), timeout=20)
        self.addCleanup(s.close)
        s.sendall(hz.startup_packet(self.pg.user, self.pg.database, **params))
        while True:
            t, body = hz.recv_msg(s)
            if t == b"R" and struct.unpack("!I", body[:4])[0] == 5:
                inner = hashlib.md5((self.pg.password + self.pg.user).encode()).hexdigest()
                outer = hashlib.md5(inner.encode() + body[4:8]).hexdigest()
                s.sendall(hz.msg(b"p", b"md5" + outer.encode() + b"\x00"))
            elif t == b"E":
                self.fail(hz.parse_fields(body))
            elif t == b"Z":
                return s

    def query(self, s, sql):
        s.sendall(hz.query_msg(sql))
        rows, errs = [], []
        while True:
            t, body = hz.recv_msg(s)
            if t == b"D":
                rows.append(hz.data_row(body))
            elif t == b"E":
                errs.append(hz.parse_fields(body))
            elif t == b"Z":
                return rows, errs

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


if __name__ == "__main__":
    unittest.main()
