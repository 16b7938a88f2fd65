#!/usr/bin/python3
"""report.py - turn bench/run.sh's raw results into the summary table.

    report.py --runs RUNS.tsv [--idle IDLE.tsv] --meta META [--out results.md]

RUNS.tsv: one line per pgbench run (bench/run.sh writes it), tab-separated:
    cell label clients target rep status tps lat_avg_ms p99_ms ntx
    cpu_ms_per_1000_tx rss_kb error
status is ok, fail or skip.  IDLE.tsv: "target<TAB>JSON" lines from
bench/idle_clients.py.  META: KEY=value lines (date, machine, command, ...).

Per cell and target, every figure is the median over the "ok" repetitions;
a target with any failed repetition shows "fails" (the errors are listed
under the table).  Prints Markdown to stdout and, with --out, writes the
same Markdown plus the raw runs to that file.  Standard library only.
"""
import argparse
import json
import statistics
import sys
from collections import OrderedDict

TARGETS = ("direct", "pgbouncer", "pgwharf", "pgwharf-nobatch", "pgwharf-pipe")
PROXIES = ("pgbouncer", "pgwharf")
COLS = ["cell", "clients", "rep", "target", "status", "tps", "lat", "p99", "ntx", "cpu", "rss", "error"]


def num(s):
    return None if s in ("", "-", None) else float(s)


def read_runs(path):
    runs = []
    with open(path) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 13:
                continue
            cell, label, clients, target, rep, status, tps, lat, p99, ntx, cpu, rss, err = parts[:13]
            runs.append(dict(cell=cell, label=label, clients=int(clients), target=target,
                             rep=int(rep), status=status, tps=num(tps), lat=num(lat),
                             p99=num(p99), ntx=num(ntx), cpu=num(cpu), rss=num(rss), error=err))
    return runs


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarize(runs):
    cells = OrderedDict()
    for r in runs:
        c = cells.setdefault(r["cell"], {"label": r["label"], "clients": r["clients"], "t": {}})
        c["t"].setdefault(r["target"], []).append(r)
    out = []
    for cell, c in cells.items():
        row = {"cell": cell, "label": c["label"], "clients": c["clients"], "t": {}}
        for t in TARGETS:
            rs = c["t"].get(t, [])
            if not rs:
                row["t"][t] = {"state": "absent"}
            elif all(r["status"] == "skip" for r in rs):
                row["t"][t] = {"state": "skip", "why": rs[0]["error"]}
            elif any(r["status"] == "fail" for r in rs):
                nfail = sum(r["status"] == "fail" for r in rs)
                row["t"][t] = {"state": "fail", "nfail": nfail, "n": len(rs),
                               "errors": [r["error"] for r in rs if r["status"] == "fail"]}
            else:
                ok = [r for r in rs if r["status"] == "ok"]
                row["t"][t] = {"state": "ok", "n": len(ok),
                               **{k: med([r[k] for r in ok]) for k in ("tps", "lat", "p99", "cpu", "rss")}}
        out.append(row)
    return out


def f_tps(s):
    if s["state"] == "ok":
        return "%.0f" % s["tps"]
    return {"skip": "skipped", "fail": "fails", "absent": "-"}[s["state"]]


def f_ratio(a, b):
    if a["state"] == "ok" and b["state"] == "ok" and b["tps"]:
        return "%.2f" % (a["tps"] / b["tps"])
    return "-"


def f_lat(s):
    if s["state"] != "ok":
        return "-"
    p99 = "-" if s["p99"] is None else "%.2f" % s["p99"]
    return "%.2f / %s" % (s["lat"], p99)


def f_cpu_ratio(a, b):
    if a["state"] == "ok" and b["state"] == "ok" and a["cpu"] and b["cpu"]:
        return "%.2f" % (a["cpu"] / b["cpu"])
    return "-"


def f_cpu(s):
    return "%.1f" % s["cpu"] if s["state"] == "ok" and s["cpu"] is not None else "-"


def f_rss(s):
    return "%.1f" % (s["rss"] / 1024.0) if s["state"] == "ok" and s["rss"] is not None else "-"


def md_table(header, rows):
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep] + [line(r) for r in rows])


def main_table(summary):
    header = ["cell", "direct TPS", "pgbouncer TPS", "pgwharf TPS", "pgwharf/pgbouncer",
              "pgwharf/direct", "direct lat avg/p99 ms", "pgbouncer lat avg/p99 ms",
              "pgwharf lat avg/p99 ms", "pgbouncer CPU ms/1k tx", "pgwharf CPU ms/1k tx",
              "CPU pgwharf/pgbouncer", "pgbouncer RSS MiB", "pgwharf RSS MiB"]
    rows = []
    for row in summary:
        d, b, w = (row["t"][t] for t in TARGETS[:3])
        rows.append([row["label"], f_tps(d), f_tps(b), f_tps(w), f_ratio(w, b), f_ratio(w, d),
                     f_lat(d), f_lat(b), f_lat(w), f_cpu(b), f_cpu(w), f_cpu_ratio(w, b),
                     f_rss(b), f_rss(w)])
    return md_table(header, rows)


def batch_table(summary):
    """pgwharf with io_batch on (the default) against the same binary with
    io_batch = off, when the run had the pgwharf-nobatch target."""
    if all(row["t"]["pgwharf-nobatch"]["state"] == "absent" for row in summary):
        return None
    header = ["cell", "io_batch=on TPS", "io_batch=off TPS", "on/off", "on CPU ms/1k tx",
              "off CPU ms/1k tx", "CPU on/off", "on lat avg/p99 ms", "off lat avg/p99 ms"]
    rows = []
    for row in summary:
        w, n = row["t"]["pgwharf"], row["t"]["pgwharf-nobatch"]
        rows.append([row["label"], f_tps(w), f_tps(n), f_ratio(w, n), f_cpu(w), f_cpu(n),
                     f_cpu_ratio(w, n), f_lat(w), f_lat(n)])
    return md_table(header, rows)


