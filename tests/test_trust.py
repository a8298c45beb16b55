"""Nothing on the device path unpickles, and server checkpoints never go through pickle either.

A static check over the source: the device runtime imports no pickle (nor torch), every `np.load` passes
`allow_pickle=False`, every `torch.load` passes `weights_only=True`, and `pickle.load(s)` appears only in the
one restricted CIFAR unpickler (server-side, admits numpy arrays only; tested in tests/pipeline/data).
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("device_runtime", "pipeline", "exporters", "cli")
SOURCES = sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def _calls(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            yield node, ast.unparse(node.func)


def _keyword(call: ast.Call, name: str):
    return next((k.value.value for k in call.keywords if k.arg == name and isinstance(k.value, ast.Constant)), None)


def test_the_sources_were_found():
    assert len(SOURCES) > 40 and any(p.name == "bundle.py" for p in SOURCES)


@pytest.mark.parametrize("path", [p for p in SOURCES if p.parts[-2] == "device_runtime"], ids=lambda p: p.name)
def test_the_device_runtime_imports_no_pickle_and_no_torch(path):
    for node in ast.walk(ast.parse(path.read_text())):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        for name in names:
            assert name.split(".")[0] not in {"pickle", "cPickle", "dill", "joblib", "torch", "shelve"}, (path, name)


def test_every_np_load_refuses_pickles_and_every_torch_load_is_weights_only():
    seen = 0
    for path in SOURCES:
        for call, func in _calls(path):
            if func in ("np.load", "numpy.load"):
                seen += 1
                assert _keyword(call, "allow_pickle") is False, f"{path}:{call.lineno} np.load may unpickle"
            if func == "torch.load":
                assert _keyword(call, "weights_only") is True, f"{path}:{call.lineno} torch.load not weights_only"
            if func in ("pickle.load", "pickle.loads"):
                pytest.fail(f"{path}:{call.lineno} unpickles")
    assert seen >= 2  # init.npz and state.npz


def test_an_adapted_state_npz_holding_a_pickle_is_refused(tmp_path):
    import numpy as np

    from mtl.device_runtime.adapted_state import _read_state
    from mtl.device_runtime.errors import BundleError

    np.savez(tmp_path / "state.npz", weight=np.array([{"run": "code"}], dtype=object))
    with pytest.raises(BundleError, match="state.npz: not a readable .npz archive"):
        _read_state((tmp_path / "state.npz").read_bytes(), tmp_path / "state.npz", 2, 8, None)
