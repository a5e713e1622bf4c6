"""The GPU check's last step: every step's results into report.md and results.json, and the verdict."""

from __future__ import annotations

import json
import time

from scripts.gpu_check import Settings, load


def table(rows: list[dict]) -> list[str]:
    out = ["| precision | c | req/s | p50 ms | p99 ms | images per forward pass |", "|---|---|---|---|---|---|"]
    for r in rows:
        out.append(
            f"| {r['precision']} | {r['c']} | {r['rps']:.1f} | {r['p50']:.1f} | {r['p99']:.1f} | {r['batch']:.1f} |"
        )
    return out


def report(s: Settings) -> int:
    """Write the report; 0 when every check passed and every step left its result."""
    info, pin = load(s, "prepare") or {}, load(s, "pin")
    benches = {p: load(s, f"bench-{p}") for p in s.precisions}
    checks = list((pin or {}).get("checks", []))
    for step, got in [
        ("prepare", info),
        ("pin", pin),
        *((f"bench {p}", b) for p, b in benches.items()),
    ]:
        if not got:
            checks.append({"ok": False, "what": f"step {step} left no result (see check.log)"})
    for bench in filter(None, benches.values()):
        checks += bench["checks"]
    failures = s.work / "step-failures"
    checks += [{"ok": False, "what": line} for line in failures.read_text().splitlines()] if failures.exists() else []
    rows = [row for bench in filter(None, benches.values()) for row in bench["rows"]]
    how = {(b["path"], b["tool"]) for b in filter(None, benches.values()) if b["path"]}
    failed = sum(not c["ok"] for c in checks)

    mode = "DRY RUN on the CPU: nvidia-smi and the GPU are stand-ins" if s.dry else "on the GPU machine"
    lines = [f"# GPU check ({mode}), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", "", "```"]
    lines += [info.get("nvidia_smi_L", "(nvidia-smi -L: no result)"), "```", ""]
    lines += [
        f"CPU: {info.get('cpu', '?')}, {info.get('cores', '?')} cores, flags: {' '.join(info.get('cpu_flags', []))}",
        f"python {info.get('python', '?')}, torch {info.get('torch', '?')}, "
        f"CUDA available: {info.get('cuda_available', '?')}",
        "",
        "## Checks",
        "",
        *(f"- {'PASS' if c['ok'] else 'FAIL'} {c['what']}" for c in checks),
        "",
        "## Throughput",
        "",
        f"{info.get('arch', s.arch)}, random weights, GPUS={s.gpus}, WORKERS_PER_GPU={s.workers_per_gpu}; "
        f"a web JPEG (600x400, {info.get('image_bytes', 0) // 1024} KiB), {s.seconds} s per run after a warm-up; "
        + "; ".join(f"{path}, load from {tool}" for path, tool in sorted(how)),
        "",
        *table(rows),
        "",
        f"GPU CHECK: {'PASS' if not failed else f'FAIL ({failed} failed)'}",
    ]
    text = "\n".join(lines) + "\n"
    (s.outdir / "report.md").write_text(text)
    everything = {"machine": info, "pin": pin, "bench": benches, "checks": checks}
    (s.outdir / "results.json").write_text(json.dumps(everything, indent=1))
    print(text, flush=True)
    return 1 if failed else 0
