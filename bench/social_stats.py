#!/usr/bin/python3
"""social_stats.py — tables and targets of the social-network benchmark (stdlib only).

Subcommands:
  parse FILE                          one-line summary of a wrk output of bench/social.lua
  table RUNS.tsv [--target R] [--ratio X] [--pg-ratio Y] [--strict]
                                      the summary table, the targets (with the larger graphs'
                                      ratio round by round), PostgreSQL against SQLite, the
                                      statements per request on PostgreSQL and the failed requests
  best RUNS.tsv USERS [--store S] [--target R] [--ratio X] [--pg-ratio Y]
                                      "CONFIG MET" or "CONFIG MISSED": the fastest configuration
                                      of store S (default sqlite) measured at USERS and whether
                                      that graph's targets are met

RUNS.tsv has one line per wrk run, tab-separated:
  users  config  mix  kind  wrk-file  seconds  lb-cpu-s  servers-cpu-s  wal-bytes  [store  pg-cpu-s]
config is SW:LW:T:C (worker threads per agora server, agora lb workers, wrk threads, wrk
connections); mix is HOME,USER,COMPOSE percentages; kind is warmup, measure (the main table),
part (the "where the time goes" table: the same configuration with another mix), calls (one
request type alone on PostgreSQL, its pg_stat_statements in calls-NAME.tsv next to the wrk file
NAME.wrk.txt: "calls rows mean-exec-µs query" lines) or perf (run under perf, not shown). Every run's failed
requests count, whatever its kind. cpu-s are CPU seconds (user + system) the balancer, the three
servers and PostgreSQL's processes used during the run; wal-bytes is the size of SQLite's -wal
file after it, or the WAL PostgreSQL wrote during it. store is sqlite (the default for lines of
9 fields) or postgres. A run's round is the N of "-rN.wrk.txt" at the end of its wrk file's name
(0 when there is none).

Targets, per store: SQLite's fastest error-free configuration at the smallest graph reaches
--target requests/s (default 10000); PostgreSQL's reaches --pg-ratio (default 0.6) times SQLite's
best at that graph (measured in the same run); at every larger graph each store's fastest reaches
--ratio (default 0.8) times its own best at the smallest graph (and SQLite's --ratio times
--target).
Exit status: 0; 1 when a run failed requests (non-2xx answers or socket errors: the mix must
have none) or a file cannot be read; 2 on bad usage; 3 with --strict when a target is missed.
"""
import argparse
import os
import re
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wrk_output import ParseError, parse_wrk as parse_wrk_output, tsv_rows  # noqa: E402  (bench/wrk_output.py)


def parse_wrk(path):
    """Returns rps, p50, p99 (ms), requests, non2xx, socket errors and the mix counts of a run."""
    r = parse_wrk_output(path)
    mix = re.search(r"^social-mix: home=(\d+) user=(\d+) compose=(\d+)", r.pop("text"), re.M)
    if not mix:
        raise ParseError("%s: not a complete output of wrk --latency -s bench/social.lua" % path)
    r["mix"] = tuple(int(x) for x in mix.groups())
    return r


def read_runs(path):
    runs = []
    for n, p, resolve in tsv_rows(path):
        if len(p) not in (9, 11):
            raise ParseError("%s:%d: expected 9 or 11 tab-separated fields" % (path, n))
        wrk_file = resolve(p[4])
        try:
            r = {"users": int(p[0]), "config": p[1], "mixpct": p[2], "kind": p[3], "file": p[4],
                 "secs": float(p[5]), "lb_cpu": float(p[6]), "srv_cpu": float(p[7]), "wal": int(p[8]),
                 "store": p[9] if len(p) == 11 else "sqlite", "pg_cpu": float(p[10]) if len(p) == 11 else 0.0}
        except ValueError:
            raise ParseError("%s:%d: bad number" % (path, n))
        r["path"] = wrk_file
        r.update(parse_wrk(wrk_file))
        m = re.search(r"-r(\d+)\.wrk\.txt$", p[4])
        r["round"] = int(m.group(1)) if m else 0
        runs.append(r)
    return runs


