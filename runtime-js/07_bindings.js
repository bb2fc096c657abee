// Islet edge layer, step 7: bindings in `env` (queue producers), and the shapes event handlers
// receive (a queue batch, a cron controller), as on Cloudflare Workers.
//
// Bodies cross to Rust as bytes with a content type: `json` (the default), `text`, `bytes` or `v8`
// (structured clone). The consumer gets them back decoded; the node decides nothing from them.
import { core, primordials } from "ext:core/mod.js";
import { op_islet_queue_decide, op_islet_queue_max_bytes, op_islet_queue_send } from "ext:core/ops";
import { base64 } from "ext:islet_runtime/00_web_globals.js";
import { objectBinding } from "ext:islet_runtime/08_objects.js";
import { kvBinding } from "ext:islet_runtime/09_kv.js";
import { serviceBinding } from "ext:islet_runtime/09_services.js";

const {
  ArrayBufferIsView,
  ArrayBufferPrototype,
  ArrayBufferPrototypeGetByteLength,
  ArrayFrom,
  ArrayIsArray,
  ArrayPrototypePush,
  DataViewPrototype,
  DataViewPrototypeGetBuffer,
  DataViewPrototypeGetByteLength,
  DataViewPrototypeGetByteOffset,
  Date,
  FunctionPrototypeCall,
  JSONParse,
  JSONStringify,
  NumberIsFinite,
  ObjectFreeze,
  ObjectKeys,
  ObjectPrototypeIsPrototypeOf,
  PromiseReject,
  RangeError,
  StringPrototypeCharCodeAt,
  TypeError,
  TypedArrayPrototypeGetBuffer,
  TypedArrayPrototypeGetByteLength,
  TypedArrayPrototypeGetByteOffset,
  TypedArrayPrototypeGetSymbolToStringTag,
  TypedArrayPrototypeSet,
  Uint8Array,
} = primordials;

// UTF-8 through deno_core itself: a tenant may replace globals and prototypes (TextEncoder's too).
const encodeUtf8 = core.encode;

/** A copy of `view`'s bytes (an ArrayBuffer or any view of one). */
function bytesOf(value) {
  if (ObjectPrototypeIsPrototypeOf(ArrayBufferPrototype, value)) {
    const copy = new Uint8Array(ArrayBufferPrototypeGetByteLength(value));
    TypedArrayPrototypeSet(copy, new Uint8Array(value));
    return copy;
  }
  if (ArrayBufferIsView(value)) {
    let buffer, offset, length;
    if (TypedArrayPrototypeGetSymbolToStringTag(value) !== undefined) {
      buffer = TypedArrayPrototypeGetBuffer(value);
      offset = TypedArrayPrototypeGetByteOffset(value);
      length = TypedArrayPrototypeGetByteLength(value);
    } else if (ObjectPrototypeIsPrototypeOf(DataViewPrototype, value)) {
      buffer = DataViewPrototypeGetBuffer(value);
      offset = DataViewPrototypeGetByteOffset(value);
      length = DataViewPrototypeGetByteLength(value);
    }
    const copy = new Uint8Array(length);
    TypedArrayPrototypeSet(copy, new Uint8Array(buffer, offset, length));
    return copy;
  }
  return null;
}

/** `body` as bytes for `contentType`; throws a TypeError naming what is wrong. */
function encodeBody(body, contentType) {
  switch (contentType) {
    case "json": {
      const text = JSONStringify(body);
      if (text === undefined) {
        throw new TypeError("a json message body must be JSON-serializable (not undefined or a function)");
      }
      return encodeUtf8(text);
    }
    case "text":
      if (typeof body !== "string") {
        throw new TypeError("a text message body must be a string");
      }
      return encodeUtf8(body);
    case "bytes": {
      const bytes = bytesOf(body);
      if (bytes === null) {
        throw new TypeError("a bytes message body must be an ArrayBuffer or a view of one");
      }
      return bytes;
    }
    case "v8":
      return core.serialize(body, { forStorage: true });
    default:
      throw new TypeError(`contentType '${contentType}' is not one of json, text, bytes, v8`);
  }
}

