//! The `islet` command line: parse arguments, build the node, run it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use islet::admin::commands;
use islet::admin::{AdminServer, Deployments};
use islet::bindings::services::ServiceCalls;
use islet::bindings::NodeBindings;
use islet::error::NodeError;
use islet::events::{EventStore, Events, EventsConfig};
use islet::isolate::IsolateConfig;
use islet::kv::{Kv, KvStore};
use islet::limits::outbound::OutboundPolicy;
use islet::limits::{Ceilings, Limits};
use islet::objects::{Objects, ObjectsConfig, S3Config};
use islet::pool::PoolConfig;
use islet::registry::store::Store;
use islet::registry::Registry;
use islet::server::{AdmissionConfig, ConnectionTimeouts, Server, ServerConfig};

#[derive(Parser)]
#[command(name = "islet", version, about = "A multi-tenant edge function runtime")]
struct Cli {
  /// Log line format on stderr [default: text; `islet dev`: pretty].
  #[arg(long, global = true, value_enum, env = "ISLET_LOG_FORMAT")]
  log_format: Option<LogFormat>,
  #[command(subcommand)]
  command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
  Text,
  Json,
  /// One short line per event for a terminal: time, function, request id, level, message.
  Pretty,
}

#[derive(Subcommand)]
enum Command {
  /// Serve functions: those of a directory (<DIR>/<name>/index.js, <DIR>/<name>.js) or a manifest
  /// (islet.toml), and those deployed to the node's data directory.
  Serve(Box<ServeArgs>),
  /// Serve a project while developing it: like `serve`, with its data in <project>/.islet, the
  /// admin API on (token `dev` unless given), and each function reloaded when its files change.
  /// SOURCE is a manifest, a directory of functions, or a folder holding an islet.toml [default: .].
  Dev(Box<ServeArgs>),
  /// Create a project folder from a template, ready for `islet dev` and `islet deploy`.
  Init {
    /// The project's (and its function's) name: a lowercase DNS label.
    name: String,
    /// fetch: an HTTP handler; queue: a producer and its consumer; cron: a schedule with state in
    /// KV; thumbnail: uploads to a bucket and thumbnails made by its events.
    #[arg(long, default_value = "fetch", value_parser = ["fetch", "queue", "cron", "thumbnail"])]
    template: String,
    /// Where to create the folder.
    #[arg(long, default_value = ".")]
    dir: PathBuf,
  },
  /// Buckets: list and read objects.
  Buckets {
    #[command(subcommand)]
    action: BucketAction,
  },
  /// Deploy every function of a manifest to a node, and activate them.
  Deploy {
    /// The manifest.
    #[arg(long, default_value = "islet.toml")]
    manifest: PathBuf,
    #[command(flatten)]
    node: NodeArgs,
  },
  /// List the functions deployed to a node.
  Functions {
    #[command(flatten)]
    node: NodeArgs,
  },
  /// List a function's versions, oldest first.
  Versions {
    name: String,
    #[command(flatten)]
    node: NodeArgs,
  },
  /// Make an earlier (or later) version of a function the one that serves.
  Rollback {
    name: String,
    version: String,
    #[command(flatten)]
    node: NodeArgs,
  },
  /// Stop serving a function and forget its versions.
  Delete {
    name: String,
    #[command(flatten)]
    node: NodeArgs,
  },
  /// Every queue's depth, messages in flight, oldest age and dead-letter depth; or send a message,
  /// or replay a dead-letter queue.
  #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
  Queues {
    #[command(subcommand)]
    action: Option<QueueAction>,
    #[command(flatten)]
    node: NodeArgs,
  },
  /// KV namespaces: read, write, delete and list keys.
  Kv {
    #[command(subcommand)]
    action: KvAction,
  },
  /// What functions used, and what it would cost: requests, CPU, GB-seconds, egress.
  Usage {
    /// Only this function.
    #[arg(long)]
    function: Option<String>,
    /// The window: 90s, 30m, 24h, 7d.
    #[arg(long, default_value = "24h")]
    since: String,
    /// aws-lambda, cloudflare-workers, or a TOML file of your own prices.
    #[arg(long, default_value = "aws-lambda")]
    pricing: String,
    #[command(flatten)]
    node: NodeArgs,
  },
  /// A function's log: its console lines and a line per invocation (outcome, CPU, cold or warm).
  Logs {
    function: String,
    /// Keep printing lines as they come (until interrupted).
    #[arg(long, short = 'f')]
    follow: bool,
    /// How many recent lines to print first.
    #[arg(long, default_value_t = 100)]
    lines: usize,
    #[command(flatten)]
    node: NodeArgs,
  },
  /// Deploy tokens (with the node's admin token): make one for a tenant's namespace, list them,
  /// revoke one.
  Tokens {
    #[command(subcommand)]
    action: TokenAction,
  },
  /// Cron schedules: fire one by hand.
  Cron {
    #[command(subcommand)]
    action: CronAction,
  },
  /// Measure cold starts and warm requests of a handler through the real HTTP server.
  Bench(BenchArgs),
  /// Measure queues end to end on one node with the embedded store: messages per second at batch
  /// size 100, and the latency from send() to the consumer being called when idle.
  BenchQueues(BenchQueuesArgs),
  /// Measure the photo pipeline: three thumbnails of a 12-megapixel JPEG natively on one core,
  /// the `thumbnail` example's invocation, and uploads → thumbnails per second on one node.
  BenchImages(BenchImagesArgs),
  /// A bare hyper server answering hello: the ceiling in benches/peers.sh.
  #[command(hide = true)]
  HyperCeiling {
    #[arg(long, default_value = "127.0.0.1:8081")]
    listen: SocketAddr,
    /// Serving threads [default: the number of cores].
    #[arg(long)]
    threads: Option<usize>,
  },
}

