#!/usr/bin/env bash
# bench/instr_scrape.sh — instructions per GET /metrics of `agora lb` with 100 servers in the set,
# counted by valgrind's callgrind: (Ir(120 scrapes) - Ir(20 scrapes)) / 100 for each binary, so
# two builds' writers compare exactly on a noisy machine (bench/metrics.sh measures time).
#
#   bash bench/instr_scrape.sh AGORA [AGORA...]
set -euo pipefail
TOKEN="bench-metrics-token-0123456789abcdef"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
run() {
  local bin=$1 n=$2 PA AA out pid
  PA=$(free_port); AA=$(free_port); out=$(mktemp)
  args=(lb --listen "127.0.0.1:$PA" --workers 1 --admin-listen "127.0.0.1:$AA" --admin-token "$TOKEN" --health-interval 1h --slow-start 0 --access-log off)
  for i in $(seq 1 100); do args+=(--backend "http://127.0.0.2:$((40000 + i))"); done
  valgrind --tool=callgrind --callgrind-out-file=$out "$bin" "${args[@]}" >/dev/null 2>&1 &
  pid=$!
  for _ in $(seq 300); do python3 -c "import socket; socket.create_connection(('127.0.0.1', $AA)).close()" 2>/dev/null && break; sleep 0.1; done
  python3 - "$AA" "$TOKEN" "$n" <<'EOF'
import http.client, sys
port, tok, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
for _ in range(n):
    c.request("GET", "/metrics", headers={"Authorization": "Bearer " + tok, "Host": "localhost"})
    r = c.getresponse(); r.read(); assert r.status == 200
EOF
  kill -TERM $pid; wait $pid || true
  grep -m1 '^summary:' $out | awk '{print $2}'; rm -f $out
}
for bin in "$@"; do
  a=$(run "$bin" 20); b=$(run "$bin" 120)
  echo "$bin: $(((b - a) / 100)) instructions per scrape"
done
