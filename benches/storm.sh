#!/usr/bin/env bash
# Noisy neighbours: measures a quiet function's latency while another function is hammered with
# infinite loops, and the node's memory after the storm.
#
# One `islet serve` of tests/fixtures/limits. wrk drives `ok` alone (quiet), then `ok` again while a
# second wrk hammers `spin` (`while (true) {}`, stopped at its 50 ms CPU limit every time), then
# `ok` alone once more. Prints the p50/p99 of `ok` in each phase, the storm-to-quiet p99 ratio, and
# the node's RSS before, during and after the storm.
#
# Usage: benches/storm.sh   (DURATION=10s CONNECTIONS=8 STORM_CONNECTIONS=4 ISOLATE_THREADS=2)
# Needs: wrk (Debian's package).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-8}
STORM_CONNECTIONS=${STORM_CONNECTIONS:-4}
ISOLATE_THREADS=${ISOLATE_THREADS:-2}
PORT=${PORT:-18090}
# shellcheck source=benches/common.sh
source benches/common.sh
build_islet

"$islet" serve tests/fixtures/limits --listen "127.0.0.1:$PORT" --threads "$ISOLATE_THREADS" \
  >"$work/islet.out" 2>"$work/islet.log" &
node=$!
pids+=("$node")
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/ok" >/dev/null 2>&1 && break; sleep 0.1; done

rss_mib() { awk '/VmRSS/ { printf "%.0f", $2 / 1024 }' "/proc/$node/status"; }

# wrk's --latency table: "50%    1.23ms" etc., converted to milliseconds.
percentile() { # file percent
  awk -v p="$2%" '$1 == p {
    v = $2; unit = v; gsub(/[0-9.]/, "", unit); gsub(/[a-z]/, "", v);
    if (unit == "us") v /= 1000; else if (unit == "s") v *= 1000;
    printf "%.3f", v }' "$1"
}
measure() { # name
  wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency "http://127.0.0.1:$PORT/ok" >"$work/$1.txt"
  echo "$(percentile "$work/$1.txt" 50) $(percentile "$work/$1.txt" 99) $(awk '/Requests\/sec/ { printf "%.0f", $2 }' "$work/$1.txt")"
}

echo "warming up…" >&2
wrk -t1 -c"$CONNECTIONS" -d2s "http://127.0.0.1:$PORT/ok" >/dev/null
rss_before=$(rss_mib)
echo "quiet…" >&2
read -r quiet_p50 quiet_p99 quiet_rps < <(measure quiet)

echo "storm: $STORM_CONNECTIONS connections of infinite loops…" >&2
wrk -t1 -c"$STORM_CONNECTIONS" -d"$(( ${DURATION%s} + 4 ))s" "http://127.0.0.1:$PORT/spin" >"$work/spin.txt" &
storm=$!
pids+=("$storm")
sleep 2
read -r storm_p50 storm_p99 storm_rps < <(measure storm)
rss_during=$(rss_mib)
wait "$storm" || true
stopped=$(grep -c "cpu_limit_exceeded" "$work/islet.log" || true)

echo "after…" >&2
sleep 3
read -r after_p50 after_p99 after_rps < <(measure after)
rss_after=$(rss_mib)

printf '\n%-8s %10s %10s %10s %10s\n' phase "ok p50 ms" "ok p99 ms" "ok req/s" "RSS MiB"
printf '%-8s %10s %10s %10s %10s\n' quiet "$quiet_p50" "$quiet_p99" "$quiet_rps" "$rss_before"
printf '%-8s %10s %10s %10s %10s\n' storm "$storm_p50" "$storm_p99" "$storm_rps" "$rss_during"
printf '%-8s %10s %10s %10s %10s\n' after "$after_p50" "$after_p99" "$after_rps" "$rss_after"
echo
echo "isolates stopped at the CPU limit during the storm: $stopped"
awk -v s="$storm_p99" -v q="$quiet_p99" 'BEGIN { printf "storm p99 / quiet p99: %.2fx (target <= 2x)\n", s / q }'
echo "RSS after the storm: $rss_after MiB against $rss_before MiB before"
grep -m1 "demoted to the heavy lane" "$work/islet.log" | sed 's/^.*WARN //' || true
