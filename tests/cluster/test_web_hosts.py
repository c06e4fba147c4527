"""Web hosts fail, join and leave while the client's requests flow: a crashed web host is taken
out by both balancers and no request fails (the balancer retries elsewhere); restarted, it gets
traffic again. A new host (web4) is created live and added to both balancers across hosts with
`agora ctl` (the admin API over the bridge, with the token): it gets traffic within 2 s, in slow
start. Draining a host on both balancers fails no request."""

import json
import time
from collections import Counter

import pytest

from netcluster import wait_until

LBS = ("lb1", "lb2")


@pytest.fixture(scope="module")
def read_path(cluster):
    """A GET that needs the database: a user's posts (one post, written through the cluster)."""
    out = cluster.social()
    assert out["steps"]["post"]["status"] == 201, out["steps"]
    return "/api/v1/accounts/%s/posts" % out["user"]


def states(cluster, addr):
    """addr's state on each balancer (None: not in its set)."""
    return [cluster.servers(lb).get(addr, {}).get("state") for lb in LBS]


def failures(tries):
    return [t for t in tries if t[3] != 200]


def test_web_host_killed_then_restarted(cluster, read_path, report):
    addr = "%s:%s" % (cluster.addr("web2"), cluster.facts["WEB_PORT"])
    load = cluster.load(read_path, duration=60, interval=0.03, timeout=5.0)
    time.sleep(1.0)
    t_kill = time.time()
    cluster.kill("web2", "server")
    wait_until(lambda: states(cluster, addr) == ["down", "down"], 10, what="web2 down on both balancers")
    down_after = time.time() - t_kill
    time.sleep(1.0)
    t_start = time.time()
    cluster.sh("start", "web2")
    wait_until(lambda: states(cluster, addr) == ["up", "up"], 10, what="web2 up again on both balancers")
    up_after = time.time() - t_start
    time.sleep(3.0)
    load.stop()
    tries = load.result()
    assert not failures(tries), failures(tries)
    served_while_down = [t for t in tries if t[4] == "web2" and t_kill + 0.5 < t[0] < t_start]
    assert not served_while_down
    back = [t for t in tries if t[4] == "web2" and t[0] > t_start]
    assert back, "web2 got no request after its restart"
    assert Counter(t[4] for t in tries if t[0] > t_start + up_after + 1.0).keys() == {"web1", "web2", "web3"}
    report("web2 killed under load: down on both balancers after %.2f s, %d GETs, 0 failed; restarted: "
           "up after %.2f s, first request %.2f s after the restart"
           % (down_after, len(tries), up_after, min(t[0] for t in back) - t_start))


def test_web_host_link_cut_then_restored(cluster, read_path, report):
    """web3's cable is pulled under load (4 clients): a cut link is not a crash, no reset arrives;
    both balancers mark it down when its checks time out, and no GET fails. A GET already sent to
    web3 waits, at most for the balancers' response timeout (10 s in lb.ini), unless the link
    comes back first: the longest wait is reported (issue 12 asks for such requests to be
    retried elsewhere once the server is marked down). Plugged in again, web3 gets traffic."""
    addr = "%s:%s" % (cluster.addr("web3"), cluster.facts["WEB_PORT"])
    load = cluster.load(read_path, duration=60, interval=0.02, timeout=15.0, clients=4)
    time.sleep(1.0)
    t_cut = time.time()
    cluster.sh("link", "web3", "down")
    wait_until(lambda: states(cluster, addr) == ["down", "down"], 10, what="web3 down on both balancers")
    down_after = time.time() - t_cut
    time.sleep(2.0)
    t_plug = time.time()
    cluster.sh("link", "web3", "up")
    wait_until(lambda: states(cluster, addr) == ["up", "up"], 10, what="web3 up again on both balancers")
    time.sleep(3.0)
    load.stop()
    tries = load.result(timeout=90)
    assert not failures(tries), failures(tries)
    assert max(t[1] - t[0] for t in tries) < 11.0
    assert any(t[4] == "web3" for t in tries if t[0] > t_plug + 1.0), "web3 got nothing after the link came back"
    slow = sorted((t[1] - t[0], t[4]) for t in tries if t[1] - t[0] > 1.0)
    report("web3's link cut under load (4 clients): down on both balancers after %.2f s; %d GETs, 0 failed; "
           "%d took over 1 s (longest %.2f s, %s), the link was back after %.2f s"
           % (down_after, len(tries), len(slow), slow[-1][0] if slow else 0.0, slow[-1][1] if slow else "-",
              t_plug - t_cut))


