//! What a function's bucket and images bindings reach on the node: the isolate side
//! (`isolate::ext::objects`) has already checked that the function holds the binding and named
//! the bucket; this module hands the work to the node's buckets (`objects`) and image code
//! (`images`) on the node's own runtime and bounded pool, never on an isolate's thread.
//!
//! It owns the bound on native work (image transforms running at once on the node) and measures
//! what each took, so the isolate can charge it to its invocation. It never decides a limit and
//! never reaches a bucket on a function's say-so alone. Service bindings' side is `services`.

pub(crate) mod images;
pub mod services;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Semaphore;

use crate::isolate::ext::objects::{
  GetOptions, GetResult, HostFuture, ImageOutput, ListOptions, ListResult, ObjectHost, ObjectMeta,
  ObjectSink, PutFuture, PutOptions,
};
use crate::objects::Objects;

/// The node's side of bucket and images bindings.
pub struct NodeBindings {
  objects: Option<Arc<Objects>>,
  /// Image transforms running at once on the node: one per core, so they never take more of the
  /// machine than its isolate threads could.
  image_work: Arc<Semaphore>,
  /// Each function's share of those: half of them (at least one), so one tenant's images never
  /// hold every core.
  image_shares: std::sync::Mutex<HashMap<String, Arc<Semaphore>>>,
  image_share: usize,
  /// Lately decoded JPEGs, so one photo's several outputs decode it once.
  decoded: Arc<images::DecodeCache>,
  runtime: tokio::runtime::Handle,
}

impl NodeBindings {
  /// Call from within the node's runtime.
  pub fn host(objects: Option<Arc<Objects>>) -> Arc<dyn ObjectHost> {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    Arc::new(Self {
      objects,
      image_work: Arc::new(Semaphore::new(cores)),
      image_shares: std::sync::Mutex::new(HashMap::new()),
      image_share: (cores / 2).max(1),
      decoded: Arc::new(images::DecodeCache::default()),
      runtime: tokio::runtime::Handle::current(),
    })
  }

  fn objects(&self) -> Result<Arc<Objects>, String> {
    self.objects.clone().ok_or_else(|| {
      "this node has no object storage (a fleet needs --objects s3://BUCKET?endpoint=URL)".to_string()
    })
  }

  /// Runs `work` on the node's runtime and waits for it from wherever the caller is.
  fn on_node<T: Send + 'static>(
    &self,
    work: impl std::future::Future<Output = Result<T, String>> + Send + 'static,
  ) -> HostFuture<T> {
    let task = self.runtime.spawn(work);
    Box::pin(async move { task.await.map_err(|_| "the object store stopped".to_string())? })
  }
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
  let mut now = libc::timespec {
    tv_sec: 0,
    tv_nsec: 0,
  };
  // SAFETY: `now` is a valid timespec for the call to fill.
  unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
  Duration::new(
    u64::try_from(now.tv_sec).unwrap_or(0),
    u32::try_from(now.tv_nsec).unwrap_or(0),
  )
}

impl ObjectHost for NodeBindings {
  fn head(&self, _function: &str, bucket: &str, key: String) -> HostFuture<Option<ObjectMeta>> {
    let (objects, bucket) = (self.objects(), bucket.to_string());
    self.on_node(async move { objects?.head(&bucket, &key).await })
  }

  fn get(&self, _function: &str, bucket: &str, key: String, options: GetOptions) -> HostFuture<GetResult> {
    let (objects, bucket) = (self.objects(), bucket.to_string());
    self.on_node(async move { objects?.get(&bucket, &key, options).await })
  }

  fn put(
    &self,
    _function: &str,
    bucket: &str,
    key: String,
    options: PutOptions,
  ) -> Result<(ObjectSink, PutFuture), String> {
    let objects = self.objects()?;
    let (sink, chunks) = tokio::sync::mpsc::channel(4);
    let done = self.on_node(objects.put(bucket.to_string(), key, options, chunks));
    Ok((sink, done))
  }

  fn delete(&self, _function: &str, bucket: &str, keys: Vec<String>) -> HostFuture<()> {
    let (objects, bucket) = (self.objects(), bucket.to_string());
    self.on_node(async move { objects?.delete(&bucket, keys).await })
  }

  fn list(&self, _function: &str, bucket: &str, options: ListOptions) -> HostFuture<ListResult> {
    let (objects, bucket) = (self.objects(), bucket.to_string());
    self.on_node(async move { objects?.list(&bucket, options).await })
  }

  fn image_info(&self, input: &[u8]) -> Result<serde_json::Value, String> {
    images::info(input)
  }

  fn image_cost(&self, input: &[u8], spec: &serde_json::Value) -> Result<usize, String> {
    let spec = images::Spec::parse(spec.clone())?;
    images::cost(&images::header(input)?, &spec)
  }

  fn image_transform(
    &self,
    function: &str,
    input: Bytes,
    spec: serde_json::Value,
  ) -> HostFuture<ImageOutput> {
    let permits = self.image_work.clone();
    let (decoded, function_name) = (self.decoded.clone(), function.to_string());
    let share = {
      let mut shares = self.image_shares.lock().unwrap_or_else(|e| e.into_inner());
      // Shares no transform holds or waits for are dropped, so the map stays as small as the set
      // of functions transforming now.
      shares.retain(|_, s| Arc::strong_count(s) > 1);
      shares
        .entry(function.to_string())
        .or_insert_with(|| Arc::new(Semaphore::new(self.image_share)))
        .clone()
    };
    self.on_node(async move {
      let spec = images::Spec::parse(spec)?;
      let _share = share
        .acquire_owned()
        .await
        .map_err(|_| "image work has stopped".to_string())?;
      let _permit = permits
        .acquire_owned()
        .await
        .map_err(|_| "image work has stopped".to_string())?;
      tokio::task::spawn_blocking(move || {
        let started = thread_cpu();
        let result = images::run(&input, &spec, Some((&decoded, &function_name)));
        let cpu = thread_cpu().saturating_sub(started);
        ImageOutput { result, cpu }
      })
      .await
      .map_err(|_| "the image could not be processed (the decoder failed)".to_string())
    })
  }
}
