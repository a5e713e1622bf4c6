"""Errors as JSON: client mistakes get a 4xx with a message; anything unexpected a generic 500.

Every response carries the request id (from nginx's `X-Request-ID`, or generated here), so a
user's report can be matched to the server log line with its traceback.
"""

from __future__ import annotations

import logging
import re
import uuid

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException

logger = logging.getLogger(__name__)
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class APIError(Exception):
    """A request we refuse, with its HTTP status, a stable code and a human message."""

    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}


def request_id() -> str:
    if "request_id" not in g:
        given = request.headers.get("X-Request-ID", "")
        g.request_id = given if _SAFE_ID.match(given) else uuid.uuid4().hex
    return g.request_id


def error_response(status: int, code: str, message: str, headers: dict | None = None) -> Response:
    response = jsonify({"status": 0, "error": code, "message": message, "request_id": request_id()})
    response.status_code = status
    response.headers.update(headers or {})
    return response


def _api_error(exc: APIError) -> Response:
    return error_response(exc.status, exc.code, exc.message, exc.headers)


def _http_error(exc: HTTPException) -> Response:
    code = (exc.name or "error").lower().replace(" ", "_")
    response = error_response(exc.code or 500, code, exc.description or exc.name)
    if exc.code == 405 and exc.valid_methods:
        response.headers["Allow"] = ", ".join(exc.valid_methods)
    return response


def _unexpected(exc: Exception) -> Response:
    logger.exception("unhandled error in request %s", request_id())
    return error_response(500, "internal_error", "internal server error; quote the request_id when reporting it")


def _tag_response(response: Response) -> Response:
    response.headers["X-Request-ID"] = request_id()
    return response


def init_app(app: Flask) -> None:
    app.register_error_handler(APIError, _api_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)
    app.after_request(_tag_response)
