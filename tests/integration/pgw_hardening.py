"""pgw_hardening - helpers for the hardening tests (test_faults, test_load,
test_crosstalk, test_malformed): a compact raw-protocol asyncio client, a
load "fleet" that measures every request, a pgbench runner in the
background, and leak checks (fds, server connections, RSS) that poll with
a bound; socket_rows, a process's TCP sockets read from /proc (test_load,
test_notify); FakeServer, the base of the fake PostgreSQL servers of
test_hosts, test_admin and test_replication, and QueryServer, one that
answers simple Queries (test_notify, test_startup_params).  Not a test
module itself (no test_ prefix: ctest does not run it).

Standard library only (plus what pgwharf_test uses).

    rc = await RawConn.connect(host, port, user, db, password)
    rows, err = await rc.query("select 1")        # err: dict of fields or None
"""

import asyncio
import hashlib
import hmac
import base64
import os
import random
import re
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time

import pgwharf_test as pt


class ProtocolError(Exception):
    pass


def parse_fields(body):
    """ErrorResponse/NoticeResponse body -> {'S':..., 'C':..., 'M':...}."""
    out = {}
    i = 0
    while i < len(body) and body[i] != 0:
        code = chr(body[i])
        end = body.index(b"\x00", i + 1)
        out[code] = body[i + 1:end].decode("utf-8", "replace")
        i = end + 1
    return out


def startup_packet(user, db, **params):
    body = struct.pack("!I", 196608)
    for k, v in [("user", user), ("database", db)] + list(params.items()):
        body += k.encode() + b"\x00" + (v if isinstance(v, bytes) else v.encode()) + b"\x00"
    body += b"\x00"
    return struct.pack("!I", len(body) + 4) + body


def msg(t, body=b""):
    return t + struct.pack("!I", len(body) + 4) + body


def query_msg(sql):
    return msg(b"Q", sql.encode() + b"\x00")


def parse_msg(stmt, sql):
    """Parse of sql into statement stmt ("" unnamed), no parameter types."""
    return msg(b"P", stmt.encode() + b"\x00" + sql.encode() + b"\x00" + struct.pack("!H", 0))


def ext_msgs(sql, *params, parse=True, stmt="", describe=True):
    """What libpq's PQexecParams sends: Parse into the unnamed statement (or
    stmt), Bind (text parameters), Describe the portal (unless describe is
    False), Execute, Sync."""
    out = b""
    if parse:
        out += parse_msg(stmt, sql)
    vals = b"".join(struct.pack("!i", len(v.encode())) + v.encode() for v in params)
    out += msg(b"B", b"\x00" + stmt.encode() + b"\x00" + struct.pack("!H", 0) +
               struct.pack("!H", len(params)) + vals + struct.pack("!H", 0))
    if describe:
        out += msg(b"D", b"P\x00")
    out += msg(b"E", b"\x00" + struct.pack("!I", 0))
    out += msg(b"S")
    return out


def auth_reply(body, user, password, state):
    """The client's answer to an AuthenticationRequest (R) body: bytes to
    send, b"" for none (AuthenticationOk, SASLFinal, checked).  Cleartext,
    md5 and SCRAM-SHA-256; state is a dict kept over one login."""
    code = struct.unpack("!I", body[:4])[0]
    if code == 0:
        return b""
    if code == 3:
        return msg(b"p", (password or "").encode() + b"\x00")
    if code == 5:
        inner = hashlib.md5((password + user).encode()).hexdigest()
        outer = hashlib.md5(inner.encode() + body[4:8]).hexdigest()
        return msg(b"p", b"md5" + outer.encode() + b"\x00")
    if code == 10:
        state["scram"] = _Scram(password)
        first = state["scram"].client_first()
        return msg(b"p", b"SCRAM-SHA-256\x00" + struct.pack("!i", len(first)) + first)
    if code == 11:
        return msg(b"p", state["scram"].client_final(body[4:]))
    if code == 12:
        state["scram"].check_final(body[4:])
        return b""
    raise ProtocolError("unsupported auth request %d" % code)


class PgError(Exception):
    def __init__(self, fields):
        super().__init__("%s %s" % (fields.get("C"), fields.get("M")))
        self.fields = fields
        self.sqlstate = fields.get("C")


