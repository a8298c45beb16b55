"""Disjoint, seeded train / val / test class splits.

Few-shot evaluation is only honest when test classes were never seen in training, and for Omniglot
when whole alphabets are unseen (Lake et al. 2015; Vinyals et al. 2016 split by alphabet). So a
split is made, in order of preference, from the source's official split, by superclass (whole
superclasses go to one part), or by class. Rotated copies (`name@rot90`, from
`ClassImages.with_rotations`) always follow their base class.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from mtl.pipeline.data.class_images import ClassImages
from mtl.pipeline.errors import ConfigError, DataError

PARTS = ("train", "val", "test")
METHODS = ("auto", "official", "superclass", "class", "superclass-test")
_ROTATION = re.compile(r"(@rot\d+|@flip)+$")


def base_name(class_name: str) -> str:
    """The class a rotated or mirrored copy was made from (`Greek/character01@rot90@flip` → `Greek/character01`)."""
    return _ROTATION.sub("", class_name)


@dataclass(frozen=True)
class Splits:
    """Class names of each part; the three parts are disjoint."""

    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]

    def __post_init__(self) -> None:
        seen: dict[str, str] = {}
        for part in PARTS:
            for name in getattr(self, part):
                if name in seen:
                    raise DataError(f"class {name!r} is in both the {seen[name]} and the {part} split")
                seen[name] = part

    def to_dict(self) -> dict[str, list[str]]:
        return {part: list(getattr(self, part)) for part in PARTS}

    @classmethod
    def from_dict(cls, data: dict) -> Splits:
        unknown = sorted(set(data) - set(PARTS))
        if unknown:
            raise ConfigError(f"unknown split part(s) {unknown}; expected {list(PARTS)}")
        return cls(*(tuple(str(name) for name in data.get(part, ())) for part in PARTS))

    def indices(self, data: ClassImages, part: str) -> list[int]:
        """Indices into `data` of the classes of `part` (rotated copies included), in `data`'s order.

        Raises `DataError` naming a class of the split that `data` does not have.
        """
        if part not in PARTS:
            raise ConfigError(f"unknown split part {part!r}; expected one of {list(PARTS)}")
        names = set(getattr(self, part))
        chosen = [i for i, name in enumerate(data.class_names) if base_name(name) in names]
        found = {base_name(data.class_names[i]) for i in chosen}
        missing = [name for name in getattr(self, part) if name not in found]
        if missing:
            raise DataError(f"class {missing[0]!r} of the {part} split is not in the data "
                            f"({len(missing)} missing of {len(names)})")
        return chosen


def make_splits(data: ClassImages, *, fractions: Sequence[float] = (0.6, 0.2, 0.2), seed: int = 0,
                by: str = "auto") -> Splits:
    """Split the classes of `data` into disjoint train / val / test parts, deterministically for `seed`.

    by="auto" uses `provenance["official_split"]` when the source has one (fractions are then
    ignored), else superclasses when any class has one, else classes. by="superclass-test" holds out whole
    superclasses for test only, and splits the classes of the others into train and val (validation by
    character: the training alphabets are all used). A part with a positive fraction is never empty;
    raises `DataError` when there are too few groups for that.
    """
    shares = _check_fractions(fractions)
    if by not in METHODS:
        raise ConfigError(f"unknown split method {by!r}; expected one of {list(METHODS)}")
    official = data.provenance.get("official_split")
    if by == "official" or (by == "auto" and official):
        if not official:
            raise DataError("the data source has no official split; use by='superclass' or by='class'")
        present = {base_name(n) for n in data.class_names}
        return Splits(*(tuple(n for n in official.get(part, ()) if n in present) for part in PARTS))
    if by == "superclass-test":
        return _split_test_by_superclass(data, shares, seed)
    groups: dict[str, list[str]] = {}
    use_super = by == "superclass" or (by == "auto" and any(data.superclasses))
    for name, superclass in zip(data.class_names, data.superclasses, strict=True):
        key = superclass if use_super else base_name(name)
        if base_name(name) not in groups.setdefault(key, []):
            groups[key].append(base_name(name))
    parts = _assign_groups(groups, shares, seed, "superclasses" if use_super else "classes")
    rank = {base_name(name): i for i, name in reversed(list(enumerate(data.class_names)))}
    return Splits(*(tuple(sorted((n for key in part for n in groups[key]), key=rank.__getitem__))
                    for part in parts))


def _split_test_by_superclass(data: ClassImages, shares: tuple[float, float, float], seed: int) -> Splits:
    """Test: the whole superclasses the superclass split with these shares holds out; train and val: the classes of
    all the other superclasses, pooled and split by class (val takes val / (train + val) of them)."""
    if not any(data.superclasses):
        raise DataError("split by 'superclass-test' needs classes grouped in superclasses (e.g. Omniglot alphabets)")
    outer = make_splits(data, fractions=shares, seed=seed, by="superclass")
    pooled = set(outer.train) | set(outer.val)
    rest = [i for i, name in enumerate(data.class_names) if base_name(name) in pooled]
    kept = shares[0] + shares[1]
    inner = make_splits(data.subset(rest), fractions=(shares[0] / kept, shares[1] / kept, 0.0), seed=seed,
                        by="class")
    return Splits(inner.train, inner.val, outer.test)


def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    """Three non-negative shares summing to 1 (within 1e-6), or `ConfigError`."""
    values = tuple(float(f) for f in fractions)
    if len(values) != 3 or any(not math.isfinite(f) or f < 0 for f in values) or abs(sum(values) - 1) > 1e-6:
        raise ConfigError(f"split fractions must be three non-negative numbers summing to 1, got {fractions}")
    return values  # type: ignore[return-value]


def _assign_groups(groups: dict[str, list[str]], shares: tuple[float, float, float], seed: int,
                   kind: str) -> list[list[str]]:
    """Greedy: shuffled groups go one by one to the part furthest below its class target.

    When only as many groups remain as parts that are still empty, they go to those parts, so
    every part with a positive share gets at least one group.
    """
    needed = [i for i, share in enumerate(shares) if share > 0]
    if len(groups) < len(needed):
        raise DataError(f"only {len(groups)} {kind} ({', '.join(sorted(groups))}) for {len(needed)} "
                        f"non-empty splits; add data or set a split fraction to 0")
    order = sorted(groups)
    random.Random(seed).shuffle(order)
    total = sum(len(members) for members in groups.values())
    targets = [share * total for share in shares]
    counts = [0, 0, 0]
    parts: list[list[str]] = [[], [], []]
    for position, key in enumerate(order):
        empty = [i for i in needed if not parts[i]]
        candidates = empty if len(order) - position <= len(empty) else needed
        best = max(candidates, key=lambda i: (targets[i] - counts[i], -i))
        parts[best].append(key)
        counts[best] += len(groups[key])
    return parts
