"""The other doors' rows of `make bench`: OIP HTTP binary, gRPC and gRPC streaming, TorchServe's
/predictions, and the tensor model, beside /model_predict.

One stack (gunicorn_conf.py with its per-worker gRPC listeners, behind the repo's nginx), the
same web JPEG, c=8, in alternating rounds: ab multipart /model_predict, then perf_analyzer
over HTTP (binary tensor extension, its default) and over gRPC, through nginx's :8999 and
:8001 listeners, then ab posting the image as the body of TorchServe's /predictions/{model}
(as `curl -X POST -T` does). Goal: every door within 5% of /model_predict's throughput.

    python -m scripts.bench_oip IMAGE.jpg            # this part alone
    python -m scripts.bench_oip IMAGE.jpg 1 3        # a smoke run: 1 round of 3 s per door
"""

from __future__ import annotations

import base64
import json
import re
import statistics
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

from scripts.loadgen import ab
from scripts.procs import ROOT, free_port, start_gunicorn, start_nginx, stop

PERF_ANALYZER = ROOT / ".venv-clients" / "bin" / "perf_analyzer"
ROUNDS, SECONDS, CONCURRENCY = 3, 6, 8
ROWS = (
    ("model_predict", "/model_predict (ab, multipart)"),
    ("oip_http", "OIP HTTP binary (perf_analyzer)"),
    ("oip_grpc", "OIP gRPC via nginx :8001 (perf_analyzer)"),
    ("oip_stream", "OIP gRPC ModelStreamInfer (perf_analyzer --streaming)"),
    ("torchserve", "TorchServe /predictions (ab, image as the body)"),
    # Not an image door: the client decoded and resized (no decode here), 600 KB a request.
    ("tensor_grpc", "OIP gRPC classifier_tensor, FP32 pixels (perf_analyzer)"),
)


def client_pixels(image: Path) -> list[float]:
    """image_client.py's preprocessing: the whole image resized to 224x224, RGB 0-255, CHW."""
    import numpy as np
    from PIL import Image

    pixels = np.asarray(Image.open(image).convert("RGB").resize((224, 224), Image.Resampling.BILINEAR))
    return np.transpose(pixels, (2, 0, 1)).astype(np.float32).ravel().tolist()


def perf_analyzer(
    protocol: str, url: str, data: Path, seconds: int = SECONDS, model: str = "classifier", *extra
) -> dict:
    # Three windows of seconds / 3 (perf_analyzer needs three to call a measurement stable;
    # 100% accepts any three), so both tools measure for the same time.
    out = subprocess.run(
        [str(PERF_ANALYZER), "-m", model, "-u", url, "-i", protocol, "--input-data", str(data),
         "--concurrency-range", str(CONCURRENCY), "--measurement-interval", str(seconds * 1000 // 3),
         "--stability-percentage", "100", "--max-trials", "3", *extra],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(f"perf_analyzer failed:\n{(out.stdout + out.stderr)[-2000:]}")
    out = out.stdout
    rps = float(re.search(r"Throughput: ([\d.]+) infer/sec", out).group(1))
    p50 = int(re.search(r"p50 latency: (\d+) usec", out).group(1)) / 1000
    return {"rps": rps, "p50": p50}


def ab_body(url: str, image: Path, seconds: int = SECONDS) -> dict:
    """ab POSTing the image as the whole body to TorchServe's route, plain HTTP/1.0 like the
    /model_predict row; a run with errors raises, so a broken door can't pass for a fast one."""
    out = subprocess.run(
        ["ab", "-r", "-l", "-n", "1000000", "-c", str(CONCURRENCY), "-t", str(seconds), "-p", str(image),
         "-T", "image/jpeg", url + "/predictions/classifier"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    bad = sum(int(m) for m in re.findall(r"(?:Failed requests|Non-2xx responses):\s+(\d+)", out))
    if bad:
        raise RuntimeError(f"TorchServe door: {bad} failed or non-2xx answers at c={CONCURRENCY}")
    rps = float(re.search(r"Requests per second:\s+([\d.]+)", out).group(1))
    return {"rps": rps, "p50": float(re.search(r"\n\s+50%\s+(\d+)", out).group(1))}


def run(image: Path, tmp: Path, ab, rounds: int = ROUNDS, seconds: int = SECONDS) -> dict:
    """Medians of `rounds` alternating runs; `ab(url, image, c, seconds, warm_first)` from scripts.loadgen."""
    blob = image.read_bytes()
    data = tmp / "oip-input.json"  # a BYTES element: base64 of its 4-byte length + the file
    data.write_text(
        json.dumps({"data": [{"image": {"b64": base64.b64encode(struct.pack("<I", len(blob)) + blob).decode()}}]})
    )
    pixels = tmp / "tensor-input.json"  # the same image as image_client.py sends it: 224x224 FP32 0-255 CHW
    pixels.write_text(json.dumps({"data": [{"pixels": {"content": client_pixels(image), "shape": [3, 224, 224]}}]}))
    grpc_backend, grpc_port = f"127.0.0.1:{free_port()}", free_port()
    env = {"MODEL_ARCH": "resnet18", "MODEL_WEIGHTS": "random", "ACCESS_LOG": "/dev/null", "GRPC_BIND": grpc_backend}
    gunicorn, backend = start_gunicorn(env, tmp / "oip-gunicorn.log")
    try:
        nginx, url = start_nginx(tmp / "oip-nginx", [backend.removeprefix("http://")], (grpc_port, [grpc_backend]))
        try:
            ab(url, image, CONCURRENCY, 4, True)  # warm both workers
            samples: dict[str, list[dict]] = {name: [] for name, _ in ROWS}
            grpc_url = f"127.0.0.1:{grpc_port}"
            for _ in range(rounds):
                samples["model_predict"].append(ab(url, image, CONCURRENCY, seconds, False))
                samples["oip_http"].append(perf_analyzer("http", url.removeprefix("http://"), data, seconds))
                samples["oip_grpc"].append(perf_analyzer("grpc", grpc_url, data, seconds))
                samples["oip_stream"].append(
                    perf_analyzer("grpc", grpc_url, data, seconds, "classifier", "--streaming")
                )
                samples["torchserve"].append(ab_body(url, image, seconds))
                samples["tensor_grpc"].append(perf_analyzer("grpc", grpc_url, pixels, seconds, "classifier_tensor"))
        finally:
            stop(nginx)
    finally:
        stop(gunicorn)
    medians = {
        name: {key: statistics.median(s[key] for s in runs) for key in ("rps", "p50")} for name, runs in samples.items()
    }
    return {"medians": medians, "samples": samples}


def report(oip: dict) -> list[str]:
    base = oip["medians"]["model_predict"]["rps"]
    lines = [
        "",
        f"## Open Inference Protocol and TorchServe: ResNet-18 fp32, web JPEG, c={CONCURRENCY}, "
        f"{len(oip['samples']['model_predict'])} alternating rounds",
        "",
        "| front door | req/s (median) | p50 ms | vs /model_predict |",
        "|---|---|---|---|",
    ]
    for name, label in ROWS:
        m = oip["medians"][name]
        lines.append(f"| {label} | {m['rps']:.1f} | {m['p50']:.0f} | {m['rps'] / base:.0%} |")
    return lines


if __name__ == "__main__":
    rounds, seconds = (int(arg) for arg in sys.argv[2:4]) if len(sys.argv) > 3 else (ROUNDS, SECONDS)
    result = run(Path(sys.argv[1]), Path(tempfile.mkdtemp(prefix="bench-oip-")), ab, rounds, seconds)
    print(json.dumps(result["samples"]))
    print("\n".join(report(result)))
