//! What `islet bench` prints: a table for people, JSON for scripts, and an SVG chart of the cold
//! and warm latency distributions. The SVG is written by hand: two polylines and some text do not
//! justify a plotting library in the binary.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use super::Latencies;

/// The figures of one run.
#[derive(Debug, Clone)]
pub struct Report {
  pub handler: String,
  pub threads: usize,
  pub concurrency: usize,
  /// Cold starts per second during the cold phase; 0 for back to back.
  pub cold_rate: f64,
  /// Client-side latency of each cold start (a fresh function version per request).
  pub cold: Latencies,
  /// Server-side start time of each cold start (`Server-Timing: start`): isolate, load, evaluate.
  pub cold_server_start: Latencies,
  /// Client-side latency of each warm request.
  pub warm: Latencies,
  /// Requests of the warm phase that still found the function unloaded on their thread (they
  /// count in requests/s, not in the warm latencies).
  pub warm_phase_cold_starts: usize,
  pub warm_requests_per_second: f64,
  /// Blank isolates the threads held when the cold starts began.
  pub blanks: u64,
  /// Cold starts that restored an isolate on their request's path (no blank one was left).
  pub cold_restores: u64,
  /// Resident memory per blank isolate, measured as the threads stocked them.
  pub rss_per_blank_bytes: u64,
  /// Resident memory per loaded isolate: a blank one, and what the cold starts added.
  pub rss_per_isolate_bytes: u64,
  /// Warm requests to another, loaded function, paced on a connection of their own: for as long
  /// as the cold phase lasts just before it, and during it (what the cold starts cost others).
  pub beside_alone: Latencies,
  /// The same requests, during the cold phase.
  pub beside_during_cold: Latencies,
}

#[derive(Serialize)]
struct PhaseJson {
  samples: usize,
  p50_ms: f64,
  p90_ms: f64,
  p99_ms: f64,
  max_ms: f64,
}

