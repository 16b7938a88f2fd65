"""The pgwharf command line: --check, --version, --help, bad usage."""

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import unittest

BINARY = os.environ.get("PGW_BINARY")
README = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "README.md")


def readme_reference():
    """The README's `[pgwharf]` key table, {key: (type column, default)}
    (`empty` read as ""; a row of several keys with a range each gives
    each key its own), and its list of PgBouncer keys accepted with a
    warning."""
    with open(README, encoding="utf-8") as f:
        text = f.read()
    start = text.index("### `[pgwharf]` / `[pgbouncer]`")
    section = text[start:text.index("### `[databases]`", start)]
    table = {}
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        cols = [c.strip() for c in line.strip("|").split(" | ")]
        default = cols[2].strip("`")
        keys = re.findall(r"`(\w+)`", cols[0])
        # "integers 0–32767, 0–127" on a row of two keys: one range each
        ranges = re.findall(r"\d+–\d+", cols[1])
        for i, key in enumerate(keys):
            typ = cols[1]
            if len(keys) > 1 and len(ranges) == len(keys):
                typ = "integer " + ranges[i]
            table[key] = (typ, "" if default == "empty" else default)
    warned = section[section.index("accepted with a warning"):]
    warned = warned[warned.index("\n"):warned.index("Any other unknown key")]
    return table, re.findall(r"`(\w+)`", warned)


def run(*args):
    return subprocess.run([BINARY] + list(args), capture_output=True, text=True, timeout=30)


