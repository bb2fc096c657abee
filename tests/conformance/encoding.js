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
});
