"""The three device graphs, described as data and produced by tracing the trainer's own code.

`adapt_step.onnx` is `pipeline.meta.inner.inner_step` itself — the function meta-training and
evaluation call — traced with `make_fx` into core ATen ops (torch.onnx cannot export a graph that
calls `torch.func.grad` directly) and exported with the dynamo ONNX exporter. Shapes N (classes),
M (support examples) and B (batch) stay symbolic, so one bundle serves any number of classes.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import onnx
import torch
import torch.nn.functional as F
from torch._decomp import core_aten_decompositions
from torch.export import Dim
from torch.fx.experimental.proxy_tensor import make_fx

from mtl.exporters.deploy_model import DeployModel
from mtl.pipeline.meta.inner import inner_step


@dataclass(frozen=True)
class GraphSpec:
    """Name, file and typed, symbolically-shaped inputs and outputs of one device graph."""

    name: str
    inputs: tuple[tuple[str, tuple[int | str, ...], str], ...]
    outputs: tuple[tuple[str, tuple[int | str, ...], str], ...]

    @property
    def file(self) -> str:
        return f"{self.name}.onnx"

    def to_manifest(self) -> dict:
        io_ = {"inputs": self.inputs, "outputs": self.outputs}
        return {"file": self.file, **{k: [{"name": n, "shape": list(s), "dtype": d} for n, s, d in v]
                                      for k, v in io_.items()}}


def graph_specs(dm: DeployModel) -> dict[str, GraphSpec]:
    c, s, d = dm.input_spec.channels, dm.input_spec.size, dm.feature_dim
    head = (("weight", ("N", d), "float32"), ("bias", ("N",), "float32"))
    return {
        "embed": GraphSpec("embed", (("images", ("B", c, s, s), "float32"),), (("features", ("B", d), "float32"),)),
        "adapt_step": GraphSpec("adapt_step", head + (("features", ("M", d), "float32"), ("labels", ("M",), "int64"),
                                                      ("lr_weight", (1, d), "float32"), ("lr_bias", (1,), "float32")),
                                (("new_weight", ("N", d), "float32"), ("new_bias", ("N",), "float32"),
                                 ("loss", (), "float32"))),
        "predict": GraphSpec("predict", head + (("features", ("B", d), "float32"),),
                             (("probabilities", ("B", "N"), "float32"),)),
    }


def adapt_step_fn(dm: DeployModel) -> Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(W, b, features, labels, lr_W, lr_b) → (W', b', loss): ONE first-order `inner_step` of the head."""
    learner = dm.learner
    p = {n: t.detach() for n, t in learner.named_parameters()}

    def loss_fn(fast: dict[str, torch.Tensor], feats: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return learner.task_loss(learner.head_logits(p, fast, feats), labels)

    def step(weight, bias, features, labels, lr_weight, lr_bias):  # noqa: ANN001, ANN202 (traced)
        new, loss = inner_step({"head.weight": weight, "head.bias": bias}, features, labels,
                               {"head.weight": lr_weight, "head.bias": lr_bias}, loss_fn=loss_fn, first_order=True)
        return new["head.weight"], new["head.bias"], loss

    return step


def predict_fn(dm: DeployModel) -> Callable[..., torch.Tensor]:
    """(W, b, features) → class probabilities, with the learner's own head maths."""
    learner = dm.learner
    p = {n: t.detach() for n, t in learner.named_parameters()}

    def predict(weight, bias, features):  # noqa: ANN001, ANN202 (traced)
        return F.softmax(learner.head_logits(p, {"head.weight": weight, "head.bias": bias}, features), dim=-1)

    return predict


def example_inputs(spec: GraphSpec, sizes: dict[str, int], seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Random inputs of `spec` with symbolic sizes set from `sizes` (labels cover every class)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for name, shape, dtype in spec.inputs:
        dims = [sizes[x] if isinstance(x, str) else x for x in shape]
        if dtype == "int64":
            out.append(torch.arange(dims[0]) % sizes["N"])
        elif name.startswith("lr_"):
            out.append(torch.full(dims, 0.1))
        else:
            out.append(torch.randn(*dims, generator=g))
    return tuple(out)


def export_graph(fn: Callable | torch.nn.Module, spec: GraphSpec, args: tuple[torch.Tensor, ...],
                 opset: int, trace: bool) -> onnx.ModelProto:
    """Export `fn` (traced to core ATen first when `trace`) with `spec`'s names and dynamic axes."""
    dims: dict[str, Dim] = {}
    dynamic = tuple({i: dims.setdefault(a, Dim(a)) for i, a in enumerate(shape) if isinstance(a, str)} or None
                    for _, shape, _ in spec.inputs)
    module = make_fx(fn, decomposition_table=core_aten_decompositions(), tracing_mode="symbolic",
                     _allow_non_fake_inputs=True)(*args) \
        if trace else fn
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module, args, dynamo=True, opset_version=opset, verbose=False,
                                    input_names=[n for n, _, _ in spec.inputs],
                                    output_names=[n for n, _, _ in spec.outputs], dynamic_shapes=dynamic)
    return program.model_proto
