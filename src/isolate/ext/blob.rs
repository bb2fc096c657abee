//! Blob bytes counted against the isolate's memory budget.
//!
//! `new Blob(parts)` copies each part into Rust memory (deno_web's blob store), outside V8's heap
//! and outside the ArrayBuffer allocator that counts every other buffer. This store wraps deno_web's
//! own: a part is charged to the isolate's budget when it is stored and given back when JS drops
//! it. A part that takes the isolate past its cap is still stored (deno_web's op cannot fail) but
//! the refusal is recorded, and the isolate is stopped at the end of the slice, as for a refused
//! ArrayBuffer. An object URL (`URL.createObjectURL`) is charged for its Blob's bytes until it is
//! revoked, since it keeps them alive. A part made by slicing or cloning another shares its bytes
//! but is charged again: over-counting, in the safe direction. It never decides anything itself.

use std::sync::Arc;

use deno_core::url::Url;
use deno_web::{Blob, BlobPart, BlobStore, BlobStoreTrait};
use uuid::Uuid;

use super::ops::MemoryAccount;

/// deno_web's blob store, with every part's bytes charged to one isolate's memory budget.
pub struct AccountedBlobStore {
  inner: BlobStore,
  memory: Arc<dyn MemoryAccount + Send + Sync>,
}

impl AccountedBlobStore {
  pub fn new(memory: Arc<dyn MemoryAccount + Send + Sync>) -> Self {
    Self {
      inner: BlobStore::default(),
      memory,
    }
  }
}

impl std::fmt::Debug for AccountedBlobStore {
  fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
    f.debug_struct("AccountedBlobStore").finish_non_exhaustive()
  }
}

fn blob_bytes(blob: &Blob) -> usize {
  blob.parts.iter().map(|part| part.size()).sum()
}

impl BlobStoreTrait for AccountedBlobStore {
  fn insert_part(&self, part: Arc<dyn BlobPart + Send + Sync>) -> Uuid {
    self.memory.charge(part.size());
    self.inner.insert_part(part)
  }

  fn get_part(&self, id: &Uuid) -> Option<Arc<dyn BlobPart + Send + Sync>> {
    self.inner.get_part(id)
  }

  fn remove_part(&self, id: &Uuid) -> Option<Arc<dyn BlobPart + Send + Sync>> {
    let part = self.inner.remove_part(id)?;
    self.memory.release(part.size());
    Some(part)
  }

  fn get_object_url(&self, url: Url) -> Option<Arc<Blob>> {
    self.inner.get_object_url(url)
  }

  fn insert_object_url(&self, blob: Blob, maybe_location: Option<Url>) -> Url {
    // The URL keeps the parts alive after the Blob is collected (and its parts' charges given
    // back): it is charged for them until revoked.
    self.memory.charge(blob_bytes(&blob));
    self.inner.insert_object_url(blob, maybe_location)
  }

  fn remove_object_url(&self, url: &Url) {
    if let Some(blob) = self.inner.get_object_url(url.clone()) {
      self.memory.release(blob_bytes(&blob));
    }
    self.inner.remove_object_url(url)
  }

  fn clear(&self) {
    self.inner.clear()
  }
}
