#!/usr/bin/env bash
# A service call's overhead: `svc-bench` (benches/services/bench.js) calls the hello handler N
# times directly (the module imported into its own isolate) and N times through a service binding
# (another isolate, through the node), timing each call; ROUNDS rounds, medians of the p50s.
#
# Usage: benches/services.sh   (ROUNDS=5 N=500; ISLET=path to use a build)
# Target (issue: service bindings): overhead p50 ≤ 50 µs for a hello callee.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-5}
N=${N:-500}
# shellcheck source=benches/common.sh
source benches/common.sh
build_islet

"$islet" serve benches/services/islet.toml --listen 127.0.0.1:0 --threads 2 >"$work/out" 2>/dev/null &
pids+=($!)
url=""
for _ in $(seq 1 100); do
  url=$(head -1 "$work/out" 2>/dev/null | sed -n 's/^islet listening on //p')
  [ -n "$url" ] && break
  sleep 0.1
done
[ -n "$url" ] || { echo "services.sh: the node did not start" >&2; exit 1; }
curl -sf "$url/svc-bench?n=50" >/dev/null # warm both isolates

for round in $(seq 1 "$ROUNDS"); do
  echo "round $round of $ROUNDS…" >&2
  curl -sf "$url/svc-bench?n=$N" >>"$work/rounds.jsonl"
  echo >>"$work/rounds.jsonl"
done

python3 - "$work/rounds.jsonl" <<'PY'
import json, statistics, sys
rounds = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
def row(name, key):
    values = [r[key] for r in rounds]
    print(f"  {name:<24} {statistics.median(values):>8.1f} µs   ({' '.join(f'{v:.1f}' for v in values)})")
print(f"service binding against a direct call, {len(rounds)} rounds of {rounds[0]['n']} calls (medians)")
row("direct call p50", "direct_p50_us")
row("service call p50", "service_p50_us")
row("service call p99", "service_p99_us")
row("overhead p50", "overhead_p50_us")
PY
