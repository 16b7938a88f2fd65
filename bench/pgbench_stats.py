#!/usr/bin/python3
"""pgbench_stats.py - summarize one pgbench run for bench/run.sh.

    pgbench_stats.py --stdout FILE --rc N [--log-prefix PREFIX]

Reads pgbench's combined stdout/stderr (FILE) and its per-transaction logs
(PREFIX.PID and PREFIX.PID.N, written by `-l --log-prefix=PREFIX`), and
prints one tab-separated line:

    status  tps  lat_avg_ms  p99_ms  transactions  error

status is "ok" or "fail" (pgbench exited non-zero, aborted clients, or
printed no tps); error is the first error line pgbench printed, or "-".
tps is pgbench's own figure: "tps = X (without initial connection time)",
or "(including reconnection times)" under -C.  lat_avg_ms and p99_ms are
the mean and the nearest-rank 99th percentile of the latency column (3rd,
microseconds) of the per-transaction logs, so both describe the same
transactions (pgbench's own "latency average" is elapsed time x clients /
transactions, which under -C also counts the time between transactions
spent reconnecting; it is used only when there are no logs).  Failed or
skipped transactions are left out.  Only the standard library is used.
"""
import argparse
import glob
import math
import re
import sys

TPS_RE = re.compile(r"^tps = ([0-9.]+) \((without initial connection time|including reconnection times)\)")
LAT_RE = re.compile(r"^latency average = ([0-9.]+) ms")
NTX_RE = re.compile(r"^number of transactions actually processed: (\d+)")
ERR_RE = re.compile(r"(error|FATAL|ERROR|aborted|could not|timeout)", re.IGNORECASE)


def parse_stdout(path):
    tps = lat = ntx = None
    err = None
    aborted = False
    with open(path, errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            m = TPS_RE.match(line)
            if m:
                tps = float(m.group(1))
                continue
            m = LAT_RE.match(line)
            if m:
                lat = float(m.group(1))
                continue
            m = NTX_RE.match(line)
            if m:
                ntx = int(m.group(1))
                continue
            if line.startswith("number of failed transactions:"):
                continue
            if "Run was aborted" in line or "aborted in command" in line:
                aborted = True
            if err is None and ERR_RE.search(line) and not line.startswith("number of"):
                err = line.strip()
    return tps, lat, ntx, err, aborted


def latency_from_logs(prefix):
    """(mean, p99) in ms over the logged transactions, or (None, None)."""
    lats = []
    for path in glob.glob(glob.escape(prefix) + ".*"):
        with open(path, errors="replace") as f:
            for line in f:
                parts = line.split()
                if len(parts) < 3:
                    continue
                try:
                    lats.append(int(parts[2]))
                except ValueError:      # "failed" / "skipped"
                    continue
    if not lats:
        return None, None
    lats.sort()
    idx = max(0, math.ceil(0.99 * len(lats)) - 1)
    return sum(lats) / len(lats) / 1000.0, lats[idx] / 1000.0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stdout", required=True)
    ap.add_argument("--rc", type=int, required=True)
    ap.add_argument("--log-prefix")
    a = ap.parse_args()

    tps, lat, ntx, err, aborted = parse_stdout(a.stdout)
    avg, p99 = latency_from_logs(a.log_prefix) if a.log_prefix else (None, None)
    if avg is not None:
        lat = avg
    ok = a.rc == 0 and tps is not None and not aborted
    if not ok and err is None and a.rc == 0 and not ntx:
        err = "no transaction completed within -T (connecting took the whole run?)"
    if not ok and err is None:
        err = "pgbench exited %d%s" % (a.rc, " (killed by timeout)" if a.rc in (124, 137) else "")

    def fmt(v, spec):
        return "-" if v is None else format(v, spec)

    fields = [
        "ok" if ok else "fail",
        fmt(tps, ".1f"),
        fmt(lat, ".3f"),
        fmt(p99, ".3f"),
        fmt(ntx, "d"),
        (err or "-").replace("\t", " ")[:300],
    ]
    print("\t".join(fields))
    return 0


if __name__ == "__main__":
    sys.exit(main())