class RawConn:
    """One client connection speaking the v3 protocol by hand (asyncio)."""

    def __init__(self, reader, writer):
        self.r = reader
        self.w = writer
        self.params = {}
        self.key = None
        self.closed = False

    @classmethod
    async def connect(cls, host, port, user, db, password=None, timeout=30.0, **params):
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        c = cls(reader, writer)
        try:
            await asyncio.wait_for(c._login(user, db, password, params), timeout)
        except BaseException:
            c.abort()
            raise
        return c

    async def read_msg(self):
        hdr = await self.r.readexactly(5)
        n = struct.unpack("!I", hdr[1:])[0]
        if n < 4:
            raise ProtocolError("bad length %d for %r" % (n, hdr[:1]))
        body = await self.r.readexactly(n - 4) if n > 4 else b""
        return hdr[:1], body

    async def _login(self, user, db, password, params):
        self.w.write(startup_packet(user, db, **params))
        state = {}
        while True:
            t, body = await self.read_msg()
            if t == b"E":
                raise PgError(parse_fields(body))
            if t == b"R":
                reply = auth_reply(body, user, password, state)
                if reply:
                    self.w.write(reply)
            elif t == b"S":
                k, v = body.split(b"\x00")[:2]
                self.params[k.decode()] = v.decode()
            elif t == b"K":
                self.key = struct.unpack("!II", body)
            elif t == b"Z":
                return
            elif t == b"N":
                continue
            elif t == b"v":
                continue
            else:
                raise ProtocolError("unexpected %r during login" % t)

    async def query(self, sql):
        """Simple query; returns (rows, error_fields).  rows: list of lists
        of bytes/None for every DataRow of every statement."""
        self.w.write(query_msg(sql))
        return await self.read_result()

    async def read_result(self):
        rows, err = [], None
        while True:
            t, body = await self.read_msg()
            if t == b"D":
                rows.append(data_row(body))
            elif t == b"E":
                err = parse_fields(body)
                if err.get("S") in ("FATAL", "PANIC"):
                    # The connection ends after a FATAL: no ReadyForQuery.
                    self.closed = True
                    return rows, err
            elif t == b"Z":
                return rows, err
            elif t in (b"T", b"C", b"N", b"S", b"I", b"A"):
                continue
            else:
                raise ProtocolError("unexpected message %r" % t)

    def send(self, data):
        self.w.write(data)

    def abort(self):
        """Drop the TCP connection at once (RST when data is unread)."""
        self.closed = True
        try:
            self.w.transport.abort()
            self.w.close()
        except Exception:
            pass

    async def close(self):
        if self.closed:
            return
        self.closed = True
        try:
            self.w.write(msg(b"X"))
            self.w.close()
            await asyncio.wait_for(self.w.wait_closed(), 5)
        except Exception:
            pass


def data_row(body):
    """A DataRow body as a list of column values (bytes, None for NULL)."""
    n = struct.unpack("!H", body[:2])[0]
    out, i = [], 2
    for _ in range(n):
        ln = struct.unpack("!i", body[i:i + 4])[0]
        i += 4
        if ln < 0:
            out.append(None)
        else:
            out.append(body[i:i + ln])
            i += ln
    return out


class _Scram:
    def __init__(self, password):
        self.password = (password or "").encode()
        self.nonce = base64.b64encode(os.urandom(18)).decode()
        self.first_bare = "n=,r=" + self.nonce

    def client_first(self):
        return ("n,," + self.first_bare).encode()

    def client_final(self, server_first):
        sf = server_first.decode()
        attrs = dict(kv.split("=", 1) for kv in sf.split(","))
        salt = base64.b64decode(attrs["s"])
        salted = hashlib.pbkdf2_hmac("sha256", self.password, salt, int(attrs["i"]))
        ckey = hmac.new(salted, b"Client Key", "sha256").digest()
        stored = hashlib.sha256(ckey).digest()
        without = "c=biws,r=" + attrs["r"]
        auth = ",".join([self.first_bare, sf, without]).encode()
        sig = hmac.new(stored, auth, "sha256").digest()
        proof = bytes(a ^ b for a, b in zip(ckey, sig))
        skey = hmac.new(salted, b"Server Key", "sha256").digest()
        self.expect = base64.b64encode(hmac.new(skey, auth, "sha256").digest()).decode()
        return (without + ",p=" + base64.b64encode(proof).decode()).encode()

    def check_final(self, body):
        if body.decode() != "v=" + self.expect:
            raise ProtocolError("bad server signature")


# --- observation -------------------------------------------------------------

def sanitized(px):
    """Is this pgwharf built with ASan/UBSan?  (Looks at its mapped libraries
    and, for static runtimes, its symbols' names in /proc/PID/exe.)"""
    try:
        with open("/proc/%d/maps" % px.pid) as f:
            maps = f.read()
        if "libasan" in maps or "libubsan" in maps:
            return True
    except OSError:
        pass
    cache = os.path.join(os.environ.get("PGW_BUILD_DIR", ""), "CMakeCache.txt")
    try:
        with open(cache) as f:
            return "PGW_SANITIZE:BOOL=ON" in f.read()
    except OSError:
        return False


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick


