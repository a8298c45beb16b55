"""Meta-Transfer Learning (Sun, Liu, Chua & Schiele, CVPR 2019).

Requires a pretrained extractor (`--init` from `mtl pretrain`). Its weights Θ stay frozen (and its
BatchNorm keeps the pretrained statistics); per-channel scaling Φ_S1 (init 1) and shifting Φ_S2
(init 0) modulate every convolution. The classifier is adapted in the inner loop on features; Φ
and the classifier's initialisation are meta-learned in the outer loop. The hard-task meta-batch
(re-sampling each task's worst class) is the training loop's `--hard-tasks` option.
"""

from mtl.pipeline.algorithms.base import Algorithm, gradient_update

ALGORITHM = Algorithm(name="mtl", adapt="head", update=gradient_update, scale_shift=True, needs_init=True,
                      paper="Sun et al. 2019")
