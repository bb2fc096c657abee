// Islet edge layer, step 8: object storage in the shape of Cloudflare's R2 binding (`env.PHOTOS`),
// and the Images binding (`env.IMAGES`), as thin classes over ops.
//
// Bodies never cross whole: a `put` from a request body or any stream hands Rust a resource it
// reads chunk by chunk, and a `get` gives back a stream over a resource, which a Response answers
// with straight from Rust. Image bytes are read into memory (at most MAX_IMAGE_INPUT_BYTES), and
// decoded, resized and encoded in Rust, off the isolate thread, charged to the invocation.
import { core, primordials } from "ext:core/mod.js";
import {
  op_islet_bucket_delete,
  op_islet_bucket_get,
  op_islet_bucket_head,
  op_islet_bucket_list,
  op_islet_bucket_put,
  op_islet_images_info,
  op_islet_images_transform,
} from "ext:core/ops";
import { file, headers, response, streams } from "ext:islet_runtime/00_web_globals.js";
import { currentRequestId } from "ext:islet_runtime/01_request_context.js";

const {
  ArrayBufferIsView,
  ArrayBufferPrototype,
  ArrayBufferPrototypeGetByteLength,
  ArrayIsArray,
  ArrayPrototypeJoin,
  ArrayPrototypePush,
  DataViewPrototype,
  DataViewPrototypeGetBuffer,
  DataViewPrototypeGetByteLength,
  DataViewPrototypeGetByteOffset,
  Date,
  DatePrototypeGetTime,
  MathFloor,
  NumberIsSafeInteger,
  ObjectFreeze,
  ObjectKeys,
  ObjectPrototypeIsPrototypeOf,
  RangeError,
  RegExpPrototypeExec,
  SafeRegExp,
  StringPrototypeSlice,
  StringPrototypeSplit,
  StringPrototypeStartsWith,
  StringPrototypeEndsWith,
  StringPrototypeTrim,
  TypeError,
  TypedArrayPrototypeGetBuffer,
  TypedArrayPrototypeGetByteLength,
  TypedArrayPrototypeGetByteOffset,
  TypedArrayPrototypeGetSymbolToStringTag,
  TypedArrayPrototypeSet,
  Uint8Array,
} = primordials;

const HeadersPrototype = headers.Headers.prototype;
const { Response } = response;
const BlobPrototype = file.Blob.prototype;
const {
  ReadableStream,
  ReadableStreamPrototype,
  getReadableStreamResourceBacking,
  isReadableStreamDisturbed,
  isReadableStreamLocked,
  readableStreamForRid,
  resourceForReadableStream,
} = streams;

/** The most keys one `delete` takes, as on R2. */
const MAX_DELETE_KEYS = 1000;
/** Image inputs are read whole: at most this many bytes (as `objects::MAX_IMAGE_INPUT_BYTES`). */
const MAX_IMAGE_INPUT_BYTES = 32 << 20;
const EMPTY = new Uint8Array(0);

const HTTP_FIELDS = [
  ["contentType", "content-type"],
  ["contentLanguage", "content-language"],
  ["contentDisposition", "content-disposition"],
  ["contentEncoding", "content-encoding"],
  ["cacheControl", "cache-control"],
];

/** `view` as a Uint8Array over the same bytes, or null if it is no buffer. */
export function asBytes(value) {
  if (ObjectPrototypeIsPrototypeOf(ArrayBufferPrototype, value)) {
    return new Uint8Array(value, 0, ArrayBufferPrototypeGetByteLength(value));
  }
  if (ArrayBufferIsView(value)) {
    if (TypedArrayPrototypeGetSymbolToStringTag(value) !== undefined) {
      return new Uint8Array(
        TypedArrayPrototypeGetBuffer(value),
        TypedArrayPrototypeGetByteOffset(value),
        TypedArrayPrototypeGetByteLength(value),
      );
    }
    if (ObjectPrototypeIsPrototypeOf(DataViewPrototype, value)) {
      return new Uint8Array(
        DataViewPrototypeGetBuffer(value),
        DataViewPrototypeGetByteOffset(value),
        DataViewPrototypeGetByteLength(value),
      );
    }
  }
  return null;
}

