"""The names of the deploy bundle's schema, each defined once (torch-free, numpy-free: the CLI imports it to
offer its choices): the schema version, the graphs and their exact interfaces, head types and initialisation
rules, the operator domains a graph may use, and the range of every manifest number.

The exporter writes bundles from these definitions, `device_runtime.manifest` checks manifests against them,
and the training side validates its heads with them (docs/bundle.md describes the format).
"""

from __future__ import annotations

from dataclasses import dataclass

SCHEMA = "mtl-bundle/3"  # /1 had no init_head graph (the device initialised the head with its own copy of the rule);
# /2's predict gave probabilities, which underflow in float32 before a sharpening temperature (T < 1) could read them
MANIFEST = "manifest.json"
CLASSIFIER_HEADS = ("linear", "cosine")  # the heads a user chooses for pretraining and meta-training (--head)
# the heads a bundle carries (a prototype head ships as its linear form; the siamese head is the siamese method's)
HEAD_TYPES = (*CLASSIFIER_HEADS, "siamese")
HEAD_INITS = ("learned", "proto", "zero")  # how a task's head starts (pipeline/meta/heads.py)
# The operator domains a bundle's graphs may use: standard ONNX (and ONNX-ML), which stock onnxruntime runs
STANDARD_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml"})
DTYPES = ("float32", "float16", "float64", "int64", "int32", "uint8", "bool")
GRAPH_NAMES = ("embed", "init_head", "adapt_step", "predict")
# the graphs a bundle that adapts a context vector inside its extractor adds (CAML: manifest section "context")
CONTEXT_GRAPHS = ("embed_prefix", "context_step", "embed_suffix")
# (lowest, highest) allowed value of each number, by its dotted key: a bundle comes from anywhere, and a value
# that passes must not crash, exhaust memory or run forever later
LIMITS: dict[str, tuple[float, float]] = {
    "input.size": (8, 1024),  # pixels a side: a 1024² RGB float batch of 8 is already 100 MB
    "input.mean": (-100.0, 100.0),
    "input.std": (1e-4, 1e4),
    "feature_dim": (1, 1 << 16),
    "adapt.steps": (0, 1000),
    "adapt.lr": (1e-12, 1e3),
    "adapt.state": (1, 4096),
    "context.dim": (1, 4096),  # the context vector's size (CAML's: 100 for images)
    "context.steps": (0, 1000),
    "context.lr": (1e-12, 1e3),  # a learned rule's state per head entry (the meta-LSTM's: 42)
    "opset": (7, 30),
    "shape dimension": (0, 1 << 20),
    "calibration.log_temperature": (-20.0, 20.0),
    "calibration.per_log_ways": (-10.0, 10.0),
    "calibration.per_log_shots": (-10.0, 10.0),
    "calibration.range": (1, 1 << 20),  # the calibrated N and K
}
MAX_FILES = 16  # a bundle holds 5 files (8 with a context)
MAX_NAME = 255


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: its name, shape (ints, or names of dynamic axes) and element type."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str = "float32"

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


@dataclass(frozen=True)
class GraphIO:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


@dataclass(frozen=True)
class Context:
    """A context vector φ (`dim` numbers, φ₀ = 0) that conditions the extractor between its prefix and suffix, whose
    hidden activations have shape `hidden` (C, H, W) per image; the device runs `steps` SGD steps of size `lr` on
    it before the head is initialised (CAML, Zintgraf et al. 2019)."""

    dim: int
    hidden: tuple[int, ...]
    steps: int
    lr: float

    def to_dict(self) -> dict:
        return {"dim": self.dim, "hidden": list(self.hidden), "steps": self.steps, "lr": self.lr}


UPDATE_RULES = ("sgd", "lstm")  # what adapt_step runs: first-order SGD, or a learned LSTM optimiser with state


