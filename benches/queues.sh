#!/usr/bin/env bash
# Queues on one node with the embedded store: `islet bench-queues` (a producer function called over
# HTTP sends with sendBatch, a consumer's queue handler takes batches of up to 100), run ROUNDS
# times, with the median of each figure: messages per second end to end (send → consumer → ack),
# and the p50/p99 from a message being stored to its consumer being called when idle.
#
# Usage: benches/queues.sh   (ROUNDS=3 MESSAGES=100000 SAMPLES=300; ISLET=path to use a build)
# Targets (issue: events): ≥ 20,000 messages/s and p50 ≤ 5 ms.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
MESSAGES=${MESSAGES:-100000}
SAMPLES=${SAMPLES:-300}
# shellcheck source=benches/common.sh
source benches/common.sh
build_islet

for round in $(seq 1 "$ROUNDS"); do
  echo "round $round of $ROUNDS…" >&2
  "$islet" bench-queues --messages "$MESSAGES" --samples "$SAMPLES" --json 2>/dev/null | tail -1 >>"$work/rounds.jsonl"
done

python3 - "$work/rounds.jsonl" <<'PY'
import json, statistics, sys
rounds = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
rate = [r["messages_per_second"] for r in rounds]
p50 = [r["idle_latency_ms"]["p50"] for r in rounds]
p99 = [r["idle_latency_ms"]["p99"] for r in rounds]
print(f"queues, embedded store, {len(rounds)} rounds (medians; each round in brackets)")
print(f"  messages/s   {statistics.median(rate):>9.0f}   ({' '.join(f'{x:.0f}' for x in rate)})")
print(f"  idle p50 ms  {statistics.median(p50):>9.2f}   ({' '.join(f'{x:.2f}' for x in p50)})")
print(f"  idle p99 ms  {statistics.median(p99):>9.2f}   ({' '.join(f'{x:.2f}' for x in p99)})")
PY
