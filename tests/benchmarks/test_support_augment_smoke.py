"""benchmarks/support_augment.py prints both sides' cost per support image and their ratio."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.device_runtime.bundle_factory import write_bundle

REPO = Path(__file__).resolve().parents[2]
OMNIGLOT = REPO.parent / "shared" / "data" / "omniglot"


@pytest.mark.skipif(not any(OMNIGLOT.glob("*.zip")), reason="needs ../shared/data/omniglot")
def test_the_support_augment_benchmark_prints_ours_baseline_and_ratio(tmp_path):
    bundle = write_bundle(tmp_path / "bundle")
    out = subprocess.run([sys.executable, "benchmarks/support_augment.py", str(bundle), "--augment", "2",
                          "--repeats", "1", "--json"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout)
    assert report["support_images"] == 25
    for key in ("add_examples_ms_per_image", "adapt_ms"):
        assert report["ours"][key] > 0 and report["baseline"][key] > 0
        assert report["ratio"][key] == report["ours"][key] / report["baseline"][key]
