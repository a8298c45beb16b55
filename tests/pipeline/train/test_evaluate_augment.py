"""`mtl evaluate BUNDLE --augment N`: the support images' variants, warped at full size before the bundle's resize,
join the support set on the same episodes; a checkpoint is refused in one line."""

import pytest

from mtl.exporters.bundle_export import export_bundle
from mtl.pipeline.errors import ConfigError
from mtl.pipeline.train.evaluate import EvalConfig, evaluate_path


def test_augmented_support_sets_are_scored_on_the_same_episodes(pretrained_run, tmp_path):
    run = pretrained_run[0]
    bundle = export_bundle(run, tmp_path / "b.mtlb", single_file=True).path
    plain = evaluate_path(bundle, None, EvalConfig(ways=3, shots=1, queries=3, episodes=6, seed=2), "cpu").result
    again = evaluate_path(bundle, None, EvalConfig(ways=3, shots=1, queries=3, episodes=6, seed=2, augment=0),
                          "cpu").result
    augmented = evaluate_path(bundle, None, EvalConfig(ways=3, shots=1, queries=3, episodes=6, seed=2, augment=2),
                              "cpu").result
    assert plain.per_episode == again.per_episode
    assert len(augmented.per_episode) == 6 and 0 <= augmented.mean <= 1
    assert augmented.ece != plain.ece  # the variants changed the heads, so the confidences
    with pytest.raises(ConfigError, match="--augment augments support sets on the device"):
        evaluate_path(run, None, EvalConfig(ways=3, shots=1, episodes=2, augment=2), "cpu")
