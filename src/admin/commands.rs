//! `islet deploy`, `islet functions`, `islet versions`, `islet rollback`, `islet delete`: what
//! each does against a node and how it reports, readable by default and JSON with `--json`.

use std::path::Path;
use std::sync::Arc;

use super::client::{AdminClient, ClientError};
use crate::config::Manifest;
use crate::isolate::SyntaxChecker;
use crate::limits::Limits;

/// Builds every bundle of the manifest, checks that each module parses, uploads them with a
/// progress bar (none with `json`), and reports the versions activated.
pub async fn deploy(manifest: &Path, client: &AdminClient, json: bool) -> Result<String, ClientError> {
  let manifest = Manifest::load(manifest).map_err(|e| ClientError::Input(e.to_string()))?;
  let mut bundles = Vec::new();
  let mut checker = SyntaxChecker::new().map_err(ClientError::Input)?;
  for name in manifest.functions.keys() {
    let bundle = manifest
      .bundle(name, &|key| std::env::var(key).ok())
      .map_err(|e| ClientError::Input(e.to_string()))?;
    let function = bundle
      .to_function(&Limits::default())
      .map_err(|e| ClientError::Input(format!("{name}: {e}")))?;
    checker.check(&function).map_err(ClientError::Input)?;
    bundles.push(bundle);
  }
  drop(checker);
  let total: u64 = bundles
    .iter()
    .map(|b| serde_json::to_vec(b).map_or(0, |v| v.len() as u64))
    .sum();
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
  for bundle in &bundles {
    bar.set_message(bundle.name.clone());
    let progress = Arc::new(bar.clone());
    let answer = client
      .deploy(bundle, Box::new(move |n| progress.inc(n as u64)))
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
  let mut out = format!("{:<20} {:<16} {:>8}  routes\n", "function", "active", "versions");
  for f in answer["functions"].as_array().into_iter().flatten() {
    let routes: Vec<&str> = f["routes"]
      .as_array()
      .into_iter()
      .flatten()
      .filter_map(|r| r.as_str())
      .collect();
    out.push_str(&format!(
      "{:<20} {:<16} {:>8}  {}\n",
      f["name"].as_str().unwrap_or("?"),
      f["active"].as_str().unwrap_or("?"),
      f["versions"].as_u64().unwrap_or(0),
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
  let mut out = format!("{:<16} {:<20} {:>10}\n", "version", "deployed (UTC)", "bytes");
  for v in answer["versions"].as_array().into_iter().flatten() {
    let marker = if v["active"] == true { "  ← active" } else { "" };
    out.push_str(&format!(
      "{:<16} {:<20} {:>10}{marker}\n",
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

/// `2026-11-21 10:16:31` from seconds since the Unix epoch (proleptic Gregorian calendar).
fn utc(seconds: u64) -> String {
  let days = (seconds / 86_400) as i64;
  let time = seconds % 86_400;
  // Howard Hinnant's days-to-civil algorithm.
  let z = days + 719_468;
  let era = z.div_euclid(146_097);
  let doe = z - era * 146_097;
  let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
  let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  let mp = (5 * doy + 2) / 153;
  let day = doy - (153 * mp + 2) / 5 + 1;
  let month = if mp < 10 { mp + 3 } else { mp - 9 };
  let year = yoe + era * 400 + i64::from(month <= 2);
  format!(
    "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
    time / 3600,
    time % 3600 / 60,
    time % 60
  )
}

#[cfg(test)]
mod tests {
  #[test]
  fn utc_dates() {
    assert_eq!(super::utc(0), "1970-01-01 00:00:00");
    assert_eq!(super::utc(1_795_256_191), "2026-11-21 10:16:31");
  }
}
