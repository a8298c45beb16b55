"""Meta-SGD (Li et al. 2017, "Meta-SGD: Learning to Learn Quickly for Few-Shot Learning").

MAML whose inner step sizes are learned too: one step size per parameter entry (for the head, per
feature, shared across classes so any N works), meta-learned with the initialisation.
"""

from mtl.pipeline.algorithms import register_algorithm
from mtl.pipeline.meta.algorithm import Algorithm


@register_algorithm
class MetaSGD(Algorithm):
    name = "metasgd"
    paper = "Li et al. 2017"
    inner = "all"
    learn_lr = True
    regression = True
