"""Scaling and shifting (Sun et al. 2019) leaves a frozen backbone's function intact until it learns."""

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from mtl.pipeline.errors import ConfigError
from mtl.pipeline.models import ScaleShiftConv2d, add_scale_shift, build_backbone, fold_scale_shift

SMALL = {  # name -> (options, image size): tiny but complete versions of the image backbones
    "conv4": ({"width": 8}, 16),
    "resnet12": ({"channels": [8, 8, 8, 8]}, 16),
    "resnet18": ({}, 16),
    "mobilenet_v3_small": ({}, 16),
}


def small(name: str) -> tuple[nn.Module, torch.Tensor]:
    options, size = SMALL[name]
    return build_backbone(name, in_channels=3, image_size=size, **options), torch.rand(2, 3, size, size)


def randomise(backbone: nn.Module) -> None:
    with torch.no_grad():
        for m in backbone.modules():
            if isinstance(m, ScaleShiftConv2d):
                m.scale.uniform_(0.5, 1.5)
                m.shift.normal_(0.0, 0.1)


@pytest.mark.parametrize("name", list(SMALL))
def test_every_conv_is_wrapped_and_the_output_is_unchanged_at_init(name):
    backbone, x = small(name)
    backbone.eval()
    n_convs = sum(isinstance(m, nn.Conv2d) for m in backbone.modules())
    expected = backbone(x)
    names = add_scale_shift(backbone)
    wrappers = [m for m in backbone.modules() if isinstance(m, ScaleShiftConv2d)]
    assert len(wrappers) == n_convs and len(names) == 2 * n_convs
    bare = [m for m in backbone.modules() if isinstance(m, nn.Conv2d)]
    assert len(bare) == n_convs and all(any(w.conv is c for w in wrappers) for c in bare)
    assert torch.equal(backbone(x), expected)


@pytest.mark.parametrize("name", list(SMALL))
def test_folding_gives_plain_convs_with_the_same_output(name):
    backbone, x = small(name)
    add_scale_shift(backbone)
    randomise(backbone)
    backbone.eval()
    folded = fold_scale_shift(backbone)
    assert not any(isinstance(m, ScaleShiftConv2d) for m in folded.modules())
    torch.testing.assert_close(folded(x), backbone(x), rtol=1e-6, atol=1e-6)
    assert any(isinstance(m, ScaleShiftConv2d) for m in backbone.modules())  # the original is untouched


def test_only_scale_and_shift_learn_and_gradients_reach_them():
    backbone, x = small("conv4")
    names = add_scale_shift(backbone)
    trainable = [n for n, p in backbone.named_parameters() if p.requires_grad]
    assert sorted(trainable) == sorted(names)
    assert all(n.endswith((".scale", ".shift")) for n in names)
    backbone(x).square().sum().backward()
    for n, p in backbone.named_parameters():
        if n in names:
            assert p.grad is not None and p.grad.abs().sum() > 0, n
        else:
            assert p.grad is None, n


def test_state_dict_keeps_the_original_conv_weights_under_conv_weight():
    backbone, _ = small("conv4")
    original = {k: v.clone() for k, v in backbone.state_dict().items()}
    add_scale_shift(backbone)
    state = backbone.state_dict()
    assert torch.equal(state["blocks.0.0.conv.weight"], original["blocks.0.0.weight"])
    assert torch.equal(state["blocks.0.0.scale"], torch.ones(8))
    assert torch.equal(state["blocks.0.0.shift"], torch.zeros(8))
    assert torch.equal(state["blocks.0.1.running_var"], original["blocks.0.1.running_var"])


def test_functional_call_uses_the_given_scale_and_shift():
    backbone, x = small("conv4")
    names = add_scale_shift(backbone)
    backbone.eval()
    params = {n: torch.rand_like(backbone.get_parameter(n)) + 0.5 for n in names}
    got = functional_call(backbone, params, (x,))
    with torch.no_grad():
        for n, t in params.items():
            backbone.get_parameter(n).copy_(t)
    torch.testing.assert_close(got, backbone(x))


def test_torch_func_grad_and_vmap_over_tasks_reach_scale_and_shift():
    backbone, _ = small("conv4")
    names = add_scale_shift(backbone)
    backbone.eval()  # frozen BatchNorm statistics: nothing is written under vmap
    params = {n: backbone.get_parameter(n).detach() for n in names}

    def loss(p, x):  # one task: x (M, C, H, W)
        return functional_call(backbone, p, (x,)).square().mean()

    tasks = torch.rand(3, 2, 3, 16, 16)  # (B, M, C, H, W)
    grads = vmap(grad(loss), in_dims=(None, 0))(params, tasks)
    for n in names:
        assert grads[n].shape == (3, *params[n].shape)
        torch.testing.assert_close(grads[n][1], grad(loss)(params, tasks[1])[n], rtol=1e-4, atol=1e-6)


def test_a_conv_with_a_bias_keeps_it_and_adds_the_shift():
    net = nn.Sequential(nn.Conv2d(2, 4, 3, stride=2, padding=1, bias=True), nn.ReLU(),
                        nn.Conv2d(4, 4, 3, groups=2, dilation=2))
    x = torch.rand(2, 2, 12, 12)
    expected = net(x)
    add_scale_shift(net)
    assert torch.equal(net(x), expected)
    randomise(net)
    torch.testing.assert_close(fold_scale_shift(net)(x), net(x), rtol=1e-6, atol=1e-6)
    layer = net[0]
    with torch.no_grad():
        layer.scale.fill_(2.0)
        layer.shift.fill_(0.5)
        bias = layer.conv.bias[:, None, None]
        torch.testing.assert_close(layer(x), 2.0 * (layer.conv(x) - bias) + bias + 0.5)


def test_wrapping_twice_wraps_nothing_new():
    backbone, _ = small("conv4")
    first = add_scale_shift(backbone)
    assert add_scale_shift(backbone) == first
    assert not any(isinstance(m.conv, ScaleShiftConv2d) for m in backbone.modules()
                   if isinstance(m, ScaleShiftConv2d))


def test_a_backbone_without_convs_raises_a_config_error():
    with pytest.raises(ConfigError, match="no nn.Conv2d"):
        add_scale_shift(build_backbone("mlp", in_channels=1, image_size=1))
    with pytest.raises(ConfigError, match="bare nn.Conv2d"):
        add_scale_shift(nn.Conv2d(1, 1, 3))
    with pytest.raises(ConfigError, match="padding_mode 'reflect'"):
        add_scale_shift(nn.Sequential(nn.Conv2d(1, 1, 3, padding=1, padding_mode="reflect")))