#[derive(Subcommand)]
enum QueueAction {
  /// Send one message to a queue.
  Send {
    queue: String,
    /// The body: JSON text (the default), or any text with --content-type text.
    body: String,
    #[arg(long, default_value = "json", value_parser = ["json", "text"])]
    content_type: String,
    /// Seconds before it may be delivered.
    #[arg(long, default_value_t = 0)]
    delay_seconds: u64,
    #[command(flatten)]
    node: NodeArgs,
  },
  /// Move the messages of a queue's dead-letter queue back into it.
  ReplayDlq {
    queue: String,
    #[command(flatten)]
    node: NodeArgs,
  },
}

#[derive(Subcommand)]
enum KvAction {
  /// Print a key's value (with --json: its metadata, version and expiration too).
  Get {
    namespace: String,
    key: String,
    #[command(flatten)]
    node: NodeArgs,
  },
  /// Write a key.
  Put {
    namespace: String,
    key: String,
    value: String,
    /// Seconds until the key expires.
    #[arg(long)]
    ttl: Option<u64>,
    /// Metadata to store with the key, as JSON.
    #[arg(long)]
    metadata: Option<String>,
    #[command(flatten)]
    node: NodeArgs,
  },
  /// Delete a key.
  Delete {
    namespace: String,
    key: String,
    #[command(flatten)]
    node: NodeArgs,
  },
  /// List keys in byte order.
  List {
    namespace: String,
    #[arg(long, default_value = "")]
    prefix: String,
    #[arg(long)]
    limit: Option<u32>,
    /// Where the previous page ended.
    #[arg(long)]
    cursor: Option<String>,
    #[command(flatten)]
    node: NodeArgs,
  },
}

#[derive(Subcommand)]
enum BucketAction {
  /// List objects in key order (a page of at most --limit).
  List {
    bucket: String,
    #[arg(long, default_value = "")]
    prefix: String,
    #[arg(long)]
    limit: Option<u32>,
    /// Where the previous page ended.
    #[arg(long)]
    cursor: Option<String>,
    #[command(flatten)]
    node: NodeArgs,
  },
  /// Print an object's body (text), or write it to --output.
  Get {
    bucket: String,
    key: String,
    /// Write the body to this file instead of stdout.
    #[arg(long)]
    output: Option<PathBuf>,
    #[command(flatten)]
    node: NodeArgs,
  },
}

#[derive(Subcommand)]
enum TokenAction {
  /// Make a deploy token for one namespace and print it (shown once; the node keeps its hash).
  Create {
    /// Whom it is for (shown in `islet tokens list`).
    label: String,
    /// Functions, KV namespaces, queues and buckets whose names start with this (say `acme-`).
    #[arg(long)]
    prefix: String,
    /// A domain whose hosts (it and its subdomains) the namespace's routes may claim; repeatable.
    #[arg(long = "host")]
    hosts: Vec<String>,
    /// A path prefix (`/acme-site/`) the namespace's host-less routes may claim; repeatable.
    #[arg(long = "path")]
    paths: Vec<String>,
    #[command(flatten)]
    node: NodeArgs,
  },
  /// List the deploy tokens: id, label, namespace, routes.
  List {
    #[command(flatten)]
    node: NodeArgs,
  },
  /// Revoke a deploy token by id: it stops working at once, on every node of a fleet.
  Revoke {
    id: String,
    #[command(flatten)]
    node: NodeArgs,
  },
}

#[derive(Subcommand)]
enum CronAction {
  /// Run a function's scheduled handler now.
  Trigger {
    function: String,
    /// The schedule to pass as controller.cron [default: the function's first].
    #[arg(long)]
    cron: Option<String>,
    #[command(flatten)]
    node: NodeArgs,
  },
}

#[derive(clap::Args)]
struct BenchImagesArgs {
  /// A JPEG to use [default: a synthetic 4000×3000 photo at quality 85].
  #[arg(long)]
  photo: Option<PathBuf>,
  /// Rounds of the native figure (and up to 20 single invocations).
  #[arg(long, default_value_t = 15)]
  rounds: usize,
  /// Photos uploaded for the throughput figure.
  #[arg(long, default_value_t = 40)]
  uploads: usize,
  /// Print the figures as JSON.
  #[arg(long)]
  json: bool,
  /// Write the synthetic photo to this file and exit (for peers to use the same one).
  #[arg(long)]
  write_photo: Option<PathBuf>,
}

#[derive(clap::Args)]
struct BenchQueuesArgs {
  /// Messages to send through the queue for the throughput figure.
  #[arg(long, default_value_t = 100_000)]
  messages: usize,
  /// Idle send-to-consumer latencies to measure.
  #[arg(long, default_value_t = 300)]
  samples: usize,
  /// Print the figures as JSON.
  #[arg(long)]
  json: bool,
}

