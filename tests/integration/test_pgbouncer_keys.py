"""PgBouncer 1.24/1.25 general keys that pgwharf once refused or ignored:
login_notify_message, pool_idle_timeout, dns_nxdomain_ttl, and Unix
sockets in the abstract namespace (unix_socket_dir and host= starting
with "@").
"""

import os
import socket
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


if __name__ == "__main__":
    unittest.main()
