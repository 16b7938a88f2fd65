"""The admin console (virtual database pgbouncer / pgwharf) through real
clients: every SHOW has PgBouncer's columns (names, order, type OIDs) and
live values; admin and stats users; PAUSE/RESUME, RELOAD, SET, KILL,
KILL_CLIENT, RECONNECT/WAIT_CLOSE, SHUTDOWN."""

import asyncio
import datetime
import hashlib
import os
import re
import socket
import struct
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import unittest

import pgwharf_test as pt
import pgw_hardening as hz

try:
    import psycopg2
except ImportError:          # the tests skip; scripts/deps.sh installs it
    psycopg2 = None
try:
    import psycopg
except ImportError:
    psycopg = None

TEXT, INT4, INT8, NUM = 25, 23, 20, 1700
TS = TEXT       # times are text, "2026-12-01 15:01:52 UTC", as PgBouncer sends them

SOCKET_COLS = [
    ("type", TEXT), ("user", TEXT), ("database", TEXT), ("replication", TEXT),
    ("state", TEXT), ("addr", TEXT), ("port", INT4), ("local_addr", TEXT),
    ("local_port", INT4), ("connect_time", TS), ("request_time", TS), ("wait", INT4),
    ("wait_us", INT4), ("close_needed", INT4), ("ptr", TEXT), ("link", TEXT),
    ("remote_pid", INT4), ("tls", TEXT), ("application_name", TEXT),
    ("prepared_statements", INT4), ("id", INT8),
]
DEBUG_COLS = [(n, INT4) for n in ("recv_pos", "pkt_pos", "pkt_remain", "send_pos",
                                    "send_remain", "pkt_avail", "send_avail")]
STAT_NAMES = ["server_assignment_count", "xact_count", "query_count", "received", "sent",
              "xact_time", "query_time", "wait_time", "client_parse_count",
              "server_parse_count", "bind_count"]
COLUMNS = {
    "POOLS": [
        ("database", TEXT), ("user", TEXT), ("cl_active", INT4), ("cl_waiting", INT4),
        ("cl_active_cancel_req", INT4), ("cl_waiting_cancel_req", INT4),
        ("sv_active", INT4), ("sv_active_cancel", INT4), ("sv_being_canceled", INT4),
        ("sv_idle", INT4), ("sv_used", INT4), ("sv_tested", INT4), ("sv_login", INT4),
        ("maxwait", INT4), ("maxwait_us", INT4), ("pool_mode", TEXT),
        ("load_balance_hosts", TEXT),
    ],
    "CLIENTS": SOCKET_COLS,
    "SERVERS": SOCKET_COLS,
    "DATABASES": [
        ("name", TEXT), ("host", TEXT), ("port", INT4), ("database", TEXT),
        ("force_user", TEXT), ("pool_size", INT4), ("min_pool_size", INT4),
        ("reserve_pool_size", INT4), ("server_lifetime", INT4), ("pool_mode", TEXT),
        ("load_balance_hosts", TEXT), ("max_connections", INT4), ("current_connections", INT4),
        ("max_client_connections", INT4), ("current_client_connections", INT4),
        ("paused", INT4), ("disabled", INT4),
    ],
    "USERS": [
        ("name", TEXT), ("pool_size", TEXT), ("reserve_pool_size", TEXT), ("pool_mode", TEXT),
        ("max_user_connections", INT4), ("current_connections", INT4),
        ("max_user_client_connections", INT4), ("current_client_connections", INT4),
    ],
    "CONFIG": [("key", TEXT), ("value", TEXT), ("default", TEXT), ("changeable", TEXT)],
    "LISTS": [("list", TEXT), ("items", INT4)],
    "MEM": [("name", TEXT), ("size", INT4), ("used", INT4), ("free", INT4),
            ("memtotal", INT8)],
    "VERSION": [("version", TEXT)],
    "STATE": [("key", TEXT), ("value", TEXT)],
    "STATS": [("database", TEXT)]
             + [("total_" + n, NUM) for n in STAT_NAMES[:3]]
             + [("total_received", NUM), ("total_sent", NUM)]
             + [("total_" + n, NUM) for n in STAT_NAMES[5:]]
             + [("avg_" + n, NUM) for n in STAT_NAMES[:3]]
             + [("avg_recv", NUM), ("avg_sent", NUM)]
             + [("avg_" + n, NUM) for n in STAT_NAMES[5:]],
    "STATS_TOTALS": [("database", TEXT)]
                    + [(n, NUM) for n in STAT_NAMES[:3]]
                    + [("bytes_received", NUM), ("bytes_sent", NUM)]
                    + [(n, NUM) for n in STAT_NAMES[5:]],
    "STATS_AVERAGES": [("database", TEXT)]
                      + [(n, NUM) for n in STAT_NAMES[:3]]
                      + [("bytes_received", NUM), ("bytes_sent", NUM)]
                      + [(n, NUM) for n in STAT_NAMES[5:8]]
                      + [("avg_" + n, NUM) for n in STAT_NAMES[8:]],
    "SOCKETS": SOCKET_COLS + DEBUG_COLS,
    "ACTIVE_SOCKETS": SOCKET_COLS + DEBUG_COLS,
    "BREAKERS": [("backend", TEXT), ("state", TEXT), ("failures", INT4), ("trips", INT8),
                 ("last_error", TEXT), ("last_sqlstate", TEXT), ("next_probe", TS)],
}


wait_until = pt.wait_until
Background = pt.Background


@unittest.skipIf(psycopg2 is None, "psycopg2 is not installed")
class AdminTestCase(pt.PgwharfTestCase):

    def start(self, **settings):
        base = {"pool_mode": "transaction"}
        base.update(settings)
        return self.start_pgwharf(settings=base)

    def admin_conn(self, px, user=None, password=None, db="pgbouncer"):
        return self.console_conn(px, db=db, user=user, password=password)

    def client(self, px, autocommit=True, **extra):
        return self.db_conn(px, autocommit, **extra)

    show = staticmethod(pt.show_table)     # (column names, rows as dicts)
    rows = staticmethod(pt.show)           # rows matching column=value

    def pool(self, conn, db=None, user=None):
        return pt.pool_row(conn, db or self.pg.database, user or self.pg.user)

    def wait_pool(self, conn, **want):
        """Until the test database's pool (SHOW POOLS) has want's values."""
        return pt.wait_pool(conn, self.pg.database, self.pg.user, **want)


