"""difftest - differential testing of pgwharf against PostgreSQL itself.

A generator writes random but valid client sessions (simple Query with one
or several statements, extended-protocol batches of Parse/Bind/Describe/
Execute (row limits, PortalSuspended)/Close/Sync/Flush on named and unnamed
statements and portals, errors mid-batch, BEGIN/COMMIT/ROLLBACK/SAVEPOINT,
SET/RESET of tracked parameters, COPY TO STDOUT and FROM STDIN in both
protocols, empty queries, NOTICEs).  Each session runs once straight
against PostgreSQL and once through pgwharf (transaction mode, a small
pool, several sessions at once so they share servers), and the messages
each client receives are compared, batch by batch.

What may legitimately differ is left out: login (BackendKeyData,
ParameterStatus), and nothing in the sessions selects a PID or the time.
pgwharf's statement names (PGW_n) must never reach a client.

With --more (TestDifferentialMore) sessions also have what those steps
do not send (Gen.more_step, drawn from a random stream of its own so
that the seeds' sessions without it stay as they were): batches ending
with Flush left open while the session does something else, Close or
Describe and Flush alone, FunctionCall inside and after batches, COPY
FROM STDIN by Execute sent with its Sync and then rows (a bad one),
CopyDone or CopyFail and more messages before and after a Sync, lone
Syncs.  Through pgwharf, after every step that leaves the client with
nothing under way (all it sent answered, no batch open since its last
Sync or Query, no transaction), SHOW CLIENTS must not show it holding a
server (but KNOWN_HOLDS).  With max_prepared_statements = 0 (--extra)
sessions Parse only the unnamed statement.

Sessions avoid what README documents as broken by transaction pooling:
an unnamed statement is used only in the batch (up to Sync) that parsed
it, SET touches only tracked parameters (extra_float_digits: SET LOCAL).

    python3 difftest.py [--seed N] [--sessions N] [--steps N] [--concurrency N]
                        [--mode transaction] [--pool 2] [--show] [--more]
                        [--extra max_prepared_statements=0]

As a unittest (TestDifferential) it runs fixed seeds.
"""

import argparse
import os
import random
import socket
import struct
import sys
import threading
import time

import pgwharf_test as pt
import pgw_hardening as hz

READ_TIMEOUT = float(os.environ.get("PGW_DIFF_TIMEOUT", "15"))


def msg(t, body=b""):
    return t + struct.pack("!I", len(body) + 4) + body


def cstr(s):
    return s.encode() + b"\x00"


# --- the generator ---------------------------------------------------------

TZS = ["UTC", "Asia/Kathmandu", "America/St_Johns", "Europe/Paris"]
DATESTYLES = ["ISO, MDY", "SQL, DMY", "German", "Postgres, YMD"]
INTERVALSTYLES = ["postgres", "iso_8601", "sql_standard", "postgres_verbose"]

# (sql, number of $n parameters); {T} is the session's table
QUERIES = [
    ("select a, b from {T} order by a, b", 0),
    ("select g, g * 2 from generate_series(1, $1::int) g", 1),
    ("select $1::int / ($1::int - 3) as d", 1),
    ("select 1/0", 0),
    ("selec 1", 0),
    ("select * from no_such_table_xyz", 0),
    ("insert into {T} values ($1::int, 'ins') returning a, b", 1),
    ("update {T} set b = b || 'u' where a = $1::int", 1),
    ("delete from {T} where a = $1::int returning a", 1),
    ("copy {T} to stdout", 0),
    ("copy (select a from {T} order by a limit 3) to stdout", 0),
    ("copy {T} from stdin", 0),
    ("do $$ begin raise notice 'hello %', 42; end $$", 0),
    ("do $$ begin raise warning 'careful'; raise notice 'x'; end $$", 0),
    ("", 0),
    ("select current_setting('TimeZone'), '2020-01-01 12:00+00'::timestamptz", 0),
    ("select '2021-03-04'::date, interval '1 day 2 hours 3 minutes'", 0),
    ("select current_setting('application_name'), 0.1::float8 * 3", 0),
    ("begin", 0),
    ("commit", 0),
    ("rollback", 0),
    ("savepoint sp", 0),
    ("rollback to savepoint sp", 0),
    ("release savepoint sp", 0),
    ("set TimeZone = '{TZ}'", 0),
    ("reset TimeZone", 0),
    ("set DateStyle = '{DS}'", 0),
    ("set IntervalStyle = '{IS}'", 0),
    ("set application_name = 'app{N}'", 0),
    ("reset application_name", 0),
    ("set local extra_float_digits = 0", 0),
    ("select $1::text || 'x'", 1),
    ("select count(*) from {T}", 0),
]


