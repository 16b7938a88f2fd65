"""Tests of the test harness itself (pgwharf_test.py) against the ctest "pg"
cluster: the Postgres helper for real, and the Pgwharf process handling
with a stand-in binary (a tiny Python TCP server that reads the same
config), so the harness is known to work before the proxy does."""

import os
import signal
import socket
import stat
import sys
import tempfile
import textwrap
import time
import unittest

import pgwharf_test as pt

try:
    import psycopg2
except ImportError:          # the test skips; scripts/deps.sh installs it
    psycopg2 = None


FAKE_PGWHARF = textwrap.dedent("""\
    #!/usr/bin/python3
    # Stand-in for pgwharf: listens where the config says, logs SIGHUP,
    # exits 0 on SIGTERM; --check prints the config and exits 0.
    import configparser, signal, socket, sys
    args = sys.argv[1:]
    if args[0] == "--check":
        print(open(args[1]).read()); sys.exit(0)
    cp = configparser.ConfigParser(delimiters=("=",), comment_prefixes=(";", "#"))
    cp.read(args[0])
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((cp["pgwharf"]["listen_addr"], int(cp["pgwharf"]["listen_port"])))
    s.listen(16)
    print("fake pgwharf listening on port", cp["pgwharf"]["listen_port"], flush=True)
    def hup(*_):
        print("reload requested", flush=True)
    def term(*_):
        print("shutting down", flush=True); sys.exit(0)
    signal.signal(signal.SIGHUP, hup)
    signal.signal(signal.SIGTERM, term)
    conns = []
    while True:
        c, _ = s.accept()
        conns.append(c)
    """)


def _read(path):
    with open(path) as f:
        return f.read()


