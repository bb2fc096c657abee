// Islet edge layer, step 9: KV in the shape of Cloudflare's KV binding (`env.ITEMS.get(key)`), with
// atomic commits in the shape of Deno KV's (`env.ITEMS.atomic().check(...).set(...).commit()`), as
// thin classes over ops.
//
// Values cross as bytes (strings as UTF-8); reads and writes go straight to the node's store, so a
// read sees every write acknowledged before it, on any isolate (no cache in between).
import { core, primordials } from "ext:core/mod.js";
import { op_islet_kv_commit, op_islet_kv_get, op_islet_kv_list } from "ext:core/ops";
import { streams } from "ext:islet_runtime/00_web_globals.js";
import { currentRequestId } from "ext:islet_runtime/01_request_context.js";
import { asBytes, collectBytes } from "ext:islet_runtime/08_objects.js";

const {
  ArrayIsArray,
  ArrayPrototypePush,
  Map,
  MapPrototypeSet,
  Number,
  JSONParse,
  JSONStringify,
  NumberIsFinite,
  ObjectFreeze,
  ObjectPrototypeIsPrototypeOf,
  PromiseReject,
  RangeError,
  TypeError,
  TypedArrayPrototypeGetBuffer,
  TypedArrayPrototypeGetByteLength,
  TypedArrayPrototypeSet,
  TypedArrayPrototypeSlice,
  Uint8Array,
} = primordials;

const { ReadableStream, ReadableStreamPrototype } = streams;

// Kept in step with src/isolate/ext/kv.rs. Lengths are checked here first, in UTF-16 units (never
// more than a string's UTF-8 bytes), so nothing oversized is ever copied out of V8; Rust checks the
// bytes.
const MAX_VALUE_BYTES = 25 << 20;
const MAX_LIST_LIMIT = 1000;
const MAX_KEY_BYTES = 512;
const MAX_METADATA_BYTES = 1024;
const MAX_GET_KEYS = 100;
const MAX_CHECKS = 100;
const MAX_MUTATIONS = 1000;
const EMPTY = new Uint8Array(0);

const encodeUtf8 = core.encode;

function checkKey(key) {
  if (typeof key !== "string") key = `${key}`;
  if (key.length === 0) throw new TypeError("a KV key cannot be empty");
  if (key.length > MAX_KEY_BYTES) {
    throw new TypeError(`a KV key is over ${MAX_KEY_BYTES} bytes; the most is ${MAX_KEY_BYTES}`);
  }
  return key;
}

/** `type` as `get` takes it: a string, or `{ type }`. */
function readType(options) {
  const type = options === undefined || options === null
    ? "text"
    : typeof options === "string"
    ? options
    : options.type ?? "text";
  if (type !== "text" && type !== "json" && type !== "arrayBuffer" && type !== "stream") {
    throw new TypeError(`'${type}' is not a KV value type (text, json, arrayBuffer or stream)`);
  }
  return type;
}

/** A value as the op gave it: text for text and json, bytes for arrayBuffer and stream. */
function decodeValue(bytes, type) {
  switch (type) {
    case "json":
      return JSONParse(bytes);
    case "arrayBuffer":
      // A copy made by the isolate's own allocator, so what the function keeps counts against
      // its memory limit.
      return TypedArrayPrototypeGetBuffer(TypedArrayPrototypeSlice(bytes));
    case "stream":
      bytes = TypedArrayPrototypeSlice(bytes);
      return new ReadableStream({
        type: "bytes",
        start(controller) {
          if (TypedArrayPrototypeGetByteLength(bytes) > 0) controller.enqueue(bytes);
          controller.close();
        },
      });
    default:
      return bytes;
  }
}

/** A value's bytes, or a promise of them for a stream; throws for what KV cannot store. */
function valueBytes(value) {
  if (typeof value === "string") return encodeUtf8(value);
  // The op copies the bytes as it is called, so a view of the caller's buffer is enough.
  const bytes = asBytes(value);
  if (bytes !== null) return bytes;
  if (ObjectPrototypeIsPrototypeOf(ReadableStreamPrototype, value)) {
    return collectBytes(value, MAX_VALUE_BYTES, "a KV value");
  }
  throw new TypeError("a KV value is a string, ArrayBuffer, ArrayBufferView or ReadableStream");
}

