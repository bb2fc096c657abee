// Islet edge layer: Array methods that cannot loop past the CPU limit.
//
// V8 runs Array.prototype's methods as builtins that never look for `terminate_execution` while
// they loop, and they loop to the array's `length`, not over its elements: `indexOf`, `join`,
// `forEach`, `sort`, `slice` and the rest on `{ length: 2 ** 53 - 1 }`, or on a sparse array of
// length 2 ** 32 - 2 (`a[4294967293] = 1`), run for minutes or for ever, holding their isolate's
// thread and every function sharing it. So each such method checks first that it will loop at most
// MAX_ELEMENTS times (a RangeError past it), and the builtin is then given a length that cannot
// change under it:
//
// - a genuine array (not a Proxy): its `length` is a plain number, read here and then by the
//   builtin with no code running in between;
// - a string: its length is fixed;
// - anything else (array-likes, Proxies, typed arrays, `arguments`): the builtin runs on a view
//   of it, a Proxy that forwards every operation to it but answers `length` with the value read
//   (and converted) once, the first time the builtin asks. Methods that return their receiver
//   return the object itself, not the view; a callback's third argument is the view.
//
// `concat` and `Array.from` look at their arguments' lengths too, and `flat` / `flatMap` at those
// of the arrays nested in the receiver, so those are written here in JavaScript (which the
// watchdog can interrupt), but for `concat` of genuine arrays and primitives only, which the
// builtin keeps.
import { core, primordials } from "ext:core/mod.js";

const {
  Array,
  ArrayIsArray,
  MathFloor,
  MathMin,
  MathTrunc,
  NumberIsNaN,
  Object,
  ObjectDefineProperty,
  ObjectGetOwnPropertyDescriptor,
  ObjectGetPrototypeOf,
  ObjectHasOwn,
  Proxy,
  RangeError,
  ReflectApply,
  ReflectGet,
  SymbolIsConcatSpreadable,
  SymbolIterator,
  TypeError,
  TypedArray,
} = primordials;

const ArrayPrototype = Array.prototype;

/** The most elements one call of an Array method loops over: 2^24 (128 MiB of elements). */
export const MAX_ELEMENTS = 2 ** 24;

/** The methods that loop to their receiver's length. */
const LOOPING = [
  "copyWithin",
  "every",
  "fill",
  "filter",
  "find",
  "findIndex",
  "findLast",
  "findLastIndex",
  "forEach",
  "includes",
  "indexOf",
  "join",
  "lastIndexOf",
  "map",
  "reduce",
  "reduceRight",
  "reverse",
  "shift",
  "slice",
  "some",
  "sort",
  "splice",
  "toLocaleString",
  "toReversed",
  "toSorted",
  "toSpliced",
  "unshift",
  "with",
];

/**
 * @param {string} name the method, as `Array.prototype.indexOf`
 * @param {number} length
 */
function tooLong(name, length) {
  return new RangeError(`${name} on ${length} elements: Islet loops over at most ${MAX_ELEMENTS} in one call`);
}

/** ToLength, as the builtins read `length`: one conversion. */
function toLength(value) {
  const number = +value;
  if (NumberIsNaN(number) || number <= 0) {
    return 0;
  }
  return MathMin(MathFloor(number), 2 ** 53 - 1);
}

/**
 * `object` with `length` read (and converted) once, when first asked for, and checked; with
 * `iterable` false, it has no @@iterator.
 * @param {object} object
 * @param {string} name
 */
function pinnedView(object, name, iterable = true) {
  let length;
  const view = new Proxy(object, {
    __proto__: null,
    get(target, key, receiver) {
      if (key === SymbolIterator && !iterable) {
        return undefined;
      }
      if (key === "length") {
        if (length === undefined) {
          const raw = ReflectGet(target, key, target);
          const converted = toLength(raw);
          if (converted > MAX_ELEMENTS) {
            throw tooLong(name, converted);
          }
          // A Proxy must answer a frozen property's own value: a primitive converts the same every
          // time; an object (its `valueOf` could answer differently) is refused.
          const own = ObjectGetOwnPropertyDescriptor(target, key);
          const frozen = own !== undefined && !own.configurable && ObjectHasOwn(own, "value") && !own.writable;
          if (frozen && raw !== null && (typeof raw === "object" || typeof raw === "function")) {
            throw new TypeError(`${name}: Islet needs a frozen array-like's length to be a number`);
          }
          length = frozen ? raw : converted;
        }
        return length;
      }
      return ReflectGet(target, key, receiver === view ? target : receiver);
    },
  });
  return view;
}

