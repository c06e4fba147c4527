#!/usr/bin/python3
"""openloop_stats.py — tables for the open-loop scenario (bench/openloop.sh); stdlib only.

Subcommands:
  parse FILE              one-line summary of a build/openloop output file
  rps WRKFILE             the requests/s of a wrk output (the closed-loop capacity run), integer
  table RUNS.tsv          per proxy: medians over rounds of p50/p99/p99.9/max, achieved rate,
                          failed requests, split between the backends; p99 against HAProxy
                          leastconn; the target (peak-ewma p99 <= 0.5x HAProxy leastconn's)

RUNS.tsv has one line per measured run: label <TAB> round <TAB> openloop-output-file <TAB> the
space-separated number of requests each backend received during the run (may be empty) <TAB> the
proxy's CPU time during the run in clock ticks. Labels are printed in first-appearance order.
Exit status 0, 1 on a parse error, 2 on bad usage, 3 with `table --strict` when the target is
missed.
"""
import argparse
import os
import re
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wrk_output import ParseError, parse_wrk, tsv_rows  # noqa: E402  (bench/wrk_output.py)

BASELINE = "haproxy leastconn"
TARGET = ("agora peak-ewma", 0.5)
# A run in which more than this share of the requests failed or timed out is marked INVALID.
MAX_FAILED_SHARE = 0.01


