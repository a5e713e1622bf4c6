"""gunicorn's gthread worker, with a graceful stop that serves the connections it accepted.

gunicorn 23's gthread worker accepts a connection and parks it in its poller until the request
bytes arrive. On SIGTERM (a HUP reload's old generation, `supervisorctl stop`, a scale-down)
the loop ends and the parked connections are dropped when the process exits: the client (nginx)
gets a connection reset, and a 502. Measured: 3 resets in 4 TERMs of a worker under 4 clients;
a HUP reload under load lost 1-2 requests each time.

The worker's thread pool is shut down once the loop has ended, before the graceful wait; just
before that, the parked new connections are handed to the pool like any readable one, so the
graceful wait covers them. Idle keep-alive connections (waiting for a next request) are closed,
as the stock worker would: their clients retry on a new connection.

Responses also leave in one send (`OneWriteResponse`): gunicorn sends the headers and the body
in two, and a worker killed between them (kill -9, the OOM killer) leaves nginx holding
headers it has already passed on, so the client gets a truncated body instead of nginx's retry
on another host. Seen once in tests/test_multihost.py's kill -9 under load.
"""

from __future__ import annotations

from concurrent import futures

from gunicorn.http import wsgi
from gunicorn.workers.gthread import ThreadWorker


class _Stash:
    """Stands in for the socket while gunicorn "sends" the headers."""

    def __init__(self) -> None:
        self.data = b""

    def sendall(self, data: bytes) -> None:
        self.data += data


class _Prefixed:
    """The socket, with the stashed headers glued to the next send."""

    def __init__(self, sock, head: bytes) -> None:
        self.sock, self.head = sock, head

    def sendall(self, data: bytes) -> None:
        head, self.head = self.head, b""
        self.sock.sendall(head + data)


class OneWriteResponse(wsgi.Response):
    head = b""

    def send_headers(self) -> None:
        if self.headers_sent:
            return
        sock, self.sock = self.sock, _Stash()
        try:
            super().send_headers()
        finally:
            self.head, self.sock = self.sock.data, sock

    def write(self, arg) -> None:
        self.send_headers()
        if not self.head:
            return super().write(arg)
        sock, self.sock = self.sock, _Prefixed(self.sock, self.head)
        try:
            super().write(arg)
        finally:
            pending, self.sock, self.head = self.sock.head, sock, b""
            if pending:  # nothing of the body was due: the headers still must go
                sock.sendall(pending)

    def can_sendfile(self) -> bool:
        return False  # sendfile writes to the socket's fd, past the stash

    def close(self) -> None:
        self.send_headers()
        if self.head:
            self.sock.sendall(self.head)
            self.head = b""
        super().close()


class DrainingThreadWorker(ThreadWorker):
    def init_process(self) -> None:
        # gunicorn builds each response through this module-level name (wsgi.create); there
        # is no setting for it. Set in the worker process, for this worker class only.
        wsgi.Response = OneWriteResponse
        super().init_process()

    def get_thread_pool(self) -> futures.ThreadPoolExecutor:
        pool = super().get_thread_pool()
        stop_pool = pool.shutdown

        def drain_then_shutdown(wait: bool = True, **kwargs) -> None:
            if not self.alive:
                self._serve_parked()
            stop_pool(wait, **kwargs)

        pool.shutdown = drain_then_shutdown  # the one seam between the loop's end and the wait
        return pool

    def _serve_parked(self) -> None:
        listeners = {sock.fileno() for sock in self.sockets}
        with self._lock:
            parked = [key for key in self.poller.get_map().values() if key.fd not in listeners]
        for key in parked:
            conn = key.data.args[0]  # partial(self.on_client_socket_readable, conn)
            if conn.initialized:  # an idle keep-alive connection: close it, as gunicorn does
                with self._lock:
                    self.poller.unregister(key.fileobj)
                    self._keep.remove(conn)
                self.nr_conns -= 1
                conn.close()
            else:  # accepted, its request on the way: serve it within the graceful wait
                self.on_client_socket_readable(conn, key.fileobj)
