"""Configuration: read once from the environment into one plain object, validated at start-up.

Every setting has a default; `Config.from_env()` is the only place that reads `os.environ`.
A bad value raises `ConfigError` with a message that names the variable and how to fix it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
# Any torchvision classification model, or timm:<name>; app.model.archs checks that it exists.
ARCH_FORMAT = r"(timm:)?[A-Za-z0-9][A-Za-z0-9_.-]{0,127}"
INTERPOLATIONS = ("", "nearest", "bilinear", "bicubic", "lanczos")
TASKS = ("multiclass", "multilabel")
ACTIVATIONS = ("auto", "softmax", "sigmoid", "none")
PRECISIONS = ("fp32", "bf16", "fp16", "int8")
ENGINES = ("auto", "torch", "openvino")
GRAPHS = ("torchscript", "fx", "eager")
RESIZE_MODES = ("crop", "squash")
# PRECISION=int8 calibration (app.core.calibration): fewer images give activation ranges too
# rough to trust; NNCF's own default subset is 300.
CALIBRATION_SUFFIXES = (".jpg", ".jpeg", ".png")
MIN_CALIBRATION_IMAGES = 16


class ConfigError(ValueError):
    """A setting is missing or wrong; the message says which and how to fix it."""


def _csv_floats(text: str) -> tuple[float, ...]:
    return tuple(float(part) for part in text.split(","))


@dataclass(frozen=True)
class Config:
    # --- model ---
    model_arch: str = "resnet50"
    # "imagenet" (torchvision's published weights), "random" (smoke test) or a checkpoint path.
    model_weights: str = "imagenet"
    model_labels: str = ""  # JSON file; "" = the weights' own categories, or indices
    model_task: str = "multiclass"
    # auto: softmax for multiclass, sigmoid for multilabel; none: raw outputs (seed 001).
    activation: str = "auto"
    top_k: int = 5
    threshold: float = 0.5
    weights_dir: str = str(ROOT / "weights")
    # --- preprocessing: 0 / empty = what MODEL_ARCH's published weights were trained with ---
    resize_mode: str = "crop"  # crop: shorter side to resize_size, then center crop; squash: exact
    resize_size: int = 0
    crop_size: int = 0
    interpolation: str = ""
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    jpeg_draft: bool = True  # reduced-size DCT decode of large JPEGs
    # --- request limits ---
    max_upload_bytes: int = 20 * 1024 * 1024  # keep equal to nginx.conf client_max_body_size
    max_image_pixels: int = 64_000_000  # decompression-bomb guard; a 12 MP photo passes
    # Longest side over shortest: panoramas and long screenshots pass; a 1 x 64,000,000 image,
    # whose row pointers alone cost Pillow 512 MB per copy, does not.
    max_aspect_ratio: float = 100.0
    max_images_per_request: int = 32
    # Images one worker decodes at once; others wait their turn (they already hold a queue
    # place). Decoding is CPU-bound, so more than the cores gains nothing, and each decode of
    # the largest allowed image peaks at about 750 MB (docs/operations.md, "Memory"): this bounds a
    # worker's decode memory at DECODE_CONCURRENCY x that. 0 = max(2, torch threads).
    decode_concurrency: int = 0
    # When set, /model_predict and /metrics need `Authorization: Bearer <key>` or
    # `X-API-Key: <key>`; probes, the page and the spec stay open.
    api_key: str = field(default="", repr=False)
    # --- Open Inference Protocol (KServe v2 / Triton) ---
    model_name: str = "classifier"  # the {name} in /v2/models/{name}
    # Each worker's gRPC listener, shared through SO_REUSEPORT; nginx proxies public :8001 to
    # it. Empty = no gRPC. Keep it on loopback, like BIND.
    grpc_bind: str = "127.0.0.1:8011"
    # --- result cache (docs/caching.md, "Caching") ---
    # redis://[:password@]host:port/db or rediss:// (TLS; ?ssl_ca_certs=/path for a private CA).
    # Empty = no cache. Never logged with its password.
    redis_url: str = field(default="", repr=False)
    cache_ttl_s: int = 24 * 3600  # entries expire, so even a key collision can't live forever
    cache_timeout_ms: float = 50.0  # connect and reply timeout of each Redis call
    cache_retry_s: float = 5.0  # after a failure, Redis isn't asked again for this long
    # --- inference ---
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # auto: on the CPU, the fastest engine whose answers equal torch fp32's (app.engines);
    # torch; openvino. GPUs always run torch.
    engine: str = "auto"
    # Where the OpenVINO engine keeps the converted graph, so restarts skip the conversion.
    # Empty: convert in every worker.
    engine_cache_dir: str = str(ROOT / "run" / "engines")
    precision: str = "fp32"
    # PRECISION=int8: a directory of JPEG/PNG images like those served, to calibrate on; empty:
    # generated images, fit for a smoke test only. At most calibration_size are used.
    calibration_dir: str = ""
    calibration_size: int = 300
    channels_last: bool = True
    # torchscript: traced + frozen (CPU fp32); fx: batch norm folded, run from Python; eager.
    graph: str = "torchscript"
    # oneDNN Graph fusion of the TorchScript graph (CPU fp32): faster, but costs memory.
    onednn_fusion: bool = False
    torch_threads: int = 0  # 0 = cores // workers
    # How long a thread may hold the GIL before yielding (Python's default: 5 ms). 1 ms lets
    # the thread that finished a forward pass hand out results and start the next batch
    # sooner: +4.5% to +7.5% req/s in each of 4 alternating rounds at c=8
    # (docs/performance.md, "How the speed is made").
    gil_switch_ms: float = 1.0
    max_batch_size: int = 4  # gunicorn_conf.py raises it to 32 on GPUs
    max_batch_delay_ms: float = 0.0
    max_queue: int = 64
    # A refused request waits this long before its 503, so clients retrying without back-off
    # can't make refusals the main load (docs/performance.md, "Overload").
    shed_delay_ms: float = 50.0
    request_timeout_s: float = 30.0
    warmup: bool = True
    # Under gunicorn the model is loaded in the master and started (device, threads, warm-up)
    # in each worker after fork; gunicorn_conf.py sets this.
    defer_start: bool = False

    @classmethod
    def from_env(cls, environ: dict | None = None, **overrides) -> Config:
        return cls(**{**read_env(cls, environ), **overrides}).validated()

    @property
    def activation_fn(self) -> str:
        if self.activation != "auto":
            return self.activation
        return "softmax" if self.model_task == "multiclass" else "sigmoid"

    def validated(self) -> Config:
        if not re.fullmatch(ARCH_FORMAT, self.model_arch):
            raise ConfigError(
                f"MODEL_ARCH={self.model_arch!r}: name a torchvision classification model (resnet50, "
                "efficientnet_b0, convnext_tiny, vit_b_16, ...) or timm:<name>"
            )
        _one_of("INTERPOLATION", self.interpolation, INTERPOLATIONS)
        _one_of("MODEL_TASK", self.model_task, TASKS)
        _one_of("ACTIVATION", self.activation, ACTIVATIONS)
        _one_of("PRECISION", self.precision, PRECISIONS)
        _one_of("ENGINE", self.engine, ENGINES)
        _one_of("RESIZE_MODE", self.resize_mode, RESIZE_MODES)
        _one_of("GRAPH", self.graph, GRAPHS)
        if not self.model_weights:
            raise ConfigError("MODEL_WEIGHTS is empty: set it to 'imagenet', 'random' or a checkpoint path")
        if self.model_task == "multiclass" and self.activation == "sigmoid":
            raise ConfigError("ACTIVATION=sigmoid is for MODEL_TASK=multilabel; use softmax or auto")
        if not 0 <= self.threshold <= 1 and self.activation_fn != "none":
            raise ConfigError(f"THRESHOLD={self.threshold} must be in [0, 1] for probabilities")
        if len(self.mean) not in (0, 3) or len(self.std) not in (0, 3) or min(self.std, default=1) <= 0:
            raise ConfigError("MEAN and STD take three comma-separated numbers, STD > 0 (unset: the architecture's)")
        if self.resize_mode == "crop" and self.resize_size and self.crop_size > self.resize_size:
            raise ConfigError(f"CROP_SIZE={self.crop_size} exceeds RESIZE_SIZE={self.resize_size}")
        if self.device != "auto" and not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ConfigError(f"DEVICE={self.device!r}: use auto, cpu, cuda or cuda:N")
        for name in (
            "top_k",
            "max_upload_bytes",
            "max_image_pixels",
            "max_images_per_request",
            "max_batch_size",
            "max_queue",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name.upper()}={getattr(self, name)} must be a positive integer")
        if self.api_key and (len(self.api_key) < 16 or self.api_key != self.api_key.strip()):
            raise ConfigError(
                "API_KEY must be at least 16 characters with no surrounding spaces; generate one with: "
                "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}", self.model_name):
            raise ConfigError(f"MODEL_NAME={self.model_name!r}: use letters, digits, '_', '.' or '-' (a URL segment)")
        if self.grpc_bind and not re.fullmatch(r"(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):\d{1,5}", self.grpc_bind):
            raise ConfigError(f"GRPC_BIND={self.grpc_bind!r} is not host:port; e.g. 127.0.0.1:8011, or empty for none")
        _check_redis_url(self.redis_url)
        if self.cache_ttl_s < 1 or self.cache_timeout_ms <= 0 or self.cache_retry_s < 0:
            raise ConfigError("CACHE_TTL_S must be >= 1, CACHE_TIMEOUT_MS > 0 and CACHE_RETRY_S >= 0")
        if self.gil_switch_ms <= 0:
            raise ConfigError(f"GIL_SWITCH_MS={self.gil_switch_ms} must be > 0 (Python's default is 5)")
        if self.max_aspect_ratio < 1:
            raise ConfigError(f"MAX_ASPECT_RATIO={self.max_aspect_ratio:g} must be >= 1 (longest side / shortest)")
        if min(self.crop_size, self.resize_size) < 0:
            raise ConfigError("RESIZE_SIZE and CROP_SIZE must be positive (0 = the architecture's own)")
        if self.decode_concurrency < 0:
            raise ConfigError(f"DECODE_CONCURRENCY={self.decode_concurrency} must be >= 0 (0 = automatic)")
        if self.request_timeout_s <= 0 or min(self.max_batch_delay_ms, self.shed_delay_ms, self.torch_threads) < 0:
            raise ConfigError("REQUEST_TIMEOUT_S must be > 0; MAX_BATCH_DELAY_MS, SHED_DELAY_MS, TORCH_THREADS >= 0")
        if self.precision == "int8":
            _check_int8(self)
        return self


def calibration_files(directory: str) -> list[Path]:
    """The candidate calibration images in `directory`, in a stable order."""
    return sorted(p for p in Path(directory).iterdir() if p.suffix.lower() in CALIBRATION_SUFFIXES and p.is_file())


def _check_int8(cfg: Config) -> None:
    # int8 is OpenVINO's (NNCF quantises its graph); torch has no int8 CPU path here.
    if cfg.engine == "torch":
        raise ConfigError("PRECISION=int8 runs on OpenVINO: set ENGINE=openvino or ENGINE=auto (not torch)")
    if cfg.device.startswith("cuda"):
        raise ConfigError(
            f"PRECISION=int8 runs on the CPU (OpenVINO): set DEVICE=cpu, or PRECISION=fp16 on {cfg.device}"
        )
    if cfg.calibration_size < MIN_CALIBRATION_IMAGES:
        raise ConfigError(f"CALIBRATION_SIZE={cfg.calibration_size} must be >= {MIN_CALIBRATION_IMAGES} (default 300)")
    if not cfg.calibration_dir:
        return  # app.core.calibration warns and generates a smoke-test set
    fix = f"point CALIBRATION_DIR at {MIN_CALIBRATION_IMAGES}+ (best 300) JPEG/PNG images like those you serve"
    if not Path(cfg.calibration_dir).is_dir():
        raise ConfigError(f"CALIBRATION_DIR={cfg.calibration_dir!r} is not a directory: {fix}")
    try:
        files = calibration_files(cfg.calibration_dir)[: cfg.calibration_size]
    except OSError as exc:
        raise ConfigError(f"CALIBRATION_DIR={cfg.calibration_dir!r} can't be listed ({exc.strerror}): {fix}") from None
    readable = sum(_opens(path) for path in files)
    if readable < MIN_CALIBRATION_IMAGES:
        raise ConfigError(
            f"CALIBRATION_DIR={cfg.calibration_dir!r} holds {readable} readable JPEG/PNG images "
            f"(of {len(files)} named .jpg/.jpeg/.png): {fix}"
        )


def _opens(path: Path) -> bool:
    """Whether Pillow reads `path`'s header as JPEG or PNG: cheap, so the master can refuse a
    bad directory at once; the pixels are decoded, as requests are, where int8 is built."""
    from PIL import Image

    try:
        with Image.open(path, formats=("JPEG", "PNG")):
            return True
    except (OSError, SyntaxError, ValueError):  # UnidentifiedImageError is an OSError
        return False


def read_env(cls, environ: dict | None = None) -> dict:
    """The fields of dataclass `cls` that the environment sets (NAME in upper case), each
    parsed by its default's type; the server's settings (app.runtime.settings) use it too."""
    env = os.environ if environ is None else environ
    return {
        f.name: _parse(f.name.upper(), env[f.name.upper()], f.default) for f in fields(cls) if f.name.upper() in env
    }


def redact(url: str) -> str:
    """The URL as it may be logged: any password replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _check_redis_url(url: str) -> None:
    if not url:
        return
    from redis.connection import parse_url  # Redis's own parser: what it accepts, we accept

    try:
        parse_url(url)
    except ValueError as exc:
        raise ConfigError(
            f"REDIS_URL={redact(url)!r} is not a Redis URL ({exc}); e.g. redis://:password@10.0.0.5:6379/0"
        ) from None


def _one_of(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name}={value!r} is not supported; choose one of: {', '.join(allowed)}")


def _parse(name: str, raw: str, default):
    raw = raw.strip()
    if not raw and not isinstance(default, str):
        return default  # NAME= (empty) means the default, as a shell user expects
    try:
        if isinstance(default, bool):
            if raw.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError(raw)
            return raw.lower() in ("1", "true", "yes", "on")
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, tuple):
            return _csv_floats(raw)
    except ValueError:
        kind = "true/false" if isinstance(default, bool) else type(default).__name__
        raise ConfigError(f"{name}={raw!r} is not a valid {kind} (default {default!r})") from None
    return raw
