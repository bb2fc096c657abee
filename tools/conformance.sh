#!/usr/bin/env bash
# Runs the Web platform conformance suite (tests/conformance/) on Islet, `deno serve` and workerd,
# the same files on each, and prints the pass count per area for each runtime, then every case
# Islet fails that both peers pass (what Islet should fix), and every case where Islet's result
# disagrees with tests/conformance/expectations.json.
#
# Usage: tools/conformance.sh   (ISLET=path/to/islet: that build instead of `cargo build`;
#                                OUT=dir: keep each runtime's answers there as JSON)
# Needs: npm (installs deno and workerd from the npm registry, @deno/linux-x64-glibc and
# @cloudflare/workerd-linux-64, into a scratch folder), curl and python3.
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
out=${OUT:-$work/out}
mkdir -p "$out"

echo "installing deno and workerd from npm..." >&2
npm install --silent --no-save --prefix "$work/npm" @deno/linux-x64-glibc @cloudflare/workerd-linux-64 >&2
deno="$work/npm/node_modules/@deno/linux-x64-glibc/deno"
workerd="$work/npm/node_modules/@cloudflare/workerd-linux-64/bin/workerd"
if [ -n "${ISLET:-}" ]; then
  islet="$ISLET"
else
  echo "building islet..." >&2
  cargo build --quiet >&2
  islet="${CARGO_TARGET_DIR:-target}/debug/islet"
fi

suite=tests/conformance
# workerd's first module is the worker's entry.
modules='(name = "index.js", esModule = embed "index.js"),'
for f in "$suite"/*.js; do
  cp "$f" "$work/"
  name=$(basename "$f")
  [ "$name" = index.js ] || modules="$modules (name = \"$name\", esModule = embed \"$name\"),"
done
cat > "$work/workerd.capnp" <<CAPNP
using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [ (name = "conformance", worker = .conformance) ],
  sockets = [ (name = "http", address = "127.0.0.1:18093", http = (), service = "conformance") ],
);
const conformance :Workerd.Worker = (
  modules = [ $modules ],
  compatibilityDate = "2025-09-01",
  compatibilityFlags = ["nodejs_compat"],
);
CAPNP

"$islet" serve "$suite/islet.toml" --listen 127.0.0.1:18091 --threads 1 >"$work/islet.log" 2>&1 &
pids+=($!)
"$deno" serve --quiet --allow-net --port 18092 "$suite/index.js" >"$work/deno.log" 2>&1 &
pids+=($!)
"$workerd" serve "$work/workerd.capnp" >"$work/workerd.log" 2>&1 &
pids+=($!)

declare -A urls=([islet]=http://127.0.0.1:18091/conformance [deno]=http://127.0.0.1:18092/conformance [workerd]=http://127.0.0.1:18093/conformance)
for runtime in islet deno workerd; do
  for _ in $(seq 1 100); do curl -sf "${urls[$runtime]}/areas" >/dev/null 2>&1 && break; sleep 0.2; done
  curl -sf "${urls[$runtime]}/areas" >"$out/$runtime-areas.json" || { echo "$runtime never answered:" >&2; cat "$work/$runtime.log" >&2; exit 1; }
done

for area in $(python3 -c 'import json,sys; print(" ".join(json.load(open(sys.argv[1]))))' "$out/islet-areas.json"); do
  for runtime in islet deno workerd; do
    curl -s -H "x-case: A" "${urls[$runtime]}/$area?q=1" >"$out/$runtime-$area.json" || true
  done
done

python3 - "$out" "$suite/expectations.json" <<'PY'
import json, os, sys
out, expectations_path = sys.argv[1], sys.argv[2]
runtimes = ["islet", "deno", "workerd"]
areas = json.load(open(os.path.join(out, "islet-areas.json")))
expected = json.load(open(expectations_path))["fails"]

def load(runtime, area):
    try:
        return {c["case"]: c for c in json.load(open(os.path.join(out, f"{runtime}-{area}.json")))["cases"]}
    except Exception:
        return {}

totals = {r: 0 for r in runtimes}
count = 0
fix, unexpected = [], []
print(f"{'area':<18}" + "".join(f"{r:>10}" for r in runtimes) + f"{'cases':>8}")
for area in areas:
    results = {r: load(r, area) for r in runtimes}
    names = list(results["islet"].keys())
    passes = {r: sum(1 for n in names if results[r].get(n, {}).get("pass")) for r in runtimes}
    for r in runtimes:
        totals[r] += passes[r]
    count += len(names)
    print(f"{area:<18}" + "".join(f"{passes[r]:>10}" for r in runtimes) + f"{len(names):>8}")
    for n in names:
        i = results["islet"][n]
        key = f"{area}: {n}"
        if not i["pass"] and all(results[r].get(n, {}).get("pass") for r in ("deno", "workerd")):
            fix.append(f"{key}\n    islet: {i.get('error')}")
        if (not i["pass"]) != (key in expected):
            unexpected.append(f"{key}: islet {'fails' if not i['pass'] else 'passes'}" + (f" ({i.get('error')})" if not i["pass"] else ""))
print(f"{'total':<18}" + "".join(f"{totals[r]:>10}" for r in runtimes) + f"{count:>8}")
print()
print(f"cases Islet fails and both peers pass: {len(fix)}")
for line in fix:
    print("  " + line)
print(f"cases that disagree with {expectations_path}: {len(unexpected)}")
for line in unexpected:
    print("  " + line)
print()
for r in ("deno", "workerd"):
    failed = []
    for area in areas:
        for n, c in load(r, area).items():
            if not c["pass"]:
                failed.append(f"{area}: {n}\n      {c.get('error')}")
    print(f"{r} fails {len(failed)}:")
    for line in failed:
        print("  " + line)
PY