def raise_nofile(want):
    """Raise this process's RLIMIT_NOFILE soft limit towards want (capped
    at the hard limit); children inherit it.  Returns (old soft, new soft)."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    new = min(max(soft, want), hard)
    if new != soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    return soft, new


def set_nofile(soft):
    import resource
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, hard), hard))


def server_conns(pg, user, db=None, states=False):
    """Client backends of user (and db) on the cluster; with states=True a
    dict state -> count."""
    cond = "backend_type = 'client backend' and pid <> pg_backend_pid() and usename = '%s'" % user
    if db:
        cond += " and datname = '%s'" % db
    if not states:
        return int(pg.psql("select count(*) from pg_stat_activity where " + cond,
                           db="postgres", via_socket=True))
    out = pg.psql("select coalesce(state, '?'), count(*) from pg_stat_activity where " + cond
                  + " group by 1", db="postgres", via_socket=True)
    res = {}
    for line in out.splitlines():
        if line:
            s, n = line.split("|")
            res[s] = int(n)
    return res


# /proc/net/tcp's st column (include/net/tcp_states.h)
TCP_STATES = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2",
              6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN",
              11: "CLOSING", 12: "NEW_SYN_RECV"}


class TcpRow:
    """One row of /proc/net/tcp or tcp6: local and remote as (address,
    port), state by name (TCP_STATES), rx_queue / tx_queue in bytes (unread
    by the socket's owner / not acknowledged by the peer), the socket's
    inode."""
    __slots__ = ("local", "remote", "state", "tx_queue", "rx_queue", "inode")

    def __init__(self, cols, family):
        self.local = _proc_addr(cols[1], family)
        self.remote = _proc_addr(cols[2], family)
        st = int(cols[3], 16)
        self.state = TCP_STATES.get(st, "0x%02X" % st)
        tx, rx = cols[4].split(":")
        self.tx_queue, self.rx_queue = int(tx, 16), int(rx, 16)
        self.inode = cols[9]

    def __repr__(self):
        return "TcpRow(%s:%d -> %s:%d %s rx=%d tx=%d inode=%s)" % (
            self.local + self.remote + (self.state, self.rx_queue, self.tx_queue, self.inode))


def _proc_addr(text, family):
    """/proc/net/tcp's "0100007F:1F90" -> ("127.0.0.1", 8080): the address
    is in 32-bit words of the host's byte order."""
    addr, port = text.split(":")
    words = [int(addr[i:i + 8], 16) for i in range(0, len(addr), 8)]
    raw = struct.pack("=%dI" % len(words), *words)
    return socket.inet_ntop(family, raw), int(port, 16)


def socket_inodes(pid):
    """The inodes (strings, as /proc/net/tcp's) of the sockets among process
    pid's descriptors; an fd closed while they are read is left out."""
    inodes = set()
    fd_dir = "/proc/%d/fd" % pid
    for fd in os.listdir(fd_dir):
        try:
            link = os.readlink(os.path.join(fd_dir, fd))
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[len("socket:["):-1])
    return inodes


def socket_rows(pid=None):
    """The TCP sockets (IPv4 and IPv6) of process pid, read from /proc: its
    descriptors' socket inodes, then the rows of /proc/PID/net/tcp and
    tcp6 with those inodes (TcpRow).  pid None: every row of this network
    namespace, whoever holds the socket (a TIME_WAIT one has no inode).
    The two are read one after the other, not atomically: a socket the
    process opens between them is missing."""
    inodes = socket_inodes(pid) if pid is not None else None
    base = "/proc/%s/net/" % (pid if pid is not None else "self")
    rows = []
    for name, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        try:
            with open(base + name) as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue                                  # (no IPv6 in the kernel)
        for line in lines:
            cols = line.split()
            if inodes is None or cols[9] in inodes:
                rows.append(TcpRow(cols, family))
    return rows


def own_server_sockets(pid, port):
    """pgwharf's own TCP connections to the PostgreSQL port, read from
    /proc at about the moment its fds are counted (PostgreSQL's list of
    backends lags: a backend of a pgwharf just stopped may still be
    exiting, one just connected may not be listed yet)."""
    return sum(1 for r in socket_rows(pid) if r.remote[1] == port and r.state == "ESTABLISHED")


