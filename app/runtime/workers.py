"""gunicorn's gthread worker, with each response's headers and body leaving in one send.

gunicorn (27.0.1 as 23.0) sends a response's headers and its body in two writes. A worker
killed between them (kill -9, the OOM killer) leaves nginx holding headers it has already
passed on, so the client gets a truncated body instead of nginx's retry on another host. Seen
once in tests/test_multihost.py's kill -9 under load; tests/test_workers.py shows the stock
response still writes twice.

What this module no longer does: gunicorn 23's gthread worker parked accepted connections in
its poller and dropped them on SIGTERM (3 resets in 4 TERMs under load; HUP reloads lost 1-2
requests). 24.0 rewrote the worker: it hands each accepted connection to its threads at once
and waits for all of them within graceful_timeout, so our drain code was deleted.
tests/test_server.py TERMs workers under load and tests/test_reload.py HUPs under load, both
with the stock worker loop.
"""

from __future__ import annotations

from gunicorn.http import wsgi
from gunicorn.workers.gthread import ThreadWorker


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


class OneWriteThreadWorker(ThreadWorker):
    def init_process(self) -> None:
        # gunicorn builds each response through this module-level name (wsgi.create); there
        # is no setting for it. Set in the worker process, for this worker class only.
        wsgi.Response = OneWriteResponse
        super().init_process()