/** `[expiration kind, seconds, metadata JSON | null]` of put options. */
function readPutOptions(options) {
  if (options === undefined || options === null) return [0, 0, null];
  if (typeof options !== "object") throw new TypeError("put() options must be an object");
  let kind = 0;
  let seconds = 0;
  if (options.expiration !== undefined) {
    kind = 1;
    seconds = +options.expiration;
  }
  if (options.expirationTtl !== undefined) {
    kind = 2;
    seconds = +options.expirationTtl;
  }
  if (kind !== 0 && !NumberIsFinite(seconds)) {
    throw new TypeError(kind === 1 ? "expiration must be a number of seconds since the epoch" : "expirationTtl must be a number of seconds");
  }
  let metadata = null;
  if (options.metadata !== undefined && options.metadata !== null) {
    metadata = JSONStringify(options.metadata);
    if (metadata === undefined) throw new TypeError("metadata must be JSON-serializable");
    if (metadata.length > MAX_METADATA_BYTES) {
      throw new RangeError(`metadata is over ${MAX_METADATA_BYTES} bytes as JSON; the most is ${MAX_METADATA_BYTES}`);
    }
  }
  return [kind, seconds, metadata];
}

/**
 * Sends a commit: checks `[[key, version | null]...]`, mutations `[kind, key, value bytes | null,
 * metadata, expiration kind, seconds, n]` (values may be promises of bytes, from streams).
 */
async function commit(binding, checks, mutations) {
  const wire = [];
  const values = [];
  let total = 0;
  for (let i = 0; i < mutations.length; i++) {
    const m = mutations[i];
    const bytes = m[2] === null ? EMPTY : await m[2];
    total += TypedArrayPrototypeGetByteLength(bytes);
    if (total > MAX_VALUE_BYTES) {
      throw new RangeError(`a KV value is over ${MAX_VALUE_BYTES} bytes (25 MiB), the most there may be`);
    }
    ArrayPrototypePush(values, bytes);
    ArrayPrototypePush(wire, [m[0], m[1], TypedArrayPrototypeGetByteLength(bytes), m[3], m[4], m[5], m[6]]);
  }
  let all = EMPTY;
  if (values.length === 1) {
    all = values[0];
  } else if (total > 0) {
    all = new Uint8Array(total);
    let offset = 0;
    for (let i = 0; i < values.length; i++) {
      TypedArrayPrototypeSet(all, values[i], offset);
      offset += TypedArrayPrototypeGetByteLength(values[i]);
    }
  }
  return await op_islet_kv_commit(binding, currentRequestId(), checks, wire, all);
}

function setMutation(key, value, options) {
  const expiration = readPutOptions(options);
  return [0, checkKey(key), valueBytes(value), expiration[2], expiration[0], expiration[1], 0];
}

/** A KV namespace: `env.ITEMS`. */
class KVNamespace {
  #binding;

  constructor(binding) {
    this.#binding = binding;
  }

  /**
   * A key's value (`null` if absent or expired), or a Map of several keys' values.
   * @param {string | string[]} key
   * @param {"text" | "json" | "arrayBuffer" | "stream" | { type: string }} [options]
   */
  get(key, options) {
    try {
      const type = readType(options);
      if (ArrayIsArray(key)) return this.#getMany(key, type, false);
      return this.#getOne(checkKey(key), type, false);
    } catch (error) {
      return PromiseReject(error);
    }
  }

  /** `{ value, metadata, version, expiration, cacheStatus }`; value and metadata `null` if absent. */
  getWithMetadata(key, options) {
    try {
      const type = readType(options);
      if (ArrayIsArray(key)) return this.#getMany(key, type, true);
      return this.#getOne(checkKey(key), type, true);
    } catch (error) {
      return PromiseReject(error);
    }
  }

  async #getOne(key, type, withMetadata) {
    const text = type === "text" || type === "json";
    const found = await op_islet_kv_get(this.#binding, [key], currentRequestId(), text);
    return shape(found[0], type, withMetadata);
  }

  async #getMany(keys, type, withMetadata) {
    if (type !== "text" && type !== "json") {
      throw new TypeError("a get() of several keys returns text or json");
    }
    if (keys.length === 0 || keys.length > MAX_GET_KEYS) {
      throw new RangeError(`get() takes 1 to ${MAX_GET_KEYS} keys at once; got ${keys.length}`);
    }
    const checked = [];
    for (let i = 0; i < keys.length; i++) ArrayPrototypePush(checked, checkKey(keys[i]));
    const found = await op_islet_kv_get(this.#binding, checked, currentRequestId(), true);
    // The Map of boot time, filled with its own method: a tenant may replace either.
    const result = new Map();
    for (let i = 0; i < checked.length; i++) {
      MapPrototypeSet(result, checked[i], shape(found[i], type, withMetadata));
    }
    return result;
  }

