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
  // Blob and File (https://w3c.github.io/FileAPI/), FormData's entries (HTML "create an entry").
  test("slice step 4.a: without contentType the new Blob's type is empty, not the source's", () => eq(new Blob(["x"], { type: "a/b" }).slice().type, ""));
  test("slice: start and end are [Clamp] long long, halves round to even (1.5 is 2, 4.5 is 4)", async () => eq(await new Blob(["abcdef"]).slice(1.5, 4.5).text(), "cd"));
  test("slice step 4.b.1: a contentType outside U+0020-U+007E becomes empty", () => eq(new Blob(["x"]).slice(0, 1, "a/\u00e9").type, ""));
  test("Blob constructor step 3: the type is only lowercased, not parsed", () => eq(new Blob([], { type: "Text/Plain;Charset=UTF-8" }).type, "text/plain;charset=utf-8"));
  test("process blob parts: a string part is a USVString, a lone surrogate is U+FFFD", async () => eq(Array.from(await new Blob(["\ud800"]).bytes()), [0xef, 0xbf, 0xbd]));
  test("Blob constructor: blobParts that is not an iterable object is a TypeError (WebIDL sequence)", () => {
    throws(() => new Blob({}), TypeError);
    throws(() => new Blob(null), TypeError);
    eq(new Blob(undefined).size, 0);
  });
  test("Blob.text: UTF-8 decode strips a leading BOM and replaces invalid bytes", async () =>
    eq(await new Blob([new Uint8Array([0xef, 0xbb, 0xbf, 0x61, 0xff])]).text(), "a\ufffd"));
  test("File: the name is a USVString, a lone surrogate becomes U+FFFD", () => eq(new File([], "a\ud800").name, "a\ufffd"));
  test("File: lastModified is a long long, a Date converts to its time value", () => eq(new File([], "n", { lastModified: new Date(1234) }).lastModified, 1234));
  test("FormData create an entry: a File value without a filename is kept as the same object", () => {
    const f = new File(["x"], "f.txt");
    const fd = new FormData();
    fd.append("f", f);
    ok(fd.get("f") === f, "the same File");
  });
  test("FormData create an entry: a File with a filename becomes a new File of that name", async () => {
    const f = new File(["x"], "old.txt");
    const fd = new FormData();
    fd.append("f", f, "new.txt");
    const g = fd.get("f");
    eq([g !== f, g.name, await g.text(), f.name], [true, "new.txt", "x", "old.txt"]);
  });
  test("FormData: names and values are USVStrings, lone surrogates become U+FFFD", () => {
    const fd = new FormData();
    fd.append("\ud800", "\udc00");
    eq([...fd], [["\ufffd", "\ufffd"]]);
  });
  test("FormData constructor: an argument that is not a form is a TypeError", () => throws(() => new FormData({}), TypeError));
  test("multipart/form-data encoding: \" in names and filenames is escaped as %22", async () => {
    const fd = new FormData();
    fd.append('a"b', new File(["x"], 'c"d.txt'));
    const back = await new Response(fd).formData();
    const [[name, file]] = [...back];
    eq([name, file.name], ["a%22b", "c%22d.txt"]);
  });
  test("FormData.append and set have length 2 (WebIDL: the shortest overload)", () => eq([FormData.prototype.append.length, FormData.prototype.set.length], [2, 2]));
  test("Body.formData, multipart: a text part is UTF-8 decoded without BOM (a U+FEFF is kept)", async () => {
    const text = '--B\r\nContent-Disposition: form-data; name="a"\r\n\r\n\ufeffx\r\n--B--\r\n';
    const fd = await new Response(text, { headers: { "content-type": "multipart/form-data; boundary=B" } }).formData();
    eq(fd.get("a"), "\ufeffx");
  });
  test("Body.formData, multipart: a part with an empty filename is still a File", async () => {
    const text = '--B\r\nContent-Disposition: form-data; name="a"; filename=""\r\n\r\nx\r\n--B--\r\n';
    const fd = await new Response(text, { headers: { "content-type": "multipart/form-data; boundary=B" } }).formData();
    const f = fd.get("a");
    eq([f instanceof File, f.name], [true, ""]);
  });
  test("File is serializable: structuredClone keeps its bytes, type, name and lastModified", async () => {
    const f = structuredClone(new File(["xy"], "n.txt", { type: "a/b", lastModified: 3 }));
    eq([f instanceof File, f.name, f.type, f.lastModified, await f.text()], [true, "n.txt", "a/b", 3, "xy"]);
  });
  test("FormData.append and set with three arguments convert the name before the value (WebIDL overload resolution)", () => {
    const name = { toString() { throw new RangeError("name converted first"); } };
    throws(() => new FormData().append(name, "x", "f"), RangeError);
    throws(() => new FormData().set(name, "x", "f"), RangeError);
  });
  test("FormData has length 0 (both constructor arguments are optional)", () => eq(FormData.length, 0));
});