class Gen:
    """known: also generate what is known to differ (see KNOWN)."""

    def __init__(self, seed, table, steps, params=None, known=True, no_txn=False,
                 more=False, no_named=False):
        self.r = random.Random(seed)
        # The step kinds of more_step() draw from their own stream, so that
        # without them a seed's session stays the same.
        self.more = more
        self.r2 = random.Random(seed * 6007 + 3)
        self.no_named = no_named       # max_prepared_statements = 0: Parse "" only
        self.no_txn = no_txn           # statement mode: never open a transaction
        self.params = params or {}
        self.known = known
        self.table = table
        self.steps = steps
        self.names = ["s1", "s2", "s3"]
        self.portals = ["p1", "p2"]
        self.stmt_params = {}          # name -> nparams the generator believes
        self.unnamed_ok = self.unnamed_portal = False        # a Parse "" since the last Sync
        self.unnamed_params = 0
        self.open = False              # extended messages sent since the last Sync
        self.unnamed_portal = False    # a Bind "" since the last Sync

    def sql(self, allow_copy_in=True):
        while True:
            q, n = self.r.choice(QUERIES)
            if "from stdin" in q and not allow_copy_in:
                continue
            if self.no_txn and q == "begin":
                continue
            if not self.known and q.startswith("reset") and any(
                    k.lower() in q.lower() for k in self.params):
                continue
            if not self.known and "($1::int - 3)" in q:
                # Not folded at Bind by a custom plan (see KNOWN): the
                # error comes at Execute whichever plan runs.
                q = q.replace("($1::int - 3)", "($1::int - 3 + 0 * random()::int)")
            q = (q.replace("{T}", self.table).replace("{TZ}", self.r.choice(TZS))
                 .replace("{DS}", self.r.choice(DATESTYLES))
                 .replace("{IS}", self.r.choice(INTERVALSTYLES))
                 .replace("{N}", str(self.r.randint(1, 9))))
            return q, n

    def copy_payloads(self):
        out = []
        for _ in range(3):
            x = self.r.random()
            if x < 0.6:
                rows = b"".join(b"%d\trow%d\n" % (self.r.randint(1, 50), i)
                                for i in range(self.r.randint(0, 4)))
                out.append(("data", [rows] if rows else []))
            elif x < 0.8:
                out.append(("data", [b"notanumber\tz\n"]))
            else:
                out.append(("fail", []))
        return out

    def simple(self):
        k = self.r.choice([1, 1, 1, 2, 3])
        parts = []
        for _ in range(k):
            q, n = self.sql()
            if n:
                q = q.replace("$1::int", str(self.r.randint(1, 6))).replace("$1::text", "'t'")
            parts.append(q)
        text = "; ".join(parts)
        if self.r.random() < 0.05:
            text = self.r.choice(["", ";", " ; ;"])
        sync = b""
        if self.open and self.r.random() < 0.9:
            sync = msg(b"S")          # end the open extended batch first
            self.unnamed_ok = self.unnamed_portal = False
        self.open = False
        return {"kind": "simple", "bytes": sync + msg(b"Q", cstr(text)),
                "copy": self.copy_payloads(), "desc": ("S | " if sync else "") + "Q %r" % text}

    def param_bytes(self, n):
        vals = [str(self.r.choice([1, 2, 3, 4, 5, 7])).encode() for _ in range(n)]
        b = struct.pack("!H", 0) + struct.pack("!H", n)
        for v in vals:
            b += struct.pack("!i", len(v)) + v
        return b + struct.pack("!H", 0), vals

    def extended(self):
        out, descs = [], []
        copy = None
        nmsgs = self.r.randint(1, 9)
        for _ in range(nmsgs):
            x = self.r.random()
            if x < 0.03:
                # COPY FROM STDIN as libpq sends it: Execute then Sync
                q = "copy %s from stdin" % self.table
                out.append(msg(b"P", cstr("") + cstr(q) + struct.pack("!H", 0)) +
                           msg(b"B", b"\x00\x00\x00\x00\x00\x00\x00\x00") +
                           msg(b"E", b"\x00\x00\x00\x00\x00") + msg(b"S"))
                descs.append("P \"\" %r | B \"\"<-\"\" | E \"\" 0" % q)
                descs.append("S")
                copy = self.copy_payloads()[:1]
                self.unnamed_ok = self.unnamed_portal = False
                break
            if x < 0.22:
                name = self.r.choice(self.names + ["", "", ""])
                if self.no_named:
                    name = ""
                q, n = self.sql(allow_copy_in=False)
                out.append(msg(b"P", cstr(name) + cstr(q) + struct.pack("!H", 0)))
                descs.append("P %s %r" % (name or '""', q))
                if name:
                    self.stmt_params[name] = n
                else:
                    self.unnamed_ok, self.unnamed_params = True, n
            elif x < 0.45:
                choices = list(self.names) + (["", ""] if self.unnamed_ok else [])
                if self.r.random() < 0.05:
                    choices = ["nosuch"]
                name = self.r.choice(choices)
                portal = self.r.choice(self.portals + ["", "", ""])
                n = (self.unnamed_params if name == "" else self.stmt_params.get(name, 0))
                if self.r.random() < 0.05:
                    n = 1 - min(n, 1)     # a wrong parameter count
                body, vals = self.param_bytes(n)
                out.append(msg(b"B", cstr(portal) + cstr(name) + body))
                self.unnamed_portal = self.unnamed_portal or portal == ""
                descs.append("B %s<-%s %r" % (portal or '""', name or '""', vals))
            elif x < 0.55:
                if self.r.random() < 0.5:
                    choices = list(self.names) + ([""] if self.unnamed_ok else [])
                    name = self.r.choice(choices)
                    out.append(msg(b"D", b"S" + cstr(name)))
                    descs.append("D S %s" % (name or '""'))
                else:
                    portal = self.r.choice(self.portals + ["", "nosuchp"])
                    out.append(msg(b"D", b"P" + cstr(portal)))
                    descs.append("D P %s" % (portal or '""'))
            elif x < 0.78:
                # The unnamed portal only in the batch that bound it: an old
                # one executed in an aborted transaction crashes PostgreSQL
                # 15.18's backend (SIGSEGV, seen with seed 36 of 25 steps).
                portal = self.r.choice(self.portals + (["", "", ""] if self.unnamed_portal
                                                       else []))
                lim = self.r.choice([0, 0, 0, 1, 2, 3])
                out.append(msg(b"E", cstr(portal) + struct.pack("!I", lim)))
                descs.append("E %s %d" % (portal or '""', lim))
            elif x < 0.86:
                if self.r.random() < 0.6:
                    name = self.r.choice(self.names + ["nosuch"])
                    out.append(msg(b"C", b"S" + cstr(name)))
                    descs.append("C S %s" % name)
                    self.stmt_params.pop(name, None)
                else:
                    portal = self.r.choice(self.portals + [""])
                    out.append(msg(b"C", b"P" + cstr(portal)))
                    descs.append("C P %s" % (portal or '""'))
            elif x < 0.93:
                out.append(msg(b"H"))
                descs.append("H")
            else:
                out.append(msg(b"S"))
                descs.append("S")
                self.unnamed_ok = self.unnamed_portal = False
        end = self.r.random()
        if descs[-1] not in ("S", "H"):
            if end < 0.75:
                out.append(msg(b"S"))
                descs.append("S")
                self.unnamed_ok = self.unnamed_portal = False
            elif end < 0.9:
                out.append(msg(b"H"))
                descs.append("H")
        self.open = descs[-1] != "S"
        return {"kind": "ext", "bytes": b"".join(out), "copy": copy or self.copy_payloads(),
                "desc": " | ".join(descs)}

    # --- more=True: what the steps above do not send ---------------------

    def fcall(self):
        """A FunctionCall of a built-in by OID with text arguments:
        int4pl, int4div (division by zero), or int4pl of a non-number."""
        oid, args = self.r2.choice([(177, [b"3", b"4"]), (177, [b"40", b"2"]),
                                    (154, [b"7", b"0"]), (177, [b"x", b"1"]),
                                    (154, [b"9", b"2"])])
        body = struct.pack("!IHHH", oid, 1, 0, len(args))
        for a in args:
            body += struct.pack("!i", len(a)) + a
        name = {177: "int4pl", 154: "int4div"}[oid]
        return msg(b"F", body + struct.pack("!H", 0)), "F %s(%s)" % (
            name, b", ".join(args).decode())

    def unnamed_run(self):
        """Parse, Bind and Execute of the unnamed statement and portal."""
        q = self.r2.choice(["select 1", "select 1/0",
                            "select a from %s order by a limit 2" % self.table,
                            "update %s set b = b where a = 1" % self.table])
        return (msg(b"P", cstr("") + cstr(q) + struct.pack("!H", 0)) +
                msg(b"B", b"\x00\x00\x00\x00\x00\x00\x00\x00") +
                msg(b"E", b"\x00\x00\x00\x00\x00"), "P \"\" %r | B | E" % q)

    def ended(self):
        """The batch is closed by a Sync: the unnamed statement may go."""
        self.open = False
        self.unnamed_ok = self.unnamed_portal = False

    def more_step(self):
        k = self.r2.choice(["flush", "flush", "close", "close", "fcall", "fcall",
                            "copy", "copy", "sync", "describe"])
        out, descs = [], []
        if k == "flush":
            # a batch ending with Flush, left open while the session does
            # something else later (then a Sync)
            b, d = self.unnamed_run()
            out.append(b)
            descs.append(d)
            self.unnamed_ok = self.unnamed_portal = False
            out.append(msg(b"H"))
            descs.append("H")
            self.open = True
        elif k == "close":
            # Close of a statement or portal and Flush alone (ts-postgres)
            for _ in range(self.r2.choice([1, 1, 2])):
                if self.r2.random() < 0.7:
                    name = self.r2.choice(self.names + ["nosuch"])
                    out.append(msg(b"C", b"S" + cstr(name)))
                    descs.append("C S %s" % name)
                    self.stmt_params.pop(name, None)
                else:
                    portal = self.r2.choice(self.portals)
                    out.append(msg(b"C", b"P" + cstr(portal)))
                    descs.append("C P %s" % portal)
            out.append(msg(b"H"))
            descs.append("H")
        elif k == "describe":
            if self.r2.random() < 0.5:
                name = self.r2.choice(self.names)
                out.append(msg(b"D", b"S" + cstr(name)))
                descs.append("D S %s" % name)
            else:
                portal = self.r2.choice(self.portals)
                out.append(msg(b"D", b"P" + cstr(portal)))
                descs.append("D P %s" % portal)
            out.append(msg(b"H"))
            descs.append("H")
            self.open = True
        elif k == "sync":
            out.append(msg(b"S"))
            descs.append("S")
            self.ended()
        elif k == "fcall":
            # inside an extended batch (after its messages, before its
            # Sync), or after one
            if self.r2.random() < 0.5:
                b, d = self.unnamed_run()
                out.append(b)
                descs.append(d)
                self.unnamed_ok = self.unnamed_portal = False
                self.open = True
                if self.r2.random() < 0.3:
                    out.append(msg(b"S"))
                    descs.append("S")
                    self.ended()
            b, d = self.fcall()
            out.append(b)
            descs.append(d)
            if self.r2.random() < 0.5:
                out.append(msg(b"S"))
                descs.append("S")
                self.ended()
        else:
            return self.copy_step()
        return {"kind": "ext", "bytes": b"".join(out), "copy": [], "desc": " | ".join(descs)}

    def copy_step(self):
        """COPY FROM STDIN by Execute, its Sync sent with it (PostgreSQL
        ignores it in COPY); then rows, maybe a bad one, CopyDone or
        CopyFail, and more messages in the same write, before and after
        a Sync (those before it are skipped after an error)."""
        lead = b""
        if self.open:
            lead = msg(b"S")
        self.ended()
        q = "copy %s from stdin" % self.table
        start = (msg(b"P", cstr("") + cstr(q) + struct.pack("!H", 0)) +
                 msg(b"B", b"\x00\x00\x00\x00\x00\x00\x00\x00") +
                 msg(b"E", b"\x00\x00\x00\x00\x00") + msg(b"S"))
        rows = [b"%d\trow%d\n" % (self.r2.randint(1, 50), i)
                for i in range(self.r2.randint(0, 3))]
        if self.r2.random() < 0.6:
            rows.insert(self.r2.randint(0, len(rows)), b"notanumber\tz\n")
        data = b"".join(msg(b"d", r) for r in rows)
        fail = self.r2.random() < 0.3
        end = msg(b"f", cstr("client gave up")) if fail else msg(b"c")
        # with a bad row, maybe its error read before the end is sent
        wait = b"notanumber" in data and self.r2.random() < 0.5
        descs = ["S"] if lead else []
        descs.append("P \"\" %r | B | E | S | d*%d%s | %s" % (
            q, len(rows), " (its error read)" if wait else "", "f" if fail else "c"))
        tail = []
        for _ in range(self.r2.randint(1, 4)):
            x = self.r2.random()
            if x < 0.25:
                qq = self.r2.choice(["select 1", "select count(*) from %s" % self.table])
                tail.append(msg(b"Q", cstr(qq)))
                descs.append("Q %r" % qq)
            elif x < 0.45:
                b, d = self.fcall()
                tail.append(b)
                descs.append(d)
            elif x < 0.6:
                b, d = self.unnamed_run()
                tail.append(b)
                descs.append(d)
            elif x < 0.7:
                tail.append(msg(b"H"))
                descs.append("H")
            else:
                tail.append(msg(b"S"))
                descs.append("S")
        self.open = descs[-1] != "S"
        return {"kind": "copyx", "lead": lead, "bytes": start, "copydata": data, "end": end,
                "wait": wait, "tail": b"".join(tail), "copy": [], "desc": " | ".join(descs)}

    def session(self):
        steps = []
        for _ in range(self.steps):
            if self.more and self.r2.random() < 0.35:
                steps.append(self.more_step())
                continue
            steps.append(self.simple() if self.r.random() < 0.35 else self.extended())
        # Always end on a Sync so every reply is read.
        steps.append({"kind": "ext", "bytes": msg(b"S"), "copy": [], "desc": "S"})
        steps.append({"kind": "simple", "bytes": msg(b"Q", cstr("rollback")), "copy": [],
                      "desc": "Q rollback"})
        return steps


