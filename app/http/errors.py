"""The HTTP edge's one error table: domain error kinds -> status, in each HTTP door's own shape.

The seed API answers `{"status": 0, "error": <code>, "message": ..., "request_id": ...}`; the
Open Inference Protocol answers `{"error": <message>}`; a door outside this package (TorchServe's,
app/torchserve) brings its own shape and claims its paths (`claim`). All carry `X-Request-ID`.
Anything unexpected is logged with its traceback under the request id and answered with a
generic 500.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from flask import Blueprint, Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException

from app.core.errors import Kind, ServiceError

logger = logging.getLogger(__name__)

STATUS = {
    Kind.INVALID: 400,
    Kind.UNSUPPORTED: 415,
    Kind.TOO_LARGE: 413,
    Kind.UNAUTHENTICATED: 401,
    Kind.NOT_FOUND: 404,
    Kind.OVERLOADED: 503,
    Kind.DEADLINE: 504,
    Kind.NOT_READY: 503,
    Kind.INTERNAL: 500,
}
GENERIC_500 = "internal server error; quote the request_id when reporting it"

Shape = Callable[[str, str, str], dict]  # (code, message, request id) -> body


def seed_shape(code: str, message: str, rid: str) -> dict:
    return {"status": 0, "error": code, "message": message, "request_id": rid}


def oip_shape(code: str, message: str, rid: str) -> dict:
    return {"error": message}


# A path's first segment -> the shape of the door that owns it. A door outside app.http
# (app.torchserve) adds its own with `claim`, so that app.http never imports it.
_OWNERS: dict[str, Shape] = {"v2": oip_shape}


def claim(segments: tuple[str, ...], shape: Shape) -> None:
    for segment in segments:
        _OWNERS[segment] = shape


def shape_for(path: str) -> Shape:
    """The error shape of the door that owns `path`: "/v2/models" -> OIP's; "//v2" -> the seed's."""
    segment = path.split("/")[1] if path.startswith("/") else ""
    return _OWNERS.get(segment, seed_shape)


def by_path(code: str, message: str, rid: str) -> dict:
    """The app-wide default: a 404/405 under a door's paths (/v2, or a claimed segment) matched
    none of its routes, so no blueprint's handler answers it; it still gets that door's shape."""
    return shape_for(request.path)(code, message, rid)


def current_id() -> str:
    call = g.get("call")
    return call.request_id if call is not None else ""


def answer(shape: Shape, status: int, code: str, message: str, headers: dict | None = None) -> Response:
    response = jsonify(shape(code, message, current_id()))
    response.status_code = status
    response.headers.update(headers or {})
    return response


def register(target: Flask | Blueprint, shape: Shape) -> None:
    """Every error raised while serving `target`'s routes, answered in `shape`."""

    def service_error(exc: ServiceError) -> Response:
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else {}
        if exc.kind is Kind.UNAUTHENTICATED:
            headers["WWW-Authenticate"] = 'Bearer realm="classifier"'
        return answer(shape, STATUS[exc.kind], exc.code, exc.message, headers)

    def http_error(exc: HTTPException) -> Response:
        # werkzeug's own: unknown path, wrong method, a body over MAX_CONTENT_LENGTH, bad framing.
        code = (exc.name or "error").lower().replace(" ", "_")
        response = answer(shape, exc.code or 500, code, exc.description or exc.name)
        if exc.code == 405 and getattr(exc, "valid_methods", None):
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response

    def unexpected(exc: Exception) -> Response:
        logger.exception("unhandled error in request %s", current_id())
        message = GENERIC_500 if shape is not oip_shape else f"internal server error; request id {current_id()}"
        return answer(shape, 500, "internal_error", message)

    target.register_error_handler(ServiceError, service_error)
    target.register_error_handler(HTTPException, http_error)
    target.register_error_handler(Exception, unexpected)
