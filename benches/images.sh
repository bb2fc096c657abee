#!/usr/bin/env bash
# The photo pipeline beside its AWS anchor, on the same machine and the same photo: sharp (npm,
# libvips) makes the three thumbnails (100/300/500 px, JPEG) of a 12-megapixel JPEG on one core;
# `islet bench-images` makes them natively on one core, runs the `thumbnail` example's invocation,
# and measures uploads → thumbnails per second on the node. ROUNDS rounds, alternated; medians.
#
# Usage: benches/images.sh   (ROUNDS=5; PHOTO=path to use your own JPEG; ISLET=path to use a build)
# Target (issue: object storage and images): Islet's thumbnail invocation ≤ 1.0× sharp per core.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-5}
# shellcheck source=benches/common.sh
source benches/common.sh
build_islet

photo="${PHOTO:-$work/photo.jpg}"
[ -n "${PHOTO:-}" ] || "$islet" bench-images --write-photo "$photo"

# sharp, installed once into a cache folder (npm's registry is the only network it needs).
peer="${HOME}/.cache/islet-bench-sharp"
if [ ! -d "$peer/node_modules/sharp" ]; then
  mkdir -p "$peer"
  (cd "$peer" && npm init -y >/dev/null && npm install --silent sharp@0.35 >&2)
fi
cp benches/images/sharp.mjs "$peer/sharp.mjs"

for round in $(seq 1 "$ROUNDS"); do
  echo "round $round of $ROUNDS…" >&2
  taskset -c 0 node "$peer/sharp.mjs" "$photo" 15 >>"$work/sharp.jsonl"
  "$islet" bench-images --photo "$photo" --json 2>/dev/null | tail -1 >>"$work/islet.jsonl"
done

python3 - "$work/sharp.jsonl" "$work/islet.jsonl" <<'PY'
import json, statistics, sys
sharp = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
islet = [json.loads(l) for l in open(sys.argv[2]) if l.strip()]
s = [r["median_ms"] for r in sharp]
n = [r["native_ms"] for r in islet]
i = [r["invocation_ms"] for r in islet]
rate = [r["images_per_second"] for r in islet]
p = islet[0]["photo"]
print(f"three thumbnails of a {p['width']}x{p['height']} JPEG ({p['bytes'] >> 10} KiB), {len(islet)} rounds (medians; rounds in brackets)")
print(f"  sharp {sharp[0]['sharp']} (libvips {sharp[0]['vips']}), one core  {statistics.median(s):7.1f} ms  ({' '.join(f'{x:.1f}' for x in s)})")
print(f"  islet native, one core              {statistics.median(n):7.1f} ms  ({' '.join(f'{x:.1f}' for x in n)})")
print(f"  islet thumbnail invocation          {statistics.median(i):7.1f} ms  ({' '.join(f'{x:.1f}' for x in i)})")
print(f"  invocation / sharp                  {statistics.median(i) / statistics.median(s):7.2f}x")
print(f"  upload -> thumbnails on the node    {statistics.median(rate):7.1f} images/s ({islet[0]['threads']} isolate threads)")
PY
