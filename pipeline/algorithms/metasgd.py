"""Meta-SGD (Li et al. 2017, "Meta-SGD: Learning to Learn Quickly for Few-Shot Learning").

MAML whose inner step sizes are learned too: one step size per parameter entry (for the head, per
feature, shared across classes so any N works), meta-learned with the initialisation.
"""

from mtl.pipeline.algorithms.base import Algorithm, gradient_update

ALGORITHM = Algorithm(name="metasgd", adapt="all", update=gradient_update, learn_lr=True, paper="Li et al. 2017")
