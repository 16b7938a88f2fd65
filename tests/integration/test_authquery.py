"""auth_query / auth_user / auth_dbname: clients whose user is not in
auth_file, looked up in PostgreSQL by pgwharf itself.

Each test makes its own roles with SCRAM passwords (dropped afterwards).
auth_file holds only the cluster's superuser pgwharf, which is the
auth_user.  The server login for a looked-up role needs a password libpq
can use (a SCRAM verifier is not one), so the tests give it one of the
documented ways: a [databases] entry with password=, an entry with a fixed
user= and password=, or an auth_query that returns plaintext.

Every lookup logs one `event=auth_query` line; the tests count those to see
the cache and the sharing of one lookup by concurrent logins.
PGW_AUTH_CACHE_TTL (seconds) sets the cache's lifetime for the
password-change test."""

import base64
import hashlib
import hmac
import os
import re
import socket
import time
import unittest

import pgwharf_test as pt
import pgw_hardening as hz
from test_auth import AuthTestCase, Raw

try:
    import psycopg2
except ImportError:
    psycopg2 = None


class AuthQueryTestCase(AuthTestCase):

    def setUp(self):
        super().setUp()
        self.roles = []
        self.addCleanup(self.drop_roles)

    # roles
    def make_role(self, suffix, password="secret", login=True):
        name = "aq_%d_%s" % (os.getpid(), suffix)
        pw = "PASSWORD '%s'" % password if password is not None else "PASSWORD NULL"
        self.pg.psql("SET password_encryption = 'scram-sha-256'; DROP ROLE IF EXISTS %s; "
                     "CREATE ROLE %s %s %s" % (name, name, "LOGIN" if login else "NOLOGIN", pw),
                     db="postgres", via_socket=True)
        self.roles.append(name)
        return name

    def set_password(self, role, password):
        self.pg.psql("SET password_encryption = 'scram-sha-256'; ALTER ROLE %s PASSWORD '%s'"
                     % (role, password), db="postgres", via_socket=True)

    def drop_roles(self):
        for r in self.roles:
            self.pg.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                         "WHERE usename = '%s'" % r, db="postgres", via_socket=True)
            self.pg.psql("DROP ROLE IF EXISTS %s" % r, db="postgres", via_socket=True)

    # pgwharf
    def start_aq(self, databases=None, env=None, **settings):
        s = {"auth_type": "scram-sha-256", "auth_user": self.pg.user,
             "auth_dbname": self.pg.database}
        s.update(settings)
        s = {k: v for k, v in s.items() if v is not None}
        if databases is None:
            databases = {self.pg.database: self.pg.conn_string(self.pg.database)}
        return self.start_pgwharf(settings=s, databases=databases, env=env,
                                  auth_users={self.pg.user: self.pg.password})

    def db_with_password(self, password, name="aqdb"):
        """An entry whose servers log in as the client's user with password."""
        return {name: self.pg.conn_string(self.pg.database, password=password)}

    def current_user(self, px, user, password, db):
        return px.psql("select current_user", user=user, password=password, db=db)

    def lookups(self, px, user, result=None):
        rx = r"event=auth_query .*user=%s result=%s" % (re.escape(user), result or r"\w+")
        return len(re.findall(rx, px.log()))

    def longest_wait(self, px):
        """SHOW POOLS maxwait (in microseconds) of the lookup's pool."""
        for row in px.show("POOLS", database=self.pg.database, user=self.pg.user):
            return int(row["maxwait"]) * 1000000 + int(row["maxwait_us"])
        return 0

    def raw_error(self, px, user, password, db):
        """The ErrorResponse fields of a SCRAM login done by hand, or None."""
        seen = self.raw_scram(px, user, password, db=db)
        if "rest" in seen and seen["request"] == "E":
            return seen["rest"]
        return seen.get("error")


