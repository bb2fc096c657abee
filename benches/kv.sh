#!/usr/bin/env bash
# KV from inside a handler (benches/kv/bench.js), on the embedded store and on Redis, in ROUNDS
# rounds with the median of each figure: gets one after another (per second, p50 and p99 of each),
# puts one after another (each waits for its commit: an fsync on the embedded store), and puts
# started together (sharing commits).
#
# Usage: benches/kv.sh   (ROUNDS=5; ISLET=path to use a build)
# Targets (issue: KV): ≥ 50,000 gets/s and p50 ≤ 50 µs per embedded get inside a handler.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-5}
# shellcheck source=benches/common.sh
source benches/common.sh
build_islet

command -v redis-server >/dev/null || { echo "kv.sh: redis-server is needed (tools/setup.sh)" >&2; exit 1; }
redis_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$redis_port" --save "" --appendonly yes --appendfsync everysec --dir "$work" >/dev/null &
pids+=($!)

# Starts a node named $1 with the rest of the arguments; sets $url to its address.
start_node() {
  local name=$1
  shift
  "$islet" serve benches/kv/islet.toml --listen 127.0.0.1:0 --threads 2 "$@" >"$work/$name.out" 2>/dev/null &
  pids+=($!)
  for _ in $(seq 1 100); do
    url=$(head -1 "$work/$name.out" 2>/dev/null | sed -n 's/^islet listening on //p')
    [ -n "$url" ] && return
    sleep 0.1
  done
  echo "kv.sh: the node did not start" >&2
  exit 1
}

start_node embedded --data "$work/data"
embedded=$url
sleep 0.5
start_node redis --store "redis://127.0.0.1:$redis_port"
redis=$url

for round in $(seq 1 "$ROUNDS"); do
  echo "round $round of $ROUNDS…" >&2
  for store in embedded redis; do
    base=${!store}
    for op in "get&n=990" "put&n=200" "put-concurrent&n=900"; do
      printf '%s %s\n' "$store" "$(curl -sf "$base/kv-bench?op=$op")" >>"$work/rounds.txt"
    done
  done
done

python3 - "$work/rounds.txt" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    store, figures = line.split(" ", 1)
    figures = json.loads(figures)
    rows.setdefault((store, figures["op"]), []).append(figures)
print(f"KV from a handler, {len(next(iter(rows.values())))} rounds (medians; each round in brackets)")
for (store, op), runs in rows.items():
    rate = [r["per_second"] for r in runs]
    line = f"  {store:<9} {op:<15} {statistics.median(rate):>9.0f}/s ({' '.join(f'{x:.0f}' for x in rate)})"
    if runs[0]["p50_us"] is not None:
        p50 = [r["p50_us"] for r in runs]
        p99 = [r["p99_us"] for r in runs]
        line += f"   p50 {statistics.median(p50):.1f} µs   p99 {statistics.median(p99):.1f} µs"
    print(line)
PY
