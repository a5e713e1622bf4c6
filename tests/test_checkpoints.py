"""Checkpoint forms people really have, each made the way its tool saves it, each served
through gunicorn and compared with the same weights run in-process; and the forms refused,
each with a message that says what to do."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from torchvision.models import get_model

from app.config import ConfigError
from app.model.weights import load_weights
from tests.conftest import assert_same_predictions, free_port, make_config, spawn, stop, venv_bin, wait_ready


class Wrapper(nn.Module):
    """A fine-tune wrapping the torchvision model in an attribute, as packages ship them."""

    def __init__(self, name: str, inner: nn.Module):
        super().__init__()
        setattr(self, name, inner)
        self.criterion = nn.CrossEntropyLoss(weight=torch.ones(1000))  # a buffer outside the model


def resnet(state: dict) -> nn.Module:
    net = get_model("resnet18", num_classes=1000)
    net.load_state_dict(state)
    return net.eval()


def lightning_checkpoint(net: nn.Module) -> dict:
    """What Lightning's Trainer.save_checkpoint writes for a LightningModule with `self.model`."""
    trained = {k: v.clone() for k, v in net.state_dict().items()}
    module = Wrapper("model", net)
    optimizer = torch.optim.SGD(module.model.parameters(), lr=0.1, momentum=0.9)
    module.model(torch.rand(2, 3, 64, 64)).sum().backward()
    optimizer.step()  # momentum buffers: a real optimizer state
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=10)
    module.model.load_state_dict(trained)  # the weights of the epoch the checkpoint records
    module.model.eval()
    return {
        "epoch": 3,
        "global_step": 120,
        "pytorch-lightning_version": "2.5.0",
        "state_dict": module.state_dict(),
        "loops": {"fit_loop": {"epoch_progress": {"current": {"completed": 3}}}},
        "optimizer_states": [optimizer.state_dict()],
        "lr_schedulers": [scheduler.state_dict()],
        "hyper_parameters": {"lr": 0.1, "arch": "resnet18", "num_classes": 1000},
    }


def save_forms(state: dict, folder: Path) -> dict[str, Path]:
    net = resnet(state)
    example = torch.rand(1, 3, 224, 224)
    forms = {
        "backbone prefix": (Wrapper("backbone", net).state_dict(), "backbone.pth"),
        "nested prefix": (Wrapper("encoder", Wrapper("net", net)).state_dict(), "nested.pth"),
        "torch.compile": (torch.compile(net).state_dict(), "compiled.pth"),
        "DataParallel": ({"model_state_dict": nn.DataParallel(net).state_dict()}, "dp.pth"),
        "lightning": (lightning_checkpoint(resnet(state)), "lit.ckpt"),
    }
    paths = {}
    for name, (obj, filename) in forms.items():
        paths[name] = folder / filename
        torch.save(obj, paths[name])
    paths["safetensors"] = folder / "model.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, paths["safetensors"])
    paths["torchscript traced"] = folder / "traced.pt"
    paths["torchscript scripted"] = folder / "scripted.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notice: users still export so
        torch.jit.save(torch.jit.trace(net, example), paths["torchscript traced"])
        torch.jit.save(torch.jit.script(net), paths["torchscript scripted"])
    return paths


@pytest.fixture(scope="module")
def forms(imagenet_ckpt, tmp_path_factory):
    return save_forms(torch.load(imagenet_ckpt, weights_only=True), tmp_path_factory.mktemp("forms"))


@pytest.fixture(scope="module")
def servers(forms, tmp_path_factory):
    """One gunicorn per form, started together (model loading overlaps), stopped at the end."""
    logs, running = tmp_path_factory.mktemp("forms-logs"), {}
    try:
        for i, (name, path) in enumerate(forms.items()):
            port = free_port()
            env = {"MODEL_ARCH": "resnet18", "MODEL_WEIGHTS": str(path), "WORKERS": "1", "GRPC_BIND": ""}
            cmd = [venv_bin("gunicorn"), "-b", f"127.0.0.1:{port}", "-c", "gunicorn_conf.py", "app:create_app()"]
            running[name] = (spawn(cmd, {**env, "BIND": f"127.0.0.1:{port}"}, logs / f"{i}.log"), port)
        for name, (proc, port) in running.items():
            try:
                wait_ready(f"http://127.0.0.1:{port}/ready", proc, timeout=240)
            except (RuntimeError, TimeoutError):
                pytest.fail(
                    f"{name} did not start:\n" + (logs / f"{list(running).index(name)}.log").read_text()[-3000:]
                )
        yield {name: f"http://127.0.0.1:{port}" for name, (_, port) in running.items()}
    finally:
        for proc, _ in running.values():
            stop(proc)


FORMS = [
    "backbone prefix",
    "nested prefix",
    "torch.compile",
    "DataParallel",
    "lightning",
    "safetensors",
    "torchscript traced",
    "torchscript scripted",
]


@pytest.mark.parametrize("form", FORMS)
def test_each_form_serves_the_same_answers(servers, form, client, jpeg_bytes, png_bytes):
    import requests

    for data in (jpeg_bytes, png_bytes):
        got = requests.post(servers[form] + "/model_predict", files={"image": ("x", data)}, timeout=60)
        want = client.post("/model_predict", data={"image": (io.BytesIO(data), "x")}).get_json()
        assert got.status_code == 200, got.text
        assert_same_predictions(got.json()["predictions"], want["predictions"])
        assert got.json()["model"]["untrained"] is False


def test_extra_keys_outside_the_model_are_left_out(forms):
    loaded = load_weights(make_config(forms["lightning"]))
    assert "fc.weight" in loaded.state_dict and not any(
        k.startswith(("criterion", "model.")) for k in loaded.state_dict
    )


REFUSED = [
    ("pickled model", lambda net: net, "re-save it with torch.save(model.state_dict()"),
    ("another architecture", lambda net: get_model("resnet34").state_dict(), "Set MODEL_ARCH"),
    ("not a ResNet", lambda net: {"head.weight": torch.zeros(2, 2)}, "no key ends with 'fc.bias'"),
    ("not a dict of tensors", lambda net: {"weights": [1, 2, 3]}, "is not a state_dict"),
]


@pytest.mark.parametrize(("case", "make", "message"), REFUSED, ids=[c[0] for c in REFUSED])
def test_refused_forms_say_what_to_do(case, make, message, tmp_path, imagenet_ckpt):
    path = tmp_path / "bad.pth"
    torch.save(make(resnet(torch.load(imagenet_ckpt, weights_only=True))), path)
    with pytest.raises(ConfigError) as info:
        load_weights(make_config(path))
    assert message in str(info.value), str(info.value)


def test_a_corrupt_safetensors_file(tmp_path):
    path = tmp_path / "broken.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    with pytest.raises(ConfigError, match="not a readable safetensors file"):
        load_weights(make_config(path))
