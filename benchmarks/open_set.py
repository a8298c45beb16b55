"""Open-set recognition through the device runtime: does `mtl predict --reject` tell unknown images apart?

N-way K-shot episodes on the bundle's TEST classes (never trained on), all N from one superclass (an Omniglot
alphabet), whose queries are half from the N classes (Q per class) and half from classes outside them (N·Q):
(a) `other`: classes of other superclasses that the bundle never trained on either (its validation classes), and
(b) `same`: other test classes of the same superclass, and (a′) `unseen`: validation classes of ONE other
superclass, scored with the bundle's open-set background less every training class of that superclass — what (a)
would be if nobody had trained on any class of the unknowns' alphabet (the background, the producer's training
classes' means, is what the score is relative to, and (a)'s unknowns share alphabets with it). With a background,
`trained.known_rejected` is the share of knowns lost when the N classes are ones the producer TRAINED on. Per episode,
through the device runtime (`embed.onnx`, the runtime's own `device_runtime.open_set` scores and `auto` threshold):

- AUROC of the score, known queries against unknown ones (rule-free);
- at the `auto` threshold (the bundle's calibrated thresholds, or leave-one-class-out without them): the share of
  unknowns rejected and the share of knowns wrongly rejected.

Each figure is a mean ± 95% CI (1.96·σ/√E) over `--episodes` seeded episodes. The baseline beside the score is
the head's own top probability (what a user of any few-shot library has): its AUROC on the same episodes, and
the paired difference.

Run:  .venv/bin/python benchmarks/open_set.py BUNDLE [--data omniglot:../shared/data/omniglot] [--episodes 600]
          [--settings 5x1,5x5] [--json]
(BUNDLE: a bundle whose extractor embeds each image alone: no batch statistics, no context)
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

SETTINGS = "5x1,5x5"  # N-way × K-shot
QUERIES = 5
KINDS = ("other", "same", "unseen")


def auroc(known: np.ndarray, unknown: np.ndarray) -> float:
    """P(score of a known > score of an unknown), ties counting one half (the Mann–Whitney statistic)."""
    diff = known[:, None] - unknown[None, :]
    return float((diff > 0).mean() + 0.5 * (diff == 0).mean())


def mean_ci(values: list[float]) -> dict[str, float]:
    v = np.asarray(values, np.float64)
    return {"mean": float(v.mean()), "ci95": float(1.96 * v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else 0.0}


def group_of(data, c: int) -> str:
    return data.superclasses[c] or data.class_names[c].split("/")[0]


def episodes(bundle, data, splits: dict, ways: int, shots: int, count: int, seed: int):
    """Yield (support rows, support labels, known query rows, {kind: unknown query rows}, the `unseen` kind's
    superclass) per episode. `unseen` draws from its own generator, so (a) and (b) do not depend on it."""
    by_name = {name: i for i, name in enumerate(data.class_names)}
    test = [by_name[c] for c in splits.get("test", []) if c in by_name]
    val = [by_name[c] for c in splits.get("val", []) if c in by_name]
    groups, val_groups = defaultdict(list), defaultdict(list)
    for c in test:
        groups[group_of(data, c)].append(c)
    for c in val:
        val_groups[group_of(data, c)].append(c)

    usable = [g for g, cs in groups.items() if len(cs) >= 2 * ways]
    others = {g: [c for c in val if group_of(data, c) != g] for g in usable}
    usable = [g for g in usable if others[g]]
    if not usable:
        raise SystemExit("error: the bundle's split needs a test superclass of at least 2·N classes and validation "
                         "classes of other superclasses")
    rng, unseen_rng = np.random.default_rng(seed), np.random.default_rng([seed, 1])

    def rows(c: int, k: int, r=rng) -> np.ndarray:
        return int(data.offsets[c]) + r.choice(int(data.counts[c]), k, replace=False)

    for _ in range(count):
        name = usable[rng.integers(len(usable))]
        group, pool = groups[name], others[name]
        chosen = rng.choice(len(group), 2 * ways, replace=False)
        known, same = [group[i] for i in chosen[:ways]], [group[i] for i in chosen[ways:]]
        picks = [rows(c, shots + QUERIES) for c in known]
        support = np.concatenate([p[:shots] for p in picks])
        queries = np.concatenate([p[shots:] for p in picks])
        n_unknown = ways * QUERIES
        other = [pool[i] for i in rng.choice(len(pool), n_unknown, replace=len(pool) < n_unknown)]
        same_classes = [same[i % ways] for i in range(n_unknown)]
        candidates = sorted(g for g in val_groups if g != name)
        alphabet = candidates[unseen_rng.integers(len(candidates))]
        unseen = unseen_rng.choice(val_groups[alphabet], n_unknown)
        yield (support, np.repeat(np.arange(ways), shots), queries,
               {"other": np.array([rows(c, 1)[0] for c in other]),
                "same": np.array([rows(c, 1)[0] for c in same_classes]),
                "unseen": np.array([rows(c, 1, unseen_rng)[0] for c in unseen])}, alphabet)


def measure(bundle_path: Path, data_spec: str | None, count: int, seed: int, settings: str = SETTINGS) -> dict:
    from mtl.device_runtime import Bundle, open_set
    from mtl.device_runtime.adapter import default_lr, head_trajectory
    from mtl.device_runtime.preprocess import normalize
    from mtl.device_runtime.schema import BACKGROUND
    from mtl.pipeline.data import load_data

    bundle = Bundle.load(bundle_path)
    if bundle.keeps_images:
        raise SystemExit(f"error: {bundle_path} embeds a support set as a whole; this benchmark embeds each image "
                         "alone (a bundle without batch statistics or a context)")
    producer = bundle.manifest.producer
    data = load_data(data_spec or producer["data"], image_size=bundle.input_spec.size)
    images = data.images.numpy()
    table: dict[int, np.ndarray] = {}

    def features(rows: np.ndarray) -> np.ndarray:
        missing = [r for r in dict.fromkeys(rows.tolist()) if r not in table]
        if missing:
            for r, f in zip(missing, bundle.embed(normalize(images[missing], bundle.input_spec)), strict=True):
                table[r] = f
        return np.stack([table[r] for r in rows.tolist()])

    calibrated = (bundle.manifest.open_set or {}).get("thresholds")
    background = bundle.init.get(BACKGROUND)
    report = {"bundle": str(bundle_path), "episodes": count, "queries_per_class": QUERIES, "settings": {},
              "auto": "calibrated on the validation classes" if calibrated else "leave-one-class-out",
              "thresholds": calibrated, "background": 0 if background is None else len(background)}
    background_groups = None
    if background is not None:  # which training class, and so which superclass, each background row is
        by_name = {name: i for i, name in enumerate(data.class_names)}
        train = [by_name[c] for c in producer["splits"].get("train", []) if c in by_name]
        if not train:
            raise SystemExit("error: none of the bundle's training classes is in the data; the unseen kind needs "
                             "them to tell which background rows belong to which superclass")
        means = open_set.prototypes(features(np.concatenate([int(data.offsets[c]) + np.arange(int(data.counts[c]))
                                                             for c in train])),
                                    np.repeat(np.arange(len(train)), [int(data.counts[c]) for c in train]), len(train))
        match = background.astype(np.float64) @ means.T
        background_groups = np.array([group_of(data, train[i]) for i in match.argmax(axis=1)])
        report["background_match"] = float(match.max(axis=1).min())  # 1: each row is one training class's mean
    for ways, shots in (tuple(int(v) for v in s.split("x")) for s in settings.split(",")):
        per = defaultdict(list)
        for support, labels, known_rows, unknown_rows, alphabet in episodes(bundle, data, producer["splits"], ways,
                                                                            shots, count, seed):
            sf, kf = features(support), features(known_rows)
            *_, (weight, bias, _) = head_trajectory(bundle, sf, labels, ways, bundle.manifest.steps, default_lr(bundle))
            protos = open_set.prototypes(sf, labels, ways)
            known_prob = bundle.predict_proba(weight, bias, kf, shots=shots).max(axis=1)
            whole = open_set.threshold("auto", sf, labels, ways, calibrated, background), \
                open_set.scores(kf, protos, background)  # (a) and (b): the threshold and knowns' scores, once
            per["known_rejected"].append(float((whole[1] < whole[0]).mean()))
            for kind, rows in unknown_rows.items():
                bg = background if kind != "unseen" or background is None else background[background_groups != alphabet]
                limit, known_score = whole
                if kind == "unseen":  # against the background less the unknowns' superclass
                    limit = open_set.threshold("auto", sf, labels, ways, calibrated, bg)
                    known_score = open_set.scores(kf, protos, bg)
                    per["unseen.known_rejected"].append(float((known_score < limit).mean()))
                uf = features(rows)
                unknown_score = open_set.scores(uf, protos, bg)
                unknown_prob = bundle.predict_proba(weight, bias, uf, shots=shots).max(axis=1)
                per[f"{kind}.auroc"].append(auroc(known_score, unknown_score))
                per[f"{kind}.auroc_probability"].append(auroc(known_prob, unknown_prob))
                per[f"{kind}.unknown_rejected"].append(float((unknown_score < limit).mean()))
        if background is not None:  # knowns of classes the producer TRAINED on (a deploy model meets them too)
            pick = np.random.default_rng([seed, 2])
            for _ in range(count):
                classes = pick.choice(train, ways, replace=False)
                rows = [int(data.offsets[c]) + pick.choice(int(data.counts[c]), shots + QUERIES, replace=False)
                        for c in classes]
                sf = features(np.concatenate([r[:shots] for r in rows]))
                labels = np.repeat(np.arange(ways), shots)
                limit = open_set.threshold("auto", sf, labels, ways, calibrated, background)
                scores = open_set.scores(features(np.concatenate([r[shots:] for r in rows])),
                                         open_set.prototypes(sf, labels, ways), background)
                per["trained.known_rejected"].append(float((scores < limit).mean()))
        cell = {key: mean_ci(values) for key, values in per.items()}
        for kind in KINDS:
            cell[f"{kind}.auroc_vs_probability"] = mean_ci(
                list(np.subtract(per[f"{kind}.auroc"], per[f"{kind}.auroc_probability"])))
        report["settings"][f"{ways}-way {shots}-shot"] = cell
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--data", help="the data spec (default: the bundle's producer data)")
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--settings", default=SETTINGS, help="N-way × K-shot cells, e.g. 5x1,5x5")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    report = measure(args.bundle, args.data, args.episodes, args.seed, args.settings)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    for setting, cell in report["settings"].items():
        for kind in KINDS:
            lost = cell["unseen.known_rejected" if kind == "unseen" else "known_rejected"]
            print(f"{setting} {kind}: AUROC {cell[f'{kind}.auroc']['mean']:.3f} ± {cell[f'{kind}.auroc']['ci95']:.3f} "
                  f"(top probability {cell[f'{kind}.auroc_probability']['mean']:.3f}); auto rejects "
                  f"{100 * cell[f'{kind}.unknown_rejected']['mean']:.1f} % of unknowns, loses "
                  f"{100 * lost['mean']:.1f} % of knowns")
    return 0


if __name__ == "__main__":
    sys.exit(main())
