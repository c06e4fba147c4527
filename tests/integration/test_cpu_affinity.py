"""--cpu-affinity: worker i of `agora lb` and `agora server` runs only on the i-th CPU of a list
(src/core/cpus.h): off (the default: nothing pinned), auto (the CPUs the process may run on) or
a list such as 0,2-3, in the order given, more workers than CPUs taking them in turn. The other
threads (the main loop, the server's handler threads) are not pinned. A value that is not a CPU
list, a CPU listed twice, or a CPU the process may not run on (taskset, a cpuset) stops the start
with a message that names it; a reload (SIGHUP) cannot change it.

Each thread's CPUs are read from /proc/PID/task/TID/status (Cpus_allowed_list). Workers are
started one after another, so worker i is the i-th thread after the main one by thread id. The
tests that pin need two CPUs or more (a one-CPU machine cannot tell pinned from not).
"""

import os
import signal
import subprocess

import pytest

from helpers import LOCALHOST, _listens_on, backend_url, free_port, http_request, start_process, wait_for

ALLOWED = sorted(os.sched_getaffinity(0))
needs_two = pytest.mark.skipif(len(ALLOWED) < 2, reason="needs two CPUs to tell pinned from not")


def cpu_list(text):
    """'0-2,5' -> [0, 1, 2, 5]"""
    out = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out += range(int(lo), int(hi or lo) + 1)
    return out


def fmt(cpus):
    """[0, 1, 2, 5] -> '0-2,5', as agora writes a list (ranges of ascending neighbours)."""
    out, i = [], 0
    while i < len(cpus):
        j = i
        while j + 1 < len(cpus) and cpus[j + 1] == cpus[j] + 1:
            j += 1
        out.append("%d-%d" % (cpus[i], cpus[j]) if j > i else "%d" % cpus[i])
        i = j + 1
    return ",".join(out)


def threads(pid):
    """[(tid, [cpus it may run on])] of every thread of pid, by thread id."""
    out = []
    for tid in sorted(int(t) for t in os.listdir("/proc/%d/task" % pid)):
        with open("/proc/%d/task/%d/status" % (pid, tid)) as f:
            line = next(l for l in f if l.startswith("Cpus_allowed_list:"))
        out.append((tid, cpu_list(line.split()[1])))
    return out


def workers_cpus(pid, n):
    """The CPUs of the first n threads after the main one (the workers, in the order started)."""
    return [cpus for tid, cpus in threads(pid) if tid != pid][:n]


def start_lb_with(agora_bin, backend, *flags, workers=2, prefix=()):
    """`agora lb` on a free port with its workers started -> Process with .port. backend None:
    the flags name it (--config)."""
    port = free_port()
    args = [agora_bin, "lb", "--listen", "127.0.0.1:%d" % port, "--admin-listen", "off"]
    if backend is not None:
        args += ["--backend", backend_url(backend), "--workers", str(workers)]
    proc = start_process(list(prefix) + args + list(flags))
    proc.port = port
    assert wait_for(lambda: proc.poll() is not None or (_listens_on(proc.pid, port) and
                                                        len(threads(proc.pid)) >= workers + 1), 10), proc.output()
    assert proc.poll() is None, proc.output()
    return proc


def served(port, n=20):
    return [http_request(LOCALHOST, port, "GET", "/")[0] for _ in range(n)]


@needs_two
def test_auto_pins_worker_i_to_the_i_th_cpu_in_turn_and_leaves_the_main_thread(agora_bin, testbackend_factory):
    backend = testbackend_factory("A")
    n = len(ALLOWED) + 1  # one more worker than CPUs: the last takes the first CPU again
    lb = start_lb_with(agora_bin, backend, "--cpu-affinity", "auto", workers=n)
    try:
        assert workers_cpus(lb.pid, n) == [[ALLOWED[i % len(ALLOWED)]] for i in range(n)]
        assert dict(threads(lb.pid))[lb.pid] == ALLOWED, "the main thread is not pinned"
        assert lb.wait_for_output("agora lb: workers pinned to CPUs %s, in turn (%d workers on %d CPUs)" % (
            fmt(ALLOWED), n, len(ALLOWED))), lb.output()
        assert served(lb.port) == [200] * 20
    finally:
        assert lb.stop() == 0, lb.output()


