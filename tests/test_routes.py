"""HTTP API through Flask's test client: inputs accepted, bad inputs refused with status + message."""

import base64
import io
import json
import logging

import pytest

from app import create_app
from app.core.service import Classifier
from app.telemetry.requestlog import JsonLines
from tests.conftest import VOC_LABELS, assert_same_predictions, encode, make_config, metric_samples, photo


def upload(data: bytes, name: str = "x.jpg", field: str = "image"):
    return {field: (io.BytesIO(data), name)}


def test_multipart_upload_as_seed_001(client, jpeg_bytes):
    r = client.post("/model_predict", data=upload(jpeg_bytes), content_type="multipart/form-data")
    body = r.get_json()
    assert r.status_code == 200 and body["status"] == 1
    assert len(body["result"]) == 5 and body["result"] == [p["label"] for p in body["predictions"]]
    assert body["model"]["arch"] == "resnet18" and body["model"]["untrained"] is False
    assert body["request_id"] == r.headers["X-Request-ID"]


def test_several_parts_are_answered_in_order(client, jpeg_bytes, png_bytes):
    data = {
        "image": [
            (io.BytesIO(jpeg_bytes), "a.jpg"),
            (io.BytesIO(png_bytes), "b.png"),
            (io.BytesIO(jpeg_bytes), "c.jpg"),
        ]
    }
    r = client.post("/model_predict", data=data, content_type="multipart/form-data")
    results = r.get_json()["results"]
    assert r.status_code == 200 and len(results) == 3
    assert_same_predictions(results[0]["predictions"], results[2]["predictions"])
    assert results[0]["result"] != results[1]["result"]


def test_raw_body_and_json_give_the_same_answer(client, jpeg_bytes):
    raw = client.post("/model_predict", data=jpeg_bytes, content_type="image/jpeg").get_json()
    b64 = base64.b64encode(jpeg_bytes).decode()
    as_json = client.post("/model_predict", json={"image": b64}).get_json()
    as_uri = client.post("/model_predict", json={"image": "data:image/jpeg;base64," + b64}).get_json()
    as_list = client.post("/model_predict", json={"images": [b64, b64]}).get_json()
    assert raw["predictions"] == as_json["predictions"] == as_uri["predictions"]
    assert_same_predictions(as_list["results"][1]["predictions"], raw["predictions"])


TOO_BIG = 1_000_000


@pytest.fixture(scope="module")
def small_limit_client(imagenet_ckpt):
    return create_app(make_config(imagenet_ckpt, max_upload_bytes=TOO_BIG, max_images_per_request=2)).test_client()


BAD_INPUTS = [
    # (id, request kwargs, status, error code, message fragment)
    ("no-body", {}, 400, "no_image", "send multipart/form-data with a file field 'image'"),
    ("wrong-field", {"data": upload(b"x", field="file")}, 400, "no_image", "(got fields: file)"),
    (
        "text-field",
        {"data": {"image": "not a file"}, "content_type": "multipart/form-data"},
        400,
        "no_image",
        "no file field 'image'",
    ),
    ("not-an-image", {"data": upload(b"hello world", "x.txt")}, 400, "not_an_image", "not an image format"),
    ("empty-file", {"data": upload(b"")}, 400, "empty_image", "the image is empty"),
    ("truncated", {"data": upload(encode(photo(), "JPEG")[:3000])}, 400, "corrupt_image", "corrupt or truncated"),
    ("text/plain", {"data": b"hi", "content_type": "text/plain"}, 415, "unsupported_media_type", "text/plain"),
    ("bad-json", {"data": b"{nope", "content_type": "application/json"}, 400, "invalid_json", "not JSON"),
    ("json-no-image", {"json": {"picture": "x"}}, 400, "no_image", "'images' (list)"),
    ("bad-base64", {"json": {"image": "***"}}, 400, "invalid_base64", "image is not valid base64"),
    ("base64-not-str", {"json": {"images": [1]}}, 400, "invalid_base64", "images[0] must be a base64 string"),
    (
        "too-large",
        {"data": b"\xff" * (TOO_BIG + 1), "content_type": "image/jpeg"},
        413,
        "request_entity_too_large",
        "exceeds the capacity limit",
    ),
    ("too-many", {"json": {"images": ["aGk="] * 3}}, 413, "too_many_images", "the limit is 2"),
]


