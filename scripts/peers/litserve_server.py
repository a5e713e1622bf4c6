"""The peer in `make bench`: the same classifier written the LitServe way (LitAPI).

ResNet-18 with the same random-init weights' shape, torchvision's ImageNet preprocessing
(resize 256, center crop 224, normalise), fp32, top-5 softmax as JSON; multipart `image`
uploads like ours. LitServe's own batching (max_batch_size 4) over `--workers` processes,
each given cores / workers torch threads, the budget our workers get.
Run by scripts/bench_peers.py from its own install directory (PYTHONPATH), never our venv's.

    python -m scripts.peers.litserve_server --port 8123 [--workers 2]
"""

from __future__ import annotations

import argparse
import io
import os

import litserve as ls
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.models import resnet18


class ResNetAPI(ls.LitAPI):
    def setup(self, device):
        torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // int(os.environ["PEER_WORKERS"])))
        self.model = resnet18().eval().to(device)
        self.device = device
        self.transform = T.Compose(
            [T.Resize(256), T.CenterCrop(224), T.ToTensor(), T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])]
        )

    def decode_request(self, request):
        data = request["image"].file.read()  # a multipart form: LitServe hands over starlette's FormData
        return self.transform(Image.open(io.BytesIO(data)).convert("RGB"))

    def batch(self, inputs):
        return torch.stack(inputs)

    @torch.inference_mode()
    def predict(self, x):
        return self.model(x.to(self.device)).softmax(1)

    def unbatch(self, output):
        return list(output)

    def encode_response(self, output):
        scores, idx = output.topk(5)
        return {"predictions": [{"index": int(i), "score": float(s)} for s, i in zip(scores, idx, strict=True)]}


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