@needs_two
def test_a_list_is_taken_in_its_order_and_only_as_far_as_there_are_workers(agora_bin, testbackend_factory):
    backend = testbackend_factory("A")
    first, last = ALLOWED[0], ALLOWED[-1]
    lb = start_lb_with(agora_bin, backend, "--cpu-affinity", "%d, %d" % (last, first), workers=2)
    try:
        assert workers_cpus(lb.pid, 2) == [[last], [first]]
        assert lb.wait_for_output("agora lb: workers pinned to CPUs %d,%d, one each" % (last, first)), lb.output()
        assert served(lb.port) == [200] * 20
    finally:
        assert lb.stop() == 0
    # Two workers, a longer list: the message names the CPUs taken, not the rest.
    if len(ALLOWED) >= 3:
        lb = start_lb_with(agora_bin, backend, "--cpu-affinity", "auto", workers=2)
        try:
            assert lb.wait_for_output("agora lb: workers pinned to CPUs %s, one each" % fmt(ALLOWED[:2])), lb.output()
        finally:
            lb.stop()


@needs_two
def test_one_worker_takes_the_first_cpu_of_a_list_and_says_only_that(agora_bin, testbackend_factory):
    backend = testbackend_factory("A")
    lb = start_lb_with(agora_bin, backend, "--cpu-affinity", " %d - %d ,\t%d " % (ALLOWED[1], ALLOWED[1], ALLOWED[0]),
                       workers=1)
    try:
        assert workers_cpus(lb.pid, 1) == [[ALLOWED[1]]]
        assert lb.wait_for_output("agora lb: worker pinned to CPU %d\n" % ALLOWED[1]), lb.output()
        assert served(lb.port) == [200] * 20
    finally:
        assert lb.stop() == 0


@needs_two
def test_off_is_the_default_and_pins_nothing(agora_bin, testbackend_factory):
    backend = testbackend_factory("A")
    for flags in ((), ("--cpu-affinity", "off"), ("--cpu-affinity", "\toff ")):
        lb = start_lb_with(agora_bin, backend, *flags, workers=2)
        try:
            assert [cpus for tid, cpus in threads(lb.pid)] == [ALLOWED] * len(threads(lb.pid))
            assert "pinned" not in lb.output()
        finally:
            assert lb.stop() == 0


@needs_two
def test_one_cpu_takes_every_worker(agora_bin, testbackend_factory):
    backend = testbackend_factory("A")
    lb = start_lb_with(agora_bin, backend, "--cpu-affinity", str(ALLOWED[-1]), workers=3)
    try:
        assert workers_cpus(lb.pid, 3) == [[ALLOWED[-1]]] * 3
        assert lb.wait_for_output("agora lb: workers pinned to CPU %d\n" % ALLOWED[-1]), lb.output()
        assert served(lb.port) == [200] * 20
    finally:
        assert lb.stop() == 0


HINT = "(off, auto, or a list such as 0,2-3)"
BAD = [
    ("", "cpu-affinity: no value " + HINT),
    (" \t ", "cpu-affinity: no value " + HINT),
    ("0,,1", "cpu-affinity: a CPU number is missing " + HINT),
    ("0,", "cpu-affinity: a CPU number is missing " + HINT),
    ("1-", "cpu-affinity: a CPU number is missing " + HINT),
    ("-1", "cpu-affinity: a CPU number is missing " + HINT),
    ("all", "cpu-affinity: 'all' is not a CPU number " + HINT),
    ("Auto", "cpu-affinity: 'Auto' is not a CPU number " + HINT),
    ("auto,0", "cpu-affinity: 'auto' is not a CPU number " + HINT),
    ("0 1", "cpu-affinity: '1' is not part of a CPU list " + HINT),
    ("0x1", "cpu-affinity: 'x1' is not part of a CPU list " + HINT),
    ("0;1", "cpu-affinity: ';1' is not part of a CPU list " + HINT),
    ("3-1", "cpu-affinity: range 3-1 is backwards"),
    ("0,0", "cpu-affinity: CPU 0 is listed twice"),
    ("0-1,1", "cpu-affinity: CPU 1 is listed twice"),
    ("1024", "cpu-affinity: CPU 1024 is out of range (0-1023)"),
    ("99999999999999999999", "cpu-affinity: CPU 99999999999999999999 is out of range (0-1023)"),
    ("1023", "cpu-affinity: CPU 1023 is not one this process may run on (it may run on %s)" % fmt(ALLOWED)),
]


