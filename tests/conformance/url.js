// URL and URLSearchParams: the WHATWG URL standard.
import { area, eq, ok, throws } from "./harness.js";

export default area("url", (test) => {
  test("basic URL parser: scheme and host are lowercased, default port dropped, dot segments removed", () =>
    eq(new URL("HTTP://EXAMPLE.com:80/a/../b/./c").href, "http://example.com/b/c"));
  test("URL constructor step 2: a parse failure is a TypeError", () => throws(() => new URL("http://[::1"), TypeError));
  test("URL constructor: a relative URL without a base is a TypeError", () => throws(() => new URL("/path"), TypeError));
  test("port state step 2.2: a port above 65535 fails", () => throws(() => new URL("http://a:65536/"), TypeError));
  test("special schemes: a backslash is a path separator", () => eq(new URL("http://a\\b\\c").pathname, "/b/c"));
  test("IPv4 parser: hex and shorthand parts", () => eq(new URL("http://0x7f.1/").hostname, "127.0.0.1"));
  test("host parser: domain to ASCII (IDNA)", () => eq(new URL("http://m\u00fcnchen.de/").hostname, "xn--mnchen-3ya.de"));
  test("host parser: a forbidden host code point fails", () => throws(() => new URL("http://a<b/"), TypeError));
  test("IPv6 serializer: compresses the longest run of zeros", () => eq(new URL("http://[1:0:0:2:0:0:0:3]/").host, "[1:0:0:2::3]"));
  test("origin of http(s) is scheme://host[:port]", () => eq(new URL("https://a.com:8443/x").origin, "https://a.com:8443"));
  test("origin of blob: is the origin of its path's URL when that is http(s)", () => eq(new URL("blob:https://a.com/uuid").origin, "https://a.com"));
  test("origin of blob: with a non-http(s) inner URL is an opaque origin, serialized \"null\"", () => eq(new URL("blob:ftp://host/path").origin, "null"));
  test("origin of file: is opaque (\"null\")", () => eq(new URL("file:///etc/hosts").origin, "null"));
  test("origin of a non-special scheme is \"null\"", () => eq(new URL("foo://host/x").origin, "null"));
  test("search setter: percent-encodes with the query set", () => {
    const u = new URL("http://a/");
    u.search = "?a=b c";
    eq(u.search, "?a=b%20c");
  });
  test("protocol setter: a special URL cannot become non-special", () => {
    const u = new URL("http://a/");
    u.protocol = "foo";
    eq(u.protocol, "http:");
  });
  test("hash setter: an empty string removes the fragment", () => {
    const u = new URL("http://a/#x");
    u.hash = "";
    eq(u.href, "http://a/");
  });
  test("toJSON returns href", () => eq(new URL("http://a/b").toJSON(), "http://a/b"));
  test("URL.canParse: true with a base, false without", () => eq([URL.canParse("x", "http://a/"), URL.canParse("x")], [true, false]));
  test("URL.parse: null on failure, a URL on success", () => {
    eq(URL.parse("nope"), null);
    eq(URL.parse("/x", "http://a/").href, "http://a/x");
  });
  test("path percent-encode set: space and \" are encoded in the path", () => eq(new URL('http://a/b c"d').pathname, "/b%20c%22d"));
  test("userinfo is percent-encoded and serialized", () => eq(new URL("http://us er:p@ss@a/").href, "http://us%20er:p%40ss@a/"));
  test("username setter is ignored for a host-less URL", () => {
    const u = new URL("mailto:x@y");
    u.username = "z";
    eq(u.href, "mailto:x@y");
  });
  test("searchParams is live: appending updates search", () => {
    const u = new URL("http://a/?x=1");
    u.searchParams.append("y", "2 3");
    eq(u.search, "?x=1&y=2+3");
  });
  test("URLSearchParams: parses + as space and percent escapes", () => {
    const p = new URLSearchParams("?a=1&a=2&b=%20+");
    eq([p.getAll("a"), p.get("b")], [["1", "2"], "  "]);
  });
  test("URLSearchParams serializer: application/x-www-form-urlencoded (space as +, ~ encoded)", () =>
    eq(new URLSearchParams({ k: "a b~*-._!" }).toString(), "k=a+b%7E*-._%21"));
  test("URLSearchParams: sort is stable and by code units", () => {
    const p = new URLSearchParams("b=1&a=2&b=0&\ufb03=x&\ud83c\udf08=y");
    p.sort();
    eq([...p.keys()], ["a", "b", "b", "\ud83c\udf08", "\ufb03"]);
    eq(p.getAll("b"), ["1", "0"]);
  });
  test("URLSearchParams from a sequence: a pair that is not two items is a TypeError", () => throws(() => new URLSearchParams([["a", "b", "c"]]), TypeError));
  test("URLSearchParams.size counts pairs", () => eq(new URLSearchParams("a=1&a=2&b").size, 3));
  test("URLSearchParams has/delete with a value argument", () => {
    const p = new URLSearchParams("a=1&a=2");
    ok(p.has("a", "2") && !p.has("a", "3"), "has(name, value)");
    p.delete("a", "1");
    eq(p.toString(), "a=2");
  });
  test("URLSearchParams: a lone surrogate is replaced with U+FFFD when serialized", () => eq(new URLSearchParams({ a: "\ud800" }).toString(), "a=%EF%BF%BD"));
  test("URLPattern matches and captures named groups", () => {
    const p = new URLPattern({ pathname: "/items/:id" });
    eq(p.exec("https://a.com/items/42").pathname.groups.id, "42");
  });
  // Edge cases of the basic URL parser, its setters and the urlencoded parser
  // (https://url.spec.whatwg.org/#concept-basic-url-parser).
  test("URL constructor step 1: an unparsable base is a TypeError even when the input is absolute", () => throws(() => new URL("http://b/", "nope"), TypeError));
  test("IPv4 number parser: 09 is not octal, so the host fails", () => throws(() => new URL("http://09.0.0.1/"), TypeError));
  test("IPv6 serializer: an embedded IPv4 part is serialized as two hex pieces", () => eq(new URL("http://[::ffff:1.2.3.4]/").host, "[::ffff:102:304]"));
  test("port state: leading zeros are dropped, and the scheme's default port is then omitted", () => {
    eq(new URL("http://a:0080/").href, "http://a/");
    eq(new URL("http://a:08080/").port, "8080");
  });
  test("port setter: parsing stops at the first non-digit; above 65535 leaves the port unchanged", () => {
    const u = new URL("http://a:1/");
    u.port = "8080abc";
    eq(u.port, "8080");
    u.port = "65536";
    eq(u.port, "8080");
  });
  test("hostname setter: a value with \":\" fails and leaves the host unchanged (host state step 2.2)", () => {
    const u = new URL("http://a/");
    u.hostname = "b:99";
    eq(u.href, "http://a/");
  });
  test("URL serializer: a host-less path starting with an empty segment is prefixed with \"/.\"", () => {
    const u = new URL("web+demo:/.//not-a-host/");
    eq([u.href, u.pathname], ["web+demo:/.//not-a-host/", "//not-a-host/"]);
  });
  test("path state: \"..\" does not pop a normalized Windows drive letter in a file URL", () => eq(new URL("file:///C:/../x").href, "file:///C:/x"));
  test("path state: a file URL's first segment C| becomes the drive letter C:", () => eq(new URL("file:///C|/x").href, "file:///C:/x"));
  test("special-query percent-encode set: ' is encoded only in a special URL's query", () =>
    eq([new URL("http://a/?'").search, new URL("foo://a/?'").search], ["?%27", "?'"]));
  test("path percent-encode set: {, } and backtick are encoded", () => eq(new URL("http://a/{`}").pathname, "/%7B%60%7D"));
  test("path percent-encode set: ^ is encoded", () => eq(new URL("http://a/^").pathname, "/%5E"));
  test("opaque-host parser: a forbidden host code point (\\) in a non-special URL fails", () => throws(() => new URL("foo://a\\b/"), TypeError));
  test("URLSearchParams update step 3: removing the last pair makes the query null (no \"?\")", () => {
    const u = new URL("http://a/?x=1");
    u.searchParams.delete("x");
    eq(u.href, "http://a/");
  });
  test("urlencoded parser: UTF-8 decode without BOM keeps a leading U+FEFF", () => eq([...new URLSearchParams("\ufeffa=1").keys()], ["\ufeffa"]));
  test("urlencoded parser: a bad percent escape is kept, invalid UTF-8 becomes U+FFFD", () => {
    const p = new URLSearchParams("a=%zz&b=%e2%82&c=%");
    eq([p.get("a"), p.get("b"), p.get("c")], ["%zz", "\ufffd", "%"]);
  });
  test("opaque path state: a space just before ? or # is encoded as %20", () => {
    eq(new URL("sc:x #y").href, "sc:x%20#y");
    eq(new URL("data:text/plain,a b ?c").pathname, "text/plain,a b%20");
  });
});