class TestAuthQuery(AuthQueryTestCase):

    def test_role_not_in_auth_file_logs_in(self):
        role = self.make_role("alice", "alice_pw")
        dbs = {self.pg.database: self.pg.conn_string(self.pg.database)}
        dbs.update(self.db_with_password("alice_pw"))
        for auth_type in ("scram-sha-256", "md5"):
            with self.subTest(auth_type=auth_type):
                px = self.start_aq(databases=dbs, auth_type=auth_type)
                self.assertEqual(self.current_user(px, role, "alice_pw", "aqdb"), role)
                if psycopg2:
                    self.assertEqual(self.via_psycopg2(px, role, "alice_pw", db="aqdb"), role)
                # The lookup ran once, in auth_dbname, as auth_user.
                self.assertEqual(self.lookups(px, role, "found"), 1, px.log_tail())
                self.assertRegex(px.log(), r"event=auth_query db=%s auth_user=%s user=%s "
                                 r"result=found" % (self.pg.database, self.pg.user, role))
                px.stop()

    def test_wrong_password_and_unknown_user_look_alike(self):
        role = self.make_role("bob", "bob_pw")
        ghost = "aq_%d_ghost" % os.getpid()
        px = self.start_aq(databases=dict(self.db_with_password("bob_pw"),
                                          **{self.pg.database: self.pg.conn_string()}))
        wrong = self.psql_error(px, role, "not-bob_pw", db="aqdb")
        unknown = self.psql_error(px, ghost, "not-bob_pw", db="aqdb")
        self.assertIn('FATAL:  password authentication failed for user "%s"' % role, wrong)
        self.assertEqual(wrong.replace(role, "U"), unknown.replace(ghost, "U"))
        for who in (role, ghost):
            seen = self.raw_scram(px, who, "bad", db="aqdb")
            self.assertEqual(seen["request"], 10)            # a full exchange for both
            self.assertIn("server_first", seen)
            self.assertEqual(seen["error"]["C"], "28P01")
            self.assertEqual(seen["error"]["M"],
                             'password authentication failed for user "%s"' % who)
        self.assertEqual(self.lookups(px, ghost, "not_found"), 1)    # cached since
        self.assertRegex(px.log(), r"event=auth_failed .*user=%s .*reason=" % ghost)

    def test_an_unknown_user_is_kept_as_long_as_a_known_one(self):
        # "No such user" was kept 5 s, a found one 30 s: probed every 6 s,
        # a known name answered from the cache (well under a millisecond)
        # and an unknown one after a lookup on the server (a round trip
        # more), which told who exists without a password.  Both are kept
        # the cache's lifetime now (here 8 s: probes at 0 and 6 s).
        role = self.make_role("dave", "dave_pw")
        ghost = "aq_%d_ghost2" % os.getpid()
        px = self.start_aq(databases=dict(self.db_with_password("dave_pw"),
                                          **{self.pg.database: self.pg.conn_string()}),
                           env={"PGW_AUTH_CACHE_TTL": "8"})
        for _ in range(2):
            started = time.monotonic()
            for who in (role, ghost):
                self.assertEqual(self.raw_scram(px, who, "bad", db="aqdb")["error"]["C"],
                                 "28P01")
            time.sleep(max(0.0, 6 - (time.monotonic() - started)))
        self.assertEqual((self.lookups(px, role, "found"), self.lookups(px, ghost, "not_found")),
                         (1, 1))

    def test_md5_asks_an_unknown_user_what_it_asks_a_real_one(self):
        # Under md5 a role with a SCRAM verifier is run through SCRAM (as
        # PostgreSQL does).  A role auth_query does not find was asked for
        # md5 instead: the first request alone told who exists.  As
        # PostgreSQL (password_encryption scram-sha-256), it gets SCRAM too.
        role = self.make_role("dave", "dave_pw")
        ghost = "aq_%d_ghost" % os.getpid()
        px = self.start_aq(databases=dict(self.db_with_password("dave_pw"),
                                          **{self.pg.database: self.pg.conn_string()}),
                           auth_type="md5")
        for who in (role, ghost):
            seen = self.raw_scram(px, who, "bad", db="aqdb")
            self.assertEqual(seen["request"], 10, who)       # AuthenticationSASL
            self.assertIn("server_first", seen)
            self.assertEqual(seen["error"]["C"], "28P01")
        self.assertEqual(self.current_user(px, role, "dave_pw", "aqdb"), role)

    def test_null_password_fails_like_a_wrong_one(self):
        role = self.make_role("nopw", password=None)
        px = self.start_aq(databases=dict(self.db_with_password("x"),
                                          **{self.pg.database: self.pg.conn_string()}))
        seen = self.raw_scram(px, role, "anything", db="aqdb")
        self.assertEqual(seen["error"]["C"], "28P01")
        self.assertEqual(self.lookups(px, role, "no_password"), 1)

    def test_a_name_not_in_the_lookups_encoding_is_no_such_user(self):
        # PostgreSQL asks such a client for its password and refuses it
        # (28P01) as any unknown user; the lookup failed with 22021 and
        # the client got that FATAL before any exchange, a lookup each time.
        px = self.start_aq(databases=dict(self.db_with_password("x"),
                                          **{self.pg.database: self.pg.conn_string()}))
        for _ in range(2):
            seen = self.raw_scram(px, b"aq_x\xff\xfe", "anything", db="aqdb")
            self.assertEqual(seen["request"], 10, seen)
            self.assertEqual(seen["error"]["C"], "28P01")
        self.assertEqual(len(re.findall(r"event=auth_query .*result=error sqlstate=22021",
                                        px.log())), 1, px.log_tail())

    def test_expired_password_and_nologin_role_fail(self):
        # The default auth_query gives no secret for a password past its
        # VALID UNTIL or a role without LOGIN: PostgreSQL would refuse
        # both, and the server login (as another user here) would not.
        expired = self.make_role("old", "old_pw")
        self.pg.psql("ALTER ROLE %s VALID UNTIL '2000-01-01'" % expired, db="postgres",
                     via_socket=True)
        nologin = self.make_role("nol", "nol_pw", login=False)
        fresh = self.make_role("new", "new_pw")
        self.pg.psql("ALTER ROLE %s VALID UNTIL 'infinity'" % fresh, db="postgres",
                     via_socket=True)
        dbs = {self.pg.database: self.pg.conn_string(self.pg.database),
               "aqdb": self.pg.conn_string(self.pg.database, user=self.pg.user,
                                           password=self.pg.password)}
        px = self.start_aq(databases=dbs)
        for role, pw in ((expired, "old_pw"), (nologin, "nol_pw")):
            seen = self.raw_scram(px, role, pw, db="aqdb")
            self.assertEqual(seen["error"]["C"], "28P01", role)
        self.assertEqual(self.current_user(px, fresh, "new_pw", "aqdb"), self.pg.user)

    def test_auth_dbname_or_the_clients_database(self):
        role = self.make_role("carol", "carol_pw")
        db2 = self.pg.database2
        dbs = {self.pg.database: self.pg.conn_string(self.pg.database),
               db2: self.pg.conn_string(db2, password="carol_pw")}
        # Without auth_dbname the lookup runs in the client's own database,
        # through that entry as it is (so without its password=, which
        # would apply to the auth_user too; the server login for carol then
        # has no password).
        px = self.start_aq(databases={self.pg.database: self.pg.conn_string(self.pg.database),
                                      db2: self.pg.conn_string(db2)},
                           auth_dbname=None, breaker_threshold=100)
        self.assertIn("no password supplied", self.psql_error(px, role, "carol_pw", db=db2))
        self.assertRegex(px.log(), r"event=auth_query db=%s auth_user=%s user=%s result=found"
                         % (db2, self.pg.user, role))
        px.stop()
        # auth_dbname names a [databases] entry...
        px = self.start_aq(databases=dbs, auth_dbname=self.pg.database)
        self.assertEqual(self.current_user(px, role, "carol_pw", db2), role)
        self.assertRegex(px.log(), r"event=auth_query db=%s auth_user=%s user=%s result=found"
                         % (self.pg.database, self.pg.user, role))
        px.stop()
        # ... or the login fails with a clear error.
        px = self.start_aq(databases=dbs, auth_dbname="nosuchdb")
        err = self.raw_error(px, role, "carol_pw", db2)
        self.assertEqual(err["C"], "3D000")
        self.assertEqual(err["M"], 'auth_query failed for user "%s" (the reason is in '
                         "pgwharf's log)" % role)
        self.assertRegex(px.log(), r'event=auth_query .*user=%s result=error sqlstate=3D000 .*'
                         r'auth_dbname \\"nosuchdb\\" is not in \[databases\]' % role)

    def test_an_unknown_database_is_told_after_a_looked_up_users_password(self):
        # An auth_file user with the right password learns that the
        # database does not exist (3D000, as PostgreSQL says it after the
        # password); a looked-up one was told 28P01 "password
        # authentication failed" (logged as "no such user"): no lookup ran
        # for a database not in [databases], though auth_dbname gave one to
        # run it in.  Under trust it was 28000 "no such user".
        role = self.make_role("nadia", "nadia_pw")
        for auth_type in ("scram-sha-256", "md5", "trust"):
            with self.subTest(auth_type=auth_type):
                px = self.start_aq(auth_type=auth_type)
                for password, sqlstate in (("bad", "28P01"), ("nadia_pw", "3D000")):
                    if auth_type == "trust" and password == "bad":
                        continue
                    s = socket.create_connection((px.host, px.port), timeout=10)
                    self.addCleanup(s.close)
                    with self.assertRaises(hz.PgError) as cm:
                        hz.sync_login(s, role, "no_such_db_here", password)
                    self.assertEqual(cm.exception.sqlstate, sqlstate, str(cm.exception))
                ghost = "aq_%d_ghost_nd" % os.getpid()
                s = socket.create_connection((px.host, px.port), timeout=10)
                self.addCleanup(s.close)
                with self.assertRaises(hz.PgError) as cm:
                    hz.sync_login(s, ghost, "no_such_db_here", "x")
                self.assertEqual(cm.exception.sqlstate,
                                 "28000" if auth_type == "trust" else "28P01")
                self.assertRegex(px.log(), r"event=auth_query db=%s auth_user=%s user=%s "
                                 r"result=found" % (self.pg.database, self.pg.user, role))
                px.stop()

    def scram_held_at_final(self, px, user, db, password):
        """A SCRAM login held before its client-final message: (socket,
        the finish: logs in or raises PgError)."""
        s = socket.create_connection((px.host, px.port), timeout=10)
        self.addCleanup(s.close)
        s.sendall(hz.startup_packet(user, db))
        state = {}
        for _ in range(2):                          # SASL, then SASLContinue
            t, body = hz.recv_msg(s)
            if t == b"E":
                raise hz.PgError(hz.parse_fields(body))
            self.assertEqual(t, b"R")
            reply = hz.auth_reply(body, user, password, state)
            if _ == 0:
                s.sendall(reply)

        def finish():
            s.sendall(reply)
            while True:
                t, body = hz.recv_msg(s)
                if t == b"E":
                    raise hz.PgError(hz.parse_fields(body))
                if t == b"R":
                    hz.auth_reply(body, user, password, state)
                if t == b"Z":
                    return
        return s, finish

    def test_a_reload_mid_login_does_not_let_in_on_another_lookups_answer(self):
        # Review r1 of session 53: a client naming a database not in
        # [databases] is looked up with the general settings; held before
        # its SCRAM proof while a reload added that database with an
        # auth_query that knows nobody (and a fixed user=), it was logged
        # in on the general lookup's answer, as the entry's user.  The same
        # for an entry whose own auth_query a reload changed.  An
        # answer now counts only for the lookup that applies at the end;
        # a reload that leaves it alone lets the login through.
        role = self.make_role("rhea", "rhea_pw")
        never = " auth_query='select usename, passwd from pg_shadow where false and usename = $1'"
        fixed = self.pg.conn_string(self.pg.database, user=self.pg.user, password=self.pg.password)
        px = self.start_aq(databases=dict(self.db_with_password("rhea_pw"), aqfixed=fixed,
                                          **{self.pg.database: self.pg.conn_string()}))
        added, f_added = self.scram_held_at_final(px, role, "aq_added_later", "rhea_pw")
        changed, f_changed = self.scram_held_at_final(px, role, "aqfixed", "rhea_pw")
        same, f_same = self.scram_held_at_final(px, role, "aqdb", "rhea_pw")
        px.databases["aq_added_later"] = fixed + never
        px.databases["aqfixed"] = fixed + never
        px.reload()
        px.wait_for_log(r"event=reload")
        for what, finish in (("added", f_added), ("changed", f_changed)):
            with self.assertRaises(hz.PgError, msg=what) as cm:
                finish()
            self.assertEqual(cm.exception.sqlstate, "28P01", str(cm.exception))
        f_same()
        same.sendall(hz.msg(b"Q", b"select current_user\x00"))
        rows = [b for t, b in hz.read_until_ready(same) if t == b"D"]
        self.assertIn(role.encode(), rows[0])
        self.assertRegex(px.log(), r"event=auth_failed .*db=aq_added_later .*auth_query settings "
                         r"changed by a reload")

    def test_per_database_auth_dbname_and_auth_query(self):
        # PgBouncer's per-entry auth_dbname and auth_query win over the
        # general ones; a lookup answered for one query is not an answer
        # for another entry's, same user and database though it be.
        role = self.make_role("erin", "erin_pw")
        here = " auth_dbname=%s" % self.pg.database
        never = " auth_query='select usename, passwd from pg_shadow where false and usename = $1'"
        dbs = {self.pg.database: self.pg.conn_string(self.pg.database),
               "aqdb": self.pg.conn_string(self.pg.database, password="erin_pw") + here,
               "aqnone": self.pg.conn_string(self.pg.database, password="erin_pw") + here + never}
        px = self.start_aq(databases=dbs, auth_dbname="nosuchdb")
        self.assertEqual(self.current_user(px, role, "erin_pw", "aqdb"), role)
        self.assertEqual(self.raw_error(px, role, "erin_pw", "aqnone")["C"], "28P01")
        self.assertEqual(self.lookups(px, role, "found"), 1)
        self.assertEqual(self.lookups(px, role, "not_found"), 1)
        err = self.raw_error(px, role, "erin_pw", self.pg.database)   # the general ones
        self.assertEqual(err["C"], "3D000")
        self.assertRegex(px.log(), r'event=auth_query db=nosuchdb .*user=%s result=error '
                         r'sqlstate=3D000' % role)

    def test_a_lookup_does_not_leave_its_statement_as_a_clients_unnamed_one(self):
        # A lookup Parses its query into the unnamed statement of the server
        # it borrows.  A client of that pool (auth_dbname, as auth_user)
        # whose own unnamed statement had been there then Bound the
        # lookup's: its Bind "" ran the auth query with its parameter, a
        # role's password verifier in its rows.  Now it gets its own
        # statement again (kept and Parsed again ahead of the Bind, as
        # PostgreSQL keeps it for the client), with the lookup's gone.
        role = self.make_role("unnamed", "unnamed_pw")
        px = self.start_aq(pool_mode="transaction", default_pool_size=1)
        with socket.create_connection((px.host, px.port), timeout=10) as s:
            hz.sync_login(s, self.pg.user, self.pg.database, self.pg.password)
            s.sendall(hz.ext_msgs("SELECT 'echo: ' || $1::text", "hello"))
            rows = [b for t, b in hz.read_until_ready(s) if t == b"D"]
            self.assertEqual(len(rows), 1)
            self.assertIn(b"echo: hello", rows[0])
            # a lookup on the pool's one server, the client between transactions
            self.assertEqual(self.raw_error(px, role, "wrong", self.pg.database)["C"], "28P01")
            self.assertEqual(self.lookups(px, role, "found"), 1)
            s.sendall(hz.ext_msgs("", role, parse=False))
            reply = hz.read_until_ready(s)
        rows = [b for t, b in reply if t == b"D"]
        self.assertEqual(len(rows), 1, reply)
        self.assertTrue(rows[0].endswith(b"echo: " + role.encode()), reply)
        self.assertNotIn(b"SCRAM-SHA-256$", rows[0])

    def test_a_lookup_given_up_on_is_cancelled_on_the_server(self):
        # A lookup past its limit closed its server, but the backend ran
        # the query on to its end (a lock wait, a slow function), and each
        # retried login started one more.  It is now cancelled first.  With
        # server_connect_timeout = 0 the wait had no limit at all: it is
        # client_login_timeout's then.
        role = self.make_role("slow", "slow_pw")
        query = "SELECT rolname, rolpassword FROM pg_authid, pg_sleep(%d) WHERE rolname=$1"

        def running(tag):
            return int(self.pg.psql(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%%pg_sleep(%d)%%' "
                "AND pid <> pg_backend_pid()" % tag, db="postgres", via_socket=True))
        for tag, limits in ((31, {"server_connect_timeout": 1}),
                            (32, {"server_connect_timeout": 0, "client_login_timeout": 1})):
            with self.subTest(**limits):
                px = self.start_aq(auth_query=query % tag, **limits)
                t0 = time.monotonic()
                err = self.raw_error(px, role, "slow_pw", self.pg.database)
                self.assertIsNotNone(err)
                self.assertLess(time.monotonic() - t0, 20)
                pt.wait_until(lambda: self.lookups(px, role, "error") == 1,
                              what="the lookup to give up")
                pt.wait_until(lambda: running(tag) == 0, timeout=10,
                              what="the lookup's query to be cancelled")
                px.stop()

    def test_per_database_auth_user_wins(self):
        role = self.make_role("dave", "dave_pw")
        # The general auth_user is a role that does not exist; the entry's
        # auth_user= is the one used.  (The lookup runs in auth_dbname: aqdb's
        # password= would apply to the auth_user's login there too.)
        dbs = {self.pg.database: self.pg.conn_string(self.pg.database),
               "aqdb": self.pg.conn_string(self.pg.database, password="dave_pw",
                                           auth_user=self.pg.user)}
        px = self.start_aq(databases=dbs, auth_user="aq_nobody")
        self.assertEqual(self.current_user(px, role, "dave_pw", "aqdb"), role)
        self.assertRegex(px.log(), r"event=auth_query db=%s auth_user=%s user=%s result=found"
                         % (self.pg.database, self.pg.user, role))

    def test_query_errors_are_fatal_with_the_servers_sqlstate(self):
        # The client is not logged in: it gets the SQLSTATE, the reason
        # (which names tables, the auth_user, backends) goes to the log only.
        role = self.make_role("erin", "erin_pw")
        px = self.start_aq(databases=dict(self.db_with_password("erin_pw"),
                                          **{self.pg.database: self.pg.conn_string()}),
                           auth_query="SELECT usename, passwd FROM no_such_table WHERE usename=$1")
        err = self.raw_error(px, role, "erin_pw", "aqdb")
        self.assertEqual(err["S"], "FATAL")
        self.assertEqual(err["C"], "42P01")
        self.assertEqual(err["M"], 'auth_query failed for user "%s" (the reason is in '
                         "pgwharf's log)" % role)
        self.assertRegex(px.log(), r"event=auth_query .*user=%s result=error sqlstate=42P01 .*"
                         r'relation \\"no_such_table\\" does not exist' % role)
        self.assertRegex(px.log(), r"event=disconnect .*user=%s .*sqlstate=42P01" % role)
        # Errors are not cached; the server went back to the pool clean.
        self.assertIsNotNone(self.raw_error(px, role, "erin_pw", "aqdb"))
        self.assertEqual(self.lookups(px, role, "error"), 2)
        rows = px.admin("SHOW POOLS")
        self.assertTrue(rows)
        # Two columns are required; several rows are refused.
        for query, why in (("SELECT passwd FROM pg_shadow WHERE usename=$1", "two columns"),
                           ("SELECT usename, passwd FROM pg_shadow WHERE $1 <> ''",
                            "rows (expected at most one)")):
            with self.subTest(auth_query=query):
                px.stop()
                px = self.start_aq(databases=dict(self.db_with_password("erin_pw"),
                                                  **{self.pg.database: self.pg.conn_string()}),
                                   auth_query=query)
                err = self.raw_error(px, role, "erin_pw", "aqdb")
                self.assertEqual(err["C"], "28000")
                self.assertNotIn(why, err["M"])
                self.assertRegex(px.log(), r"event=auth_query .*user=%s result=error "
                                 r"sqlstate=28000 .*%s" % (role, re.escape(why)))

    def test_auth_user_cannot_log_in(self):
        role = self.make_role("frank", "frank_pw")
        px = self.start_aq(databases=dict(self.db_with_password("frank_pw"),
                                          **{self.pg.database: self.pg.conn_string()}),
                           auth_user="aq_no_such_role", breaker_threshold=100)
        err = self.raw_error(px, role, "frank_pw", "aqdb")
        self.assertEqual(err["S"], "FATAL")
        self.assertEqual(err["M"], 'auth_query failed for user "%s" (the reason is in '
                         "pgwharf's log)" % role)
        self.assertRegex(err["C"], r"^[0-9A-Z]{5}$")
        self.assertRegex(px.log(), r"event=auth_query .*user=%s result=error .*server login failed"
                         % role)

    def test_verifier_without_a_server_password(self):
        """The client authenticates, but pgwharf has no password to log in
        to the server as that role: a clear FATAL and a log line saying
        what would work."""
        role = self.make_role("gina", "gina_pw")
        px = self.start_aq(auth_dbname=None, breaker_threshold=100)
        out = self.psql_error(px, role, "gina_pw", db=self.pg.database)
        self.assertIn("server login failed", out)
        self.assertIn("no password supplied", out)
        self.assertRegex(px.log(), r"event=auth_query_server_login .*user=%s .*a verifier" % role)

    def test_a_verifier_pgwharf_cannot_use_is_never_a_password(self):
        # PostgreSQL keeps a verifier given as the password as it is: one
        # with a 72-byte salt, or iterations written "+4096", is a verifier
        # to it.  pgwharf's parser refused them, took the text for a
        # plaintext password, and the verifier itself logged in.  Now the
        # first is refused with any password (pgwharf cannot use it), the
        # second is read as PostgreSQL reads it.
        def verifier(password, salt, count_text):
            salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, 4096)
            ck = hmac.new(salted, b"Client Key", "sha256").digest()
            sk = hmac.new(salted, b"Server Key", "sha256").digest()
            b = lambda x: base64.b64encode(x).decode()
            return "SCRAM-SHA-256$%s:%s$%s:%s" % (count_text, b(salt),
                                                   b(hashlib.sha256(ck).digest()), b(sk))
        long_v = verifier("long_pw", bytes(range(72)), "4096")
        plus_v = verifier("plus_pw", bytes(range(16)), "+4096")
        long_role = self.make_role("long", long_v)
        plus_role = self.make_role("plus", plus_v)
        # the servers over the socket (trust): only pgwharf's check counts
        dbs = {"sockdb": pt.entry_conninfo(host=self.pg.sockdir, port=self.pg.port,
                                        dbname=self.pg.database),
               self.pg.database: self.pg.conn_string()}
        for auth_type in ("scram-sha-256", "md5", "plain"):
            with self.subTest(auth_type=auth_type):
                px = self.start_aq(databases=dbs, auth_type=auth_type)
                for role, password in ((long_role, long_v), (long_role, "long_pw"),
                                       (plus_role, plus_v)):
                    out = self.psql_error(px, role, password, db="sockdb")
                    self.assertIn('password authentication failed for user "%s"' % role, out)
                self.assertEqual(self.current_user(px, plus_role, "plus_pw", "sockdb"), plus_role)
                self.assertRegex(px.log(), r"event=auth_verifier_refused user=%s " % long_role
                                 if auth_type == "plain" else
                                 r"event=auth_failed .*user=%s .*cannot use" % long_role)
                px.stop()

    def test_plaintext_from_auth_query_logs_in_to_the_server(self):
        role = self.make_role("hank", "hank_pw")
        q = "SELECT usename, 'hank_pw'::text FROM pg_shadow WHERE usename=$1"
        px = self.start_aq(auth_query=q, auth_dbname=None)
        self.assertEqual(self.current_user(px, role, "hank_pw", self.pg.database), role)
        err = self.raw_error(px, role, "wrong", self.pg.database)
        self.assertEqual(err["C"], "28P01")

    def test_fixed_user_entry(self):
        role = self.make_role("ivy", "ivy_pw")
        dbs = {self.pg.database: self.pg.conn_string(self.pg.database),
               "fixed": self.pg.conn_string(self.pg.database, user=self.pg.app_user,
                                            password=self.pg.app_password)}
        px = self.start_aq(databases=dbs)
        self.assertEqual(self.current_user(px, role, "ivy_pw", "fixed"), self.pg.app_user)

    def test_trust_needs_a_known_user(self):
        role = self.make_role("jack", "jack_pw")
        ghost = "aq_%d_ghost2" % os.getpid()
        px = self.start_aq(databases=dict(self.db_with_password("jack_pw"),
                                          **{self.pg.database: self.pg.conn_string()}),
                           auth_type="trust")
        self.assertEqual(self.current_user(px, role, None, "aqdb"), role)
        err = self.raw_error(px, ghost, "x", "aqdb")
        self.assertEqual(err["C"], "28000")
        self.assertIn("no such user", err["M"])

    def test_a_null_user_name_is_no_such_user(self):
        # A LEFT JOIN answers every name with a row; for a name that is no
        # role the user-name column is NULL.  Under trust that row must not
        # log the ghost in (a NULL password would): it is no such user.
        role = self.make_role("kate", "kate_pw")
        ghost = "aq_%d_ghost3" % os.getpid()
        q = ("SELECT s.usename, s.passwd FROM (SELECT $1::text AS n) q "
             "LEFT JOIN pg_shadow s ON s.usename = q.n")
        px = self.start_aq(databases=dict(self.db_with_password("kate_pw"),
                                          **{self.pg.database: self.pg.conn_string()}),
                           auth_type="trust", auth_query=q)
        self.assertEqual(self.current_user(px, role, None, "aqdb"), role)
        err = self.raw_error(px, ghost, "x", "aqdb")
        self.assertIsNotNone(err, "a user the query answers with a NULL name logged in")
        self.assertEqual(err["C"], "28000")
        self.assertIn("no such user", err["M"])
        self.assertIn("user name is NULL", px.log())

    def test_input_sent_while_the_user_is_looked_up_is_kept(self):
        # A client may send its first query right behind the startup packet
        # (trust), or a cleartext password before it is asked for; PostgreSQL
        # reads them when it gets there.  While auth_query looks the user up
        # (always a round trip for a user not cached yet), nothing has been
        # asked: the bytes must wait, not end the login.
        role = self.make_role("nell", "nell_pw")
        dbs = dict(self.db_with_password("nell_pw"), **{self.pg.database: self.pg.conn_string()})
        query = hz.query_msg("select current_user")
        for auth_type, behind in (("trust", query),
                                  ("plain", hz.msg(b"p", b"nell_pw\0") + query)):
            with self.subTest(auth_type=auth_type):
                px = self.start_aq(databases=dbs, auth_type=auth_type)
                s = socket.create_connection((px.host, px.port), timeout=10)
                s.sendall(hz.startup_packet(role, "aqdb") + behind)
                seen = []
                while True:
                    t, body = hz.recv_msg(s)
                    seen.append(t)
                    if t == b"E":
                        self.fail("error: %s" % hz.parse_fields(body))
                    if t == b"D":
                        self.assertIn(role.encode(), body)
                    if t == b"Z" and b"D" in seen:
                        break
                s.close()
                self.assertEqual(self.lookups(px, role, "found"), 1)
                px.stop()

    def test_password_change_seen_after_the_cache_expires(self):
        # Two pgwharfs on the same role: one caches for an hour, so its
        # cached verifier is still the one that counts however slow the
        # steps; the other for 1 s, waited out from when its answer was
        # surely in (the login it let in had returned).
        long_ttl, ttl = 3600, 1.0
        role = self.make_role("kate", "old_pw")
        dbs = {self.pg.database: self.pg.conn_string(self.pg.database),
               "fixed": self.pg.conn_string(self.pg.database, user=self.pg.user,
                                            password=self.pg.password)}
        kept = self.start_aq(databases=dbs, env={"PGW_AUTH_CACHE_TTL": str(long_ttl)})
        px = self.start_aq(databases=dbs, env={"PGW_AUTH_CACHE_TTL": str(ttl)})
        self.assertEqual(self.current_user(kept, role, "old_pw", "fixed"), self.pg.user)
        self.assertEqual(self.current_user(px, role, "old_pw", "fixed"), self.pg.user)
        cached = time.monotonic()        # px's answer expires before cached + ttl
        self.set_password(role, "new_pw")
        # Still the cached verifier: the old password is what counts.
        self.assertEqual((self.raw_error(kept, role, "new_pw", "fixed") or {}).get("C"), "28P01")
        self.assertEqual(self.current_user(kept, role, "old_pw", "fixed"), self.pg.user)
        self.assertEqual(self.lookups(kept, role), 1)
        # Past the expiry (a lower bound on the time passed, not a guess):
        # looked up again, the new password counts and the old does not.
        time.sleep(max(0.0, cached + ttl + 0.1 - time.monotonic()))
        self.assertEqual(self.current_user(px, role, "new_pw", "fixed"), self.pg.user)
        self.assertEqual((self.raw_error(px, role, "old_pw", "fixed") or {}).get("C"), "28P01")
        # Two or three: the second answer may itself have expired by the
        # old password's try on a loaded machine.
        self.assertIn(self.lookups(px, role, "found"), (2, 3))

    def test_reload_forgets_answers(self):
        role = self.make_role("leo", "leo_pw")
        px = self.start_aq(databases=dict(self.db_with_password("leo_pw"),
                                          **{self.pg.database: self.pg.conn_string()}))
        self.current_user(px, role, "leo_pw", "aqdb")
        self.current_user(px, role, "leo_pw", "aqdb")
        self.assertEqual(self.lookups(px, role), 1)
        px.reload()
        px.wait_for_log(r"event=reload")
        self.current_user(px, role, "leo_pw", "aqdb")
        self.assertEqual(self.lookups(px, role), 2)

    def gated_lookup(self, key):
        """An auth_query held at an advisory-lock gate (opened by the test,
        or at its end): the lookup runs exactly as long as the test needs."""
        gate = hz.Gate(self.pg, key)
        self.addCleanup(gate.close)
        return gate, "SELECT usename, passwd FROM pg_shadow, %s WHERE usename=$1" % gate.sql()

    def wait_lookup_at_gate(self):
        self.pg.wait_running("FROM pg_shadow, pg_advisory_xact_lock_shared", lock_wait=True)

    def test_kill_ends_a_lookup_on_the_killed_databases_server(self):
        # Review r1 of session 53 (hunt h1's LOW): KILL db left a server
        # lent to an auth_query lookup running its query until the lookup
        # ended (the waiting login then went on), where KILL closes the
        # database's servers at once.  Now the lookup ends there, its query
        # cancelled and its server closed, and its waiter is told 57P01.
        role = self.make_role("kit", "kit_pw")
        gate, q = self.gated_lookup(7031)
        px = self.start_aq(databases=dict(self.db_with_password("kit_pw"),
                                          **{self.pg.database: self.pg.conn_string()}),
                           auth_query=q, server_connect_timeout=60)
        c = socket.create_connection((px.host, px.port), timeout=20)
        self.addCleanup(c.close)
        c.sendall(hz.startup_packet(role, "aqdb"))
        self.wait_lookup_at_gate()
        px.admin("KILL %s" % self.pg.database)
        with self.assertRaises(hz.PgError) as cm:
            hz.finish_login(c, role, "kit_pw")     # the gate stays shut
        self.assertEqual(cm.exception.sqlstate, "57P01", str(cm.exception))
        pt.wait_until(lambda: self.pg.queries_running("FROM pg_shadow, pg_advisory_xact_lock_shared",
                                                      True) == 0, 10, what="the lookup's query gone")
        px.admin("RESUME %s" % self.pg.database)
        gate.open()
        self.assertEqual(self.current_user(px, role, "kit_pw", "aqdb"), role)

    def test_burst_of_logins_runs_one_query(self):
        role = self.make_role("mia", "mia_pw")
        # Every login of the burst arrives while the lookup runs: it waits
        # at the gate until pgwharf has read all 20 startup packets.
        gate, q = self.gated_lookup(7021)
        px = self.start_aq(databases=dict(self.db_with_password("mia_pw"),
                                          **{self.pg.database: self.pg.conn_string()}),
                           auth_query=q, pool_mode="transaction")
        socks = []
        for _ in range(20):
            c = socket.create_connection((px.host, px.port), timeout=30)
            self.addCleanup(c.close)
            c.sendall(hz.startup_packet(role, "aqdb"))
            socks.append(c)
        self.wait_lookup_at_gate()
        ports = {c.getsockname()[1] for c in socks}
        pt.wait_until(lambda: (lambda q: ports <= set(q) and not any(q[p] for p in ports))(
            hz.unread_on_port(px.pid, px.port)), 20, what="pgwharf read every startup packet")
        gate.open()

        def login(c):
            hz.finish_login(c, role, "mia_pw")
            return hz.simple_query(c, "select current_user")
        bgs = [pt.Background(lambda c=c: login(c)) for c in socks]
        for bg in bgs:
            bg.join(60)
        self.assertEqual([(bg.error, bg.result) for bg in bgs],
                         [(None, ([[role.encode()]], []))] * 20)
        self.assertEqual(self.lookups(px, role), 1, px.log_tail())

    def test_client_leaves_while_the_lookup_runs(self):
        role = self.make_role("nina", "nina_pw")
        gate, q = self.gated_lookup(7022)
        px = self.start_aq(databases=dict(self.db_with_password("nina_pw"),
                                          **{self.pg.database: self.pg.conn_string()}),
                           auth_query=q, metrics_port="auto")
        r = Raw(px.host, px.port, role, "aqdb")
        self.wait_lookup_at_gate()
        r.close()
        pt.wait_until(lambda: px.metric("pgwharf_clients_total") == 0, 20,
                      what="pgwharf saw the client leave")
        gate.open()
        # The lookup finishes, its server goes back clean, its answer is kept.
        px.wait_for_log(r"event=auth_query .*user=%s result=found" % role, timeout=10)
        self.assertEqual(self.current_user(px, role, "nina_pw", "aqdb"), role)
        self.assertEqual(self.lookups(px, role), 1)
        self.assertTrue(px.show("POOLS", database=self.pg.database, user=self.pg.user))

    def test_client_login_timeout_covers_the_lookup(self):
        role = self.make_role("quinn", "quinn_pw")
        # The lookup lasts until the gate opens: the client's 08P01 can only
        # be client_login_timeout's.
        gate, q = self.gated_lookup(7023)
        px = self.start_aq(databases=dict(self.db_with_password("quinn_pw"),
                                          **{self.pg.database: self.pg.conn_string()}),
                           auth_query=q, client_login_timeout=1)
        err = self.raw_error(px, role, "quinn_pw", "aqdb")
        self.assertEqual(err["C"], "08P01")
        self.assertIn("client_login_timeout", err["M"])
        self.assertEqual(self.pg.queries_running("FROM pg_shadow, pg_advisory_xact_lock_shared",
                                                 lock_wait=True), 1)
        gate.open()
        # The lookup finishes anyway and its answer serves the next login.
        px.wait_for_log(r"event=auth_query .*user=%s result=found" % role, timeout=10)
        self.assertIsNone(self.raw_error(px, role, "quinn_pw", "aqdb"))
        self.assertEqual(self.lookups(px, role), 1)

    def test_waiting_for_a_server_queue_wait_and_abandon(self):
        role = self.make_role("olga", "olga_pw")
        dbs = {self.pg.database: self.pg.conn_string(self.pg.database, pool_size=1),
               "aqdb": self.pg.conn_string(self.pg.database, password="olga_pw")}
        px = self.start_aq(databases=dbs, pool_mode="session", query_wait_timeout=1)
        # Hold the only server of the lookup's pool (pgwharf/pgwharf): a
        # query waiting at a gate.
        gate = hz.Gate(self.pg, 7024)
        self.addCleanup(gate.close)
        holder = subprocess_psql(px, self.pg.user, self.pg.password, self.pg.database,
                                 "select %s /* holder */" % gate.sql())
        try:
            self.pg.wait_running("/* holder */", lock_wait=True)
            # A client that leaves while the lookup waits for a server: the
            # lookup is dropped and never runs.
            r = Raw(px.host, px.port, role, "aqdb")
            pt.wait_until(lambda: self.longest_wait(px) > 0, 20,
                          what="the lookup queued for a server")
            r.close()
            pt.wait_until(lambda: self.longest_wait(px) == 0, 20,
                          what="the lookup gone from the queue")
            # One that waits past query_wait_timeout gets a FATAL 57014.
            err = self.raw_error(px, role, "olga_pw", "aqdb")
            self.assertEqual(err["C"], "57014")
            self.assertIn('auth_query failed for user "%s": query_wait_timeout' % role, err["M"])
        finally:
            gate.open()
            holder.wait(30)
        self.assertEqual(self.lookups(px, role, "found"), 0)
        self.assertEqual(self.lookups(px, role, "error"), 1)
        # Once the server is free the login works.
        self.assertEqual(self.current_user(px, role, "olga_pw", "aqdb"), role)

    def test_password_message_before_the_lookup_ends(self):
        # Sent in a read of its own while the lookup runs (nothing asked
        # yet), a password message waits for the request, as PostgreSQL
        # would read it: a cleartext password logs in, and garbage where
        # SCRAM wants its first message is refused once SCRAM is offered.
        role = self.make_role("pia", "pia_pw")
        dbs = dict(self.db_with_password("pia_pw"), **{self.pg.database: self.pg.conn_string()})
        for key, auth_type, early, request in ((7025, "plain", b"pia_pw\0", 3),
                                               (7029, "scram-sha-256", b"too-early\0", 10)):
            with self.subTest(auth_type=auth_type):
                gate, q = self.gated_lookup(key)
                px = self.start_aq(databases=dbs, auth_query=q, auth_type=auth_type)
                r = Raw(px.host, px.port, role, "aqdb")
                try:
                    # pgwharf has read the startup packet (the lookup runs):
                    # the password comes in a read of its own.
                    self.wait_lookup_at_gate()
                    r.send(b"p", early)
                    gate.open()
                    self.assertEqual(r.auth()[0], request)
                    code, rest = r.auth()
                    if auth_type == "plain":
                        self.assertEqual(code, 0)
                    else:
                        self.assertEqual(code, "E")
                        self.assertEqual(rest["C"], "08P01")
                        self.assertIn("invalid SASL authentication mechanism", rest["M"])
                finally:
                    r.close()
                px.wait_for_log(r"event=auth_query .*user=%s result=found" % role, timeout=10)
                px.stop()


    def test_a_long_password_message_while_the_lookup_runs(self):
        # 40 000 bytes of cleartext password sent unasked, behind the
        # startup packet, while the lookup runs: the 32 KB client buffer
        # filled and reading stopped; the lookup's end made room for the
        # whole message but did not read again, and the login waited for
        # client_login_timeout.  PostgreSQL reads up to 65 535 bytes.
        role = self.make_role("rex", "rex_pw")
        gate, q = self.gated_lookup(7031)
        dbs = dict(self.db_with_password("rex_pw"), **{self.pg.database: self.pg.conn_string()})
        px = self.start_aq(databases=dbs, auth_query=q, auth_type="plain",
                           client_login_timeout=8)
        r = Raw(px.host, px.port, role, "aqdb")
        try:
            self.wait_lookup_at_gate()
            r.send(b"p", b"x" * 40000 + b"\0")
            gate.open()
            self.assertEqual(r.auth()[0], 3)
            code, rest = r.auth()
            self.assertEqual(code, "E")
            self.assertEqual((rest["C"], rest["M"]),
                             ("28P01", 'password authentication failed for user "%s"' % role))
        finally:
            r.close()


