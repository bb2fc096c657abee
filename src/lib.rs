//! Islet: a multi-tenant edge function runtime. Tenants' Workers-style JavaScript handlers
//! (`export default { fetch(request, env, ctx) }`) run in V8 isolates restored from a startup
//! snapshot, served over HTTP/1.1, HTTP/2 and TLS by one process.
//!
//! # Layout
//! Data flows one way: socket → router → isolate pool → isolate → handler → response.
//!
//! - [`server`]: the HTTP front (hyper, rustls), routing by host or path, graceful shutdown, and
//!   closing connections idle (or receiving a request head) past their timeouts.
//! - [`pool`]: isolate threads, each with its own current-thread runtime, and request placement.
//! - [`isolate`]: one V8 isolate: snapshot, module loader, handler dispatch, and the
//!   `islet_runtime` extension (`isolate::ext`) whose ops `runtime-js/` calls.
//! - [`limits`]: per-request CPU, memory and wall-clock limits (the CPU watchdog, the accounting
//!   ArrayBuffer allocator, the stop reasons) and the outbound fetch policy.
//! - [`registry`]: functions (code, version, variables, limits, routes), bundles, TypeScript
//!   stripping, and the stores deployed versions live in.
//! - [`events`]: queues (SQLite on one node, Redis streams on a fleet), their consumers and cron
//!   schedules, delivered to the `queue` and `scheduled` handlers as invocations.
//! - [`objects`]: buckets (files and the node's database on one node, S3-compatible storage on a
//!   fleet) and the notifications their writes send through the queues.
//! - [`kv`]: KV namespaces (a table of the node's database on one node, Redis on a fleet),
//!   strongly consistent, with atomic commits.
//! - [`bindings`]: what bucket, images and service bindings reach on the node (image decoding and
//!   resizing run off the isolate threads; calls of other functions as invocations of their own).
//! - [`config`]: the deploy manifest (`islet.toml`), parsed and validated in one place.
//! - [`admin`]: the deploy and control API (bearer-token auth), deployments over a store (the data
//!   directory, or Redis for a fleet), and the client the `islet deploy` family of commands uses.
//! - [`dev`]: `islet dev` (the project's files watched, its functions reloaded through the
//!   registry swap, readable logs) and `islet init`'s templates.
//! - [`error`]: error types, and the JSON every client-visible error takes.
//! - [`bench`]: `islet bench`, cold and warm starts measured through the real server, and
//!   `islet bench-queues`.
//!
//! `runtime-js/` is our JavaScript edge layer (globals, console, dispatch), baked into the snapshot
//! by `build.rs` together with Deno's Web API extensions.

pub mod admin;
pub mod bench;
pub mod bindings;
pub mod config;
pub mod dev;
pub mod error;
pub mod events;
pub mod isolate;
pub mod kv;
pub mod limits;
pub mod logs;
pub mod metrics;
pub mod objects;
pub mod pool;
pub mod registry;
pub mod server;
pub mod usage;
