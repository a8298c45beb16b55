"""Optional Ed25519 bundle signatures: `mtl export --sign KEY`, `mtl bundle verify --key PUB`."""

import hashlib
import io
import sys
import zipfile

import pytest
from typer.testing import CliRunner

from mtl.cli.app import app
from mtl.device_runtime import Bundle, BundleError
from mtl.device_runtime.errors import ConfigError
from mtl.device_runtime.signing import SIGNATURE, sign_manifest
from tests.device_runtime.bundle_factory import read_manifest, write_manifest

pytest.importorskip("cryptography")
runner = CliRunner()


def _keypair(directory, name="key"):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    private, public = directory / f"{name}.pem", directory / f"{name}.pub"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


@pytest.fixture
def signed(bundle_dir, tmp_path):
    private, public = _keypair(tmp_path)
    (bundle_dir / SIGNATURE).write_bytes(sign_manifest((bundle_dir / "manifest.json").read_bytes(), private))
    return bundle_dir, public


def _verify(bundle, key):
    return runner.invoke(app, ["bundle", "verify", str(bundle), "--key", str(key)])


def test_a_signed_bundle_verifies_as_a_directory_and_as_mtlb_and_keeps_its_signature(signed, tmp_path):
    bundle, public = signed
    result = _verify(bundle, public)
    assert result.exit_code == 0 and "signature verified" in result.stdout, result.output
    loaded = Bundle.load(bundle, key=public)
    loaded.save(tmp_path / "copy.mtlb", single_file=True)
    assert Bundle.load(tmp_path / "copy.mtlb", key=public).signature == loaded.signature
    assert Bundle.load(bundle).signature is not None  # without --key the signature is simply not required


@pytest.mark.parametrize("fault", ["unsigned", "other-key", "manifest-edited", "signature-flipped"])
def test_a_bundle_that_is_not_signed_by_the_key_is_refused(fault, signed, tmp_path):
    bundle, public = signed
    if fault == "unsigned":
        (bundle / SIGNATURE).unlink()
    elif fault == "other-key":
        public = _keypair(tmp_path, "other")[1]
    elif fault == "manifest-edited":  # a consistent edit: files and digests still agree, the signer did not
        meta = read_manifest(bundle)
        meta["adapt"]["lr"] = 10.0
        write_manifest(bundle, meta)
    else:
        data = bytearray((bundle / SIGNATURE).read_bytes())
        data[17] ^= 0x20
        (bundle / SIGNATURE).write_bytes(bytes(data))
    result = _verify(bundle, public)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1
    assert ("not signed" if fault == "unsigned" else "does not verify with") in result.stderr


def test_adapt_with_a_key_refuses_an_unsigned_bundle_before_adapting(signed, tmp_path):
    from tests.device_runtime.bundle_factory import write_support

    bundle, public = signed
    support = write_support(tmp_path / "support", ["a", "b"])
    ok = runner.invoke(app, ["adapt", str(bundle), str(support), "--out", str(tmp_path / "ok"), "--key", str(public)])
    assert ok.exit_code == 0, ok.output
    (bundle / SIGNATURE).unlink()
    result = runner.invoke(app, ["adapt", str(bundle), str(support), "--out", str(tmp_path / "no"), "--key",
                                 str(public)])
    assert result.exit_code == 1 and "not signed" in result.stderr and not (tmp_path / "no").exists()


def test_a_key_that_is_not_an_ed25519_public_key_is_a_usage_error(signed, tmp_path):
    bundle, _ = signed
    (tmp_path / "junk.pub").write_text("-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n")
    result = _verify(bundle, tmp_path / "junk.pub")
    assert result.exit_code == 2 and "junk.pub is not an unencrypted PEM public key" in result.stderr
    result = _verify(bundle, tmp_path / "missing.pub")
    assert result.exit_code == 2 and "cannot read public key" in result.stderr


def test_without_cryptography_a_key_is_a_clear_error_and_unsigned_use_still_works(signed, monkeypatch):
    bundle, public = signed
    monkeypatch.setitem(sys.modules, "cryptography", None)  # import cryptography → ImportError
    monkeypatch.setitem(sys.modules, "cryptography.exceptions", None)
    with pytest.raises(ConfigError, match=r"pip install 'mtl\[sign\]'"):
        Bundle.load(bundle, key=public)
    assert Bundle.load(bundle).feature_dim == 8


def test_a_signature_member_in_an_mtlb_is_allowed_but_nothing_else_unlisted(signed, tmp_path):
    bundle, public = signed
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(bundle.iterdir()):
            archive.writestr(path.name, path.read_bytes())
    assert Bundle.from_bytes(buffer.getvalue(), key=public).signature is not None
    with zipfile.ZipFile(buffer, "a") as archive:
        archive.writestr("extra.bin", b"x")
    with pytest.raises(BundleError, match="extra.bin is not listed"):
        Bundle.from_bytes(buffer.getvalue())


def test_export_signs_the_bundle_it_writes(pretrained_run, tmp_path):
    private, public = _keypair(tmp_path)
    out = tmp_path / "b.mtlb"
    result = runner.invoke(app, ["export", str(pretrained_run[0]), "--out", str(out), "--single-file",
                                 "--sign", str(private)])
    assert result.exit_code == 0, result.output
    bundle = Bundle.load(out, key=public)
    assert hashlib.sha256(bundle.to_zip_bytes()).digest()  # loads, verified, with its signature
    assert bundle.signature is not None and _verify(out, public).exit_code == 0
    result = runner.invoke(app, ["export", str(pretrained_run[0]), "--out", str(tmp_path / "c"),
                                 "--sign", str(public)])  # a public key cannot sign: refused before exporting
    assert result.exit_code == 2 and "not an unencrypted PEM private key" in result.stderr
    assert not (tmp_path / "c").exists()