function checkKey(key) {
  key = `${key}`;
  if (key.length === 0) throw new TypeError("an object key cannot be empty");
  return key;
}

function unquote(etag) {
  etag = StringPrototypeTrim(`${etag}`);
  if (StringPrototypeStartsWith(etag, "W/")) etag = StringPrototypeSlice(etag, 2);
  if (etag.length >= 2 && StringPrototypeStartsWith(etag, '"') && StringPrototypeEndsWith(etag, '"')) {
    return StringPrototypeSlice(etag, 1, -1);
  }
  return etag;
}

function etagList(value) {
  if (value === undefined || value === null) return null;
  const list = [];
  const items = ArrayIsArray(value) ? value : StringPrototypeSplit(`${value}`, ",");
  for (let i = 0; i < items.length; i++) {
    const etag = unquote(items[i]);
    if (etag.length > 0) ArrayPrototypePush(list, etag);
  }
  return list;
}

function timeOf(value, what) {
  if (value === undefined || value === null) return null;
  const ms = ObjectPrototypeIsPrototypeOf(Date.prototype, value) ? DatePrototypeGetTime(value) : +new Date(value);
  if (!(ms === ms)) throw new TypeError(`${what} is not a date`);
  return ms;
}

/** `onlyIf`: an R2Conditional or Headers with If-Match and the like. */
function readConditions(onlyIf) {
  if (onlyIf === undefined || onlyIf === null) return null;
  if (ObjectPrototypeIsPrototypeOf(HeadersPrototype, onlyIf)) {
    const since = onlyIf.get("if-modified-since");
    const unmodified = onlyIf.get("if-unmodified-since");
    return {
      etagMatches: etagList(onlyIf.get("if-match")),
      etagDoesNotMatch: etagList(onlyIf.get("if-none-match")),
      // HTTP dates have whole seconds: "modified since" means uploaded after the second ends.
      uploadedAfter: since === null ? null : timeOf(since, "If-Modified-Since") + 999,
      uploadedBefore: unmodified === null ? null : timeOf(unmodified, "If-Unmodified-Since") + 1000,
    };
  }
  if (typeof onlyIf !== "object") throw new TypeError("onlyIf must be an object or Headers");
  return {
    etagMatches: etagList(onlyIf.etagMatches),
    etagDoesNotMatch: etagList(onlyIf.etagDoesNotMatch),
    uploadedBefore: timeOf(onlyIf.uploadedBefore, "onlyIf.uploadedBefore"),
    uploadedAfter: timeOf(onlyIf.uploadedAfter, "onlyIf.uploadedAfter"),
  };
}

function wholeNumber(value, what) {
  if (value === undefined || value === null) return null;
  const n = +value;
  if (!NumberIsSafeInteger(n) || n < 0) throw new RangeError(`${what} must be a whole number >= 0`);
  return n;
}

const RANGE_HEADER = new SafeRegExp("^bytes=(\\d*)-(\\d*)$");

function readRange(range) {
  if (range === undefined || range === null) return null;
  if (ObjectPrototypeIsPrototypeOf(HeadersPrototype, range)) {
    const header = range.get("range");
    if (header === null) return null;
    const m = RegExpPrototypeExec(RANGE_HEADER, StringPrototypeTrim(header));
    if (m === null || (m[1] === "" && m[2] === "")) throw new RangeError(`unsupported Range: ${header}`);
    if (m[1] === "") return { suffix: +m[2] };
    const offset = +m[1];
    if (m[2] === "") return { offset };
    const last = +m[2];
    if (last < offset) throw new RangeError(`unsupported Range: ${header}`);
    return { offset, length: last - offset + 1 };
  }
  if (typeof range !== "object") throw new TypeError("range must be an object or Headers");
  const suffix = wholeNumber(range.suffix, "range.suffix");
  if (suffix !== null) return { suffix };
  return { offset: wholeNumber(range.offset, "range.offset"), length: wholeNumber(range.length, "range.length") };
}

