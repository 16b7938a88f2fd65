"""Relaying allocates nothing per transaction.

pgwharf runs with tests/alloc_count.c preloaded, which counts every
malloc/calloc/realloc of the process in a file the test reads.  For each
workload pgbench runs three times against the same pgwharf: a warm-up
(servers connected, buffers and statement maps grown), then T1 and T2
transactions per client with the same number of clients.  Logins and
whatever else does not depend on the number of transactions cost both runs
the same, so (allocations of the second - of the first) / (transactions of
the second - of the first) is what one transaction costs: it must stay
under 0.01 (one allocation per hundred transactions; in practice 0).

The sanitizer build brings its own allocator: there the test skips.
"""

import os
import struct
import subprocess
import unittest

import pgwharf_test as pt

T1, T2 = 100, 1100
LIMIT = 0.01


def sanitized(binary):
    try:
        out = subprocess.run(["ldd", binary], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return "libasan" in out or "libubsan" in out


class TestAlloc(pt.PgwharfTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.pg.pgbench(["-i", "-s", "1", "-q"])

    def setUp(self):
        super().setUp()
        self.lib = os.environ.get("PGW_ALLOC_COUNT_LIB")
        if not self.lib:
            if sanitized(os.environ.get("PGW_BINARY", "")):
                self.skipTest("sanitizer build: its allocator is not glibc's")
            self.fail("PGW_ALLOC_COUNT_LIB is not set (run through ctest)")
        self.assertTrue(os.path.exists(self.lib), self.lib)

    def start_counted(self, settings):
        """A pgwharf with the allocation counter preloaded, and a function
        reading its count so far."""
        px = self.start_pgwharf(start=False, settings=settings)
        path = os.path.join(px.dir, "allocs")
        px.extra_env.update({"LD_PRELOAD": self.lib, "PGW_ALLOC_COUNT_FILE": path})
        px.start()

        def allocs():
            with open(path, "rb") as f:
                return struct.unpack("=Q", f.read(8))[0]
        return px, allocs

    def per_transaction(self, settings, args, t2=T2):
        px, allocs = self.start_counted(dict(
            {"pool_mode": "transaction", "default_pool_size": 20, "max_client_conn": 100},
            **settings))
        self.assertGreater(allocs(), 0, "the counter is not counting")
        self.assert_pgbench_ok(px, args + ["-j", "2", "-t", str(T1)])     # warm-up
        counts = []
        for t in (T1, t2):
            before = allocs()
            _, tx = self.assert_pgbench_ok(px, args + ["-j", "2", "-t", str(t)])
            counts.append((allocs() - before, tx))
        (a1, tx1), (a2, tx2) = counts
        self.assertGreater(tx2, tx1)
        per_tx = (a2 - a1) / (tx2 - tx1)
        self.assertLess(per_tx, LIMIT,
                        "%.3f allocations per transaction (%d in %d transactions, %d in %d)"
                        % (per_tx, a1, tx1, a2, tx2))
        self.assertTrue(px.alive(), px.log_tail())

    def test_simple_protocol(self):
        self.per_transaction({}, ["-S", "-c", "8"])

    def test_tpcb_transactions(self):
        # Fewer transactions: TPC-B's are 7 statements, serialized on the
        # one branch row of scale 1 (the ratio is what is compared).
        self.per_transaction({}, ["-c", "8"], t2=500)

    def test_extended_protocol(self):
        self.per_transaction({}, ["-S", "-M", "extended", "-c", "8"])

    def test_prepared_statements(self):
        self.per_transaction({}, ["-S", "-M", "prepared", "-c", "8"])

    def test_session_mode(self):
        self.per_transaction({"pool_mode": "session"}, ["-S", "-c", "8"])

    def test_clients_waiting_in_the_pool(self):
        self.per_transaction({"default_pool_size": 3}, ["-S", "-c", "12"])

    def test_queued_on_busy_servers(self):
        for proto in ("simple", "prepared"):
            with self.subTest(protocol=proto):
                self.per_transaction({"default_pool_size": 3, "server_pipeline_depth": 2},
                                     ["-S", "-M", proto, "-c", "12"])

    def test_errors_answering_prepared_statements(self):
        # An error answering a renamed Bind (22012 here) is looked at for
        # pgwharf's statement name in place: no copy when it has none.
        from test_prepared import Raw, types
        px, allocs = self.start_counted({
            "pool_mode": "transaction", "default_pool_size": 1, "auth_type": "trust"})
        r = Raw(px.host, px.port, self.pg.user, self.pg.database)
        zero = b"\x00\x00\x00\x01\x00\x00\x00\x010\x00\x00"     # 1 parameter, '0'

        def run(n):
            for _ in range(n):
                r.send(r.msg(b"B", b"\x00s1\x00" + zero), r.execute(), r.sync())
                msgs = r.until_ready()
                self.assertEqual(types(msgs), "EZ", msgs)
        try:
            r.send(r.parse("s1", "select 1/$1::int"), r.sync())
            r.until_ready()
            run(T1)                       # warm-up
            before = allocs()
            run(T2)
            per_error = (allocs() - before) / T2
        finally:
            r.close()
        self.assertLess(per_error, LIMIT, "%.3f allocations per error" % per_error)


if __name__ == "__main__":
    unittest.main()
