"""The Redis result cache in-process, against a real redis-server (Debian's) on its own port."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import pickle
import shutil
import subprocess
import time
from types import SimpleNamespace

import pytest
import redis
import torch
from prometheus_client import REGISTRY

from app import create_app
from app.config import Config, ConfigError
from app.core.breaker import Breaker
from app.core.cache import KEY_PREFIX, answer_settings, namespace
from app.core.postprocess import valid_answer
from app.model.archs import resolve
from app.model.preprocess import build_preprocess
from tests.conftest import assert_same_predictions, free_port, make_config, missing, start_redis, stop

PASSWORD = "cache-test-secret-9f2"


@pytest.fixture(scope="module")
def redis_port(tmp_path_factory):
    if shutil.which("redis-server") is None:
        missing("the result cache tests need redis-server (make test installs it)")
    port = free_port()
    proc = start_redis(tmp_path_factory.mktemp("redis"), port, "--requirepass", PASSWORD)
    yield port
    stop(proc)


@pytest.fixture
def store(redis_port):
    client = redis.Redis(port=redis_port, password=PASSWORD)
    client.flushall()
    return client


def url(port: int, password: str = PASSWORD) -> str:
    return f"redis://:{password}@127.0.0.1:{port}/0"


@pytest.fixture(scope="module")
def cached_app(imagenet_ckpt, redis_port):
    return create_app(make_config(imagenet_ckpt, redis_url=url(redis_port), cache_retry_s=0.5))


def key_of(app, data: bytes) -> str:
    return app.extensions["classifier"].cache.prefix + hashlib.sha256(data).hexdigest()


def written(store, key: str, timeout: float = 5) -> bytes:
    """The value the writer thread stores after the answer (it never delays the response)."""
    deadline = time.monotonic() + timeout
    while (value := store.get(key)) is None:
        assert time.monotonic() < deadline, f"{key} was never written"
        time.sleep(0.02)
    return value


def predict(app, *images: bytes):
    parts = [(io.BytesIO(data), f"{i}.jpg") for i, data in enumerate(images)]
    return app.test_client().post("/model_predict", data={"image": parts})


def test_a_miss_then_a_hit_with_the_same_answer(cached_app, store, jpeg_bytes, multiclass_app):
    first = predict(cached_app, jpeg_bytes)
    assert first.status_code == 200 and first.headers["X-Cache"] == "miss" and first.json["cache"] == "miss"
    value = written(store, key_of(cached_app, jpeg_bytes))
    second = predict(cached_app, jpeg_bytes)
    assert second.headers["X-Cache"] == "hit" and second.json["cache"] == "hit"
    assert "decode" not in second.headers["Server-Timing"] or "decode;dur=0.0" in second.headers["Server-Timing"]
    assert second.json["predictions"] == first.json["predictions"]
    reference = predict(multiclass_app, jpeg_bytes).json  # no cache at all
    assert reference["cache"] == "bypass"
    assert_same_predictions(second.json["predictions"], reference["predictions"])
    # The stored value is JSON (never a pickle): exactly the per-image answer.
    assert json.loads(value) == {k: first.json[k] for k in ("status", "result", "predictions")}


def test_each_image_of_a_request_is_cached_on_its_own(cached_app, store, jpeg_bytes, png_bytes, multiclass_app):
    predict(cached_app, jpeg_bytes)
    written(store, key_of(cached_app, jpeg_bytes))
    mixed = predict(cached_app, jpeg_bytes, png_bytes)
    assert mixed.headers["X-Cache"] == "miss"  # one of two was new
    reference = predict(multiclass_app, jpeg_bytes, png_bytes).json["results"]
    for got, want in zip(mixed.json["results"], reference, strict=True):
        assert_same_predictions(got["predictions"], want["predictions"])
    written(store, key_of(cached_app, png_bytes))
    assert predict(cached_app, png_bytes, jpeg_bytes).headers["X-Cache"] == "hit"


def test_the_request_log_line_says_whether_it_hit(cached_app, store, jpeg_bytes, caplog):
    with caplog.at_level(logging.INFO, logger="app.requests"):
        predict(cached_app, jpeg_bytes)
    assert [r.fields["cache"] for r in caplog.records if r.name == "app.requests"] == ["miss"]


def lookups(result: str) -> float:
    return REGISTRY.get_sample_value("classifier_cache_lookups_total", {"result": result}) or 0.0


def test_metrics_count_hits_misses_and_bypasses(cached_app, store, multiclass_app, jpeg_bytes):
    before = {r: lookups(r) for r in ("hit", "miss", "bypass")}
    predict(cached_app, jpeg_bytes)
    written(store, key_of(cached_app, jpeg_bytes))
    predict(cached_app, jpeg_bytes, jpeg_bytes)
    predict(multiclass_app, jpeg_bytes)
    assert {r: lookups(r) - before[r] for r in before} == {"hit": 2, "miss": 1, "bypass": 1}


# --- keys ------------------------------------------------------------------------------------

ANSWER_CHANGING = [
    {"top_k": 3},
    {"threshold": 0.7},
    {"activation": "none"},
    {"model_arch": "resnet34"},
    {"resize_size": 288},
    {"crop_size": 200},
    {"interpolation": "bicubic"},
    {"resize_mode": "squash"},
    {"mean": (0.5, 0.5, 0.5)},
    {"std": (0.5, 0.5, 0.5)},
    {"jpeg_draft": False},
    {"precision": "bf16"},
    {"graph": "fx"},
    {"channels_last": False},
    {"onednn_fusion": True},
]


def settings_for(app, **overrides) -> dict:
    clf = app.extensions["classifier"]
    cfg = dataclasses.replace(clf.cfg, **overrides).validated()
    model = dataclasses.replace(clf.model, preprocess=build_preprocess(cfg, resolve(cfg.model_arch).preset))
    return answer_settings(cfg, model, engine_like("torch", "cpu"))


def engine_like(name: str, device: str) -> SimpleNamespace:
    return SimpleNamespace(name=name, device=torch.device(device))


@pytest.mark.parametrize("overrides", ANSWER_CHANGING, ids=lambda o: next(iter(o)))
def test_every_answer_changing_setting_changes_the_key(multiclass_app, overrides):
    assert namespace(settings_for(multiclass_app, **overrides)) != namespace(settings_for(multiclass_app))


@pytest.mark.parametrize(
    "change", ["version", "labels", "device", "engine"], ids=["weights version", "labels", "cuda", "openvino"]
)
def test_the_model_and_device_are_in_the_key(multiclass_app, change):
    clf = multiclass_app.extensions["classifier"]
    model, engine = clf.model, engine_like("torch", "cpu")
    if change == "version":
        model = dataclasses.replace(model, info={**model.info, "version": "0123456789ab"})
    elif change == "labels":
        model = dataclasses.replace(model, labels=[*model.labels[:-1], "something else"])
    elif change == "device":
        engine = engine_like("torch", "cuda")
    else:
        engine = engine_like("openvino", "cpu")
    assert namespace(answer_settings(clf.cfg, model, engine)) != namespace(settings_for(multiclass_app))


@pytest.mark.parametrize("overrides", [{"max_queue": 8}, {"request_timeout_s": 5.0}, {"cache_ttl_s": 60}])
def test_settings_that_keep_the_answer_keep_the_key(multiclass_app, overrides):
    assert namespace(settings_for(multiclass_app, **overrides)) == namespace(settings_for(multiclass_app))


def test_a_server_with_other_settings_does_not_read_the_first_ones_answers(
    cached_app, store, imagenet_ckpt, jpeg_bytes
):
    predict(cached_app, jpeg_bytes)
    written(store, key_of(cached_app, jpeg_bytes))
    port = cached_app.extensions["classifier"].cfg.redis_url.rsplit(":", 1)[1].split("/")[0]
    top3 = create_app(make_config(imagenet_ckpt, redis_url=url(int(port)), top_k=3))
    answer = predict(top3, jpeg_bytes)
    assert answer.headers["X-Cache"] == "miss" and len(answer.json["predictions"]) == 3
    assert all(key.decode().startswith(KEY_PREFIX) for key in store.scan_iter())


def test_entries_expire_after_cache_ttl_s(imagenet_ckpt, redis_port, store, jpeg_bytes):
    app = create_app(make_config(imagenet_ckpt, redis_url=url(redis_port), cache_ttl_s=1))
    predict(app, jpeg_bytes)
    key = key_of(app, jpeg_bytes)
    written(store, key)
    assert 0 < store.pttl(key) <= 1000
    time.sleep(1.2)
    assert store.get(key) is None
    assert predict(app, jpeg_bytes).headers["X-Cache"] == "miss"


# --- values nobody should trust ---------------------------------------------------------------

LABELS = ["cat", "dog", "bird"]
GOOD = {"status": 1, "result": ["dog"], "predictions": [{"label": "dog", "index": 1, "score": 0.75}]}


def tampered(**prediction) -> str:
    return json.dumps({**GOOD, "predictions": [{**GOOD["predictions"][0], **prediction}]})


POISONED = {
    "a pickle": pickle.dumps(GOOD),
    "a pickle of a numpy-free object": pickle.dumps([0.1, 0.2]),
    "not JSON": b"{'status': 1",
    "not UTF-8": b"\xff\xfe{}",
    "a list": json.dumps([GOOD]).encode(),
    "an extra field": json.dumps({**GOOD, "html": "<script>"}).encode(),
    "a missing field": json.dumps({"status": 1, "result": ["dog"]}).encode(),
    "a label that is not the index's": json.dumps(
        {**GOOD, "predictions": [{**GOOD["predictions"][0], "label": "cat"}]}
    ),
    "an index out of range": tampered(index=7),
    "a bool index": tampered(index=True),
    "a string score": tampered(score="0.9"),
    "a NaN score": tampered(score=float("nan")),
    "a result that disagrees": json.dumps({**GOOD, "result": ["cat"]}),
    "status 0 with predictions": json.dumps({**GOOD, "status": 0}),
    "more than top_k": json.dumps(
        {
            "status": 1,
            "result": ["dog", "cat"],
            "predictions": [{"label": "dog", "index": 1, "score": 0.6}, {"label": "cat", "index": 0, "score": 0.3}],
        }
    ),
}


@pytest.mark.parametrize("value", POISONED.values(), ids=POISONED.keys())
def test_a_foreign_or_poisoned_value_is_never_trusted(value):
    raw = value if isinstance(value, bytes) else value.encode()
    assert valid_answer(raw, LABELS, top_k=1) is None


def test_a_real_answer_is_trusted():
    assert valid_answer(json.dumps(GOOD).encode(), LABELS, top_k=1) == GOOD
    nothing = {"status": 0, "result": "No Categories", "predictions": []}
    assert valid_answer(json.dumps(nothing).encode(), LABELS, top_k=None) == nothing


def test_a_planted_pickle_is_ignored_counted_and_replaced(cached_app, store, jpeg_bytes, monkeypatch):
    calls = []
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: calls.append(a))  # would run the payload
    key = key_of(cached_app, jpeg_bytes)
    store.set(key, pickle.dumps(GOOD))
    before = REGISTRY.get_sample_value("classifier_cache_errors_total", {"kind": "poisoned"}) or 0.0
    answer = predict(cached_app, jpeg_bytes)
    assert answer.status_code == 200 and answer.headers["X-Cache"] == "miss"
    assert answer.json["result"] != ["dog"] and not calls
    assert REGISTRY.get_sample_value("classifier_cache_errors_total", {"kind": "poisoned"}) == before + 1
    deadline = time.monotonic() + 5
    while store.get(key).startswith(b"\x80"):  # the fresh answer overwrites it
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert json.loads(store.get(key))["predictions"] == answer.json["predictions"]


# --- a password, TLS, and a Redis that refuses -------------------------------------------------


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory):
    """redis-server with TLS only and a password, its certificate signed by a CA made here."""
    if shutil.which("redis-server") is None or shutil.which("openssl") is None:
        missing("the TLS cache test needs redis-server and openssl (make test installs them)")
    d = tmp_path_factory.mktemp("tls")
    run = lambda *a: subprocess.run(["openssl", *a], cwd=d, check=True, capture_output=True)  # noqa: E731
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=test-ca",
        "-keyout", "ca.key", "-out", "ca.pem")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "redis.key", "-out", "redis.csr")
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", "redis.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "1",
        "-extfile", "san.ext", "-out", "redis.pem")  # fmt: skip
    port = free_port()
    tls = ["--tls-port", str(port), "--tls-cert-file", str(d / "redis.pem"), "--tls-key-file", str(d / "redis.key")]
    tls += ["--tls-ca-cert-file", str(d / "ca.pem"), "--tls-auth-clients", "no", "--requirepass", PASSWORD]
    proc = start_redis(d, port, *tls)
    yield port, d / "ca.pem"
    stop(proc)


def test_tls_with_a_password_works_and_the_password_is_never_logged(imagenet_ckpt, tls_redis, jpeg_bytes, caplog):
    port, ca = tls_redis
    tls_url = f"rediss://:{PASSWORD}@127.0.0.1:{port}/0?ssl_ca_certs={ca}"
    with caplog.at_level(logging.INFO):
        app = create_app(make_config(imagenet_ckpt, redis_url=tls_url))
        assert predict(app, jpeg_bytes).headers["X-Cache"] == "miss"
        store = redis.Redis(host="127.0.0.1", port=port, password=PASSWORD, ssl=True, ssl_ca_certs=str(ca))
        written(store, key_of(app, jpeg_bytes))
        assert predict(app, jpeg_bytes).headers["X-Cache"] == "hit"
    assert f"rediss://:***@127.0.0.1:{port}/0" in caplog.text
    assert PASSWORD not in caplog.text and PASSWORD not in repr(app.extensions["classifier"].cfg)


def test_an_unknown_ca_is_refused_and_requests_bypass(imagenet_ckpt, tls_redis, jpeg_bytes, caplog):
    port, _ = tls_redis
    app = create_app(make_config(imagenet_ckpt, redis_url=f"rediss://:{PASSWORD}@127.0.0.1:{port}/0"))
    with caplog.at_level(logging.WARNING, logger="app"):
        answers = [predict(app, jpeg_bytes) for _ in range(3)]
    assert [(a.status_code, a.headers["X-Cache"]) for a in answers] == [(200, "bypass")] * 3
    assert "certificate verify failed" in caplog.text


def test_a_wrong_password_bypasses_and_logs_once_per_incident(imagenet_ckpt, redis_port, jpeg_bytes, caplog):
    app = create_app(make_config(imagenet_ckpt, redis_url=url(redis_port, "wrong-password"), cache_retry_s=0))
    with caplog.at_level(logging.WARNING, logger="app"):
        answers = [predict(app, jpeg_bytes) for _ in range(4)]  # retry_s=0: Redis is asked every time
    assert [(a.status_code, a.headers["X-Cache"]) for a in answers] == [(200, "bypass")] * 4
    warnings = [r for r in caplog.records if r.name == "app.core.breaker"]
    assert len(warnings) == 1 and "rediss" not in warnings[0].getMessage()
    assert "wrong-password" not in caplog.text and ":***@" in caplog.text


def test_the_breaker_stops_asking_until_retry_s_then_says_when_it_is_back(caplog):
    calls, outcomes = [], [redis.ConnectionError("refused"), redis.TimeoutError("slow"), "ok"]

    def call():
        calls.append(time.monotonic())
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    breaker = Breaker("redis cache at redis://h", retry_s=0.2)
    with caplog.at_level(logging.WARNING, logger="app.core.breaker"):
        assert breaker.call(call) is None
        assert [breaker.call(call) for _ in range(20)] == [None] * 20 and len(calls) == 1  # open: not asked
        time.sleep(0.25)
        assert breaker.call(call) is None and len(calls) == 2  # half-open: asked once, failed again
        time.sleep(0.25)
        assert breaker.call(call) == "ok"
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == [
        "redis cache at redis://h failed",
        "redis cache at redis://h is back after 2 failed call(s)",
    ]


@pytest.mark.parametrize(
    "value, why",
    [
        ("http://cache:6379", "one of the following schemes"),
        ("redis://:hunter2-secret@cache:port/0", "could not be cast"),
    ],
)
def test_a_bad_redis_url_is_a_config_error_without_the_password(value, why):
    with pytest.raises(ConfigError, match="REDIS_URL") as err:
        Config(redis_url=value).validated()
    assert why in str(err.value) and "hunter2" not in str(err.value)
