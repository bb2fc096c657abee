// Islet edge layer, step 5: WebAssembly memory counted against the isolate's memory limit.
//
// V8 reserves WebAssembly memory itself, outside the ArrayBuffer allocator that counts every other
// backing store (src/limits/memory.rs), and counts it only in the isolate's external memory, which
// the isolate layer reads after every slice of JavaScript: that catches any growth, `memory.grow`
// inside a module included, and stops the isolate past its limit. Here `new WebAssembly.Memory`
// and `Memory.prototype.grow` ask the same budget first, so that they fail with a RangeError, as an
// over-large ArrayBuffer does, rather than stop the isolate, when it has no room left.
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
    // Read and converted once, so neither a getter nor a `valueOf` can report one size here and
    // another to V8.
    const maximum = descriptor.maximum;
    const copy = {
      initial: +descriptor.initial,
      maximum: maximum === undefined ? undefined : +maximum,
      shared: descriptor.shared,
    };
    const address = descriptor.address;
    if (address !== undefined) copy.address = address;
    reserve(copy.initial);
    return ReflectConstruct(WasmMemory, [copy], new.target);
  }
  Memory.prototype = WasmMemory.prototype;

  // https://webassembly.github.io/spec/js-api/#dom-memory-grow
  function grow(delta) {
    const pages = +delta;
    reserve(pages);
    return FunctionPrototypeCall(wasmGrow, this, pages);
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
