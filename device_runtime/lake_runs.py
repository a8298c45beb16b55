"""The one-shot classification protocol of Lake et al. (Science 2015) on a bundle, through the device runtime.

The official runs (`omniglot/python/one-shot-classification/all_runs.zip`) are 20 folders `run01` … `run20`,
each a 20-way within-alphabet one-shot task: `training/class01.png` … `class20.png` (one drawing per
character), `test/item01.png` … `item20.png` (another drawing of each, by another drawer) and
`class_labels.txt`, one line per test item: `<test image> <its training image>`, paths relative to the runs'
folder (`run01/test/item01.png run01/training/class12.png`) or to the run's own. A run's score is the share
of test items whose predicted class is their training image; the result is the mean over runs.

Everything here is numpy + onnxruntime + Pillow: a device can reproduce the protocol. The runs may be a folder
(the runs themselves, or a folder holding `all_runs/`) or a zip of either; every file is read with a size cap.

The official runs use the Omniglot evaluation alphabets, which `../shared` does not hold, so `write_runs` makes
runs the same way from any drawings of a held-out alphabet: each run takes `ways` characters and two different
drawings of each, one as `training/classNN.png`, the other as `test/itemNN.png` (items shuffled).
"""

from __future__ import annotations

import io
import math
import random
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from mtl.device_runtime.atomic import replace_dir
from mtl.device_runtime.bundle import Bundle
from mtl.device_runtime.errors import DataError
from mtl.device_runtime.files import read_regular
from mtl.device_runtime.preprocess import MAX_IMAGE_BYTES

LABELS = "class_labels.txt"
RUN = re.compile(r"run\d+")
MAX_RUNS_BYTES = 256 << 20  # the official zip is 1.7 MB
MAX_MEMBERS = 20_000


@dataclass(frozen=True)
class Run:
    name: str
    training: dict[str, bytes]  # class (its training file) → the one drawing
    test: list[tuple[str, bytes, str]]  # (test file, drawing, its class)


@dataclass(frozen=True)
class RunsResult:
    per_run: tuple[float, ...]  # accuracy of each run, in run order
    names: tuple[str, ...]
    ways: int

    @property
    def mean(self) -> float:
        return sum(self.per_run) / len(self.per_run)

    @property
    def ci95(self) -> float:
        n = len(self.per_run)
        if n < 2:
            return float("nan")
        var = sum((a - self.mean) ** 2 for a in self.per_run) / (n - 1)
        return 1.96 * math.sqrt(var / n)


def read_runs(path: str | Path) -> list[Run]:
    """Every `runNN` of `path` (a folder or a zip) with its images, checked against its class_labels.txt."""
    files = _files(Path(path))
    runs = sorted(set(_run_names(files)))
    if not runs:
        raise DataError(f"{path} holds no runNN/{LABELS} (the layout of Lake et al.'s one-shot runs)")
    return [_run(name, files, path) for name in runs]


def evaluate_runs(bundle: Bundle, runs: list[Run], steps: int | None = None, lr: float | None = None) -> RunsResult:
    """Adapt to each run's training drawings (one class each) on the device, classify its test items."""
    from mtl.device_runtime.adapter import Adapter

    scores = []
    for run in runs:
        adapter = Adapter(bundle)
        for name, image in run.training.items():
            adapter.add_examples(name, [image])
        adapter.adapt(steps, lr)
        predicted, _ = adapter.predict([image for _, image, _ in run.test])
        scores.append(sum(p == answer for p, (_, _, answer) in zip(predicted, run.test, strict=True)) / len(run.test))
    return RunsResult(tuple(scores), tuple(r.name for r in runs), len(runs[0].training))


def _parts(name: str) -> tuple[str, ...]:
    return PurePosixPath(name).parts


def _run_names(files: dict[str, bytes]) -> list[str]:
    return [parts[-2] for parts in map(_parts, files) if len(parts) >= 2 and parts[-1] == LABELS
            and RUN.fullmatch(parts[-2])]


