"""TLS: clients to pgwharf and pgwharf to PostgreSQL.

A throwaway CA, a server certificate (CN 127.0.0.1, SAN IP:127.0.0.1 and
DNS:localhost) and client certificates are made with the openssl CLI.
Clients: psql with sslmode=verify-full, psycopg2, pgbench, raw sockets for
the handshake edge cases.  Server side: the shared cluster gets ssl=on for
the test (ALTER SYSTEM + pg_reload_conf(), undone in tearDown) and pgwharf
must show up in pg_stat_ssl.
"""

import fcntl
import os
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import tempfile
import termios
import threading
import time
import unittest

import psycopg2

import pgwharf_test as pt
import pgw_hardening as hz

SSL_REQUEST = struct.pack("!ii", 8, 80877103)


def openssl(*args, cwd):
    cp = subprocess.run(["openssl"] + list(args), cwd=cwd, capture_output=True, text=True,
                        timeout=60)
    if cp.returncode != 0:
        raise pt.PgwharfError("openssl %s failed: %s" % (" ".join(args), cp.stderr))


def make_ca(d, name):
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", name + ".key", "-out", name + ".crt", "-days", "3",
            "-subj", "/CN=%s" % name,
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)


def make_cert(d, name, cn, ca, ext):
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", name + ".key", "-out", name + ".csr", "-subj", "/CN=%s" % cn, cwd=d)
    with open(os.path.join(d, name + ".ext"), "w") as f:
        f.write("basicConstraints=CA:FALSE\n" + ext + "\n")
    openssl("x509", "-req", "-in", name + ".csr", "-CA", ca + ".crt", "-CAkey", ca + ".key",
            "-CAcreateserial", "-out", name + ".crt", "-days", "3",
            "-extfile", name + ".ext", cwd=d)
    os.chmod(os.path.join(d, name + ".key"), 0o600)