#[derive(clap::Args)]
struct BenchArgs {
  /// The handler: a folder with an index.js, or a .js file.
  #[arg(default_value = "examples/hello")]
  handler: PathBuf,
  /// Cold starts to measure (each on a fresh version of the handler).
  #[arg(long, default_value_t = 300)]
  cold: usize,
  /// Cold starts per second; 0 sends them back to back (a burst, which queues behind the pool
  /// restoring isolates).
  #[arg(long, default_value_t = 50.0)]
  cold_rate: f64,
  /// Warm requests to measure.
  #[arg(long, default_value_t = 50_000)]
  requests: usize,
  /// Warm requests in flight at once.
  #[arg(long, default_value_t = 32)]
  concurrency: usize,
  /// Isolate threads [default: the number of cores].
  #[arg(long)]
  threads: Option<usize>,
  /// Write a chart of the latency distributions: .svg, or .html for a page that embeds it.
  #[arg(long)]
  out: Option<PathBuf>,
  /// Print the figures as JSON instead of a table (no progress bar).
  #[arg(long)]
  json: bool,
}

/// Which node a control command talks to. Exit codes: 0 done, 1 the node refused or could not be
/// reached, 2 the local input (manifest, modules, arguments) is wrong.
#[derive(clap::Args)]
struct NodeArgs {
  /// The node's admin API.
  #[arg(long, env = "ISLET_NODE", default_value = "http://127.0.0.1:9900")]
  node: String,
  /// The node's admin token.
  #[arg(long, env = "ISLET_ADMIN_TOKEN", hide_env_values = true)]
  token: String,
  /// Print JSON instead of text (no progress bar).
  #[arg(long)]
  json: bool,
}

#[derive(clap::Args)]
struct ServeArgs {
  /// A directory of functions, or a manifest (islet.toml). Optional with --data.
  source: Option<PathBuf>,
  /// The data directory of deployed functions (the embedded store, the default with an admin
  /// token: ./islet-data).
  #[arg(long, env = "ISLET_DATA")]
  data: Option<PathBuf>,
  /// Share deployed functions with a fleet of nodes through Redis (redis://host:port) instead of
  /// a data directory.
  #[arg(long, env = "ISLET_STORE", conflicts_with = "data")]
  store: Option<String>,
  /// Address of the admin API; it runs when an admin token is set.
  #[arg(long, default_value = "127.0.0.1:9900", env = "ISLET_ADMIN_LISTEN")]
  admin_listen: SocketAddr,
  /// The admin API's bearer token.
  #[arg(long, env = "ISLET_ADMIN_TOKEN", hide_env_values = true)]
  admin_token: Option<String>,
  /// Largest bundle (code and variables) a deploy may upload, in MiB.
  #[arg(long, default_value_t = 32)]
  max_bundle_mb: usize,
  /// The bearer token `GET /metrics` (on the admin listener) needs; without it, scrapes need none.
  #[arg(long, env = "ISLET_METRICS_TOKEN", hide_env_values = true)]
  metrics_token: Option<String>,
  /// Keep no invocation records (metrics, logs, usage): what they cost the warm path, measured by
  /// benches/peers.sh against the same build without them.
  #[arg(long, hide = true)]
  no_invocation_records: bool,
  /// Days the per-minute usage records are kept.
  #[arg(long, default_value_t = 30)]
  usage_retention_days: u64,
  /// Functions one deploy token's namespace may hold.
  #[arg(long, default_value_t = 100)]
  max_functions_per_token: usize,
  /// Address to listen on; port 0 picks a free port (the bound address is printed on stdout).
  #[arg(long, default_value = "127.0.0.1:8080", env = "ISLET_LISTEN")]
  listen: SocketAddr,
  /// Isolate threads [default: the number of cores].
  #[arg(long)]
  threads: Option<usize>,
  /// PEM certificate chain: serve HTTPS (with HTTP/2 by ALPN). Needs --tls-key.
  #[arg(long, requires = "tls_key")]
  tls_cert: Option<PathBuf>,
  /// PEM private key for --tls-cert.
  #[arg(long, requires = "tls_cert")]
  tls_key: Option<PathBuf>,
  /// A domain under which <name>.<domain> routes to function <name> (repeatable); <name>.localhost
  /// always does.
  #[arg(long = "base-domain")]
  base_domains: Vec<String>,
  /// Another host name of the node's own on which /<name>/ paths and host-less routes serve
  /// (repeatable); they always do on its IP addresses, localhost and base domains, and never on
  /// other hosts, which belong to the routes that name them.
  #[arg(long = "path-host")]
  path_hosts: Vec<String>,
  /// Seconds in-flight requests may take to finish after SIGINT/SIGTERM.
  #[arg(long, default_value_t = 10)]
  shutdown_grace: u64,
  /// Seconds a connection with no request in flight may send and receive nothing before it is
  /// closed.
  #[arg(long, default_value_t = ConnectionTimeouts::default().idle.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
  idle_timeout: u64,
  /// Seconds a request head may take to arrive, from its first byte, before its connection is
  /// closed (a client that trickles headers in to hold connections open).
  #[arg(long, default_value_t = ConnectionTimeouts::default().head.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
  head_timeout: u64,
  /// Seconds a connection's writes may stay blocked (its client reads nothing, even mid-response)
  /// before it is closed and its response dropped.
  #[arg(long, default_value_t = ConnectionTimeouts::default().write.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
  write_timeout: u64,
  /// Connections open at once on the node; past it, new ones are closed as they are accepted.
  #[arg(long, default_value_t = ServerConfig::default().max_connections)]
  max_connections: usize,
  /// The largest queue message body send() accepts, in KiB.
  #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..=16384))]
  max_queue_message_kb: u64,
  /// Where buckets live: s3://BUCKET?endpoint=URL&region=R (credentials from AWS_ACCESS_KEY_ID and
  /// AWS_SECRET_ACCESS_KEY) [default: <data>/objects, with metadata in the node's database].
  #[arg(long, env = "ISLET_OBJECTS")]
  objects: Option<String>,
  #[command(flatten)]
  pool: PoolArgs,
  #[command(flatten)]
  limits: LimitArgs,
}