class TestPostgresHelper(pt.PgwharfTestCase):

    def test_env_file(self):
        for key in ("PGW_TEST_PGHOST", "PGW_TEST_PGPORT", "PGW_TEST_PGUSER",
                    "PGW_TEST_PGPASSWORD", "PGW_TEST_PGBIN", "PGW_TEST_PGDATA",
                    "PGW_TEST_PGSOCKDIR", "PGW_TEST_PGOSUSER", "PGW_TEST_DIR"):
            self.assertTrue(pt.env(key), key)
        self.assertEqual(self.pg.host, "127.0.0.1")
        self.assertLess(self.pg.port, 32768)
        self.assertNotEqual(self.pg.osuser, "root")

    def test_psql_superuser_over_tcp(self):
        self.assertEqual(self.pg.psql("select current_user, current_database()"),
                         "pgwharf|pgwharf")
        self.assertEqual(self.pg.psql("show server_version_num")[:2], "15")

    def test_second_database_and_backslash_c(self):
        self.assertEqual(self.pg.psql("select current_database()", db="pgwharf2"),
                         "pgwharf2")
        out = self.pg.psql("select 1;\n\\c pgwharf2\nselect current_database();")
        self.assertEqual(out.splitlines(), ["1", "pgwharf2"])

    def test_app_role_password_auth(self):
        out = self.pg.psql("select current_user, rolsuper from pg_roles "
                           "where rolname = current_user", user="app")
        self.assertEqual(out, "app|f")
        self.pg.psql("create table if not exists harness_app (a int); "
                     "drop table harness_app", user="app", db="pgwharf2")
        cp = self.pg.psql("select 1", user="app", password="wrong", check=False)
        self.assertNotEqual(cp.returncode, 0)
        self.assertIn("password authentication failed", cp.stderr)

    def test_scram_on_tcp_trust_on_socket(self):
        out = self.pg.psql("select rolpassword like 'SCRAM-SHA-256$%' from pg_authid "
                           "where rolname in ('pgwharf', 'app') order by rolname",
                           via_socket=True)
        self.assertEqual(out.splitlines(), ["t", "t"])

    @unittest.skipIf(psycopg2 is None, "python3-psycopg2 not installed")
    def test_psycopg2_password_auth(self):
        with psycopg2.connect(self.pg.dsn(user="app")) as conn:
            with conn.cursor() as cur:
                cur.execute("select current_user, %s::int + 1", (41,))
                self.assertEqual(cur.fetchone(), ("app", 42))
        conn.close()
        with self.assertRaises(psycopg2.OperationalError):
            psycopg2.connect(self.pg.dsn(user="app", password="nope"))

    def test_backend_count(self):
        base = self.pg.backend_count(db="pgwharf2")
        if psycopg2 is None:
            self.skipTest("python3-psycopg2 not installed")
        conn = psycopg2.connect(self.pg.dsn(db="pgwharf2"))
        try:
            self.assertEqual(self.pg.backend_count(db="pgwharf2"), base + 1)
        finally:
            conn.close()

    def test_restart(self):
        old = self.pg.postmaster_pid()
        self.pg.restart()
        new = self.pg.postmaster_pid()
        self.assertIsNotNone(new)
        self.assertNotEqual(old, new)
        self.assertEqual(self.pg.psql("select 1"), "1")

    def test_kill9_then_start(self):
        old = self.pg.kill9()
        self.assertIsNotNone(old)
        self.assertFalse(self.pg.is_running())
        self.assertFalse(pt.port_open(self.pg.host, self.pg.port))
        self.pg.start()
        self.assertEqual(self.pg.psql("select 1"), "1")

    def test_pause_resume(self):
        self.pg.pause()
        try:
            t0 = time.monotonic()
            cp = self.pg.psql("select 1", check=False, timeout=30, connect_timeout=2)
            self.assertNotEqual(cp.returncode, 0)
            self.assertGreaterEqual(time.monotonic() - t0, 1.0)
        finally:
            self.pg.resume()
        self.assertEqual(self.pg.psql("select 1"), "1")

    def test_pause_all_returns_with_every_process_stopped(self):
        # pause_all sent its SIGSTOPs and returned: a process the signal
        # had not reached yet still ran, and a child the postmaster forked
        # meanwhile was never stopped.  It returns once all have stopped.
        # (A smoke test: SIGSTOP lands at once here, so the old pause_all
        # failed it only by its return value.)
        pids = self.pg.pause_all()
        try:
            self.assertEqual(pids[0], self.pg.postmaster_pid())
            self.assertEqual(sorted(pids[1:]), sorted(pt._children(pids[0])))
            self.assertGreater(len(pids), 1)      # (the checkpointer, at least)
            states = dict((p, pt.proc_state(p)) for p in pids)
            self.assertEqual([p for p, st in states.items() if st not in ("T", "Z")], [],
                             states)
        finally:
            self.pg.resume()
        self.assertEqual(self.pg.psql("select 1"), "1")

    def test_pause_and_kill9_without_a_postmaster_fail(self):
        # With no postmaster (postmaster.pid gone or naming a dead PID),
        # pause, pause_all and kill9 did nothing and said nothing: a
        # "freeze" of py.faults froze nothing and passed.  They raise now.
        self.pg.kill9()                       # postmaster.pid left naming a dead PID
        self.assertTrue(os.path.exists(os.path.join(self.pg.datadir, "postmaster.pid")))
        for step in (self.pg.pause, self.pg.pause_all, self.pg.kill9):
            with self.assertRaises(pt.PgwharfError) as cm:
                step()
            self.assertIn("not running", str(cm.exception))
        self.pg.start()
        self.pg.stop()                        # postmaster.pid gone
        for step in (self.pg.pause, self.pg.pause_all, self.pg.kill9):
            with self.assertRaises(pt.PgwharfError) as cm:
                step()
            self.assertIn("no postmaster", str(cm.exception))

    def test_stop_left_for_teardown(self):
        # The cleanup of PgwharfTestCase must bring the cluster back.
        self.pg.stop()
        self.assertFalse(self.pg.is_running())


