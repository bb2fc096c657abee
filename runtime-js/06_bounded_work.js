// Islet edge layer, step 6: work whose cost a tenant chooses, and which runs where the CPU
// watchdog cannot stop it, bounded before it starts and charged when it ends.
//
// - WebCrypto: Deno runs digests, ciphers, signatures, key generation and derivation on tokio's
//   blocking threads (bounded per isolate thread, src/pool/worker.rs). `terminate_execution` does
//   not reach them, so the parameters that set their cost are capped up front (PBKDF2 iterations,
//   RSA modulus lengths), and each call's time off the thread is charged to the invocation that
//   made it (`op_islet_charge`), against its CPU limit. The capped members are copied into a fresh
//   dictionary before the check, so a getter cannot pass the check with one value and give Deno
//   another.
// - DecompressionStream: deno_web inflates a whole chunk in one op call, on the isolate thread but
//   out of `terminate_execution`'s reach, into buffers Rust allocates outside the isolate's memory
//   budget. Chunks are split into pieces of MAX_INFLATE_INPUT bytes first, so one call inflates at
//   most about a thousand times that (deflate's bound), and each piece of output is copied into a
//   buffer of the isolate's own, which the memory limit counts (and refuses past it).
import { primordials } from "ext:core/mod.js";
import { ops } from "ext:islet_runtime/00_ops.js";
import { DOMException } from "ext:islet_runtime/00_web_globals.js";
import { currentRequestId } from "ext:islet_runtime/01_request_context.js";

const {
  ArrayBufferIsView,
  ArrayBufferPrototype,
  DataViewPrototype,
  DataViewPrototypeGetBuffer,
  DataViewPrototypeGetByteLength,
  DataViewPrototypeGetByteOffset,
  DateNow,
  FunctionPrototypeCall,
  MathMin,
  ObjectDefineProperty,
  ObjectPrototypeIsPrototypeOf,
  PromisePrototypeCatch,
  SafeArrayIterator,
  String,
  StringPrototypeToUpperCase,
  TypedArrayPrototypeGetBuffer,
  TypedArrayPrototypeGetByteLength,
  TypedArrayPrototypeGetByteOffset,
  TypedArrayPrototypeGetLength,
  TypedArrayPrototypeSubarray,
  Uint8Array,
} = primordials;

/** The most PBKDF2 iterations a derivation may ask for (as on Cloudflare Workers). */
export const MAX_PBKDF2_ITERATIONS = 100_000;
/** The longest RSA modulus a key may be generated with: keygen time grows with its fourth power. */
export const MAX_RSA_GENERATE_BITS = 4096;
/** The longest RSA modulus a key may be imported with. */
export const MAX_RSA_IMPORT_BITS = 8192;
/** Input bytes one call of the decompression op inflates at a time. */
const MAX_INFLATE_INPUT = 4096;

const RSA = ["RSASSA-PKCS1-V1_5", "RSA-PSS", "RSA-OAEP"];

function algorithmName(algorithm) {
  if (typeof algorithm === "string") return StringPrototypeToUpperCase(algorithm);
  if (algorithm !== null && typeof algorithm === "object") {
    return StringPrototypeToUpperCase(String(algorithm.name));
  }
  return "";
}

function operationError(message) {
  return new DOMException(message, "OperationError");
}

/**
 * A PBKDF2 algorithm dictionary copied member by member, or the argument as it was for any other
 * algorithm. Throws past the iteration ceiling.
 */
function boundedDerivation(algorithm) {
  if (algorithmName(algorithm) !== "PBKDF2" || typeof algorithm !== "object") {
    return algorithm;
  }
  const copy = { name: algorithm.name, hash: algorithm.hash, salt: algorithm.salt, iterations: algorithm.iterations };
  if (copy.iterations > MAX_PBKDF2_ITERATIONS) {
    throw operationError(
      `PBKDF2 with ${copy.iterations} iterations: Islet allows at most ${MAX_PBKDF2_ITERATIONS}`,
    );
  }
  return copy;
}

/** The same for RSA key generation and its modulus length. */
function boundedGeneration(algorithm) {
  const name = algorithmName(algorithm);
  let isRsa = false;
  for (let i = 0; i < RSA.length; i++) isRsa ||= RSA[i] === name;
  if (!isRsa || typeof algorithm !== "object") {
    return algorithm;
  }
  const copy = {
    name: algorithm.name,
    modulusLength: algorithm.modulusLength,
    publicExponent: algorithm.publicExponent,
    hash: algorithm.hash,
  };
  if (copy.modulusLength > MAX_RSA_GENERATE_BITS) {
    throw operationError(
      `RSA keys of ${copy.modulusLength} bits: Islet generates keys of at most ${MAX_RSA_GENERATE_BITS} bits`,
    );
  }
  return copy;
}

/** Refuses an imported (or unwrapped) RSA key whose modulus is past the ceiling. */
function boundedKey(key) {
  const bits = key?.algorithm?.modulusLength;
  if (typeof bits === "number" && bits > MAX_RSA_IMPORT_BITS) {
    throw operationError(`RSA keys of ${bits} bits: Islet accepts keys of at most ${MAX_RSA_IMPORT_BITS} bits`);
  }
  return key;
}

