//! What handlers cannot reach: code generation from strings, private addresses through fetch()
//! (directly, by name, or by redirect), more fetches than allowed, bodies larger than allowed.

#[path = "support/mod.rs"]
mod support;

#[path = "limits/isolation.rs"]
mod isolation;
