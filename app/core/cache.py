"""Result cache in Redis (REDIS_URL): a repeated image is answered without decode or inference.

Seed 003 kept numpy arrays in Redis with pickle, so anyone who could write to that Redis could
run code in the model server. Here a value is the per-image JSON answer, parsed with `json`
and checked against this model's labels before use; anything else is ignored and counted.

The key is the image's sha256 under a namespace that hashes every setting that changes an
answer (the weights' version included), so a changed model or setting never reads old answers;
CACHE_TTL_S expires them. Redis trouble never fails a request: short timeouts, no retries of a
timeout, and a breaker (app.core.breaker) that stops asking a dead Redis for CACHE_RETRY_S. Writes
go through a per-worker thread after the answer, so a miss isn't slowed by the write.
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import threading

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from app.config import Config, redact
from app.core.breaker import Breaker
from app.core.postprocess import valid_answer
from app.engines import Engine
from app.model.loading import LoadedModel
from app.telemetry.metrics import CACHE_ERRORS, CACHE_LOOKUPS

logger = logging.getLogger(__name__)
HIT, MISS, BYPASS = "hit", "miss", "bypass"
KEY_PREFIX = "classifier:answer:v1:"


def answer_settings(cfg: Config, model: LoadedModel, engine: Engine) -> dict:
    """Everything that changes an answer: a change of any of these must never read answers
    computed before it."""
    pre = model.preprocess
    return {
        "version": model.info["version"],
        "arch": cfg.model_arch,
        "labels": hashlib.sha256("\n".join(model.labels).encode()).hexdigest(),
        "task": cfg.model_task,
        "activation": cfg.activation_fn,
        "top_k": cfg.top_k,
        "threshold": cfg.threshold,
        "preprocess": [pre.description, pre.mean, pre.std, cfg.jpeg_draft],
        "engine": [engine.name, engine.device.type, cfg.precision, cfg.graph, cfg.onednn_fusion, cfg.channels_last],
    }


def namespace(settings: dict) -> str:
    """The key prefix for one set of answer-changing settings."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    return f"{KEY_PREFIX}{digest}:"


class NoCache:
    """REDIS_URL unset: every image bypasses."""

    def lookup(self, blobs: list[bytes]) -> tuple[list[str], list[dict | None], str]:
        CACHE_LOOKUPS.labels(BYPASS).inc(len(blobs))
        return [], [None] * len(blobs), BYPASS

    def store(self, keys: list[str], answers: list[dict]) -> None:
        pass


class ResultCache:
    def __init__(self, cfg: Config, model: LoadedModel, engine: Engine):
        timeout = cfg.cache_timeout_ms / 1000
        self.client = redis.Redis.from_url(
            cfg.redis_url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            # One reconnect for a pooled connection that went stale (a restarted Redis); a
            # timeout is never retried, so a request waits at most one timeout per call.
            retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
            # The pool opens connections on demand, one per request thread at most: a cap would
            # turn a busy moment into "Too many connections" errors, and trip the breaker.
        )
        self.prefix = namespace(answer_settings(cfg, model, engine))
        self.ttl_s, self.labels, self.top_k = cfg.cache_ttl_s, model.labels, cfg.top_k
        self.multiclass = cfg.model_task == "multiclass"
        self.breaker = Breaker(f"redis cache at {redact(cfg.redis_url)}", cfg.cache_retry_s)
        # Bounded: a slow Redis drops writes (counted) instead of growing memory.
        self.writes: queue.Queue = queue.Queue(maxsize=256)
        threading.Thread(target=self._write_forever, name="cache-writer", daemon=True).start()

    def lookup(self, blobs: list[bytes]) -> tuple[list[str], list[dict | None], str]:
        """Each image's key and cached answer (None: look it up the long way), and the request's
        cache result: hit when every image hit, bypass when Redis wasn't asked, else miss."""
        keys = [self.prefix + hashlib.sha256(blob).hexdigest() for blob in blobs]
        raw = self.breaker.call(self.client.mget, keys)
        if raw is None:
            CACHE_LOOKUPS.labels(BYPASS).inc(len(blobs))
            return keys, [None] * len(blobs), BYPASS
        answers = [self._read(value) for value in raw]
        hits = sum(answer is not None for answer in answers)
        CACHE_LOOKUPS.labels(HIT).inc(hits)
        CACHE_LOOKUPS.labels(MISS).inc(len(blobs) - hits)
        return keys, answers, HIT if hits == len(blobs) else MISS

    def _read(self, value: bytes | None) -> dict | None:
        if value is None:
            return None
        answer = valid_answer(value, self.labels, self.top_k if self.multiclass else None)
        if answer is None:  # a pickle, bad JSON, or an answer this model could not give
            CACHE_ERRORS.labels("poisoned").inc()
            logger.warning("ignored a cache value that is not a valid answer for this model (%d bytes)", len(value))
        return answer

    def store(self, keys: list[str], answers: list[dict]) -> None:
        """Queue the answers for the writer thread; never blocks the request. Serialized here:
        the caller goes on to build its response from the same dicts."""
        values = [json.dumps(answer, separators=(",", ":")) for answer in answers]
        try:
            self.writes.put_nowait(list(zip(keys, values, strict=True)))
        except queue.Full:
            CACHE_ERRORS.labels("dropped").inc(len(keys))

    def _write_forever(self) -> None:
        while True:
            self.breaker.call(self._write, self.writes.get())

    def _write(self, items: list[tuple[str, str]]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for key, value in items:
            pipe.set(key, value, ex=self.ttl_s)
        pipe.execute()


def build_cache(cfg: Config, model: LoadedModel, engine: Engine) -> ResultCache | NoCache:
    """Called in each worker after fork: a connection pool must not be shared across a fork."""
    if not cfg.redis_url:
        return NoCache()
    logger.info("result cache on at %s (ttl %ds)", redact(cfg.redis_url), cfg.cache_ttl_s)
    return ResultCache(cfg, model, engine)
