"""test_docker - docker/, checked as far as a machine without a Docker
engine allows.

- docker-compose.yml: Compose's own validator (`docker-compose config`,
  Debian's docker-compose) accepts it, and it wires what docker/README.md
  says: postgres:15; pgwharf built from docker/Dockerfile with the
  repository root as context, its config and auth file mounted where the
  image reads them; pgbench waiting for pgwharf to be healthy.
- The Dockerfile's build stage is carried out: its COPY instructions on a
  copy of the build context (Dockerfile.dockerignore applied) in a temp
  directory standing for the image's file system, its RUN lines there with
  /bin/sh as Docker runs them (PGW_SKIP_APT=1: apt is not run on the test
  machine).  The RUN lines must install with `scripts/deps.sh --build-only`
  and build with `scripts/build.sh`, the script scripts/test.sh builds
  with; the binary must appear where the runtime stage copies it from.
  Every header and library the compiler used from the system, and every
  shared library the binary loads, must come from the packages of the
  stage's deps.sh group (or what they depend on): the build stage's
  `--build-only`, the runtime stage's `--runtime-only`.
- The runtime stage runs the binary as a non-root user with the config
  path the compose file mounts.
- The image's binary with docker/pgwharf.ini (only the backend address, the
  listen address and port and the auth file path changed for this machine)
  serves the compose file's pgbench script, scaled down (-s 1, -T 3),
  against the test cluster.
"""

import os
import re
import shutil
import subprocess
import tempfile
import unittest

import pgwharf_test as pt

try:
    import yaml
except ImportError:          # python3-yaml (scripts/deps.sh installs it)
    yaml = None

SRC = os.environ.get("PGW_SOURCE_DIR") or os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", ".."))
DOCKER = os.path.join(SRC, "docker")


# --- Dockerfile ---------------------------------------------------------------

def parse_dockerfile(path):
    """[{"name", "base", "instrs": [(KEYWORD, args)]}] in order.  Handles
    comments and backslash continuations, which is all our Dockerfile uses."""
    stages, logical, buf = [], [], ""
    with open(path) as f:
        for raw in f:
            line = raw.rstrip("\n")
            if not buf and (not line.strip() or line.lstrip().startswith("#")):
                continue
            if line.rstrip().endswith("\\"):
                buf += line.rstrip()[:-1] + " "
                continue
            logical.append(buf + line)
            buf = ""
    for line in logical:
        kw, _, args = line.strip().partition(" ")
        kw = kw.upper()
        args = args.strip()
        if kw == "FROM":
            m = re.match(r"(\S+)(?:\s+AS\s+(\S+))?$", args, re.I)
            stages.append({"base": m.group(1), "name": m.group(2), "instrs": []})
        else:
            stages[-1]["instrs"].append((kw, args))
    return stages


def dockerignore_patterns(path):
    pats = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                pats.append(line.strip("/"))
    return pats


def _pattern_re(pat):
    out, i = "", 0
    while i < len(pat):
        if pat.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pat.startswith("**", i):
            out += ".*"
            i += 2
        elif pat[i] == "*":
            out += "[^/]*"
            i += 1
        elif pat[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pat[i])
            i += 1
    return re.compile(out + r"\Z")


def ignored(rel, regexes):
    """Docker's rule: a path is left out when it, or a directory above it,
    matches a pattern."""
    parts = rel.split("/")
    for n in range(1, len(parts) + 1):
        prefix = "/".join(parts[:n])
        if any(r.match(prefix) for r in regexes):
            return True
    return False


def copy_context(src, dst, patterns):
    regexes = [_pattern_re(p) for p in patterns]
    for dirpath, dirnames, filenames in os.walk(src):
        rel_dir = os.path.relpath(dirpath, src)
        rel_dir = "" if rel_dir == "." else rel_dir
        dirnames[:] = [d for d in dirnames
                       if not ignored(os.path.join(rel_dir, d), regexes)]
        os.makedirs(os.path.join(dst, rel_dir), exist_ok=True)
        for fn in filenames:
            rel = os.path.join(rel_dir, fn)
            if not ignored(rel, regexes):
                shutil.copy2(os.path.join(src, rel), os.path.join(dst, rel),
                             follow_symlinks=False)


# --- Debian packages ------------------------------------------------------------

def deps_group(group):
    out = subprocess.run([os.path.join(SRC, "scripts", "deps.sh"), "--list", group],
                         check=True, capture_output=True, text=True).stdout
    return set(out.split())


def installed(pkg):
    cp = subprocess.run(["dpkg-query", "-W", "-f=${db:Status-Abbrev}", pkg],
                        capture_output=True, text=True)
    return cp.returncode == 0 and cp.stdout.startswith("ii")