/** `httpMetadata`: an object of R2's fields, or Headers. */
function readHttpMetadata(value) {
  const out = {};
  if (value === undefined || value === null) return out;
  const isHeaders = ObjectPrototypeIsPrototypeOf(HeadersPrototype, value);
  if (!isHeaders && typeof value !== "object") throw new TypeError("httpMetadata must be an object or Headers");
  for (let i = 0; i < HTTP_FIELDS.length; i++) {
    const [field, header] = HTTP_FIELDS[i];
    const v = isHeaders ? value.get(header) : value[field];
    if (v !== undefined && v !== null) out[field] = `${v}`;
  }
  const expiry = isHeaders ? value.get("expires") : value.cacheExpiry;
  if (expiry !== undefined && expiry !== null) out.cacheExpiry = `${timeOf(expiry, "cacheExpiry")}`;
  return out;
}

function readCustomMetadata(value) {
  const out = {};
  if (value === undefined || value === null) return out;
  if (typeof value !== "object") throw new TypeError("customMetadata must be an object of strings");
  const keys = ObjectKeys(value);
  for (let i = 0; i < keys.length; i++) out[keys[i]] = `${value[keys[i]]}`;
  return out;
}

function toHttpMetadata(raw) {
  const out = {};
  const keys = ObjectKeys(raw);
  for (let i = 0; i < keys.length; i++) {
    out[keys[i]] = keys[i] === "cacheExpiry" ? new Date(+raw[keys[i]]) : raw[keys[i]];
  }
  return out;
}

/** An object's description: `R2Object`. */
class R2Object {
  constructor(meta, include) {
    this.key = meta.key;
    this.version = meta.version;
    this.size = meta.size;
    this.etag = meta.etag;
    this.httpEtag = `"${meta.etag}"`;
    this.uploaded = new Date(meta.uploaded);
    this.storageClass = "Standard";
    this.checksums = ObjectFreeze({});
    if (include === undefined || include.http) this.httpMetadata = toHttpMetadata(meta.httpMetadata);
    if (include === undefined || include.custom) this.customMetadata = meta.customMetadata;
    if (meta.range) this.range = { offset: meta.range[0], length: meta.range[1] };
  }

  /** Sets the object's HTTP metadata as response headers. */
  writeHttpMetadata(target) {
    const meta = this.httpMetadata ?? {};
    for (let i = 0; i < HTTP_FIELDS.length; i++) {
      const [field, header] = HTTP_FIELDS[i];
      if (meta[field] !== undefined) target.set(header, meta[field]);
    }
    if (meta.cacheExpiry !== undefined) target.set("expires", meta.cacheExpiry.toUTCString());
  }
}

/** An object with its body: `R2ObjectBody`. */
class R2ObjectBody extends R2Object {
  #body;
  #contentType;

  constructor(meta, rid) {
    super(meta);
    this.#body = readableStreamForRid(rid);
    this.#contentType = meta.httpMetadata.contentType ?? "";
  }

  get body() {
    return this.#body;
  }