def test_admin_api_across_hosts_needs_the_token(cluster):
    """From the client host: the admin API of lb1 answers only with the token; it is not on the
    virtual address at all (bound to the balancer's own address)."""
    admin = "http://%s/servers" % cluster.admin_addr("lb1")
    r = cluster.exec("client", "curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-m", "3", admin)
    assert r.stdout == "401"
    r = cluster.exec("client", "curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-m", "3",
                     "-H", "Authorization: Bearer wrong-token-wrong-token", admin)
    assert r.stdout == "401"
    r = cluster.exec("client", "curl", "-sS", "-m", "3", "http://%s:%s/servers"
                     % (cluster.facts["VIP"], cluster.facts["ADMIN_PORT"]), check=False)
    assert r.returncode == 7, (r.returncode, r.stderr)  # connection refused
    r = cluster.ctl("lb2", "list")
    assert cluster.addr("web1") in r.stdout


def test_web_host_added_live_gets_traffic_within_2s(cluster, read_path, report):
    cluster.sh("add-web", "web4")
    cluster.refresh()
    url = cluster.web_url("web4")
    addr = url[len("http://"):]
    load = cluster.load(read_path, duration=60, interval=0.02, timeout=5.0)
    time.sleep(1.0)
    t_add = time.time()
    for lb in LBS:
        r = cluster.ctl(lb, "add", url)
        assert r.returncode == 0
    added = time.time() - t_add
    # slow start: the dashboard's series shows it ramping on both balancers
    token = open(cluster.facts["ADMIN_TOKEN_FILE"]).read().strip()
    for lb in LBS:
        r = cluster.exec("client", "curl", "-fsS", "-m", "3", "-H", "Authorization: Bearer " + token,
                         "http://%s/series" % cluster.admin_addr(lb))
        web4 = [s for s in json.loads(r.stdout)["servers"] if s["address"] == addr]
        assert [s["state"] for s in web4] == ["slow start"], web4
    time.sleep(8.0)
    load.stop()
    tries = load.result()
    assert not failures(tries), failures(tries)
    first = min(t[0] for t in tries if t[4] == "web4")
    assert first - t_add < 2.0, "web4's first request %.2f s after the add" % (first - t_add)
    early = [t for t in tries if t_add < t[0] < t_add + 2.0]
    late = [t for t in tries if t_add + 6.0 < t[0]]
    early_share = sum(t[4] == "web4" for t in early) / len(early)
    late_share = sum(t[4] == "web4" for t in late) / len(late)
    assert 0 < early_share < 0.15, early_share  # 10 % of its weight, ramping: well below a quarter
    assert 0.2 <= late_share <= 0.3, late_share  # a full quarter once slow start (5 s) is over
    assert states(cluster, addr) == ["up", "up"]
    report("web4 added live on both balancers (ctl: %.2f s): first request %.2f s after; share of requests "
           "%.0f %% in its first 2 s (slow start), %.0f %% after 6 s; 0 of %d GETs failed"
           % (added, first - t_add, 100 * early_share, 100 * late_share, len(tries)))


def test_drain_across_hosts_fails_no_request(cluster, read_path, report):
    url = cluster.web_url("web4")
    addr = url[len("http://"):]
    assert states(cluster, addr) == ["up", "up"]
    load = cluster.load(read_path, duration=60, interval=0.01, timeout=5.0)
    time.sleep(1.0)
    t_drain = time.time()
    for lb in LBS:
        cluster.ctl(lb, "drain", addr)
    wait_until(lambda: states(cluster, addr) == [None, None], 10, what="web4 drained and removed from both")
    gone = time.time()
    time.sleep(1.5)
    load.stop()
    tries = load.result()
    assert not failures(tries), failures(tries)
    assert any(t[4] == "web4" for t in tries if t[0] < t_drain), "web4 served nothing before the drain"
    late = [t for t in tries if t[4] == "web4" and t[0] > gone]
    assert not late, late
    assert Counter(t[4] for t in tries if t[0] > gone).keys() == {"web1", "web2", "web3"}
    report("web4 drained on both balancers under load: removed after %.2f s, 0 of %d GETs failed"
           % (gone - t_drain, len(tries)))