def parse_openloop(path):
    """The key=value fields of the "openloop:" line of one build/openloop output, as floats."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError as e:
        raise ParseError("%s: %s" % (path, e.strerror))
    return parse_openloop_text(text, path)


def parse_openloop_text(text, path):
    """parse_openloop on an output already read (path for the messages)."""
    m = re.search(r"^openloop: (rate=.*)$", text, re.M)  # not one of its error messages
    if not m:
        raise ParseError("%s: no 'openloop:' result line" % path)
    out = {}
    for field in m.group(1).split():
        key, sep, value = field.partition("=")
        try:
            out[key] = float(value)
        except ValueError:
            raise ParseError("%s: bad field %r" % (path, field))
    for key in ("rate", "achieved_rps", "requests", "completed", "errors", "timeouts", "p50_ms", "p99_ms", "p999_ms",
                "max_ms"):
        if key not in out:
            raise ParseError("%s: field %s missing" % (path, key))
    out["failed"] = out["errors"] + out["timeouts"] + out.get("non2xx", 0)
    return out


def read_runs(path):
    labels = {}
    for n, parts, resolve in tsv_rows(path):
        if len(parts) not in (3, 4, 5):
            raise ParseError("%s:%d: expected 3 to 5 tab-separated fields" % (path, n))
        run = parse_openloop(resolve(parts[2]))
        try:
            run["split"] = [int(x) for x in parts[3].split()] if len(parts) >= 4 and parts[3] else None
            run["cpu_ticks"] = int(parts[4]) if len(parts) == 5 and parts[4] else None
        except ValueError:
            raise ParseError("%s:%d: bad counts %r" % (path, n, parts[3:]))
        labels.setdefault(parts[0], []).append(run)
    return labels


def summarise(runs):
    med = lambda key: statistics.median(r[key] for r in runs)  # noqa: E731
    splits = [r["split"] for r in runs if r["split"] and sum(r["split"]) > 0]
    shares = None
    if splits and len({len(s) for s in splits}) == 1:
        shares = [statistics.median(100.0 * s[i] / sum(s) for s in splits) for i in range(len(splits[0]))]
    ticks = [r["cpu_ticks"] * 1e6 / os.sysconf("SC_CLK_TCK") / r["completed"]
             for r in runs if r["cpu_ticks"] is not None and r["completed"]]
    return {
        "rounds": len(runs), "p50": med("p50_ms"), "p99": med("p99_ms"), "p999": med("p999_ms"),
        "max": med("max_ms"), "achieved": med("achieved_rps"), "rate": med("rate"),
        "failed": int(sum(r["failed"] for r in runs)),
        "bad": any(r["failed"] > MAX_FAILED_SHARE * max(r["requests"], 1) for r in runs),
        "p99_all": [r["p99_ms"] for r in runs], "shares": shares,
        "cpu_us": statistics.median(ticks) if ticks else None,
    }


def table(runs_path, note, capacity, strict):
    stats = {label: summarise(runs) for label, runs in read_runs(runs_path).items()}
    if not stats:
        raise ParseError("%s: no runs" % runs_path)
    width = max(len(l) for l in stats)
    rounds = max(s["rounds"] for s in stats.values())
    rate = next(iter(stats.values()))["rate"]
    base = stats.get(BASELINE)
    out = ["Open loop, serial backends 1-20, 1-20, 5-100 ms, %.0f req/s offered%s (%s; %s)" % (
        rate, " = %.0f%% of %.0f req/s capacity" % (100 * rate / capacity, capacity) if capacity else "",
        note, "medians of %d rounds" % rounds if rounds > 1 else "1 round")]
    out.append("  %-*s %8s %9s %9s %9s %9s %7s %10s %10s  %-20s %s" % (
        width, "proxy", "req/s", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "failed", "CPU us/req",
        "p99/hap-lc", "p99 per round", "% to b1/b2/b3"))
    for label, s in stats.items():
        rel = "%9.2fx" % (s["p99"] / base["p99"]) if base and base["p99"] else "%10s" % "-"
        cpu = "%10.1f" % s["cpu_us"] if s["cpu_us"] is not None else "%10s" % "-"
        shares = "/".join("%.0f" % x for x in s["shares"]) if s["shares"] else "-"
        rounds_p99 = ",".join("%.0f" % x for x in s["p99_all"])
        out.append("  %-*s %8.1f %9.2f %9.2f %9.2f %9.2f %7d %s %s  %-20s %s%s" % (
            width, label, s["achieved"], s["p50"], s["p99"], s["p999"], s["max"], s["failed"], cpu, rel,
            rounds_p99, shares, "  INVALID: >1% failed or timed out" if s["bad"] else ""))
    name, limit = TARGET
    s = stats.get(name)
    if not s or not base:
        met, line = False, "NOT MEASURED"
    elif s["bad"] or base["bad"]:
        met, line = False, "INVALID (failed requests)"
    else:
        r = s["p99"] / base["p99"]
        met = r <= limit
        line = "%s: p99 %.1f vs %.1f ms = %.3fx (want <= %.2fx)" % ("MET" if met else "MISSED", s["p99"],
                                                                     base["p99"], r, limit)
    out.append("Target: %s p99 at most %.1fx HAProxy leastconn's at the same offered rate: %s" % (name, limit, line))
    out.append("")
    print("\n".join(out))
    return 3 if strict and not met else 0


def main(argv):
    ap = argparse.ArgumentParser(prog="openloop_stats.py", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("parse").add_argument("file")
    sub.add_parser("rps").add_argument("file")
    p = sub.add_parser("table")
    p.add_argument("runs")
    p.add_argument("--note", default="")
    p.add_argument("--capacity", type=float, default=0, help="closed-loop capacity, req/s (for the title)")
    p.add_argument("--strict", action="store_true", help="exit 3 when the target is missed")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "parse":
            r = parse_openloop(args.file)
            print("%.1f req/s  p50 %.2f  p99 %.2f  p99.9 %.2f  max %.2f ms  failed %d" % (
                r["achieved_rps"], r["p50_ms"], r["p99_ms"], r["p999_ms"], r["max_ms"], r["failed"]))
        elif args.cmd == "rps":
            print("%.0f" % parse_wrk(args.file)["rps"])
        else:
            return table(args.runs, args.note, args.capacity, args.strict)
    except ParseError as e:
        print("openloop_stats.py: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
