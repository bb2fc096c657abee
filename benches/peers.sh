#!/usr/bin/env bash
# Serves the same hello handler with Islet, `deno serve`, workerd and a bare hyper server (the
# ceiling: Islet's HTTP stack with no JavaScript), drives each in turn with wrk, and prints
# requests/s and p50/p99 latency side by side, with Islet's ratio to each: medians over ROUNDS rounds.
#
# Usage: benches/peers.sh   (ROUNDS=3 DURATION=10s CONNECTIONS=64 WRK_THREADS=2 ISOLATE_THREADS=2
#                            SERVERS="islet deno workerd hyper": a subset for more rounds in less time;
#                            "baseline" in SERVERS with BASELINE=path/to/islet: another build of
#                            Islet, e.g. main's, measured the same way in the same rounds
#                            PIN=1: per core, each server confined to CPU 0 with one thread or worker
#                            and wrk -t1 -c32 to CPU 1, so that the two never compete for a core and
#                            a server that uses less CPU per request cannot win by leaving wrk more
#                            of the machine)
# Needs: wrk and npm (Debian's packages); installs deno and workerd from the npm registry
# (@deno/linux-x64-glibc, @cloudflare/workerd-linux-64) into a scratch folder.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
WRK_THREADS=${WRK_THREADS:-2}
ISOLATE_THREADS=${ISOLATE_THREADS:-2}
PIN=${PIN:-0}
server_cpu=() client_cpu=() deno_workers=(--parallel)
if [ "$PIN" = 1 ]; then
  server_cpu=(taskset -c 0) client_cpu=(taskset -c 1) deno_workers=()
  ISOLATE_THREADS=1 WRK_THREADS=1 CONNECTIONS=${CONNECTIONS_PINNED:-32}
fi
# shellcheck source=benches/common.sh
source benches/common.sh
echo "installing deno and workerd from npm…" >&2
npm install --silent --no-save --prefix "$work/npm" @deno/linux-x64-glibc @cloudflare/workerd-linux-64 >&2
deno="$work/npm/node_modules/@deno/linux-x64-glibc/deno"
workerd="$work/npm/node_modules/@cloudflare/workerd-linux-64/bin/workerd"

build_islet

# The one handler every server runs.
cp examples/hello/index.js "$work/hello.js"
mkdir -p "$work/functions/hello" && cp examples/hello/index.js "$work/functions/hello/index.js"
cat > "$work/workerd.capnp" <<CAPNP
using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [ (name = "hello", worker = .hello) ],
  sockets = [ (name = "http", address = "127.0.0.1:18083", http = (), service = "hello") ],
);
const hello :Workerd.Worker = (
  modules = [ (name = "hello.js", esModule = embed "hello.js") ],
  compatibilityDate = "2025-01-01",
);
CAPNP

wait_for() { # url
  for _ in $(seq 1 100); do curl -sf "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "peers: $1 never answered" >&2; return 1
}

# wrk's latency ("850.00us", "1.20ms", "2.00s") in milliseconds.
to_ms() { awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /[0-9]s$/ && v !~ /ms$/) n *= 1000; printf "%.3f", n }'; }
# a / b, to two decimals.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
# The median of the numbers given as arguments.
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

declare -A rps p50 p99
run() { # name url command...
  local name=$1 url=$2; shift 2
  "${server_cpu[@]}" "$@" >"$work/$name.log" 2>&1 &
  pids+=($!)
  local pid=$!
  wait_for "$url"
  [ "$(curl -s "$url")" = "Hello from Islet!" ] || { echo "peers: $name answered something else" >&2; exit 1; }
  "${client_cpu[@]}" wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d2s "$url" >/dev/null # warm-up
  local out
  out=$("${client_cpu[@]}" wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$url")
  rps[$name]+=" $(awk '/Requests\/sec/ {print $2}' <<<"$out")"
  p50[$name]+=" $(to_ms "$(awk '$1 == "50%" {print $2}' <<<"$out")")"
  p99[$name]+=" $(to_ms "$(awk '$1 == "99%" {print $2}' <<<"$out")")"
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

run_one() { # name
  case $1 in
    islet) run islet http://127.0.0.1:18081/hello "$islet" serve "$work/functions" --listen 127.0.0.1:18081 --threads "$ISOLATE_THREADS" ;;
    deno) run deno http://127.0.0.1:18082/ "$deno" serve --quiet "${deno_workers[@]}" --port 18082 "$work/hello.js" ;;
    workerd) run workerd http://127.0.0.1:18083/ "$workerd" serve "$work/workerd.capnp" ;;
    hyper) run hyper http://127.0.0.1:18084/ "$islet" hyper-ceiling --listen 127.0.0.1:18084 --threads "$ISOLATE_THREADS" ;;
    baseline) run baseline http://127.0.0.1:18085/hello "$BASELINE" serve "$work/functions" --listen 127.0.0.1:18085 --threads "$ISOLATE_THREADS" ;;
  esac
}

# Each round runs every server once, in an order rotated from round to round, so that drift in the
# machine's speed (these machines are shared and noisy) falls on all of them alike.
read -ra servers <<<"${SERVERS:-islet deno workerd hyper}"
[ "${servers[0]}" = islet ] || { echo "peers: SERVERS must start with islet (the ratios are islet's)" >&2; exit 1; }
for round in $(seq 1 "$ROUNDS"); do
  echo "round $round of $ROUNDS…" >&2
  for i in "${!servers[@]}"; do
    run_one "${servers[$(((i + round - 1) % ${#servers[@]}))]}"
  done
done

placement="sharing $(nproc) cores"
[ "$PIN" = 1 ] && placement="servers on CPU 0 (one thread), wrk on CPU 1"
printf '\nhello, wrk -t%s -c%s -d%s, %s rounds, %s: medians over the rounds\n' \
  "$WRK_THREADS" "$CONNECTIONS" "$DURATION" "$ROUNDS" "$placement"
printf '%-10s %12s %10s %10s %16s %s\n' server requests/s p50_ms p99_ms "islet / server" "(each round)"
# shellcheck disable=SC2086 # the lists are space-separated on purpose
islet_rps=$(median ${rps[islet]})
for name in "${servers[@]}"; do
  # shellcheck disable=SC2086
  median_rps=$(median ${rps[$name]})
  overall=$(ratio "$islet_rps" "$median_rps")
  # Per round: islet's rate in that round over this server's in that round.
  read -ra mine <<<"${rps[islet]}"
  read -ra theirs <<<"${rps[$name]}"
  rounds=""
  for r in "${!mine[@]}"; do
    rounds+=" $(ratio "${mine[$r]}" "${theirs[$r]}")"
  done
  # shellcheck disable=SC2086
  printf '%-10s %12.0f %10.3f %10.3f %16s %s\n' "$name" "$median_rps" "$(median ${p50[$name]})" \
    "$(median ${p99[$name]})" "$overall" "($rounds )"
done
