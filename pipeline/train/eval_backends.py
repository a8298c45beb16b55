"""What the evaluation engine adapts (`pipeline.train.evaluate`): a torch learner, the fine-tuning baseline, or a
bundle through the device runtime. Each scores seeded episodes after the adaptation steps asked for.

Features are computed once per image where they do not depend on the batch (a frozen extractor with running
BatchNorm statistics, a bundle without batch statistics); a body normalised with per-task batch statistics
(MAML-style transductive BatchNorm) embeds each episode's support set as one batch and its queries as another,
exactly as it was trained and as the device runtime does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import vmap

from mtl.pipeline.errors import ConfigError
from mtl.pipeline.meta.learner import MetaLearner
from mtl.pipeline.models.heads import COSINE_INIT_SCALE
from mtl.pipeline.models.task_batchnorm import TaskBatchNorm2d
from mtl.pipeline.train.common import StepCallback, embed, normalize, resolve_device
from mtl.pipeline.train.evaluate import EpisodeScores, EpisodeSet, EvalConfig

CHUNK = 50  # episodes per vmapped call


def is_bundle(path: str | Path) -> bool:
    path = Path(path)
    return path.suffix == ".mtlb" or (path.is_dir() and (path / "manifest.json").is_file())


def has_batch_statistics(body: torch.nn.Module) -> bool:
    """True when the body normalises with the statistics of each batch (MAML-style transductive BatchNorm)."""
    return any(isinstance(m, TaskBatchNorm2d) for m in body.modules())


def _labels(episodes: EpisodeSet, per_class: int, device: torch.device) -> torch.Tensor:
    return torch.arange(episodes.cfg.ways, device=device).repeat_interleave(per_class)


def _scored(outputs: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0,
            keep_steps: bool = False) -> EpisodeScores:
    """Logits (B, S, Q, N) and class-major labels (Q,) → per-episode accuracy (B, S), and the top-1 probability
    (at `temperature`) and correctness of every query after the last step (B·Q,), with its logits (B·Q, N) — and
    with `keep_steps` those after every step (B·Q, S, N)."""
    hits = outputs.argmax(-1) == labels
    last = outputs[:, -1].float()
    probs = torch.softmax(temperature * last, dim=-1)
    every = outputs.float().transpose(1, 2).flatten(0, 1).cpu() if keep_steps else None
    return EpisodeScores(hits.float().mean(-1).cpu(), probs.max(-1).values.flatten().cpu(),
                         hits[:, -1].flatten().cpu(), last.flatten(0, 1).cpu(), every)


class TorchBackend:
    """A `MetaLearner` adapted by its own inner loop (first order at evaluation, as the device steps).
    `keep_step_logits`: the scores also carry the query logits after every step asked for (calibration).
    `attack_epsilon` > 0: each episode's queries are replaced by FGSM samples against the model adapted to it
    (white-box, after each step count), so the accuracy is the adversarial accuracy of Yin et al.'s ADML."""

    def __init__(self, learner: MetaLearner, device: torch.device, method: str = "adapt",
                 keep_step_logits: bool = False, attack_epsilon: float = 0.0) -> None:
        self.learner, self.device, self.method = learner.to(device), device, method
        self.keep_step_logits, self.attack_epsilon = keep_step_logits, attack_epsilon
        # an attack perturbs images, so it needs them: no table of features computed once
        self.per_image = learner.frozen and not has_batch_statistics(learner.body) and not attack_epsilon

    def scores(self, episodes: EpisodeSet, steps: list[int], on_step: StepCallback) -> EpisodeScores:
        learner, device, cfg = self.learner, self.device, episodes.cfg
        p = {n: t.detach() for n, t in learner.state_params().items()}
        support_labels, query_labels = _labels(episodes, cfg.shots, device), _labels(episodes, cfg.queries, device)
        table = self._features(episodes) if self.per_image else None
        was_training = learner.training
        learner.train()  # episodic models normalise with each task's batch statistics, as in training
        out = []
        try:
            for part in episodes.chunks(CHUNK):
                sx, qx = (self._inputs(episodes, rows[part], table) for rows in (episodes.support, episodes.query))

                def one(s: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
                    return self._task(p, s, support_labels, q, query_labels, cfg.ways, steps)

                with torch.no_grad():
                    outputs = vmap(one, randomness="same")(sx, qx)  # (B, S, Q, N)
                out.append(_scored(outputs, query_labels, learner.head.temperature.at(cfg.ways, cfg.shots),
                                   self.keep_step_logits))
                on_step("episodes", part.stop, episodes.support.shape[0], {})
        finally:
            learner.train(was_training)
        return EpisodeScores.cat(out)

    def _features(self, episodes: EpisodeSet) -> torch.Tensor:
        """Every used image embedded once (eval mode: running statistics), rows of a (T, D) table."""
        used = episodes.used()
        feats = embed(self.learner.body, episodes.data.images[used], episodes.data.spec, self.device)
        table = feats.new_zeros(len(episodes.data), feats.shape[1])
        table[used.to(self.device)] = feats
        return table

    def _inputs(self, episodes: EpisodeSet, rows: torch.Tensor, table: torch.Tensor | None) -> torch.Tensor:
        if table is not None:
            return table[rows.to(self.device)]  # (B, M, D)
        return normalize(episodes.data.images[rows].to(self.device), episodes.data.spec)  # (B, M, C, H, W)

    def _task(self, p: dict, s: torch.Tensor, sy: torch.Tensor, q: torch.Tensor, qy: torch.Tensor, n_way: int,
              steps: list[int]) -> torch.Tensor:
        """One episode's query logits after each of `steps` → (S, Q, N)."""
        learner = self.learner
        if learner.adapts_body:
            trajectory = learner.adapt_trajectory(p, s, sy, n_way, steps[-1], first_order=True)
            return _at(trajectory, steps, lambda fast: self._attacked(lambda x: learner.predict(p, fast, x), q, qy))
        if self.attack_epsilon:  # images to perturb: the features of the perturbed queries, per adapted head
            s = learner.features(p, s)
            trajectory = learner.head_trajectory(p, s, sy, n_way, steps[-1])
            return _at(trajectory, steps, lambda fast: self._attacked(
                lambda x: learner.head_logits(p, fast, learner.features(p, x)), q, qy))
        if not self.per_image:  # a batch-statistics body: support and queries embedded per episode
            s, q = learner.features(p, s), learner.features(p, q)
        trajectory = learner.head_trajectory(p, s, sy, n_way, steps[-1])
        return _at(trajectory, steps, lambda fast: learner.head_logits(p, fast, q))

    def _attacked(self, logits_of: Callable[[torch.Tensor], torch.Tensor], q: torch.Tensor,
                  qy: torch.Tensor) -> torch.Tensor:
        """The query logits, of the FGSM-perturbed queries when attacking."""
        if not self.attack_epsilon:
            return logits_of(q)
        from mtl.pipeline.meta.adversarial import fgsm

        return logits_of(fgsm(logits_of, q, qy, self.attack_epsilon))


def _at(trajectory: Any, steps: list[int], score: Callable[[Any], torch.Tensor]) -> torch.Tensor:
    """Outputs after each of `steps` (sorted) from a trajectory of states after 0, 1, …; a head that does not
    adapt yields one state, which stands for every step."""
    wanted, outputs, last = set(steps), {}, None
    for k, state in enumerate(trajectory):
        last = state
        if k in wanted:
            outputs[k] = score(state)
    fallback = score(last) if len(outputs) < len(steps) else None
    return torch.stack([outputs.get(k, fallback) for k in steps])


class FinetuneBackend:
    """The transfer baseline (Chen et al. 2019; Tian et al. 2020): a fresh linear head per episode, trained by
    Adam on L2-normalised support features scaled by `COSINE_INIT_SCALE`; every episode of a chunk at once."""

    method = "finetune"

    def __init__(self, learner: MetaLearner, device: torch.device) -> None:
        if has_batch_statistics(learner.body):
            raise ConfigError("--method finetune embeds images outside their episodes, which changes the features "
                              "of a model normalised with per-task batch statistics; use --method adapt or prototype")
        self.torch = TorchBackend(learner, device, "finetune")

    def scores(self, episodes: EpisodeSet, steps: list[int], on_step: StepCallback) -> EpisodeScores:
        if len(steps) > 1:
            raise ConfigError("--method finetune trains its own head; there is no curve over adaptation steps")
        cfg, table = episodes.cfg, self.torch._features(episodes)
        labels = _labels(episodes, cfg.queries, table.device)
        out = []
        for part in episodes.chunks(100):
            logits = finetune_logits(table[episodes.support[part].to(table.device)],
                                     table[episodes.query[part].to(table.device)], cfg.ways, cfg.finetune_steps,
                                     cfg.finetune_lr)
            out.append(_scored(logits[:, None], labels))
            on_step("episodes", part.stop, episodes.support.shape[0], {})
        return EpisodeScores.cat(out)


def finetune_logits(support: torch.Tensor, query: torch.Tensor, ways: int, steps: int, lr: float) -> torch.Tensor:
    """Support (E, N·K, D) class-major, query (E, M, D) → logits (E, M, N) of a head trained per episode."""
    e, nk, d = support.shape
    labels = torch.arange(ways, device=support.device).repeat_interleave(nk // ways).expand(e, -1)
    support = COSINE_INIT_SCALE * F.normalize(support, dim=-1)
    query = COSINE_INIT_SCALE * F.normalize(query, dim=-1)
    weight = torch.zeros(e, ways, d, device=support.device, requires_grad=True)
    bias = torch.zeros(e, ways, device=support.device, requires_grad=True)
    optimizer = torch.optim.Adam([weight, bias], lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            logits = torch.einsum("emd,end->emn", support, weight) + bias[:, None]
            loss = F.cross_entropy(logits.reshape(-1, ways), labels.reshape(-1)) * e
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        return torch.einsum("emd,end->emn", query, weight) + bias[:, None]


class BundleBackend:
    """A bundle through the device runtime: `embed.onnx`, then `device_runtime.adapter.head_trajectory` — the
    loop `Adapter.adapt` runs — and `predict.onnx`."""

    method = "bundle"

    def __init__(self, bundle: Any, context_steps: int | None = None, augment: int = 0) -> None:
        self.bundle = bundle
        if context_steps is not None and bundle.context is None:
            raise ConfigError(f"--context-steps is for a bundle that adapts a context (CAML); {bundle.label} has none")
        self.context_steps, self.augment = context_steps, augment

    def scores(self, episodes: EpisodeSet, steps: list[int], on_step: StepCallback) -> EpisodeScores:
        from mtl.device_runtime.adapter import adapt_context, default_lr, head_trajectory
        from mtl.device_runtime.augment import pil_variants
        from mtl.device_runtime.preprocess import normalize as device_normalize

        bundle, cfg, n_aug = self.bundle, episodes.cfg, self.augment
        images = episodes.data.images.numpy()
        base_labels = np.repeat(np.arange(cfg.ways), cfg.shots).astype(np.int64)
        # with --augment, the variants of the support images follow them (labels likewise), as Adapter keeps them
        support_labels = np.concatenate([base_labels, np.repeat(base_labels, n_aug)])

        def normalized(rows: np.ndarray) -> np.ndarray:
            return device_normalize(images[rows], bundle.input_spec)

        def embedded(rows: np.ndarray, context: np.ndarray | None = None) -> np.ndarray:
            return bundle.embed(normalized(rows), context=context)

        source = _augment_source(episodes.data, bundle.input_spec) if n_aug else None

        def variants(s: np.ndarray, episode: int) -> np.ndarray:
            """The support images' variants, warped at `AUGMENT_SOURCE`× the input size before the bundle's resize,
            as `Adapter.add_examples(augment=)` warps a decoded file at its own size."""
            from PIL import Image

            from mtl.device_runtime.preprocess import convert_image

            rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, episode]))
            as_is = dataclasses.replace(bundle.input_spec, invert=False)  # the loaded images are converted already
            warped = [convert_image(v, as_is) for r in s
                      for v in pil_variants(Image.fromarray(_hwc(source[r])), n_aug, rng)]
            return device_normalize(np.stack(warped), bundle.input_spec)

        def support_and_query(s: np.ndarray, q: np.ndarray, episode: int) -> tuple[np.ndarray, np.ndarray]:
            support = np.concatenate([normalized(s), variants(s, episode)]) if n_aug else normalized(s)
            if bundle.context is None:
                return bundle.embed(support), embedded(q)
            context_steps = bundle.context.steps if self.context_steps is None else self.context_steps
            context, _, sf = adapt_context(bundle, support, support_labels, cfg.ways, context_steps)
            return sf, embedded(q, context)

        table = None
        if not bundle.keeps_images:
            used = episodes.used().numpy()
            table = np.zeros((len(episodes.data), bundle.feature_dim), np.float32)
            table[used] = embedded(used)
        query_labels = np.repeat(np.arange(cfg.ways), cfg.queries)
        lr, wanted, out = default_lr(bundle), set(steps), []
        for i, (s, q) in enumerate(zip(episodes.support.numpy(), episodes.query.numpy(), strict=True)):
            if table is None:
                sf, qf = support_and_query(s, q, i)
            else:
                sf, qf = table[s], table[q]
                if n_aug:
                    sf = np.concatenate([sf, bundle.embed(variants(s, i))])
            probs = {k: bundle.predict_proba(w, b, qf, shots=cfg.shots)  # variants are not shots (AdaptResult.shots)
                     for k, (w, b, _) in enumerate(head_trajectory(bundle, sf, support_labels, cfg.ways, steps[-1], lr))
                     if k in wanted}
            last = probs.get(steps[-1], probs[max(probs)])
            out.append(EpisodeScores(
                torch.tensor([[float((probs.get(k, last).argmax(1) == query_labels).mean()) for k in steps]],
                             dtype=torch.float64),
                torch.from_numpy(last.max(1)), torch.from_numpy(last.argmax(1) == query_labels)))
            if table is None or i + 1 == len(episodes.support):
                on_step("episodes", i + 1, len(episodes.support), {})
        return EpisodeScores.cat(out)


