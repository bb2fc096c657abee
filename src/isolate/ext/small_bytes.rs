//! Short byte strings copied into `Bytes` cut from a per-thread slab: a warm response's body of a
//! few bytes and its request id header take a share of a slab (one reference count) instead of a
//! buffer of their own (an allocation and a free each).
//!
//! Owns each thread's current slab, whose uncut rest it keeps until a piece no longer fits. It never
//! cuts more than [`SMALL`] bytes at once. A slab it has moved on from lives as long as its last
//! piece.
//! So each piece held long (a body an HTTP/2 client leaves unread behind a closed flow-control
//! window) can hold a slab of [`SLAB`] bytes with it, and N such pieces N slabs: the slab is kept
//! small, about what a response held on a stream costs anyway (its head and header map).

use std::cell::RefCell;

use bytes::{Bytes, BytesMut};

/// The most a piece cut from a slab holds: longer strings get a buffer of their own.
pub(crate) const SMALL: usize = 128;
/// A slab's size: eight pieces of the largest size, or some dozens of a warm response's body
/// and request id.
const SLAB: usize = 1024;

thread_local! {
  /// What is left of this thread's slab.
  static SLAB_LEFT: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// `bytes`, copied.
pub(crate) fn copy(bytes: &[u8]) -> Bytes {
  if bytes.len() > SMALL || bytes.is_empty() {
    return Bytes::copy_from_slice(bytes);
  }
  SLAB_LEFT.with_borrow_mut(|left| {
    if left.capacity() < bytes.len() {
      // The old slab goes with its last piece.
      *left = BytesMut::with_capacity(SLAB);
    }
    left.extend_from_slice(bytes);
    left.split().freeze()
  })
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn pieces_keep_their_bytes_as_slabs_fill_and_are_replaced() {
    let mut pieces = Vec::new();
    for n in 0..2_000usize {
      let text = format!("{n}:{}", "x".repeat(n % (SMALL + 40)));
      pieces.push((text.clone(), copy(text.as_bytes())));
    }
    for (text, piece) in &pieces {
      assert_eq!(piece.as_ref(), text.as_bytes());
    }
    // Dropped out of order, on another thread: each slab is freed with its last piece.
    let (first, rest): (Vec<_>, Vec<_>) = pieces.into_iter().enumerate().partition(|(i, _)| i % 2 == 0);
    std::thread::spawn(move || drop(first)).join().unwrap();
    for (_, (text, piece)) in rest {
      assert_eq!(piece.as_ref(), text.as_bytes());
    }
    assert!(copy(b"").is_empty());
  }
}