def _run(name: str, files: dict[str, bytes], path: Path) -> Run:
    """One run: its labels file resolved against the files found under the run's folder."""
    label_key = next(k for k in files if _parts(k)[-2:] == (name, LABELS))
    prefix = str(PurePosixPath(label_key).parent)  # where runNN sits inside the folder or zip
    base = str(PurePosixPath(prefix).parent)
    lines = [line.split() for line in files[label_key].decode("utf-8", "replace").splitlines() if line.strip()]
    if not lines or any(len(line) != 2 for line in lines):
        raise DataError(f"{path}: {label_key} must hold one '<test image> <training image>' pair per line")

    def find(rel: str) -> tuple[str, bytes]:
        for key in (str(PurePosixPath(base) / rel) if base != "." else rel, str(PurePosixPath(prefix) / rel)):
            if key in files:
                return PurePosixPath(rel).name, files[key]
        raise DataError(f"{path}: {label_key} names {rel!r}, which is not in the runs")

    training, test = {}, []
    for test_rel, train_rel in lines:
        train_name, train_image = find(train_rel)
        training[train_name] = train_image
        test_name, test_image = find(test_rel)
        test.append((test_name, test_image, train_name))
    train_dir = [k for k in files if k.startswith(prefix + "/training/")]
    for key in train_dir:  # every training drawing is a class, also one no test item belongs to
        training.setdefault(PurePosixPath(key).name, files[key])
    if len(training) < 2:
        raise DataError(f"{path}: {name} has fewer than 2 training classes")
    return Run(name, dict(sorted(training.items())), test)


def _files(path: Path) -> dict[str, bytes]:
    """name → bytes of every file under the runs (a folder, or a zip read in memory with caps)."""
    if path.is_dir():
        out = {}
        for file in sorted(path.rglob("*")):
            rel = file.relative_to(path).as_posix()
            if len(out) >= MAX_MEMBERS:
                raise DataError(f"{path} holds more than {MAX_MEMBERS} files; give the runs' folder")
            if file.is_file() and not file.is_symlink() and (file.suffix == ".png" or file.name == LABELS):
                out[rel] = read_regular(file, MAX_IMAGE_BYTES, "runs file")
        return out
    data = read_regular(path, MAX_RUNS_BYTES, "runs zip")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = [i for i in archive.infolist() if not i.is_dir()]
            if len(infos) > MAX_MEMBERS or sum(i.file_size for i in infos) > 4 * MAX_RUNS_BYTES:
                raise DataError(f"{path}: the zip lists more than its runs can hold; refusing a possible zip bomb")
            return {i.filename: archive.read(i) for i in infos
                    if i.filename.endswith((".png", LABELS)) and i.file_size <= MAX_IMAGE_BYTES}
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"{path}: not a folder of runs nor a readable zip of them: {exc}") from None


def write_runs(drawings: dict[str, list[bytes]], out: str | Path, *, runs: int = 20, ways: int = 20,
               seed: int = 0) -> Path:
    """`drawings`: character → its encoded drawings (≥ 2 each, all from one alphabet for the within-alphabet
    protocol). Writes OUT/runNN/… atomically (an existing runs folder is replaced whole)."""
    usable = {name: images for name, images in drawings.items() if len(images) >= 2}
    if len(usable) < ways:
        raise DataError(f"{ways}-way runs need {ways} characters with 2 drawings each; got {len(usable)}")
    rng = random.Random(seed)
    files: dict[str, bytes] = {}
    for r in range(1, runs + 1):
        run = f"run{r:02d}"
        chosen = rng.sample(sorted(usable), ways)
        items = list(range(1, ways + 1))
        rng.shuffle(items)
        lines = []
        for c, (name, item) in enumerate(zip(chosen, items, strict=True), start=1):
            train_image, test_image = rng.sample(usable[name], 2)
            files[f"{run}/training/class{c:02d}.png"] = train_image
            files[f"{run}/test/item{item:02d}.png"] = test_image
            lines.append((item, f"{run}/test/item{item:02d}.png {run}/training/class{c:02d}.png"))
        files[f"{run}/{LABELS}"] = ("\n".join(line for _, line in sorted(lines)) + "\n").encode()

    def fill(tmp: Path) -> None:
        for rel, data in files.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_bytes(data)

    replace_dir(Path(out), fill, marker="run01/" + LABELS)
    return Path(out)
