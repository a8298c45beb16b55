"""How tests compare numbers: tolerances that scale with the dtype and the magnitude of what is compared,
and accuracies compared statistically, paired on the same episodes.

Two implementations of the same float32 maths (PyTorch and onnxruntime, or two torch releases) differ in
summation order, fused kernels and vectorisation, so their results differ by a few units in the last place
(ulps) of the LARGEST values involved: a bias of -30 has an ulp of 1.9e-6, and three ulps already fail a bare
`< 1e-5`. `assert_float_close` therefore allows `ulps` float ulps relative to each value (rtol) plus the same
number of ulps of the largest |value| of the reference (atol), so elements near zero in an array of large
values are judged on the scale at which their rounding errors arose.

Accuracies are means over episodes; the noise of the episodes dwarfs any real difference between two
implementations. `paired_difference` compares two methods on the SAME episodes, episode by episode, and
the asserts below state the claim as a confidence bound on that paired difference: equivalence within a
margin (two-sided) or "no worse than" (one-sided).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Z95 = 1.96  # the 95% two-sided normal quantile, as every accuracy mtl reports


def float_tolerance(dtype: np.dtype | type = np.float32, ulps: float = 64, scale: float = 1.0) -> dict[str, float]:
    """rtol / atol of `ulps` units in the last place of `dtype`; atol is taken at magnitude `scale`."""
    eps = float(np.finfo(dtype).eps)
    return {"rtol": ulps * eps, "atol": ulps * eps * max(1.0, float(scale))}


def assert_float_close(actual: object, desired: object, *, ulps: float = 64, dtype: np.dtype | type = np.float32,
                       err_msg: str = "") -> None:
    """`np.testing.assert_allclose` with tolerances from `dtype`, the precision the values were COMPUTED in
    (float32, like every mtl model and graph, unless a test computes in float64; a float64 reference or a JSON
    float of a float32 result does not make the comparison float64), at the largest magnitude of `desired`.
    `ulps` is how many rounding steps the two computations may differ by."""
    actual = np.asarray(_numpy(actual), dtype=np.float64)
    desired = np.asarray(_numpy(desired), dtype=np.float64)
    scale = float(np.abs(desired).max()) if desired.size else 1.0
    np.testing.assert_allclose(actual, desired, **float_tolerance(dtype, ulps, scale), err_msg=err_msg)


def _numpy(value: object) -> object:
    """torch tensors (detached, on the CPU) as numpy arrays; anything else unchanged. torch is never imported
    here, so the device-only test runs can use this module."""
    detach = getattr(value, "detach", None)
    return detach().cpu().numpy() if callable(detach) else value


def paired_difference(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Mean and 95% CI half-width of the per-episode differences a − b (the same episodes, in order)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) < 2:
        raise ValueError(f"a paired comparison needs two equal-length series of ≥ 2 episodes, got {a.shape}, {b.shape}")
    d = a - b
    return float(d.mean()), float(Z95 * d.std(ddof=1) / math.sqrt(len(d)))


def assert_equivalent(a: Sequence[float], b: Sequence[float], margin: float, what: str = "accuracy") -> None:
    """Two methods score the same on the same episodes: the 95% CI of their paired difference lies inside
    ±`margin` (an equivalence test, so a real difference fails and episode noise does not)."""
    mean, ci = paired_difference(a, b)
    assert abs(mean) + ci <= margin, (f"{what} differs by {mean:+.4f} ± {ci:.4f} (paired, {len(a)} episodes), "
                                      f"beyond ±{margin}: means {np.mean(a):.4f} vs {np.mean(b):.4f}")


def assert_no_worse(new: Sequence[float], reference: Sequence[float], margin: float, what: str = "accuracy") -> None:
    """`new` is no worse than `reference` by more than `margin`: the lower 95% bound of the paired difference
    new − reference is above −`margin` (one-sided: being better is never a failure)."""
    mean, ci = paired_difference(new, reference)
    assert mean - ci >= -margin, (f"{what} is worse by {-mean:.4f} ± {ci:.4f} (paired, {len(new)} episodes), "
                                  f"beyond the {margin} allowed: means {np.mean(new):.4f} vs {np.mean(reference):.4f}")


def assert_better(new: Sequence[float], reference: Sequence[float], what: str = "accuracy") -> None:
    """`new` beats `reference` on the same episodes by more than the 95% CI of the paired difference."""
    mean, ci = paired_difference(new, reference)
    assert mean - ci > 0, (f"{what}: {np.mean(new):.4f} vs {np.mean(reference):.4f}, paired difference "
                           f"{mean:+.4f} ± {ci:.4f} over {len(new)} episodes is not above zero")
