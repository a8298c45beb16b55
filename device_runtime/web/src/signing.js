// Ed25519 signatures of bundles, checked as the Python runtime checks them (device_runtime/signing.py):
// `manifest.sig` is the signature of the exact manifest.json bytes, which list every other file's sha256, so one
// signature covers the bundle. With a key, an unsigned or forged bundle is refused before its manifest is parsed.
// WebCrypto only: a page served without a secure context (plain http from a LAN address) cannot check signatures
// and says so rather than skipping the check.
import { BundleError, ConfigError } from "./errors.js";
import { SIGNATURE } from "./manifest.js";

// A PEM public key (text or bytes) → a WebCrypto Ed25519 verification key; `name` is how messages call it.
export async function publicKey(pem, name) {
  const subtle = globalThis.crypto?.subtle;
  if (!subtle) {
    throw new ConfigError(`checking the signature with ${name} needs WebCrypto, which this page lacks: serve it over ` +
      "https or from localhost");
  }
  const text = typeof pem === "string" ? pem : new TextDecoder().decode(pem);
  const match = /-----BEGIN PUBLIC KEY-----([A-Za-z0-9+/=\s]+)-----END PUBLIC KEY-----/.exec(text);
  let der;
  try {
    der = Uint8Array.from(atob(match[1].replace(/\s+/g, "")), (c) => c.charCodeAt(0));
  } catch {
    throw new ConfigError(`${name} is not an unencrypted PEM public key`);
  }
  try {
    return await subtle.importKey("spki", der, { name: "Ed25519" }, false, ["verify"]);
  } catch (error) {
    if (error?.name === "NotSupportedError") {
      throw new ConfigError(`this browser's WebCrypto cannot check Ed25519 signatures (needed for ${name}); use a newer browser`);
    }
    throw new ConfigError(`${name} is not an Ed25519 public key`);
  }
}

// Raise BundleError unless `signature` is the key's signature of `manifest`.
export async function verifyManifest(manifest, signature, key, name, label) {
  if (signature === null) throw new BundleError(`${label}: not signed (no ${SIGNATURE}), but --key ${name} asks for a signature`);
  const valid = await globalThis.crypto.subtle.verify({ name: "Ed25519" }, key, signature, manifest);
  if (!valid) {
    throw new BundleError(`${label}: ${SIGNATURE} does not verify with ${name}; the bundle was changed or signed with another key`);
  }
}
