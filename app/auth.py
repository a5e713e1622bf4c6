"""Optional API key (`API_KEY`): checked before anything else reads the request.

Clients send `Authorization: Bearer <key>` or `X-API-Key: <key>`. Liveness and readiness
probes, the try-it page and the OpenAPI spec stay open, so orchestrators and load balancers
need no secret. The comparison is constant-time, so response timing leaks nothing of the key.
"""

from __future__ import annotations

import hmac

from flask import Flask, current_app, request

from app.errors import APIError

# On the Open Inference Protocol side only infer needs the key: health, metadata and config
# describe the server, and KServe's probes ask /v2/health/ready.
OPEN_ENDPOINTS = frozenset(
    {"classify.health", "classify.ready", "classify.index", "classify.openapi"}
    | {f"oip.{name}" for name in ("server_metadata", "live", "ready", "model_metadata", "model_ready", "model_config")}
)


def _presented_key() -> str:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("X-API-Key", "")


def require_key() -> None:
    expected = current_app.extensions["classifier"].cfg.api_key
    if not expected or request.endpoint in OPEN_ENDPOINTS or request.endpoint is None:
        return  # no key configured, an open endpoint, or a 404/405 answered next anyway
    if not hmac.compare_digest(_presented_key().encode(), expected.encode()):
        raise APIError(
            401,
            "unauthorized",
            "a valid API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
            {"WWW-Authenticate": 'Bearer realm="classifier"'},
        )


def init_app(app: Flask) -> None:
    app.before_request(require_key)
