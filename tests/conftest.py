import pytest

from pipeline.train.pretrain import PretrainConfig, pretrain

SMALL = dict(data="synthetic:60", backbone="conv4", epochs=6, batch_size=64, lr=0.05, val_episodes=50,
             device="cpu")


@pytest.fixture(scope="session")
def pretrained_run(tmp_path_factory):
    """A short pretraining run on synthetic glyphs, shared by the train and CLI tests."""
    out = tmp_path_factory.mktemp("pretrain") / "run"
    result = pretrain(PretrainConfig(out=str(out), **SMALL))
    return out, result
