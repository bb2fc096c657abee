// Islet edge layer, step 5: WebAssembly memory counted against the isolate's memory limit.
//
// V8 reserves WebAssembly memory itself, outside the ArrayBuffer allocator that counts every other
// backing store (src/limits/memory.rs). So `new WebAssembly.Memory` and `Memory.prototype.grow`
// reserve their bytes from the same budget first, and fail with a RangeError, as an over-large
// ArrayBuffer does, when the isolate has no room left. (Growth from inside a module, `memory.grow`,
// is caught by the heap statistics the isolate layer reads after each slice of JavaScript.)
import { primordials } from "ext:core/mod.js";
import { ops } from "ext:islet_runtime/00_ops.js";

const {
  FunctionPrototypeCall,
  NumberIsFinite,
  ObjectDefineProperty,
  RangeError,
  ReflectConstruct,
  TypeError,
} = primordials;

const PAGE = 65536;

function reserve(pages) {
  const bytes = pages * PAGE;
  if (NumberIsFinite(bytes) && bytes > 0 && !ops.op_islet_reserve_memory(bytes)) {
    throw new RangeError(
      `WebAssembly.Memory: cannot allocate ${pages} more pages within this function's memory limit`,
    );
  }
}

/**
 * Wraps `WebAssembly.Memory` and its `grow`. Called when an isolate boots: V8 installs the
 * `WebAssembly` namespace only in contexts that run, not in the one the snapshot is made from.
 * Parenthesized: compiled into the snapshot, not in each isolate (see 30_dispatch.js).
 */
export const countWasmMemory = (function countWasmMemory() {
  const WasmMemory = globalThis.WebAssembly.Memory;
  const wasmGrow = WasmMemory.prototype.grow;

  // https://webassembly.github.io/spec/js-api/#dom-memory-memory
  function Memory(descriptor) {
    if (new.target === undefined) {
      throw new TypeError("WebAssembly.Memory must be invoked with 'new'");
    }
    if (descriptor === null || typeof descriptor !== "object") {
      return ReflectConstruct(WasmMemory, [descriptor], new.target);
    }
    // Read once, so a getter cannot report one size here and another to V8.
    const copy = {
      initial: descriptor.initial,
      maximum: descriptor.maximum,
      shared: descriptor.shared,
    };
    reserve(+copy.initial);
    return ReflectConstruct(WasmMemory, [copy], new.target);
  }
  Memory.prototype = WasmMemory.prototype;

  // https://webassembly.github.io/spec/js-api/#dom-memory-grow
  function grow(delta) {
    reserve(+delta);
    return FunctionPrototypeCall(wasmGrow, this, delta);
  }

  ObjectDefineProperty(WasmMemory.prototype, "constructor", {
    value: Memory,
    writable: true,
    configurable: true,
  });
  ObjectDefineProperty(WasmMemory.prototype, "grow", {
    value: grow,
    writable: true,
    enumerable: true,
    configurable: true,
  });
  ObjectDefineProperty(globalThis.WebAssembly, "Memory", {
    value: Memory,
    writable: true,
    configurable: true,
  });
});
