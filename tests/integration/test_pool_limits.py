"""Pool limits and server retirement against the real PostgreSQL:
max_user_connections (general, per [users] entry, and counted by the
server login user of an entry with user=; lowered by a reload under
load), server_lifetime,
server_idle_timeout with min_pool_size, and auth_type = any.

Every wait polls observable state (SHOW POOLS / SHOW SERVERS on the
console, pg_stat_activity, the log) with a bound; the timeouts under
test are 1 s, and the pool's maintenance tick runs once a second.
"""

import datetime
import socket
import struct
import threading
import time
import unittest

import pgwharf_test as pt
import pgw_hardening as hz

try:
    import psycopg2
    import psycopg2.errors
except ImportError:          # the tests skip; scripts/deps.sh installs it
    psycopg2 = None

wait_until = pt.wait_until
Background = pt.Background


class ServerSampler(threading.Thread):
    """Polls SHOW SERVERS on its own console connection until stopped and
    keeps the largest number of server connections pgwharf had for `user`
    (any state, connecting included): the cap must hold at every moment,
    not only where the test looks."""

    def __init__(self, px, user):
        super().__init__(daemon=True)
        self.conn = psycopg2.connect(px.dsn(db="pgbouncer"))
        self.conn.autocommit = True
        self.user, self.most, self.samples = user, 0, 0
        self.halt = threading.Event()
        self.start()

    def run(self):
        try:
            while not self.halt.is_set():
                n = len(pt.show(self.conn, "SERVERS", user=self.user))
                self.most = max(self.most, n)
                self.samples += 1
                self.halt.wait(0.02)
        finally:
            self.conn.close()

    def stop(self, at_least=0):
        """Stop once it has sampled at least at_least times in all (a
        loaded host polls slowly: it waits for them, bounded), and return
        the most servers seen."""
        deadline = time.monotonic() + 30
        while self.samples < at_least and self.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        self.halt.set()
        self.join(10)
        return self.most


@unittest.skipIf(psycopg2 is None, "psycopg2 is not installed")
class PoolLimitsCase(pt.PgwharfTestCase):

    def setUp(self):
        super().setUp()
        # These tests count the test databases' backends: those of servers
        # an earlier test's pgwharf closed may still be exiting.
        wait_until(lambda: not self.backend_pids(), timeout=30,
                   what="the backends of earlier tests gone")

    def connect(self, px, autocommit=True, **kw):
        return self.db_conn(px, autocommit, **kw)

    def console(self, px):
        return self.console_conn(px, user=self.pg.user)

    one = staticmethod(pt.one)
    show = staticmethod(pt.show)           # rows matching column=value
    pool = staticmethod(pt.pool_row)

    @staticmethod
    def waiting(conn, db, user, n=1):
        """Wait until (db, user) has n clients waiting; returns the row."""
        return pt.wait_pool(conn, db, user, cl_waiting=n)

    def server_pids(self, conn, **match):
        return sorted(r["remote_pid"] for r in self.show(conn, "SERVERS", **match))

    def backend_pids(self, user=None):
        """PIDs of the client backends of the test databases (not the
        asking one; not other databases' on a cluster shared with more)."""
        cond = ("backend_type = 'client backend' and pid <> pg_backend_pid() "
                "and datname in ('%s', '%s')" % (self.pg.database, self.pg.database2))
        if user:
            cond += " and usename = '%s'" % user
        out = self.pg.psql("select pid from pg_stat_activity where " + cond,
                           db="postgres", via_socket=True)
        return sorted(int(p) for p in out.split())

    def backend_age(self, pid):
        """Seconds since PostgreSQL started backend pid, and its state."""
        out = self.pg.psql("select extract(epoch from clock_timestamp() - backend_start), state "
                           "from pg_stat_activity where pid = %d" % pid,
                           db="postgres", via_socket=True)
        if not out:
            return None, None
        age, state = out.split("|")
        return float(age), state

    def closed_because(self, px, pid, reason):
        """The log line of pgwharf closing the server of backend pid."""
        return px.wait_for_log(r"event=server_close [^\n]*pid=%d reason=%s" % (pid, reason),
                               timeout=10)


