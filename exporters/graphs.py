"""The device graphs, produced by tracing the trainer's own code, with the interfaces the schema defines
(`device_runtime.schema.graph_io`).

`init_head.onnx` is the training head's own initialisation (`TaskHead.init`), and `adapt_step.onnx` is
`pipeline.meta.inner.inner_step` itself — the function meta-training and evaluation call — each traced with
`make_fx` into core ATen ops (torch.onnx cannot export a graph that calls `torch.func.grad` directly) and
exported with the dynamo ONNX exporter. Shapes N (classes), M (support examples) and B (batch) stay symbolic,
so one bundle serves any number of classes.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Callable

import onnx
import torch
import torch.nn.functional as F
from torch._decomp import core_aten_decompositions
from torch.export import Dim
from torch.fx.experimental.proxy_tensor import make_fx

from mtl.device_runtime.schema import GraphIO, graph_io
from mtl.exporters.deploy_model import DeployModel
from mtl.exporters.gradients import backward_translations
from mtl.pipeline.meta.inner import inner_step

GraphFn = Callable[..., torch.Tensor | tuple[torch.Tensor, ...]]


def graph_interfaces(dm: DeployModel) -> dict[str, GraphIO]:
    return graph_io(dm.input_spec.channels, dm.input_spec.size, dm.feature_dim, dm.learner.state_size, dm.context)


def graph_functions(dm: DeployModel) -> dict[str, tuple[GraphFn | torch.nn.Module, bool]]:
    """name → (what computes the graph, whether it is traced to core ATen first)."""
    graphs = {"embed": (dm.body, False), "init_head": (init_head_fn(dm), True),
              "adapt_step": (adapt_step_fn(dm), True), "predict": (predict_fn(dm), True)}
    if dm.context is not None:
        learner, p = dm.learner, _meta(dm)
        graphs["embed_prefix"] = (lambda images: learner.context_prefix(p, images), True)
        graphs["context_step"] = (context_step_fn(dm), True)
        graphs["embed_suffix"] = (lambda hidden, context: learner.context_suffix(p, hidden, context), True)
    return graphs


def _meta(dm: DeployModel) -> dict[str, torch.Tensor]:
    return {n: t.detach() for n, t in dm.learner.named_parameters()}


def init_head_fn(dm: DeployModel) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    """(features (M, D), onehot (M, N)) → (W (N, D), b (N,)): the head's own initialisation rule."""
    head, p = dm.learner.head, dm.learner.head_params(_meta(dm))

    def init(features, onehot):  # noqa: ANN001, ANN202 (traced)
        fast = head.init(p, features, onehot)
        return fast["head.weight"], fast["head.bias"]

    return init