/**
 * What the builtin may run on in place of `receiver` (see the top of this file).
 * @param {unknown} receiver
 * @param {string} name
 */
function bounded(receiver, name) {
  if (typeof receiver === "string") {
    if (receiver.length > MAX_ELEMENTS) {
      throw tooLong(name, receiver.length);
    }
    return receiver;
  }
  if (receiver === null || (typeof receiver !== "object" && typeof receiver !== "function")) {
    // undefined and null: the builtin throws; numbers, booleans, symbols and bigints have no length.
    return receiver;
  }
  if (ArrayIsArray(receiver) && !core.isProxy(receiver)) {
    if (receiver.length > MAX_ELEMENTS) {
      throw tooLong(name, receiver.length);
    }
    return receiver;
  }
  return pinnedView(receiver, name);
}

/**
 * Defines `method` on `target` as `name`, as the builtin was: writable, configurable, not
 * enumerable, with the builtin's `length`.
 */
function install(target, name, method, length) {
  ObjectDefineProperty(method, "length", { __proto__: null, value: length, configurable: true });
  ObjectDefineProperty(target, name, {
    __proto__: null,
    value: method,
    writable: true,
    enumerable: false,
    configurable: true,
  });
}

for (let i = 0; i < LOOPING.length; i++) {
  const name = LOOPING[i];
  const builtin = ArrayPrototype[name];
  // Method syntax: like the builtins, not a constructor and without a prototype.
  const qualified = `Array.prototype.${name}`;
  const method = {
    [name]() {
      const receiver = bounded(this, qualified);
      const result = ReflectApply(builtin, receiver, arguments);
      return result === receiver && receiver !== this ? this : result;
    },
  }[name];
  install(ArrayPrototype, name, method, builtin.length);
}

/** IsConcatSpreadable, read once. */
function spreadable(value) {
  if (value === null || (typeof value !== "object" && typeof value !== "function")) {
    return false;
  }
  const flag = value[SymbolIsConcatSpreadable];
  return flag !== undefined ? !!flag : ArrayIsArray(value);
}

{
  const builtin = ArrayPrototype.concat;
  const method = {
    concat() {
      // The usual case, for the builtin: primitives, genuine arrays (their lengths checked), and
      // objects that cannot be spread, as nothing in their prototype chain names
      // @@isConcatSpreadable (`in` runs no getter on an object that is not a Proxy).
      let plain = true;
      for (let i = -1; i < arguments.length; i++) {
        const item = i < 0 ? this : arguments[i];
        if ((typeof item === "object" && item !== null) || typeof item === "function") {
          if (core.isProxy(item)) {
            plain = false;
            break;
          }
          if (ArrayIsArray(item)) {
            if (item.length > MAX_ELEMENTS) {
              throw tooLong("Array.prototype.concat", item.length);
            }
          } else if (SymbolIsConcatSpreadable in item) {
            plain = false;
            break;
          }
        }
      }
      if (plain) {
        return ReflectApply(builtin, this, arguments);
      }
      if (this === null || this === undefined) {
        throw new TypeError("Array.prototype.concat called on null or undefined");
      }
      // Anything else: the spec's algorithm (a plain array, whatever the receiver's species).
      const out = [];
      let n = 0;
      for (let i = -1; i < arguments.length; i++) {
        const item = i < 0 ? Object(this) : arguments[i];
        if (spreadable(item)) {
          const length = toLength(item.length);
          if (length > MAX_ELEMENTS) {
            throw tooLong("Array.prototype.concat", length);
          }
          for (let k = 0; k < length; k++, n++) {
            if (k in item) {
              ObjectDefineProperty(out, n, {
                __proto__: null,
                value: item[k],
                writable: true,
                enumerable: true,
                configurable: true,
              });
            }
          }
        } else {
          ObjectDefineProperty(out, n, {
            __proto__: null,
            value: item,
            writable: true,
            enumerable: true,
            configurable: true,
          });
          n++;
        }
      }
      out.length = n;
      return out;
    },
  }.concat;
  install(ArrayPrototype, "concat", method, builtin.length);
}

/**
 * FlattenIntoArray, in JavaScript: the nested arrays' lengths are looped over here.
 * @returns {number} the next index of `target`
 */
