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
from datetime import UTC, datetime

logger = logging.getLogger("app.requests")
PROBES = frozenset({"/health", "/ready", "/metrics", "/openapi.json", "/v2/health/live", "/v2/health/ready"})


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


def stages(stats, total: float) -> list[tuple[str, float]]:
    """Stage times of a request (decode, queue, infer, total), for its log line and Server-Timing."""
    parts = [("decode", stats.decode_s), ("queue", stats.queue_s), ("infer", stats.run_s)] if stats else []
    return [*parts, ("total", total)]


def server_timing(stats, total: float) -> str:
    return ", ".join(f"{name};dur={_ms(s)}" for name, s in stages(stats, total))


def log_request(rid, method, path, status, bytes_in, stats, total: float, client: str | None = None) -> None:
    """The request's JSON line, the same for every door (app.core.guard writes it)."""
    fields = {"request_id": rid, "method": method, "path": path, "status": status, "bytes_in": bytes_in}
    if client is not None:
        fields["client"] = client
    if stats:
        fields["images"] = stats.images
        fields["sizes"] = stats.sizes
        if stats.cache:
            fields["cache"] = stats.cache
    fields.update((f"{name}_ms", _ms(s)) for name, s in stages(stats, total))
    level = logging.DEBUG if path in PROBES else logging.INFO
    logger.log(level, "request", extra={"fields": fields})


def setup_logging(level: int) -> None:
    """JSON lines on stderr, once per process, not through the app log's handlers."""
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonLines())
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(level)