class TestMaxUserConnections(PoolLimitsCase):
    """max_user_connections caps the server connections of one user over all
    its pools (here two databases).  A client that would need one more
    waits (cl_waiting); it is served when a server of that user closes,
    and an idle server of the user's other pool makes way for it; or it
    gets query_wait_timeout (57014)."""

    def test_extra_client_waits_and_is_served_when_another_leaves(self):
        app = self.pg.app_user
        px = self.start_pgwharf(settings={"pool_mode": "session", "default_pool_size": 5,
                                          "max_user_connections": 2,
                                          "query_wait_timeout": 20})
        con = self.console(px)
        sampler = ServerSampler(px, app)
        self.addCleanup(sampler.stop)
        c1 = self.connect(px, db=self.pg.database, user=app)
        c2 = self.connect(px, db=self.pg.database2, user=app)
        pid1 = self.one(c1, "select pg_backend_pid()")
        pid2 = self.one(c2, "select pg_backend_pid()")
        self.assertEqual(self.backend_pids(app), sorted([pid1, pid2]))

        # A third client of the user (session mode: it needs a server to log
        # in) waits, although its pool has room (pool_size 5).
        c3 = []
        bg = Background(lambda: c3.append(self.connect(px, db=self.pg.database, user=app))
                        or self.one(c3[0], "select pg_backend_pid()"))
        pool = self.waiting(con, self.pg.database, app)
        self.assertEqual(pool["sv_active"], 1)
        self.assertEqual(pool["sv_login"], 0)
        self.assertEqual(self.backend_pids(app), sorted([pid1, pid2]))
        self.assertTrue(bg.is_alive())
        # The other user is not limited by app's cap.
        self.assertEqual(px.psql("select 1", user=self.pg.user), "1")

        # c2 leaves: its server (DISCARD ALL, then idle in the other pool)
        # closes to make room, and the waiter gets a new one.
        c2.close()
        bg.join(15)
        self.assertFalse(bg.is_alive())
        self.assertIsNone(bg.error)
        pid3 = bg.result
        self.assertNotIn(pid3, (pid1, pid2))
        self.closed_because(px, pid2, '"max_user_connections: making room for another pool"')
        wait_until(lambda: self.backend_pids(app) == sorted([pid1, pid3]), timeout=10,
                   what="app's backends to be c1's and c3's")
        self.assertEqual(self.pool(con, self.pg.database, app)["cl_waiting"], 0)
        most = sampler.stop(at_least=6)
        self.assertGreater(sampler.samples, 5)
        self.assertLessEqual(most, 2, "pgwharf had %d servers for %s" % (most, app))

    def test_wait_ends_with_query_wait_timeout(self):
        app = self.pg.app_user
        px = self.start_pgwharf(settings={"pool_mode": "transaction", "default_pool_size": 5,
                                          "max_user_connections": 1,
                                          "query_wait_timeout": 1})
        con = self.console(px)
        sampler = ServerSampler(px, app)
        self.addCleanup(sampler.stop)
        # waiter logs in (a server of pool 2, idle again right after) ...
        waiter = self.connect(px, db=self.pg.database2, user=app)
        pid_w = self.one(waiter, "select pg_backend_pid()")
        # ... holder's pool makes that idle server close for its own one,
        # and keeps it in a transaction.
        holder = self.connect(px, autocommit=False, db=self.pg.database, user=app)
        pid_h = self.one(holder, "select pg_backend_pid()")
        self.assertNotEqual(pid_h, pid_w)
        self.closed_because(px, pid_w, '"max_user_connections: making room for another pool"')
        wait_until(lambda: self.backend_pids(app) == [pid_h], timeout=10,
                   what="only the holder's backend")

        bg = Background(lambda: self.one(waiter, "select pg_backend_pid()"))
        self.waiting(con, self.pg.database2, app)
        self.assertEqual(self.backend_pids(app), [pid_h])
        bg.join(10)
        self.assertFalse(bg.is_alive())
        self.assertIsInstance(bg.error, psycopg2.errors.QueryCanceled)
        self.assertEqual(bg.error.pgcode, "57014")
        self.assertIn("query_wait_timeout", str(bg.error))
        self.assertEqual(self.pool(con, self.pg.database2, app)["cl_waiting"], 0)
        # The session goes on; the holder still has its transaction.
        self.assertEqual(self.one(holder, "select pg_backend_pid()"), pid_h)
        holder.commit()
        pid_again = self.one(waiter, "select pg_backend_pid()")
        self.assertNotIn(pid_again, (pid_w, pid_h))
        # pid_h closed to make room; its backend may still be leaving.
        self.closed_because(px, pid_h, '"max_user_connections: making room for another pool"')
        wait_until(lambda: self.backend_pids(app) == [pid_again], timeout=10,
                   what="app's backend to be the waiter's new one")
        most = sampler.stop()
        self.assertLessEqual(most, 1, "pgwharf had %d servers for %s" % (most, app))

    def test_users_entry_overrides_the_general_cap(self):
        app, su = self.pg.app_user, self.pg.user
        px = self.start_pgwharf(settings={"pool_mode": "session", "default_pool_size": 5,
                                          "max_user_connections": 3,
                                          "query_wait_timeout": 20},
                                users={app: "max_user_connections=1"})
        con = self.console(px)
        users = {r["name"]: r for r in self.show(con, "USERS")}
        self.assertEqual(users[app]["max_user_connections"], 1)
        # The general cap (3) for everyone else ...
        held = [self.connect(px, db=db, user=su)
                for db in (self.pg.database, self.pg.database2, self.pg.database)]
        self.assertEqual(len(set(self.one(c, "select pg_backend_pid()") for c in held)), 3)
        self.assertEqual(len(self.backend_pids(su)), 3)
        # ... and 1 for app, whatever the database.
        first = self.connect(px, db=self.pg.database, user=app)
        pid1 = self.one(first, "select pg_backend_pid()")
        second = []
        bg = Background(lambda: second.append(
            self.connect(px, db=self.pg.database2, user=app))
            or self.one(second[0], "select pg_backend_pid()"))
        self.waiting(con, self.pg.database2, app)
        self.assertEqual(self.backend_pids(app), [pid1])
        users = {r["name"]: r for r in self.show(con, "USERS")}
        self.assertEqual(users[app]["current_connections"], 1)
        first.close()
        bg.join(15)
        self.assertIsNone(bg.error)
        self.assertNotEqual(bg.result, pid1)
        wait_until(lambda: self.backend_pids(app) == [bg.result], timeout=10,
                   what="app's only backend to be the second client's")

    def test_entry_with_user_has_one_pool_for_all_its_clients(self):
        # PgBouncer's forced user: an entry that sets user= pools by that
        # user, whatever name a client logs in with.  Each client name had
        # a pool of its own, pool_size servers each: with auth_type = any
        # as many as there were names.
        app = self.pg.app_user
        forced = self.pg.conn_string(user=app, password=self.pg.app_password) + " pool_size=2"
        px = self.start_pgwharf(settings={"pool_mode": "transaction", "auth_type": "any",
                                          "query_wait_timeout": 30},
                                databases={"forced": forced,
                                           self.pg.database: self.pg.conn_string()})
        con = self.console(px)
        clients = []
        for i in range(2):
            c = self.connect(px, db="forced", user="made_up_%d" % i, autocommit=False)
            self.assertEqual(self.one(c, "select session_user"), app)   # BEGIN: held
            clients.append(c)
        third = Background(lambda: self.one(self.connect(px, db="forced", user="made_up_2"),
                                            "select 'third'"))
        row = self.waiting(con, "forced", app)
        self.assertEqual((row["sv_active"], row["cl_active"]), (2, 2))
        self.assertEqual([r["user"] for r in self.show(con, "POOLS", database="forced")], [app])
        self.assertEqual(len(self.backend_pids(app)), 2)
        clients[0].rollback()
        third.join(20)
        self.assertIsNone(third.error)
        self.assertEqual(third.result, "third")
        self.assertEqual(len(self.backend_pids(app)), 2)
        for c in clients:
            c.close()

    def test_entry_with_user_counts_the_server_user(self):
        # PgBouncer: the cap "considers the PgBouncer user that is associated
        # with a pool, which is either the user specified for the server
        # connection or in absence of that the user the client has connected
        # as".  Two client users, one server user (app, whose [users] entry
        # sets its cap): one cap.
        app, su = self.pg.app_user, self.pg.user
        forced = self.pg.conn_string(user=app, password=self.pg.app_password)
        forced2 = self.pg.conn_string(self.pg.database2, user=app,
                                      password=self.pg.app_password)
        px = self.start_pgwharf(settings={"pool_mode": "session", "default_pool_size": 5,
                                          "max_user_connections": 5,
                                          "query_wait_timeout": 20},
                                databases={"f1": forced, "f2": forced2,
                                           self.pg.database: self.pg.conn_string()},
                                users={app: "max_user_connections=2"})
        con = self.console(px)
        a = self.connect(px, db="f1", user=su)
        b = self.connect(px, db="f2", user=app)
        self.assertEqual(self.one(a, "select session_user"), app)
        pids = sorted([self.one(a, "select pg_backend_pid()"),
                       self.one(b, "select pg_backend_pid()")])
        self.assertEqual(self.backend_pids(app), pids)
        later = []
        bg = Background(lambda: later.append(self.connect(px, db="f2", user=su))
                        or self.one(later[0], "select pg_backend_pid()"))
        self.waiting(con, "f2", app)
        self.assertEqual(self.backend_pids(app), pids)
        users = {r["name"]: r for r in self.show(con, "USERS")}
        self.assertEqual((users[app]["max_user_connections"],
                          users[app]["current_connections"]), (2, 2))
        # su's own cap (the general 5) is not what counts here, and su's
        # servers that log in as su are not app's.
        self.assertEqual(px.psql("select session_user", user=su), su)
        a.close()
        bg.join(15)
        self.assertIsNone(bg.error)
        self.assertNotIn(bg.result, pids)
        wait_until(lambda: len(self.backend_pids(app)) == 2 and bg.result in
                   self.backend_pids(app), timeout=10, what="the waiter's backend")
        self.assertLessEqual(len(self.backend_pids(app)), 2)


    def test_a_reload_that_changes_the_forced_user_leaves_no_old_pool(self):
        # The entry's user= changed by a reload: the clients go to the new
        # user's pool, and the old one (no client can reach it any more)
        # stayed in SHOW POOLS for good, with min_pool_size opening a
        # server for it at once, logged in as the new user and never used
        # or closed.  As PgBouncer: only the new user's pool is left (the
        # old one renamed, as PgBouncer's: test_admin's
        # test_a_reload_that_changes_the_forced_user_renames_its_pool).
        app, su = self.pg.app_user, self.pg.user
        px = self.start_pgwharf(settings={"pool_mode": "transaction", "auth_type": "any",
                                          "min_pool_size": 1},
                                databases={"f": self.pg.conn_string(
                                    user=app, password=self.pg.app_password),
                                    self.pg.database: self.pg.conn_string()})
        con = self.console(px)
        c = self.connect(px, db="f", user="made_up")
        self.assertEqual(self.one(c, "select session_user"), app)
        c.close()
        px.databases["f"] = self.pg.conn_string(user=su, password=self.pg.password)
        px.reload()
        wait_until(lambda: self.show(con, "DATABASES", name="f")[0]["force_user"] == su,
                   what="the reload")
        c = self.connect(px, db="f", user="made_up")
        self.assertEqual(self.one(c, "select session_user"), su)
        c.close()
        wait_until(lambda: [r["user"] for r in self.show(con, "POOLS", database="f")] == [su],
                   timeout=15, what="the old user's pool to go")
        self.assertEqual({r["user"] for r in self.show(con, "SERVERS", database="f")}, {su})
        self.assertRegex(px.log(), r"event=pool_user_changed db=f user=%s old_user=%s"
                         % (su, app))


    def test_room_goes_to_the_pool_whose_client_waited_longest(self):
        # Three entries log in as app, under max_user_connections = 1.  The
        # holder's server came back with no client of its own pool waiting,
        # while a client of each other pool waited: the one that waited
        # longest gets the room, although its pool came later in the
        # list.  The pool earlier in the list took it: under load the
        # first pools took each room in turn and the last ones' clients
        # waited until the others had none (hunt: limits; four users under
        # one max_db_connections, the fourth served nothing).
        app = self.pg.app_user
        entry = self.pg.conn_string(user=app, password=self.pg.app_password)
        px = self.start_pgwharf(settings={"pool_mode": "transaction", "default_pool_size": 5,
                                          "max_user_connections": 1,
                                          "query_wait_timeout": 30},
                                databases={"e1": entry, "e2": entry, "e3": entry,
                                           self.pg.database: self.pg.conn_string()})
        con = self.console(px)
        holder, second, third = (self.connect(px, db=db, user=app, autocommit=False)
                                 for db in ("e1", "e2", "e3"))   # (the pools, in this order)
        self.assertEqual(self.one(holder, "select 'holder'"), "holder")   # held: BEGIN
        served = []

        def run(conn, db):
            self.assertEqual(self.one(conn, "select current_database()"), self.pg.database)
            served.append(db)

        bg3 = Background(lambda: run(third, "e3"))
        self.waiting(con, "e3", app)
        bg2 = Background(lambda: run(second, "e2"))
        self.waiting(con, "e2", app)
        holder.commit()
        bg3.join(15)
        self.assertIsNone(bg3.error)
        self.assertEqual(served, ["e3"])
        # e3's client keeps app's one server (its transaction): e2's waits.
        self.assertEqual(self.pool(con, "e2", app)["cl_waiting"], 1)
        self.assertTrue(bg2.is_alive())
        third.commit()
        bg2.join(15)
        self.assertIsNone(bg2.error)
        self.assertEqual(served, ["e3", "e2"])
        for c in (holder, second, third):
            c.close()

    def test_a_login_on_its_way_covers_the_waiters_it_would_serve(self):
        # Two entries log in as app under max_user_connections = 4; e2's
        # connect_query waits at a gate (a slow login).  e1 has three idle
        # servers, e2 one, lent to a client's transaction.  Three more
        # clients of e2 query: the first made one of e1's idle servers go
        # for a login of e2's; the others wait for that login, which will
        # serve its oldest waiter and then each in turn.  Each of them made
        # another of e1's servers go and another login start: three logins
        # at once, the cap taken by logins (review of 8d26bc4: slow logins
        # under a shared cap).
        app = self.pg.app_user
        key = 7931
        e1 = self.pg.conn_string(user=app, password=self.pg.app_password)
        e2 = self.pg.conn_string(user=app, password=self.pg.app_password,
                                 connect_query="select pg_advisory_xact_lock_shared(%d)" % key)
        px = self.start_pgwharf(settings={"pool_mode": "transaction", "default_pool_size": 5,
                                          "max_user_connections": 4,
                                          "query_wait_timeout": 30},
                                databases={"e1": e1, "e2": e2,
                                           self.pg.database: self.pg.conn_string()})
        con = self.console(px)
        held = [self.connect(px, db="e1", user=app, autocommit=False) for _ in range(3)]
        for c in held:
            self.one(c, "select 1")
        for c in held:
            c.commit()                    # e1: three idle servers
        holder = self.connect(px, db="e2", user=app, autocommit=False)
        self.one(holder, "select 1")      # e2: its one server lent out
        self.assertEqual(self.pool(con, "e1", app)["sv_idle"], 3)
        sampler = ServerSampler(px, app)
        self.addCleanup(sampler.stop)
        gate = hz.Gate(self.pg, key)
        self.addCleanup(gate.close)
        clients = [self.connect(px, db="e2", user=app) for _ in range(3)]
        bgs = []
        for i, c in enumerate(clients):
            bgs.append(Background(lambda c=c, i=i: self.one(c, "select %d" % i)))
            self.waiting(con, "e2", app, n=i + 1)
        self.pg.wait_running(gate.sql(), lock_wait=True)
        row = self.pool(con, "e2", app)
        self.assertEqual(row["sv_login"] + row["sv_tested"], 1, row)   # one login on its way
        self.assertEqual(self.pool(con, "e1", app)["sv_idle"], 2)  # one made way for it
        self.assertEqual(px.log().count("making room for another pool"), 1)
        gate.open()
        for i, bg in enumerate(bgs):
            bg.join(20)
            self.assertFalse(bg.is_alive())
            self.assertIsNone(bg.error)
            self.assertEqual(bg.result, i)
        self.assertLessEqual(sampler.stop(at_least=5), 4)         # never over the cap
        holder.commit()
        for c in held + clients + [holder]:
            c.close()

    def test_the_idle_server_that_makes_way_is_the_least_recently_used(self):
        # With server_round_robin a released server goes to the end of the
        # idle list, so its head is the one used longest ago; the server
        # that made way for another pool was taken from the tail: the one
        # used last.
        app = self.pg.app_user
        px = self.start_pgwharf(settings={"pool_mode": "transaction", "default_pool_size": 5,
                                          "max_user_connections": 2, "server_round_robin": 1,
                                          "query_wait_timeout": 20})
        a1 = self.connect(px, db=self.pg.database, user=app, autocommit=False)
        a2 = self.connect(px, db=self.pg.database, user=app, autocommit=False)
        p1 = self.one(a1, "select pg_backend_pid()")
        p2 = self.one(a2, "select pg_backend_pid()")
        self.assertNotEqual(p1, p2)
        a1.commit()                        # p1 idle first: the least recently used
        a2.commit()
        b = self.connect(px, db=self.pg.database2, user=app)
        self.assertNotIn(self.one(b, "select pg_backend_pid()"), (p1, p2))
        self.closed_because(px, p1, "\"max_user_connections: making room")
        self.assertIn(p2, self.backend_pids(app))


