"""Checkpoints: one safetensors file holding tensors AND a JSON description (no pickle anywhere).

Layout of a checkpoint file:
  tensors  "model.<name>"   model state_dict
           "optim.<i>.<k>"  optimizer per-parameter state (only in resumable `last` checkpoints)
           "rng.<name>"     generator states (uint8)
  metadata {"mtl": JSON}    config, model spec, input spec, splits, epoch, metrics, optimizer groups

The JSON is enough to rebuild the model, so any tool (evaluate, export) can load a checkpoint alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from mtl.device_runtime.files import read_regular
from mtl.pipeline.atomic import atomic_write_bytes
from mtl.pipeline.errors import CheckpointError

FORMAT = "mtl-checkpoint/1"
MAX_CHECKPOINT_BYTES = 64 << 30
# What every tool reads from a checkpoint's JSON, by kind: checked once at load, not as KeyErrors later.
REQUIRED_META = {"pretrain": ("config", "model", "input", "splits"),
                 "meta-train": ("config", "learner", "input", "splits", "inner_steps")}


@dataclass
class Checkpoint:
    """A loaded checkpoint: its JSON `meta` and tensors grouped by prefix."""

    meta: dict[str, Any]
    model: dict[str, torch.Tensor]
    optim: dict[str, torch.Tensor] = field(default_factory=dict)
    rng: dict[str, torch.Tensor] = field(default_factory=dict)
    path: Path | None = None
    device: dict[str, torch.Tensor] = field(default_factory=dict)  # what `mtl calibrate` ships (open-set background)


def save_checkpoint(path: str | Path, ckpt: Checkpoint) -> None:
    """Write `ckpt` atomically to `path` (a `.safetensors` file)."""
    tensors: dict[str, torch.Tensor] = {}
    for prefix, group in (("model", ckpt.model), ("optim", ckpt.optim), ("rng", ckpt.rng), ("device", ckpt.device)):
        for name, tensor in group.items():
            tensors[f"{prefix}.{name}"] = tensor.detach().to("cpu").contiguous().clone()
    meta = {"format": FORMAT, **ckpt.meta}
    atomic_write_bytes(path, st_save(tensors, metadata={"mtl": json.dumps(meta)}))


def resolve_checkpoint_path(path: str | Path) -> Path:
    """A run directory means its best checkpoint (else its last); a file means itself."""
    path = Path(path)
    if path.is_dir():
        for name in ("best.safetensors", "last.safetensors"):
            if (path / name).is_file():
                return path / name
        raise CheckpointError(f"run directory {path} holds no checkpoint (best.safetensors / last.safetensors)")
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    return path  # not a regular file (a FIFO, a device): `load_checkpoint` names it


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint written by `save_checkpoint`; anything else raises `CheckpointError`."""
    path = resolve_checkpoint_path(path)
    raw = read_regular(path, MAX_CHECKPOINT_BYTES, "checkpoint", CheckpointError)
    try:
        tensors = st_load(raw)
        header_len = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8:8 + header_len])
        meta = json.loads(header.get("__metadata__", {}).get("mtl", "null"))
    except (SafetensorError, ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not a safetensors checkpoint: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an mtl checkpoint (missing or unknown 'format' metadata)")
    missing = [key for key in REQUIRED_META.get(meta.get("kind"), ()) if key not in meta]
    if missing:
        raise CheckpointError(f"{path}: its metadata lacks {', '.join(missing)}; the file was not written by mtl "
                              "or was edited")
    groups: dict[str, dict[str, torch.Tensor]] = {"model": {}, "optim": {}, "rng": {}, "device": {}}
    for key, tensor in tensors.items():
        prefix, _, name = key.partition(".")
        if prefix in groups:
            groups[prefix][name] = tensor
    return Checkpoint(meta, groups["model"], groups["optim"], groups["rng"], path, groups["device"])


def load_weights(module: torch.nn.Module, state: dict[str, torch.Tensor], path: str | Path | None,
                 strict: bool = True) -> None:
    """`module.load_state_dict(state)`, where tensors that do not fit the module (a checkpoint of another
    backbone or width, an edited file) are a `CheckpointError` naming the file and the first misfits."""
    try:
        module.load_state_dict(state, strict=strict)
    except RuntimeError as exc:
        lines = [line.strip() for line in str(exc).splitlines()[1:] if line.strip()]
        detail = "; ".join(lines)[:300] or str(exc).splitlines()[0]
        raise CheckpointError(f"{path}: its tensors do not fit the {type(module).__name__} it describes "
                              f"(another backbone or an edited file?): {detail}") from None


def flatten_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Optimizer state → (tensors keyed "<param index>.<name>", JSON-ready param groups + scalars)."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for index, entries in state["state"].items():
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{name}"] = value
            else:
                scalars[f"{index}.{name}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                      info: dict[str, Any]) -> None:
    """Inverse of `flatten_optimizer`."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in list(tensors.items()) + list(info.get("scalars", {}).items()):
        index, _, name = key.partition(".")
        state.setdefault(int(index), {})[name] = value
    try:
        optimizer.load_state_dict({"state": state, "param_groups": info["param_groups"]})
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"the optimizer state in the checkpoint does not fit this model: {exc}") from None
