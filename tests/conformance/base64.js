// atob and btoa: HTML "Base64 utility methods", over Infra's forgiving-base64 decode.
import { area, eq, throws } from "./harness.js";

export default area("base64", (test) => {
  test("atob decodes canonical input", () => eq(atob("YWJj"), "abc"));
  test("forgiving-base64 step 1: ASCII whitespace anywhere is removed", () => eq(atob(" YW\tJj\n\f\r"), "abc"));
  test("forgiving-base64 step 2: one or two trailing = are removed when length % 4 == 0", () => {
    eq(atob("YQ=="), "a");
    eq(atob("YWI="), "ab");
  });
  test("forgiving-base64: missing padding is accepted", () => eq(atob("YQ"), "a"));
  test("forgiving-base64 step 3: length % 4 == 1 fails: InvalidCharacterError", () => throws(() => atob("a"), "InvalidCharacterError"));
  test("forgiving-base64 step 4: = left inside the data fails (\" abcd===\")", () => throws(() => atob(" abcd==="), "InvalidCharacterError"));
  test("forgiving-base64 step 4: a lone = in a length-3 input fails", () => throws(() => atob("YQ="), "InvalidCharacterError"));
  test("forgiving-base64 step 3: three = padding fails", () => throws(() => atob("YQ==="), "InvalidCharacterError"));
  test("forgiving-base64 step 4: a code point outside the alphabet fails", () => throws(() => atob("ab*c"), "InvalidCharacterError"));
  test("forgiving-base64 step 4: base64url's - and _ are outside the alphabet", () => throws(() => atob("a-_b"), "InvalidCharacterError"));
  test("forgiving-base64 step 8: leftover non-zero bits are discarded (YR== is a)", () => eq(atob("YR=="), "a"));
  test("atob's argument is a DOMString: null decodes as \"null\"", () => eq(atob(null), "\x9e\xe9e"));
  test("atob's argument is a DOMString: undefined is \"undefined\", length 9, fails", () => throws(() => atob(undefined), "InvalidCharacterError"));
  test("atob with no argument: TypeError (WebIDL, required argument)", () => throws(() => atob(), TypeError));
  test("atob of an empty string is empty", () => eq(atob(""), ""));
  test("atob returns one code unit per byte (latin1)", () => eq(atob("/w=="), "\xff"));
  test("btoa step 1: a code point above U+00FF fails: InvalidCharacterError", () => throws(() => btoa("\u0100"), "InvalidCharacterError"));
  test("btoa encodes each code unit as a byte", () => eq(btoa("\xff\xfe\x00"), "//4A"));
  test("btoa pads to a multiple of 4", () => {
    eq(btoa("a"), "YQ==");
    eq(btoa("ab"), "YWI=");
  });
  test("btoa of an empty string is empty", () => eq(btoa(""), ""));
  test("btoa with no argument: TypeError", () => throws(() => btoa(), TypeError));
  test("round trip of all 256 byte values", () => {
    let s = "";
    for (let i = 0; i < 256; i++) s += String.fromCharCode(i);
    eq(atob(btoa(s)), s);
  });
  // Edge cases of forgiving-base64 (https://infra.spec.whatwg.org/#forgiving-base64-decode) and
  // of the WebIDL DOMString conversion of the argument.
  test("forgiving-base64 step 1: U+000B is not ASCII whitespace, so it fails", () => throws(() => atob("YW\u000bJj"), "InvalidCharacterError"));
  test("forgiving-base64 step 1: U+00A0 is not ASCII whitespace, so it fails", () => throws(() => atob("YW\u00a0Jj"), "InvalidCharacterError"));
  test("forgiving-base64 step 1: whitespace is removed before the padding is looked at (\"YQ= =\")", () => eq(atob("YQ= =\n"), "a"));
  test("forgiving-base64 step 2: \"====\" loses two = and the rest fails step 4", () => throws(() => atob("===="), "InvalidCharacterError"));
  test("forgiving-base64 step 4: = before the last two code points fails (\"ab=c\")", () => throws(() => atob("ab=c"), "InvalidCharacterError"));
  test("forgiving-base64 step 3: length % 4 == 1 after whitespace removal fails (\"YWJj Z\")", () => throws(() => atob("YWJj Z"), "InvalidCharacterError"));
  test("forgiving-base64 step 8: 18 leftover bits keep two bytes, the last two bits are dropped (\"YWJ=\")", () => eq(atob("YWJ="), "ab"));
  test("forgiving-base64 step 8: 12 leftover bits without padding keep one byte (\"YR\")", () => eq(atob("YR"), "a"));
  test("forgiving-base64 step 4: NUL and code units above U+00FF are outside the alphabet", () => {
    throws(() => atob("YQ\u0000="), "InvalidCharacterError");
    throws(() => atob("YW\u0100j"), "InvalidCharacterError");
  });
  test("atob's argument is a DOMString: a number is converted with ToString (1234)", () => eq(atob(1234), "\xd7m\xf8"));
  test("atob's argument is a DOMString: a Symbol is a TypeError (WebIDL)", () => throws(() => atob(Symbol("x")), TypeError));
  test("btoa's argument is a DOMString: null is \"null\"", () => eq(btoa(null), "bnVsbA=="));
  test("btoa step 1: a lone surrogate is a code unit above U+00FF, InvalidCharacterError", () => throws(() => btoa("a\ud800"), "InvalidCharacterError"));
  test("atob and btoa have length 1 (WebIDL: one required argument)", () => eq([atob.length, btoa.length], [1, 1]));
  test("InvalidCharacterError has the legacy code 5 (WebIDL error names table)", () => {
    const e = throws(() => atob("*"), "InvalidCharacterError");
    eq(e.code, 5);
  });
  test("atob: a this value that is not the global object is a TypeError (WebIDL operation steps)", () => {
    eq(atob.call(undefined, "YQ"), "a");
    throws(() => atob.call(5, "YQ"), TypeError);
  });
  test("atob and btoa are own data properties of the global object, writable, enumerable and configurable (WebIDL [Global] operations)", () => {
    const shape = (d) => d && [typeof d.value, d.writable, d.enumerable, d.configurable];
    eq([shape(Object.getOwnPropertyDescriptor(globalThis, "atob")), shape(Object.getOwnPropertyDescriptor(globalThis, "btoa"))], [
      ["function", true, true, true],
      ["function", true, true, true],
    ]);
  });
});
