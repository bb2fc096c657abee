// CompressionStream and DecompressionStream: the WHATWG Compression standard.
import { area, bytes, eq, Failure, matches, ok, readBytes, throws } from "./harness.js";

const through = async (stream, input) => {
  const writer = stream.writable.getWriter();
  writer.write(input).catch(() => {});
  writer.close().catch(() => {});
  return readBytes(stream.readable);
};
const data = new TextEncoder().encode("hello hello hello hello");
const fromHex = (h) => new Uint8Array(h.match(/../g).map((b) => parseInt(b, 16)));
// "hello" as gzip (RFC 1952, MTIME 0), and variants of it.
const GZIP_HELLO = "1f8b0800000000000203cb48cdc9c9070086a6103605000000";
/** Decompresses `input`, fed as the given chunks; returns the text, or throws what the stream errored with. */
const inflate = async (format, ...chunks) => {
  const ds = new DecompressionStream(format);
  const writer = ds.writable.getWriter();
  for (const c of chunks) writer.write(c).catch(() => {});
  writer.close().catch(() => {});
  return new TextDecoder().decode(await readBytes(ds.readable));
};
/** The error decompressing `input` ends in, or a Failure when it decompresses. */
const inflateError = async (format, input) => {
  let text;
  try {
    text = await inflate(format, input);
  } catch (e) {
    return e;
  }
  throw new Failure(`decompressed to ${JSON.stringify(text)}, expected an error`);
};

