"""Meta-learning algorithms: one small module each, all sharing `inner_adapt` and one training loop."""

from mtl.pipeline.algorithms import anil, joint, maml, metasgd, mtl, protonet, reptile
from mtl.pipeline.algorithms.base import Algorithm, Hyper, TaskBatch
from mtl.pipeline.algorithms.inner import inner_adapt, inner_step
from mtl.pipeline.algorithms.learner import LearnerSpec, MetaLearner
from mtl.pipeline.errors import ConfigError

ALGORITHMS: dict[str, Algorithm] = {m.ALGORITHM.name: m.ALGORITHM
                                    for m in (maml, reptile, metasgd, anil, protonet, mtl, joint)}


def get_algorithm(name: str) -> Algorithm:
    """The algorithm registered as `name`; an unknown name lists the valid ones."""
    if name not in ALGORITHMS:
        raise ConfigError(f"unknown algorithm {name!r}; choose from {', '.join(ALGORITHMS)}")
    return ALGORITHMS[name]


__all__ = ["ALGORITHMS", "Algorithm", "Hyper", "LearnerSpec", "MetaLearner", "TaskBatch", "get_algorithm",
           "inner_adapt", "inner_step"]
