// Islet edge layer, step 0: the error classes of Rust ops.
//
// Deno's ops fail with a class name (deno_error's `#[class(...)]`): "TypeError", or
// "DOMExceptionInvalidCharacterError", or "NotFound". deno_core turns the name into a JavaScript
// value through a builder registered under it, and a name with no builder becomes `undefined`: a
// handler catching `atob("*")` got `undefined`, and `e.name` then threw. Deno's own runtime
// registers its builders at bootstrap; Islet registers them here, once, while the snapshot is made.
//
// Owns: the name -> constructor table. Never exposes anything to tenant code: the classes below are
// reachable only as the errors ops throw.
import { core, primordials } from "ext:core/mod.js";
import { DOMException } from "ext:islet_runtime/00_web_globals.js";

const { ErrorCaptureStackTrace, ObjectDefineProperty } = primordials;

// Every name of WebIDL's DOMException names table (https://webidl.spec.whatwg.org/#idl-DOMException-error-names).
// An op raising "DOMException<Name>" throws `new DOMException(message, "<Name>")`.
const DOM_EXCEPTION_NAMES = [
  "IndexSizeError",
  "HierarchyRequestError",
  "WrongDocumentError",
  "InvalidCharacterError",
  "NoModificationAllowedError",
  "NotFoundError",
  "NotSupportedError",
  "InUseAttributeError",
  "InvalidStateError",
  "SyntaxError",
  "InvalidModificationError",
  "NamespaceError",
  "InvalidAccessError",
  "TypeMismatchError",
  "SecurityError",
  "NetworkError",
  "AbortError",
  "URLMismatchError",
  "QuotaExceededError",
  "TimeoutError",
  "InvalidNodeTypeError",
  "DataCloneError",
  "EncodingError",
  "NotReadableError",
  "UnknownError",
  "ConstraintError",
  "DataError",
  "TransactionInactiveError",
  "ReadOnlyError",
  "VersionError",
  "OperationError",
  "NotAllowedError",
  "OptOutError",
];

// The other classes Deno's extensions raise: std::io::ErrorKind's names (deno_error maps an
// io::Error to them) and a few of Deno's own ("Http", "Busy", "NotSupported"). deno_core
// registers "BadResource", "Interrupted" and "NotCapable" itself (01_core.js). Deno
// exposes them as `Deno.errors.*`; Islet has no `Deno`, so each is an Error subclass whose `name`
// is the class name, as `Deno.errors.NotFound`'s is "NotFound".
const ERROR_CLASS_NAMES = [
  "NotFound",
  "PermissionDenied",
  "ConnectionRefused",
  "ConnectionReset",
  "ConnectionAborted",
  "NotConnected",
  "AddrInUse",
  "AddrNotAvailable",
  "BrokenPipe",
  "AlreadyExists",
  "InvalidData",
  "TimedOut",
  "WriteZero",
  "WouldBlock",
  "UnexpectedEof",
  "Http",
  "Busy",
  "NotSupported",
  "FilesystemLoop",
  "IsADirectory",
  "NetworkUnreachable",
  "NotADirectory",
];

for (let i = 0; i < DOM_EXCEPTION_NAMES.length; i++) {
  const name = DOM_EXCEPTION_NAMES[i];
  const className = `DOMException${name}`;
  core.registerErrorBuilder(className, function buildDOMException(message) {
    const error = new DOMException(message, name);
    ErrorCaptureStackTrace(error, buildDOMException);
    return error;
  });
}

for (let i = 0; i < ERROR_CLASS_NAMES.length; i++) {
  const name = ERROR_CLASS_NAMES[i];
  const errorClass = class extends Error {
    constructor(message, options) {
      super(message, options);
      this.name = name;
    }
  };
  ObjectDefineProperty(errorClass, "name", { __proto__: null, value: name });
  core.registerErrorClass(name, errorClass);
}
