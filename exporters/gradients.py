"""Standard-op translations of the two backward operators torch's ONNX exporter has none for.

A graph that differentiates through convolutions and max-pooling (CAML's context step: the gradient of the
support loss with respect to a context vector that enters the extractor) traces, under `make_fx`, into
`aten.convolution_backward` and `aten.max_pool2d_with_indices_backward`. Neither has an ONNX translation, so
the exporter traces with these decompositions added to the core-ATen table; each rewrites the gradient with
forward ops that export to standard ONNX:

- the gradient of a convolution's input is the transposed convolution of the output's gradient with the same
  weight (ConvTranspose), its output padding restoring the rows and columns a strided forward dropped; the
  weight's gradient is a convolution of the input with the output's gradient, batch and channel axes swapped
  (Conv); the bias's is a sum;
- the gradient of a max-pool sends each output's gradient to the input position its maximum came from: the
  forward's indices (flat positions in each H×W plane) scatter-added into zeros (ScatterElements, add).

`tests/exporters/test_gradients.py` checks both against PyTorch's autograd, and every exported graph is
checked against PyTorch on a second input shape at export time (`exporters.bundle_export`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

aten = torch.ops.aten


def convolution_backward(grad_output: torch.Tensor, input: torch.Tensor, weight: torch.Tensor,  # noqa: A002
                         bias_sizes: Sequence[int] | None, stride: Sequence[int], padding: Sequence[int],
                         dilation: Sequence[int], transposed: bool, output_padding: Sequence[int], groups: int,
                         output_mask: Sequence[bool]) -> tuple[torch.Tensor | None, ...]:
    """`aten.convolution_backward` of a 2-D (not transposed) convolution, in forward convolutions."""
    if transposed or input.dim() != 4:
        raise NotImplementedError("only the gradient of a 2-D, non-transposed convolution has a translation")
    kernel = weight.shape[2:]
    grad_input = grad_weight = grad_bias = None
    if output_mask[0]:
        # the rows/columns of the input the strided forward never reached: ConvTranspose's output padding
        extra = [int(input.shape[2 + i]) - ((int(grad_output.shape[2 + i]) - 1) * stride[i] - 2 * padding[i]
                                            + dilation[i] * (int(kernel[i]) - 1) + 1) for i in range(2)]
        grad_input = aten.convolution(grad_output, weight, None, stride, padding, dilation, True, extra, groups)
    if output_mask[1]:
        if groups != 1:
            raise NotImplementedError("the weight gradient of a grouped convolution has no translation")
        # dW[o, i, a, b] = Σ_n,y,x dY[n, o, y, x] · X[n, i, y·s + a·d − p, x·s + b·d − p]: a convolution over the
        # batch axis of X (as channels) with dY (as filters), stride and dilation exchanging roles
        swapped = aten.convolution(input.transpose(0, 1), grad_output.transpose(0, 1), None, dilation, padding,
                                   stride, False, [0, 0], 1)
        grad_weight = swapped.transpose(0, 1)[:, :, :int(kernel[0]), :int(kernel[1])]
    if output_mask[2]:
        grad_bias = grad_output.sum(dim=(0, 2, 3))
    return grad_input, grad_weight, grad_bias


def max_pool2d_backward(grad_output: torch.Tensor, input: torch.Tensor, kernel_size: Sequence[int],  # noqa: A002
                        stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int], ceil_mode: bool,
                        indices: torch.Tensor) -> torch.Tensor:
    """`aten.max_pool2d_with_indices_backward`: each output's gradient added at the flat H×W position (per
    sample and channel) its maximum came from."""
    n, c = input.shape[:2]
    planes = input.new_zeros(n, c, input.shape[2] * input.shape[3])
    return planes.scatter_add(2, indices.flatten(2), grad_output.flatten(2)).view(input.shape)


def backward_translations() -> dict:
    """The decompositions to add to the core-ATen table when tracing a graph that differentiates images."""
    return {aten.convolution_backward.default: convolution_backward,
            aten.max_pool2d_with_indices_backward.default: max_pool2d_backward}
