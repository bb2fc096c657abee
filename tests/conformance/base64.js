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
});
