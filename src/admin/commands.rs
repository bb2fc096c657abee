//! `islet deploy`, `islet functions`, `islet versions`, `islet rollback`, `islet delete`: what
//! each does against a node and how it reports, readable by default and JSON with `--json`.

use std::path::Path;

use bytes::Bytes;

use super::client::{AdminClient, ClientError};
use crate::config::Manifest;
use crate::isolate::SyntaxChecker;
use crate::limits::Limits;

/// Builds every bundle of the manifest, checks that each module parses, uploads them with a
/// progress bar (none with `json`), and reports the versions activated.
pub async fn deploy(manifest: &Path, client: &AdminClient, json: bool) -> Result<String, ClientError> {
  let manifest = Manifest::load(manifest).map_err(|e| ClientError::Input(e.to_string()))?;
  let mut bundles = manifest
    .bundles(&|key| std::env::var(key).ok())
    .map_err(|e| ClientError::Input(e.to_string()))?;
  // A function before those that call it through service bindings: the node refuses a binding to
  // a function it does not serve yet. (A cycle is left in name order, and refused.)
  let mut ordered: Vec<crate::registry::Bundle> = Vec::with_capacity(bundles.len());
  while !bundles.is_empty() {
    let ready = bundles.iter().position(|bundle| {
      bundle.bindings.values().all(|binding| match binding {
        crate::registry::bindings::Binding::Service { function } => {
          *function == bundle.name || ordered.iter().any(|done| done.name == *function)
        }
        _ => true,
      })
    });
    ordered.push(bundles.remove(ready.unwrap_or(0)));
  }
  let bundles = ordered;
  let mut checker = SyntaxChecker::new().map_err(ClientError::Input)?;
  let mut uploads = Vec::with_capacity(bundles.len());
  for bundle in &bundles {
    let function = bundle
      .to_function(&Limits::default())
      .map_err(|e| ClientError::Input(format!("{}: {e}", bundle.name)))?;
    checker.check(&function).map_err(ClientError::Input)?;
    // INVARIANT: a bundle always serializes.
    let body = Bytes::from(serde_json::to_vec(bundle).expect("bundle serializes"));
    uploads.push((bundle.name.as_str(), body));
  }
  // Which secrets leave this machine, by name (never their values), per function.
  let secrets: Vec<(String, Vec<String>)> = bundles
    .iter()
    .map(|bundle| (bundle.name.clone(), manifest.secret_names(&bundle.name)))
    .filter(|(_, names)| !names.is_empty())
    .collect();
  // Said before anything leaves, so that a deploy failing part way has still said it.
  for (function, names) in &secrets {
    eprintln!("{function}: sending the secrets {}", names.join(", "));
  }
  drop(checker);
  let total = uploads.iter().map(|(_, body)| body.len() as u64).sum();
  let bar = indicatif::ProgressBar::new(total);
  if json {
    bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
  }
  bar.set_style(
    indicatif::ProgressStyle::with_template("uploading {msg:>12} [{bar:30}] {bytes}/{total_bytes}")
      .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
      .progress_chars("=> "),
  );
  let mut results = Vec::new();
  for (name, body) in uploads {
    bar.set_message(name.to_string());
    let progress = bar.clone();
    let answer = client
      .deploy(name, body, Box::new(move |n| progress.inc(n as u64)))
      .await;
    match answer {
      Ok(answer) => results.push(answer),
      Err(err) => {
        bar.abandon();
        return Err(err);
      }
    }
  }
  bar.finish_and_clear();
  if json {
    return Ok(serde_json::Value::Array(results).to_string());
  }
  let mut out = String::new();
  for (function, names) in &secrets {
    out.push_str(&format!("{function:<20} secrets sent: {}\n", names.join(", ")));
  }
  for answer in &results {
    let status = if answer["created"] == true {
      "deployed"
    } else {
      "unchanged, activated"
    };
    out.push_str(&format!(
      "{:<20} {}  {status}\n",
      answer["name"].as_str().unwrap_or("?"),
      answer["version"].as_str().unwrap_or("?")
    ));
  }
  Ok(out)
}

