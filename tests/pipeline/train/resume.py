"""One check shared by the resume tests: a meta-training run interrupted at an iteration and resumed ends with
the parameters of the same run left alone."""

from pathlib import Path

import pytest

from mtl.pipeline.train.checkpoint import load_checkpoint
from mtl.pipeline.train.meta_train import MetaTrainConfig, meta_train
from tests.tolerance import assert_float_close


class Interrupt(Exception):
    pass


def assert_resumes_exactly(cfg: dict, tmp_path: Path, stop_at: int, what: str = "") -> None:
    """Run `cfg` whole into tmp_path/whole, and interrupted after iteration `stop_at` then resumed into
    tmp_path/cut; every parameter of the two last checkpoints must agree."""
    meta_train(MetaTrainConfig(out=str(tmp_path / "whole"), **cfg))

    def stop(kind, done, total, info):  # noqa: ANN001, ANN202
        if kind == "iteration" and done == stop_at:
            raise Interrupt

    with pytest.raises(Interrupt):
        meta_train(MetaTrainConfig(out=str(tmp_path / "cut"), **cfg), stop)
    meta_train(MetaTrainConfig(out=str(tmp_path / "cut"), resume=True, **cfg))
    a = load_checkpoint(tmp_path / "whole" / "last.safetensors")
    b = load_checkpoint(tmp_path / "cut" / "last.safetensors")
    assert set(a.model) == set(b.model)
    for name, tensor in a.model.items():
        assert_float_close(tensor, b.model[name], err_msg=f"{what}{name}")