def refused(args, prefix=()):
    """Runs a command that must not start -> (exit status, output)."""
    p = subprocess.run(list(prefix) + args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=10)
    return p.returncode, p.stdout.decode()


@pytest.mark.parametrize("value, message", BAD)
def test_a_bad_value_stops_the_balancer_and_the_server_with_its_message(agora_bin, tmp_path, value, message):
    lb = [agora_bin, "lb", "--listen", "127.0.0.1:%d" % free_port(), "--admin-listen", "off", "--backend",
          "http://127.0.0.1:1"]
    status, out = refused(lb + ["--cpu-affinity", value])
    assert (status, out.strip().splitlines()[-1]) == (1, "agora lb: " + message), out
    assert "listening on" not in out
    # The same from the INI file.
    ini = tmp_path / "lb.ini"
    ini.write_text("[lb]\ncpu_affinity = %s\n" % value)
    status, out = refused(lb + ["--config", str(ini)])
    # The file's spelling is checked as it is read (a reload too); the CPUs against the process's
    # own at the start only, where a reload cannot apply them anyway.
    where = "" if "may run on" in message else "%s: " % ini
    assert (status, out.strip().splitlines()[-1]) == (1, "agora lb: %s%s" % (where, message)), out
    status, out = refused([agora_bin, "server", "--listen", "127.0.0.1:%d" % free_port(), "--db",
                           "sqlite:%s" % (tmp_path / "t.db"), "--cpu-affinity", value])
    assert (status, out.strip().splitlines()[-1]) == (1, "agora server: " + message), out
    assert not (tmp_path / "t.db").exists(), "refused before the database is opened"


@needs_two
def test_a_cpu_outside_the_process_s_set_is_refused_and_auto_keeps_to_the_set(agora_bin, testbackend_factory):
    """Under taskset (as under a container's cpuset) the process may run on one CPU only."""
    first, second = ALLOWED[0], ALLOWED[1]
    taskset = ["taskset", "-c", str(first)]
    status, out = refused([agora_bin, "lb", "--listen", "127.0.0.1:%d" % free_port(), "--admin-listen", "off",
                           "--backend", "http://127.0.0.1:1", "--cpu-affinity", "%d,%d" % (first, second)],
                          prefix=taskset)
    assert (status, out.strip().splitlines()[-1]) == (
        1, "agora lb: cpu-affinity: CPU %d is not one this process may run on (it may run on %d)" % (second, first))
    lb = start_lb_with(agora_bin, testbackend_factory("A"), "--cpu-affinity", "auto", workers=2, prefix=taskset)
    try:
        assert workers_cpus(lb.pid, 2) == [[first], [first]]
        assert lb.wait_for_output("agora lb: workers pinned to CPU %d\n" % first), lb.output()
        assert served(lb.port) == [200] * 20
    finally:
        assert lb.stop() == 0


