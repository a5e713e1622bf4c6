"""Where a request's CPU goes on the web path, and how close the stack gets to the in-process
ceiling with the same engine, precision and cores (decode + preprocess + forward, no HTTP).

At fp32 on CPUs without AMX the forward pass is 80-90% of a request, which hides the web
path; at native bf16 (AMX) ResNet-18's forward pass is about 5 ms and the web path decides.
Where bf16 isn't native, a light network (default MobileNetV3-Large, a few ms per image)
stands in for that regime. Each variant is a whole stack, all up at once, measured in
alternating rounds (ab c=8, web JPEG). CPU per request comes from /proc (psutil) for the
gunicorn workers and nginx's workers, and from getrusage for ab.

    python -m scripts.bench_webpath [--arch mobilenet_v3_large] [--rounds 3] [--seconds 6]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import statistics
import tempfile
import time
from pathlib import Path

import psutil
import torch

from scripts.bench import ceiling as ceiling_ips
from scripts.bench import classifier, image_sets, machine
from scripts.bench_peers import cpu_flags
from scripts.loadgen import ab, warm
from scripts.procs import stack


def upstream_keepalive(conf: str, requests: int = 1000) -> str:
    """A pool of idle connections to the backends (dropped at 4 s idle, before gunicorn's 5 s
    keepalive), which HTTP/1.1 reuse needs the Connection header cleared for (nginx sends
    "close"); each connection serves at most `requests` (nginx's default 1000)."""
    pool = f"keepalive 32;\n        keepalive_timeout 4s;\n        keepalive_requests {requests};"
    conf = conf.replace("upstream classifier {", "upstream classifier {\n        " + pool, 1)
    return conf.replace("proxy_http_version 1.1;", 'proxy_http_version 1.1;\n    proxy_set_header Connection "";', 1)


VARIANTS: dict[str, tuple[dict, object]] = {
    "as shipped": ({}, None),
    "upstream keepalive": ({}, upstream_keepalive),
    "keepalive 16 requests each": ({}, lambda conf: upstream_keepalive(conf, 16)),
    "nginx 1 worker": ({}, lambda conf: conf.replace("worker_processes auto;", "worker_processes 1;")),
    "gunicorn threads 12": ({"THREADS": "12"}, None),
    "batch delay 2 ms": ({"MAX_BATCH_DELAY_MS": "2"}, None),
}


def cpu_seconds(masters: list[psutil.Process]) -> dict[str, dict[int, float]]:
    """User + system seconds of each child of each master (gunicorn's or nginx's workers)."""
    out = {}
    for name, master in zip(("workers", "nginx"), masters, strict=True):
        out[name] = {}
        for child in master.children():
            with contextlib.suppress(psutil.NoSuchProcess):
                t = child.cpu_times()
                out[name][child.pid] = t.user + t.system
    return out


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(url: str, image: Path, masters: list[psutil.Process], seconds: int) -> dict:
    before, ab_before = cpu_seconds(masters), children_cpu()
    result = ab(url, image, 8, seconds, warm_first=False)
    after, ab_cpu = cpu_seconds(masters), children_cpu() - ab_before
    n = result["complete"]
    spent = {k: [t - before[k].get(pid, 0.0) for pid, t in after[k].items()] for k in after}
    return {
        "rps": result["rps"],
        "p50": result["p50"],
        **{f"{k}_ms": sum(v) / n * 1000 for k, v in spent.items()},
        "ab_ms": ab_cpu / n * 1000,
        # How evenly the gunicorn workers shared the work: the busiest one's share of their CPU.
        "busiest_worker": max(spent["workers"]) / max(sum(spent["workers"]), 1e-9),
    }


def stages(arch: str, engine: str, image: bytes, threads: int, n: int = 30) -> dict:
    """One thread, as a worker runs: decode + preprocess per image, forward per image at batch 4."""
    clf = classifier(arch, engine=engine, torch_threads=threads)
    torch.set_num_threads(threads)
    prep, fwd = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        tensor = clf.prepare(image)[0]
        prep.append(time.perf_counter() - t0)
    batch = torch.stack([tensor] * 4)
    clf.engine(batch)
    for _ in range(n // 2):
        t0 = time.perf_counter()
        clf.engine(batch)
        fwd.append((time.perf_counter() - t0) / 4)
    return {"prepare_ms": statistics.median(prep) * 1000, "forward_ms": statistics.median(fwd) * 1000}


def run(arch: str, engine: str, rounds: int, seconds: int, names: list[str]) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="webpath-"))
    tmp.chmod(0o755)  # nginx's workers (nobody) write body temp files under it
    path = tmp / "web.jpg"
    path.write_bytes(image_sets()["web"][0])
    samples: dict[str, list[dict]] = {name: [] for name in [*names, "gunicorn direct", "ceiling"]}
    with contextlib.ExitStack() as stacks:
        running = {}
        for name in names:
            env, edit = VARIANTS[name]
            workdir = tmp / name.replace(" ", "-")
            running[name] = stacks.enter_context(
                stack({"MODEL_ARCH": arch, "ENGINE": engine, **env}, workdir, nginx_edit=edit)
            )
        shipped = running["as shipped"]
        for s in running.values():
            warm(s.url, path, 8)
        full_machine = classifier(arch, engine=engine, max_batch_size=8)
        for _ in range(rounds):
            for name, s in running.items():
                masters = [psutil.Process(s.gunicorn.pid), psutil.Process(s.nginx.pid)]
                samples[name].append(measure(s.url, path, masters, seconds))
            masters = [psutil.Process(shipped.gunicorn.pid), psutil.Process(shipped.nginx.pid)]
            samples["gunicorn direct"].append(measure(shipped.backend, path, masters, seconds))
            samples["ceiling"].append({"rps": ceiling_ips(full_machine, [path.read_bytes()], seconds=4)})
            print(json.dumps({k: v[-1] for k, v in samples.items()}), flush=True)
    medians = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in samples.items()}
    return {"machine": machine(), "arch": arch, "medians": medians, "samples": samples,
            "flags": ", ".join(f"{f} {'yes' if on else 'no'}" for f, on in cpu_flags().items()),
            "engine": engine, "stages": stages(arch, engine, path.read_bytes(), 1)}  # fmt: skip