class TestConnectRateUnderALimit(PoolLimitsCase):
    """server_connect_rate with max_db_connections or max_user_connections:
    a waiter makes another pool's idle server go only once it may connect
    (it has a token)."""

    def test_a_waiter_is_not_starved_by_another_pools_warm_up(self):
        # Pool A keeps min_pool_size 2 and has its one server busy; pool B,
        # under the same limit of 2, needs a server.  Every token went to
        # A's warm-up (first in the list) and B's waiter closed that idle
        # server for room it then had no token to use: B waited out
        # query_wait_timeout, a server opened and closed per token.
        pg = self.pg
        cases = (("max_db_connections", pg.database, pg.app_user, 7063),
                 ("max_user_connections", pg.database2, pg.user, 7064))
        for limit, b_db, b_user, key in cases:
            with self.subTest(limit=limit):
                px = self.start_pgwharf(settings={
                    "pool_mode": "transaction", "default_pool_size": 2, "min_pool_size": 2,
                    limit: 2, "server_connect_rate": 5, "server_connect_burst": 1,
                    "query_wait_timeout": "5s"})
                gate = hz.Gate(pg, key)
                self.addCleanup(gate.close)
                a = socket.create_connection((px.host, px.port), timeout=30)
                self.addCleanup(a.close)
                hz.sync_login(a, pg.user, pg.database, pg.password)
                a.sendall(hz.query_msg("select %s /* warm-up %s */" % (gate.sql(), limit)))
                pg.wait_running("warm-up " + limit, lock_wait=True)
                b = self.connect(px, db=b_db, user=b_user)
                self.assertEqual(self.one(b, "select 'b served'"), "b served")
                b.close()
                gate.open()
                self.assertEqual(hz.read_until_ready(a)[-1], (b"Z", b"I"))
                a.close()
                px.stop()


