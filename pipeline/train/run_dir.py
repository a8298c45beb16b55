"""Run directories: the resolved config, the class splits, metrics.jsonl and checkpoints.

RUN_DIR/config.json      resolved configuration of the command that made the run
RUN_DIR/splits.json      class names of the train / val / test splits
RUN_DIR/metrics.jsonl    one JSON record per epoch (or evaluation interval)
RUN_DIR/last.safetensors resumable checkpoint (model + optimizer + RNG), replaced atomically
RUN_DIR/best.safetensors best-on-validation weights
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mtl.pipeline.atomic import append_jsonl, atomic_write_json, atomic_write_text, check_output, read_jsonl
from mtl.pipeline.errors import ConfigError
from mtl.pipeline.train.checkpoint import load_checkpoint

# Options that may change between a run and its resume without changing the computation's result (the
# closing calibration writes only `meta.device`, and `mtl calibrate` can redo it at any time).
RESUME_FREE_KEYS = frozenset({"device", "resume", "out", "config", "download", "nproc", "calibrate_episodes"})


def changed_options(saved: dict[str, Any], config: dict[str, Any], defaults: dict[str, Any] | None = None) -> str:
    """The options (outside `RESUME_FREE_KEYS`) whose values differ, as "key: old → new, ..."; "" if none.

    An option `saved` lacks was added since that run was made: it ran as the option's default (`defaults`), so
    a run made before `--augment-elastic` existed resumes with it at 0."""
    old = {**{k: v for k, v in (defaults or {}).items() if k in config}, **saved}
    changed = sorted(k for k in set(old) | set(config)
                     if k not in RESUME_FREE_KEYS and old.get(k) != config.get(k))
    return ", ".join(f"{k}: {old.get(k)!r} → {config.get(k)!r}" for k in changed[:4])


class RunDir:
    """A run directory checked for a new run or for `--resume` (which must use the same options).

    Opening only checks; nothing is written until `create`, which a command calls once its data and
    model are ready, so a mistake found while loading them leaves no half-made run behind.
    """

    def __init__(self, path: str | Path, config: dict[str, Any], *, resume: bool,
                 defaults: dict[str, Any] | None = None) -> None:
        """`defaults`: the options' defaults (`option_defaults`), which an older run's config lacks as options
        added since."""
        self.path, self.config, self.resume, self.defaults = Path(path), config, resume, defaults
        check_output(self.path, "--out", directory=True)  # under a file, or not writable: before any work
        if resume:
            self._check_resume(config)
        elif self.last.exists():
            raise ConfigError(f"{self.path} already holds a run; pass --resume to continue it or choose "
                              "another --out")

    def create(self) -> None:
        """Make the directory and write the resolved configuration into it. Temporaries that a killed
        writer left (`.NAME.*.tmp`, never read) are removed: one run writes a run directory at a time.

        A new run may take over a directory whose run stopped before its first checkpoint (config.json, maybe
        a metrics row, no last.safetensors): there is nothing in it to resume, and refusing it would block the
        corrected rerun of a run that failed."""
        with_checkpoint = self.last.exists()
        self.path.mkdir(parents=True, exist_ok=True)
        for stale in self.path.glob(".*.tmp"):
            stale.unlink(missing_ok=True)
        if not self.resume and not with_checkpoint:
            self.metrics_path.unlink(missing_ok=True)
            self.best.unlink(missing_ok=True)
        atomic_write_json(self.config_path, self.config)

    @classmethod
    def checked(cls, path: str | Path, config: dict[str, Any], *, resume: bool,
                defaults: dict[str, Any] | None = None) -> None:
        """Check a run directory for a new run or a resume (opening one writes nothing until `create`)."""
        cls(path, config, resume=resume, defaults=defaults)

    config_path = property(lambda self: self.path / "config.json")
    last = property(lambda self: self.path / "last.safetensors")
    best = property(lambda self: self.path / "best.safetensors")
    metrics_path = property(lambda self: self.path / "metrics.jsonl")

    def _check_resume(self, config: dict[str, Any]) -> None:
        if not self.last.exists():
            raise ConfigError(f"--resume: {self.path} holds no last.safetensors to resume from")
        try:
            saved = json.loads(self.config_path.read_text()) if self.config_path.exists() else {}
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"--resume: {self.config_path} is unreadable: {exc}") from None
        details = changed_options(saved if isinstance(saved, dict) else {}, config, self.defaults)
        if details:
            raise ConfigError(f"--resume: {self.path} was made with other options ({details})")
        self.check_checkpoint(load_checkpoint(self.last).meta)

    def check_checkpoint(self, meta: dict[str, Any]) -> None:
        """The resumed checkpoint must come from the same options too (not a file copied from another run)."""
        details = changed_options(meta.get("config") or {}, self.config, self.defaults)
        if details:
            raise ConfigError(f"--resume: {self.last} was made with other options ({details})")

    def write_splits(self, splits: dict[str, list[str]]) -> None:
        atomic_write_json(self.path / "splits.json", splits)

    def log(self, record: dict[str, Any]) -> None:
        append_jsonl(self.metrics_path, record)

    def truncate_metrics(self, last: int, key: str) -> None:
        """Drop records past the resumed checkpoint, at step `last` of `key` ("epoch" for pretraining,
        "iteration" for meta-training), written after it by an interrupted run."""
        kept = [r for r in read_jsonl(self.metrics_path) if r.get(key, 0) <= last]
        atomic_write_text(self.metrics_path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))
