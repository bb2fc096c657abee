//! The Web platform as handlers see it: errors raised by Deno's Rust ops reach JavaScript as the
//! classes the ops name, and the conformance suite (tests/conformance/) passes every case it passed
//! before, on a live node. `tools/conformance.sh` runs the same suite on `deno serve` and workerd.

#[path = "support/mod.rs"]
mod support;

#[path = "web/conformance.rs"]
mod conformance;
#[path = "web/errors.rs"]
mod errors;
