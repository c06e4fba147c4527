"""wrk_output.py — reading wrk outputs and the benchmarks' runs.tsv files (stdlib only).

Shared by bench/stats.py (the load-balancer scenarios) and bench/social_stats.py (the social
network): one parser for wrk --latency output, one reader for tab-separated run lists.
    parse_wrk(path)     rps, p50/p99 (ms), requests, errors (non-2xx + socket) and the text
    tsv_rows(path)      (line number, fields, resolve) for each run line
    ParseError          raised with a message naming the file (and line) on unreadable input
"""
import os
import re


# wrk prints durations with these suffixes (src/units.c).
UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}


class ParseError(Exception):
    pass


def duration_ms(text, path):
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", text)
    if not m:
        raise ParseError("%s: cannot read duration %r" % (path, text))
    return float(m.group(1)) * UNIT_MS[m.group(2)]


def parse_wrk(path):
    """Parses one wrk --latency output; returns a dict with rps, p50, p99 (ms), requests, errors
    (non2xx + socket, also given apart) and the whole text (for callers that read more of it)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError as e:
        raise ParseError("%s: %s" % (path, e.strerror))
    rps = re.search(r"^Requests/sec:\s+([0-9.]+)", text, re.M)
    p50 = re.search(r"^\s+50%\s+(\S+)", text, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", text, re.M)
    reqs = re.search(r"^\s+(\d+) requests in ", text, re.M)
    if not (rps and p50 and p99 and reqs):
        raise ParseError("%s: not a complete wrk --latency output" % path)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    socket_errors = sum(int(x) for x in sock.groups()) if sock else 0
    non2xx_count = int(non2xx.group(1)) if non2xx else 0
    return {
        "rps": float(rps.group(1)),
        "p50": duration_ms(p50.group(1), path),
        "p99": duration_ms(p99.group(1), path),
        "requests": int(reqs.group(1)),
        "errors": socket_errors + non2xx_count,
        "non2xx": non2xx_count,
        "socket": socket_errors,
        "text": text,
    }


def tsv_rows(path):
    """Yields (line number, tab-separated fields, resolve) for each non-blank, non-comment line of
    a runs.tsv file; resolve(name) makes a file name relative to the file's folder absolute."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise ParseError("%s: %s" % (path, e.strerror))

    def resolve(name):
        return name if os.path.isabs(name) else os.path.join(os.path.dirname(path), name)

    for n, line in enumerate(lines, 1):
        if line.strip() and not line.startswith("#"):
            yield n, line.split("\t"), resolve
