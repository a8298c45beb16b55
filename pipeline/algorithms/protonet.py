"""Prototypical Networks (Snell et al. 2017): no inner loop; queries go to the nearest class mean.

The outer loop trains the body so that the squared Euclidean distance to support prototypes classifies
the queries (the `prototype` head). On a device it is the proto-initialised linear head, which classifies
the same at step 0.
"""

from mtl.pipeline.algorithms import register_algorithm
from mtl.pipeline.meta.algorithm import Algorithm


@register_algorithm
class ProtoNet(Algorithm):
    name = "protonet"
    paper = "Snell et al. 2017"
    inner = "head"
    head = "prototype"