@pytest.mark.parametrize(
    ("kwargs", "status", "code", "message"), [b[1:] for b in BAD_INPUTS], ids=[b[0] for b in BAD_INPUTS]
)
def test_bad_inputs(small_limit_client, kwargs, status, code, message):
    r = small_limit_client.post("/model_predict", **kwargs)
    body = r.get_json()
    assert (r.status_code, body["error"]) == (status, code), body
    assert message in body["message"] and body["status"] == 0 and body["request_id"]


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("get", "/model_predict", 405, "method_not_allowed"),
        ("post", "/predict", 404, "not_found"),
        ("delete", "/ready", 405, "method_not_allowed"),
    ],
)
def test_wrong_routes_are_json(client, method, path, status, code):
    r = getattr(client, method)(path)
    assert r.status_code == status and r.get_json()["error"] == code


def test_unexpected_errors_are_generic_500s_logged_with_the_request_id(app, client, jpeg_bytes, monkeypatch, caplog):
    def explode(blobs, stats):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(app.extensions["classifier"], "classify", explode)
    with caplog.at_level(logging.ERROR):
        r = client.post("/model_predict", data=upload(jpeg_bytes), headers={"X-Request-ID": "req-42"})
    assert r.status_code == 500 and r.get_json()["request_id"] == "req-42"
    assert "secret" not in r.get_data(as_text=True)
    assert "req-42" in caplog.text and "RuntimeError: secret internals" in caplog.text


@pytest.mark.parametrize("bad_id", ["bad id; drop", "x" * 200, "<script>"])
def test_hostile_request_ids_are_replaced(client, bad_id):
    r = client.get("/health", headers={"X-Request-ID": bad_id})
    assert r.headers["X-Request-ID"] != bad_id and len(r.headers["X-Request-ID"]) == 32


def multipart_body(data: bytes, boundary: str = "b0undary") -> tuple[bytes, str]:
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="big.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def test_uploads_never_touch_the_disk(client, monkeypatch):
    """Werkzeug spools form files over 500 KB to temp files unless told otherwise."""
    import werkzeug.formparser

    def no_disk(*args, **kwargs):
        raise AssertionError("an upload was written to disk")

    monkeypatch.setattr(werkzeug.formparser, "SpooledTemporaryFile", no_disk)
    big = encode(photo((2000, 1500)), "PNG")
    assert len(big) > 500_000
    body, content_type = multipart_body(big)
    assert client.post("/model_predict", data=body, content_type=content_type).status_code == 200


def test_health_and_readiness(imagenet_ckpt):
    app = create_app(make_config(imagenet_ckpt, defer_start=True))
    client = app.test_client()
    assert client.get("/health").status_code == 200
    assert client.get("/ready").status_code == 503
    assert client.post("/model_predict", data=b"x", content_type="image/jpeg").status_code == 503
    app.extensions["classifier"].start()
    assert client.get("/ready").get_json()["status"] == "ready"


def test_random_weights_are_marked_in_every_answer(jpeg_bytes):
    client = create_app(make_config("random", model_weights="random")).test_client()
    body = client.post("/model_predict", data=jpeg_bytes, content_type="image/jpeg").get_json()
    assert body["model"]["untrained"] is True and "untrained" in body["warning"]


def test_multilabel_returns_classes_above_threshold_highest_first(voc_app, jpeg_bytes):
    body = voc_app.test_client().post("/model_predict", data=upload(jpeg_bytes)).get_json()
    assert body["status"] == 1 and body["result"] == ["Cat", "Person"]
    assert body["predictions"][0]["score"] > body["predictions"][1]["score"] > 0.5


def test_multilabel_with_nothing_found_says_no_categories(voc_none_ckpt, jpeg_bytes):
    cfg = make_config(voc_none_ckpt, model_labels=VOC_LABELS, model_task="multilabel")
    body = create_app(cfg).test_client().post("/model_predict", data=upload(jpeg_bytes)).get_json()
    assert body["status"] == 0 and body["result"] == "No Categories"


def test_raw_output_thresholding_as_seed_001(voc_ckpt, jpeg_bytes):
    cfg = make_config(voc_ckpt, model_labels=VOC_LABELS, model_task="multilabel", activation="none", threshold=5.0)
    body = create_app(cfg).test_client().post("/model_predict", data=upload(jpeg_bytes)).get_json()
    assert body["result"] == ["Cat"] and body["predictions"][0]["score"] == pytest.approx(9.0, abs=0.1)


def test_classifier_is_the_one_in_extensions(app):
    assert isinstance(app.extensions["classifier"], Classifier)


def test_a_full_queue_is_refused_before_the_upload_is_read(app, client, monkeypatch):
    batcher = app.extensions["classifier"].batcher
    monkeypatch.setattr(batcher, "max_queue", 0)
    r = client.post("/model_predict", data=b"never parsed", content_type="image/jpeg")
    assert r.status_code == 503 and r.headers["Retry-After"] == "1" and r.get_json()["error"] == "overloaded"


