"""gunicorn's gthread worker: responses leave in one send, its error pages in the doors' JSON shape.

gunicorn (27.0.1 as 23.0) sends a response's headers and its body in two writes. A worker
killed between them (kill -9, the OOM killer) leaves nginx holding headers it has already
passed on, so the client gets a truncated body instead of nginx's retry on another host. Seen
once in tests/test_multihost.py's kill -9 under load; tests/test_workers.py shows the stock
response still writes twice.

gunicorn's own error pages (a request its parser refuses: since 27, control characters in a
header value, which nginx passes on) are HTML; `handle_error` sends them in the door's JSON
error shape instead (tests/test_doors.py).

What this module no longer does: gunicorn 23's gthread worker parked accepted connections in
its poller and dropped them on SIGTERM (3 resets in 4 TERMs under load; HUP reloads lost 1-2
requests). 24.0 rewrote the worker: it hands each accepted connection to its threads at once
and waits for all of them within graceful_timeout, so our drain code was deleted.
tests/test_server.py TERMs workers under load and tests/test_reload.py HUPs under load, both
with the stock worker loop.
"""

from __future__ import annotations

import json

from gunicorn.http import wsgi
from gunicorn.workers.gthread import ThreadWorker

from app.core.guard import safe_request_id
from app.http.errors import shape_for


class _Stash:
    """Stands in for the socket while gunicorn "sends" the headers."""

    def __init__(self) -> None:
        self.data = b""

    def sendall(self, data: bytes) -> None:
        self.data += data


class _Prefixed:
    """The socket, with the stashed headers glued to the first send."""

    def __init__(self, sock, head: bytes) -> None:
        self.sock, self.head = sock, head

    def sendall(self, data: bytes) -> None:
        head, self.head = self.head, b""
        self.sock.sendall(head + data)


class OneWriteResponse(wsgi.Response):
    head = b""  # serialised headers not yet on the wire

    def send_headers(self) -> None:
        if self.headers_sent:
            return
        sock, self.sock = self.sock, _Stash()
        try:
            super().send_headers()
        finally:
            self.head, self.sock = self.sock.data, sock

    def _emit_body(self, data: bytes) -> None:
        # gunicorn's one seam for putting body bytes on the wire (framing included).
        if not self.head:
            return super()._emit_body(data)
        sock, self.sock = self.sock, _Prefixed(self.sock, self.head)
        self.head = b""
        try:
            super()._emit_body(data)
        finally:
            self.sock = sock

    def can_sendfile(self) -> bool:
        return False  # sendfile writes to the socket's fd, past the stash

    def close(self) -> None:
        self.send_headers()
        if self.head:  # no body bytes were due (HEAD, 204, Content-Length: 0)
            head, self.head = self.head, b""
            self.sock.sendall(head)
        super().close()


ERROR_CODES = {400: "bad_request", 403: "forbidden", 414: "uri_too_long", 417: "expectation_failed",
               431: "headers_too_large", 501: "not_implemented"}  # fmt: skip


class _JsonErrorPage:
    """The client socket while gunicorn writes one of its own error pages (a request its parser
    refused before the app saw it: gunicorn 27 refuses control characters in header values,
    which nginx passes on). gunicorn writes HTML and has no hook for the body, so the page's
    status line is kept and its body becomes the door's own JSON error shape."""

    def __init__(self, sock, path: str, request_id: str) -> None:
        self.sock, self.path, self.request_id = sock, path, request_id

    def __getattr__(self, name: str):
        return getattr(self.sock, name)  # gettimeout, setblocking, fileno...

    def sendall(self, data: bytes) -> None:
        status_line = data.split(b"\r\n", 1)[0].decode("latin-1")  # "HTTP/1.1 400 Bad Request"
        status, reason = (status_line.split(" ", 2)[1:] + [""])[:2]
        code = ERROR_CODES.get(int(status), "internal_error")
        message = f"{reason}: the request line or headers are malformed (refused before the app read it)"
        body = json.dumps(shape_for(self.path)(code, message, self.request_id)).encode()
        head = (
            f"{status_line}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"X-Request-ID: {self.request_id}\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        self.sock.sendall(head.encode("latin-1") + body)


class OneWriteThreadWorker(ThreadWorker):
    def init_process(self) -> None:
        # gunicorn builds each response through this module-level name (wsgi.create); there
        # is no setting for it. Set in the worker process, for this worker class only.
        wsgi.Response = OneWriteResponse
        super().init_process()

    def handle_error(self, req, client, addr, exc) -> None:
        req = req or getattr(exc, "req", None)  # what gunicorn parsed before it refused the rest
        headers = dict(getattr(req, "headers", None) or [])
        rid = safe_request_id(headers.get("X-REQUEST-ID"))
        super().handle_error(req, _JsonErrorPage(client, getattr(req, "path", "") or "", rid), addr, exc)
