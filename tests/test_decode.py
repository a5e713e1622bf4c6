"""Decoding: every mode becomes RGB, EXIF is applied, bad files are refused with the right status."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from app.core.decode import MAX_JPEG_SCANS, decode_image, jpeg_scans
from app.core.errors import ServiceError
from app.http.errors import STATUS
from app.model.archs import resolve
from app.model.preprocess import build_preprocess
from scripts.hostile_inputs import jpeg_with_empty_scans
from tests.conftest import encode, make_config, photo

LIMIT = 64_000_000


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [
        ("L", "PNG"),
        ("1", "PNG"),
        ("P", "PNG"),
        ("RGBA", "PNG"),
        ("LA", "PNG"),
        ("CMYK", "JPEG"),
        ("I;16", "PNG"),
        ("I", "TIFF"),
        ("F", "TIFF"),
        ("RGB", "WEBP"),
        ("RGB", "BMP"),
        ("P", "GIF"),
    ],
)
def test_every_mode_becomes_rgb(mode, fmt):
    image = photo((64, 48)).convert(mode)
    decoded = decode_image(encode(image, fmt), LIMIT)
    assert decoded.mode == "RGB" and decoded.size == (64, 48)


def test_16_bit_keeps_its_range():
    ramp = np.tile(np.linspace(0, 65535, 64, dtype=np.uint16), (8, 1))
    decoded = np.asarray(decode_image(encode(Image.fromarray(ramp), "PNG"), LIMIT))
    assert decoded[0, 0, 0] == 0 and decoded[0, -1, 0] == 255  # not clipped to all-white


def test_transparent_pixels_are_white():
    image = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    assert decode_image(encode(image, "PNG"), LIMIT).getpixel((0, 0)) == (255, 255, 255)


def test_exif_orientation_is_applied():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    data = encode(photo((60, 40)), "JPEG", exif=exif.tobytes())
    assert decode_image(data, LIMIT).size == (40, 60)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims a huge size: the bomb must be refused before decoding."""

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


JPEG = encode(photo((200, 100)), "JPEG")


@pytest.mark.parametrize(
    ("data", "status", "code"),
    [
        (b"", 400, "empty_image"),
        (b"GIF89a but not really", 400, "not_an_image"),
        (b"%PDF-1.4 not an image", 400, "not_an_image"),
        (JPEG[: len(JPEG) // 2], 400, "corrupt_image"),
        (png_header_only(30_000, 30_000), 413, "too_many_pixels"),  # past our limit
        (png_header_only(200_000, 200_000), 413, "too_many_pixels"),  # past Pillow's own bomb check
    ],
    ids=["empty", "garbage", "pdf", "truncated-jpeg", "pixel-limit", "decompression-bomb"],
)
def test_bad_files(data, status, code):
    with pytest.raises(ServiceError) as err:
        decode_image(data, LIMIT)
    assert (STATUS[err.value.kind], err.value.code) == (status, code)


def test_draft_decoding_shrinks_big_jpegs_but_keeps_the_answer(imagenet_ckpt):
    """A 12 MP photo is decoded at reduced DCT size, and the network input barely moves."""
    big = encode(photo((4032, 3024), seed=5), "JPEG", quality=92)
    preprocess = build_preprocess(make_config(imagenet_ckpt), resolve("resnet18").preset)
    fast = decode_image(big, LIMIT, preprocess.min_decode_size)
    full = decode_image(big, LIMIT)
    assert min(fast.size) >= 256 and fast.size[0] < 4032 // 4
    diff = (preprocess.normalize(preprocess(fast)[None]) - preprocess.normalize(preprocess(full)[None])).abs()
    assert float(diff.mean()) < 0.02  # normalised units; pixel range spans about 4.5


@pytest.mark.parametrize(
    "size", [(600, 400), (400, 600), (257, 256), (480, 91), (5000, 60), (61, 3000), (224, 224), (1, 1)]
)
def test_crop_first_resize_equals_torchvision_resize_then_crop(size):
    """ShortSideCrop computes only the crop's pixels; they must be torchvision's, within rounding."""
    from torchvision import transforms as T

    from app.model.preprocess import ShortSideCrop

    image = photo(size, seed=sum(size))
    ours = np.asarray(ShortSideCrop(256, 224)(image), dtype=np.int16)
    reference = np.asarray(T.Compose([T.Resize(256, antialias=True), T.CenterCrop(224)])(image), dtype=np.int16)
    assert ours.shape == reference.shape == (224, 224, 3)
    diff = np.abs(ours - reference)
    assert diff.max() <= 2 and (diff > 0).mean() < 0.05, (diff.max(), (diff > 0).mean())


def test_mpo_photos_are_draft_decoded_like_jpegs():
    """Phone cameras write MPO (a JPEG with a second frame after it): its first frame gets the
    reduced-size DCT too, and the same pixels as that frame saved as a plain JPEG."""
    image = photo((1024, 768), seed=7)
    mpo = encode(image, "MPO", save_all=True, append_images=[photo((160, 120))], quality=90)
    assert Image.open(io.BytesIO(mpo)).format == "MPO"
    decoded = decode_image(mpo, LIMIT, 232)
    assert decoded.size == (512, 384)
    assert np.array_equal(np.asarray(decoded), np.asarray(decode_image(encode(image, "JPEG", quality=90), LIMIT, 232)))


def test_scan_limit_is_exact():
    """MAX_JPEG_SCANS scans decode; one more is refused before decoding."""
    real = jpeg_scans(jpeg_with_empty_scans(0, (64, 64)))
    assert decode_image(jpeg_with_empty_scans(MAX_JPEG_SCANS - real, (64, 64)), LIMIT).size == (64, 64)
    with pytest.raises(ServiceError) as err:
        decode_image(jpeg_with_empty_scans(MAX_JPEG_SCANS - real + 1, (64, 64)), LIMIT)
    assert (STATUS[err.value.kind], err.value.code) == (413, "too_many_scans")