def sample(text: str, name: str) -> float:
    return metric_samples(text)[name]


def test_metrics_count_requests_stages_and_batches(client, jpeg_bytes):
    before = client.get("/metrics").get_data(as_text=True)
    ok = 'classifier_http_requests_total{endpoint="/model_predict",status="200"}'
    bad = 'classifier_http_requests_total{endpoint="/model_predict",status="400"}'
    start = {name: sample(before, name) if name in before else 0.0 for name in (ok, bad)}
    client.post("/model_predict", data=upload(jpeg_bytes))
    client.post("/model_predict", data=b"", content_type="image/jpeg")
    client.get("/no/such/path")
    text = client.get("/metrics").get_data(as_text=True)
    assert sample(text, ok) == start[ok] + 1 and sample(text, bad) == start[bad] + 1
    assert 'endpoint="unmatched",status="404"' in text  # raw paths never become labels
    for histogram in ("request_duration", "queue_wait", "preprocess_duration", "inference_duration"):
        assert sample(text, f"classifier_{histogram}_seconds_count") >= 1, histogram
    assert sample(text, "classifier_batch_size_count") >= 1
    assert sample(text, "classifier_queue_depth") == 0 and sample(text, "classifier_in_flight_requests") == 0
    assert sample(text, "classifier_process_resident_memory_bytes") > 50e6
    assert sample(text, "classifier_model_load_seconds") > 0


@pytest.fixture
def request_log():
    """The request logger's lines, formatted as in production."""
    buf, handler = io.StringIO(), logging.StreamHandler()
    handler.setStream(buf)
    handler.setFormatter(JsonLines())
    logging.getLogger("app.requests").addHandler(handler)
    yield buf
    logging.getLogger("app.requests").removeHandler(handler)


def test_server_timing_and_one_json_log_line_per_request(client, jpeg_bytes, request_log):
    r = client.post("/model_predict", data=upload(jpeg_bytes), headers={"X-Request-ID": "trace-7"})
    timing = dict(part.split(";dur=") for part in r.headers["Server-Timing"].split(", "))
    assert list(timing) == ["decode", "queue", "infer", "total"]
    assert 0 < float(timing["decode"]) < float(timing["total"]) and float(timing["infer"]) > 0
    lines = [json.loads(line) for line in request_log.getvalue().splitlines() if '"trace-7"' in line]
    assert len(lines) == 1
    line = lines[0]
    assert line["status"] == 200 and line["sizes"] == ["600x400"] and line["images"] == 1
    assert line["bytes_in"] > len(jpeg_bytes) and line["path"] == "/model_predict"
    assert {f"{stage}_ms" for stage in timing} <= set(line)


KEY = "k" * 8 + "-secret-key-123"


@pytest.fixture(scope="module")
def keyed_client(imagenet_ckpt):
    return create_app(make_config(imagenet_ckpt, api_key=KEY)).test_client()


@pytest.mark.parametrize(
    ("method", "path", "headers", "status"),
    [
        ("post", "/model_predict", {}, 401),
        ("post", "/model_predict", {"Authorization": "Bearer wrong-key-wrong-key"}, 401),
        ("post", "/model_predict", {"Authorization": f"Basic {KEY}"}, 401),
        ("post", "/model_predict", {"X-API-Key": KEY[:-1]}, 401),
        ("get", "/metrics", {}, 401),
        ("post", "/model_predict", {"Authorization": f"Bearer {KEY}"}, 200),
        ("post", "/model_predict", {"X-API-Key": KEY}, 200),
        ("get", "/metrics", {"X-API-Key": KEY}, 200),
        ("get", "/health", {}, 200),
        ("get", "/ready", {}, 200),
        ("get", "/", {}, 200),
        ("get", "/openapi.json", {}, 200),
    ],
)
def test_api_key_guards_prediction_and_metrics_only(keyed_client, jpeg_bytes, method, path, headers, status):
    kwargs = {"data": upload(jpeg_bytes)} if method == "post" else {}
    r = getattr(keyed_client, method)(path, headers=headers, **kwargs)
    assert r.status_code == status
    if status == 401:
        assert r.get_json()["error"] == "unauthorized" and r.headers["WWW-Authenticate"].startswith("Bearer")
        assert KEY not in r.get_data(as_text=True)


def test_the_key_is_checked_before_the_upload_is_read(keyed_client, monkeypatch):
    monkeypatch.setattr("app.http.routes.read_images", lambda *a: pytest.fail("read the upload of a refused request"))
    assert keyed_client.post("/model_predict", data=b"x" * 1000, content_type="image/jpeg").status_code == 401
