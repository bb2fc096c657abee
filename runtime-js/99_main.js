// Islet edge layer, step 99: the entry point, evaluated while the snapshot is made.
//
// Importing the numbered modules installs the globals; `__isletBoot` is the one door Rust uses to
// reach the dispatcher. Rust calls it once per isolate, right after restoring the isolate from the
// snapshot and before any tenant code runs; it removes itself and everything Deno-specific, so
// tenant code sees neither.
import { useFastOps } from "ext:islet_runtime/00_ops.js";
import { performance } from "ext:islet_runtime/00_web_globals.js";
import "ext:islet_runtime/00_errors.js";
import "ext:islet_runtime/00_web_fixes.js";
import "ext:islet_runtime/01_request_context.js";
import "ext:islet_runtime/02_console.js";
import "ext:islet_runtime/03_timers.js";
import "ext:islet_runtime/04_fetch.js";
import { countWasmMemory } from "ext:islet_runtime/05_wasm.js";
import "ext:islet_runtime/06_bounded_arrays.js";
import "ext:islet_runtime/06_bounded_work.js";
import "ext:islet_runtime/10_context.js";
import "ext:islet_runtime/20_service_worker.js";
import { dispatch, installHandler, warmUp } from "ext:islet_runtime/30_dispatch.js";

// Called once while the snapshot is made (build.rs, just before the heap is written), never in an isolate that
// serves: it runs the request and response path, so V8 compiles that code into the snapshot and
// every isolate restored from it starts with it compiled, instead of compiling it during its first
// request.
globalThis.__isletWarmSnapshot = function warmSnapshot() {
  delete globalThis.__isletWarmSnapshot;
  warmUp();
};

// Parenthesized: compiled into the snapshot, not in each isolate (see 30_dispatch.js).
globalThis.__isletBoot = (function boot() {
  delete globalThis.__isletBoot;
  delete globalThis.Deno;
  delete globalThis.__bootstrap;
  useFastOps();
  performance.setTimeOrigin();
  countWasmMemory();
  return [dispatch, installHandler, warmUp];
});
