"""The Kubernetes and KServe manifests, proven as far as a machine without a cluster can:
rendered by kustomize, schema-checked (strict) against two Kubernetes versions, linted by
checkov, checked against the kserve SDK's types, cross-checked resource against resource,
and the cpu overlay's Deployment run from the real image with `podman kube play`.
"""

from __future__ import annotations

import configparser
import io
import json
import os
import shutil
import subprocess
import time

import pytest
import requests
import yaml

from app.config import ROOT
from tests.conftest import missing, podman

K8S = ROOT / "deploy" / "kubernetes"
VALIDATORS = {"k8s": ROOT / ".venv-k8s" / "bin", "checkov": ROOT / ".venv-checkov" / "bin"}
VERSIONS = ["1.29.0", "1.37.0"]
POD = "classifier-pod-0"  # podman kube play's name for the Deployment's one pod


def need(path) -> None:
    if not path.exists() or shutil.which("kubectl") is None:
        missing(f"{path} or kubectl is missing: scripts/install_tools.sh (make test) installs the validators")


def render(target: str) -> str:
    need(VALIDATORS["k8s"])
    return subprocess.run(
        ["kubectl", "kustomize", str(ROOT / target)], capture_output=True, text=True, check=True
    ).stdout


@pytest.fixture(scope="module", params=["cpu", "gpu"])
def overlay(request, tmp_path_factory):
    text = render(f"deploy/kubernetes/overlays/{request.param}")
    path = tmp_path_factory.mktemp("k8s") / f"{request.param}.yaml"
    path.write_text(text)
    docs = {doc["kind"]: doc for doc in yaml.safe_load_all(text)}
    return request.param, path, docs


def pod(docs: dict) -> dict:
    return docs["Deployment"]["spec"]["template"]


def container(docs: dict) -> dict:
    return pod(docs)["spec"]["containers"][0]


def test_each_overlay_renders_a_complete_set(overlay):
    _, _, docs = overlay
    assert set(docs) == {
        "Namespace",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "PersistentVolumeClaim",
        "NetworkPolicy",
    }
    assert {doc["metadata"].get("namespace") for kind, doc in docs.items() if kind != "Namespace"} == {"classifier"}
    assert container(docs)["image"] == "registry.example.com/classifier:1.0.0"


def kubernetes_validate(path, version: str) -> subprocess.CompletedProcess:
    cmd = [str(VALIDATORS["k8s"] / "kubernetes-validate"), "--strict", "--quiet", "-k", version, str(path)]
    return subprocess.run(cmd, capture_output=True, text=True)


@pytest.mark.parametrize("version", VERSIONS)
def test_schemas_strict(overlay, version):
    result = kubernetes_validate(overlay[1], version)
    assert result.returncode == 0, result.stdout + result.stderr