# --- the client --------------------------------------------------------------

class Hang(Exception):
    pass


class Client:
    """A blocking raw-protocol client that mirrors the server's processing
    of what it sent, so it knows which replies to wait for."""

    def __init__(self, host, port, user, password, db, params):
        self.s = socket.create_connection((host, port), timeout=READ_TIMEOUT)
        self.buf = b""
        self.login(user, password, db, params)
        self.pending = []             # sent, replies not read: (type, body)
        self.failed = False           # extended error: skip until Sync
        self.batch = False            # extended messages since the last Sync/Query
        self.status = b"I"            # of the last ReadyForQuery
        self.no_named = False         # max_prepared_statements = 0
        self.close_kept = None        # a Close known to keep the server (KNOWN_HOLDS)
        self.copy_kept = None         # an extended COPY that failed (KNOWN_HOLDS)

    def recv(self):
        while True:
            if len(self.buf) >= 5:
                n = struct.unpack("!I", self.buf[1:5])[0]
                if len(self.buf) >= 1 + n:
                    t, body = self.buf[:1], self.buf[5:1 + n]
                    self.buf = self.buf[1 + n:]
                    return t, body
            try:
                chunk = self.s.recv(65536)
            except socket.timeout:
                raise Hang("no reply within %ss" % READ_TIMEOUT)
            if not chunk:
                raise EOFError("connection closed")
            self.buf += chunk

    def login(self, user, password, db, params):
        self.s.sendall(hz.startup_packet(user, db, **params))
        state = {}
        while True:
            t, body = self.recv()
            if t == b"E":
                raise hz.PgError(hz.parse_fields(body))
            if t == b"R":
                reply = hz.auth_reply(body, user, password, state)
                if reply:
                    self.s.sendall(reply)
            elif t == b"Z":
                return

    def close(self):
        try:
            self.s.sendall(msg(b"X"))
        except OSError:
            pass
        self.s.close()

    def run(self, step):
        """Send one step, read the replies due; returns them normalised."""
        got = []
        if step["kind"] == "copyx":
            self.run_copyx(step, got)
            return got
        self.s.sendall(step["bytes"])
        self.mirror(step["bytes"], list(step["copy"]), got)
        return got

    def mirror(self, data, copies, got):
        """Read the replies due to data, just sent."""
        i, synced = 0, False
        while i < len(data):
            n = struct.unpack("!I", data[i + 1:i + 5])[0]
            # (type, body, sent in one write after a Sync)
            self.pending.append((data[i:i + 1], data[i + 5:i + 1 + n], synced))
            synced = synced or data[i:i + 1] == b"S"
            i += 1 + n
        # Replies are due up to the last Query, FunctionCall, Sync or Flush sent.
        last = max([k for k, (t, *_) in enumerate(self.pending)
                    if t in (b"Q", b"F", b"S", b"H")], default=-1)
        todo, self.pending = self.pending[:last + 1], self.pending[last + 1:]
        while todo:
            t, body, synced = todo.pop(0)
            if t == b"C" and not self.batch and not self.close_kept:
                # Known to keep the server until the next Sync (see
                # KNOWN_HOLDS): a Close of a portal sent behind a Sync
                # before its ReadyForQuery; with max_prepared_statements
                # = 0 one of a statement.
                if synced and body[:1] == b"P":
                    self.close_kept = "a Close of a portal sent behind a Sync"
                elif self.no_named and body[:1] == b"S":
                    self.close_kept = "a Close of a statement, max_prepared_statements = 0"
            if t in (b"Q", b"F"):
                if not self.failed:   # else skipped: the server waits for Sync
                    self.read_query(got, copies)
                    # a Query ends the batch for pgwharf too (README "When
                    # a server goes back to the pool"); a FunctionCall not
                    self.batch = self.batch and t == b"F"
            elif t == b"S":
                self.read_until(got, b"Z")
                self.failed = self.batch = False
                self.close_kept = None
            elif t == b"H":
                pass
            elif t == b"copyend":
                # an error is sent at once, a CommandComplete at the next flush
                rt, rbody = self.take(got)
                if rt == b"E":
                    self.failed = True
                    self.copy_failed(rbody)
            else:
                if t != b"C":         # a Close starts no transaction
                    self.batch = True
                if not self.failed:
                    self.read_ext(t, body, got, copies, todo)

    def run_copyx(self, step, got):
        """COPY FROM STDIN by Execute with its Sync, then (once the
        CopyInResponse is in) its data and more messages in one write."""
        if step["lead"]:
            self.s.sendall(step["lead"])
            self.mirror(step["lead"], [], got)
        self.s.sendall(step["bytes"])
        self.pending = []             # answered before the COPY (or the Sync)
        while True:
            t, _ = self.take(got)
            if t == b"G":
                break
            if t == b"Z":             # an aborted transaction: no COPY
                break
        if t == b"G" and step["wait"]:
            # a bad row: its error is sent at once
            self.s.sendall(step["copydata"])
            self.batch = self.failed = True
            self.read_until(got, b"E")
            self.copy_failed()
            self.s.sendall(step["end"] + step["tail"])
        else:
            self.s.sendall(step["copydata"] + step["end"] + step["tail"])
        if t == b"G" and not step["wait"]:
            # The Sync sent with the Execute went to the COPY, ignored; its
            # end (CommandComplete or an error) is due with the rest.
            self.batch, self.failed = True, False
            self.pending.append((b"copyend", b"", False))
        elif t != b"G":
            self.failed = self.batch = False
        self.mirror(step["tail"], [], got)

    def copy_failed(self, body=None):
        # Known to keep the server until the client leaves (KNOWN_HOLDS):
        # whether the COPY read the Sync sent with its Execute before it
        # failed is not known to the tracker (max_prepared_statements = 0)
        # -- but when it failed on reading the client's CopyFail (57014
        # from CopyGetData: it read all before it).
        f = hz.parse_fields(body) if body is not None else {}
        if f.get("C") == "57014" and f.get("R") == "CopyGetData":
            return
        if self.no_named:
            self.copy_kept = "an extended COPY that failed, max_prepared_statements = 0"

    def quiescent(self):
        """All sent answered, no batch open, no transaction."""
        return (not self.pending and not self.failed and not self.batch
                and self.status == b"I" and not self.close_kept and not self.copy_kept)

    def take(self, got):
        t, body = self.recv()
        got.append(normalise(t, body))
        if t == b"Z":
            self.status = body
        return t, body

    def read_until(self, got, want):
        while True:
            t, body = self.take(got)
            if t == want:
                return

    def send_copy(self, copies):
        kind, rows = copies.pop(0) if copies else ("data", [])
        if kind == "fail":
            self.s.sendall(msg(b"f", cstr("client gave up")))
        else:
            self.s.sendall(b"".join(msg(b"d", r) for r in rows) + msg(b"c"))

    def read_query(self, got, copies):
        while True:
            t, _ = self.take(got)
            if t == b"G":
                self.send_copy(copies)
            elif t == b"Z":
                return

    def read_ext(self, t, body, got, copies, todo):
        done = {b"P": (b"1",), b"B": (b"2",), b"C": (b"3",),
                b"D": (b"T", b"n"), b"E": (b"C", b"s", b"I")}[t]
        in_copy = False
        while True:
            rt, rbody = self.take(got)
            if rt == b"E":
                self.failed = True
                if in_copy:
                    self.copy_failed(rbody)
                return
            if rt == b"G":
                in_copy = True
                # COPY FROM STDIN by Execute: the server ignores the Sync
                # we sent after it; data, CopyDone and a Sync of our own.
                while todo and todo[0][0] in (b"S", b"H"):
                    todo.pop(0)
                while not todo and self.pending and self.pending[0][0] in (b"S", b"H"):
                    self.pending.pop(0)
                self.send_copy(copies)
                self.s.sendall(msg(b"S"))
                todo.insert(0, (b"S", b"", False))
                continue
            if rt in done:
                return


