import { JsonFloat } from "./jsonio.js";

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
    const escaped = value.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/\r/g, "\\r").replace(/\t/g, "\\t")
      .replace(/[\x00-\x1f\x7f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`);
    text = escaped.includes("'") && !escaped.includes('"') ? `"${escaped}"` : `'${escaped.replace(/'/g, "\\'")}'`;
  } else if (value === null || value === undefined) {
    text = "None";
  } else if (typeof value === "boolean") {
    text = value ? "True" : "False";
  } else if (Array.isArray(value)) {
    text = `[${value.map((v) => repr(v)).join(", ")}]`;
  } else if (typeof value === "object" && !(value instanceof JsonFloat)) {
    text = `{${Object.keys(value).map((k) => `${repr(k)}: ${repr(value[k])}`).join(", ")}}`;
  } else {
    text = pyNumber(Number(value), value);
  }
  return text.length > width ? text.slice(0, width) : text;
}

// A number as Python prints it: floats keep a ".0", exponents have two digits.
function pyNumber(number, original) {
  const isFloat = original instanceof JsonFloat; // a JsonFloat (jsonio.js): written with a '.' or an exponent
  let text = String(number);
  if (text.includes("e")) text = text.replace(/e([+-])(\d)$/, "e$10$2");
  if (isFloat && Number.isInteger(number) && !text.includes("e")) text += ".0";
  return text;
}

// Python's type(value).__name__ for a parsed JSON value.
export function typeName(value) {
  if (value === null) return "NoneType";
  if (typeof value === "boolean") return "bool";
  if (typeof value === "string") return "str";
  if (typeof value === "number") return "int";
  if (Array.isArray(value)) return "list";
  if (value instanceof JsonFloat) return "float";
  return "dict";
}