class TestPgwharfProcessHandling(pt.PgwharfTestCase):
    """The Pgwharf class with a stand-in binary."""

    def setUp(self):
        super().setUp()
        fd, self.fake = tempfile.mkstemp(prefix="fake-pgwharf-", suffix=".py")
        with os.fdopen(fd, "w") as f:
            f.write(FAKE_PGWHARF.replace("#!/usr/bin/python3", "#!" + sys.executable, 1))
        os.chmod(self.fake, stat.S_IRWXU)
        self.addCleanup(os.unlink, self.fake)

    def test_free_port(self):
        for _ in range(20):
            p = pt.free_port()
            self.assertTrue(20000 <= p < 32768)
            with socket.socket() as s:
                s.bind(("127.0.0.1", p))

    def test_config_and_auth_file(self):
        px = self.start_pgwharf(start=False, binary=self.fake,
                                settings={"pool_mode": "transaction",
                                          "server_reset_query_always": True,
                                          "unix_socket_dir": None},
                                users={"app": "pool_mode=session"},
                                auth_users={"pgwharf": "pgwharf", 'we"ird': "md5abc"})
        px.write_config()
        text = _read(px.config_path)
        self.assertIn("[pgwharf]\n", text)
        self.assertIn("pool_mode = transaction\n", text)
        self.assertIn("server_reset_query_always = 1\n", text)
        self.assertIn("listen_port = %d\n" % px.port, text)
        self.assertIn("auth_file = %s\n" % px.auth_path, text)
        self.assertNotIn("unix_socket_dir", text)
        self.assertIn("pgwharf = host=127.0.0.1 port=%d dbname=pgwharf\n" % self.pg.port,
                      text)
        self.assertIn("[users]\napp = pool_mode=session\n", text)
        self.assertEqual(_read(px.auth_path),
                         '"pgwharf" "pgwharf"\n"we""ird" "md5abc"\n')
        self.assertEqual(px.dsn(), "host=127.0.0.1 port=%d dbname=pgwharf "
                         "user=pgwharf password=pgwharf" % px.port)
        self.assertEqual(px.url(db="pgwharf2", user="app"),
                         "postgresql://app:app_pw@127.0.0.1:%d/pgwharf2" % px.port)
        self.assertEqual(pt._parse_conninfo(pt._conninfo(a="x y", b="it's")),
                         {"a": "x y", "b": "it's"})

    def test_start_reload_stop(self):
        with pt.Pgwharf(pg=self.pg, binary=self.fake) as px:
            self.assertTrue(px.alive())
            self.assertTrue(pt.port_open(px.host, px.port))
            fds = px.fd_count()
            conns = [socket.create_connection((px.host, px.port)) for _ in range(5)]
            pt.wait_until(lambda: px.fd_count() >= fds + 5, 30,
                          what="the fake to accept the 5 connections")
            self.assertGreater(px.rss_kb(), 1000)
            px.reload()
            px.wait_for_log("reload requested")
            for c in conns:
                c.close()
            self.assertEqual(px.stop(), 0)
            self.assertIn("shutting down", px.log())
        self.assertFalse(os.path.exists(px.dir))

    def test_stop_kills_a_hung_process(self):
        px = self.start_pgwharf(binary=self.fake)
        px.send_signal(signal.SIGSTOP)
        rc = px.stop(timeout=0.5)
        self.assertTrue(px.killed)
        self.assertEqual(rc, -signal.SIGKILL)

    def test_early_exit_is_reported(self):
        px = pt.Pgwharf(pg=self.pg, binary="/bin/false")
        with self.assertRaises(pt.PgwharfError):
            px.start()
        px.cleanup()

    def test_check(self):
        px = self.start_pgwharf(start=False, binary=self.fake)
        cp = px.check()
        self.assertEqual(cp.returncode, 0)
        self.assertIn("[databases]", cp.stdout)


if __name__ == "__main__":
    unittest.main()