/// Default limits of every function (a function's limits.json overrides them), and where outbound
/// fetch() may go.
#[derive(clap::Args)]
struct LimitArgs {
  /// CPU time one request's JavaScript may use, in milliseconds.
  #[arg(long, default_value_t = Limits::default().cpu_ms)]
  cpu_ms: u64,
  /// Memory (V8 heap, ArrayBuffers, WebAssembly) one isolate may hold, in MiB.
  #[arg(long, default_value_t = Limits::default().memory_mb)]
  memory_mb: u64,
  /// Time a request may take from arrival to the end of its response body, in milliseconds.
  #[arg(long, default_value_t = Limits::default().wall_ms)]
  wall_ms: u64,
  /// Largest request body accepted, in bytes; larger ones get 413.
  #[arg(long, default_value_t = Limits::default().max_body_bytes)]
  max_body_bytes: u64,
  /// Outbound fetch() calls one request may make.
  #[arg(long, default_value_t = Limits::default().max_fetches)]
  max_fetches: u32,
  /// Allow eval() and new Function() in every function (off by default, as on Workers).
  #[arg(long)]
  allow_eval: bool,
  /// Let fetch() reach loopback, private and link-local addresses (a trusted network, or tests).
  #[arg(long)]
  allow_private_fetch: bool,
  /// A private address fetch() may reach all the same (repeatable), e.g. an internal API's.
  #[arg(long = "allow-fetch-to")]
  allow_fetch_to: Vec<std::net::IpAddr>,
  /// The most CPU a deployed function may give itself, in milliseconds per request.
  #[arg(long, default_value_t = Ceilings::default().cpu_ms)]
  max_cpu_ms: u64,
  /// The most memory a deployed function may give itself, in MiB.
  #[arg(long, default_value_t = Ceilings::default().memory_mb)]
  max_memory_mb: u64,
  /// The longest wall time a deployed function may give itself, in milliseconds.
  #[arg(long, default_value_t = Ceilings::default().wall_ms)]
  max_wall_ms: u64,
  /// The largest request body a deployed function may accept, in bytes.
  #[arg(long, default_value_t = Ceilings::default().max_body_bytes)]
  ceiling_max_body_bytes: u64,
  /// The most outbound fetches a deployed function may allow itself per request.
  #[arg(long, default_value_t = Ceilings::default().max_fetches)]
  ceiling_max_fetches: u32,
  /// Let deployed functions turn eval() and new Function() on for themselves (limits.allow_eval).
  #[arg(long)]
  allow_eval_in_deploys: bool,
  /// The most isolates a deployed function may keep loaded and never evicted (limits.min_isolates).
  #[arg(long, default_value_t = 2)]
  ceiling_min_isolates: u32,
}

impl LimitArgs {
  fn limits(&self) -> Result<Limits, NodeError> {
    let limits = Limits {
      cpu_ms: self.cpu_ms,
      memory_mb: self.memory_mb,
      wall_ms: self.wall_ms,
      max_body_bytes: self.max_body_bytes,
      max_fetches: self.max_fetches,
      allow_eval: self.allow_eval,
      min_isolates: 0,
      max_isolates: 0,
    };
    limits
      .validate()
      .map_err(|e| NodeError::Config(format!("--{}", e.replacen('_', "-", 1))))?;
    Ok(limits)
  }

  fn ceilings(&self) -> Ceilings {
    Ceilings {
      cpu_ms: self.max_cpu_ms,
      memory_mb: self.max_memory_mb,
      wall_ms: self.max_wall_ms,
      max_body_bytes: self.ceiling_max_body_bytes,
      max_fetches: self.ceiling_max_fetches,
      allow_eval: self.allow_eval_in_deploys,
      min_isolates: self.ceiling_min_isolates,
    }
  }

  fn outbound(&self) -> OutboundPolicy {
    OutboundPolicy {
      allow_private: self.allow_private_fetch,
      allowed_addresses: self.allow_fetch_to.clone(),
    }
  }
}

/// Isolate cache and admission bounds.
#[derive(clap::Args)]
struct PoolArgs {
  /// Let isolate threads move between CPUs. By default, with one thread per CPU, each is pinned to
  /// its CPU and serves the connections whose packets arrive there.
  #[arg(long)]
  no_pin_threads: bool,
  /// Blank isolates each thread keeps ready for cold starts, at least: more while cold starts come
  /// faster (as many as the busiest recent second's) and for the served functions not loaded yet,
  /// up to --max-warm-isolates.
  #[arg(long, default_value_t = 2)]
  warm_isolates: usize,
  /// The most blank isolates the node keeps ready, over all its threads (about 3 MiB each).
  #[arg(long, default_value_t = 320)]
  max_warm_isolates: usize,
  /// Loaded isolates on the node; the least recently used are evicted past it.
  #[arg(long, default_value_t = 4000)]
  max_isolates: usize,
  /// Total V8 heap of loaded isolates on the node, in MiB; evicts like --max-isolates.
  #[arg(long, default_value_t = 8192)]
  max_isolate_heap_mb: usize,
  /// Requests of one function running at once.
  #[arg(long, default_value_t = 256)]
  max_concurrency: usize,
  /// Requests of one function waiting for a turn; more are refused with 503 and Retry-After.
  #[arg(long, default_value_t = 1024)]
  max_queue: usize,
}