AUGMENT_SOURCE = 4  # `mtl evaluate --augment` warps the support images loaded at this many times the input size


def _augment_source(data: Any, spec: Any) -> np.ndarray:
    """The images of `data` again at `AUGMENT_SOURCE`× the input size (row for row), from the data spec it came
    from: the resolution `--augment` warps at before the bundle's resize."""
    from mtl.pipeline.data import load_data

    big = load_data(data.provenance["spec"], image_size=AUGMENT_SOURCE * spec.size)
    index = {name: i for i, name in enumerate(big.class_names)}
    try:
        stacks = [big.class_images(index[name]) for name in data.class_names]
    except KeyError as exc:
        raise ConfigError(f"--augment: class {exc} is not in {data.provenance['spec']} at full size") from None
    if [len(s) for s in stacks] != [int(c) for c in data.counts]:
        raise ConfigError(f"--augment: {data.provenance['spec']} has other images at full size")
    return torch.cat(stacks).numpy()


def _hwc(image: np.ndarray) -> np.ndarray:
    """uint8 (C, H, W) → Pillow's layout (H, W) or (H, W, C)."""
    return image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)


def backend_for(path: str | Path, cfg: EvalConfig, device_name: str) -> tuple[Any, dict[str, Any], int]:
    """The backend that evaluates `path` with `cfg.method`, what its producer trained on (data spec, class split,
    input spec, the file), and its default number of adaptation steps."""
    if is_bundle(path):
        if cfg.attack_epsilon:
            raise ConfigError("--attack-epsilon needs a checkpoint: the attack differentiates the model, and a "
                              "bundle's graphs give no gradient with respect to the images")
        return _bundle_backend(path, cfg)
    from mtl.pipeline.data import InputSpec
    from mtl.pipeline.train.checkpoint import load_checkpoint
    from mtl.pipeline.train.learners import load_learner

    if cfg.context_steps is not None:
        raise ConfigError("--context-steps is for a bundle that adapts a context; a checkpoint's inner steps are "
                          "--steps")
    if cfg.augment:
        raise ConfigError("--augment augments support sets on the device: evaluate a bundle (mtl export first)")
    ckpt = load_checkpoint(path)
    loaded = load_learner(ckpt)
    device = resolve_device(device_name)
    producer = {"data": ckpt.meta["config"].get("data"), "splits": ckpt.meta["splits"], "source": str(ckpt.path),
                "input": InputSpec.from_dict(ckpt.meta["input"]) if ckpt.meta.get("input") else None,
                "regression": loaded.learner.head.regression, "learner": loaded.learner, "device": device}
    learner, method = loaded.learner, cfg.method
    if cfg.attack_epsilon and method not in ("auto", "adapt"):
        raise ConfigError(f"--attack-epsilon attacks the model's own adaptation (--method auto or adapt), not "
                          f"--method {method}")
    if cfg.attack_epsilon and loaded.learner.head.regression:
        raise ConfigError("--attack-epsilon is for classifiers; this is a sine-wave regression model")
    if method == "finetune":
        return FinetuneBackend(learner, device), producer, 0
    if method == "prototype":
        return TorchBackend(prototype_learner(learner), device, "prototype"), producer, 0
    name = "prototype" if not learner.head.adapts else "adapt"
    return TorchBackend(learner, device, name, attack_epsilon=cfg.attack_epsilon), producer, loaded.steps


