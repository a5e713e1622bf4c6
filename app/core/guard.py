"""The one request context every door enters: key, admission, request id, in-flight, log, metrics.

A door (the seed HTTP API, OIP over HTTP, gRPC, and any door added later) is a codec and a
thin adapter around this. It starts a `Call` with what its transport carried, asks
`authorize` before reading anything else, serves predictions inside `serving`, and ends with
`end`; no door keeps its own copy of these guards. Operations are protected unless listed in
`OPEN`, so a route or RPC that a door forgets to classify still needs the key.
"""

from __future__ import annotations

import hmac
import re
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum

from app.core.errors import Unauthenticated
from app.core.service import RequestStats
from app.telemetry.metrics import IN_FLIGHT, REQUESTS, observe_prediction, update_memory
from app.telemetry.requestlog import log_request

# The request-id rule, shared with nginx.conf's `map $http_x_request_id $req_id` (a test
# compares them): anything else is replaced by a fresh id, so it is safe in JSON and headers.
SAFE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class Operation(StrEnum):
    PROBE = "probe"  # liveness and readiness: orchestrators ask without a secret
    DESCRIBE = "describe"  # server and model metadata, the spec, the page: what /ready also tells
    PREDICT = "predict"
    METRICS = "metrics"


OPEN = frozenset({Operation.PROBE, Operation.DESCRIBE})


def safe_request_id(given: str | None) -> str:
    return given if given and SAFE_ID.fullmatch(given) else uuid.uuid4().hex


def presented_key(header: Callable[[str], str | None]) -> str:
    """The key from `Authorization: Bearer <key>` or `X-API-Key`, whatever carries headers
    (HTTP headers, gRPC metadata): `header(name)` looks one up by its lowercase name."""
    scheme, _, token = (header("authorization") or "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return header("x-api-key") or ""


@dataclass
class Call:
    endpoint: str  # the route pattern or "grpc:<Method>": a bounded set, for metrics
    path: str  # what the log line shows: the path asked for, or "grpc:<Method>"
    method: str
    request_id: str
    client: str | None = None
    bytes_in: int = 0
    started: float = field(default_factory=time.perf_counter)
    stats: object | None = None  # the prediction's RequestStats, once `serving` began


# Each call's request id and start, for gunicorn's worker_abort log. Keyed by the call, not
# the id: clients choose ids, and two requests may share one.
_in_flight: dict[int, tuple[str, float]] = {}


def in_flight() -> str:
    now = time.monotonic()
    return ", ".join(f"{rid} ({now - t0:.1f}s)" for rid, t0 in list(_in_flight.values()))


class Gate:
    def __init__(self, classifier, api_key: str):
        self.classifier, self._key = classifier, api_key.encode()

    def begin(self, endpoint: str, path: str, method: str, given_id: str | None, client=None, bytes_in=0) -> Call:
        return Call(endpoint, path, method, safe_request_id(given_id), client, bytes_in)

    def authorize(self, operation: Operation | None, key: str) -> None:
        """Refuse before the request is read. `operation` None (a route a door didn't
        classify) is protected like a prediction."""
        if not self._key or operation in OPEN:
            return
        if not hmac.compare_digest(key.encode(), self._key):  # constant time: timing leaks nothing
            raise Unauthenticated()

    @contextmanager
    def serving(self, call: Call) -> Iterator:
        """A prediction: admitted (or refused) before its body is read, counted while it runs."""
        clf = self.classifier
        clf.admit()
        call.stats = RequestStats()
        _in_flight[id(call)] = (call.request_id, time.monotonic())
        try:
            with IN_FLIGHT.track_inprogress():
                yield call.stats
        finally:
            _in_flight.pop(id(call), None)
            update_memory(clf.engine.device if clf.engine is not None else None)

    def end(self, call: Call, status: int | str) -> float:
        """Count and log the answer the door gave (its protocol's status); returns the total time."""
        total = time.perf_counter() - call.started
        REQUESTS.labels(call.endpoint, str(status)).inc()
        if call.stats is not None:
            observe_prediction(total, call.stats)
        log_request(call.request_id, call.method, call.path, status, call.bytes_in, call.stats, total, call.client)
        return total
