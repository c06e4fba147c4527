"""Tests on a cluster of network-namespace hosts (scripts/cluster.sh, issue 12): each module brings
up a cluster of its own (a unique --name, so runs never collide), and takes it down at the end,
also when a test failed, checking that nothing is left. They need root, `ip netns`, PostgreSQL 15,
keepalived and curl; without them every test is skipped with the reason.

Measured figures (fail-over times, ...) are printed at the end of the run (`cluster:` lines)."""

import os
import pathlib
import shutil
import subprocess
import zlib

import pytest

from netcluster import REPO_ROOT, Cluster

_REPORT = []


def _skip_reason():
    if os.geteuid() != 0:
        return "tests/cluster need root (network namespaces, a bridge, keepalived)"
    for tool, pkg in (("ip", "iproute2"), ("keepalived", "keepalived"), ("curl", "curl"), ("runuser", "util-linux")):
        if shutil.which(tool) is None:
            return "tests/cluster need %s (Debian's %s; scripts/install-deps.sh test)" % (tool, pkg)
    if not os.path.exists("/usr/lib/postgresql/15/bin/initdb"):
        return "tests/cluster need PostgreSQL 15 (Debian's postgresql)"
    probe = "agprobe%d" % (os.getpid() % 100000)
    r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if r.returncode != 0:
        return "network namespaces are not available here (ip netns add: %s)" % r.stderr.strip()
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    for kind in ("bridge", "veth"):
        r = subprocess.run(["ip", "link", "add", probe, "type", kind], capture_output=True, text=True)
        if r.returncode != 0:
            return "no %s interfaces here (ip link add type %s: %s)" % (kind, kind, r.stderr.strip())
        subprocess.run(["ip", "link", "del", probe], capture_output=True)
    return None


def pytest_collection_modifyitems(config, items):
    here = pathlib.Path(__file__).resolve().parent
    mine = [i for i in items if here in pathlib.Path(str(i.fspath)).resolve().parents]
    if not mine:
        return
    reason = _skip_reason()
    if reason:
        for item in mine:
            item.add_marker(pytest.mark.skip(reason=reason))


def pytest_terminal_summary(terminalreporter):
    if _REPORT:
        terminalreporter.section("cluster: measured")
        for line in _REPORT:
            terminalreporter.write_line("cluster: " + line)


@pytest.fixture(scope="session")
def report():
    """report(line): a measured figure, printed in the run's summary."""
    return _REPORT.append


@pytest.fixture(scope="module")
def cluster(request):
    """A cluster up for the whole module (name c + pid + module tag), down at the end; the
    teardown fails when anything of it is left (namespace, link, process, directory)."""
    agora_bin = pathlib.Path(os.environ.get("AGORA_BIN", REPO_ROOT / "build" / "agora"))
    if not agora_bin.exists():
        pytest.fail("%s is missing: run `make build` or set AGORA_BIN" % agora_bin)
    tag = "%03x" % (zlib.crc32(request.module.__name__.encode()) & 0xFFF)
    c = Cluster("c%04d%s" % (os.getpid() % 10000, tag), agora_bin)
    try:
        c.up()
    except BaseException:
        c.sh("down", check=False)
        raise
    yield c
    pids = c.namespace_pids()
    assert pids, "no process in the cluster's namespaces before down?"
    c.sh("down")
    left = c.leftovers(pids)
    assert not left, "cluster.sh down left behind: %s" % left
