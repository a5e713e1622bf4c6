"""scripts/gpu_check.sh, the prepared GPU check, in its dry run: real gunicorn workers (killed and
replaced), the repo's nginx when installed, Python load clients (the dry run's default: the GPU
machine has no ab); only nvidia-smi and the device are stand-ins (scripts/fake_nvidia_smi.py)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from scripts.gpu_check import ROOT, Settings
from scripts.gpu_report import report


def test_dry_run_passes_and_fills_the_table(tmp_path):
    env = {
        **os.environ,
        "GPU_CHECK_DRY_RUN": "1",
        "GPU_CHECK_PYTHON": sys.executable,
        "OUT": str(tmp_path),
    }
    run = subprocess.run([str(ROOT / "scripts" / "gpu_check.sh")], env=env, capture_output=True, text=True, timeout=280)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-6000:]
    assert "FAIL" not in out, out[-6000:]
    for claim in (
        r"PASS /proc lists 1 GPU\(s\), nvidia-smi -L 1",
        r"PASS 2 workers up, pinned by post_fork as \{\d+: 0, \d+: 0\}",
        r"PASS the master \d+ holds no GPU memory",
        r"PASS replacement \[\d+\] ready after [\d.]+ s on GPU \[0\], expected 0",
        r"PASS the killed worker \d+ no longer holds GPU memory",
        r"PASS workers per GPU after the restart: \{0: 2\}",
        r"PASS fp32: every request answered 200 at c=1,2",
        r"PASS bf16: every request answered 200 at c=1,2",
    ):
        assert re.search("^" + claim, out, re.M), f"{claim!r} not in:\n{out[-6000:]}"
    # Both workers before the kill and both after, each seen holding the model.
    assert len(re.findall(r"^PASS worker \d+ holds the model on GPU 0: nvidia-smi lists it on GPU 0", out, re.M)) == 4
    assert re.search(r"through nginx|nginx not installed: gunicorn direct", out)

    text = (tmp_path / "report.md").read_text()
    assert "Dry-run stand-in" in text and "flags: " in text and text.rstrip().endswith("GPU CHECK: PASS")
    rows = [line.strip("|").split("|") for line in text.splitlines() if re.match(r"\| (fp32|bf16) \|", line)]
    assert [(p.strip(), c.strip()) for p, c, *_ in rows] == [("fp32", "1"), ("fp32", "2"), ("bf16", "1"), ("bf16", "2")]
    for _, _, rps, p50, p99, batch in rows:
        assert float(rps) > 0 and 0 < float(p50) <= float(p99) and float(batch) >= 1
    results = json.loads((tmp_path / "results.json").read_text())
    assert all(check["ok"] for check in results["checks"]) and len(results["checks"]) == 12
    assert {"check.log", "gunicorn-pin.log", "gunicorn-fp32.log", "gunicorn-bf16.log"} <= set(os.listdir(tmp_path))
    assert len(os.listdir(tmp_path)) <= 8  # what the device tool brings back from $OUT


def test_report_fails_on_a_failed_check_or_a_missing_step(tmp_path, monkeypatch):
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir(), out.mkdir()
    monkeypatch.setenv("GPU_CHECK_WORK", str(work))
    monkeypatch.setenv("GPU_CHECK_OUTDIR", str(out))
    monkeypatch.setenv("GPU_CHECK_PRECISIONS", "fp16")
    (work / "prepare.json").write_text(json.dumps({"nvidia_smi_L": "GPU 0: NVIDIA H200", "arch": "resnet50"}))
    failed = {"ok": False, "what": "replacement [9] ready after 1.0 s on GPU [1], expected 0"}
    (work / "pin.json").write_text(json.dumps({"checks": [failed]}))
    (work / "step-failures").write_text("step bench fp16: killed at its 120 s cap\n")
    assert report(Settings.from_env()) == 1
    text = (out / "report.md").read_text()
    assert "- FAIL replacement [9]" in text and "- FAIL step bench fp16 left no result" in text
    assert "- FAIL step bench fp16: killed at its 120 s cap" in text
    assert text.rstrip().endswith("GPU CHECK: FAIL (3 failed)")
