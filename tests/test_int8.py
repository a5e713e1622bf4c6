"""PRECISION=int8: NNCF quantisation of the OpenVINO graph, calibrated on the user's images
through the request decode path; its start-up errors; and that nothing quantises unasked."""

from __future__ import annotations

import logging
import sys

import numpy as np
import pytest
import torch

from app.config import MIN_CALIBRATION_IMAGES, Config, ConfigError
from app.core.calibration import CalibrationSet
from app.core.service import Classifier
from app.engines import TOLERANCE, build_engine, drift, probe_batch
from app.engines.torch_engine import TorchEngine
from app.model.loading import load_model
from tests.conftest import encode, make_config, photo

SUBSET = MIN_CALIBRATION_IMAGES  # the smallest allowed: keeps each quantisation to seconds
BOUND = 0.3  # largest int8 logit difference from fp32, relative to the logits' scale (drift)


@pytest.fixture(scope="module")
def calibration_dir(tmp_path_factory):
    """16 photo-like JPEGs and PNGs, plus files a careless copy brings along: a truncated JPEG
    (its header reads, its pixels don't: skipped with a warning) and a text file."""
    path = tmp_path_factory.mktemp("calibration")
    for i in range(SUBSET):
        image = photo((280 + 13 * i, 240 + 7 * i), seed=100 + i).rotate(23 * i)
        (path / f"{i:02d}.{'jpg' if i % 2 else 'png'}").write_bytes(encode(image, "JPEG" if i % 2 else "PNG"))
    (path / "00-truncated.jpg").write_bytes(encode(photo(seed=7), "JPEG")[:600])  # sorted first: read
    (path / "notes.txt").write_text("not an image")
    return path


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("engines")


def int8_config(imagenet_ckpt, calibration_dir, cache_dir, **overrides) -> Config:
    base = {"precision": "int8", "engine": "openvino", "calibration_dir": str(calibration_dir)}
    base |= {"calibration_size": SUBSET + 1, "engine_cache_dir": str(cache_dir)}
    return make_config(imagenet_ckpt, **(base | overrides))


def built(cfg: Config):
    model = load_model(cfg)
    classifier = Classifier(cfg, model)
    return model, build_engine(model, cfg, 1, CalibrationSet(cfg, classifier.prepare))


def test_int8_answers_close_to_fp32_and_is_quantised_once(imagenet_ckpt, calibration_dir, cache_dir, caplog):
    cfg = int8_config(imagenet_ckpt, calibration_dir, cache_dir)
    with caplog.at_level(logging.INFO, logger="app"):
        model, engine = built(cfg)
    assert engine.name == "openvino" and engine.precision == "int8"
    assert "skipping 00-truncated.jpg" in caplog.text  # decoded as a request is, and refused like one
    assert f"quantising once on {SUBSET} images" in caplog.text
    (xml,) = cache_dir.glob("*-int8-*.xml")
    # int8 weights: a quarter of ResNet-18's 47 MB of fp32 ones, give or take the float head
    assert xml.with_suffix(".bin").stat().st_size < 20e6
    # The random-weight stand-in measured 0.17 (probe batch) and about as much on photos: beyond
    # auto's bound (TOLERANCE["int8"], bf16's), but near fp32. A broken graph (wrong normalisation,
    # unquantised inputs clipped) lands far past BOUND.
    reference = TorchEngine(model.net, make_config(imagenet_ckpt), model.preprocess.normalize)
    photos = torch.stack([model.preprocess(photo((400, 300), seed=s)) for s in range(4)])
    for batch in (probe_batch(4, 224), photos):
        got, want = engine(batch), reference.fp32(batch)
        assert drift(got, want) <= BOUND
        assert np.abs(got - want).max() > 1e-4  # it really is another computation than fp32
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="app"):
        _, again = built(cfg)
    assert "quantising" not in caplog.text  # read from ENGINE_CACHE_DIR
    np.testing.assert_array_equal(again(photos), engine(photos))


def test_auto_serves_torch_when_int8_disagrees_beyond_the_rule(
    imagenet_ckpt, calibration_dir, cache_dir, monkeypatch, caplog
):
    cfg = int8_config(imagenet_ckpt, calibration_dir, cache_dir, engine="auto")  # quantised above: cached
    monkeypatch.setitem(TOLERANCE, "int8", 1e-6)  # a bound no int8 graph meets
    with caplog.at_level(logging.INFO, logger="app.engines"):
        _, engine = built(cfg)
    assert engine.name == "torch"
    assert "openvino differs from torch fp32 by" in caplog.text


def test_auto_never_quantises_unless_asked(imagenet_ckpt, calibration_dir, cache_dir, caplog):
    cfg = make_config(
        imagenet_ckpt, engine="auto", calibration_dir=str(calibration_dir), engine_cache_dir=str(cache_dir)
    )
    before = sorted(cache_dir.glob("*-int8-*"))
    with caplog.at_level(logging.INFO, logger="app"):
        _, engine = built(cfg)
    assert getattr(engine, "precision", "fp32") == "fp32"  # torch has no attribute: it is fp32
    assert "int8" not in caplog.text and "quantis" not in caplog.text
    assert sorted(cache_dir.glob("*-int8-*")) == before


def test_without_calibration_dir_a_generated_set_and_a_warning(caplog):
    cfg = make_config("random", model_weights="random", precision="int8", engine="openvino", calibration_size=SUBSET)
    with caplog.at_level(logging.WARNING, logger="app"):
        _, engine = built(cfg)
    assert engine.precision == "int8"
    assert "without CALIBRATION_DIR: calibrating on 32 generated images, fit for a smoke test only" in caplog.text


def test_missing_nncf_names_the_pip_line(imagenet_ckpt, calibration_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "nncf", None)  # as if not installed
    with pytest.raises(ConfigError, match="needs NNCF, which is not installed: pip install nncf==3.4.0"):
        built(int8_config(imagenet_ckpt, calibration_dir, ""))


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ENGINE": "torch"}, "PRECISION=int8 runs on OpenVINO: set ENGINE=openvino or ENGINE=auto"),
        ({"DEVICE": "cuda"}, "PRECISION=int8 runs on the CPU (OpenVINO): set DEVICE=cpu"),
        ({"CALIBRATION_DIR": "/nonexistent/photos"}, "CALIBRATION_DIR='/nonexistent/photos' is not a directory"),
        ({"CALIBRATION_SIZE": "4"}, "CALIBRATION_SIZE=4 must be >= 16"),
    ],
)
def test_int8_settings_say_what_and_how(env, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Config.from_env({"PRECISION": "int8", **env})


def test_a_directory_without_enough_images_is_refused_at_start(tmp_path):
    (tmp_path / "a.jpg").write_bytes(encode(photo(), "JPEG"))
    (tmp_path / "b.png").write_text("a PNG in name only")
    (tmp_path / "c.gif").write_bytes(encode(photo(), "GIF"))  # not a calibration format
    for directory, held in ((tmp_path / "empty", 0), (tmp_path, 1)):
        directory.mkdir(exist_ok=True)
        with pytest.raises(ConfigError) as err:
            Config.from_env({"PRECISION": "int8", "CALIBRATION_DIR": str(directory)})
        assert f"holds {held} readable JPEG/PNG images" in str(err.value)
        assert "point CALIBRATION_DIR at 16+ (best 300) JPEG/PNG images like those you serve" in str(err.value)
    # The same directory is ignored when nothing is quantised.
    assert Config.from_env({"CALIBRATION_DIR": str(tmp_path / "empty")}).precision == "fp32"
