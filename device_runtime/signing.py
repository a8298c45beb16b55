"""Optional Ed25519 signatures of bundles (`mtl export --sign KEY`, `mtl bundle verify --key PUB`).

`manifest.sig` holds the 64-byte Ed25519 signature of the exact `manifest.json` bytes. The manifest lists
the sha256 of every other file, so one signature covers the whole bundle. The `cryptography` package (the
`sign` extra) is imported only when a key is given: a device that does not check signatures never needs it.

Keys are PEM files, e.g. `openssl genpkey -algorithm ed25519 -out key.pem` and
`openssl pkey -in key.pem -pubout -out key.pub`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mtl.device_runtime.errors import BundleError, ConfigError
from mtl.device_runtime.files import read_regular

SIGNATURE = "manifest.sig"


def _crypto() -> tuple[Any, Any, Any]:
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise ConfigError("bundle signatures need the 'cryptography' package: pip install 'mtl[sign]'") from None
    return InvalidSignature, serialization, ed25519


def _key(path: str | Path, private: bool) -> Any:
    _, serialization, ed25519 = _crypto()
    kind = "private" if private else "public"
    data = read_regular(path, 64 << 10, f"{kind} key", ConfigError)  # a PEM key is a few hundred bytes
    try:
        key = (serialization.load_pem_private_key(data, password=None) if private
               else serialization.load_pem_public_key(data))
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path} is not an unencrypted PEM {kind} key: {exc}") from None
    wanted = ed25519.Ed25519PrivateKey if private else ed25519.Ed25519PublicKey
    if not isinstance(key, wanted):
        raise ConfigError(f"{path} is a {type(key).__name__}, not an Ed25519 {kind} key")
    return key


def check_private_key(path: str | Path) -> None:
    """Raise `ConfigError` unless `path` is a readable Ed25519 private key (and `cryptography` is installed)."""
    _key(path, private=True)


def sign_manifest(manifest: bytes, private_key: str | Path) -> bytes:
    """The `manifest.sig` content for these exact manifest bytes."""
    return _key(private_key, private=True).sign(manifest)


def verify_manifest(manifest: bytes, signature: bytes | None, public_key: str | Path, label: str) -> None:
    """Raise `BundleError` unless `signature` is the key's signature of `manifest`."""
    key = _key(public_key, private=False)
    if signature is None:
        raise BundleError(f"{label}: not signed (no {SIGNATURE}), but --key {public_key} asks for a signature")
    invalid, _, _ = _crypto()
    try:
        key.verify(signature, manifest)
    except invalid:
        raise BundleError(f"{label}: {SIGNATURE} does not verify with {public_key}; the bundle was changed or "
                          "signed with another key") from None
