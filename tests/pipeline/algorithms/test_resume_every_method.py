"""The methods of the design documents resume exactly like the others: a run interrupted after a validation and
resumed ends with the parameters of the run that never stopped (their own state — the meta-LSTM's rule, CAML's
FiLM generator, Siamese's distortions, ADML's attacks — included)."""

import pytest

from mtl.pipeline.train.checkpoint import load_checkpoint
from mtl.pipeline.train.meta_train import MetaTrainConfig, meta_train
from tests.tolerance import assert_float_close

CFG = dict(data="synthetic:30", ways=3, shots=1, queries=2, meta_batch=2, inner_steps=1, iterations=6, val_every=3,
           val_episodes=4, device="cpu", calibrate_episodes=0, backbone_options={"width": 8})


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("algorithm", ["adml", "caml", "meta-lstm", "siamese"])
def test_an_interrupted_run_resumes_to_the_uninterrupted_parameters(algorithm, tmp_path):
    cfg = dict(CFG, algorithm=algorithm, inner_lr=0.4 if algorithm == "meta-lstm" else 0.5)
    meta_train(MetaTrainConfig(out=str(tmp_path / "whole"), **cfg))

    def stop(kind, done, total, info):  # noqa: ANN001, ANN202
        if kind == "iteration" and done == 4:
            raise Interrupt

    with pytest.raises(Interrupt):
        meta_train(MetaTrainConfig(out=str(tmp_path / "cut"), **cfg), stop)
    meta_train(MetaTrainConfig(out=str(tmp_path / "cut"), resume=True, **cfg))
    a = load_checkpoint(tmp_path / "whole" / "last.safetensors")
    b = load_checkpoint(tmp_path / "cut" / "last.safetensors")
    assert set(a.model) == set(b.model)
    for name, tensor in a.model.items():
        assert_float_close(tensor, b.model[name], err_msg=f"{algorithm}: {name}")
