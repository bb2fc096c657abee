# Shared by the bench scripts: a scratch folder and the processes to stop on exit, wrk, and the
# release build of islet. Source it from a script that has `set -euo pipefail` and has cd'd to the
# repository root.

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

command -v wrk >/dev/null || { echo "$(basename "$0"): wrk is needed (apt-get install wrk)" >&2; exit 1; }

# Builds islet (release) and sets $islet to the binary; ISLET=path uses that binary instead (to
# compare two builds, e.g. before and after a change, in the same conditions).
build_islet() {
  if [ -n "${ISLET:-}" ]; then
    islet="$ISLET"
    return
  fi
  echo "building islet (release)…" >&2
  cargo build --release --quiet >&2
  islet="${CARGO_TARGET_DIR:-target}/release/islet"
}