class TestTurnsUnderASharedLimit(PoolLimitsCase):
    """Two users under one max_db_connections, the first with clients
    always waiting: a server given back serves its own pool's waiters
    first, so none was ever idle for the second user's pool to take, and
    its client waited out query_wait_timeout (hunt: four users under one
    cap, 25 clients each, one or two of them served about a query a client
    in 8 s).  Now the first pool's server goes to the second at its
    release: for a pool two servers short of it, or one with none that
    waited PGW_POOL_TURN (1 s) longer."""

    def start_px(self, cap):
        return self.start_pgwharf(settings={"pool_mode": "transaction", "default_pool_size": 5,
                                            "max_db_connections": cap,
                                            "query_wait_timeout": 30,
                                            "server_idle_timeout": 0})

    def query(self, conn, sql):
        return Background(lambda: self.one(conn, sql))

    def connected(self, px, user, autocommit=True):
        """A client of (the test database, user) that has run a query."""
        c = self.connect(px, autocommit, db=self.pg.database, user=user)
        self.one(c, "select 1")
        if not autocommit:
            c.commit()
        return c

    def test_a_pool_two_servers_short_gets_one_of_the_others(self):
        # su holds both servers of the cap (a gate), two more of its
        # clients wait, then app's.  The gate opens: su's two servers come
        # back with su's clients waiting; the first goes to app's pool,
        # the second to su's first waiter, which waits at another gate.
        # app's client is served while su's waiters hold and wait.
        db, su, app = self.pg.database, self.pg.user, self.pg.app_user
        px = self.start_px(2)
        con = self.console(px)
        late_conn = self.connected(px, app)   # (a login waits for a server when a pool is new)
        su_conns = [self.connected(px, su) for _ in range(4)]
        gate1, gate2 = hz.Gate(self.pg, 7941), hz.Gate(self.pg, 7942)
        self.addCleanup(gate1.close)          # (before the clients close, whose queries end)
        self.addCleanup(gate2.close)
        holders = [self.query(c, "select 'held', " + gate1.sql()) for c in su_conns[:2]]
        self.pg.wait_running(gate1.sql(), n=2, lock_wait=True)
        queued = []
        for i, c in enumerate(su_conns[2:]):
            queued.append(self.query(c, "select 'queued', " + gate2.sql()))
            self.waiting(con, db, su, n=i + 1)
        late = self.query(late_conn, "select 'late'")
        self.waiting(con, db, app)
        gate1.open()
        late.join(20)
        self.assertFalse(late.is_alive(), "app's client still waits: su kept the cap")
        self.assertIsNone(late.error)
        self.assertEqual(late.result, "late")
        self.assertTrue(all(bg.is_alive() for bg in queued))   # gate2 is shut
        self.assertEqual(px.log().count("its turn goes to another pool"), 1)
        for bg in holders:
            bg.join(10)
            self.assertIsNone(bg.error)
        # app's server, idle now, makes way for su's second waiter.
        self.pg.wait_running(gate2.sql(), n=2, lock_wait=True)
        self.assertLessEqual(len(self.show(con, "SERVERS", database=db)), 2)
        gate2.open()
        for bg in queued:
            bg.join(20)
            self.assertIsNone(bg.error)
            self.assertEqual(bg.result, "queued")

    def test_a_pool_with_none_takes_its_turn_when_it_has_waited_longer(self):
        # max_db_connections 1: su's client holds it (a gate) and app's
        # waits; once app's has waited over 1 s, another of su's queues.
        # The server su gives back goes to app's client (which holds it in
        # a transaction), not to su's own waiter, which waited less.
        db, su, app = self.pg.database, self.pg.user, self.pg.app_user
        px = self.start_px(1)
        con = self.console(px)
        late_conn = self.connected(px, app, autocommit=False)
        su_conns = [self.connected(px, su) for _ in range(2)]
        gate = hz.Gate(self.pg, 7943)
        self.addCleanup(gate.close)
        holder = self.query(su_conns[0], "select 'held', " + gate.sql())
        self.pg.wait_running(gate.sql(), lock_wait=True)
        late = self.query(late_conn, "select 'late'")
        pt.wait_until(lambda: self.pool(con, db, app)["maxwait"] >= 2, timeout=20,
                      what="app's client waiting 2 s")
        mine = self.query(su_conns[1], "select 'mine'")
        self.waiting(con, db, su)
        gate.open()
        late.join(20)
        self.assertFalse(late.is_alive(), "app's client still waits: su kept the cap")
        self.assertIsNone(late.error)
        self.assertEqual(late.result, "late")
        self.assertEqual(self.pool(con, db, su)["cl_waiting"], 1)   # app's transaction holds it
        self.assertTrue(mine.is_alive())
        late_conn.commit()
        mine.join(20)
        self.assertIsNone(mine.error)
        self.assertEqual(mine.result, "mine")
        holder.join(10)
        self.assertIsNone(holder.error)