class Baseline:
    """What an idle pgwharf looks like, to compare with after a scenario:
    fds that are not server connections (pgwharf's own view of those), and
    RSS.

    Under ASan the RSS is ASan's (a quarantine of freed blocks up to 256 MB,
    shadow memory): there it is printed, not checked; LeakSanitizer checks
    for leaks when that pgwharf exits instead."""

    def __init__(self, px, pg, user, db=None):
        self.px, self.pg, self.user, self.db = px, pg, user, db
        self.fds = self.other_fds()
        self.rss_kb = px.rss_kb()
        self.check_rss = not sanitized(px)

    def other_fds(self):
        """Open fds of pgwharf that are not its server connections."""
        return self.px.fd_count() - own_server_sockets(self.px.pid, self.pg.port)

    def settle(self, testcase, max_servers, rss_margin_kb=32 * 1024, timeout=30.0,
               what="scenario"):
        """Poll (bounded) until pgwharf is back to the baseline: no extra
        fds, at most max_servers server connections and all of them idle,
        RSS within the margin.  Fails the test with the numbers if not."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            srv = server_conns(self.pg, self.user, self.db, states=True)
            nsrv = sum(srv.values())
            fds = self.other_fds()
            rss = self.px.rss_kb()
            busy = {k: v for k, v in srv.items() if k != "idle"}
            ok = (fds <= self.fds and nsrv <= max_servers and not busy
                  and (rss <= self.rss_kb + rss_margin_kb or not self.check_rss))
            last = ("after %s: non-server fds %d (baseline %d), server connections %s "
                    "(max %d), RSS %d kB (baseline %d kB, margin %d kB%s)"
                    % (what, fds, self.fds, srv, max_servers, rss, self.rss_kb, rss_margin_kb,
                       "" if self.check_rss else ", not checked under ASan"))
            if ok:
                print("settled: " + last)
                return
            if time.monotonic() > deadline:
                testcase.fail("pgwharf did not return to baseline within %ss: %s\n"
                              "its sockets:\n%s\nlog tail:\n%s"
                              % (timeout, last, sockets(self.px.pid), self.px.log_tail(30)))
            time.sleep(0.25)


def unread_on_port(pid, port, peer=False):
    """{client's port: Recv-Q} of each established TCP socket of process
    pid on its local port: what each client sent that it has not read yet
    (from `ss`).  With peer=True, of its sockets to `port` (pgwharf's
    server links: port is PostgreSQL's), keyed by their local port."""
    cp = subprocess.run(["ss", "-tnpH", "state", "established"], capture_output=True,
                        text=True, timeout=30)
    mine, other = (3, 2) if peer else (2, 3)
    out = {}
    for line in cp.stdout.splitlines():
        f = line.split()
        if len(f) >= 4 and "pid=%d," % pid in line and f[mine].rsplit(":", 1)[-1] == str(port):
            out[int(f[other].rsplit(":", 1)[-1])] = int(f[0])
    return out


def tcp_queues(local_port, peer_port):
    """(Recv-Q, Send-Q) of the established TCP socket on 127.0.0.1 from
    local_port to peer_port, whichever process holds it (from `ss`), or
    None.  Send-Q is what its owner wrote that the peer has not acked."""
    cp = subprocess.run(["ss", "-tnH", "state", "established", "sport", "=", ":%d" % local_port,
                         "dport", "=", ":%d" % peer_port], capture_output=True, text=True,
                        timeout=30)
    for line in cp.stdout.splitlines():
        f = line.split()
        if len(f) >= 4:
            return int(f[0]), int(f[1])
    return None


def tcp_zero_window(local_port, peer_port):
    """Whether the established TCP socket on 127.0.0.1 from local_port to
    peer_port is on its persist timer (from `ss -o`): it has bytes to send,
    none in flight, and the peer's window is shut -- only the peer's
    reading (a window update) lets it send more."""
    cp = subprocess.run(["ss", "-tnoH", "state", "established", "sport", "=",
                         ":%d" % local_port, "dport", "=", ":%d" % peer_port],
                        capture_output=True, text=True, timeout=30)
    return "timer:(persist," in cp.stdout


def slow_reader_login(host, port, user, db, password=None, rcvbuf=4096, timeout=30):
    """A raw socket logged in (sync_login) with a small receive buffer
    (SO_RCVBUF set before the connect: the window it offers stays small),
    so that a client that does not read fills it soon and pgwharf's writes
    to it wait: (socket, its local port).  The caller closes it."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(timeout)
    try:
        s.connect((host, port))
        sync_login(s, user, db, password)
    except BaseException:
        s.close()
        raise
    return s, s.getsockname()[1]


def read_all_of(px, client_port):
    """A condition for pt.wait_until: pgwharf (px) has read all the client
    on client_port sent -- the client's Send-Q empty (or its socket gone)
    and nothing unread in pgwharf's socket."""
    def all_read():
        sent = tcp_queues(client_port, px.port)
        return ((sent is None or sent[1] == 0) and
                unread_on_port(px.pid, px.port).get(client_port, 0) == 0)
    return all_read


def sockets(pid):
    """A line for each TCP socket of pid (socket_rows): state, local and
    peer address."""
    return "\n".join("%s %s:%d %s:%d" % ((r.state,) + r.local + r.remote)
                     for r in socket_rows(pid))


wait_until = pt.wait_until


# --- load --------------------------------------------------------------------

class Fleet:
    """N clients in a background asyncio loop, each logging in through
    pgwharf and running `sql` in a loop until stop().  Every request (login
    or query) is timed and classified:
      ok        a result and ReadyForQuery
      sqlstate  an ErrorResponse with a SQLSTATE (then a reconnect if FATAL)
      broken    anything else: connection refused/reset/closed without an
                ErrorResponse, a protocol error, or no answer within
                `hang_after` seconds (counted as a hang)
    The slowest request of each kind is kept."""

    def __init__(self, px, n, user, password, db, sql="select 1", hang_after=30.0,
                 pause=0.0):
        self.px, self.n, self.user, self.password, self.db = px, n, user, password, db
        self.sql = sql
        self.hang_after = hang_after
        self.pause = pause
        self.ok = 0
        self.logins = 0
        self.errors = {}           # sqlstate -> count
        self.broken = []           # (what, detail)
        self.max_latency = 0.0
        self.max_latency_what = ""
        self._stop = threading.Event()
        self._thread = None
        self._lock = threading.Lock()
        self.last_ok = 0.0

    def start(self):
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout=60):
        self._stop.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise AssertionError("fleet did not stop within %ss" % timeout)

    def _note(self, kind, latency, detail=""):
        with self._lock:
            if latency > self.max_latency:
                self.max_latency = latency
                self.max_latency_what = "%s %s" % (kind, detail)
            if kind == "ok":
                self.ok += 1
                self.last_ok = time.monotonic()
            elif kind == "sqlstate":
                self.errors[detail] = self.errors.get(detail, 0) + 1
            elif kind == "login-ok":
                self.logins += 1
            else:
                if len(self.broken) < 50:
                    self.broken.append(detail)

    def oks(self):
        with self._lock:
            return self.ok

    async def _client(self, k):
        rnd = random.Random(k)
        conn = None
        while not self._stop.is_set():
            t0 = time.monotonic()
            if conn is None or conn.closed:
                if conn is not None:
                    conn.abort()            # after a FATAL: close our end too
                try:
                    conn = await asyncio.wait_for(
                        RawConn.connect(self.px.host, self.px.port, self.user, self.db,
                                        self.password, timeout=self.hang_after + 5),
                        self.hang_after)
                    self._note("login-ok", time.monotonic() - t0)
                except PgError as e:
                    self._note("sqlstate", time.monotonic() - t0, e.sqlstate or "none")
                    if not e.sqlstate:
                        self._note("broken", 0, "login error without SQLSTATE: %s" % e)
                    conn = None
                    await asyncio.sleep(0.05 + rnd.random() * 0.1)
                    continue
                except asyncio.TimeoutError:
                    self._note("broken", time.monotonic() - t0, "login hung > %ss" % self.hang_after)
                    conn = None
                    continue
                except (OSError, asyncio.IncompleteReadError, ProtocolError) as e:
                    self._note("broken", time.monotonic() - t0, "login: %r" % e)
                    conn = None
                    await asyncio.sleep(0.1)
                    continue
                t0 = time.monotonic()
            try:
                rows, err = await asyncio.wait_for(conn.query(self.sql), self.hang_after)
                lat = time.monotonic() - t0
                if err is None:
                    self._note("ok", lat)
                else:
                    self._note("sqlstate", lat, err.get("C") or "none")
                    if not err.get("C"):
                        self._note("broken", 0, "error without SQLSTATE: %r" % err)
            except asyncio.TimeoutError:
                self._note("broken", time.monotonic() - t0, "query hung > %ss" % self.hang_after)
                conn.abort()
            except (OSError, asyncio.IncompleteReadError, ProtocolError) as e:
                self._note("broken", time.monotonic() - t0, "query: %r" % e)
                conn.abort()
            if self.pause:
                await asyncio.sleep(self.pause * rnd.random())
        if conn is not None:
            await conn.close()
            conn.abort()

    async def _main(self):
        await asyncio.gather(*[self._client(k) for k in range(self.n)])


class Pgbench:
    """pgbench through pgwharf in the background (a custom script, so no
    pgbench tables are needed)."""

    def __init__(self, px, args, user, password, db, script="select 1;\n"):
        self.dir = tempfile.mkdtemp(prefix="pgw-bench-")
        self.script = os.path.join(self.dir, "bench.sql")
        with open(self.script, "w") as f:
            f.write(script)
        e = dict(os.environ, PGPASSWORD=password, PGSSLMODE="disable", PGCONNECT_TIMEOUT="10")
        cmd = [pt.pg_bin("pgbench"), "-h", px.host, "-p", str(px.port), "-U", user, "-n",
               "-f", self.script] + list(args) + [db]
        self.cmd = cmd
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=e, start_new_session=True)
        self.out = self.err = ""

    def kill(self):
        """Stop it (by its PID) if it still runs, and remove its script: for
        cleanups."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.communicate(timeout=10)
        self._remove_script()

    def _remove_script(self):
        try:
            os.unlink(self.script)
            os.rmdir(self.dir)
        except OSError:
            pass

    def sockets(self):
        """How many sockets pgbench holds (its connected clients)."""
        try:
            return len(socket_inodes(self.proc.pid))
        except OSError:
            return 0                                  # (pgbench gone)

    def wait(self, timeout):
        try:
            self.out, self.err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.out, self.err = self.proc.communicate(timeout=10)
            raise AssertionError("pgbench did not finish within %ss (hung client?)\n%s\n%s"
                                 % (timeout, self.out, self.err[-3000:]))
        finally:
            self._remove_script()
        return self.proc.returncode

    def failed_transactions(self):
        m = re.search(r"number of failed transactions: (\d+)", self.out)
        return int(m.group(1)) if m else None

    def transactions(self):
        m = re.search(r"number of transactions actually processed: (\d+)", self.out)
        return int(m.group(1)) if m else None


# --- blocking sockets ----------------------------------------------------------

def recv_msg(sock):
    """One backend message from a blocking socket: (type, body); raises
    EOFError when the peer closed."""
    hdr = _recv_exact(sock, 5)
    n = struct.unpack("!I", hdr[1:])[0]
    return hdr[:1], _recv_exact(sock, n - 4)


def _recv_exact(sock, n):
    buf = bytearray()                 # grows in place: bytes += copied it all each time
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise EOFError("peer closed after %d of %d bytes" % (len(buf), n))
        buf += chunk
    return bytes(buf)


def sync_login(sock, user, db, password=None, key_data=None, **startup):
    """Log in on a connected blocking socket (trust, cleartext, md5 or
    SCRAM-SHA-256), startup parameters as keywords; returns the
    ParameterStatus dict.  Raises PgError on an ErrorResponse.  A list
    given as key_data gets the BackendKeyData's (pid, key) appended."""
    sock.sendall(startup_packet(user, db, **startup))
    return finish_login(sock, user, password, key_data)


