// Islet edge layer, step 6: work whose cost a tenant chooses, and which runs where the CPU
// watchdog cannot stop it, bounded before it starts and charged when it ends.
//
// - WebCrypto: Deno runs digests, ciphers, signatures, key generation and derivation on tokio's
//   blocking threads (bounded per isolate thread, src/pool/worker.rs). `terminate_execution` does
//   not reach them, so the parameters that set their cost are capped up front (PBKDF2 iterations,
//   RSA modulus lengths), and each call's time off the thread is charged to the invocation that
//   made it (`op_islet_charge`), against its CPU limit. The capped members are read once and
//   passed on as the numbers checked, in a fresh dictionary, so neither a getter nor a `valueOf`
//   can pass the check with one value and give Deno another. An isolate has at most
//   MAX_OFF_THREAD_CALLS calls on the blocking threads at once; more wait their turn in JS.
// - CompressionStream and DecompressionStream: deno_web runs a whole chunk through one op call,
//   on the isolate thread but out of `terminate_execution`'s reach, into buffers Rust allocates
//   outside the isolate's memory budget. Decompression is fed MAX_INFLATE_INPUT bytes at a time,
//   so one call inflates at most about a thousand times that (deflate's bound), and its output is
//   copied into buffers of the isolate's own, which the memory limit counts (and refuses past
//   it). Compression is fed MAX_DEFLATE_INPUT at a time, so no one call holds the thread for long.
import { primordials } from "ext:core/mod.js";
import { ops } from "ext:islet_runtime/00_ops.js";
import { DOMException } from "ext:islet_runtime/00_web_globals.js";
import { currentRequestId } from "ext:islet_runtime/01_request_context.js";