class TestLimitsLoweredByReload(PoolLimitsCase):
    """A reload that lowers max_db_connections or max_user_connections
    shrinks what is over it: a server coming back closes while its
    database (or user) has more servers than the new limit, whoever waits
    (in its pool or another under the same limit), and idle ones close at
    the next maintenance tick, as for a lowered pool_size."""

    def start_px(self, key):
        return self.start_pgwharf(settings={"pool_mode": "transaction", "default_pool_size": 3,
                                            key: 4, "query_wait_timeout": 30,
                                            "server_idle_timeout": 0})

    def pools(self, key):
        """The two pools one limit covers: (db, user) of pool a, then b."""
        db, db2, su, app = self.pg.database, self.pg.database2, self.pg.user, self.pg.app_user
        return ((db, su), (db, app)) if key == "max_db_connections" else ((db, app), (db2, app))

    def counted(self, con, key):
        """SHOW SERVERS rows of the database (or user) the limit counts."""
        (db, user), _ = self.pools(key)
        if key == "max_db_connections":
            return self.show(con, "SERVERS", database=db)
        return self.show(con, "SERVERS", user=user)

    def hold(self, px, db, user):
        """A client of (db, user) in a transaction: (client, backend pid)."""
        c = self.connect(px, autocommit=False, db=db, user=user)
        return c, self.one(c, "select pg_backend_pid()")

    def lower(self, px, con, key, value):
        px.settings[key] = value
        px.write_config()
        con.cursor().execute("RELOAD")

    def shrinks_a_busy_limit(self, key):
        # Pool a holds 3 servers, pool b 1: the limit of 4 is reached, and
        # a client waits in each pool.  Lowered to 2, the first two
        # servers given back went to the waiters (a server closed only
        # over its pool's own pool_size), and the database (user) kept 4.
        (da, ua), (db, ub) = self.pools(key)
        px = self.start_px(key)
        con = self.console(px)
        held_a = [self.hold(px, da, ua) for _ in range(3)]
        held_b = self.hold(px, db, ub)
        self.assertEqual(len(self.counted(con, key)), 4)
        waiters, bgs = [], []
        for d, u in ((da, ua), (db, ub)):
            w = self.connect(px, autocommit=False, db=d, user=u)
            waiters.append(w)
            bgs.append(Background(lambda w=w: self.one(w, "select pg_backend_pid()")))
            self.waiting(con, d, u)
        self.lower(px, con, key, 2)
        held_a[0][0].commit()
        held_a[1][0].commit()
        kept = sorted([held_a[2][1], held_b[1]])
        wait_until(lambda: sorted(r["remote_pid"] for r in self.counted(con, key)) == kept,
                   timeout=10, what="the servers still held, and no other")
        self.assertEqual(self.pool(con, da, ua)["cl_waiting"], 1)
        self.assertEqual(self.pool(con, db, ub)["cl_waiting"], 1)
        for pid in (held_a[0][1], held_a[1][1]):
            self.closed_because(px, pid, '"%s lowered"' % key)
        wait_until(lambda: self.backend_pids(ub if key == "max_user_connections" else None)
                   == kept, timeout=10, what="the closed servers' backends gone")
        # At the limit now: each server given back serves its pool's waiter.
        held_a[2][0].commit()
        bgs[0].join(10)
        self.assertIsNone(bgs[0].error)
        self.assertEqual(bgs[0].result, held_a[2][1])
        held_b[0].commit()
        bgs[1].join(10)
        self.assertIsNone(bgs[1].error)
        self.assertEqual(bgs[1].result, held_b[1])
        for w in waiters:
            w.commit()
        self.assertEqual(sorted(r["remote_pid"] for r in self.counted(con, key)), kept)

    def test_a_lowered_max_db_connections_shrinks_a_busy_database(self):
        self.shrinks_a_busy_limit("max_db_connections")

    def test_a_lowered_max_user_connections_shrinks_a_busy_user(self):
        self.shrinks_a_busy_limit("max_user_connections")

    def test_idle_servers_over_a_lowered_limit_close(self):
        # Idle servers were closed only over their pool's pool_size: over
        # a lowered db or user limit they stayed until server_idle_timeout
        # (off here), or for ever with min_pool_size.
        for key in ("max_db_connections", "max_user_connections"):
            with self.subTest(key=key):
                (da, ua), (db, ub) = self.pools(key)
                px = self.start_px(key)
                con = self.console(px)
                held = [self.hold(px, da, ua) for _ in range(3)] + [self.hold(px, db, ub)]
                for c, _ in held:
                    c.commit()
                wait_until(lambda: self.pool(con, da, ua)["sv_active"] == 0 and
                           self.pool(con, db, ub)["sv_active"] == 0, what="the servers idle")
                self.assertEqual(len(self.counted(con, key)), 4)
                self.lower(px, con, key, 2)
                wait_until(lambda: len(self.counted(con, key)) == 2, timeout=10,
                           what="two servers left")
                gone = [pid for _, pid in held
                        if pid not in [r["remote_pid"] for r in self.counted(con, key)]]
                self.assertEqual(len(gone), 2)
                for pid in gone:
                    self.closed_because(px, pid, '"%s lowered"' % key)
                px.stop()
                for c, _ in held:
                    c.close()
                wait_until(lambda: not self.backend_pids(), timeout=30,
                           what="the backends gone")

    def gated_px(self, gate_key, lock, **settings):
        """pgwharf with max_db_connections 4 whose gate_key (connect_query
        of the database entries, or server_check_query) waits for advisory
        lock `lock`, and a direct connection to take that lock with."""
        q = "select pg_advisory_lock(%d), pg_advisory_unlock(%d)" % (lock, lock)
        databases = None
        if gate_key == "connect_query":
            databases = {d: self.pg.conn_string(d, connect_query=q)
                         for d in (self.pg.database, self.pg.database2)}
        else:
            settings[gate_key] = q
        settings.update({"pool_mode": "transaction", "default_pool_size": 3,
                         "max_db_connections": 4, "query_wait_timeout": 30,
                         "server_idle_timeout": 0})
        px = self.start_pgwharf(settings=settings, databases=databases)
        gate = psycopg2.connect(self.pg.dsn())
        gate.autocommit = True
        self.addCleanup(gate.close)
        return px, gate

    def lowered_while_gated(self, px, gate, lock, pool_a, gated):
        """Three clients of pool a come, `gated` of them waiting for the
        servers the gate holds (in a login or a check); the limit goes
        from 4 to 2 (pool b holds 1 server); then the gate opens.  The
        database had 4 servers, 2 over the new limit: only one client may
        have a server at a time, each the next when the one before leaves."""
        con = self.console(px)
        da, ua = pool_a
        clients = [self.connect(px, autocommit=False, db=da, user=ua) for _ in range(3)]
        bgs = [Background(lambda c=c: self.one(c, "select pg_backend_pid()")) for c in clients]
        wait_until(lambda: (lambda p: p["cl_waiting"] == gated and
                            p["sv_login"] + p["sv_tested"] == gated)(self.pool(con, da, ua)),
                   what="%d clients waiting for as many gated servers" % gated)
        self.assertEqual(len(self.show(con, "SERVERS", database=da)), 4)
        self.lower(px, con, "max_db_connections", 2)
        gate.cursor().execute("select pg_advisory_unlock(%d)" % lock)
        # The checks or logins end one by one: the count is down to 2
        # before the last one's server goes to its client.
        wait_until(lambda: len(self.show(con, "SERVERS", database=da)) == 2 and
                   self.pool(con, da, ua)["cl_waiting"] == 2, timeout=10,
                   what="the database down to its new limit, one client served")
        committed = set()
        while len(committed) < 3:
            done = lambda: {i for i, b in enumerate(bgs) if not b.is_alive()} - committed
            wait_until(done, timeout=20, what="the next client served")
            self.assertEqual(len(done()), 1)
            i = done().pop()
            self.assertIsNone(bgs[i].error)
            self.assertEqual(len(self.show(con, "SERVERS", database=da)), 2)
            clients[i].commit()
            committed.add(i)
        self.assertEqual(len(self.show(con, "SERVERS", database=da)), 2)

    def test_logins_under_way_finish_within_a_lowered_limit(self):
        # Two logins of pool a were under way (their connect_query held)
        # when the limit went from 4 to 2: each one that finished went to
        # a client, and the database kept 4 servers in use.
        lock = 4251
        px, gate = self.gated_px("connect_query", lock)
        db, su, app = self.pg.database, self.pg.user, self.pg.app_user
        held_b, _ = self.hold(px, db, app)     # pool b: 1 server
        held_a, _ = self.hold(px, db, su)      # pool a: 1 (idle when given back)
        held_a.commit()
        gate.cursor().execute("select pg_advisory_lock(%d)" % lock)
        self.lowered_while_gated(px, gate, lock, (db, su), gated=2)
        held_b.commit()

    def test_servers_checked_when_lowered_are_not_lent_over_it(self):
        # Pool a's three idle servers were being checked for its three
        # waiting clients (server_check_delay 0) when the limit went from
        # 4 to 2: each checked one went to a client.
        lock = 4252
        px, gate = self.gated_px("server_check_query", lock, server_check_delay=0)
        db, su, app = self.pg.database, self.pg.user, self.pg.app_user
        held_b, _ = self.hold(px, db, app)
        held_a = [self.hold(px, db, su) for _ in range(3)]
        for c, _ in held_a:
            c.commit()
        gate.cursor().execute("select pg_advisory_lock(%d)" % lock)
        self.lowered_while_gated(px, gate, lock, (db, su), gated=3)
        held_b.commit()

    def test_no_query_queues_behind_a_server_over_a_lowered_limit(self):
        # server_pipeline_depth: pool a at its size, its two servers busy
        # with lone SELECTs (held by an advisory lock), pool b holding one:
        # the database's limit goes from 3 to 1.  A SELECT coming then was
        # queued behind a busy server over the limit, which, under such
        # load, never came back to close.  It waits now for a server within
        # the limit: a new one, once pool b gives its own back.
        lock = 4253
        px = self.start_pgwharf(settings={
            "pool_mode": "transaction", "default_pool_size": 2, "max_db_connections": 3,
            "server_pipeline_depth": 2, "query_wait_timeout": 30, "server_idle_timeout": 0})
        db, su, app = self.pg.database, self.pg.user, self.pg.app_user
        con = self.console(px)
        held_b, _ = self.hold(px, db, app)
        gate = psycopg2.connect(self.pg.dsn())
        gate.autocommit = True
        self.addCleanup(gate.close)
        gate.cursor().execute("select pg_advisory_lock(%d)" % lock)
        busy = [self.connect(px, db=db, user=su) for _ in range(2)]
        bgs = [Background(lambda c=c: self.one(c, "select pg_advisory_xact_lock(%d)" % lock))
               for c in busy]
        wait_until(lambda: len(self.show(con, "SERVERS", database=db, user=su,
                                         state="active")) == 2,
                   what="pool a's two servers busy")
        busy_pids = self.server_pids(con, database=db, user=su)
        self.lower(px, con, "max_db_connections", 1)
        late = self.connect(px, db=db, user=su)
        bg = Background(lambda: self.one(late, "select pg_backend_pid()"))
        self.waiting(con, db, su)
        gate.cursor().execute("select pg_advisory_unlock(%d)" % lock)
        for b in bgs:
            b.join(20)
            self.assertIsNone(b.error)
        wait_until(lambda: self.server_pids(con, database=db, user=su) == [], timeout=10,
                   what="pool a's servers over the limit closed")
        self.assertTrue(bg.is_alive())
        held_b.commit()
        bg.join(20)
        self.assertIsNone(bg.error)
        self.assertNotIn(bg.result, busy_pids)
        self.assertEqual(len(self.show(con, "SERVERS", database=db)), 1)