def normalise(t, body):
    if t in (b"E", b"N"):
        f = hz.parse_fields(body)
        for k in ("F", "L", "R"):
            f.pop(k, None)
        return (t.decode(), tuple(sorted(f.items())))
    if t == b"S":
        k, v = body.split(b"\x00")[:2]
        return ("S", k.decode(), v.decode())
    if t == b"D":
        return ("D", tuple(hz.data_row(body)))
    return (t.decode(), body)


# --- running and comparing -----------------------------------------------------

def session_params(r):
    p = {}
    if r.random() < 0.3:
        p["TimeZone"] = r.choice(TZS)
    if r.random() < 0.2:
        p["DateStyle"] = r.choice(DATESTYLES)
    if r.random() < 0.2:
        p["application_name"] = "start%d" % r.randint(1, 9)
    if r.random() < 0.2:
        p["extra_float_digits"] = r.choice(["0", "2"])
    return p


# Known to differ, left out with known=False (the unittest):
# - RESET of a parameter the startup packet set: PostgreSQL goes back to
#   the startup value, through pgwharf (which SETs startup values on
#   shared servers) it goes to the server's default;
# - an error a custom plan raises at Bind (a constant folded: $1 / ($1 - 3)
#   with 3) comes at Execute once PostgreSQL has switched the statement to
#   a generic plan (after five executions), and through pgwharf, which
#   shares statements, that counts every client's executions on a server.
# Servers known to stay with a client that has nothing under way (the idle
# check, run through pgwharf, passes over them), until its next Sync:
# - a Close of a portal (and Flush) sent behind a Sync before its
#   ReadyForQuery came: it goes to the server, in the batch after that
#   Sync, which keeps it (one sent after the ReadyForQuery takes none; one
#   of a statement is answered by pgwharf);
# - with max_prepared_statements = 0, after a COPY FROM STDIN by Execute
#   that failed, until the client leaves: whether the COPY read the Sync
#   sent with its Execute before it failed, or failed before it read
#   anything (a BEFORE STATEMENT trigger), the tracker cannot know (but
#   when it failed on the client's CopyFail, whose error says it read all
#   before it: 57014 from CopyGetData);
# - with max_prepared_statements = 0, a Close of a statement and Flush: it
#   goes to a server as it is (the statement is server-local), and a Flush
#   after extended-protocol messages keeps the server (README "When a
#   server goes back to the pool"), as in PgBouncer.
def make_session(seed, steps, known=True, no_txn=False, more=False, no_named=False):
    r = random.Random(seed * 7919 + 1)
    table = "dt_%d" % seed
    params = session_params(r)
    return {"seed": seed, "table": table, "params": params, "no_named": no_named,
            "steps": Gen(seed, table, steps, params, known, no_txn, more,
                         no_named).session()}


