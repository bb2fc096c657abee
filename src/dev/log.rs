//! The log format of `islet dev`: one line per event for a person at a terminal, console lines
//! first among them: `12:04:05 hello 3f2a91c0 log  the message`. Colour when stderr is a terminal
//! (and `NO_COLOR` is unset), plain text otherwise. Every message and field is printed with control
//! characters escaped and line breaks indented, so tenant text cannot forge a line or move the
//! cursor.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Formats events for `islet dev`.
pub struct DevFormat {
  /// ANSI colours (stderr is a terminal).
  pub color: bool,
}

#[derive(Default)]
struct Fields {
  message: String,
  function: Option<String>,
  request_id: Option<String>,
  rest: String,
}

impl Visit for Fields {
  fn record_str(&mut self, field: &Field, value: &str) {
    match field.name() {
      "message" => self.message = value.to_string(),
      "function" => self.function = Some(value.to_string()),
      "request_id" => self.request_id = Some(value.to_string()),
      name => {
        let _ = write!(self.rest, " {name}={value}");
      }
    }
  }

  fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
    let text = format!("{value:?}");
    match field.name() {
      "message" => self.message = text,
      "function" => self.function = Some(text),
      "request_id" => self.request_id = Some(text),
      name => {
        let _ = write!(self.rest, " {name}={text}");
      }
    }
  }
}

/// `text` with control characters other than newline escaped; newlines (a stack, an error's
/// source excerpt) are indented under the line they belong to.
fn printable(text: &str) -> String {
  let mut out = String::with_capacity(text.len());
  for c in text.chars() {
    match c {
      '\n' => out.push_str("\n    "),
      c if c.is_control() => {
        let _ = write!(out, "\\u{{{:x}}}", c as u32);
      }
      c => out.push(c),
    }
  }
  out
}

impl<S, N> FormatEvent<S, N> for DevFormat
where
  S: Subscriber + for<'a> LookupSpan<'a>,
  N: for<'a> FormatFields<'a> + 'static,
{
  fn format_event(
    &self,
    _ctx: &FmtContext<'_, S, N>,
    mut writer: Writer<'_>,
    event: &Event<'_>,
  ) -> fmt::Result {
    let mut fields = Fields::default();
    event.record(&mut fields);
    let meta = event.metadata();
    let console = meta.target() == "islet::console";
    let (label, colour) = match (*meta.level(), console) {
      (Level::ERROR, _) => ("error", "31"),
      (Level::WARN, _) => ("warn ", "33"),
      (Level::INFO, true) => ("log  ", "0"),
      (Level::INFO, false) => ("info ", "32"),
      (Level::DEBUG, _) => ("debug", "2"),
      (Level::TRACE, _) => ("trace", "2"),
    };
    let now = std::time::SystemTime::now()
      .duration_since(std::time::UNIX_EPOCH)
      .map_or(0, |d| d.as_secs());
    let (h, m, s) = ((now / 3600) % 24, (now / 60) % 60, now % 60);
    let paint = |code: &str, text: &str| {
      if self.color {
        format!("\x1b[{code}m{text}\x1b[0m")
      } else {
        text.to_string()
      }
    };
    write!(writer, "{} ", paint("2", &format!("{h:02}:{m:02}:{s:02}")))?;
    if let Some(function) = &fields.function {
      write!(writer, "{} ", paint("1;36", &printable(function)))?;
    }
    if let Some(id) = fields.request_id.as_ref().filter(|id| !id.is_empty()) {
      write!(writer, "{} ", paint("2", &printable(id)))?;
    }
    // Every message may carry tenant text (a console line, a handler's error): escaped, so it
    // cannot colour the terminal or start a line of its own.
    let message = printable(&fields.message);
    write!(writer, "{} {message}", paint(colour, label))?;
    if !fields.rest.is_empty() {
      write!(writer, "{}", paint("2", &printable(&fields.rest)))?;
    }
    writeln!(writer)
  }
}

#[cfg(test)]
mod tests {
  use super::printable;

  #[test]
  fn tenant_text_cannot_start_a_line_or_colour_the_terminal() {
    assert_eq!(printable("a\nb"), "a\n    b");
    assert_eq!(printable("x\x1b[31mred\r"), "x\\u{1b}[31mred\\u{d}");
  }
}
