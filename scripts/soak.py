"""Soak: thousands of mixed good and bad requests through nginx at concurrency 8.

    .venv/bin/python -m scripts.soak [--requests 3000] [--concurrency 8] [--arch resnet18]

It reports, and checks against targets (exit status 1 if one is missed):
- every answer by kind of request and outcome: zero 5xx, and each bad kind its own 4xx;
- each worker's resident memory after warm-up and at the end: less than 5% growth;
- open file descriptors of every gunicorn and nginx process, and temp files: none left behind.
The warm-up is a tenth of the run (at least 100 requests) and is not measured.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import requests

from scripts.hostile_inputs import JPEG, REFUSED, accepted, encode, photo
from scripts.procs import ROOT, stack

GROWTH_LIMIT = 0.05


def mix() -> list[tuple[str, str, dict, int]]:
    """(kind, method + path, request kwargs, expected status), good requests weighted up."""
    good = [("web-jpeg", {"files": {"image": ("a.jpg", JPEG)}})] * 6
    good.append(("png", {"files": {"image": ("a.png", encode(photo((320, 480), seed=3), "PNG"))}}))
    good.append(("phone-12mp", {"files": {"image": ("p.jpg", encode(photo((4032, 3024), seed=9), "JPEG"))}}))
    good += [(odd.name, {"files": {"image": ("odd", odd.data)}}) for odd in accepted()]
    cases = [(kind, "POST /model_predict", kwargs, 200) for kind, kwargs in good * 3]
    for bad in REFUSED:
        if "nginx" in bad.via:
            cases.append((bad.name, f"{bad.method} {bad.path}", bad.request, bad.status))
    return cases


def send(session: requests.Session, base: str, case: tuple) -> tuple[str, str]:
    kind, target, kwargs, expected = case
    method, path = target.split(" ", 1)
    try:
        r = session.request(method, base + path, timeout=60, **kwargs)
    except requests.RequestException as exc:
        return kind, f"connection error ({type(exc).__name__})"
    if r.status_code == expected:
        return kind, "ok"
    return kind, f"{'5xx' if r.status_code >= 500 else 'unexpected'} {r.status_code}"


def run_mix(base: str, total: int, concurrency: int, seed: int) -> Counter:
    cases = mix()
    rng = random.Random(seed)
    plan = [rng.choice(cases) for _ in range(total)]
    local = threading.local()

    def one(case):
        if not hasattr(local, "session"):
            local.session = requests.Session()
        return send(local.session, base, case)

    with ThreadPoolExecutor(concurrency) as pool:
        outcomes = Counter(pool.map(one, plan))
    return outcomes


def processes(gunicorn_pid: int, nginx_pid: int) -> dict[str, psutil.Process]:
    """Every gunicorn worker and nginx process, by a stable name."""
    found = {}
    for name, pid in (("gunicorn", gunicorn_pid), ("nginx", nginx_pid)):
        master = psutil.Process(pid)
        found[f"{name} master"] = master
        for i, child in enumerate(sorted(master.children(), key=lambda p: p.pid)):
            found[f"{name} worker {i + 1} (pid {child.pid})"] = child
    return found


def snapshot(procs: dict[str, psutil.Process]) -> dict[str, dict]:
    return {name: {"rss_mib": p.memory_info().rss / 2**20, "fds": p.num_fds()} for name, p in procs.items()}


def temp_files(dirs: list[Path]) -> set[str]:
    return {str(p) for d in dirs if d.exists() for p in d.rglob("*") if p.is_file()}


def soak(base: str, gunicorn_pid: int, nginx_pid: int, temp_dirs: list[Path], total: int, concurrency: int) -> dict:
    """`temp_dirs`: where the servers may write temp files (the stack's TMPDIR and nginx's
    prefix); not all of /tmp, where unrelated programs come and go."""
    run_mix(base, max(100, total // 10), concurrency, seed=1)  # warm-up: every shape seen once
    time.sleep(1)
    procs = processes(gunicorn_pid, nginx_pid)
    before, tmp_before = snapshot(procs), temp_files(temp_dirs)
    started = time.monotonic()
    outcomes = run_mix(base, total, concurrency, seed=2)
    seconds = time.monotonic() - started
    time.sleep(1)  # let nginx and gunicorn close what the last requests opened
    after = snapshot(procs)
    left = sorted(temp_files(temp_dirs) - tmp_before)
    workers = [name for name in procs if name.startswith("gunicorn worker")]
    growth = {name: after[name]["rss_mib"] / before[name]["rss_mib"] - 1 for name in workers}
    return {
        "requests": total,
        "concurrency": concurrency,
        "seconds": round(seconds, 1),
        "outcomes": {f"{kind}: {outcome}": n for (kind, outcome), n in sorted(outcomes.items())},
        "server_errors": sum(n for (_, outcome), n in outcomes.items() if outcome.startswith("5xx")),
        "wrong_answers": sum(n for (_, outcome), n in outcomes.items() if outcome != "ok"),
        "before": before,
        "after": after,
        "rss_growth": growth,
        "fds_grown": {name: after[name]["fds"] - before[name]["fds"] for name in procs},
        "temp_files_left": left,
    }


def verdicts(report: dict) -> list[tuple[str, bool]]:
    return [
        ("zero 5xx", report["server_errors"] == 0),
        ("every request got its expected status", report["wrong_answers"] == 0),
        (f"worker RSS grew < {GROWTH_LIMIT:.0%}", max(report["rss_growth"].values()) < GROWTH_LIMIT),
        ("no file descriptors left open", max(report["fds_grown"].values()) <= 0),
        ("no temp files left", not report["temp_files_left"]),
    ]


def markdown(report: dict) -> str:
    lines = [
        f"# Soak: {report['requests']} mixed requests through nginx at concurrency {report['concurrency']}",
        "",
        f"{report['seconds']} s, {report['requests'] / report['seconds']:.1f} req/s.",
        "",
        "| target | met |",
        "|---|---|",
        *[f"| {name} | {'yes' if ok else '**no**'} |" for name, ok in verdicts(report)],
        "",
        "| process | RSS after warm-up (MiB) | RSS at end (MiB) | growth | fds before | fds after |",
        "|---|---|---|---|---|---|",
    ]
    for name, b in report["before"].items():
        a = report["after"][name]
        growth = f"{report['rss_growth'][name]:+.1%}" if name in report["rss_growth"] else ""
        lines.append(f"| {name} | {b['rss_mib']:.0f} | {a['rss_mib']:.0f} | {growth} | {b['fds']} | {a['fds']} |")
    lines += ["", "| request kind: outcome | count |", "|---|---|"]
    lines += [f"| {k} | {n} |" for k, n in report["outcomes"].items()]
    if report["temp_files_left"]:
        lines += ["", "Temp files left: " + ", ".join(report["temp_files_left"])]
    return "\n".join(lines) + "\n"


def soak_env(workdir: Path, arch: str) -> dict:
    """The stack's settings: its own TMPDIR, so temp files it leaves can be counted."""
    (workdir / "tmp").mkdir(parents=True, exist_ok=True)
    return {"MODEL_ARCH": arch, "TMPDIR": str(workdir / "tmp")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "soak.md")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="soak-"))
    with stack(soak_env(workdir, args.arch), workdir) as running:
        temp_dirs = [workdir / "tmp", workdir / "nginx"]
        report = soak(running.url, running.gunicorn.pid, running.nginx.pid, temp_dirs, args.requests, args.concurrency)
    text = markdown(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1))
    print(text)
    sys.exit(0 if all(ok for _, ok in verdicts(report)) else 1)


if __name__ == "__main__":
    main()