def pipe_table(summary):
    """server_pipeline_depth = 2 (pgwharf-pipe) against PgBouncer and the
    default pgwharf, when the run had that target."""
    if all(row["t"]["pgwharf-pipe"]["state"] == "absent" for row in summary):
        return None
    header = ["cell", "pgbouncer TPS", "pgwharf TPS", "pipe TPS", "pipe/pgbouncer",
              "pipe/pgwharf", "pgbouncer CPU ms/1k tx", "pipe CPU ms/1k tx",
              "CPU pipe/pgbouncer", "pgwharf lat avg/p99 ms", "pipe lat avg/p99 ms"]
    rows = []
    for row in summary:
        b, w, p = row["t"]["pgbouncer"], row["t"]["pgwharf"], row["t"]["pgwharf-pipe"]
        rows.append([row["label"], f_tps(b), f_tps(w), f_tps(p), f_ratio(p, b), f_ratio(p, w),
                     f_cpu(b), f_cpu(p), f_cpu_ratio(p, b), f_lat(w), f_lat(p)])
    return md_table(header, rows)


def notes(summary):
    lines = []
    for row in summary:
        for t in TARGETS:
            s = row["t"][t]
            if s["state"] == "skip":
                lines.append("- %s, %s: skipped (%s)" % (row["label"], t, s["why"]))
            elif s["state"] == "fail":
                errs = sorted(set(e for e in s["errors"] if e and e != "-"))
                lines.append("- %s, %s: fails in %d of %d runs: %s" % (
                    row["label"], t, s["nfail"], s["n"], "; ".join(errs[:2]) or "(no message)"))
    return lines


def idle_table(path):
    rows = []
    with open(path) as f:
        for line in f:
            if "\t" not in line:
                continue
            target, js = line.rstrip("\n").split("\t", 1)
            try:
                r = json.loads(js)
            except ValueError:
                rows.append([target, "-", "-", "-", "-", "-", "-", "error: " + js[:200]])
                continue
            rows.append([target, "%d / %d" % (r["connected"], r["clients"]), str(r["still_open"]),
                         "%.1f" % (r["rss_before_kb"] / 1024.0), "%.1f" % (r["rss_after_kb"] / 1024.0),
                         "-" if r["kb_per_client"] is None else "%.2f" % r["kb_per_client"],
                         "%.1f" % r["login_seconds"], r["first_error"] or ""])
    header = ["proxy", "logged in", "still open", "RSS before MiB", "RSS after MiB",
              "KiB per idle client", "login s", "first error"]
    return md_table(header, rows) if rows else None


def raw_table(runs):
    header = ["cell", "target", "rep", "status", "TPS", "lat avg ms", "p99 ms", "tx",
              "CPU ms/1k tx", "RSS MiB", "error"]
    rows = []
    for r in runs:
        f = lambda v, spec: "-" if v is None else format(v, spec)
        rows.append([r["label"], r["target"], r["rep"], r["status"], f(r["tps"], ".0f"),
                     f(r["lat"], ".3f"), f(r["p99"], ".3f"), f(r["ntx"], ".0f"), f(r["cpu"], ".1f"),
                     "-" if r["rss"] is None else "%.1f" % (r["rss"] / 1024.0),
                     "" if r["error"] == "-" else r["error"][:120]])
    return md_table(header, rows)


def read_meta(path):
    meta = OrderedDict()
    with open(path) as f:
        for line in f:
            if "=" in line:
                k, v = line.rstrip("\n").split("=", 1)
                meta[k] = v
    return meta


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", required=True)
    ap.add_argument("--idle")
    ap.add_argument("--meta", required=True)
    ap.add_argument("--out")
    a = ap.parse_args()

    runs = read_runs(a.runs)
    meta = read_meta(a.meta)
    summary = summarize(runs)

    body = []
    body.append("# pgwharf benchmark: direct vs PgBouncer vs pgwharf")
    body.append("")
    body.append("- date: %s" % meta.get("date", "?"))
    body.append("- machine: %s" % meta.get("machine", "?"))
    body.append("- command: `%s`" % meta.get("command", "?"))
    for k in ("versions", "setup", "method"):
        if k in meta:
            body.append("- %s: %s" % (k, meta[k]))
    body.append("")
    body.append("## pgbench (medians of %s run(s) of %s s each)" % (meta.get("reps", "?"),
                                                                   meta.get("duration", "?")))
    body.append("")
    body.append(main_table(summary))
    # A/B tables of the same binary, for the targets the run had.
    for title, table in (("io_batch on vs off", batch_table(summary)),
                         ("server_pipeline_depth = 2", pipe_table(summary))):
        if table:
            body += ["", "## %s (same binary, same run)" % title, "", table]
    n = notes(summary)
    if n:
        body.append("")
        body += n
    if a.idle:
        t = idle_table(a.idle)
        if t:
            body.append("")
            body.append("## Idle clients (logged in, then idle; RSS of the proxy)")
            body.append("")
            body.append(t)
    text = "\n".join(body) + "\n"
    sys.stdout.write(text)

    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
            f.write("\n## Raw runs\n\n")
            f.write(raw_table(runs) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
