"""The device path runs where torch (and the onnx package) cannot be imported at all."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.device_runtime.bundle_factory import write_bundle, write_support
from tests.png_check import assert_drawn_png

REPO = Path(__file__).resolve().parents[2]
BLOCKER = '''
import sys

class BlockTrainingPackages:
    """Make the training-only packages unimportable, like on a device installed without the train extra."""

    BLOCKED = {"torch", "torchvision", "onnx", "onnxscript", "safetensors", "matplotlib"}

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
        return None

sys.meta_path.insert(0, BlockTrainingPackages())
'''
API = '''
import json, sys
from pathlib import Path
from mtl.device_runtime import Adapter, Bundle

bundle_path, support, out = map(Path, sys.argv[1:4])
adapter = Adapter(Bundle.load(bundle_path))
for folder in sorted(support.iterdir()):
    adapter.add_examples(folder.name, sorted(folder.iterdir()))
adapter.adapt(steps=10)
adapter.save(out)
labels, _ = Adapter.load(out).predict([folder / "0.png" for folder in sorted(support.iterdir())])
blocked = [m for m in ("torch", "torchvision", "onnx") if m in sys.modules]
print(json.dumps({"labels": labels, "imported": blocked}))
'''


@pytest.fixture
def run_blocked(tmp_path):
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(BLOCKER)
    env = {**os.environ, "PYTHONPATH": f"{tmp_path / 'site'}{os.pathsep}{REPO}"}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, *args], env=env, cwd=REPO, capture_output=True, text=True,
                              timeout=120)

    return run


@pytest.mark.parametrize("module", ["torch", "matplotlib"])
def test_the_blocker_really_blocks_torch_and_matplotlib(run_blocked, module):
    result = run_blocked("-c", f"import {module}")
    assert result.returncode != 0 and "blocked by the test" in result.stderr


def test_bundle_load_adapt_predict_and_the_cli_work_without_torch(run_blocked, tmp_path):
    bundle = write_bundle(tmp_path / "bundle")
    support = write_support(tmp_path / "support", ["a", "b", "c"])
    api = run_blocked("-c", API, str(bundle), str(support), str(tmp_path / "api_adapted"))
    assert api.returncode == 0, api.stderr
    assert json.loads(api.stdout) == {"labels": ["a", "b", "c"], "imported": []}

    adapt = run_blocked("-m", "mtl", "adapt", str(bundle), str(support), "--out", str(tmp_path / "adapted"),
                        "--steps", "10")
    assert adapt.returncode == 0, adapt.stderr
    assert "classes (3): a, b, c" in adapt.stdout
    predict = run_blocked("-m", "mtl", "predict", str(tmp_path / "adapted"), str(support / "b" / "1.png"), "--json")
    assert predict.returncode == 0, predict.stderr
    assert json.loads(predict.stdout)[0]["label"] == "b"
    show = run_blocked("-m", "mtl", "predict", str(tmp_path / "adapted"), str(support / "a" / "1.png"),
                       str(support / "c" / "2.png"), "--show", str(tmp_path / "sheet.png"))
    assert show.returncode == 0, show.stderr
    assert "contact sheet: " in show.stdout
    assert_drawn_png(tmp_path / "sheet.png", min_size=(288, 144))
    verify = run_blocked("-m", "mtl", "bundle", "verify", str(bundle))
    assert verify.returncode == 0 and verify.stdout.startswith("ok: "), verify.stderr


def test_a_training_command_without_torch_says_which_extra_to_install(run_blocked, tmp_path):
    result = run_blocked("-m", "mtl", "pretrain", "--data", "synthetic:10", "--out", str(tmp_path / "run"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip() == ("error: this command needs the training extra (torch is not installed): "
                                     "pip install 'mtl[train]'")
