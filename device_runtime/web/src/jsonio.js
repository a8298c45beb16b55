// JSON a device reads, with the bounds of the Python runtime (device_runtime/jsonio.py): at most 32 levels of
// nesting, integers of at most 19 digits, no NaN / Infinity and no float beyond the float range. A number written
// with a fraction or an exponent comes back as a `JsonFloat`, an integer beyond 2^53 as a BigInt (exact, as
// Python's int), so that a manifest's "28.0" is refused where an
// integer is required, exactly as Python refuses it (JSON.parse would return 28 for both).
export const MAX_DEPTH = 32;
export const MAX_INT_DIGITS = 19;

export class JsonFloat {
  constructor(value) {
    this.value = value;
  }
  valueOf() {
    return this.value;
  }
  toJSON() {
    return this.value;
  }
}

// An object's keys in the order the file gives them (a JS object lists integer-like keys first; Python's dict keeps
// the file's order, and a repeated key keeps its first place with its last value).
export const ORDER = Symbol("key order");
export const keysOf = (obj) => obj[ORDER] ?? Object.keys(obj);

class JsonSyntax extends Error {}

// UTF-8 bytes → the value; anything else raises `makeError(message)` naming `label`.
export function loads(bytes, label, makeError) {
  let text;
  try {
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch {
    throw makeError(`${label} is not valid JSON: not UTF-8`);
  }
  if (text.startsWith("\ufeff")) {
    throw makeError(`${label} is not valid JSON: Unexpected UTF-8 BOM (decode using utf-8-sig): line 1 column 1 (char 0)`);
  }
  try {
    checkDepth(text);
    return new Parser(text).document();
  } catch (error) {
    if (error instanceof JsonSyntax) throw makeError(`${label} is not valid JSON: ${error.message.slice(0, 200)}`);
    throw error;
  }
}

function checkDepth(text) {
  let depth = 0;
  let inString = false;
  let escaped = false;
  for (const char of text) {
    if (inString) {
      if (escaped) escaped = false;
      else if (char === "\\") escaped = true;
      else if (char === '"') inString = false;
    } else if (char === '"') inString = true;
    else if (char === "[" || char === "{") {
      depth += 1;
      if (depth > MAX_DEPTH) throw new JsonSyntax(`nested more than ${MAX_DEPTH} levels deep`);
    } else if (char === "]" || char === "}") depth -= 1;
  }
}

const NUMBER = /-?(?:0|[1-9]\d*)(\.\d+)?([eE][-+]?\d+)?/y;
const ESCAPES = { '"': '"', "\\": "\\", "/": "/", b: "\b", f: "\f", n: "\n", r: "\r", t: "\t" };

class Parser {
  constructor(text) {
    this.text = text;
    this.at = 0;
  }
  fail(what) {
    throw new JsonSyntax(`${what} (char ${this.at})`);
  }
  space() {
    while (this.at < this.text.length && " \t\n\r".includes(this.text[this.at])) this.at += 1;
  }
  document() {
    this.space();
    const value = this.value();
    this.space();
    if (this.at !== this.text.length) this.fail("Extra data");
    return value;
  }
  value() {
    const char = this.text[this.at];
    if (char === "{") return this.object();
    if (char === "[") return this.array();
    if (char === '"') return this.string();
    for (const [word, value] of [["true", true], ["false", false], ["null", null]]) {
      if (this.text.startsWith(word, this.at)) {
        this.at += word.length;
        return value;
      }
    }
    for (const constant of ["NaN", "Infinity", "-Infinity"]) {
      if (this.text.startsWith(constant, this.at)) throw new JsonSyntax(`${constant} is not a JSON number`);
    }
    NUMBER.lastIndex = this.at;
    const match = NUMBER.exec(this.text);
    if (!match) this.fail("Expecting value");
    this.at += match[0].length;
    const token = match[0];
    if (match[1] === undefined && match[2] === undefined) {
      const digits = token.replace(/^-/, "").length;
      if (digits > MAX_INT_DIGITS) throw new JsonSyntax(`an integer of ${digits} digits (at most ${MAX_INT_DIGITS})`);
      const value = Number(token);
      return Number.isSafeInteger(value) ? value : BigInt(token); // exact, as Python's int
    }
    if (token.length > 64) throw new JsonSyntax(`a number written with ${token.length} characters`);
    const value = Number(token);
    if (!Number.isFinite(value)) throw new JsonSyntax(`the number ${token} is out of the float range`);
    return new JsonFloat(value);
  }
  object() {
    const out = Object.create(null);
    const order = [];
    Object.defineProperty(out, ORDER, { value: order });
    this.at += 1;
    this.space();
    if (this.text[this.at] === "}") {
      this.at += 1;
      return out;
    }
    for (;;) {
      this.space();
      if (this.text[this.at] !== '"') this.fail("Expecting property name enclosed in double quotes");
      const key = this.string();
      this.space();
      if (this.text[this.at] !== ":") this.fail("Expecting ':' delimiter");
      this.at += 1;
      this.space();
      if (!Object.prototype.hasOwnProperty.call(out, key)) order.push(key);
      out[key] = this.value();
      this.space();
      const next = this.text[this.at++];
      if (next === "}") return out;
      if (next !== ",") this.fail("Expecting ',' delimiter");
    }
  }
  array() {
    const out = [];
    this.at += 1;
    this.space();
    if (this.text[this.at] === "]") {
      this.at += 1;
      return out;
    }
    for (;;) {
      this.space();
      out.push(this.value());
      this.space();
      const next = this.text[this.at++];
      if (next === "]") return out;
      if (next !== ",") this.fail("Expecting ',' delimiter");
    }
  }
  string() {
    this.at += 1;
    let out = "";
    for (;;) {
      if (this.at >= this.text.length) this.fail("Unterminated string starting at");
      const char = this.text[this.at++];
      if (char === '"') return out;
      if (char < " ") this.fail("Invalid control character at");
      if (char !== "\\") {
        out += char;
        continue;
      }
      const escape = this.text[this.at++];
      if (escape === "u") {
        const hex = this.text.slice(this.at, this.at + 4);
        if (!/^[0-9a-fA-F]{4}$/.test(hex)) this.fail("Invalid \\uXXXX escape");
        out += String.fromCharCode(parseInt(hex, 16));
        this.at += 4;
      } else if (escape in ESCAPES) out += ESCAPES[escape];
      else this.fail("Invalid \\escape");
    }
  }
}