def depends_closure(pkgs):
    """The installed packages pkgs pull in through Depends and Pre-Depends
    (of alternatives, the installed one), themselves included."""
    seen, todo = set(), [p.split(":")[0] for p in pkgs]
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        cp = subprocess.run(["dpkg-query", "-W", "-f=${Depends}, ${Pre-Depends}", p],
                            capture_output=True, text=True)
        for dep in cp.stdout.split(","):
            alts = [a.strip().split(" ")[0].split(":")[0] for a in dep.split("|")]
            alts = [a for a in alts if a]
            if not alts:
                continue
            have = [a for a in alts if installed(a)]
            if have:
                todo.append(have[0])
            else:
                # a virtual package: whatever installed package provides it
                q = subprocess.run(["dpkg-query", "-W", "-f=${Package} ${Provides}\n"],
                                   capture_output=True, text=True).stdout
                for line in q.splitlines():
                    name, _, provides = line.partition(" ")
                    if alts[0] in [x.strip().split(" ")[0] for x in provides.split(",")]:
                        if installed(name):
                            todo.append(name)
                            break
    return seen


def owners(paths):
    """{path: package} for system files (dpkg -S, on the path and, for
    links like /lib -> usr/lib, its real path)."""
    result = {}
    for p in sorted(paths):
        for cand in (p, os.path.realpath(p)):
            cp = subprocess.run(["dpkg", "-S", cand], capture_output=True, text=True)
            if cp.returncode == 0:
                result[p] = cp.stdout.split(":")[0].split(",")[0].strip()
                break
        else:
            result[p] = None
    return result


class TestCompose(unittest.TestCase):

    def setUp(self):
        if yaml is None:
            self.fail("PyYAML missing (scripts/deps.sh installs python3-yaml)")
        with open(os.path.join(DOCKER, "docker-compose.yml")) as f:
            self.compose = yaml.safe_load(f)

    def test_compose_validates(self):
        exe = shutil.which("docker-compose")
        self.assertIsNotNone(exe, "docker-compose missing (scripts/deps.sh installs it)")
        cp = subprocess.run([exe, "-f", "docker-compose.yml", "config", "-q"],
                            cwd=DOCKER, capture_output=True, text=True, timeout=60)
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        # and it is not just lenient: a misspelt key is refused
        with tempfile.TemporaryDirectory() as d:
            bad = os.path.join(d, "docker-compose.yml")
            with open(os.path.join(DOCKER, "docker-compose.yml")) as f:
                text = f.read()
            text = text.replace("context: ..", "context: " + SRC)
            with open(bad, "w") as f:
                f.write(text.replace("depends_on:", "depend_on:", 1))
            cp = subprocess.run([exe, "-f", bad, "config", "-q"], cwd=d,
                                capture_output=True, text=True, timeout=60)
            self.assertNotEqual(cp.returncode, 0, "docker-compose accepted depend_on")
            self.assertIn("depend_on", cp.stdout + cp.stderr)

    def test_services(self):
        svc = self.compose["services"]
        self.assertEqual(set(svc), {"postgres", "pgwharf", "pgbench"})
        self.assertEqual(svc["postgres"]["image"], "postgres:15")

        px = svc["pgwharf"]
        build_ctx = os.path.normpath(os.path.join(DOCKER, px["build"]["context"]))
        self.assertEqual(build_ctx, os.path.normpath(SRC))
        self.assertTrue(os.path.isfile(os.path.join(build_ctx, px["build"]["dockerfile"])))
        self.assertEqual(px["depends_on"]["postgres"]["condition"], "service_healthy")
        mounts = {}
        for v in px["volumes"]:
            host, target, *mode = v.split(":")
            self.assertTrue(os.path.isfile(os.path.join(DOCKER, host)), host)
            self.assertEqual(mode, ["ro"], v)
            mounts[target] = os.path.join(DOCKER, host)
        stages = parse_dockerfile(os.path.join(DOCKER, "Dockerfile"))
        cmd = dict(stages[-1]["instrs"])["CMD"]
        conf_path = re.findall(r'"([^"]+)"', cmd)[-1]
        self.assertIn(conf_path, mounts, "the image's config path is not mounted")
        with open(mounts[conf_path]) as f:
            auth_file = re.search(r"^auth_file\s*=\s*(\S+)", f.read(), re.M).group(1)
        self.assertIn(auth_file, mounts, "the config's auth_file is not mounted")

        bench = svc["pgbench"]
        self.assertEqual(bench["depends_on"]["pgwharf"]["condition"], "service_healthy")
        self.assertEqual(bench["environment"]["PGHOST"], "pgwharf")
        self.assertIn("pgbench -i", bench["command"][0])


