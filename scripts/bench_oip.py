"""The Open Inference Protocol rows of `make bench`: HTTP binary and gRPC beside /model_predict.

One stack (gunicorn_conf.py with its per-worker gRPC listeners, behind the repo's nginx), the
same web JPEG, c=8, in alternating rounds: ab multipart /model_predict, then perf_analyzer
over HTTP (binary tensor extension, its default) and over gRPC, through nginx's :8999 and
:8001 listeners. Goal: OIP within 5% of /model_predict's throughput.

    python -m scripts.bench_oip IMAGE.jpg      # this part alone
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


def perf_analyzer(protocol: str, url: str, data: Path) -> dict:
    # Three windows of SECONDS / 3 (perf_analyzer needs three to call a measurement stable;
    # 100% accepts any three), so both tools measure for the same time.
    out = subprocess.run(
        [str(PERF_ANALYZER), "-m", "classifier", "-u", url, "-i", protocol, "--input-data", str(data),
         "--concurrency-range", str(CONCURRENCY), "--measurement-interval", str(SECONDS * 1000 // 3),
         "--stability-percentage", "100", "--max-trials", "3"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(f"perf_analyzer failed:\n{(out.stdout + out.stderr)[-2000:]}")
    out = out.stdout
    rps = float(re.search(r"Throughput: ([\d.]+) infer/sec", out).group(1))
    p50 = int(re.search(r"p50 latency: (\d+) usec", out).group(1)) / 1000
    return {"rps": rps, "p50": p50}


def run(image: Path, tmp: Path, ab) -> dict:
    """Medians of ROUNDS alternating runs; `ab(url, image, c, seconds, warm_first)` from scripts.loadgen."""
    blob = image.read_bytes()
    data = tmp / "oip-input.json"  # a BYTES element: base64 of its 4-byte length + the file
    data.write_text(
        json.dumps({"data": [{"image": {"b64": base64.b64encode(struct.pack("<I", len(blob)) + blob).decode()}}]})
    )
    grpc_backend, grpc_port = f"127.0.0.1:{free_port()}", free_port()
    env = {"MODEL_ARCH": "resnet18", "MODEL_WEIGHTS": "random", "ACCESS_LOG": "/dev/null", "GRPC_BIND": grpc_backend}
    gunicorn, backend = start_gunicorn(env, tmp / "oip-gunicorn.log")
    try:
        nginx, url = start_nginx(tmp / "oip-nginx", [backend.removeprefix("http://")], (grpc_port, [grpc_backend]))
        try:
            ab(url, image, CONCURRENCY, 4, True)  # warm both workers
            samples: dict[str, list[dict]] = {"model_predict": [], "oip_http": [], "oip_grpc": []}
            for _ in range(ROUNDS):
                samples["model_predict"].append(ab(url, image, CONCURRENCY, SECONDS, False))
                samples["oip_http"].append(perf_analyzer("http", url.removeprefix("http://"), data))
                samples["oip_grpc"].append(perf_analyzer("grpc", f"127.0.0.1:{grpc_port}", data))
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
        f"## Open Inference Protocol: ResNet-18 fp32, web JPEG, c={CONCURRENCY}, {ROUNDS} alternating rounds",
        "",
        "| front door | req/s (median) | p50 ms | vs /model_predict |",
        "|---|---|---|---|",
    ]
    for name, label in (
        ("model_predict", "/model_predict (ab, multipart)"),
        ("oip_http", "OIP HTTP binary (perf_analyzer)"),
        ("oip_grpc", "OIP gRPC via nginx :8001 (perf_analyzer)"),
    ):
        m = oip["medians"][name]
        lines.append(f"| {label} | {m['rps']:.1f} | {m['p50']:.0f} | {m['rps'] / base:.0%} |")
    return lines


if __name__ == "__main__":
    result = run(Path(sys.argv[1]), Path(tempfile.mkdtemp(prefix="bench-oip-")), ab)
    print(json.dumps(result["samples"]))
    print("\n".join(report(result)))