class TestQueryWaitTimeoutOnline(PoolLimitsCase):
    def test_a_query_wait_timeout_set_online_ends_the_waits_under_way(self):
        # As PgBouncer (each wait compared with the current value): a
        # client queued while query_wait_timeout was off waited for ever
        # after SET query_wait_timeout (its deadline was fixed when it
        # queued).  Lifted again (0), a wait goes on past the old value.
        px = self.start_pgwharf(settings={"pool_mode": "transaction", "default_pool_size": 1,
                                          "query_wait_timeout": 0, "query_wait_notify": 0})
        con = self.console(px)
        holder = self.connect(px, autocommit=False)
        self.one(holder, "select 1")                  # in a transaction: the one server
        waiter = self.connect(px)
        bg = Background(lambda: self.one(waiter, "select 'served'"))
        self.waiting(con, self.pg.database, self.pg.user)
        con.cursor().execute("SET query_wait_timeout = '500ms'")
        bg.join(20)
        self.assertFalse(bg.is_alive(), "the wait did not end at the new query_wait_timeout")
        self.assertIsInstance(bg.error, psycopg2.errors.QueryCanceled)
        self.assertIn("query_wait_timeout", str(bg.error))

        con.cursor().execute("SET query_wait_timeout = '3s'")
        bg = Background(lambda: self.one(waiter, "select 'served'"))
        self.waiting(con, self.pg.database, self.pg.user)
        con.cursor().execute("SET query_wait_timeout = 0")
        # past the 3 s it queued with (maxwait counts whole seconds)
        wait_until(lambda: self.pool(con, self.pg.database, self.pg.user)["maxwait"] >= 4,
                   timeout=20, what="a wait of four seconds")
        self.assertTrue(bg.is_alive(), bg.error)
        holder.commit()
        bg.join(20)
        self.assertIsNone(bg.error)
        self.assertEqual(bg.result, "served")


class TestClientLimits(pt.PgwharfTestCase):
    """max_db_client_connections and max_user_client_connections
    (PgBouncer 1.24): general keys, per [databases] / [users] entry."""

    def refused(self, px, **dsn):
        with self.assertRaises(psycopg2.OperationalError) as cm:
            self.db_conn(px, **dsn)
        return str(cm.exception)

    def test_database_limit(self):
        db = self.pg.database
        px = self.start_pgwharf(
            settings={"max_db_client_connections": 5},
            databases={db: self.pg.conn_string(db) + " max_db_client_connections=2",
                       self.pg.database2: self.pg.conn_string(self.pg.database2)})
        console = self.console_conn(px)
        # a wrong password is not a client: it takes no place
        with self.assertRaises(psycopg2.OperationalError):
            self.db_conn(px, password="wrong")
        first = self.db_conn(px)
        self.db_conn(px, user=self.pg.app_user)          # any user: counted by database
        msg = self.refused(px)
        self.assertIn("no more connections allowed (max_db_client_connections)", msg)
        row = pt.show(console, "DATABASES", name=db)[0]
        self.assertEqual((row["max_client_connections"], row["current_client_connections"]),
                         (2, 2))
        # the general key for the other database
        self.assertEqual(pt.show(console, "DATABASES", name=self.pg.database2)[0]
                         ["max_client_connections"], 5)
        for _ in range(3):
            self.db_conn(px, db=self.pg.database2)
        # a place comes free when a client leaves
        first.close()
        wait_until(lambda: pt.show(console, "DATABASES", name=db)[0]
                   ["current_client_connections"] == 1, what="the client gone")
        self.assertEqual(pt.one(self.db_conn(px), "select 1"), 1)

    def test_user_limit(self):
        app = self.pg.app_user
        px = self.start_pgwharf(settings={"max_user_client_connections": 1},
                                users={app: "max_user_client_connections=2"})
        console = self.console_conn(px)                  # the admin user's one place
        # an admin user is never refused on the console ...
        self.console_conn(px)
        # ... but is on a database
        msg = self.refused(px)
        self.assertIn("no more connections allowed (max_user_client_connections)", msg)
        # the [users] entry's own limit
        self.db_conn(px, user=app)
        self.db_conn(px, user=app, db=self.pg.database2)
        self.assertIn("max_user_client_connections", self.refused(px, user=app))
        row = pt.show(console, "USERS", name=app)[0]
        self.assertEqual((row["max_user_client_connections"], row["current_client_connections"]),
                         (2, 2))


class TestUserReservePool(PoolLimitsCase):
    """reserve_pool_size in [users] (PgBouncer 1.24): that user's pools may
    grow past their size once a waiter has waited reserve_pool_timeout;
    another user's may not."""

    def test_users_entry_reserve(self):
        app = self.pg.app_user
        px = self.start_pgwharf(settings={"pool_mode": "transaction", "default_pool_size": 1,
                                          "reserve_pool_timeout": "300ms",
                                          "query_wait_timeout": "3s"},
                                users={app: "reserve_pool_size=1"})
        console = self.console(px)
        for user, reserve in ((app, True), (self.pg.user, False)):
            holder = self.connect(px, autocommit=False, user=user)
            self.one(holder, "select 1")                  # holds the pool's one server
            waiter = self.connect(px, user=user)
            if reserve:
                self.assertEqual(self.one(waiter, "select 'reserve'"), "reserve")
                self.assertEqual(len(self.show(console, "SERVERS", user=user)), 2)
            else:
                with self.assertRaises(psycopg2.Error) as cm:
                    self.one(waiter, "select 'none'")
                self.assertIn("query_wait_timeout", str(cm.exception))
            holder.rollback()
        self.assertEqual(self.show(console, "USERS", name=app)[0]["reserve_pool_size"],
                         "%9d" % 1)           # as PgBouncer writes it

    def test_reserve_pool_timeout_0_disables_the_reserve(self):
        # As PgBouncer (its launch_new_connection: "if (cf_res_pool_timeout
        # && res_pool_size)"): 0 turns the reserve off.  pgwharf lent it
        # at once instead, so a config from PgBouncer with the reserve off
        # got pools reserve_pool_size larger than meant.
        px = self.start_pgwharf(settings={"pool_mode": "transaction", "default_pool_size": 1,
                                          "reserve_pool_size": 1, "reserve_pool_timeout": 0,
                                          "query_wait_timeout": "1s"})
        console = self.console(px)
        holder = self.connect(px, autocommit=False)
        self.one(holder, "select 1")                      # holds the pool's one server
        waiter = self.connect(px)
        with self.assertRaises(psycopg2.Error) as cm:
            self.one(waiter, "select 'reserve'")
        self.assertIn("query_wait_timeout", str(cm.exception))
        self.assertEqual(len(self.show(console, "SERVERS", user=self.pg.user)), 1)
        holder.rollback()
        self.assertEqual(self.one(waiter, "select 'after'"), "after")