def reset_tables(pg, sessions):
    # the same table (OID) for both runs: RowDescription names it
    sql = "".join("create table if not exists %s (a int, b text); truncate %s; "
                  "insert into %s select g, 'r' || g from generate_series(1, 6) g;"
                  % (s["table"], s["table"], s["table"]) for s in sessions)
    pg.psql(sql, user=pg.user)


class Console:
    """pgwharf's admin console over the raw protocol: which clients hold
    a server (SHOW CLIENTS state 'active')."""

    def __init__(self, host, port, pg):
        self.c = Client(host, port, pg.user, pg.password, "pgbouncer", {})

    def state(self, client_port):
        self.c.s.sendall(msg(b"Q", cstr("SHOW CLIENTS")))
        cols, state = [], None
        while True:
            t, body = self.c.recv()
            if t == b"T":
                cols = row_names(body)
            elif t == b"D":
                row = dict(zip(cols, hz.data_row(body)))
                if row.get("port") in (str(client_port), str(client_port).encode()):
                    state = row.get("state")
            elif t == b"E":
                raise hz.PgError(hz.parse_fields(body))
            elif t == b"Z":
                return state.decode() if isinstance(state, bytes) else state

    def holds(self, client_port):
        """Whether the client holds a server, still after a bounded wait
        for a release under way."""
        deadline = time.monotonic() + 2.0
        while True:
            if self.state(client_port) != "active":
                return False
            if time.monotonic() > deadline:
                return True
            time.sleep(0.02)

    def close(self):
        self.c.close()