const {
  ArrayBufferIsView,
  ArrayPrototypePush,
  ArrayPrototypeShift,
  ArrayBufferPrototype,
  DataViewPrototype,
  DataViewPrototypeGetBuffer,
  DataViewPrototypeGetByteLength,
  DataViewPrototypeGetByteOffset,
  DateNow,
  FunctionPrototypeCall,
  MathMin,
  ObjectDefineProperty,
  ObjectGetOwnPropertyDescriptor,
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
/** Input bytes one call of the compression op deflates at a time. */
const MAX_DEFLATE_INPUT = 64 << 10;

/** Argon2's cost parameters: memory in KiB (Deno allocates it in Rust), passes, lanes. */
export const MAX_ARGON2_MEMORY_KIB = 32 << 10;
export const MAX_ARGON2_PASSES = 10;
export const MAX_ARGON2_PARALLELISM = 8;
/**
 * The most bits a PBKDF2 or Argon2 derivation may produce: PBKDF2 runs all its iterations again for
 * each hash-sized block of output, and Deno allocates the output up front.
 */
export const MAX_DERIVED_BITS = 4096;
/** WebCrypto calls of one isolate on the blocking threads at once; the rest wait their turn. */
const MAX_OFF_THREAD_CALLS = 4;

const RSA = ["RSASSA-PKCS1-V1_5", "RSA-PSS", "RSA-OAEP"];
const ARGON2 = ["ARGON2I", "ARGON2D", "ARGON2ID"];

function includes(list, value) {
  for (let i = 0; i < list.length; i++) {
    if (list[i] === value) return true;
  }
  return false;
}

function operationError(message) {
  return new DOMException(message, "OperationError");
}

/**
 * A cost parameter as Deno will see it: WebIDL's `unsigned long` wraps (ToUint32), so -1 is
 * 4294967295. Read once, converted here, and passed on as that number.
 */
function uint32(value) {
  return value >>> 0;
}

function atMost(what, value, max, unit) {
  if (value > max) {
    throw operationError(`${what} ${value}${unit}: Islet allows at most ${max}`);
  }
  return value;
}

/**
 * The algorithm dictionary Deno is given for a derivation: its name read once, and for the
 * algorithms whose cost the caller sets (PBKDF2, Argon2) a copy of every member, the costs as
 * checked numbers. For the others, the name as read, shadowing the caller's object (their cost is
 * bounded by the spec).
 */
function boundedDerivation(algorithm) {
  if (algorithm === null || typeof algorithm !== "object") {
    return algorithm;
  }
  const name = String(algorithm.name);
  const upper = StringPrototypeToUpperCase(name);
  if (upper === "PBKDF2") {
    const iterations = atMost("PBKDF2 with", uint32(algorithm.iterations), MAX_PBKDF2_ITERATIONS, " iterations");
    return { name, hash: algorithm.hash, salt: algorithm.salt, iterations };
  }
  if (includes(ARGON2, upper)) {
    const copy = {
      name,
      nonce: algorithm.nonce,
      memory: atMost("Argon2 with", uint32(algorithm.memory), MAX_ARGON2_MEMORY_KIB, " KiB of memory"),
      passes: atMost("Argon2 with", uint32(algorithm.passes), MAX_ARGON2_PASSES, " passes"),
      parallelism: atMost("Argon2 with", uint32(algorithm.parallelism), MAX_ARGON2_PARALLELISM, " lanes"),
    };
    const secretValue = algorithm.secretValue;
    const associatedData = algorithm.associatedData;
    if (secretValue !== undefined) copy.secretValue = secretValue;
    if (associatedData !== undefined) copy.associatedData = associatedData;
    return copy;
  }
  return { __proto__: algorithm, name };
}

/** The same for key generation, whose cost the caller sets for RSA (its modulus length). */
function boundedGeneration(algorithm) {
  if (algorithm === null || typeof algorithm !== "object") {
    return algorithm;
  }
  const name = String(algorithm.name);
  if (!includes(RSA, StringPrototypeToUpperCase(name))) {
    return { __proto__: algorithm, name };
  }
  const bits = atMost("RSA keys of", uint32(algorithm.modulusLength), MAX_RSA_GENERATE_BITS, " bits");
  return { name, modulusLength: bits, publicExponent: algorithm.publicExponent, hash: algorithm.hash };
}

// Taken now: a tenant that redefined the getter must not hide a key's size.
const CryptoKeyPrototypeGetAlgorithm = ObjectGetOwnPropertyDescriptor(globalThis.CryptoKey.prototype, "algorithm")?.get;

/** Refuses an imported (or unwrapped) RSA key whose modulus is past the ceiling. */
function boundedKey(key) {
  const algorithm = CryptoKeyPrototypeGetAlgorithm === undefined
    ? key?.algorithm
    : FunctionPrototypeCall(CryptoKeyPrototypeGetAlgorithm, key);
  const bits = algorithm?.modulusLength;
  if (typeof bits === "number") {
    atMost("RSA keys of", bits, MAX_RSA_IMPORT_BITS, " bits");
  }
  return key;
}

const SubtleCryptoPrototype = globalThis.SubtleCrypto.prototype;

/** Calls on the blocking threads now, and the turns of those waiting for one. */
let offThreadCalls = 0;
const waitingForTurn = [];

function takeTurn() {
  if (offThreadCalls < MAX_OFF_THREAD_CALLS) {
    offThreadCalls++;
    return undefined;
  }
  return new Promise((resolve) => ArrayPrototypePush(waitingForTurn, resolve));
}

function giveTurn() {
  const next = ArrayPrototypeShift(waitingForTurn);
  if (next === undefined) {
    offThreadCalls--;
  } else {
    next();
  }
}

/**
 * Replaces `SubtleCrypto.prototype[name]` by a method that checks its arguments with `check` (which
 * returns them, copied where it matters), waits for one of the isolate's turns on the blocking
 * threads, charges the call's time to the running invocation, and checks the result with
 * `checkResult`.
 */
function charged(name, check, checkResult) {
  const inner = SubtleCryptoPrototype[name];
  if (typeof inner !== "function") {
    return;
  }
  const method = {
    async [name](...args) {
      if (check !== null) {
        check(args);
      }
      const requestId = currentRequestId();
      await takeTurn();
      const started = DateNow();
      let result;
      try {
        result = await FunctionPrototypeCall(inner, this, ...new SafeArrayIterator(args));
      } finally {
        giveTurn();
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

for (
  const name of new SafeArrayIterator([
    "digest",
    "encrypt",
    "decrypt",
    "sign",
    "verify",
    "exportKey",
    "wrapKey",
    "getPublicKey",
    "encapsulateKey",
    "encapsulateBits",
    "decapsulateKey",
    "decapsulateBits",
  ])
) {
  charged(name, null, null);
}
/** Whether Islet bounds the output length of `algorithm` (as `boundedDerivation` returned it). */
function costsPerBit(algorithm) {
  if (algorithm === null || typeof algorithm !== "object") {
    return false;
  }
  const upper = StringPrototypeToUpperCase(algorithm.name);
  return upper === "PBKDF2" || includes(ARGON2, upper);
}

charged("deriveBits", (args) => {
  args[0] = boundedDerivation(args[0]);
  if (costsPerBit(args[0]) && args[2] !== undefined && args[2] !== null) {
    args[2] = atMost(`${args[0].name} of`, uint32(args[2]), MAX_DERIVED_BITS, " bits");
  }
}, null);
charged("deriveKey", (args) => {
  args[0] = boundedDerivation(args[0]);
  // The derived key's length (an HMAC key's may be any) is the derivation's output length.
  const keyType = args[2];
  if (costsPerBit(args[0]) && keyType !== null && typeof keyType === "object") {
    const copy = { __proto__: keyType, name: String(keyType.name) };
    const length = keyType.length;
    if (length !== undefined) {
      copy.length = atMost(`${args[0].name} of`, uint32(length), MAX_DERIVED_BITS, " bits");
    }
    args[2] = copy;
  }
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

const { ReadableStream, TransformStream, TransformStreamDefaultController } = globalThis;
// Taken now, before any tenant code: a tenant that patched them must not reach inside.
const ReadableStreamPrototypePipeTo = ReadableStream.prototype.pipeTo;
const TransformStreamDefaultControllerPrototypeEnqueue = TransformStreamDefaultController.prototype.enqueue;

/** A pipe from `readable` to `writable`, whose errors reach the other side's reader instead. */
function pipe(readable, writable) {
  PromisePrototypeCatch(FunctionPrototypeCall(ReadableStreamPrototypePipeTo, readable, writable), () => {});
}

function enqueue(controller, chunk) {
  FunctionPrototypeCall(TransformStreamDefaultControllerPrototypeEnqueue, controller, chunk);
}

/**
 * Deno's `Inner` (CompressionStream or DecompressionStream), fed pieces of at most `maxInput`
 * bytes, and with `copyOutput` its output copied into buffers the isolate's memory limit counts.
 * https://compression.spec.whatwg.org/ for the interface, which is Deno's.
 */
function boundedCodec(name, Inner, maxInput, copyOutput) {
  return {
    [name]: class {
      #readable;
      #writable;

      /** @param {string} format */
      constructor(format) {
        const inner = new Inner(format);
        const pieces = new TransformStream({
          transform(chunk, controller) {
            const bytes = bytesOf(chunk);
            if (bytes === null) {
              // Not a BufferSource: Deno's stream rejects it with its own TypeError.
              enqueue(controller, chunk);
              return;
            }
            const length = TypedArrayPrototypeGetLength(bytes);
            for (let offset = 0; offset < length; offset += maxInput) {
              const end = MathMin(offset + maxInput, length);
              // A copy: the tenant may reuse its buffer once write() resolves.
              enqueue(controller, new Uint8Array(TypedArrayPrototypeSubarray(bytes, offset, end)));
            }
          },
        });
        pipe(pieces.readable, inner.writable);
        this.#writable = pieces.writable;
        if (copyOutput) {
          const copies = new TransformStream({
            transform(chunk, controller) {
              // Into the isolate's own memory (a RangeError past its limit); Rust's is garbage.
              enqueue(controller, new Uint8Array(chunk));
            },
          });
          pipe(inner.readable, copies.writable);
          this.#readable = copies.readable;
        } else {
          this.#readable = inner.readable;
        }
      }

      get readable() {
        return this.#readable;
      }

      get writable() {
        return this.#writable;
      }
    },
  }[name];
}

for (
  const [name, codec] of new SafeArrayIterator([
    // Output at most about a thousand times the input: small pieces, output copied.
    ["DecompressionStream", boundedCodec("DecompressionStream", globalThis.DecompressionStream, MAX_INFLATE_INPUT, true)],
    // Output about the size of the input: pieces a millisecond's work, output as Deno gives it.
    ["CompressionStream", boundedCodec("CompressionStream", globalThis.CompressionStream, MAX_DEFLATE_INPUT, false)],
  ])
) {
  ObjectDefineProperty(globalThis, name, {
    __proto__: null,
    value: codec,
    writable: true,
    enumerable: false,
    configurable: true,
  });
}