function flattenInto(target, source, sourceLength, start, depth, mapper, thisArg) {
  let index = start;
  for (let k = 0; k < sourceLength; k++) {
    if (!(k in source)) {
      continue;
    }
    let element = source[k];
    if (mapper !== undefined) {
      element = ReflectApply(mapper, thisArg, [element, k, source]);
    }
    if (depth > 0 && ArrayIsArray(element)) {
      const length = toLength(element.length);
      if (length > MAX_ELEMENTS) {
        throw tooLong(mapper === undefined ? "Array.prototype.flat" : "Array.prototype.flatMap", length);
      }
      index = flattenInto(target, element, length, index, depth - 1, undefined, undefined);
    } else {
      if (index >= 2 ** 53 - 1) {
        throw new TypeError("the flattened array would be too long");
      }
      ObjectDefineProperty(target, index, {
        __proto__: null,
        value: element,
        writable: true,
        enumerable: true,
        configurable: true,
      });
      index++;
    }
  }
  return index;
}

/**
 * The receiver of `flat` or `flatMap` as an object, and its length, read once and checked.
 * @returns {[object, number]}
 */
function flatSource(receiver, name) {
  if (receiver === null || receiver === undefined) {
    throw new TypeError(`${name} called on null or undefined`);
  }
  const source = Object(receiver);
  const length = toLength(source.length);
  if (length > MAX_ELEMENTS) {
    throw tooLong(name, length);
  }
  return [source, length];
}

{
  const method = {
    flat() {
      const { 0: source, 1: length } = flatSource(this, "Array.prototype.flat");
      const depthArgument = arguments[0];
      let depth = depthArgument === undefined ? 1 : MathTrunc(+depthArgument);
      depth = NumberIsNaN(depth) ? 0 : depth;
      const out = [];
      flattenInto(out, source, length, 0, depth, undefined, undefined);
      return out;
    },
  }.flat;
  install(ArrayPrototype, "flat", method, 0);
}

{
  const method = {
    flatMap(mapper) {
      const { 0: source, 1: length } = flatSource(this, "Array.prototype.flatMap");
      if (typeof mapper !== "function") {
        throw new TypeError("flatMap mapper function is not callable");
      }
      const out = [];
      flattenInto(out, source, length, 0, 1, mapper, arguments[1]);
      return out;
    },
  }.flatMap;
  install(ArrayPrototype, "flatMap", method, 1);
}

const values = ArrayPrototype[SymbolIterator];

/** Whether `Array.prototype[@@iterator]` is still the builtin, as a plain data property. */
function arrayIteratorIsOriginal() {
  const descriptor = ObjectGetOwnPropertyDescriptor(ArrayPrototype, SymbolIterator);
  return descriptor !== undefined && descriptor.value === values;
}

/**
 * `from` for `C`, `Array` or `%TypedArray%`, which copy an array-like to its `length`. An iterable
 * is iterated by its iterator's `next`, which the watchdog can stop, unless it is a genuine array,
 * whose length is checked (the builtin may copy it without calling `next`). Whether it is
 * iterable is decided here, once: the builtin gets either an iterable that calls the iterator
 * found, or an array-like view that has none.
 */
function boundedFrom(C, name) {
  const builtin = C.from;
  const from = {
    from(items) {
      if (items === null || items === undefined || typeof items === "string") {
        if (typeof items === "string" && items.length > MAX_ELEMENTS) {
          throw tooLong(name, items.length);
        }
        return ReflectApply(builtin, this, arguments);
      }
      if (typeof items !== "object" && typeof items !== "function") {
        return ReflectApply(builtin, this, arguments);
      }
      // A genuine array iterated the usual way (no @@iterator of its own, Array.prototype's the
      // original, found without a getter) is copied by the builtin at its length, checked here:
      // nothing can run in between to change it.
      if (
        ArrayIsArray(items) && !core.isProxy(items) && ObjectGetPrototypeOf(items) === ArrayPrototype &&
        !ObjectHasOwn(items, SymbolIterator) && arrayIteratorIsOriginal()
      ) {
        if (items.length > MAX_ELEMENTS) {
          throw tooLong(name, items.length);
        }
        return ReflectApply(builtin, this, arguments);
      }
      const iterator = items[SymbolIterator];
      let source;
      if (iterator !== undefined && iterator !== null) {
        if (typeof iterator !== "function") {
          throw new TypeError(`${name}: the @@iterator of items is not callable`);
        }
        source = { [SymbolIterator]: () => ReflectApply(iterator, items, []) };
      } else {
        source = pinnedView(items, name, false);
      }
      const args = [source];
      for (let i = 1; i < arguments.length; i++) {
        args[i] = arguments[i];
      }
      return ReflectApply(builtin, this, args);
    },
  }.from;
  install(C, "from", from, builtin.length);
}

boundedFrom(Array, "Array.from");
boundedFrom(TypedArray, "TypedArray.from");
