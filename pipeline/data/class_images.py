"""`ClassImages`: every image of a labelled source as one uint8 tensor grouped by class."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from mtl.pipeline.data.images import InputSpec
from mtl.pipeline.errors import DataError


@dataclass(frozen=True)
class ClassImages:
    """Images of many classes packed into one tensor so episodes are drawn by indexing.

    images:      (T, C, H, W) uint8, class c occupies rows offsets[c] : offsets[c] + counts[c]
    offsets:     (N_classes,) int64
    counts:      (N_classes,) int64
    class_names: one name per class ("Greek/character01", "synthetic/0042", ...)
    superclasses: one group per class (the alphabet for Omniglot); used for disjoint splits
    spec:        the preprocessing that produced `images`
    provenance:  where the data came from (scheme, path, archives, options), JSON-serialisable
    """

    images: torch.Tensor
    offsets: torch.Tensor
    counts: torch.Tensor
    class_names: tuple[str, ...]
    superclasses: tuple[str, ...]
    spec: InputSpec
    provenance: dict = field(default_factory=dict)

    @classmethod
    def from_arrays(cls, per_class: Sequence[np.ndarray | torch.Tensor], class_names: Sequence[str],
                    superclasses: Sequence[str] | None, spec: InputSpec,
                    provenance: dict | None = None) -> ClassImages:
        """Pack a list of per-class uint8 stacks (n_i, C, H, W) into one `ClassImages`."""
        if len(per_class) == 0:
            raise DataError(f"no classes found in {provenance or 'the data source'}")
        if len(per_class) != len(class_names):
            raise DataError(f"{len(per_class)} image stacks but {len(class_names)} class names")
        stacks = [torch.as_tensor(np.asarray(x, dtype=np.uint8)) if not isinstance(x, torch.Tensor) else x
                  for x in per_class]
        for name, stack in zip(class_names, stacks, strict=True):
            if stack.ndim != 4 or stack.shape[0] == 0:
                raise DataError(f"class {name!r} has no images")
        counts = torch.tensor([s.shape[0] for s in stacks], dtype=torch.int64)
        offsets = torch.cumsum(counts, 0) - counts
        supers = tuple(superclasses) if superclasses is not None else tuple("" for _ in class_names)
        return cls(torch.cat(stacks).to(torch.uint8).contiguous(), offsets, counts, tuple(class_names),
                   supers, spec, dict(provenance or {}))

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def class_images(self, index: int) -> torch.Tensor:
        """(counts[index], C, H, W) uint8 view of one class."""
        start = int(self.offsets[index])
        return self.images[start:start + int(self.counts[index])]

    def labels(self) -> torch.Tensor:
        """(T,) int64 class index of every image row."""
        return torch.repeat_interleave(torch.arange(self.num_classes, device=self.counts.device), self.counts)

    def subset(self, class_indices: Sequence[int]) -> ClassImages:
        """The listed classes only, in the given order (relabelled 0..len-1)."""
        idx = [int(i) for i in class_indices]
        stacks = [self.class_images(i) for i in idx]
        return ClassImages.from_arrays(stacks, [self.class_names[i] for i in idx],
                                       [self.superclasses[i] for i in idx], self.spec,
                                       {**self.provenance, "classes": len(idx)})

    def with_rotations(self, quarter_turns: Sequence[int] = (1, 2, 3)) -> ClassImages:
        """Add each class rotated by 90°·k as a NEW class (the standard Omniglot augmentation)."""
        stacks = [self.class_images(i) for i in range(self.num_classes)]
        names, supers = list(self.class_names), list(self.superclasses)
        for k in quarter_turns:
            stacks += [torch.rot90(s, k, dims=(2, 3)) for s in stacks[: self.num_classes]]
            names += [f"{n}@rot{90 * k}" for n in self.class_names]
            supers += list(self.superclasses)
        return ClassImages.from_arrays(stacks, names, supers, self.spec,
                                       {**self.provenance, "rotations": list(quarter_turns)})

    def with_flips(self) -> ClassImages:
        """Add each class mirrored left-right as a NEW class (`name@flip`): a mirrored character is another
        character, so with rotations this gives the 8 symmetries of the square (the dihedral group)."""
        stacks = [self.class_images(i) for i in range(self.num_classes)]
        stacks += [torch.flip(s, dims=(3,)) for s in stacks]
        return ClassImages.from_arrays(stacks, [*self.class_names, *(f"{n}@flip" for n in self.class_names)],
                                       [*self.superclasses, *self.superclasses], self.spec,
                                       {**self.provenance, "flips": True})

    def to(self, device: torch.device | str) -> ClassImages:
        return ClassImages(self.images.to(device), self.offsets.to(device), self.counts.to(device),
                           self.class_names, self.superclasses, self.spec, self.provenance)
