#!/usr/bin/python3
"""stats.py — helpers for the load-balancer benchmarks (stdlib only).

Subcommands:
  ports N                 print N distinct free loopback TCP ports (outside the ephemeral range)
  parse FILE              one-line summary of a wrk --latency output file
  lb-table RUNS.tsv       scenario 1 tables: median req/s, p50, p99, CPU per request per proxy, agora ratios
  slow-table RUNS.tsv     scenario 2 tables: per policy, ratios against HAProxy leastconn, targets
  tls-table RUNS.tsv      issue 14's TLS tables (bench/tls.sh): per group (worker count, certificate, measure)
                          median rate, p50, p99, errors, CPU per unit per proxy, agora ratios, targets;
                          reads wrk, bench/tlsload.c (wrk-shaped), h2load (*.h2load.txt) and
                          bench/openloop.c (*.openloop.txt) outputs
  idle-table MEM.tsv RUNS.tsv
                          scenario 4 (bench/idle.sh): bytes per idle connection per proxy (MEM.tsv:
                          proxy <TAB> VmRSS kB before <TAB> connections held <TAB> VmRSS kB with
                          them), then throughput and p99 with idle connections held vs none (RUNS.tsv
                          groups are proxies, labels "none" and "idleN")

RUNS.tsv has one line per measured wrk run: group <TAB> label <TAB> round <TAB> wrk-output-file,
optionally <TAB> the space-separated number of requests each backend received during the run (may
be empty) <TAB> the proxy's CPU time during the run in clock ticks (user + system, its threads and
child processes), from which the tables give CPU microseconds per request.
Groups and labels are printed in the order they first appear. Exit status 0 on success, 1 on a
parse error (the message names the file), 2 on bad usage; `slow-table --strict` exits 3 when a
target is missed.
"""
import argparse
import os
import random
import re
import socket
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wrk_output import ParseError, duration_ms, parse_wrk, tsv_rows  # noqa: E402  (bench/wrk_output.py)
import openloop_stats  # noqa: E402  (bench/openloop_stats.py: the openloop output reader)

# A run whose failed requests exceed this share of all requests is marked invalid.
MAX_ERROR_SHARE = 0.01
# Noise allowance for "at least as good as" comparisons in the targets.
TOLERANCE = 0.05
BASELINE = "haproxy leastconn"


def free_ports(n):
    """Returns n distinct ports in 20000-32767 that 127.0.0.1 can bind now."""
    rng = random.SystemRandom()
    chosen = []
    for _ in range(2000):
        if len(chosen) == n:
            break
        port = rng.randrange(20000, 32768)
        if port in chosen:
            continue
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            s.close()
        chosen.append(port)
    if len(chosen) != n:
        raise SystemExit("stats.py: could not find %d free loopback ports" % n)
    return chosen


def read_runs(path, keep_tail=False):
    """Returns [(group, [(label, [parsed runs])])] in first-appearance order; keep_tail keeps the
    last 400 characters of each output as "tail" (bench/tlsload.c's summary line)."""
    groups = {}
    for n, parts, resolve in tsv_rows(path):
        if len(parts) not in (4, 5, 6):
            raise ParseError("%s:%d: expected 4 to 6 tab-separated fields" % (path, n))
        group, label, rnd, wrk_file = parts[:4]
        wrk_file = resolve(wrk_file)
        run = parse_output(wrk_file)
        run["round"] = rnd
        if keep_tail:
            run["tail"] = run["text"][-400:]
        del run["text"]
        try:
            run["split"] = [int(x) for x in parts[4].split()] if len(parts) >= 5 and parts[4] else None
        except ValueError:
            raise ParseError("%s:%d: bad per-backend counts %r" % (path, n, parts[4]))
        try:
            run["cpu_us"] = cpu_us_per_request(int(parts[5]), run["requests"]) if len(parts) == 6 else None
        except ValueError:
            raise ParseError("%s:%d: bad CPU ticks %r" % (path, n, parts[5]))
        groups.setdefault(group, {}).setdefault(label, []).append(run)
    return [(g, list(labels.items())) for g, labels in groups.items()]