def describe_config(c):
    sw, lw, t, conns = c.split(":")
    return "3 servers x %sw, lb %sw, wrk -t%s -c%s" % (sw, lw, t, conns)


def summarise(runs, kind="measure"):
    """Per (store, users, config, mix) of the runs of kind, in first-appearance order: medians over rounds."""
    out = {}
    for r in runs:
        if r["kind"] == kind:
            out.setdefault((r["store"], r["users"], r["config"], r["mixpct"]), []).append(r)
    rows = []
    for (store, users, config, mixpct), rs in out.items():
        rows.append({
            "store": store, "users": users, "config": config, "mixpct": mixpct, "rounds": len(rs),
            "rps": statistics.median(r["rps"] for r in rs),
            "rps_min": min(r["rps"] for r in rs), "rps_max": max(r["rps"] for r in rs),
            "p50": statistics.median(r["p50"] for r in rs),
            "p99": statistics.median(r["p99"] for r in rs),
            "errors": sum(r["non2xx"] + r["socket"] for r in rs),
            "lb_cores": statistics.median(r["lb_cpu"] / r["secs"] for r in rs),
            "srv_cores": statistics.median(r["srv_cpu"] / r["secs"] for r in rs),
            "pg_cores": statistics.median(r["pg_cpu"] / r["secs"] for r in rs),
            "wal_mb": max(r["wal"] for r in rs) / 1e6,
            "mix": tuple(sum(r["mix"][i] for r in rs) for i in range(3)),
        })
    return rows


def best_rows(rows, store="sqlite"):
    """{users: fastest error-free row of store}, smallest graph first."""
    best = {}
    for row in rows:
        if row["store"] != store:
            continue
        if row["errors"] == 0 and (row["users"] not in best or row["rps"] > best[row["users"]]["rps"]):
            best[row["users"]] = row
    return dict(sorted(best.items()))


def targets(rows, target, ratio, pg_ratio=0.6):
    """Returns [(store, users, description, best row or None, met)], per store, smallest graph
    first: SQLite's smallest graph reaches target, PostgreSQL's pg_ratio x SQLite's best there;
    each larger graph of a store reaches ratio x that store's best at the smallest graph (SQLite's
    also ratio x target)."""
    users = sorted({r["users"] for r in rows})
    out = []
    if not users:
        return out
    sqlite_base = best_rows(rows, "sqlite").get(users[0])
    for store in [s for s in ("sqlite", "postgres") if any(r["store"] == s for r in rows)]:
        best = best_rows(rows, store)
        base = best.get(users[0])
        if store == "sqlite":
            out.append((store, users[0], ">= %.0f req/s" % target, base, base is not None and base["rps"] >= target))
        elif sqlite_base is not None:
            goal = pg_ratio * sqlite_base["rps"]
            out.append((store, users[0], ">= %.2fx SQLite's best (%.0f req/s)" % (pg_ratio, goal), base,
                        base is not None and base["rps"] >= goal))
        for u in users[1:]:
            b = best.get(u)
            if base is not None:
                goal = ratio * base["rps"]
                out.append((store, u, ">= %.2fx its best at %d users (%.0f req/s)" % (ratio, users[0], goal), b,
                            b is not None and b["rps"] >= goal))
            if store == "sqlite":
                out.append((store, u, ">= %.2fx the target (%.0f req/s)" % (ratio, ratio * target), b,
                            b is not None and b["rps"] >= ratio * target))
    return out


