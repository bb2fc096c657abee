//! Observing a live node: `/metrics` parsed as Prometheus text and moved by exactly what a known
//! sequence of requests caused, the log rings followed through the admin API, usage and its cost,
//! and the web console in headless Chromium.

#[path = "support/mod.rs"]
mod support;

#[path = "observe/metrics.rs"]
mod metrics;

#[path = "observe/logs.rs"]
mod logs;

#[path = "observe/usage.rs"]
mod usage;

#[path = "observe/console.rs"]
mod console;
