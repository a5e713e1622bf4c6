"""Check KServe manifests against the kserve SDK's own model types; print problems as JSON.

Runs in the validators' virtualenv (.venv-k8s); reads YAML documents on stdin. Each document
is walked against its SDK class, field by field (KServe's types and the Kubernetes ones they
embed): an unknown field, or a value of the wrong kind, is a problem; and each object is
built with the SDK's class, which applies its own checks (required fields, allowed values).
"""

import json
import re
import sys

import kserve
import kubernetes.client
import yaml

KINDS = {"InferenceService": "V1beta1InferenceService", "ServingRuntime": "V1alpha1ServingRuntime"}
PRIMITIVES = {"str": str, "int": int, "bool": bool, "float": (int, float), "object": object, "datetime": str}


def model(name: str):
    return getattr(kserve, name, None) or getattr(kubernetes.client, name)


def walk(value, type_name: str, where: str, problems: list[str]):
    """The value built as the SDK's type, noting every field that doesn't fit it."""
    if value is None:
        return None
    if match := re.fullmatch(r"[lL]ist\[(.+)\]", type_name):
        if not isinstance(value, list):
            problems.append(f"{where}: expected a list")
            return None
        return [walk(item, match.group(1), f"{where}[{i}]", problems) for i, item in enumerate(value)]
    if match := re.fullmatch(r"dict\(str, (.+)\)|Dict\[str, (.+)\]", type_name):
        if not isinstance(value, dict):
            problems.append(f"{where}: expected a map")
            return None
        return {k: walk(v, match.group(1) or match.group(2), f"{where}.{k}", problems) for k, v in value.items()}
    if type_name in PRIMITIVES:
        if type_name != "object" and not isinstance(value, PRIMITIVES[type_name]):
            problems.append(f"{where}: expected {type_name}, got {type(value).__name__}")
        return value
    cls = model(type_name)
    if not isinstance(value, dict):
        problems.append(f"{where}: expected an object ({type_name})")
        return None
    fields = {json_name: attr for attr, json_name in cls.attribute_map.items()}
    kwargs = {}
    for key, item in value.items():
        if key not in fields:
            problems.append(f"{where}.{key}: not a field of {type_name}")
        else:
            kwargs[fields[key]] = walk(item, cls.openapi_types[fields[key]], f"{where}.{key}", problems)
    try:
        return cls(**kwargs)  # the SDK's own checks: required fields, allowed values
    except (ValueError, TypeError) as exc:
        problems.append(f"{where}: {type_name} refuses it: {exc}")
        return None


def check(doc: dict) -> list[str]:
    kind = doc.get("kind")
    if kind not in KINDS:
        return [f"{kind}: not a KServe kind this checks"]
    problems: list[str] = []
    walk(doc, KINDS[kind], kind, problems)
    return problems


if __name__ == "__main__":
    docs = [d for d in yaml.safe_load_all(sys.stdin) if d]
    print(json.dumps({f"{d.get('kind')}/{d.get('metadata', {}).get('name')}": check(d) for d in docs}))
