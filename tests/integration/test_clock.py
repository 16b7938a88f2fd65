"""A step of the wall clock moves none of pgwharf's deadlines.

Every duration and deadline in pgwharf is on CLOCK_MONOTONIC (common/clock.h),
not on libev's ev_now(), which is the wall clock: an NTP step back by an
hour kept an open circuit breaker shut, and a client idle past
client_idle_timeout connected, for that hour (a step forward expired them
all at once).

pgwharf runs here with Debian's libfaketime preloaded (skipped without it):
the test writes an offset ("-1h") into the file named by
FAKETIME_TIMESTAMP_FILE (FAKETIME_NO_CACHE: read at every call) and
pgwharf's wall clock (gettimeofday, CLOCK_REALTIME, hence ev_now()) steps
at once, while CLOCK_MONOTONIC stays real (FAKETIME_DONT_FAKE_MONOTONIC).
The multi-threaded variant (libfaketimeMT) because pgwharf has threads.
Under AddressSanitizer the sanitizer runtime then is not first in the
preload list: verify_asan_link_order=0 lets it run (as for nss_gate).
"""

import glob
import os
import socket
import threading
import time
import unittest

import pgwharf_test as pt
import pgw_hardening as hz

try:
    import psycopg2
except ImportError:          # those tests skip; scripts/deps.sh installs it
    psycopg2 = None

FAKETIME_LIBS = glob.glob("/usr/lib/*/faketime/libfaketimeMT.so.1")


def faketime_env(offset_file):
    """The environment for a pgwharf whose wall clock follows offset_file."""
    if not FAKETIME_LIBS:
        raise unittest.SkipTest("no libfaketime (apt install libfaketime; scripts/deps.sh)")
    asan = os.environ.get("ASAN_OPTIONS")
    return {"LD_PRELOAD": FAKETIME_LIBS[0],
            "FAKETIME_TIMESTAMP_FILE": offset_file,
            "FAKETIME_NO_CACHE": "1",
            "FAKETIME_DONT_FAKE_MONOTONIC": "1",
            # the sanitizer runtime wants to come first; libfaketime does
            "ASAN_OPTIONS": (asan + ":" if asan else "") + "verify_asan_link_order=0"}


class Forwarder:
    """127.0.0.1:port relayed to the test cluster once start()ed; before
    that nothing listens there and a connect is refused at once: a backend
    that is down, then back."""

    def __init__(self, target):
        self.target = target
        self.port = pt.free_port()
        self.lsock = None
        self.stopping = False
        self.socks = []
        self.lock = threading.Lock()

    def start(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(16)
        s.settimeout(0.2)            # accept() sees stop() within that
        self.lsock = s
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopping:
            try:
                c, _ = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            c.settimeout(None)
            try:
                u = socket.create_connection(self.target, timeout=10)
                u.settimeout(None)
            except OSError:
                c.close()
                continue
            with self.lock:
                self.socks += [c, u]
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(a, b):
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass
        try:
            b.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def stop(self):
        self.stopping = True
        if self.lsock:
            self.lsock.close()
        with self.lock:
            for s in self.socks:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
            self.socks = []


def shown_time(text):
    """Seconds since the epoch of a SHOW time ("2026-12-01 15:01:52 UTC")."""
    return time.mktime(time.strptime(text, "%Y-%m-%d %H:%M:%S UTC")) - time.timezone


class ClockStepCase(pt.PgwharfTestCase):
    STEP = 3600                  # one hour back

    def start_faketime_pgwharf(self, **kw):
        px = self.start_pgwharf(start=False, **kw)
        self.offset_file = os.path.join(px.dir, "faketime")
        with open(self.offset_file, "w") as f:
            f.write("+0\n")
        px.extra_env.update(faketime_env(self.offset_file))
        px.start()
        return px

    def step_back(self, px):
        """pgwharf's wall clock an hour back, and seen so by its loop: the
        connect_time SHOW CLIENTS gives a new console connection (its
        ev_now() at accept before the monotonic clock, shown as wall-clock
        time since) is an hour before the test's clock."""
        with open(self.offset_file + ".new", "w") as f:
            f.write("-%d\n" % self.STEP)
        os.replace(self.offset_file + ".new", self.offset_file)

        def stepped():
            con = psycopg2.connect(px.dsn(db="pgbouncer"))
            try:
                con.autocommit = True
                me = pt.show(con, "CLIENTS", database="pgbouncer")
                return me and all(time.time() - shown_time(r["connect_time"]) > self.STEP / 2
                                  for r in me)
            finally:
                con.close()
        pt.wait_until(stepped, timeout=15, what="pgwharf's wall clock an hour back")


@unittest.skipIf(psycopg2 is None, "psycopg2 not installed")
class TestWallClockStepBack(ClockStepCase):

    def test_open_breaker_probes_after_its_cooldown(self):
        # The breaker's next probe was ev_now() + cooldown: after a step
        # back by an hour, no probe (a client's or the tick's) for an hour,
        # every client refused with the breaker's error.
        pg = self.pg
        fwd = Forwarder((pg.host, pg.port))
        self.addCleanup(fwd.stop)
        px = self.start_faketime_pgwharf(
            settings={"pool_mode": "transaction", "breaker_threshold": 2,
                      "breaker_cooldown": "2s", "breaker_max_cooldown": "2s",
                      "server_connect_timeout": "5s"},
            databases={"down": "host=127.0.0.1 port=%d dbname=%s" % (fwd.port, pg.database)})
        address = "127.0.0.1:%d" % fwd.port
        for _ in range(2):                   # refused at once, twice: open
            with self.assertRaises(psycopg2.OperationalError):
                psycopg2.connect(px.dsn(db="down"), connect_timeout=10).close()
        self.assertEqual([r["state"] for r in px.show("BREAKERS", backend=address)], ["open"])
        self.step_back(px)
        fwd.start()                          # the backend is back

        def served():
            try:
                con = psycopg2.connect(px.dsn(db="down"), connect_timeout=10)
            except psycopg2.OperationalError:
                return False                 # still refused by the breaker
            try:
                return pt.one(con, "select 'through'")
            finally:
                con.close()
        # The cooldown (2 s), a tick (1 s) and slack: not an hour.
        self.assertEqual(pt.wait_until(served, timeout=20, interval=0.2,
                                       what="a client through once the cooldown passed"),
                         "through")
        self.assertEqual([r["state"] for r in px.show("BREAKERS", backend=address)],
                         ["closed"])

    def test_client_idle_timeout_ends_an_idle_client(self):
        # The idle client's deadline was ev_now() of its last byte plus
        # client_idle_timeout: after a step back by an hour, an hour late.
        pg = self.pg
        px = self.start_faketime_pgwharf(settings={"pool_mode": "transaction",
                                                   "client_idle_timeout": "3s"})
        sock = socket.create_connection((px.host, px.port), timeout=20)
        self.addCleanup(sock.close)
        hz.sync_login(sock, pg.user, pg.database, pg.password)
        self.assertEqual(hz.simple_query(sock, "select 1")[1], [])
        self.step_back(px)
        data, closed = hz.read_until_closed(sock, 20)
        self.assertTrue(closed, "an idle client still connected 20 s later; log:\n"
                        + px.log_tail())
        self.assertIn("client_idle_timeout", data.decode("utf-8", "replace"))


if __name__ == "__main__":
    unittest.main()