pub async fn functions(client: &AdminClient, json: bool) -> Result<String, ClientError> {
  let answer = client.functions().await?;
  if json {
    return Ok(answer["functions"].to_string());
  }
  let mut out = format!(
    "{:<20} {:<16} {:>8} {:>8} {:>9}  routes\n",
    "function", "active", "versions", "isolates", "min..max"
  );
  for f in answer["functions"].as_array().into_iter().flatten() {
    let routes: Vec<&str> = f["routes"]
      .as_array()
      .into_iter()
      .flatten()
      .filter_map(|r| r.as_str())
      .collect();
    let (min, max) = (
      f["min_isolates"].as_u64().unwrap_or(0),
      f["max_isolates"].as_u64().unwrap_or(0),
    );
    let bounds = match max {
      0 => format!("{min}..-"),
      max => format!("{min}..{max}"),
    };
    out.push_str(&format!(
      "{:<20} {:<16} {:>8} {:>8} {:>9}  {}\n",
      f["name"].as_str().unwrap_or("?"),
      f["active"].as_str().unwrap_or("?"),
      f["versions"].as_u64().unwrap_or(0),
      f["isolates"].as_u64().unwrap_or(0),
      bounds,
      routes.join(", ")
    ));
  }
  Ok(out)
}

pub async fn versions(client: &AdminClient, name: &str, json: bool) -> Result<String, ClientError> {
  let answer = client.versions(name).await?;
  if json {
    return Ok(answer["versions"].to_string());
  }
  let mut out = format!("{:<16} {:<29} {:>10}\n", "version", "deployed", "bytes");
  for v in answer["versions"].as_array().into_iter().flatten() {
    let marker = if v["active"] == true { "  ← active" } else { "" };
    out.push_str(&format!(
      "{:<16} {:<29} {:>10}{marker}\n",
      v["version"].as_str().unwrap_or("?"),
      utc(v["deployed_at"].as_u64().unwrap_or(0)),
      v["size"].as_u64().unwrap_or(0)
    ));
  }
  Ok(out)
}

pub async fn rollback(
  client: &AdminClient,
  name: &str,
  version: &str,
  json: bool,
) -> Result<String, ClientError> {
  let answer = client.activate(name, version).await?;
  Ok(if json {
    answer.to_string()
  } else {
    format!("{name} now serves {version}\n")
  })
}

pub async fn delete(client: &AdminClient, name: &str, json: bool) -> Result<String, ClientError> {
  let answer = client.delete(name).await?;
  Ok(if json {
    answer.to_string()
  } else {
    format!("deleted {name}\n")
  })
}

/// `islet queues`: one line per queue.
pub async fn queues(client: &AdminClient, json: bool) -> Result<String, ClientError> {
  let answer = client.queues().await?;
  if json {
    return Ok(answer.to_string());
  }
  let mut out = format!(
    "{:<24} {:>8} {:>10} {:>12} {:>10}\n",
    "QUEUE", "DEPTH", "IN FLIGHT", "OLDEST (s)", "DLQ DEPTH"
  );
  for queue in answer["queues"].as_array().into_iter().flatten() {
    out.push_str(&format!(
      "{:<24} {:>8} {:>10} {:>12.1} {:>10}\n",
      queue["queue"].as_str().unwrap_or("?"),
      queue["depth"].as_u64().unwrap_or(0),
      queue["in_flight"].as_u64().unwrap_or(0),
      queue["oldest_age_ms"].as_u64().unwrap_or(0) as f64 / 1000.0,
      queue["dead_letter_depth"].as_u64().unwrap_or(0),
    ));
  }
  Ok(out)
}

/// `islet queues send QUEUE BODY`.
pub async fn queue_send(
  client: &AdminClient,
  queue: &str,
  body: &str,
  content_type: &str,
  delay_seconds: u64,
  json: bool,
) -> Result<String, ClientError> {
  if content_type == "json" && serde_json::from_str::<serde_json::Value>(body).is_err() {
    return Err(ClientError::Input(format!(
      "'{body}' is not JSON; send text with --content-type text"
    )));
  }
  let answer = client
    .queue_send(queue, body, content_type, delay_seconds)
    .await?;
  Ok(if json {
    answer.to_string()
  } else {
    format!("sent {} to {queue}\n", answer["id"].as_str().unwrap_or("?"))
  })
}

