//! The `islet` command line: parse arguments, build the node, run it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use islet::pool::PoolConfig;
use islet::server::{Server, ServerConfig};

#[derive(Parser)]
#[command(name = "islet", version, about = "A multi-tenant edge function runtime")]
struct Cli {
  /// Log line format on stderr.
  #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "ISLET_LOG_FORMAT")]
  log_format: LogFormat,
  #[command(subcommand)]
  command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
  Text,
  Json,
}

#[derive(Subcommand)]
enum Command {
  /// Serve every function in a directory: <DIR>/<name>/index.js or <DIR>/<name>.js.
  Serve(ServeArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
  /// The directory of functions.
  dir: PathBuf,
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
  /// Seconds in-flight requests may take to finish after SIGINT/SIGTERM.
  #[arg(long, default_value_t = 10)]
  shutdown_grace: u64,
}

fn main() -> ExitCode {
  let cli = Cli::parse();
  init_logging(cli.log_format);
  let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
    Ok(runtime) => runtime,
    Err(err) => {
      eprintln!("islet: cannot start the async runtime: {err}");
      return ExitCode::FAILURE;
    }
  };
  let result = match cli.command {
    Command::Serve(args) => runtime.block_on(serve(args)),
  };
  match result {
    Ok(()) => ExitCode::SUCCESS,
    Err(err) => {
      eprintln!("islet: {err}");
      ExitCode::FAILURE
    }
  }
}

async fn serve(args: ServeArgs) -> Result<(), islet::error::NodeError> {
  let mut registry = islet::registry::load_dir(&args.dir)?;
  registry.check_each(islet::isolate::check_syntax);
  let config = ServerConfig {
    listen: args.listen,
    tls: args.tls_cert.zip(args.tls_key),
    base_domains: args.base_domains,
    shutdown_grace: Duration::from_secs(args.shutdown_grace),
    pool: args
      .threads
      .map_or_else(PoolConfig::default, |threads| PoolConfig { threads }),
  };
  let https = config.tls.is_some();
  let server = Server::bind(config, registry_summary(registry)).await?;
  let scheme = if https { "https" } else { "http" };
  // The one line on stdout: scripts and tests read the bound address from it.
  println!("islet listening on {scheme}://{}", server.local_addr());
  server.run(shutdown_signal()).await;
  Ok(())
}

fn registry_summary(registry: islet::registry::Registry) -> islet::registry::Registry {
  for function in registry.iter() {
    match &function.broken {
      None => {
        tracing::info!(function = %function.name, version = %function.version, "loaded")
      }
      Some(_) => {
        tracing::warn!(function = %function.name, "loaded, but answers 503 until fixed")
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
  }
}