fn main() -> ExitCode {
  // Before any thread starts: deno_fetch would send every function's requests through a proxy
  // named in the environment, where the outbound policy sees only the proxy's address (and
  // deno_tls would log TLS keys to SSLKEYLOGFILE).
  for variable in islet::limits::outbound::STRIPPED_VARIABLES {
    std::env::remove_var(variable);
  }
  let cli = Cli::parse();
  let dev = matches!(cli.command, Command::Dev(_));
  init_logging(
    cli
      .log_format
      .unwrap_or(if dev { LogFormat::Pretty } else { LogFormat::Text }),
  );
  // Two TLS backends are in the tree (aws-lc-rs, which Islet and Deno use, and ring, which the S3
  // client's HTTP stack enables), so rustls cannot pick one by itself: the process uses aws-lc-rs.
  let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
  let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
    Ok(runtime) => runtime,
    Err(err) => {
      eprintln!("islet: cannot start the async runtime: {err}");
      return ExitCode::FAILURE;
    }
  };
  let control = |node: &NodeArgs| islet::admin::client::AdminClient::new(&node.node, &node.token);
  let answer = match &cli.command {
    Command::Deploy { manifest, node } => {
      Some(runtime.block_on(commands::deploy(manifest, &control(node), node.json)))
    }
    Command::Functions { node } => Some(runtime.block_on(commands::functions(&control(node), node.json))),
    Command::Versions { name, node } => {
      Some(runtime.block_on(commands::versions(&control(node), name, node.json)))
    }
    Command::Rollback { name, version, node } => {
      Some(runtime.block_on(commands::rollback(&control(node), name, version, node.json)))
    }
    Command::Delete { name, node } => {
      Some(runtime.block_on(commands::delete(&control(node), name, node.json)))
    }
    Command::Queues { action: None, node } => {
      Some(runtime.block_on(commands::queues(&control(node), node.json)))
    }
    Command::Queues {
      action:
        Some(QueueAction::Send {
          queue,
          body,
          content_type,
          delay_seconds,
          node,
        }),
      ..
    } => Some(runtime.block_on(commands::queue_send(
      &control(node),
      queue,
      body,
      content_type,
      *delay_seconds,
      node.json,
    ))),
    Command::Queues {
      action: Some(QueueAction::ReplayDlq { queue, node }),
      ..
    } => Some(runtime.block_on(commands::replay_dlq(&control(node), queue, node.json))),
    Command::Kv { action } => Some(runtime.block_on(kv_command(action))),
    Command::Buckets {
      action:
        BucketAction::List {
          bucket,
          prefix,
          limit,
          cursor,
          node,
        },
    } => Some(runtime.block_on(commands::bucket_list(
      &control(node),
      bucket,
      prefix,
      *limit,
      cursor.as_deref(),
      node.json,
    ))),
    Command::Buckets {
      action: BucketAction::Get {
        bucket,
        key,
        output,
        node,
      },
    } => Some(runtime.block_on(commands::bucket_get(
      &control(node),
      bucket,
      key,
      output.as_deref(),
    ))),
    Command::Tokens {
      action:
        TokenAction::Create {
          label,
          prefix,
          hosts,
          paths,
          node,
        },
    } => Some(runtime.block_on(commands::token_create(
      &control(node),
      label,
      prefix,
      hosts,
      paths,
      node.json,
    ))),
    Command::Usage {
      function,
      since,
      pricing,
      node,
    } => Some(runtime.block_on(commands::usage(
      &control(node),
      since,
      function.as_deref(),
      pricing,
      node.json,
    ))),
    Command::Logs {
      function,
      follow,
      lines,
      node,
    } => Some(runtime.block_on(async {
      if *follow {
        commands::follow_logs(&control(node), function, *lines, node.json).await
      } else {
        commands::logs(&control(node), function, *lines, node.json).await
      }
    })),
    Command::Tokens {
      action: TokenAction::List { node },
    } => Some(runtime.block_on(commands::token_list(&control(node), node.json))),
    Command::Tokens {
      action: TokenAction::Revoke { id, node },
    } => Some(runtime.block_on(commands::token_revoke(&control(node), id, node.json))),
    Command::Cron {
      action: CronAction::Trigger { function, cron, node },
    } => Some(runtime.block_on(commands::cron_trigger(
      &control(node),
      function,
      cron.as_deref(),
      node.json,
    ))),
    _ => None,
  };
  if let Some(answer) = answer {
    return match answer {
      Ok(out) => {
        print!("{out}");
        if !out.ends_with('\n') {
          println!();
        }
        ExitCode::SUCCESS
      }
      Err(err) => {
        eprintln!("islet: {err}");
        ExitCode::from(err.exit_code())
      }
    };
  }
  let result = match cli.command {
    Command::Serve(args) => runtime.block_on(serve(*args, false)),
    Command::Dev(args) => runtime.block_on(serve(*args, true)),
    Command::Init { name, template, dir } => match islet::dev::init(&dir, &name, &template) {
      Ok(root) => {
        println!(
          "created {} from the {template} template; next:\n  cd {} && islet dev\n(see its README.md for a request to try)",
          root.display(),
          root.display()
        );
        Ok(())
      }
      Err(e) => Err(NodeError::Config(e)),
    },
    Command::Bench(args) => runtime.block_on(bench(args)),
    Command::BenchImages(args) => match args.write_photo {
      Some(path) => std::fs::write(&path, islet::bench::images::synthetic_photo())
        .map_err(|e| NodeError::Config(format!("{}: {e}", path.display()))),
      None => runtime.block_on(islet::bench::images::run(
        args.photo,
        args.rounds,
        args.uploads,
        args.json,
      )),
    },
    Command::BenchQueues(args) => {
      runtime.block_on(islet::bench::queues::run(args.messages, args.samples, args.json))
    }
    Command::Deploy { .. }
    | Command::Functions { .. }
    | Command::Versions { .. }
    | Command::Rollback { .. }
    | Command::Delete { .. }
    | Command::Queues { .. }
    | Command::Kv { .. }
    | Command::Buckets { .. }
    | Command::Tokens { .. }
    | Command::Logs { .. }
    | Command::Usage { .. }
    | Command::Cron { .. } => unreachable!("answered above"),
    Command::HyperCeiling { listen, threads } => {
      let threads = threads.unwrap_or(PoolConfig::default().threads);
      runtime
        .block_on(islet::bench::ceiling::serve(listen, threads))
        .map_err(|source| NodeError::Io {
          path: listen.to_string(),
          source,
        })
    }
  };
  match result {
    Ok(()) => ExitCode::SUCCESS,
    Err(err) => {
      eprintln!("islet: {err}");
      ExitCode::FAILURE
    }
  }
}

