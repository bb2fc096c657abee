// crypto.getRandomValues, randomUUID and SubtleCrypto: the W3C Web Cryptography API, its
// algorithms and the errors its steps name.
import { area, eq, hex, ok, rejects, throws } from "./harness.js";

const subtle = crypto.subtle;
const text = (s) => new TextEncoder().encode(s);
const fromHex = (h) => new Uint8Array(h.match(/../g).map((b) => parseInt(b, 16)));
// A fixed 2048-bit RSA key (the JWK members besides kty), so only RSA-OAEP pays for a generation.
const RSA_JWK = {
  n: "ysObO1VMg4t4EgY5ypSskcS-ocE3jxqPeBg5M_7ZmM_fs6d5wPaJMobYJgs-VyTk724bLrOEAiMx4mJtBdhhzR7tKd4FSMITgeSmwieJrAMoKjIOffpHjVJMXZLeckS3aBSbgAZdC-CoL9esLCuYNVnBlCBa_WwIRIPOG1cf4prBisMWPd2rUepdtOrRa8uwSGzfAlpp5qoTUjaGKza3EdaweTPDXfbTdfIstgpAz6DBZjt-LjeeeLgjUBY5E2kwdxz6vZRrktKlgvX6ChtjcSJOqZJDeOcTYae5MO7lCVkdgLoLl-Tu7dczmYEvwWqtoxOHnQu5lvv66NFkiqqSGw",
  e: "AQAB",
  d: "FKWlfX26nFyL3f3_TYclKXTI2qzTrQFN4bNJw-csHjjwtRkVN1aDcv8zLHCRqQsLOuxR3UgPZa5SypQuON2nW91N1ikTDa0hkmUHrBadmMP7h4xwWFivh479Urv9ZdJkgLc0fG1pdSeryK9kC11nEuuwYBaJXWvuTZfEWZleGFNueZFvJMT1DHwTHvCIjOmoum47soZRNby5NbgRbS5a_DHIVZzPFVTZcIfNDA4uyVnEaqh7utTYijDATDAsmWNNXmOTxr_pZGBCfux1HbF2nByHoqHJRHw1KJtn66vUmEZYQDWVxkcdixrO9qLZfpEvfovHPZUvuvfHE5mOtFC3CQ",
  p: "7NGmC0CgTa_1-REYCQVbbsdO1G6Wz--ihOAY4zVwdFvd0RqVc_G6QqR5h9-rwtt8C8tRmrtU3RYi3kKCxAueFUpLn3s8ZHQ3E5NMHmKxParXcW96TaccJTtyBB_2K_vjbS1_0U6NceyCRuakldYT7ZbUcfrsRII2ulmrJxH-b5k",
  q: "2y_X3tjyVthTgR9IA3B2Ny6RD5eyCtu9Cvd8NZClF2ZTOuIORw4GfGVSwn7l33cazVWF4vAhZ0FaAMERE82L5aeS9NypYqgChA_PwcE1ix7hjfyavFNbWkuNKygc1EjdEd_OdDdkpyLOnwojsqBzsOLw0VZh7KU8jVypXUvjr9M",
  dp: "oAC51gpxBGwpnYEuIxIqh3tDyIV7gbwfqvUZ-5EkjIlxIhF6_p5IwTQNJH87tmjCs9lIJmoBWWrWXiLD5R8QTMQoufTyhdB7Uc-Ic1Ms-0RNUcgG8yY__uveCelqUqdaLm66WDlhmaI5FxxIATBlwHXSzbvCHDt6LIfe-oPOy6k",
  dq: "BN92bCTklluu15MLddAdQLLPVMppkeY6uLCx2TsDAJcsyIVYDepY6JEUGvDZSXOLa_83v8jY5UPFrXidWZRbRNrJ4Jm7Rk835xm247bY6uPf3dk8020C_enqFIiKw4lvKMOSAnFs0m5qq4x9KK56g_c3pV_HQ4yU4QurVECoqjM",
  qi: "nQfkl3fpfW-kOwlZqKKBMWpKi3qHkGMngN9_0XDgsRyx7wKfbU6woKtKijph_UP-gusN-0aeG7MXSKhSaP7qeT7-dJQQ9qZ-np39vlZAyOI7gi2kfwst_0Q_awgGXD8ROsa7ZNbre9lMiYPQEk1uIWkcHL34ZUMaNcbv4DsYvYI",
};
// One RSA-OAEP key pair, generated on first use.
let rsaOaepPair;
const rsaOaep = () =>
  (rsaOaepPair ??= subtle.generateKey({ name: "RSA-OAEP", modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: "SHA-256" }, true, ["encrypt", "decrypt", "wrapKey", "unwrapKey"]));

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
  test("usages are normalized: duplicates dropped, in the KeyUsage enum's order (importKey step 12, normalized value)", async () => {
    const key = await subtle.importKey("raw", text("k"), { name: "HMAC", hash: "SHA-256" }, false, ["verify", "sign", "verify"]);
    eq(key.usages, ["sign", "verify"]);
  });
  test("a SubtleCrypto method called on a wrong this rejects instead of throwing (WebIDL, promise-returning operation)", async () => {
    let p;
    try {
      p = SubtleCrypto.prototype.digest.call({}, "SHA-256", new Uint8Array());
    } catch (e) {
      throw new Error(`threw synchronously: ${e}`);
    }
    await rejects(p, TypeError);
  });
  test("jwk import whose key_ops lack a requested usage is a DataError (HMAC import key step 4.8)", () =>
    rejects(() => subtle.importKey("jwk", { kty: "oct", k: "AQID", key_ops: ["verify"] }, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]), "DataError"));
  test("ECDSA verify of a signature with the wrong length is false, not an error (ECDSA verify step 6.2)", async () => {
    const { privateKey, publicKey } = await subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, false, ["sign", "verify"]);
    const sig = new Uint8Array(await subtle.sign({ name: "ECDSA", hash: "SHA-256" }, privateKey, text("m")));
    eq(await subtle.verify({ name: "ECDSA", hash: "SHA-256" }, publicKey, sig.slice(0, 63), text("m")), false);
  });
  test("ECDH deriveBits with a public key of another curve is an InvalidAccessError (ECDH derive bits step 5)", async () => {
    const a = await subtle.generateKey({ name: "ECDH", namedCurve: "P-256" }, false, ["deriveBits"]);
    const b = await subtle.generateKey({ name: "ECDH", namedCurve: "P-384" }, false, ["deriveBits"]);
    await rejects(() => subtle.deriveBits({ name: "ECDH", public: b.publicKey }, a.privateKey, 256), "InvalidAccessError");
  });
  test("X25519 deriveBits (RFC 7748 section 6.1 vector)", async () => {
    const alice = await subtle.importKey("jwk", { kty: "OKP", crv: "X25519", d: "dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo", x: "hSDwCYkwp1R0i33ctD73Wg2_Og0mOBr066SpjqqbTmo" }, "X25519", false, ["deriveBits"]);
    const bob = await subtle.importKey("raw", fromHex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"), "X25519", false, []);
    eq(hex(await subtle.deriveBits({ name: "X25519", public: bob }, alice, 256)), "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
  });
  test("X25519 with an all-zero shared secret (small-order public key) is an OperationError (X25519 derive bits step 6)", async () => {
    const { privateKey } = await subtle.generateKey("X25519", false, ["deriveBits"]);
    const zero = await subtle.importKey("raw", new Uint8Array(32), "X25519", false, []);
    await rejects(() => subtle.deriveBits({ name: "X25519", public: zero }, privateKey, 256), "OperationError");
  });
  test("AES-CTR encrypt (NIST SP 800-38A F.5.1)", async () => {
    const key = await subtle.importKey("raw", fromHex("2b7e151628aed2a6abf7158809cf4f3c"), "AES-CTR", false, ["encrypt"]);
    const pt = fromHex("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51");
    const ct = await subtle.encrypt({ name: "AES-CTR", counter: fromHex("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff"), length: 64 }, key, pt);
    eq(hex(ct), "874d6191b620e3261bef6864990db6ce9806f66b7970fdff8617187bb9fffdff");
  });
  test("AES-CTR: only the rightmost length bits of the counter are incremented, modulo 2^length (SP 800-38A B.1)", async () => {
    const key = await subtle.importKey("raw", new Uint8Array(16), "AES-CTR", false, ["encrypt"]);
    const counter = new Uint8Array(16);
    counter[14] = 1;
    counter[15] = 0xff;
    const both = new Uint8Array(await subtle.encrypt({ name: "AES-CTR", counter, length: 8 }, key, new Uint8Array(32)));
    const next = new Uint8Array(16);
    next[14] = 1; // the low 8 bits wrap to 0; byte 14 is not carried into
    const second = await subtle.encrypt({ name: "AES-CTR", counter: next, length: 8 }, key, new Uint8Array(16));
    eq(hex(both.slice(16)), hex(second));
  });
  test("AES-KW wrapKey (RFC 3394 section 4.1 vector)", async () => {
    const kek = await subtle.importKey("raw", fromHex("000102030405060708090a0b0c0d0e0f"), "AES-KW", false, ["wrapKey", "unwrapKey"]);
    const key = await subtle.importKey("raw", fromHex("00112233445566778899aabbccddeeff"), "AES-GCM", true, ["encrypt"]);
    const wrapped = await subtle.wrapKey("raw", key, kek, "AES-KW");
    eq(hex(wrapped), "1fa68b0a8112b447aef34bd8fb5a7b829d3e862371d2cfe5");
    const back = await subtle.unwrapKey("raw", wrapped, kek, "AES-KW", "AES-GCM", true, ["encrypt"]);
    eq(hex(await subtle.exportKey("raw", back)), "00112233445566778899aabbccddeeff");
  });
  test("AES-KW wrap of a key that is not a multiple of 8 bytes is an OperationError (AES-KW wrap key step 1)", async () => {
    const kek = await subtle.importKey("raw", new Uint8Array(16), "AES-KW", false, ["wrapKey"]);
    const key = await subtle.importKey("raw", new Uint8Array(5), { name: "HMAC", hash: "SHA-256" }, true, ["sign"]);
    await rejects(() => subtle.wrapKey("raw", key, kek, "AES-KW"), "OperationError");
  });
  test("AES-KW has no encrypt operation: a NotSupportedError (normalize an algorithm step 5, otherwise)", async () => {
    const kek = await subtle.importKey("raw", new Uint8Array(16), "AES-KW", false, ["wrapKey"]);
    await rejects(() => subtle.encrypt("AES-KW", kek, new Uint8Array(16)), "NotSupportedError");
  });
  test("wrapKey jwk with AES-GCM, then unwrapKey: the key round-trips (wrapKey step 14, unwrapKey step 15: parse a JWK)", async () => {
    const kek = await subtle.generateKey({ name: "AES-GCM", length: 256 }, false, ["wrapKey", "unwrapKey"]);
    const key = await subtle.importKey("raw", new Uint8Array([1, 2, 3, 4]), { name: "HMAC", hash: "SHA-384" }, true, ["sign"]);
    const iv = new Uint8Array(12);
    const wrapped = await subtle.wrapKey("jwk", key, kek, { name: "AES-GCM", iv });
    const back = await subtle.unwrapKey("jwk", wrapped, kek, { name: "AES-GCM", iv }, { name: "HMAC", hash: "SHA-384" }, true, ["sign"]);
    eq([back.algorithm.hash.name, hex(await subtle.exportKey("raw", back))], ["SHA-384", "01020304"]);
  });
  test("deriveKey HMAC without a length takes the hash's block size (HMAC get key length step 1)", async () => {
    const base = await subtle.importKey("raw", text("password"), "PBKDF2", false, ["deriveKey"]);
    const key = await subtle.deriveKey({ name: "PBKDF2", salt: text("s"), iterations: 1, hash: "SHA-256" }, base, { name: "HMAC", hash: "SHA-256" }, true, ["sign"]);
    eq([key.algorithm.length, (await subtle.exportKey("raw", key)).byteLength], [512, 64]);
  });
  test("deriveKey HMAC with a length of 0 is a TypeError (HMAC get key length step 1, otherwise)", async () => {
    const base = await subtle.importKey("raw", text("password"), "PBKDF2", false, ["deriveKey"]);
    await rejects(() => subtle.deriveKey({ name: "PBKDF2", salt: text("s"), iterations: 1, hash: "SHA-256" }, base, { name: "HMAC", hash: "SHA-256", length: 0 }, true, ["sign"]), TypeError);
  });
  test("RSA-PSS: a jwk key pair imports, signs and verifies; the public jwk exports back with alg PS256; a missing saltLength is a TypeError", async () => {
    const alg = { name: "RSA-PSS", hash: "SHA-256" };
    const privateKey = await subtle.importKey("jwk", { kty: "RSA", ...RSA_JWK }, alg, false, ["sign"]);
    const publicKey = await subtle.importKey("jwk", { kty: "RSA", n: RSA_JWK.n, e: RSA_JWK.e }, alg, true, ["verify"]);
    const sig = await subtle.sign({ name: "RSA-PSS", saltLength: 32 }, privateKey, text("m"));
    eq(sig.byteLength, 256, "signature length");
    ok(await subtle.verify({ name: "RSA-PSS", saltLength: 32 }, publicKey, sig, text("m")), "verifies");
    const jwk = await subtle.exportKey("jwk", publicKey);
    eq([jwk.kty, jwk.alg, jwk.n, jwk.e, jwk.ext, jwk.key_ops], ["RSA", "PS256", RSA_JWK.n, "AQAB", true, ["verify"]]);
    eq([publicKey.algorithm.modulusLength, Array.from(publicKey.algorithm.publicExponent)], [2048, [1, 0, 1]]);
    await rejects(() => subtle.sign({ name: "RSA-PSS" }, privateKey, text("m")), TypeError);
  });
  test("RSA-OAEP: a label must match; the wrong one is an OperationError (RSA-OAEP decrypt step 4)", async () => {
    const { privateKey, publicKey } = await rsaOaep();
    const ct = await subtle.encrypt({ name: "RSA-OAEP", label: text("L") }, publicKey, text("secret"));
    eq(new TextDecoder().decode(await subtle.decrypt({ name: "RSA-OAEP", label: text("L") }, privateKey, ct)), "secret");
    await rejects(() => subtle.decrypt({ name: "RSA-OAEP", label: text("M") }, privateKey, ct), "OperationError");
  });
  test("RSA-OAEP: a plaintext longer than k - 2hLen - 2 bytes is an OperationError (RSA-OAEP encrypt step 4)", async () => {
    const { publicKey } = await rsaOaep();
    await subtle.encrypt("RSA-OAEP", publicKey, new Uint8Array(190));
    await rejects(() => subtle.encrypt("RSA-OAEP", publicKey, new Uint8Array(191)), "OperationError");
  });
  test("RSA-OAEP: the generated public key's usages are the intersection with encrypt and wrapKey; jwk alg is RSA-OAEP-256", async () => {
    const { publicKey, privateKey } = await rsaOaep();
    eq([publicKey.usages, privateKey.usages], [["encrypt", "wrapKey"], ["decrypt", "unwrapKey"]]);
    eq((await subtle.exportKey("jwk", publicKey)).alg, "RSA-OAEP-256");
  });
});