def graph_io(channels: int, size: int, dim: int, state: int = 0,
             context: Context | None = None) -> dict[str, GraphIO]:
    """THE interface of every bundle graph for C-channel size² images and D-dimensional features. N (classes),
    M (support examples) and B (batch) are dynamic: one bundle serves any number of new classes.

    - embed: normalised images → features (the frozen extractor);
    - init_head: support features and their one-hot labels → the task's head (the training head's own rule);
    - adapt_step: ONE first-order SGD step of the head (W, b) on the support features → (W', b', loss at W, b);
      with a learned update rule (`state` > 0, adapt.rule "lstm": Ravi & Larochelle's meta-learner) the step
      takes each coordinate's state, S = `state` numbers per head entry, instead of step sizes, and returns the
      next state after the loss;
    - predict: head and features → class log-probabilities (log-softmax of the head's logits, at temperature 1).

    With a `context` (CAML), three more: embed_prefix (images → hidden activations, before φ enters),
    context_step (ONE SGD step of φ on the support set's hidden activations → (φ', loss at φ); the loss is the
    head's, initialised by its own rule from the φ-conditioned support features) and embed_suffix (hidden and φ →
    features). `embed` is the extractor at φ = 0.
    """
    head = (TensorSpec("weight", ("N", dim)), TensorSpec("bias", ("N",)))
    support = (TensorSpec("features", ("M", dim)),)
    step_sizes = (TensorSpec("lr_weight", (1, dim)), TensorSpec("lr_bias", (1,)))
    rule_inputs, rule_outputs = step_sizes, ()
    if state:
        rule_inputs = (TensorSpec("state_weight", ("N", dim, state)), TensorSpec("state_bias", ("N", state)))
        rule_outputs = (TensorSpec("new_state_weight", ("N", dim, state)), TensorSpec("new_state_bias", ("N", state)))
    graphs = {
        "embed": GraphIO((TensorSpec("images", ("B", channels, size, size)),), (TensorSpec("features", ("B", dim)),)),
        "init_head": GraphIO(support + (TensorSpec("onehot", ("M", "N")),), head),
        "adapt_step": GraphIO(head + support + (TensorSpec("labels", ("M",), "int64"),) + rule_inputs,
                              (TensorSpec("new_weight", ("N", dim)), TensorSpec("new_bias", ("N",)),
                               TensorSpec("loss", ())) + rule_outputs),
        "predict": GraphIO(head + (TensorSpec("features", ("B", dim)),),
                           (TensorSpec("log_probabilities", ("B", "N")),)),
    }
    if context is not None:
        phi = TensorSpec("context", (context.dim,))
        graphs["embed_prefix"] = GraphIO((TensorSpec("images", ("B", channels, size, size)),),
                                         (TensorSpec("hidden", ("B", *context.hidden)),))
        graphs["context_step"] = GraphIO(
            (TensorSpec("hidden", ("M", *context.hidden)), TensorSpec("labels", ("M",), "int64"),
             TensorSpec("onehot", ("M", "N")), phi, TensorSpec("lr_context", (1,))),
            (TensorSpec("new_context", (context.dim,)), TensorSpec("loss", ())))
        graphs["embed_suffix"] = GraphIO((TensorSpec("hidden", ("B", *context.hidden)), phi),
                                         (TensorSpec("features", ("B", dim)),))
    return graphs


BACKGROUND = "open_set_background"  # init.npz: the open-set background (open_set.background rows)
MAX_BACKGROUND = 4096  # rows of it at most


def init_arrays(dim: int, learned_lr: bool, background: int = 0) -> dict[str, list[int]]:
    """The arrays `init.npz` holds, with their shapes: meta-learned step sizes (Meta-SGD), scaled on the device
    by its `lr`, and the open-set background (`background` unit-length class means of the producer's TRAINING
    classes, `device_runtime.open_set`). (A learned head initialisation lives inside init_head.onnx.)"""
    arrays = {"lr_weight": [1, dim], "lr_bias": [1]} if learned_lr else {}
    return {**arrays, BACKGROUND: [background, dim]} if background else arrays
