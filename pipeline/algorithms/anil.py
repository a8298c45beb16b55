"""ANIL (Raghu et al. 2020, "Rapid Learning or Feature Reuse?"): Almost No Inner Loop.

The inner loop adapts the head only, on features computed once per task; the outer loop updates
the body and the head initialisation through the adapted head.
"""

from mtl.pipeline.algorithms import register_algorithm
from mtl.pipeline.meta.algorithm import Algorithm


@register_algorithm
class ANIL(Algorithm):
    name = "anil"
    paper = "Raghu et al. 2020"
    inner = "head"