def row_names(body):
    n = struct.unpack("!H", body[:2])[0]
    names, i = [], 2
    for _ in range(n):
        j = body.index(b"\x00", i)
        names.append(body[i:j].decode())
        i = j + 1 + 18
    return names


def run_session(sess, host, port, pg, console=None):
    """[(step index, replies)], how it ended ('ok' or an error), and the
    first step after which the client, quiescent (all it sent answered,
    no batch open, no transaction), still held a server (console given:
    through pgwharf), or None."""
    out, held = [], None
    try:
        c = Client(host, port, pg.user, pg.password, pg.database, sess["params"])
    except Exception as e:         # reported as a difference
        return out, "login: %r" % e, held
    try:
        cport = c.s.getsockname()[1]
        c.no_named = sess.get("no_named", False)
        for i, step in enumerate(sess["steps"]):
            out.append(c.run(step))
            if console and held is None and c.quiescent() and console.holds(cport):
                held = i
    except Exception as e:
        return out, "%s at step %d: %r" % (type(e).__name__, len(out), e), held
    finally:
        c.close()
    return out, "ok", held


def run_all(sessions, host, port, pg, concurrency, check_idle=False):
    results = {}
    lock = threading.Lock()
    queue = list(sessions)

    def worker():
        console = Console(host, port, pg) if check_idle else None
        try:
            while True:
                with lock:
                    if not queue:
                        return
                    s = queue.pop(0)
                results[s["seed"]] = run_session(s, host, port, pg, console)
        finally:
            if console:
                console.close()

    ts = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return results


