// CompressionStream and DecompressionStream: the WHATWG Compression standard.
import { area, bytes, eq, ok, readBytes, throws } from "./harness.js";

const through = async (stream, input) => {
  const writer = stream.writable.getWriter();
  writer.write(input).catch(() => {});
  writer.close().catch(() => {});
  return readBytes(stream.readable);
};
const data = new TextEncoder().encode("hello hello hello hello");

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
});
