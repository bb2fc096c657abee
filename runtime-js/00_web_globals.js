// Islet edge layer, step 0: the Web platform.
//
// Loads Deno's Web API scripts (deno_webidl, deno_web, deno_fetch, deno_crypto) and installs the
// globals a Workers-style handler expects. Runs once, while the startup snapshot is made, so a new
// isolate starts with all of this already in its heap. Nothing Deno-specific is exposed: the `Deno`
// namespace is removed when an isolate boots (99_main.js).
import { core, internals, primordials } from "ext:core/mod.js";

const { ObjectDefineProperties, ObjectDefineProperty, ObjectFreeze, SymbolFor } = primordials;

// deno_fetch traces fetch() through Deno's OpenTelemetry extension when it is there. Islet does
// not ship that extension (tracing is the node's job, not the tenant's), so fetch gets telemetry
// switched off: it checks TRACING_ENABLED and never reaches the span functions.
const noTracing = () => {};
internals.__telemetry ??= ObjectFreeze({
  TRACING_ENABLED: false,
  PROPAGATORS: [],
  DID_NOT_ENTER: SymbolFor("islet.telemetry.didNotEnter"),
  builtinTracer: noTracing,
  ContextManager: ObjectFreeze({ active: noTracing }),
  enterSpan: noTracing,
  exitSpan: noTracing,
});
internals.__telemetryUtil ??= ObjectFreeze({
  updateSpanFromClientResponse: noTracing,
  updateSpanFromError: noTracing,
  updateSpanFromRequest: noTracing,
});

// deno_crypto reads `internals.kKeyObject` (a symbol of Deno's node extension) and, when it is a
// symbol, stores it and webidl's brand in a thread-local to stamp on every CryptoKey. Islet runs
// many isolates on one thread, so that thread-local would hand one isolate's symbols to another's
// keys. It stays undefined: deno_crypto then registers nothing, and a CryptoKey cannot be
// structured-cloned (tests/conformance/expectations.json).
if (internals.kKeyObject !== undefined) throw new Error("internals.kKeyObject must stay undefined");

export const webidl = core.loadExtScript("ext:deno_webidl/00_webidl.js");
export const url = core.loadExtScript("ext:deno_web/00_url.js");
const urlPattern = core.loadExtScript("ext:deno_web/01_urlpattern.js");
export const consoleModule = core.loadExtScript("ext:deno_web/01_console.js");
export const { DOMException } = core.loadExtScript("ext:deno_web/01_dom_exception.js");
export const event = core.loadExtScript("ext:deno_web/02_event.js");
export const timers = core.loadExtScript("ext:deno_web/02_timers.js");
export const abortSignal = core.loadExtScript("ext:deno_web/03_abort_signal.js");
export const base64 = core.loadExtScript("ext:deno_web/05_base64.js");
export const streams = core.loadExtScript("ext:deno_web/06_streams.js");
export const encoding = core.loadExtScript("ext:deno_web/08_text_encoding.js");
export const file = core.loadExtScript("ext:deno_web/09_file.js");
const fileReader = core.loadExtScript("ext:deno_web/10_filereader.js");
export const messagePort = core.loadExtScript("ext:deno_web/13_message_port.js");
const compression = core.loadExtScript("ext:deno_web/14_compression.js");
export const performance = core.loadExtScript("ext:deno_web/15_performance.js");
export const headers = core.loadExtScript("ext:deno_fetch/20_headers.js");
export const formData = core.loadExtScript("ext:deno_fetch/21_formdata.js");
export const body = core.loadExtScript("ext:deno_fetch/22_body.js");
export const request = core.loadExtScript("ext:deno_fetch/23_request.js");
export const response = core.loadExtScript("ext:deno_fetch/23_response.js");
export const fetchModule = core.loadExtScript("ext:deno_fetch/26_fetch.js");
export const crypto = core.loadExtScript("ext:deno_crypto/00_crypto.js");
// `Crypto.registerSymbols` is the door to that thread-local, and it is a public static of the
// global `Crypto`: a tenant calling it with symbols of its own isolate made the next key another
// isolate on the thread created use them, and V8 aborted the process. deno_crypto calls it once,
// through the class, with `kKeyObject` undefined (a no-op); it is now a no-op for everyone, and
// cannot be replaced.
ObjectDefineProperty(crypto.Crypto, "registerSymbols", {
  __proto__: null,
  value: function registerSymbols() {
    return false;
  },
  writable: false,
  enumerable: false,
  configurable: false,
});