def compare(sess, direct, proxied):
    """The first difference as text, or None."""
    (d_out, d_end, _), (p_out, p_end, held) = direct, proxied
    for i, step in enumerate(sess["steps"]):
        if i >= len(d_out) or i >= len(p_out):
            break
        for m in p_out[i]:
            if "PGW_" in repr(m):
                return "step %d (%s): pgwharf's name reached the client: %r" % (
                    i, step["desc"], m)
        if d_out[i] != p_out[i]:
            k = 0
            while k < min(len(d_out[i]), len(p_out[i])) and d_out[i][k] == p_out[i][k]:
                k += 1
            return ("step %d (%s):\n  direct:  %s\n  pgwharf: %s\n  first difference at "
                    "message %d: direct %r, pgwharf %r"
                    % (i, step["desc"], fmt(d_out[i]), fmt(p_out[i]), k,
                       d_out[i][k] if k < len(d_out[i]) else None,
                       p_out[i][k] if k < len(p_out[i]) else None))
    if d_end != p_end or len(d_out) != len(p_out):
        return "ended differently: direct %s after %d steps, pgwharf %s after %d" % (
            d_end, len(d_out), p_end, len(p_out))
    if held is not None:
        return "step %d (%s): the client, quiescent after it, held a server" % (
            held, sess["steps"][held]["desc"])
    return None


