"""The methods of the design documents resume exactly like the others: a run interrupted after a validation and
resumed ends with the parameters of the run that never stopped (their own state — the meta-LSTM's rule, CAML's
FiLM generator, Siamese's distortions, ADML's attacks — included)."""

import pytest

from tests.pipeline.train.resume import assert_resumes_exactly

CFG = dict(data="synthetic:30", ways=3, shots=1, queries=2, meta_batch=2, inner_steps=1, iterations=6, val_every=3,
           val_episodes=4, device="cpu", calibrate_episodes=0, backbone_options={"width": 8})


@pytest.mark.parametrize("algorithm", ["adml", "caml", "meta-lstm", "siamese"])
def test_an_interrupted_run_resumes_to_the_uninterrupted_parameters(algorithm, tmp_path):
    cfg = dict(CFG, algorithm=algorithm, inner_lr=0.4 if algorithm == "meta-lstm" else 0.5)
    assert_resumes_exactly(cfg, tmp_path, stop_at=4, what=f"{algorithm}: ")
