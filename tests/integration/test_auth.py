"""Client authentication through pgwharf: SCRAM-SHA-256 with real clients
(psql, psycopg2, psycopg 3, asyncpg, node-postgres) against a plaintext
password and against a verifier taken from PostgreSQL's pg_authid; wrong
password and unknown user failing alike; md5 and plain with every kind of
secret; auth_hba_file rules by address, socket and database.

A small SCRAM client on a raw socket checks what drivers hide: the
mechanism list, the shape of server-first, the salt an unknown user sees,
and the errors for malformed exchanges."""

import asyncio
import base64
import hashlib
import hmac
import os
import pwd
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import types
import unittest

import pgw_hardening as hz
import pgwharf_test as pt

wait_until = pt.wait_until

try:
    import psycopg2
except ImportError:
    psycopg2 = None
try:
    import psycopg
except ImportError:
    psycopg = None
try:
    import asyncpg
except ImportError:
    asyncpg = None

HERE = os.path.dirname(os.path.abspath(__file__))
NODE_MODULES = os.path.join(HERE, "node_modules")

NODE_SCRIPT = r"""
const { Client } = require('pg');
(async () => {
  const c = new Client({ host: process.env.H, port: +process.env.P, user: process.env.U,
                         password: process.env.PW, database: process.env.D });
  await c.connect();
  const r = await c.query('select current_user as u');
  console.log(r.rows[0].u);
  await c.end();
})().catch(e => { console.log('ERROR ' + e.code + ' ' + e.message); process.exit(1); });
"""


def md5_secret(user, password):
    return "md5" + hashlib.md5((password + user).encode()).hexdigest()


# --- a raw protocol client ---------------------------------------------------

class Raw:
    """One connection speaking just enough of the protocol for auth."""

    def __init__(self, host, port, user, db):
        self.sock = socket.create_connection((host, port), timeout=10)
        if isinstance(user, str):
            user = user.encode()
        params = b"user\0" + user + b"\0database\0" + db.encode() + b"\0\0"
        self.sock.sendall(struct.pack("!ii", 8 + len(params), 196608) + params)

    def close(self):
        self.sock.close()

    def _read(self, n):
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise EOFError("connection closed after %d of %d bytes" % (len(out), n))
            out += chunk
        return out

    def read(self):
        """(type, body) of the next message."""
        hdr = self._read(5)
        typ, length = hdr[:1], struct.unpack("!i", hdr[1:])[0]
        return typ, self._read(length - 4)

    def send(self, typ, body):
        self.sock.sendall(typ + struct.pack("!i", len(body) + 4) + body)

    def auth(self):
        """Read an Authentication message: (code, rest) or ('E', fields)."""
        typ, body = self.read()
        if typ == b"E":
            return "E", error_fields(body)
        assert typ == b"R", typ
        return struct.unpack("!i", body[:4])[0], body[4:]

    def sasl_initial(self, data, mech=b"SCRAM-SHA-256"):
        self.send(b"p", mech + b"\0" + struct.pack("!i", len(data)) + data)

    def sasl_response(self, data):
        self.send(b"p", data)


def error_fields(body):
    out = {}
    for part in body.split(b"\0"):
        if part:
            out[chr(part[0])] = part[1:].decode(errors="replace")
    return out


def scram_client_final(password, bare, server_first, gs2=b"n,,"):
    attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
    salt = base64.b64decode(attrs["s"])
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, int(attrs["i"]))
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored = hashlib.sha256(client_key).digest()
    without_proof = "c=%s,r=%s" % (base64.b64encode(gs2).decode(), attrs["r"])
    auth_msg = "%s,%s,%s" % (bare, server_first, without_proof)
    sig = hmac.new(stored, auth_msg.encode(), "sha256").digest()
    proof = bytes(a ^ b for a, b in zip(client_key, sig))
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    expect_v = base64.b64encode(hmac.new(server_key, auth_msg.encode(), "sha256").digest())
    return (without_proof + ",p=" + base64.b64encode(proof).decode()).encode(), expect_v


JDBC_JAR = "/usr/share/java/postgresql.jar"     # Debian libpostgresql-jdbc-java
JDBC_SOURCE = """
import java.sql.*;
public class Who {
  public static void main(String[] a) throws Exception {
    try (Connection c = DriverManager.getConnection(a[0], a[1], a[2]);
         ResultSet rs = c.createStatement().executeQuery("select current_user")) {
      rs.next();
      System.out.println(rs.getString(1));
    }
  }
}
"""


