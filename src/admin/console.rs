//! The web console: one page and one script, embedded in the binary (no build step), served by
//! the admin listener at `/`. They hold no data: the script asks the admin API for everything,
//! with the token the user gives it (kept in the tab's session storage), so a deploy token's
//! console shows its namespace only.
//!
//! This module only serves the files; it never reads node state.

use super::{full, Reply};

const PAGE: &str = include_str!("console/index.html");
const SCRIPT: &str = include_str!("console/console.js");

/// The asset at `path`, if the console has one there.
pub(super) fn asset(path: &str) -> Option<Reply> {
  let (body, content_type) = match path {
    "/" | "/index.html" => (PAGE, "text/html; charset=utf-8"),
    "/console.js" => (SCRIPT, "text/javascript; charset=utf-8"),
    _ => return None,
  };
  let mut response = http::Response::new(full(body));
  let headers = response.headers_mut();
  headers.insert(
    http::header::CONTENT_TYPE,
    http::HeaderValue::from_static(content_type),
  );
  // Only its own script, no framing, no referrer (the token is in a fragment, never sent).
  headers.insert(
    http::header::CONTENT_SECURITY_POLICY,
    http::HeaderValue::from_static(
      "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    ),
  );
  headers.insert(
    http::header::X_FRAME_OPTIONS,
    http::HeaderValue::from_static("DENY"),
  );
  headers.insert(
    http::header::REFERRER_POLICY,
    http::HeaderValue::from_static("no-referrer"),
  );
  headers.insert(
    http::header::CACHE_CONTROL,
    http::HeaderValue::from_static("no-store"),
  );
  Some(response)
}
