"""MAML (Finn et al. 2017, "Model-Agnostic Meta-Learning for Fast Adaptation of Deep Networks").

The inner loop adapts every parameter (`--adapt all`) on the support set; the outer loop minimises
the adapted model's query loss, differentiating through the inner loop (second order), or not
with `--first-order` (FOMAML, §5.2 of the paper).
"""

from mtl.pipeline.algorithms.base import Algorithm, gradient_update

ALGORITHM = Algorithm(name="maml", adapt="all", update=gradient_update, paper="Finn et al. 2017")