async fn bench(args: BenchArgs) -> Result<(), NodeError> {
  let config = islet::bench::BenchConfig {
    handler: args.handler,
    cold_starts: args.cold.max(1),
    cold_rate: args.cold_rate.max(0.0),
    warm_requests: args.requests.max(1),
    concurrency: args.concurrency.max(1),
    pool: PoolConfig {
      threads: args.threads.unwrap_or(PoolConfig::default().threads),
      ..PoolConfig::default()
    },
  };
  let bar = indicatif::ProgressBar::new(0);
  if args.json {
    bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
  }
  bar.set_style(
    indicatif::ProgressStyle::with_template("{msg:>14} [{bar:40}] {pos}/{len}")
      .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
      .progress_chars("=> "),
  );
  let report = islet::bench::run(&config, &|phase, done, total| {
    bar.set_message(phase.to_string());
    bar.set_length(total as u64);
    bar.set_position(done as u64);
  })
  .await?;
  bar.finish_and_clear();
  if args.json {
    println!("{}", report.to_json());
  } else {
    print!("{}", report.to_table());
  }
  if let Some(out) = args.out {
    let svg = report.to_svg();
    let is_html = out.extension().is_some_and(|e| e == "html");
    let contents = if is_html {
      format!("<!doctype html><meta charset=utf-8><title>islet bench</title><body>{svg}</body>\n")
    } else {
      svg
    };
    std::fs::write(&out, contents).map_err(|source| NodeError::Io {
      path: out.display().to_string(),
      source,
    })?;
    if !args.json {
      println!("chart written to {}", out.display());
    }
  }
  Ok(())
}

