#!/usr/bin/env bash
# Prepares a machine to build Islet. Idempotent; the README's first command and .ci/run both call it.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# The v8 crate would download its static library from GitHub; ../shared/v8 holds it instead.
if [ -d "$here/../shared/v8" ]; then
  bash "$here/../shared/v8/install.sh"
fi

# mold links the ~100 MB V8 binaries several times faster than GNU ld (tools/link.sh falls back to
# the default linker without it). Best effort: a missing mold only costs time.
if ! command -v mold >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mold) >/dev/null 2>&1 \
    || echo "setup: mold not installed; linking with the default linker"
fi
