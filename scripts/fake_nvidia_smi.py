"""A stand-in for nvidia-smi in the GPU check's dry run (GPU_CHECK_DRY_RUN=1), where no GPU exists.

It answers only the three queries scripts/gpu_pinning.py and scripts/gpu_check.py make, in
nvidia-smi's own formats, so their parsing runs as it will on a real card. The "GPU" lists,
as compute apps, the workers of the gunicorn masters the check started (their pids in
GPU_CHECK_WORK/masters), with their resident memory as used memory: a killed worker drops out of
the listing and its replacement joins it, as on a card. Every worker is placed on GPU 0, since
nothing outside a worker can see the CUDA_VISIBLE_DEVICES it set itself after fork.
"""

from __future__ import annotations

import os
import sys

import psutil

UUID = "GPU-00000000-0000-0000-0000-00000000d0e5"


def workers() -> list[psutil.Process]:
    path = os.path.join(os.environ["GPU_CHECK_WORK"], "masters")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        masters = [int(line) for line in f]
    found = []
    for pid in masters:
        try:
            found += psutil.Process(pid).children()
        except psutil.NoSuchProcess:
            continue  # a server stopped earlier in the check
    return found


def main(args: list[str]) -> int:
    if args == ["-L"]:
        print(f"GPU 0: Dry-run stand-in, no GPU (UUID: {UUID})")
    elif args == ["--query-gpu=index,uuid", "--format=csv,noheader"]:
        print(f"0, {UUID}")
    elif args == ["--query-compute-apps=pid,gpu_uuid,used_memory", "--format=csv,noheader,nounits"]:
        for proc in workers():
            try:
                print(f"{proc.pid}, {UUID}, {proc.memory_info().rss // 2**20}")
            except psutil.NoSuchProcess:
                continue
    else:
        print(f"fake nvidia-smi: {' '.join(args)!r} is not a query the GPU check makes", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