/// `islet serve`, or with `dev` `islet dev`: the project's data in `<project>/.islet`, the admin
/// API on with the token `dev` unless one is given, the functions reloaded as their files change,
/// and `POST /__islet/scheduled` on the listener.
async fn serve(mut args: ServeArgs, dev: bool) -> Result<(), NodeError> {
  let limits = args.limits.limits()?;
  if dev {
    let source = islet::dev::project_source(args.source.take());
    if args.data.is_none() && args.store.is_none() {
      args.data = Some(islet::dev::project_root(&source).join(".islet"));
    }
    if args.admin_token.is_none() {
      // `dev` is a token everyone knows: only for an admin API no other machine can reach.
      if !args.admin_listen.ip().is_loopback() {
        return Err(NodeError::Config(format!(
          "islet dev: the admin API would listen on {}, which other machines can reach; give it a token of your own (--admin-token or ISLET_ADMIN_TOKEN)",
          args.admin_listen
        )));
      }
      args.admin_token = Some("dev".to_string());
    }
    args.source = Some(source);
  }
  let mut statics = match &args.source {
    None if args.data.is_none() && args.store.is_none() => {
      return Err(NodeError::Config(
        "nothing to serve: give a directory, a manifest, --data or --store".into(),
      ))
    }
    None => Registry::default(),
    Some(source) => {
      let loaded = islet::dev::load_source(source, &limits).map_err(NodeError::Config)?;
      for (name, error) in loaded.failed {
        // `islet serve` refuses to start without every function; `islet dev` starts without it.
        if !dev {
          return Err(NodeError::Config(error));
        }
        tracing::error!(target: "islet::dev", function = %name, "cannot load: {error}");
      }
      loaded.registry
    }
  };
  if !statics.is_empty() {
    let mut checker = islet::isolate::SyntaxChecker::new().map_err(NodeError::Config)?;
    statics.check_each(|function| checker.check(function));
  }
  let statics = registry_summary(statics, dev);
  let statics_served = statics.clone();
  let limits_for_reload = limits.clone();
  let max_bundle_bytes = args.max_bundle_mb << 20;
  // The data directory is the default store once there is an admin API to deploy through.
  let data = (args.data.clone()).or_else(|| args.admin_token.as_ref().map(|_| PathBuf::from("islet-data")));
  let store = match (&args.store, data) {
    (Some(url), _) => Some(Store::redis(url).map_err(|e| NodeError::Config(format!("--store {url}: {e}")))?),
    (None, Some(data)) => Some(
      Store::dir(&data).map_err(|e| NodeError::Config(format!("data directory {}: {e}", data.display())))?,
    ),
    (None, None) => None,
  };
  let deployments = store
    .map(|store| {
      Deployments::open(
        store,
        limits.clone(),
        args.limits.ceilings(),
        args.base_domains.clone(),
        statics.clone(),
        max_bundle_bytes,
      )
    })
    .transpose()
    .map_err(|e| NodeError::Config(format!("deployed functions: {e}")))?
    .map(Arc::new);
  if let Some(deployments) = &deployments {
    deployments.follow_fleet();
  }
  let live = match &deployments {
    Some(deployments) => deployments.live(),
    None => Arc::new(arc_swap::ArcSwap::from_pointee(statics)),
  };
  // Queues live beside the deployed functions: in the data directory (./islet-data by default),
  // or in the fleet's Redis.
  let event_store = match (&args.store, &args.data) {
    (Some(url), _) => EventStore::Redis(url.clone()),
    (None, Some(data)) => EventStore::Dir(data.clone()),
    (None, None) => EventStore::Dir(PathBuf::from("islet-data")),
  };
  let events = Events::open(
    EventsConfig {
      store: event_store,
      max_message_bytes: usize::try_from(args.max_queue_message_kb << 10).unwrap_or(usize::MAX),
    },
    live.clone(),
  )
  .map_err(|e| NodeError::Config(format!("queues: {e}")))?;
  // Buckets: in S3 when named; else beside the queues, in the data directory (a fleet without
  // --objects has none, and its bucket bindings say so when used).
  let objects_config = match (&args.objects, &args.store) {
    (Some(url), _) => Some(ObjectsConfig::S3(
      S3Config::parse(url).map_err(|e| NodeError::Config(format!("--objects: {e}")))?,
    )),
    (None, Some(_)) => None,
    (None, None) => Some(ObjectsConfig::Dir(
      args.data.clone().unwrap_or_else(|| PathBuf::from("islet-data")),
    )),
  };
  let objects = objects_config
    .map(|config| Objects::open(config, live.clone(), events.clone()))
    .transpose()
    .map_err(|e| NodeError::Config(format!("objects: {e}")))?;
  let node_bindings = NodeBindings::host(objects.clone());
  // KV: beside the queues, in the node's database, or in the fleet's Redis.
  let kv = Kv::open(match &args.store {
    Some(url) => KvStore::Redis(url.clone()),
    None => KvStore::Embedded(events.clone()),
  })
  .map_err(|e| NodeError::Config(format!("kv: {e}")))?;
  kv.start();
  let services = ServiceCalls::new(live.clone());
  let metrics = islet::metrics::Metrics::new();
  let logs = islet::logs::Logs::new();
  // Usage records beside the queues: in the node's database, or in the fleet's Redis.
  let usage = islet::usage::Usage::new(
    match &args.store {
      Some(url) => islet::usage::UsageStore::Redis {
        client: Box::new(
          redis::Client::open(url.as_str()).map_err(|e| NodeError::Config(format!("--store: {e}")))?,
        ),
        connection: std::sync::Mutex::new(None),
      },
      None => islet::usage::UsageStore::Local(events.clone()),
    },
    Duration::from_secs(args.usage_retention_days.max(1) * 86_400),
  );
  usage.start();
  let mut config = ServerConfig {
    listen: args.listen,
    tls: args.tls_cert.zip(args.tls_key),
    base_domains: args.base_domains,
    path_hosts: args.path_hosts,
    shutdown_grace: Duration::from_secs(args.shutdown_grace),
    connection_timeouts: ConnectionTimeouts {
      idle: Duration::from_secs(args.idle_timeout),
      head: Duration::from_secs(args.head_timeout),
      write: Duration::from_secs(args.write_timeout),
    },
    max_connections: args.max_connections,
    pool: PoolConfig {
      threads: args.threads.unwrap_or(PoolConfig::default().threads),
      pin_threads: !args.pool.no_pin_threads,
      warm_isolates: args.pool.warm_isolates,
      max_warm_isolates: args.pool.max_warm_isolates,
      max_isolates: args.pool.max_isolates,
      max_heap_bytes: args.pool.max_isolate_heap_mb << 20,
      isolate: IsolateConfig {
        limits,
        outbound: Arc::new(args.limits.outbound()),
        bindings: Some(events.host()),
        objects: Some(node_bindings),
        kv: Some(kv.host()),
        services: Some(services.host()),
        invocations: (!args.no_invocation_records).then(|| {
          Arc::new(islet::isolate::ext::Fanout(vec![
            metrics.clone(),
            logs.clone(),
            usage.clone(),
          ])) as Arc<dyn islet::isolate::ext::InvocationSink + Send + Sync>
        }),
      },
    },
    admission: AdmissionConfig {
      max_concurrent: args.pool.max_concurrency.max(1),
      max_queued: args.pool.max_queue,
    },
    scheduled: None,
  };
  let https = config.tls.is_some();
  if dev {
    let (events, node) = (events.clone(), tokio::runtime::Handle::current());
    config.scheduled = Some(islet::server::ScheduledHook(Arc::new(
      move |function: String, cron: Option<String>| {
        let events = events.clone();
        // Fired on the node's runtime, as the admin API fires it; the listener's thread awaits it.
        let fired = node.spawn(async move {
          let report = events.trigger_cron(&function, cron.as_deref()).await?;
          let json = serde_json::to_string(&report).map_err(|e| e.to_string())?;
          Ok((report.ok, json))
        });
        Box::pin(async move { fired.await.map_err(|e| e.to_string())? })
      },
    )));
  }
  let served = live.clone();
  let server = Server::bind(config, live).await?;
  // Functions that keep isolates loaded get them now, ahead of their requests.
  server.pool_control().provision(served.load().iter().cloned());
  events.start(server.invoker());
  services.start(&server);
  let scheme = if https { "https" } else { "http" };
  // The first line on stdout: scripts and tests read the bound address from it.
  println!("islet listening on {scheme}://{}", server.local_addr());
  if dev {
    if let (Some(deployments), Some(source)) = (&deployments, &args.source) {
      islet::dev::watch(
        source.clone(),
        limits_for_reload,
        deployments.clone(),
        &statics_served,
        tokio::runtime::Handle::current(),
      )
      .map_err(NodeError::Config)?;
      tracing::info!(target: "islet::dev", "watching {} for changes", islet::dev::project_root(source).display());
    }
  }
  match (deployments, args.admin_token) {
    (Some(deployments), Some(token)) => {
      deployments.attach_pool(server.pool_control());
      let admin = AdminServer::bind(
        args.admin_listen,
        &token,
        deployments,
        islet::admin::AdminBackends {
          events: Some(events.clone()),
          kv: Some(kv.clone()),
          objects,
          metrics: Some((metrics.clone(), server.gauges())),
          metrics_token: args.metrics_token.clone(),
          logs: Some(logs.clone()),
          usage: Some(usage.clone()),
        },
        max_bundle_bytes,
        islet::admin::AdminLimits {
          head_timeout: Duration::from_secs(args.head_timeout),
          max_functions_per_token: args.max_functions_per_token,
          ..Default::default()
        },
      )
      .await?;
      // The second line: the admin API's address.
      println!("islet admin on http://{}", admin.local_addr());
      if dev && token == "dev" {
        // The default token of `islet dev` is no secret; one given by the developer is not printed.
        tracing::info!(
          target: "islet::dev",
          "the control commands reach this node with ISLET_NODE=http://{} ISLET_ADMIN_TOKEN=dev (islet kv, queues, buckets, cron)",
          admin.local_addr()
        );
      }
      tokio::spawn(admin.run());
    }
    (Some(_), None) => {
      tracing::warn!("no admin token (--admin-token, ISLET_ADMIN_TOKEN): the admin API is off")
    }
    (None, _) => {}
  }
  server.run(shutdown_signal()).await;
  // What the last seconds tallied is written before the process ends.
  if let Err(e) = usage.flush().await {
    tracing::warn!("the last usage records were not written: {e}");
  }
  Ok(())
}