  get bodyUsed() {
    return isReadableStreamDisturbed(this.#body);
  }

  #response() {
    if (isReadableStreamLocked(this.#body) || isReadableStreamDisturbed(this.#body)) {
      throw new TypeError("the object's body has already been read");
    }
    return new Response(this.#body, { headers: { "content-type": this.#contentType } });
  }

  arrayBuffer() {
    return this.#response().arrayBuffer();
  }
  bytes() {
    return this.#response().bytes();
  }
  text() {
    return this.#response().text();
  }
  json() {
    return this.#response().json();
  }
  blob() {
    return this.#response().blob();
  }
}

/** A bucket: `env.PHOTOS`. */
class R2Bucket {
  #binding;

  constructor(binding) {
    this.#binding = binding;
  }

  async head(key) {
    const meta = await op_islet_bucket_head(this.#binding, checkKey(key));
    return meta === null ? null : new R2Object(meta);
  }

  async get(key, options) {
    key = checkKey(key);
    const onlyIf = readConditions(options?.onlyIf);
    const range = readRange(options?.range);
    const [found, meta, rid] = await op_islet_bucket_get(this.#binding, key, { onlyIf, range });
    if (found === 0) return null;
    if (found === 1) return new R2Object(meta);
    return new R2ObjectBody(meta, rid);
  }

  async put(key, value, options) {
    key = checkKey(key);
    const opts = {
      httpMetadata: readHttpMetadata(options?.httpMetadata),
      customMetadata: readCustomMetadata(options?.customMetadata),
      onlyIf: readConditions(options?.onlyIf),
    };
    let rid = -1;
    let bytes = EMPTY;
    if (value === null || value === undefined) {
      // An empty object.
    } else if (typeof value === "string") {
      bytes = core.encode(value);
    } else if (ObjectPrototypeIsPrototypeOf(ReadableStreamPrototype, value)) {
      if (isReadableStreamLocked(value) || isReadableStreamDisturbed(value)) {
        throw new TypeError("the stream to store has already been read");
      }
      // An untouched request body: Rust reads it straight from the socket.
      const backing = getReadableStreamResourceBacking(value);
      rid = backing != null ? backing.rid : resourceForReadableStream(value);
    } else if (ObjectPrototypeIsPrototypeOf(BlobPrototype, value)) {
      rid = resourceForReadableStream(value.stream());
      if (opts.httpMetadata.contentType === undefined && value.type) opts.httpMetadata.contentType = value.type;
    } else {
      bytes = asBytes(value);
      if (bytes === null) {
        throw new TypeError("put() takes a ReadableStream, ArrayBuffer, ArrayBufferView, Blob, string or null");
      }
    }
    const meta = await op_islet_bucket_put(this.#binding, key, opts, rid, bytes);
    return meta === null ? null : new R2Object(meta);
  }

  async delete(keys) {
    const list = ArrayIsArray(keys) ? keys : [keys];
    // Read once: a Proxy could answer a small length to the check and a large one to the loop.
    const length = list.length;
    if (!(length <= MAX_DELETE_KEYS)) {
      throw new RangeError(`delete() takes at most ${MAX_DELETE_KEYS} keys; got ${length}`);
    }
    const checked = [];
    for (let i = 0; i < length; i++) ArrayPrototypePush(checked, checkKey(list[i]));
    await op_islet_bucket_delete(this.#binding, checked);
  }

  async list(options) {
    const o = options ?? {};
    const limit = wholeNumber(o.limit, "limit");
    if (limit !== null && (limit < 1 || limit > 1000)) throw new RangeError("limit must be between 1 and 1000");
    const include = { http: false, custom: false };
    if (o.include !== undefined) {
      if (!ArrayIsArray(o.include)) throw new TypeError("include must be an array");
      for (let i = 0; i < o.include.length; i++) {
        if (o.include[i] === "httpMetadata") include.http = true;
        else if (o.include[i] === "customMetadata") include.custom = true;
        else throw new TypeError(`include: '${o.include[i]}' is not httpMetadata or customMetadata`);
      }
    }
    const result = await op_islet_bucket_list(this.#binding, {
      prefix: o.prefix === undefined ? "" : `${o.prefix}`,
      cursor: o.cursor === undefined ? null : `${o.cursor}`,
      limit,
      delimiter: o.delimiter === undefined ? null : `${o.delimiter}`,
      startAfter: o.startAfter === undefined ? null : `${o.startAfter}`,
    });
    const objects = [];
    for (let i = 0; i < result.objects.length; i++) {
      ArrayPrototypePush(objects, new R2Object(result.objects[i], include));
    }
    const out = { objects, truncated: result.truncated, delimitedPrefixes: result.delimitedPrefixes };
    if (result.truncated) out.cursor = result.cursor;
    return out;
  }
}

/** All of `input`'s bytes (a stream, a buffer, a Blob or a Response), at most the image cap. */
/**
 * The bytes of `input` (a ReadableStream, ArrayBuffer, view, Blob or Response), read whole; at
 * most `max` of them, else a RangeError naming `what`.
 */
export async function collectBytes(input, max, what) {
  if (ObjectPrototypeIsPrototypeOf(BlobPrototype, input)) input = input.stream();
  if (input !== null && typeof input === "object" && ObjectPrototypeIsPrototypeOf(Response.prototype, input)) {
    input = input.body;
  }
  const direct = asBytes(input);
  if (direct !== null) {
    if (direct.length > max) {
      throw new RangeError(`${what} is ${direct.length} bytes; the most is ${max}`);
    }
    return direct;
  }
  if (!ObjectPrototypeIsPrototypeOf(ReadableStreamPrototype, input)) {
    throw new TypeError(`${what} is a ReadableStream, ArrayBuffer, ArrayBufferView, Blob or Response`);
  }
  const reader = input.getReader();
  const chunks = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    const bytes = asBytes(value);
    if (bytes === null) throw new TypeError(`${what}: the stream must yield bytes`);
    total += bytes.length;
    if (total > max) {
      reader.cancel();
      throw new RangeError(`${what} is over ${max} bytes, the most there may be`);
    }
    ArrayPrototypePush(chunks, bytes);
  }
  const all = new Uint8Array(total);
  let offset = 0;
  for (let i = 0; i < chunks.length; i++) {
    TypedArrayPrototypeSet(all, chunks[i], offset);
    offset += chunks[i].length;
  }
  return all;
}

function readInput(input) {
  return collectBytes(input, MAX_IMAGE_INPUT_BYTES, "an image input");
}

const FITS = ["scale-down", "contain", "cover", "crop", "pad"];
const FORMATS = ["image/jpeg", "image/png", "image/webp"];

function readTransform(t) {
  if (t === null || typeof t !== "object") throw new TypeError("transform() takes an object");
  const out = {};
  const width = wholeNumber(t.width, "width");
  const height = wholeNumber(t.height, "height");
  if (width !== null) out.width = MathFloor(width);
  if (height !== null) out.height = MathFloor(height);
  if (t.fit !== undefined) {
    const fit = `${t.fit}`;
    let known = false;
    for (let i = 0; i < FITS.length; i++) if (FITS[i] === fit) known = true;
    if (!known) throw new TypeError(`fit '${fit}' is not one of ${ArrayPrototypeJoin(FITS, ", ")}`);
    out.fit = fit;
  }
  if (t.rotate !== undefined) {
    const rotate = +t.rotate;
    if (rotate !== 0 && rotate !== 90 && rotate !== 180 && rotate !== 270) {
      throw new RangeError("rotate must be 0, 90, 180 or 270");
    }
    out.rotate = rotate;
  }
  return out;
}

/** The result of `output()`. */
class ImageTransformationResult {
  #type;
  #bytes;

  constructor(type, bytes) {
    this.#type = type;
    this.#bytes = bytes;
  }

  contentType() {
    return this.#type;
  }

  image() {
    const bytes = this.#bytes;
    return new ReadableStream({
      pull(controller) {
        controller.enqueue(bytes);
        controller.close();
      },
    });
  }

  response() {
    return new Response(this.#bytes, { headers: { "content-type": this.#type } });
  }
}

/** `env.IMAGES.input(stream)`: transforms queued, run by `output()`. */
class ImageTransformer {
  #binding;
  #input;
  #transforms = [];

  constructor(binding, input) {
    this.#binding = binding;
    this.#input = input;
  }

  transform(options) {
    ArrayPrototypePush(this.#transforms, readTransform(options));
    return this;
  }

  async output(options) {
    const format = options?.format === undefined ? "image/jpeg" : `${options.format}`;
    let known = false;
    for (let i = 0; i < FORMATS.length; i++) if (FORMATS[i] === format) known = true;
    if (!known) throw new TypeError(`format '${format}' is not one of ${ArrayPrototypeJoin(FORMATS, ", ")}`);
    const quality = options?.quality === undefined ? 85 : +options.quality;
    if (!(quality >= 1 && quality <= 100)) throw new RangeError("quality must be between 1 and 100");
    const bytes = await readInput(this.#input);
    const [type, out] = await op_islet_images_transform(this.#binding, currentRequestId(), bytes, {
      transforms: this.#transforms,
      format,
      quality: MathFloor(quality),
    });
    return new ImageTransformationResult(type, out);
  }
}

/** The Images binding: `env.IMAGES`. */
class ImagesBinding {
  #binding;

  constructor(binding) {
    this.#binding = binding;
  }

  async info(input) {
    const bytes = await readInput(input);
    return op_islet_images_info(this.#binding, bytes);
  }

  input(input) {
    return new ImageTransformer(this.#binding, input);
  }
}

/** The binding object for `kind`, or null if this file does not make it. */
export function objectBinding(kind, name) {
  if (kind === "bucket") return ObjectFreeze(new R2Bucket(name));
  if (kind === "images") return ObjectFreeze(new ImagesBinding(name));
  return null;
}
