// crypto.getRandomValues, randomUUID and SubtleCrypto: the W3C Web Cryptography API, its
// algorithms and the errors its steps name.
import { area, eq, hex, ok, rejects, throws } from "./harness.js";

const subtle = crypto.subtle;
const text = (s) => new TextEncoder().encode(s);

export default area("webcrypto", (test) => {
  test("getRandomValues fills an integer array and returns the same object", () => {
    const a = new Uint32Array(8);
    ok(crypto.getRandomValues(a) === a, "same object");
    ok(a.some((x) => x !== 0), "filled");
  });
  test("getRandomValues step 1: a Float32Array is a TypeMismatchError", () => throws(() => crypto.getRandomValues(new Float32Array(6)), "TypeMismatchError"));
  test("getRandomValues step 1: a DataView is a TypeMismatchError", () => throws(() => crypto.getRandomValues(new DataView(new ArrayBuffer(4))), "TypeMismatchError"));
  test("getRandomValues step 2: more than 65,536 bytes is a QuotaExceededError", () =>
    throws(() => crypto.getRandomValues(new Uint8Array(65537)), "QuotaExceededError"));
  test("getRandomValues: exactly 65,536 bytes is allowed", () => eq(crypto.getRandomValues(new Uint8Array(65536)).length, 65536));
  test("getRandomValues: BigInt64Array is an integer type", () => eq(crypto.getRandomValues(new BigInt64Array(2)).length, 2));
  test("randomUUID is a version 4, variant 1 UUID in lowercase", () => ok(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/.test(crypto.randomUUID()), "format"));
  test("digest SHA-256 of \"abc\" (FIPS 180-2 vector)", async () =>
    eq(hex(await subtle.digest("SHA-256", text("abc"))), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
  test("digest: algorithm names are matched case-insensitively (normalize step 2.5)", async () =>
    eq(hex(await subtle.digest({ name: "sha-1" }, text("abc"))), "a9993e364706816aba3e25717850c26c9cd0d89d"));
  test("digest: a registered algorithm that has no digest is a NotSupportedError (normalize step 2.4)", () =>
    rejects(() => subtle.digest("AES-GCM", text("x")), "NotSupportedError"));
  test("digest: an unknown algorithm name is a NotSupportedError", () => rejects(() => subtle.digest("SHA-3", text("x")), "NotSupportedError"));
  test("digest: data that is not a BufferSource is a TypeError", () => rejects(() => subtle.digest("SHA-256", "abc"), TypeError));
  test("HMAC sign and verify (RFC 4231 test case 2)", async () => {
    const key = await subtle.importKey("raw", text("Jefe"), { name: "HMAC", hash: "SHA-256" }, false, ["sign", "verify"]);
    const sig = await subtle.sign("HMAC", key, text("what do ya want for nothing?"));
    eq(hex(sig), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    eq(await subtle.verify("HMAC", key, sig, text("other")), false);
  });
  test("sign with a key whose usages lack sign is an InvalidAccessError (sign step 9)", async () => {
    const key = await subtle.importKey("raw", text("k"), { name: "HMAC", hash: "SHA-256" }, false, ["verify"]);
    await rejects(() => subtle.sign("HMAC", key, text("x")), "InvalidAccessError");
  });
  test("sign with an algorithm that does not match the key is an InvalidAccessError (sign step 8)", async () => {
    const key = await subtle.importKey("raw", text("k"), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
    await rejects(() => subtle.sign({ name: "ECDSA", hash: "SHA-256" }, key, text("x")), "InvalidAccessError");
  });
  test("AES-GCM encrypt and decrypt round trip", async () => {
    const key = await subtle.generateKey({ name: "AES-GCM", length: 128 }, false, ["encrypt", "decrypt"]);
    const iv = crypto.getRandomValues(new Uint8Array(12));
    const ct = await subtle.encrypt({ name: "AES-GCM", iv }, key, text("secret"));
    eq(new TextDecoder().decode(await subtle.decrypt({ name: "AES-GCM", iv }, key, ct)), "secret");
  });
  test("AES-GCM decrypt of a tampered ciphertext is an OperationError", async () => {
    const key = await subtle.generateKey({ name: "AES-GCM", length: 128 }, false, ["encrypt", "decrypt"]);
    const iv = new Uint8Array(12);
    const ct = new Uint8Array(await subtle.encrypt({ name: "AES-GCM", iv }, key, text("secret")));
    ct[0] ^= 1;
    await rejects(() => subtle.decrypt({ name: "AES-GCM", iv }, key, ct), "OperationError");
  });
  test("importKey raw AES: a 17-byte key is a DataError", () =>
    rejects(() => subtle.importKey("raw", new Uint8Array(17), "AES-GCM", false, ["encrypt"]), "DataError"));
  test("importKey: an unknown format is a TypeError (WebIDL enum)", () =>
    rejects(() => subtle.importKey("pem", new Uint8Array(16), "AES-GCM", false, ["encrypt"]), TypeError));
  test("importKey jwk: kty that does not match the algorithm is a DataError", () =>
    rejects(() => subtle.importKey("jwk", { kty: "EC", crv: "P-256", x: "", y: "" }, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]), "DataError"));
  test("generateKey of a secret key with no usages is a SyntaxError (generateKey step 9)", () =>
    rejects(() => subtle.generateKey({ name: "HMAC", hash: "SHA-256" }, true, []), "SyntaxError"));
  test("generateKey AES with a length of 100 is an OperationError", () =>
    rejects(() => subtle.generateKey({ name: "AES-GCM", length: 100 }, true, ["encrypt"]), "OperationError"));
  test("exportKey of a non-extractable key is an InvalidAccessError (exportKey step 6)", async () => {
    const key = await subtle.generateKey({ name: "AES-GCM", length: 128 }, false, ["encrypt"]);
    await rejects(() => subtle.exportKey("raw", key), "InvalidAccessError");
  });
  test("exportKey jwk of an HMAC key", async () => {
    const key = await subtle.importKey("raw", new Uint8Array([1, 2, 3]), { name: "HMAC", hash: "SHA-256" }, true, ["sign"]);
    const jwk = await subtle.exportKey("jwk", key);
    eq([jwk.kty, jwk.k, jwk.alg, jwk.ext], ["oct", "AQID", "HS256", true]);
  });
  test("ECDSA P-256 sign and verify", async () => {
    const { privateKey, publicKey } = await subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, false, ["sign", "verify"]);
    const sig = await subtle.sign({ name: "ECDSA", hash: "SHA-256" }, privateKey, text("m"));
    eq(sig.byteLength, 64, "IEEE P1363 signature length");
    ok(await subtle.verify({ name: "ECDSA", hash: "SHA-256" }, publicKey, sig, text("m")), "verifies");
  });
  test("Ed25519 sign and verify", async () => {
    const { privateKey, publicKey } = await subtle.generateKey("Ed25519", false, ["sign", "verify"]);
    const sig = await subtle.sign("Ed25519", privateKey, text("m"));
    ok(await subtle.verify("Ed25519", publicKey, sig, text("m")), "verifies");
  });
  test("PBKDF2 deriveBits (RFC 6070, 1 iteration)", async () => {
    const key = await subtle.importKey("raw", text("password"), "PBKDF2", false, ["deriveBits"]);
    const bits = await subtle.deriveBits({ name: "PBKDF2", salt: text("salt"), iterations: 1, hash: "SHA-1" }, key, 160);
    eq(hex(bits), "0c60c80f961f0e71f3a9b524af6012062fe037a6");
  });
  test("PBKDF2 with zero iterations is an OperationError", async () => {
    const key = await subtle.importKey("raw", text("password"), "PBKDF2", false, ["deriveBits"]);
    await rejects(() => subtle.deriveBits({ name: "PBKDF2", salt: text("s"), iterations: 0, hash: "SHA-256" }, key, 256), "OperationError");
  });
  test("HKDF deriveBits with a length that is not a multiple of 8 is an OperationError", async () => {
    const key = await subtle.importKey("raw", text("ikm"), "HKDF", false, ["deriveBits"]);
    await rejects(() => subtle.deriveBits({ name: "HKDF", hash: "SHA-256", salt: new Uint8Array(), info: new Uint8Array() }, key, 7), "OperationError");
  });
  test("importKey of a PBKDF2 key as extractable is a SyntaxError (PBKDF2 import key step 3)", () =>
    rejects(() => subtle.importKey("raw", text("p"), "PBKDF2", true, ["deriveBits"]), "SyntaxError"));
  test("importKey of an HKDF key as extractable is a SyntaxError (HKDF import key step 3)", () =>
    rejects(() => subtle.importKey("raw", text("p"), "HKDF", true, ["deriveBits"]), "SyntaxError"));
  test("importKey of a PBKDF2 key with an encrypt usage is a SyntaxError (PBKDF2 import key step 2)", () =>
    rejects(() => subtle.importKey("raw", text("p"), "PBKDF2", false, ["encrypt"]), "SyntaxError"));
  test("CryptoKey reflects its algorithm, type, usages and extractable", async () => {
    const key = await subtle.importKey("raw", new Uint8Array(16), { name: "AES-CBC" }, true, ["decrypt", "encrypt"]);
    eq([key.type, key.extractable, key.algorithm.name, key.algorithm.length, key.usages.slice().sort()], ["secret", true, "AES-CBC", 128, ["decrypt", "encrypt"]]);
  });
  test("CryptoKey cannot be constructed", () => throws(() => new CryptoKey(), TypeError));
});