class AuthTestCase(pt.PgwharfTestCase):

    def app(self):
        return self.pg.app_user, self.pg.app_password

    def pg_verifier(self, user):
        out = self.pg.psql("select rolpassword from pg_authid where rolname = '%s'" % user,
                           db="postgres", via_socket=True)
        self.assertTrue(out.startswith("SCRAM-SHA-256$4096:"), out)
        return out

    def start(self, auth_type, auth_users, databases=None, **settings):
        settings = dict(settings)
        settings["auth_type"] = auth_type
        return self.start_pgwharf(settings=settings, auth_users=auth_users, databases=databases)

    def app_databases(self):
        """[databases] logging in to PostgreSQL as app with its password, for
        auth files that hold no plaintext pgwharf could use."""
        user, pw = self.app()
        return {db: self.pg.conn_string(db, user=user, password=pw)
                for db in (self.pg.database, self.pg.database2, "postgres")}

    # one client each; all return current_user or raise
    def via_psql(self, px, user, password, db=None):
        return px.psql("select current_user", user=user, password=password, db=db)

    def via_psycopg2(self, px, user, password, db=None):
        with psycopg2.connect(px.dsn(db=db, user=user, password=password)) as conn:
            with conn.cursor() as cur:
                cur.execute("select current_user")
                out = cur.fetchone()[0]
        conn.close()
        return out

    def via_psycopg3(self, px, user, password, db=None):
        with psycopg.connect(px.dsn(db=db, user=user, password=password)) as conn:
            return conn.execute("select current_user").fetchone()[0]

    def via_asyncpg(self, px, user, password, db=None):
        async def run():
            conn = await asyncpg.connect(host=px.host, port=px.port, user=user, password=password,
                                         database=db or self.pg.database, timeout=10)
            try:
                return await conn.fetchval("select current_user")
            finally:
                await conn.close()
        return asyncio.run(run())

    def via_node(self, px, user, password, db=None):
        env = dict(os.environ, H=px.host, P=str(px.port), U=user, PW=password,
                   D=db or self.pg.database, NODE_PATH=NODE_MODULES)
        cp = subprocess.run(["node", "-e", NODE_SCRIPT], env=env, capture_output=True,
                            text=True, timeout=60)
        if cp.returncode != 0:
            raise pt.PgwharfError("node: %s %s" % (cp.stdout.strip(), cp.stderr.strip()))
        return cp.stdout.strip()

    def via_jdbc(self, px, user, password, db=None):
        d = getattr(self, "_jdbc_dir", None)
        if d is None:
            d = self._jdbc_dir = tempfile.mkdtemp(prefix="pgwharf-jdbc-")
            self.addCleanup(shutil.rmtree, d, True)
            with open(os.path.join(d, "Who.java"), "w") as f:
                f.write(JDBC_SOURCE)
            subprocess.run(["javac", "-cp", JDBC_JAR, "Who.java"], cwd=d, check=True,
                           timeout=120)
        url = "jdbc:postgresql://%s:%d/%s?sslmode=disable" % (px.host, px.port,
                                                            db or self.pg.database)
        cp = subprocess.run(["java", "-cp", JDBC_JAR + ":.", "Who", url, user, password],
                            cwd=d, capture_output=True, text=True, timeout=120)
        if cp.returncode != 0:
            raise pt.PgwharfError("jdbc: %s %s" % (cp.stdout.strip(), cp.stderr.strip()))
        return cp.stdout.strip()

    def clients(self):
        out = [("psql", self.via_psql)]
        if _have("javac") and os.path.exists(JDBC_JAR):
            out.append(("jdbc", self.via_jdbc))
        if psycopg2:
            out.append(("psycopg2", self.via_psycopg2))
        if psycopg:
            out.append(("psycopg3", self.via_psycopg3))
        if asyncpg:
            out.append(("asyncpg", self.via_asyncpg))
        if os.path.isdir(os.path.join(NODE_MODULES, "pg")) and _have("node"):
            out.append(("node-postgres", self.via_node))
        return out

    def assert_all_clients_log_in(self, px, user, password):
        for name, fn in self.clients():
            with self.subTest(client=name):
                self.assertEqual(fn(px, user, password), user)

    def psql_error(self, px, user, password, db=None):
        cp = px.psql("select 1", user=user, password=password, db=db, check=False)
        self.assertNotEqual(cp.returncode, 0, "login should have failed")
        return cp.stderr.strip()

    def pg_error(self, px, user, password, db=None):
        """The message of a failed login through psycopg2 (libpq 15 keeps
        no SQLSTATE for connection errors; raw_scram checks those)."""
        with self.assertRaises(psycopg2.OperationalError) as cm:
            psycopg2.connect(px.dsn(db=db, user=user, password=password)).close()
        return str(cm.exception)

    def raw_scram(self, px, user, password, db=None, first=None):
        """Run SCRAM by hand.  Returns a dict with what the server sent."""
        seen = {}
        r = Raw(px.host, px.port, user, db or self.pg.database)
        try:
            code, rest = r.auth()
            seen["request"] = code
            if code != 10:
                seen["rest"] = rest
                return seen
            seen["mechanisms"] = rest
            nonce = base64.b64encode(os.urandom(18)).decode()
            first = first or ("n,,n=,r=" + nonce).encode()
            r.sasl_initial(first)
            code, rest = r.auth()
            if code == "E":
                seen["error"] = rest
                return seen
            self.assertEqual(code, 11)
            server_first = rest.decode()
            seen["server_first"] = server_first
            final, expect_v = scram_client_final(password, first[3:].decode(), server_first)
            r.sasl_response(final)
            code, rest = r.auth()
            if code == "E":
                seen["error"] = rest
                return seen
            self.assertEqual(code, 12)
            seen["server_final"] = rest
            seen["expected_final"] = b"v=" + expect_v
            code, rest = r.auth()
            seen["after"] = code
            return seen
        finally:
            r.close()


def _have(prog):
    from shutil import which
    return which(prog) is not None