def adapt_step_fn(dm: DeployModel) -> Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(W, b, features, labels, lr_W, lr_b) → (W', b', loss): ONE first-order `inner_step` of the head."""
    learner, p = dm.learner, _meta(dm)

    def loss_fn(fast: dict[str, torch.Tensor], feats: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return learner.task_loss(learner.head_logits(p, fast, feats), labels)

    if learner.state_size:  # a learned update rule: the learner's own step, with each entry's state in and out
        def learned(weight, bias, features, labels, state_weight, state_bias):  # noqa: ANN001, ANN202 (traced)
            new, state, loss = learner.learned_step(p, {"head.weight": weight, "head.bias": bias},
                                                    {"head.weight": state_weight, "head.bias": state_bias},
                                                    features, labels, loss_fn)
            return new["head.weight"], new["head.bias"], loss, state["head.weight"], state["head.bias"]

        return learned

    def step(weight, bias, features, labels, lr_weight, lr_bias):  # noqa: ANN001, ANN202 (traced)
        new, loss = inner_step({"head.weight": weight, "head.bias": bias}, features, labels,
                               {"head.weight": lr_weight, "head.bias": lr_bias}, loss_fn=loss_fn, first_order=True)
        return new["head.weight"], new["head.bias"], loss

    return step


def context_step_fn(dm: DeployModel) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    """(hidden, labels, onehot, φ, lr) → (φ', loss at φ): ONE `inner_step` of the context on the support set's
    hidden activations, with the learner's own support loss (`CAMLLearner.context_loss`). The gradient is exact:
    `first_order` only drops the second-order term the outer loop would need."""
    learner, p = dm.learner, _meta(dm)

    def step(hidden, labels, onehot, context, lr_context):  # noqa: ANN001, ANN202 (traced)
        def loss_fn(fast: dict[str, torch.Tensor], h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return learner.context_loss(p, h, fast["context"], onehot, y)

        new, loss = inner_step({"context": context}, hidden, labels, {"context": lr_context}, loss_fn=loss_fn,
                               first_order=True)
        return new["context"], loss

    return step


def predict_fn(dm: DeployModel) -> Callable[..., torch.Tensor]:
    """(W, b, features) → class log-probabilities, with the learner's own head maths (at temperature 1: the runtime
    applies the manifest's calibration, which depends on the task's N and K). Log-probabilities, not probabilities:
    a sharpening temperature (T < 1) must see the differences that float32 probabilities lose to underflow."""
    learner, p = dm.learner, _meta(dm)

    def predict(weight, bias, features):  # noqa: ANN001, ANN202 (traced)
        return F.log_softmax(learner.head_logits(p, {"head.weight": weight, "head.bias": bias}, features), dim=-1)

    return predict


def example_inputs(spec: GraphIO, sizes: dict[str, int], seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Random inputs of `spec` with symbolic sizes set from `sizes` (labels cover every class)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for tensor in spec.inputs:
        dims = [sizes[x] if isinstance(x, str) else x for x in tensor.shape]
        if tensor.dtype == "int64":
            out.append(torch.arange(dims[0]) % sizes["N"])
        elif tensor.name == "onehot":
            out.append(F.one_hot(torch.arange(dims[0]) % sizes["N"], sizes["N"]).float())
        elif tensor.name.startswith("lr_"):
            out.append(torch.full(dims, 0.1))
        else:
            out.append(torch.randn(*dims, generator=g))
    return tuple(out)


_aten = torch.ops.aten
_SCALAR_OPS = {_aten.mul.Scalar: _aten.mul.Tensor, _aten.div.Scalar: _aten.div.Tensor,
               _aten.add.Scalar: _aten.add.Tensor, _aten.sub.Scalar: _aten.sub.Tensor}


def _tensor_scalars(module: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """A `.Scalar` arithmetic op whose scalar is symbolic (a function of a dynamic axis: the batch-statistics
    gradient's 1/(M·H·W)) as its `.Tensor` form, which the ONNX exporter translates (its `.Scalar` form takes a
    constant only)."""
    for node in module.graph.nodes:
        if node.op == "call_function" and node.target in _SCALAR_OPS and isinstance(node.args[1], torch.fx.Node):
            node.target = _SCALAR_OPS[node.target]
    module.recompile()
    return module


def export_graph(fn: GraphFn | torch.nn.Module, spec: GraphIO, args: tuple[torch.Tensor, ...], opset: int,
                 trace: bool) -> onnx.ModelProto:
    """Export `fn` (traced to core ATen first when `trace`) with `spec`'s names and dynamic axes."""
    dims: dict[str, Dim] = {}
    dynamic = tuple({i: dims.setdefault(a, Dim(a)) for i, a in enumerate(t.shape) if isinstance(a, str)} or None
                    for t in spec.inputs)
    module = _tensor_scalars(make_fx(fn, decomposition_table={**core_aten_decompositions(), **backward_translations()},
                                     tracing_mode="symbolic", _allow_non_fake_inputs=True)(*args)) if trace else fn
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module, args, dynamo=True, opset_version=opset, verbose=False,
                                    input_names=[t.name for t in spec.inputs],
                                    output_names=[t.name for t in spec.outputs], dynamic_shapes=dynamic)
    return program.model_proto