function readOptions(options, what) {
  if (options === undefined || options === null) {
    return { contentType: "json", delaySeconds: 0 };
  }
  if (typeof options !== "object") {
    throw new TypeError(`${what} options must be an object`);
  }
  const contentType = options.contentType === undefined ? "json" : `${options.contentType}`;
  const delay = options.delaySeconds === undefined ? 0 : +options.delaySeconds;
  if (!NumberIsFinite(delay) || delay < 0 || delay > 43200) {
    throw new RangeError("delaySeconds must be between 0 and 43200 (12 hours)");
  }
  return { contentType, delaySeconds: delay };
}

/** A queue producer: `env.JOBS`. */
class WorkerQueue {
  #binding;

  constructor(binding) {
    this.#binding = binding;
  }

  /**
   * Stores one message; resolves once the node has it durably.
   * @param {unknown} body
   * @param {{ contentType?: string, delaySeconds?: number }} [options]
   */
  send(body, options) {
    try {
      const { contentType, delaySeconds } = readOptions(options, "send()");
      return this.#sendAll([[contentType, delaySeconds, encodeBody(body, contentType)]]);
    } catch (error) {
      return PromiseReject(error);
    }
  }

  /**
   * Stores several messages at once (all or none).
   * @param {Iterable<{ body: unknown, contentType?: string, delaySeconds?: number }>} messages
   * @param {{ delaySeconds?: number }} [options] the delay of messages that name none
   */
  sendBatch(messages, options) {
    try {
      if (messages === null || typeof messages !== "object") {
        throw new TypeError("sendBatch() takes an array of { body, contentType?, delaySeconds? }");
      }
      const batchDelay = readOptions(options, "sendBatch()").delaySeconds;
      const encoded = [];
      const list = ArrayIsArray(messages) ? messages : ArrayFrom(messages);
      for (let i = 0; i < list.length; i++) {
        const message = list[i];
        if (message === null || typeof message !== "object") {
          throw new TypeError(`sendBatch(): message ${i} is not an object with a body`);
        }
        const { contentType, delaySeconds } = readOptions(message, `message ${i}`);
        const delay = message.delaySeconds === undefined ? batchDelay : delaySeconds;
        ArrayPrototypePush(encoded, [contentType, delay, encodeBody(message.body, contentType)]);
      }
      return this.#sendAll(encoded);
    } catch (error) {
      return PromiseReject(error);
    }
  }

  async #sendAll(encoded) {
    const max = op_islet_queue_max_bytes();
    let total = 0;
    for (let i = 0; i < encoded.length; i++) {
      const length = encoded[i][2].length;
      if (length > max) {
        throw new RangeError(`a message body is ${length} bytes; a queue accepts at most ${max}`);
      }
      total += length;
    }
    const bodies = new Uint8Array(total);
    const meta = [];
    let offset = 0;
    for (let i = 0; i < encoded.length; i++) {
      const entry = encoded[i];
      const contentType = entry[0];
      const delay = entry[1];
      const bytes = entry[2];
      TypedArrayPrototypeSet(bodies, bytes, offset);
      offset += bytes.length;
      ArrayPrototypePush(meta, [contentType, delay, bytes.length]);
    }
    await op_islet_queue_send(this.#binding, meta, bodies);
  }
}

/**
 * The function's `env`: its variables, and an object for each binding. Parenthesized: compiled into
 * the snapshot, not in each isolate (see 30_dispatch.js).
 * @param {string} envJson variables, as JSON
 * @param {string} bindingsJson `{ NAME: { type } }`
 */
export const makeEnv = (function makeEnv(envJson, bindingsJson) {
  const env = JSONParse(envJson);
  const bindings = JSONParse(bindingsJson);
  const names = ObjectKeys(bindings);
  for (let i = 0; i < names.length; i++) {
    const name = names[i];
    const kind = bindings[name].type;
    if (kind === "queue") {
      env[name] = ObjectFreeze(new WorkerQueue(name));
    } else if (kind === "kv") {
      env[name] = kvBinding(name);
    } else if (kind === "service") {
      env[name] = serviceBinding(name);
    } else {
      const binding = objectBinding(kind, name);
      if (binding !== null) env[name] = binding;
    }
  }
  return ObjectFreeze(env);
});

function base64Bytes(text) {
  const binary = base64.atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) {
    bytes[i] = StringPrototypeCharCodeAt(binary, i);
  }
  return bytes;
}

function decodeBody(contentType, body) {
  switch (contentType) {
    case "json":
      return JSONParse(body);
    case "text":
      return body;
    case "bytes":
      return base64Bytes(body);
    case "v8":
      return core.deserialize(base64Bytes(body), { forStorage: true });
    default:
      return body;
  }
}

