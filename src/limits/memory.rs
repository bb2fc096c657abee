//! Memory one isolate may hold: its V8 heap and the backing stores of its ArrayBuffers (typed
//! arrays, Blobs' bytes, WebAssembly memories) under one cap.
//!
//! The heap is bounded by V8 itself (the isolate's heap limit, with a near-heap-limit callback
//! that terminates the isolate rather than letting V8 abort the process). Backing stores live
//! outside the heap, so V8 would not count them: every isolate gets its own [`MemoryBudget`] as its
//! ArrayBuffer allocator, which refuses an allocation that would take the isolate past its cap. V8
//! turns the refusal into a `RangeError` in JavaScript, so `new ArrayBuffer(2 ** 31)` fails cleanly.
//! WebAssembly memories are reserved by V8 outside any allocator; they are counted from the heap
//! statistics after each slice of an isolate that uses WebAssembly.

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
  /// Set once an allocation has been refused: the isolate hit its limit and will be discarded.
  refused: AtomicBool,
}

impl MemoryBudget {
  /// A budget of `cap` bytes.
  pub fn new(cap: usize) -> Arc<Self> {
    Arc::new(Self {
      cap,
      buffers: AtomicUsize::new(0),
      heap: AtomicUsize::new(0),
      refused: AtomicBool::new(false),
    })
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

  /// Whether an allocation has been refused.
  pub fn refused(&self) -> bool {
    self.refused.load(Ordering::Relaxed)
  }

  /// Takes `len` bytes from the budget, or refuses (and records the refusal) if they would take
  /// the isolate past its cap. What the allocator does for every backing store, and what
  /// WebAssembly memory does through `op_islet_reserve_memory`; WebAssembly memory is never given
  /// back, as V8 keeps its reservation until the isolate goes.
  fn reserve(&self, len: usize) -> bool {
    let heap = self.heap.load(Ordering::Relaxed);
    let before = self.buffers.fetch_add(len, Ordering::Relaxed);
    if heap.saturating_add(before).saturating_add(len) > self.cap {
      self.buffers.fetch_sub(len, Ordering::Relaxed);
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

  fn refused(&self) -> bool {
    MemoryBudget::refused(self)
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