@needs_two
def test_a_reload_does_not_change_the_pinning_and_says_so(agora_bin, testbackend_factory, tmp_path):
    backend = testbackend_factory("A")
    ini = tmp_path / "lb.ini"
    ini.write_text("[lb]\ncpu_affinity = auto\nworkers = 2\n\n[backends]\nserver = %s\n" % backend_url(backend))
    lb = start_lb_with(agora_bin, None, "--config", str(ini), workers=2)
    try:
        before = workers_cpus(lb.pid, 2)
        assert before == [[ALLOWED[0]], [ALLOWED[1]]]
        ini.write_text("[lb]\ncpu_affinity = off\nworkers = 2\n\n[backends]\nserver = %s\n" % backend_url(backend))
        lb.popen.send_signal(signal.SIGHUP)
        assert wait_for(lambda: "agora lb: reloaded: 1 backend(s)" in lb.output(), 5), lb.output()
        assert "agora lb: reload: listen, policy, workers and cpu-affinity changes need a restart" in lb.output()
        assert workers_cpus(lb.pid, 2) == before
        # A value that does not parse fails the reload as a whole; the running pinning stays.
        ini.write_text("[lb]\ncpu_affinity = 0,0\nworkers = 2\n\n[backends]\nserver = %s\n" % backend_url(backend))
        lb.popen.send_signal(signal.SIGHUP)
        assert wait_for(lambda: "agora lb: reload failed" in lb.output(), 5), lb.output()
        assert "cpu-affinity: CPU 0 is listed twice" in lb.output()
        assert workers_cpus(lb.pid, 2) == before
        assert served(lb.port) == [200] * 20
        # The same pinning spelled otherwise is no change: no restart message.
        restart = "agora lb: reload: listen, policy, workers and cpu-affinity changes need a restart"
        ini.write_text("[lb]\ncpu_affinity = %d, %d\nworkers = 2\n\n[backends]\nserver = %s\n"
                       % (ALLOWED[0], ALLOWED[1], backend_url(backend)))
        lb.popen.send_signal(signal.SIGHUP)
        assert wait_for(lambda: lb.output().count("agora lb: reloaded: 1 backend(s)") == 2, 5), lb.output()
        assert lb.output().count(restart) == 1, lb.output()
        # The main thread's CPUs shrink after the start (taskset -p, a smaller cpuset): a reload
        # that changes only the backends still loads; the pinning it cannot change is not checked
        # against them.
        subprocess.run(["taskset", "-p", "-c", str(ALLOWED[0]), str(lb.pid)], check=True, stdout=subprocess.DEVNULL)
        second = testbackend_factory("B")
        ini.write_text("[lb]\ncpu_affinity = auto\nworkers = 2\n\n[backends]\nserver = %s\nserver = %s\n"
                       % (backend_url(backend), backend_url(second)))
        lb.popen.send_signal(signal.SIGHUP)
        assert wait_for(lambda: "agora lb: reloaded: 2 backend(s)" in lb.output(), 5), lb.output()
        assert workers_cpus(lb.pid, 2) == before
    finally:
        assert lb.stop() == 0, lb.output()


@needs_two
def test_the_server_pins_its_workers_not_its_handler_threads(agora_bin, tmp_path):
    port = free_port()
    srv = start_process([agora_bin, "server", "--listen", "%s:%d" % (LOCALHOST, port), "--db",
                         "sqlite:%s" % (tmp_path / "t.db"), "--workers", "2", "--threads", "2", "--hash-threads", "1",
                         "--cpu-affinity", "%d,%d" % (ALLOWED[1], ALLOWED[0])], "agora server: listening on",
                        timeout=15.0)
    try:
        assert wait_for(lambda: len([t for t in threads(srv.pid) if t[1] != ALLOWED]) == 2, 10), threads(srv.pid)
        assert srv.wait_for_output("agora server: workers pinned to CPUs %d,%d, one each" % (ALLOWED[1], ALLOWED[0])), srv.output()
        pinned = sorted(cpus[0] for tid, cpus in threads(srv.pid) if cpus != ALLOWED)
        assert pinned == sorted([ALLOWED[0], ALLOWED[1]]), threads(srv.pid)
        assert http_request(LOCALHOST, port, "GET", "/health")[0] == 200
    finally:
        assert srv.stop() == 0, srv.output()


def test_help_names_the_option(agora_bin):
    for cmd in ("lb", "server"):
        out = subprocess.run([agora_bin, cmd, "--help"], stdout=subprocess.PIPE, timeout=10).stdout.decode()
        assert "--cpu-affinity" in out, cmd
