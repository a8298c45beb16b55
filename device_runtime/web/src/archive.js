// A `.mtlb` zip read in memory, never extracted, with the checks of the Python runtime
// (device_runtime/archive.py): the end record bounds the central directory before it is parsed; every member's
// name stays inside the bundle, no symbolic links, no duplicate or encrypted members, and no member (or total)
// that expands far beyond what a bundle holds — all from the central directory, before anything is decompressed.
import { Inflate } from "fflate";
import { BundleError, repr } from "./errors.js";
import { checkMemberName, MANIFEST, SIGNATURE } from "./manifest.js";

export const MAX_MANIFEST_BYTES = 1 << 20;
export const MAX_MEMBERS = 64;
export const MAX_DIRECTORY_BYTES = 1 << 20;
export const MAX_MEMBER_BYTES = 2 * 2 ** 30;
export const MAX_TOTAL_BYTES = 4 * 2 ** 30;
export const MAX_RATIO = 200;
export const RATIO_FLOOR = 1 << 20;
const S_IFMT = 0o170000;
const S_IFLNK = 0o120000;
// code page 437, bytes 0x80-0xFF: the names of members without the UTF-8 flag, as Python's zipfile reads them
const CP437 = "ÇüéâäàåçêëèïîìÄÅÉæÆôöòûùÿÖÜ¢£¥₧ƒáíóúñÑªº¿⌐¬½¼¡«»░▒▓│┤╡╢╖╕╣║╗╝╜╛┐└┴┬├─┼╞╟╚╔╩╦╠═╬╧╨╤╥╙╘╒╓╫╪┘┌█▄▌▐▀αßΓπΣσµτΦΘΩδ∞φε∩≡±≥≤⌠⌡÷≈°∙·√ⁿ²■\u00a0";

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

export function crc32(bytes) {
  let crc = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) crc = CRC_TABLE[(crc ^ bytes[i]) & 0xff] ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

function decodeName(raw, utf8) {
  if (utf8) {
    try {
      return new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(raw);
    } catch {
      return null;
    }
  }
  let out = "";
  for (const byte of raw) out += byte < 0x80 ? String.fromCharCode(byte) : CP437[byte - 0x80];
  return out;
}

// Inflate `data`, stopping as soon as the output passes `limit` bytes (the member's declared size): memory grows with
// what the data really holds, never with what a directory entry claims.
function inflateBounded(data, limit, cannot) {
  const chunks = [];
  let total = 0;
  const inflater = new Inflate((chunk) => {
    total += chunk.length;
    if (total > limit) throw cannot("the member inflates beyond its directory entry's size");
    chunks.push(chunk);
  });
  try {
    for (let at = 0; at < data.length; at += 1 << 16) inflater.push(data.subarray(at, at + (1 << 16)), at + (1 << 16) >= data.length);
    if (data.length === 0) inflater.push(new Uint8Array(0), true);
  } catch (error) {
    if (error instanceof BundleError) throw error;
    throw cannot(`Error -3 while decompressing data: ${error.message}`);
  }
  const out = new Uint8Array(total);
  let at = 0;
  for (const chunk of chunks) {
    out.set(chunk, at);
    at += chunk.length;
  }
  return out;
}

export class ZipSource {
  // bytes: a Uint8Array holding the whole zip; label: how messages name it
  constructor(bytes, label) {
    this.bytes = bytes;
    this.label = label;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    if (bytes.length > MAX_TOTAL_BYTES) {
      throw new BundleError(`${label}: ${bytes.length.toLocaleString("en")} bytes is more than the ${MAX_TOTAL_BYTES} a bundle may be`);
    }
    const end = this.endRecord();
    this.members = this.checkMembers(this.directory(end));
  }

  invalid(why) {
    return new BundleError(`${this.label}: not a valid .mtlb zip: ${why}`);
  }

  endRecord() {
    const { bytes, view, label } = this;
    const tail = Math.min(bytes.length, 22 + 0xffff);
    let at = -1;
    for (let i = bytes.length - 4; i >= bytes.length - tail; i--) {
      if (bytes[i] === 0x50 && bytes[i + 1] === 0x4b && bytes[i + 2] === 0x05 && bytes[i + 3] === 0x06) {
        at = i;
        break;
      }
    }
    if (at < 0 || bytes.length - at < 22) throw this.invalid("no end-of-central-directory record");
    const entries = view.getUint16(at + 10, true);
    const directoryBytes = view.getUint32(at + 12, true);
    if (entries > MAX_MEMBERS || directoryBytes > MAX_DIRECTORY_BYTES) {
      throw new BundleError(`${label}: the zip lists ${entries} members in a ${directoryBytes.toLocaleString("en")}-byte ` +
        `directory; a bundle has at most ${MAX_MEMBERS}`);
    }
    return { entries, directoryBytes, offset: view.getUint32(at + 16, true), at };
  }