/// `islet kv get NAMESPACE KEY`: the value as it is (UTF-8 text, or base64 for other bytes).
pub async fn kv_get(
  client: &AdminClient,
  namespace: &str,
  key: &str,
  json: bool,
) -> Result<String, ClientError> {
  let answer = client
    .kv(namespace, "get", serde_json::json!({ "key": key }))
    .await?;
  Ok(if json {
    answer.to_string()
  } else {
    answer["value"].as_str().unwrap_or("").to_string()
  })
}

/// What `islet kv put` writes.
pub struct KvPut<'a> {
  pub key: &'a str,
  pub value: &'a str,
  pub ttl: Option<u64>,
  /// JSON.
  pub metadata: Option<&'a str>,
}

/// `islet kv put NAMESPACE KEY VALUE [--ttl S] [--metadata JSON]`.
pub async fn kv_put(
  client: &AdminClient,
  namespace: &str,
  put: KvPut<'_>,
  json: bool,
) -> Result<String, ClientError> {
  let mut body = serde_json::json!({ "key": put.key, "value": put.value });
  if let Some(ttl) = put.ttl {
    body["expiration_ttl"] = ttl.into();
  }
  if let Some(metadata) = put.metadata {
    body["metadata"] = serde_json::from_str(metadata)
      .map_err(|e| ClientError::Input(format!("--metadata is not JSON: {e}")))?;
  }
  let answer = client.kv(namespace, "put", body).await?;
  Ok(if json {
    answer.to_string()
  } else {
    format!(
      "wrote {} (version {})\n",
      put.key,
      answer["version"].as_str().unwrap_or("?")
    )
  })
}

/// `islet kv delete NAMESPACE KEY`.
pub async fn kv_delete(
  client: &AdminClient,
  namespace: &str,
  key: &str,
  json: bool,
) -> Result<String, ClientError> {
  let answer = client
    .kv(namespace, "delete", serde_json::json!({ "key": key }))
    .await?;
  Ok(if json {
    answer.to_string()
  } else {
    format!("deleted {key}\n")
  })
}

/// Which page `islet kv list` prints.
pub struct KvListPage<'a> {
  pub prefix: &'a str,
  pub limit: Option<u32>,
  pub cursor: Option<&'a str>,
}

/// `islet kv list NAMESPACE [--prefix P] [--limit N] [--cursor C]`: one key per line, and the
/// cursor of the next page if there is one.
pub async fn kv_list(
  client: &AdminClient,
  namespace: &str,
  page: KvListPage<'_>,
  json: bool,
) -> Result<String, ClientError> {
  let mut body = serde_json::json!({ "prefix": page.prefix });
  if let Some(limit) = page.limit {
    body["limit"] = limit.into();
  }
  if let Some(cursor) = page.cursor {
    body["cursor"] = cursor.into();
  }
  let answer = client.kv(namespace, "list", body).await?;
  if json {
    return Ok(answer.to_string());
  }
  let mut out = String::new();
  for key in answer["keys"].as_array().into_iter().flatten() {
    out.push_str(key["name"].as_str().unwrap_or("?"));
    if let Some(expiration) = key["expiration"].as_i64() {
      out.push_str(&format!(
        "  (expires {})",
        utc(u64::try_from(expiration).unwrap_or(0))
      ));
    }
    out.push('\n');
  }
  if let Some(cursor) = answer["cursor"].as_str() {
    out.push_str(&format!("more: --cursor {cursor}\n"));
  }
  Ok(out)
}