class TestShowColumns(AdminTestCase):

    def test_every_show_has_pgbouncer_columns_and_types(self):
        px = self.start()
        self.assertEqual(px.psql("select 1"), "1")   # makes a pool and a server
        conn = self.admin_conn(px)
        for what, expected in COLUMNS.items():
            with self.subTest(show=what):
                cur = conn.cursor()
                cur.execute("SHOW %s;" % what.lower())
                got = [(d.name, d.type_code) for d in cur.description]
                self.assertEqual(got, expected)
                cur.fetchall()

    def test_show_mem_memtotal_is_int8(self):
        # PgBouncer 1.18 (run side by side) types every SHOW MEM number
        # int4; memtotal, size * (used + free), passes 2^31 at 65 456
        # iobufs of 32 808 bytes (two for each of 32 728 sessions moving
        # data at once), where pgwharf wrote the product into its int4
        # column: a value no int4 holds, which typed clients (pgx) refuse.
        # It is int8, as SHOW CLIENTS' id is, for the same reason.
        px = self.start()
        conn = self.admin_conn(px)
        cur = conn.cursor()
        cur.execute("SHOW MEM")
        self.assertEqual([(d.name, d.type_code) for d in cur.description],
                         [("name", TEXT), ("size", INT4), ("used", INT4), ("free", INT4),
                          ("memtotal", INT8)])
        for name, size, used, free, memtotal in cur.fetchall():
            self.assertEqual(memtotal, size * (used + free), name)

    def test_psql_and_both_database_names(self):
        px = self.start()
        rows = px.admin("SHOW VERSION")
        self.assertEqual(len(rows), 1)
        self.assertIn("pgwharf", rows[0][0])
        # "pgwharf" is the console too, unless [databases] has a database of
        # that name (as the test cluster's is)
        px2 = self.start_pgwharf(settings={"admin_users": self.pg.user},
                                 databases={"app": self.pg.conn_string()})
        self.assertIn("pgwharf", px2.admin("SHOW VERSION", db="pgwharf")[0][0])
        self.assertEqual(px.psql("select current_database()", db="pgwharf"), "pgwharf")
        # several commands in one query string, trailing ';', any case
        conn = self.admin_conn(px)
        cur = conn.cursor()
        cur.execute("show state ;  SHOW Version;")
        self.assertIn("pgwharf", cur.fetchall()[0][0])

    def test_console_welcome_has_pgbouncers_parameters(self):
        # PgBouncer's console welcome, and PostgreSQL's, reports TimeZone
        # and is_superuser too; pgwharf's lacked both.
        px = self.start()
        with socket.create_connection((px.host, px.port), timeout=10) as s:
            params = hz.sync_login(s, self.pg.user, "pgbouncer", self.pg.password)
            self.assertRegex(params["server_version"], r"^\d+\.\d+\.\d+/pgwharf$")
            self.assertEqual({k: params.get(k) for k in (
                "client_encoding", "server_encoding", "TimeZone",
                "standard_conforming_strings", "is_superuser")},
                {"client_encoding": "UTF8", "server_encoding": "UTF8", "TimeZone": "UTC",
                 "standard_conforming_strings": "on", "is_superuser": "on"})
            self.assertTrue(params["DateStyle"].startswith("ISO"))
            # the TimeZone it reports is the one SHOW timezone answers
            rows, errors = hz.simple_query(s, "SHOW timezone")
            self.assertEqual((rows, errors), ([[b"UTC"]], []))

    def test_a_server_due_for_its_check_is_used_in_every_view(self):
        # server_check_delay = 0: every reuse is checked.  SHOW POOLS (and
        # /metrics) counted the idle server as sv_used, SHOW SERVERS and
        # SHOW SOCKETS called it idle (they read the delay as "never").
        px = self.start(default_pool_size=3, server_check_delay=0)
        cl = self.client(px, application_name="check-delay-0")
        cl.cursor().execute("select 1")
        conn = self.admin_conn(px)
        pool = self.pool(conn)
        self.assertEqual((pool["sv_idle"], pool["sv_used"]), (0, 1))
        servers = self.rows(conn, "SERVERS", database=self.pg.database)
        self.assertEqual([r["state"] for r in servers], ["used"])
        sockets = [r for r in self.rows(conn, "SOCKETS") if r["state"].startswith("sv_")
                   and r["database"] == self.pg.database]
        self.assertEqual([r["state"] for r in sockets], ["sv_used"])
        # its check runs at the next lend, and the views agree again
        cl.cursor().execute("select 2")
        pool = self.pool(conn)
        self.assertEqual(pool["sv_idle"] + pool["sv_used"], 1)
        servers = self.rows(conn, "SERVERS", database=self.pg.database)
        self.assertEqual([r["state"] for r in servers],
                         ["used" if pool["sv_used"] else "idle"])

    def test_live_values(self):
        px = self.start(default_pool_size=3)
        cl = self.client(px, application_name="live-values")
        cl.cursor().execute("select 1")
        conn = self.admin_conn(px)
        pool = self.pool(conn)
        self.assertEqual(pool["pool_mode"], "transaction")
        self.assertEqual(pool["cl_active"], 1)
        self.assertEqual(pool["cl_waiting"], 0)
        self.assertEqual(pool["sv_idle"] + pool["sv_used"], 1)
        clients = self.rows(conn, "CLIENTS", application_name="live-values")
        self.assertEqual(len(clients), 1)
        self.assertEqual(clients[0]["state"], "idle")
        self.assertEqual(clients[0]["database"], self.pg.database)
        self.assertEqual(clients[0]["addr"], "127.0.0.1")
        self.assertEqual(clients[0]["local_port"], px.port)
        # times as PgBouncer writes them (text, not timestamp: scripts parse them)
        for col in ("connect_time", "request_time"):
            self.assertRegex(clients[0][col], r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$")
        servers = self.rows(conn, "SERVERS", database=self.pg.database)
        self.assertEqual(len(servers), 1)
        self.assertEqual(servers[0]["port"], self.pg.port)
        self.assertGreater(servers[0]["remote_pid"], 0)
        connected = datetime.datetime.strptime(servers[0]["connect_time"],
                                               "%Y-%m-%d %H:%M:%S UTC")
        now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
        self.assertLess(abs((now - connected).total_seconds()), 60)
        dbs = {r["name"]: r for r in self.show(conn, "DATABASES")[1]}
        self.assertEqual(dbs[self.pg.database]["pool_size"], 3)
        self.assertEqual(dbs[self.pg.database]["current_connections"], 1)
        self.assertEqual(dbs[self.pg.database]["current_client_connections"], 1)
        self.assertEqual(dbs[self.pg.database]["paused"], 0)
        config_rows = self.show(conn, "CONFIG")[1]
        # in the order of the keys' names, as PgBouncer lists them
        keys = [r["key"] for r in config_rows]
        self.assertEqual(keys, sorted(keys))
        config = {r["key"]: r for r in config_rows}
        self.assertEqual(config["default_pool_size"]["value"], "3")
        self.assertEqual(config["default_pool_size"]["default"], "20")
        self.assertEqual(config["listen_port"]["changeable"], "no")
        # booleans as PgBouncer writes them
        self.assertEqual((config["log_connections"]["value"],
                          config["log_connections"]["default"]), ("1", "1"))
        self.assertEqual((config["server_round_robin"]["value"],
                          config["server_round_robin"]["default"]), ("0", "0"))
        lists = {r["list"]: r["items"] for r in self.show(conn, "LISTS")[1]}
        self.assertEqual(lists["pools"], 2)     # and the console's, as SHOW POOLS
        self.assertEqual(lists["databases"], 4)    # and the console's, as SHOW DATABASES
        self.assertGreaterEqual(lists["used_clients"], 2)
        # users: what SHOW USERS lists, as PgBouncer's user_list is both
        # (it was the [users] entries alone: 0 here, where a pool's user is listed)
        self.assertEqual(lists["users"], len(self.show(conn, "USERS")[1]))
        self.assertGreaterEqual(lists["users"], 1)
        state = {r["key"]: r["value"] for r in self.show(conn, "STATE")[1]}
        self.assertEqual(state, {"active": "yes", "paused": "no", "suspended": "no"})
        users = self.rows(conn, "USERS", name=self.pg.user)
        # the client and this console session, as PgBouncer counts them
        self.assertEqual(users[0]["current_client_connections"], 2)
        breakers = self.show(conn, "BREAKERS")[1]
        self.assertEqual([b["state"] for b in breakers], ["closed"])
        self.assertEqual(breakers[0]["backend"], "%s:%d" % (self.pg.host, self.pg.port))

    def test_show_lists_databases_are_the_rows_of_show_databases(self):
        # It counted the [databases] entries: "*" (no row of its own) in,
        # the names "*" serves (a row each) out.  PgBouncer counts the
        # database list SHOW DATABASES walks.
        px = self.start_pgwharf(settings={"pool_mode": "transaction"}, databases={
            "*": self.pg.conn_string(self.pg.database),
            self.pg.database: self.pg.conn_string(self.pg.database)})
        conn = self.admin_conn(px)

        def counts():
            lists = {r["list"]: r["items"] for r in self.show(conn, "LISTS")[1]}
            return lists["databases"], len(self.show(conn, "DATABASES")[1])
        self.assertEqual(counts(), (2, 2))     # the entry, the console's database
        self.db_conn(px, db=self.pg.database2).cursor().execute("select 1")  # by "*"
        self.assertEqual(counts(), (3, 3))

    def test_show_databases_lists_the_consoles_database(self):
        # As PgBouncer (1.18 run side by side on one pgbouncer.ini): its
        # admin database has a row (host NULL, the listen port, force_user
        # pgbouncer, pool_size 2, pool_mode statement), in its place by
        # name, and SHOW LISTS databases counts it: pgwharf had none (1
        # database where PgBouncer had 2), as SHOW POOLS had no console
        # pool before.  A PAUSE of all leaves the console alone.
        px = self.start(server_lifetime="1234")
        conn = self.admin_conn(px)
        self.admin_conn(px).cursor().execute("SHOW VERSION")     # a second console
        names = [r["name"] for r in self.show(conn, "DATABASES")[1]]
        self.assertIn("pgbouncer", names)
        self.assertEqual(names, sorted(names))
        conn.cursor().execute("PAUSE")
        row = self.rows(conn, "DATABASES", name="pgbouncer")
        self.assertEqual(row, [dict(
            name="pgbouncer", host=None, port=px.port, database="pgbouncer",
            force_user="pgbouncer", pool_size=2, min_pool_size=0, reserve_pool_size=0,
            server_lifetime=1234, pool_mode="statement", load_balance_hosts=None,
            max_connections=0, current_connections=0, max_client_connections=0,
            current_client_connections=2, paused=0, disabled=0)])
        conn.cursor().execute("RESUME")
        lists = {r["list"]: r["items"] for r in self.show(conn, "LISTS")[1]}
        self.assertEqual(lists["databases"], len(names))

    def test_show_pools_lists_the_consoles_pool(self):
        # As PgBouncer (1.18 run side by side): a pgbouncer/pgbouncer row
        # whose cl_active are the console sessions, no servers, pool_mode
        # statement.  pgwharf had no such row, though SHOW CLIENTS and
        # SOCKETS list the console's clients as that pool's.
        px = self.start()
        self.assertEqual(px.psql("select 1"), "1")
        conn = self.admin_conn(px)
        self.admin_conn(px).cursor().execute("SHOW VERSION")     # a second console
        row = self.rows(conn, "POOLS", database="pgbouncer")
        self.assertEqual(len(row), 1, self.show(conn, "POOLS")[1])
        want = {c: 0 for c, _ in COLUMNS["POOLS"][2:15]}
        want.update(database="pgbouncer", user="pgbouncer", cl_active=2,
                    pool_mode="statement", load_balance_hosts=None)
        self.assertEqual(row[0], want)
        lists = {r["list"]: r["items"] for r in self.show(conn, "LISTS")[1]}
        self.assertEqual(lists["pools"], len(self.show(conn, "POOLS")[1]))

    def test_show_stats_lists_the_consoles_database(self):
        # As PgBouncer 1.18 (run side by side): SHOW STATS, STATS_TOTALS and
        # STATS_AVERAGES have a row for its admin database, in its place
        # by name, whose xact_count and query_count are the console
        # sessions that sent a Query (one each, however many it sent: its
        # query never ends at a server's ReadyForQuery), the rest 0.
        # pgwharf had no such row.
        px = self.start()
        self.assertEqual(px.psql("select 1"), "1")
        conn = self.admin_conn(px)
        with socket.create_connection((px.host, px.port), timeout=30) as s:
            hz.sync_login(s, self.pg.user, "pgbouncer", self.pg.password)  # no Query
            for view in ("STATS", "STATS_TOTALS", "STATS_AVERAGES"):
                with self.subTest(view=view):
                    names = [r["database"] for r in self.show(conn, view)[1]]
                    self.assertEqual(names, sorted(names))
                    self.assertIn("pgbouncer", names)
            other = self.admin_conn(px)
            for _ in range(2):
                other.cursor().execute("SHOW VERSION")
            row = self.rows(conn, "STATS_TOTALS", database="pgbouncer")
            want = {c: 0 for c, _ in COLUMNS["STATS_TOTALS"][1:]}
            want.update(database="pgbouncer", xact_count=2, query_count=2)
            self.assertEqual(row, [want])
            row = self.rows(conn, "STATS", database="pgbouncer")[0]
            self.assertEqual((row["total_xact_count"], row["total_query_count"],
                              row["total_received"], row["total_wait_time"]), (2, 2, 0, 0))
            # SHOW TOTALS sums them in too, as PgBouncer's (psql's 1 and 2)
            totals = {r["name"]: r["value"] for r in self.show(conn, "TOTALS")[1]}
            self.assertEqual((totals["total_xact_count"], totals["total_query_count"]), (3, 3))

    def test_show_stats_counts_a_console_session_that_sent_no_query(self):
        # As PgBouncer 1.18 (run side by side): its console session counts
        # one transaction and one query at its first message of any kind
        # but Terminate (handle_client_work counts before it hands the
        # message to the console): one that sends only a Parse and a Sync,
        # or only a Sync, counts.  pgwharf counted a Query only (review r6).
        px = self.start()
        conn = self.admin_conn(px)

        def counted():
            row = self.rows(conn, "STATS_TOTALS", database="pgbouncer")[0]
            return (row["xact_count"], row["query_count"])
        before = counted()                    # conn's own session: (1, 1)
        for msgs in (hz.parse_msg("", "SHOW VERSION") + hz.msg(b"S"), hz.msg(b"S")):
            with socket.create_connection((px.host, px.port), timeout=30) as s:
                hz.sync_login(s, self.pg.user, "pgbouncer", self.pg.password)
                s.sendall(msgs)
                hz.read_until_ready(s)
        with socket.create_connection((px.host, px.port), timeout=30) as s:
            hz.sync_login(s, self.pg.user, "pgbouncer", self.pg.password)
            s.sendall(hz.msg(b"X"))           # Terminate alone: not counted
            hz.read_until_closed(s, 10)
        self.assertEqual(counted(), (before[0] + 2, before[1] + 2))

    def test_the_consoles_pool_is_one_under_either_name(self):
        # Sessions of the console under either name are the one pool's,
        # in SHOW POOLS' place for it (they were sorted under the name
        # each came in by: a database between "pgbouncer" and "pgwharf"
        # came between them).  A [databases] entry named "pgbouncer"
        # leaves the console "pgwharf", and its pool is named so, not
        # pgbouncer/pgbouncer beside that database's pools.
        cs = self.pg.conn_string()
        px = self.start_pgwharf(settings={"admin_users": self.pg.user,
                                          "pool_mode": "transaction"},
                                databases={"pgc": cs})
        self.client(px, db="pgc", application_name="pgc-client").cursor().execute(
            "select 1")
        self.admin_conn(px, db="pgwharf").cursor().execute("SET application_name = 'x'")
        conn = self.admin_conn(px, db="pgbouncer")
        self.assertEqual([(r["database"], r["user"]) for r in self.show(conn, "POOLS")[1]],
                         [("pgbouncer", "pgbouncer"), ("pgc", self.pg.user)])
        self.assertEqual([r["database"] for r in self.show(conn, "CLIENTS")[1]],
                         ["pgwharf", "pgbouncer", "pgc"])
        px2 = self.start_pgwharf(settings={"admin_users": self.pg.user,
                                           "pool_mode": "transaction"},
                                 databases={"pgbouncer": cs})
        self.client(px2, db="pgbouncer").cursor().execute("select 1")
        conn2 = self.admin_conn(px2, db="pgwharf")
        self.assertEqual([(r["database"], r["user"], r["cl_active"], r["pool_mode"])
                          for r in self.show(conn2, "POOLS")[1]],
                         [("pgbouncer", self.pg.user, 1, "transaction"),
                          ("pgwharf", "pgbouncer", 1, "statement")])

    def test_an_idle_servers_application_name_is_the_servers(self):
        # SHOW SERVERS' application_name is the server's own, as PgBouncer
        # shows it: an idle server keeps its last client's (it was empty
        # unless a client held the server).
        px = self.start()
        cl = self.client(px, application_name="last-client")
        cl.cursor().execute("select 1")
        conn = self.admin_conn(px)
        servers = self.rows(conn, "SERVERS", database=self.pg.database)
        self.assertEqual([(s["state"], s["application_name"]) for s in servers],
                         [("idle", "last-client")])

    def test_show_servers_lists_the_user_a_server_logs_in_as(self):
        # An entry's user= changed by a reload while a client waited in the
        # old user's pool: the server opened for it after the reload logs
        # in as the new user (as in PgBouncer, whose pool takes the new
        # name), but SHOW SERVERS listed it under the old one, the pool's.
        app, su = self.pg.app_user, self.pg.user
        px = self.start_pgwharf(
            settings={"admin_users": su, "pool_mode": "transaction"},
            databases={"f": self.pg.conn_string(user=app, password=self.pg.app_password)
                       + " pool_size=1"})
        conn = self.admin_conn(px)
        holder = self.client(px, db="f", autocommit=False)
        self.assertEqual(pt.one(holder, "select session_user"), app)   # holds the server
        waiter = self.client(px, db="f")

        def ask():
            cur = waiter.cursor()
            cur.execute("select session_user, pg_backend_pid()")
            return cur.fetchone()
        bg = Background(ask)
        wait_until(lambda: pt.pool_row(conn, "f", app)["cl_waiting"] == 1, what="the wait")
        px.databases["f"] = self.pg.conn_string(user=su, password=self.pg.password) \
            + " pool_size=1"
        px.reload()
        wait_until(lambda: self.rows(conn, "DATABASES", name="f")[0]["force_user"] == su,
                   what="the reload")
        holder.commit()          # its server (app's) closes; the waiter's logs in
        bg.join(10)
        self.assertIsNone(bg.error)
        self.assertEqual(bg.result[0], su)
        servers = [(r["user"], r["remote_pid"]) for r in self.rows(conn, "SERVERS", database="f")]
        self.assertEqual(servers, [(su, bg.result[1])])

    def test_a_reload_that_changes_the_forced_user_renames_its_pool(self):
        # PgBouncer 1.18, run side by side, renames an entry's pool in
        # place when a reload changes its user= (its forced user): SHOW
        # POOLS lists it under the new user at once, with its clients; the
        # server lent at the reload (logged in as the old user) finishes
        # its transaction, close_needed, and closes when it comes back.
        # pgwharf kept the pool under the old user while its clients stayed
        # (and opened servers for them logged in as the new one) and made a
        # second pool for the new user at their next request.
        app, su = self.pg.app_user, self.pg.user
        px = self.start_pgwharf(
            settings={"admin_users": su, "pool_mode": "transaction"},
            databases={"f": self.pg.conn_string(user=app, password=self.pg.app_password)})
        conn = self.admin_conn(px)
        holder = self.client(px, db="f", autocommit=False)
        self.assertEqual(pt.one(holder, "select session_user"), app)   # holds the server
        px.databases["f"] = self.pg.conn_string(user=su, password=self.pg.password)
        px.reload()
        wait_until(lambda: self.rows(conn, "DATABASES", name="f")[0]["force_user"] == su,
                   what="the reload")
        pools = [(r["user"], r["cl_active"], r["sv_active"]) for r in
                 self.rows(conn, "POOLS", database="f")]
        self.assertEqual(pools, [(su, 1, 1)])
        servers = [(r["user"], r["close_needed"]) for r in self.rows(conn, "SERVERS", database="f")]
        self.assertEqual(servers, [(app, 1)])
        self.assertEqual(pt.one(holder, "select session_user"), app)   # its transaction goes on
        holder.commit()
        wait_until(lambda: not self.rows(conn, "SERVERS", database="f"),
                   what="the old user's server to close")
        self.assertEqual(pt.one(holder, "select session_user"), su)
        holder.commit()
        self.assertEqual([r["user"] for r in self.rows(conn, "POOLS", database="f")], [su])
        self.assertEqual([r["user"] for r in self.rows(conn, "SERVERS", database="f")], [su])
        self.assertRegex(px.log(), r"event=pool_user_changed db=f user=%s old_user=%s"
                         % (su, app))

    def test_show_config_writes_null_where_pgbouncer_does(self):
        # PgBouncer writes NULL for the keys it has no default for (their
        # default, and their value while unset); other unset strings are
        # empty strings.  pgwharf wrote "" for all of them.
        px = self.start()
        conn = self.admin_conn(px)
        config = {r["key"]: (r["value"], r["default"]) for r in self.show(conn, "CONFIG")[1]}
        for key in ("auth_dbname", "auth_ident_file", "auth_user", "client_tls13_ciphers",
                    "server_tls13_ciphers", "user"):
            with self.subTest(key=key):
                self.assertEqual(config[key], (None, None))
        self.assertEqual(config["auth_file"][1], None)
        # verbose too has no default there (pgwharf wrote 0); its value is
        # a number
        self.assertEqual(config["verbose"], ("0", None))
        self.assertTrue(config["auth_file"][0])            # set by the harness
        for key in ("auth_hba_file", "logfile", "unix_socket_group"):
            with self.subTest(key=key):
                self.assertEqual(config[key], ("", ""))

    def test_show_config_writes_unix_socket_mode_in_decimal(self):
        # PgBouncer's unix_socket_mode is an integer key: 0700 shows as
        # 448 (pgwharf echoed the text), its default as its key table
        # writes it, 0777, which README and --check say (pgwharf wrote 511).
        px = self.start(unix_socket_mode="0700")
        conn = self.admin_conn(px)
        config = {r["key"]: (r["value"], r["default"]) for r in self.show(conn, "CONFIG")[1]}
        self.assertEqual(config["unix_socket_mode"], ("448", "0777"))

    def test_databases_pools_and_users_are_listed_by_name(self):
        # As PgBouncer keeps them (database_list, pool_list, user_list in
        # order of name); pgwharf listed databases and [users] in the
        # config's order and pools in the order they were made.
        cs = self.pg.conn_string()
        px = self.start_pgwharf(settings={"admin_users": self.pg.user,
                                          "pool_mode": "transaction"},
                                databases={"zz": cs, "aa": cs, "mm": cs},
                                users={"zz_user": "pool_size=3", "aa_user": "pool_size=4"})
        for db in ("zz", "aa", "mm"):
            self.assertEqual(px.psql("select 1", db=db), "1")
        conn = self.admin_conn(px)
        names = [r["name"] for r in self.show(conn, "DATABASES")[1]]
        self.assertEqual(sorted(names), names)
        self.assertTrue({"zz", "aa", "mm"} <= set(names), names)
        pools = [(r["database"], r["user"]) for r in self.show(conn, "POOLS")[1]]
        # the console's pool (pgbouncer/pgbouncer) in its place by name too
        self.assertEqual(pools, [("aa", self.pg.user), ("mm", self.pg.user),
                                 ("pgbouncer", "pgbouncer"), ("zz", self.pg.user)])
        users = [(r["name"], r["pool_size"]) for r in self.show(conn, "USERS")[1]]
        # pool_size is text as PgBouncer writes it, "%9d" (it was "4")
        self.assertEqual(users, sorted([("aa_user", "        4"), (self.pg.user, ""),
                                        (self.pg.app_user, ""), ("pgbouncer", ""),
                                        ("zz_user", "        3")]))

    def test_users_of_several_pools_are_listed_once(self):
        # A user that several pools name (its clients' pools, entries whose
        # servers log in as it) is one SHOW USERS row, with all its servers
        # and clients (the list is sorted once, not searched per pool).
        app, su = self.pg.app_user, self.pg.user
        px = self.start_pgwharf(
            settings={"admin_users": su, "pool_mode": "session"},
            databases={db: self.pg.conn_string(user=app, password=self.pg.app_password)
                       for db in ("f1", "f2")})
        held = [self.client(px, db="f1"), self.client(px, db="f2"),
                self.client(px, db="f2", user=app, password=self.pg.app_password)]
        for c in held:
            self.assertEqual(pt.one(c, "select session_user"), app)
        conn = self.admin_conn(px)
        users = [(r["name"], r["current_connections"], r["current_client_connections"])
                 for r in self.show(conn, "USERS")[1]]
        self.assertEqual(users, sorted([(app, 3, 1), (su, 0, 3), ("pgbouncer", 0, 0)]))
        lists = {r["list"]: r["items"] for r in self.show(conn, "LISTS")[1]}
        self.assertEqual(lists["users"], 3)

    def test_show_users_lists_pgbouncer_and_the_auth_files_users(self):
        # As PgBouncer 1.18 (run side by side): its user list has the
        # auth_file's users, logged in or not, and the console's own user
        # pgbouncer, made at start; pgwharf listed neither (no row at all
        # for a console with no pool yet, SHOW LISTS users 0).
        su = self.pg.user
        px = self.start_pgwharf(settings={"admin_users": su},
                                auth_users={su: self.pg.password, "only_in_file": "secret"})
        conn = self.admin_conn(px)
        cols, rows = self.show(conn, "USERS")
        self.assertEqual([r["name"] for r in rows], sorted(["only_in_file", "pgbouncer", su]))
        by_name = {r["name"]: r for r in rows}
        self.assertEqual(by_name["pgbouncer"],
                         dict(name="pgbouncer", pool_size="", reserve_pool_size="",
                              pool_mode=None, max_user_connections=0, current_connections=0,
                              max_user_client_connections=0, current_client_connections=0))
        self.assertEqual(by_name[su]["current_client_connections"], 1)    # this console
        self.assertEqual(by_name["only_in_file"]["current_client_connections"], 0)
        lists = {r["list"]: r["items"] for r in self.show(conn, "LISTS")[1]}
        self.assertEqual(lists["users"], 3)

    def test_show_users_merges_the_auth_file_with_users_entries_and_logins(self):
        # The auth_file (sorted, each user once) is merged with the other
        # users, not sorted again with them: a [users] entry also in the
        # auth_file keeps its pool_size, the console's user and pgbouncer
        # in the file are listed once, and SHOW LISTS users (counted
        # without making the rows) agrees, with a large auth_file too.
        su = self.pg.user
        many = {"u%05d" % i: "pw" for i in range(3000)}
        many.update({su: self.pg.password, "pgbouncer": "x", "aa_user": "x", "zz": "x"})
        px = self.start_pgwharf(settings={"admin_users": su, "pool_mode": "transaction"},
                                users={"aa_user": "pool_size=4", "bb_user": "pool_size=5"},
                                auth_users=many)
        self.assertEqual(px.psql("select 1"), "1")
        conn = self.admin_conn(px)
        rows = self.show(conn, "USERS")[1]
        names = [r["name"] for r in rows]
        self.assertEqual(names, sorted(set(many) | {"bb_user"}))
        by_name = {r["name"]: r for r in rows}
        self.assertEqual(by_name["aa_user"]["pool_size"], "        4")
        self.assertEqual(by_name["bb_user"]["pool_size"], "        5")
        self.assertEqual(by_name["zz"]["pool_size"], "")
        self.assertEqual(by_name[su]["current_client_connections"], 1)    # this console
        lists = {r["list"]: r["items"] for r in self.show(conn, "LISTS")[1]}
        self.assertEqual(lists["users"], len(names))

    def start_zz_and_aa(self, pool_size):
        """Transaction mode, databases zz and aa (zz's pool made first)."""
        cs = self.pg.conn_string()
        return self.start_pgwharf(settings={"admin_users": self.pg.user,
                                            "pool_mode": "transaction",
                                            "default_pool_size": pool_size},
                                  databases={"zz": cs, "aa": cs})

    def seat_clients(self, px):
        """z1 (zz, holding its only server), a1 (aa), a console, z2 (zz)
        and a2 (aa, the other user), connected in that order: (z1, z2,
        the console)."""
        app = dict(user=self.pg.app_user, password=self.pg.app_password)
        z1 = self.client(px, autocommit=False, db="zz", application_name="z1")
        z1.cursor().execute("select 1")              # holds zz's only server
        self.client(px, db="aa", application_name="a1")
        conn = self.admin_conn(px)
        z2 = self.client(px, db="zz", application_name="z2")
        self.client(px, db="aa", application_name="a2", **app)
        return z1, z2, conn

    def test_clients_are_listed_pool_by_pool_as_pgbouncer(self):
        # PgBouncer walks its pools (by database, then user; the console's
        # clients are its pool pgbouncer/pgbouncer) and in each lists the
        # active clients, then the waiting, each list in the order the
        # clients joined it: one that waited goes to the end of the active
        # list once served.  pgwharf listed every client in the order it
        # connected.  (Checked against PgBouncer 1.18 with the same clients.)
        px = self.start_zz_and_aa(pool_size=1)
        z1, z2, conn = self.seat_clients(px)
        self.client(px, db="zz", application_name="z3")
        waiter = Background(lambda: z2.cursor().execute("select 2"))
        pt.wait_pool(conn, "zz", self.pg.user, cl_waiting=1)

        def order():            # through psql, itself a console client
            return [(r["database"], r["user"], r["application_name"], r["state"])
                    for r in px.show("CLIENTS")]
        u, a = self.pg.user, self.pg.app_user
        self.assertEqual(order(), [
            ("aa", a, "a2", "idle"), ("aa", u, "a1", "idle"),
            ("pgbouncer", u, "", "idle"), ("pgbouncer", u, "psql", "idle"),
            ("zz", u, "z1", "active"), ("zz", u, "z3", "idle"), ("zz", u, "z2", "waiting")])
        z1.commit()
        waiter.join(10)
        self.assertIsNone(waiter.error)
        self.assertEqual([r[2] for r in order()], ["a2", "a1", "", "psql", "z1", "z3", "z2"])

    def test_servers_are_listed_pool_by_pool_as_pgbouncer(self):
        # PgBouncer walks its pools by database, then user, and in each
        # lists the active servers, then the idle (used, tested, new);
        # pgwharf listed the pools in the order they were made and each
        # pool's servers in its own order.
        px = self.start_zz_and_aa(pool_size=2)
        z1 = self.client(px, autocommit=False, db="zz")
        z2 = self.client(px, autocommit=False, db="zz")
        z1.cursor().execute("select 1")              # zz's first server
        z2.cursor().execute("select 1")              # and its second
        z1.commit()                                  # the first is idle again
        self.assertEqual(px.psql("select 1", db="aa"), "1")
        conn = self.admin_conn(px)
        servers = [(r["database"], r["state"], r["link"] != "")
                   for r in self.show(conn, "SERVERS")[1]]
        self.assertEqual(servers, [("aa", "idle", False), ("zz", "active", True),
                                   ("zz", "idle", False)])

    def test_sockets_are_listed_pool_by_pool_as_pgbouncer(self):
        # PgBouncer's SHOW SOCKETS walks its pools (by database, then user;
        # the console's clients are pool pgbouncer/pgbouncer) and lists in
        # each its cl_active and cl_waiting clients, then its sv_active,
        # sv_idle, sv_used, sv_tested and sv_login servers; last the
        # clients still logging in (cl_login), in the order they came in.
        # pgwharf listed every client in the order it connected, then
        # every server.  (Checked against PgBouncer 1.18 with these
        # clients.)
        px = self.start_zz_and_aa(pool_size=1)
        z1, z2, conn = self.seat_clients(px)
        logins = []
        for name in ("l1", "l2"):                    # asked for a password
            s = socket.create_connection((px.host, px.port), timeout=10)
            self.addCleanup(s.close)
            s.sendall(hz.startup_packet(self.pg.user, "zz", application_name=name))
            logins.append(s)
        self.client(px, db="zz", application_name="z3")
        waiter = Background(lambda: z2.cursor().execute("select 2"))
        pt.wait_pool(conn, "zz", self.pg.user, cl_waiting=1)
        wait_until(lambda: len(self.rows(conn, "SOCKETS", state="cl_login")) == 2,
                   what="two clients logging in")
        u, a = self.pg.user, self.pg.app_user

        def order():            # a server's application_name is its client's
            return [(r["type"], r["database"], r["user"], r["state"],
                     r["application_name"] if r["type"] == "C" else "")
                    for r in self.show(conn, "SOCKETS")[1]]
        self.assertEqual(order(), [
            ("C", "aa", a, "cl_active", "a2"), ("S", "aa", a, "sv_idle", ""),
            ("C", "aa", u, "cl_active", "a1"), ("S", "aa", u, "sv_idle", ""),
            ("C", "pgbouncer", u, "cl_active", ""),
            ("C", "zz", u, "cl_active", "z1"), ("C", "zz", u, "cl_active", "z3"),
            ("C", "zz", u, "cl_waiting", "z2"), ("S", "zz", u, "sv_active", ""),
            ("C", "zz", u, "cl_login", "l1"), ("C", "zz", u, "cl_login", "l2")])
        # ACTIVE_SOCKETS walks the same way (the console's own query is in
        # its buffer)
        every = [r["ptr"] for r in self.show(conn, "SOCKETS")[1]]
        active = [r["ptr"] for r in self.show(conn, "ACTIVE_SOCKETS")[1]]
        self.assertTrue(active)
        self.assertEqual(active, [p for p in every if p in active])
        z1.commit()
        waiter.join(10)
        self.assertIsNone(waiter.error)
        self.assertEqual([(t, st, name) for t, _, _, st, name in order()][5:9], [
            ("C", "cl_active", "z1"), ("C", "cl_active", "z3"), ("C", "cl_active", "z2"),
            ("S", "sv_idle", "")])

    def test_show_sockets_and_active_sockets(self):
        px = self.start(default_pool_size=3)
        idle = self.client(px, application_name="idle-one")
        idle.cursor().execute("select 1")
        # A client that sent 10 bytes of a 104-byte Query: its bytes are in
        # its buffer (or its message part way), so ACTIVE_SOCKETS lists it
        sql = b"select 'half-sent'"
        body = sql + b" " * (99 - len(sql)) + b"\0"
        msg = b"Q" + struct.pack("!I", 4 + len(body)) + body
        with socket.create_connection((px.host, px.port), timeout=10) as s:
            hz.sync_login(s, self.pg.user, self.pg.database, self.pg.password,
                          application_name="half-sent")
            s.sendall(msg[:15])
            conn = self.admin_conn(px)

            def half_sent_row():
                rows = self.rows(conn, "ACTIVE_SOCKETS", type="C",
                                 application_name="half-sent")
                return rows[0] if rows else None
            row = wait_until(half_sent_row, what="the half-sent client in ACTIVE_SOCKETS")
            self.assertIn(row["state"], ("cl_active", "cl_waiting"))
            self.assertTrue(row["pkt_remain"] > 0 or row["recv_pos"] > row["send_pos"], row)
            self.assertGreaterEqual(row["recv_pos"], row["pkt_pos"])
            self.assertGreaterEqual(row["pkt_pos"], row["send_pos"])
            self.assertEqual(row["pkt_avail"], row["recv_pos"] - row["pkt_pos"])
            self.assertEqual(row["send_avail"], row["pkt_pos"] - row["send_pos"])
            self.assertEqual(row["send_remain"], 0)
            # the idle client has nothing buffered: in SOCKETS only
            self.assertEqual(self.rows(conn, "ACTIVE_SOCKETS", application_name="idle-one"), [])
            every = self.rows(conn, "SOCKETS", type="C", application_name="idle-one")
            self.assertEqual([r["state"] for r in every], ["cl_active"])
            self.assertEqual(every[0]["recv_pos"], 0)
            self.assertEqual(every[0]["pkt_remain"], 0)
            servers = self.rows(conn, "SOCKETS", type="S")
            self.assertTrue(servers)
            self.assertTrue(set(r["state"] for r in servers)
                            <= {"sv_active", "sv_idle", "sv_used", "sv_tested", "sv_login"})
            # the rest of the message: the query runs and the client goes on
            s.sendall(msg[15:])
            got = [t for t, _ in hz.read_until_ready(s)]
            self.assertIn(b"D", got)
            self.assertNotIn(b"E", got)
            wait_until(lambda: not half_sent_row(), what="the client's buffer emptied")

    def test_show_stats_counts_transactions(self):
        px = self.start()
        cl = self.client(px)
        cur = cl.cursor()
        for _ in range(10):
            cur.execute("select 1")
        cl.autocommit = False
        cur.execute("select 1")
        cur.execute("select 2")
        cl.commit()
        conn = self.admin_conn(px)
        stats = self.rows(conn, "STATS", database=self.pg.database)[0]
        self.assertGreaterEqual(stats["total_xact_count"], 11)
        self.assertGreaterEqual(stats["total_query_count"], 13)
        self.assertGreater(stats["total_received"], 0)
        self.assertGreater(stats["total_sent"], 0)
        self.assertGreater(stats["total_query_time"], 0)
        self.assertGreater(stats["total_xact_time"], 0)
        self.assertGreaterEqual(stats["total_server_assignment_count"], 11)
        totals = self.rows(conn, "STATS_TOTALS", database=self.pg.database)[0]
        self.assertGreaterEqual(totals["xact_count"], stats["total_xact_count"])
        # a client that goes away keeps its counts in the totals
        cl.close()
        wait_until(lambda: not self.rows(conn, "CLIENTS", database=self.pg.database),
                   what="the client to be gone")
        after = self.rows(conn, "STATS", database=self.pg.database)[0]
        self.assertGreaterEqual(after["total_xact_count"], stats["total_xact_count"])
        self.assertGreaterEqual(after["total_received"], stats["total_received"])

    def test_show_stats_bytes_are_the_relayed_ones(self):
        # As PgBouncer's total_received / total_sent (client_bytes,
        # server_bytes): the messages of requests and their replies, not
        # the login (SSLRequest, startup packet, password, AuthenticationOk,
        # ParameterStatus, BackendKeyData, the first ReadyForQuery).  Before,
        # every byte of the socket counted: 3 logins and 3 "select 1" gave
        # 312 and 1455 bytes where PgBouncer shows 42 and 198.
        px = self.start()
        conn = self.admin_conn(px)
        with socket.create_connection((px.host, px.port), timeout=10) as s:
            hz.sync_login(s, self.pg.user, self.pg.database, self.pg.password)
            query = hz.query_msg("select 1")
            s.sendall(query)
            reply = hz.read_until_ready(s)
            replied = sum(5 + len(body) for _, body in reply)
            stats = self.rows(conn, "STATS", database=self.pg.database)[0]
            self.assertEqual((stats["total_received"], stats["total_sent"]),
                             (len(query), replied))
            totals = self.rows(conn, "STATS_TOTALS", database=self.pg.database)[0]
            self.assertEqual((totals["bytes_received"], totals["bytes_sent"]),
                             (len(query), replied))
            # nor the Terminate, which is not relayed either
            s.sendall(b"X\0\0\0\4")
            wait_until(lambda: not self.rows(conn, "CLIENTS", database=self.pg.database),
                       what="the client to be gone")
        stats = self.rows(conn, "STATS", database=self.pg.database)[0]
        self.assertEqual((stats["total_received"], stats["total_sent"]), (len(query), replied))

    def test_show_databases_counts_each_entry_and_star(self):
        # current_connections and current_client_connections per entry,
        # and a row of its own for each name "*" serves, as PgBouncer lists
        # its auto-databases (one "*" row summed them: exporters lost the
        # names).  (Counted in one pass over pools and sessions now; per
        # entry, the view was cubic in the databases: seconds of the loop
        # at 1500.)
        px = self.start_pgwharf(
            settings={"pool_mode": "transaction"},
            databases={self.pg.database: self.pg.conn_string(self.pg.database),
                       "*": self.pg.conn_string(self.pg.database2)})
        conn = self.admin_conn(px)
        held = []
        for db, n in ((self.pg.database, 2), ("x1", 1), ("x2", 2)):
            for _ in range(n):
                c = self.client(px, autocommit=False, db=db)
                c.cursor().execute("select 1")       # in a transaction: holds a server
                held.append(c)
        dbs = {r["name"]: r for r in self.show(conn, "DATABASES")[1]}
        counts = {name: (r["current_connections"], r["current_client_connections"])
                  for name, r in dbs.items() if name != "pgbouncer"}
        self.assertEqual(counts, {self.pg.database: (2, 2), "x1": (1, 1), "x2": (2, 2)})
        self.assertEqual((dbs["x1"]["database"], dbs["x1"]["port"]),
                         (self.pg.database2, self.pg.port))
        for c in held:
            c.close()

    def test_show_databases_keeps_a_paused_or_disabled_name_star_serves(self):
        # PAUSE / DISABLE of a name "*" serves, before its first client (or
        # once its pool is freed), left no SHOW DATABASES row: the state
        # the console set was out of view (PgBouncer keeps the database it
        # registered).  The row stays until RESUME / ENABLE.
        px = self.start_pgwharf(
            settings={"pool_mode": "transaction"},
            databases={self.pg.database: self.pg.conn_string(self.pg.database),
                       "*": self.pg.conn_string(self.pg.database2)})
        conn = self.admin_conn(px)
        cur = conn.cursor()
        cur.execute("PAUSE x3")
        cur.execute("DISABLE x4")

        def flags():
            return {r["name"]: (r["paused"], r["disabled"], r["database"])
                    for r in self.show(conn, "DATABASES")[1] if r["name"] not in
                    ("pgbouncer", self.pg.database)}

        db2 = self.pg.database2
        self.assertEqual(flags(), {"x3": (1, 0, db2), "x4": (0, 1, db2)})
        cur.execute("RESUME x3")
        self.assertEqual(flags(), {"x4": (0, 1, db2)})
        cur.execute("ENABLE x4")
        self.assertEqual(flags(), {})

    def test_console_reply_of_many_views_arrives_whole(self):
        # A Query of 32 SHOW CLIENTS: a reply of several buffers, fed to the
        # socket as it drains (each chunk copied once: the rest was shifted
        # left at every 32 kB, n^2 for n bytes, seconds of the loop with
        # megabytes of long application_names).
        px = self.start()
        held = [self.client(px, application_name="app%02d" % i) for i in range(40)]
        with socket.create_connection((px.host, px.port), timeout=30) as s:
            hz.sync_login(s, self.pg.user, "pgbouncer", self.pg.password)
            s.sendall(hz.query_msg("SHOW CLIENTS;" * 32))
            reply = hz.read_until_ready(s)
        views, rows = [], None
        for t, body in reply:
            if t == b"T":
                rows = []
            elif t == b"D":
                rows.append(body)
            elif t == b"C":
                views.append(rows)
        self.assertEqual(len(views), 32)
        self.assertGreater(sum(len(b) for rows in views for b in rows), 4 * 32768)
        for rows in views:
            self.assertEqual(sorted(rows), sorted(views[0]))
        for c in held:
            c.close()

    def test_console_flush_is_no_reason_to_drop_the_next_query(self):
        # A lone Flush (nothing pending) made the console skip every
        # message up to a Sync, as after a Parse: a Query after it was
        # dropped and its client waited for ever.  PostgreSQL does nothing.
        px = self.start()
        with socket.create_connection((px.host, px.port), timeout=10) as s:
            hz.sync_login(s, self.pg.user, "pgbouncer", self.pg.password)
            s.sendall(b"H\0\0\0\4" + hz.query_msg("SHOW VERSION"))
            reply = hz.read_until_ready(s)
        self.assertEqual([t for t, _ in reply], [b"T", b"D", b"C", b"Z"])

    def test_console_query_of_more_than_one_string_is_an_error(self):
        # A Query whose string ends before the message does ran its first
        # string ("SHOW STATE\0SHOW VERSION\0": SHOW STATE); one without
        # its NUL ended the session.  PostgreSQL answers ERROR 08P01
        # (pq_getmsgend, pq_getmsgstring) and goes on.
        px = self.start()
        with socket.create_connection((px.host, px.port), timeout=10) as s:
            hz.sync_login(s, self.pg.user, "pgbouncer", self.pg.password)
            for body, message in ((b"SHOW STATE\0SHOW VERSION\0", "invalid message format"),
                                  (b"SHOW STATE", "invalid string in message")):
                s.sendall(b"Q" + struct.pack("!I", 4 + len(body)) + body)
                reply = hz.read_until_ready(s)
                self.assertEqual([t for t, _ in reply], [b"E", b"Z"], reply)
                fields = hz.parse_fields(reply[0][1])
                self.assertEqual((fields["C"], fields["S"], fields["M"]),
                                 ("08P01", "ERROR", message))
            s.sendall(hz.query_msg("SHOW VERSION"))
            self.assertEqual([t for t, _ in hz.read_until_ready(s)], [b"T", b"D", b"C", b"Z"])

    def test_stats_log_line_bytes_are_show_stats_ones(self):
        # The event=stats line's bytes_in / bytes_out are SHOW STATS' bytes
        # of every database (PgBouncer's stats line is its stats' rates):
        # no login, no Terminate, no console.  They were every byte of
        # every client socket, so a one-query connection logged ~100 and
        # ~500 bytes for a 14-byte query and its reply.
        px = self.start(stats_period=1)
        with socket.create_connection((px.host, px.port), timeout=10) as s:
            hz.sync_login(s, self.pg.user, self.pg.database, self.pg.password)
            query = hz.query_msg("select 1")
            s.sendall(query)
            replied = sum(5 + len(body) for _, body in hz.read_until_ready(s))
            s.sendall(b"X\0\0\0\4")
        conn = self.admin_conn(px)
        wait_until(lambda: not self.rows(conn, "CLIENTS", database=self.pg.database),
                   what="the client to be gone")
        stats = self.rows(conn, "STATS", database=self.pg.database)[0]
        self.assertEqual((stats["total_received"], stats["total_sent"]), (len(query), replied))
        want = "bytes_in=%d bytes_out=%d" % (len(query), replied)

        wait_until(lambda: self.last_stats_line(px).endswith(want), timeout=15,
                   what="a stats line with %s" % want)

    @staticmethod
    def last_stats_line(px):
        lines = re.findall(r"event=stats .*", px.log())
        return lines[-1] if lines else ""

    def test_stats_log_line_counts_show_stats_transactions(self):
        # Its xacts counted the servers released in transaction mode: 0 for
        # ever in session mode, where SHOW STATS counts every transaction.
        px = self.start(pool_mode="session", stats_period=1)
        cl = self.client(px)
        for _ in range(3):
            cl.cursor().execute("select 1")
        conn = self.admin_conn(px)
        stats = self.rows(conn, "STATS", database=self.pg.database)[0]
        self.assertEqual((stats["total_xact_count"], stats["total_query_count"]), (3, 3))
        wait_until(lambda: " xacts=3 queries=3 " in self.last_stats_line(px), timeout=15,
                   what="a stats line with xacts=3 queries=3")

    def test_a_pools_first_login_is_no_server_assignment(self):
        # The pool's first client (and any login whose startup parameters
        # a server must check) takes a server for its welcome; in
        # transaction mode it gives it back and its first query takes one
        # anew.  Both were counted, so total_server_assignment_count (and
        # pgwharf_server_assignments_total) said 2 for one query; PgBouncer
        # welcomes such a login with no server linked and counts 1, at the
        # query (find_server).  A session-mode login keeps the server it
        # took: one assignment as well.
        for mode in ("transaction", "session"):
            with self.subTest(mode=mode):
                px = self.start(pool_mode=mode, metrics_port="auto")
                for startup in ({}, {"DateStyle": "SQL, DMY"}):
                    with socket.create_connection((px.host, px.port), timeout=30) as s:
                        hz.sync_login(s, self.pg.user, self.pg.database, self.pg.password,
                                      **startup)
                        s.sendall(hz.query_msg("select 1"))
                        self.assertEqual(hz.read_until_ready(s)[-1], (b"Z", b"I"))
                        s.sendall(hz.msg(b"X"))
                conn = self.admin_conn(px)
                wait_until(lambda: not self.rows(conn, "CLIENTS", database=self.pg.database),
                           what="the clients to be gone")
                stats = self.rows(conn, "STATS", database=self.pg.database)[0]
                self.assertEqual((stats["total_server_assignment_count"],
                                  stats["total_xact_count"]), (2, 2))
                self.assertEqual(px.metric("pgwharf_server_assignments_total"), 2)
                conn.close()
                px.stop()

    def test_a_lone_sync_is_counted(self):
        # A Sync with nothing under way is answered by pgwharf with no
        # server; PostgreSQL's ReadyForQuery 'I' to it counted a query and
        # a transaction, and so does pgwharf's (it counted neither).
        px = self.start(pool_mode="transaction")
        s = socket.create_connection((px.host, px.port), timeout=30)
        self.addCleanup(s.close)
        hz.sync_login(s, self.pg.user, self.pg.database, self.pg.password)
        s.sendall(hz.query_msg("select 1"))
        self.assertEqual(hz.read_until_ready(s)[-1], (b"Z", b"I"))
        s.sendall(hz.msg(b"S") * 2)         # the server is back in the pool
        for _ in range(2):
            self.assertEqual(hz.read_until_ready(s), [(b"Z", b"I")])
        conn = self.admin_conn(px)
        self.addCleanup(conn.close)
        stats = self.rows(conn, "STATS", database=self.pg.database)[0]
        self.assertEqual((stats["total_xact_count"], stats["total_query_count"]), (3, 3))

    def test_listens_answered_here_are_counted_as_transactions(self):
        # In transaction mode pgwharf answers LISTEN and UNLISTEN itself
        # (the pool's listening server runs them); each ends with a
        # ReadyForQuery 'I', a transaction as PostgreSQL's answer (and
        # PgBouncer) counts it.  Only the query was counted: SHOW STATS
        # and /metrics had queries 4 for transactions 1.
        px = self.start(pool_mode="transaction")
        cl = self.client(px)
        cur = cl.cursor()
        cur.execute("select 1")
        cur.execute("listen pgw_counted")
        cur.execute("unlisten pgw_counted")
        cur.execute("unlisten *")
        conn = self.admin_conn(px)
        self.addCleanup(conn.close)
        stats = self.rows(conn, "STATS", database=self.pg.database)[0]
        self.assertEqual((stats["total_xact_count"], stats["total_query_count"]), (4, 4))

    def test_a_listen_split_by_a_flush_is_one_query(self):
        # Parse, Flush (its ParseComplete read), then Bind, Execute, Sync:
        # one query, as a SELECT sent so is counted (at its Sync).  A
        # LISTEN pgwharf answers counted each part: queries 2 for
        # transactions 1.
        px = self.start(pool_mode="transaction")
        conn = self.admin_conn(px)
        self.addCleanup(conn.close)
        for sql in ("select 1", "listen pgw_split"):
            with socket.create_connection((px.host, px.port), timeout=10) as s:
                hz.sync_login(s, self.pg.user, self.pg.database, self.pg.password)
                s.sendall(hz.parse_msg("", sql) + hz.msg(b"H"))
                self.assertEqual(hz.recv_msg(s)[0], b"1")
                s.sendall(hz.ext_msgs(sql, parse=False, describe=False))
                hz.read_until_ready(s)
        stats = self.rows(conn, "STATS", database=self.pg.database)[0]
        self.assertEqual((stats["total_xact_count"], stats["total_query_count"]), (2, 2))

    def test_pipelined_transactions_are_each_counted(self):
        # Five autocommit Queries in one write are five transactions (five
        # ReadyForQuery 'I'); the ReadyForQuery inside the pipeline was not
        # counted, so SHOW STATS and /metrics said one.  A transaction across
        # a pipeline's Syncs is one.
        for mode in ("transaction", "session"):
            with self.subTest(mode=mode):
                px = self.start(pool_mode=mode, metrics_port="auto")
                s = socket.create_connection((px.host, px.port), timeout=30)
                self.addCleanup(s.close)
                hz.sync_login(s, self.pg.user, self.pg.database, self.pg.password)
                s.sendall(hz.query_msg("select txid_current()") * 5)
                for _ in range(5):
                    self.assertEqual(hz.read_until_ready(s)[-1], (b"Z", b"I"))
                sql = ["begin", "select 1", "select 2", "commit"]
                s.sendall(b"".join(hz.ext_msgs(q) for q in sql))
                for _ in sql:
                    hz.read_until_ready(s)
                conn = self.admin_conn(px)
                stats = self.rows(conn, "STATS", database=self.pg.database)[0]
                self.assertEqual((stats["total_xact_count"], stats["total_query_count"]), (6, 9))
                self.assertEqual(px.metric("pgwharf_transactions_total"), 6)
                s.close()
                conn.close()
                px.stop()

    def test_show_totals_has_pgbouncers_rows(self):
        # SHOW TOTALS is one (name, value) row per counter, named as
        # PgBouncer's show_stat_totals names them ("total_" / "avg_" and the
        # PgStats field: client_bytes, not SHOW STATS' "received").
        px = self.start()
        self.assertEqual(px.psql("select 1"), "1")
        conn = self.admin_conn(px)
        names, rows = self.show(conn, "TOTALS")
        self.assertEqual(names, ["name", "value"])
        fields = ["server_assignment_count", "xact_count", "query_count", "client_bytes",
                  "server_bytes", "xact_time", "query_time", "wait_time",
                  "ps_client_parse_count", "ps_server_parse_count", "ps_bind_count"]
        self.assertEqual([r["name"] for r in rows],
                         ["total_" + f for f in fields] + ["avg_" + f for f in fields])
        totals = {r["name"]: r["value"] for r in rows}
        stats = self.rows(conn, "STATS", database=self.pg.database)[0]
        self.assertGreaterEqual(totals["total_client_bytes"], stats["total_received"])
        self.assertGreaterEqual(totals["total_server_bytes"], stats["total_sent"])
        self.assertGreater(totals["total_server_bytes"], 0)

    def test_show_totals_averages_count_a_database_of_under_one_xact_a_second(self):
        # SHOW TOTALS' avg_xact_time / avg_query_time weighed each
        # database's average by its transactions per second rounded down:
        # one transaction in a 2 s period (0.5/s) weighed nothing and
        # avg_xact_time said 0.  PgBouncer's come from the summed counters.
        px = self.start(stats_period=2)
        conn = self.admin_conn(px)
        self.assertEqual(px.psql("select pg_sleep(0.3)::text || 'x'"), "x")

        def same():
            avg = self.rows(conn, "STATS_AVERAGES", database=self.pg.database)[0]
            totals = {r["name"]: r["value"] for r in self.show(conn, "TOTALS")[1]}
            return (avg["xact_time"] >= 300000 and
                    (totals["avg_xact_time"], totals["avg_query_time"]) ==
                    (avg["xact_time"], avg["query_time"]))
        wait_until(same, timeout=15, what="SHOW TOTALS' averages to be STATS_AVERAGES' ones")

    def test_large_reply_is_streamed(self):
        # ~20 x SHOW CONFIG in one query: far more than one 32 KiB buffer
        px = self.start()
        conn = self.admin_conn(px)
        cur = conn.cursor()
        cur.execute("; ".join(["SHOW CONFIG"] * 25))
        self.assertGreater(len(cur.fetchall()), 40)
        cur.execute("SHOW VERSION")
        self.assertIn("pgwharf", cur.fetchone()[0])


    @unittest.skipIf(shutil.which("openssl") is None, "no openssl command")
    def test_large_reply_over_tls(self):
        td = tempfile.TemporaryDirectory()
        self.addCleanup(td.cleanup)
        d = td.name
        key, cert = os.path.join(d, "key.pem"), os.path.join(d, "cert.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj",
                        "/CN=localhost", "-days", "2", "-keyout", key, "-out", cert],
                       check=True, capture_output=True)
        px = self.start(client_tls_sslmode="require", client_tls_key_file=key,
                        client_tls_cert_file=cert)
        conn = psycopg2.connect(px.dsn(db="pgbouncer", sslmode="require"))
        conn.autocommit = True
        self.addCleanup(conn.close)
        cur = conn.cursor()
        for _ in range(5):
            cur.execute("; ".join(["SHOW CONFIG"] * 30))
            self.assertGreater(len(cur.fetchall()), 40)
        me = [r for r in self.show(conn, "CLIENTS")[1] if r["database"] == "pgbouncer"]
        self.assertTrue(me[0]["tls"].startswith("TLS"), me[0]["tls"])


    def test_names_that_are_not_utf8_do_not_break_the_views(self):
        # The console says client_encoding UTF8; a database name a client
        # chose under "*" went out as sent, and psycopg could not read SHOW
        # POOLS, CLIENTS, SERVERS or STATS at all while the pool lived
        # (autodb_idle_timeout).
        px = self.start_pgwharf(settings={"pool_mode": "session"},
                                databases={"*": self.pg.conn_string(self.pg.database)})
        s = socket.create_connection((px.host, px.port), timeout=10)
        self.addCleanup(s.close)
        hz.sync_login(s, self.pg.user, b"bad\xff\xc3name", self.pg.password)
        db = "bad\ufffd\ufffdname"
        conn = self.admin_conn(px)
        self.assertEqual(len(self.rows(conn, "POOLS", database=db)), 1)
        self.assertEqual(len(self.rows(conn, "CLIENTS", database=db)), 1)
        self.assertEqual(len(self.rows(conn, "SERVERS", database=db)), 1)
        self.assertEqual(len(self.rows(conn, "STATS", database=db)), 1)
        self.assertEqual(len(self.rows(conn, "POOLS", database="x\u00e9y")), 0)


