"""Architectures in-process: heads found by shape, presets and their overrides, the errors a
wrong MODEL_ARCH gets, and the fallbacks for models a graph tool or OpenVINO can't take."""

from __future__ import annotations

import logging
import sys

import pytest
import torch
from PIL import Image

from app.config import Config, ConfigError
from app.engines import build_engine
from app.engines.torch_engine import TorchEngine
from app.model.archs import resolve
from app.model.infer import optimize
from app.model.loading import LoadedModel
from app.model.preprocess import build_preprocess


@pytest.mark.parametrize(
    ("arch", "head", "preset"),
    [
        ("resnet18", ["fc.weight", "fc.bias"], (256, 224, Image.Resampling.BILINEAR)),
        ("efficientnet_b0", ["classifier.1.weight", "classifier.1.bias"], (256, 224, Image.Resampling.BICUBIC)),
        ("convnext_tiny", ["classifier.2.weight", "classifier.2.bias"], (236, 224, Image.Resampling.BILINEAR)),
        ("mobilenet_v3_large", ["classifier.3.weight", "classifier.3.bias"], (232, 224, Image.Resampling.BILINEAR)),
        ("vit_b_16", ["heads.head.weight", "heads.head.bias"], (256, 224, Image.Resampling.BILINEAR)),
        ("swin_t", ["head.weight", "head.bias"], (232, 224, Image.Resampling.BICUBIC)),
        ("maxvit_t", ["classifier.5.weight"], (224, 224, Image.Resampling.BICUBIC)),  # no bias
        ("regnet_y_400mf", ["fc.weight", "fc.bias"], (232, 224, Image.Resampling.BILINEAR)),  # no meta build
        ("inception_v3", ["AuxLogits.fc.weight", "AuxLogits.fc.bias", "fc.weight", "fc.bias"], (342, 299, 2)),
        ("timm:convnext_tiny.fb_in1k", ["head.fc.weight", "head.fc.bias"], (256, 224, Image.Resampling.BICUBIC)),
        ("timm:resnet18.a1_in1k", ["fc.weight", "fc.bias"], (235, 224, Image.Resampling.BICUBIC)),  # crop_pct 0.95
    ],
)
def test_each_architecture_has_its_head_and_preset(arch, head, preset):
    a = resolve(arch)
    assert a.head == head
    assert (a.preset.resize, a.preset.crop, a.preset.interpolation) == preset
    state = a.build(7).state_dict()
    assert a.num_classes(state) == 7