/// `islet buckets list BUCKET [--prefix P] [--limit N] [--cursor C]`: one line per object.
pub async fn bucket_list(
  client: &AdminClient,
  bucket: &str,
  prefix: &str,
  limit: Option<u32>,
  cursor: Option<&str>,
  json: bool,
) -> Result<String, ClientError> {
  let mut body = serde_json::json!({ "prefix": prefix });
  if let Some(limit) = limit {
    body["limit"] = limit.into();
  }
  if let Some(cursor) = cursor {
    body["cursor"] = cursor.into();
  }
  let answer = client.bucket(bucket, "list", body).await?;
  if json {
    return Ok(answer.to_string());
  }
  let mut out = String::new();
  for object in answer["objects"].as_array().into_iter().flatten() {
    let uploaded = object["uploaded"].as_u64().unwrap_or(0) / 1000;
    out.push_str(&format!(
      "{}  {} bytes  {}\n",
      object["key"].as_str().unwrap_or("?"),
      object["size"].as_u64().unwrap_or(0),
      utc(uploaded)
    ));
  }
  if let Some(cursor) = answer["cursor"].as_str().filter(|_| answer["truncated"] == true) {
    out.push_str(&format!("more: --cursor {cursor}\n"));
  }
  Ok(out)
}

/// `islet buckets get BUCKET KEY [--output FILE]`: the body, as text on stdout or into a file.
pub async fn bucket_get(
  client: &AdminClient,
  bucket: &str,
  key: &str,
  output: Option<&Path>,
) -> Result<String, ClientError> {
  use base64::Engine as _;
  let answer = client
    .bucket(bucket, "get", serde_json::json!({ "key": key }))
    .await?;
  let value = answer["value"].as_str().unwrap_or_default();
  let bytes = match answer["encoding"].as_str() {
    Some("base64") => base64::engine::general_purpose::STANDARD
      .decode(value)
      .map_err(|e| ClientError::Input(format!("the node sent bad base64: {e}")))?,
    _ => value.as_bytes().to_vec(),
  };
  match output {
    Some(path) => {
      std::fs::write(path, &bytes).map_err(|e| ClientError::Input(format!("{}: {e}", path.display())))?;
      Ok(format!("wrote {} bytes to {}\n", bytes.len(), path.display()))
    }
    None if answer["encoding"] == "base64" => Err(ClientError::Input(format!(
      "'{key}' is binary ({} bytes): write it to a file with --output",
      bytes.len()
    ))),
    None => Ok(String::from_utf8_lossy(&bytes).into_owned()),
  }
}

/// `islet queues replay-dlq QUEUE`.
pub async fn replay_dlq(client: &AdminClient, queue: &str, json: bool) -> Result<String, ClientError> {
  let answer = client.replay_dlq(queue).await?;
  Ok(if json {
    answer.to_string()
  } else {
    format!(
      "moved {} message(s) from the dead-letter queue back into {queue}\n",
      answer["replayed"].as_u64().unwrap_or(0)
    )
  })
}

/// `islet cron trigger FUNCTION [--cron EXPR]`.
pub async fn cron_trigger(
  client: &AdminClient,
  function: &str,
  cron: Option<&str>,
  json: bool,
) -> Result<String, ClientError> {
  let answer = client.cron_trigger(function, cron).await?;
  if json {
    return Ok(answer.to_string());
  }
  let schedule = answer["cron"].as_str().unwrap_or("?");
  Ok(match answer["error"].as_str() {
    None => format!("{function}: scheduled({schedule}) ran\n"),
    Some(error) => format!("{function}: scheduled({schedule}) failed: {error}\n"),
  })
}

/// When a version was deployed, in the HTTP date format (`Sat, 21 Nov 2026 10:16:31 GMT`).
fn utc(seconds: u64) -> String {
  httpdate::fmt_http_date(std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds))
}

/// `24h`, `30m`, `7d`, `90s` (or plain seconds), in seconds.
pub fn parse_window(text: &str) -> Result<u64, ClientError> {
  let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
  let n: u64 = number
    .parse()
    .map_err(|_| ClientError::Input(format!("--since '{text}': say 90s, 30m, 24h or 7d")))?;
  let scale = match unit {
    "" | "s" => 1,
    "m" => 60,
    "h" => 3_600,
    "d" => 86_400,
    _ => {
      return Err(ClientError::Input(format!(
        "--since '{text}': say 90s, 30m, 24h or 7d"
      )))
    }
  };
  Ok(n.saturating_mul(scale))
}

