"""A peer in `make bench`: the same classifier written the Ray Serve 2.60 way (a deployment).

Model, preprocessing and answer from scripts/peers/common.py. A local Ray cluster of
`--workers` CPUs runs that many replicas of one CPU each (cores / replicas torch threads);
Ray's HTTP proxy on `--port` sends every path to them. A replica reads the multipart `image`
part as ab and our users send it, and `@serve.batch` groups up to 4 requests, waiting at most
5 ms, as LitServe's batch_timeout. GET answers {"status": "alive"}, for the bench's readiness poll.
Run by scripts/bench_peers.py from its own install directory (PYTHONPATH), never our venv's:

    python -m scripts.peers.rayserve_server --port 8123 [--workers 2] [--temp-dir DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import threading

import ray
import torch
from ray import serve
from starlette.requests import Request

from scripts.peers.common import build_model, forward, preprocess, threads_per_worker, top5


@serve.deployment(ray_actor_options={"num_cpus": 1})
class Classifier:
    def __init__(self, replicas: int) -> None:
        torch.set_num_threads(threads_per_worker(replicas))
        self.model = build_model()

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.005)
    async def classify(self, images: list[torch.Tensor]) -> list[dict]:
        return [top5(s) for s in forward(self.model, torch.stack(images))]

    async def __call__(self, request: Request) -> dict:
        if request.method == "GET":
            return {"status": "alive"}
        form = await request.form()
        return await self.classify(preprocess(await form["image"].read()))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--temp-dir", default=None)
    args = parser.parse_args()
    # A private cluster: its own session directory, no dashboard, a small object store (no
    # object passes through it here; Ray's minimum is 75 MB).
    ray.init(
        num_cpus=args.workers,
        include_dashboard=False,
        object_store_memory=100 * 2**20,
        _temp_dir=args.temp_dir or tempfile.mkdtemp(prefix="ray-"),
    )
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    serve.run(Classifier.options(num_replicas=args.workers).bind(args.workers), route_prefix="/")
    threading.Event().wait()  # serve.run returns once every replica is up; the driver holds the cluster


if __name__ == "__main__":
    main()
