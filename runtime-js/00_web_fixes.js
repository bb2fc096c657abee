// Islet edge layer, step 0: where Deno's Web APIs part from the standards, brought back to them.
//
// Each fix below was found by the conformance suite (tests/conformance/), names the spec step it
// restores, and is made only where a peer runtime (deno serve or workerd) already behaves as the
// spec says or the spec is unambiguous. Runs once, while the snapshot is made.
//
// Owns: small corrections to the prototypes 00_web_globals.js installs. Never changes what a
// correct call returns, and never adds API.
import { core, primordials } from "ext:core/mod.js";
import {
  crypto,
  DOMException,
  file,
  formData,
  messagePort,
  response,
  url,
  webidl,
} from "ext:islet_runtime/00_web_globals.js";

const {
  ArrayBuffer,
  ArrayPrototypeIndexOf,
  ArrayPrototypePush,
  FunctionPrototypeCall,
  ObjectDefineProperty,
  ObjectGetOwnPropertyDescriptor,
  ObjectPrototypeIsPrototypeOf,
  PromisePrototypeThen,
  PromiseReject,
  ReflectApply,
  TypeError,
} = primordials;

// URL's origin getter for blob: URLs (https://url.spec.whatwg.org/#concept-url-origin, "blob"
// steps 2-5): the origin of the URL the path parses to, only when that URL's scheme is http or
// https (its origin is a tuple origin); otherwise an opaque origin, serialized "null". deno_web
// returns the inner URL's origin for any scheme, so `new URL("blob:ftp://host/x").origin` was
// "ftp://host".
{
  const URLPrototype = url.URL.prototype;
  const { get: originOf } = ObjectGetOwnPropertyDescriptor(URLPrototype, "origin");
  const { get: protocolOf } = ObjectGetOwnPropertyDescriptor(URLPrototype, "protocol");
  const { get: pathnameOf } = ObjectGetOwnPropertyDescriptor(URLPrototype, "pathname");
  const parse = url.URL.parse;
  const { get } = ObjectGetOwnPropertyDescriptor(
    {
      get origin() {
        // The protocol getter checks the brand: a non-URL `this` throws the TypeError it did.
        if (FunctionPrototypeCall(protocolOf, this) !== "blob:") return FunctionPrototypeCall(originOf, this);
        const inner = FunctionPrototypeCall(parse, url.URL, FunctionPrototypeCall(pathnameOf, this));
        if (inner === null) return "null";
        const scheme = FunctionPrototypeCall(protocolOf, inner);
        return scheme === "http:" || scheme === "https:" ? FunctionPrototypeCall(originOf, inner) : "null";
      },
    },
    "origin",
  );
  ObjectDefineProperty(URLPrototype, "origin", { __proto__: null, get, enumerable: true, configurable: true });
}

// structuredClone with a transfer list (https://html.spec.whatwg.org/#structuredserializewithtransfer).
// Step 1: every item must be transferable, here an ArrayBuffer or a MessagePort (1.1), listed
// once (1.3), and not detached (1.4), else DataCloneError; deno_web skipped items that were
// neither and accepted a buffer listed twice. The transfer itself: deno_core moves a buffer only
// through a SharedArrayBufferStore, whose entries outlive a failed clone and which would make
// SharedArrayBuffers shareable; Islet gives it none, so deno_core copies the buffers, and the
// originals are detached here once the clone has succeeded (a failed clone detaches nothing, as
// HTML serializes before it transfers). The options are converted here, once.
{
  const clone = globalThis.structuredClone;
  const ArrayBufferPrototype = ArrayBuffer.prototype;
  const { get: isDetached } = ObjectGetOwnPropertyDescriptor(ArrayBufferPrototype, "detached");
  const detach = ArrayBufferPrototype.transfer;
  const MessagePortPrototype = messagePort.MessagePortPrototype;
  const refuse = (i, why) => new DOMException(`Value at index ${i} of the transfer list ${why}`, "DataCloneError");
  const structuredClone = {
    // One declared parameter: WebIDL gives an operation the length of its required arguments.
    structuredClone(value) {
      let options = arguments[1];
      if (options === undefined) return ReflectApply(clone, undefined, arguments);
      options = webidl.converters.StructuredSerializeOptions(options, "Failed to execute 'structuredClone'", "Argument 2");
      const transfer = options.transfer;
      const buffers = [];
      for (let i = 0; i < transfer.length; i++) {
        const item = transfer[i];
        if (core.isProxy(item)) throw refuse(i, "is not transferable");
        if (core.isArrayBuffer(item)) {
          if (FunctionPrototypeCall(isDetached, item)) throw refuse(i, "is already detached");
          ArrayPrototypePush(buffers, item);
        } else if (!ObjectPrototypeIsPrototypeOf(MessagePortPrototype, item)) {
          throw refuse(i, "is not transferable");
        }
        if (ArrayPrototypeIndexOf(transfer, item) !== i) throw refuse(i, "is listed twice");
      }
      const result = clone(value, options);
      for (let i = 0; i < buffers.length; i++) FunctionPrototypeCall(detach, buffers[i]);
      return result;
    },
  }.structuredClone;
  ObjectDefineProperty(globalThis, "structuredClone", core.propWritable(structuredClone));
}

