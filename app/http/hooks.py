"""The HTTP side of app.core.guard, for every Flask route of every HTTP door.

Before a route runs: start its `Call` (request id, client, size) and check the key for the
route's operation, before anything reads the body. After: tag the response with the id and
`Server-Timing`, and let the gate count and log it. Routes declare their operation with
`@operation(...)`; an undeclared route is protected.
"""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask, Response, current_app, g, request

from app.core.guard import Gate, Operation, presented_key
from app.telemetry.requestlog import server_timing


def operation(op: Operation) -> Callable:
    def declare(view: Callable) -> Callable:
        view.operation = op
        return view

    return declare


def gate() -> Gate:
    return current_app.extensions["gate"]


def _begin() -> None:
    rule = request.url_rule
    g.call = gate().begin(
        rule.rule if rule is not None else "unmatched",  # never the raw path: it would make new series
        request.path,
        request.method,
        request.headers.get("X-Request-ID"),
        request.headers.get("X-Real-IP", request.remote_addr),
        request.content_length or 0,
    )
    if request.endpoint is None:
        return  # no route: the 404/405 that follows serves nothing
    view = current_app.view_functions[request.endpoint]
    gate().authorize(getattr(view, "operation", None), presented_key(request.headers.get))


def _finish(response: Response) -> Response:
    call = g.get("call")
    if call is None:  # refused before _begin ran (nothing else runs first, but never answer without an id)
        return response
    total = gate().end(call, response.status_code)
    response.headers["X-Request-ID"] = call.request_id
    response.headers["Server-Timing"] = server_timing(call.stats, total)
    return response


def init_app(app: Flask) -> None:
    app.before_request(_begin)
    app.after_request(_finish)
