//! The id that names a request in logs, error bodies and the `x-islet-request-id` header.

use std::fmt;

/// 64 random bits, shown as 16 lowercase hex digits: unique enough to find a request in the logs,
/// short enough to read aloud. `Copy`, and written out only where it is shown, so that a request
/// carrying it costs no allocation.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestId(u64);

impl RequestId {
  /// The next id of a splitmix64 sequence per thread, seeded once from the OS: no system call per
  /// request.
  pub fn generate() -> Self {
    use std::cell::Cell;
    use std::hash::{BuildHasher, Hasher};
    thread_local! {
      static STATE: Cell<u64> = Cell::new(std::collections::hash_map::RandomState::new().build_hasher().finish());
    }
    Self(STATE.with(|state| {
      let next = state.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
      state.set(next);
      let mut z = next;
      z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
      z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
      z ^ (z >> 31)
    }))
  }

  /// The id as written: 16 hex digits.
  pub fn text(self) -> RequestIdText {
    let mut digits = [0u8; 16];
    // A byte at a time from a table of digit pairs: this runs twice per request (for JS and for
    // the response header).
    for (pair, byte) in digits.chunks_exact_mut(2).zip(self.0.to_be_bytes()) {
      pair.copy_from_slice(&HEX_PAIRS[usize::from(byte)]);
    }
    RequestIdText(digits)
  }

  /// Reads an id back from its 16 hex digits (as JS holds it).
  pub fn parse(text: &str) -> Option<Self> {
    if text.len() != 16 || !text.bytes().all(|c| c.is_ascii_hexdigit()) {
      return None;
    }
    u64::from_str_radix(text, 16).ok().map(Self)
  }
}

/// The two lowercase hex digits of every byte.
const HEX_PAIRS: [[u8; 2]; 256] = {
  const HEX: &[u8; 16] = b"0123456789abcdef";
  let mut pairs = [[0u8; 2]; 256];
  let mut byte = 0;
  while byte < 256 {
    pairs[byte] = [HEX[byte >> 4], HEX[byte & 0xf]];
    byte += 1;
  }
  pairs
};

/// A [`RequestId`] written out, on the stack.
#[derive(Clone, Copy)]
pub struct RequestIdText([u8; 16]);

impl RequestIdText {
  pub fn as_str(&self) -> &str {
    // INVARIANT: hex digits are ASCII.
    std::str::from_utf8(&self.0).expect("hex digits are ASCII")
  }
}

impl fmt::Display for RequestId {
  fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    f.write_str(self.text().as_str())
  }
}

impl fmt::Debug for RequestId {
  fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    fmt::Display::fmt(self, f)
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn ids_are_16_lowercase_hex_digits_differ_and_read_back() {
    let (a, b) = (RequestId::generate(), RequestId::generate());
    for id in [a, b] {
      let text = id.text();
      assert_eq!(text.as_str().len(), 16, "{id}");
      assert!(
        text
          .as_str()
          .bytes()
          .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)),
        "{id}"
      );
      assert_eq!(RequestId::parse(text.as_str()), Some(id));
      assert_eq!(text.as_str(), format!("{:016x}", id.0));
    }
    assert_ne!(a, b);
    assert_eq!(RequestId(0x00ab_cdef_0123_4567).to_string(), "00abcdef01234567");
    assert_eq!(RequestId::parse("abc"), None);
    assert_eq!(RequestId::parse("+bcdef0123456789"), None);
  }
}