def finish_login(sock, user, password=None, key_data=None):
    """The rest of sync_login, once the startup packet is sent."""
    params = {}
    state = {}
    while True:
        t, body = recv_msg(sock)
        if t == b"E":
            raise PgError(parse_fields(body))
        if t == b"R":
            reply = auth_reply(body, user, password, state)
            if reply:
                sock.sendall(reply)
        elif t == b"S":
            k, v = body.split(b"\x00")[:2]
            params[k.decode()] = v.decode()
        elif t == b"K" and key_data is not None:
            key_data.append(struct.unpack("!II", body[:8]))
        elif t == b"Z":
            return params


def raw_login(test, px, **params):
    """A raw-protocol client of px, logged in as the cluster's user to its
    database (startup params too); closed when the test ends."""
    s = socket.create_connection((px.host, px.port), timeout=20)
    test.addCleanup(s.close)
    sync_login(s, test.pg.user, test.pg.database, test.pg.password, **params)
    return s


def read_until_ready(sock):
    """Backend messages up to and including ReadyForQuery: [(type, body)]."""
    got = []
    while True:
        t, body = recv_msg(sock)
        got.append((t, body))
        if t == b"Z":
            return got


def simple_query(sock, sql):
    """sql as a simple Query on a logged-in blocking socket: (rows, errors),
    rows as data_row lists, errors as parse_fields dicts, to ReadyForQuery."""
    sock.sendall(query_msg(sql))
    got = read_until_ready(sock)
    return ([data_row(b) for t, b in got if t == b"D"],
            [parse_fields(b) for t, b in got if t == b"E"])


