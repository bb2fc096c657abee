//! Memory one isolate may hold: its V8 heap and the backing stores of its ArrayBuffers (typed
//! arrays, Blobs' bytes, WebAssembly memories) under one cap.
//!
//! The heap is bounded by V8 itself (the isolate's heap limit, with a near-heap-limit callback
//! that terminates the isolate rather than letting V8 abort the process). Backing stores live
//! outside the heap, so V8 would not count them: every isolate gets its own [`MemoryBudget`] as its
//! ArrayBuffer allocator, which refuses an allocation that would take the isolate past its cap. V8
//! turns the refusal into a `RangeError` in JavaScript, so `new ArrayBuffer(2 ** 31)` fails cleanly.
//! WebAssembly memories are reserved by V8 outside any allocator, and the heap statistics do not
//! count them; V8's external-memory counter does, at their current size however they grew. The
//! isolate layer reads that counter after every slice and measures the isolate when it has grown;
//! in between, a memory made or grown from JavaScript counts what it asked for
//! ([`MemoryAccount::reserve_wasm`]).

use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use deno_core::v8;

use crate::isolate::ext::MemoryAccount;

/// The memory accounting of one isolate. Shared with V8 (as the allocator's state) and with the
/// isolate layer, which reads it after each slice.
#[derive(Debug)]
pub struct MemoryBudget {
  /// Bytes the isolate may hold in all.
  cap: usize,
  /// Bytes of ArrayBuffer backing stores allocated and not yet freed.
  buffers: AtomicUsize,
  /// The isolate's heap as last measured: the share of the cap buffers cannot have.
  heap: AtomicUsize,
  /// Bytes of WebAssembly memory made or grown from JavaScript since the isolate was last measured
  /// (the measurement counts them then, in `heap`).
  wasm: AtomicUsize,
  /// Set once an allocation has been refused: the isolate hit its limit and will be discarded.
  refused: AtomicBool,
  /// Stops the isolate's JavaScript when bytes it cannot refuse (Blob parts) take it past its cap.
  isolate: std::sync::OnceLock<v8::IsolateHandle>,
}

impl MemoryBudget {
  /// A budget of `cap` bytes.
  pub fn new(cap: usize) -> Arc<Self> {
    Arc::new(Self {
      cap,
      buffers: AtomicUsize::new(0),
      heap: AtomicUsize::new(0),
      wasm: AtomicUsize::new(0),
      refused: AtomicBool::new(false),
      isolate: std::sync::OnceLock::new(),
    })
  }

  /// The isolate this budget belongs to, once it exists (the budget is made first, for its
  /// allocator).
  pub fn set_isolate(&self, isolate: v8::IsolateHandle) {
    let _ = self.isolate.set(isolate);
  }

  pub fn cap(&self) -> usize {
    self.cap
  }

  /// Bytes of backing stores held now.
  pub fn buffer_bytes(&self) -> usize {
    self.buffers.load(Ordering::Relaxed)
  }

  /// Records the heap size the isolate layer measured.
  pub fn set_heap_bytes(&self, bytes: usize) {
    self.heap.store(bytes, Ordering::Relaxed);
  }

  /// Forgets the WebAssembly memory reserved from JavaScript: the isolate layer measured it.
  pub fn set_wasm_bytes(&self, bytes: usize) {
    self.wasm.store(bytes, Ordering::Relaxed);
  }

  /// Bytes of WebAssembly memory made or grown from JavaScript since the last measurement.
  fn wasm_bytes(&self) -> usize {
    self.wasm.load(Ordering::Relaxed)
  }

  /// Whether an allocation has been refused.
  pub fn refused(&self) -> bool {
    self.refused.load(Ordering::Relaxed)
  }

  /// Takes `len` bytes from the budget as backing stores, or refuses (and records the refusal) if
  /// they would take the isolate past its cap: what the allocator does for every backing store.
  fn reserve(&self, len: usize) -> bool {
    self.take(&self.buffers, &self.wasm, len)
  }

  /// Adds `len` to `counter`, unless the heap, `counter` and `other` would then be past the cap:
  /// then records the refusal.
  fn take(&self, counter: &AtomicUsize, other: &AtomicUsize, len: usize) -> bool {
    let others = self
      .heap
      .load(Ordering::Relaxed)
      .saturating_add(other.load(Ordering::Relaxed));
    let before = counter.fetch_add(len, Ordering::Relaxed);
    if others.saturating_add(before).saturating_add(len) > self.cap {
      counter.fetch_sub(len, Ordering::Relaxed);
      self.refused.store(true, Ordering::Relaxed);
      return false;
    }
    true
  }

  fn release(&self, len: usize) {
    self.buffers.fetch_sub(len, Ordering::Relaxed);
  }
}

impl MemoryAccount for MemoryBudget {
  fn reserve(&self, bytes: usize) -> bool {
    MemoryBudget::reserve(self, bytes)
  }