const nonEnumerable = core.propNonEnumerable;
const writable = core.propWritable;

// https://html.spec.whatwg.org/multipage/webappapis.html#windoworworkerglobalscope, as far as an
// edge handler needs it. console and the timers are installed by 02_console.js and 03_timers.js.
ObjectDefineProperties(globalThis, {
  AbortController: nonEnumerable(abortSignal.AbortController),
  AbortSignal: nonEnumerable(abortSignal.AbortSignal),
  Blob: nonEnumerable(file.Blob),
  ByteLengthQueuingStrategy: nonEnumerable(streams.ByteLengthQueuingStrategy),
  CompressionStream: nonEnumerable(compression.CompressionStream),
  CountQueuingStrategy: nonEnumerable(streams.CountQueuingStrategy),
  CryptoKey: nonEnumerable(crypto.CryptoKey),
  CustomEvent: nonEnumerable(event.CustomEvent),
  DecompressionStream: nonEnumerable(compression.DecompressionStream),
  DOMException: nonEnumerable(DOMException),
  ErrorEvent: nonEnumerable(event.ErrorEvent),
  Event: nonEnumerable(event.Event),
  EventTarget: nonEnumerable(event.EventTarget),
  File: nonEnumerable(file.File),
  FileReader: nonEnumerable(fileReader.FileReader),
  FormData: nonEnumerable(formData.FormData),
  Headers: nonEnumerable(headers.Headers),
  MessageChannel: nonEnumerable(messagePort.MessageChannel),
  MessageEvent: nonEnumerable(event.MessageEvent),
  MessagePort: nonEnumerable(messagePort.MessagePort),
  Performance: nonEnumerable(performance.Performance),
  PerformanceEntry: nonEnumerable(performance.PerformanceEntry),
  PerformanceMark: nonEnumerable(performance.PerformanceMark),
  PerformanceMeasure: nonEnumerable(performance.PerformanceMeasure),
  ProgressEvent: nonEnumerable(event.ProgressEvent),
  PromiseRejectionEvent: nonEnumerable(event.PromiseRejectionEvent),
  ReadableByteStreamController: nonEnumerable(streams.ReadableByteStreamController),
  ReadableStream: nonEnumerable(streams.ReadableStream),
  ReadableStreamBYOBReader: nonEnumerable(streams.ReadableStreamBYOBReader),
  ReadableStreamBYOBRequest: nonEnumerable(streams.ReadableStreamBYOBRequest),
  ReadableStreamDefaultController: nonEnumerable(streams.ReadableStreamDefaultController),
  ReadableStreamDefaultReader: nonEnumerable(streams.ReadableStreamDefaultReader),
  Request: nonEnumerable(request.Request),
  Response: nonEnumerable(response.Response),
  SubtleCrypto: nonEnumerable(crypto.SubtleCrypto),
  Crypto: nonEnumerable(crypto.Crypto),
  TextDecoder: nonEnumerable(encoding.TextDecoder),
  TextDecoderStream: nonEnumerable(encoding.TextDecoderStream),
  TextEncoder: nonEnumerable(encoding.TextEncoder),
  TextEncoderStream: nonEnumerable(encoding.TextEncoderStream),
  TransformStream: nonEnumerable(streams.TransformStream),
  TransformStreamDefaultController: nonEnumerable(streams.TransformStreamDefaultController),
  URL: nonEnumerable(url.URL),
  URLPattern: nonEnumerable(urlPattern.URLPattern),
  URLSearchParams: nonEnumerable(url.URLSearchParams),
  WritableStream: nonEnumerable(streams.WritableStream),
  WritableStreamDefaultController: nonEnumerable(streams.WritableStreamDefaultController),
  WritableStreamDefaultWriter: nonEnumerable(streams.WritableStreamDefaultWriter),
  atob: writable(base64.atob),
  btoa: writable(base64.btoa),
  // A getter: the Crypto object is a cppgc-backed Rust object, which cannot live in the snapshot;
  // it is made on first use in each isolate.
  crypto: core.propGetterOnly(() => crypto.crypto),
  fetch: writable(fetchModule.fetch),
  performance: writable(performance.performance),
  structuredClone: writable(messagePort.structuredClone),
  self: core.propGetterOnly(() => globalThis),
  [webidl.brand]: nonEnumerable(webidl.brand),
});