fn ms(d: Duration) -> f64 {
  (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

impl PhaseJson {
  fn of(latencies: &Latencies) -> Self {
    Self {
      samples: latencies.samples().len(),
      p50_ms: ms(latencies.percentile(50.0)),
      p90_ms: ms(latencies.percentile(90.0)),
      p99_ms: ms(latencies.percentile(99.0)),
      max_ms: ms(latencies.max()),
    }
  }
}

#[derive(Serialize)]
struct ReportJson<'a> {
  handler: &'a str,
  threads: usize,
  concurrency: usize,
  cold_starts_per_second: f64,
  cold: PhaseJson,
  cold_server_start: PhaseJson,
  warm: PhaseJson,
  warm_phase_cold_starts: usize,
  warm_requests_per_second: f64,
  rss_per_isolate_mib: f64,
  blanks: u64,
  cold_restores: u64,
  rss_per_blank_mib: f64,
  beside_alone: PhaseJson,
  beside_during_cold: PhaseJson,
}

impl Report {
  pub fn to_json(&self) -> String {
    let json = ReportJson {
      handler: &self.handler,
      threads: self.threads,
      concurrency: self.concurrency,
      cold_starts_per_second: self.cold_rate,
      cold: PhaseJson::of(&self.cold),
      cold_server_start: PhaseJson::of(&self.cold_server_start),
      warm: PhaseJson::of(&self.warm),
      warm_phase_cold_starts: self.warm_phase_cold_starts,
      warm_requests_per_second: self.warm_requests_per_second.round(),
      rss_per_isolate_mib: (self.rss_per_isolate_bytes as f64 / 1048576.0 * 100.0).round() / 100.0,
      blanks: self.blanks,
      cold_restores: self.cold_restores,
      rss_per_blank_mib: (self.rss_per_blank_bytes as f64 / 1048576.0 * 100.0).round() / 100.0,
      beside_alone: PhaseJson::of(&self.beside_alone),
      beside_during_cold: PhaseJson::of(&self.beside_during_cold),
    };
    // INVARIANT: numbers and strings always serialize.
    serde_json::to_string_pretty(&json).expect("report serializes")
  }

  pub fn to_table(&self) -> String {
    let mut out = String::new();
    let _ = writeln!(
      out,
      "handler {} · {} isolate threads · warm concurrency {} · cold starts {}",
      self.handler,
      self.threads,
      self.concurrency,
      if self.cold_rate > 0.0 {
        format!("{}/s", self.cold_rate)
      } else {
        "back to back".to_string()
      }
    );
    let _ = writeln!(
      out,
      "{:<26} {:>8} {:>9} {:>9} {:>9} {:>9}",
      "", "samples", "p50 ms", "p90 ms", "p99 ms", "max ms"
    );
    for (name, phase) in [
      ("cold start (end to end)", &self.cold),
      ("cold start (server)", &self.cold_server_start),
      ("warm request", &self.warm),
      ("another function, alone", &self.beside_alone),
      ("  and during cold starts", &self.beside_during_cold),
    ] {
      let p = PhaseJson::of(phase);
      let _ = writeln!(
        out,
        "{name:<26} {:>8} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
        p.samples, p.p50_ms, p.p90_ms, p.p99_ms, p.max_ms
      );
    }
    let _ = writeln!(
      out,
      "warm requests/s            {:>8.0}",
      self.warm_requests_per_second
    );
    if self.warm_phase_cold_starts > 0 {
      let _ = writeln!(
        out,
        "cold starts in warm phase  {:>8}",
        self.warm_phase_cold_starts
      );
    }
    let _ = writeln!(
      out,
      "blank isolates ready       {:>8} ({:.2} MiB each); cold starts that restored one: {}",
      self.blanks,
      self.rss_per_blank_bytes as f64 / 1048576.0,
      self.cold_restores
    );
    let _ = writeln!(
      out,
      "RSS per loaded isolate     {:>8.2} MiB",
      self.rss_per_isolate_bytes as f64 / 1048576.0
    );
    out
  }

  /// The latency distributions (percentile curves) of cold and warm requests, log-scaled.
  pub fn to_svg(&self) -> String {
    const W: f64 = 760.0;
    const H: f64 = 420.0;
    const LEFT: f64 = 70.0;
    const RIGHT: f64 = 20.0;
    const TOP: f64 = 40.0;
    const BOTTOM: f64 = 50.0;
    let all = self.cold.samples().iter().chain(self.warm.samples());
    let lo = all.clone().map(|d| ms(*d)).fold(f64::MAX, f64::min).max(0.01);
    let hi = all.map(|d| ms(*d)).fold(0.0, f64::max).max(lo * 10.0);
    let (log_lo, log_hi) = (lo.log10().floor(), hi.log10().ceil());
    let y = |v: f64| TOP + (H - TOP - BOTTOM) * (1.0 - (v.log10() - log_lo) / (log_hi - log_lo));
    let x = |p: f64| LEFT + (W - LEFT - RIGHT) * p / 100.0;
    let mut svg = String::new();
    let _ = write!(
      svg,
      r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{LEFT}" y="22" font-size="15">islet bench: latency by percentile ({})</text>
"#,
      escape(&self.handler)
    );
    let mut decade = log_lo;
    while decade <= log_hi {
      let v = 10f64.powf(decade);
      let _ = writeln!(
        svg,
        r##"<line x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{v} ms</text>"##,
        W - RIGHT,
        LEFT - 6.0,
        y(v) + 4.0,
        y = y(v)
      );
      decade += 1.0;
    }
    for p in [0.0, 25.0, 50.0, 75.0, 90.0, 99.0, 100.0] {
      let _ = writeln!(
        svg,
        r##"<line x1="{x:.1}" x2="{x:.1}" y1="{TOP}" y2="{}" stroke="#eee"/><text x="{x:.1}" y="{}" text-anchor="middle">p{p}</text>"##,
        H - BOTTOM,
        H - BOTTOM + 18.0,
        x = x(p)
      );
    }
    for (latencies, color, label, row) in [
      (&self.cold, "#d9480f", "cold", 0.0),
      (&self.warm, "#1971c2", "warm", 1.0),
    ] {
      let samples = latencies.samples();
      if samples.is_empty() {
        continue;
      }
      let points: Vec<String> = samples
        .iter()
        .enumerate()
        .map(|(i, d)| {
          let p = if samples.len() == 1 {
            100.0
          } else {
            100.0 * i as f64 / (samples.len() - 1) as f64
          };
          format!("{:.1},{:.1}", x(p), y(ms(*d).max(lo)))
        })
        .collect();
      let _ = writeln!(
        svg,
        r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
        points.join(" ")
      );
      let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" fill="{color}">{label}: p50 {:.2} ms, p99 {:.2} ms ({} samples)</text>"#,
        LEFT + 10.0,
        TOP + 16.0 + row * 16.0,
        ms(latencies.percentile(50.0)),
        ms(latencies.percentile(99.0)),
        samples.len()
      );
    }
    svg.push_str("</svg>\n");
    svg
  }
}

fn escape(text: &str) -> String {
  text
    .replace('&', "&amp;")
    .replace('<', "&lt;")
    .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn percentiles_use_nearest_rank() {
    let l = Latencies::from_unsorted((1..=100).rev().map(Duration::from_millis).collect());
    assert_eq!(l.percentile(50.0), Duration::from_millis(50));
    assert_eq!(l.percentile(99.0), Duration::from_millis(99));
    assert_eq!(l.percentile(100.0), Duration::from_millis(100));
    assert_eq!(l.max(), Duration::from_millis(100));
    assert_eq!(Latencies::default().percentile(50.0), Duration::ZERO);
  }
}
