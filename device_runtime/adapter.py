"""`Adapter`: learn new classes on a device from a few labelled images with the bundle's exported step.

Support images are embedded once (`add_examples`); `adapt` initialises the head for however many
classes there are (`init_head.onnx`, the training head's own rule) and runs `adapt_step.onnx` k times on the
features only — the first-order inner loop the model was meta-trained with.

A bundle whose extractor normalises with batch statistics (MAML-style transductive BatchNorm,
`Bundle.batch_statistics`) is used as it was trained: `adapt` embeds the whole support set as one
batch (so adding a class changes every feature), and `predict` embeds the images of one call as one
batch, like an episode's query set — at least 2 of them.

A bundle with a context (CAML, `Bundle.context`) adapts inside its extractor first: `adapt` runs
`context_step.onnx` on the support set's hidden activations (from φ = 0, `context_steps` times), then embeds the
support set and, at `predict`, the queries with the adapted φ, and the head adapts on those features as above.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from mtl.device_runtime.bundle import Bundle
from mtl.device_runtime.errors import BundleError, ConfigError, DataError
from mtl.device_runtime.schema import BACKGROUND, LIMITS

MAX_STEPS = int(LIMITS["adapt.steps"][1])

Images = np.ndarray | list | tuple


@dataclass(frozen=True)
class AdaptResult:
    """What one `adapt` did: `losses[i]` is the support loss before step i, `final_loss` after the last."""

    classes: tuple[str, ...]
    support: int
    steps: int
    lr: float
    losses: tuple[float, ...]
    final_loss: float
    context_steps: int = 0  # steps of the context (a bundle with a context section), before the head's
    context_losses: tuple[float, ...] = ()  # the support loss before each context step
    variants: int = 0  # of the `support` examples, how many are augmented variants (`add_examples(augment=)`)

    @property
    def shots(self) -> float:
        """Real support images per class: what the calibrated temperature is read at (variants are not shots)."""
        return (self.support - self.variants) / len(self.classes)

    @property
    def loss_before(self) -> float:
        return self.losses[0] if self.losses else self.final_loss

    def to_dict(self) -> dict:
        return {**asdict(self), "classes": list(self.classes), "losses": list(self.losses),
                "context_losses": list(self.context_losses)}


def adapt_context(bundle: Bundle, images: np.ndarray, labels: np.ndarray, n: int, steps: int,
                  lr: float | None = None) -> tuple[np.ndarray, tuple[float, ...], np.ndarray]:
    """THE device loop of a context (CAML): the support images' hidden activations (embed_prefix.onnx), φ from 0
    through `steps` runs of context_step.onnx (step size `lr`, default the manifest's), and the support features
    at the adapted φ (embed_suffix.onnx) → (φ, the loss before each step, features (M, D)). A non-finite step
    raises `BundleError`: nothing is adapted."""
    spec = bundle.context
    if spec is None:
        raise ConfigError(f"{bundle.label} has no context to adapt (its extractor is frozen)")
    lr = spec.lr if lr is None else lr
    hidden = bundle.embed_prefix(images)
    context, losses = np.zeros(spec.dim, np.float32), []
    for k in range(steps):
        new, loss = bundle.context_step(hidden, labels, n, context, lr)
        if not (math.isfinite(loss) and np.isfinite(new).all()):
            raise BundleError(f"context adaptation diverged at step {k + 1} of {steps} (non-finite loss or "
                              f"context with lr {lr:g}); nothing was adapted — try a smaller context lr")
        losses.append(loss)
        context = new
    features = bundle.embed_suffix(hidden, context)
    _check_finite(features, "support set: embed_suffix.onnx", "the bundle's embedding graph is broken")
    return context, tuple(losses), features


def default_lr(bundle: Bundle) -> float:
    """The step size a bundle adapts with by default: its own, or 1 × its meta-learned step sizes."""
    return 1.0 if bundle.manifest.learned_lr else bundle.manifest.lr


def step_sizes(bundle: Bundle, lr: float) -> tuple[np.ndarray, np.ndarray]:
    """Step sizes fed to the graph: W (1, D) and b (1,); meta-learned ones (Meta-SGD) scaled by `lr`."""
    if bundle.manifest.learned_lr:
        init = bundle.init
        with np.errstate(over="ignore"):  # a huge factor gives inf step sizes, and `adapt` rolls back in one line
            return (init["lr_weight"] * np.float32(lr)).astype(np.float32), (init["lr_bias"] * np.float32(lr))
    return np.full((1, bundle.feature_dim), lr, np.float32), np.full((1,), lr, np.float32)


def head_trajectory(bundle: Bundle, features: np.ndarray, labels: np.ndarray, n: int, steps: int,
                    lr: float) -> Iterator[tuple[np.ndarray, np.ndarray, float | None]]:
    """THE device adaptation loop: the head initialised by init_head.onnx (the training rule), then `steps` runs of
    adapt_step.onnx on the support features (M, D) with labels (M,) → (W, b, loss of (W, b)) after 0, 1, …,
    `steps` steps. The loss of the last head is None: it would cost one more run, which only `Adapter.adapt`
    asks for. `Adapter.adapt`, `mtl evaluate BUNDLE` and the device benchmark all adapt through this loop."""
    weight, bias = bundle.init_head(features, labels, n)
    step = step_function(bundle, lr, n)
    for _ in range(steps):
        new_weight, new_bias, loss = step(weight, bias, features, labels)
        yield weight, bias, loss
        weight, bias = new_weight, new_bias
    yield weight, bias, None


StepFn = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, float]]


def step_function(bundle: Bundle, lr: float, n: int) -> StepFn:
    """(W, b, features, labels) → (W', b', loss at W, b): one run of adapt_step.onnx with the bundle's update rule
    — SGD with these step sizes, or a learned rule that carries its state from call to call (from zeros for an
    N-class head; the loss does not depend on the state)."""
    if bundle.manifest.rule == "sgd":
        lr_weight, lr_bias = step_sizes(bundle, lr)
        return lambda w, b, f, y: bundle.adapt_step(w, b, f, y, lr_weight, lr_bias)
    state = bundle.initial_state(n)

    def learned(w: np.ndarray, b: np.ndarray, f: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        nonlocal state
        new_weight, new_bias, loss, state = bundle.learned_step(w, b, f, y, state)
        return new_weight, new_bias, loss

    return learned


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _check_finite(array: np.ndarray, what: str, hint: str) -> None:
    """A NaN or inf in support data would poison every step of adaptation; name the first bad image."""
    bad = ~np.isfinite(array.reshape(len(array), -1)).all(axis=1)
    if bad.any():
        raise DataError(f"{what} gave non-finite values (NaN or inf) for image #{int(np.argmax(bad))}; {hint}")


class Adapter:
    """Few-shot learner on a device: `add_examples` per class, `adapt`, then `predict`; `save`/`load`."""

    def __init__(self, bundle: Bundle) -> None:
        self.bundle = bundle
        # class → its support examples in label order: features (K, D), or with batch statistics the
        # normalised images (K, C, H, W), embedded together at `adapt`
        self._support: dict[str, np.ndarray] = {}
        self._embedded: tuple[tuple[str, ...], np.ndarray] | None = None  # kept images: (classes, features)
        self._context: np.ndarray | None = None  # the adapted context (a bundle with a context section)
        self.added: dict[str, str] = {}  # class → when it was first added (UTC, ISO 8601)
        self.variants: dict[str, int] = {}  # class → how many of its examples are augmented variants
        self._changed = False  # examples added or removed since the last adapt
        self._head: tuple[np.ndarray, np.ndarray] | None = None
        self.result: AdaptResult | None = None

    @property
    def classes(self) -> list[str]:
        """Every class added so far, in label order (the adapted head may cover fewer: see `result`)."""
        return list(self._support)

    @property
    def head(self) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the adapted head: weight (N, D), bias (N,) over `result.classes`."""
        if self._head is None:
            raise ConfigError("nothing adapted yet: call add_examples() for each class, then adapt()")
        return self._head[0].copy(), self._head[1].copy()

    def add_examples(self, class_name: str, images: Images, *, extend: bool = False, augment: int = 0) -> None:
        """Embed a new class's labelled images once: image sources (paths, encoded bytes, Pillow images,
        uint8 arrays) or an already-normalised float batch (K, C, H, W). Call `adapt` afterwards. With `extend`,
        a class added before takes these as more examples (only they are embedded). With `augment`, each image
        also contributes that many seeded affine variants (`device_runtime.augment`)."""
        from mtl.device_runtime.augment import check_augment

        check_augment(augment)
        if not isinstance(class_name, str) or not class_name.strip():
            raise DataError(f"a class needs a non-empty name, got {class_name!r:.60}")
        if not class_name.isprintable():
            raise DataError(f"class name {class_name!r:.60} has a control character; names are printed one per line")
        if class_name in self._support and not extend:
            raise DataError(f"class {class_name!r} was already added ({len(self._support[class_name])} examples); "
                            "class names must be unique")
        batch = self._as_batch(images)
        if len(batch) == 0:
            raise DataError(f"class {class_name!r} has no images")
        _check_finite(batch, f"class {class_name!r}: preprocessing", "check the images and the bundle's input "
                      "mean/std")
        if augment:  # seeded by the class and how many examples it has: the same calls give the same variants
            seed = np.random.SeedSequence([zlib.crc32(class_name.encode("utf-8")),
                                           len(self._support.get(class_name, ()))])
            batch = np.concatenate([batch, self._variants(images, batch, augment, seed)])
        if self.bundle.keeps_images:  # embedded with the whole support set at adapt()
            examples = self.bundle.check_images(batch)
        else:
            examples = self.bundle.embed(batch)
            _check_finite(examples, f"class {class_name!r}: embed.onnx", "the bundle's embedding graph is broken")
        if class_name in self._support:
            examples = np.concatenate([self._support[class_name], examples])
        else:
            self.added.setdefault(class_name, _now())
        self._support[class_name] = examples
        if augment:  # counted once the examples are in: a failed call changes nothing
            self.variants[class_name] = self.variants.get(class_name, 0) + len(batch) * augment // (1 + augment)
        self._changed, self._embedded = True, None

    def _variants(self, images: Images, batch: np.ndarray, n: int, seed: np.random.SeedSequence) -> np.ndarray:
        """`n` variants per image: image sources warped at their own resolution, then preprocessed (Pillow), or a
        normalised batch warped as it is (numpy)."""
        from mtl.device_runtime.augment import affine_variants, pil_variants
        from mtl.device_runtime.preprocess import as_pil

        if isinstance(images, np.ndarray) and images.ndim == 4 and np.issubdtype(images.dtype, np.floating):
            return affine_variants(batch, n, seed)
        sources = [images] if isinstance(images, str | Path | bytes) else list(images)
        rng = np.random.default_rng(seed)
        warped = [v for i, s in enumerate(sources) for v in pil_variants(as_pil(s, f"#{i}"), n, rng)]
        return self.bundle.preprocess(warped)

    def remove_class(self, class_name: str) -> None:
        """Retire a class and its examples; call `adapt` afterwards (at least 2 classes must remain)."""
        if class_name not in self._support:
            raise DataError(f"no class {class_name!r} to remove; the classes are: {', '.join(self._support)}")
        del self._support[class_name]
        self.added.pop(class_name, None)
        self.variants.pop(class_name, None)
        self._changed, self._embedded = True, None

    @property
    def examples(self) -> dict[str, int]:
        """class → how many support examples it has, in label order."""
        return {name: len(examples) for name, examples in self._support.items()}

    def adapt(self, steps: int | None = None, lr: float | None = None, *, context_steps: int | None = None,
              context_lr: float | None = None) -> AdaptResult:
        """Initialise the head for every added class and run the exported step `steps` times (default:
        the manifest's). `lr` is the step size, or the factor on meta-learned step sizes (default 1).
        A step that gives a non-finite loss or head is rolled back to the last finite head, and said.
        A bundle with a context adapts it first, `context_steps` steps of `context_lr` (default: the manifest's)."""
        steps, lr = self._options(steps, lr)
        context_losses: tuple[float, ...] = ()
        if self.bundle.context is not None:
            context_steps = self._context_steps(context_steps, context_lr)
            images, labels = self._support_examples()
            context, context_losses, features = adapt_context(self.bundle, images, labels, len(self._support),
                                                              context_steps, context_lr)
            self._context, self._embedded = context, (tuple(self._support), features)
        elif context_steps or context_lr is not None:
            raise ConfigError(f"{self.bundle.label} has no context to adapt (its extractor is frozen): leave "
                              "context_steps and context_lr unset")
        features, labels = self._support_set()
        losses: list[float] = []
        good: tuple[np.ndarray, np.ndarray] | None = None  # the last head with a finite loss
        for weight, bias, loss in head_trajectory(self.bundle, features, labels, len(self._support), steps, lr):
            if not (np.isfinite(weight).all() and np.isfinite(bias).all()):
                self._roll_back(good, losses, steps, lr)
            if loss is None:  # the last head: its loss costs one more run
                loss = step_function(self.bundle, lr, len(weight))(weight, bias, features, labels)[2]
            if not math.isfinite(loss):
                self._roll_back(good, losses, steps, lr)
            losses.append(loss)
            good = (weight, bias)
        result = AdaptResult(tuple(self._support), len(labels), steps, lr, tuple(losses[:-1]), losses[-1],
                             len(context_losses), context_losses, sum(self.variants.values()))
        self._set_head(*good, result)
        return result

    def predict(self, images: Images, reject: str | float | None = None) -> tuple[list[str], np.ndarray]:
        """Images → (predicted class names, probabilities (B, N) over `result.classes`). With `reject` ("auto" or
        a score threshold; `device_runtime.open_set`) an image of none of the classes is labelled
        "unknown"."""
        labels, probs, _, _ = self.predict_scored(images, reject)
        return labels, probs

    def predict_scored(self, images: Images, reject: str | float | None = None
                       ) -> tuple[list[str], np.ndarray, np.ndarray, float | None]:
        """`predict` with the open-set score of every image (its similarity to the nearest class prototype, relative
        to the bundle's background when it has one) and
        the threshold it was compared with (None: reject off)."""
        from mtl.device_runtime import open_set

        weight, bias = self._adapted_head()
        batch = self._as_batch(images)
        if self.bundle.batch_statistics and len(batch) < 2:
            raise DataError(f"{self.bundle.label} normalises with batch statistics (transductive BatchNorm): "
                            f"predict needs at least 2 images in one call, got {len(batch)}")
        _check_finite(batch, "predict: preprocessing", "check the images and the bundle's input mean/std")
        features = self.bundle.embed(batch, context=self._context)
        _check_finite(features, "predict: embed.onnx", "the bundle's embedding graph is broken")
        classes = self.result.classes
        probs = self.bundle.predict_proba(weight, bias, features, shots=self.result.shots)
        _check_finite(probs, "predict.onnx", "the adapted head or the bundle is broken (adapt again)")
        support, labels = self._support_set()
        background = self.bundle.init.get(BACKGROUND)
        score = open_set.scores(features, open_set.prototypes(support, labels, len(classes)), background)
        calibrated = (self.bundle.manifest.open_set or {}).get("thresholds")
        limit = open_set.threshold(reject, support, labels, len(classes), calibrated, background,
                                   shots=self.result.shots)  # variants are not shots
        if limit is not None and open_set.UNKNOWN in classes:
            raise ConfigError(f"a class is named {open_set.UNKNOWN!r}, the label of a rejected image: rename it to "
                              "predict with reject")
        names = [classes[i] if limit is None or s >= limit else open_set.UNKNOWN
                 for i, s in zip(probs.argmax(axis=1), score, strict=True)]
        return names, probs, score, limit

    def save(self, path: str | Path) -> None:
        """Write the adapted state directory (docs/bundle.md), replacing an existing one atomically."""
        from mtl.device_runtime.adapted_state import save_adapted

        weight, bias = self._adapted_head()
        features, labels = self._support_set()
        images = np.concatenate(list(self._support.values())) if self.bundle.keeps_images else None
        save_adapted(Path(path), self.bundle, weight, bias, features, labels, self.result, images, self._context,
                     self.added, self.variants)

    @classmethod
    def load(cls, path: str | Path, *, intra_op_num_threads: int = 1) -> Adapter:
        """An adapted state directory → an `Adapter` ready to predict, or to take more classes and re-adapt."""
        from mtl.device_runtime.adapted_state import load_adapted

        bundle, state, result, added, variants = load_adapted(Path(path), intra_op_num_threads)
        adapter = cls(bundle)
        adapter.added, adapter.variants = added, variants
        examples = state["images"] if bundle.keeps_images else state["features"]
        for label, name in enumerate(result.classes):
            adapter._support[name] = examples[state["labels"] == label]
        adapter._context = state.get("context")
        if adapter._context is not None:  # the saved features are those of this context
            adapter._embedded = (tuple(result.classes), state["features"])
        adapter._set_head(state["weight"], state["bias"], result)
        return adapter

    def _as_batch(self, images: Images) -> np.ndarray:
        if isinstance(images, np.ndarray) and images.ndim == 4 and np.issubdtype(images.dtype, np.floating):
            return images
        return self.bundle.preprocess(images)

    def _options(self, steps: int | None, lr: float | None) -> tuple[int, float]:
        steps = self.bundle.manifest.steps if steps is None else steps
        if lr is not None and self.bundle.manifest.rule != "sgd":
            raise ConfigError(f"{self.bundle.label} adapts with a learned update rule ({self.bundle.manifest.rule}), "
                              "which has no step size: leave lr unset")
        lr = default_lr(self.bundle) if lr is None else lr
        if isinstance(steps, bool) or not isinstance(steps, int) or not 0 <= steps <= MAX_STEPS:
            raise ConfigError(f"steps must be an integer from 0 to {MAX_STEPS}, got {steps!r:.40}")
        if not isinstance(lr, int | float) or not math.isfinite(lr) or lr <= 0:
            raise ConfigError(f"lr must be a finite number > 0, got {lr!r}")
        return steps, float(lr)

    def _support_examples(self) -> tuple[np.ndarray, np.ndarray]:
        """Class-major support examples (features, or kept images) and labels (M,) int64 of the classes so far."""
        if not self._support:
            raise DataError("no classes to adapt to: call add_examples() for at least 2 classes first")
        if len(self._support) < 2:
            raise DataError(f"adaptation needs at least 2 classes, got 1 ({next(iter(self._support))!r})")
        labels = np.repeat(np.arange(len(self._support)), [len(f) for f in self._support.values()])
        return np.concatenate(list(self._support.values())), labels.astype(np.int64)

    def _support_set(self) -> tuple[np.ndarray, np.ndarray]:
        """Class-major support features (M, D) and labels (M,) int64 of the classes added so far."""
        examples, labels = self._support_examples()
        return (self._embed_together(examples) if self.bundle.keeps_images else examples), labels

    def _context_steps(self, steps: int | None, lr: float | None) -> int:
        spec = self.bundle.context
        steps = spec.steps if steps is None else steps
        if isinstance(steps, bool) or not isinstance(steps, int) or not 0 <= steps <= MAX_STEPS:
            raise ConfigError(f"context_steps must be an integer from 0 to {MAX_STEPS}, got {steps!r:.40}")
        if lr is not None and (isinstance(lr, bool) or not isinstance(lr, int | float) or not math.isfinite(lr)
                               or lr <= 0):
            raise ConfigError(f"context_lr must be a finite number > 0, got {lr!r:.40}")
        return steps

    def _embed_together(self, images: np.ndarray) -> np.ndarray:
        """The whole support set embedded as one batch, once per set of classes (classes are only ever
        added, so the class names identify the set): `save` after `adapt` does not embed it again. (With a
        context, `adapt` leaves the features of the adapted context here.)"""
        classes = tuple(self._support)
        if self._embedded is None or self._embedded[0] != classes:
            features = self.bundle.embed(images, context=self._context)
            _check_finite(features, "support set: embed.onnx", "the bundle's embedding graph is broken")
            self._embedded = (classes, features)
        return self._embedded[1]

    def _roll_back(self, good: tuple[np.ndarray, np.ndarray] | None, losses: list[float], steps: int,
                   lr: float) -> None:
        """Keep the last finite head (after len(losses) - 1 steps, loss losses[-1]) and say so."""
        if good is None:
            raise BundleError(f"adaptation diverged: the loss of the initial head is not finite (lr {lr:g}); "
                              "nothing finite to roll back to — check the bundle and the support images")
        done = len(losses) - 1
        result = AdaptResult(tuple(self._support), sum(len(f) for f in self._support.values()), done, lr,
                             tuple(losses[:-1]), losses[-1], variants=sum(self.variants.values()))
        self._set_head(*good, result)
        raise BundleError(f"adaptation diverged at step {done + 1} of {steps} (non-finite loss or parameters with "
                          f"lr {lr:g}); rolled back to the last finite state, after {done} step(s) with loss "
                          f"{losses[-1]:.4f}; try a smaller lr")

    def _set_head(self, weight: np.ndarray, bias: np.ndarray, result: AdaptResult) -> None:
        self._head = (weight.astype(np.float32), bias.astype(np.float32))
        self.result = result
        self._changed = False  # the head is that of the support set as it is now

    def _adapted_head(self) -> tuple[np.ndarray, np.ndarray]:
        if self._head is None or self.result is None:
            raise ConfigError("nothing adapted yet: call add_examples() for each class, then adapt()")
        added = [c for c in self._support if c not in self.result.classes]
        if added:
            raise ConfigError(f"class(es) {added} were added after adapt(); call adapt() again")
        if self._changed:
            raise ConfigError("examples were added or classes removed after adapt(); call adapt() again")
        return self._head
