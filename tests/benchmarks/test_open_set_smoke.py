"""benchmarks/open_set.py runs on a tiny bundle and prints its JSON: AUROC of the score and of the top probability,
the auto threshold's rejections, for unknowns of other superclasses and of the same one."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_open_set_benchmark_prints_both_kinds_of_unknowns_with_cis(tmp_path):
    from mtl.exporters.bundle_export import export_bundle
    from mtl.pipeline.train.pretrain import PretrainConfig, pretrain

    run = tmp_path / "run"
    pretrain(PretrainConfig(out=str(run), data="synthetic:60", backbone="conv4", epochs=1, batch_size=64,
                            val_episodes=4, device="cpu", calibrate_episodes=0, split_by="superclass-test"))
    bundle = export_bundle(run, tmp_path / "b.mtlb", single_file=True).path
    out = subprocess.run([sys.executable, "benchmarks/open_set.py", bundle, "--episodes", "6", "--settings", "3x1",
                          "--json"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    cell = json.loads(out.stdout)["settings"]["3-way 1-shot"]
    for kind in ("other", "same"):
        for key in ("auroc", "auroc_probability", "unknown_rejected"):
            assert 0 <= cell[f"{kind}.{key}"]["mean"] <= 1 and cell[f"{kind}.{key}"]["ci95"] >= 0
    assert 0 <= cell["known_rejected"]["mean"] <= 1
