"""The GPU check's table: one PRECISION served by WORKERS_PER_GPU workers per GPU, through the
repo's nginx when it is installed, loaded with ab (scripts/loadgen.py, as make bench does) or,
where ab is missing, with a closed loop of Python clients, at each concurrency.
"""

from __future__ import annotations

import multiprocessing
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import requests
from prometheus_client.parser import text_string_to_metric_families
from urllib3 import encode_multipart_formdata

from scripts import loadgen
from scripts.gpu_check import Checks, Settings, save, serve, track
from scripts.procs import start_nginx, stop


def _client(url: str, body: bytes, ctype: str, threads: int, seconds: float) -> list[tuple[float, float, int]]:
    """(sent, answered, status) of each request sent within `seconds`, from `threads` clients that
    each send the next request as soon as the last is answered, as ab's -c clients do."""
    end = time.monotonic() + seconds

    def loop() -> list[tuple[float, float, int]]:
        done, session = [], requests.Session()
        while (sent := time.monotonic()) < end:
            try:
                status = session.post(url, data=body, headers={"Content-Type": ctype}, timeout=60).status_code
            except requests.RequestException:
                status = 0
            done.append((sent, time.monotonic(), status))
        return done

    with ThreadPoolExecutor(threads) as pool:
        return [row for rows in pool.map(lambda _: loop(), range(threads)) for row in rows]


def python_load(url: str, image: Path, concurrency: int, seconds: float) -> dict:
    """ab's figures from Python clients, spread over processes so the GIL doesn't cap them.

    Hand-written because no maintained PyPI load generator reports ab's closed-loop figures
    without its own runtime (locust) and the GPU machine has no ab and no network to fetch one.
    """
    body, ctype = encode_multipart_formdata({"image": (image.name, image.read_bytes(), "image/jpeg")})
    procs = min(concurrency, 4)
    shares = [concurrency // procs + (i < concurrency % procs) for i in range(procs)]
    with multiprocessing.get_context("fork").Pool(procs) as pool:
        parts = pool.starmap(_client, [(url + "/model_predict", body, ctype, n, seconds) for n in shares])
    rows = [row for part in parts for row in part]
    ok = [(answered - sent) * 1000 for sent, answered, status in rows if status == 200]
    p50, p99 = np.percentile(ok, [50, 99]) if ok else (0.0, 0.0)
    # Over the time the requests took, the last answers included (CLOCK_MONOTONIC is system-wide):
    # a window shorter than a request would otherwise count none.
    took = max(row[1] for row in rows) - min(row[0] for row in rows)
    return {"rps": len(ok) / took, "p50": p50, "p99": p99, "complete": len(rows), "failed": len(rows) - len(ok)}


def batches(url: str) -> tuple[float, float]:
    """(images, forward passes) so far, summed over the workers."""
    families = text_string_to_metric_families(requests.get(url + "/metrics", timeout=10).text)
    got = {x.name: x.value for family in families for x in family.samples}
    return got.get("classifier_batch_size_sum", 0.0), got.get("classifier_batch_size_count", 0.0)


def bench(s: Settings, precision: str) -> None:
    checks, rows, log = Checks(), [], s.outdir / f"gunicorn-{precision}.log"
    image, tool = (
        s.work / "web.jpg",
        "ab" if s.loadgen == "ab" or (s.loadgen == "auto" and shutil.which("ab")) else "python",
    )
    gunicorn = nginx = path = None
    try:
        gunicorn, backend = serve(s, precision, log)
        url, path = backend, "gunicorn direct"
        if s.nginx != "off" and shutil.which("nginx"):
            nginx, url = start_nginx(s.work / f"nginx-{precision}", [backend.removeprefix("http://")])
            track(s, nginx.pid)
            path = "through nginx"
        else:
            print(f"nginx {'off' if s.nginx == 'off' else 'not installed'}: gunicorn direct at {backend}", flush=True)
        warnings = [line for line in log.read_text().splitlines() if "[WARNING]" in line and "MODEL_LABELS" not in line]
        print(
            f"{precision}: {path}, load from {tool}" + "".join(f"\n  server warned: {w}" for w in warnings), flush=True
        )
        for c in s.concurrencies:
            python_load(url, image, c, 0.3 if s.dry else 1)  # warm: connections, batch shapes
            before = batches(backend)
            if tool == "ab":
                run = loadgen.ab(url, image, c, s.seconds, warm_first=False, expect_ok=False)
            else:
                run = python_load(url, image, c, s.seconds)
            images, passes = (now - then for now, then in zip(batches(backend), before, strict=True))
            row = {
                "precision": precision,
                "c": c,
                "rps": run["rps"],
                "p50": float(run["p50"]),
                "p99": float(run["p99"]),
            }
            row |= {"batch": images / passes if passes else 0.0, "errors": run["failed"] + run.get("non2xx", 0)}
            rows.append(row)
            print(row, flush=True)
        checks.check(
            rows and not any(r["errors"] for r in rows) and all(r["rps"] > 0 for r in rows),
            f"{precision}: every request answered 200 at c={','.join(map(str, s.concurrencies))} ({path}, {tool})",
        )
    finally:  # saved first: a step killed at its cap may not live through the servers' stop
        save(s, f"bench-{precision}", {"rows": rows, "tool": tool, "path": path, "checks": checks.lines})
        for proc in (nginx, gunicorn):
            if proc is not None:
                stop(proc)
