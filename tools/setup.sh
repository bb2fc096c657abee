#!/usr/bin/env bash
# Prepares a machine to build Islet. Idempotent; the README's first command and .ci/run both call it.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# The v8 crate would download its static library from GitHub; ../shared/v8 holds it instead.
if [ -d "$here/../shared/v8" ]; then
  bash "$here/../shared/v8/install.sh"
fi

# Debian packages: mold links the ~100 MB V8 binaries several times faster than GNU ld (tools/link.sh
# falls back to the default linker without it, so it only costs time); redis-server is what the fleet
# tests start (tests/deploy/fleet.rs), so the tests need it.
need=()
command -v mold >/dev/null 2>&1 || need+=(mold)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
# Headless Chromium and its WebDriver: the console's test drives a real browser (tests/observe).
command -v chromedriver >/dev/null 2>&1 || need+=(chromium chromium-driver)
if [ ${#need[@]} -gt 0 ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}") \
    >/dev/null 2>&1 || echo "setup: could not install ${need[*]}" >&2
fi
command -v mold >/dev/null 2>&1 || echo "setup: no mold; linking with the default linker" >&2
command -v redis-server >/dev/null 2>&1 || echo "setup: no redis-server; the fleet tests will fail" >&2
command -v chromedriver >/dev/null 2>&1 || echo "setup: no chromedriver; the console's test will fail" >&2

# The S3-compatible server the object storage tests start (tests/support/s3.rs): moto's, from PyPI,
# in a virtualenv of its own under ~/.cache (no system Python packages touched).
moto="${HOME}/.cache/islet-moto"
if [ ! -x "$moto/bin/moto_server" ] && command -v python3 >/dev/null 2>&1; then
  if ! python3 -m venv "$moto" >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv) >/dev/null 2>&1
    python3 -m venv "$moto" >/dev/null 2>&1 || true
  fi
  [ -x "$moto/bin/pip" ] && "$moto/bin/pip" install -q 'moto[server]' >/dev/null 2>&1 || true
fi
[ -x "$moto/bin/moto_server" ] || echo "setup: no moto_server; the S3 tests will fail (pip install 'moto[server]')" >&2
