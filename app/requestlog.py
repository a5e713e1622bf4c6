"""One JSON log line per request, and a `Server-Timing` header carrying the same stage times.

The lines go to stderr (supervisord and Docker collect it) on the `app.requests` logger, one
JSON object each, so `jq 'select(.request_id == "...")'` finds a request. The id is the one
nginx set in `X-Request-ID`, so nginx's access log, this line and any traceback in the app
log can be joined on it. Probes (/health, /ready, /metrics) log at DEBUG only: an
orchestrator polling them every few seconds would otherwise drown the log.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from datetime import UTC, datetime

from flask import Flask, Response, g, request

from app.errors import request_id

logger = logging.getLogger("app.requests")
PROBES = frozenset({"/health", "/ready", "/metrics", "/openapi.json"})


class JsonLines(logging.Formatter):
    """A record as one JSON object: time, level, logger, pid, and the record's `fields`."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "msg": record.getMessage(),
        }
        line.update(getattr(record, "fields", {}))
        return json.dumps(line, separators=(",", ":"))


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def _start() -> None:
    g.started = time.perf_counter()


def _finish(response: Response) -> Response:
    total = time.perf_counter() - g.started
    stats = g.get("stats")
    stages = [("decode", stats.decode_s), ("queue", stats.queue_s), ("infer", stats.run_s)] if stats else []
    stages.append(("total", total))
    response.headers["Server-Timing"] = ", ".join(f"{name};dur={_ms(s)}" for name, s in stages)
    fields = {
        "request_id": request_id(),
        "method": request.method,
        "path": request.path,
        "status": response.status_code,
        "bytes_in": request.content_length or 0,
        "client": request.headers.get("X-Real-IP", request.remote_addr),
    }
    if stats:
        fields["images"] = stats.images
        fields["sizes"] = stats.sizes
    fields.update((f"{name}_ms", _ms(s)) for name, s in stages)
    level = logging.DEBUG if request.path in PROBES else logging.INFO
    logger.log(level, "request", extra={"fields": fields})
    return response


def setup_logging(level: int) -> None:
    """JSON lines on stderr, once per process, not through the app log's handlers."""
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonLines())
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(level)


def init_app(app: Flask) -> None:
    app.before_request(_start)
    app.after_request(_finish)