def table(result: dict) -> str:
    """Two ceilings: the in-process pipeline (a decode pool feeding batches of 8, every core;
    scripts/bench.py's), and the stage bound, cores / (decode + preprocess + forward on one
    thread), which is what a server with no overhead at all would reach."""
    ceil = result["medians"]["ceiling"]["rps"]
    st = result["stages"]
    bound = result["machine"]["cores"] * 1000 / (st["prepare_ms"] + st["forward_ms"])
    rows = [
        "| variant | req/s | of pipeline ceiling | of stage bound | p50 ms | CPU ms/req: workers | nginx | ab "
        "| busiest worker |",
        "|---" * 9 + "|",
    ]
    for name, m in result["medians"].items():
        if name != "ceiling":
            cpu = f"{m['workers_ms']:.1f} | {m['nginx_ms']:.1f} | {m['ab_ms']:.1f}"
            rows.append(f"| {name} | {m['rps']:.1f} | {m['rps'] / ceil:.0%} | {m['rps'] / bound:.0%} | {m['p50']:.0f} "
                        f"| {cpu} | {m['busiest_worker']:.0%} |")  # fmt: skip
    rows.append(
        f"\npipeline ceiling {ceil:.1f} img/s, stage bound {bound:.1f} img/s; one thread: decode + preprocess "
        f"{st['prepare_ms']:.1f} ms, forward {st['forward_ms']:.1f} ms per image at batch 4 "
        f"({result['arch']}, {result['engine']}, {result['machine']['cpu']}; flags: {result['flags']})"
    )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--arch", default="mobilenet_v3_large")
    # auto times the engines in each worker at start, where sibling stacks starting at once
    # skew it: a fixed engine keeps the variants comparable.
    parser.add_argument("--engine", default="openvino")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated; 'as shipped' is always run")
    args = parser.parse_args()
    names = ["as shipped", *(n for n in args.variants.split(",") if n and n != "as shipped")]
    result = run(args.arch, args.engine, args.rounds, args.seconds, names)
    out = Path("bench/out")
    out.mkdir(parents=True, exist_ok=True)
    (out / f"webpath-{args.arch}.json").write_text(json.dumps(result, indent=1))
    print(table(result))


if __name__ == "__main__":
    main()