def h2load_times(path):
    """The per-request times (ms) of an h2load run whose output is PATH (NAME.h2load.txt), read
    from its --log-file NAME.h2log.tsv (start µs, status, µs to the end of the response), or None
    when there is no such file. Failed streams (status -1) are left out, as wrk leaves errors out
    of its latency."""
    log = path[: -len(".h2load.txt")] + ".h2log.tsv"
    try:
        with open(log, encoding="utf-8") as f:
            rows = [line.split("\t") for line in f if line.strip()]
    except OSError:
        return None
    try:
        return sorted(int(r[2]) / 1000.0 for r in rows if len(r) >= 3 and r[1] != "-1")
    except ValueError:
        raise ParseError("%s: not an h2load --log-file" % log)


def percentile(sorted_values, q):
    """The nearest-rank q-th percentile (0 < q <= 100) of a sorted, non-empty list."""
    rank = max(1, -(-len(sorted_values) * q // 100))
    return sorted_values[int(rank) - 1]


def parse_h2load(path):
    """Parses one h2load output like parse_wrk. h2load prints no percentiles: p50 and p99 come
    from its per-request log (h2load_times) when the run wrote one, else p50 is the mean time
    for request and p99 is None."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError as e:
        raise ParseError("%s: %s" % (path, e.strerror))
    fin = re.search(r"^finished in [0-9.]+\S*, ([0-9.]+) req/s", text, re.M)
    req = re.search(r"^requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, "
                    r"(\d+) errored, (\d+) timeout", text, re.M)
    codes = re.search(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text, re.M)
    mean = re.search(r"^time for request:\s+\S+\s+\S+\s+(\S+)", text, re.M)
    if not (fin and req and codes and mean):
        raise ParseError("%s: not a complete h2load output" % path)
    ok = int(codes.group(1)) + int(codes.group(2))
    times = h2load_times(path)
    p50, p99 = duration_ms(mean.group(1), path), None
    if times:
        p50, p99 = percentile(times, 50), percentile(times, 99)
    return {"rps": float(fin.group(1)), "p50": p50, "p99": p99,
            "requests": ok, "errors": int(req.group(2)) + int(req.group(4)) + int(codes.group(3)) + int(codes.group(4)),
            "text": text}


def parse_openloop(path):
    """Parses one bench/openloop.c output like parse_wrk (its fields from openloop_stats.py's
    reader): the achieved rate, p50 and p99 timed from each request's due time, and as errors the
    failed, timed-out and non-2xx requests."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError as e:
        raise ParseError("%s: %s" % (path, e.strerror))
    r = openloop_stats.parse_openloop_text(text, path)
    return {"rps": r["achieved_rps"], "p50": r["p50_ms"], "p99": r["p99_ms"], "requests": int(r["completed"]),
            "offered": r["rate"], "errors": int(r["failed"]), "text": text}


def parse_output(path):
    """A load tool's output, by its name: NAME.h2load.txt, NAME.openloop.txt, else wrk's."""
    if path.endswith(".h2load.txt"):
        return parse_h2load(path)
    if path.endswith(".openloop.txt"):
        return parse_openloop(path)
    return parse_wrk(path)


def cpu_us_per_request(ticks, requests):
    """The proxy's CPU time (user + system; ticks of 1/CLK_TCK s) per completed request, in µs."""
    return ticks * 1e6 / os.sysconf("SC_CLK_TCK") / requests if requests else None


def summarise(runs):
    """Medians over rounds; `bad` is true if any round had too many failed requests."""
    errors = sum(r["errors"] for r in runs)
    return {
        "rps": statistics.median(r["rps"] for r in runs),
        "p50": statistics.median(r["p50"] for r in runs),
        "p99": statistics.median(r["p99"] for r in runs),
        "rounds": len(runs),
        "errors": errors,
        "bad": any(r["errors"] > MAX_ERROR_SHARE * max(r["requests"], 1) for r in runs),
        "rps_all": [r["rps"] for r in runs],
        "shares": shares(runs),
        "cpu_us": median_or_none([r.get("cpu_us") for r in runs]),
    }


def median_or_none(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def shares(runs):
    """Median over rounds of each backend's share of the requests, in %; None without counts."""
    splits = [r["split"] for r in runs if r.get("split") and sum(r["split"]) > 0]
    if not splits or len({len(x) for x in splits}) != 1:
        return None
    return [statistics.median(100.0 * x[i] / sum(x) for x in splits) for i in range(len(splits[0]))]


def describe(note, rounds):
    """Table title detail: the load description and how many rounds each figure summarises."""
    r = "medians of %d rounds" % rounds if rounds > 1 else "1 round"
    return "%s; %s" % (note, r) if note else r


def ratio(a, b):
    return a / b if b else float("nan")


def fmt_row(label, s, width):
    flag = "  INVALID: >1% failed requests" if s["bad"] else ""
    spread = "%.0f-%.0f" % (min(s["rps_all"]), max(s["rps_all"]))
    cpu = "%11.2f" % s["cpu_us"] if s.get("cpu_us") is not None else "%11s" % "-"
    return "  %-*s %10.0f %13s %9.2f %9.2f %7d %s%s" % (
        width, label, s["rps"], spread, s["p50"], s["p99"], s["errors"], cpu, flag)


def header(width, extra=""):
    return "  %-*s %10s %13s %9s %9s %7s %11s%s" % (
        width, "proxy", "req/s", "(min-max)", "p50 ms", "p99 ms", "errors", "CPU us/req", extra)


def lb_table(runs_path, note):
    out = []
    for group, labels in read_runs(runs_path):
        stats = {label: summarise(runs) for label, runs in labels}
        width = max(len(l) for l in stats)
        rounds = max(s["rounds"] for s in stats.values())
        out.append("Scenario 1, fast backends, %s (%s)" % (group, describe(note, rounds)))
        out.append(header(width))
        out.extend(fmt_row(label, s, width) for label, s in stats.items())
        agora = stats.get("agora")
        for other in ("haproxy", "nginx"):
            if agora and other in stats:
                o = stats[other]
                out.append("  agora/%-8s throughput %.2fx   p99 %.2fx   (throughput > 1 and p99 < 1 favour agora)"
                           % (other + ":", ratio(agora["rps"], o["rps"]), ratio(agora["p99"], o["p99"])))
        base = stats.get("agora-base")
        if agora and base:
            line = "  agora/agora-base: throughput %.2fx   p99 %.2fx" % (
                ratio(agora["rps"], base["rps"]), ratio(agora["p99"], base["p99"]))
            if agora["cpu_us"] and base["cpu_us"]:
                line += "   CPU per request %.3fx" % (agora["cpu_us"] / base["cpu_us"])
            out.append(line + "   (this build against $BENCH_AGORA_BASE)")
        out.append("")
    return "\n".join(out)


def slow_table(runs_path, note):
    out = []
    targets = []
    all_stats = {}
    for group, labels in read_runs(runs_path):
        stats = {label: summarise(runs) for label, runs in labels}
        all_stats[group] = stats
        width = max(len(l) for l in stats)
        rounds = max(s["rounds"] for s in stats.values())
        base = stats.get(BASELINE)
        out.append("Scenario 2, serial backends, %s (%s)" % (group, describe(note, rounds)))
        out.append(header(width, "  req/s vs hap-lc  p99 vs hap-lc  % to b1/b2/b3"))
        for label, s in stats.items():
            row = fmt_row(label, s, width)
            if base and not s["bad"]:
                row += "  %14.2fx %13.2fx" % (ratio(s["rps"], base["rps"]), ratio(s["p99"], base["p99"]))
            else:
                row += " " * 31
            if s["shares"]:
                row += "  %15s" % "/".join("%.0f" % x for x in s["shares"])
            out.append(row)
        out.append("")
    # Target 1: least-conn at least as good as HAProxy leastconn, in every variant.
    for group, stats in all_stats.items():
        targets.append(check_target("agora least-conn vs haproxy leastconn, %s" % group.split(":")[0],
                                    stats.get("agora least-conn"), stats.get(BASELINE),
                                    max_p99=1 + TOLERANCE, min_rps=1 - TOLERANCE))
    # Target 2: peak-EWMA p99 at most half of HAProxy leastconn's with a slow server.
    for group, stats in all_stats.items():
        if group.startswith("slow"):
            targets.append(check_target("agora peak-ewma vs haproxy leastconn, %s" % group.split(":")[0],
                                        stats.get("agora peak-ewma"), stats.get(BASELINE),
                                        max_p99=0.5, min_rps=1 - TOLERANCE))
    out.append("Targets (against HAProxy leastconn; %d%% noise allowance where the target is parity):"
               % round(TOLERANCE * 100))
    out.extend("  " + t[1] for t in targets)
    out.append("")
    return "\n".join(out), all(t[0] for t in targets)


def check_target(name, s, base, max_p99, min_rps):
    """Returns (met, line) for p99 ratio <= max_p99 and throughput ratio >= min_rps."""
    if not s or not base:
        return False, "%s: NOT MEASURED" % name
    if s["bad"] or base["bad"]:
        return False, "%s: INVALID (failed requests)" % name
    p = ratio(s["p99"], base["p99"])
    t = ratio(s["rps"], base["rps"])
    met = p <= max_p99 and t >= min_rps
    return met, "%s: %s\n    p99 %.1f vs %.1f ms = %.3fx (want <= %.2fx); req/s %.0f vs %.0f = %.3fx (want >= %.2fx)" % (
        name, "MET" if met else "MISSED", s["p99"], base["p99"], p, max_p99, s["rps"], base["rps"], t, min_rps)


def paired(a_runs, b_runs, key):
    """Median over the rounds both ran of a's figure over b's in the same round, with the range:
    rotated rounds put the two side by side in time, so this follows the machine's drift less
    than the ratio of the two medians does. None without common rounds."""
    b = {r["round"]: r[key] for r in b_runs}
    xs = sorted(r[key] / b[r["round"]] for r in a_runs
                if r["round"] in b and r[key] is not None and b[r["round"]])
    return (statistics.median(xs), xs[0], xs[-1]) if xs else None


def tls_resumed(runs):
    """Median share (%) of resumed handshakes over tlsload rounds; None for other tools."""
    shares = []
    for r in runs:
        m = re.search(r"^tlsload: connections=(\d+) full=(\d+) resumed=(\d+)", r.get("tail", ""), re.M)
        if m and int(m.group(1)):
            shares.append(100.0 * int(m.group(3)) / int(m.group(1)))
    return statistics.median(shares) if shares else None


def tls_table(runs_path, note):
    """Issue 14's TLS tables: one per group ("w1 rsa2048: full handshakes" ...), the proxies' rows,
    agora's ratios and the target check (rate >= HAProxy's within the noise allowance, p99 no
    worse; CPU per unit reported)."""
    out, targets = [], []
    for group, labels in read_runs(runs_path, keep_tail=True):
        stats, by_label = {}, dict(labels)
        for label, runs in labels:
            st = summarise([dict(r, p99=r["p99"] if r["p99"] is not None else float("nan")) for r in runs])
            st["resumed"] = tls_resumed(runs)
            stats[label] = st
        width = max(len(l) for l in stats)
        rounds = max(s["rounds"] for s in stats.values())
        unit = "conn" if "handshake" in group else "req"
        out.append("%s (%s)" % (group, describe(note, rounds)))
        out.append(header(width, "  resumed").replace("req/s", "%s/s" % unit).replace("us/req", "us/%s" % unit))
        for label, st in stats.items():
            row = fmt_row(label, st, width).replace(" nan ", "   - ")
            if st["resumed"] is not None:
                row += "  %6.1f%%" % st["resumed"]
            out.append(row)
        agora = stats.get("agora")
        for other in ("haproxy", "nginx"):
            if agora and other in stats:
                o = stats[other]
                line = "  agora/%-8s rate %.2fx   p99 %.2fx" % (other + ":", ratio(agora["rps"], o["rps"]),
                                                               ratio(agora["p99"], o["p99"]))
                if agora["cpu_us"] and o["cpu_us"]:
                    line += "   CPU per %s %.2fx" % (unit, agora["cpu_us"] / o["cpu_us"])
                out.append(line + "   (rate > 1, p99 and CPU < 1 favour agora)")
                pr, pp = (paired(by_label["agora"], by_label[other], k) for k in ("rps", "p99"))
                if pr and pp:
                    out.append("  agora/%-8s rate %.2fx (%.2f-%.2f)   p99 %.2fx (%.2f-%.2f)   (round by round: median, range)"
                               % (other + ":", *pr, *pp))
        base = stats.get("agora-base")
        if agora and base:
            line = "  agora/agora-base: rate %.2fx   p99 %.2fx" % (ratio(agora["rps"], base["rps"]),
                                                                 ratio(agora["p99"], base["p99"]))
            if agora["cpu_us"] and base["cpu_us"]:
                line += "   CPU per %s %.3fx" % (unit, agora["cpu_us"] / base["cpu_us"])
            out.append(line + "   (this build against $BENCH_AGORA_BASE)")
        if "haproxy" in stats:
            if agora:
                targets.append(check_target("agora vs haproxy, %s" % group, agora, stats["haproxy"],
                                            max_p99=1 + TOLERANCE, min_rps=1 - TOLERANCE))
            else:
                targets.append((False, "agora vs haproxy, %s: NOT MEASURED (agora does not offer it)" % group))
        out.append("")
    out.append("Targets (agora >= 1.0x HAProxy, p99 no worse; %d%% noise allowance):" % round(TOLERANCE * 100))
    out.extend("  " + t[1] for t in targets)
    out.append("")
    return "\n".join(out)


def idle_table(mem_path, runs_path, note):
    out = ["Scenario 4, idle keep-alive connections: resident memory per idle client connection",
           "  %-8s %10s %10s %12s %16s" % ("proxy", "held", "VmRSS kB", "growth kB", "bytes/conn")]
    per = {}
    for n, parts, _resolve in tsv_rows(mem_path):
        if len(parts) != 4:
            raise ParseError("%s:%d: expected 4 tab-separated fields" % (mem_path, n))
        proxy, before, held, after = parts[0], int(parts[1]), int(parts[2]), int(parts[3])
        b = (after - before) * 1024.0 / held
        per.setdefault(held, {})[proxy] = b
        out.append("  %-8s %10d %10d %12d %16.0f" % (proxy, held, after, after - before, b))
    for held, by in sorted(per.items()):
        if "agora" in by:
            out.append("  at %d: agora/haproxy %.2fx, agora/nginx %.2fx (below 1 favours agora)" % (
                held, ratio(by["agora"], by.get("haproxy", 0)), ratio(by["agora"], by.get("nginx", 0))))
    out.append("")
    groups = read_runs(runs_path)
    rounds = max((len(r) for _g, labels in groups for _l, r in labels), default=0)
    out.append("Throughput with idle connections held vs none (%s)" % describe(note, rounds))
    width = max([len("%s %s" % (g, l)) for g, labels in groups for l, _r in labels] + [5])
    out.append(header(width))
    for group, labels in groups:
        stats = {label: summarise(runs) for label, runs in labels}
        for label, st in stats.items():
            out.append(fmt_row("%s %s" % (group, label), st, width))
        if "none" in stats:
            for label, st in stats.items():
                if label != "none":
                    out.append("  %-*s %s/none: throughput %.2fx   p99 %.2fx" % (
                        width, "", label, ratio(st["rps"], stats["none"]["rps"]),
                        ratio(st["p99"], stats["none"]["p99"])))
    out.append("")
    return "\n".join(out)


def main(argv):
    ap = argparse.ArgumentParser(prog="stats.py", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("ports")
    p.add_argument("n", type=int)
    p = sub.add_parser("parse")
    p.add_argument("file")
    p.add_argument("--cpu-ticks", type=int, help="the proxy's CPU ticks during the run: adds CPU per request")
    for name in ("lb-table", "slow-table", "tls-table"):
        p = sub.add_parser(name)
        p.add_argument("runs")
        p.add_argument("--note", default="", help="load description printed in each table title")
        if name == "slow-table":
            p.add_argument("--strict", action="store_true", help="exit 3 when a target is missed")
    p = sub.add_parser("idle-table")
    p.add_argument("mem")
    p.add_argument("runs")
    p.add_argument("--note", default="", help="load description printed in the table title")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "ports":
            print(" ".join(str(p) for p in free_ports(args.n)))
        elif args.cmd == "parse":
            h2 = args.file.endswith(".h2load.txt")
            r = parse_output(args.file)
            if h2 and r["p99"] is None:
                line = "%.0f req/s  mean %.2f ms  errors %d" % (r["rps"], r["p50"], r["errors"])
            else:
                line = "%.0f req/s  p50 %.2f ms  p99 %.2f ms  errors %d" % (r["rps"], r["p50"], r["p99"], r["errors"])
            if args.cpu_ticks is not None and r["requests"]:
                line += "  CPU %.2f us/req" % cpu_us_per_request(args.cpu_ticks, r["requests"])
            print(line)
        elif args.cmd == "lb-table":
            print(lb_table(args.runs, args.note))
        elif args.cmd == "tls-table":
            print(tls_table(args.runs, args.note))
        elif args.cmd == "idle-table":
            print(idle_table(args.mem, args.runs, args.note))
        else:
            text, met = slow_table(args.runs, args.note)
            print(text)
            if args.strict and not met:
                return 3
    except ParseError as e:
        print("stats.py: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
