import { JsonFloat, keysOf } from "./jsonio.js";

// The runtime's errors, one per kind, as in the Python runtime (device_runtime/errors.py): each message is one
// line naming what is wrong.
export class MtlError extends Error {
  constructor(message) {
    super(message);
    this.name = this.constructor.name;
  }
}
export class BundleError extends MtlError {} // a bundle (or adapted state) that is broken, unsafe or foreign
export class DataError extends MtlError {} // images or support sets that cannot be used
export class ConfigError extends MtlError {} // options out of range

// Python's repr() of the values messages show (strings in single quotes, lists and objects as Python prints
// them), cut at `width` characters like Python's {value!r:.N}.
export function repr(value, width = Infinity) {
  let text;
  if (typeof value === "string") {
    const quote = value.includes("'") && !value.includes('"') ? '"' : "'";
    let escaped = "";
    for (const char of value) escaped += escapeChar(char, quote);
    text = `${quote}${escaped}${quote}`;
  } else if (value === null || value === undefined) {
    text = "None";
  } else if (typeof value === "boolean") {
    text = value ? "True" : "False";
  } else if (Array.isArray(value)) {
    text = `[${value.map((v) => repr(v)).join(", ")}]`;
  } else if (typeof value === "object" && !(value instanceof JsonFloat)) {
    text = `{${keysOf(value).map((k) => `${repr(k)}: ${repr(value[k])}`).join(", ")}}`;
  } else {
    text = pyNumber(Number(value), value);
  }
  if (text.length <= width) return text;
  const points = Array.from(text); // Python cuts at `width` characters (code points), not UTF-16 units
  return points.length > width ? points.slice(0, width).join("") : text;
}

// Python's str.isprintable() is false for these (the space excepted): repr() escapes them
const UNPRINTABLE = /[\p{Cc}\p{Cf}\p{Cs}\p{Co}\p{Cn}\p{Zl}\p{Zp}]|(?! )\p{Zs}/u;
const NAMED = { "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t" };

// Python's str.isprintable(): what file and class names may hold, and what repr() leaves unescaped.
export const isPrintable = (text) => !UNPRINTABLE.test(text);

// One character as Python's repr() of a string writes it.
function escapeChar(char, quote) {
  if (char in NAMED) return NAMED[char];
  if (char === quote) return `\\${char}`;
  if (isPrintable(char)) return char;
  const code = char.codePointAt(0);
  if (code < 0x100) return `\\x${code.toString(16).padStart(2, "0")}`;
  if (code < 0x10000) return `\\u${code.toString(16).padStart(4, "0")}`;
  return `\\U${code.toString(16).padStart(8, "0")}`;
}

// A number as Python prints it: an integer exactly (a BigInt beyond 2^53, jsonio.js), a float (a JsonFloat) as
// Python's repr() — the shortest digits that round-trip, in exponent form below 1e-4 and from 1e16 on.
function pyNumber(number, original) {
  if (typeof original === "bigint") return original.toString();
  if (!(original instanceof JsonFloat)) return String(number);
  if (Number.isNaN(number)) return "nan";
  if (!Number.isFinite(number)) return number > 0 ? "inf" : "-inf";
  if (number === 0) return Object.is(number, -0) ? "-0.0" : "0.0";
  const sign = number < 0 ? "-" : "";
  const [mantissa, power] = Math.abs(number).toExponential().split("e");
  const digits = mantissa.replace(".", "");
  const e = Number(power);
  if (e < -4 || e >= 16) {
    const m = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
    return `${sign}${m}e${e < 0 ? "-" : "+"}${String(Math.abs(e)).padStart(2, "0")}`;
  }
  if (e < 0) return `${sign}0.${"0".repeat(-e - 1)}${digits}`;
  return `${sign}${digits.slice(0, e + 1).padEnd(e + 1, "0")}.${digits.slice(e + 1) || "0"}`;
}

// Python's type(value).__name__ for a parsed JSON value.
export function typeName(value) {
  if (value === null) return "NoneType";
  if (typeof value === "boolean") return "bool";
  if (typeof value === "string") return "str";
  if (typeof value === "number" || typeof value === "bigint") return "int";
  if (Array.isArray(value)) return "list";
  if (value instanceof JsonFloat) return "float";
  return "dict";
}
