// Blob, File and FormData: the W3C File API and the WHATWG XHR standard's FormData.
import { area, eq, ok, readBytes, throws } from "./harness.js";

export default area("blob", (test) => {
  test("Blob parts: strings, views and blobs are concatenated", async () =>
    eq(await new Blob(["a", new Uint8Array([98]), new Blob(["c"])]).text(), "abc"));
  test("Blob: strings are UTF-8 encoded; size counts bytes", () => eq(new Blob(["\u20ac"]).size, 3));
  test("Blob constructor step 3: the type is lowercased", () => eq(new Blob([], { type: "TEXT/Plain" }).type, "text/plain"));
  test("Blob constructor step 3.1: a type with a code point outside U+0020-U+007E becomes empty", () => eq(new Blob([], { type: "text/\u00e9" }).type, ""));
  test("slice with negative start and end counts from the end", async () => eq(await new Blob(["abcdef"]).slice(-3, -1).text(), "de"));
  test("slice: the contentType argument is the new type, lowercased", () => eq(new Blob(["x"]).slice(0, 1, "A/B").type, "a/b"));
  test("slice: start past the end is an empty blob", () => eq(new Blob(["abc"]).slice(10).size, 0));
  test("endings: native converts line endings to LF on Linux", () => eq(new Blob(["a\r\nb\rc"], { endings: "native" }).size, 5));
  test("endings: an invalid value is a TypeError (WebIDL enum)", () => throws(() => new Blob([], { endings: "windows" }), TypeError));
  test("Blob parts that are not a sequence are a TypeError", () => throws(() => new Blob("abc"), TypeError));
  test("Blob.arrayBuffer and bytes", async () => {
    const b = new Blob(["hi"]);
    eq(new Uint8Array(await b.arrayBuffer()).length, 2);
    eq(Array.from(await b.bytes()), [104, 105]);
  });
  test("Blob.stream yields its bytes", async () => eq(Array.from(await readBytes(new Blob(["xy"]).stream())), [120, 121]));
  test("File: name, type and a numeric lastModified", () => {
    const f = new File(["x"], "a.txt", { type: "text/plain" });
    ok(f instanceof Blob, "a File is a Blob");
    eq([f.name, f.type, typeof f.lastModified], ["a.txt", "text/plain", "number"]);
  });
  test("File: lastModified is kept from the options", () => eq(new File([], "n", { lastModified: 42 }).lastModified, 42));
  test("File without a name is a TypeError (two arguments required)", () => throws(() => new File(["x"]), TypeError));
  test("FormData: a Blob value becomes a File named \"blob\"", () => {
    const fd = new FormData();
    fd.append("f", new Blob(["x"]));
    const f = fd.get("f");
    ok(f instanceof File, "a File");
    eq(f.name, "blob");
  });
  test("FormData: the filename argument names the File", () => {
    const fd = new FormData();
    fd.append("f", new Blob(["x"]), "pic.png");
    eq(fd.get("f").name, "pic.png");
  });
  test("FormData: get of an absent name is null, getAll is empty", () => {
    const fd = new FormData();
    eq([fd.get("x"), fd.getAll("x")], [null, []]);
  });
  test("FormData: set replaces every entry of the name, in place of the first", () => {
    const fd = new FormData();
    fd.append("a", "1");
    fd.append("b", "2");
    fd.append("a", "3");
    fd.set("a", "4");
    eq([...fd], [["a", "4"], ["b", "2"]]);
  });
  test("FormData: a filename with a string value is a TypeError", () => throws(() => new FormData().append("a", "x", "name"), TypeError));
  test("multipart/form-data encoding: line breaks become CRLF, and CR and LF in names are escaped", async () => {
    const fd = new FormData();
    fd.append("a\nb", "x\ry");
    const back = await new Response(fd).formData();
    eq([...back], [["a%0D%0Ab", "x\r\ny"]]);
  });
  test("multipart/form-data round trip through a Request, with a boundary", async () => {
    const fd = new FormData();
    fd.append("t", "v");
    fd.append("f", new File(["data"], "d.bin", { type: "application/octet-stream" }));
    const req = new Request("http://a/", { method: "POST", body: fd });
    ok(/^multipart\/form-data; boundary=/.test(req.headers.get("content-type")), "content-type with boundary");
    const back = await req.formData();
    eq([back.get("t"), back.get("f").name, await back.get("f").text()], ["v", "d.bin", "data"]);
  });
});
