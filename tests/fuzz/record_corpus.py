#!/usr/bin/python3
"""record_corpus.py - (re)make the seed corpora in tests/fuzz/corpus/.

Real clients (psql, psycopg2, psycopg 3, asyncpg, pgbench) talk to a real
PostgreSQL through a tiny TCP recorder; what they send and what the server
answers is cut into seeds:

  corpus/startup/     each client's byte stream from its first packet on
                      (SSLRequest or StartupMessage, SASL messages, queries),
                      cut at 4 KiB
  corpus/wire_error/  bodies of every ErrorResponse and NoticeResponse the
                      server sent (bad password, unknown database, 1/0,
                      RAISE NOTICE, syntax error, ...)
  corpus/scram/       client-first NUL client-final, from the SASL messages
                      the clients sent, plus RFC 7677's exchange (which the
                      fuzz target's fixed verifier and nonce accept)
  corpus/conf/        examples/*.ini, docker/*.ini, tests/unit/data/conf/
  corpus/authfile/    the userlist.txt files of the repo, plus a few made here
  corpus/hba/         the test cluster's pg_hba.conf, plus a few made here

Usage (a cluster from tests/pgcluster.sh):

    tests/pgcluster.sh start /tmp/pg
    PGW_TEST_ENV=/tmp/pg/env tests/fuzz/record_corpus.py
    tests/pgcluster.sh stop /tmp/pg

Files are named after the client and the scenario, so re-running it
replaces them; hand-made seeds with other names stay.
"""

import asyncio
import glob
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import pgwharf_test as pt  # noqa: E402

CORPUS = os.path.join(HERE, "corpus")


class Recorder:
    """Accepts on 127.0.0.1:0, relays each connection to PostgreSQL, and
    keeps both directions' bytes per connection."""

    def __init__(self, pg_host, pg_port):
        self.target = (pg_host, pg_port)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns = []           # [(client_bytes, server_bytes)] as bytearrays
        self.lock = threading.Lock()
        self.stopping = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            s = socket.create_connection(self.target)
            rec = (bytearray(), bytearray())
            with self.lock:
                self.conns.append(rec)
            threading.Thread(target=self._pump, args=(c, s, rec[0]), daemon=True).start()
            threading.Thread(target=self._pump, args=(s, c, rec[1]), daemon=True).start()

    @staticmethod
    def _pump(src, dst, keep):
        try:
            while True:
                b = src.recv(65536)
                if not b:
                    break
                keep += b
                dst.sendall(b)
        except OSError:
            pass
        for x in (src, dst):
            try:
                x.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def take(self):
        time.sleep(0.3)          # let the pumps finish
        with self.lock:
            out, self.conns = self.conns, []
        return [(bytes(a), bytes(b)) for a, b in out]

    def close(self):
        self.stopping = True
        self.sock.close()


# --- splitting the streams ---------------------------------------------------

def client_messages(stream):
    """[(type, body)] after the startup phase: skips SSLRequest/GSSENC and
    the StartupMessage."""
    i = 0
    while i + 8 <= len(stream):
        n, code = struct.unpack("!II", stream[i:i + 8])
        i += n
        if code not in (80877103, 80877104):
            break
    return split_messages(stream, i)


def server_messages(stream):
    i = 0
    if stream[:1] in (b"N", b"S") and (len(stream) == 1 or stream[1:2] in b"RE"):
        i = 1                    # the answer to SSLRequest
    return split_messages(stream, i)


def split_messages(stream, i):
    """(type, body) of each typed message from offset i on."""
    out = []
    while i + 5 <= len(stream):
        t = stream[i:i + 1]
        n = struct.unpack("!I", stream[i + 1:i + 5])[0]
        out.append((t, stream[i + 5:i + 1 + n]))
        i += 1 + n
    return out


def sasl_pair(msgs):
    """client-first NUL client-final from the 'p' messages, or None."""
    ps = [body for t, body in msgs if t == b"p"]
    if len(ps) < 2 or b"SCRAM-SHA-256\x00" not in ps[0][:20]:
        return None
    first = ps[0]
    j = first.index(b"\x00") + 1
    n = struct.unpack("!i", first[j:j + 4])[0]
    return first[j + 4:j + 4 + n] + b"\x00" + ps[1]


# --- the clients ---------------------------------------------------------------