  directory(end) {
    const { bytes, view } = this;
    // a zip may carry bytes before its first member (Python's zipfile allows it): the directory sits just before
    // the end record
    const start = end.at - end.directoryBytes;
    if (start < 0 || end.offset === 0xffffffff) throw this.invalid("truncated or zip64 central directory");
    const shift = start - end.offset;
    const entries = [];
    let pos = start;
    // as Python's zipfile: entries are read until the directory's size is used up (the count is not trusted)
    while (pos < end.at) {
      if (pos + 46 > end.at || view.getUint32(pos, true) !== 0x02014b50) throw this.invalid("Bad magic number for central directory");
      const flags = view.getUint16(pos + 8, true);
      const needed = view.getUint16(pos + 6, true) & 0xff;
      if (needed > 63) throw this.invalid(`zip file version ${(needed / 10).toFixed(1)}`);
      const nameLength = view.getUint16(pos + 28, true);
      const extraLength = view.getUint16(pos + 30, true);
      const commentLength = view.getUint16(pos + 32, true);
      const raw = bytes.subarray(pos + 46, pos + 46 + nameLength);
      const name = decodeName(raw, flags & 0x800);
      if (name === null) throw this.invalid("a member name is not UTF-8");
      const entry = {
        name, flags, method: view.getUint16(pos + 10, true), crc: view.getUint32(pos + 16, true),
        compressSize: view.getUint32(pos + 20, true), fileSize: view.getUint32(pos + 24, true),
        externalAttr: view.getUint32(pos + 38, true), headerOffset: view.getUint32(pos + 42, true) + shift,
      };
      if (entry.compressSize === 0xffffffff || entry.fileSize === 0xffffffff) throw this.invalid("zip64 members are not supported");
      entries.push(entry);
      pos += 46 + nameLength + extraLength + commentLength;
    }
    return entries;
  }

  checkMembers(entries) {
    this.names = entries.map((e) => e.name); // every entry, directories too (an .npz lists them as arrays)
    const members = new Map();
    let total = 0;
    for (const info of entries) {
      const { name } = info;
      if (name.endsWith("/") && !info.fileSize) {
        checkMemberName(name.replace(/\/+$/, ""), this.label);
        continue;
      }
      checkMemberName(name, this.label);
      if (((info.externalAttr >>> 16) & S_IFMT) === S_IFLNK) {
        throw new BundleError(`${this.label}: member ${name} is a symbolic link; a bundle holds plain files only`);
      }
      if (members.has(name)) throw new BundleError(`${this.label}: duplicate member ${name}`);
      if (info.flags & 0x1) throw new BundleError(`${this.label}: member ${name} is encrypted`);
      total += info.fileSize;
      const limit = name === MANIFEST ? MAX_MANIFEST_BYTES : MAX_MEMBER_BYTES;
      if (info.fileSize > limit || total > MAX_TOTAL_BYTES ||
          (info.fileSize > RATIO_FLOOR && info.fileSize > MAX_RATIO * Math.max(info.compressSize, 1))) {
        throw new BundleError(`${this.label}: member ${name} expands from ${info.compressSize} to ${info.fileSize} bytes ` +
          `(total ${total}), far beyond what a bundle holds; refusing a possible zip bomb`);
      }
      members.set(name, info);
    }
    return members;
  }

  read(name) {
    const info = this.members.get(name);
    if (!info) throw new BundleError(`${this.label}: missing file ${name}`);
    const cannot = (why) => new BundleError(`${this.label}: cannot read member ${name}: ${why}`);
    const { view, bytes } = this;
    const at = info.headerOffset;
    if (at < 0 || at + 30 > bytes.length || view.getUint32(at, true) !== 0x04034b50) throw cannot("Bad magic number for file header");
    const nameLength = view.getUint16(at + 26, true);
    const extraLength = view.getUint16(at + 28, true);
    const local = decodeName(bytes.subarray(at + 30, at + 30 + nameLength), view.getUint16(at + 6, true) & 0x800);
    if (local !== name) throw cannot(`File name in directory ${repr(name)} and header ${repr(local)} differ.`);
    const start = at + 30 + nameLength + extraLength;
    if (info.flags & 0x20) throw cannot("compressed patched data (flag bit 5)");
    if (info.flags & 0x40) throw cannot("strong encryption (flag bit 6)");
    const data = bytes.subarray(start, start + info.compressSize);
    if (data.length !== info.compressSize) throw cannot("truncated member");
    let out;
    if (info.method === 0) out = data.slice();
    else if (info.method === 8) out = inflateBounded(data, info.fileSize, cannot);
    else throw cannot(`compression type ${info.method} is not supported (mtl writes deflate)`);
    if (out.length !== info.fileSize) throw cannot("the member's size differs from its directory entry");
    if (crc32(out) !== info.crc) throw cannot(`Bad CRC-32 for file ${repr(name)}`);
    return out;
  }

  readOptional(name) {
    return this.members.has(name) ? this.read(name) : null;
  }

  // Every member must be the manifest or a file it lists (with its sha256).
  checkListed(names) {
    const extra = [...this.members.keys()].filter((n) => !names.has(n) && n !== MANIFEST && n !== SIGNATURE).sort();
    if (extra.length) throw new BundleError(`${this.label}: member ${extra[0]} is not listed in ${MANIFEST} files`);
  }
}
