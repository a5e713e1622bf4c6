"""The result-cache rows of `make bench`: repeated images answered from Redis, and what the
cache costs when it misses.

Two stacks side by side (ResNet-18 fp32, the repo's nginx and gunicorn_conf.py), one with
REDIS_URL pointing at a redis-server started here on loopback, one without; alternating rounds:
- hits: ab at c=8 posting one image over and over (the cache-on stack answers from Redis);
- misses: c=8 Python clients posting a fresh image each time (the same JPEG with a unique
  comment segment: same pixels, new sha256), on both stacks, so the difference is the cache's
  cost on a miss (hash, lookup, serialise, queue the write). ab can't vary its body.

    python -m scripts.bench_cache IMAGE.jpg      # this part alone
"""

from __future__ import annotations

import itertools
import json
import statistics
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

from scripts.loadgen import ab
from scripts.procs import free_port, stack, start_redis, stop

ROUNDS, SECONDS, CONCURRENCY = 3, 6, 8


def unique_jpegs(jpeg: bytes):
    """The same JPEG with a COM segment holding a counter: decodes to the same pixels."""
    for n in itertools.count():
        comment = f"bench {n}".encode()
        yield jpeg[:2] + b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment + jpeg[2:]


def fresh_images(url: str, images, seconds: float = SECONDS) -> dict:
    """CONCURRENCY clients, each posting a never-seen image (from `images`) until time is up."""
    lock, latencies, failed = threading.Lock(), [], []
    deadline = time.monotonic() + seconds

    def client():
        with requests.Session() as session:
            while time.monotonic() < deadline:
                with lock:
                    body = next(images)
                started = time.perf_counter()
                r = session.post(url + "/model_predict", files={"image": ("x.jpg", body)}, timeout=60)
                (latencies if r.status_code == 200 else failed).append((time.perf_counter() - started) * 1000)

    threads = [threading.Thread(target=client) for _ in range(CONCURRENCY)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    return {"rps": len(latencies) / elapsed, "p50": statistics.median(latencies), "failed": len(failed)}


def run(image: Path, tmp: Path, ab) -> dict:
    """Medians of ROUNDS alternating runs; `ab(url, image, c, seconds, warm_first)` from scripts.loadgen."""
    port = free_port()
    redis_proc = start_redis(tmp / "redis", port)
    base = {"MODEL_ARCH": "resnet18"}
    fresh = unique_jpegs(image.read_bytes())  # one sequence for the whole run: never repeats
    samples: dict[str, list[dict]] = {"hit": [], "hit_c1": [], "miss": [], "off_fresh": [], "off_repeat": []}
    try:
        with (
            stack({**base, "REDIS_URL": f"redis://127.0.0.1:{port}/0"}, tmp / "cache-on") as on,
            stack(base, tmp / "cache-off") as off,
        ):
            for url in (on.url, off.url):
                ab(url, image, CONCURRENCY, 3, True)
            for _ in range(ROUNDS):
                samples["hit"].append(ab(on.url, image, CONCURRENCY, SECONDS, False))
                samples["hit_c1"].append(ab(on.url, image, 1, 3, False))
                samples["off_repeat"].append(ab(off.url, image, CONCURRENCY, SECONDS, False))
                samples["miss"].append(fresh_images(on.url, fresh))
                samples["off_fresh"].append(fresh_images(off.url, fresh))
    finally:
        stop(redis_proc)
    medians = {
        name: {key: statistics.median(s[key] for s in runs) for key in ("rps", "p50")} for name, runs in samples.items()
    }
    return {"medians": medians, "samples": samples}


def report(cache: dict) -> list[str]:
    m = cache["medians"]
    rows = (
        ("repeated image, cache on: hits (ab)", "hit", "off_repeat"),
        ("repeated image, cache on: hits at c=1 (ab)", "hit_c1", None),
        ("repeated image, no cache (ab)", "off_repeat", "off_repeat"),
        ("fresh images, cache on: misses (Python clients)", "miss", "off_fresh"),
        ("fresh images, no cache (Python clients)", "off_fresh", "off_fresh"),
    )
    lines = [
        "",
        f"## Result cache (REDIS_URL): ResNet-18 fp32, web JPEG, c={CONCURRENCY}, {ROUNDS} alternating rounds",
        "",
        "| workload | req/s (median) | p50 ms | vs no cache, same workload |",
        "|---|---|---|---|",
    ]
    for label, name, ref in rows:
        ratio = f"{m[name]['rps'] / m[ref]['rps']:.2f}x" if ref else ""
        lines.append(f"| {label} | {m[name]['rps']:.1f} | {m[name]['p50']:.1f} | {ratio} |")
    return lines


if __name__ == "__main__":
    result = run(Path(sys.argv[1]), Path(tempfile.mkdtemp(prefix="bench-cache-")), ab)
    print(json.dumps(result["samples"]))
    print("\n".join(report(result)))
