"""ApacheBench runs with multipart uploads, as the README's users run them: shared by every
bench script (bench, bench_cache, bench_oip, bench_peers) so none imports another."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from scripts.procs import ROOT

AB_SECONDS = 8


def warm(url: str, image: Path, concurrency: int) -> None:
    """A short ab run first, so connections and batch shapes are warm when timing starts."""
    script = str(ROOT / "scripts" / "ab_multipart.sh")
    subprocess.run(
        [script, str(image), url + "/model_predict", str(4 * concurrency), str(concurrency)],
        capture_output=True,
        check=True,
    )


def ab(
    url: str, image: Path, concurrency: int, seconds: int = AB_SECONDS, warm_first: bool = True, expect_ok: bool = True
) -> dict:
    """ab's figures; a run with errors raises unless `expect_ok` is off (the overload run),
    so a broken stack can't pass for a fast one."""
    script = str(ROOT / "scripts" / "ab_multipart.sh")
    if warm_first:
        warm(url, image, concurrency)
    out = subprocess.run(
        [script, str(image), url + "/model_predict", "1000000", str(concurrency), "-t", str(seconds)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    def grab(pattern: str, default: float = 0.0) -> float:
        match = re.search(pattern, out)
        return float(match.group(1)) if match else default

    result = {
        "concurrency": concurrency,
        "rps": grab(r"Requests per second:\s+([\d.]+)"),
        "p50": grab(r"\n\s+50%\s+(\d+)"),
        "p95": grab(r"\n\s+95%\s+(\d+)"),
        "p99": grab(r"\n\s+99%\s+(\d+)"),
        "max": grab(r"\n\s+100%\s+(\d+)"),
        "complete": grab(r"Complete requests:\s+(\d+)"),
        "failed": grab(r"Failed requests:\s+(\d+)"),
        "non2xx": grab(r"Non-2xx responses:\s+(\d+)"),
    }
    if expect_ok and result["non2xx"] + result["failed"]:
        raise RuntimeError(
            f"{url}: {result['non2xx']:.0f} non-2xx and {result['failed']:.0f} failed at c={concurrency}"
        )
    return result
