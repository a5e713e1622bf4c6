"""Fuzzing the decode and preprocess stages with random and mutated image bytes.

Whatever the bytes, the outcome is a 224x224 input or the project's own refusal (a ServiceError
of kind invalid input or too large):
never another exception, never a hang, never unbounded memory. Mutations start from valid
files of every format we accept, so the fuzzer gets past the magic bytes into the decoders.
FUZZ_EXAMPLES=8000 runs a longer campaign (about 30 s; 400 in the suite).
"""

import os
import resource

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.config import Config
from app.core.decode import decode_image
from app.core.errors import Kind, ServiceError
from app.model.archs import resolve
from app.model.preprocess import build_preprocess
from scripts.hostile_inputs import encode, photo

CFG = Config(model_weights="random").validated()
PREPROCESS = build_preprocess(CFG, resolve(CFG.model_arch).preset)
SMALL = photo((96, 64), seed=21)
SEEDS = [
    encode(SMALL, "JPEG", quality=80),
    encode(SMALL, "JPEG", progressive=True),
    encode(SMALL, "PNG"),
    encode(SMALL.convert("P"), "GIF"),
    encode(SMALL, "WEBP"),
    encode(SMALL, "BMP"),
    encode(SMALL, "TIFF"),
    encode(SMALL.convert("L"), "PNG"),
]


@st.composite
def mutated(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["flip", "overwrite", "insert", "delete", "truncate"]))
        at = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "overwrite":  # header fields are where decoders trust the file most
            data[at : at + 4] = draw(st.binary(min_size=1, max_size=4))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 64))]
        else:
            del data[at:]
        if not data:
            break
    return bytes(data)


def check(data: bytes) -> None:
    try:
        image = decode_image(data, CFG.max_image_pixels, PREPROCESS.min_decode_size)
        tensor = PREPROCESS(image)
    except ServiceError as exc:
        assert exc.kind in (Kind.INVALID, Kind.TOO_LARGE), exc.kind
        return
    assert tuple(tensor.shape) == (3, 224, 224)


# Pillow warns (UserWarning) about corrupt metadata it skips; in production that is a log line,
# not an error, so here it must not fail the run either.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", 400)),
    deadline=3000,
    suppress_health_check=list(HealthCheck),
    database=None,
)


@pytest.fixture(scope="module", autouse=True)
def memory_bound():
    """Peak RSS growth over all fuzz runs, against a bound set by MAX_IMAGE_PIXELS."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    yield
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 1024, f"peak memory grew by {grown_mib:.0f} MiB while fuzzing"


@FUZZ
@given(mutated())
def test_mutated_images(data):
    check(data)


@FUZZ
@given(st.binary(max_size=4096))
def test_random_bytes(data):
    check(data)