class Gate:
    """An advisory-lock gate: lock `key` held on a connection straight to
    PostgreSQL until open().  A query doing pg_advisory_xact_lock_shared(key)
    (void, so '' in a row) waits there: a test holds a server busy, or an
    auth_query lookup running, for exactly as long as it needs.  Keys: 7000
    and up (test_pipeline's async gates use lower ones); one per test."""

    def __init__(self, pg, key, db=None):
        self.key = key
        self.sock = socket.create_connection((pg.host, pg.port), timeout=30)
        sync_login(self.sock, pg.user, db or pg.database, pg.password)
        self._run("select pg_advisory_lock(%d)" % key)

    def _run(self, sql):
        rows, errs = simple_query(self.sock, sql)
        if errs:
            raise PgError(errs[0])
        return rows

    def sql(self):
        return "pg_advisory_xact_lock_shared(%d)" % self.key

    def open(self):
        if self.sock is None:
            return
        try:
            self._run("select pg_advisory_unlock(%d)" % self.key)
        finally:
            self.close()

    def close(self):
        if self.sock is not None:
            self.sock.close()         # the session ends: the lock goes too
            self.sock = None


def read_until_closed(sock, timeout):
    """Everything the peer sends until it closes; (data, closed?)."""
    sock.settimeout(timeout)
    # A bytearray, not bytes +=: that copies all read so far per chunk,
    # quadratic over megabytes (30-50 s for 10 MB under CPU load).
    data = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                return bytes(data), True
            data += chunk
    except (socket.timeout, TimeoutError):
        return bytes(data), False
    except ConnectionResetError:
        return bytes(data), True
    return bytes(data), False


def error_fields_in(data):
    """Fields of each ErrorResponse found in a stream of backend messages."""
    out, i = [], 0
    while i + 5 <= len(data):
        t = data[i:i + 1]
        n = struct.unpack("!I", data[i + 1:i + 5])[0]
        if n < 4:
            break
        if t == b"E":
            out.append(parse_fields(data[i + 5:i + 1 + n]))
        i += 1 + n
    return out


def close_quietly(*socks):
    """Close each socket, one already gone too."""
    for s in socks:
        try:
            s.close()
        except OSError:
            pass


