#!/usr/bin/python3
"""idle_clients.py - open many logged-in, idle client connections to a pooler
and report its memory per client (for bench/run.sh).

    idle_clients.py --port N --pid PROXY_PID [--clients 10000] [--host 127.0.0.1]
                    [--user U --password P --dbname D] [--concurrency 64]
                    [--timeout 180] [--settle 2]

Each client speaks the v3 startup packet and cleartext or md5 password
authentication on a raw asyncio socket, waits for ReadyForQuery, and then
sits idle.  Once every client has logged in (or failed, or --timeout
passed), waits --settle seconds, reads VmRSS of PROXY_PID, checks that the
connections are still open, closes them all (Terminate, then close) and
prints one JSON object:

    {"clients": asked, "connected": n, "failed": n, "first_error": str|null,
     "still_open": n, "rss_before_kb": n, "rss_after_kb": n,
     "kb_per_client": x, "login_seconds": x}

kb_per_client = (rss_after - rss_before) / connected, where rss_before is
read before the first connection.  Standard library only; the caller must
have raised RLIMIT_NOFILE above --clients (the soft limit is raised to the
hard limit here).
"""
import argparse
import asyncio
import hashlib
import json
import resource
import struct
import sys
import time

PROTO_V3 = 196608


def read_rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS for pid %d" % pid)


def startup_packet(user, dbname):
    body = struct.pack("!I", PROTO_V3)
    for k, v in (("user", user), ("database", dbname), ("application_name", "idle_clients")):
        body += k.encode() + b"\0" + v.encode() + b"\0"
    body += b"\0"
    return struct.pack("!I", len(body) + 4) + body


def password_message(secret):
    body = secret + b"\0"
    return b"p" + struct.pack("!I", len(body) + 4) + body


def md5_response(user, password, salt):
    inner = hashlib.md5((password + user).encode()).hexdigest()
    return b"md5" + hashlib.md5(inner.encode() + salt).hexdigest().encode()


def error_text(body):
    fields = {}
    for part in body.split(b"\0"):
        if part:
            fields[chr(part[0])] = part[1:].decode(errors="replace")
    return "%s %s: %s" % (fields.get("S", "ERROR"), fields.get("C", "?"), fields.get("M", "?"))


async def read_msg(reader):
    hdr = await reader.readexactly(5)
    typ, length = hdr[:1], struct.unpack("!I", hdr[1:])[0]
    if length < 4 or length > 1 << 20:
        raise RuntimeError("bad message length %d" % length)
    body = await reader.readexactly(length - 4)
    return typ, body


async def login(a):
    """Connect and authenticate; return (reader, writer) at ReadyForQuery."""
    reader, writer = await asyncio.open_connection(a.host, a.port)
    try:
        writer.write(startup_packet(a.user, a.dbname))
        await writer.drain()
        while True:
            typ, body = await read_msg(reader)
            if typ == b"R":
                code = struct.unpack("!I", body[:4])[0]
                if code == 0:
                    continue
                if code == 3:
                    writer.write(password_message(a.password.encode()))
                elif code == 5:
                    writer.write(password_message(md5_response(a.user, a.password, body[4:8])))
                else:
                    raise RuntimeError("unsupported authentication request %d" % code)
                await writer.drain()
            elif typ == b"E":
                raise RuntimeError(error_text(body))
            elif typ == b"Z":
                return reader, writer
            # S (ParameterStatus), K (BackendKeyData), N (notice): ignore
    except BaseException:
        writer.close()
        raise


async def run(a):
    rss_before = read_rss_kb(a.pid)
    sem = asyncio.Semaphore(a.concurrency)
    conns = []
    errors = []

    async def one():
        async with sem:
            try:
                conns.append(await asyncio.wait_for(login(a), timeout=30))
            except Exception as e:  # noqa: BLE001 - every failure is reported
                errors.append("%s: %s" % (type(e).__name__, e))

    t0 = time.monotonic()
    tasks = [asyncio.ensure_future(one()) for _ in range(a.clients)]
    done, pending = await asyncio.wait(tasks, timeout=a.timeout)
    for t in pending:
        t.cancel()
    if pending:
        errors.append("timeout: %d logins unfinished after %ss" % (len(pending), a.timeout))
        await asyncio.gather(*pending, return_exceptions=True)
    login_seconds = time.monotonic() - t0

    await asyncio.sleep(a.settle)
    rss_after = read_rss_kb(a.pid)

    # An open idle connection has nothing to read; one the proxy closed (or
    # sent an error on) returns data or EOF at once.  Probe all together.
    async def probe(reader):
        try:
            await asyncio.wait_for(reader.read(1), timeout=0.5)
        except asyncio.TimeoutError:
            return 1
        except Exception:  # noqa: BLE001
            pass
        return 0

    still_open = sum(await asyncio.gather(*(probe(r) for r, _ in conns)))

    for _, writer in conns:
        try:
            writer.write(b"X\0\0\0\4")
            writer.close()
        except Exception:  # noqa: BLE001
            pass
    await asyncio.gather(*(w.wait_closed() for _, w in conns), return_exceptions=True)

    n = len(conns)
    return {
        "clients": a.clients,
        "connected": n,
        "failed": a.clients - n,
        "first_error": errors[0] if errors else None,
        "still_open": still_open,
        "rss_before_kb": rss_before,
        "rss_after_kb": rss_after,
        "kb_per_client": round((rss_after - rss_before) / n, 2) if n else None,
        "login_seconds": round(login_seconds, 2),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True, help="the proxy's PID (for VmRSS)")
    ap.add_argument("--clients", type=int, default=10000)
    ap.add_argument("--user", default="pgwharf")
    ap.add_argument("--password", default="pgwharf")
    ap.add_argument("--dbname", default="bench")
    ap.add_argument("--concurrency", type=int, default=64, help="logins in flight at once")
    ap.add_argument("--timeout", type=float, default=180, help="seconds for all logins")
    ap.add_argument("--settle", type=float, default=2, help="seconds idle before measuring")
    a = ap.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    if soft < a.clients + 64:
        print("idle_clients.py: RLIMIT_NOFILE %d is too low for %d clients" % (soft, a.clients),
              file=sys.stderr)
        return 2

    print(json.dumps(asyncio.run(run(a))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
