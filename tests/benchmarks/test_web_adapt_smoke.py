"""The web benchmark runs end to end on this machine's Chromium and prints its ratios (figures come from the
benchmark, never from a timed test)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.web.harness import need_browser


@pytest.mark.slow
def test_the_web_benchmark_prints_both_sides_and_their_ratio():
    need_browser()
    pytest.importorskip("torch", reason="its default bundle is exported from a short pretraining")
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "web_adapt.py"
    run = subprocess.run([sys.executable, str(script), "--quick", "--json"], capture_output=True, text=True,
                         timeout=900)
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(run.stdout)
    assert report["benchmark"] == "web_adapt" and report["page_bytes"] > 1_000_000  # the wasm is in it
    for row in report["cells"]:
        assert row["page_s"] > 0 and row["python_s"] > 0
        assert row["ratio"] == pytest.approx(row["page_s"] / row["python_s"], rel=0.02)