class TestServerFastClose(PoolLimitsCase):
    """server_fast_close (PgBouncer's, session mode): after RECONNECT a
    session on an old server ends as soon as it is idle, not when its client
    leaves, so every client is on the new servers soon."""

    def pid(self, conn):
        return self.one(conn, "select pg_backend_pid()")

    def test_idle_session_ends_at_once_and_a_transaction_at_its_end(self):
        px = self.start_pgwharf(settings={"pool_mode": "session", "server_fast_close": 1})
        idle = self.connect(px)
        old_idle = self.pid(idle)
        busy = self.connect(px, autocommit=False)
        old_busy = self.pid(busy)                       # a transaction is open
        self.console(px).cursor().execute("RECONNECT")
        with self.assertRaises(psycopg2.OperationalError) as cm:
            self.pid(idle)
        self.assertIn("database configuration changed", str(cm.exception) + px.log())
        self.assertEqual(self.pid(busy), old_busy)      # its transaction goes on
        busy.commit()                                   # ... and the session ends with it
        with self.assertRaises(psycopg2.OperationalError):
            self.pid(busy)
        fresh = self.pid(self.connect(px))
        self.assertNotIn(fresh, (old_idle, old_busy))
        self.assertRegex(px.log(), r"sqlstate=57P01 reason=\"database configuration changed\"")

    def test_pause_and_resume_keep_sessions_on_their_servers(self):
        """PAUSE closes lent servers as they come back, but marked them as
        RECONNECT does: server_fast_close then ended a session at its next
        query, during the PAUSE and after a RESUME that undid it (whose
        servers stayed close_needed).  As PgBouncer: no close_needed, the
        sessions keep their servers, and WAIT_CLOSE after RESUME has
        nothing to wait for."""
        db = self.pg.database
        px = self.start_pgwharf(settings={"pool_mode": "session", "server_fast_close": 1,
                                          "default_pool_size": 2})
        x, y = self.connect(px), self.connect(px)
        old = {id(c): self.pid(c) for c in (x, y)}
        console, pauser = self.console(px), self.console(px)
        bg = Background(lambda: pauser.cursor().execute("PAUSE %s" % db))
        try:
            wait_until(lambda: self.show(console, "DATABASES", name=db)[0]["paused"] == 1,
                       what="the database paused")
            self.assertEqual([r["close_needed"] for r in self.show(console, "SERVERS")], [0, 0])
            for _ in range(2):
                self.assertEqual(self.pid(y), old[id(y)])   # a session holds its server
        finally:
            console.cursor().execute("RESUME %s" % db)      # the PAUSE ends (57014)
            bg.join(10)
        self.assertIsInstance(bg.error, psycopg2.errors.QueryCanceled)
        for c in (x, y, x, y):
            self.assertEqual(self.pid(c), old[id(c)])
        self.assertEqual([r["close_needed"] for r in self.show(console, "SERVERS")], [0, 0])
        waiter = Background(lambda: pauser.cursor().execute("WAIT_CLOSE %s" % db))
        waiter.join(10)
        self.assertFalse(waiter.is_alive(), "WAIT_CLOSE waits for servers RESUME kept")
        self.assertIsNone(waiter.error)
        self.assertNotIn("database configuration changed", px.log())
        # RECONNECT still marks them for server_fast_close.
        console.cursor().execute("RECONNECT %s" % db)
        with self.assertRaises(psycopg2.OperationalError):
            self.pid(x)

    def test_off_keeps_the_session_on_its_server(self):
        px = self.start_pgwharf(settings={"pool_mode": "session"})
        conn = self.connect(px)
        old = self.pid(conn)
        self.console(px).cursor().execute("RECONNECT")
        self.assertEqual(self.pid(conn), old)


class TestServerLifetime(PoolLimitsCase):
    """server_lifetime (1 s here, each server gets +-10 %) closes a server
    once it is older, when it is idle in the pool or as it comes back, never
    while a client uses it."""

    LIFE = 1.0

    def start_px(self, mode):
        return self.start_pgwharf(settings={"pool_mode": mode, "default_pool_size": 1,
                                            "server_lifetime": self.LIFE,
                                            "server_idle_timeout": 0,
                                            "query_wait_timeout": 10})

    def test_idle_server_closed_after_its_lifetime(self):
        px = self.start_px("transaction")
        t0 = time.monotonic()                  # before the server's login
        c = self.connect(px)
        pid1 = self.one(c, "select pg_backend_pid()")
        self.assertIn(pid1, self.backend_pids(self.pg.user))
        wait_until(lambda: pid1 not in self.backend_pids(self.pg.user), timeout=10,
                   what="the idle server to be closed")
        # Not before its lifetime (0.9 s at the earliest), and for it.
        self.assertGreaterEqual(time.monotonic() - t0, 0.9 * self.LIFE)
        self.closed_because(px, pid1, "server_lifetime")
        pid2 = self.one(c, "select pg_backend_pid()")
        self.assertNotEqual(pid2, pid1)

    def test_database_entry_sets_its_own_lifetime(self):
        db, db2 = self.pg.database, self.pg.database2
        px = self.start_pgwharf(
            settings={"pool_mode": "transaction", "server_idle_timeout": 0},
            databases={db: self.pg.conn_string(db) + " server_lifetime=%s" % self.LIFE,
                       db2: self.pg.conn_string(db2)})
        short = self.one(self.connect(px), "select pg_backend_pid()")
        long = self.one(self.connect(px, db=db2), "select pg_backend_pid()")
        wait_until(lambda: short not in self.backend_pids(self.pg.user), timeout=10,
                   what="the short-lived server to be closed")
        self.closed_because(px, short, "server_lifetime")
        self.assertIn(long, self.backend_pids(self.pg.user))    # the general 3600 s
        rows = {r["name"]: r for r in self.show(self.console(px), "DATABASES")}
        self.assertEqual((rows[db]["server_lifetime"], rows[db2]["server_lifetime"]),
                         (int(self.LIFE), 3600))

    def test_a_lifetime_lowered_online_applies_to_the_servers_in(self):
        """SET server_lifetime (or a RELOAD) that lowers it closes the
        servers already older, as in PgBouncer, which compares each
        server's age with the current value: they lived out the lifetime
        they were born with (an hour by default)."""
        px = self.start_pgwharf(settings={"pool_mode": "transaction", "default_pool_size": 1,
                                          "server_idle_timeout": 0})
        c = self.connect(px)
        pid1 = self.one(c, "select pg_backend_pid()")
        self.console(px).cursor().execute("SET server_lifetime = %g" % self.LIFE)
        wait_until(lambda: pid1 not in self.backend_pids(self.pg.user), timeout=10,
                   what="the idle server closed at the new lifetime")
        self.closed_because(px, pid1, "server_lifetime")
        self.assertNotEqual(self.one(c, "select pg_backend_pid()"), pid1)

    def _hold_past_lifetime(self, pid, px):
        """Wait until backend pid is past the longest lifetime pgwharf may
        have given it and a maintenance tick has run since; it must still
        be there, in use."""
        limit = 1.1 * self.LIFE + 1.2
        wait_until(lambda: (self.backend_age(pid)[0] or 0) >= limit, timeout=10,
                   interval=0.1, what="backend %d older than %.1f s" % (pid, limit))
        self.assertNotIn("pid=%d reason=server_lifetime" % pid, px.log())
        self.assertIn(pid, self.backend_pids(self.pg.user))

    def test_server_in_a_transaction_is_closed_only_when_given_back(self):
        px = self.start_px("transaction")
        c = self.connect(px, autocommit=False)
        cur = c.cursor()
        cur.execute("create temp table life_t(x int) on commit drop; insert into life_t values (1)")
        pid1 = self.one(c, "select pg_backend_pid()")
        self._hold_past_lifetime(pid1, px)
        self.assertEqual(self.backend_age(pid1)[1], "idle in transaction")
        # Same server, same transaction.
        self.assertEqual(self.one(c, "select pg_backend_pid()"), pid1)
        self.assertEqual(self.one(c, "select count(*) from life_t"), 1)
        c.commit()
        # Closed as it came back (not by a later tick): the very next
        # transaction, on this pool of one, has another server.
        c.autocommit = True
        self.assertNotEqual(self.one(c, "select pg_backend_pid()"), pid1)
        self.closed_because(px, pid1, "server_lifetime")
        wait_until(lambda: pid1 not in self.backend_pids(self.pg.user), timeout=10,
                   what="the old server's backend to exit")

    def test_session_keeps_its_server_and_it_closes_when_the_client_leaves(self):
        px = self.start_px("session")
        c = self.connect(px)
        pid1 = self.one(c, "select pg_backend_pid()")
        self._hold_past_lifetime(pid1, px)
        self.assertEqual(self.one(c, "select pg_backend_pid()"), pid1)
        c.close()
        # Closed instead of reset and reused.
        self.closed_because(px, pid1, "server_lifetime")
        self.assertEqual(px.psql("select 1"), "1")
        con = self.console(px)
        self.assertNotIn(pid1, self.server_pids(con))