def run_clients(pg, port):
    """Yield (name, callable) for each scenario; each makes connections to
    127.0.0.1:port."""
    host, user, pw, db = "127.0.0.1", pg.user, pg.password, pg.database
    psql = pt.pg_bin("psql")

    def psql_run(sql, sslmode="prefer", password=pw, dbname=db, appname=None):
        e = dict(os.environ, PGPASSWORD=password, PGSSLMODE=sslmode, PGCONNECT_TIMEOUT="5")
        if appname:
            e["PGAPPNAME"] = appname
        subprocess.run([psql, "-X", "-h", host, "-p", str(port), "-U", user, "-d", dbname,
                        "-c", sql], env=e, capture_output=True, timeout=30)

    def psycopg2_run(sql, **kw):
        import psycopg2
        try:
            c = psycopg2.connect(host=host, port=port, user=user, password=kw.get("password", pw),
                                 dbname=kw.get("dbname", db), sslmode="disable",
                                 application_name="rec")
        except psycopg2.Error:
            return
        try:
            cur = c.cursor()
            cur.execute(sql, kw.get("args"))
            c.commit()
        except psycopg2.Error:
            c.rollback()
        c.close()

    def psycopg3_run(sql, pipeline=False):
        import psycopg
        with psycopg.connect(host=host, port=port, user=user, password=pw, dbname=db,
                             sslmode="disable", autocommit=True) as c:
            try:
                if pipeline:
                    with c.pipeline():
                        for i in range(3):
                            c.execute(sql, (i,))
                else:
                    c.execute(sql, (1,)).fetchall()
            except psycopg.Error:
                pass

    def asyncpg_run(sql):
        import asyncpg

        async def main():
            c = await asyncpg.connect(host=host, port=port, user=user, password=pw,
                                      database=db, ssl=False)
            try:
                await c.fetch(sql, 7)
            except asyncpg.PostgresError:
                pass
            await c.close()
        asyncio.run(main())

    def pgbench_run(args):
        e = dict(os.environ, PGPASSWORD=pw, PGSSLMODE="disable")
        subprocess.run([pt.pg_bin("pgbench"), "-h", host, "-p", str(port), "-U", user]
                       + args + [db], env=e, capture_output=True, timeout=60)

    return [
        ("psql-prefer-select", lambda: psql_run("select 1")),
        ("psql-disable-select", lambda: psql_run("select 1", sslmode="disable",
                                                 appname="psql rec")),
        ("psql-div-by-zero", lambda: psql_run("select 1/0", sslmode="disable")),
        ("psql-notice", lambda: psql_run(
            "do $$ begin raise notice 'hello %', 'there' using hint = 'a hint', "
            "detail = 'some detail'; end $$", sslmode="disable")),
        ("psql-syntax-error", lambda: psql_run("selec 1", sslmode="disable")),
        ("psql-bad-password", lambda: psql_run("select 1", sslmode="disable",
                                               password="wrong")),
        ("psql-unknown-db", lambda: psql_run("select 1", sslmode="disable",
                                             dbname="no_such_db")),
        ("psql-copy", lambda: psql_run("copy (select g from generate_series(1,3) g) to stdout",
                                       sslmode="disable")),
        ("psycopg2-params", lambda: psycopg2_run("select %s::int, %s::text",
                                                 args=(1, "x"))),
        ("psycopg2-unique-violation", lambda: psycopg2_run(
            "create temp table t(a int primary key); insert into t values (1), (1)")),
        ("psycopg3-extended", lambda: psycopg3_run("select %s::int + 1")),
        ("psycopg3-pipeline", lambda: psycopg3_run("select %s::int * 2", pipeline=True)),
        ("psycopg3-pipeline-error", lambda: psycopg3_run("select 1/(%s::int - 1)",
                                                         pipeline=True)),
        ("asyncpg-fetch", lambda: asyncpg_run("select $1::int, 'x'::text")),
        ("asyncpg-error", lambda: asyncpg_run("select $1::int / 0")),
        ("pgbench-select-only", lambda: pgbench_run(["-S", "-t", "3", "-c", "1", "-n"])),
        ("pgbench-extended", lambda: pgbench_run(["-S", "-t", "3", "-c", "1", "-n",
                                                  "-M", "extended"])),
        ("pgbench-prepared", lambda: pgbench_run(["-S", "-t", "3", "-c", "1", "-n",
                                                  "-M", "prepared"])),
    ]


