"""Meta-learning algorithms: one small module each, all sharing `inner_adapt` and one training loop."""

from pipeline.algorithms import anil, joint, maml, metasgd, mtl, protonet, reptile
from pipeline.algorithms.base import Algorithm, Hyper, TaskBatch
from pipeline.algorithms.inner import inner_adapt, inner_step
from pipeline.algorithms.learner import LearnerSpec, MetaLearner
from pipeline.errors import ConfigError

ALGORITHMS: dict[str, Algorithm] = {m.ALGORITHM.name: m.ALGORITHM
                                    for m in (maml, reptile, metasgd, anil, protonet, mtl, joint)}


def get_algorithm(name: str) -> Algorithm:
    """The algorithm registered as `name`; an unknown name lists the valid ones."""
    if name not in ALGORITHMS:
        raise ConfigError(f"unknown algorithm {name!r}; choose from {', '.join(ALGORITHMS)}")
    return ALGORITHMS[name]


__all__ = ["ALGORITHMS", "Algorithm", "Hyper", "LearnerSpec", "MetaLearner", "TaskBatch", "get_algorithm",
           "inner_adapt", "inner_step"]
