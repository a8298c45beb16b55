"""FewShotModel = backbone + head, rebuilt from a JSON ModelSpec and usable through torch.func."""

import json

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

from mtl.pipeline.errors import ConfigError
from mtl.pipeline.models import FewShotModel, ModelSpec, build_model

SMALL_SPECS = [
    ModelSpec("conv4", in_channels=1, image_size=28, head="linear", n_classes=5),
    ModelSpec("resnet12", in_channels=1, image_size=28, head="cosine", n_classes=3,
              options={"channels": (8, 16, 24, 32)}),
    ModelSpec("resnet18", in_channels=1, image_size=28, head="linear", n_classes=4),
    ModelSpec("mobilenet_v3_small", in_channels=1, image_size=28, head="cosine", n_classes=2),
]
IDS = [spec.backbone for spec in SMALL_SPECS]


def _json_trip(spec: ModelSpec) -> ModelSpec:
    return ModelSpec.from_dict(json.loads(json.dumps(spec.to_dict())))


@pytest.mark.parametrize("spec", SMALL_SPECS, ids=IDS)
def test_model_gives_features_and_logits(spec: ModelSpec, omniglot_batch: torch.Tensor) -> None:
    model = build_model(spec)
    assert isinstance(model, FewShotModel)
    assert model.features(omniglot_batch).shape == (4, model.backbone.feature_dim)
    assert model(omniglot_batch).shape == (4, spec.n_classes)


@pytest.mark.parametrize("spec", SMALL_SPECS, ids=IDS)
def test_spec_json_round_trip_rebuilds_a_model_whose_state_dict_loads(
        spec: ModelSpec, omniglot_batch: torch.Tensor) -> None:
    rebuilt_spec = _json_trip(spec)
    assert rebuilt_spec == spec
    model, rebuilt = build_model(spec).eval(), build_model(rebuilt_spec).eval()
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    torch.testing.assert_close(rebuilt(omniglot_batch), model(omniglot_batch))


def test_spec_options_are_copied_into_json_form() -> None:
    options = {"channels": (8, 16, 24, 32)}
    spec = ModelSpec("resnet12", in_channels=3, image_size=84, options=options)
    options["channels"] = (1,)
    assert spec.options == {"channels": [8, 16, 24, 32]}
    spec.to_dict()["options"]["channels"].append(5)
    assert spec.options == {"channels": [8, 16, 24, 32]}


@pytest.mark.parametrize(("kwargs", "culprit"), [
    ({"backbone": "vit"}, "valid names: conv4"),
    ({"head": "softmax"}, "valid heads"),
    ({"n_classes": 0}, "n_classes"),
    ({"in_channels": True}, "in_channels"),
    ({"image_size": 28.0}, "image_size"),
    ({"options": {"hidden": 8}}, "no option 'hidden'"),
    ({"options": {"image_size": 8}}, "model field"),
    ({"options": {"width": object()}}, "JSON"),
])
def test_invalid_spec_raises_config_error(kwargs: dict, culprit: str) -> None:
    fields = {"backbone": "conv4", "in_channels": 1, "image_size": 28} | kwargs
    with pytest.raises(ConfigError, match=culprit):
        ModelSpec(**fields)


def test_from_dict_names_unknown_and_missing_keys() -> None:
    with pytest.raises(ConfigError, match="unknown keys \\['depth'\\]"):
        ModelSpec.from_dict({"backbone": "conv4", "in_channels": 1, "image_size": 28, "depth": 4})
    with pytest.raises(ConfigError, match="missing keys \\['image_size'\\]"):
        ModelSpec.from_dict({"backbone": "conv4", "in_channels": 1})


@pytest.mark.parametrize("spec", SMALL_SPECS, ids=IDS)
def test_functional_call_matches_the_module_and_uses_the_given_params(
        spec: ModelSpec, omniglot_batch: torch.Tensor) -> None:
    model = build_model(spec).eval()
    params = dict(model.named_parameters())
    torch.testing.assert_close(functional_call(model, params, (omniglot_batch,)), model(omniglot_batch))
    shifted = {name: p + 0.1 for name, p in params.items()}
    assert not torch.allclose(functional_call(model, shifted, (omniglot_batch,)), model(omniglot_batch))


@pytest.mark.parametrize("spec", SMALL_SPECS, ids=IDS)
def test_gradients_reach_every_parameter(spec: ModelSpec, omniglot_batch: torch.Tensor) -> None:
    model = build_model(spec)
    labels = torch.arange(4) % spec.n_classes
    F.cross_entropy(model(omniglot_batch), labels).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all() and param.grad.abs().sum() > 0, name


@pytest.mark.parametrize("spec", SMALL_SPECS, ids=IDS)
def test_torch_func_grad_in_train_mode_takes_buffers_as_an_input(
        spec: ModelSpec, omniglot_batch: torch.Tensor) -> None:
    # BatchNorm updates its running statistics in place; under `grad` those buffers must be inputs
    model = build_model(spec)
    labels = torch.arange(4) % spec.n_classes
    params = {name: p.detach() for name, p in model.named_parameters()}
    buffers = {name: b.clone() for name, b in model.named_buffers()}

    def loss(params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.cross_entropy(functional_call(model, (params, buffers), (omniglot_batch,)), labels)

    grads = grad(loss)(params, buffers)
    assert grads.keys() == params.keys()
    assert all(g.shape == params[name].shape and torch.isfinite(g).all() for name, g in grads.items())
    assert all(int(b) == 1 for name, b in buffers.items() if name.endswith("num_batches_tracked"))


@pytest.mark.parametrize("spec", SMALL_SPECS, ids=IDS)
def test_without_running_stats_a_batch_of_tasks_runs_under_vmap_and_grad(spec: ModelSpec) -> None:
    spec = ModelSpec.from_dict(spec.to_dict() | {"options": spec.options | {"track_running_stats": False}})
    model = build_model(spec)
    assert not list(model.buffers())
    params = {name: p.detach() for name, p in model.named_parameters()}
    tasks = torch.rand(2, 4, 1, 28, 28)  # (T, N*K, C, H, W)
    labels = torch.arange(4) % spec.n_classes

    def task_loss(params: dict[str, torch.Tensor], images: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(functional_call(model, params, (images,)), labels)

    grads = vmap(grad(task_loss), in_dims=(None, 0))(params, tasks)
    assert all(g.shape == (2, *params[name].shape) for name, g in grads.items())
    torch.testing.assert_close(grads["head.weight"][1], grad(task_loss)(params, tasks[1])["head.weight"])
