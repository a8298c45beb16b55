"""The calibrated temperature of a bundle's probabilities (the manifest's `calibration`, docs/bundle.md).

Post-hoc temperature scaling (Guo et al., "On Calibration of Modern Neural Networks", ICML 2017) fitted on the
producer's validation classes: probabilities are softmax(T · logits). How sharp a few-shot head's logits are
depends on the task — a head adapted on five examples a class is surer than one adapted on one — so T is a
function of the task's classes N and examples per class K:

    log T = log_temperature + per_log_ways · log N + per_log_shots · log K,

with N and K clamped to the range the calibration saw (`ways`, `shots`), so a task unlike any calibrated one
gets the nearest calibrated temperature rather than an extrapolated one. `predict.onnx` returns log softmax(logits),
which differs from the logits z by a constant per row, so the runtime gets softmax(T · z) exactly (`softmax_at`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

KEYS = ("log_temperature", "per_log_ways", "per_log_shots")


@dataclass(frozen=True)
class Temperature:
    log_temperature: float = 0.0
    per_log_ways: float = 0.0
    per_log_shots: float = 0.0
    ways: tuple[float, float] = (1.0, 1.0)  # the calibrated range of N (clamped to)
    shots: tuple[float, float] = (1.0, 1.0)  # … and of K

    @property
    def identity(self) -> bool:
        return self.log_temperature == self.per_log_ways == self.per_log_shots == 0.0

    def at(self, ways: float, shots: float) -> float:
        """T for a task of `ways` classes with `shots` examples per class on average."""
        n = min(max(float(ways), self.ways[0]), self.ways[1])
        k = min(max(float(shots), self.shots[0]), self.shots[1])
        return math.exp(self.log_temperature + self.per_log_ways * math.log(n) + self.per_log_shots * math.log(k))

    def to_dict(self) -> dict[str, Any]:
        return {"log_temperature": self.log_temperature, "per_log_ways": self.per_log_ways,
                "per_log_shots": self.per_log_shots, "ways": list(self.ways), "shots": list(self.shots)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Temperature:
        """From `to_dict`'s form; the caller has checked types and ranges (the manifest's parser does)."""
        return cls(*(float(data[k]) for k in KEYS), tuple(float(v) for v in data["ways"]),  # type: ignore[arg-type]
                   tuple(float(v) for v in data["shots"]))


def softmax_at(log_probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(T · z) (B, N) from log p = log softmax(z), in float64: log p differs from z by a constant per row,
    so this is exact, and a probability far below float32's smallest (a confident one-shot head) still counts."""
    scaled = log_probs.astype(np.float64) * temperature
    scaled -= scaled.max(axis=1, keepdims=True)
    out = np.exp(scaled)
    return (out / out.sum(axis=1, keepdims=True)).astype(np.float32)
