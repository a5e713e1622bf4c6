"""Decoding: upload bytes -> RGB PIL image, in memory, with guards against bad and hostile files.

- The pixel count is checked from the header, before any pixel is decoded (decompression bombs).
- Large JPEGs are decoded with `Image.draft`, the decoder's reduced-size DCT, so the cost
  scales with the output the model needs rather than the camera's resolution. Pillow's wheel
  carries libjpeg-turbo 3.1 with its SIMD, the library simplejpeg and PyTurboJPEG wrap: their
  call alone takes 13-23% less than this function, but with the guards still run and their array
  wrapped for resizing they are level on a web JPEG and 4-9% ahead on a 12 MP one, pixels
  equal (scripts/bench_decode.py, docs/performance.md): under the 10% that would pay for a
  second JPEG decoder beside the Pillow that the other formats, EXIF and CMYK need.
- EXIF orientation is applied, and every mode (L, P, RGBA, CMYK, 16-bit...) ends up as RGB.
"""

from __future__ import annotations

import io
import itertools
import re
import struct

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from app.core.errors import InvalidInput, TooLarge

# What Pillow's format plugins raise on malformed files, found by tests/test_fuzz.py: the
# header parsers index, unpack and divide by whatever the file says.
CORRUPT_FILE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error)
# Our MAX_IMAGE_PIXELS check, right after the header is read and before any pixel is,
# replaces Pillow's process-wide one (a warning at 89 MP, an error at 179 MP): one limit,
# one message that states the size, and no warnings.catch_warnings(), which isn't
# thread-safe and the gthread workers decode in parallel.
Image.MAX_IMAGE_PIXELS = None
# The formats we serve. Image.open is told so, for more than tidiness: some plugins decode
# pixels inside open(), before our pixel check can run. An ICO whose directory says 16x16 can
# carry a 40000x40000 PNG that Pillow's ICO plugin decodes there (+1.5 GiB in a worker, from
# a 1.5 MB upload); ICNS does the same in load().
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
# libjpeg decodes every scan of a progressive JPEG, however empty: 5000 empty scans made a
# 300 KB file take 46 s of a worker's CPU. Real progressive files have about 10 (libjpeg's
# own default script has 10; mozjpeg's up to ~30).
MAX_JPEG_SCANS = 100
# Start-of-scan markers; entropy-coded data can't hold one (an 0xFF there is stuffed). A regex
# finds them in 1.3 ms on a 2.3 MB photo where bytes.count took 2.7 (4% of its decode +
# preprocess), is no slower on all-0xFF input, and stops at the limit.
SOS_MARKER = re.compile(b"\xff\xda")


def decode_image(data: bytes, max_pixels: int, min_size: int = 0, max_aspect: float = 100.0) -> Image.Image:
    """Decode `data`; `min_size` > 0 lets JPEG decoding shrink until the shorter side nears it."""
    if not data:
        raise InvalidInput("empty_image", "the image is empty (0 bytes)")
    try:
        image = Image.open(io.BytesIO(data), formats=FORMATS)
    except UnidentifiedImageError:
        raise InvalidInput(
            "not_an_image",
            "the upload is not an image format we can read (send JPEG, PNG, WebP, GIF, BMP or TIFF)",
        ) from None
    except CORRUPT_FILE_ERRORS as exc:
        raise _corrupt(exc) from None
    if image.width * image.height > max_pixels:
        raise _too_many_pixels(image, max_pixels)
    if max(image.size) > max_aspect * min(image.size):
        # Pillow keeps a pointer per row, and each copy has its own: a 1 x 64,000,000 image
        # (within the pixel limit) costs 512 MB of pointers per copy, +975 MiB in a worker.
        raise TooLarge(
            "extreme_aspect_ratio",
            f"the image {image.width}x{image.height} is more than {max_aspect:g} times longer than it is wide "
            "(MAX_ASPECT_RATIO); crop it before upload",
        )
    jpeg = image.format in ("JPEG", "MPO")  # MPO: a JPEG with more frames after it; we read the first
    if jpeg and jpeg_scans(data) > MAX_JPEG_SCANS:
        raise TooLarge("too_many_scans", f"the JPEG has over {MAX_JPEG_SCANS} scans, the most decoded (re-encode it)")
    if min_size and jpeg:
        # Phone cameras often write MPO (a second, smaller frame in the same file): without
        # draft, a 12 MP one took 76 ms to decode instead of 41.
        image.draft("RGB", (min_size, min_size))
    try:
        image.load()
        # In place: otherwise it returns a copy even when there is nothing to turn.
        ImageOps.exif_transpose(image, in_place=True)
        return to_rgb(image)
    except CORRUPT_FILE_ERRORS as exc:
        raise _corrupt(exc) from None


def jpeg_scans(data: bytes, limit: int = MAX_JPEG_SCANS) -> int:
    """The number of start-of-scan markers in `data`, counted up to `limit` + 1."""
    return sum(1 for _ in itertools.islice(SOS_MARKER.finditer(data), limit + 1))


def _corrupt(exc: Exception) -> InvalidInput:
    return InvalidInput("corrupt_image", f"the image is corrupt or truncated: {exc}")


def _then(old: Image.Image, new: Image.Image) -> Image.Image:
    """`new`, made from `old`; `old`'s pixels are freed now, not when the caller lets go of it."""
    if new is not old:
        old.close()
    return new


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB, whatever the mode. Consumes `image`: each step frees the copy it converted from,
    so a 64 MP upload never holds more than two of its copies at once."""
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I;16"):
        # Pillow's own I->RGB conversion clips at 255; scale the 16-bit range to 8 bits instead,
        # in integers: floor(x * 255 / 65535) is floor(x / 257), without a float copy (a 64 MP
        # image would take 256 MB for it).
        image = _then(image, Image.fromarray((np.asarray(image) // 257).astype(np.uint8)))
    elif image.mode in ("I", "F"):
        pixels = np.array(image, dtype=np.float32)  # one float copy, scaled in place
        image.close()
        pixels *= 255.0 / max(float(pixels.max()), 1.0)
        image = Image.fromarray(np.clip(pixels, 0, 255, out=pixels).astype(np.uint8))
        del pixels
    if image.mode == "P":
        image = _then(image, image.convert("RGBA" if "transparency" in image.info else "RGB"))
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        # Transparent pixels are composited over white, as an image viewer shows them: pasted
        # through their alpha onto a white RGB canvas, one RGB copy in all, where
        # alpha_composite made three RGBA ones (1.2 GB for a 64 MP image).
        rgba = image if image.mode == "RGBA" else _then(image, image.convert("RGBA"))
        canvas = Image.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba)  # RGBA onto RGB: Pillow reads the alpha without a copy
        return _then(rgba, canvas)
    return _then(image, image.convert("RGB"))


def _too_many_pixels(image: Image.Image, max_pixels: int) -> TooLarge:
    return TooLarge(
        "too_many_pixels",
        f"the image {image.width}x{image.height} exceeds the limit of {max_pixels} pixels "
        "(MAX_IMAGE_PIXELS); downscale it before upload",
    )