const SubtleCryptoPrototype = globalThis.SubtleCrypto.prototype;

/**
 * Replaces `SubtleCrypto.prototype[name]` by a method that checks its arguments with `check` (which
 * returns them, copied where it matters), charges the call's time to the running invocation, and
 * checks the result with `checkResult`.
 */
function charged(name, check, checkResult) {
  const inner = SubtleCryptoPrototype[name];
  const method = {
    async [name](...args) {
      if (check !== null) {
        check(args);
      }
      const requestId = currentRequestId();
      const started = DateNow();
      let result;
      try {
        result = await FunctionPrototypeCall(inner, this, ...new SafeArrayIterator(args));
      } finally {
        ops.op_islet_charge(requestId, DateNow() - started);
      }
      return checkResult === null ? result : checkResult(result);
    },
  }[name];
  ObjectDefineProperty(method, "length", { __proto__: null, value: inner.length, configurable: true });
  ObjectDefineProperty(SubtleCryptoPrototype, name, {
    __proto__: null,
    value: method,
    writable: true,
    enumerable: true,
    configurable: true,
  });
}

for (const name of new SafeArrayIterator(["digest", "encrypt", "decrypt", "sign", "verify", "exportKey", "wrapKey"])) {
  charged(name, null, null);
}
charged("deriveBits", (args) => {
  args[0] = boundedDerivation(args[0]);
}, null);
charged("deriveKey", (args) => {
  args[0] = boundedDerivation(args[0]);
}, null);
charged("generateKey", (args) => {
  args[0] = boundedGeneration(args[0]);
}, null);
charged("importKey", null, boundedKey);
charged("unwrapKey", null, boundedKey);

/** The bytes of a BufferSource chunk as a Uint8Array, or null if it is none. */
function bytesOf(chunk) {
  if (ArrayBufferIsView(chunk)) {
    if (ObjectPrototypeIsPrototypeOf(DataViewPrototype, chunk)) {
      return new Uint8Array(
        DataViewPrototypeGetBuffer(chunk),
        DataViewPrototypeGetByteOffset(chunk),
        DataViewPrototypeGetByteLength(chunk),
      );
    }
    return new Uint8Array(
      TypedArrayPrototypeGetBuffer(chunk),
      TypedArrayPrototypeGetByteOffset(chunk),
      TypedArrayPrototypeGetByteLength(chunk),
    );
  }
  if (ObjectPrototypeIsPrototypeOf(ArrayBufferPrototype, chunk)) {
    return new Uint8Array(chunk);
  }
  return null;
}

const InnerDecompressionStream = globalThis.DecompressionStream;
const { ReadableStream, TransformStream, TransformStreamDefaultController } = globalThis;
// Taken now, before any tenant code: a tenant that patched them must not reach inside.
const ReadableStreamPrototypePipeTo = ReadableStream.prototype.pipeTo;
const TransformStreamDefaultControllerPrototypeEnqueue = TransformStreamDefaultController.prototype.enqueue;

/** A pipe from `readable` to `writable`, whose errors reach the other side's reader instead. */
function pipe(readable, writable) {
  PromisePrototypeCatch(FunctionPrototypeCall(ReadableStreamPrototypePipeTo, readable, writable), () => {});
}

/** https://compression.spec.whatwg.org/#decompressionstream, fed to Deno's in small pieces. */
class DecompressionStream {
  #readable;
  #writable;

  /** @param {string} format */
  constructor(format) {
    const inner = new InnerDecompressionStream(format);
    const pieces = new TransformStream({
      transform(chunk, controller) {
        const bytes = bytesOf(chunk);
        if (bytes === null) {
          // Not a BufferSource: Deno's stream rejects it with its own TypeError.
          FunctionPrototypeCall(TransformStreamDefaultControllerPrototypeEnqueue, controller, chunk);
          return;
        }
        const length = TypedArrayPrototypeGetLength(bytes);
        for (let offset = 0; offset < length; offset += MAX_INFLATE_INPUT) {
          const end = MathMin(offset + MAX_INFLATE_INPUT, length);
          // A copy: the tenant may reuse its buffer once write() resolves.
          const piece = new Uint8Array(TypedArrayPrototypeSubarray(bytes, offset, end));
          FunctionPrototypeCall(TransformStreamDefaultControllerPrototypeEnqueue, controller, piece);
        }
      },
    });
    const copies = new TransformStream({
      transform(chunk, controller) {
        // Into the isolate's own memory (a RangeError past its limit); Rust's buffer is garbage.
        FunctionPrototypeCall(TransformStreamDefaultControllerPrototypeEnqueue, controller, new Uint8Array(chunk));
      },
    });
    pipe(pieces.readable, inner.writable);
    pipe(inner.readable, copies.writable);
    this.#readable = copies.readable;
    this.#writable = pieces.writable;
  }

  get readable() {
    return this.#readable;
  }

  get writable() {
    return this.#writable;
  }
}

ObjectDefineProperty(globalThis, "DecompressionStream", {
  __proto__: null,
  value: DecompressionStream,
  writable: true,
  enumerable: false,
  configurable: true,
});
