// Islet edge layer, step 5: WebAssembly memory counted against the isolate's memory limit.
//
// V8 reserves WebAssembly memory itself, outside the ArrayBuffer allocator that counts every other
// backing store (src/limits/memory.rs), and the heap statistics do not count it either. So:
//
// - `new WebAssembly.Memory` and `Memory.prototype.grow` check first that the isolate has room for
//   the bytes, and fail with a RangeError, as an over-large ArrayBuffer does, when it has not;
// - every memory JavaScript can reach is kept (weakly) in a list: those made with
//   `new WebAssembly.Memory`, and those an instance exports. The isolate layer sums their sizes
//   after slices of JavaScript (`wasmMemoryBytes`, read through the original `buffer` and
//   `byteLength` getters), which catches growth from inside a module (`memory.grow`) too, and
//   stops the isolate past its limit;
// - so a module may define a memory only if it exports it: one it kept to itself could grow
//   unseen. Modules are checked as they are compiled (`new WebAssembly.Module`, `compile`,
//   `instantiate` from bytes, and the streaming forms, which are compiled from the bytes read),
//   and only a module checked so may be instantiated.
import { primordials } from "ext:core/mod.js";
import { ops } from "ext:islet_runtime/00_ops.js";

const {
  ArrayBufferIsView,
  ArrayBufferPrototype,
  ArrayBufferPrototypeGetByteLength,
  ArrayPrototypePush,
  FunctionPrototypeCall,
  NumberIsFinite,
  ObjectDefineProperty,
  ObjectGetOwnPropertyDescriptor,
  ObjectPrototypeIsPrototypeOf,
  PromisePrototypeThen,
  RangeError,
  ReflectApply,
  ReflectConstruct,
  SafeWeakRef,
  SafeWeakSet,
  TypeError,
  TypedArrayPrototypeGetBuffer,
  TypedArrayPrototypeGetByteLength,
  TypedArrayPrototypeGetByteOffset,
  TypedArrayPrototypeSlice,
  Uint8Array,
  WeakRefPrototypeDeref,
  WeakSetPrototypeAdd,
  WeakSetPrototypeHas,
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

/** The memories JavaScript can reach, weakly: summed by `wasmMemoryBytes`. */
const memories = [];
/** Modules compiled through the wrappers below, and so checked. */
const checked = new SafeWeakSet();

/** Reads an unsigned LEB128 number at `at`: [value, next offset]. */
function leb(bytes, at) {
  let value = 0;
  let scale = 1;
  for (;;) {
    if (at >= bytes.length) {
      return [value, bytes.length];
    }
    const byte = bytes[at++];
    value += (byte & 0x7f) * scale;
    if ((byte & 0x80) === 0) {
      return [value, at];
    }
    scale *= 128;
  }
}

/**
 * Whether a module whose binary is `bytes` (a Uint8Array), and which imports `imported` memories,
 * exports every memory it defines: the memory section's count against the export section's
 * memory indices.
 */
function exportsItsMemories(bytes, imported) {
  let defined = 0;
  const exported = [];
  let at = 8;
  while (at < bytes.length) {
    const id = bytes[at];
    const [size, body] = leb(bytes, at + 1);
    const end = body + size;
    if (id === 5) {
      defined = leb(bytes, body)[0];
    } else if (id === 7) {
      let [count, p] = leb(bytes, body);
      for (let i = 0; i < count && p < end; i++) {
        const [nameLength, name] = leb(bytes, p);
        const kind = bytes[name + nameLength];
        const [index, next] = leb(bytes, name + nameLength + 1);
        if (kind === 2) {
          ArrayPrototypePush(exported, index);
        }
        p = next;
      }
    }
    at = end;
  }
  for (let index = imported; index < imported + defined; index++) {
    let found = false;
    for (let i = 0; i < exported.length; i++) {
      if (exported[i] === index) found = true;
    }
    if (!found) {
      return false;
    }
  }
  return true;
}

/** The bytes of a BufferSource, as a Uint8Array over them (no copy); null if it is none. */
function bytesOf(source) {
  if (ArrayBufferIsView(source)) {
    return new Uint8Array(
      TypedArrayPrototypeGetBuffer(source),
      TypedArrayPrototypeGetByteOffset(source),
      TypedArrayPrototypeGetByteLength(source),
    );
  }
  if (ObjectPrototypeIsPrototypeOf(ArrayBufferPrototype, source)) {
    return new Uint8Array(source);
  }
  return null;
}

/**
 * Wraps `WebAssembly.Memory` and its `grow`, and the ways to compile and instantiate a module (see
 * the top of this file); returns `wasmMemoryBytes`. Called when an isolate boots: V8 installs the
 * `WebAssembly` namespace only in contexts that run, not in the one the snapshot is made from.
 * Parenthesized: compiled into the snapshot, not in each isolate (see 30_dispatch.js).
 */
export const countWasmMemory = (function countWasmMemory() {
  const WebAssembly = globalThis.WebAssembly;
  const WasmMemory = WebAssembly.Memory;
  const WasmModule = WebAssembly.Module;
  const WasmInstance = WebAssembly.Instance;
  const wasmGrow = WasmMemory.prototype.grow;
  const bufferOf = ObjectGetOwnPropertyDescriptor(WasmMemory.prototype, "buffer").get;
  const exportsOf = ObjectGetOwnPropertyDescriptor(WasmInstance.prototype, "exports").get;
  const moduleImports = WasmModule.imports;
  const wasmCompile = WebAssembly.compile;
  const wasmInstantiate = WebAssembly.instantiate;
  const SharedArrayBuffer = globalThis.SharedArrayBuffer;
  const sharedByteLength = SharedArrayBuffer === undefined
    ? undefined
    : ObjectGetOwnPropertyDescriptor(SharedArrayBuffer.prototype, "byteLength").get;

  function keep(memory) {
    ArrayPrototypePush(memories, new SafeWeakRef(memory));
  }

  /** Checks `module` compiled from `source`; returns it, or throws if it keeps a memory unseen. */
  function check(module, source) {
    const bytes = bytesOf(source);
    let imported = 0;
    const imports = moduleImports(module);
    for (let i = 0; i < imports.length; i++) {
      if (imports[i].kind === "memory") imported++;
    }
    if (bytes === null || !exportsItsMemories(bytes, imported)) {
      throw new TypeError(
        "WebAssembly.Module: Islet runs a module only if it exports the memory it defines (its size counts against the function's memory limit)",
      );
    }
    WeakSetPrototypeAdd(checked, module);
    return module;
  }

  /** Keeps the memories `instance` exports; refuses an instance of a module never checked. */
  function instantiated(instance) {
    const exports = FunctionPrototypeCall(exportsOf, instance);
    for (const name in exports) {
      const value = exports[name];
      if (ObjectPrototypeIsPrototypeOf(WasmMemory.prototype, value)) {
        keep(value);
      }
    }
    return instance;
  }

  function mustBeChecked(module) {
    if (!WeakSetPrototypeHas(checked, module)) {
      throw new TypeError("WebAssembly.Instance: the module was not compiled by this isolate's WebAssembly");
    }
  }

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
    const memory = ReflectConstruct(WasmMemory, [copy], new.target);
    keep(memory);
    return memory;
  }
  Memory.prototype = WasmMemory.prototype;

  // https://webassembly.github.io/spec/js-api/#dom-memory-grow
  function grow(delta) {
    reserve(+delta);
    return FunctionPrototypeCall(wasmGrow, this, delta);
  }

  // https://webassembly.github.io/spec/js-api/#dom-module-module
  function Module(source) {
    if (new.target === undefined) {
      throw new TypeError("WebAssembly.Module must be invoked with 'new'");
    }
    return check(ReflectConstruct(WasmModule, [source], new.target), source);
  }
  Module.prototype = WasmModule.prototype;
  Module.imports = WasmModule.imports;
  Module.exports = WasmModule.exports;
  Module.customSections = WasmModule.customSections;

  // https://webassembly.github.io/spec/js-api/#dom-instance-instance
  function Instance(module, importObject) {
    if (new.target === undefined) {
      throw new TypeError("WebAssembly.Instance must be invoked with 'new'");
    }
    mustBeChecked(module);
    return instantiated(ReflectConstruct(WasmInstance, [module, importObject], new.target));
  }
  Instance.prototype = WasmInstance.prototype;

  const namespace = {
    compile(source) {
      // A copy: what is checked once compiled must be what was compiled, whatever the caller
      // writes into its buffer meanwhile.
      const bytes = bytesOf(source);
      const copy = bytes === null ? source : TypedArrayPrototypeSlice(bytes);
      return PromisePrototypeThen(ReflectApply(wasmCompile, WebAssembly, [copy]), (module) => check(module, copy));
    },
    instantiate(source, importObject) {
      if (ObjectPrototypeIsPrototypeOf(WasmModule.prototype, source)) {
        mustBeChecked(source);
        return PromisePrototypeThen(
          ReflectApply(wasmInstantiate, WebAssembly, [source, importObject]),
          instantiated,
        );
      }
      // From bytes: compiled and checked first, then instantiated.
      return PromisePrototypeThen(namespace.compile(source), (module) =>
        PromisePrototypeThen(
          ReflectApply(wasmInstantiate, WebAssembly, [module, importObject]),
          (instance) => ({ module, instance: instantiated(instance) }),
        ));
    },
    compileStreaming(source) {
      return PromisePrototypeThen(source, (response) =>
        PromisePrototypeThen(response.arrayBuffer(), (bytes) => namespace.compile(bytes)));
    },
    instantiateStreaming(source, importObject) {
      return PromisePrototypeThen(source, (response) =>
        PromisePrototypeThen(response.arrayBuffer(), (bytes) => namespace.instantiate(bytes, importObject)));
    },
  };

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
  ObjectDefineProperty(WasmModule.prototype, "constructor", { value: Module, writable: true, configurable: true });
  ObjectDefineProperty(WasmInstance.prototype, "constructor", {
    value: Instance,
    writable: true,
    configurable: true,
  });
  for (const [name, value] of [["Memory", Memory], ["Module", Module], ["Instance", Instance]]) {
    ObjectDefineProperty(WebAssembly, name, { value, writable: true, configurable: true });
  }
  for (const name of ["compile", "instantiate", "compileStreaming", "instantiateStreaming"]) {
    if (name in WebAssembly) {
      ObjectDefineProperty(WebAssembly, name, {
        value: namespace[name],
        writable: true,
        enumerable: true,
        configurable: true,
      });
    }
  }

  /** The bytes of every live memory JavaScript can reach, through the original getters. */
  return function wasmMemoryBytes() {
    let total = 0;
    let live = 0;
    for (let i = 0; i < memories.length; i++) {
      const memory = WeakRefPrototypeDeref(memories[i]);
      if (memory === undefined) {
        continue;
      }
      memories[live++] = memories[i];
      const buffer = FunctionPrototypeCall(bufferOf, memory);
      try {
        total += ArrayBufferPrototypeGetByteLength(buffer);
      } catch {
        // A shared memory's buffer is a SharedArrayBuffer.
        total += FunctionPrototypeCall(sharedByteLength, buffer);
      }
    }
    memories.length = live;
    return total;
  };
});