class Certs:
    """ca.crt; server.{crt,key}; client.{crt,key} (CN pgwharf); other.{crt,key}
    (CN someone); stranger.{crt,key} (CN pgwharf, from another CA);
    server-pass.key, client-pass.key (those keys under a passphrase);
    client-0644.key (client.key that others may read)."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="pgwharf-tls-")
        os.chmod(self.dir, 0o755)
        make_ca(self.dir, "ca")
        make_ca(self.dir, "otherca")
        make_cert(self.dir, "server", "127.0.0.1", "ca",
                  "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth")
        make_cert(self.dir, "client", "pgwharf", "ca", "extendedKeyUsage=clientAuth")
        make_cert(self.dir, "other", "someone", "ca", "extendedKeyUsage=clientAuth")
        make_cert(self.dir, "stranger", "pgwharf", "otherca", "extendedKeyUsage=clientAuth")
        for name in ("server", "client"):
            openssl("pkey", "-in", name + ".key", "-aes256", "-passout", "pass:secret",
                    "-out", name + "-pass.key", cwd=self.dir)
        shutil.copyfile(self.path("client.key"), self.path("client-0644.key"))
        os.chmod(self.path("client-0644.key"), 0o644)

    def path(self, name):
        return os.path.join(self.dir, name)

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)


def run_psql(conninfo, sql, password=None, timeout=60, env_extra=None):
    e = dict(os.environ)
    e.pop("PGSERVICE", None)
    e.pop("PGSSLMODE", None)
    e["PGCONNECT_TIMEOUT"] = "10"
    if password is not None:
        e["PGPASSWORD"] = password
    if env_extra:
        e.update(env_extra)
    return subprocess.run([pt.pg_bin("psql"), "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                           "-d", conninfo], input=sql, capture_output=True, text=True,
                          timeout=timeout, env=e)


class TlsTestCase(pt.PgwharfTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.certs = Certs()

    @classmethod
    def tearDownClass(cls):
        cls.certs.cleanup()
        super().tearDownClass()

    def tls_settings(self, mode="require", **more):
        s = {"client_tls_sslmode": mode,
             "client_tls_cert_file": self.certs.path("server.crt"),
             "client_tls_key_file": self.certs.path("server.key")}
        s.update(more)
        return s

    def conninfo(self, px, user=None, db=None, host="localhost", **kw):
        parts = {"host": host, "port": px.port, "dbname": db or self.pg.database,
                 "user": user or self.pg.user}
        parts.update(kw)
        return " ".join("%s=%s" % (k, v) for k, v in parts.items())

    def psql(self, px, sql, user=None, password=None, **kw):
        user = user or self.pg.user
        if password is None:
            password = self.pg._default_password(user)
        return run_psql(self.conninfo(px, user=user, **kw), sql, password=password)

    def connect(self, px, user=None, **kw):
        user = user or self.pg.user
        kw.setdefault("password", self.pg._default_password(user))
        kw.setdefault("sslmode", "require")
        conn = psycopg2.connect(host="127.0.0.1", port=px.port, dbname=self.pg.database,
                                user=user, connect_timeout=10, **kw)
        conn.autocommit = True
        return conn


class RawClient:
    """A bare protocol-3 client (trust auth), to read replies slowly."""

    def __init__(self, port, user, db, rcvbuf=4096, tls=False):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(15)
        self.sock.connect(("127.0.0.1", port))
        if tls:
            self.sock.sendall(SSL_REQUEST)
            if self.sock.recv(1) != b"S":
                raise pt.PgwharfError("TLS refused")
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            self.sock = ctx.wrap_socket(self.sock)
        self.buf = b""
        params = b"user\0" + user.encode() + b"\0database\0" + db.encode() + b"\0\0"
        self.sock.sendall(struct.pack("!ii", 8 + len(params), 196608) + params)
        self.until_ready()

    def read_msg(self):
        while len(self.buf) < 5 or len(self.buf) < 1 + struct.unpack("!i", self.buf[1:5])[0]:
            data = self.sock.recv(8192)
            if not data:
                raise pt.PgwharfError("connection closed; have %r" % self.buf[:100])
            self.buf += data
        n = 1 + struct.unpack("!i", self.buf[1:5])[0]
        msg, self.buf = self.buf[:n], self.buf[n:]
        if msg[:1] == b"E":
            raise pt.PgwharfError("error: %r" % msg)
        return msg[:1], msg[5:]

    def until_ready(self):
        size = 0
        while True:
            t, body = self.read_msg()
            size += len(body)
            if t == b"Z":
                return size

    def send_query(self, sql):
        """sql, its reply left unread (see until_ready)."""
        self.sock.sendall(hz.query_msg(sql))

    def close(self):
        self.sock.close()


one = pt.one


class TestClientTls(TlsTestCase):
    def test_psql_verify_full_and_conninfo(self):
        px = self.start_pgwharf(settings=self.tls_settings("require",
                                                           pool_mode="transaction"))
        cp = self.psql(px, "select 40 + 2;\n\\conninfo\n", sslmode="verify-full",
                       sslrootcert=self.certs.path("ca.crt"))
        self.assertEqual(cp.returncode, 0, cp.stderr + px.log_tail())
        self.assertIn("42", cp.stdout)
        self.assertRegex(cp.stdout, r"SSL connection \(protocol: TLSv1\.[23]")
        # verify-full checks the name: 127.0.0.1 is in the SAN too.
        cp = self.psql(px, "select 1", host="127.0.0.1", sslmode="verify-full",
                       sslrootcert=self.certs.path("ca.crt"))
        self.assertEqual(cp.returncode, 0, cp.stderr)
        conn = self.connect(px, sslmode="verify-full", sslrootcert=self.certs.path("ca.crt"))
        try:
            self.assertTrue(conn.info.ssl_in_use)
            self.assertIn(conn.info.ssl_attribute("protocol"), ("TLSv1.2", "TLSv1.3"))
            self.assertEqual(one(conn, "select 'over tls'"), "over tls")
        finally:
            conn.close()

    def test_prefer_offers_tls_and_allows_plaintext(self):
        px = self.start_pgwharf(settings=self.tls_settings("prefer"))
        conn = self.connect(px, sslmode="prefer")
        self.assertTrue(conn.info.ssl_in_use)
        conn.close()
        conn = self.connect(px, sslmode="disable")
        self.assertFalse(conn.info.ssl_in_use)
        self.assertEqual(one(conn, "select 1"), 1)
        conn.close()

    def test_disable_answers_n(self):
        px = self.start_pgwharf(settings={"client_tls_sslmode": "disable"})
        with socket.create_connection(("127.0.0.1", px.port), timeout=5) as s:
            s.sendall(SSL_REQUEST)
            self.assertEqual(s.recv(1), b"N")
        cp = self.psql(px, "select 1", sslmode="require")
        self.assertNotEqual(cp.returncode, 0)
        self.assertIn("does not support SSL", cp.stderr)

    def test_a_bind_over_the_limit_gets_its_fatal_over_tls_too(self):
        # The FATAL 54000 of a Bind over 64 MiB, its socket lingering
        # (linger.c): a close_notify sent at the close was read by libpq,
        # still writing the Bind, as the end of the stream ("SSL connection
        # has been closed unexpectedly"), the FATAL lost.
        import psycopg
        px = self.start_pgwharf(settings=self.tls_settings(
            "require", pool_mode="transaction", max_prepared_statements=100))
        conn = psycopg.connect(host="127.0.0.1", port=px.port, dbname=self.pg.database,
                               user=self.pg.user, password=self.pg.password,
                               sslmode="require", autocommit=True, connect_timeout=10)
        self.addCleanup(conn.close)
        with self.assertRaisesRegex(psycopg.OperationalError,
                                    "message of type B too large"):
            conn.execute("select length(%s::text)", ("z" * (70 * 2**20),))
        px.wait_for_log(r"event=disconnect .*sqlstate=54000")
        self.assertEqual(self.psql(px, "select 'usable'", sslmode="require").stdout.strip(), "usable")

    def test_big_results_and_copy_over_tls(self):
        px = self.start_pgwharf(settings=self.tls_settings("require", pool_mode="transaction"))
        conn = self.connect(px)
        try:
            with conn.cursor() as cur:
                cur.execute("select i, repeat(md5(i::text), 3000) from generate_series(1, 300) i")
                rows = cur.fetchall()
            self.assertEqual(len(rows), 300)
            self.assertTrue(all(len(r[1]) == 96000 for r in rows))
            execute = conn.cursor().execute
            execute("drop table if exists tls_copy")
            execute("create table tls_copy(a int, b text)")
            import io
            data = "".join("%d\t%s\n" % (i, "y" * 500) for i in range(20000))
            with conn.cursor() as cur:
                cur.copy_expert("copy tls_copy from stdin", io.StringIO(data))
            self.assertEqual(one(conn, "select count(*) from tls_copy"), 20000)
            out = io.StringIO()
            with conn.cursor() as cur:
                cur.copy_expert("copy tls_copy to stdout", out)
            self.assertEqual(len(out.getvalue()), len(data))
            execute("drop table tls_copy")
        finally:
            conn.close()

    def test_pgbench_over_tls(self):
        px = self.start_pgwharf(settings=self.tls_settings("require", pool_mode="transaction",
                                                           default_pool_size=4))
        script = os.path.join(px.dir, "bench.sql")
        with open(script, "w") as f:
            f.write("\\set a random(1, 100000)\nselect :a, repeat('z', :a % 5000);\n"
                    "begin;\nselect :a + 1;\nend;\n")
        e = dict(os.environ)
        e.update(PGPASSWORD=self.pg.password, PGSSLMODE="require")
        for mode in ("simple", "extended"):
            cp = subprocess.run([pt.pg_bin("pgbench"), "-h", "127.0.0.1", "-p", str(px.port),
                                 "-U", self.pg.user, "-n", "-c", "12", "-j", "2", "-t", "50",
                                 "-M", mode, "-f", script, self.pg.database],
                                capture_output=True, text=True, timeout=120, env=e)
            self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr + px.log_tail())
            m = re.search(r"number of transactions actually processed: (\d+)", cp.stdout)
            self.assertTrue(m and int(m.group(1)) == 12 * 50, cp.stdout)
            m = re.search(r"number of failed transactions: (\d+)", cp.stdout)
            if m:
                self.assertEqual(int(m.group(1)), 0, cp.stdout)
        self.assertNotIn("tls_error", px.log())

    def test_require_refuses_plaintext(self):
        px = self.start_pgwharf(settings=self.tls_settings("require"))
        cp = self.psql(px, "select 1", sslmode="disable")
        self.assertNotEqual(cp.returncode, 0)
        self.assertIn("SSL required", cp.stderr)
        # TLS is fine, and so is the unix socket (libpq never asks for TLS there).
        self.assertEqual(self.psql(px, "select 1", sslmode="require").returncode, 0)
        cp = run_psql("host=%s port=%d dbname=%s user=%s" % (px.dir, px.port, self.pg.database,
                                                            self.pg.user),
                      "select 'unix'", password=self.pg.password)
        self.assertEqual(cp.returncode, 0, cp.stderr)
        self.assertEqual(cp.stdout.strip(), "unix")

    def test_garbage_in_handshake_closes_only_that_client(self):
        px = self.start_pgwharf(settings=self.tls_settings("require", pool_mode="session"))
        keep = self.connect(px)
        try:
            for garbage in (b"GARBAGE!" + os.urandom(600),
                            b"\x16\x03\x01\x00\x05" + os.urandom(5),   # a short bogus record
                            b"\x00" * 64):
                with socket.create_connection(("127.0.0.1", px.port), timeout=10) as s:
                    s.sendall(SSL_REQUEST)
                    self.assertEqual(s.recv(1), b"S")
                    s.sendall(garbage)
                    # s's 10 s timeout guards a connection left open.
                    while True:       # maybe an alert, then EOF
                        try:
                            data = s.recv(4096)
                        except ConnectionResetError:
                            break
                        if not data:
                            break
            # Plaintext right behind the SSLRequest is refused too.
            with socket.create_connection(("127.0.0.1", px.port), timeout=10) as s:
                s.sendall(SSL_REQUEST + struct.pack("!ii", 8, 196608))
                data = s.recv(4096)
                self.assertIn(b"received unencrypted data after SSL request", data)
            # A client that vanishes half-way through the handshake.
            with socket.create_connection(("127.0.0.1", px.port), timeout=10) as s:
                s.sendall(SSL_REQUEST)
                self.assertEqual(s.recv(1), b"S")
                s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
            self.assertTrue(px.alive())
            self.assertEqual(one(keep, "select 'still here'"), "still here")
            conn = self.connect(px)
            self.assertEqual(one(conn, "select 2"), 2)
            conn.close()
            px.wait_for_log(r"TLS handshake failed")
        finally:
            keep.close()

    def test_a_client_leaving_mid_handshake_is_logged_as_such(self):
        # Its EOF came back as SSL_ERROR_ZERO_RETURN (OpenSSL with
        # SSL_OP_IGNORE_UNEXPECTED_EOF) and was logged "unknown TLS error".
        px = self.start_pgwharf(settings=self.tls_settings("require"))
        for sent in (b"", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"):
            with socket.create_connection(("127.0.0.1", px.port), timeout=10) as s:
                s.sendall(SSL_REQUEST)
                self.assertEqual(s.recv(1), b"S")
                s.sendall(sent)
        pt.wait_until(lambda: px.log().count("TLS handshake failed") >= 2,
                      what="both handshakes ended")
        failed = [l for l in px.log().splitlines() if "TLS handshake failed" in l]
        for line in failed:
            self.assertIn("client closed the connection", line)

    def test_many_concurrent_tls_clients(self):
        px = self.start_pgwharf(settings=self.tls_settings("require", pool_mode="transaction",
                                                           default_pool_size=3))
        errors = []

        def worker(n):
            try:
                conn = self.connect(px)
                for i in range(30):
                    if one(conn, "select %s::int + 1", (i,)) != i + 1:
                        errors.append("bad answer")
                conn.close()
            except Exception as e:  # noqa: BLE001 - collected and reported below
                errors.append(repr(e))

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertEqual(errors, [])

    def test_decrypted_bytes_left_in_openssl_are_read(self):
        """A TLS record only partly read because the client buffer (32 KiB)
        filled up: its rest sits decrypted inside OpenSSL, the socket never
        becomes readable for it, and it must still be relayed once the
        buffer drains."""
        px = self.start_pgwharf(settings=self.tls_settings(
            "require", pool_mode="transaction", default_pool_size=1, auth_type="trust"))
        holder = psycopg2.connect(host="127.0.0.1", port=px.port, dbname=self.pg.database,
                                  user=self.pg.user, sslmode="require")
        c = None
        try:
            c = RawClient(px.port, self.pg.user, self.pg.database, tls=True)
            one(holder, "select 1")          # holds the only server (open transaction)
            # 48 queries of 891 bytes, sent as three TLS records of 10000,
            # 16384 and 16384 bytes: the third is read 6384 bytes in while
            # the session waits for the server, and nothing follows it.
            q = b"select '" + b"x" * 876 + b"'\0"
            msg = b"Q" + struct.pack("!i", 4 + len(q)) + q
            self.assertEqual(len(msg), 891)
            data = msg * 48
            c.sock.sendall(data[:10000])
            c.sock.sendall(data[10000:26384])
            c.sock.sendall(data[26384:])
            # pgwharf has read all three records off the socket (its receive
            # queue is empty) while the session waits for the server.
            cport = c.sock.getsockname()[1]
            pt.wait_until(lambda: hz.unread_on_port(px.pid, px.port).get(cport) == 0 and
                          px.show("POOLS", database=self.pg.database,
                                  user=self.pg.user)[0]["cl_waiting"] == "1",
                          20, what="the records read, the session waiting")
            holder.commit()
            for i in range(48):
                c.until_ready()
        finally:
            if c:
                c.close()
            holder.close()

    def test_a_cancel_read_in_the_poll_of_its_two_record_query_finds_it(self):
        """A query of two TLS records, then its cancel on a new connection,
        all there when pgwharf next polls: the listener runs first (libev:
        last ready first) and reads the client's pending bytes before the
        cancel -- one SSL_read, one record: the query's second record was
        left in the socket, the cancel found no query in progress and was
        dropped, the query ran to its end.  Every record there (and what
        OpenSSL holds decrypted) is read first, as without TLS."""
        px = self.start_pgwharf(settings=self.tls_settings(
            "require", pool_mode="transaction", default_pool_size=1, auth_type="trust"))
        raw = socket.create_connection(("127.0.0.1", px.port), timeout=60)
        self.addCleanup(raw.close)
        raw.sendall(SSL_REQUEST)
        self.assertEqual(raw.recv(1), b"S")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        s = ctx.wrap_socket(raw)
        self.addCleanup(s.close)
        keys = []
        hz.sync_login(s, self.pg.user, self.pg.database, key_data=keys)
        self.assertEqual(hz.simple_query(s, "select 1"), ([[b"1"]], []))   # a server, idle
        links = list(hz.unread_on_port(px.pid, self.pg.port, peer=True))
        self.assertEqual(len(links), 1, links)
        # 20 kB: records of 16384 bytes and the rest.
        msg = hz.query_msg("select pg_sleep(60) /* %s */" % ("x" * 20000))
        c = socket.socket()
        self.addCleanup(c.close)
        self.addCleanup(self.pg.terminate_backends)     # (the query, if it was not canceled)
        self.pg.pause()
        self.addCleanup(self.pg.resume)
        px.send_signal(signal.SIGSTOP)
        self.addCleanup(px.send_signal, signal.SIGCONT)
        pt.wait_stopped([px.pid])
        s.sendall(msg)
        cport = s.getsockname()[1]
        pt.wait_until(lambda: hz.unread_on_port(px.pid, px.port).get(cport, 0) > len(msg),
                      20, what="the query's records in pgwharf's socket")
        c.connect(("127.0.0.1", px.port))
        c.sendall(struct.pack("!IIII", 16, 80877102, keys[0][0], keys[0][1]))
        px.send_signal(signal.SIGCONT)
        px.wait_for_log("event=cancel_(forwarded|ignored)")
        self.assertNotIn("event=cancel_ignored", px.log())
        pt.wait_until(lambda: hz.tcp_queues(self.pg.port, links[0]) == (0, 0),
                      20, what="the backend reading the query")
        self.pg.resume()
        self.assertEqual(hz.read_until_closed(c, 30), (b"", True))
        got = hz.read_until_ready(s)
        self.assertEqual([t for t, _ in got], [b"T", b"E", b"Z"], got)
        self.assertEqual(hz.parse_fields(got[1][1])["C"], "57014")
        self.assertEqual(hz.simple_query(s, "select 'usable'"), ([[b"usable"]], []))

    def test_protocols_and_ciphers(self):
        px = self.start_pgwharf(settings=self.tls_settings(
            "require", client_tls_protocols="tlsv1.2",
            client_tls_ciphers="ECDHE-ECDSA-AES256-GCM-SHA384"))
        conn = self.connect(px)
        self.assertEqual(conn.info.ssl_attribute("protocol"), "TLSv1.2")
        self.assertEqual(conn.info.ssl_attribute("cipher"), "ECDHE-ECDSA-AES256-GCM-SHA384")
        conn.close()
        px.stop()
        px2 = self.start_pgwharf(settings=self.tls_settings("require",
                                                            client_tls_protocols="tlsv1.2",
                                                            client_tls_ciphers="fast"))
        conn = self.connect(px2)
        self.assertEqual(conn.info.ssl_attribute("protocol"), "TLSv1.2")
        self.assertIn("AES128-GCM", conn.info.ssl_attribute("cipher"))
        conn.close()
        # A client that only speaks TLS 1.2 against tlsv1.3 is refused.
        px3 = self.start_pgwharf(settings=self.tls_settings("require",
                                                            client_tls_protocols="tlsv1.3"))
        cp = self.psql(px3, "select 1", sslmode="require", ssl_max_protocol_version="TLSv1.2")
        self.assertNotEqual(cp.returncode, 0)
        self.assertEqual(self.psql(px3, "select 1", sslmode="require").returncode, 0)

    def test_tls13_ciphers_and_ecdh_curve(self):
        px = self.start_pgwharf(settings=self.tls_settings(
            "require", client_tls13_ciphers="TLS_CHACHA20_POLY1305_SHA256",
            client_tls_ecdhcurve="secp384r1"))
        conn = self.connect(px)
        self.assertEqual(conn.info.ssl_attribute("protocol"), "TLSv1.3")
        self.assertEqual(conn.info.ssl_attribute("cipher"), "TLS_CHACHA20_POLY1305_SHA256")
        conn.close()
        # the group the key exchange used, as openssl s_client reports it
        cp = subprocess.run(["openssl", "s_client", "-starttls", "postgres", "-connect",
                             "127.0.0.1:%d" % px.port, "-brief"], input="", text=True,
                            capture_output=True, timeout=30)
        self.assertIn("secp384r1", cp.stdout + cp.stderr)
        # "none": no elliptic curve at all, a finite-field group instead
        px2 = self.start_pgwharf(settings=self.tls_settings("require",
                                                            client_tls_ecdhcurve="none"))
        cp = subprocess.run(["openssl", "s_client", "-starttls", "postgres", "-connect",
                             "127.0.0.1:%d" % px2.port, "-brief"], input="", text=True,
                            capture_output=True, timeout=30)
        self.assertIn("Server Temp Key: DH, ", cp.stdout + cp.stderr)   # not ECDH
        self.assertEqual(self.psql(px2, "select 1", sslmode="require").returncode, 0)

    def test_bad_settings_stop_startup(self):
        cases = [
            ({"client_tls_protocols": "tlsv9"}, "client_tls_protocols"),
            ({"client_tls_ciphers": "NO-SUCH-CIPHER"}, "client_tls_ciphers"),
            ({"client_tls13_ciphers": "TLS_NO_SUCH"}, "client_tls13_ciphers"),
            ({"client_tls_ecdhcurve": "no-such-curve"}, "client_tls_ecdhcurve"),
            ({"client_tls_key_file": "/nonexistent/key.pem"}, "client_tls_key_file"),
            ({"client_tls_key_file": self.certs.path("client.key")}, "does not match"),
            ({"client_tls_sslmode": "verify-ca"}, "client_tls_ca_file"),
            # OpenSSL asked for the passphrase on the terminal (or stdin),
            # holding the loop at a reload until a line came
            ({"client_tls_key_file": self.certs.path("server-pass.key")},
             "server-pass.key is protected by a passphrase"),
            # as PgBouncer: only none, auto, legacy (bogus was auto)
            ({"client_tls_dheparams": "bogus"},
             'client_tls_dheparams: invalid value "bogus"'),
        ]
        for more, needle in cases:
            px = self.start_pgwharf(start=False, settings=self.tls_settings("require", **more))
            with self.assertRaises(pt.PgwharfError, msg=needle):
                px.start()
            self.assertIn(needle, px.log())

    def test_reload(self):
        px = self.start_pgwharf(settings=self.tls_settings("require"))
        keep = self.connect(px)
        # A broken key on reload keeps the old config (and TLS) going.
        px.settings["client_tls_key_file"] = "/nonexistent/key.pem"
        px.reload()
        px.wait_for_log(r"cannot set up client TLS, keeping the old config")
        self.assertEqual(self.psql(px, "select 1", sslmode="require").returncode, 0)
        # So does a key under a passphrase, with no prompt: the loop goes on.
        fails = px.log().count("cannot set up client TLS, keeping the old config")
        px.settings["client_tls_key_file"] = self.certs.path("server-pass.key")
        px.reload()
        pt.wait_until(lambda: px.log().count(
            "cannot set up client TLS, keeping the old config") > fails, 30, what="the reload")
        self.assertIn("server-pass.key is protected by a passphrase", px.log())
        self.assertEqual(self.psql(px, "select 1", sslmode="require").returncode, 0)
        # Turning TLS off: new clients get 'N'; the TLS client carries on.
        px.settings["client_tls_key_file"] = self.certs.path("server.key")
        px.settings["client_tls_sslmode"] = "disable"
        reloads = px.log().count("event=reload ")
        px.reload()
        pt.wait_until(lambda: px.log().count("event=reload ") > reloads, 30,
                      what="the reload")
        cp = self.psql(px, "select 1", sslmode="require")
        self.assertIn("does not support SSL", cp.stderr)
        self.assertEqual(self.psql(px, "select 1", sslmode="disable").returncode, 0)
        self.assertEqual(one(keep, "select 'old tls client'"), "old tls client")
        keep.close()
        # And on again.
        px.settings["client_tls_sslmode"] = "require"
        reloads = px.log().count("event=reload ")
        px.reload()
        pt.wait_until(lambda: px.log().count("event=reload ") > reloads, 30,
                      what="the reload")
        cp = self.psql(px, "select 1", sslmode="disable")
        self.assertIn("SSL required", cp.stderr)


class TestTlsPastTheCap(TlsTestCase):
    def full(self):
        """pgwharf with max_client_conn 1 (TLS allowed) and a client in that
        slot: (px, that client)."""
        px = self.start_pgwharf(settings=self.tls_settings(
            "allow", max_client_conn=1, tcp_defer_accept=0, metrics_port="auto"))

        def hold():                  # the start-up probe may still hold the slot
            try:
                return self.connect(px, sslmode="disable")
            except psycopg2.OperationalError:
                return None
        holder = pt.wait_until(hold, what="a client in the only slot")
        return px, holder

    def flood_past_a_handshake(self, first=b""):
        """A TLS handshake under way past the cap, then 64 connections
        (PGW_OVERFLOW_SESSIONS: one too many with it) that each sent first:
        the oldest of them gets 53300, and the handshake goes on to a login
        once the held client leaves."""
        px, holder = self.full()
        tls = socket.create_connection((px.host, px.port), timeout=30)
        self.addCleanup(tls.close)
        tls.sendall(SSL_REQUEST)
        self.assertEqual(tls.recv(1), b"S")        # its handshake is under way
        flood = []
        self.addCleanup(lambda: [x.close() for x in flood])
        for _ in range(64):
            c = socket.create_connection((px.host, px.port), timeout=30)
            if first:
                c.sendall(first)
            flood.append(c)
        pt.wait_until(lambda: px.metric("pgwharf_clients_total") == 1 + 64,
                      what="64 connections past the cap")
        data, closed = hz.read_until_closed(flood[0], 30)
        self.assertTrue(closed)
        self.assertIn(b"C53300", data)           # the oldest of the flood gave way
        gone = px.log().count("event=disconnect ")
        holder.close()
        pt.wait_until(lambda: px.log().count("event=disconnect ") > gone,
                      what="the held client gone")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        tls = ctx.wrap_socket(tls)
        self.addCleanup(tls.close)
        hz.sync_login(tls, self.pg.user, self.pg.database, self.pg.password)
        self.assertEqual(hz.simple_query(tls, "select 'after the flood'"),
                         ([[b"after the flood"]], []))

    def test_a_tls_handshake_under_way_is_not_pushed_out_by_idle_connections(self):
        # Past max_client_conn, 64 connections may wait for their first
        # packet; one more pushed out the oldest that had sent no
        # StartupMessage, even one in its TLS handshake, which could be told
        # nothing and was only closed, for a connection that had sent
        # nothing at all.  The idle ones give way first now; the handshake
        # goes on and the client logs in once a slot is free.
        self.flood_past_a_handshake()

    def test_a_tls_handshake_under_way_is_not_pushed_out_by_a_byte_each(self):
        # The same flood with one byte sent on each connection (no whole
        # first packet): each had sent something, so the oldest of all,
        # the one in its TLS handshake, went first again (r4).  A
        # connection with part of a first packet in plaintext goes before
        # a handshake under way now.
        self.flood_past_a_handshake(b"\x00")     # the first byte of a length

    def test_a_tls_client_past_the_cap_gets_53300_after_its_handshake(self):
        # As PostgreSQL and PgBouncer: the SSLRequest is answered, and the
        # 53300 comes over TLS after the StartupMessage; a bare ErrorResponse
        # as the answer to the SSLRequest reads, with libpq 15.10 and later,
        # "server sent an error response during SSL exchange".
        px, holder = self.full()
        for mode in ("prefer", "require"):
            with self.subTest(sslmode=mode):
                cp = self.psql(px, "select 1", sslmode=mode)
                self.assertNotEqual(cp.returncode, 0)
                self.assertIn("no more connections allowed (max_client_conn)", cp.stderr)


class TestCertAuth(TlsTestCase):
    def cert_kw(self, name="client"):
        return {"sslcert": self.certs.path(name + ".crt"),
                "sslkey": self.certs.path(name + ".key"),
                "sslrootcert": self.certs.path("ca.crt"), "sslmode": "verify-full"}

    def test_auth_type_cert(self):
        px = self.start_pgwharf(settings=self.tls_settings(
            "require", auth_type="cert", client_tls_ca_file=self.certs.path("ca.crt")))
        cp = self.psql(px, "select current_user", password="", **self.cert_kw())
        self.assertEqual(cp.returncode, 0, cp.stderr + px.log_tail())
        self.assertEqual(cp.stdout.strip(), self.pg.user)
        # No certificate.
        cp = self.psql(px, "select 1", password="", sslmode="require")
        self.assertNotEqual(cp.returncode, 0)
        self.assertIn("requires a valid client certificate", cp.stderr)
        # A certificate for someone else.
        cp = self.psql(px, "select 1", password="", **self.cert_kw("other"))
        self.assertNotEqual(cp.returncode, 0)
        self.assertIn("certificate authentication failed for user \"%s\"" % self.pg.user,
                      cp.stderr)
        # The right name from the wrong CA fails in the handshake.
        cp = self.psql(px, "select 1", password="", **self.cert_kw("stranger"))
        self.assertNotEqual(cp.returncode, 0)
        self.assertRegex(cp.stderr, r"(?i)ssl|certificate|unknown ca")
        px.wait_for_log(r"TLS handshake failed")      # psql may be gone before the line

    def test_cert_logs_in_only_a_user_pgwharf_has(self):
        # As PgBouncer ("certificate authentication failed") and as trust:
        # the certificate vouches for its name, and the auth_file must still
        # list it.  A CN the auth_file lacks logged in, as the entry's user=.
        pg = self.pg
        px = self.start_pgwharf(
            settings=self.tls_settings("require", auth_type="cert",
                                       client_tls_ca_file=self.certs.path("ca.crt")),
            databases={pg.database: pg.conn_string(pg.database, user=pg.user,
                                                   password=pg.password)})
        cp = self.psql(px, "select current_user", user="someone", password="",
                       **self.cert_kw("other"))
        self.assertNotEqual(cp.returncode, 0, "cert let unlisted someone in: " + cp.stdout)
        self.assertIn('no such user: "someone"', cp.stderr)
        # The listed user's certificate still logs in.
        cp = self.psql(px, "select 'listed'", password="", **self.cert_kw())
        self.assertEqual(cp.stdout.strip(), "listed", cp.stderr)

    def test_verify_ca_needs_a_certificate(self):
        px = self.start_pgwharf(settings=self.tls_settings(
            "verify-ca", client_tls_ca_file=self.certs.path("ca.crt")))
        cp = self.psql(px, "select 1", sslmode="require")
        self.assertNotEqual(cp.returncode, 0)
        cp = self.psql(px, "select 'with cert'", **self.cert_kw())
        self.assertEqual(cp.returncode, 0, cp.stderr + px.log_tail())
        self.assertEqual(cp.stdout.strip(), "with cert")

    def test_hba_hostssl_cert_and_hostnossl(self):
        hba = os.path.join(self.certs.dir, "hba-%d.conf" % os.getpid())
        with open(hba, "w") as f:
            f.write("hostssl   all  %s  127.0.0.1/32  cert\n"
                    "hostnossl all  %s  127.0.0.1/32  reject\n"
                    "hostnossl all  %s  127.0.0.1/32  md5\n"
                    "hostssl   all  %s  127.0.0.1/32  scram-sha-256\n"
                    % (self.pg.user, self.pg.user, self.pg.app_user, self.pg.app_user))
        px = self.start_pgwharf(settings=self.tls_settings(
            "prefer", auth_type="hba", auth_hba_file=hba,
            client_tls_ca_file=self.certs.path("ca.crt")))
        cp = self.psql(px, "select current_user", password="", **self.cert_kw())
        self.assertEqual(cp.returncode, 0, cp.stderr + px.log_tail())
        cp = self.psql(px, "select 1", sslmode="disable")
        self.assertNotEqual(cp.returncode, 0)
        self.assertIn("rejects connection", cp.stderr)
        self.assertIn("no encryption", cp.stderr)
        for mode in ("disable", "require"):
            cp = self.psql(px, "select current_user", user=self.pg.app_user, sslmode=mode)
            self.assertEqual(cp.returncode, 0, mode + cp.stderr + px.log_tail())
            self.assertEqual(cp.stdout.strip(), self.pg.app_user)


    def test_hba_cert_with_a_user_name_map(self):
        """cert map=NAME: the certificate's CN is mapped to the user by
        auth_ident_file instead of having to equal it."""
        hba = os.path.join(self.certs.dir, "hba-map-%d.conf" % os.getpid())
        ident = os.path.join(self.certs.dir, "ident-%d.conf" % os.getpid())
        with open(hba, "w") as f:
            f.write("hostssl all all 127.0.0.1/32 cert map=certs clientcert=verify-full\n")
        with open(ident, "w") as f:
            f.write("certs  someone  %s\n" % self.pg.user)
        px = self.start_pgwharf(settings=self.tls_settings(
            "require", auth_type="hba", auth_hba_file=hba, auth_ident_file=ident,
            client_tls_ca_file=self.certs.path("ca.crt")))
        cp = self.psql(px, "select 'mapped'", password="", **self.cert_kw("other"))
        self.assertEqual(cp.returncode, 0, cp.stderr + px.log_tail())
        self.assertEqual(cp.stdout.strip(), "mapped")
        # The map replaces "CN = user name": the CN pgwharf is not in it.
        cp = self.psql(px, "select 1", password="", **self.cert_kw())
        self.assertNotEqual(cp.returncode, 0)
        self.assertIn('certificate authentication failed for user "%s"' % self.pg.user,
                      cp.stderr)
        px.wait_for_log(r"event=auth_failed .*method=cert identity=%s map=certs"
                        % self.pg.user)


NODE_TLS_SCRIPT = r"""
const { Client } = require('pg');
(async () => {
  const c = new Client({ host: process.env.H, port: +process.env.P, user: process.env.U,
                         password: process.env.PW, database: process.env.D,
                         ssl: { rejectUnauthorized: false },
                         enableChannelBinding: process.env.CB === '1' });
  await c.connect();
  const r = await c.query("select 'bound'");
  console.log(r.rows[0]['?column?']);
  await c.end();
})().catch(e => { console.log('ERROR ' + e.code + ' ' + e.message); process.exit(1); });
"""


class TestScramChannelBinding(TlsTestCase):
    """SCRAM-SHA-256-PLUS over TLS (tls-server-end-point), as PostgreSQL
    offers it: libpq's channel_binding=require used to fail against
    pgwharf ("server authenticated client without channel binding")."""

    def start_scram(self):
        return self.start_pgwharf(settings=self.tls_settings(
            "prefer", auth_type="scram-sha-256"))

    def test_clients_bind_or_not(self):
        px = self.start_scram()
        user, pw = self.pg.user, self.pg._default_password(self.pg.user)
        cp = self.psql(px, "select 'bound'", sslmode="require", channel_binding="require")
        self.assertEqual(cp.returncode, 0, cp.stderr + px.log_tail())
        self.assertEqual(cp.stdout.strip(), "bound")
        # Without TLS there is nothing to bind to: libpq refuses to go on.
        cp = self.psql(px, "select 1", sslmode="disable", channel_binding="require")
        self.assertNotEqual(cp.returncode, 0)
        self.assertIn("channel binding", cp.stderr)
        # A client that does not bind still logs in, with and without TLS.
        for mode in ("require", "disable"):
            cp = self.psql(px, "select 'unbound'", sslmode=mode, channel_binding="disable")
            self.assertEqual(cp.returncode, 0, mode + cp.stderr)
        conn = psycopg2.connect(host="127.0.0.1", port=px.port, dbname=self.pg.database,
                                user=user, password=pw, sslmode="require",
                                channel_binding="require", connect_timeout=10)
        with conn.cursor() as cur:
            cur.execute("select 1")
            self.assertEqual(cur.fetchone()[0], 1)
        conn.close()
        try:
            import asyncpg
        except ImportError:
            asyncpg = None
        if asyncpg:                          # asyncpg does not bind: "n,,"
            import asyncio

            async def run():
                ctx = ssl.create_default_context()
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
                conn = await asyncpg.connect(host="127.0.0.1", port=px.port, user=user,
                                             password=pw, database=self.pg.database, ssl=ctx,
                                             timeout=10)
                try:
                    return await conn.fetchval("select 'asyncpg'")
                finally:
                    await conn.close()
            self.assertEqual(asyncio.run(run()), "asyncpg")
        modules = os.path.join(os.path.dirname(os.path.abspath(__file__)), "node_modules")
        if shutil.which("node") and os.path.isdir(os.path.join(modules, "pg")):
            for cb in ("1", "0"):
                env = dict(os.environ, H="127.0.0.1", P=str(px.port), U=user, PW=pw,
                           D=self.pg.database, CB=cb, NODE_PATH=modules)
                cp = subprocess.run(["node", "-e", NODE_TLS_SCRIPT], env=env,
                                    capture_output=True, text=True, timeout=60)
                self.assertEqual(cp.stdout.strip(), "bound", "node-postgres, binding=%s: %s"
                                 % (cb, cp.stderr))
        import test_auth
        if shutil.which("javac") and os.path.exists(test_auth.JDBC_JAR):
            d = tempfile.mkdtemp(prefix="pgwharf-jdbc-")
            self.addCleanup(shutil.rmtree, d, True)
            with open(os.path.join(d, "Who.java"), "w") as f:
                f.write(test_auth.JDBC_SOURCE)
            subprocess.run(["javac", "-cp", test_auth.JDBC_JAR, "Who.java"], cwd=d, check=True,
                           timeout=120)
            url = "jdbc:postgresql://127.0.0.1:%d/%s?sslmode=require" % (px.port,
                                                                       self.pg.database)
            cp = subprocess.run(["java", "-cp", test_auth.JDBC_JAR + ":.", "Who", url, user, pw],
                                cwd=d, capture_output=True, text=True, timeout=120)
            self.assertEqual(cp.stdout.strip(), user, "jdbc: " + cp.stderr)

    def tls_socket(self, px):
        """A raw connection to px, TLS begun (the certificate unchecked)."""
        raw = socket.create_connection(("127.0.0.1", px.port), timeout=10)
        raw.sendall(SSL_REQUEST)
        self.assertEqual(raw.recv(1), b"S")
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx.wrap_socket(raw)

    def test_an_encryption_request_inside_tls_is_an_unknown_protocol(self):
        # PostgreSQL reads an SSLRequest (GSSENCRequest) sent inside the
        # TLS session as a startup packet of protocol 1234.5679 (5680):
        # 0A000, as a second request of a kind.  pgwharf answered 08P01.
        px = self.start_scram()
        for code, minor in ((80877103, 5679), (80877104, 5680)):
            with self.subTest(minor=minor):
                t = self.tls_socket(px)
                try:
                    t.sendall(struct.pack("!II", 8, code))
                    kind, payload = hz.recv_msg(t)
                    self.assertEqual(kind, b"E")
                    fields = hz.parse_fields(payload)
                    self.assertEqual((fields["S"], fields["C"], fields["M"]),
                                     ("FATAL", "0A000", "unsupported frontend protocol 1234.%d: "
                                      "server supports 3.0 to 3.0" % minor))
                finally:
                    t.close()

    def test_a_client_told_there_is_no_binding_is_refused(self):
        """'y': the client could bind but was told the server cannot.  Over
        TLS pgwharf offers SCRAM-SHA-256-PLUS, so someone stripped it from
        the list on the way: refused (PostgreSQL does the same)."""
        px = self.start_scram()
        t = self.tls_socket(px)
        try:
            t.sendall(hz.startup_packet(self.pg.user, self.pg.database))
            kind, payload = hz.recv_msg(t)
            self.assertEqual(kind, b"R")
            self.assertEqual(struct.unpack("!i", payload[:4])[0], 10)
            self.assertEqual(payload[4:], b"SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0")
            first = b"y,,n=,r=abcdefghijkl"
            msg = b"SCRAM-SHA-256\0" + struct.pack("!i", len(first)) + first
            t.sendall(hz.msg(b"p", msg))
            kind, payload = hz.recv_msg(t)
            self.assertEqual(kind, b"E")
            fields = hz.parse_fields(payload)
            self.assertEqual(fields["C"], "28000")     # PostgreSQL's (08P01 before)
            self.assertIn("channel binding negotiation error", fields["M"])
        finally:
            t.close()



class TestServerTls(TlsTestCase):
    """The shared cluster gets ssl=on with our server certificate."""

    def setUp(self):
        super().setUp()
        self.addCleanup(self.pg.enable_ssl(self.certs.path("server.crt"),
                                           self.certs.path("server.key"),
                                           prefix="pgwharf_tls_"))

    def test_a_database_entrys_bad_tls_file_is_that_pools_failure(self):
        """A database entry's own sslrootcert that cannot be read is that
        entry's configuration, not the server's health: it tripped the
        backend's breaker, shared with every other entry on that host and
        port, which then failed fast too."""
        db = self.pg.database
        px = self.start_pgwharf(
            settings={"pool_mode": "transaction", "breaker_threshold": 2,
                      "breaker_cooldown": "60s", "breaker_max_cooldown": "60s"},
            databases={db: self.pg.conn_string(db),
                       "badtls": self.pg.conn_string(db) +
                       " sslmode=verify-ca sslrootcert=/nonexistent/ca.pem"})
        for _ in range(3):
            cp = self.psql(px, "select 1", sslmode="disable", db="badtls")
            self.assertNotEqual(cp.returncode, 0)
            self.assertIn("root certificate file", cp.stderr)
        self.assertEqual(px.show("BREAKERS")[0]["state"], "closed")
        cp = self.psql(px, "select 'the other entry'", sslmode="disable")
        self.assertEqual(cp.stdout.strip(), "the other entry", cp.stderr)
        px.wait_for_log(r"sqlstate=F0000")

    def test_an_entrys_wrong_ca_is_that_pools_failure(self):
        """A server certificate that fails one entry's check (its own
        sslrootcert, the wrong CA) says nothing of the server's health: it
        tripped the breaker shared by every entry on that host and port,
        and an entry that does not verify failed fast too."""
        db = self.pg.database
        px = self.start_pgwharf(
            settings={"pool_mode": "transaction", "breaker_threshold": 2,
                      "breaker_cooldown": "60s", "breaker_max_cooldown": "60s",
                      "server_login_retry": "60s"},
            databases={db: self.pg.conn_string(db),
                       "wrongca": self.pg.conn_string(db) + " sslmode=verify-ca sslrootcert=" +
                       self.certs.path("otherca.crt")})
        for _ in range(3):
            cp = self.psql(px, "select 1", sslmode="disable", db="wrongca")
            self.assertNotEqual(cp.returncode, 0)
            self.assertIn("certificate verify failed", cp.stderr)
        self.assertEqual(px.show("BREAKERS")[0]["state"], "closed")
        cp = self.psql(px, "select 'the other entry'", sslmode="disable")
        self.assertEqual(cp.stdout.strip(), "the other entry", cp.stderr)

    def test_a_host_of_the_list_whose_tls_check_fails_is_passed_over(self):
        """An entry listing two hosts (the cluster's two addresses) under
        sslmode=verify-full: the certificate names 127.0.0.1, not 127.0.0.2.
        The refusal on 127.0.0.2 is that host's: libpq's multi-host connect
        goes on to the next host, and so does pgwharf now.  It was the
        whole pool's refused login: every client got "does not match host
        name" for server_login_retry though 127.0.0.1 served."""
        entry = "host=127.0.0.2,127.0.0.1 port=%d dbname=%s load_balance_hosts=disable " \
                "sslmode=verify-full sslrootcert=%s" % (self.pg.port, self.pg.database,
                                                        self.certs.path("ca.crt"))
        px = self.start_pgwharf(
            settings={"pool_mode": "transaction", "server_login_retry": "60s"},
            databases={"hl": entry})
        for _ in range(3):
            cp = self.psql(px, "select host(inet_server_addr()), "
                               "(select ssl from pg_stat_ssl where pid = pg_backend_pid())",
                           sslmode="disable", db="hl")
            self.assertEqual(cp.returncode, 0, cp.stderr)
            self.assertEqual(cp.stdout.strip(), "127.0.0.1|t")
        px.wait_for_log(r"event=server_connect_failed db=hl .*backend=127\.0\.0\.2:.*"
                        r"does not match host name")
        self.assertEqual([b["state"] for b in px.show("BREAKERS")], ["closed", "closed"])
        # With both hosts refusing (the other CA), clients get the refusal.
        entry2 = entry.replace(self.certs.path("ca.crt"), self.certs.path("otherca.crt"))
        px.databases["hl"] = entry2
        px.reload()
        cp = self.psql(px, "select 1", sslmode="disable", db="hl")
        self.assertNotEqual(cp.returncode, 0)
        self.assertIn("certificate verify failed", cp.stderr)

    def test_a_prefer_standby_entry_passes_over_a_host_whose_tls_check_fails(self):
        """target_session_attrs=prefer-standby, the first host's name not
        in the certificate: libpq's second pass (any host) goes on to the
        next host, and so does pgwharf now.  That refusal stayed the whole
        pool's (its second pass took skipped hosts), so every client got
        "does not match host name" though 127.0.0.1 served.  With every
        host refusing, the clients get the refusal after one login a
        host, not a login loop."""
        entry = "host=127.0.0.2,127.0.0.1 port=%d dbname=%s load_balance_hosts=disable " \
                "target_session_attrs=prefer-standby sslmode=verify-full sslrootcert=%s" % (
                    self.pg.port, self.pg.database, self.certs.path("ca.crt"))
        px = self.start_pgwharf(
            settings={"pool_mode": "transaction", "server_login_retry": "60s"},
            databases={"ps": entry})
        for _ in range(3):
            cp = self.psql(px, "select host(inet_server_addr()), "
                               "(select ssl from pg_stat_ssl where pid = pg_backend_pid())",
                           sslmode="disable", db="ps")
            self.assertEqual(cp.returncode, 0, cp.stderr)
            self.assertEqual(cp.stdout.strip(), "127.0.0.1|t")
        px.wait_for_log(r"event=server_connect_failed db=ps .*backend=127\.0\.0\.2:.*"
                        r"does not match host name")
        self.assertEqual([b["state"] for b in px.show("BREAKERS")], ["closed", "closed"])
        px.databases["ps"] = entry.replace(self.certs.path("ca.crt"),
                                           self.certs.path("otherca.crt"))
        px.reload()
        mark = len(px.log())
        for _ in range(3):
            cp = self.psql(px, "select 1", sslmode="disable", db="ps")
            self.assertNotEqual(cp.returncode, 0)
            self.assertIn("certificate verify failed", cp.stderr)
        # No login in flight for the pool now (a loop would start one
        # after another), and no more than one a host, and one more that
        # may have been under way, were made.
        pt.wait_until(lambda: all(r["sv_login"] == "0" for r in px.show("POOLS")
                                  if r["database"] == "ps"), what="no login in flight")
        self.assertLessEqual(px.log()[mark:].count("event=server_connect_failed"), 4)

    def test_a_password_refused_after_a_failed_tls_try_is_the_pools_refusal(self):
        """sslmode=prefer with a root certificate the server's does not
        chain to: libpq's TLS attempt fails ("certificate verify
        failed"), its plain retry gets the server's FATAL for the wrong
        password, and its message keeps both.  That refusal is the pool's
        (libpq's multi-host connect stops at it too), not the host's TLS:
        it was taken for a TLS refusal by text, and every host of the
        list was logged into with the wrong password in turn."""
        entry = "host=127.0.0.2,127.0.0.1 port=%d dbname=%s user=%s password=wrong " \
                "load_balance_hosts=disable sslmode=prefer sslrootcert=%s" % (
                    self.pg.port, self.pg.database, self.pg.user, self.certs.path("otherca.crt"))
        px = self.start_pgwharf(
            settings={"pool_mode": "transaction", "server_login_retry": "60s"},
            databases={"hl": entry})
        cp = self.psql(px, "select 1", sslmode="disable", db="hl")
        self.assertNotEqual(cp.returncode, 0)
        self.assertIn("password authentication failed", cp.stderr)
        px.wait_for_log(r"event=server_connect_failed db=hl .*backend=127\.0\.0\.2:.*"
                        r"certificate verify failed.*password authentication failed")
        cp = self.psql(px, "select 1", sslmode="disable", db="hl")
        self.assertIn("password authentication failed", cp.stderr)
        self.assertNotRegex(px.log(), r"event=server_connect_failed db=hl .*backend=127\.0\.0\.1:")

    def test_the_tls_column_names_a_servers_key_exchange(self):
        """SHOW SERVERS' tls of a server link ends in the key exchange the
        server chose, as PgBouncer's "TLSv1.3/TLS_AES_256_GCM_SHA384/
        ECDH=prime256v1" (PostgreSQL's ssl_ecdh_curve, prime256v1 by
        default); a client's row has none, as there.  The suffix was
        missing."""
        curve = self.pg.psql("show ssl_ecdh_curve")
        px = self.start_pgwharf(settings=self.tls_settings(
            "prefer", pool_mode="session", server_tls_sslmode="require"))
        conn = self.connect(px)
        self.addCleanup(conn.close)
        self.assertEqual(one(conn, "select 1"), 1)
        servers = px.show("SERVERS")
        self.assertEqual(len(servers), 1)
        self.assertRegex(servers[0]["tls"], r"^TLSv1\.[23]/[\w-]+/ECDH=%s$" % re.escape(curve))
        clients = [c for c in px.show("CLIENTS") if c["database"] == self.pg.database]
        self.assertRegex(clients[0]["tls"], r"^TLSv1\.[23]/[\w-]+$")

    def test_a_half_close_inside_a_copydata_over_a_tls_link(self):
        """The client shuts down its sending side inside a CopyData
        pgwharf relayed in part to a server over TLS (py.relay_protocol,
        test_a_half_close_inside_a_copydata_relayed_in_part): the end goes
        to the server as the socket's shutdown (no close_notify), which
        PostgreSQL reads as the end of the stream, and the client gets its
        ERROR 08006 and FATAL 08P01, as from PostgreSQL (fails before: no
        error at all)."""
        px = self.start_pgwharf(settings={"server_tls_sslmode": "require",
                                          "pool_mode": "transaction", "default_pool_size": 1})
        self.pg.psql("create table if not exists tls_copy_cut (n int)")
        self.addCleanup(self.pg.psql, "drop table if exists tls_copy_cut", check=False)
        a = socket.create_connection((px.host, px.port), timeout=30)
        self.addCleanup(a.close)
        hz.sync_login(a, self.pg.user, self.pg.database, self.pg.password)
        a.sendall(hz.query_msg("copy tls_copy_cut from stdin"))
        while hz.recv_msg(a)[0] != b"G":
            pass
        self.assertTrue(px.show("SERVERS")[0]["tls"].startswith("TLS"))
        a.sendall(hz.msg(b"d", b"5\n") + b"d" + struct.pack("!I", 4 + 100) + b"6\n")
        a.shutdown(socket.SHUT_WR)
        data, closed = hz.read_until_closed(a, 20)
        self.assertTrue(closed, "the session did not end")
        self.assertEqual([(e.get("S"), e.get("C"), e.get("W")) for e in hz.error_fields_in(data)],
                         [("ERROR", "08006", "COPY tls_copy_cut, line 2"),
                          ("FATAL", "08P01", None)], data)

    def test_server_tls_slow_client(self):
        """Backpressure with a TLS server link: the client stops reading,
        pgwharf's buffer fills and it stops reading the server, a record
        maybe half-read inside OpenSSL; every byte must still come through
        once the client reads.  (That pgwharf reads a record's decrypted
        rest with nothing more on the socket: the test below.)"""
        px = self.start_pgwharf(settings={"server_tls_sslmode": "require", "auth_type": "trust",
                                          "pool_mode": "session"})
        # Each reply outgrows what the kernel can hold between pgwharf and
        # the client (pgwharf's send buffer grows up to tcp_wmem's maximum).
        with open("/proc/sys/net/ipv4/tcp_wmem") as f:
            reply = int(f.read().split()[2]) + (1 << 20)
        c = RawClient(px.port, self.pg.user, self.pg.database)
        try:
            for width in (100000, 33333, 7777, 16000):
                rows = -(-reply // width)
                sql = "select repeat('x', %d) from generate_series(1, %d)" % (width, rows)
                c.send_query(sql)
                self.wait_server_link_stopped(px, sql)
                self.assertGreater(c.until_ready(), width * rows)
        finally:
            c.close()

    def wait_server_link_stopped(self, px, sql):
        """Until the server can send no more of sql's reply (done, or
        blocked writing) and pgwharf leaves bytes of it unread on its one
        server link, the same count twice running: it stopped reading."""
        def server_stuck():
            return self.pg.psql(
                "select count(*) from pg_stat_activity where query = '%s' and "
                "(state = 'idle' or wait_event = 'ClientWrite')" % sql.replace("'", "''"),
                db="postgres", via_socket=True) == "1"
        seen = [None]

        def stopped():
            unread = list(hz.unread_on_port(px.pid, self.pg.port, peer=True).values())
            same = unread == seen[0]
            seen[0] = unread
            return same and len(unread) == 1 and unread[0] > 0 and server_stuck()
        pt.wait_until(stopped, 30, what="pgwharf to stop reading its server")

    def test_server_tls_decrypted_tail_after_backpressure(self):
        """The last TLS record of a reply half-read when pgwharf's buffer
        fills, nothing after it on the socket: once the client drains the
        buffer, pgwharf must read the rest out of OpenSSL itself (no socket
        readiness comes for it) -- ev_feed_event in relay.c after the read
        that fills the buffer, and in session.c when reading resumes.
        Without either, the reply stops short and the client waits forever.

        The client reads nothing until the whole reply has reached pgwharf.
        The buffer (32 KiB) fills at byte K + 32 KiB of the reply, K what
        the kernel holds between pgwharf and the client (small with
        tcp_socket_buffer and the client's SO_RCVBUF), but only once the
        client's window has shut: K grows for a while after the client
        stops reading (a delayed ACK), and the server link, its receive
        buffer the kernel's own, fills the buffer sooner than that.  So the
        reply comes in two parts, an advisory-lock gate between them.  Part
        1, a NOTICE of P bytes (K < P < K + 32 KiB, K guessed from a first
        reply), shuts the client's window for good: pgwharf's socket to it
        on its persist timer (nothing in flight), K measured, P - K bytes in
        the buffer.  Part 2 then fills the buffer at its byte
        F = 32 KiB - (P - K).  PostgreSQL sends in 8 KiB TLS records counted
        from its last flush, and flushes a NOTICE at once: part 2's NOTICE,
        its length read from a table the test fills in while the gate holds
        the query, ends 4 KiB before F, and the rest of the reply (a row,
        ReadyForQuery) is one 8 KiB record that ends 4 KiB after it:
        nothing left on the socket, half a record in OpenSSL."""
        px = self.start_pgwharf(settings={"server_tls_sslmode": "require", "auth_type": "trust",
                                          "pool_mode": "session", "tcp_socket_buffer": 4096})
        self.pg.psql("drop table if exists tls_tail; create table tls_tail (n int); "
                     "insert into tls_tail values (1)", via_socket=True)
        self.addCleanup(self.pg.psql, "drop table if exists tls_tail", check=False,
                        via_socket=True)
        c = RawClient(px.port, self.pg.user, self.pg.database, rcvbuf=4096)
        self.addCleanup(c.close)
        iobuf = 32 * 1024               # PGW_IOBUF_SIZE
        record = 8192                   # PostgreSQL's PqSendBufferSize
        key = 7051
        gated = ("do $$begin raise notice '%%', repeat('n', %d); end$$; "
                 "select pg_advisory_xact_lock_shared(%d); "
                 "do $$begin raise notice '%%', repeat('n', (select n from tls_tail)); end$$; "
                 "select repeat('x', %d) as x")
        kinds = b"NCTDCNCTDCZ"

        # Unheld, the gate lets a first reply through: K, roughly, and the
        # size of each message.
        sql = gated % (100000, key, 0)
        c.send_query(sql)
        _, k_guess = self.wait_relay_settled(px, c, sql, "(state = 'idle' or "
                                                         "wait_event = 'ClientWrite')")
        kinds_got, sizes = self.read_reply(px, c, k_guess)
        self.assertEqual(kinds_got, kinds)
        notice1 = sizes[0] - 100000     # a NOTICE's size, less its text
        between = sum(sizes[1:5])       # part 2 before its NOTICE
        notice2 = sizes[5] - 1
        width = record - sum(sizes[6:]) # the row that makes the tail one record

        first = k_guess + iobuf // 2    # part 1: the buffer half full
        gate = hz.Gate(self.pg, key)
        self.addCleanup(gate.close)
        sql = gated % (first - notice1, key, width)
        c.send_query(sql)
        left, k = self.wait_relay_settled(px, c, sql, "wait_event_type = 'Lock'")
        fill = iobuf - (first - k)      # part 2's byte that fills the buffer
        text2 = fill - record // 2 - between - notice2
        self.assertTrue(left == 0 and 0 < first - k < iobuf and text2 >= 0,
                        "part 1 (%d bytes; K %d, %d left at the server) does not leave the "
                        "buffer part full: the test does not reach its case" % (first, k, left))
        self.pg.psql("update tls_tail set n = %d" % text2, via_socket=True)
        gate.open()
        end = first + fill + record // 2
        left, held = self.wait_relay_settled(px, c, sql, "state = 'idle'")
        # All of it off the server's and pgwharf's sockets, more than the
        # buffer not in the kernel: OpenSSL holds the rest, decrypted.
        self.assertTrue(left == 0 and end - held > iobuf,
                        "the buffer did not fill inside the reply's last TLS record (%d of %d "
                        "bytes in the kernel, %d left at the server): the test does not reach "
                        "its case" % (held, end, left))
        kinds_got, sizes = self.read_reply(px, c, held)
        self.assertEqual((kinds_got, sizes[0], sizes[5], sum(sizes)),
                         (kinds, first, notice2 + text2, end))

    def read_reply(self, px, c, held):
        """Read a whole reply: (the kind of each message, the size of each);
        a clear failure if it stops short.  held: the bytes the kernel held
        between pgwharf and the client once it settled (for the message)."""
        kinds, sizes = b"", []
        # The reply is all at pgwharf already; a message that does not come
        # within 30 s (a hang guard, not a bound on speed) never will.
        c.sock.settimeout(30)
        try:
            while True:
                try:
                    t, body = c.read_msg()
                except socket.timeout:
                    link = self.link_bytes(px)
                    self.fail("the reply stopped short after %d bytes (%d of them in the "
                              "kernel once it settled), %r still at the server: pgwharf "
                              "did not read what OpenSSL held decrypted\n%s"
                              % (sum(sizes) + len(c.buf), held, link and link[0],
                                 px.log_tail()))
                kinds += t
                sizes.append(5 + len(body))
                if t == b"Z":
                    break
        finally:
            c.sock.settimeout(15)
        return kinds, sizes

    def link_bytes(self, px):
        """(bytes on their way from the server to pgwharf on its one
        server link: the server's Send-Q and pgwharf's Recv-Q, pgwharf's
        Recv-Q), or None without one link."""
        links = hz.unread_on_port(px.pid, self.pg.port, peer=True)
        if len(links) != 1:
            return None
        (lport, unread), = links.items()
        server = hz.tcp_queues(self.pg.port, lport)
        if server is None:
            return None
        return server[1] + unread, unread

    def wait_relay_settled(self, px, c, sql, server_state):
        """Until the server running sql is in server_state (a condition on
        pg_stat_activity) and no byte of the reply moves any more: the
        client's window shut with nothing in flight (pgwharf's socket to it
        on its persist timer: only the client's reading opens it), the same
        counts three looks running.  (Bytes between the server and pgwharf,
        bytes the kernel holds between pgwharf and the client.)"""
        cport = c.sock.getsockname()[1]
        seen = []

        def settled():
            if self.pg.psql("select count(*) from pg_stat_activity where query = '%s' and %s"
                            % (sql.replace("'", "''"), server_state),
                            db="postgres", via_socket=True) != "1":
                return False
            link = self.link_bytes(px)
            client = hz.tcp_queues(px.port, cport)
            if link is None or client is None or not hz.tcp_zero_window(px.port, cport):
                seen.clear()
                return False
            (backlog, unread) = link
            inq = struct.unpack("i", fcntl.ioctl(c.sock.fileno(), termios.FIONREAD,
                                                 b"\0\0\0\0"))[0]
            seen.append((backlog, client[1] + inq))
            # Bytes left at the server with none on pgwharf's socket are
            # still on their way, not held back.
            return (len(seen) >= 3 and seen[-1] == seen[-2] == seen[-3] and
                    (unread > 0 or backlog == 0) and seen[-1])
        return pt.wait_until(settled, 30, what="the reply to stop moving")

    def server_ssl(self, conn):
        return one(conn, "select ssl from pg_stat_ssl where pid = pg_backend_pid()")

    def test_an_entrys_empty_tls_key_is_not_set(self):
        # sslrootcert='' in an entry is libpq's "not set", as in PgBouncer
        # an empty value is none: it kept server_tls_ca_file from the
        # entry's servers, and libpq looked for ~/.postgresql/root.crt.
        db = self.pg.database
        px = self.start_pgwharf(
            settings={"server_tls_sslmode": "verify-ca",
                      "server_tls_ca_file": self.certs.path("ca.crt"),
                      "pool_mode": "transaction"},
            databases={db: self.pg.conn_string(db) + " sslrootcert=''"})
        cp = self.psql(px, "select 'verified'", sslmode="disable")
        self.assertEqual(cp.stdout.strip(), "verified", cp.stderr)

    def test_server_tls_require(self):
        px = self.start_pgwharf(settings={"server_tls_sslmode": "require",
                                          "pool_mode": "transaction"})
        conn = self.connect(px, sslmode="disable")
        try:
            self.assertTrue(self.server_ssl(conn))
            with conn.cursor() as cur:
                cur.execute("select repeat(md5(i::text), 2000) from generate_series(1, 400) i")
                self.assertEqual(len(cur.fetchall()), 400)
        finally:
            conn.close()
        self.assertRegex(px.log(), r"server_connect .*tls=on")

    def test_server_tls_verify_full_and_client_tls(self):
        px = self.start_pgwharf(settings=self.tls_settings(
            "require", server_tls_sslmode="verify-full",
            server_tls_ca_file=self.certs.path("ca.crt"), pool_mode="session"))
        conn = self.connect(px, sslmode="verify-full", sslrootcert=self.certs.path("ca.crt"))
        try:
            self.assertTrue(conn.info.ssl_in_use)
            self.assertTrue(self.server_ssl(conn))
            with conn.cursor() as cur:
                cur.execute("select i, repeat('q', 70000) from generate_series(1, 200) i")
                self.assertEqual(len(cur.fetchall()), 200)
        finally:
            conn.close()
        # The wrong CA for the server fails the server login, clearly.
        px2 = self.start_pgwharf(settings={
            "server_tls_sslmode": "verify-full",
            "server_tls_ca_file": self.certs.path("otherca.crt")})
        cp = self.psql(px2, "select 1", sslmode="disable")
        self.assertNotEqual(cp.returncode, 0)
        self.assertIn("certificate verify failed", cp.stderr)

    def test_reload_of_server_tls_renews_the_servers(self):
        # Servers made under the old server_tls_* settings were kept: one
        # logged in without TLS served on after a reload to require (as
        # PgBouncer, which recycles its servers then).
        px = self.start_pgwharf(settings={"server_tls_sslmode": "disable",
                                          "pool_mode": "transaction"})
        conn = self.connect(px, sslmode="disable")
        self.assertFalse(self.server_ssl(conn))
        px.settings["server_tls_sslmode"] = "require"
        mark = px.log().count("event=reload ")
        px.reload()
        pt.wait_until(lambda: px.log().count("event=reload ") > mark, what="the reload")
        self.assertTrue(self.server_ssl(conn))
        conn.close()

    def test_reload_of_server_tls_ends_the_refusal(self):
        # Failures under the old server_tls_* settings (here the wrong CA)
        # say nothing about the new ones, but the refusal they caused (an
        # open breaker once, the pool's server_login_retry wait now) kept
        # failing logins with the old error until it ran out.
        px = self.start_pgwharf(settings={
            "server_tls_sslmode": "verify-full", "pool_mode": "transaction",
            "server_tls_ca_file": self.certs.path("otherca.crt"),
            "server_login_retry": "60s",
            "breaker_cooldown": "60s", "breaker_max_cooldown": "60s"})
        for _ in range(3):
            cp = self.psql(px, "select 1", sslmode="disable")
            self.assertIn("certificate verify failed", cp.stderr)
        px.settings["server_tls_ca_file"] = self.certs.path("ca.crt")
        mark = px.log().count("event=reload ")
        px.reload()
        pt.wait_until(lambda: px.log().count("event=reload ") > mark, what="the reload")
        cp = self.psql(px, "select 'verified'", sslmode="disable")
        self.assertEqual(cp.returncode, 0, cp.stderr)
        self.assertEqual(cp.stdout.strip(), "verified")
        self.assertEqual(px.show("BREAKERS")[0]["state"], "closed")

    def bad_server_tls_settings(self):
        return [
            ({"server_tls_ca_file": "/nonexistent/ca.pem"}, "server_tls_ca_file"),
            ({"server_tls_ca_file": self.certs.path("server.key")}, "server_tls_ca_file"),
            ({"server_tls_protocols": "tlsv9"}, "server_tls_protocols"),
            ({"server_tls_cert_file": self.certs.path("client.crt"),
              "server_tls_key_file": "/nonexistent/key.pem"}, "server_tls_key_file"),
            ({"server_tls_cert_file": self.certs.path("client.crt"),
              "server_tls_key_file": self.certs.path("other.key")}, "does not match"),
            ({"server_tls_cert_file": self.certs.path("client.crt"),
              "server_tls_key_file": self.certs.path("client-pass.key")},
             "client-pass.key is protected by a passphrase"),
            # libpq refuses it at every connect (PostgreSQL's rule)
            ({"server_tls_cert_file": self.certs.path("client.crt"),
              "server_tls_key_file": self.certs.path("client-0644.key")},
             "client-0644.key has group or world access"),
        ]

    def test_bad_server_tls_files_keep_the_old_config(self):
        # They were not read until a server connect, each of which then
        # failed: a typo in a reload took every database down.
        good = {"server_tls_sslmode": "verify-full", "pool_mode": "transaction",
                "server_tls_ca_file": self.certs.path("ca.crt")}
        px = self.start_pgwharf(settings=dict(good))
        conn = self.connect(px, sslmode="disable")
        self.assertTrue(self.server_ssl(conn))
        running = dict(px.settings)
        for more, needle in self.bad_server_tls_settings():
            with self.subTest(needle=needle, more=more):
                px.settings = dict(running, **more)
                mark = len(px.log())
                fails = px.log().count("cannot set up server TLS, keeping the old config")
                px.reload()
                pt.wait_until(lambda: px.log().count(
                    "cannot set up server TLS, keeping the old config") > fails,
                    what="the reload refused")
                self.assertIn(needle, px.log()[mark:])
                self.assertTrue(self.server_ssl(conn))
                cp = self.psql(px, "select 'still'", sslmode="disable")
                self.assertEqual(cp.stdout.strip(), "still", cp.stderr)
        conn.close()

    def test_bad_server_tls_files_stop_startup(self):
        for more, needle in self.bad_server_tls_settings():
            with self.subTest(needle=needle, more=more):
                px = self.start_pgwharf(start=False, settings=dict(
                    {"server_tls_sslmode": "verify-full"}, **more))
                with self.assertRaises(pt.PgwharfError):
                    px.start()
                self.assertIn(needle, px.log())
                cp = subprocess.run([px.binary, "--check", px.config_path], capture_output=True,
                                    text=True, timeout=30)
                self.assertEqual(cp.returncode, 2, cp.stdout + cp.stderr)
                self.assertIn("server TLS: ", cp.stderr)
                self.assertIn(needle, cp.stderr)

    @unittest.skipUnless(os.geteuid() == 0, "needs root to own the key files")
    def test_server_tls_key_file_modes_go_by_the_owner_as_libpq(self):
        """libpq's rule for a key file goes by its owner, not by who runs
        it: root's may be 0640 (a system-wide key read through a group, by
        root too), any other owner's 0600 or less.  pgwharf running as
        root refused its own root-owned 0640 key, which libpq takes, and
        started with another user's 0640 one, on which libpq fails every
        server login."""
        import pwd
        d = tempfile.mkdtemp(prefix="pgwharf-keymode-")
        self.addCleanup(shutil.rmtree, d, True)
        root_key = os.path.join(d, "root-0640.key")
        shutil.copyfile(self.certs.path("client.key"), root_key)
        os.chmod(root_key, 0o640)
        other = self.pg.osuser if self.pg.osuser not in (None, "", "root") else "nobody"
        other_key = os.path.join(d, "other-0640.key")
        shutil.copyfile(self.certs.path("client.key"), other_key)
        os.chown(other_key, pwd.getpwnam(other).pw_uid, -1)
        os.chmod(other_key, 0o640)
        tls = {"server_tls_sslmode": "require", "pool_mode": "transaction",
               "server_tls_cert_file": self.certs.path("client.crt")}
        px = self.start_pgwharf(settings=dict(tls, server_tls_key_file=root_key))
        conn = self.connect(px, sslmode="disable")
        self.addCleanup(conn.close)
        self.assertTrue(self.server_ssl(conn))
        px.stop()
        px = self.start_pgwharf(start=False, settings=dict(tls, server_tls_key_file=other_key))
        with self.assertRaises(pt.PgwharfError):
            px.start()
        self.assertIn("other-0640.key has group or world access", px.log())

    def test_cancel_over_a_tls_server_link(self):
        """pgwharf sends the CancelRequest itself: in plain text, as libpq's
        PQcancel does, to the server that speaks TLS to it."""
        px = self.start_pgwharf(settings={"server_tls_sslmode": "require",
                                          "pool_mode": "transaction"})
        conn = self.connect(px, sslmode="disable")
        self.addCleanup(conn.close)
        conn.autocommit = True
        self.assertTrue(self.server_ssl(conn))
        self.cancel_while_running(conn, "select pg_sleep(60) /* cancel over tls */",
                                  "/* cancel over tls */")
        self.assertEqual(one(conn, "select 'usable'"), "usable")
        px.wait_for_log("event=cancel_forwarded")

    def test_server_tls_protocols(self):
        px = self.start_pgwharf(settings={"server_tls_sslmode": "require",
                                          "server_tls_protocols": "tlsv1.2"})
        conn = self.connect(px, sslmode="disable")
        try:
            self.assertEqual(one(conn, "select version from pg_stat_ssl "
                                       "where pid = pg_backend_pid()"), "TLSv1.2")
        finally:
            conn.close()


if __name__ == "__main__":
    unittest.main()