  /**
   * Writes a value; resolves once the node has it durably.
   * @param {string} key
   * @param {string | ArrayBuffer | ArrayBufferView | ReadableStream} value
   * @param {{ expiration?: number, expirationTtl?: number, metadata?: unknown }} [options]
   */
  async put(key, value, options) {
    await commit(this.#binding, [], [setMutation(key, value, options)]);
  }

  async delete(key) {
    await commit(this.#binding, [], [[1, checkKey(key), null, null, 0, 0, 0]]);
  }

  /**
   * Keys in byte order: `{ keys: [{ name, expiration?, metadata? }], list_complete, cursor? }`.
   * @param {{ prefix?: string, cursor?: string, limit?: number }} [options]
   */
  async list(options) {
    const prefix = options?.prefix === undefined || options.prefix === null ? "" : `${options.prefix}`;
    const cursor = options?.cursor === undefined || options.cursor === null ? "" : `${options.cursor}`;
    if (prefix.length > MAX_KEY_BYTES) throw new TypeError(`a prefix is at most ${MAX_KEY_BYTES} bytes`);
    if (cursor.length > 2 * MAX_KEY_BYTES) throw new TypeError("not a list() cursor");
    const limit = options?.limit === undefined ? MAX_LIST_LIMIT : +options.limit;
    if (!NumberIsFinite(limit) || limit < 1 || limit > MAX_LIST_LIMIT || limit % 1 !== 0) {
      throw new RangeError(`list() limit must be a whole number from 1 to ${MAX_LIST_LIMIT}`);
    }
    const page = await op_islet_kv_list(this.#binding, currentRequestId(), prefix, cursor, limit);
    const raw = page[0];
    const next = page[1];
    const keys = [];
    for (let i = 0; i < raw.length; i++) {
      ArrayPrototypePush(keys, listedKey(raw[i][0], raw[i][1], raw[i][2]));
    }
    // Literals throughout: assignments would run setters a tenant put on Object.prototype.
    return next === null
      ? { keys, list_complete: true, cacheStatus: null }
      : { keys, list_complete: false, cursor: next, cacheStatus: null };
  }

  /** Checks and mutations committed together, or not at all. */
  atomic() {
    return new AtomicOperation(this.#binding);
  }
}

/** A key of a list page: `expiration` and `metadata` only when it has them, as on Workers. */
function listedKey(name, expiration, metadata) {
  if (expiration === null) {
    return metadata === null ? { name } : { name, metadata: JSONParse(metadata) };
  }
  return metadata === null ? { name, expiration } : { name, expiration, metadata: JSONParse(metadata) };
}

function shape(found, type, withMetadata) {
  const value = found === null ? null : decodeValue(found[0], type);
  if (!withMetadata) return value;
  if (found === null) return { value: null, metadata: null, version: null, cacheStatus: null };
  const metadata = found[1] === null ? null : JSONParse(found[1]);
  return found[3] === null
    ? { value, metadata, version: found[2], cacheStatus: null }
    : { value, metadata, version: found[2], expiration: found[3], cacheStatus: null };
}

/** `env.ITEMS.atomic()`: checks, then mutations applied in order, all or none. */
class AtomicOperation {
  #binding;
  #checks = [];
  #mutations = [];
  #committed = false;

  constructor(binding) {
    this.#binding = binding;
  }

  /**
   * Each check holds when the key's version is `version`, or, with `version: null`, when the key
   * is absent.
   * @param {...{ key: string, version: string | null }} checks
   */
  check(...checks) {
    if (this.#checks.length + checks.length > MAX_CHECKS) {
      throw new RangeError(`a commit may carry at most ${MAX_CHECKS} checks`);
    }
    for (let i = 0; i < checks.length; i++) {
      const check = checks[i];
      if (check === null || typeof check !== "object") {
        throw new TypeError("check() takes { key, version } objects (version null for an absent key)");
      }
      const version = check.version ?? check.versionstamp ?? null;
      const text = version === null ? null : `${version}`;
      if (text !== null && text.length > 64) throw new TypeError("not a KV version (20 hex digits)");
      ArrayPrototypePush(this.#checks, [checkKey(check.key), text]);
    }
    return this;
  }

  #mutate(mutation) {
    if (this.#mutations.length >= MAX_MUTATIONS) {
      throw new RangeError(`a commit may carry at most ${MAX_MUTATIONS} mutations`);
    }
    ArrayPrototypePush(this.#mutations, mutation);
    return this;
  }

  set(key, value, options) {
    return this.#mutate(setMutation(key, value, options));
  }

  delete(key) {
    return this.#mutate([1, checkKey(key), null, null, 0, 0, 0]);
  }

  /** Adds `n` (a safe integer) to the integer the key holds; an absent key holds 0. */
  sum(key, n) {
    if (typeof n === "bigint") n = Number(n);
    return this.#mutate([2, checkKey(key), null, null, 0, 0, +n]);
  }

  /** `{ ok: true, version }`, or `{ ok: false }` when a check failed and nothing was written. */
  async commit() {
    if (this.#committed) throw new TypeError("this atomic operation was already committed");
    this.#committed = true;
    const version = await commit(this.#binding, this.#checks, this.#mutations);
    return version === null ? { ok: false } : { ok: true, version };
  }
}

/** The binding object for a KV namespace. */
export function kvBinding(name) {
  return ObjectFreeze(new KVNamespace(name));
}