def fmt(msgs):
    return " ".join(repr(m) if m[0] in "ENS" else m[0] + (
        repr(m[1]) if m[0] in "D" else "") for m in msgs)


def differential(px, pg, seeds, steps, concurrency, known=True, no_txn=False,
                 more=False, no_named=False):
    sessions = [make_session(s, steps, known, no_txn, more, no_named) for s in seeds]
    reset_tables(pg, sessions)
    direct = run_all(sessions, pg.host, pg.port, pg, concurrency)
    reset_tables(pg, sessions)
    proxied = run_all(sessions, px.host, px.port, pg, concurrency, check_idle=True)
    diffs = []
    for s in sessions:
        d = compare(s, direct[s["seed"]], proxied[s["seed"]])
        if d:
            diffs.append("seed %d: %s" % (s["seed"], d))
    return sessions, diffs, direct


def pgwharf_settings(pool=2, mode="transaction", extra=None):
    st = {"pool_mode": mode, "default_pool_size": pool, "max_client_conn": 100,
          "query_wait_timeout": "60s", "log_connections": 0, "log_disconnections": 0}
    st.update(extra or {})
    return st


class TestDifferential(pt.PgwharfTestCase):
    """Fixed seeds, a few hundred batches: the same replies through
    pgwharf as straight from PostgreSQL."""

    SEEDS = range(1, 41)
    STEPS = 25
    MORE = False          # Gen.more_step()'s kinds too
    EXTRA = {}            # pgwharf settings

    def test_sessions_match_postgres(self):
        px = self.start_pgwharf(settings=pgwharf_settings(extra=self.EXTRA))
        no_named = str(self.EXTRA.get("max_prepared_statements", "")) == "0"
        sessions, diffs, _ = differential(px, self.pg, self.SEEDS, self.STEPS, 8, known=False,
                                          more=self.MORE, no_named=no_named)
        print("difftest: %d sessions, %d batches" % (
            len(sessions), sum(len(s["steps"]) for s in sessions)))
        self.assertEqual(diffs[:5], [])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--concurrency", type=int, default=6)
    ap.add_argument("--pool", type=int, default=2)
    ap.add_argument("--mode", default="transaction")
    ap.add_argument("--extra", default="", help="k=v,k=v pgwharf settings")
    ap.add_argument("--show", action="store_true", help="print the sessions of differences")
    ap.add_argument("--no-known", action="store_true", help="leave out what is known to differ")
    ap.add_argument("--more", action="store_true",
                    help="also Flush-ended batches left open, Close/Describe + Flush, "
                    "FunctionCall, COPY by Execute with messages after its data, lone Syncs")
    a = ap.parse_args()
    pg = pt.Postgres()
    extra = dict(kv.split("=", 1) for kv in a.extra.split(",") if kv)
    px = pt.Pgwharf(pg=pg, settings=pgwharf_settings(a.pool, a.mode, extra))
    px.start()
    try:
        seeds = range(a.seed, a.seed + a.sessions)
        t0 = time.monotonic()
        sessions, diffs, direct = differential(px, pg, seeds, a.steps, a.concurrency,
                                               known=not a.no_known,
                                               no_txn=a.mode == "statement", more=a.more,
                                               no_named=extra.get(
                                                   "max_prepared_statements") == "0")
        kinds = {}
        for s in sessions:
            for st in s["steps"]:
                for part in st["desc"].split(" | "):
                    k = part.split(" ")[0] + (" " + part.split(" ")[1]
                                              if part[:1] in "DC" and part[:2] != "C " or
                                              part[:3] == "C S" or part[:3] == "C P" else "")
                    kinds[k] = kinds.get(k, 0) + 1
        recv = {}
        for seed, (outs, _, _) in direct.items():
            for o in outs:
                for m in o:
                    recv[m[0]] = recv.get(m[0], 0) + 1
        for seed in sorted(direct):
            if direct[seed][1] != "ok":
                print("direct seed %d ended: %s" % (seed, direct[seed][1]))
        print("%d sessions, %.1fs; sent %s; received (direct) %s"
              % (len(sessions), time.monotonic() - t0, kinds, recv))
        for d in diffs:
            print("DIFF", d)
            if a.show:
                seed = int(d.split(":")[0].split()[1])
                s = [x for x in sessions if x["seed"] == seed][0]
                print("  params", s["params"])
                for i, st in enumerate(s["steps"]):
                    print("  %3d %s" % (i, st["desc"]))
        print("alive" if px.alive() else "PGWHARF DIED")
    finally:
        rc = px.stop()
        print("pgwharf exit", rc)
        if rc != 0:
            print(px.log_tail(40))
        px.cleanup()                     # (its temp dir: one per run)
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
