"""review12: a request moved off a server marked down never goes to a server that is down too.

Three servers behind round-robin: A and B on links about to be cut (CutBackend), C good. A is cut
first and marked down; GETs then go to B and C. When B is cut too, only one of three servers is
healthy: below --panic-threshold (50 %), so the selector balances over all servers, down ones
included. The GETs held on B were moved by that same panic-mode selection, some of them to A, a
server known down, where they waited for the whole response timeout (504) instead of going to C.
A request moved because its server was marked down now goes only to a healthy server.
"""

import time

from helpers import LOCALHOST, free_port, lb_server_stats, wait_for
from test_ft_marked_down import Calls, CutBackend, lines, retries, wait_held


def test_requests_moved_off_a_down_server_go_to_a_healthy_one_in_panic_mode(testbackend_factory, lb_factory,
                                                                            tmp_path):
    cut_a, cut_b = CutBackend("hang"), CutBackend("hang")
    try:
        rec_c = tmp_path / "c.txt"
        good = testbackend_factory("C", "--record", str(rec_c))
        admin_port = free_port()
        lb = lb_factory([cut_a.port, cut_b.port, good], "--policy", "round-robin", "--health-fall", "2",
                        "--health-timeout", "300ms", "--response-timeout", "6s", "--retry-budget", "100",
                        "--passive-health", "off", "--admin-listen", "%s:%d" % (LOCALHOST, admin_port))
        lb.admin_port = admin_port
        a_url = "http://%s:%d" % (LOCALHOST, cut_a.port)
        cut_a.health = "silent"
        assert wait_for(lambda: lb_server_stats(lb.port)[a_url]["state"] == "down", 5)
        calls = Calls(lb.port, [("GET", "/item-%d" % i, None, None) for i in range(6)])
        wait_held(cut_b, 3)
        assert wait_for(lambda: len(lines(rec_c)) >= 3, 5)
        marked = time.monotonic()
        cut_b.health = "silent"  # B's link is cut: 1 healthy server of 3, panic mode
        results = calls.join()
        took = time.monotonic() - marked
        assert [r[:2] for r in results] == [(200, "C")] * 6, results
        assert took < 3.0, took
        assert cut_a.requests == []  # nothing was ever sent to A, down all along
        assert sorted(lines(rec_c)) == sorted("GET /item-%d" % i for i in range(6))
        assert retries(lb, "marked_down") == 3
    finally:
        cut_a.stop()
        cut_b.stop()
