"""Bad and awkward uploads, with the answer each must get: one table for the tests and the soak.

`REFUSED` must each get a JSON 4xx with a stable error code; `ACCEPTED` are odd but valid
images that must be classified. Every file is made here, deterministically; nothing is read
from disk or the network.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from functools import cache

import numpy as np
from PIL import Image

UPLOAD_LIMIT = 20 * 1024 * 1024  # the app's MAX_UPLOAD_BYTES and nginx's client_max_body_size


def photo(size: tuple[int, int] = (600, 400), seed: int = 0) -> Image.Image:
    """A smooth, photo-like RGB image (gradients + mild noise), deterministic per seed."""
    w, h = size
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([x / w, y / h, (x + y) / (w + h)], axis=-1) * 200 + 20
    noisy = base + rng.normal(0, 8, base.shape)
    return Image.fromarray(noisy.clip(0, 255).astype(np.uint8))


def encode(image: Image.Image, fmt: str = "JPEG", **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kwargs)
    return buf.getvalue()


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


@cache
def blank_png(width: int, height: int, color_type: int = 0, bit_depth: int = 8) -> bytes:
    """A small PNG of width x height zero pixels, written row by row (Pillow would need the
    pixels in memory). color_type 0: gray, 2: RGB, 4: gray + alpha, 6: RGBA."""
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[color_type]
    row, packer = b"\0" * (1 + width * channels * bit_depth // 8), zlib.compressobj(9)
    data = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", data) + _png_chunk(b"IEND", b"")


def png_bomb(side: int = 12_000) -> bytes:
    """A real decompression bomb: a ~140 KB grayscale PNG of side x side black pixels."""
    return blank_png(side, side)


# The most expensive images the default limits allow (64 MP, aspect ratio 100): the most
# extreme shape each way (the short-side resize once made 1,000,000 x 64 into 4,000,000 x
# 256), and the modes whose conversion to RGB costs the most per pixel (alpha compositing,
# 16-bit scaling). Past the limits: EXTREME, refused with 413 before any pixel is decoded.
WORST_ALLOWED = {
    "80000x800-gray": (80_000, 800, 0, 8),
    "800x80000-rgba": (800, 80_000, 6, 8),
    "8000x8000-rgba": (8000, 8000, 6, 8),
    "8000x8000-gray16": (8000, 8000, 0, 16),
    "8000x8000-rgb": (8000, 8000, 2, 8),
}


@cache
def float_tiff(side: int = 8000) -> bytes:
    """A deflated 32-bit float TIFF (mode F, as scientific cameras write): its conversion to
    8 bits needs a float copy of every pixel."""
    pixels = np.arange(side * side, dtype=np.float32).reshape(side, side) % 1000
    return encode(Image.fromarray(pixels, "F"), "TIFF", compression="tiff_deflate")


EXTREME = {
    "1000000x64-gray": (1_000_000, 64, 0, 8),
    "64000000x1-gray": (64_000_000, 1, 0, 8),
    "1x64000000-gray": (1, 64_000_000, 0, 8),
}


def ico_holding(inner: bytes) -> bytes:
    """An ICO whose one directory entry says 16x16 and holds `inner` (a PNG of any size):
    Pillow's ICO plugin decodes that PNG inside Image.open."""
    header = struct.pack("<HHH", 0, 1, 1)
    entry = struct.pack("<BBBBHHII", 16, 16, 0, 0, 1, 32, len(inner), 6 + 16)
    return header + entry + inner


def jpeg_with_empty_scans(scans: int, size: tuple[int, int] = (2000, 2000)) -> bytes:
    """A progressive grayscale JPEG followed by `scans` empty AC scans: libjpeg decodes each."""
    data = encode(Image.new("L", size, 128), "JPEG", progressive=True, quality=50)
    empty = b"\xff\xda" + struct.pack(">H", 8) + bytes([1, 1, 0x00, 1, 63, 0x00])
    return data[:-2] + empty * scans + b"\xff\xd9"