class _SilentServer(hz.FakeServer):
    """Takes the startup packet, then says nothing until the test ends."""

    def __init__(self):
        self.done = threading.Event()
        super().__init__()

    def session(self, conn):
        self.read_startup(conn)
        self.done.wait(30)


class TestWaiting(AdminTestCase):

    def test_a_client_waiting_at_login_and_a_server_logging_in(self):
        # As PgBouncer 1.18 at the same moment: a client whose login waits
        # for a server is cl_waiting in SHOW POOLS and SOCKETS and not a
        # login client in SHOW LISTS (it was both); a server still logging
        # in shows when it started (connect_time, request_time) and its
        # local address (all were empty).
        silent = _SilentServer()
        self.addCleanup(silent.close)
        self.addCleanup(silent.done.set)
        px = self.start_pgwharf(settings={"pool_mode": "transaction", "auth_type": "any",
                                          "server_connect_timeout": 20,
                                          "query_wait_timeout": 20},
                                databases={"silent": pt.entry_conninfo(
                                    host="127.0.0.1", port=silent.port, dbname="x",
                                    user="u", password="p"),
                                    self.pg.database: self.pg.conn_string()})
        conn = self.admin_conn(px)
        with socket.create_connection((px.host, px.port), timeout=30) as c:
            c.sendall(hz.startup_packet("u", "silent"))
            pt.wait_pool(conn, "silent", "u", cl_waiting=1)
            lists = {r["list"]: r["items"] for r in self.show(conn, "LISTS")[1]}
            self.assertEqual(lists["login_clients"], 0)
            sockets = self.rows(conn, "SOCKETS", database="silent", type="C")
            self.assertEqual([r["state"] for r in sockets], ["cl_waiting"])
            servers = self.rows(conn, "SERVERS", database="silent")
            self.assertEqual(len(servers), 1)
            srv = servers[0]
            self.assertEqual(srv["state"], "new")
            self.assertIsNotNone(srv["connect_time"])
            self.assertEqual(srv["request_time"], srv["connect_time"])
            self.assertEqual(srv["local_addr"], "127.0.0.1")
            self.assertNotEqual(srv["local_port"], 0)

    def test_cl_waiting_rises_while_a_client_waits(self):
        px = self.start(default_pool_size=1)
        waiter = self.client(px, application_name="waiter")
        holder = self.client(px, autocommit=False)
        holder.cursor().execute("select 1")          # holds the only server
        conn = self.admin_conn(px)
        bg = Background(lambda: waiter.cursor().execute("select pg_backend_pid()"))
        pool = self.wait_pool(conn, cl_waiting=1)
        self.assertEqual(pool["sv_active"], 1)
        self.assertEqual(pool["cl_active"], 1)
        clients = self.rows(conn, "CLIENTS", application_name="waiter")
        self.assertEqual(clients[0]["state"], "waiting")
        # maxwait counts up while the client waits (the holder keeps the
        # server as long as it takes).
        pool = wait_until(lambda: (lambda p: p["maxwait"] >= 1 and p)(self.pool(conn)),
                          what="maxwait >= 1")
        self.assertEqual(pool["cl_waiting"], 1)
        holder.commit()
        bg.join(10)
        self.assertIsNone(bg.error)
        self.assertFalse(bg.is_alive())
        pool = self.pool(conn)
        self.assertEqual(pool["cl_waiting"], 0)
        self.assertEqual(pool["maxwait"], 0)


    PARAMS = ("server_version", "server_encoding", "client_encoding", "DateStyle",
              "IntervalStyle", "TimeZone", "integer_datetimes", "standard_conforming_strings",
              "is_superuser", "session_authorization", "application_name",
              "default_transaction_read_only", "in_hot_standby")

    def params(self, conn):
        return {n: conn.get_parameter_status(n) for n in self.PARAMS}

    def login_at_once(self, px, why, **dsn):
        """A client that logs in while the pool has no server for it."""
        login = Background(lambda: psycopg2.connect(px.dsn(**dsn)))
        login.join(20)
        self.assertFalse(login.is_alive(), why)
        self.assertIsNone(login.error)
        self.addCleanup(login.result.close)
        login.result.autocommit = True
        return login.result

    def test_a_client_logs_in_while_the_pool_is_full(self):
        # As PgBouncer: once the pool has a server's parameters, a login
        # waits for no server (only the client's first query does), and it
        # is welcomed with the same ParameterStatus a server would give.
        px = self.start(default_pool_size=1, query_wait_timeout="60s")
        holder = self.client(px, autocommit=False)
        holder.cursor().execute("select 1")          # holds the only server
        conn = self.admin_conn(px)
        psql_login = Background(lambda: px.psql("select 'psql'", timeout=90))
        late = self.login_at_once(px, "the login waited for the pool's only server")
        self.assertEqual(self.params(late), self.params(holder))
        # psql sends application_name: still no server needed to log in;
        # its query waits with the other client's
        wait_until(lambda: (self.pool(conn) or {}).get("cl_waiting") == 1,
                   what="psql's query waiting")
        bg = Background(lambda: late.cursor().execute("select 2"))
        wait_until(lambda: (self.pool(conn) or {}).get("cl_waiting") == 2,
                   what="both queries waiting")
        self.assertTrue(bg.is_alive())
        self.assertEqual(self.pool(conn)["sv_active"], 1)
        holder.commit()
        for b in (bg, psql_login):
            b.join(20)
            self.assertFalse(b.is_alive())
            self.assertIsNone(b.error)
        self.assertEqual(psql_login.result, "psql")
        # what the welcome promised is what the server runs with
        cur = late.cursor()
        cur.execute("show application_name")
        self.assertEqual(cur.fetchone()[0], late.get_parameter_status("application_name"))

    def test_a_client_logs_in_while_its_database_is_paused(self):
        px = self.start(default_pool_size=2)
        self.assertEqual(px.psql("select 1"), "1")  # the pool has seen a server
        conn = self.admin_conn(px)
        conn.cursor().execute("PAUSE %s" % self.pg.database)
        late = self.login_at_once(px, "the login waited for RESUME", application_name="late")
        self.assertEqual(late.get_parameter_status("application_name"), "late")
        cur = late.cursor()
        bg = Background(lambda: cur.execute("select current_setting('application_name')"))
        wait_until(lambda: (self.pool(conn) or {}).get("cl_waiting") == 1, what="a waiter")
        self.assertTrue(bg.is_alive(), "a query ran on a paused database")
        conn.cursor().execute("RESUME %s" % self.pg.database)
        bg.join(20)
        self.assertFalse(bg.is_alive())
        self.assertIsNone(bg.error)
        self.assertEqual(cur.fetchone()[0], "late")

    def test_a_login_that_needs_the_server_still_takes_one(self):
        # A startup parameter PostgreSQL must check (and spell) is SET on a
        # server before the welcome: a bad one is refused at login, as
        # straight to PostgreSQL, even once the pool has a server's record.
        px = self.start(default_pool_size=1)
        self.assertEqual(px.psql("select 1"), "1")

        async def login(**params):
            c = await hz.RawConn.connect(px.host, px.port, self.pg.user, self.pg.database,
                                         self.pg.password, **params)
            await c.close()
            return c.params
        with self.assertRaises(hz.PgError) as cm:
            asyncio.run(login(DateStyle="nonsense"))
        self.assertEqual(cm.exception.sqlstate, "22023")
        # with PostgreSQL's DETAIL (it was left out)
        self.assertEqual(cm.exception.fields.get("D"), 'Unrecognized key word: "nonsense".')
        self.assertEqual(asyncio.run(login(DateStyle="SQL, DMY"))["DateStyle"], "SQL, DMY")
        conn = psycopg2.connect(px.dsn(client_encoding="latin1"))
        self.addCleanup(conn.close)
        self.assertEqual(conn.get_parameter_status("client_encoding"), "LATIN1")

    def raw_login(self, px, **params):
        async def login():
            c = await hz.RawConn.connect(px.host, px.port, self.pg.user, self.pg.database,
                                         self.pg.password, **params)
            await c.close()
            return c.params
        return asyncio.run(login())

    def test_a_refused_startup_parameter_leaves_nothing_on_the_server(self):
        # The refused value was recorded as the server's: the same login
        # through the same server was then welcomed with it, and in session
        # mode the next client was told it (its server runs the default).
        for mode in ("transaction", "session"):
            with self.subTest(mode=mode):
                px = self.start(default_pool_size=1, pool_mode=mode)
                self.assertEqual(px.psql("select 1"), "1")
                for _ in range(2):
                    with self.assertRaises(hz.PgError) as cm:
                        self.raw_login(px, DateStyle="nonsense")
                    self.assertEqual(cm.exception.sqlstate, "22023")
                conn = self.client(px)
                cur = conn.cursor()
                cur.execute("show datestyle")
                self.assertEqual(conn.get_parameter_status("DateStyle"), cur.fetchone()[0])

    def test_a_startup_parameter_is_welcomed_as_postgresql_spells_it(self):
        # A SET that changes nothing brings no ParameterStatus: the welcome
        # carried the client's spelling where PostgreSQL reports its own.
        px = self.start(default_pool_size=1)
        self.assertEqual(px.psql("select 1"), "1")

        async def direct():
            c = await hz.RawConn.connect(self.pg.host, self.pg.port, self.pg.user,
                                         self.pg.database, self.pg.password,
                                         DateStyle="iso, mdy")
            await c.close()
            return c.params["DateStyle"]
        self.assertEqual(self.raw_login(px, DateStyle="iso, mdy")["DateStyle"],
                         asyncio.run(direct()))

    def test_a_reload_that_changes_the_servers_user_is_seen_at_the_next_login(self):
        # New connection keys may reach another backend, or log in as
        # another role: the pool's record of a server's parameters is the
        # old keys', so the next login is welcomed by a server of the new.
        entry = lambda user, pw: self.pg.conn_string(user=user, password=pw)
        px = self.start_pgwharf(settings={"pool_mode": "transaction"},
                                databases={self.pg.database: entry(self.pg.user, self.pg.password)})
        first = self.client(px)
        self.assertEqual(first.get_parameter_status("session_authorization"), self.pg.user)
        conn = self.admin_conn(px)
        px.databases[self.pg.database] = entry(self.pg.app_user, self.pg.app_password)
        px.reload()
        wait_until(lambda: self.rows(conn, "DATABASES", name=self.pg.database)[0]["force_user"]
                   == self.pg.app_user, what="the reload")
        late = self.client(px)
        cur = late.cursor()
        cur.execute("select current_user, current_setting('is_superuser')")
        self.assertEqual(cur.fetchone(), (self.pg.app_user, "off"))
        self.assertEqual(late.get_parameter_status("session_authorization"), self.pg.app_user)
        self.assertEqual(late.get_parameter_status("is_superuser"), "off")

    def assert_new_servers_seen(self, change, **settings):
        """A database default changes (new backends report it); change(px,
        db) makes the old servers go: the next login is welcomed with the
        new value and runs with it."""
        db = self.pg.database2
        px = self.start(**settings)
        self.assertNotEqual(px.psql("show timezone", db=db), "Asia/Tokyo")
        self.pg.psql("ALTER DATABASE %s SET TimeZone = 'Asia/Tokyo'" % db)
        self.addCleanup(self.pg.psql, "ALTER DATABASE %s RESET TimeZone" % db)
        change(px, db)
        late = self.client(px, db=db)
        self.assertEqual(late.get_parameter_status("TimeZone"), "Asia/Tokyo")
        cur = late.cursor()
        cur.execute("show timezone")
        self.assertEqual(cur.fetchone()[0], "Asia/Tokyo")

    def test_after_reconnect_the_next_login_sees_the_new_servers(self):
        # RECONNECT is for a backend whose setup changed (PgBouncer forgets
        # its welcome there too).
        self.assert_new_servers_seen(
            lambda px, db: self.admin_conn(px).cursor().execute("RECONNECT %s" % db))

    def test_after_its_servers_are_lost_the_next_login_sees_the_new_servers(self):
        # PostgreSQL restarted (every server lost) with another default
        # (ALTER SYSTEM): clients logging in before a server logged in
        # again were welcomed with the old one, which pgwharf then SET
        # for them on every server for their whole session.
        def lose_them(px, db):
            self.assertGreater(self.pg.terminate_backends(db=db), 0)
            admin = self.admin_conn(px)
            wait_until(lambda: not self.rows(admin, "SERVERS", database=db),
                       what="the idle servers closed")
        self.assert_new_servers_seen(lose_them)

    def test_after_its_server_in_use_is_lost_the_next_login_sees_the_new_servers(self):
        # The same with the pool's one server lent to a client in a
        # transaction when it goes.
        def lose_it(px, db):
            holder = self.client(px, db=db, autocommit=False)
            holder.cursor().execute("select 1")
            self.assertEqual(self.pg.terminate_backends(db=db), 1)
            admin = self.admin_conn(px)
            wait_until(lambda: not self.rows(admin, "SERVERS", database=db),
                       what="the server closed")
        self.assert_new_servers_seen(lose_it, default_pool_size=1)

    def test_a_login_while_a_new_server_runs_connect_query_sees_its_settings(self):
        # A new server's parameters become the pool's record once its
        # connect_query has run, not at its login: a client welcomed in
        # between was told the server's TimeZone before the SET, and its
        # first link SET that back.
        cq = ("SET TimeZone = 'Asia/Tokyo'; SELECT pg_advisory_lock(4242); "
              "SELECT pg_advisory_unlock(4242)")
        px = self.start_pgwharf(
            settings={"pool_mode": "transaction", "default_pool_size": 2},
            databases={"cq": self.pg.conn_string(self.pg.database, connect_query=cq)})
        holder = self.client(px, db="cq", autocommit=False)
        holder.cursor().execute("select 1")          # the first server, held
        self.assertEqual(holder.get_parameter_status("TimeZone"), "Asia/Tokyo")
        gate = psycopg2.connect(self.pg.dsn())
        gate.autocommit = True
        self.addCleanup(gate.close)
        gate.cursor().execute("select pg_advisory_lock(4242)")
        second = self.client(px, db="cq")
        bg = Background(lambda: second.cursor().execute("select 1"))
        conn = self.admin_conn(px)
        wait_until(lambda: (self.pool(conn, db="cq") or {}).get("sv_tested") == 1,
                   what="the second server's connect_query")
        late = self.client(px, db="cq")
        self.assertEqual(late.get_parameter_status("TimeZone"), "Asia/Tokyo")
        gate.cursor().execute("select pg_advisory_unlock(4242)")
        bg.join(20)
        self.assertFalse(bg.is_alive())
        self.assertIsNone(bg.error)
        holder.commit()
        cur = late.cursor()
        cur.execute("show timezone")
        self.assertEqual(cur.fetchone()[0], "Asia/Tokyo")


