//! The isolate pool: cold and warm starts, one function per isolate, eviction, admission, and a
//! thousand functions on one node, and `islet bench`. Each test starts a real `islet serve` on 127.0.0.1:0.

#[path = "support/mod.rs"]
mod support;

#[path = "pool/admission.rs"]
mod admission;
#[path = "pool/bench_cli.rs"]
mod bench_cli;
#[path = "pool/cache.rs"]
mod cache;
#[path = "pool/provision.rs"]
mod provision;
#[path = "pool/starts.rs"]
mod starts;