function readDelay(options) {
  if (options === undefined || options === null || options.delaySeconds === undefined) {
    return -1;
  }
  const delay = +options.delaySeconds;
  if (!NumberIsFinite(delay) || delay < 0 || delay > 43200) {
    throw new RangeError("delaySeconds must be between 0 and 43200 (12 hours)");
  }
  return delay;
}

/**
 * A queue batch as the `queue(batch, env, ctx)` handler sees it, and the decision on each message
 * that Rust reads back (`outcome`).
 */
// `WHOLE_BATCH` in src/isolate/ext/bindings.rs: the index of an ackAll() or retryAll() decision.
const WHOLE_BATCH = 0x3fffffff;

export class QueueBatch {
  #decisions;
  #all = null;
  #slot;

  /**
   * @param {string} json `{ queue, messages: [{ id, timestamp, attempts, contentType, body }] }`
   * @param {number} slot the invocation's record, where each decision is also written at once
   */
  constructor(json, slot) {
    this.#slot = slot;
    const parsed = JSONParse(json);
    this.queue = parsed.queue;
    const decisions = [];
    const messages = [];
    for (let i = 0; i < parsed.messages.length; i++) {
      const raw = parsed.messages[i];
      ArrayPrototypePush(decisions, null);
      const index = i;
      let body;
      try {
        body = decodeBody(raw.contentType, raw.body);
      } catch {
        body = raw.body;
      }
      ArrayPrototypePush(
        messages,
        ObjectFreeze({
          id: raw.id,
          timestamp: new Date(raw.timestamp),
          body,
          attempts: raw.attempts,
          ack() {
            if (decisions[index] === null) {
              decisions[index] = ["ack", -1];
              op_islet_queue_decide(slot, index, true, -1);
            }
          },
          retry(options) {
            const delay = readDelay(options);
            if (decisions[index] === null) {
              decisions[index] = ["retry", delay];
              op_islet_queue_decide(slot, index, false, delay);
            }
          },
        }),
      );
    }
    this.#decisions = decisions;
    this.messages = ObjectFreeze(messages);
  }

  ackAll() {
    if (this.#all === null) {
      this.#all = ["ack", -1];
      op_islet_queue_decide(this.#slot, WHOLE_BATCH, true, -1);
    }
  }

  retryAll(options) {
    const delay = readDelay(options);
    if (this.#all === null) {
      this.#all = ["retry", delay];
      op_islet_queue_decide(this.#slot, WHOLE_BATCH, false, delay);
    }
  }

  /**
   * What becomes of each message: an explicit ack() or retry() first, then ackAll()/retryAll(),
   * then ack if the handler succeeded and retry if it threw.
   * @param {string | null} error the handler's failure, if it failed
   */
  outcome(error) {
    const fallback = error === null ? ["ack", -1] : ["retry", -1];
    // Written out by hand: JSON.stringify would call a `toJSON` a tenant put on Array.prototype.
    let json = `{"error":${error === null ? "null" : JSONStringify(`${error}`)},"decisions":[`;
    for (let i = 0; i < this.#decisions.length; i++) {
      const decision = this.#decisions[i] ?? this.#all ?? fallback;
      json += `${i === 0 ? "" : ","}["${decision[0]}",${decision[1]}]`;
    }
    return `${json}]}`;
  }
}

/**
 * How an event ended, from the class's own method as it was at boot: a tenant may replace the
 * method on the object it was given, or on the prototype, but not this.
 */
const queueOutcome = QueueBatch.prototype.outcome;

/**
 * @param {boolean} queue whether `event` is the QueueBatch (else the ScheduledController) that
 *   dispatch made
 */
export function eventOutcome(queue, event, error) {
  return FunctionPrototypeCall(queue ? queueOutcome : scheduledOutcome, event, error);
}

/** The `controller` of `scheduled(controller, env, ctx)`. */
export class ScheduledController {
  #noRetry = false;

  /** @param {string} json `{ cron, scheduledTime }` */
  constructor(json) {
    const parsed = JSONParse(json);
    this.cron = parsed.cron;
    this.scheduledTime = parsed.scheduledTime;
  }

  noRetry() {
    this.#noRetry = true;
  }

  outcome(error) {
    return `{"error":${error === null ? "null" : JSONStringify(`${error}`)},"noRetry":${this.#noRetry}}`;
  }
}

const scheduledOutcome = ScheduledController.prototype.outcome;
