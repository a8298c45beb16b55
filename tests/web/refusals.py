"""THE refusal corpus both device runtimes are held to: every bad bundle of the Python runtime's own tests
(tests/bad_inputs: broken files, hostile manifest values, unsafe zips, graphs with external data or foreign
operators), written as `.mtlb` files, each with the words its refusal must contain. One list for both runtimes:
a fault added to the Python tests is checked against the web runtime too."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from mtl.device_runtime.archive import zip_bytes
from tests.bad_inputs.test_bundles import BUNDLE_FAULTS, ZIP_FAULTS, _zip
from tests.bad_inputs.test_hostile_bundles import (
    HOSTILE_VALUES,
    _raw_manifest,
    contrib_op_graph,
    external_constant_in_a_subgraph,
    external_initializer,
)
from tests.device_runtime.bundle_factory import replace_file, write_bundle

NAMES = ["manifest.json", "embed.onnx", "adapt_step.onnx", "predict.onnx", "init.npz"]


@dataclass(frozen=True)
class Case:
    name: str
    path: Path
    culprit: str | None  # None: the corpus's good bundle, which both must accept


def _zipped(directory: Path, path: Path) -> Path:
    path.write_bytes(zip_bytes({p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}))
    return path


def refusal_corpus(root: Path) -> list[Case]:
    root.mkdir(parents=True)
    good = write_bundle(root / "good")
    cases = [Case("good", _zipped(good, root / "good.mtlb"), None)]

    def damaged(name: str, damage, culprit: str) -> None:
        directory = root / name
        shutil.copytree(good, directory)
        damage(directory)
        cases.append(Case(name, _zipped(directory, root / f"{name}.mtlb"), culprit))
        shutil.rmtree(directory)

    for name, (damage, culprit) in BUNDLE_FAULTS.items():
        damaged(name, damage, culprit)
    for name, (key_path, raw, culprit) in HOSTILE_VALUES.items():
        damaged(f"hostile-{name}", lambda b, k=key_path, r=raw: _raw_manifest(b, k, r), culprit)
    for name, graph in (("external-initializer", external_initializer),
                        ("external-in-a-subgraph", external_constant_in_a_subgraph)):
        damaged(name, lambda b, g=graph: replace_file(b, "embed.onnx", g("secret.bin")), "outside the file")
    damaged("contrib-op", lambda b: replace_file(b, "embed.onnx", contrib_op_graph()),
            "non-standard domain(s) com.microsoft")
    members = [(name, (good / name).read_bytes()) for name in NAMES]
    for name, (change, culprit) in ZIP_FAULTS.items():
        entries = change(list(members))
        path = root / f"zip-{name}.mtlb"
        path.write_bytes(b"PK\x03\x04 not really" if entries is None else _zip(entries))
        cases.append(Case(f"zip-{name}", path, culprit))
    return cases