def test_strict_schemas_catch_a_misspelt_field(overlay, tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text(overlay[1].read_text().replace("readinessProbe:", "readynessProbe:"))
    result = kubernetes_validate(broken, VERSIONS[-1])
    assert result.returncode != 0 and "readynessProbe" in result.stdout + result.stderr


def checkov(path) -> dict:
    need(VALIDATORS["checkov"])
    out = subprocess.run(
        [str(VALIDATORS["checkov"] / "checkov"), "--framework", "kubernetes", "--skip-download",
         "--output", "json", "-f", str(path)],  # not --quiet: it drops the skipped checks
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    report = json.loads(out.stdout)
    return report[0] if isinstance(report, list) else report


def test_checkov_finds_nothing_unexplained(overlay):
    results = checkov(overlay[1])["results"]
    assert [c["check_id"] for c in results["failed_checks"]] == []
    # Each skip is an annotation on the Deployment, "CHECK=reason", with a written reason.
    notes = overlay[2]["Deployment"]["metadata"]["annotations"]
    reasons = dict(v.split("=", 1) for k, v in notes.items() if k.startswith("checkov.io/skip"))
    assert (
        {c["check_id"] for c in results["skipped_checks"]} == set(reasons) == {"CKV_K8S_43", "CKV_K8S_15", "CKV_K8S_35"}
    )
    assert all(len(reason) > 40 for reason in reasons.values()), reasons


def test_checkov_catches_a_writable_root(overlay, tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text(overlay[1].read_text().replace("readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false"))
    assert "CKV_K8S_22" in {c["check_id"] for c in checkov(broken)["results"]["failed_checks"]}


def test_selectors_ports_and_targets_agree(overlay):
    _, _, docs = overlay
    labels = pod(docs)["metadata"]["labels"]
    assert docs["Deployment"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert docs["Service"]["spec"]["selector"].items() <= labels.items()
    assert docs["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert docs["NetworkPolicy"]["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    ports = {p["name"]: p["containerPort"] for p in container(docs)["ports"]}
    assert ports == {"http": 8999, "grpc": 8001}
    assert all(p["targetPort"] in ports for p in docs["Service"]["spec"]["ports"])
    allowed = {p["port"] for rule in docs["NetworkPolicy"]["spec"]["ingress"] for p in rule["ports"]}
    assert allowed == set(ports.values())
    target = docs["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", docs["Deployment"]["metadata"]["name"])


def test_the_pdb_allows_an_eviction_at_the_minimum(overlay):
    _, _, docs = overlay
    least = docs["HorizontalPodAutoscaler"]["spec"]["minReplicas"]
    budget = docs["PodDisruptionBudget"]["spec"]
    allowed = budget["maxUnavailable"] if "maxUnavailable" in budget else least - budget["minAvailable"]
    assert least >= 2 and allowed >= 1 and least - allowed >= 1  # one can go, one keeps serving


def test_resources_and_gpus(overlay):
    name, _, docs = overlay
    resources = container(docs)["resources"]
    assert resources["requests"] == resources["limits"]  # Guaranteed; workers follow limits.cpu
    gpus = resources["limits"].get("nvidia.com/gpu")
    spec = pod(docs)["spec"]
    if name == "gpu":
        assert isinstance(gpus, int) and gpus >= 1 and resources["requests"]["nvidia.com/gpu"] == gpus
        assert any(t["key"] == "nvidia.com/gpu" for t in spec["tolerations"]) and spec["nodeSelector"]
        assert (
            docs["HorizontalPodAutoscaler"]["spec"]["metrics"][0]["pods"]["metric"]["name"] == "classifier_queue_depth"
        )
    else:
        assert gpus is None and "tolerations" not in spec
        assert docs["HorizontalPodAutoscaler"]["spec"]["metrics"][0]["resource"]["name"] == "cpu"


def test_security_context_and_writable_paths(overlay):
    _, _, docs = overlay
    spec, c = pod(docs)["spec"], container(docs)
    assert spec["securityContext"]["runAsNonRoot"] and spec["securityContext"]["runAsUser"] == 10001
    assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert "emptyDir" in volumes[mounts["/srv/run"]] and "emptyDir" in volumes[mounts["/tmp"]]


def test_probes_exist_in_the_app_and_shutdown_is_graceful(overlay, app):
    _, _, docs = overlay
    c, routes = container(docs), {rule.rule for rule in app.url_map.iter_rules()}
    probes = {name: c[name]["httpGet"]["path"] for name in ("startupProbe", "readinessProbe", "livenessProbe")}
    assert probes == {"startupProbe": "/ready", "readinessProbe": "/ready", "livenessProbe": "/health"}
    assert set(probes.values()) <= routes
    assert c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"] >= 120  # model load + warm-up
    supervisor = configparser.ConfigParser(interpolation=None)
    supervisor.read(ROOT / "supervisor.conf")
    pre_stop = int(c["lifecycle"]["preStop"]["exec"]["command"][-1])
    drain = int(supervisor["program:our_app"]["stopwaitsecs"])  # above gunicorn's graceful_timeout
    assert pod(docs)["spec"]["terminationGracePeriodSeconds"] > pre_stop + drain


# --- KServe -------------------------------------------------------------------------------------


def kserve_check(text: str) -> dict:
    out = subprocess.run(
        [str(VALIDATORS["k8s"] / "python"), str(ROOT / "tests/clients/kserve_check.py")],
        input=text, capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    return json.loads(out.stdout)


@pytest.mark.parametrize(("variant", "port"), [("http", ("http1", 8999)), ("grpc", ("h2c", 8001))])
def test_kserve_manifests_fit_the_sdk_types(variant, port, app):
    text = render(f"deploy/kserve/{variant}")
    assert kserve_check(text) == {
        f"ServingRuntime/classifier-runtime{'-grpc' if variant == 'grpc' else ''}": [],
        f"InferenceService/classifier{'-grpc' if variant == 'grpc' else ''}": [],
    }
    docs = {doc["kind"]: doc for doc in yaml.safe_load_all(text)}
    runtime, isvc = docs["ServingRuntime"]["spec"], docs["InferenceService"]["spec"]["predictor"]["model"]
    assert runtime["protocolVersions"] == ["v2"] and isvc["protocolVersion"] == "v2"
    assert isvc["runtime"] == docs["ServingRuntime"]["metadata"]["name"]
    c = runtime["containers"][0]
    assert (c["ports"][0]["name"], c["ports"][0]["containerPort"]) == port
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["readinessProbe"]["httpGet"]["path"] in {rule.rule for rule in app.url_map.iter_rules()}


def test_the_sdk_check_catches_a_misspelt_field():
    text = render("deploy/kserve/http").replace("protocolVersion: v2", "protocolVersoin: v2")
    problems = kserve_check(text)["InferenceService/classifier"]
    assert problems and "protocolVersoin" in problems[0]


# --- the Pod spec, run --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def played(image, imagenet_ckpt, tmp_path_factory):
    """The cpu overlay's Deployment (and its PVC, as a podman volume) from the real image."""
    docs = list(yaml.safe_load_all(render("deploy/kubernetes/overlays/cpu")))
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    deployment["spec"]["replicas"] = 1
    c = deployment["spec"]["template"]["spec"]["containers"][0]
    c["image"] = image
    c["env"] = [e for e in c["env"] if e["name"] != "MODEL_ARCH"] + [{"name": "MODEL_ARCH", "value": "resnet18"}]
    # Room for ResNet-18 on a 2-core machine; the overlay's values otherwise stand.
    c["resources"] = {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "1", "memory": "2Gi"}}
    for port in c["ports"]:  # podman publishes container ports on the host: loopback only
        port |= {"hostIP": "127.0.0.1", "hostPort": port["containerPort"]}
    manifest = tmp_path_factory.mktemp("kube") / "deployment.yaml"
    manifest.write_text(yaml.safe_dump(deployment))
    with pytest.raises(requests.ConnectionError):
        requests.get("http://127.0.0.1:8999/health", timeout=1)
    podman("kube", "down", str(manifest), check=False)
    podman("volume", "rm", "-f", "classifier-weights", check=False)
    podman("volume", "create", "classifier-weights")
    mountpoint = podman("volume", "inspect", "--format", "{{.Mountpoint}}", "classifier-weights").stdout.strip()
    shutil.copy(imagenet_ckpt, os.path.join(mountpoint, "model.pth"))
    os.chmod(os.path.join(mountpoint, "model.pth"), 0o644)
    # slirp4netns: the pod gets its own network namespace (host networking refuses port
    # mappings) and leaves no bridge or iptables rules behind.
    play = podman("kube", "play", "--network", "slirp4netns", str(manifest), check=False, timeout=300)
    assert play.returncode == 0, play.stdout + play.stderr
    try:
        yield deployment
    finally:
        podman("kube", "down", str(manifest), check=False)
        podman("volume", "rm", "-f", "classifier-weights", check=False)


def test_kube_play_becomes_ready_and_answers(played, jpeg_bytes, client):
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if requests.get("http://127.0.0.1:8999/ready", timeout=3).status_code == 200:
                break
        except (requests.ConnectionError, requests.Timeout):  # still starting: kubelet's probe would retry too
            pass
        time.sleep(1)
    else:
        logs = podman("pod", "logs", POD, check=False)
        pytest.fail("the pod never became ready:\n" + (logs.stdout + logs.stderr)[-3000:])
    r = requests.post("http://127.0.0.1:8999/model_predict", files={"image": ("a.jpg", jpeg_bytes)}, timeout=60)
    want = client.post("/model_predict", data={"image": (io.BytesIO(jpeg_bytes), "a.jpg")}).get_json()
    assert r.status_code == 200
    assert [p["index"] for p in r.json()["predictions"]] == [p["index"] for p in want["predictions"]]


def test_kube_play_applies_the_security_context(played):
    name = f"{POD}-classifier"
    assert json.loads(podman("inspect", name).stdout)[0]["HostConfig"]["ReadonlyRootfs"] is True
    assert podman("exec", name, "id", "-u").stdout.strip() == "10001"
    status = dict(
        line.split(":\t", 1)
        for line in podman("exec", name, "cat", "/proc/1/status").stdout.splitlines()
        if ":\t" in line
    )
    assert status["CapEff"].strip("0") == ""  # capabilities.drop: [ALL]
    assert status["NoNewPrivs"] == "1"  # allowPrivilegeEscalation: false
    assert status["Seccomp"] == "2"  # seccompProfile RuntimeDefault: a filter is loaded
    writes = podman("exec", name, "sh", "-c", "touch /srv/x 2>&1; touch /srv/run/x /tmp/x && echo ok").stdout
    assert "Read-only file system" in writes and writes.strip().endswith("ok")