export default area("compression", (test) => {
  for (const format of ["gzip", "deflate", "deflate-raw"]) {
    test(`${format}: compress then decompress gives the input back`, async () => {
      const packed = await through(new CompressionStream(format), data);
      const unpacked = await through(new DecompressionStream(format), packed);
      eq(new TextDecoder().decode(unpacked), "hello hello hello hello");
    });
  }
  test("gzip output starts with the gzip magic bytes (RFC 1952)", async () => eq(bytes(await through(new CompressionStream("gzip"), data)).slice(0, 2), [0x1f, 0x8b]));
  test("deflate output starts with a zlib header (RFC 1950)", async () => eq(bytes(await through(new CompressionStream("deflate"), data))[0], 0x78));
  test("an unknown format is a TypeError (WebIDL enum)", () => throws(() => new CompressionStream("brotli-ish"), TypeError));
  test("DecompressionStream of an unknown format is a TypeError", () => throws(() => new DecompressionStream("zip"), TypeError));
  test("a chunk that is not a BufferSource errors the stream with a TypeError", async () => {
    let error;
    try {
      await through(new CompressionStream("gzip"), "text");
    } catch (e) {
      error = e;
    }
    ok(error instanceof TypeError, `a TypeError, got ${error}`);
  });
  test("decompressing garbage errors the stream with a TypeError", async () => {
    let error;
    try {
      await through(new DecompressionStream("gzip"), new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]));
    } catch (e) {
      error = e;
    }
    ok(error instanceof TypeError, `a TypeError, got ${error}`);
  });
  test("a truncated gzip stream is a TypeError at close (decompress flush step)", async () => {
    const packed = await through(new CompressionStream("gzip"), data);
    let error;
    try {
      await through(new DecompressionStream("gzip"), packed.slice(0, packed.length - 4));
    } catch (e) {
      error = e;
    }
    ok(error instanceof TypeError, `a TypeError, got ${error}`);
  });
  test("data after the end of a deflate stream is a TypeError", async () => {
    const packed = await through(new CompressionStream("deflate"), data);
    const extra = new Uint8Array(packed.length + 1);
    extra.set(packed);
    let error;
    try {
      await through(new DecompressionStream("deflate"), extra);
    } catch (e) {
      error = e;
    }
    ok(error instanceof TypeError, `a TypeError, got ${error}`);
  });
  test("an empty input compresses to a valid empty stream", async () => {
    const packed = await through(new CompressionStream("gzip"), new Uint8Array());
    eq((await through(new DecompressionStream("gzip"), packed)).length, 0);
  });
  test("gzip: a second member after the first is a TypeError (only one member; no data after its end)", async () =>
    matches(await inflateError("gzip", fromHex("1f8b08000000000002034b4c02006d48839e020000001f8b08000000000002034b4e0100da8fd64502000000")), TypeError));
  test("deflate-raw: data after the final block is a TypeError", async () => matches(await inflateError("deflate-raw", fromHex("cb48cdc9c9070000")), TypeError));
  test("gzip: a wrong CRC32 is a TypeError (RFC 1952 trailer)", async () =>
    matches(await inflateError("gzip", fromHex("1f8b0800000000000203cb48cdc9c9070087a6103605000000")), TypeError));
  test("gzip: a wrong ISIZE is a TypeError (RFC 1952 trailer)", async () =>
    matches(await inflateError("gzip", fromHex("1f8b0800000000000203cb48cdc9c9070086a6103604000000")), TypeError));
  test("gzip: a wrong header CRC (FHCRC) is a TypeError", async () =>
    matches(await inflateError("gzip", fromHex("1f8b08020000000000ff6f36cb48cdc9c9070086a6103605000000")), TypeError));
  test("gzip: FEXTRA, FNAME and FCOMMENT are skipped", async () =>
    eq(await inflate("gzip", fromHex("1f8b081c0000000000ff030078797a6e616d652e747874006120636f6d6d656e7400cb48cdc9c9070086a6103605000000")), "hello"));
  test("deflate: a wrong ADLER32 is a TypeError (RFC 1950)", async () => matches(await inflateError("deflate", fromHex("789ccb48cdc9c90700062c0214")), TypeError));
  test("deflate: the FDICT flag is a TypeError (not supported by these APIs)", async () =>
    matches(await inflateError("deflate", fromHex("78bb1a0b045dcb003101062c0215")), TypeError));
  test("an empty input to DecompressionStream is a TypeError at close (decompress flush and enqueue step 2)", async () =>
    matches(await inflateError("gzip", new Uint8Array()), TypeError));
  test("input split into one-byte chunks decompresses the same", async () => {
    const gz = fromHex(GZIP_HELLO);
    eq(await inflate("gzip", ...Array.from(gz, (b) => new Uint8Array([b]))), "hello");
  });
  test("ArrayBuffer and DataView chunks are accepted (BufferSource), and an empty chunk is skipped", async () => {
    const gz = fromHex(GZIP_HELLO);
    eq(await inflate("gzip", gz.buffer.slice(0, 10), new Uint8Array(0), new DataView(gz.buffer, 10)), "hello");
  });
  test("every output chunk is a Uint8Array", async () => {
    const cs = new CompressionStream("deflate");
    const writer = cs.writable.getWriter();
    writer.write(new DataView(data.buffer));
    writer.close();
    const reader = cs.readable.getReader();
    for (let r = await reader.read(); !r.done; r = await reader.read()) ok(r.value instanceof Uint8Array, `a Uint8Array, got ${Object.prototype.toString.call(r.value)}`);
  });
  test("the format is matched case-sensitively (WebIDL enum)", () => throws(() => new CompressionStream("GZIP"), TypeError));
  test("aborting the writable side errors the readable side with the reason (TransformStream set up)", async () => {
    const ds = new DecompressionStream("gzip");
    const read = ds.readable.getReader().read();
    await ds.writable.abort(new RangeError("stop"));
    let error;
    try {
      await read;
    } catch (e) {
      error = e;
    }
    matches(error, RangeError);
  });
  test("gzip output's trailer holds the CRC32 and length of the input (RFC 1952)", async () => {
    const out = await through(new CompressionStream("gzip"), new TextEncoder().encode("hello"));
    eq(bytes(out.slice(-8)), [0x86, 0xa6, 0x10, 0x36, 5, 0, 0, 0]);
  });
});