// SubtleCrypto.importKey of a PBKDF2 or HKDF key (https://w3c.github.io/webcrypto/#pbkdf2-operations-import-key
// step 3, and HKDF's import key step 3): "If extractable is not false, then throw a SyntaxError."
// deno_crypto imported such a key (quietly not extractable); workerd refuses it. Checked once the
// import succeeded, so every earlier step (argument conversion, format, usages) has had its say;
// `extractable` is a WebIDL boolean, whose conversion has no side effect to repeat.
{
  const SubtleCryptoPrototype = crypto.SubtleCrypto.prototype;
  const importKey = SubtleCryptoPrototype.importKey;
  const { get: algorithmOf } = ObjectGetOwnPropertyDescriptor(crypto.CryptoKey.prototype, "algorithm");
  const wrapper = {
    importKey(format, keyData, algorithm, extractable, keyUsages) {
      return PromisePrototypeThen(ReflectApply(importKey, this, arguments), (key) => {
        const name = FunctionPrototypeCall(algorithmOf, key).name;
        if ((name === "PBKDF2" || name === "HKDF") && extractable) {
          return PromiseReject(new DOMException(`${name} keys cannot be extractable`, "SyntaxError"));
        }
        return key;
      });
    },
  }.importKey;
  ObjectDefineProperty(SubtleCryptoPrototype, "importKey", {
    __proto__: null,
    value: wrapper,
    writable: true,
    enumerable: true,
    configurable: true,
  });
}

// FormData.append and set with three arguments (https://xhr.spec.whatwg.org/#interface-formdata):
// only the (name, Blob, filename) overload takes three, so by WebIDL's overload resolution a third
// argument with a value that is not a Blob is a TypeError. deno_fetch stored the string and
// dropped the filename.
{
  const FormDataPrototype = formData.FormData.prototype;
  const BlobPrototype = file.Blob.prototype;
  for (const method of ["append", "set"]) {
    const original = FormDataPrototype[method];
    const wrapper = {
      [method](name, value) {
        if (arguments.length < 3) return ReflectApply(original, this, arguments);
        // WebIDL checks `this` first, then converts the arguments in order: the name (its
        // toString may throw), then the value, which only the Blob overload accepts here.
        const prefix = `Failed to execute '${method}' on 'FormData'`;
        webidl.assertBranded(this, FormDataPrototype);
        name = webidl.converters.USVString(name, prefix, "Argument 1");
        if (!ObjectPrototypeIsPrototypeOf(BlobPrototype, value)) {
          throw new TypeError(`${prefix}: parameter 2 is not of type 'Blob'`);
        }
        return FunctionPrototypeCall(original, this, name, value, arguments[2]);
      },
    }[method];
    ObjectDefineProperty(FormDataPrototype, method, {
      __proto__: null,
      value: wrapper,
      writable: true,
      enumerable: true,
      configurable: true,
    });
  }
}

// atob and btoa are operations of the global ([Global] interface, WebIDL "create an operation
// function" step 2.1.2): a `this` that is neither undefined, null nor the global is a TypeError.
// deno_web accepted any `this`; workerd refuses.
{
  for (const name of ["atob", "btoa"]) {
    const original = globalThis[name];
    const wrapper = {
      [name](data) {
        if (this !== undefined && this !== null && this !== globalThis) {
          throw new TypeError(`Failed to execute '${name}': Illegal invocation`);
        }
        return ReflectApply(original, undefined, arguments);
      },
    }[name];
    ObjectDefineProperty(globalThis, name, core.propWritable(wrapper));
  }
}

// Function lengths are the count of required arguments (WebIDL "create an operation function"
// step 4, and the interface object's length): FormData's constructor has none, Response.json one.
ObjectDefineProperty(formData.FormData, "length", { __proto__: null, value: 0, configurable: true });
ObjectDefineProperty(response.Response.json, "length", { __proto__: null, value: 1, configurable: true });