class TestBreakers(AdminTestCase):

    def test_breaker_opens_when_postgres_is_down(self):
        px = self.start(breaker_threshold=2, breaker_cooldown="30s",
                        breaker_max_cooldown="60s", server_connect_timeout="2s")
        conn = self.admin_conn(px)
        try:
            self.pg.stop()

            def tripped():
                px.psql("select 1", check=False, connect_timeout=5)
                found = self.show(conn, "BREAKERS")[1]
                return found and found[0]["state"] == "open" and found[0]

            b = wait_until(tripped, timeout=30, interval=0.2, what="breaker open")
            self.assertGreaterEqual(b["trips"], 1)
            self.assertGreaterEqual(b["failures"], 2)
            self.assertTrue(b["last_error"])
            self.assertIsNotNone(b["next_probe"])
        finally:
            self.pg.start()

    def test_a_reload_shortens_an_open_breakers_wait(self):
        # (older) A breaker opened under a 30 s cooldown kept its probe 30 s
        # away after a reload to 1 s / 2 s.  Now the wait left is the new
        # cooldown in force from the reload at most.
        entry = "host=127.0.0.3 port=%d dbname=%s" % (self.pg.port, self.pg.database)
        px = self.start_pgwharf(settings={"breaker_threshold": 1, "breaker_cooldown": "30s",
                                          "breaker_max_cooldown": "30s"},
                                databases={"d": entry})
        conn = self.admin_conn(px)
        with self.assertRaises(psycopg2.Error):
            psycopg2.connect(px.dsn(db="d", connect_timeout=10)).close()
        before = self.show(conn, "BREAKERS")[1]
        self.assertEqual([b["state"] for b in before], ["open"], before)
        px.settings["breaker_cooldown"] = "1s"
        px.settings["breaker_max_cooldown"] = "2s"
        px.write_config()
        conn.cursor().execute("RELOAD")
        after = self.show(conn, "BREAKERS")[1]
        self.assertEqual([b["state"] for b in after], ["open"], after)
        # 30 s after it opened before, 2 s after the reload now
        def at(row):
            return datetime.datetime.strptime(row["next_probe"], "%Y-%m-%d %H:%M:%S UTC")
        self.assertGreater(at(before[0]) - at(after[0]), datetime.timedelta(seconds=20),
                           (before, after))

        def probed():
            try:
                psycopg2.connect(px.dsn(db="d", connect_timeout=10)).close()
            except psycopg2.Error:
                pass
            return "event=breaker_half_open" in px.log()
        wait_until(probed, interval=0.2, what="the probe after the reload")

    def reload_retry(self, px, seconds):
        px.settings["server_login_retry"] = seconds
        px.write_config()
        self.admin_conn(px).cursor().execute("RELOAD")

    def logs_in(self, px, **dsn):
        try:
            conn = psycopg2.connect(px.dsn(connect_timeout=10, **dsn))
        except psycopg2.Error:
            return False
        conn.close()
        return True

    def test_a_reload_shortens_a_pools_server_login_retry(self):
        # (hunt h1 of session 49) A pool whose login was refused waited out
        # the server_login_retry in force then: a reload from an hour to 1 s
        # left its clients refused for the hour, the cause long gone.
        # PgBouncer reads the key at each check: the next client gets in
        # (checked with PgBouncer 1.18).  (fails before: every try after
        # the reload refused)
        self.pg.psql("alter role %s connection limit 0" % self.pg.app_user)
        self.addCleanup(self.pg.psql, "alter role %s connection limit -1" % self.pg.app_user)
        px = self.start(server_login_retry="3600s")
        app = dict(user=self.pg.app_user, password=self.pg.app_password)
        self.assertFalse(self.logs_in(px, **app))
        self.pg.psql("alter role %s connection limit -1" % self.pg.app_user)
        self.assertFalse(self.logs_in(px, **app))          # the wait of an hour
        self.reload_retry(px, "1s")
        wait_until(lambda: self.logs_in(px, **app), timeout=20, interval=0.2,
                   what="a login once the new server_login_retry is over")

    def test_a_pool_refused_by_the_server_does_not_trip_the_backend(self):
        # One database entry carries a wrong password: its clients get the
        # server's 28P01 at once, and the other entries on the same server
        # keep working (one breaker per host:port must not open for it).
        bad = self.pg.conn_string(self.pg.database, user=self.pg.app_user, password="wrong")
        px = self.start_pgwharf(settings={"pool_mode": "transaction", "breaker_threshold": 2,
                                          "server_login_retry": "30s"},
                                databases={"bad": bad,
                                           self.pg.database: self.pg.conn_string()})
        conn = self.admin_conn(px)
        for i in range(4):
            with self.assertRaises(psycopg2.Error) as cm:
                psycopg2.connect(px.dsn(db="bad")).close()
            self.assertIn("password authentication failed", str(cm.exception))
        self.assertEqual(px.psql("select 'still here'"), "still here")
        states = [b["state"] for b in self.show(conn, "BREAKERS")[1]]
        self.assertTrue(all(st == "closed" for st in states), states)
        # Within server_login_retry the refused pool does not try again:
        # one login reached PostgreSQL.
        self.assertEqual(px.log().count("event=server_connect_failed"), 1, px.log_tail())


    def refused_entry_keeps_the_backend(self, bad, sqlstate, text, settings=None, good=None):
        """Entry "bad" (conn string bad) is refused at each login with
        sqlstate (text in its message), which is the entry's configuration,
        not the server's health: the other entry on the same server (conn
        string good) goes on, no breaker opens, and within
        server_login_retry one login reached PostgreSQL."""
        px = self.start_pgwharf(settings=dict({"pool_mode": "transaction", "breaker_threshold": 2,
                                               "server_login_retry": "30s"}, **(settings or {})),
                                databases={"bad": bad,
                                           self.pg.database: good or self.pg.conn_string()})
        conn = self.admin_conn(px)
        for i in range(3):
            with socket.create_connection((px.host, px.port), timeout=10) as s:
                with self.assertRaises(hz.PgError) as cm:
                    hz.sync_login(s, self.pg.user, "bad", self.pg.password)
            self.assertEqual(cm.exception.sqlstate, sqlstate, cm.exception.fields)
            self.assertIn(text, cm.exception.fields.get("M"))
        self.assertEqual(px.psql("select 'still here'"), "still here")
        states = [b["state"] for b in self.show(conn, "BREAKERS")[1]]
        self.assertTrue(all(st == "closed" for st in states), states)
        self.assertEqual(px.log().count("event=server_connect_failed"), 1, px.log_tail())

    def test_a_login_parameter_refused_does_not_trip_the_backend(self):
        # A typo in one entry's timezone: the server refuses that login
        # parameter (FATAL 22023).
        self.refused_entry_keeps_the_backend(
            self.pg.conn_string(self.pg.database, timezone="Mars/Olympus_Mons"),
            "22023", "TimeZone")

    def test_options_the_server_refuses_do_not_trip_the_backend(self):
        # The other refusals of an entry's options: they were taken for a
        # server down (08006), and after breaker_threshold of them no
        # entry on the server got a connection.
        for options, sqlstate, text in (
                ("-cfoo", "42601", "requires a value"),
                ("-c work_mem=1", "22023", "outside the valid range"),
                ("-c enable_seqscan=maybe", "22023", "requires a Boolean value"),
                ("-c shared_buffers=1MB", "55P02", "cannot be changed without restarting")):
            with self.subTest(options=options):
                self.refused_entry_keeps_the_backend(
                    self.pg.conn_string(self.pg.database, options=options), sqlstate, text)

    def test_an_entry_requiring_tls_the_server_lacks_does_not_trip_the_backend(self):
        # sslmode=require against a server without TLS: libpq's "server
        # does not support SSL, but SSL was required" is that entry's
        # configuration.  It was taken for a server down, and after
        # breaker_threshold of them the entries on the same server that
        # do not ask for TLS failed fast too.
        self.refused_entry_keeps_the_backend(
            self.pg.conn_string(self.pg.database, sslmode="require"),
            "08001", "server does not support SSL, but SSL was required")

    def test_server_tls_sslmode_require_the_server_lacks_does_not_trip_the_backend(self):
        # The same through server_tls_sslmode, which one entry overrides.
        self.refused_entry_keeps_the_backend(
            self.pg.conn_string(self.pg.database),
            "08001", "server does not support SSL, but SSL was required",
            settings={"server_tls_sslmode": "require"},
            good=self.pg.conn_string(sslmode="disable"))

    def test_a_failing_connect_query_does_not_trip_the_backend(self):
        # The server answers the connect_query with an error: its clients
        # get the server's SQLSTATE.
        self.refused_entry_keeps_the_backend(
            self.pg.conn_string(self.pg.database, connect_query="select 1/0"),
            "22012", "division by zero")

    def test_a_connect_query_slower_than_server_connect_timeout_does_not_trip_the_backend(self):
        # The server let the entry in and took its connect_query, which
        # waits on a gate past server_connect_timeout: that is the entry's,
        # as a connect_query that fails is (57014, server_login_retry).  It
        # was taken for a backend down (08006): logged into again at once,
        # each login leaving a backend in the query, until the breaker
        # opened for every entry on the backend.
        gate = hz.Gate(self.pg, 7844)
        self.addCleanup(gate.close)
        px = self.start_pgwharf(
            settings={"pool_mode": "transaction", "breaker_threshold": 2,
                      "server_login_retry": "60s", "server_connect_timeout": "1s"},
            databases={"bad": self.pg.conn_string(self.pg.database,
                                                  connect_query="select " + gate.sql()),
                       self.pg.database: self.pg.conn_string()})
        conn = self.admin_conn(px)
        for i in range(3):
            with socket.create_connection((px.host, px.port), timeout=30) as s:
                with self.assertRaises(hz.PgError) as cm:
                    hz.sync_login(s, self.pg.user, "bad", self.pg.password)
            self.assertEqual(cm.exception.sqlstate, "57014", cm.exception.fields)
            self.assertIn("connect_query: no reply in time", cm.exception.fields.get("M"))
        # Each query given up on is canceled: closing its connection did
        # not stop it (min_pool_size's logins piled up backends waiting on
        # the gate, up to max_connections).
        wait_until(lambda: self.pg.queries_running(gate.sql(), lock_wait=True) == 0,
                   what="the connect_queries given up on canceled")
        self.assertEqual(px.psql("select 'still here'"), "still here")
        states = [b["state"] for b in self.show(conn, "BREAKERS")[1]]
        self.assertTrue(all(st == "closed" for st in states), states)

    def test_a_probe_whose_connect_query_gets_no_reply_leaves_the_breaker_open(self):
        # (review) The half-open probe logged in but its connect_query got
        # no reply within server_connect_timeout: that closed the breaker
        # (probe=yes) though the backend had not shown it serves -- one
        # crawling back from an outage let every client in.  Nor is it a
        # failure (the query may wait on this entry's own lock: it must
        # not keep the other entries out): no verdict, the next request's
        # probe decides, at once.
        gate_key = 7845
        px = self.start_pgwharf(
            settings={"pool_mode": "transaction", "breaker_threshold": 1,
                      "breaker_cooldown": "0.5s", "breaker_max_cooldown": "0.5s",
                      "server_login_retry": "60s", "server_connect_timeout": "1s"},
            databases={"slow": self.pg.conn_string(
                self.pg.database, connect_query="select pg_advisory_xact_lock_shared(%d)"
                % gate_key),
                       self.pg.database: self.pg.conn_string()})
        conn = self.admin_conn(px)
        self.addCleanup(self.pg.ensure_running)
        self.pg.stop()

        def state():
            return [b["state"] for b in self.show(conn, "BREAKERS")[1]]
        with self.assertRaises(psycopg2.OperationalError):
            psycopg2.connect(px.dsn(db="slow", connect_timeout=10)).close()
        wait_until(lambda: state() == ["open"], what="the breaker open")
        # The entry's pool paused (the tick probes through no paused pool)
        # until the gate is shut, so that the probe's connect_query waits.
        conn.cursor().execute("PAUSE slow")
        self.pg.start()
        gate = hz.Gate(self.pg, gate_key)
        self.addCleanup(gate.close)
        mark = len(px.log())
        conn.cursor().execute("RESUME slow")
        # The maintenance tick's probe, through the one pool there is.
        wait_until(lambda: "connect_query: no reply in time" in px.log()[mark:], timeout=30,
                   what="the probe's connect_query given up on")
        with socket.create_connection((px.host, px.port), timeout=30) as s:
            with self.assertRaises(hz.PgError) as cm:
                hz.sync_login(s, self.pg.user, "slow", self.pg.password)
        self.assertEqual(cm.exception.sqlstate, "57014", cm.exception.fields)   # login retry
        log = px.log()[mark:]
        self.assertIn("event=breaker_half_open", log)
        self.assertNotIn("event=breaker_closed", log, log)
        self.assertEqual(state(), ["open"], px.log_tail())
        # Another entry's client probes at once and closes it.
        self.assertEqual(px.psql("select 'in'"), "in")
        log = px.log()[mark:]
        self.assertEqual(log.count("event=breaker_half_open"), 2, log)
        self.assertIn("event=breaker_closed backend=", log)
        self.assertIn("probe=yes", log[log.index("event=breaker_closed"):])
        self.assertEqual(state(), ["closed"])

    def test_a_refusal_of_a_login_started_before_a_reload_fixed_the_entry_is_ignored(self):
        # A login under the entry's old settings (here a connect_query that
        # fails, held at a gate) is refused after a reload put right ones
        # in: the refusal is of the old settings.  It failed the waiting
        # client and refused every client for server_login_retry, under
        # the fixed entry.
        gate = hz.Gate(self.pg, 7820)
        self.addCleanup(gate.close)
        good = self.pg.conn_string(self.pg.database, connect_query="select 1")
        bad = self.pg.conn_string(self.pg.database,
                                  connect_query="select %s; select 1/0" % gate.sql())
        px = self.start_pgwharf(settings={"pool_mode": "transaction", "server_login_retry": "60s",
                                          "query_wait_timeout": "30s"},
                                databases={self.pg.database: good})
        conn = self.admin_conn(px)
        cl = self.client(px)
        self.assertEqual(pt.one(cl, "select 1"), 1)
        px.databases[self.pg.database] = bad
        px.reload()
        wait_until(lambda: px.log().count("event=reload ") == 1, what="the first reload")
        wait_until(lambda: self.rows(conn, "SERVERS", database=self.pg.database) == [],
                   what="the server of the old connect_query closed")
        bg = Background(lambda: pt.one(cl, "select 42"))
        self.pg.wait_running(gate.sql(), lock_wait=True)   # the bad connect_query runs
        px.databases[self.pg.database] = good
        px.reload()
        wait_until(lambda: px.log().count("event=reload ") == 2, what="the second reload")
        gate.open()
        bg.join(20)
        self.assertFalse(bg.is_alive())
        self.assertIsNone(bg.error)
        self.assertEqual(bg.result, 42)
        self.assertEqual(pt.one(self.client(px), "select 7"), 7)

    def refused_beside_a_held_login(self):
        """Two logins of a fresh pool: the second refused by the app role's
        CONNECTION LIMIT (a connection of its own holds the one slot:
        53300), the first still on its way (held before its startup
        packet reaches PostgreSQL).  Returns (px, fwd, slot, first): the
        first client's Background, and the refusal logged."""
        app = self.pg.app_user
        fwd = HoldFirstLogin(self.pg)
        self.addCleanup(fwd.close)
        slot = socket.create_connection((self.pg.host, self.pg.port), timeout=30)
        self.addCleanup(slot.close)
        hz.sync_login(slot, app, self.pg.database, self.pg.app_password)
        self.pg.psql("alter role %s connection limit 1" % app, db="postgres", via_socket=True)
        self.addCleanup(self.pg.psql, "alter role %s connection limit -1" % app,
                        db="postgres", via_socket=True)
        px = self.start_pgwharf(settings={"pool_mode": "transaction", "default_pool_size": 2,
                                          "server_login_retry": "60s",
                                          "query_wait_timeout": "30s"},
                                databases={self.pg.database: fwd.conn_string(
                                    self.pg, user=app, password=self.pg.app_password)})
        first = Background(lambda: pt.one(self.client(px), "select 1"))
        self.assertTrue(fwd.held.wait(20))          # its server's login is held
        second = Background(lambda: pt.one(self.client(px), "select 2"))
        px.wait_for_log("event=server_connect_failed .*too many connections for role")
        return px, fwd, slot, first, second

    def let_the_held_login_in(self, fwd, slot):
        slot.close()
        wait_until(lambda: hz.server_conns(self.pg, self.pg.app_user) == 0,
                   what="the slot's backend gone")
        fwd.go.set()

    def join_all(self, bgs):
        for want, bg in enumerate(bgs, 1):
            bg.join(20)
            self.assertFalse(bg.is_alive())
            self.assertIsNone(bg.error)
            self.assertEqual(bg.result, want)

    def test_a_refusal_leaves_the_waiters_to_a_login_still_on_its_way(self):
        # Every waiting client got the refusal at once, and the server that
        # logged in a moment later, the slot free, was left idle (hunt:
        # backend faults).  They wait for it now.
        px, fwd, slot, first, second = self.refused_beside_a_held_login()
        self.let_the_held_login_in(fwd, slot)
        self.join_all((first, second))

    def test_a_client_coming_after_a_refusal_waits_for_a_login_on_its_way(self):
        # A client logging in after the refusal, while the first login is
        # still on its way, got the refusal at once (the pool's refusal
        # blocks new logins for server_login_retry), where those already
        # waiting were left to that login: it waits for it too (review of
        # 8d26bc4).
        px, fwd, slot, first, second = self.refused_beside_a_held_login()
        third = Background(lambda: pt.one(self.client(px), "select 3"))
        pt.wait_pool(self.admin_conn(px), self.pg.database, self.pg.app_user, cl_waiting=3)
        self.let_the_held_login_in(fwd, slot)
        self.join_all((first, second, third))

    def stuck_login_pools(self, fwd_class, cap, query_wait_timeout):
        """pgwharf with e1 (direct) and e2 (through fwd_class, which holds
        logins) for the app role under max_user_connections = cap, and
        e1's cap servers idle, their clients (held) connected:
        (fwd, px, held, app)."""
        app = self.pg.app_user
        fwd = fwd_class(self.pg)
        self.addCleanup(fwd.close)
        self.addCleanup(fwd.go.set)
        e1 = self.pg.conn_string(user=app, password=self.pg.app_password)
        e2 = fwd.conn_string(self.pg, user=app, password=self.pg.app_password)
        px = self.start_pgwharf(settings={"pool_mode": "transaction", "default_pool_size": 5,
                                          "max_user_connections": cap,
                                          "query_wait_timeout": query_wait_timeout,
                                          "server_connect_timeout": 60},
                                databases={"e1": e1, "e2": e2})
        held = [self.client(px, db="e1", user=app) for _ in range(cap)]
        for c in held:
            c.autocommit = False
            c.cursor().execute("select 1")           # the cap's servers all lent
        for c in held:
            c.commit()                               # e1: cap idle servers
        return fwd, px, held, app

    def test_a_stuck_login_leaves_the_pool_the_others_idle_room(self):
        # Under a full max_user_connections, a pool with a login on its way
        # took no other pool's idle server for its later waiters (one login
        # a pool at a time): with that login stuck (its bytes held before
        # PostgreSQL sees them), the second client waited out
        # query_wait_timeout while the other pool's servers sat idle
        # (review of 1d1a477).  A login on its way covers the waiters while
        # it is young only: the second client is served from that room.
        fwd, px, held, app = self.stuck_login_pools(HoldFirstLogin, 2, 20)
        first = Background(lambda: pt.one(self.client(px, db="e2", user=app), "select 1"))
        self.assertTrue(fwd.held.wait(20))           # e2's first login stuck
        second = Background(lambda: pt.one(self.client(px, db="e2", user=app), "select 2"))
        second.join(30)
        self.assertFalse(second.is_alive())
        self.assertIsNone(second.error, px.log_tail())
        self.assertEqual(second.result, 2)
        fwd.go.set()
        first.join(30)
        self.assertFalse(first.is_alive())
        self.assertIsNone(first.error, px.log_tail())
        for c in held:
            c.close()

    def test_a_stuck_login_leaves_a_single_client_the_others_idle_room(self):
        # As above with one client alone: the stuck login counted as on its
        # way to it for good (needed() counted every login connecting), so
        # only waiters beyond the logins on their way ever had the others'
        # idle room, and the one client waited out query_wait_timeout while
        # e1's second idle server sat idle (review, session 44).  Past a
        # turn a login on its way no longer counts: the client is served
        # from that room.  (query_wait_timeout 4 s: a turn of 1 s, then
        # time for a login; the assertion is that it is served.)
        fwd, px, held, app = self.stuck_login_pools(HoldFirstLogin, 2, 4)
        only = Background(lambda: pt.one(self.client(px, db="e2", user=app), "select 1"))
        self.assertTrue(fwd.held.wait(20))           # e2's first login stuck
        only.join(30)
        self.assertFalse(only.is_alive())
        self.assertIsNone(only.error, px.log_tail())
        self.assertEqual(only.result, 1)
        self.assertEqual(px.log().count("making room for another pool"), 2, px.log_tail())
        for c in held:
            c.close()

    def test_a_frozen_host_leaves_the_others_their_idle_servers_past_one(self):
        # As above with every login of e2 stuck (a frozen host): past a turn
        # its stuck login no longer counted, so each turn another of e1's
        # idle servers made way for another login that stuck too, until
        # e2's one client held the whole max_user_connections and e1's
        # next client waited out query_wait_timeout.  One login beyond the
        # waiters makes way, no more.
        fwd, px, held, app = self.stuck_login_pools(HoldAllLogins, 4, 6)
        only = Background(lambda: pt.one(self.client(px, db="e2", user=app), "select 1"))
        only.join(30)                    # its query_wait_timeout: six turns of 1 s
        self.assertFalse(only.is_alive())
        self.assertIn("query_wait_timeout", str(only.error))
        # (the first login's room, then one login beyond the waiter)
        self.assertEqual(px.log().count("making room for another pool"), 2, px.log_tail())
        self.assertEqual(pt.one(held[0], "select 2"), 2)
        for c in held:
            c.close()

    def test_a_stuck_login_is_overtaken_at_its_turn_not_at_the_next_tick(self):
        # As above with query_wait_timeout 2 s (a turn of 0.5 s): the pool,
        # quiet behind its stuck login, was looked at again only at the
        # maintenance tick, once a second.  The turn's end kicks it now.
        # Seen in pgwharf's own log times, not through the clients timing
        # out (which made the test depend on a login finishing within
        # 0.375 s: 6 runs in 20 failed under ASan on a loaded host): the
        # second idle server of e1 closes for e2 a turn after the first
        # did (or at the second client's coming, if that is later), not at
        # the next tick.  The clients come right after a tick (an idle
        # server of another user closed at it, by its entry's
        # server_lifetime), so that the tick is about a second after the
        # first close, half a second past the turn.
        app = self.pg.app_user
        fwd = HoldFirstLogin(self.pg)
        self.addCleanup(fwd.close)
        self.addCleanup(fwd.go.set)
        e1 = self.pg.conn_string(user=app, password=self.pg.app_password)
        e2 = fwd.conn_string(self.pg, user=app, password=self.pg.app_password)
        tick = self.pg.conn_string(server_lifetime=1)
        turn = 0.5
        px = self.start_pgwharf(settings={"pool_mode": "transaction", "default_pool_size": 5,
                                          "max_user_connections": 2,
                                          "query_wait_timeout": 4 * turn,
                                          "server_connect_timeout": 60},
                                databases={"e1": e1, "e2": e2, "tick": tick})
        held = [self.client(px, db="e1", user=app) for _ in range(2)]
        for c in held:
            c.autocommit = False
            c.cursor().execute("select 1")           # both servers of the cap lent
        for c in held:
            c.commit()                               # e1: two idle servers
        self.assertEqual(pt.one(self.client(px, db="tick"), "select 1"), 1)
        px.wait_for_log(r"event=server_close [^\n]*reason=server_lifetime")
        first = Background(lambda: pt.one(self.client(px, db="e2", user=app), "select 1"))
        self.assertTrue(fwd.held.wait(20))           # e2's first login stuck
        second = Background(lambda: pt.one(self.client(px, db="e2", user=app), "select 2"))
        for want, bg in enumerate((first, second), 1):
            bg.join(30)
            self.assertFalse(bg.is_alive())
            self.assertIsNone(bg.error, px.log_tail())
            self.assertEqual(bg.result, want)

        def times(pattern):
            return [datetime.datetime.strptime(m, "%Y-%m-%dT%H:%M:%S.%fZ").timestamp()
                    for m in re.findall(r"^ts=(\S+) " + pattern, px.log(), re.M)]
        made_room = times(r"level=info event=server_close db=e1 [^\n]*making room")
        logins = times(r"level=info event=login [^\n]*db=e2 ")
        self.assertEqual((len(made_room), len(logins)), (2, 2), px.log_tail())
        due = max(made_room[0] + turn, logins[1])
        self.assertGreater(made_room[1], due - 0.01, px.log_tail())
        self.assertLess(made_room[1], due + 0.2, px.log_tail())  # the tick: ~0.5 s later
        for c in held:
            c.close()

    def test_a_login_started_before_a_reload_does_not_end_the_new_settings_refusal(self):
        # A login under the entry's old settings (a connect_query held at a
        # gate) succeeds after a reload put in a connect_query that fails,
        # and after a login with it was refused: its success ended that
        # refusal, so the next waiting client had a new login refused the
        # same way instead of the refusal at once (server_login_retry).
        # A pool of two: the held login and the second client's.  (Past a
        # turn the held connect_query no longer covers the first client,
        # and with room a login beyond the waiters started for it, refused
        # too: two refusals, not from the refusal ending.)
        gate = hz.Gate(self.pg, 7821)
        self.addCleanup(gate.close)
        held = self.pg.conn_string(self.pg.database, connect_query="select %s" % gate.sql())
        bad = self.pg.conn_string(self.pg.database, connect_query="select 1/0")
        px = self.start_pgwharf(settings={"pool_mode": "transaction", "server_login_retry": "60s",
                                          "query_wait_timeout": "30s", "default_pool_size": 2},
                                databases={self.pg.database: held})
        conn = self.admin_conn(px)
        first = Background(lambda: pt.one(self.client(px), "select 1"))
        self.pg.wait_running(gate.sql(), lock_wait=True)    # its connect_query waits
        px.databases[self.pg.database] = bad
        px.reload()
        wait_until(lambda: px.log().count("event=reload ") == 1, what="the reload")
        second = Background(lambda: pt.one(self.client(px), "select 2"))
        px.wait_for_log("event=server_connect_failed .*division by zero")
        self.wait_pool(conn, cl_waiting=2)
        gate.open()
        for bg in (first, second):
            bg.join(20)
            self.assertFalse(bg.is_alive())
            self.assertIn("division by zero", str(bg.error))
        refused = re.findall(r"event=server_connect_failed [^\n]*division by zero", px.log())
        self.assertEqual(len(refused), 1, refused)