fn registry_summary(registry: Registry, dev: bool) -> Registry {
  for function in registry.iter() {
    match &function.broken {
      None => {
        tracing::info!(function = %function.name, version = %function.version, "loaded")
      }
      Some(message) => {
        let message = match dev {
          true => islet::dev::with_source_line(function, message),
          false => message.clone(),
        };
        tracing::error!(function = %function.name, "cannot load, answers 503 until fixed: {message}")
      }
    }
  }
  registry
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
  let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
    Ok(signal) => signal,
    Err(err) => {
      tracing::warn!("cannot listen for SIGTERM: {err}");
      let _ = tokio::signal::ctrl_c().await;
      return;
    }
  };
  tokio::select! {
    _ = tokio::signal::ctrl_c() => {}
    _ = terminate.recv() => {}
  }
}

fn init_logging(format: LogFormat) {
  let filter = tracing_subscriber::EnvFilter::try_from_env("ISLET_LOG")
    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
  use std::io::IsTerminal;
  let builder = tracing_subscriber::fmt()
    .with_env_filter(filter)
    .with_writer(std::io::stderr)
    .with_ansi(std::io::stderr().is_terminal());
  match format {
    LogFormat::Text => builder.init(),
    LogFormat::Json => builder.json().init(),
    LogFormat::Pretty => builder
      .event_format(islet::dev::DevFormat {
        color: std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
      })
      .init(),
  }
}

/// `islet kv …`, through the node's admin API.
async fn kv_command(action: &KvAction) -> Result<String, islet::admin::client::ClientError> {
  let control = |node: &NodeArgs| islet::admin::client::AdminClient::new(&node.node, &node.token);
  match action {
    KvAction::Get { namespace, key, node } => {
      commands::kv_get(&control(node), namespace, key, node.json).await
    }
    KvAction::Put {
      namespace,
      key,
      value,
      ttl,
      metadata,
      node,
    } => {
      let put = commands::KvPut {
        key,
        value,
        ttl: *ttl,
        metadata: metadata.as_deref(),
      };
      commands::kv_put(&control(node), namespace, put, node.json).await
    }
    KvAction::Delete { namespace, key, node } => {
      commands::kv_delete(&control(node), namespace, key, node.json).await
    }
    KvAction::List {
      namespace,
      prefix,
      limit,
      cursor,
      node,
    } => {
      let page = commands::KvListPage {
        prefix,
        limit: *limit,
        cursor: cursor.as_deref(),
      };
      commands::kv_list(&control(node), namespace, page, node.json).await
    }
  }
}
