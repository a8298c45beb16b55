"""The `mlp` backbone is MAML's 1-40-40-1 regression network and runs under torch.func."""

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

from mtl.pipeline.data.sinusoid import SinusoidTasks
from mtl.pipeline.errors import ConfigError
from mtl.pipeline.models import BACKBONES, ModelSpec, build_backbone, build_model


def test_mlp_is_registered_and_defaults_to_the_maml_sine_network():
    assert "mlp" in BACKBONES
    net = build_backbone("mlp", in_channels=1, image_size=1)
    linears = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(1, 40), (40, 40), (40, 1)]
    assert sum(p.numel() for p in net.parameters()) == 40 + 40 + 40 * 40 + 40 + 40 + 1
    assert net.feature_dim == 1
    assert net(torch.rand(7, 1)).shape == (7, 1)


def test_hidden_out_features_and_input_dimension_are_options():
    net = build_backbone("mlp", in_channels=3, image_size=1, hidden=[16, 8, 4], out_features=2)
    assert net.feature_dim == 2
    assert net(torch.rand(5, 3)).shape == (5, 2)
    assert sum(isinstance(m, torch.nn.ReLU) for m in net.modules()) == 3


def test_an_empty_hidden_list_gives_a_linear_model():
    net = build_backbone("mlp", in_channels=2, image_size=1, hidden=[])
    assert [type(m) for m in net.layers] == [torch.nn.Linear]


def test_image_size_is_ignored_and_track_running_stats_is_accepted():
    a = build_backbone("mlp", in_channels=1, image_size=84, track_running_stats=False)
    assert a(torch.rand(4, 1)).shape == (4, 1)


def test_a_model_spec_for_the_sine_task_validates_round_trips_and_builds():
    spec = ModelSpec(backbone="mlp", in_channels=1, image_size=1, n_classes=1, options={"hidden": (20, 20)})
    assert ModelSpec.from_dict(spec.to_dict()) == spec
    model = build_model(spec)
    assert model.features(torch.rand(3, 1)).shape == (3, 1)
    assert model(torch.rand(3, 1)).shape == (3, 1)


@pytest.mark.parametrize(("options", "culprit"), [
    ({"hidden": "40"}, "hidden"),
    ({"hidden": [40, 0]}, "hidden width"),
    ({"hidden": [40.5]}, "hidden width"),
    ({"out_features": 0}, "out_features"),
    ({"track_running_stats": "no"}, "track_running_stats"),
    ({"width": 3}, "no option 'width'"),
])
def test_bad_options_raise_a_config_error_naming_the_culprit(options, culprit):
    with pytest.raises(ConfigError, match=culprit):
        build_backbone("mlp", in_channels=1, image_size=1, **options)


def test_bad_input_dimension_raises_a_config_error():
    with pytest.raises(ConfigError, match="in_channels"):
        ModelSpec(backbone="mlp", in_channels=0, image_size=1)


def test_vmapped_maml_inner_step_over_sine_tasks_matches_a_loop_and_lowers_the_loss():
    net = build_backbone("mlp", in_channels=1, image_size=1)
    params = {n: p.detach() for n, p in net.named_parameters()}
    ep = SinusoidTasks(k_shot=10, q_query=10, meta_batch=6, seed=0).sample()

    def loss(p, x, y):  # one task: x, y (K, 1)
        return F.mse_loss(functional_call(net, p, (x,)), y)

    grads = vmap(grad(loss), in_dims=(None, 0, 0))(params, ep.support, ep.support_labels)
    for b in range(6):
        looped = grad(loss)(params, ep.support[b], ep.support_labels[b])
        for name in params:
            torch.testing.assert_close(grads[name][b], looped[name], rtol=1e-5, atol=1e-6)
    before = vmap(loss, in_dims=(None, 0, 0))(params, ep.support, ep.support_labels)
    fast = {n: params[n] - 0.01 * grads[n] for n in params}  # (B, ...) per-task weights
    after = vmap(loss)(fast, ep.support, ep.support_labels)
    assert after.mean() < before.mean()