class TestAuthQueryServerTls(AuthQueryTestCase):
    """The lookup through a TLS server link (the cluster gets ssl=on for the
    test, as in test_tls)."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        import test_tls
        cls.certs = test_tls.Certs()

    @classmethod
    def tearDownClass(cls):
        cls.certs.cleanup()
        super().tearDownClass()

    def setUp(self):
        super().setUp()
        self.addCleanup(self.pg.enable_ssl(self.certs.path("server.crt"),
                                           self.certs.path("server.key"),
                                           prefix="pgwharf_aq_tls_"))

    def test_lookup_over_tls(self):
        role = self.make_role("tls", "tls_pw")
        px = self.start_aq(databases=dict(self.db_with_password("tls_pw"),
                                          **{self.pg.database: self.pg.conn_string()}),
                           server_tls_sslmode="require", pool_mode="transaction")
        self.assertEqual(self.current_user(px, role, "tls_pw", "aqdb"), role)
        self.assertEqual(self.raw_error(px, role + "x", "tls_pw", "aqdb")["C"], "28P01")
        self.assertEqual(self.lookups(px, role, "found"), 1)
        # The lookup's server went back clean and serves pgwharf's own
        # clients, over TLS.
        self.assertEqual(px.psql("select ssl from pg_stat_ssl where pid = pg_backend_pid()",
                                 user=self.pg.user, password=self.pg.password), "t")


def subprocess_psql(px, user, password, db, sql):
    import subprocess
    e = dict(os.environ, PGPASSWORD=password)
    return subprocess.Popen([pt.pg_bin("psql"), "-X", "-q", "-h", px.host, "-p", str(px.port),
                             "-U", user, "-d", db, "-c", sql], env=e,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


if __name__ == "__main__":
    unittest.main()
