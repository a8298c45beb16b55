"""The standard-op translations of the convolution and max-pool gradients (`exporters.gradients`) agree with
PyTorch's autograd, including the strided, padded and dilated cases and a pool that drops the last row."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mtl.exporters.gradients import convolution_backward, max_pool2d_backward
from tests.tolerance import assert_float_close

CONVS = [dict(stride=1, padding=1, dilation=1), dict(stride=2, padding=1, dilation=1),
         dict(stride=2, padding=0, dilation=1), dict(stride=1, padding=2, dilation=2)]


@pytest.mark.parametrize("conv", CONVS, ids=lambda c: "s{stride}p{padding}d{dilation}".format(**c))
def test_the_convolution_gradient_in_forward_convolutions_matches_autograd(conv):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 9, 8, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 4, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, generator=g, dtype=torch.float64, requires_grad=True)
    y = F.conv2d(x, w, b, **conv)
    dy = torch.randn(y.shape, generator=g, dtype=torch.float64)
    want = torch.autograd.grad(y, (x, w, b), dy)
    s, p, d = ([conv[k]] * 2 for k in ("stride", "padding", "dilation"))
    got = convolution_backward(dy, x.detach(), w.detach(), [5], s, p, d, False, [0, 0], 1, [True, True, True])
    for name, a, e in zip(("input", "weight", "bias"), got, want, strict=True):
        assert a.shape == e.shape, name
        assert_float_close(a, e, dtype=np.float64)


@pytest.mark.parametrize("pool", [dict(kernel_size=2, stride=2, padding=0), dict(kernel_size=3, stride=2, padding=1)],
                         ids=["2x2", "3x3-overlapping"])
def test_the_max_pool_gradient_scattered_at_the_indices_matches_autograd(pool):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 7, 7, generator=g, dtype=torch.float64, requires_grad=True)  # odd: floor drops a row
    y, indices = F.max_pool2d(x, return_indices=True, **pool)
    dy = torch.randn(y.shape, generator=g, dtype=torch.float64)
    (want,) = torch.autograd.grad(y, x, dy)
    k, s, p = ([pool[key]] * 2 for key in ("kernel_size", "stride", "padding"))
    got = max_pool2d_backward(dy, x.detach(), k, s, p, [1, 1], False, indices)
    assert_float_close(got, want, dtype=np.float64)


def test_a_transposed_convolution_gradient_is_refused_not_guessed():
    x, w = torch.zeros(1, 2, 4, 4), torch.zeros(2, 2, 3, 3)
    with pytest.raises(NotImplementedError, match="non-transposed"):
        convolution_backward(x, x, w, None, [1, 1], [0, 0], [1, 1], True, [0, 0], 1, [True, False, False])
