//! Bakes Islet's V8 startup snapshot: Deno's Web API extensions plus our edge layer (`runtime-js/`),
//! evaluated once here so that every isolate starts with them already in its heap.

use std::path::PathBuf;

// The same extension list the library restores isolates with; see its module docs.
#[path = "src/isolate/ext/mod.rs"]
#[allow(dead_code)]
mod ext;

fn main() {
  println!("cargo:rerun-if-changed=runtime-js");
  println!("cargo:rerun-if-changed=src/isolate/ext");

  let output = deno_core::snapshot::create_snapshot(
    deno_core::snapshot::CreateSnapshotOptions {
      cargo_manifest_dir: env!("CARGO_MANIFEST_DIR"),
      startup_snapshot: None,
      skip_op_registration: false,
      extensions: ext::extensions(
        deno_fetch::Options::default(),
        std::sync::Arc::new(deno_web::BlobStore::default()),
      ),
      extension_transpiler: None,
      // The request path runs once before the heap is serialized, so the code it compiled is
      // kept (see `__isletWarmSnapshot` in runtime-js/99_main.js).
      with_runtime_cb: Some(Box::new(|runtime| {
        runtime
          .execute_script(
            "ext:islet_runtime/warm_snapshot",
            "globalThis.__isletWarmSnapshot()",
          )
          .unwrap_or_else(|err| panic!("warming the snapshot failed: {err}"));
      })),
    },
    None,
  )
  .unwrap_or_else(|err| panic!("building the startup snapshot failed: {err}"));

  for path in &output.files_loaded_during_snapshot {
    println!("cargo:rerun-if-changed={}", path.display());
  }
  let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
  std::fs::write(out.join("ISLET_SNAPSHOT.bin"), &output.output).expect("writing the snapshot");
}
