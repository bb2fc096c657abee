//! Stepping a schedule: the next tick after a moment, in UTC.

use chrono::{DateTime, Utc};

/// The first time after `now` that `cron` names; `None` if it names none (a date that never comes).
pub(super) fn next_tick(cron: &croner::Cron, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
  cron.find_next_occurrence(&now, false).ok()
}

#[cfg(test)]
mod tests {
  use super::*;
  use chrono::TimeZone;

  #[test]
  fn five_fields_step_by_minutes_and_six_by_seconds() {
    let at = Utc.with_ymd_and_hms(2026, 12, 6, 10, 7, 30).unwrap();
    let every_five = crate::registry::bindings::parse_schedule("*/5 * * * *").unwrap();
    assert_eq!(
      next_tick(&every_five, at),
      Some(Utc.with_ymd_and_hms(2026, 12, 6, 10, 10, 0).unwrap())
    );
    let every_two_seconds = crate::registry::bindings::parse_schedule("*/2 * * * * *").unwrap();
    assert_eq!(
      next_tick(&every_two_seconds, at),
      Some(Utc.with_ymd_and_hms(2026, 12, 6, 10, 7, 32).unwrap())
    );
  }
}
