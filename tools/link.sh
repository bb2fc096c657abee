#!/usr/bin/env sh
# Linker driver for cargo (see .cargo/config.toml): V8 makes every binary ~100 MB, which mold links
# GNU ld. Falls back to the system default when mold is not installed, so a fresh machine still builds.
if command -v mold >/dev/null 2>&1; then
  exec cc -fuse-ld=mold "$@"
fi
exec cc "$@"