  fn available(&self) -> usize {
    let used = self
      .heap
      .load(Ordering::Relaxed)
      .saturating_add(self.buffers.load(Ordering::Relaxed))
      .saturating_add(self.wasm_bytes());
    self.cap.saturating_sub(used)
  }

  fn reserve_wasm(&self, bytes: usize) -> bool {
    self.take(&self.wasm, &self.buffers, bytes)
  }

  fn refused(&self) -> bool {
    MemoryBudget::refused(self)
  }

  fn charge(&self, bytes: usize) {
    if !MemoryBudget::reserve(self, bytes) {
      // Held all the same (the caller has the bytes already): counted, and the JavaScript that
      // asked for them is stopped now, before it asks again; the isolate layer sees the refusal
      // and reports the memory limit.
      self.buffers.fetch_add(bytes, Ordering::Relaxed);
      if let Some(isolate) = self.isolate.get() {
        isolate.terminate_execution();
      }
    }
  }

  fn release(&self, bytes: usize) {
    MemoryBudget::release(self, bytes);
  }
}

unsafe extern "C" fn allocate(budget: &MemoryBudget, len: usize) -> *mut c_void {
  if !budget.reserve(len) {
    return std::ptr::null_mut();
  }
  // SAFETY: calloc may be called with any size; a null result is handled below.
  let data = unsafe { libc::calloc(len.max(1), 1) };
  if data.is_null() {
    budget.release(len);
  }
  data
}

unsafe extern "C" fn allocate_uninitialized(budget: &MemoryBudget, len: usize) -> *mut c_void {
  if !budget.reserve(len) {
    return std::ptr::null_mut();
  }
  // SAFETY: as above.
  let data = unsafe { libc::malloc(len.max(1)) };
  if data.is_null() {
    budget.release(len);
  }
  data
}

unsafe extern "C" fn free(budget: &MemoryBudget, data: *mut c_void, len: usize) {
  budget.release(len);
  // SAFETY: V8 frees only what `allocate` or `allocate_uninitialized` returned.
  unsafe { libc::free(data) };
}

unsafe extern "C" fn drop_budget(budget: *const MemoryBudget) {
  // SAFETY: the pointer came from `Arc::into_raw` in `allocator`; V8 drops the allocator once.
  drop(unsafe { Arc::from_raw(budget) });
}

/// Free memory glibc's allocator may gain, since it last gave memory back, before
/// [`return_freed_memory`] gives it back again.
const HELD_FREE_BYTES: usize = 32 << 20;

/// What glibc held free right after the last trim: memory it gave back still counts as free in
/// its statistics, so growth past this is what matters.
static FREE_AFTER_TRIM: AtomicUsize = AtomicUsize::new(0);
/// Only one thread trims at a time; the others skip their turn.
static TRIMMING: AtomicBool = AtomicBool::new(false);

/// Gives memory the process has freed back to the OS, if glibc holds more than
/// [`HELD_FREE_BYTES`] of it. glibc keeps freed blocks in its arenas (past a few large frees its
/// threshold for mapping blocks of their own rises to 32 MiB), so a tenant that made the node
/// allocate and free hundreds of MiB (a decompression, a large body, a discarded isolate) would
/// leave its RSS up for good. Called by isolate threads when an isolate is dropped and when they
/// have been idle a while; it costs a walk of the allocator's free lists.
pub fn return_freed_memory() {
  #[cfg(all(target_os = "linux", target_env = "gnu"))]
  {
    if TRIMMING.swap(true, Ordering::Acquire) {
      return;
    }
    // SAFETY: both only read or rearrange the allocator's own state, under its locks.
    unsafe {
      let free = libc::mallinfo2().fordblks;
      let before = FREE_AFTER_TRIM.load(Ordering::Relaxed);
      if free < before {
        // Reused since: follow it down, so that growth is measured from here.
        FREE_AFTER_TRIM.store(free, Ordering::Relaxed);
      } else if free - before > HELD_FREE_BYTES {
        libc::malloc_trim(0);
        FREE_AFTER_TRIM.store(libc::mallinfo2().fordblks, Ordering::Relaxed);
      }
    }
    TRIMMING.store(false, Ordering::Release);
  }
}

static VTABLE: v8::RustAllocatorVtable<MemoryBudget> = v8::RustAllocatorVtable {
  allocate,
  allocate_uninitialized,
  free,
  drop: drop_budget,
};

/// An ArrayBuffer allocator that draws on `budget`, for one isolate's `CreateParams`.
pub fn allocator(budget: &Arc<MemoryBudget>) -> v8::UniqueRef<v8::Allocator> {
  let handle = Arc::into_raw(budget.clone());
  // SAFETY: `handle` is a live MemoryBudget, kept alive by the reference leaked into it until
  // V8 calls `drop_budget`; VTABLE's functions expect exactly that type.
  unsafe { v8::new_rust_allocator(handle, &VTABLE) }
}
