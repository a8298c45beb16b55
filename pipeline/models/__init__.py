"""Models: a backbone registry (Conv-4, ResNet-12, torchvision ResNet-18 / MobileNetV3-Small), heads
(linear, cosine), and `FewShotModel` = backbone + head, rebuilt from a JSON `ModelSpec`.

Importing this package registers every built-in backbone.
"""

from mtl.pipeline.models import conv4 as _conv4  # noqa: F401  (registers "conv4")
from mtl.pipeline.models import mlp as _mlp  # noqa: F401  (registers "mlp")
from mtl.pipeline.models import resnet12 as _resnet12  # noqa: F401  (registers "resnet12")
from mtl.pipeline.models import torchvision_backbones as _tv  # noqa: F401  (registers torchvision backbones)
from mtl.pipeline.models.heads import HEADS, CosineHead, LinearHead, build_head
from mtl.pipeline.models.model import FewShotModel, ModelSpec, build_model
from mtl.pipeline.models.registry import BACKBONES, Registry, build_backbone, register_backbone
from mtl.pipeline.models.scale_shift import ScaleShiftConv2d, add_scale_shift, fold_scale_shift

__all__ = [
    "BACKBONES",
    "HEADS",
    "CosineHead",
    "FewShotModel",
    "LinearHead",
    "ModelSpec",
    "Registry",
    "ScaleShiftConv2d",
    "add_scale_shift",
    "build_backbone",
    "build_head",
    "build_model",
    "fold_scale_shift",
    "register_backbone",
]
