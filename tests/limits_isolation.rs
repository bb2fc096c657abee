//! What handlers cannot reach: code generation from strings, private addresses through fetch()
//! (directly, by name, or by redirect), more fetches than allowed, bodies larger than allowed; and
//! the ways tenant work used to escape the limits (`escapes`).

#[path = "support/mod.rs"]
mod support;

#[path = "limits/isolation.rs"]
mod isolation;

#[path = "limits/escapes.rs"]
mod escapes;
