"""A peer in `make bench`: the same classifier written the BentoML 1.4 way (a service class).

Model, preprocessing and answer from scripts/peers/common.py. One batchable API at
/model_predict takes the multipart `image` part as ab and our users send it (BentoML parses
the form and opens the image with PIL); its adaptive batching groups up to 4 requests. 2
workers (one per core here), each with cores / workers torch threads.
max_latency_ms is BentoML's latency budget, not a wait: its dispatcher picks the window
itself and answers 503 to what it predicts would miss the budget, so the budget is set to
ours, REQUEST_TIMEOUT_S (5 s).
Run by scripts/bench_peers.py from its own install directory (PYTHONPATH), never our venv's:

    python -m bentoml serve scripts.peers.bentoml_server:Classifier --host 127.0.0.1 --port 8123
"""

from __future__ import annotations

import bentoml
import torch
from PIL.Image import Image

from scripts.peers.common import build_model, forward, pil_preprocess, threads_per_worker, top5

WORKERS = 2


@bentoml.service(workers=WORKERS, traffic={"timeout": 30})
class Classifier:
    def __init__(self) -> None:
        torch.set_num_threads(threads_per_worker(WORKERS))
        self.model = build_model()

    @bentoml.api(route="/model_predict", batchable=True, max_batch_size=4, max_latency_ms=5000)
    def model_predict(self, image: list[Image]) -> list[dict]:
        scores = forward(self.model, torch.stack([pil_preprocess(i) for i in image]))
        return [top5(s) for s in scores]
