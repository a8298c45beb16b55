"""Meta-Transfer Learning (Sun, Liu, Chua & Schiele, CVPR 2019).

Requires a pretrained extractor (`--init` from `mtl pretrain`). Its weights Θ stay frozen (and its
BatchNorm keeps the pretrained statistics); per-channel scaling Φ_S1 (init 1) and shifting Φ_S2
(init 0) modulate every convolution. The classifier is adapted in the inner loop on features; Φ
and the classifier's initialisation are meta-learned in the outer loop. The hard-task meta-batch
(re-sampling each task's worst class) is the training loop's `--hard-tasks` option. On a device the scale
and shift are folded into the convolutions.
"""

from mtl.pipeline.algorithms import register_algorithm
from mtl.pipeline.meta.algorithm import Algorithm


@register_algorithm
class MTL(Algorithm):
    name = "mtl"
    paper = "Sun et al. 2019"
    inner = "head"
    scale_shift = True
    needs_init = True
    recipes = {"": {"inner_lr": 0.1}}