class Forwarder:
    """A TCP forwarder to PostgreSQL on 127.0.0.1, port 0: a backend
    address of its own for pgwharf (one breaker), whose new connections a
    test can make fail (refuse(): each is accepted and closed at once,
    libpq's "server closed the connection unexpectedly", as a server dying
    at every login) while those already forwarded go on; forward() again
    lets new ones through.  close() ends it all (addCleanup)."""

    def __init__(self, pg):
        self.target = (pg.host, pg.port)
        self.refusing = False
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(64)
        self.host, self.port = self.lsock.getsockname()
        self.accepted = 0           # connections accepted, refused ones too
        self.conns = []
        self.lock = threading.Lock()
        self.closed = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def conn_string(self, pg, db=None, **extra):
        """A [databases] value for pg's database db through the forwarder."""
        return pt.entry_conninfo(host=self.host, port=self.port, dbname=db or pg.database,
                                 **extra)

    def refuse(self):
        self.refusing = True

    def forward(self):
        self.refusing = False

    def _accept(self):
        while True:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return                  # closed
            with self.lock:
                self.accepted += 1
                if self.closed or self.refusing:
                    c.close()
                    continue
                try:
                    up = socket.create_connection(self.target, timeout=10)
                except OSError:
                    c.close()
                    continue
                self.conns += [c, up]
                hook = self.chunk_hook(self.accepted)
            args = (c, up) if hook is None else (c, up, hook)   # (CancelHold's _pump takes two)
            threading.Thread(target=self._pump, args=args, daemon=True).start()

    def chunk_hook(self, n):
        """_pump's on_chunk for the n-th connection accepted (from 1), or
        None: a subclass's."""
        return None

    def _pump(self, a, b, on_chunk=None):
        """Bytes both ways between a (pgwharf's) and b (PostgreSQL's) until
        either ends; then both are closed.  on_chunk(data, to), if given,
        gets each chunk read and the socket it goes to, and returns what
        to send on (it may send a part itself first, and wait)."""
        import select
        peers = {a: b, b: a}
        try:
            while True:
                readable, _, _ = select.select([a, b], [], [])
                for s in readable:
                    data = s.recv(65536)
                    if not data:
                        return
                    if on_chunk:
                        data = on_chunk(data, peers[s])
                    peers[s].sendall(data)
        except (OSError, ValueError):
            return
        finally:
            close_quietly(a, b)

    def close(self):
        with self.lock:
            self.closed = True
            conns, self.conns = self.conns, []
        try:
            self.lsock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.lsock.close()
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.thread.join(10)


class CancelHold(Forwarder):
    """A Forwarder (pgwharf's backend address, so its cancels come here
    too) that holds each forwarded cancel in flight: the CancelRequest
    goes to PostgreSQL, which acts on it and closes its connection
    (wait_acted(i)), but pgwharf's connection stays open, as if
    PostgreSQL were still signalling, until release(i).  Cancels are
    numbered in the order they come; close() releases them all."""

    def __init__(self, pg):
        self.cond = threading.Condition()
        self.cancels = []           # per cancel: {"acted", "release", "done"} Events
        self.ready_armed = False
        self.ready_held = threading.Event()
        self.ready_go = threading.Event()
        super().__init__(pg)

    def hold_ready_after_cancel(self):
        """The next ReadyForQuery a server sends right behind a 57014
        error is held back from pgwharf (the error goes on) until
        release_ready(); ready_held is set once it is held."""
        self.ready_armed = True

    def release_ready(self):
        self.ready_go.set()

    def _pump(self, a, b):
        try:
            head = a.recv(8, socket.MSG_PEEK | socket.MSG_WAITALL)
        except OSError:
            head = b""
        if len(head) == 8 and struct.unpack("!II", head) == (16, 80877102):
            self._hold(a, b)
        else:
            super()._pump(a, b, self._ready_hold(a))

    def _ready_hold(self, a):
        """Forwarder._pump's on_chunk for one connection (a: pgwharf's):
        the ReadyForQuery behind a canceled query's error held back while
        hold_ready_after_cancel() is armed (found by its bytes: the
        error's code field, then 'Z' length 5)."""
        canceled = False            # a 57014 seen, its ReadyForQuery not yet

        def on_chunk(data, to):
            nonlocal canceled
            if to is not a or not self.ready_armed:
                return data
            at = data.find(b"C57014\0")
            canceled = canceled or at >= 0
            z = data.find(b"Z\0\0\0\x05", max(at, 0)) if canceled else -1
            if z < 0:
                return data
            self.ready_armed = False
            a.sendall(data[:z])
            self.ready_held.set()
            self.ready_go.wait()
            return data[z:]
        return on_chunk

    def _hold(self, a, b):
        ev = {k: threading.Event() for k in ("acted", "release", "done")}
        with self.cond:
            self.cancels.append(ev)
            self.cond.notify_all()
        try:
            b.sendall(_recv_exact(a, 16))
            while b.recv(64):           # PostgreSQL closes once it has acted
                pass
            ev["acted"].set()
            ev["release"].wait()
            a.shutdown(socket.SHUT_WR)
            while a.recv(64):           # pgwharf closes once its forward ended
                pass
        except (OSError, EOFError):
            pass
        finally:
            ev["acted"].set()
            ev["done"].set()
            a.close()
            b.close()

    def _cancel(self, i, timeout):
        with self.cond:
            if not self.cond.wait_for(lambda: len(self.cancels) > i, timeout):
                raise AssertionError("cancel #%d never reached the server" % i)
            return self.cancels[i]

    def count(self):
        with self.cond:
            return len(self.cancels)

    def wait_acted(self, i, timeout=30):
        """Cancel #i (from 0) has been acted on by PostgreSQL."""
        if not self._cancel(i, timeout)["acted"].wait(timeout):
            raise AssertionError("PostgreSQL did not act on cancel #%d" % i)

    def release(self, i, timeout=30):
        """Let cancel #i's connection end; return once pgwharf has closed
        its side (its forward is over)."""
        ev = self._cancel(i, timeout)
        ev["release"].set()
        if not ev["done"].wait(timeout):
            raise AssertionError("pgwharf did not end forward #%d" % i)

    def close(self):
        self.ready_go.set()
        with self.cond:
            for ev in self.cancels:
                ev["release"].set()
        super().close()


