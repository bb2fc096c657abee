//! The Web platform as handlers see it: errors raised by Deno's Rust ops reach JavaScript as the
//! classes the ops name.

#[path = "support/mod.rs"]
mod support;

#[path = "web/errors.rs"]
mod errors;
