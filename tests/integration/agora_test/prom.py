"""The Prometheus text format of the /metrics endpoints (test_lb_metrics.py, test_server_metrics.py).

    parse_metrics(text)                 {(name, frozenset of (label, value)): float}, checking that
                                        every sample follows its family's TYPE and none repeats
    metric(m, name, **labels)           one sample's value (KeyError when absent)
    metric_or_zero(m, name, **labels)   the same, 0 for a series not written yet
    histogram_buckets(m, name, **labels) [(le, cumulative count)] sorted by le, +Inf last
    promtool_check(text)                `promtool check metrics` on text -> (ok, its output)
"""

import re
import shutil
import subprocess

_SAMPLE = re.compile(r'^([a-z_]+)(?:\{([^}]*)\})? (\S+)$')


def parse_metrics(text):
    out, typed = {}, set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            typed.add(line.split()[2])
            continue
        if line.startswith("#") or not line:
            continue
        m = _SAMPLE.match(line)
        assert m, "not a sample line: %r" % line
        name, labels, value = m.groups()
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in typed or base in typed, "sample before its TYPE: %r" % line
        pairs = frozenset(re.findall(r'(\w+)="([^"]*)"', labels or ""))
        key = (name, pairs)
        assert key not in out, "duplicate sample %r" % line
        out[key] = float(value)
    return out


def metric(m, name, **labels):
    return m[(name, frozenset(labels.items()))]


def metric_or_zero(m, name, **labels):
    return m.get((name, frozenset(labels.items())), 0)


def histogram_buckets(m, name, **labels):
    want = set(labels.items())
    return sorted((float(dict(k[1])["le"]), v) for k, v in m.items()
                  if k[0] == name + "_bucket" and want <= set(k[1]) and len(k[1]) == len(want) + 1)


def promtool_check(text):
    """(True, "") when promtool accepts text; (None, reason) when promtool is not installed."""
    if shutil.which("promtool") is None:
        return None, "promtool (Debian's prometheus package) is not installed"
    proc = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    out = (proc.stdout + proc.stderr).strip()
    return proc.returncode == 0 and out == "", out
