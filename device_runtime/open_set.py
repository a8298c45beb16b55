"""Open-set recognition on the device: is an image one of the adapted classes at all?

The score of an image is its cosine similarity to the nearest class prototype (the mean of a class's support
features), in the extractor's feature space: the head's probabilities cannot say "none of these" (a softmax over
N classes sums to 1 whatever the image), while an image of an unknown class lies far from every prototype.

`auto` uses the bundle's thresholds when it has them (manifest `open_set`: for K = 1 and 5 shots, the similarity
below which 5 % of the producer's VALIDATION knowns fall, set by `mtl calibrate`; interpolated in log K, clamped
to the calibrated range). Otherwise it sets the threshold from the support set alone, by leave-one-class-out: each
support image stands for an image of a class the adapter does not know when it is scored against the prototypes
of the OTHER classes only, and the threshold is the highest of those scores. Neither looks at test data.
`benchmarks/open_set.py` measures it (AUROC of the score, unknowns rejected and knowns lost at `auto`).
"""

from __future__ import annotations

import numpy as np

from mtl.device_runtime.errors import ConfigError

UNKNOWN = "unknown"
REJECT_CHOICES = ("off", "auto")


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def prototypes(features: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    """Unit-length class means (n, D) of support features (M, D) with labels (M,) in 0..n-1."""
    features = _unit(features)
    return _unit(np.stack([features[labels == c].mean(axis=0) for c in range(n)]))


def scores(features: np.ndarray, protos: np.ndarray) -> np.ndarray:
    """Each image's cosine similarity to its nearest prototype (B,): high = one of the known classes."""
    return (_unit(features) @ protos.T).max(axis=1)


def auto_threshold(features: np.ndarray, labels: np.ndarray, n: int) -> float:
    """The highest similarity of a support image to the prototype of another class (leave-one-class-out)."""
    protos = prototypes(features, labels, n)
    sims = _unit(features) @ protos.T  # (M, n)
    sims[np.arange(len(labels)), labels] = -np.inf  # its own class is the one left out
    return float(sims.max())


def calibrated_threshold(thresholds: dict[str, float], shots: float) -> float:
    """The bundle's threshold at `shots` examples per class: linear in log K between the calibrated K."""
    points = sorted((int(k), float(v)) for k, v in thresholds.items())
    ks, values = np.log([k for k, _ in points]), [v for _, v in points]
    return float(np.interp(np.log(max(shots, 1e-9)), ks, values))


def threshold(reject: str | float | None, features: np.ndarray, labels: np.ndarray, n: int,
              calibrated: dict[str, float] | None = None) -> float | None:
    """The threshold `reject` asks for: None (off), the `auto` rule (the `calibrated` thresholds of the bundle
    at this support set's K, else leave-one-class-out), or an explicit similarity in [-1, 1]."""
    if reject is None or reject == "off":
        return None
    if reject == "auto":
        if calibrated:
            return calibrated_threshold(calibrated, len(labels) / max(n, 1))
        return auto_threshold(features, labels, n)
    if isinstance(reject, bool) or not isinstance(reject, int | float) or not -1.0 <= float(reject) <= 1.0:
        raise ConfigError(f"reject must be 'off', 'auto' or a similarity from -1 to 1, got {reject!r:.40}")
    return float(reject)


def parse_reject(text: str) -> str | float:
    """The CLI's --reject value: off, auto, or a number."""
    if text in REJECT_CHOICES:
        return text
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"--reject must be off, auto or a similarity from -1 to 1, got {text!r:.40}") from None
    threshold(value, np.zeros((0, 1)), np.zeros(0, np.int64), 0)  # range check
    return value
