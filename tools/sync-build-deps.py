#!/usr/bin/env python3
"""Makes [build-dependencies] in Cargo.toml an exact copy of [dependencies].

build.rs compiles src/isolate/ext against the deno crates to bake the snapshot. Cargo shares the
compiled deno and V8 crates between the build script and the library only when both dependency
sets resolve to the same features, so the two lists must stay identical. Run after editing
[dependencies]; `cargo test` does not catch a drift, it only builds everything twice.
"""
import pathlib
import re

path = pathlib.Path(__file__).resolve().parent.parent / "Cargo.toml"
text = path.read_text()
deps = re.search(r"^\[dependencies\]\n(.*?)(?=^\[)", text, re.S | re.M).group(1)
header = (
    "[build-dependencies]\n"
    "# An exact copy of [dependencies], kept so by tools/sync-build-deps.py: build.rs compiles\n"
    "# src/isolate/ext to bake the snapshot, and identical features let cargo build the deno and V8\n"
    "# crates once for both.\n"
)
text = re.sub(r"^\[build-dependencies\]\n.*?(?=^\[)", lambda _: header + deps, text, flags=re.S | re.M)
path.write_text(text)
