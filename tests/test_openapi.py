"""The OpenAPI spec against the live server: schemathesis generates requests from the spec
(valid and invalid: random bodies, wrong types, missing fields) and checks every answer.

The checks: no 5xx, status codes and content types the spec declares, and bodies and
headers that match the spec's schemas. `positive_data_acceptance` is left out: random bytes
sent as image/jpeg are valid by the schema but rightly refused as "not an image".
"""

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


@pytest.fixture(scope="module")
def api_schema(live_server):
    return schemathesis.openapi.from_url(live_server + "/openapi.json")


# schemathesis's own pytest plugin (`from_fixture`) breaks on pytest 9, so its strategies are
# driven through hypothesis directly: the same cases and the same checks.
# Only /model_predict and OIP infer take input, so only they have invalid requests to generate.
POSITIVE, NEGATIVE = GenerationMode.POSITIVE, GenerationMode.NEGATIVE
OPERATIONS = [
    ("/model_predict", "POST", POSITIVE),
    ("/model_predict", "POST", NEGATIVE),
    ("/health", "GET", POSITIVE),
    ("/ready", "GET", POSITIVE),
    ("/metrics", "GET", POSITIVE),
    ("/v2", "GET", POSITIVE),
    ("/v2/health/ready", "GET", POSITIVE),
    ("/v2/models/{name}", "GET", POSITIVE),
    ("/v2/models/{name}/config", "GET", POSITIVE),
    ("/v2/models/{name}/infer", "POST", POSITIVE),
    ("/v2/models/{name}/infer", "POST", NEGATIVE),
]


@pytest.mark.parametrize(("path", "method", "mode"), OPERATIONS)
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(data=st.data())
def test_the_live_server_keeps_to_its_spec(api_schema, path, method, mode, data):
    case = data.draw(api_schema[path][method].as_strategy(generation_mode=mode))
    case.call_and_validate(checks=CHECKS, timeout=30)


def test_the_spec_describes_every_endpoint_and_error(live_server):
    spec = requests.get(live_server + "/openapi.json", timeout=10).json()
    assert spec["openapi"].startswith("3.")
    assert {"/model_predict", "/health", "/ready", "/metrics"} <= set(spec["paths"])
    oip = {p for p in spec["paths"] if p.startswith("/v2")}
    assert {"/v2", "/v2/health/ready", "/v2/models/{name}/config", "/v2/models/{name}/infer"} <= oip
    predict = spec["paths"]["/model_predict"]["post"]
    assert {"multipart/form-data", "application/json", "image/jpeg"} <= set(predict["requestBody"]["content"])
    assert {"200", "400", "413", "415", "503", "504", "500"} <= set(predict["responses"])
