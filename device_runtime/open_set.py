"""Open-set recognition on the device: is an image one of the adapted classes at all?

The score of an image starts from its cosine similarity to the nearest class prototype (the unit mean of a class's
unit support features), in the extractor's feature space: the head's probabilities cannot say "none of these" (a
softmax over N classes sums to 1 whatever the image), while an image of an unknown class lies far from every
prototype. A calibrated bundle also ships a BACKGROUND (`init.npz` `open_set_background`: the unit class means of
the producer's training classes, `mtl calibrate`), and the score is then relative to it: the similarity to the
nearest prototype minus the mean similarity to the `BACKGROUND_TOP` nearest background classes, not counting rows
that are one of the adapted classes (`not_adapted`). A drawing that is merely "like the training data" then scores
near 0 rather than high, and how tight a new alphabet's classes are cancels out of the threshold, so a threshold
set on the producer's validation classes keeps its known-loss on classes nobody trained on (README;
`benchmarks/open_set.py`).

`auto` uses the bundle's thresholds when it has them (manifest `open_set`: for K = 1 and 5 shots, the score below
which at most 5 % of the producer's VALIDATION knowns fall, set by `mtl calibrate`; interpolated in log K, clamped
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
BACKGROUND_TOP = 3  # the score subtracts the mean similarity to this many nearest background classes
SAME_CLASS = 0.95  # a background row this similar to a prototype is that class itself, not background


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def prototypes(features: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    """Unit-length class means (n, D) of support features (M, D) with labels (M,) in 0..n-1."""
    features = _unit(features)
    return _unit(np.stack([features[labels == c].mean(axis=0) for c in range(n)]))


def _relative(sims: np.ndarray, features: np.ndarray, background: np.ndarray | None) -> np.ndarray:
    """Similarities (B, ...) minus each image's mean similarity to its `BACKGROUND_TOP` nearest background rows."""
    if background is None or not len(background):
        return sims
    near = np.sort(_unit(features) @ _unit(background).T, axis=1)[:, -min(BACKGROUND_TOP, len(background)):]
    return sims - near.mean(axis=1).reshape((-1,) + (1,) * (sims.ndim - 1))


def not_adapted(protos: np.ndarray, background: np.ndarray | None) -> np.ndarray | None:
    """The background rows that are none of the adapted classes: a row more similar than `SAME_CLASS` to a
    prototype is that class's training mean (a device adapting to a class the producer trained on), and an image
    of it would be scored against its own class."""
    if background is None or not len(background):
        return background
    return background[(protos @ _unit(background).T).max(axis=0) <= SAME_CLASS]


def scores(features: np.ndarray, protos: np.ndarray, background: np.ndarray | None = None) -> np.ndarray:
    """Each image's score (B,): its cosine similarity to its nearest prototype, minus its mean similarity to the
    nearest background classes when there is a `background` (C, D), less the adapted classes themselves
    (`not_adapted`); high = one of the known classes."""
    return _relative((_unit(features) @ protos.T).max(axis=1), features, not_adapted(protos, background))


def auto_threshold(features: np.ndarray, labels: np.ndarray, n: int, background: np.ndarray | None = None) -> float:
    """The highest score of a support image against the prototype of another class (leave-one-class-out)."""
    protos = prototypes(features, labels, n)
    sims = _unit(features) @ protos.T  # (M, n)
    sims[np.arange(len(labels)), labels] = -np.inf  # its own class is the one left out
    return float(_relative(sims, features, not_adapted(protos, background)).max())


def calibrated_threshold(thresholds: dict[str, float], shots: float) -> float:
    """The bundle's threshold at `shots` examples per class: linear in log K between the calibrated K."""
    points = sorted((int(k), float(v)) for k, v in thresholds.items())
    ks, values = np.log([k for k, _ in points]), [v for _, v in points]
    return float(np.interp(np.log(max(shots, 1e-9)), ks, values))


def threshold(reject: str | float | None, features: np.ndarray, labels: np.ndarray, n: int,
              calibrated: dict[str, float] | None = None, background: np.ndarray | None = None,
              shots: float | None = None) -> float | None:
    """The threshold `reject` asks for: None (off), the `auto` rule (the `calibrated` thresholds of the bundle
    at this support set's K — `shots`, the real images per class, when augmented variants are among the
    `features`; else leave-one-class-out), or an explicit score in [-2, 2]."""
    if reject is None or reject == "off":
        return None
    if reject == "auto":
        if calibrated:
            return calibrated_threshold(calibrated, len(labels) / max(n, 1) if shots is None else shots)
        return auto_threshold(features, labels, n, background)
    if isinstance(reject, bool) or not isinstance(reject, int | float) or not -2.0 <= float(reject) <= 2.0:
        raise ConfigError(f"reject must be 'off', 'auto' or a score from -2 to 2, got {reject!r:.40}")
    return float(reject)


def default_reject(section: dict | None) -> str:
    """`mtl predict`'s --reject when none is given: `auto` for a bundle whose open set was calibrated against a
    background (measured to help: README), else `off`."""
    return "auto" if section and "background" in section else "off"


def parse_reject(text: str) -> str | float:
    """The CLI's --reject value: off, auto, or a number."""
    if text in REJECT_CHOICES:
        return text
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"--reject must be off, auto or a score from -2 to 2, got {text!r:.40}") from None
    threshold(value, np.zeros((0, 1)), np.zeros(0, np.int64), 0)  # range check
    return value