class HoldFirstLogin(hz.Forwarder):
    """A Forwarder whose first connection's bytes wait (nothing of it
    reaches PostgreSQL: no backend, no slot of a CONNECTION LIMIT) until
    go is set; held is set once they wait.  The others go through."""

    def __init__(self, pg):
        self.go, self.held = threading.Event(), threading.Event()
        super().__init__(pg)

    def chunk_hook(self, n):
        if n != 1:
            return None

        def hold(data, to):
            self.held.set()
            self.go.wait(60)
            return data
        return hold


class HoldAllLogins(hz.Forwarder):
    """A Forwarder whose every connection's bytes wait until go is set (a
    frozen host)."""

    def __init__(self, pg):
        self.go = threading.Event()
        super().__init__(pg)

    def chunk_hook(self, n):
        def hold(data, to):
            self.go.wait(60)
            return data
        return hold


class TestPoolsFreed(AdminTestCase):
    """Pools that nobody can come back for must not stay for ever: those of
    the "*" entry after autodb_idle_timeout, those of an entry a reload
    removed once unused; with them go their servers and SHOW STATS rows."""

    def pools(self, conn):
        return {r["database"] for r in self.show(conn, "POOLS")[1]
                if r["user"] == self.pg.app_user}

    def test_autodb_pools_freed_after_autodb_idle_timeout(self):
        px = self.start_pgwharf(
            settings={"pool_mode": "transaction", "autodb_idle_timeout": "1s",
                      "min_pool_size": 1, "default_pool_size": 2},
            databases={"*": self.pg.conn_string(self.pg.database2)})
        conn = self.admin_conn(px)
        # held: a client stays connected (idle) all along
        held = self.client(px, db="held", user=self.pg.app_user)
        held.cursor().execute("select 1")
        names = ["tried%d" % i for i in range(20)]
        for name in names:
            c = self.client(px, db=name, user=self.pg.app_user)
            self.assertEqual(pt.one(c, "select 1"), 1)
            c.close()
        # (Not "all 20 are in SHOW POOLS now": on a slow host the first may
        # be gone before the last psql is done.)
        # Unused for a second: freed, min_pool_size notwithstanding, with
        # their servers and stats rows.
        wait_until(lambda: self.pools(conn) == {"held"}, timeout=30, interval=0.2,
                   what="tried* pools freed")
        freed = set(re.findall(r"event=pool_free db=(\S+) ", px.log()))
        self.assertEqual(freed, set(names))
        stats = {r["database"] for r in self.show(conn, "STATS")[1]}
        self.assertFalse(stats & set(names), stats)
        wait_until(lambda: hz.server_conns(self.pg, self.pg.app_user) <= 2, timeout=30,
                   interval=0.2, what="servers of freed pools closed")
        self.assertIn("event=pool_free", px.log())
        # The client that held its pool all along still works, and a freed
        # name can be used again.
        cur = held.cursor()
        cur.execute("select 42")
        self.assertEqual(cur.fetchone()[0], 42)
        self.assertEqual(px.psql("select 2", db=names[0], user=self.pg.app_user), "2")
        self.assertIn(names[0], self.pools(conn))

    def test_counters_of_a_freed_pool_stay_with_its_database(self):
        # Two users' pools of one database: freeing one must not take its
        # assignments out of the database's totals (SHOW STATS and the
        # *_total metrics are counters).
        px = self.start_pgwharf(
            settings={"pool_mode": "transaction", "autodb_idle_timeout": "1s"},
            databases={"*": self.pg.conn_string(self.pg.database2)})
        conn = self.admin_conn(px)
        held = self.client(px, db="x")             # the pgwharf user's pool stays
        held.cursor().execute("select 1")
        for i in range(5):
            c = self.client(px, db="x", user=self.pg.app_user)
            self.assertEqual(pt.one(c, "select 1"), 1)
            c.close()

        def totals():
            row = [r for r in self.show(conn, "STATS")[1] if r["database"] == "x"][0]
            return row["total_server_assignment_count"], row["total_xact_count"]

        before = totals()
        self.assertGreaterEqual(before[0], 6)
        px.wait_for_log(r"event=pool_free db=x user=%s" % self.pg.app_user, timeout=30)
        self.assertEqual(totals(), before)

    def test_removed_database_pool_freed_once_unused(self):
        px = self.start_pgwharf(settings={"pool_mode": "transaction"},
                                databases={"gone": self.pg.conn_string(self.pg.database2),
                                           self.pg.database: self.pg.conn_string()})
        conn = self.admin_conn(px)
        c = self.client(px, db="gone", user=self.pg.app_user)
        c.cursor().execute("select 1")
        del px.databases["gone"]
        px.reload()
        px.wait_for_log(r"event=pool_orphaned db=gone")
        self.assertIn("gone", self.pools(conn))     # its client still holds it
        c.close()
        wait_until(lambda: "gone" not in self.pools(conn), timeout=30, interval=0.2,
                   what="pool of the removed database freed")
        px.wait_for_log(r"event=pool_free db=gone user=%s reason=database_removed"
                        % self.pg.app_user)
        self.assertEqual(px.psql("select 1"), "1")

    def test_backends_of_removed_addresses_freed_once_unused(self):
        # Each reload points the entry at another address: the backend of
        # the old one (SHOW BREAKERS has a row per backend) goes once no
        # pool host and no server names it, so a process reloaded again and
        # again with changing addresses does not grow.  The first address
        # keeps its backend while a server made to it is lent to a client.
        real = self.pg.conn_string()
        px = self.start_pgwharf(settings={"pool_mode": "transaction"},
                                databases={self.pg.database: real})
        conn = self.admin_conn(px)
        held = self.client(px, autocommit=False)
        held.cursor().execute("select 1")          # a transaction: its server stays lent
        first = {b["backend"] for b in self.show(conn, "BREAKERS")[1]}
        self.assertEqual(len(first), 1, first)

        def backends():
            return {b["backend"] for b in self.show(conn, "BREAKERS")[1]}

        for i in range(30):
            # socket directories nothing listens in: no connection is tried
            px.databases[self.pg.database] = pt._conninfo(
                host=os.path.join(px.dir, "gone%d" % i), port=5432, dbname=self.pg.database)
            px.write_config()
            conn.cursor().execute("RELOAD")
            want = first | {"%s:5432" % os.path.join(px.dir, "gone%d" % i)}
            self.assertEqual(backends(), want)
        # The lent server is still the client's, on the first address.
        cur = held.cursor()
        cur.execute("select 42")
        self.assertEqual(cur.fetchone()[0], 42)
        held.commit()                              # released: it closes (its host changed)
        wait_until(lambda: backends() == {"%s:5432" % os.path.join(px.dir, "gone29")},
                   timeout=30, interval=0.1, what="the first address's backend freed")
        px.databases[self.pg.database] = real
        px.write_config()
        conn.cursor().execute("RELOAD")
        cur.execute("select 43")
        self.assertEqual(cur.fetchone()[0], 43)
        held.commit()
        self.assertEqual(backends(), first)

class TestAccess(AdminTestCase):

    def test_other_users_are_refused(self):
        px = self.start(admin_users=self.pg.user, stats_users=self.pg.user)
        cp = px.psql("SHOW POOLS", db="pgbouncer", user=self.pg.app_user, check=False)
        self.assertNotEqual(cp.returncode, 0)
        self.assertIn("not allowed to connect to the admin console", cp.stderr)

    def test_user_pgbouncer_of_the_same_unix_user_needs_no_password_on_the_socket(self):
        # PgBouncer's local way in: "pgbouncer" on the console over the Unix
        # socket, from a process of the pooler's own Unix user (this test
        # runs pgwharf as itself), without a password and as an admin, even
        # though no admin_users or auth_file names it.  pgwharf asked for a
        # password it could not know.
        px = self.start(admin_users=self.pg.app_user, stats_users="")
        conn = psycopg2.connect(host=px.dir, port=px.port, dbname="pgbouncer",
                                user="pgbouncer")
        self.addCleanup(conn.close)
        conn.autocommit = True
        cur = conn.cursor()
        # its SHOW CLIENTS row: "unix" and the listen port, as PgBouncer
        # writes both (local_port was 0)
        me = [r for r in self.show(conn, "CLIENTS")[1] if r["user"] == "pgbouncer"]
        self.assertEqual([(r["addr"], r["port"], r["local_addr"], r["local_port"]) for r in me],
                         [("unix", px.port, "unix", px.port)])
        cur.execute("PAUSE")                       # an admin command
        cur.execute("SHOW STATE")
        self.assertIn(("paused", "yes"), cur.fetchall())
        cur.execute("RESUME")
        self.assertEqual(px.psql("select 1"), "1")
        # only there: over TCP it is a user like any other (auth_file has none)
        with self.assertRaises(psycopg2.OperationalError):
            psycopg2.connect(host=px.host, port=px.port, dbname="pgbouncer",
                             user="pgbouncer", password="x").close()
        # and only on the console
        with self.assertRaises(psycopg2.OperationalError):
            psycopg2.connect(host=px.dir, port=px.port, dbname=self.pg.database,
                             user="pgbouncer", password="x").close()

    def test_stats_user_may_show_but_not_change(self):
        px = self.start(admin_users=self.pg.user, stats_users=self.pg.app_user)
        conn = self.admin_conn(px, user=self.pg.app_user)
        self.assertEqual(self.show(conn, "POOLS")[0][0], "database")
        self.show(conn, "STATS")
        conn.cursor().execute("SET client_encoding = 'UTF8'")   # drivers do this
        for cmd in ("PAUSE", "RESUME", "RELOAD", "KILL pgwharf", "RECONNECT",
                    "SET default_pool_size = 3", "SHUTDOWN", "DISABLE pgwharf",
                    "ENABLE pgwharf"):
            with self.subTest(cmd=cmd):
                with self.assertRaises(psycopg2.Error) as cm:
                    conn.cursor().execute(cmd)
                self.assertEqual(cm.exception.pgcode, "42501")
        # still usable afterwards, and the admin user may
        self.assertEqual(self.show(conn, "VERSION")[0], ["version"])
        admin = self.admin_conn(px)
        admin.cursor().execute("RELOAD")

    def test_errors_keep_the_session(self):
        px = self.start()
        conn = self.admin_conn(px)
        for cmd, state in (("SHOW NOTHING", "42601"), ("FROB", "42601"),
                           ("SHOW POOLS extra words", "42601"), ("KILL_CLIENT 999999", "42704"),
                           ("KILL_CLIENT abc", "22023"), ("PAUSE nosuchdb", "3D000"),
                           ("RESUME", "55000"), ("SET nosuchkey = 1", "22023"),
                           ("SET listen_port = 7000", "55P02"), ("PAUSE pgbouncer", "55000"),
                           ("SHOW FDS", "0A000"), ("SUSPEND", "0A000")):
            with self.subTest(cmd=cmd):
                with self.assertRaises(psycopg2.Error) as cm:
                    conn.cursor().execute(cmd)
                self.assertEqual(cm.exception.pgcode, state, str(cm.exception))
        # PgBouncer's wording, quotes included (scripts match on it)
        for cmd in ("SHOW NOTHING", "FROB"):
            with self.assertRaises(psycopg2.Error) as cm:
                conn.cursor().execute(cmd)
            self.assertEqual(cm.exception.diag.message_primary,
                             "invalid command '%s', use SHOW HELP;" % cmd)
        self.assertIn("pgwharf", self.show(conn, "VERSION")[1][0]["version"])

    def test_select_is_show_as_in_pgbouncer(self):
        # PgBouncer takes SELECT for SHOW (SELECT version, SELECT pools,
        # SELECT client_encoding), a stats user's too; pgwharf answered
        # 42601 "invalid command".  A statement it does not know is echoed
        # as typed in PgBouncer's words ('show foo', not 'SHOW foo').
        px = self.start(admin_users=self.pg.user, stats_users=self.pg.app_user)
        for user in (None, self.pg.app_user):
            conn = self.admin_conn(px, user=user)
            for view in ("VERSION", "pools", "Lists", "client_encoding"):
                with self.subTest(user=user, view=view):
                    cur = conn.cursor()
                    cur.execute("SHOW %s" % view)
                    want = ([d.name for d in cur.description], len(cur.fetchall()))
                    cur.execute("select %s" % view)
                    self.assertEqual(cur.statusmessage, "SHOW")
                    self.assertEqual(([d.name for d in cur.description], len(cur.fetchall())),
                                     want)
            for cmd in ("select 1", "select", "show", "show foo", "Select Nothing"):
                with self.subTest(user=user, cmd=cmd):
                    with self.assertRaises(psycopg2.Error) as cm:
                        conn.cursor().execute(cmd)
                    self.assertEqual(cm.exception.pgcode, "42601")
                    self.assertEqual(cm.exception.diag.message_primary,
                                     "invalid command '%s', use SHOW HELP;" % cmd)

    @unittest.skipIf(psycopg is None, "psycopg (3) is not installed")
    def test_extended_protocol_is_refused_cleanly(self):
        px = self.start()
        with psycopg.connect(px.dsn(db="pgbouncer"), autocommit=True) as conn:
            with self.assertRaises(psycopg.Error) as cm:
                conn.execute("SHOW POOLS", binary=True)    # extended protocol
            self.assertEqual(cm.exception.sqlstate, "08P01")
            cur = psycopg.ClientCursor(conn)          # simple protocol
            cur.execute("SHOW VERSION")
            self.assertIn("pgwharf", cur.fetchone()[0])

    def test_a_sync_or_flush_with_a_body_gets_08P01(self):
        """As PostgreSQL: a Sync with a body gets 08P01 before its
        ReadyForQuery, a Flush with one 08P01 and skipping to the next Sync
        (a Query there dropped).  The console took both for plain ones."""
        px = self.start()
        codes = lambda got: [(t, hz.parse_fields(b)["C"] if t == b"E" else None)
                             for t, b in got]
        with socket.create_connection((px.host, px.port), timeout=10) as s:
            hz.sync_login(s, self.pg.user, "pgbouncer", self.pg.password)
            s.sendall(hz.msg(b"S", b"x"))
            self.assertEqual(codes(hz.read_until_ready(s)), [(b"E", "08P01"), (b"Z", None)])
            s.sendall(hz.msg(b"H", b"x") + hz.query_msg("SHOW VERSION") + hz.msg(b"S"))
            self.assertEqual(codes(hz.read_until_ready(s)), [(b"E", "08P01"), (b"Z", None)])
            rows, errors = hz.simple_query(s, "SHOW VERSION")
            self.assertEqual(errors, [])
            self.assertIn(b"pgwharf", rows[0][0])

    def test_the_extended_protocol_is_answered_as_by_postgres(self):
        """A guard for a difference kept (README, Admin console): PgBouncer
        1.18, run side by side, answers any message but a Query or a
        Terminate (a Sync or Flush alone too) with ERROR 08P01, then
        ReadyForQuery, then FATAL 08P01 "bad packet", and closes the
        session.  pgwharf keeps the session and answers as PostgreSQL's
        framing has it: a Parse, Bind or Execute gets 08P01 once and the
        rest up to the Sync is dropped, whose ReadyForQuery ends the error;
        a Sync with nothing before it gets ReadyForQuery alone (nothing to
        refuse: as from PostgreSQL, as libpq's empty pipeline sends)."""
        px = self.start()
        kinds = lambda got: [(t, hz.parse_fields(b)["C"] if t == b"E" else None)
                             for t, b in got]
        with socket.create_connection((px.host, px.port), timeout=10) as s:
            hz.sync_login(s, self.pg.user, "pgbouncer", self.pg.password)
            s.sendall(hz.msg(b"S"))
            self.assertEqual(kinds(hz.read_until_ready(s)), [(b"Z", None)])
            s.sendall(hz.ext_msgs("SHOW VERSION"))
            self.assertEqual(kinds(hz.read_until_ready(s)), [(b"E", "08P01"), (b"Z", None)])
            rows, errors = hz.simple_query(s, "SHOW VERSION")
            self.assertEqual(errors, [])
            self.assertIn(b"pgwharf", rows[0][0])