class TestScram(AuthTestCase):

    def test_plaintext_secret_all_clients(self):
        user, pw = self.app()
        px = self.start("scram-sha-256", {user: pw, self.pg.user: self.pg.password})
        self.assert_all_clients_log_in(px, user, pw)
        self.assert_all_clients_log_in(px, self.pg.user, self.pg.password)

    def test_postgres_verifier_all_clients(self):
        user, pw = self.app()
        px = self.start("scram-sha-256", {user: self.pg_verifier(user)},
                        databases=self.app_databases())
        self.assert_all_clients_log_in(px, user, pw)

    def test_wrong_password_and_unknown_user_look_alike(self):
        user, pw = self.app()
        for secret in (pw, self.pg_verifier(user)):
            px = self.start("scram-sha-256", {user: secret, "other": "x"},
                            databases=self.app_databases())
            wrong = self.psql_error(px, user, "not-" + pw)
            unknown = self.psql_error(px, "ghost", "not-" + pw)
            self.assertIn('FATAL:  password authentication failed for user "%s"' % user, wrong)
            self.assertEqual(wrong.replace(user, "U"), unknown.replace("ghost", "U"))
            if psycopg2:
                self.assertEqual(self.pg_error(px, user, "bad").replace(user, "U"),
                                 self.pg_error(px, "ghost", "bad").replace("ghost", "U"))
            # On the wire: both get a full exchange, then the same error.
            for who in (user, "ghost"):
                seen = self.raw_scram(px, who, "bad")
                self.assertEqual(seen["request"], 10)
                self.assertIn("server_first", seen)
                self.assertEqual(seen["error"]["C"], "28P01")
                self.assertEqual(seen["error"]["S"], "FATAL")
                self.assertEqual(seen["error"]["M"],
                                 'password authentication failed for user "%s"' % who)
            px.stop()

    def test_exchange_on_the_wire(self):
        user, pw = self.app()
        px = self.start("scram-sha-256", {user: self.pg_verifier(user)},
                        databases=self.app_databases())
        seen = self.raw_scram(px, user, pw)
        self.assertEqual(seen["mechanisms"], b"SCRAM-SHA-256\0\0")
        attrs = dict(kv.split("=", 1) for kv in seen["server_first"].split(","))
        self.assertEqual(len(base64.b64decode(attrs["s"])), 16)
        self.assertEqual(attrs["i"], "4096")
        self.assertEqual(seen["server_final"], seen["expected_final"])
        self.assertEqual(seen["after"], 0)       # AuthenticationOk

    def test_scram_iterations(self):
        # Verifiers pgwharf makes from a plaintext secret use
        # scram_iterations; an unknown user's mock exchange too (the same
        # answer either way).  A verifier is made once per user and kept:
        # a wrong password still fails, a reload with a new one takes it.
        user, pw = self.app()
        px = self.start("scram-sha-256", {user: pw}, scram_iterations=10000)
        for who in (user, user, "ghost"):
            first = self.raw_scram(px, who, pw)["server_first"]
            self.assertEqual(dict(kv.split("=", 1) for kv in first.split(","))["i"], "10000")
        seen = self.raw_scram(px, user, pw)
        self.assertEqual(seen["server_final"], seen["expected_final"])
        self.assertEqual(self.raw_scram(px, user, "wrong")["error"]["C"], "28P01")
        px.auth_users[user] = "new password"
        px.settings["scram_iterations"] = 5000
        px.reload()
        pt.wait_until(lambda: dict(kv.split("=", 1) for kv in self.raw_scram(
            px, user, "x")["server_first"].split(","))["i"] == "5000", what="the reload")
        self.assertEqual(self.raw_scram(px, user, pw)["error"]["C"], "28P01")
        seen = self.raw_scram(px, user, "new password")
        self.assertEqual(seen["server_final"], seen["expected_final"])

    def test_unknown_user_salt_is_stable(self):
        user, pw = self.app()
        px = self.start("scram-sha-256", {user: pw})

        def salt(who):
            first = self.raw_scram(px, who, "x")["server_first"]
            return dict(kv.split("=", 1) for kv in first.split(","))["s"]
        self.assertEqual(salt("ghost"), salt("ghost"))
        self.assertNotEqual(salt("ghost"), salt("ghost2"))
        self.assertEqual(salt(user), salt(user))     # plaintext: per-user salt too

    def test_salt_key_file(self):
        # A verifier's salt is the same in every pgwharf process; an unknown
        # user's came from a key each process drew for itself, so two
        # processes (a so_reuseport group, or one before and after a
        # restart) told real users from unknown ones.  The same
        # scram_salt_key_file gives them one salt; another file, another.
        user, pw = self.app()
        users = {user: self.pg_verifier(user)}
        tmp = tempfile.mkdtemp(prefix="pgwharf-saltkey-")
        self.addCleanup(shutil.rmtree, tmp, True)
        keys = []
        for i in range(2):
            keys.append(os.path.join(tmp, "key%d" % i))
            with open(keys[i], "wb") as f:
                f.write(os.urandom(32))

        def salt(px, who):
            first = self.raw_scram(px, who, "x")["server_first"]
            return dict(kv.split("=", 1) for kv in first.split(","))["s"]
        plain = [self.start("scram-sha-256", users) for _ in range(2)]
        self.assertEqual(salt(plain[0], user), salt(plain[1], user))
        self.assertNotEqual(salt(plain[0], "ghost"), salt(plain[1], "ghost"))
        keyed = [self.start("scram-sha-256", users, scram_salt_key_file=keys[0])
                 for _ in range(2)]
        self.assertEqual(salt(keyed[0], "ghost"), salt(keyed[1], "ghost"))
        self.assertNotEqual(salt(keyed[0], "ghost"), salt(keyed[0], "ghost2"))
        # RELOAD to another file: the salts of a process started with it
        other = self.start("scram-sha-256", users, scram_salt_key_file=keys[1])
        want = salt(other, "ghost")
        self.assertNotEqual(want, salt(keyed[0], "ghost"))
        px = keyed[1]
        px.settings["scram_salt_key_file"] = keys[1]
        px.reload()
        pt.wait_until(lambda: salt(px, "ghost") == want, what="the reload")
        # the same file again: the same salts; no file: a key of its own
        mark = px.log().count("event=reload ")
        px.reload()
        pt.wait_until(lambda: px.log().count("event=reload ") > mark, what="the reload")
        self.assertEqual(salt(px, "ghost"), want)
        del px.settings["scram_salt_key_file"]
        px.reload()
        pt.wait_until(lambda: salt(px, "ghost") != want, what="the reload")
        self.assertEqual(salt(px, "ghost"), salt(px, "ghost"))
        self.assertEqual(salt(px, user), salt(other, user))     # a verifier's: its own

    def test_salt_key_file_errors(self):
        tmp = tempfile.mkdtemp(prefix="pgwharf-saltkey-")
        self.addCleanup(shutil.rmtree, tmp, True)
        short = os.path.join(tmp, "short")
        with open(short, "wb") as f:
            f.write(b"0123456789")
        for path, why in ((os.path.join(tmp, "none"), "cannot open it: No such file"),
                          (short, "it holds 10 bytes, at least 16 are needed")):
            px = self.start_pgwharf(start=False, settings={"scram_salt_key_file": path})
            px.start(wait=False)
            pt.wait_until(lambda: not px.alive(), what="pgwharf exiting")
            self.assertNotEqual(px.proc.returncode, 0)
            self.assertRegex(px.log(), r':\d+: scram_salt_key_file "%s": %s' % (
                re.escape(path), why))
        # a reload to a bad file keeps the running key
        good = os.path.join(tmp, "good")
        with open(good, "wb") as f:
            f.write(os.urandom(32))
        px = self.start("scram-sha-256", {}, scram_salt_key_file=good)
        first = self.raw_scram(px, "ghost", "x")["server_first"]
        px.settings["scram_salt_key_file"] = short
        px.reload()
        px.wait_for_log("cannot load scram_salt_key_file, keeping the old config")
        self.assertEqual(self.raw_scram(px, "ghost", "x")["server_first"].split(",")[1:],
                         first.split(",")[1:])

    def test_a_user_name_is_cut_to_63_bytes_as_postgresql_does(self):
        # PostgreSQL cuts the startup packet's user name to NAMEDATALEN - 1
        # bytes: a longer name logs in as the 63-byte role.  pgwharf kept
        # the whole name, so each longer name that began with a role's was
        # a user of its own (its pool, its auth_query answer, its
        # max_user_connections) for the same role.
        role = ("r%d_" % os.getpid()).ljust(63, "x")
        self.pg.psql("SET password_encryption = 'scram-sha-256'; DROP ROLE IF EXISTS %s; "
                     "CREATE ROLE %s LOGIN PASSWORD 'cut_pw'" % (role, role),
                     db="postgres", via_socket=True)
        self.addCleanup(self.pg.psql, "DROP ROLE IF EXISTS %s" % role, db="postgres",
                        via_socket=True)
        # (no database named: libpq sends the user's name, cut too)
        px = self.start("scram-sha-256", {role: "cut_pw", self.pg.user: self.pg.password},
                        databases={"*": self.pg.conn_string(self.pg.database)})
        for name in (role + "_alias", role + "_another_one"):
            with psycopg2.connect(host=px.host, port=px.port, user=name,
                                  password="cut_pw") as conn:
                with conn.cursor() as cur:
                    cur.execute("select current_user")
                    self.assertEqual(cur.fetchone()[0], role)
            conn.close()
        self.assertEqual([(r["database"], r["user"]) for r in px.show("POOLS")
                          if r["user"].startswith(role[:8])], [(role, role)])

    def test_plaintext_secret_with_a_combining_accent(self):
        # libpq SASLpreps the password before SCRAM (NFKC: "e" + U+0301 is
        # U+00E9), as PostgreSQL does when it makes a verifier.  pgwharf
        # made the verifier of a plaintext secret from the raw bytes when it
        # met a combining mark, so the right password was refused.
        user, _ = self.app()
        px = self.start("scram-sha-256", {user: "e\u0301tude"}, databases=self.app_databases())
        self.assertEqual(self.via_psql(px, user, "e\u0301tude"), user)
        self.assertEqual(self.via_psql(px, user, "\u00e9tude"), user)    # the same once prepped
        self.assertIn("password authentication failed", self.psql_error(px, user, "etude"))

    def test_plaintext_secret_with_compatibility_characters(self):
        # NFKC maps compatibility characters: U+2460 CIRCLED DIGIT ONE is
        # "1", U+2122 TRADE MARK SIGN "TM", U+FB01 the ligature "fi"; and
        # puts marks in order (x U+0307 U+0323 is U+1E8B U+0323).  libpq and
        # PostgreSQL prep so; pgwharf used such a password raw when it made
        # the verifier of a plaintext secret (and under plain when it
        # checked a cleartext password against a verifier), so the right
        # password was refused.
        role, pw = "pgw_saslprep", "\u2460\u2122\ufb01-x\u0307\u0323"
        prepped = "1TMfi-\u1e8b\u0323"
        self.pg.psql("DROP ROLE IF EXISTS %s; CREATE ROLE %s LOGIN" % (role, role),
                     db="postgres", via_socket=True)
        self.addCleanup(self.pg.psql, "DROP ROLE IF EXISTS %s" % role, db="postgres",
                        via_socket=True, check=False)
        self.pg.psql("SET password_encryption = 'scram-sha-256'; ALTER ROLE %s PASSWORD '%s'"
                     % (role, pw), db="postgres", via_socket=True)
        # PostgreSQL itself: the password and its prepped form both log in.
        for password in (pw, prepped):
            self.assertEqual(self.pg.psql("select current_user", user=role, password=password),
                             role)
        databases = {self.pg.database: self.pg.conn_string(self.pg.database, user=role,
                                                           password=pw)}
        px = self.start("scram-sha-256", {role: pw}, databases=databases)
        for password in (pw, prepped):
            with self.subTest(password=password):
                self.assertEqual(self.via_psql(px, role, password), role)
                if psycopg2:
                    self.assertEqual(self.via_psycopg2(px, role, password), role)
        self.assertIn("password authentication failed",
                      self.psql_error(px, role, "\u2460\u2122\ufb01-x"))
        # plain: the cleartext password, prepped, against PostgreSQL's verifier.
        px = self.start("plain", {role: self.pg_verifier(role)}, databases=databases)
        self.assertEqual(self.via_psql(px, role, pw), role)
        self.assertIn("password authentication failed", self.psql_error(px, role, "1TMfi"))

    def test_malformed_exchanges(self):
        user, pw = self.app()
        px = self.start("scram-sha-256", {user: pw})
        seen = self.raw_scram(px, user, pw, first=b"p=tls-server-end-point,,n=,r=abcdef")
        self.assertEqual(seen["error"]["C"], "08P01")
        self.assertIn("channel binding", seen["error"]["M"])
        # An empty client nonce ("r="): PostgreSQL logs the client in (the
        # combined nonce is then the server's alone); pgwharf refused it
        # with 08P01 "non-printable characters in SCRAM nonce".
        direct = types.SimpleNamespace(host=self.pg.host, port=self.pg.port)
        for target in (direct, px):
            with self.subTest(target=target.port):
                seen = self.raw_scram(target, user, pw, first=b"n,,n=,r=")
                self.assertNotIn("error", seen)
                self.assertEqual(seen["server_final"], seen["expected_final"])
                self.assertEqual(seen["after"], 0)
        # Other malformed parts: 08P01 from both.
        for first in (b"n,,n=,r", b"n,,n=,r=a b", b"n,,n=,r=abc,x", b"n,,r=abc"):
            with self.subTest(first=first):
                want = self.raw_scram(direct, user, pw, first=first)["error"]
                got = self.raw_scram(px, user, pw, first=first)["error"]
                self.assertEqual((got["S"], got["C"]), (want["S"], want["C"]))
        # An unknown mechanism.
        r = Raw(px.host, px.port, user, self.pg.database)
        try:
            self.assertEqual(r.auth()[0], 10)
            r.sasl_initial(b"n,,n=,r=abc", mech=b"SCRAM-SHA-1")
            code, err = r.auth()
            self.assertEqual(code, "E")
            self.assertEqual(err["C"], "08P01")
            self.assertIn("invalid SASL authentication mechanism", err["M"])
        finally:
            r.close()
        # No initial response: an empty challenge, then client-first.
        r = Raw(px.host, px.port, user, self.pg.database)
        try:
            self.assertEqual(r.auth()[0], 10)
            r.send(b"p", b"SCRAM-SHA-256\0" + struct.pack("!i", -1))
            self.assertEqual(r.auth(), (11, b""))
            bare = "n=,r=xyz123"
            r.sasl_response(("n,," + bare).encode())
            code, server_first = r.auth()
            self.assertEqual(code, 11)
            final, _ = scram_client_final(pw, bare, server_first.decode())
            r.sasl_response(final)
            self.assertEqual(r.auth()[0], 12)
            self.assertEqual(r.auth()[0], 0)
        finally:
            r.close()
        # The proxy is still fine.
        self.assertEqual(self.via_psql(px, user, pw), user)


