"""Model loading: checkpoint layouts users really have, labels, ImageNet weights, random mode."""

import json

import numpy as np
import pytest
import torch
from torchvision.models import get_model, get_model_weights

from app.config import ConfigError
from app.engines.torch_engine import TorchEngine
from app.model.loading import load_labels, load_model
from app.model.tv_arch import cached_path
from tests.conftest import VOC_LABELS, make_config, voc_state


@pytest.fixture(scope="module")
def voc_sd():
    return voc_state({7: 9.0})


@pytest.mark.parametrize(
    "wrap",
    [
        pytest.param(lambda sd: sd, id="plain-state-dict"),
        pytest.param(lambda sd: {"state_dict": sd, "epoch": 3}, id="state_dict-key"),
        pytest.param(lambda sd: {"model": sd, "optimizer": {}}, id="model-key"),
        pytest.param(lambda sd: {f"module.{k}": v for k, v in sd.items()}, id="dataparallel-prefix"),
    ],
)
def test_checkpoint_layouts_load_to_the_same_network(tmp_path, voc_sd, wrap):
    path = tmp_path / "ckpt.pth"
    torch.save(wrap(voc_sd), path)
    model = load_model(make_config(path, model_labels=VOC_LABELS, graph="eager", channels_last=False))
    assert model.info["num_classes"] == 20 and model.labels[7] == "Cat"
    for name, tensor in model.net.state_dict().items():
        assert torch.equal(tensor, voc_sd[name]), name


def test_pickled_model_is_refused_with_the_fix(tmp_path):
    path = tmp_path / "full.pth"
    torch.save(get_model("resnet18", num_classes=20), path)
    with pytest.raises(ConfigError, match=r"torch.save\(model.state_dict\(\)"):
        load_model(make_config(path))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not a checkpoint at all", "is not a readable PyTorch checkpoint"),
        (None, "no such checkpoint"),
    ],
)
def test_unreadable_checkpoints(tmp_path, content, message):
    path = tmp_path / "bad.pth"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        load_model(make_config(path))


def test_checkpoint_of_another_arch_names_the_setting(imagenet_ckpt):
    with pytest.raises(ConfigError, match="Set MODEL_ARCH to the architecture it was trained as"):
        load_model(make_config(imagenet_ckpt, model_arch="resnet50"))


def test_labels_count_must_match_the_head(imagenet_ckpt):
    with pytest.raises(ConfigError, match="has 20 labels but the model has 1000 outputs"):
        load_model(make_config(imagenet_ckpt, model_labels=VOC_LABELS))


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ({"0": "a", "2": "b"}, "keys must be 0..1 with no gaps"),
        ({"zero": "a"}, "keys must be class indices"),
        ("just a string", "must hold a JSON object or list"),
    ],
)
def test_bad_labels_files(tmp_path, labels, message):
    path = tmp_path / "labels.json"
    path.write_text(json.dumps(labels))
    with pytest.raises(ConfigError, match=message):
        load_labels(str(path), 2)


def test_labels_as_a_list(tmp_path):
    path = tmp_path / "labels.json"
    path.write_text(json.dumps(["cat", "dog"]))
    assert load_labels(str(path), 2) == ["cat", "dog"]


def test_imagenet_weights_load_from_the_cache_offline(tmp_path, monkeypatch):
    """MODEL_WEIGHTS=imagenet reads torchvision's file from weights/; its transforms and labels come too."""
    weights = get_model_weights("resnet18").DEFAULT
    target = cached_path(str(tmp_path), weights)
    target.parent.mkdir(parents=True)
    torch.save(get_model("resnet18").state_dict(), target)
    model = load_model(make_config("imagenet", model_weights="imagenet", weights_dir=str(tmp_path)))
    assert model.info["weights"] == "imagenet:ResNet18_Weights.IMAGENET1K_V1"
    assert model.labels[281] == "tabby" and len(model.labels) == 1000
    assert model.preprocess.input_size == 224 and model.preprocess.min_decode_size == 256


def test_random_weights_are_explicit_and_marked(caplog):
    model = load_model(make_config("random", model_weights="random"))
    assert model.info["untrained"] is True and model.info["weights"] == "random"
    assert "UNTRAINED" in caplog.text


@pytest.mark.parametrize(("graph", "fusion"), [("torchscript", False), ("torchscript", True), ("fx", False)])
def test_optimised_graphs_match_eager(imagenet_ckpt, graph, fusion):
    """Folding batch norm, freezing, oneDNN fusion and channels_last change the arithmetic, not
    the answer. Three runs: the TorchScript executor profiles, then runs the fused graph."""
    cfg = make_config(imagenet_ckpt, graph=graph, onednn_fusion=fusion)
    model = load_model(cfg)
    torch.jit.enable_onednn_fusion(False)
    engine = TorchEngine(model.net, cfg, model.preprocess.normalize)
    eager = load_model(make_config(imagenet_ckpt, graph="eager", channels_last=False)).net
    assert isinstance(model.net, torch.jit.ScriptModule) == (graph == "torchscript")
    assert torch.jit.onednn_fusion_enabled() == fusion
    images = torch.randint(0, 256, (3, 3, 224, 224), dtype=torch.uint8)  # not the trace's batch size
    with torch.inference_mode():
        want = eager(model.preprocess.normalize(images)).numpy()
    try:
        for _ in range(3):
            np.testing.assert_allclose(engine(images), want, atol=1e-4, rtol=1e-4)
    finally:
        torch.jit.enable_onednn_fusion(False)  # process-wide: don't leak into other tests


def test_autocast_precisions_keep_the_python_graph(imagenet_ckpt):
    net = load_model(make_config(imagenet_ckpt, precision="bf16")).net
    assert not isinstance(net, torch.jit.ScriptModule)
