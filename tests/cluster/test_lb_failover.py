"""No single balancer: lb1 and lb2 share the virtual address with keepalived (VRRP, unicast peers).
The active balancer fails three ways — its `agora lb` crashes, its keepalived crashes, its cable is
pulled — and each time the address moves to the other and the client's requests succeed again
within a bound; a client that retries its GETs loses none. Measured times go to the summary."""

from collections import defaultdict
import time

import pytest

from netcluster import outage, wait_until

BOUND = 10.0  # seconds from the failure to the first success after the last failed request


def other_lb(lb):
    return "lb2" if lb == "lb1" else "lb1"


def fail_over(cluster, report, what, fail, restore):
    active = cluster.active_lb()
    standby = other_lb(active)
    # the standby is ready to take over: its balancer sees the web hosts up
    wait_until(lambda: any(s["state"] == "up" for s in cluster.servers(standby).values()), 10,
               what="%s's balancer ready" % standby)
    once = cluster.load("/", duration=40, interval=0.05, timeout=1.0)
    retrying = cluster.load("/", duration=40, interval=0.1, timeout=1.0, retry_for=20)
    time.sleep(1.5)
    t_fail = time.time()
    fail(active)
    wait_until(lambda: cluster.vip_holders() == [standby], BOUND, what="the virtual address on %s" % standby)
    moved = time.time() - t_fail
    time.sleep(2.0)
    once.stop()
    retrying.stop()
    tries = once.result()
    failed, took = outage(tries, t_fail)
    before = [t for t in tries if t[1] < t_fail]
    assert before and all(t[3] == 200 for t in before), "failures before the fault: %s" % before
    assert took < BOUND, "requests failed for %.1f s after %s" % (took, what)
    # the retrying client: every logical GET ended in a success
    last = defaultdict(list)
    for t in retrying.result():
        last[t[2]].append(t)
    lost = [k for k, ts in last.items() if ts[-1][3] != 200]
    assert not lost, "GETs lost although retried: %s" % [last[k][-1] for k in lost]
    retried = sum(1 for ts in last.values() if len(ts) > 1)
    report("%s on %s: address on %s after %.2f s; requests OK again after %.2f s; %d of %d single "
           "tries failed; retrying client: %d GETs, %d retried, 0 lost"
           % (what, active, standby, moved, took, failed, len([t for t in tries if t[0] >= t_fail]),
              len(last), retried))
    restore(active)
    # the failed balancer is back as the standby (nopreempt: the address stays where it is)
    wait_until(lambda: cluster.sh("status").stdout.count("dead") == 0, 15, what="%s restored" % active)
    time.sleep(2.5)  # its check passes again (rise 2 at 1 s)
    assert cluster.vip_holders() == [standby]
    return active, standby


def test_active_balancer_process_killed(cluster, report):
    fail_over(cluster, report, "agora lb killed (SIGKILL)",
              lambda lb: cluster.kill(lb, "lb"), lambda lb: cluster.sh("start", lb))


def test_active_keepalived_killed(cluster, report):
    fail_over(cluster, report, "keepalived killed (SIGKILL)",
              lambda lb: cluster.kill(lb, "keepalived"), lambda lb: cluster.sh("start", lb))


def test_active_balancer_unplugged(cluster, report):
    fail_over(cluster, report, "cable pulled (veth down)",
              lambda lb: cluster.sh("link", lb, "down"), lambda lb: cluster.sh("link", lb, "up"))
    # both keepalived processes kept running throughout
    status = cluster.sh("status").stdout
    assert "dead" not in status, status
