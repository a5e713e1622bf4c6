"""Prometheus metrics, summed over every gunicorn worker (served at GET /metrics by app.http).

prometheus_client's multiprocess mode: each worker writes its samples to files under
PROMETHEUS_MULTIPROC_DIR (gunicorn_conf.py makes one directory per server, and removes a
dead worker's live gauges in `child_exit`), and /metrics adds them up. Without that variable
(tests, a single process) the process's own registry is served.

prometheus_client's process collector (process_resident_memory_bytes) reads only the
scraping process, and multiprocess mode disables it; hence our own per-worker memory gauge.
"""

from __future__ import annotations

import os
import resource
import time

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

PREFIX = "classifier_"
_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

REQUESTS = Counter(
    PREFIX + "http_requests",
    "Requests answered, by endpoint (route pattern or grpc:<Method>) and status (HTTP status or gRPC code)",
    ["endpoint", "status"],
)
REQUEST_SECONDS = Histogram(
    PREFIX + "request_duration_seconds", "Time to answer a prediction (/model_predict, OIP infer)", buckets=_LATENCY
)
QUEUE_SECONDS = Histogram(PREFIX + "queue_wait_seconds", "Time a request waited for the model", buckets=_LATENCY)
PREPARE_SECONDS = Histogram(
    PREFIX + "preprocess_duration_seconds", "Decode + preprocess time of one request's images", buckets=_LATENCY
)
INFER_SECONDS = Histogram(PREFIX + "inference_duration_seconds", "Forward pass of one batch", buckets=_LATENCY)
BATCH_SIZE = Histogram(PREFIX + "batch_size", "Images per forward pass", buckets=(1, 2, 4, 8, 16, 32, 64))
IMAGES = Counter(PREFIX + "images", "Images classified")
QUEUE_DEPTH = Gauge(PREFIX + "queue_depth", "Images waiting for the model", multiprocess_mode="livesum")
IN_FLIGHT = Gauge(PREFIX + "in_flight_requests", "Prediction requests being served", multiprocess_mode="livesum")
LOAD_SECONDS = Gauge(PREFIX + "model_load_seconds", "Time to load the weights", multiprocess_mode="max")
WARMUP_SECONDS = Gauge(PREFIX + "warmup_seconds", "Time a worker spent warming up", multiprocess_mode="liveall")
MODEL_INFO = Gauge(
    PREFIX + "model_info", "1 per worker serving these weights", ["version", "weights"], multiprocess_mode="liveall"
)
RELOADS = Counter(PREFIX + "reloads", "HUP reloads, by result: done, or refused (the old weights kept)", ["result"])
CACHE_LOOKUPS = Counter(
    PREFIX + "cache_lookups", "Images looked up in the result cache, by result: hit, miss, bypass", ["result"]
)
CACHE_ERRORS = Counter(
    PREFIX + "cache_errors",
    "Result-cache trouble, by kind: timeout, connection, redis (an error reply), poisoned (a value that is not "
    "a valid answer, ignored), dropped (answers not written: the write queue was full)",
    ["kind"],
)
WORKER_RESTARTS = Counter(PREFIX + "worker_restarts", "Workers started to replace one that exited")
MEMORY_BYTES = Gauge(PREFIX + "process_resident_memory_bytes", "Resident memory", multiprocess_mode="liveall")
MEMORY_PEAK_BYTES = Gauge(PREFIX + "process_peak_memory_bytes", "Peak resident memory", multiprocess_mode="liveall")
GPU_MEMORY_BYTES = Gauge(
    PREFIX + "gpu_memory_allocated_bytes", "GPU memory held by tensors", ["device"], multiprocess_mode="liveall"
)
_PAGE = os.sysconf("SC_PAGE_SIZE")
_MEMORY_EVERY_S = 1.0  # reading /proc per request would cost more than it tells
_memory_read_at = 0.0


def observe_batch(size: int, seconds: float) -> None:
    BATCH_SIZE.observe(size)
    IMAGES.inc(size)
    INFER_SECONDS.observe(seconds)


def update_memory(gpu_device=None, force: bool = False) -> None:
    """This process's memory (and its GPU's), at most once a second unless forced."""
    global _memory_read_at
    now = time.monotonic()
    if not force and now - _memory_read_at < _MEMORY_EVERY_S:
        return
    _memory_read_at = now
    with open("/proc/self/statm") as f:
        MEMORY_BYTES.set(int(f.read().split()[1]) * _PAGE)
    MEMORY_PEAK_BYTES.set(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    if gpu_device is not None and gpu_device.type == "cuda":
        import torch

        GPU_MEMORY_BYTES.labels(str(gpu_device)).set(torch.cuda.memory_allocated(gpu_device))


def observe_prediction(seconds: float, stats) -> None:
    """One prediction's timings, for every door (app.core.guard calls it)."""
    REQUEST_SECONDS.observe(seconds)
    if stats is not None and stats.images:
        PREPARE_SECONDS.observe(stats.decode_s)
        if stats.run_s:
            QUEUE_SECONDS.observe(stats.queue_s)


def exposition(gpu_device=None) -> bytes:
    """The text format of every worker's samples (one process's, outside gunicorn)."""
    update_memory(gpu_device, force=True)  # a scrape reads fresh figures for the worker serving it
    registry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    return generate_latest(registry)