class TestServerIdleTimeout(PoolLimitsCase):
    """server_idle_timeout (1 s) closes servers idle that long while the
    pool keeps min_pool_size; a server in use is not idle."""

    def start_px(self, min_pool_size):
        return self.start_pgwharf(settings={"pool_mode": "transaction", "default_pool_size": 4,
                                            "min_pool_size": min_pool_size,
                                            "server_idle_timeout": 1,
                                            "server_check_delay": 30})

    def open_servers(self, px, n):
        """n servers at once (n clients in a transaction); returns the
        clients, still in their transactions, and the backend PIDs."""
        conns = [self.connect(px, autocommit=False) for _ in range(n)]
        pids = [self.one(c, "select pg_backend_pid()") for c in conns]
        self.assertEqual(len(set(pids)), n)
        return conns, pids

    def test_idle_servers_beyond_min_pool_size_close(self):
        px = self.start_px(min_pool_size=1)
        con = self.console(px)
        conns, pids = self.open_servers(px, 3)
        for c in conns:
            c.commit()
        # (not checked back at three: on a slow host the first may have
        # been idle a second by then) Two close; min_pool_size keeps one.
        wait_until(lambda: len(self.server_pids(con, database=self.pg.database)) == 1,
                   timeout=10, what="idle servers beyond min_pool_size to close")
        kept = self.server_pids(con, database=self.pg.database)[0]
        self.assertIn(kept, pids)
        for pid in pids:
            if pid != kept:
                self.closed_because(px, pid, "server_idle_timeout")
        wait_until(lambda: self.backend_pids(self.pg.user) == [kept], timeout=10,
                   what="the closed servers' backends to exit")
        # The one kept stays, though idle for twice the timeout since.
        srv = self.show(con, "SERVERS", remote_pid=kept)[0]
        released = datetime.datetime.strptime(srv["request_time"], "%Y-%m-%d %H:%M:%S UTC")

        def idle_for():
            now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
            return (now - released).total_seconds()

        wait_until(lambda: idle_for() >= 2.5, timeout=10, what="2.5 s of idleness")
        self.assertEqual(self.server_pids(con, database=self.pg.database), [kept])
        self.assertNotIn("pid=%d reason=server_idle_timeout" % kept, px.log())
        pool = self.pool(con, self.pg.database, self.pg.user)
        self.assertEqual(pool["sv_idle"] + pool["sv_used"], 1)
        self.assertEqual(self.one(conns[0], "select pg_backend_pid()"), kept)

    def test_all_idle_servers_close_and_a_busy_one_is_kept(self):
        px = self.start_px(min_pool_size=0)
        con = self.console(px)
        conns, pids = self.open_servers(px, 2)
        busy, idle = conns
        idle.commit()
        self.closed_because(px, pids[1], "server_idle_timeout")
        wait_until(lambda: self.backend_pids(self.pg.user) == [pids[0]], timeout=10,
                   what="only the busy server's backend")
        # The busy one, in its transaction for longer than the timeout, stays.
        wait_until(lambda: (self.backend_age(pids[0])[0] or 0) >= 2.5, timeout=10,
                   what="the busy server to be 2.5 s old")
        self.assertEqual(self.backend_age(pids[0])[1], "idle in transaction")
        self.assertEqual(self.one(busy, "select pg_backend_pid()"), pids[0])
        busy.commit()
        # Given back, it idles out too: no server left.
        self.closed_because(px, pids[0], "server_idle_timeout")
        wait_until(lambda: not self.server_pids(con, database=self.pg.database), timeout=10,
                   what="no server left")
        wait_until(lambda: not self.backend_pids(self.pg.user), timeout=10,
                   what="no backend left")


class TestAuthAny(PoolLimitsCase):
    """auth_type = any: no password is asked for and any user name is let
    in; the server login is the [databases] entry's user and password."""

    def start_px(self, **databases):
        if not databases:
            databases = {"anydb": self.pg.conn_string(user=self.pg.app_user,
                                                      password=self.pg.app_password)}
        return self.start_pgwharf(settings={"auth_type": "any", "auth_file": None,
                                            "pool_mode": "transaction"},
                                  databases=databases, auth_users={})

    def test_no_password_is_asked_for(self):
        px = self.start_px()
        with socket.create_connection((px.host, px.port), timeout=10) as s:
            s.sendall(hz.startup_packet("whoever", "anydb"))
            t, body = hz.recv_msg(s)
            self.assertEqual(t, b"R")
            self.assertEqual(struct.unpack("!I", body[:4])[0], 0, "not AuthenticationOk")
            got = hz.read_until_ready(s)
            self.assertEqual([hz.parse_fields(b) for t, b in got if t == b"E"], [])

    def test_any_name_and_password_log_in_as_the_entry_user(self):
        px = self.start_px()
        app = self.pg.app_user
        for user, password in (("nobody_listed", "whatever"), ("nobody_listed", None),
                               (self.pg.user, "not-its-password")):
            with self.subTest(user=user, password=password):
                conn = psycopg2.connect(pt._conninfo(host=px.host, port=px.port, dbname="anydb",
                                                     user=user, password=password))
                self.addCleanup(conn.close)
                conn.autocommit = True
                self.assertEqual(self.one(conn, "select session_user"), app)
                pid = self.one(conn, "select pg_backend_pid()")
                self.assertIn(pid, self.backend_pids(app))
        self.assertEqual(self.backend_pids(self.pg.user), [])

    def test_entry_without_user_logs_in_as_the_client(self):
        # pgwharf's documented behaviour (README, Client authentication);
        # PgBouncer requires user= on every entry with auth_type = any.
        px = self.start_px(plain=self.pg.conn_string(password=self.pg.app_password))
        conn = psycopg2.connect(pt._conninfo(host=px.host, port=px.port, dbname="plain",
                                             user=self.pg.app_user))
        self.addCleanup(conn.close)
        self.assertEqual(self.one(conn, "select session_user"), self.pg.app_user)


if __name__ == "__main__":
    unittest.main()