def jpeg_claiming(width: int, height: int) -> bytes:
    """A small JPEG whose frame header (SOF0) claims width x height."""
    data = bytearray(encode(photo((64, 48)), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("cat.jpg", b"not really")
    return buf.getvalue()


JPEG = encode(photo(), "JPEG", quality=90)


def part(data: bytes, name: str = "img.jpg", mime: str = "image/jpeg", field_name: str = "image") -> dict:
    return {"files": [(field_name, (name, data, mime))]}


@dataclass(frozen=True)
class Bad:
    name: str
    request: dict  # keyword arguments for requests.post
    status: int
    code: str
    message: str = ""  # a fragment the message must contain
    via: tuple[str, ...] = ("gunicorn", "nginx")  # where the case applies
    method: str = "POST"
    path: str = "/model_predict"
    headers: dict = field(default_factory=dict)


REFUSED = [
    Bad("empty-body", {"data": b"", "headers": {"Content-Type": "image/jpeg"}}, 400, "empty_image"),
    Bad("no-body-at-all", {}, 400, "no_image", "file field 'image'"),
    Bad("empty-file-part", part(b""), 400, "empty_image"),
    Bad("wrong-field-name", part(JPEG, field_name="file"), 400, "no_image", "got fields: file"),
    Bad(
        "one-broken-among-three",
        {"files": [("image", ("a.jpg", JPEG)), ("image", ("b.jpg", JPEG[:2000])), ("image", ("c.jpg", JPEG))]},
        400,
        "corrupt_image",
        "image 2 of 3",
    ),
    Bad("text-as-jpeg", part(b"just some text\n" * 20), 400, "not_an_image"),
    Bad("pdf-as-jpeg", part(b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n"), 400, "not_an_image"),
    Bad("zip-as-jpeg", part(zip_bytes()), 400, "not_an_image"),
    Bad("truncated-jpeg", part(JPEG[: len(JPEG) // 3]), 400, "corrupt_image", "truncated"),
    Bad("jpeg-claiming-65000x65000", part(jpeg_claiming(65000, 65000)), 413, "too_many_pixels", "65000x65000"),
    Bad("png-decompression-bomb", part(png_bomb(), "bomb.png", "image/png"), 413, "too_many_pixels", "12000x12000"),
    Bad("invalid-base64", {"json": {"image": "!!not base64!!"}}, 400, "invalid_base64"),
    Bad(
        "malformed-json",
        {"data": b'{"image": ', "headers": {"Content-Type": "application/json"}},
        400,
        "invalid_json",
    ),
    Bad("unsupported-type", {"data": b"x", "headers": {"Content-Type": "text/csv"}}, 415, "unsupported_media_type"),
    Bad(
        "over-the-byte-limit",
        {"data": b"\xff" * (UPLOAD_LIMIT + 1), "headers": {"Content-Type": "image/jpeg"}},
        413,
        "request_entity_too_large",
    ),
    Bad("wrong-method", {}, 405, "method_not_allowed", method="GET"),
    Bad("unknown-path", {}, 404, "not_found", path="/predict"),
    Bad(
        "huge-header",
        {"data": JPEG, "headers": {"Content-Type": "image/jpeg", "X-Padding": "a" * 10_000}},
        431,
        "request_header_fields_too_large",
        via=("nginx",),  # gunicorn's own 431 is plain text; only nginx faces clients
    ),
]


def _frames(fmt: str, **kwargs) -> bytes:
    first, second = photo((160, 120), seed=11), photo((160, 120), seed=12).transpose(Image.Transpose.ROTATE_180)
    return encode(first, fmt, save_all=True, append_images=[second], duration=100, loop=0, **kwargs)


def _exif_rotated() -> tuple[bytes, bytes]:
    """The same picture stored sideways with EXIF orientation 6, and stored upright (PNG: lossless)."""
    upright = photo((120, 160), seed=13)
    exif = Image.Exif()
    exif[0x0112] = 6  # display: rotate 90 degrees clockwise
    sideways = upright.transpose(Image.Transpose.ROTATE_90)
    return encode(sideways, "PNG", exif=exif.tobytes()), encode(upright, "PNG")


def _first_frame(data: bytes) -> bytes:
    """What a viewer shows first, as a lossless PNG."""
    return encode(Image.open(io.BytesIO(data)).convert("RGB"), "PNG")


@dataclass(frozen=True)
class Odd:
    name: str
    data: bytes
    same_as: bytes | None = None  # an upload that must get the same answer


def accepted() -> list[Odd]:
    gif, webp = _frames("GIF"), _frames("WEBP", lossless=True)
    rotated, upright = _exif_rotated()
    ramp = np.tile(np.linspace(0, 65535, 160, dtype=np.uint16), (120, 1))
    palette = photo((160, 120), seed=14).convert("P", palette=Image.Palette.ADAPTIVE, colors=255)
    return [
        Odd("animated-gif", gif, _first_frame(gif)),
        Odd("animated-webp", webp, _first_frame(webp)),
        Odd("exif-rotated", rotated, upright),
        Odd("16-bit-png", encode(Image.fromarray(ramp), "PNG")),
        Odd("cmyk-jpeg", encode(photo((160, 120), seed=15).convert("CMYK"), "JPEG")),
        Odd("palette-png-with-transparency", encode(palette, "PNG", transparency=0)),
        Odd("grayscale-jpeg", encode(photo((160, 120), seed=16).convert("L"), "JPEG")),
    ]