/// The prices `--pricing` names: a built-in profile, or a TOML file of the operator's own
/// (`per_million_requests`, `per_gb_second`, `per_million_cpu_ms`, `per_gb_egress`, `name`).
pub fn pricing(name: &str) -> Result<crate::usage::Pricing, ClientError> {
  if let Some(builtin) = crate::usage::Pricing::builtin(name) {
    return Ok(builtin);
  }
  let text = std::fs::read_to_string(name).map_err(|e| {
    ClientError::Input(format!(
      "--pricing '{name}': not aws-lambda or cloudflare-workers, and not a readable file: {e}"
    ))
  })?;
  let mut pricing: crate::usage::Pricing =
    toml::from_str(&text).map_err(|e| ClientError::Input(format!("{name}: {e}")))?;
  if pricing.name.is_empty() {
    pricing.name = name.to_string();
  }
  Ok(pricing)
}

/// `islet usage`: requests, CPU, GB-seconds, egress and a cost estimate per function.
pub async fn usage(
  client: &AdminClient,
  since: &str,
  function: Option<&str>,
  pricing_name: &str,
  json: bool,
) -> Result<String, ClientError> {
  let since_s = parse_window(since)?;
  let pricing = pricing(pricing_name)?;
  let answer = client.usage(since_s, function).await?;
  let mut rows = Vec::new();
  let mut total = crate::usage::Tally::default();
  for row in answer["functions"].as_array().into_iter().flatten() {
    let n = |k: &str| row[k].as_f64().unwrap_or(0.0);
    let tally = crate::usage::Tally {
      requests: n("requests") as u64,
      errors: n("errors") as u64,
      cpu_us: (n("cpu_ms") * 1e3).round() as u64,
      wall_us: (n("wall_ms") * 1e3).round() as u64,
      billed_ms: n("billed_ms") as u64,
      mb_ms: (n("gb_s") * 1024.0 * 1000.0).round() as u64,
      bytes_out: n("bytes_out") as u64,
      bytes_in: n("bytes_in") as u64,
      fetches: n("fetches") as u64,
      kv_operations: n("kv_operations") as u64,
    };
    total.add(&tally);
    rows.push((row["function"].as_str().unwrap_or("?").to_string(), tally));
  }
  if json {
    let functions: Vec<serde_json::Value> = rows
      .iter()
      .map(|(name, t)| {
        serde_json::json!({
          "function": name, "requests": t.requests, "errors": t.errors,
          "cpu_ms": t.cpu_us as f64 / 1e3, "gb_s": crate::usage::gb_seconds(t),
          "egress_bytes": t.bytes_out, "ingress_bytes": t.bytes_in, "cost": pricing.cost(t),
        })
      })
      .collect();
    return Ok(
      serde_json::json!({
        "since_s": since_s, "pricing": pricing, "functions": functions,
        "total": { "requests": total.requests, "cpu_ms": total.cpu_us as f64 / 1e3,
                   "gb_s": crate::usage::gb_seconds(&total), "egress_bytes": total.bytes_out,
                   "cost": pricing.cost(&total) },
      })
      .to_string(),
    );
  }
  let mut out = format!(
    "usage over the last {since}, priced at {}\n{:<24} {:>10} {:>8} {:>12} {:>12} {:>12} {:>12}\n",
    pricing.name, "function", "requests", "errors", "CPU ms", "GB-s", "egress MB", "cost $"
  );
  for (name, t) in rows
    .iter()
    .chain(std::iter::once(&("total".to_string(), total.clone())))
  {
    out.push_str(&format!(
      "{:<24} {:>10} {:>8} {:>12.1} {:>12.4} {:>12.3} {:>12.6}\n",
      name,
      t.requests,
      t.errors,
      t.cpu_us as f64 / 1e3,
      crate::usage::gb_seconds(t),
      t.bytes_out as f64 / 1e6,
      pricing.cost(t).total
    ));
  }
  Ok(out)
}

