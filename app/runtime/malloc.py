"""glibc allocator settings for long-running workers (no-ops on other C libraries).

Measured with `make soak` (3000 mixed requests after 300 of warm-up, 2 workers, ResNet-18):
glibc's default of up to 8 x cores malloc arenas let each gunicorn thread that decodes an
upload keep its own high-water mark, and worker RSS kept growing, +13% to +26%. Two arenas
held it to -1%..+5% with web-size throughput within noise (ab c=8, alternating rounds).
A fixed mmap threshold (MALLOC_MMAP_THRESHOLD_) also stopped the growth but cost 12-25% of
throughput, as it turns off glibc's adaptive thresholds. docs/operations.md, "Reliability".
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_ARENA_MAX = -8  # from glibc's malloc.h


def _glibc():
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None  # glibc only


def limit_arenas(default: int = 2) -> None:
    """Cap malloc arenas for this process and the workers it forks; MALLOC_ARENA_MAX wins."""
    libc = _glibc()
    if libc is not None and not os.environ.get("MALLOC_ARENA_MAX"):
        libc.mallopt(M_ARENA_MAX, default)


def release_free_memory() -> None:
    """Give freed heap pages back to the OS (glibc keeps them by default).

    Warm-up allocates a full batch of activations; once freed, glibc would keep those pages
    in every worker (measured: ~75 MiB per ResNet-50 worker). One trim after warm-up costs
    a few ms; per request it would cost ~20 ms, so it is not used there.
    """
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
