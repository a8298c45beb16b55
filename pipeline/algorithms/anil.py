"""ANIL (Raghu et al. 2020, "Rapid Learning or Feature Reuse?"): Almost No Inner Loop.

The inner loop adapts the head only, on features computed once per task; the outer loop updates
the body and the head initialisation through the adapted head.
"""

from mtl.pipeline.algorithms.base import Algorithm, gradient_update

ALGORITHM = Algorithm(name="anil", adapt="head", update=gradient_update, paper="Raghu et al. 2020")
