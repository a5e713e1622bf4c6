import pytest

from app.config import Config, ConfigError


def test_defaults_are_valid():
    cfg = Config.from_env({})
    assert (cfg.model_arch, cfg.model_weights, cfg.model_task) == ("resnet50", "imagenet", "multiclass")
    assert (cfg.top_k, cfg.threshold, cfg.activation_fn) == (5, 0.5, "softmax")
    assert cfg.max_batch_delay_ms == 0  # batching never waits unless asked to


def test_env_is_parsed_once_into_the_object():
    cfg = Config.from_env(
        {
            "MODEL_ARCH": "resnet34",
            "MODEL_TASK": "multilabel",
            "THRESHOLD": "0.3",
            "TOP_K": "3",
            "MEAN": "0.5,0.5,0.5",
            "CHANNELS_LAST": "off",
            "MAX_BATCH_DELAY_MS": "2.5",
        }
    )
    assert cfg.model_arch == "resnet34" and cfg.activation_fn == "sigmoid"
    assert cfg.threshold == 0.3 and cfg.top_k == 3 and cfg.mean == (0.5, 0.5, 0.5)
    assert cfg.channels_last is False and cfg.max_batch_delay_ms == 2.5


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MODEL_ARCH": "resnet 50"}, "MODEL_ARCH='resnet 50': name a torchvision classification model"),
        ({"MODEL_ARCH": "../../etc/passwd"}, "or timm:<name>"),
        ({"INTERPOLATION": "cubic"}, "INTERPOLATION='cubic' is not supported; choose one of: , nearest"),
        ({"MODEL_TASK": "detection"}, "choose one of: multiclass, multilabel"),
        ({"TOP_K": "five"}, "TOP_K='five' is not a valid int"),
        ({"TOP_K": "0"}, "TOP_K=0 must be a positive integer"),
        ({"THRESHOLD": "1.5", "MODEL_TASK": "multilabel"}, "THRESHOLD=1.5 must be in [0, 1]"),
        ({"CHANNELS_LAST": "maybe"}, "CHANNELS_LAST='maybe' is not a valid true/false"),
        ({"ACTIVATION": "sigmoid"}, "ACTIVATION=sigmoid is for MODEL_TASK=multilabel"),
        ({"CROP_SIZE": "300", "RESIZE_SIZE": "256"}, "CROP_SIZE=300 exceeds RESIZE_SIZE=256"),
        ({"CROP_SIZE": "-1"}, "RESIZE_SIZE and CROP_SIZE must be positive (0 = the architecture's own)"),
        ({"MEAN": "0.5,0.5"}, "MEAN and STD take three comma-separated numbers"),
        ({"DEVICE": "tpu"}, "DEVICE='tpu': use auto, cpu, cuda or cuda:N"),
        ({"PRECISION": "int4"}, "choose one of: fp32, bf16, fp16"),
        ({"GIL_SWITCH_MS": "0"}, "GIL_SWITCH_MS=0.0 must be > 0"),
        ({"GRAPH": "onnx"}, "GRAPH='onnx' is not supported; choose one of: torchscript, fx, eager"),
        ({"MODEL_WEIGHTS": ""}, "MODEL_WEIGHTS is empty"),
        ({"API_KEY": "hunter2"}, "API_KEY must be at least 16 characters"),
    ],
)
def test_bad_settings_say_what_and_how(env, message):
    with pytest.raises(ConfigError) as err:
        Config.from_env(env)
    assert message in str(err.value)


def test_raw_outputs_may_be_thresholded_outside_0_1():
    cfg = Config.from_env({"MODEL_TASK": "multilabel", "ACTIVATION": "none", "THRESHOLD": "2.0"})
    assert cfg.activation_fn == "none"


def test_the_api_key_never_shows_in_the_config_repr():
    assert "s3cret" not in repr(Config.from_env({"API_KEY": "s3cret-s3cret-s3cret"}))
