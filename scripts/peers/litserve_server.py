"""The peer in `make bench`: the same classifier written the LitServe way (LitAPI).

Model, preprocessing and answer from scripts/peers/common.py (ResNet-18, seeded random
weights, resize 256 + center crop 224, top-5 JSON); multipart `image` uploads like ours.
LitServe's own batching (max_batch_size 4) over `--workers` processes, each given
cores / workers torch threads, the budget our workers get.
Run by scripts/bench_peers.py from its own install directory (PYTHONPATH), never our venv's.

    python -m scripts.peers.litserve_server --port 8123 [--workers 2]
"""

from __future__ import annotations

import argparse
import os

import litserve as ls
import torch

from scripts.peers.common import build_model, forward, preprocess, threads_per_worker, top5


class ResNetAPI(ls.LitAPI):
    def setup(self, device):
        torch.set_num_threads(threads_per_worker(int(os.environ["PEER_WORKERS"])))
        self.model = build_model().to(device)
        self.device = device

    def decode_request(self, request):
        # A multipart form: LitServe hands over starlette's FormData.
        return preprocess(request["image"].file.read())

    def batch(self, inputs):
        return torch.stack(inputs)

    def predict(self, x):
        return forward(self.model, x.to(self.device))

    def unbatch(self, output):
        return list(output)

    def encode_response(self, output):
        return top5(output)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    os.environ["PEER_WORKERS"] = str(args.workers)
    api = ResNetAPI(max_batch_size=4, batch_timeout=0.005, api_path="/model_predict")
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=args.workers)
    server.run(port=args.port, host="127.0.0.1", generate_client_file=False)


if __name__ == "__main__":
    main()