def write(kind, name, data):
    d = os.path.join(CORPUS, kind)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def record(pg):
    rec = Recorder(pg.host, pg.port)
    # pgbench -S needs its tables.
    pt.run_pgbench(pg.host, pg.port, pg.user, pg.password, pg.database,
                   ["-i", "-s", "1", "-q"], check=False)
    counts = {"startup": 0, "wire_error": 0, "scram": 0}
    try:
        for name, fn in run_clients(pg, rec.port):
            try:
                fn()
            except Exception as e:      # a client missing is not fatal
                print("record_corpus: %s: %s" % (name, e), file=sys.stderr)
            for k, (cli, srv) in enumerate(rec.take()):
                suffix = "" if k == 0 else "-%d" % k
                if cli:
                    write("startup", name + suffix, cli[:4096])
                    counts["startup"] += 1
                    pair = sasl_pair(client_messages(cli))
                    if pair:
                        write("scram", name + suffix, pair)
                        counts["scram"] += 1
                seen = set()
                for t, body in server_messages(srv):
                    if t in (b"E", b"N") and body not in seen:
                        seen.add(body)
                        write("wire_error", "%s%s-%s%d" % (name, suffix, t.decode().lower(),
                                                           len(seen)), body)
                        counts["wire_error"] += 1
    finally:
        rec.close()
    return counts


# --- static seeds --------------------------------------------------------------

RFC_EXCHANGE = (b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO\x00"
                b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")

AUTHFILES = {
    "made-md5-scram": b'"alice" "md5d41d8cd98f00b204e9800998ecf8427e"\n'
                      b'"bob" "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$'
                      b'WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:'
                      b'wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="\n',
    "made-quotes-comments": b'; comment\n# another\n\n"we""ird" "pa ss" extra\n'
                            b'"dup" "one"\n"dup" "two"\r\n',
    "made-unterminated": b'"user "secret"\n"x" "y\n',
}

HBA_FILES = {
    "made-mixed": b"# TYPE DATABASE USER ADDRESS METHOD\n"
                  b"local all all trust\n"
                  b"host all all 127.0.0.1/32 scram-sha-256\n"
                  b"host all all ::1/128 md5\n"
                  b"hostssl app,\"all\" +admins,bob 10.0.0.0 255.0.0.0 cert clientcert=verify-full\n"
                  b"hostnossl sameuser all 192.168.0.0/16 password\n"
                  b"host replication all samenet reject\n"
                  b"host all all all \\\n  md5\n",
    "made-errors": b"host all all 300.1.1.1/8 md5\nlocal @dbs all trust\nlocal a,,b all trust\n"
                   b"local \"abc all trust\nhost all all fe80::/200 md5\n",
    "made-keywords": b"local samerole all peer\nhost samegroup all example.com ident\n"
                     b"hostgssenc all all 0.0.0.0/0 trust\nhostnogssenc pgbouncer all ::ffff:1.2.3.4/128 md5\n",
}


def static_seeds(pg):
    for src in (glob.glob(os.path.join(ROOT, "examples", "*.ini"))
                + glob.glob(os.path.join(ROOT, "docker", "*.ini"))
                + glob.glob(os.path.join(ROOT, "tests", "unit", "data", "conf", "*.ini"))
                + glob.glob(os.path.join(ROOT, "tests", "unit", "data", "conf", "inc", "*"))):
        if os.path.isfile(src):
            rel = os.path.relpath(src, ROOT).replace("/", "_")
            shutil.copyfile(src, os.path.join(CORPUS, "conf", rel))
    for src in (glob.glob(os.path.join(ROOT, "examples", "userlist*.txt"))
                + glob.glob(os.path.join(ROOT, "docker", "userlist*.txt"))
                + glob.glob(os.path.join(ROOT, "tests", "unit", "data", "conf", "userlist*"))):
        rel = os.path.relpath(src, ROOT).replace("/", "_")
        shutil.copyfile(src, os.path.join(CORPUS, "authfile", rel))
    for name, data in AUTHFILES.items():
        write("authfile", name, data)
    for name, data in HBA_FILES.items():
        write("hba", name, data)
    write("scram", "rfc7677", RFC_EXCHANGE)
    if pg.datadir:
        try:
            with open(os.path.join(pg.datadir, "pg_hba.conf"), "rb") as f:
                write("hba", "postgresql-15-initdb", f.read())
        except OSError as e:
            print("record_corpus: pg_hba.conf: %s" % e, file=sys.stderr)


def main():
    for kind in ("startup", "wire_error", "conf", "authfile", "scram", "hba"):
        os.makedirs(os.path.join(CORPUS, kind), exist_ok=True)
    pg = pt.Postgres()
    counts = record(pg)
    static_seeds(pg)
    for kind in sorted(os.listdir(CORPUS)):
        print("%-11s %3d seeds" % (kind, len(os.listdir(os.path.join(CORPUS, kind)))))
    print("recorded:", counts)


if __name__ == "__main__":
    main()