class TestImage(pt.PgwharfTestCase):
    """The Dockerfile's build stage, carried out here; then the binary it
    makes serves the compose example's load."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tmp = tempfile.mkdtemp(prefix="pgwharf-docker-")
        cls.root = os.path.join(cls.tmp, "root")        # the image's "/"
        cls.stages = parse_dockerfile(os.path.join(DOCKER, "Dockerfile"))
        cls.build_stage = cls.stages[0]
        cls.runtime_stage = cls.stages[-1]
        cls.build_log = cls._run_build_stage()

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)
        super().tearDownClass()

    @classmethod
    def in_image(cls, path, workdir):
        path = path if path.startswith("/") else os.path.join(workdir, path)
        return os.path.join(cls.root, path.lstrip("/"))

    @classmethod
    def _run_build_stage(cls):
        ctx = os.path.join(cls.tmp, "context")
        copy_context(SRC, ctx, dockerignore_patterns(
            os.path.join(DOCKER, "Dockerfile.dockerignore")))
        workdir, log = "/", []
        env = dict(os.environ, PGW_SKIP_APT="1")
        for kw, args in cls.build_stage["instrs"]:
            if kw == "WORKDIR":
                workdir = args
                os.makedirs(cls.in_image(workdir, "/"), exist_ok=True)
            elif kw == "COPY":
                *srcs, dest = args.split()
                assert not any(s.startswith("--") for s in srcs), args
                dst = cls.in_image(dest, workdir)
                for s in srcs:
                    sp = os.path.join(ctx, s)
                    if os.path.isdir(sp):
                        shutil.copytree(sp, dst, symlinks=True, dirs_exist_ok=True)
                    else:
                        if dest.endswith("/"):
                            os.makedirs(dst, exist_ok=True)
                        shutil.copy2(sp, dst)
            elif kw == "RUN":
                cp = subprocess.run(["/bin/sh", "-c", args], cwd=cls.in_image(workdir, "/"),
                                    env=env, capture_output=True, text=True, timeout=900)
                log.append("$ %s\n%s%s" % (args, cp.stdout, cp.stderr))
                if cp.returncode != 0:
                    raise AssertionError("build stage RUN failed (exit %d):\n%s"
                                         % (cp.returncode, log[-1][-4000:]))
            elif kw in ("ARG", "ENV", "LABEL"):
                pass
            else:
                raise AssertionError("the build stage uses %s, which this test does "
                                     "not carry out" % kw)
        cls.workdir = workdir
        return "\n".join(log)

    def binary(self):
        """The file the runtime stage copies from the build stage."""
        for kw, args in self.runtime_stage["instrs"]:
            if kw == "COPY" and args.startswith("--from=%s " % self.build_stage["name"]):
                src, dest = args.split()[1:]
                if dest == "/usr/local/bin/pgwharf":
                    return self.in_image(src, "/")
        self.fail("the runtime stage does not copy /usr/local/bin/pgwharf from the build stage")

    def test_build_stage_uses_the_project_scripts(self):
        runs = [a for k, a in self.build_stage["instrs"] if k == "RUN"]
        self.assertTrue(any(re.match(r"scripts/deps\.sh --build-only\b", r) for r in runs), runs)
        self.assertTrue(any(re.match(r"scripts/build\.sh \S+ --type Release\b", r) for r in runs), runs)
        with open(os.path.join(SRC, "scripts", "test.sh")) as f:
            self.assertIn("scripts/build.sh", f.read(), "test.sh no longer builds with build.sh")
        runtime_runs = [a for k, a in self.runtime_stage["instrs"] if k == "RUN"]
        self.assertTrue(any(re.search(r"deps\.sh --runtime-only\b", r) for r in runtime_runs),
                        runtime_runs)

    def test_binary_runs(self):
        cp = subprocess.run([self.binary(), "--version"], capture_output=True, text=True,
                            timeout=30)
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        self.assertIn("pgwharf", cp.stdout + cp.stderr)

    def test_runtime_packages_suffice(self):
        cp = subprocess.run(["ldd", self.binary()], capture_output=True, text=True, timeout=30)
        self.assertEqual(cp.returncode, 0, cp.stderr)
        libs = set()
        for line in cp.stdout.splitlines():
            self.assertNotIn("not found", line)
            m = re.search(r"(/\S+)\s+\(0x", line)
            if m:
                libs.add(m.group(1))
        self.assertTrue(any("libev" in l for l in libs), cp.stdout)
        allowed = depends_closure(deps_group("runtime"))
        missing = {l: p for l, p in owners(libs).items() if p not in allowed}
        self.assertEqual(missing, {}, "libraries outside `deps.sh --runtime-only` "
                         "(and its dependencies)")

    def test_build_packages_suffice(self):
        """Every system header and library the compiler read (CMake's
        dependency files) belongs to the build group or what it pulls in."""
        build_dir = None
        for line in self.build_log.splitlines():
            m = re.match(r"\$ scripts/build\.sh (\S+)", line)
            if m:
                build_dir = self.in_image(m.group(1), self.workdir)
        self.assertIsNotNone(build_dir)
        files = set()
        for dirpath, _, filenames in os.walk(build_dir):
            for fn in filenames:
                if fn.endswith(".d") or fn in ("compiler_depend.make", "link.txt"):
                    with open(os.path.join(dirpath, fn), errors="replace") as f:
                        for tok in re.split(r"[\s\\]+", f.read()):
                            tok = tok.rstrip(":")
                            if tok.startswith("/usr/") and os.path.exists(tok):
                                files.add(os.path.normpath(tok))
        self.assertTrue(any(f.endswith("/ev.h") for f in files), sorted(files)[:20])
        allowed = depends_closure(deps_group("build"))
        missing = {f: p for f, p in owners(files).items() if p not in allowed}
        self.assertEqual(missing, {}, "build inputs outside `deps.sh --build-only`")

    def test_runs_as_non_root_with_the_mounted_config(self):
        instrs = self.runtime_stage["instrs"]
        users = [a for k, a in instrs if k == "USER"]
        self.assertTrue(users and users[-1] not in ("root", "0"), users)
        entry = [a for k, a in instrs if k == "ENTRYPOINT"][-1]
        self.assertEqual(re.findall(r'"([^"]+)"', entry), ["/usr/local/bin/pgwharf"])

    def test_compose_load_through_the_image_binary(self):
        with open(os.path.join(DOCKER, "pgwharf.ini")) as f:
            ini = f.read()
        m = re.search(r"^(\w+)\s*=\s*host=(\S+) port=(\d+) dbname=(\w+)", ini, re.M)
        self.assertIsNotNone(m, "no [databases] entry in docker/pgwharf.ini")
        dbname = m.group(4)
        if self.pg.psql("select count(*) from pg_database where datname = '%s'" % dbname,
                        db="postgres") == "0":
            self.pg.psql("create database %s" % dbname, db="postgres")
        port = pt.free_port()
        tmp = tempfile.mkdtemp(prefix="pgwharf-docker-run-")
        self.addCleanup(shutil.rmtree, tmp, True)
        ini = ini.replace("host=%s port=%s" % (m.group(2), m.group(3)),
                          "host=%s port=%s" % (self.pg.host, self.pg.port))
        ini = re.sub(r"^listen_addr\s*=.*$", "listen_addr = 127.0.0.1", ini, flags=re.M)
        ini = re.sub(r"^listen_port\s*=.*$", "listen_port = %d" % port, ini, flags=re.M)
        ini = re.sub(r"^auth_file\s*=.*$", "auth_file = %s" %
                     os.path.join(DOCKER, "userlist.txt"), ini, flags=re.M)
        conf = os.path.join(tmp, "pgwharf.ini")
        with open(conf, "w") as f:
            f.write(ini)
        log = open(os.path.join(tmp, "pgwharf.log"), "wb")
        self.addCleanup(log.close)
        proc = subprocess.Popen([self.binary(), conf], stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

        def stop():
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
        self.addCleanup(stop)

        def log_text():
            with open(os.path.join(tmp, "pgwharf.log"), errors="replace") as f:
                return f.read()
        self.assertTrue(pt.wait_port("127.0.0.1", port, 15, proc=proc), log_text())

        with open(os.path.join(DOCKER, "docker-compose.yml")) as f:
            bench = yaml.safe_load(f)["services"]["pgbench"]
        script = bench["command"][0].replace("$$", "$")
        script = script.replace("pgbench -i -s 10", "pgbench -i -s 1")
        script, n = re.subn(r"-T \d+", "-T 3", script)
        self.assertEqual(n, 1, script)
        env = dict(os.environ)
        env.update({k: str(v) for k, v in bench["environment"].items()})
        env.update(PGHOST="127.0.0.1", PGPORT=str(port),
                   PATH=os.path.dirname(pt.pg_bin("pgbench")) + ":" + env["PATH"])
        cp = subprocess.run(["bash", "-c", script], env=env, capture_output=True,
                            text=True, timeout=180)
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        self.assertRegex(cp.stdout, r"number of failed transactions: 0 \(")
        self.assertGreater(pt.parse_tps(cp.stdout) or 0, 0, cp.stdout)
        stop()
        self.assertEqual(proc.returncode, 0, log_text())


if __name__ == "__main__":
    unittest.main()