def test_vit_h_is_built_for_its_published_input_size():
    """torchvision sizes a ViT's position embedding from the weights it loads; without them the
    518 px preset would meet a network built for 224 px."""
    a = resolve("vit_h_14")
    with torch.device("meta"):
        net = a.build(10)
    assert a.preset.crop == 518 and net.encoder.pos_embedding.shape[1] == (518 // 14) ** 2 + 1


@pytest.mark.parametrize(
    ("arch", "message"),
    [
        ("efficentnet_b0", "did you mean efficientnet_b0"),
        ("fasterrcnn_resnet50_fpn", "is not a torchvision classification model"),  # detection
        ("timm:no_such_net", "timm has no model 'no_such_net'"),
        ("timm:convnext_tinyy", "similar ones: convnext_tiny"),
    ],
)
def test_unknown_architectures_name_the_near_ones(arch, message):
    with pytest.raises(ConfigError, match=message):
        resolve(arch)


def test_timm_missing_names_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm raises ImportError, as if not installed
    with pytest.raises(ConfigError, match="needs timm, which is not installed: pip install timm"):
        resolve("timm:convnext_tiny.fb_in1k")


@pytest.mark.parametrize(
    ("overrides", "want"),
    [
        ({}, (236, 224, "bilinear", (0.485, 0.456, 0.406))),
        ({"crop_size": 200}, (236, 200, "bilinear", (0.485, 0.456, 0.406))),
        ({"resize_size": 300, "interpolation": "bicubic"}, (300, 224, "bicubic", (0.485, 0.456, 0.406))),
        ({"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}, (236, 224, "bilinear", (0.5, 0.5, 0.5))),
    ],
)
def test_each_setting_overrides_its_part_of_the_preset(overrides, want):
    cfg = Config(model_arch="convnext_tiny", **overrides).validated()
    pre = build_preprocess(cfg, resolve("convnext_tiny").preset)
    assert (pre.min_decode_size, pre.input_size, pre.resize.resample, pre.mean) == (
        want[0],
        want[1],
        {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}[want[2]],
        want[3],
    )


def test_a_crop_over_the_presets_resize_is_refused():
    cfg = Config(model_arch="convnext_tiny", crop_size=240).validated()
    with pytest.raises(ConfigError, match=r"the crop \(240\) exceeds the resize \(236\).*set RESIZE_SIZE >= CROP_SIZE"):
        build_preprocess(cfg, resolve("convnext_tiny").preset)


class BatchDependent(torch.nn.Module):
    """Branches on the batch size: a trace records batch 1's branch for every batch."""

    def forward(self, x):
        return x.mean((2, 3)) * (2.0 if x.shape[0] == 1 else 1.0)


class Untraceable(torch.nn.Module):
    """Returns a string beside its tensor: neither TorchScript nor OpenVINO can take it."""

    def forward(self, x):
        return x.mean((2, 3)), "extra"


@pytest.mark.parametrize(
    ("net", "logged"),
    [(BatchDependent(), "disagrees with it at batch 2"), (Untraceable(), "tracing Untraceable failed")],
)
def test_a_model_the_trace_would_serve_wrongly_runs_eagerly(net, logged, caplog):
    cfg = Config(model_arch="resnet18", graph="torchscript").validated()
    with caplog.at_level(logging.WARNING):
        out = optimize(net.eval(), cfg, 32)
    assert not isinstance(out, torch.jit.ScriptModule) and logged in caplog.text


def engine_for(net: torch.nn.Module, **settings):
    """The engine ENGINE picks for `net`, a 3-class model served with resnet18's preprocessing."""
    cfg = Config(model_arch="resnet18", model_weights="random", **settings).validated()
    pre = build_preprocess(cfg, resolve("resnet18").preset)
    info = {"untrained": True, "version": "random", "num_classes": 3}
    return build_engine(LoadedModel(net.eval(), [str(i) for i in range(3)], pre, info), cfg, threads=1)


def test_a_failed_openvino_conversion_serves_with_torch(caplog):
    with caplog.at_level(logging.ERROR):
        engine = engine_for(Untraceable(), engine="openvino")
    assert isinstance(engine, TorchEngine) and "OpenVINO can't convert resnet18" in caplog.text


class Broken(torch.nn.Module):
    """Answers NaN: no engine can agree with the reference on the probe batch."""

    def forward(self, x):
        return x.mean((2, 3)) * float("nan")


def test_auto_with_no_agreeing_engine_serves_with_torch(caplog):
    """It used to crash the worker (max() of no engines) and so the server."""
    with caplog.at_level(logging.WARNING):
        engine = engine_for(Broken(), engine="auto", max_batch_size=2)
    assert isinstance(engine, TorchEngine) and "no engine agrees with torch fp32" in caplog.text


def test_a_vit_is_built_for_the_configured_crop(tmp_path):
    """A ViT fine-tuned at 384 px: CROP_SIZE sizes its position embedding, so its checkpoint
    loads and the graph is traced at that size."""
    from app.model.loading import load_model

    a = resolve("vit_b_16")
    torch.save(a.build(5, 384).state_dict(), tmp_path / "vit384.pth")
    cfg = Config(
        model_arch="vit_b_16", model_weights=str(tmp_path / "vit384.pth"), crop_size=384, resize_size=384, warmup=False
    ).validated()
    model = load_model(cfg)
    with torch.inference_mode():
        out = model.net(model.preprocess.normalize(torch.zeros(2, 3, 384, 384, dtype=torch.uint8)))
    assert model.preprocess.input_size == 384 and tuple(out.shape) == (2, 5)
