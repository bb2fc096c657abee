// TextEncoder, TextDecoder and their streams: the WHATWG Encoding standard.
import { area, bytes, eq, readAll, throws } from "./harness.js";

export default area("encoding", (test) => {
  test("TextEncoder.encoding is utf-8", () => eq(new TextEncoder().encoding, "utf-8"));
  test("TextEncoder.encode: UTF-8 of a three-byte code point", () => eq(bytes(new TextEncoder().encode("\u20ac")), [0xe2, 0x82, 0xac]));
  test("TextEncoder.encode: the input is a USVString, a lone surrogate becomes U+FFFD", () =>
    eq(bytes(new TextEncoder().encode("\ud800")), [0xef, 0xbf, 0xbd]));
  test("TextEncoder.encode() with no argument is empty", () => eq(new TextEncoder().encode().length, 0));
  test("encodeInto: stops before a code point that does not fit, read/written in code units/bytes", () => {
    const dest = new Uint8Array(3);
    const r = new TextEncoder().encodeInto("a\u20ac", dest);
    eq([r.read, r.written], [1, 1]);
  });
  test("encodeInto: a surrogate pair counts 2 read, 4 written", () => {
    const r = new TextEncoder().encodeInto("\ud83d\ude00", new Uint8Array(8));
    eq([r.read, r.written], [2, 4]);
  });
  test("TextDecoder: default is utf-8 and replacement mode", () => eq(new TextDecoder().decode(new Uint8Array([0x61, 0xff, 0x62])), "a\ufffdb"));
  test("TextDecoder fatal: invalid UTF-8 throws TypeError (decode, error mode fatal)", () =>
    throws(() => new TextDecoder("utf-8", { fatal: true }).decode(new Uint8Array([0xff])), TypeError));
  test("TextDecoder: the UTF-8 BOM is stripped unless ignoreBOM", () => {
    const input = new Uint8Array([0xef, 0xbb, 0xbf, 0x61]);
    eq(new TextDecoder().decode(input), "a");
    eq(new TextDecoder("utf-8", { ignoreBOM: true }).decode(input), "\ufeffa");
  });
  test("get an encoding: labels are trimmed and case-insensitive", () => eq(new TextDecoder(" UTF8 ").encoding, "utf-8"));
  test("get an encoding: latin1 is windows-1252", () => eq(new TextDecoder("latin1").encoding, "windows-1252"));
  test("TextDecoder constructor step 2: an unknown label is a RangeError", () => throws(() => new TextDecoder("nope"), RangeError));
  test("TextDecoder constructor step 2: the replacement encoding is a RangeError", () => throws(() => new TextDecoder("iso-2022-kr"), RangeError));
  test("TextDecoder utf-16le decodes", () => eq(new TextDecoder("utf-16le").decode(new Uint8Array([0x61, 0, 0x62, 0])), "ab"));
  test("TextDecoder windows-1252: 0x80 is the euro sign", () => eq(new TextDecoder("windows-1252").decode(new Uint8Array([0x80])), "\u20ac"));
  test("decode with stream: a split sequence is held until completed", () => {
    const d = new TextDecoder();
    const first = d.decode(new Uint8Array([0xe2, 0x82]), { stream: true });
    const second = d.decode(new Uint8Array([0xac]));
    eq([first, second], ["", "\u20ac"]);
  });
  test("decode without stream: a truncated sequence at the end is U+FFFD", () => eq(new TextDecoder().decode(new Uint8Array([0x61, 0xe2, 0x82])), "a\ufffd"));
  test("decode(): no input is the empty string", () => eq(new TextDecoder().decode(), ""));
  test("decode accepts a DataView and an ArrayBuffer", () => {
    const buf = new TextEncoder().encode("xyz").buffer;
    eq(new TextDecoder().decode(new DataView(buf, 1)), "yz");
    eq(new TextDecoder().decode(buf), "xyz");
  });
  test("decode of a non-BufferSource is a TypeError", () => throws(() => new TextDecoder().decode("abc"), TypeError));
  test("TextDecoder.fatal and ignoreBOM reflect the options", () => {
    const d = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
    eq([d.fatal, d.ignoreBOM], [true, true]);
  });
  test("TextEncoderStream encodes string chunks", async () => {
    const s = new TextEncoderStream();
    const w = s.writable.getWriter();
    w.write("h\u00e9");
    w.close();
    const chunks = await readAll(s.readable);
    eq(chunks.flatMap((c) => Array.from(c)), [0x68, 0xc3, 0xa9]);
  });
  test("TextDecoderStream joins a sequence split across chunks", async () => {
    const s = new TextDecoderStream();
    const w = s.writable.getWriter();
    w.write(new Uint8Array([0xe2]));
    w.write(new Uint8Array([0x82, 0xac]));
    w.close();
    eq((await readAll(s.readable)).join(""), "\u20ac");
  });
  test("TextDecoderStream fatal: invalid input errors the stream with a TypeError", async () => {
    const s = new TextDecoderStream("utf-8", { fatal: true });
    const w = s.writable.getWriter();
    w.write(new Uint8Array([0xff])).catch(() => {});
    w.close().catch(() => {});
    let error;
    try {
      await readAll(s.readable);
    } catch (e) {
      error = e;
    }
    eq(error instanceof TypeError, true, "errored with a TypeError");
  });
  // The UTF-8 decoder's error handling (https://encoding.spec.whatwg.org/#utf-8-decoder): one U+FFFD
  // per maximal subpart, and the byte that ends a bad sequence is reprocessed.
  const utf8 = (list, options) => new TextDecoder("utf-8", options).decode(new Uint8Array(list));
  test("UTF-8 decoder: an overlong lead byte (C0 80) is two errors", () => eq(utf8([0xc0, 0x80]), "\ufffd\ufffd"));
  test("UTF-8 decoder: an encoded surrogate (ED A0 80) is three errors", () => eq(utf8([0xed, 0xa0, 0x80]), "\ufffd\ufffd\ufffd"));
  test("UTF-8 decoder: a truncated four-byte sequence is one error and the next byte is reprocessed", () => eq(utf8([0xf0, 0x90, 0x80, 0x61]), "\ufffda"));
  test("UTF-8 decoder: a code point above U+10FFFF (F4 90 80 80) is four errors", () => eq(utf8([0xf4, 0x90, 0x80, 0x80]), "\ufffd\ufffd\ufffd\ufffd"));
  test("TextDecoder fatal: a sequence truncated by the end of input is a TypeError", () => throws(() => utf8([0x61, 0xe2, 0x82], { fatal: true }), TypeError));
  test("decode step 1: a call without stream resets the decoder, so the next BOM is stripped again", () => {
    const d = new TextDecoder();
    eq([d.decode(new Uint8Array([0xef, 0xbb, 0xbf, 0x61])), d.decode(new Uint8Array([0xef, 0xbb, 0xbf, 0x62]))], ["a", "b"]);
  });
  test("decode with stream: a BOM split across calls is still stripped", () => {
    const d = new TextDecoder();
    eq([d.decode(new Uint8Array([0xef, 0xbb]), { stream: true }), d.decode(new Uint8Array([0xbf, 0x61]))], ["", "a"]);
  });
  test("decode: bytes held by a streaming call become U+FFFD when a later call flushes", () => {
    const d = new TextDecoder();
    eq([d.decode(new Uint8Array([0xe2]), { stream: true }), d.decode()], ["", "\ufffd"]);
  });
  test("UTF-16LE decoder: an odd trailing byte and a lone surrogate are U+FFFD", () => {
    eq(new TextDecoder("utf-16le").decode(new Uint8Array([0x61, 0x00, 0x62])), "a\ufffd");
    eq(new TextDecoder("utf-16le").decode(new Uint8Array([0x00, 0xd8, 0x61, 0x00])), "\ufffda");
  });
  test("get an encoding step 1: only ASCII whitespace is trimmed, U+00A0 leaves an unknown label (RangeError)", () =>
    throws(() => new TextDecoder("\u00a0utf-8"), RangeError));
  test("TextDecoder constructor: a null label is the string \"null\", unknown: RangeError (WebIDL DOMString)", () =>
    throws(() => new TextDecoder(null), RangeError));
  test("encodeInto: a surrogate pair that does not fit is not written at all", () => {
    const r = new TextEncoder().encodeInto("\ud83d\ude00", new Uint8Array(3));
    eq([r.read, r.written], [0, 0]);
  });
  test("encodeInto: a destination that is not a Uint8Array is a TypeError (WebIDL)", () => throws(() => new TextEncoder().encodeInto("a", new Int8Array(4)), TypeError));
  test("TextEncoderStream: a surrogate pair split across chunks is one code point", async () => {
    const s = new TextEncoderStream();
    const w = s.writable.getWriter();
    w.write("\ud83d");
    w.write("\ude00");
    w.close();
    eq((await readAll(s.readable)).flatMap((c) => Array.from(c)), [0xf0, 0x9f, 0x98, 0x80]);
  });
  test("TextEncoderStream: a trailing high surrogate is flushed as U+FFFD on close", async () => {
    const s = new TextEncoderStream();
    const w = s.writable.getWriter();
    w.write("a\ud83d");
    w.close();
    eq((await readAll(s.readable)).flatMap((c) => Array.from(c)), [0x61, 0xef, 0xbf, 0xbd]);
  });
  test("encodeInto has length 2, encode and decode length 0 (WebIDL: required arguments)", () =>
    eq([TextEncoder.prototype.encodeInto.length, TextEncoder.prototype.encode.length, TextDecoder.prototype.decode.length], [2, 0, 0]));
  test("TextEncoder and TextDecoder are writable, non-enumerable, configurable data properties of the global (WebIDL interface objects)", () => {
    const shape = (d) => d && [d.value === undefined ? "accessor" : typeof d.value, d.writable, d.enumerable, d.configurable];
    eq([shape(Object.getOwnPropertyDescriptor(globalThis, "TextEncoder")), shape(Object.getOwnPropertyDescriptor(globalThis, "TextDecoder"))], [
      ["function", true, false, true],
      ["function", true, false, true],
    ]);
  });
});
