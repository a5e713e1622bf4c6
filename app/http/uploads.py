"""Reading images out of a request: multipart `image` parts, a raw image body, or base64 JSON.

Uploads stay in memory: werkzeug would spool multipart files over 500 KB to temp files, and
seed 000 wrote every upload to disk. The body size is already capped by MAX_CONTENT_LENGTH.
"""

from __future__ import annotations

import base64
import binascii
import io

from flask import Request

from app.core.errors import InvalidInput, TooLarge, UnsupportedMedia
from app.core.safejson import load_json

FIELD = "image"


class InMemoryRequest(Request):
    def _get_file_stream(self, total_content_length, content_type, filename=None, content_length=None):
        return io.BytesIO()


def read_images(request: Request, max_images: int) -> tuple[list[bytes], bool]:
    """The uploaded images, and whether the client asked for a list answer."""
    mimetype = request.mimetype
    if mimetype == "multipart/form-data":
        blobs, many = _from_multipart(request)
    elif mimetype == "application/json":
        blobs, many = _from_json(request)
    elif mimetype.startswith("image/") or mimetype == "application/octet-stream":
        blobs, many = [request.get_data(cache=False)], False
    elif not mimetype and not request.content_length:
        raise InvalidInput("no_image", _HOW)
    else:
        raise UnsupportedMedia("unsupported_media_type", f"Content-Type {mimetype!r} is not supported; {_HOW}")
    if len(blobs) > max_images:
        raise TooLarge(
            "too_many_images",
            f"{len(blobs)} images in one request; the limit is {max_images} (MAX_IMAGES_PER_REQUEST)",
        )
    return blobs, many


_HOW = (
    "send multipart/form-data with a file field 'image' (curl -F image=@cat.jpg), "
    'a raw body with Content-Type image/*, or JSON {"image": "<base64>"}'
)


def _from_multipart(request: Request) -> tuple[list[bytes], bool]:
    files = request.files.getlist(FIELD)
    if not files:
        # A part with no name comes back keyed None; it is no field of ours either.
        got = sorted({name for name in (*request.files, *request.form) if name})
        hint = f" (got fields: {', '.join(got)})" if got else ""
        raise InvalidInput("no_image", f"no file field 'image' in the form{hint}; {_HOW}")
    return [f.read() for f in files], len(files) > 1


def _from_json(request: Request) -> tuple[list[bytes], bool]:
    body = load_json(request.get_data(cache=False), "invalid_json")
    if not isinstance(body, dict):
        raise InvalidInput("invalid_json", "the body is not a JSON object; " + _HOW)
    if isinstance(body.get("images"), list) and body["images"]:
        return [_b64(item, f"images[{i}]") for i, item in enumerate(body["images"])], True
    if "image" in body:
        return [_b64(body["image"], "image")], False
    raise InvalidInput("no_image", "the JSON has no 'image' (base64 string) or 'images' (list)")


def _b64(value, where: str) -> bytes:
    if not isinstance(value, str):
        raise InvalidInput("invalid_base64", f"{where} must be a base64 string")
    if value.startswith("data:") and "," in value:  # data URI: data:image/png;base64,....
        value = value.split(",", 1)[1]
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("invalid_base64", f"{where} is not valid base64") from None
