#!/usr/bin/python3
"""model.py — a queueing model of scenario 2 (bench/slow.sh), to tell a policy's limits from
its implementation's (stdlib only; not part of `make bench`).

A closed loop of C clients (wrk -cC) sends requests to three serial servers whose service times
are uniform in the given ranges (testbackend --serial --delay-ms MIN-MAX); each request is
assigned on arrival by the policy, and waits in its server's FIFO queue. The proxy itself costs
nothing. Prints throughput, p50 and p99 per policy:

  least-conn         fewest requests in flight, random tie-break (HAProxy leastconn, agora)
  peak-ewma          agora's peak_ewma.c: power of two choices on ewma * (inflight + 1), where
                     the peak-sensitive EWMA (tau 10 s) is fed each request's latency as the
                     proxy sees it, i.e. including its wait in the server's queue
  peak-ewma-norm     the same, fed latency / (inflight at dispatch + 1): an estimate of the
                     service time alone, for servers that serve one request at a time
  expected-wait      oracle: the server with the least (queued + 1) * mean service time

Usage: bench/model.py [--conns 16] [--servers 1-20,1-20,5-100] [--requests 100000] [--seed 1]
                      [--tau 10000]
"""
import argparse
import heapq
import math
import random

TAU_MS = 10000.0  # agora's EWMA_TAU_US (src/lb/proxy.c), in ms: the default of --tau


class Model:
    """One simulation run; latencies are in milliseconds."""

    def __init__(self, servers, rnd, tau_ms=TAU_MS):
        self.servers = servers
        self.tau_ms = tau_ms
        self.means = [(a + b) / 2 for a, b in servers]
        self.rnd = rnd
        self.queue = [[] for _ in servers]  # per server: (dispatch time, in flight at dispatch)
        self.ewma = [0.0] * len(servers)
        self.stamp = [0.0] * len(servers)
        self.events = []  # (completion time, server)

    def cost(self, i):
        sampled = [e for e in self.ewma if e > 0]
        lat = self.ewma[i] if self.ewma[i] > 0 else (min(sampled) if sampled else 1.0)
        return lat * (len(self.queue[i]) + 1)

    def pick(self, policy):
        n = len(self.servers)
        if policy == "least-conn":
            fewest = min(len(q) for q in self.queue)
            return self.rnd.choice([i for i in range(n) if len(self.queue[i]) == fewest])
        if policy == "expected-wait":
            return min(range(n), key=lambda i: ((len(self.queue[i]) + 1) * self.means[i], self.rnd.random()))
        a = self.rnd.randrange(n)
        b = self.rnd.choice([i for i in range(n) if i != a])
        return b if self.cost(b) < self.cost(a) else a

    def dispatch(self, policy, now):
        i = self.pick(policy)
        self.queue[i].append((now, len(self.queue[i])))
        if len(self.queue[i]) == 1:
            heapq.heappush(self.events, (now + self.rnd.uniform(*self.servers[i]), i))

    def observe(self, policy, i, latency, inflight, now):
        sample = latency / (inflight + 1) if policy == "peak-ewma-norm" else latency
        dt = now - self.stamp[i]
        self.stamp[i] = now
        if self.ewma[i] <= 0 or sample > self.ewma[i]:
            self.ewma[i] = sample
        else:
            w = math.exp(-dt / self.tau_ms)
            self.ewma[i] = self.ewma[i] * w + sample * (1 - w)

    def run(self, policy, conns, requests):
        for _ in range(conns):
            self.dispatch(policy, 0.0)
        lat = []
        now = 0.0
        while len(lat) < requests:
            now, i = heapq.heappop(self.events)
            start, inflight = self.queue[i].pop(0)
            lat.append(now - start)
            self.observe(policy, i, now - start, inflight, now)
            if self.queue[i]:
                heapq.heappush(self.events, (now + self.rnd.uniform(*self.servers[i]), i))
            self.dispatch(policy, now)
        lat.sort()
        return len(lat) / now * 1000, lat[len(lat) // 2], lat[int(len(lat) * 0.99)]


def parse_servers(text):
    out = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out.append((float(lo), float(hi or lo)))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--conns", type=int, default=16)
    ap.add_argument("--servers", default="1-20,1-20,5-100", help="service-time ranges in ms")
    ap.add_argument("--requests", type=int, default=100000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--tau", type=float, default=TAU_MS, help="EWMA decay time in ms (default 10000)")
    args = ap.parse_args()
    servers = parse_servers(args.servers)
    print("model: %d closed-loop clients, serial servers %s ms" % (args.conns, args.servers))
    for policy in ("least-conn", "peak-ewma", "peak-ewma-norm", "expected-wait"):
        model = Model(servers, random.Random(args.seed), args.tau)
        rps, p50, p99 = model.run(policy, args.conns, args.requests)
        print("  %-16s %6.0f req/s  p50 %6.1f ms  p99 %6.1f ms" % (policy, rps, p50, p99))


if __name__ == "__main__":
    main()