class TestCommands(AdminTestCase):

    def test_pause_makes_transactions_wait_and_resume_releases_them(self):
        px = self.start(default_pool_size=2)
        cl = self.client(px)
        cl.cursor().execute("select 1")
        clock = psycopg2.connect(self.pg.dsn())       # straight to PostgreSQL
        clock.autocommit = True
        self.addCleanup(clock.close)
        conn = self.admin_conn(px)
        conn.cursor().execute("PAUSE %s" % self.pg.database)
        dbs = {r["name"]: r for r in self.show(conn, "DATABASES")[1]}
        self.assertEqual(dbs[self.pg.database]["paused"], 1)
        self.assertEqual(dbs[self.pg.database2]["paused"], 0)
        # pausing a paused database again is no error (as in PgBouncer: scripts
        # retry it); one RESUME still undoes it
        conn.cursor().execute("PAUSE %s" % self.pg.database)
        dbs = {r["name"]: r for r in self.show(conn, "DATABASES")[1]}
        self.assertEqual(dbs[self.pg.database]["paused"], 1)
        # The paused query reads PostgreSQL's clock when it runs: that must
        # be after RESUME (after a reading of the same clock just before).
        bg = Background(lambda: pt.one(cl, "select clock_timestamp()"))
        self.wait_pool(conn, cl_waiting=1)
        # other databases go on
        self.assertEqual(px.psql("select 3", db=self.pg.database2), "3")
        paused_until = pt.one(clock, "select clock_timestamp()")
        self.assertTrue(bg.is_alive(), "the transaction ran on a paused database")
        conn.cursor().execute("RESUME %s" % self.pg.database)
        bg.join(10)
        self.assertFalse(bg.is_alive())
        self.assertIsNone(bg.error)
        self.assertGreater(bg.result, paused_until, "the transaction ran on a paused database")
        # PAUSE without a database pauses everything, SHOW STATE says so
        conn.cursor().execute("PAUSE")
        state = {r["key"]: r["value"] for r in self.show(conn, "STATE")[1]}
        self.assertEqual(state["paused"], "yes")
        bg = Background(lambda: pt.one(cl, "select clock_timestamp()"))
        self.wait_pool(conn, cl_waiting=1)
        paused_until = pt.one(clock, "select clock_timestamp()")
        self.assertTrue(bg.is_alive())
        conn.cursor().execute("RESUME")
        bg.join(10)
        self.assertFalse(bg.is_alive())
        self.assertIsNone(bg.error)
        self.assertGreater(bg.result, paused_until, "a query ran while everything was paused")

    def test_a_pause_of_all_shows_in_show_state_not_show_databases(self):
        # As PgBouncer 1.18 (run side by side on one pgbouncer.ini): after
        # PAUSE with no database every SHOW DATABASES row says paused 0
        # (its db_paused is set by PAUSE db alone); the pause of all is
        # SHOW STATE's.  pgwharf said paused 1 on every row.
        px = self.start()
        self.assertEqual(px.psql("select 1"), "1")
        conn = self.admin_conn(px)
        conn.cursor().execute("PAUSE")
        state = {r["key"]: r["value"] for r in self.show(conn, "STATE")[1]}
        self.assertEqual(state["paused"], "yes")
        paused = {r["name"]: r["paused"] for r in self.show(conn, "DATABASES")[1]}
        self.assertEqual(set(paused.values()), {0}, paused)
        conn.cursor().execute("RESUME")
        conn.cursor().execute("PAUSE %s" % self.pg.database)
        paused = {r["name"]: r["paused"] for r in self.show(conn, "DATABASES")[1]}
        self.assertEqual(paused[self.pg.database], 1)
        self.assertEqual(sum(paused.values()), 1, paused)
        state = {r["key"]: r["value"] for r in self.show(conn, "STATE")[1]}
        self.assertEqual(state["paused"], "no")

    def test_default_pool_size_0_opens_servers_for_sized_databases_only(self):
        # As PgBouncer 1.18 (run side by side): default_pool_size = 0 is a
        # file it runs (pgwharf refused it): a database that sets
        # pool_size gets that many servers; the others' clients get no
        # server of their own and wait (query_wait_timeout), unless the
        # reserve serves them.  SHOW DATABASES says pool_size 0.
        cs = self.pg.conn_string()
        px = self.start_pgwharf(
            settings={"admin_users": self.pg.user, "pool_mode": "transaction",
                      "default_pool_size": "0", "query_wait_timeout": "1"},
            databases={"sized": cs + " pool_size=2", "zero": cs})
        self.assertEqual(px.psql("select 1", db="sized"), "1")
        conn = self.admin_conn(px)
        sizes = {r["name"]: r["pool_size"] for r in self.show(conn, "DATABASES")[1]}
        self.assertEqual((sizes["sized"], sizes["zero"]), (2, 0))
        config = {r["key"]: r["value"] for r in self.show(conn, "CONFIG")[1]}
        self.assertEqual(config["default_pool_size"], "0")
        with self.assertRaises(psycopg2.Error) as cm:
            self.client(px, db="zero").cursor().execute("select 1")
        self.assertIn("query_wait_timeout", str(cm.exception))
        self.assertEqual(self.rows(conn, "SERVERS", database="zero"), [])
        self.assertIn("sized", [r["database"] for r in self.show(conn, "SERVERS")[1]])

    def test_a_client_that_leaves_a_paused_pool_is_gone_at_once(self):
        """A client whose request waits on a paused database and that then
        leaves (Terminate, or only the close of its socket) is gone at
        once, as in PgBouncer: it kept its max_client_conn slot (and
        cl_waiting) until RESUME, and its request then ran for nobody (an
        INSERT of a client that gave up and retried ran twice)."""
        px = self.start(default_pool_size=1, max_client_conn=3)
        self.pg.psql("drop table if exists paused_leave; create table paused_leave (n int)",
                     user=self.pg.user)
        self.addCleanup(self.pg.psql, "drop table if exists paused_leave",
                        user=self.pg.user, check=False)
        self.assertEqual(px.psql("select 1"), "1")   # a login then needs no server
        conn = self.admin_conn(px)                    # one slot of three
        conn.cursor().execute("PAUSE %s" % self.pg.database)
        insert = hz.query_msg("insert into paused_leave values (1)")
        for end in (hz.msg(b"X"), b""):
            with self.subTest(terminate=bool(end)):
                a = socket.create_connection((px.host, px.port), timeout=10)
                self.addCleanup(a.close)
                hz.sync_login(a, self.pg.user, self.pg.database, self.pg.password)
                a.sendall(insert)
                self.wait_pool(conn, cl_waiting=1)
                a.sendall(end)
                a.close()
                self.wait_pool(conn, cl_waiting=0, cl_active=0)
                self.assertEqual(self.rows(conn, "CLIENTS", database=self.pg.database), [])
        # Their slots are free: two clients log in while still paused.
        clients = [self.client(px) for _ in range(2)]
        conn.cursor().execute("RESUME %s" % self.pg.database)
        # The pool's one server takes its queue in order: a request left
        # behind would have run before this one.
        self.assertEqual(pt.one(clients[0], "select count(*) from paused_leave"), 0)
        self.assertEqual(self.pg.psql("select count(*) from paused_leave", user=self.pg.user),
                         "0")

    def test_sigusr1_pauses_and_sigusr2_resumes(self):
        # As PgBouncer: SIGUSR1 is PAUSE, SIGUSR2 RESUME.  pgwharf had no
        # handler for them and died of the signal's default action (no
        # 57P01 to its clients, its pidfile left behind).
        px = self.start()
        cl = self.client(px)
        cl.cursor().execute("select 1")
        conn = self.admin_conn(px)

        def paused():
            return {r["key"]: r["value"] for r in self.show(conn, "STATE")[1]}["paused"]

        px.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while paused() != "yes" and time.monotonic() < deadline and px.proc.poll() is None:
            time.sleep(0.02)
        self.assertIsNone(px.proc.poll(), px.log_tail())
        self.assertEqual(paused(), "yes")
        bg = Background(lambda: pt.one(cl, "select 2"))
        self.wait_pool(conn, cl_waiting=1)
        self.assertTrue(bg.is_alive(), "a query ran while everything was paused")
        px.send_signal(signal.SIGUSR2)
        bg.join(10)
        self.assertIsNone(bg.error)
        self.assertEqual(bg.result, 2)
        self.assertEqual(paused(), "no")
        self.assertIsNone(px.proc.poll(), px.log_tail())

    def test_sigusr2_during_a_shutdown_says_it_does_nothing(self):
        # It was logged action=resume and did nothing: a shutdown is not
        # taken back (its listeners are closed).
        px = self.start()
        cl = self.client(px, autocommit=False)
        cl.cursor().execute("select 1")               # holds its server
        px.send_signal(signal.SIGINT)
        px.wait_for_log("action=shutdown_wait_for_servers")
        px.send_signal(signal.SIGUSR2)
        px.wait_for_log(r'signal=SIGUSR2 action=none reason="shutting down"')
        self.assertNotIn("signal=SIGUSR2 action=resume", px.log())
        cl.commit()
        self.assertEqual(px.proc.wait(30), 0)

    def test_pause_waits_for_lent_servers_and_closes_them(self):
        # As PgBouncer: PAUSE answers once the database has no server left:
        # idle ones are closed at once, a lent one when its transaction ends.
        px = self.start(default_pool_size=3)
        idle = self.client(px)
        idle.cursor().execute("select 1")            # leaves an idle server
        busy = self.client(px, autocommit=False)
        cur = busy.cursor()
        cur.execute("select pg_backend_pid()")       # holds a server: transaction open
        busy_pid = cur.fetchone()[0]
        conn = self.admin_conn(px)
        pauser = self.admin_conn(px)
        bg = Background(lambda: pauser.cursor().execute("PAUSE %s" % self.pg.database))
        wait_until(lambda: {r["name"]: r["paused"] for r in self.show(conn, "DATABASES")[1]}
                   .get(self.pg.database) == 1, what="the database paused")
        wait_until(lambda: [r["state"] for r in
                            self.rows(conn, "SERVERS", database=self.pg.database)] == ["active"],
                   what="the idle server closed")
        self.assertTrue(bg.is_alive(), "PAUSE answered while a transaction ran")
        cur.execute("select 2")                      # the transaction goes on
        self.assertEqual(cur.fetchone()[0], 2)
        self.assertTrue(bg.is_alive(), "PAUSE answered while a transaction ran")
        busy.commit()
        bg.join(10)
        self.assertFalse(bg.is_alive(), "PAUSE did not answer once the server came back")
        self.assertIsNone(bg.error)
        self.assertEqual(self.rows(conn, "SERVERS", database=self.pg.database), [])
        # not followed by other commands, PAUSE answers at once (no server now anyway)
        cur2 = conn.cursor()
        cur2.execute("PAUSE %s; SHOW STATE" % self.pg.database)
        conn.cursor().execute("RESUME %s" % self.pg.database)
        cur.execute("select pg_backend_pid()")
        self.assertNotEqual(cur.fetchone()[0], busy_pid)
        busy.commit()

    def test_a_cancel_of_a_waiting_pause_or_wait_close_ends_the_wait(self):
        # psql's ^C on a PAUSE that waits for a long transaction (as
        # PgBouncer, which resumes): the PAUSE gets 57014 and is undone;
        # the console stays usable.  It was ignored ("no query in
        # progress"): the console hung and the database stayed paused.
        px = self.start(default_pool_size=2, verbose=1)
        busy = self.client(px, autocommit=False)
        busy.cursor().execute("select 1")            # holds a server: transaction open
        conn = self.admin_conn(px)
        pauser = self.admin_conn(px)
        # Failing, the wait ends once the transaction does (before the
        # connections close: a psycopg2 close waits for the query).
        self.addCleanup(busy.rollback)

        def paused():       # PAUSE db's, or SHOW STATE's for a PAUSE of all
            return max(int(pt.paused_all(conn)), {r["name"]: r["paused"] for r in
                       self.show(conn, "DATABASES")[1]}.get(self.pg.database))

        for sql in ("PAUSE %s" % self.pg.database, "PAUSE"):
            bg = Background(lambda: pauser.cursor().execute(sql))
            wait_until(lambda: paused() == 1, what="the database paused")
            self.assertTrue(bg.is_alive(), "%s answered while a transaction ran" % sql)
            pauser.cancel()
            bg.join(10)
            self.assertFalse(bg.is_alive(), "the cancel did not end %s" % sql)
            self.assertIsInstance(bg.error, psycopg2.errors.QueryCanceled)
            self.assertEqual(paused(), 0)
            self.assertEqual(px.psql("select 1"), "1")   # not paused: served
            state = {r["key"]: r["value"] for r in self.show(pauser, "STATE")[1]}
            self.assertEqual(state["paused"], "no")
        # WAIT_CLOSE after a RECONNECT, the lent server not back yet.
        pauser.cursor().execute("RECONNECT %s" % self.pg.database)
        bg = Background(lambda: pauser.cursor().execute("WAIT_CLOSE %s" % self.pg.database))
        px.wait_for_log("event=admin .*command=\\S*WAIT_CLOSE")     # read: it waits
        self.assertTrue(bg.is_alive(), "WAIT_CLOSE answered while a transaction ran")
        pauser.cancel()
        bg.join(10)
        self.assertFalse(bg.is_alive(), "the cancel did not end WAIT_CLOSE")
        self.assertIsInstance(bg.error, psycopg2.errors.QueryCanceled)
        busy.commit()
        self.assertEqual(self.show(pauser, "VERSION")[0], ["version"])     # usable
        px.wait_for_log("event=admin_cancel .*command=WAIT_CLOSE")

    def test_a_cancel_undoes_only_the_pause_it_cancels(self):
        # A canceled PAUSE is undone, but only what it did: a PAUSE of
        # everything canceled while it waits leaves a database paused by
        # an earlier PAUSE db paused (it cleared every pause), and a PAUSE
        # db retried on a paused database (a no-op) leaves it paused.
        px = self.start(default_pool_size=2, verbose=1)
        busy = self.client(px, autocommit=False)
        busy.cursor().execute("select 1")            # holds a server: transaction open
        conn = self.admin_conn(px)
        self.addCleanup(busy.rollback)              # failing, the PAUSE ends first
        db, db2 = self.pg.database, self.pg.database2

        def paused():
            return {r["name"]: r["paused"] for r in self.show(conn, "DATABASES")[1]}

        def cancel_waiting(sql):
            pauser = self.admin_conn(px)
            bg = Background(lambda: pauser.cursor().execute(sql))
            wait_until(lambda: paused().get(db) == 1 or pt.paused_all(conn),
                       what="the database paused")
            self.assertTrue(bg.is_alive(), "%s answered while a transaction ran" % sql)
            pauser.cancel()
            bg.join(10)
            self.assertFalse(bg.is_alive(), "the cancel did not end %s" % sql)
            self.assertIsInstance(bg.error, psycopg2.errors.QueryCanceled)

        conn.cursor().execute("PAUSE %s" % db2)     # no server there: answered at once
        self.assertEqual(paused()[db2], 1)
        cancel_waiting("PAUSE")
        self.assertEqual(paused()[db], 0)
        self.assertEqual(paused()[db2], 1, "the canceled PAUSE undid an earlier PAUSE db")
        self.assertEqual(px.psql("select 1"), "1")
        conn.cursor().execute("RESUME %s" % db2)
        # PAUSE db answered at once (another command follows), then retried.
        conn.cursor().execute("PAUSE %s; SHOW VERSION" % db)
        self.assertEqual(paused()[db], 1)
        pauser = self.admin_conn(px)
        bg = Background(lambda: pauser.cursor().execute("PAUSE %s" % db))
        # read (it waits): the second PAUSE db in the log
        wait_until(lambda: len(re.findall("event=admin .*command=\\S*PAUSE %s\\b" % db,
                                          px.log())) == 2, what="the PAUSE read")
        self.assertTrue(bg.is_alive(), "PAUSE answered while a transaction ran")
        pauser.cancel()
        bg.join(10)
        self.assertFalse(bg.is_alive(), "the cancel did not end the PAUSE")
        self.assertIsInstance(bg.error, psycopg2.errors.QueryCanceled)
        self.assertEqual(paused()[db], 1, "the canceled no-op PAUSE undid the earlier one")
        conn.cursor().execute("RESUME %s" % db)
        self.assertEqual(paused()[db], 0)

    def test_a_canceled_pause_does_not_undo_a_kill_since(self):
        # A PAUSE db waiting (here for a server still in its connect_query)
        # and a KILL db from another console: KILL leaves the database
        # paused until RESUME db, but the cancel of the waiting PAUSE took
        # that pause back (found by a review of admin_cmd.c).  KILL closes
        # the server the PAUSE waits for, so the PAUSE answers in the next
        # loop turn (as PgBouncer's); a cancel read before it (the same
        # turn) must not undo the pause, nor one read after it.
        gate = hz.Gate(self.pg, 7081)
        self.addCleanup(gate.close)
        db = self.pg.database
        px = self.start_pgwharf(settings={"pool_mode": "transaction", "query_wait_timeout": "20s"},
                                databases={db: self.pg.conn_string(
                                    db, connect_query="select %s" % gate.sql())})
        conn = self.admin_conn(px)

        def paused():
            return {r["name"]: r["paused"] for r in self.show(conn, "DATABASES")[1]}
        login = Background(lambda: px.psql("select 1", check=False))
        self.pg.wait_running("select %s" % gate.sql(), lock_wait=True)   # its server's login
        pauser = self.admin_conn(px)
        bg = Background(lambda: pauser.cursor().execute("PAUSE %s" % db))
        wait_until(lambda: paused().get(db) == 1, what="the database paused")
        self.assertTrue(bg.is_alive(), "PAUSE answered with a server logging in")
        conn.cursor().execute("KILL %s" % db)
        pauser.cancel()
        bg.join(10)
        self.assertFalse(bg.is_alive(), "PAUSE did not answer once KILL closed its server")
        if bg.error is not None:                     # the cancel came first
            self.assertIsInstance(bg.error, psycopg2.errors.QueryCanceled)
        self.assertEqual(paused()[db], 1, "the canceled PAUSE undid KILL's pause")
        gate.open()
        login.join(30)
        conn.cursor().execute("RESUME %s" % db)
        self.assertEqual(paused()[db], 0)
        # RESUME of a database that does not exist: PgBouncer's "no such database"
        with self.assertRaises(psycopg2.Error) as cm:
            conn.cursor().execute("RESUME pgwharf_no_such_db")
        self.assertEqual((cm.exception.pgcode, cm.exception.pgerror.split("\n")[0]),
                         ("3D000", "ERROR:  no such database: pgwharf_no_such_db"))

    def test_a_cancel_read_in_the_turn_of_a_kill_still_leaves_its_pause(self):
        # A KILL db now has the PAUSE db it leaves nothing to wait for
        # answer in the next loop turn, so the cancel of the test above is
        # read after that answer: it no longer reached the waiting PAUSE,
        # and the test passed with KILL's hand-over of the pause
        # (admin_wait_undo cleared) taken out (review r7 of session 51).
        # Here the cancel and the KILL are read in the same turn: pgwharf
        # stopped while both arrive, the cancel's bytes first (libev runs a
        # turn's events last-come first, so KILL runs before the cancel;
        # the other order is checked too).
        px = self.start()
        db = self.pg.database
        conn = self.admin_conn(px)

        def paused():
            return {r["name"]: r["paused"] for r in self.show(conn, "DATABASES")[1]}

        def console(key=None):
            s = socket.create_connection((px.host, px.port), timeout=10)
            self.addCleanup(s.close)
            hz.sync_login(s, self.pg.user, "pgbouncer", self.pg.password, key_data=key)
            return s
        for cancel_first in (True, False):
            with self.subTest(cancel_bytes_first=cancel_first):
                holder = self.client(px, autocommit=False)
                holder.cursor().execute("select 1")      # a lent server to wait for
                key = []
                pauser, killer = console(key), console()
                canceler = socket.create_connection((px.host, px.port), timeout=10)
                self.addCleanup(canceler.close)
                pauser.sendall(hz.query_msg("PAUSE %s" % db))
                wait_until(lambda: paused().get(db) == 1, what="the database paused")
                cancel = struct.pack("!IIII", 16, 80877102, *key[0])
                kill = hz.query_msg("KILL %s" % db)
                os.kill(px.pid, signal.SIGSTOP)
                try:
                    sends = [(canceler, cancel), (killer, kill)]
                    for sock, data in sends if cancel_first else sends[::-1]:
                        sock.sendall(data)
                    # (The cancel's connection is accepted with its bytes:
                    # TCP_DEFER_ACCEPT.)
                    wait_until(lambda: hz.unread_on_port(px.pid, px.port).get(
                        killer.getsockname()[1]), what="KILL queued")
                    time.sleep(0.05)
                finally:
                    pt.sigcont(px.pid)
                self.assertEqual([t for t, _ in hz.read_until_ready(killer)], [b"C", b"Z"])
                hz.read_until_ready(pauser)              # PAUSE, or 57014: either
                self.assertEqual(paused()[db], 1, "the canceled PAUSE undid KILL's pause")
                conn.cursor().execute("RESUME %s" % db)
                holder.close()

    def test_a_plain_resume_leaves_a_database_paused_by_name(self):
        # As PgBouncer: PAUSE db is undone by RESUME db only.  A plain
        # RESUME (or PAUSE; RESUME) also resumed it, undoing a maintenance
        # script's PAUSE db, and was no error with nothing paused globally.
        px = self.start()
        conn = self.admin_conn(px)
        db2 = self.pg.database2

        def paused():
            return {r["name"]: r["paused"] for r in self.show(conn, "DATABASES")[1]}
        conn.cursor().execute("PAUSE %s" % db2)
        with self.assertRaises(psycopg2.Error) as cm:
            conn.cursor().execute("RESUME")
        self.assertEqual((cm.exception.pgcode, cm.exception.pgerror.split("\n")[0]),
                         ("55000", "ERROR:  pooler is not paused/suspended"))
        conn.cursor().execute("PAUSE")      # SHOW STATE's, not SHOW DATABASES'
        self.assertEqual((paused()[db2], paused()[self.pg.database]), (1, 0))
        self.assertTrue(pt.paused_all(conn))
        conn.cursor().execute("RESUME")
        self.assertEqual((paused()[db2], paused()[self.pg.database]), (1, 0))
        self.assertFalse(pt.paused_all(conn))
        self.assertEqual(px.psql("select 1"), "1")
        px.send_signal(signal.SIGUSR1)
        wait_until(lambda: pt.paused_all(conn), what="SIGUSR1's pause")
        px.send_signal(signal.SIGUSR2)
        wait_until(lambda: not pt.paused_all(conn), what="SIGUSR2's resume")
        self.assertEqual(paused()[db2], 1)
        conn.cursor().execute("RESUME %s" % db2)
        self.assertEqual(paused()[db2], 0)
        self.assertEqual(px.psql("select 2", db=db2), "2")

    def test_resume_fails_a_pause_still_waiting(self):
        # A PAUSE still waiting for a transaction, undone by RESUME from
        # another console: it answered PAUSE once the transaction ended,
        # though the database was not paused and had served clients since
        # (a restart script would go on as if nothing ran on it).
        px = self.start(default_pool_size=2)
        busy = self.client(px, autocommit=False)
        busy.cursor().execute("select 1")            # holds a server: transaction open
        conn = self.admin_conn(px)
        for pause, resume in (("PAUSE %s" % self.pg.database, "RESUME %s" % self.pg.database),
                              ("PAUSE", "RESUME")):
            pauser = self.admin_conn(px)
            self.addCleanup(busy.rollback)          # failing, the PAUSE ends first
            bg = Background(lambda: pauser.cursor().execute(pause))
            wait_until(lambda: pt.paused_all(conn) or {r["name"]: r["paused"] for r in
                                                       self.show(conn, "DATABASES")[1]}
                       .get(self.pg.database) == 1, what="the database paused")
            conn.cursor().execute(resume)
            bg.join(10)
            self.assertFalse(bg.is_alive(), "%s answered after %s" % (pause, resume))
            self.assertIsInstance(bg.error, psycopg2.errors.QueryCanceled)
            self.assertIn("RESUME", str(bg.error))
            self.assertEqual(self.show(pauser, "VERSION")[0], ["version"])     # usable
        self.assertEqual(px.psql("select 1"), "1")

    def test_a_console_waiting_for_pause_is_not_idle(self):
        # client_idle_timeout is for a client that sends nothing while
        # nothing is asked of it: a console waiting for its PAUSE's reply
        # was closed by it (the database then stayed paused), and once the
        # reply came, the wait counted as idle time.
        px = self.start(default_pool_size=2, client_idle_timeout="1s")
        busy = self.client(px, autocommit=False)
        busy.cursor().execute("select 1")            # holds a server: transaction open
        conn = self.admin_conn(px)
        pauser = self.admin_conn(px)
        self.addCleanup(busy.rollback)              # failing, the PAUSE ends too
        bg = Background(lambda: pauser.cursor().execute("PAUSE %s" % self.pg.database))
        wait_until(lambda: {r["name"]: r["paused"] for r in self.show(conn, "DATABASES")[1]}
                   .get(self.pg.database) == 1, what="the database paused")
        # conn, idle since it saw the PAUSE: once client_idle_timeout has
        # closed it, the waiting console's would have passed too.
        px.wait_for_log("event=disconnect .*state=admin .*client_idle_timeout", timeout=20)
        self.assertTrue(bg.is_alive(), "the waiting PAUSE ended: %r" % (bg.error,))
        busy.commit()
        bg.join(10)
        self.assertFalse(bg.is_alive())
        self.assertIsNone(bg.error)
        # Usable at once: the wait was not idle time.
        state = {r["key"]: r["value"] for r in self.show(pauser, "STATE")[1]}
        self.assertEqual(state["active"], "yes")
        pauser.cursor().execute("RESUME %s" % self.pg.database)

    def test_a_paused_pool_keeps_no_servers_warm(self):
        # min_pool_size does not reopen what PAUSE closed (as PgBouncer: the
        # database may be restarting); RESUME brings them back.
        px = self.start(min_pool_size=2)
        self.assertEqual(px.psql("select 1"), "1")
        conn = self.admin_conn(px)

        def servers():
            return self.rows(conn, "SERVERS", database=self.pg.database)
        wait_until(lambda: len(servers()) == 2, what="min_pool_size servers")
        conn.cursor().execute("PAUSE %s" % self.pg.database)
        self.assertEqual(servers(), [])
        self.assertEqual(self.pool(conn)["sv_login"], 0)
        conn.cursor().execute("RESUME %s" % self.pg.database)
        wait_until(lambda: len(servers()) == 2, what="min_pool_size servers again")

    def test_pause_followed_by_other_commands_answers_at_once(self):
        px = self.start()
        busy = self.client(px, autocommit=False)
        busy.cursor().execute("select 1")             # holds a server
        conn = self.admin_conn(px)
        cur = conn.cursor()
        cur.execute("PAUSE %s; SHOW DATABASES" % self.pg.database)
        paused = {r[0]: r[-2] for r in cur.fetchall()}
        self.assertEqual(paused[self.pg.database], 1)
        cur.execute("RESUME %s" % self.pg.database)
        busy.commit()

    def login_error(self, px, db):
        """The SQLSTATE and message a new client of db is refused with."""
        with socket.create_connection((px.host, px.port), timeout=10) as s:
            with self.assertRaises(hz.PgError) as cm:
                hz.sync_login(s, self.pg.user, db, self.pg.password)
        return cm.exception.sqlstate, cm.exception.fields.get("M")

    def test_the_fallback_entry_is_no_database_to_act_on(self):
        # "*" is found as the fallback under any name, its own too: PAUSE
        # "*" answered PAUSE and paused nothing, while a DBA took it for
        # "every database" (that is PAUSE with no name).
        px = self.start_pgwharf(settings={"pool_mode": "transaction"},
                                databases={self.pg.database: self.pg.conn_string(),
                                           "*": self.pg.conn_string(self.pg.database2)})
        conn = self.admin_conn(px)
        # (RESUME "*" is 55000 "not paused": nothing can pause it now)
        for verb in ("PAUSE", "KILL", "DISABLE", "ENABLE", "RECONNECT", "WAIT_CLOSE"):
            for name in ('"*"', "*"):
                with self.subTest(cmd="%s %s" % (verb, name)):
                    with self.assertRaises(psycopg2.Error) as cm:
                        conn.cursor().execute("%s %s" % (verb, name))
                    if cm.exception.pgcode != "42601":      # a bare * may not parse
                        self.assertEqual(cm.exception.pgcode, "3D000", str(cm.exception))
                        self.assertIn("no such database: *", str(cm.exception))
        # a name the fallback serves is a database to act on
        conn.cursor().execute("PAUSE %s" % self.pg.database2)
        conn.cursor().execute("RESUME %s" % self.pg.database2)
        self.assertEqual(px.psql("select 1"), "1")

    def test_disable_refuses_new_clients_and_enable_lets_them_in(self):
        px = self.start()
        cl = self.client(px)
        cl.cursor().execute("select 1")
        conn = self.admin_conn(px)
        conn.cursor().execute("DISABLE %s" % self.pg.database)
        conn.cursor().execute("DISABLE %s" % self.pg.database)       # again: no error
        dbs = {r["name"]: r for r in self.show(conn, "DATABASES")[1]}
        self.assertEqual(dbs[self.pg.database]["disabled"], 1)
        self.assertEqual(dbs[self.pg.database2]["disabled"], 0)
        self.assertEqual(self.login_error(px, self.pg.database),
                         ("55000", 'database "%s" is disabled' % self.pg.database))
        # a client already in goes on; other databases are not touched
        cur = cl.cursor()
        cur.execute("select 2")
        self.assertEqual(cur.fetchone()[0], 2)
        self.assertEqual(px.psql("select 3", db=self.pg.database2), "3")
        # a reload keeps it disabled
        conn.cursor().execute("RELOAD")
        self.assertEqual(self.login_error(px, self.pg.database)[0], "55000")
        conn.cursor().execute("ENABLE %s" % self.pg.database)
        conn.cursor().execute("ENABLE %s" % self.pg.database)        # again: no error
        self.assertEqual(px.psql("select 4"), "4")
        dbs = {r["name"]: r for r in self.show(conn, "DATABASES")[1]}
        self.assertEqual(dbs[self.pg.database]["disabled"], 0)
        for cmd, state in (("DISABLE", "42601"), ("ENABLE", "42601"),
                           ("DISABLE nosuchdb", "3D000"), ("ENABLE nosuchdb", "3D000"),
                           ("DISABLE pgbouncer", "55000")):
            with self.subTest(cmd=cmd):
                with self.assertRaises(psycopg2.Error) as cm:
                    conn.cursor().execute(cmd)
                self.assertEqual(cm.exception.pgcode, state, str(cm.exception))

    def test_reload_applies_a_changed_pool_size(self):
        px = self.start(default_pool_size=1)
        conn = self.admin_conn(px)
        a = self.client(px, autocommit=False)
        b = self.client(px, autocommit=False)
        a.cursor().execute("select 1")
        bg = Background(lambda: b.cursor().execute("select 2"))
        self.wait_pool(conn, cl_waiting=1)
        px.settings["default_pool_size"] = 2
        px.write_config()
        conn.cursor().execute("RELOAD")
        dbs = {r["name"]: r for r in self.show(conn, "DATABASES")[1]}
        self.assertEqual(dbs[self.pg.database]["pool_size"], 2)
        bg.join(10)
        self.assertFalse(bg.is_alive(), "the waiter did not get the second server")
        self.assertIsNone(bg.error)
        pool = self.pool(conn)
        self.assertEqual(pool["sv_active"], 2)
        self.assertEqual(pool["cl_waiting"], 0)
        a.commit()
        b.commit()

    def test_reload_that_lowers_pool_size_shrinks_a_busy_pool(self):
        # Lowered while every server is lent and clients wait: a server
        # coming back went to the next waiter, so under steady load the
        # pool kept its old size for as long as clients kept waiting (only
        # idle servers, with nobody waiting, were closed).  A server coming
        # back to a pool over its size now closes.
        px = self.start(default_pool_size=3)
        conn = self.admin_conn(px)
        holders = [self.client(px, autocommit=False) for _ in range(3)]
        for h in holders:
            h.cursor().execute("select 1")
        waiters = [self.client(px, autocommit=False) for _ in range(2)]
        bgs = []
        for i, w in enumerate(waiters):     # queued in this order
            bgs.append(Background(lambda w=w: w.cursor().execute("select 2")))
            self.wait_pool(conn, cl_waiting=i + 1, sv_active=3)
        px.settings["default_pool_size"] = 1
        px.write_config()
        conn.cursor().execute("RELOAD")
        holders[0].commit()
        holders[1].commit()
        self.wait_pool(conn, sv_active=1, cl_waiting=2)
        self.assertEqual(len(self.rows(conn, "SERVERS", database=self.pg.database)), 1)
        holders[2].commit()
        bgs[0].join(10)
        self.assertFalse(bgs[0].is_alive())
        self.assertIsNone(bgs[0].error)
        waiters[0].commit()
        bgs[1].join(10)
        self.assertIsNone(bgs[1].error)
        waiters[1].commit()
        self.assertEqual(len(self.rows(conn, "SERVERS", database=self.pg.database)), 1)

    def test_set_changes_a_setting(self):
        px = self.start(default_pool_size=1)
        conn = self.admin_conn(px)
        conn.cursor().execute("SET default_pool_size = 4")
        config = {r["key"]: r["value"] for r in self.show(conn, "CONFIG")[1]}
        self.assertEqual(config["default_pool_size"], "4")
        dbs = {r["name"]: r for r in self.show(conn, "DATABASES")[1]}
        self.assertEqual(dbs[self.pg.database]["pool_size"], 4)
        conn.cursor().execute("SET server_check_query TO 'select ''x'''")
        config = {r["key"]: r["value"] for r in self.show(conn, "CONFIG")[1]}
        self.assertEqual(config["server_check_query"], "select 'x'")
        self.assertEqual(config["default_pool_size"], "4")       # kept
        self.assertEqual(px.psql("select 1"), "1")
        # A double-quoted value is unquoted, as PgBouncer does: the quotes
        # were kept (SET admin_users = "me" took the console from "me").
        conn.cursor().execute('SET server_reset_query = "DISCARD ""ALL"""')
        conn.cursor().execute('SET stats_users = "%s"' % self.pg.user)
        config = {r["key"]: r["value"] for r in self.show(conn, "CONFIG")[1]}
        self.assertEqual(config["server_reset_query"], 'DISCARD "ALL"')
        self.assertEqual(config["stats_users"], self.pg.user)

    def test_show_config_shows_a_long_value_whole(self):
        # A value may be as long as the file makes it (a long auth_query or
        # admin_users list): SHOW CONFIG cut it at 4095 bytes.
        query = "select 1 /* " + "x" * 6000 + " */"
        px = self.start(server_check_query=query)
        conn = self.admin_conn(px)
        config = {r["key"]: r["value"] for r in self.show(conn, "CONFIG")[1]}
        self.assertEqual(config["server_check_query"], query)
        self.assertEqual(config["log_connections"], "1")

    def test_set_keeps_the_other_long_values_whole(self):
        # SET carries the running values over into the config it builds:
        # through an 8 KB buffer, so any SET cut a longer one.
        query = "select 1 /* " + "x" * 9000 + " */"
        px = self.start(server_check_query=query)
        conn = self.admin_conn(px)
        conn.cursor().execute("SET default_pool_size = 3")
        config = {r["key"]: r["value"] for r in self.show(conn, "CONFIG")[1]}
        self.assertEqual(config["default_pool_size"], "3")
        self.assertEqual(len(config["server_check_query"]), len(query))
        self.assertEqual(config["server_check_query"], query)

    def test_kill_client_closes_that_client_only(self):
        px = self.start(pool_mode="session")
        victim = self.client(px, application_name="victim")
        bystander = self.client(px, application_name="bystander")
        conn = self.admin_conn(px)
        row = self.rows(conn, "CLIENTS", application_name="victim")[0]
        self.assertEqual(row["state"], "active")            # session mode: linked
        conn.cursor().execute("KILL_CLIENT %d" % row["id"])
        with self.assertRaises(psycopg2.Error):
            victim.cursor().execute("select 1")
        cur = bystander.cursor()
        cur.execute("select 42")
        self.assertEqual(cur.fetchone()[0], 42)
        wait_until(lambda: not self.rows(conn, "CLIENTS", application_name="victim"),
                   what="the victim to leave SHOW CLIENTS")
        self.assertEqual(len(self.rows(conn, "CLIENTS", application_name="bystander")), 1)

    def test_kill_database_closes_its_clients_and_servers(self):
        px = self.start()
        one = self.client(px)
        two = self.client(px, db=self.pg.database2)
        one.cursor().execute("select 1")
        two.cursor().execute("select 1")
        conn = self.admin_conn(px)
        conn.cursor().execute("KILL %s" % self.pg.database2)
        with self.assertRaises(psycopg2.Error):
            two.cursor().execute("select 1")
        one.cursor().execute("select 1")
        wait_until(lambda: not self.rows(conn, "SERVERS", database=self.pg.database2),
                   what="pgwharf2's servers to close")
        self.assertEqual(len(self.rows(conn, "SERVERS", database=self.pg.database)), 1)
        # As PgBouncer, the killed database stays paused: a new client waits
        # until RESUME (scripts run KILL db, then RESUME db)
        dbs = {r["name"]: r for r in self.show(conn, "DATABASES")[1]}
        self.assertEqual((dbs[self.pg.database2]["paused"], dbs[self.pg.database]["paused"]),
                         (1, 0))
        bg = Background(lambda: px.psql("select 'after kill'", db=self.pg.database2))
        wait_until(lambda: (self.pool(conn, db=self.pg.database2) or {}).get("cl_waiting") == 1,
                   what="a new client waiting on the killed database")
        self.assertTrue(bg.is_alive())
        conn.cursor().execute("RESUME %s" % self.pg.database2)
        bg.join(30)
        self.assertIsNone(bg.error)
        self.assertEqual(bg.result, "after kill")
        # KILL while everything is paused: refused, as PgBouncer does
        conn.cursor().execute("PAUSE")
        with self.assertRaises(psycopg2.Error) as cm:
            conn.cursor().execute("KILL %s" % self.pg.database2)
        self.assertEqual(cm.exception.pgcode, "55000")
        conn.cursor().execute("RESUME")
        conn.cursor().execute("KILL")
        state = {r["key"]: r["value"] for r in self.show(conn, "STATE")[1]}
        self.assertEqual(state["paused"], "yes")
        conn.cursor().execute("RESUME")
        self.assertEqual(px.psql("select 'resumed'"), "resumed")

    def _reset_at_a_gate(self, key):
        """A session pool whose server_reset_query waits at a gate; a client
        came and went: its server runs the reset.  (px, conn, gate, pid)."""
        gate = hz.Gate(self.pg, key)
        self.addCleanup(gate.close)
        px = self.start(pool_mode="session", server_reset_query="select " + gate.sql())
        a = self.client(px)
        cur = a.cursor()
        cur.execute("select pg_backend_pid()")
        pid = cur.fetchone()[0]
        a.close()
        self.pg.wait_running(gate.sql(), lock_wait=True)
        return px, self.admin_conn(px), gate, pid

    def test_kill_closes_a_server_running_its_reset_at_once(self):
        # (hunt h1 F2) KILL db left a server running server_reset_query
        # open until the reset ended, and the next client after RESUME
        # waited for it (PgBouncer drops it at once).  Now it is closed
        # and its reset cancelled on the server.
        px, conn, gate, pid = self._reset_at_a_gate(7953)
        conn.cursor().execute("KILL %s" % self.pg.database)
        wait_until(lambda: self.pg.queries_running(gate.sql(), lock_wait=True) == 0,
                   what="the reset cancelled")
        self.assertFalse(self.rows(conn, "SERVERS", database=self.pg.database))
        conn.cursor().execute("RESUME %s" % self.pg.database)
        b = self.client(px)
        cur = b.cursor()
        cur.execute("select pg_backend_pid()")
        self.assertNotEqual(cur.fetchone()[0], pid)

    def test_reconnect_closes_a_server_running_its_reset_when_it_ends(self):
        # RECONNECT: the server running its reset is marked, and closed
        # when the reset ends rather than lent to the client waiting.
        px, conn, gate, pid = self._reset_at_a_gate(7954)
        conn.cursor().execute("RECONNECT %s" % self.pg.database)
        self.assertEqual([r["close_needed"] for r in self.rows(conn, "SERVERS",
                                                               database=self.pg.database)], [1])
        bg = Background(lambda: pt.one(self.client(px), "select pg_backend_pid()"))
        wait_until(lambda: self.pool(conn)["cl_waiting"] == 1, what="a client waiting")
        gate.open()
        bg.join(30)
        self.assertIsNone(bg.error)
        self.assertNotEqual(bg.result, pid)
        self.assertIn("retired after reset", px.log())

    def test_reconnect_and_wait_close(self):
        px = self.start()
        holder = self.client(px, autocommit=False)
        holder.cursor().execute("select 1")         # one active server
        idle = self.client(px)
        idle.cursor().execute("select 1")           # and one idle one
        conn = self.admin_conn(px)
        servers = self.rows(conn, "SERVERS", database=self.pg.database)
        before = {r["id"] for r in servers}
        self.assertEqual(len(before), 2)
        self.assertEqual([r["close_needed"] for r in servers], [0, 0])
        conn.cursor().execute("RECONNECT %s" % self.pg.database)
        # the lent server stays until its transaction ends, marked: as
        # PgBouncer, close_needed 1 (it was always 0)
        servers = self.rows(conn, "SERVERS", database=self.pg.database)
        self.assertEqual([(r["state"], r["close_needed"]) for r in servers], [("active", 1)])
        # WAIT_CLOSE on a console of its own: once pgwharf has read it (the
        # socket's receive queue is empty) and a later command on the other
        # console is answered, no answer may have come yet.
        w = socket.create_connection((px.host, px.port), timeout=10)
        self.addCleanup(w.close)
        hz.sync_login(w, self.pg.user, "pgbouncer", self.pg.password)
        w.sendall(hz.query_msg("WAIT_CLOSE %s" % self.pg.database))
        wport = w.getsockname()[1]
        wait_until(lambda: hz.unread_on_port(px.pid, px.port).get(wport) == 0,
                   what="pgwharf read the WAIT_CLOSE")
        self.show(conn, "VERSION")
        w.setblocking(False)
        with self.assertRaises(BlockingIOError, msg="WAIT_CLOSE returned while a marked "
                               "server is lent"):
            w.recv(1)
        w.settimeout(10)
        holder.commit()                             # the lent server comes back: closed
        got = hz.read_until_ready(w)
        self.assertEqual([t for t, _ in got], [b"C", b"Z"], got)
        self.assertEqual(got[0][1], b"WAIT_CLOSE\x00")
        now = {r["id"] for r in self.rows(conn, "SERVERS", database=self.pg.database)}
        self.assertFalse(before & now)
        # nothing marked: answers at once
        conn.cursor().execute("WAIT_CLOSE")
        self.assertEqual(px.psql("select 1"), "1")

    def test_pause_and_wait_close_answer_once_the_last_server_closes(self):
        # As PgBouncer, which looks after every loop turn: a waiting PAUSE
        # or WAIT_CLOSE answers as the last server it waits for closes.
        # pgwharf looked every 100 ms: under load a PAUSE held every client
        # up to that long after the last transaction ended.  Each round
        # ends a transaction, then has two commands of another console
        # answered (later loop turns, no clock): the reply must be there.
        px = self.start()
        db = self.pg.database
        conn = self.admin_conn(px)
        w = socket.create_connection((px.host, px.port), timeout=10)
        self.addCleanup(w.close)
        hz.sync_login(w, self.pg.user, "pgbouncer", self.pg.password)
        wport = w.getsockname()[1]
        for rnd in range(3):
            for cmd, before in (("PAUSE %s" % db, None),
                                ("WAIT_CLOSE %s" % db, "RECONNECT %s" % db)):
                holder = self.client(px, autocommit=False)
                holder.cursor().execute("select 1")     # a lent server to wait for
                if before:
                    conn.cursor().execute(before)
                w.sendall(hz.query_msg(cmd))
                wait_until(lambda: hz.unread_on_port(px.pid, px.port).get(wport) == 0,
                           what="pgwharf read %s" % cmd)
                self.show(conn, "VERSION")               # it ran, and waits:
                w.setblocking(False)
                with self.assertRaises(BlockingIOError, msg="%s answered while a "
                                       "transaction ran (round %d)" % (cmd, rnd)):
                    w.recv(1, socket.MSG_PEEK)
                holder.commit()                          # the server closes
                self.show(conn, "VERSION")
                self.show(conn, "VERSION")
                try:
                    w.recv(1, socket.MSG_PEEK)
                except BlockingIOError:
                    self.fail("%s had not answered once its last server closed (round %d)"
                              % (cmd, rnd))
                w.settimeout(10)
                got = hz.read_until_ready(w)
                self.assertEqual([t for t, _ in got], [b"C", b"Z"], got)
                self.assertEqual(got[0][1], cmd.split()[0].encode() + b"\x00")
                holder.close()
                if cmd.startswith("PAUSE"):
                    conn.cursor().execute("RESUME %s" % db)

    def test_shutdown_wait_for_clients(self):
        px = self.start()
        cl = self.client(px)
        conn = self.admin_conn(px)
        conn.cursor().execute("SHUTDOWN WAIT_FOR_CLIENTS")
        self.assertTrue(px.alive())
        cur = cl.cursor()
        cur.execute("select 5")                     # existing clients go on
        self.assertEqual(cur.fetchone()[0], 5)
        cl.close()
        conn.close()
        px.proc.wait(15)
        self.assertEqual(px.proc.returncode, 0)

    def test_sigint_closes_clients_waiting_in_a_paused_pool(self):
        # SIGINT (SHUTDOWN WAIT_FOR_SERVERS) closes clients that hold no
        # server at once.  One waiting in a paused pool holds none and gets
        # none (the console that could RESUME is closed too): it kept
        # pgwharf running until shutdown_timeout.
        px = self.start(shutdown_timeout=120)
        cl = self.client(px)
        cl.cursor().execute("select 1")
        conn = self.admin_conn(px)
        conn.cursor().execute("PAUSE %s" % self.pg.database)
        bg = Background(lambda: pt.one(cl, "select 2"))
        self.wait_pool(conn, cl_waiting=1)
        px.send_signal(signal.SIGINT)
        px.proc.wait(15)
        self.assertEqual(px.proc.returncode, 0)
        bg.join(10)
        self.assertIsInstance(bg.error, psycopg2.Error)

    def test_a_reload_during_a_shutdown_keeps_no_servers_warm(self):
        # A reload while SIGTERM waits for clients applied min_pool_size:
        # servers opened for nobody while pgwharf drained.
        px = self.start(shutdown_timeout=120)
        conn = self.admin_conn(px)
        cl = self.client(px)
        self.assertEqual(pt.one(cl, "select 1"), 1)      # its pool exists
        px.send_signal(signal.SIGTERM)
        px.wait_for_log(r"event=shutdown mode=wait_for_clients")
        px.settings["min_pool_size"] = 3
        px.write_config()
        conn.cursor().execute("RELOAD")
        servers = self.show(conn, "SERVERS")[1]
        self.assertLessEqual(len(servers), 1, servers)
        self.assertEqual(pt.one(cl, "select 2"), 2)      # clients still served
        cl.close()
        conn.close()
        px.proc.wait(15)
        self.assertEqual(px.proc.returncode, 0)

    def test_two_shutdowns_in_one_loop_turn(self):
        # Two admins ask at the same moment: both commands arm the same
        # one-shot timer in one loop turn, which once put it in libev's heap
        # twice and the loop spun forever instead of shutting down.  (The
        # sends land in one poll nearly always; when they do not, the test
        # checks less, never wrongly.)
        px = self.start()
        socks = []
        for _ in range(2):
            s = socket.create_connection((px.host, px.port), timeout=10)
            self.addCleanup(s.close)
            hz.sync_login(s, self.pg.user, "pgbouncer", self.pg.password)
            socks.append(s)
        a = hz.query_msg("SHUTDOWN WAIT_FOR_CLIENTS")
        b = hz.query_msg("SHUTDOWN WAIT_FOR_SERVERS")
        socks[0].sendall(a)
        socks[1].sendall(b)
        for s in socks:
            s.close()
        px.proc.wait(15)
        self.assertEqual(px.proc.returncode, 0)

    def test_reload_and_set_report_a_config_that_does_not_load(self):
        px = self.start()
        conn = self.admin_conn(px)
        good = px.settings["auth_file"]
        px.settings["auth_file"] = os.path.join(px.dir, "missing-userlist.txt")
        px.write_config()
        with self.assertRaises(psycopg2.Error) as cm:
            conn.cursor().execute("RELOAD")
        self.assertEqual(cm.exception.pgcode, "F0000")
        # PgBouncer's words, which scripts may look for
        self.assertEqual(cm.exception.diag.message_primary,
                         "RELOAD failed, see logs for additional details")
        config = {r["key"]: r["value"] for r in self.show(conn, "CONFIG")[1]}
        self.assertEqual(config["auth_file"], good)               # the old config stays
        # the log names the config line of the key (it said only
        # "missing-userlist.txt: cannot open: ...")
        with open(px.config_path) as f:
            line = next(i for i, l in enumerate(f.read().splitlines(), 1)
                        if l.startswith("auth_file"))
        auth = [logfmt(l) for l in px.log().splitlines() if "event=auth_file" in l]
        self.assertTrue(auth and auth[-1]["reason"].startswith(
            '%s:%d: auth_file "%s": cannot open: ' % (px.config_path, line,
                                                      px.settings["auth_file"])), auth)
        px.settings["auth_file"] = good
        px.write_config()
        conn.cursor().execute("RELOAD")
        missing = os.path.join(px.dir, "missing-userlist.txt")
        with self.assertRaises(psycopg2.Error) as cm:
            conn.cursor().execute("SET auth_file = '%s'" % missing)
        self.assertEqual(cm.exception.pgcode, "F0000")
        config = {r["key"]: r["value"] for r in self.show(conn, "CONFIG")[1]}
        self.assertEqual(config["auth_file"], good)
        self.assertEqual(px.psql("select 1"), "1")

    def test_set_is_not_stopped_by_a_half_edited_general_key(self):
        # SET changes a copy of the running config and reads no config
        # file: an error in a [pgwharf] key of the file (edited, not
        # reloaded yet) once failed every SET with "cannot re-read".
        px = self.start()
        conn = self.admin_conn(px)
        conn.cursor().execute("SET default_pool_size = 3")
        with open(px.config_path, "a") as f:
            f.write("\n[pgwharf]\nserver_idle_timeout = 10x\n")
        conn.cursor().execute("SET default_pool_size = 4")
        config = {r["key"]: r["value"] for r in self.show(conn, "CONFIG")[1]}
        self.assertEqual((config["default_pool_size"], config["server_idle_timeout"]),
                         ("4", px.settings.get("server_idle_timeout", "600")))
        with self.assertRaises(psycopg2.Error) as cm:
            conn.cursor().execute("RELOAD")               # the file itself still fails
        self.assertEqual(cm.exception.pgcode, "F0000")
        self.assertEqual(px.psql("select 1"), "1")

    def test_set_works_from_the_running_config_not_the_file(self):
        # SET changes one key of the running config, as PgBouncer's does:
        # it read the file's [databases]/[users]/[peers] again, so a file
        # that did not load (being edited, or moved away) failed every SET
        # with F0000 "cannot re-read", nothing logged, and one that did had
        # its half-finished edits applied by a SET of another key.  Only
        # RELOAD reads the file.
        px = self.start(default_pool_size=1)
        conn = self.admin_conn(px)

        def dbs():
            return {r["name"]: r for r in self.show(conn, "DATABASES")[1]}

        def config():
            return {r["key"]: r["value"] for r in self.show(conn, "CONFIG")[1]}

        # an edit that loads, half done: a database added, another removed
        px.databases["newdb"] = px.databases[self.pg.database]
        del px.databases[self.pg.database2]
        px.write_config()
        conn.cursor().execute("SET default_pool_size = 2")
        names = dbs()
        self.assertNotIn("newdb", names)
        self.assertIn(self.pg.database2, names)
        self.assertEqual(names[self.pg.database]["pool_size"], 2)
        # an edit that does not load
        with open(px.config_path, "a") as f:
            f.write("\n[databases]\nbroken = dbname=x pool_size=abc\n")
        conn.cursor().execute("SET default_pool_size = 3")
        names = dbs()
        self.assertEqual(config()["default_pool_size"], "3")
        self.assertEqual(names[self.pg.database]["pool_size"], 3)
        self.assertNotIn("broken", names)
        self.assertNotIn("newdb", names)
        self.assertEqual(px.psql("select 1", db=self.pg.database2), "1")
        # the file moved away
        os.rename(px.config_path, px.config_path + ".moved")
        conn.cursor().execute("SET default_pool_size = 4")
        self.assertEqual(dbs()[self.pg.database]["pool_size"], 4)
        with self.assertRaises(psycopg2.Error) as cm:
            conn.cursor().execute("RELOAD")              # RELOAD reads it
        self.assertEqual(cm.exception.pgcode, "F0000")
        self.assertEqual(config()["default_pool_size"], "4")

        # a SET that fails says why in the log too
        for sql, key, state in (("SET default_pool_size = abc", "default_pool_size", "22023"),
                                ("SET listen_port = 1", "listen_port", "55P02")):
            with self.assertRaises(psycopg2.Error) as cm:
                conn.cursor().execute(sql)
            self.assertEqual(cm.exception.pgcode, state)
            wait_until(lambda: any(
                l.get("event") == "admin_set_failed" and l.get("key") == key
                for l in map(logfmt, px.log().splitlines())), what="admin_set_failed")
            line = [logfmt(l) for l in px.log().splitlines()
                    if "event=admin_set_failed" in l and "key=%s" % key in l][-1]
            self.assertEqual((line["level"], line["sqlstate"], line["user"]),
                             ("warning", state, self.pg.user))
            self.assertEqual(line["reason"], cm.exception.diag.message_primary)
        self.assertEqual(config()["default_pool_size"], "4")

        # RELOAD reads the file: its edits apply, and SET's value goes
        os.rename(px.config_path + ".moved", px.config_path)
        px.write_config()
        conn.cursor().execute("RELOAD")
        names = dbs()
        self.assertIn("newdb", names)
        self.assertNotIn(self.pg.database2, names)
        self.assertEqual(config()["default_pool_size"], "1")
        self.assertEqual(px.psql("select 1", db="newdb"), "1")

    def test_set_refuses_what_a_config_file_may_not_say(self):
        # Each of these would lock every client out, the console included.
        px = self.start()
        conn = self.admin_conn(px)
        for sql, words in (("SET auth_file = ''", "auth_file"),
                           ("SET auth_type = cert", "client_tls_sslmode"),
                           ("SET breaker_max_cooldown = '0.5s'", "breaker_cooldown")):
            with self.subTest(sql=sql):
                with self.assertRaises(psycopg2.Error) as cm:
                    conn.cursor().execute(sql)
                self.assertEqual(cm.exception.pgcode, "22023")
                self.assertIn(words, str(cm.exception))
        self.assertEqual(px.psql("select 1"), "1")
        conn.cursor().execute("SET default_pool_size = 5")       # a good one still works

    def test_database_removed_by_reload_during_login(self):
        # The client is between the md5 challenge and its answer when a
        # reload takes its database (the first login to it) away.
        px = self.start()
        s = socket.create_connection((px.host, px.port), timeout=10)
        self.addCleanup(s.close)
        s.sendall(hz.startup_packet(self.pg.user, self.pg.database2))
        t, body = hz.recv_msg(s)
        self.assertEqual((t, struct.unpack("!I", body[:4])[0]), (b"R", 5))
        del px.databases[self.pg.database2]
        reloads = px.log().count("event=reload ")
        px.reload()
        wait_until(lambda: px.log().count("event=reload ") > reloads, what="the reload")
        inner = hashlib.md5((self.pg.password + self.pg.user).encode()).hexdigest()
        outer = hashlib.md5(inner.encode() + body[4:8]).hexdigest()
        s.sendall(hz.msg(b"p", b"md5" + outer.encode() + b"\0"))
        data, closed = hz.read_until_closed(s, 10)
        errs = hz.error_fields_in(data[data.find(b"E"):] if b"E" in data else b"")
        self.assertTrue(closed)
        self.assertTrue(errs and errs[0]["C"] == "3D000", data)
        self.assertTrue(px.alive())
        self.assertEqual(px.psql("select 1"), "1")