class TestMd5AndPlain(AuthTestCase):

    def test_an_unknown_database_is_told_only_after_the_password(self):
        # PostgreSQL and PgBouncer ask for the password first: 3D000 went
        # out before, so anyone could try names and learn which exist.
        user, pw = self.app()
        px = self.start("md5", {user: pw}, databases=self.app_databases())
        for password, sqlstate in (("bad", "28P01"), (pw, "3D000")):
            with self.subTest(password=password):
                s = socket.create_connection((px.host, px.port), timeout=10)
                self.addCleanup(s.close)
                with self.assertRaises(hz.PgError) as cm:
                    hz.sync_login(s, user, "no_such_db_here", password)
                self.assertEqual(cm.exception.sqlstate, sqlstate)
        self.assertTrue(px.alive())

    def test_md5_with_plaintext_and_md5_secrets(self):
        user, pw = self.app()
        for secret in (pw, md5_secret(user, pw)):
            with self.subTest(secret=secret[:3]):
                px = self.start("md5", {user: secret}, databases=self.app_databases())
                seen = self.raw_scram(px, user, pw)
                self.assertEqual(seen["request"], 5)           # AuthenticationMD5Password
                self.assert_all_clients_log_in(px, user, pw)
                self.assertIn('password authentication failed for user "%s"' % user,
                              self.psql_error(px, user, "bad"))
                px.stop()

    def test_md5_with_scram_secret_does_scram(self):
        user, pw = self.app()
        px = self.start("md5", {user: self.pg_verifier(user)}, databases=self.app_databases())
        seen = self.raw_scram(px, user, pw)
        self.assertEqual(seen["request"], 10)
        self.assertEqual(seen["after"], 0)
        self.assert_all_clients_log_in(px, user, pw)
        self.assertIn("password authentication failed", self.psql_error(px, user, "bad"))
        # An unknown user is asked what the users of the file are (SCRAM
        # here: md5 would tell it is unknown), and fails alike.
        self.assertEqual(self.raw_scram(px, "ghost", "x")["request"], 10)
        self.assertIn('password authentication failed for user "ghost"',
                      self.psql_error(px, "ghost", "bad"))
        px.stop()
        # With mostly md5 and plaintext secrets it is asked for md5.
        px = self.start("md5", {user: self.pg_verifier(user), "u2": md5_secret("u2", "x"),
                                "u3": "plain"}, databases=self.app_databases())
        self.assertEqual(self.raw_scram(px, "u2", "x")["request"], 5)
        self.assertEqual(self.raw_scram(px, "ghost", "x")["request"], 5)

    def test_reload_gives_pools_their_new_server_password(self):
        """A pool's server password was worked out at its clients' logins:
        after a reload that changed it, the pool's next servers logged in
        with the old one (28P01 for the clients already in) until a new
        client logged in.  Rotated in auth_file, and an entry's user= and
        password= dropped (its clients' servers log in as themselves)."""
        role = "rot_%d" % os.getpid()
        sql = lambda q: self.pg.psql(q, db="postgres", via_socket=True)
        sql("DROP ROLE IF EXISTS %s; CREATE ROLE %s LOGIN PASSWORD 'old_pw'" % (role, role))
        self.addCleanup(sql, "DROP ROLE IF EXISTS %s" % role)
        self.addCleanup(sql, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE usename = '%s'" % role)
        db = self.pg.database
        forced = "forced"
        px = self.start("md5", {role: "old_pw", self.pg.user: self.pg.password},
                        databases={db: self.pg.conn_string(db),
                                   forced: self.pg.conn_string(db, user=role,
                                                               password="old_pw")},
                        pool_mode="transaction")
        rotated = psycopg2.connect(px.dsn(user=role, password="old_pw"))
        unforced = psycopg2.connect(px.dsn(db=forced))
        for c in (rotated, unforced):
            c.autocommit = True
            self.addCleanup(c.close)
        one = lambda c: pt.one(c, "select current_user")
        self.assertEqual(one(rotated), role)
        self.assertEqual(one(unforced), role)
        sql("ALTER ROLE %s PASSWORD 'new_pw'" % role)
        px.auth_users[role] = "new_pw"
        px.databases[forced] = self.pg.conn_string(db)
        mark = px.log().count("event=reload ")
        px.reload()
        pt.wait_until(lambda: px.log().count("event=reload ") > mark, what="the reload")
        px.admin("RECONNECT")          # as server_lifetime would: new servers needed
        self.assertEqual(one(rotated), role)
        self.assertEqual(one(unforced), self.pg.user)
        self.assertNotIn("server_connect_failed", px.log())

    def test_plain_with_every_secret(self):
        user, pw = self.app()
        for secret in (pw, md5_secret(user, pw), self.pg_verifier(user)):
            with self.subTest(secret=secret[:5]):
                px = self.start("plain", {user: secret}, databases=self.app_databases())
                self.assertEqual(self.raw_scram(px, user, pw)["request"], 3)  # cleartext
                self.assertEqual(self.via_psql(px, user, pw), user)
                if psycopg2:
                    self.assertEqual(self.via_psycopg2(px, user, pw), user)
                wrong = self.psql_error(px, user, "bad")
                unknown = self.psql_error(px, "ghost", "bad")
                self.assertEqual(wrong.replace(user, "U"), unknown.replace("ghost", "U"))
                px.stop()

    def test_a_long_cleartext_password(self):
        # PostgreSQL reads a password message of up to 65535 bytes
        # (PG_MAX_AUTH_TOKEN_LENGTH); pgwharf refused any over 8 KB as an
        # "invalid message length", longer than its buffer too.
        user = self.pg.app_user
        for n, ok in ((20000, True), (65000, True), (70000, False)):
            with self.subTest(n=n):
                pw = ("pw%d-" % n + "x" * n)[:n]
                px = self.start("plain", {user: pw}, databases=self.app_databases())
                if ok:
                    self.assertEqual(self.via_psycopg2(px, user, pw), user)
                    with self.assertRaises(psycopg2.OperationalError) as cm:
                        self.via_psycopg2(px, user, pw[:-1] + "y")
                    self.assertIn("password authentication failed", str(cm.exception))
                else:
                    with self.assertRaises(psycopg2.OperationalError) as cm:
                        self.via_psycopg2(px, user, pw)
                    self.assertIn("invalid message length", str(cm.exception))
                px.stop()

    def test_plain_spends_no_long_time_on_a_costly_verifier(self):
        # A cleartext password is checked against a SCRAM verifier on the
        # loop, at the verifier's iteration count: a role that set its own
        # pre-hashed password with 2^31 of them froze pgwharf for minutes
        # per login.  Over 100 000 the verifier is not used.
        user, pw = self.app()

        def verifier(iterations, salt=b"pgwharf-salt-16b"):
            salted = hashlib.pbkdf2_hmac("sha256", pw.encode(), salt, iterations)
            client_key = hmac.new(salted, b"Client Key", "sha256").digest()
            server_key = hmac.new(salted, b"Server Key", "sha256").digest()
            b64 = lambda b: base64.b64encode(b).decode()
            return "SCRAM-SHA-256$%d:%s$%s:%s" % (
                iterations, b64(salt), b64(hashlib.sha256(client_key).digest()), b64(server_key))
        px = self.start("plain", {user: verifier(100001)}, databases=self.app_databases())
        self.assertIn("password authentication failed", self.psql_error(px, user, pw))
        px.wait_for_log(r"event=auth_verifier_refused user=%s iterations=100001 " % user)
        px.stop()
        px = self.start("plain", {user: verifier(100000)}, databases=self.app_databases())
        self.assertEqual(self.via_psql(px, user, pw), user)

    def test_plain_refuses_the_stored_md5_hash_as_password(self):
        # Whoever has the auth_file's md5 secret (or pg_shadow) must not log
        # in with it where the password itself is asked for.
        user, pw = self.app()
        secret = md5_secret(user, pw)
        px = self.start("plain", {user: secret}, databases=self.app_databases())
        self.assertEqual(self.via_psql(px, user, pw), user)
        self.assertIn("password authentication failed", self.psql_error(px, user, secret))

    def test_passwords_that_only_look_like_verifiers_are_passwords(self):
        # PostgreSQL (and PgBouncer) read "md5" + 32 non-hex characters, or
        # a "SCRAM-SHA-256$" that does not parse, as a plaintext password:
        # pgwharf took them for hashes and its user could never log in.
        user, _ = self.app()
        for secret in ("md5" + "z" * 32, "SCRAM-SHA-256$not-a-verifier"):
            for auth_type in ("plain", "md5", "scram-sha-256"):
                with self.subTest(secret=secret, auth_type=auth_type):
                    px = self.start(auth_type, {user: secret}, databases=self.app_databases())
                    self.assertEqual(self.via_psql(px, user, secret), user)
                    px.stop()

    def test_empty_secret_or_password_never_logs_in(self):
        user, pw = self.app()
        for auth_type in ("plain", "md5", "scram-sha-256"):
            with self.subTest(auth_type=auth_type):
                px = self.start(auth_type, {user: ""}, databases=self.app_databases())
                r = Raw(px.host, px.port, user, self.pg.database)
                try:
                    code, rest = r.auth()
                    if code == 3:
                        r.send(b"p", b"\0")
                    elif code == 5:
                        inner = hashlib.md5(user.encode()).hexdigest()   # md5("" + user)
                        outer = hashlib.md5(inner.encode() + rest[:4]).hexdigest()
                        r.send(b"p", b"md5" + outer.encode() + b"\0")
                    else:
                        self.assertEqual(code, 10)
                        bare = "n=,r=abcdefghijklmnop"
                        r.sasl_initial(("n,," + bare).encode())
                        code, rest = r.auth()
                        self.assertEqual(code, 11)
                        final, _ = scram_client_final("", bare, rest.decode())
                        r.sasl_response(final)
                    code, fields = r.auth()
                    self.assertEqual(code, "E")
                    self.assertEqual(fields["C"], "28P01")
                finally:
                    r.close()
                px.stop()
        # and an empty password against a real one, in cleartext
        px = self.start("plain", {user: pw}, databases=self.app_databases())
        r = Raw(px.host, px.port, user, self.pg.database)
        try:
            self.assertEqual(r.auth()[0], 3)
            r.send(b"p", b"\0")
            code, fields = r.auth()
            self.assertEqual((code, fields.get("C")), ("E", "28P01"))
        finally:
            r.close()

    def test_trust_lets_in_a_user_listed_with_an_empty_secret(self):
        # An empty secret is no password, and trust asks for none: the user
        # is listed, so it logs in (it was refused as "no such user").
        user, pw = self.app()
        px = self.start("trust", {user: "", "other": "x"}, databases=self.app_databases())
        r = Raw(px.host, px.port, user, self.pg.database)
        try:
            self.assertEqual(r.auth()[0], 0)     # AuthenticationOk, no password asked
        finally:
            r.close()
        self.assertEqual(self.via_psql(px, user, None), user)
        # Someone not listed still is refused.
        r = Raw(px.host, px.port, "ghost", self.pg.database)
        try:
            code, fields = r.auth()
            self.assertEqual((code, fields["C"]), ("E", "28000"))
            self.assertEqual(fields["M"], 'no such user: "ghost"')
        finally:
            r.close()

    def test_long_plaintext_secret(self):
        # 1100 bytes: longer than any fixed buffer; only the real password
        # may log in (once md5("") stood in for it).
        user = self.pg.app_user
        long_pw = "p" * 1100
        px = self.start("md5", {user: long_pw}, databases=self.app_databases())
        r = Raw(px.host, px.port, user, self.pg.database)
        try:
            code, rest = r.auth()
            self.assertEqual(code, 5)
            outer = hashlib.md5(hashlib.md5(b"").hexdigest().encode() + rest[:4]).hexdigest()
            r.send(b"p", b"md5" + outer.encode() + b"\0")
            code, fields = r.auth()
            self.assertEqual((code, fields.get("C")), ("E", "28P01"))
        finally:
            r.close()
        r = Raw(px.host, px.port, user, self.pg.database)
        try:
            code, rest = r.auth()
            inner = hashlib.md5((long_pw + user).encode()).hexdigest()
            outer = hashlib.md5(inner.encode() + rest[:4]).hexdigest()
            r.send(b"p", b"md5" + outer.encode() + b"\0")
            self.assertEqual(r.auth()[0], 0)     # AuthenticationOk
        finally:
            r.close()


HBA = """\
# pgwharf test rules
local   pgwharf2  all                 reject
local   all       all                 trust
host    pgwharf2  all   127.0.0.1/32  reject
host    pgwharf   all   127.0.0.1/32  scram-sha-256
host    postgres  all   127.0.0.0 255.0.0.0  md5
host    all       all   ::1/128       trust
"""


class TestHba(AuthTestCase):

    def start_hba(self, text=HBA, secret=None, ident=None, env=None, listed=(), **extra):
        """pgwharf with auth_type hba; the auth_file lists app and the names
        of listed (peer and cert log in only users pgwharf has)."""
        user, pw = self.app()
        d = self.scratch()
        self.hba_path = os.path.join(d, "hba.conf")
        with open(self.hba_path, "w") as f:
            f.write(text)
        settings = {"auth_hba_file": self.hba_path}
        if ident is not None:
            self.ident_path = settings["auth_ident_file"] = os.path.join(d, "ident.conf")
            with open(self.ident_path, "w") as f:
                f.write(ident)
        settings.update(extra)
        dbs = self.app_databases()
        dbs["unlisted"] = dbs[self.pg.database]
        users = {name: "unused-%s" % name for name in listed}
        users[user] = secret or pw
        if not env:
            return self.start("hba", users, databases=dbs, **settings)
        settings["auth_type"] = "hba"
        px = self.start_pgwharf(start=False, settings=settings, auth_users=users,
                                databases=dbs)
        px.extra_env.update(env)
        return px.start()

    def scratch(self):
        import tempfile
        d = tempfile.mkdtemp(prefix="pgwharf-hba-")
        self.addCleanup(lambda: __import__("shutil").rmtree(d, ignore_errors=True))
        return d

    def unix_psql(self, px, sql, db, user, password=None, check=True):
        """psql over pgwharf's unix socket (no password unless given)."""
        return pt._run_psql(px.dir, px.port, user, password, db, sql, check=check)

    def test_rules_by_address_socket_and_database(self):
        user, pw = self.app()
        px = self.start_hba()
        # TCP 127.0.0.1 + pgwharf: scram
        self.assertEqual(self.raw_scram(px, user, pw)["request"], 10)
        self.assert_all_clients_log_in(px, user, pw)
        self.assertIn("password authentication failed", self.psql_error(px, user, "bad"))
        # TCP 127.0.0.1 + pgwharf2: rejected by line 4
        err = self.psql_error(px, user, pw, db=self.pg.database2)
        self.assertIn('pg_hba.conf rejects connection for host "127.0.0.1", user "%s", '
                      'database "%s"' % (user, self.pg.database2), err)
        seen = Raw(px.host, px.port, user, self.pg.database2)
        try:
            code, fields = seen.auth()
            self.assertEqual((code, fields["C"]), ("E", "28000"))
        finally:
            seen.close()
        # TCP + postgres: md5 through the address + mask rule
        self.assertEqual(self.raw_scram(px, user, pw, db="postgres")["request"], 5)
        self.assertEqual(self.via_psql(px, user, pw, db="postgres"), user)
        # TCP + a database no rule names: no entry
        err = self.psql_error(px, user, pw, db="unlisted")
        self.assertIn('no pg_hba.conf entry for host "127.0.0.1", user "%s", database '
                      '"unlisted"' % user, err)
        # unix socket: trust, no password asked, but pgwharf2 is rejected first
        self.assertEqual(self.unix_psql(px, "select current_user", self.pg.database, user), user)
        cp = self.unix_psql(px, "select 1", self.pg.database2, user, check=False)
        self.assertNotEqual(cp.returncode, 0)
        self.assertIn('pg_hba.conf rejects connection for host "[local]"', cp.stderr)
        # trust still wants a user the auth_file knows
        cp = self.unix_psql(px, "select 1", self.pg.database, "ghost", check=False)
        self.assertIn('no such user', cp.stderr)

    def test_reload_applies_new_rules(self):
        user, pw = self.app()
        px = self.start_hba()
        self.assertEqual(self.via_psql(px, user, pw), user)
        with open(self.hba_path, "w") as f:
            f.write("host all all 127.0.0.1/32 reject\nlocal all all trust\n")
        reloads = px.log().count("event=reload ")
        px.reload(rewrite=False)
        pt.wait_until(lambda: px.log().count("event=reload ") > reloads, 30,
                      what="the reload")
        cp = px.psql("select 1", user=user, password=pw, check=False)
        self.assertIn("pg_hba.conf rejects connection", cp.stderr)
        # A broken file on reload keeps the rules in force.
        with open(self.hba_path, "w") as f:
            f.write("host all all 127.0.0.1/32 trust\nnonsense here\n")
        px.reload(rewrite=False)
        px.wait_for_log(r"hba\.conf:2: invalid connection type")
        self.assertIn("pg_hba.conf rejects connection", self.psql_error(px, user, pw))

    def test_bad_file_stops_startup(self):
        user, pw = self.app()
        self.expect_clean_exit = False
        with self.assertRaises(pt.PgwharfError) as cm:
            self.start_hba("local all all trust\nhost all all 127.0.0.1/40 md5\n")
        self.assertIn("hba.conf:2: invalid CIDR mask", str(cm.exception))

    def test_unsure_rule_is_not_passed_for_a_weaker_one(self):
        # pgwharf cannot tell whether app is in +admins.  PostgreSQL would
        # ask a member for a password (line 1); pgwharf used to skip the line
        # and trust everyone (line 2).  Now the connection is rejected.
        user, pw = self.app()
        px = self.start_hba("host all +admins 127.0.0.1/32 scram-sha-256\n"
                            "host all all     127.0.0.1/32 trust\n")
        r = Raw(px.host, px.port, user, self.pg.database)
        try:
            code, fields = r.auth()
            self.assertEqual(code, "E", "logged in without a password (AuthenticationOk)")
            self.assertEqual(fields["C"], "28000")
            self.assertIn('pg_hba.conf rejects connection for host "127.0.0.1", user "%s"' % user,
                          fields["M"])
        finally:
            r.close()
        px.wait_for_log(r"event=disconnect .*sqlstate=28000")
        px.stop()
        # A later rule that asks for as much still decides.
        px = self.start_hba("host all +admins 127.0.0.1/32 md5\n"
                            "host all all     127.0.0.1/32 scram-sha-256\n")
        self.assertEqual(self.raw_scram(px, user, pw)["request"], 10)
        self.assertEqual(self.via_psql(px, user, pw), user)

    def test_peer_over_the_unix_socket(self):
        """peer: the operating system user of the process at the other end
        of the unix socket (SO_PEERCRED) must be the user name."""
        app, pw = self.app()
        me = pwd.getpwuid(os.getuid()).pw_name
        px = self.start_hba("local all all peer\nhost all all 127.0.0.1/32 scram-sha-256\n",
                            listed=(me,))
        # Logged in as the OS user, no password; the entry logs in to
        # PostgreSQL as app.
        self.assertEqual(self.unix_psql(px, "select current_user", self.pg.database, me), app)
        cp = self.unix_psql(px, "select 1", self.pg.database, app, password=pw, check=False)
        self.assertNotEqual(cp.returncode, 0, "peer let %s in as %s" % (me, app))
        self.assertIn('Peer authentication failed for user "%s"' % app, cp.stderr)
        px.wait_for_log(r'event=auth_failed .*user=%s .*hba_line=1 method=peer identity=%s'
                        % (app, me))
        # TCP still goes by line 2.
        self.assertEqual(self.raw_scram(px, app, pw)["request"], 10)

    def test_peer_logs_in_only_a_user_pgwharf_has(self):
        # As trust, and as PgBouncer ("unix socket login rejected"): the
        # operating system user vouches for the name, and the auth_file
        # must still list it.  pgwharf let an unlisted name in, and with a
        # [databases] entry's user= that was any local account logging in
        # to PostgreSQL as the entry's user.
        app, pw = self.app()
        me = pwd.getpwuid(os.getuid()).pw_name
        px = self.start_hba("local all all peer\n")
        cp = self.unix_psql(px, "select current_user", self.pg.database, me, check=False)
        self.assertNotEqual(cp.returncode, 0, "peer let unlisted %s in: %s" % (me, cp.stdout))
        self.assertIn('no such user: "%s"' % me, cp.stderr)
        px.wait_for_log(r"event=disconnect client=unix .*sqlstate=28000")

    def test_peer_with_a_user_name_map(self):
        app, pw = self.app()
        me = pwd.getpwuid(os.getuid()).pw_name
        px = self.start_hba("local all all peer map=local\n", listed=("reports",),
                            ident="# MAPNAME SYSTEM-USERNAME PG-USERNAME\n"
                                  "local  %s  %s\n"
                                  "local  %s  reports\n" % (me, app, me))
        self.assertEqual(self.unix_psql(px, "select current_user", self.pg.database, app), app)
        self.assertEqual(self.unix_psql(px, "select 1", self.pg.database, "reports"), "1")
        # A map replaces "the same name": me is not mapped to me.
        for user in (me, "someone"):
            cp = self.unix_psql(px, "select 1", self.pg.database, user, check=False)
            self.assertNotEqual(cp.returncode, 0, user)
            self.assertIn('Peer authentication failed for user "%s"' % user, cp.stderr)
        # A reload reads the map again; a broken one keeps the old.
        with open(self.ident_path, "w") as f:
            f.write("local  %s  reports\n" % me)
        reloads = px.log().count("event=reload ")
        px.reload(rewrite=False)
        pt.wait_until(lambda: px.log().count("event=reload ") > reloads, 30,
                      what="the reload")
        cp = self.unix_psql(px, "select 1", self.pg.database, app, check=False)
        self.assertIn('Peer authentication failed for user "%s"' % app, cp.stderr)
        with open(self.ident_path, "w") as f:
            f.write("local  %s  %s\nlocal %s\n" % (me, app, me))
        px.reload(rewrite=False)
        px.wait_for_log(r"ident\.conf:2: missing entry at end of line")
        px.wait_for_log(r"cannot load auth_hba_file or auth_ident_file, keeping the old config")
        self.assertEqual(self.unix_psql(px, "select 1", self.pg.database, "reports"), "1")
        cp = self.unix_psql(px, "select 1", self.pg.database, app, check=False)
        self.assertIn('Peer authentication failed for user "%s"' % app, cp.stderr)

    # ---- peer: the user database (getpwuid_r, NSS) is asked off the loop ----
    # tests/nss_gate.c stands in for a slow NSS backend: getpwuid_r waits
    # at a FIFO until the test lets it go.

    def start_gated(self, **settings):
        """pgwharf with peer on the unix socket, scram over TCP, and every
        getpwuid_r held at a gate: (px, the gate's FIFO)."""
        fifo = os.path.join(self.scratch(), "gate")
        os.mkfifo(fifo)
        me = pwd.getpwuid(os.getuid()).pw_name
        px = self.start_hba("local all all peer\nhost all all 127.0.0.1/32 scram-sha-256\n",
                            env=pt.nss_gate_env(PGW_GETPW_GATE=fifo), listed=(me,), **settings)
        return px, fifo

    at_gate = staticmethod(pt.nss_gate_wait)
    release = staticmethod(pt.nss_gate_release)

    def unix_startup(self, px, user):
        """A raw StartupMessage over pgwharf's unix socket."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(30)
        s.connect(os.path.join(px.dir, ".s.PGSQL.%d" % px.port))
        params = b"user\0" + user.encode() + b"\0database\0" + self.pg.database.encode() + b"\0\0"
        s.sendall(struct.pack("!ii", 8 + len(params), 196608) + params)
        return s

    def test_peer_lookup_does_not_hold_up_the_others(self):
        # A peer login waits for the user database; meanwhile other clients
        # log in and run queries (it used to wait on the loop: nobody could).
        app, pw = self.app()
        me = pwd.getpwuid(os.getuid()).pw_name
        px, fifo = self.start_gated()
        login = pt.Background(
            lambda: self.unix_psql(px, "select current_user", self.pg.database, me))
        gate = self.at_gate(fifo)
        try:
            for i in range(3):
                self.assertEqual(self.via_psql(px, app, pw), app)
            self.assertTrue(login.is_alive(), "the peer login did not wait for its lookup")
        finally:
            self.release(fifo, gate)
        login.join(30)
        self.assertIsNone(login.error)
        self.assertEqual(login.result, app)

    def test_peer_lookup_outlived_by_its_client(self):
        # One client leaves and one runs into client_login_timeout while
        # their lookups wait: the answers that come later find no session
        # (nothing to crash on, nothing left behind: the ASan build checks
        # at exit), and peer logins go on working.
        me = pwd.getpwuid(os.getuid()).pw_name
        app, pw = self.app()
        px, fifo = self.start_gated(client_login_timeout="2s")
        gone = self.unix_startup(px, me)
        gate = self.at_gate(fifo)
        try:
            gone.close()
            px.wait_for_log(r"event=disconnect client=unix .*state=auth")
            late = self.unix_startup(px, me)
            try:
                hdr = late.recv(5)
                self.assertEqual(hdr[:1], b"E", hdr)
                body = b""
                while len(body) < struct.unpack("!i", hdr[1:])[0] - 4:
                    body += late.recv(4096)
                self.assertIn(b"client_login_timeout", body)
                self.assertIn(b"C08P01", body)
            finally:
                late.close()
        finally:
            self.release(fifo, gate)
        self.assertEqual(self.unix_psql(px, "select current_user", self.pg.database, me), app)
        self.assertEqual(px.stop(), 0, px.log_tail())

    def test_a_peer_login_whose_client_left_stays_closed(self):
        # The client leaves right after its StartupMessage: the lookup's
        # answer came in the loop round that closed the session, before
        # the session was freed, and logged it in anyway; its welcome's
        # write failed and closed it a second time, so the count of
        # clients (max_client_conn's) went down twice.
        me = pwd.getpwuid(os.getuid()).pw_name
        px = self.start_hba("local all all peer\n", admin_users=me, metrics_port="auto",
                            listed=(me,))

        def startup():
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(30)
            s.connect(os.path.join(px.dir, ".s.PGSQL.%d" % px.port))
            params = b"user\0" + me.encode() + b"\0database\0pgbouncer\0\0"
            s.sendall(struct.pack("!ii", 8 + len(params), 196608) + params)
            return s

        for _ in range(20):
            startup().close()
        pt.wait_until(lambda: px.log().count("event=disconnect client=unix ") >= 20, 30,
                      what="the 20 clients gone")
        held = startup()
        self.assertEqual(hz.read_until_ready(held)[-1][0], b"Z")
        self.assertEqual(px.metric("pgwharf_clients_total"), 1)
        held.close()

    def test_peer_lookups_running_at_once_are_bounded(self):
        # NSS hangs and more peer logins come than lookups may run (8): the
        # rest wait their turn on no thread of their own (each lookup had
        # one, so a hung NSS grew pgwharf's threads with every login); a
        # queued login whose client leaves is dropped from the queue; once
        # NSS answers, every waiting login is served, in turn.
        me = pwd.getpwuid(os.getuid()).pw_name
        app, _ = self.app()
        px, fifo = self.start_gated()

        def threads():
            with open("/proc/%d/status" % px.proc.pid) as f:
                return int(re.search(r"^Threads:\s+(\d+)", f.read(), re.M).group(1))

        base = threads()

        def in_lookup():
            # logins with a thread of their own, and those queued
            return threads() - base + px.log().count("event=peer_lookup_queued ")

        logins, leaver, gate = [], None, None
        try:
            for i in range(12):
                if i == 10:
                    leaver = self.unix_startup(px, me)
                else:
                    logins.append(pt.Background(lambda: self.unix_psql(
                        px, "select current_user", self.pg.database, me)))
                pt.wait_until(lambda: in_lookup() >= i + 1, timeout=30,
                              what="login %d at its lookup" % (i + 1))
                if gate is None:
                    gate = self.at_gate(fifo)
            self.assertLessEqual(threads() - base, 8)
            self.assertEqual(px.log().count("event=peer_lookup_queued "), 4, px.log_tail())
            leaver.close()
            px.wait_for_log(r"event=disconnect client=unix .*state=auth")
            self.assertLessEqual(threads() - base, 8)
        finally:
            if gate is not None:
                self.release(fifo, gate)
            if leaver is not None:
                leaver.close()
        for login in logins:
            login.join(60)
            self.assertIsNone(login.error)
            self.assertEqual(login.result, app)
        self.assertEqual(px.stop(), 0, px.log_tail())

    def test_shutdown_with_a_peer_lookup_still_waiting(self):
        # The user database never answers: pgwharf still shuts down at once
        # and cleanly (the lookup's thread is not waited for).  SIGINT: the
        # clients without a server go now (SIGTERM would wait for them).
        me = pwd.getpwuid(os.getuid()).pw_name
        px, fifo = self.start_gated()
        waiting = self.unix_startup(px, me)
        gate = self.at_gate(fifo)
        try:
            self.assertEqual(px.stop(sig=signal.SIGINT, timeout=20), 0, px.log_tail())
            self.assertFalse(px.killed)
        finally:
            waiting.close()
            self.release(fifo, gate)

    def test_bad_ident_file_stops_startup(self):
        self.expect_clean_exit = False
        with self.assertRaises(pt.PgwharfError) as cm:
            self.start_hba("local all all peer map=m\n", ident="m root\n")
        self.assertIn("ident.conf:1: missing entry at end of line", str(cm.exception))

    def test_verifier_secret_with_hba_scram(self):
        user, pw = self.app()
        px = self.start_hba(secret=self.pg_verifier(user))
        self.assert_all_clients_log_in(px, user, pw)
        # md5 rule + SCRAM secret: SCRAM is used instead
        self.assertEqual(self.raw_scram(px, user, pw, db="postgres")["request"], 10)
        self.assertEqual(self.via_psql(px, user, pw, db="postgres"), user)


if __name__ == "__main__":
    unittest.main()