def round_ratios(runs, rows):
    """Lines giving, per store, for each larger graph, the ratio of its req/s to the smallest
    graph's in each round of the smallest graph's fastest configuration (the runs of one round are
    adjacent); then PostgreSQL's req/s over SQLite's at each graph, round by round, in SQLite's
    fastest configuration at the smallest graph."""
    out = []
    for store in ("sqlite", "postgres"):
        best = best_rows(rows, store)
        if len(best) < 2:
            continue
        base_users, base = next(iter(best.items()))
        config = base["config"]
        by = {(r["users"], r["round"]): r["rps"] for r in runs
              if r["kind"] == "measure" and r["config"] == config and r["store"] == store}
        for users in list(best)[1:]:
            pairs = ["r%d %.2f" % (rd, by[(users, rd)] / by[(base_users, rd)]) for (u, rd) in sorted(by)
                     if u == base_users and (users, rd) in by and by[(base_users, rd)] > 0]
            if pairs:
                out.append("  %-8s %7d users / %d users, round by round (%s): %s" % (
                    store, users, base_users, describe_config(config), ", ".join(pairs)))
    sq = best_rows(rows, "sqlite")
    if sq and best_rows(rows, "postgres"):
        config = next(iter(sq.values()))["config"]
        by = {(r["store"], r["users"], r["round"]): r["rps"] for r in runs
              if r["kind"] == "measure" and r["config"] == config}
        for users in sorted({u for (_, u, _) in by}):
            rounds = sorted(rd for (s, u, rd) in by if s == "sqlite" and u == users and ("postgres", u, rd) in by)
            ratios = [by[("postgres", users, rd)] / by[("sqlite", users, rd)] for rd in rounds
                      if by[("sqlite", users, rd)] > 0]
            if ratios:
                out.append("  postgres / sqlite at %7d users, round by round (%s): %s; median %.2f" % (
                    users, describe_config(config), ", ".join("r%d %.2f" % (rd, x) for rd, x in zip(rounds, ratios)),
                    statistics.median(ratios)))
    return out


def fmt_rows(rows, first):
    lines = ["  %-8s %8s  %-36s %-9s %9s %13s %8s %8s %6s %17s %9s %7s" % (
        "store", "users", "configuration", first, "req/s", "(min-max)", "p50 ms", "p99 ms", "errors",
        "cores lb+srv+pg", "compose/s", "WAL MB")]
    for r in rows:
        total = sum(r["mix"]) or 1
        lines.append("  %-8s %8d  %-36s %-9s %9.0f %13s %8.2f %8.2f %6d %17s %9.0f %7.0f%s" % (
            r["store"], r["users"], describe_config(r["config"]), r["mixpct"] if first == "mix" else str(r["rounds"]),
            r["rps"], "%.0f-%.0f" % (r["rps_min"], r["rps_max"]), r["p50"], r["p99"], r["errors"],
            "%.2f+%.2f+%.2f" % (r["lb_cores"], r["srv_cores"], r["pg_cores"]), r["rps"] * r["mix"][2] / total,
            r["wal_mb"], "  FAILED REQUESTS" if r["errors"] else ""))
    return lines


KINDS = ("home", "user", "compose")


def calls_table(runs):
    """Lines: for each kind=calls run (one request type alone on PostgreSQL), the statements per
    request (pg_stat_statements calls / requests wrk sent), in total and for the most frequent
    statements with their mean execution time. The readiness pinger (one statement a second per
    server) is counted too."""
    lines = []
    for r in runs:
        if r["kind"] != "calls":
            continue
        kinds = [KINDS[i] for i in range(3) if r["mix"][i]]
        requests = sum(r["mix"])
        path = os.path.join(os.path.dirname(r["path"]), "calls-" + os.path.basename(r["path"])[:-len(".wrk.txt")]
                            + ".tsv")
        try:
            with open(path) as f:
                stmts = [line.rstrip("\n").split("\t", 3) for line in f if line.strip()]
        except OSError as e:
            raise ParseError("%s: %s" % (path, e))
        total = sum(int(s[0]) for s in stmts)
        lines.append("  %7d users  %-8s %7d requests  %5.2f statements/request  (%.0f req/s, p99 %.2f ms)" % (
            r["users"], "+".join(kinds), requests, total / max(requests, 1), r["rps"], r["p99"]))
        for calls, rows, mean_us, query in stmts[:6]:
            if int(calls) / max(requests, 1) >= 0.01:
                lines.append("      %5.2f/req  %5s µs  %s" % (int(calls) / max(requests, 1), mean_us, query[:100]))
    return lines


