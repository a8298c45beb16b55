"""MAML (Finn et al. 2017, "Model-Agnostic Meta-Learning for Fast Adaptation of Deep Networks").

The inner loop adapts every parameter (`--adapt all`) on the support set; the outer loop minimises
the adapted model's query loss, differentiating through the inner loop (second order), or not
with `--first-order` (FOMAML, §5.2 of the paper). Sine-wave regression (§5.1) with `--data sinusoid`.
"""

from mtl.pipeline.algorithms import register_algorithm
from mtl.pipeline.meta.algorithm import Algorithm


@register_algorithm
class MAML(Algorithm):
    name = "maml"
    paper = "Finn et al. 2017"
    inner = "all"
    regression = True