class FakeServer:
    """A PostgreSQL look-alike on 127.0.0.1, port 0 (self.port): a thread
    accepts, and each connection gets a thread of its own running
    session(conn), which a subclass writes with the helpers below; a
    socket error, EOF or a malformed length ends the session quietly, and
    the connection is closed.  Set a subclass's attributes before calling
    __init__ (the accepting thread starts there).  close() stops accepting
    (addCleanup)."""

    TIMEOUT = 10                        # each connection's socket timeout

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def close(self):
        try:                            # wakes the accept() (a close alone
            self.sock.shutdown(socket.SHUT_RDWR)    # does not): the thread ends
        except OSError:
            pass
        self.sock.close()
        self.thread.join(5)

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn):
        conn.settimeout(self.TIMEOUT)
        try:
            self.session(conn)
        except (OSError, EOFError, struct.error):
            pass
        finally:
            conn.close()

    def session(self, conn):
        raise NotImplementedError

    @staticmethod
    def _read(conn, n):
        """Exactly n bytes (EOFError if the peer closes first); every read
        of the helpers goes through here (a subclass may hold it)."""
        return _recv_exact(conn, n)

    _msg = staticmethod(msg)

    def read_startup(self, conn):
        """The startup packet's body, after answering N to each
        SSLRequest and GSSENCRequest before it."""
        while True:
            (length,) = struct.unpack("!I", self._read(conn, 4))
            body = self._read(conn, length - 4)
            if struct.unpack("!I", body[:4])[0] not in (80877103, 80877104):
                return body
            conn.sendall(b"N")

    def read_msg(self, conn):
        """The next frontend message: (kind, body)."""
        kind = self._read(conn, 1)
        (length,) = struct.unpack("!I", self._read(conn, 4))
        return kind, self._read(conn, length - 4)

    def login_ok(self, params):
        """AuthenticationOk, a ParameterStatus for each (name, value) of
        params, BackendKeyData and ReadyForQuery (idle)."""
        out = self._msg(b"R", struct.pack("!I", 0))
        for k, v in params:
            out += self._msg(b"S", k.encode() + b"\0" + v.encode() + b"\0")
        out += self._msg(b"K", struct.pack("!II", 4242, 1234))
        return out + self._msg(b"Z", b"I")


class QueryServer(FakeServer):
    """A FakeServer that lets anyone in, reporting LOGIN's parameters, and
    answers each simple Query with answer(sql), the query's text: (reply,
    True) sends reply and ReadyForQuery (status(): idle); (reply, False)
    sends reply and ends the session (a backend gone before its
    ReadyForQuery).  Any other message is read and passed over; Terminate
    ends the session.  opened(conn) is called as a session starts."""

    LOGIN = (("server_version", "15.0"), ("server_encoding", "UTF8"),
             ("client_encoding", "UTF8"), ("standard_conforming_strings", "on"),
             ("DateStyle", "ISO, MDY"), ("TimeZone", "UTC"), ("integer_datetimes", "on"))

    def answer(self, sql):
        raise NotImplementedError

    def opened(self, conn):
        pass

    def status(self):
        return b"I"

    def session(self, conn):
        self.opened(conn)
        self.read_startup(conn)
        conn.sendall(self.login_ok(self.LOGIN))
        while True:
            kind, body = self.read_msg(conn)
            if kind == b"X":
                return
            if kind != b"Q":
                continue
            out, ready = self.answer(body.rstrip(b"\0").decode())
            if not ready:
                conn.sendall(out)
                return
            conn.sendall(out + self._msg(b"Z", self.status()))
