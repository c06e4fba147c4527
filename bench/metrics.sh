#!/usr/bin/env bash
# bench/metrics.sh — scenario 5, what `GET /metrics` costs (issue 13): (a) the time of one scrape
# with 100 servers in the set, measured by a client scraping over one keep-alive connection
# (wall time per scrape; the balancer's CPU time per scrape from /proc); (b) the proxy's
# throughput and p99 in scenario 1's setup while a scraper asks for /metrics once a second,
# against none, alternating rounds in one run. Raw outputs: build/bench/metrics/.
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_init metrics

TOKEN="bench-metrics-token-0123456789abcdef"
SCRAPES=${BENCH_SCRAPES:-500}

# scrape PORT N [INTERVAL]: N scrapes of /metrics over one keep-alive connection (INTERVAL
# seconds apart, default back to back); prints "count mean_ms p99_ms bytes".
scrape() {
    "$PY" - "$1" "$2" "${3:-0}" "$TOKEN" <<'EOF'
import http.client, sys, time
port, n, interval, token = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
times, size = [], 0
for i in range(n):
    t0 = time.perf_counter()
    conn.request("GET", "/metrics", headers={"Authorization": "Bearer " + token, "Host": "localhost"})
    resp = conn.getresponse()
    body = resp.read()
    times.append((time.perf_counter() - t0) * 1000)
    assert resp.status == 200, resp.status
    size = len(body)
    if interval:
        time.sleep(interval)
times.sort()
print(len(times), "%.3f" % (sum(times) / len(times)), "%.3f" % times[int(len(times) * 0.99) - 1], size)
EOF
}

# ---- (a) one scrape with 100 servers in the set
bench_ports PA AA
args=(lb --listen "127.0.0.1:$PA" --workers 1 --admin-listen "127.0.0.1:$AA" --admin-token "$TOKEN"
    --health-interval 1h --slow-start 0 --access-log off)
# 100 servers on ports nothing listens on (a scrape's cost does not depend on their health)
for i in $(seq 1 100); do args+=(--backend "http://127.0.0.2:$((40000 + i))"); done
bench_spawn "agora-100" "$RAW/agora-100.log" "$AGORA" "${args[@]}"
PID100=$SPAWNED
bench_wait_port "agora-100" "$PID100" "$AA" "$RAW/agora-100.log"
scrape "$AA" 20 >/dev/null # warm-up
cpu0=$(bench_cpu_ticks "$PID100")
read -r n mean p99 size <<<"$(scrape "$AA" "$SCRAPES")"
cpu1=$(bench_cpu_ticks "$PID100")
tck=$(getconf CLK_TCK)
cpu_ms=$("$PY" -c "print('%.3f' % (($cpu1 - $cpu0) * 1000 / $tck / $n))")
bench_stop "$PID100"
A_LINE="(a) /metrics with 100 servers: $n scrapes of $size bytes; wall time mean $mean ms, p99 $p99 ms; balancer CPU $cpu_ms ms per scrape"
echo "$A_LINE"

# ---- (b) throughput with a scrape a second vs none
bench_ports B1 B2 B3 PB AB
bench_backend backend1 "$B1" --threads 1
bench_backend backend2 "$B2" --threads 1
bench_backend backend3 "$B3" --threads 1
bench_spawn "agora-scraped" "$RAW/agora-scraped.log" "$AGORA" lb --listen "127.0.0.1:$PB" --workers 1 \
    --admin-listen "127.0.0.1:$AB" --admin-token "$TOKEN" --health-interval 1s --slow-start 0 --access-log off \
    --backend "http://127.0.0.1:$B1" --backend "http://127.0.0.1:$B2" --backend "http://127.0.0.1:$B3"
PIDB=$SPAWNED
bench_ready "agora-scraped" "$PIDB" "http://127.0.0.1:$PB/" "$RAW/agora-scraped.log"
bench_wrk "$RAW/warmup.wrk.txt" "$PB" "$BENCH_CONNS" "$BENCH_WARMUP"
for ((round = 1; round <= BENCH_ROUNDS; round++)); do
    bench_measure "scrape" "agora" "$round" "$PB" "$BENCH_CONNS" "$BENCH_DURATION" "$PIDB" "$RAW/agora-scraped.log"
    scrape "$AB" $((BENCH_DURATION + 2)) 1 >"$RAW/scraper-r$round.txt" &
    SCRAPER=$!
    bench_measure "scrape" "agora-scraped" "$round" "$PB" "$BENCH_CONNS" "$BENCH_DURATION" "$PIDB" \
        "$RAW/agora-scraped.log"
    wait "$SCRAPER" || bench_die "the scraper failed (round $round)"
done
bench_stop "$PIDB"

echo
{
    echo "Scenario 5, /metrics (wrk -t$BENCH_THREADS -c$BENCH_CONNS -d${BENCH_DURATION}s; 1 worker)"
    echo "  $A_LINE"
    "$PY" "$STATS" lb-table "$RAW/runs.tsv" --note "(b) agora-scraped: GET /metrics once a second during the run"
} | tee "$RAW/summary.txt"
