//! Serving handlers over HTTP: each test starts a real `islet serve` on 127.0.0.1:0 and talks to it
//! over TCP. One binary, modules by concern (every test binary is linked separately).

#[path = "support/mod.rs"]
mod support;

#[path = "http/connections.rs"]
mod connections;
#[path = "http/errors.rs"]
mod errors;
#[path = "http/handler_api.rs"]
mod handler_api;
#[path = "http/protocols.rs"]
mod protocols;
#[path = "http/sandbox.rs"]
mod sandbox;
#[path = "http/services.rs"]
mod services;
#[path = "http/shutdown.rs"]
mod shutdown;
#[path = "http/streaming.rs"]
mod streaming;
#[path = "http/typescript.rs"]
mod typescript;
