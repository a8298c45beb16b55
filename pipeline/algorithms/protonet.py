"""Prototypical Networks (Snell et al. 2017): no inner loop; queries go to the nearest class mean.

The outer loop trains the body so that the squared Euclidean distance to support prototypes
classifies the queries (`MetaLearner.task_outputs` with `adapt="proto"`).
"""

from mtl.pipeline.algorithms.base import Algorithm, gradient_update

ALGORITHM = Algorithm(name="protonet", adapt="proto", update=gradient_update, paper="Snell et al. 2017")
