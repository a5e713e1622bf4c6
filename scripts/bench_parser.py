"""gunicorn's HTTP parsing per request, its Python parser against gunicorn_h1c (the fast C one):
the head nginx forwards and a 70 KB body read in full, from memory (no sockets, no app).

    pip install --target /tmp/h1c gunicorn_h1c
    PYTHONPATH=/tmp/h1c python -m scripts.bench_parser      # prints us per request for each
"""

from __future__ import annotations

import io
import statistics
import time

from gunicorn.config import Config
from gunicorn.http.parser import RequestParser

BODY = b"x" * 70_000
HEAD = (
    b"POST /model_predict HTTP/1.1\r\nHost: classifier\r\nX-Request-ID: 0123456789abcdef0123456789abcdef\r\n"
    b"X-Real-IP: 127.0.0.1\r\nX-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Proto: http\r\nConnection: close\r\n"
    b"Content-Length: %d\r\nContent-Type: multipart/form-data; boundary=----abc\r\n"
    b"User-Agent: ApacheBench/2.3\r\nAccept: */*\r\n\r\n" % len(BODY)
)


class Socket:
    def __init__(self, data: bytes) -> None:
        self.buf = io.BytesIO(data)

    def recv(self, n: int) -> bytes:
        return self.buf.read(n)

    def recv_into(self, buf) -> int:
        data = self.buf.read(len(buf))
        buf[: len(data)] = data
        return len(data)


def parse_once(cfg: Config) -> None:
    req = next(RequestParser(cfg, Socket(HEAD + BODY), ("127.0.0.1", 1)))
    read = 0
    while chunk := req.body.read(65536):
        read += len(chunk)
    assert read == len(BODY), read


def us_per_request(parser: str, n: int = 2000, repeats: int = 7) -> float:
    cfg = Config()
    cfg.set("http_parser", parser)
    parse_once(cfg)  # "fast" raises here when gunicorn_h1c is missing
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            parse_once(cfg)
        times.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(times)


if __name__ == "__main__":
    for parser in ("python", "fast"):
        print(f"{parser}: {us_per_request(parser):.1f} us per request")