LOGFMT_PAIR = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)=("(?:[^"\\]|\\.)*"|[^ "]*)(?: |$)')


def logfmt(line):
    """A log line as {key: value}; AssertionError when it is not logfmt."""
    out, pos = {}, 0
    while pos < len(line):
        m = LOGFMT_PAIR.match(line, pos)
        if not m:
            raise AssertionError("not logfmt at %d: %r" % (pos, line))
        v = m.group(2)
        if v.startswith('"'):
            v = re.sub(r'\\(.)', r'\1', v[1:-1])
        out[m.group(1)] = v
        pos = m.end()
    return out


class TestLogLines(AdminTestCase):
    FORGED = "ts=2026-01-01T00:00:00.000Z level=error event=forged"

    def login(self, px, user, db, password="x"):
        with socket.create_connection((px.host, px.port), timeout=10) as s:
            try:
                hz.sync_login(s, user, db, password)
            except hz.PgError as e:
                return e.fields.get("C")
        return None

    def test_names_from_clients_cannot_forge_log_lines(self):
        px = self.start(log_connections=1, log_disconnections=1, log_level="debug")
        evil = 'ev"il \n' + self.FORGED
        self.assertEqual(self.login(px, evil, self.pg.database), "28P01")
        self.assertIn(self.login(px, self.pg.user, 'no such "db"\n' + self.FORGED,
                                 self.pg.password), ("3D000", "08P01", "08006"))
        conn = self.admin_conn(px)
        with self.assertRaises(psycopg2.Error):         # logged, then refused
            conn.cursor().execute("SHOW VERSION -- \n" + self.FORGED)
        lines = px.log().splitlines()
        parsed = [logfmt(l) for l in lines]             # AssertionError if not logfmt
        self.assertTrue(all(l.startswith("ts=") for l in lines), lines)
        self.assertFalse([p for p in parsed if p.get("event") == "forged"], lines)
        users = [p["user"] for p in parsed if p.get("event") == "disconnect"]
        self.assertIn('ev"il n' + self.FORGED, users)  # logfmt() reads \n as n
        dbs = [p["db"] for p in parsed if p.get("event") == "disconnect"]
        # (cut to 63 bytes, as PostgreSQL cuts a startup packet's name)
        self.assertIn(('no such "db"n' + self.FORGED)[:63], dbs)
        commands = [p["command"] for p in parsed if p.get("event") == "admin"]
        self.assertIn("SHOW VERSION -- n" + self.FORGED, commands)

    def test_pool_and_console_lines_quote_names(self):
        # Under "*" a client picks any database name; the pool and server
        # lines (pool_create, server_connect, server_close, pool_free...)
        # and the console's own (admin_pause...) wrote names unquoted, so
        # 'x user=forged' gave a line whose user read "forged".
        db = 'x user=forged backend="evil"'
        px = self.start_pgwharf(settings={
            "pool_mode": "transaction", "autodb_idle_timeout": 1,
            "log_connections": 1, "log_disconnections": 1},
            databases={"*": self.pg.conn_string(self.pg.database)})
        conn = psycopg2.connect(px.dsn(db=db))
        conn.autocommit = True
        conn.cursor().execute("select 1")
        conn.close()
        console = self.admin_conn(px)
        for cmd in ("PAUSE", "RESUME", "RECONNECT", "DISABLE", "ENABLE"):
            console.cursor().execute('%s "%s"' % (cmd, db.replace('"', '""')))
        px.wait_for_log(r"event=pool_free")        # autodb_idle_timeout
        lines = px.log().splitlines()
        parsed = [logfmt(l) for l in lines]         # AssertionError if not logfmt
        events = {}
        for p in parsed:
            if "db" in p:
                events.setdefault(p["event"], []).append(p)
        for event in ("pool_create", "server_connect", "server_close", "pool_free",
                      "admin_pause", "admin_resume", "admin_reconnect", "admin_disable",
                      "admin_enable"):
            self.assertIn(event, events, lines)
            for p in events[event]:
                self.assertEqual(p["db"], db, (event, lines))
        self.assertFalse([p for p in parsed if p.get("user") == "forged"], lines)


    def test_a_set_is_logged_once_it_applies_and_every_refused_one_too(self):
        """event=admin_set was logged before the SET applied, so one that
        then failed (a config that did not load: F0000) logged admin_set
        and admin_set_failed both; and a stats user's SET (42501) or one
        that did not parse (42601) logged nothing.  Now admin_set comes
        once the SET has applied (one of log_level = error too), and every
        SET refused logs admin_set_failed with its sqlstate and reason."""
        px = self.start(admin_users=self.pg.user, stats_users=self.pg.app_user)
        admin = self.admin_conn(px)
        stats = self.admin_conn(px, user=self.pg.app_user)

        def events():
            return [p for p in map(logfmt, px.log().splitlines())
                    if p.get("event") in ("admin_set", "admin_set_failed")]

        # (each line is written before the reply goes out)
        missing = os.path.join(px.dir, "missing-userlist.txt")
        user, app = self.pg.user, self.pg.app_user
        for conn, sql, state, who, key, value in (
                (admin, "SET auth_file = '%s'" % missing, "F0000", user, "auth_file", missing),
                (stats, "SET default_pool_size = 3", "42501", app, "default_pool_size", "3"),
                (admin, "SET default_pool_size 3", "42601", user, "default_pool_size", ""),
                (admin, "set default_pool_size = 3 4", "42601", user, "default_pool_size", "3"),
                (admin, "SET = 3", "42601", user, "", ""),
                (admin, "SHOW VERSION; SET auth_file = '/x", "42601", user, "auth_file", "")):
            with self.subTest(sql=sql):
                before = len(events())
                with self.assertRaises(psycopg2.Error) as cm:
                    conn.cursor().execute(sql)
                self.assertEqual(cm.exception.pgcode, state)
                got = events()[before:]
                self.assertEqual([(p["event"], p["level"], p["sqlstate"], p["user"], p["key"],
                                   p["value"]) for p in got],
                                 [("admin_set_failed", "warning", state, who, key, value)])
                self.assertEqual(got[0]["reason"], cm.exception.diag.message_primary)
        before = len(events())
        stats.cursor().execute("SET client_encoding = 'UTF8'")    # a driver's: no change
        admin.cursor().execute("SET default_pool_size = 4")
        admin.cursor().execute("SET log_level = error")           # logged all the same
        with self.assertRaises(psycopg2.Error):                    # (a warning: not now)
            admin.cursor().execute("SET default_pool_size = abc")
        self.assertEqual([(p["event"], p["level"], p["user"], p["key"], p["value"])
                          for p in events()[before:]],
                         [("admin_set", "info", user, "default_pool_size", "4"),
                          ("admin_set", "info", user, "log_level", "error")])
        config = {r["key"]: r["value"] for r in self.show(admin, "CONFIG")[1]}
        self.assertEqual((config["default_pool_size"], config["log_level"]), ("4", "error"))


    def test_a_set_a_query_never_runs_is_logged_as_refused(self):
        """A SET behind a command that failed in the same query does not
        run (as in PostgreSQL), and one past the 32 commands a query may
        hold does not either (the query does not split): neither left an
        admin_set_failed line, where every other SET refused does.  Both
        are logged now, the first with 25P02 "not run", the second with
        the query's 42601."""
        px = self.start(admin_users=self.pg.user)
        admin = self.admin_conn(px)

        def failed():
            return [(p["sqlstate"], p["key"], p["value"], p["reason"])
                    for p in map(logfmt, px.log().splitlines())
                    if p.get("event") == "admin_set_failed"]
        with self.assertRaises(psycopg2.Error) as cm:
            admin.cursor().execute("SHOW BOGUS; SET default_pool_size = 5; SHOW VERSION; "
                                   "SET min_pool_size = 1")
        self.assertEqual(cm.exception.pgcode, "42601")      # SHOW BOGUS's
        self.assertEqual(failed(), [
            ("25P02", "default_pool_size", "5", "not run: an earlier command of the query failed"),
            ("25P02", "min_pool_size", "1", "not run: an earlier command of the query failed")])
        # 33 commands, the 33rd and a 70th SETs: the query runs none.
        sql = "; ".join(["SHOW VERSION"] * 32 + ["SET default_pool_size = 6"] +
                        ["SHOW VERSION"] * 36 + ["SET min_pool_size = 2"])
        with self.assertRaises(psycopg2.Error) as cm:
            admin.cursor().execute(sql)
        self.assertEqual(cm.exception.pgcode, "42601")
        self.assertEqual([f[:3] for f in failed()[2:]], [("42601", "default_pool_size", "6"),
                                                         ("42601", "min_pool_size", "2")])
        self.assertEqual(failed()[2][3], cm.exception.diag.message_primary)
        config = {r["key"]: r["value"] for r in self.show(admin, "CONFIG")[1]}
        self.assertNotIn(config["default_pool_size"], ("5", "6"))
        self.assertNotIn(config["min_pool_size"], ("1", "2"))


