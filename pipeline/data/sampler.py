"""Episode sampling by tensor indexing on the training device.

A meta-batch of B episodes (N-way, K-shot, Q-query) is drawn with two `argsort`s of random keys:
one picks N distinct classes per episode, one picks K+Q distinct images per chosen class. No
per-image Python work happens, so sampling costs microseconds on a GPU whatever B is.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mtl.pipeline.data.class_images import ClassImages
from mtl.pipeline.errors import ConfigError, DataError


@dataclass(frozen=True)
class Episodes:
    """A meta-batch of episodes. Labels are 0..N-1, class-major (all shots of class 0 first).

    support:        (B, N*K, C, H, W) uint8     support_labels: (B, N*K) int64
    query:          (B, N*Q, C, H, W) uint8     query_labels:   (B, N*Q) int64
    classes:        (B, N) int64 class indices into the sampled `ClassImages`
    support_index / query_index: (B, N*K) / (B, N*Q) int64 rows of `ClassImages.images`
    """

    support: torch.Tensor
    support_labels: torch.Tensor
    query: torch.Tensor
    query_labels: torch.Tensor
    classes: torch.Tensor
    support_index: torch.Tensor
    query_index: torch.Tensor


def check_episode_shape(n_way: int, k_shot: int, q_query: int, meta_batch: int = 1) -> None:
    """Raise `ConfigError` for an episode shape no sampler can draw."""
    if n_way < 2:
        raise ConfigError(f"ways must be at least 2, got {n_way}")
    if k_shot < 1:
        raise ConfigError(f"shots must be at least 1, got {k_shot}")
    if q_query < 1:
        raise ConfigError(f"queries must be at least 1, got {q_query}")
    if meta_batch < 1:
        raise ConfigError(f"meta-batch must be at least 1, got {meta_batch}")


class EpisodeSampler:
    """Draws whole meta-batches of N-way K-shot Q-query episodes from a `ClassImages`.

    Randomness comes from a private `torch.Generator` on the data's device, seeded by `seed`, so
    two samplers with the same seed over the same data draw the same episodes, and the sampler's
    state can be saved and restored for an exact resume.
    """

    def __init__(self, data: ClassImages, n_way: int, k_shot: int, q_query: int, meta_batch: int = 1,
                 seed: int = 0) -> None:
        check_episode_shape(n_way, k_shot, q_query, meta_batch)
        if data.num_classes < n_way:
            raise DataError(f"{n_way}-way episodes need {n_way} classes, but the data has only "
                            f"{data.num_classes}")
        need = k_shot + q_query
        short = [i for i in range(data.num_classes) if int(data.counts[i]) < need]
        if short:
            first = short[0]
            raise DataError(f"class {data.class_names[first]!r} has {int(data.counts[first])} images, but "
                            f"{k_shot} shots + {q_query} queries need {need}"
                            + (f" ({len(short)} classes are too small)" if len(short) > 1 else ""))
        self.data, self.n_way, self.k_shot, self.q_query = data, n_way, k_shot, q_query
        self.meta_batch = meta_batch
        self.device = data.images.device
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)
        self._max_count = int(data.counts.max())

    def sample_indices(self, meta_batch: int | None = None, classes: torch.Tensor | None = None,
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Draw episode indices: classes (B, N), support rows (B, N*K), query rows (B, N*Q).

        `classes` (B, N) fixes each episode's classes (e.g. a hard-task meta-batch); only the
        images are drawn then.
        """
        b, n, k = meta_batch or self.meta_batch, self.n_way, self.k_shot
        gen, dev = self.generator, self.device
        if classes is None:
            class_keys = torch.rand(b, self.data.num_classes, generator=gen, device=dev)
            classes = class_keys.argsort(dim=1)[:, :n]  # (B, N)
        b = classes.shape[0]
        image_keys = torch.rand(b, n, self._max_count, generator=gen, device=dev)
        counts = self.data.counts[classes]  # (B, N)
        positions = torch.arange(self._max_count, device=dev)
        image_keys = image_keys.masked_fill(positions >= counts[..., None], 2.0)  # never pick padding
        chosen = image_keys.argsort(dim=2)[..., : k + self.q_query]  # (B, N, K+Q)
        rows = self.data.offsets[classes][..., None] + chosen
        return classes, rows[..., :k].reshape(b, n * k), rows[..., k:].reshape(b, n * self.q_query)

    def sample(self, meta_batch: int | None = None, classes: torch.Tensor | None = None,
               tasks: slice | None = None) -> Episodes:
        """Draw a meta-batch of episodes with their images gathered on the data's device.

        `tasks` keeps only those episodes of the drawn meta-batch (a distributed rank's share): the
        random draws, and so the sampler's next state, are those of the whole meta-batch.
        """
        classes, support_index, query_index = self.sample_indices(meta_batch, classes)
        if tasks is not None:
            classes, support_index, query_index = classes[tasks], support_index[tasks], query_index[tasks]
        b, n = classes.shape
        ways = torch.arange(n, device=self.device)
        support_labels = ways.repeat_interleave(self.k_shot).expand(b, -1)
        query_labels = ways.repeat_interleave(self.q_query).expand(b, -1)
        images = self.data.images
        return Episodes(images[support_index], support_labels.contiguous(), images[query_index],
                        query_labels.contiguous(), classes, support_index, query_index)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.generator.set_state(state["generator"])

    def hard_classes(self, failures: torch.Tensor, meta_batch: int) -> torch.Tensor:
        """Classes (B, N) for a hard-task meta-batch (Sun et al. 2019): each episode takes as many
        distinct failure classes as it can (in random order) and fills up with random others."""
        pool = torch.zeros(self.data.num_classes, device=self.device)
        pool[failures.to(self.device)] = 1.0
        keys = torch.rand(meta_batch, self.data.num_classes, generator=self.generator, device=self.device)
        return (keys + pool).argsort(dim=1, descending=True)[:, : self.n_way]