class TestCli(unittest.TestCase):
    def setUp(self):
        if not BINARY:
            self.fail("$PGW_BINARY is not set (run through ctest)")
        self.dir = tempfile.mkdtemp(prefix="pgwharf-cli-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.auth = os.path.join(self.dir, "userlist.txt")
        with open(self.auth, "w") as f:
            f.write('"bob" "secret"\n')

    def write(self, name, text):
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_check_valid_prints_effective_settings(self):
        path = self.write("ok.ini", "[databases]\napp = host=127.0.0.1 dbname=app\n"
                          "[pgbouncer]\nlisten_port = 6439\nauth_file = %s\n"
                          "default_pool_size = 7\npool_mode = transaction\n" % self.auth)
        cp = run("--check", path)
        self.assertEqual(cp.returncode, 0, cp.stderr)
        self.assertIn("default_pool_size = 7", cp.stdout)
        self.assertIn("pool_mode = transaction", cp.stdout)
        self.assertIn("listen_port = 6439", cp.stdout)
        self.assertIn("query_wait_timeout = 120", cp.stdout)   # a default

    def test_check_reports_every_error_with_file_and_line(self):
        path = self.write("bad.ini", "[pgwharf]\n"
                          "default_pool_size = -3\n"
                          "pool_mode = sometimes\n"
                          "no_such_key = 1\n"
                          "query_wait_timeout = 5 parsecs\n"
                          "auth_file = %s\n" % self.auth)
        cp = run("--check", path)
        self.assertEqual(cp.returncode, 2)
        errs = cp.stderr
        self.assertIn("bad.ini:2: default_pool_size", errs)
        self.assertIn("bad.ini:3: pool_mode", errs)
        self.assertIn('bad.ini:4: unknown key "no_such_key"', errs)
        self.assertIn("bad.ini:5: query_wait_timeout", errs)
        self.assertEqual(cp.stdout, "")

    def test_a_check_between_two_keys_names_the_line_of_the_one_set(self):
        # breaker_max_cooldown (then left at 30 s) against breaker_cooldown
        # = 1min said "bad.ini: ...", no line: only the first key's line was
        # looked for, and a key at its default has none.  (A default
        # breaker_max_cooldown, 2 s since, under a longer breaker_cooldown
        # is no error: that cooldown is the cap.)  auth_type at its default
        # md5 and auth_file emptied on line 5 are such a pair.
        path = self.write("bad.ini", "[databases]\napp = host=127.0.0.1\n[pgwharf]\n"
                          "breaker_cooldown = 1min\n"
                          "auth_file =\n"
                          "breaker_max_cooldown = 30s\n")
        cp = run("--check", path)
        self.assertEqual(cp.returncode, 2, cp.stderr)
        self.assertIn("%s:6: breaker_max_cooldown 30s is shorter than breaker_cooldown 60s"
                      % path, cp.stderr)
        self.assertIn("%s:5: auth_type md5 needs auth_file" % path, cp.stderr)

    def test_check_loads_the_files_it_names(self):
        path = self.write("hba.ini", "[pgwharf]\nauth_type = hba\nauth_hba_file = %s\n"
                          "auth_file = %s\n" % (self.write("hba.conf", "hostx all all 127.0.0.1/32 md5\n"),
                                                self.auth))
        cp = run("--check", path)
        self.assertEqual(cp.returncode, 2)
        self.assertIn("hba.conf:1:", cp.stderr)

    def test_unsupported_pgbouncer_key_is_a_warning(self):
        path = self.write("warn.ini", "[pgbouncer]\nauth_file = %s\npkt_buf = 4096\n" % self.auth)
        cp = run("--check", path)
        self.assertEqual(cp.returncode, 0, cp.stderr)
        self.assertIn("warn.ini:3: pkt_buf: ignored: not supported yet", cp.stderr)

    def test_readme_error_example_warns_as_shown(self):
        # README's example of --check's output ends with a warning for an
        # ignored key; it named tcp_keepalive, a key pgwharf supports
        # (no warning at all).
        with open(README, encoding="utf-8") as f:
            text = f.read()
        block = text[text.index("- **Errors** name the place"):]
        block = block[block.index("```"):block.index("```", block.index("```") + 3)]
        m = re.search(r"^\s*pgwharf\.ini:\d+: (\w+): ignored: not supported yet$", block, re.M)
        self.assertIsNotNone(m, block)
        cp = run("--check", self.write("example.ini", "[pgwharf]\nauth_type = trust\n"
                                       "%s = 1\n" % m.group(1)))
        self.assertEqual(cp.returncode, 0, cp.stderr)
        self.assertIn("example.ini:3: %s: ignored: not supported yet" % m.group(1), cp.stderr)

    def test_readme_event_table_names_every_event(self):
        # Every event pgwharf logs (pgw_info("name", ...), pgw_log(level,
        # "name", ...)) has its row in README's table of events
        # (admin_disable and admin_enable had none, nor did fourteen more).
        top = os.path.dirname(README)
        events = set()
        for d in ("proxy", "pool", "conf", "common", "ctx"):
            for name in os.listdir(os.path.join(top, d)):
                if name.endswith(".c"):
                    with open(os.path.join(top, d, name), encoding="utf-8") as f:
                        text = f.read()
                    events |= set(re.findall(r'pgw_(?:debug|info|notice|warn|error)\(\s*"(\w+)"',
                                             text))
                    events |= set(re.findall(r'pgw_log\([^;"]*?,\s*"(\w+)"', text))
        self.assertIn("admin_pause", events)
        self.assertIn("disconnect", events)
        with open(README, encoding="utf-8") as f:
            text = f.read()
        table = text[text.index("| Event | Level | When |"):]
        table = table[:table.index("\n\n")]
        names = set()
        for line in table.splitlines():
            names |= set(re.findall(r"`(\w+)`", line.split(" | ")[0]))
        self.assertEqual(sorted(events - names), [])

    def test_a_database_or_user_defined_again_replaces_the_first(self):
        # PgBouncer loads such a file, the later line winning; so must pgwharf
        path = self.write("dup.ini", "[pgbouncer]\nauth_file = %s\n"
                          "[databases]\n"
                          "x = host=127.0.0.1 port=1111\n"
                          "y = host=127.0.0.3\n"
                          "x = host=127.0.0.2 port=2222 pool_size=7\n"
                          "[users]\n"
                          "u = pool_mode=session\n"
                          "u = pool_mode=statement\n" % self.auth)
        cp = run("--check", path)
        self.assertEqual(cp.returncode, 0, cp.stderr)
        self.assertIn('dup.ini:6: database "x" defined again: replaces %s:4' % path, cp.stderr)
        self.assertIn('dup.ini:9: user "u" defined again: replaces %s:8' % path, cp.stderr)
        dbs = cp.stdout.split("[databases]\n", 1)[1].split("\n\n", 1)[0].splitlines()
        self.assertEqual(dbs, ["x = host=127.0.0.2 port=2222 dbname=x pool_size=7",
                               "y = host=127.0.0.3 dbname=y"])
        self.assertIn("[users]\nu = pool_mode=statement\n", cp.stdout)

    def test_check_prints_peers_and_refuses_host_names(self):
        path = self.write("peers.ini", "[pgbouncer]\nauth_file = %s\npeer_id = 2\n"
                          "[peers]\n"
                          "1 = host=/run/pgwharf1 port=6432 pool_size=5\n"
                          "2 = host=127.0.0.2\n" % self.auth)
        cp = run("--check", path)
        self.assertEqual(cp.returncode, 0, cp.stderr)
        self.assertEqual(cp.stderr, "")                  # peer_id is no longer a warning
        self.assertIn("\npeer_id = 2\n", cp.stdout)
        self.assertTrue(cp.stdout.endswith(
            "[peers]\n1 = host=/run/pgwharf1 port=6432 pool_size=5\n2 = host=127.0.0.2 port=6432\n"),
            cp.stdout)
        path = self.write("names.ini", "[pgbouncer]\nauth_file = %s\npeer_id = 1\n"
                          "[peers]\n2 = host=pgwharf2.internal\n" % self.auth)
        cp = run("--check", path)
        self.assertEqual(cp.returncode, 2)
        self.assertIn('names.ini:5: peer 2: host: expected an IP address or a Unix socket '
                      'directory (host names are not resolved), got "pgwharf2.internal"', cp.stderr)

    def test_readme_config_reference_is_what_pgwharf_reads(self):
        # README.md's table is the DBA's reference: every key pgwharf reads,
        # none it does not, with the default --check prints for a file that
        # sets nothing, and integer ranges that are the ones it checks
        table, warned = readme_reference()
        cp = run("--check", self.write("empty.ini", "[pgwharf]\nauth_type = trust\n"))
        self.assertEqual(cp.returncode, 0, cp.stderr)
        settings = cp.stdout.split("\n[", 1)[0].splitlines()[1:]
        printed = dict(line.split(" = ", 1) if " = " in line else (line[:-2], "")
                       for line in settings)
        self.assertEqual(sorted(set(printed) - set(table)), [], "keys missing from README")
        self.assertEqual(sorted(set(table) - set(printed)), [], "README keys pgwharf lacks")
        wrong = {k: (table[k][1], v) for k, v in printed.items()
                 if k != "auth_type" and table[k][1] != v}
        self.assertEqual(wrong, {}, "README default != --check default")
        for key, (typ, _) in table.items():
            m = re.match(r"integers? (\d+)–(\d+)|integers? ≥ (\d+)", typ)
            if not m:
                continue
            lo = int(m.group(1) or m.group(3))
            ok = [lo] + ([int(m.group(2))] if m.group(2) else [])
            bad = [lo - 1] + ([int(m.group(2)) + 1] if m.group(2) else [])
            for value, valid in [(v, True) for v in ok] + [(v, False) for v in bad]:
                with self.subTest(key=key, value=value):
                    cp = run("--check", self.write("range.ini", "[pgwharf]\nauth_type = trust\n"
                                                   "%s = %d\n" % (key, value)))
                    self.assertEqual(cp.returncode == 0, valid, cp.stderr)
        self.assertTrue(warned)
        for key in warned:
            with self.subTest(warned=key):
                cp = run("--check", self.write("warned.ini", "[pgwharf]\nauth_type = trust\n"
                                               "%s = x\n" % key))
                self.assertEqual(cp.returncode, 0, cp.stderr)
                self.assertIn("warned.ini:3: %s: ignored: not supported yet" % key, cp.stderr)

    def test_example_config_names_every_key_with_its_default(self):
        # README: examples/pgwharf.ini "shows every key with a comment"; a
        # key left commented out shows its default
        cp = run("--check", self.write("empty.ini", "[pgwharf]\nauth_type = trust\n"))
        self.assertEqual(cp.returncode, 0, cp.stderr)
        defaults = dict(line.split(" = ", 1) if " = " in line else (line[:-2], "")
                        for line in cp.stdout.split("\n[", 1)[0].splitlines()[1:])
        example = os.path.join(os.path.dirname(README), "examples", "pgwharf.ini")
        with open(example, encoding="utf-8") as f:
            text = f.read()
        general = text[text.index("\n[pgwharf]\n"):]
        shown = {}
        for m in re.finditer(r"^(;?)(\w+) =(?: (.*))?$", general, re.M):
            shown[m.group(2)] = (m.group(1), m.group(3) or "")
        self.assertEqual(sorted(set(defaults) - set(shown)), [], "keys missing from the example")
        self.assertEqual(sorted(set(shown) - set(defaults)), [], "example keys pgwharf lacks")
        wrong = {k: (v, defaults[k]) for k, (c, v) in shown.items() if c and v != defaults[k]}
        self.assertEqual(wrong, {}, "commented-out example value != default")
        # its auth_file is relative to the top of the tree, where run.sh starts it
        cp = subprocess.run([BINARY, "--check", example], capture_output=True, text=True,
                            timeout=30, cwd=os.path.dirname(README))
        self.assertEqual(cp.returncode, 0, cp.stderr)

    def test_version_help_usage(self):
        cp = run("--version")
        self.assertEqual(cp.returncode, 0)
        self.assertRegex(cp.stdout, r"^pgwharf \d+\.\d+\.\d+")
        cp = run("--help")
        self.assertEqual(cp.returncode, 0)
        self.assertIn("--check", cp.stdout)
        self.assertEqual(run().returncode, 2)
        self.assertEqual(run("--bogus").returncode, 2)
        # a value given to an option that takes none: it said "unknown
        # option -q" (getopt's optopt, the option's short letter), and
        # "unknown option -C" for --check=FILE, an option there is no -C of
        for opt, name in (("--quiet=1", "--quiet"), ("--check=x.ini", "--check"),
                          ("--daemon=yes", "--daemon"), ("--verbose=2", "--verbose")):
            cp = run(opt, "x.ini")
            self.assertEqual(cp.returncode, 2, opt)
            self.assertIn("pgwharf: option %s takes no value\n" % name, cp.stderr)
        self.assertIn("pgwharf: unknown option -x\n", run("-x", "x.ini").stderr)
        self.assertIn("pgwharf: unknown option --bogus=1\n", run("--bogus=1", "x.ini").stderr)

    def test_an_unknown_letter_after_a_long_option_with_a_value(self):
        # An unknown letter inside a cluster ("-xq": getopt stays on it) was
        # put on the argument before it when that one had "--" and "=":
        # "option --user takes no value" for "--user=bob -xq", where --user
        # takes one (review r1).  An abbreviation still reads as its option.
        for args in (("--user=nobody", "-xq", "x.ini"), ("--user=nobody", "-xq")):
            cp = run(*args)
            self.assertEqual(cp.returncode, 2, args)
            self.assertIn("pgwharf: unknown option -x\n", cp.stderr, args)
            self.assertNotIn("takes no value", cp.stderr, args)
        self.assertIn("pgwharf: option --qui takes no value\n", run("--qui=1", "x.ini").stderr)

    def test_errors_found_after_loading_name_the_line_of_their_key(self):
        # They said "x.ini: client TLS: ...", "nope.txt: cannot open: ...":
        # the key's line was known while loading and dropped after.
        missing = os.path.join(self.dir, "nope.txt")
        path = self.write("tls.ini", "[databases]\n[pgwharf]\n"
                          "auth_file = %s\n"
                          "client_tls_sslmode = require\n"
                          "client_tls_key_file = %s\n"
                          "client_tls_cert_file = %s\n"
                          "server_tls_sslmode = verify-full\n"
                          "server_tls_ca_file = %s\n"
                          % (missing, self.auth, os.path.join(self.dir, "c.pem"),
                             os.path.join(self.dir, "ca.pem")))
        cp = run("--check", path)
        self.assertEqual(cp.returncode, 2, cp.stderr)
        self.assertIn('%s:3: auth_file "%s": cannot open: ' % (path, missing), cp.stderr)
        self.assertRegex(cp.stderr, r"(?m)^%s:[56]: client TLS: client_tls_" % re.escape(path))
        self.assertIn("%s:8: server TLS: server_tls_ca_file " % path, cp.stderr)
        hba = self.write("hba.ini", "[pgwharf]\nauth_type = hba\nauth_file = %s\n"
                         "auth_hba_file = %s\n" % (self.auth, missing))
        cp = run("--check", hba)
        self.assertEqual(cp.returncode, 2, cp.stderr)
        self.assertIn('%s:4: auth_hba_file "%s": cannot open: ' % (hba, missing), cp.stderr)
        # and at start (no TCP listener: nothing is bound)
        start = self.write("start.ini", "[databases]\n[pgwharf]\nlisten_addr =\n"
                           "unix_socket_dir = %s\nauth_file = %s\n" % (self.dir, missing))
        cp = run(start)
        self.assertNotEqual(cp.returncode, 0)
        self.assertIn('reason="%s:5: auth_file \\"%s\\": cannot open: ' % (start, missing),
                      cp.stderr)
        # the terminal's line says why too (it said "cannot load it", the
        # cause only in the log: nowhere to be seen with -q or -d)
        for args in ([start], ["-q", start]):
            cp = run(*args)
            self.assertNotEqual(cp.returncode, 0)
            self.assertIn('pgwharf: %s:5: auth_file "%s": cannot open: No such file or directory'
                          % (start, missing), cp.stderr)
        hba_start = self.write("hbastart.ini", "[databases]\n[pgwharf]\nlisten_addr =\n"
                               "unix_socket_dir = %s\nauth_type = hba\nauth_file = %s\n"
                               "auth_hba_file = %s\n" % (self.dir, self.auth, missing))
        cp = run("-q", hba_start)
        self.assertIn('pgwharf: %s:7: auth_hba_file "%s": cannot open: ' % (hba_start, missing),
                      cp.stderr)

    def test_check_refuses_addresses_and_a_user_only_the_start_refused(self):
        # listen_addr = "a<TAB>b", metrics_addr = a host name, a user or a
        # unix_socket_group that does not exist passed --check and stopped
        # the start.
        path = self.write("names.ini", "[databases]\n[pgwharf]\nauth_type = trust\n"
                          "listen_addr = no-such-host.invalid\tother.invalid\n"
                          "user = no_such_user_pgwharf\n"
                          "unix_socket_group = no_such_group_pgwharf\n")
        cp = run("--check", path)
        self.assertEqual(cp.returncode, 2, cp.stderr)
        self.assertIn("%s:4: listen_addr no-such-host.invalid: " % path, cp.stderr)
        self.assertIn("%s:4: listen_addr other.invalid: " % path, cp.stderr)
        self.assertIn('%s:5: user "no_such_user_pgwharf": no such user' % path, cp.stderr)
        # as the start (it passed --check, then the start exited 1)
        self.assertIn('%s:6: unix_socket_group "no_such_group_pgwharf": no such group' % path,
                      cp.stderr)
        self.assertEqual(cp.stdout, "")
        # a number past the group ids wrapped (4294967297: group 1) or, out of
        # strtol's range, left the group as it was
        for big in ("4294967297", "99999999999999999999"):
            path = self.write("gid.ini", "[databases]\n[pgwharf]\nauth_type = trust\n"
                              "unix_socket_group = %s\n" % big)
            cp = run("--check", path)
            self.assertEqual(cp.returncode, 2, cp.stderr)
            self.assertIn('%s:4: unix_socket_group "%s": no such group' % (path, big), cp.stderr)
        path = self.write("metrics.ini", "[databases]\n[pgwharf]\nauth_type = trust\n"
                          "metrics_port = 9127\nmetrics_addr = a b\n")
        cp = run("--check", path)
        self.assertEqual(cp.returncode, 2, cp.stderr)
        self.assertIn('%s:5: metrics_addr "a b": ' % path, cp.stderr)
        path = self.write("ok.ini", "[databases]\n[pgwharf]\nauth_type = trust\n"
                          "listen_addr = 127.0.0.1,\tlocalhost\nmetrics_port = 9127\n"
                          "metrics_addr = *\nuser = %s\n" % pwd.getpwuid(os.getuid()).pw_name)
        cp = run("--check", path)
        self.assertEqual(cp.returncode, 0, cp.stderr)

    def test_start_errors_name_the_config_line(self):
        # A start stopped by listen_addr, unix_socket_dir, unix_socket_group,
        # metrics_addr, user, pidfile or logfile read "listen_addr x: ..." without the file
        # and line of the key (--check's and the loader's errors have them).
        # Nothing public is bound: a name that does not resolve, a directory
        # that does not exist, an address this host lacks (TEST-NET-1).
        sock = "listen_port = 0\nunix_socket_dir = %s\n" % self.dir
        cases = [
            ("listen_addr = nosuch.invalid\nunix_socket_dir =\n",
             "%s:4: listen_addr nosuch.invalid: "),
            ("listen_addr =\nlisten_port = 0\nunix_socket_dir = /nonexistent/dir\n",
             "%s:6: unix_socket_dir /nonexistent/dir: cannot listen on "
             "/nonexistent/dir/.s.PGSQL.0: "),
            ("listen_addr =\n" + sock + "unix_socket_group = no_such_group_pgwharf\n",
             '%s:7: unix_socket_group "no_such_group_pgwharf": no such group'),
            ("listen_addr =\n" + sock + "metrics_port = 9127\nmetrics_addr = 192.0.2.1\n",
             "%s:8: metrics_addr 192.0.2.1: cannot listen on 192.0.2.1:9127: "),
            ("listen_addr =\n" + sock + "user = no_such_user_pgwharf\n",
             '%s:7: user "no_such_user_pgwharf": no such user'),
            ("listen_addr =\n" + sock + "pidfile = /nonexistent/dir/pgwharf.pid\n",
             "%s:7: pidfile /nonexistent/dir/pgwharf.pid: cannot create it: "),
            ("listen_addr =\n" + sock + "logfile = /nonexistent/dir/pgwharf.log\n",
             "%s:7: cannot open logfile /nonexistent/dir/pgwharf.log: "),
        ]
        for i, (keys, want) in enumerate(cases):
            path = self.write("start%d.ini" % i, "[databases]\n[pgwharf]\nauth_type = trust\n"
                              + keys)
            cp = run(path)
            self.assertEqual(cp.returncode, 1, cp.stderr)
            self.assertIn("pgwharf: " + want % path, cp.stderr)

    def test_tells_systemd_it_is_ready_reloading_and_stopping(self):
        # Debian's pgbouncer.service is Type=notify: systemd waits for
        # READY=1 on $NOTIFY_SOCKET (a path, or @ for an abstract name),
        # and a pgwharf put in its ExecStart that said nothing was killed
        # at TimeoutStartSec.
        path = self.write("notify.ini", "[databases]\n[pgwharf]\nauth_type = trust\n"
                          "listen_addr = 127.0.0.1\nlisten_port = 0\nunix_socket_dir =\n")
        for where in (os.path.join(self.dir, "notify.sock"), "@pgwharf-notify-%d" % os.getpid()):
            with self.subTest(where=where):
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self.addCleanup(sock.close)
                sock.bind("\0" + where[1:] if where.startswith("@") else where)
                sock.settimeout(30)
                env = dict(os.environ, NOTIFY_SOCKET=where)
                with open(os.path.join(self.dir, "notify.log"), "w") as log:
                    proc = subprocess.Popen([BINARY, path], env=env, stdout=log, stderr=log)
                self.addCleanup(lambda p=proc: p.poll() is None and p.kill())
                self.assertEqual(sock.recv(256).decode(), "READY=1\nMAINPID=%d" % proc.pid)
                proc.send_signal(signal.SIGHUP)
                self.assertEqual(sock.recv(256), b"RELOADING=1")
                self.assertEqual(sock.recv(256), b"READY=1")
                proc.send_signal(signal.SIGTERM)
                self.assertEqual(sock.recv(256), b"STOPPING=1")
                self.assertEqual(proc.wait(30), 0)

    def test_missing_file(self):
        cp = run("--check", os.path.join(self.dir, "nope.ini"))
        self.assertEqual(cp.returncode, 2)
        self.assertIn("nope.ini", cp.stderr)


if __name__ == "__main__":
    unittest.main()