class TestVerbose(AdminTestCase):
    def test_verbose_logs_at_debug(self):
        # PgBouncer's verbose (its -v): debug lines although log_level is info
        for verbose, debug in ((0, False), (1, True)):
            px = self.start(log_level="info", verbose=verbose)
            conn = self.admin_conn(px)
            conn.cursor().execute("SHOW VERSION")
            conn.close()
            self.assertEqual("level=debug event=admin" in px.log(), debug, px.log_tail())
            px.stop()


class TestReloadKeepsTheOldConfig(AdminTestCase):
    """A RELOAD or SET that cannot be applied whole changes nothing, says
    so, and logs why in lines a logfmt reader can parse."""

    def config(self, conn):
        return {r["key"]: r["value"] for r in self.show(conn, "CONFIG")[1]}

    def test_keys_fixed_at_start_keep_their_running_values(self):
        px = self.start()
        conn = self.admin_conn(px)
        port = px.port
        px.settings.update(listen_port=pt.free_port(), listen_backlog=7,
                           default_pool_size=3)
        px.write_config()
        px.settings["listen_port"] = port           # the one still listening
        conn.cursor().execute("RELOAD")
        config = self.config(conn)
        self.assertEqual(config["default_pool_size"], "3")      # the reload applied
        self.assertEqual(config["listen_port"], str(port))     # as PgBouncer: kept
        self.assertEqual(config["listen_backlog"], "128")
        line = [l for l in px.log().splitlines() if "event=config" in l and "listen_port" in l]
        self.assertTrue(line, "no warning about listen_port:\n" + px.log_tail())
        self.assertEqual(logfmt(line[-1])["level"], "warning")
        self.assertEqual(px.psql("select 1"), "1")

    def test_a_logfile_that_cannot_be_opened_keeps_the_old_config(self):
        px = self.start()
        conn = self.admin_conn(px)
        bad = os.path.join(px.dir, "no-such-dir", "pgwharf.log")
        with self.assertRaises(psycopg2.Error) as cm:
            conn.cursor().execute("SET logfile = '%s'" % bad)
        self.assertEqual(cm.exception.pgcode, "F0000")
        self.assertEqual(self.config(conn)["logfile"], "")
        px.settings.update(logfile=bad, default_pool_size=3)
        px.write_config()
        with self.assertRaises(psycopg2.Error) as cm:
            conn.cursor().execute("RELOAD")
        self.assertEqual(cm.exception.pgcode, "F0000")
        config = self.config(conn)
        self.assertEqual(config["logfile"], "")
        self.assertEqual(config["default_pool_size"], "20")     # all of it stays
        self.assertIn("no-such-dir", px.log())                  # still logging here
        self.assertEqual(px.psql("select 1"), "1")

    def test_a_metrics_port_that_cannot_be_bound_keeps_the_old_endpoint(self):
        px = self.start(metrics_port="auto")
        conn = self.admin_conn(px)
        old = int(px.settings["metrics_port"])
        blocker = socket.socket()
        self.addCleanup(blocker.close)
        blocker.bind(("127.0.0.1", pt.free_port()))
        blocker.listen(1)
        busy = blocker.getsockname()[1]
        with self.assertRaises(psycopg2.Error) as cm:
            conn.cursor().execute("SET metrics_port = %d" % busy)
        self.assertEqual(cm.exception.pgcode, "F0000")
        self.assertEqual(self.config(conn)["metrics_port"], str(old))
        self.assertTrue(pt.port_open("127.0.0.1", old), "the old endpoint was closed")
        px.settings["metrics_port"] = busy
        px.write_config()
        with self.assertRaises(psycopg2.Error) as cm:
            conn.cursor().execute("RELOAD")
        self.assertEqual(cm.exception.pgcode, "F0000")
        self.assertEqual(self.config(conn)["metrics_port"], str(old))
        self.assertTrue(pt.port_open("127.0.0.1", old), "the old endpoint was closed")
        # a port that is free still moves it; the address alone too
        new = pt.free_port()
        conn.cursor().execute("SET metrics_port = %d" % new)
        self.assertTrue(pt.port_open("127.0.0.1", new))
        self.assertFalse(pt.port_open("127.0.0.1", old))
        conn.cursor().execute("SET metrics_addr = '*'")
        self.assertTrue(pt.port_open("127.0.0.1", new))
        self.assertEqual(self.config(conn)["metrics_addr"], "*")

    def test_reload_errors_are_logged_in_logfmt(self):
        px = self.start()
        conn = self.admin_conn(px)
        px.extra = '[pgwharf]\n"no such key" = 1\n'
        px.write_config()
        with self.assertRaises(psycopg2.Error):
            conn.cursor().execute("RELOAD")
        px.extra = ""
        px.write_config()
        with open(px.auth_path, "a") as f:
            f.write("not quoted\n")
        with self.assertRaises(psycopg2.Error):
            conn.cursor().execute("RELOAD")
        lines = px.log().splitlines()
        config = [logfmt(l) for l in lines if "event=config" in l]
        self.assertTrue(config and config[-1]["reason"].endswith('unknown key "no such key"'),
                        config)
        auth = [logfmt(l) for l in lines if "event=auth_file" in l]
        self.assertTrue(auth and "expected a quoted user name" in auth[-1]["reason"], auth)
        self.assertEqual(px.psql("select 1"), "1")

    def test_a_host_too_long_for_a_pool_is_a_config_error(self):
        # It was taken (start, RELOAD, --check) and the first login to the
        # entry crashed pgwharf; a changed host that long was kept silently.
        px = self.start()
        conn = self.admin_conn(px)
        long_host = "h" * 300
        px.databases["longhost"] = "host=%s port=%s" % (long_host, self.pg.port)
        cp = px.check()
        self.assertEqual(cp.returncode, 2, cp.stderr)
        self.assertIn('database "longhost": host: "%s..." is 300 bytes long (at most 255)'
                      % long_host[:20], cp.stderr)
        with self.assertRaises(psycopg2.Error) as cm:
            conn.cursor().execute("RELOAD")
        self.assertEqual(cm.exception.pgcode, "F0000")
        self.assertEqual(self.rows(conn, "DATABASES", name="longhost"), [])
        cp = px.psql("select 1", db="longhost", check=False)
        self.assertIn('database "longhost" does not exist', cp.stderr)
        self.assertTrue(px.alive(), px.log_tail())
        self.assertEqual(px.psql("select 1"), "1")

    def test_auth_file_warnings_are_logged(self):
        # A user listed twice loads (the later line wins) "with a warning":
        # at start and on every reload, not only under --check.
        px = self.start()
        conn = self.admin_conn(px)
        with open(px.auth_path, "a") as f:
            f.write('"%s" "%s"\n' % (self.pg.user, self.pg.password))
        conn.cursor().execute("RELOAD")
        warned = [logfmt(l) for l in px.log().splitlines() if "event=auth_file" in l]
        self.assertTrue(warned, "no event=auth_file line:\n" + px.log_tail())
        self.assertEqual(warned[-1]["level"], "warning")
        self.assertIn("is listed again", warned[-1]["reason"])
        self.assertEqual(px.psql("select 1"), "1")


if __name__ == "__main__":
    unittest.main()