/// `islet logs FUNCTION`: its recent lines, one per line of text (or of JSON).
pub async fn logs(
  client: &AdminClient,
  function: &str,
  limit: usize,
  json: bool,
) -> Result<String, ClientError> {
  let answer = client.logs(function, limit).await?;
  let mut out = String::new();
  for line in answer["lines"].as_array().into_iter().flatten() {
    out.push_str(&if json {
      line.to_string()
    } else {
      crate::logs::line_text(line)
    });
    out.push('\n');
  }
  Ok(out)
}

/// `islet logs FUNCTION --follow`: prints its lines as they come, until interrupted.
pub async fn follow_logs(
  client: &AdminClient,
  function: &str,
  limit: usize,
  json: bool,
) -> Result<String, ClientError> {
  use std::io::Write;
  client
    .follow_logs(function, limit, &mut |line| {
      let text = if json {
        line.to_string()
      } else {
        crate::logs::line_text(line)
      };
      let mut out = std::io::stdout().lock();
      // A closed stdout (`| head`) ends the command.
      writeln!(out, "{text}").and_then(|()| out.flush()).is_ok()
    })
    .await?;
  Ok(String::new())
}

/// `islet tokens create`: the token, printed once, and what it may do.
pub async fn token_create(
  client: &AdminClient,
  label: &str,
  prefix: &str,
  hosts: &[String],
  paths: &[String],
  json: bool,
) -> Result<String, ClientError> {
  let asked = serde_json::json!({ "label": label, "prefix": prefix, "hosts": hosts, "paths": paths });
  let answer = client.token_create(asked).await?;
  if json {
    return Ok(answer.to_string());
  }
  Ok(format!(
    "{}\n(deploy token {} for {label}: functions, KV, queues and buckets named {prefix}*; routes {}; \
     it is shown only now)\n",
    answer["token"].as_str().unwrap_or("?"),
    answer["id"].as_str().unwrap_or("?"),
    grant_routes(&answer)
  ))
}

/// `islet tokens list`: one line per deploy token.
pub async fn token_list(client: &AdminClient, json: bool) -> Result<String, ClientError> {
  let answer = client.tokens().await?;
  if json {
    return Ok(answer["tokens"].to_string());
  }
  let mut out = format!(
    "{:<12} {:<20} {:<12} {:<29} routes\n",
    "id", "label", "prefix", "created"
  );
  for t in answer["tokens"].as_array().into_iter().flatten() {
    out.push_str(&format!(
      "{:<12} {:<20} {:<12} {:<29} {}\n",
      t["id"].as_str().unwrap_or("?"),
      t["label"].as_str().unwrap_or("?"),
      t["prefix"].as_str().unwrap_or("?"),
      utc(t["created_at"].as_u64().unwrap_or(0)),
      grant_routes(t)
    ));
  }
  Ok(out)
}

pub async fn token_revoke(client: &AdminClient, id: &str, json: bool) -> Result<String, ClientError> {
  let answer = client.token_revoke(id).await?;
  Ok(if json {
    answer.to_string()
  } else {
    format!("revoked {id}\n")
  })
}

/// A grant's hosts and paths, for a line of text.
fn grant_routes(grant: &serde_json::Value) -> String {
  let items: Vec<String> = ["hosts", "paths"]
    .iter()
    .flat_map(|k| grant[*k].as_array().cloned().unwrap_or_default())
    .filter_map(|v| v.as_str().map(str::to_string))
    .collect();
  if items.is_empty() {
    "none".into()
  } else {
    items.join(", ")
  }
}

#[cfg(test)]
mod tests {
  #[test]
  fn utc_dates() {
    assert_eq!(super::utc(0), "Thu, 01 Jan 1970 00:00:00 GMT");
    assert_eq!(super::utc(1_795_256_191), "Sat, 21 Nov 2026 10:16:31 GMT");
  }
}