def table(runs, target, ratio, pg_ratio=0.6):
    rows = summarise(runs)
    lines = []
    mixes = sorted({r["mixpct"] for r in rows})
    lines.append("Social-network mix (home,user,compose %% = %s) through agora lb to three agora servers"
                 " sharing one database (SQLite file or PostgreSQL)" % " and ".join(mixes))
    lines.extend(fmt_rows(rows, "rounds"))
    lines.append("  (cores lb+srv+pg: CPU the balancer, the three servers and PostgreSQL used, in cores; compose/s:"
                 " the compose share of req/s; WAL MB: size of SQLite's -wal file after the run, or the WAL"
                 " PostgreSQL wrote during it)")
    lines.append("")
    lines.append("Targets:")
    for store, users, what, b, met in targets(rows, target, ratio, pg_ratio):
        got = "best %.0f req/s (%s)" % (b["rps"], describe_config(b["config"])) if b else "no error-free run"
        lines.append("  %-8s %7d users %-48s %-6s %s" % (store, users, what, "MET" if met else "MISSED", got))
    for line in round_ratios(runs, rows):
        lines.append(line)
    calls = calls_table(runs)
    if calls:
        lines.append("")
        lines.append("PostgreSQL statements per request (pg_stat_statements; each request type alone):")
        lines.extend(calls)
    parts = summarise(runs, "part")
    if parts:
        lines.append("")
        lines.append("Where the time goes: the fastest configuration again with other mixes (reads only, compose only)")
        lines.extend(fmt_rows(parts, "mix"))
    failed = [r for r in runs if r["non2xx"] or r["socket"]]
    if failed:
        lines.append("")
        lines.append("FAILED REQUESTS (the mix must have none):")
        for r in failed:
            lines.append("  %s: %d non-2xx, %d socket errors of %d requests (%d users, %s run)" % (
                r["file"], r["non2xx"], r["socket"], r["requests"], r["users"], r["kind"]))
    return "\n".join(lines), rows, failed


def main(argv):
    ap = argparse.ArgumentParser(prog="social_stats.py", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("parse")
    p.add_argument("file")
    for name in ("table", "best"):
        p = sub.add_parser(name)
        p.add_argument("runs")
        if name == "best":
            p.add_argument("users", type=int)
        p.add_argument("--target", type=float, default=10000)
        p.add_argument("--ratio", type=float, default=0.8)
        p.add_argument("--pg-ratio", type=float, default=0.6)
        if name == "best":
            p.add_argument("--store", default="sqlite", choices=("sqlite", "postgres"))
        if name == "table":
            p.add_argument("--strict", action="store_true", help="exit 3 when a target is missed")
    a = ap.parse_args(argv)
    try:
        if a.cmd == "parse":
            r = parse_wrk(a.file)
            print("%.0f req/s  p50 %.2f ms  p99 %.2f ms  non-2xx %d  socket errors %d  (home %d, user %d, compose %d)"
                  % ((r["rps"], r["p50"], r["p99"], r["non2xx"], r["socket"]) + r["mix"]))
            return 0
        runs = read_runs(a.runs)
        if a.cmd == "best":
            mine = [t for t in targets(summarise(runs), a.target, a.ratio, a.pg_ratio)
                    if t[0] == a.store and t[1] == a.users]
            if not mine or mine[0][3] is None:
                print("social_stats.py: no error-free measured run of %s at %d users" % (a.store, a.users),
                      file=sys.stderr)
                return 1
            print("%s %s" % (mine[0][3]["config"], "MET" if all(t[4] for t in mine) else "MISSED"))
            return 0
        text, rows, failed = table(runs, a.target, a.ratio, a.pg_ratio)
        print(text)
        if failed:
            return 1
        if a.strict and not all(t[4] for t in targets(rows, a.target, a.ratio, a.pg_ratio)):
            return 3
    except ParseError as e:
        print("social_stats.py: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