def regression_scores(learner: MetaLearner, cfg: EvalConfig, steps: int, device: torch.device,
                      seed: int) -> torch.Tensor:
    """Mean squared error of each of `cfg.episodes` fresh sine-wave tasks (drawn from `seed`) after `steps` inner
    steps (MAML §5.1), through the same vmapped task outputs as training."""
    from mtl.pipeline.meta.batch import batch_outputs, query_metrics
    from mtl.pipeline.train.tasks import RegressionTasks

    batch = RegressionTasks(cfg.shots, cfg.queries, cfg.episodes, seed, device).sample()
    p = {n: t.detach() for n, t in learner.to(device).state_params().items()}
    with torch.no_grad():
        loss, _ = query_metrics(learner, batch_outputs(learner, p, batch, steps, True), batch.query_labels)
    return loss.cpu()


def prototype_learner(learner: MetaLearner) -> MetaLearner:
    """The nearest-class-mean classifier on `learner`'s body (its head and step sizes left out)."""
    spec = dataclasses.replace(learner.spec, head="prototype", head_init="proto", adapt="head", learn_lr=False)
    proto = MetaLearner(spec)
    proto.load_state_dict(learner.state_dict(), strict=False)
    return proto


def _bundle_backend(path: str | Path, cfg: EvalConfig) -> tuple[BundleBackend, dict[str, Any], int]:
    from mtl.device_runtime import Bundle

    if cfg.method not in ("auto", "adapt"):
        raise ConfigError(f"a bundle adapts as its device does; --method {cfg.method} is for checkpoints")
    bundle = Bundle.load(path)
    producer = bundle.manifest.producer
    splits = producer.get("splits") if isinstance(producer.get("splits"), dict) else {}
    producer_info = {"data": producer.get("data"), "splits": splits, "input": bundle.input_spec, "source": str(path),
                     "regression": False}
    return BundleBackend(bundle, cfg.context_steps, cfg.augment), producer_info, bundle.manifest.steps
