"""Task sources for meta-training: meta-batches of episodes as float `TaskBatch`es on the device."""

from __future__ import annotations

import torch

from mtl.pipeline.data.class_images import ClassImages
from mtl.pipeline.data.sampler import Episodes, EpisodeSampler
from mtl.pipeline.meta.batch import TaskBatch
from mtl.pipeline.train.common import normalize


def to_task_batch(episodes: Episodes, data: ClassImages, n_way: int) -> TaskBatch:
    """uint8 episodes → normalised float task batch (same preprocessing as pretraining)."""
    return TaskBatch(normalize(episodes.support, data.spec), episodes.support_labels,
                     normalize(episodes.query, data.spec), episodes.query_labels, episodes.classes, n_way)


class ImageTasks:
    """N-way K-shot episodes of a `ClassImages` already on the training device."""

    def __init__(self, data: ClassImages, ways: int, shots: int, queries: int, meta_batch: int, seed: int,
                 part: slice | None = None) -> None:
        """`part`: the tasks of each meta-batch this process trains on (a distributed rank's slice)."""
        self.data, self.part = data, part
        self.sampler = EpisodeSampler(data, ways, shots, queries, meta_batch=meta_batch, seed=seed)

    def sample(self) -> TaskBatch:
        return to_task_batch(self.sampler.sample(tasks=self.part), self.data, self.sampler.n_way)

    def hard(self, failures: torch.Tensor) -> TaskBatch:
        """A meta-batch re-sampled from the classes the model got most wrong (Sun et al. 2019)."""
        classes = self.sampler.hard_classes(failures, self.sampler.meta_batch)
        return to_task_batch(self.sampler.sample(classes=classes, tasks=self.part), self.data, self.sampler.n_way)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.sampler.load_state_dict(state)


class RegressionTasks:
    """Sine-wave regression tasks (MAML §5.1) as task batches."""

    def __init__(self, shots: int, queries: int, meta_batch: int, seed: int, device: torch.device,
                 part: slice | None = None) -> None:
        from mtl.pipeline.data.sinusoid import SinusoidTasks

        self.part = part
        self.sampler = SinusoidTasks(shots, queries, meta_batch=meta_batch, seed=seed, device=device)

    def sample(self, meta_batch: int | None = None) -> TaskBatch:
        e = self.sampler.sample(meta_batch)
        batch = TaskBatch(e.support, e.support_labels, e.query, e.query_labels, e.classes, 1)
        return batch if self.part is None else batch.part(self.part)

    def hard(self, failures: torch.Tensor) -> TaskBatch:
        return self.sample()

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.sampler.load_state_dict(state)
