"""Session fixtures shared by the training, export and CLI tests. torch is imported only inside them, so the
device-runtime tests also run in a base install without torch (`make test-device`)."""

import os
import sys

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test` runs one worker per core: one thread each, or they fight
    for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # read when torch is first imported (below, in the tests)
        os.environ.setdefault(_name, "1")
    for _name in ("COLUMNS", "LINES"):  # the worker is handed 80 × 24, which rich would fix at import for good
        os.environ.pop(_name, None)


def pytest_configure(config):
    if os.environ.get("PYTEST_XDIST_WORKER") and "torch" in sys.modules:  # imported before the variables took
        sys.modules["torch"].set_num_threads(1)


SMALL = dict(data="synthetic:60", backbone="conv4", epochs=6, batch_size=64, lr=0.05, val_episodes=50,
             device="cpu", calibrate_episodes=10)


@pytest.fixture(scope="session")
def pretrained_run(tmp_path_factory):
    """A short pretraining run on synthetic glyphs, shared by the train and CLI tests (skipped where torch is
    not installed: the device-runtime suite of `make test-device`)."""
    pytest.importorskip("torch", reason="training needs the train extra")
    from mtl.pipeline.train.pretrain import PretrainConfig, pretrain

    out = tmp_path_factory.mktemp("pretrain") / "run"
    result = pretrain(PretrainConfig(out=str(out), **SMALL))
    return out, result


@pytest.fixture(scope="session")
def tiny_mtl_run(tmp_path_factory, pretrained_run):
    """A tiny first-order MTL meta-training run on top of `pretrained_run` (3 inner steps, 2 validations)."""
    from mtl.pipeline.train.meta_train import MetaTrainConfig, meta_train

    out = tmp_path_factory.mktemp("mtl") / "mtl-run"
    meta_train(MetaTrainConfig(out=str(out), algorithm="mtl", init=str(pretrained_run[0]), data="synthetic:60",
                               ways=5, shots=1, queries=5, meta_batch=2, inner_steps=3, iterations=2, val_every=1,
                               val_episodes=4, first_order=True, device="cpu",
                               calibrate_episodes=0))  # steps as trained: the plot tests count on it
    return out
