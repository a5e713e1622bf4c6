"""The layout shows the layers: imports flow from the doors through the core down to the
engines, and nothing below a door knows its transport. Read from the source, so a new import
that crosses a layer fails here rather than in review."""

from __future__ import annotations

import ast

import pytest

from app.config import ROOT

TRANSPORTS = ("flask", "werkzeug", "grpc", "gunicorn", "gevent")
# package -> the app packages and third-party modules it must not import
DOORS = ("app.http", "app.oip", "app.torchserve")
FORBIDDEN = {
    "core": (*DOORS, "app.runtime", *TRANSPORTS),
    "model": ("app.core", *DOORS, "app.runtime", *TRANSPORTS),
    "engines": ("app.core", *DOORS, "app.runtime", *TRANSPORTS),
    "telemetry": ("app.core", *DOORS, "app.runtime", *TRANSPORTS),
    "http": ("app.oip", "app.torchserve", "app.runtime", "grpc", "gunicorn"),
    "oip": ("app.torchserve", "app.runtime", "gunicorn"),
    # A door beside the others: the core and app.http's helpers, never another door's code.
    "torchserve": ("app.oip", "app.runtime", "grpc", "gunicorn", "gevent"),
}
# The one OpenAPI document of the HTTP port lists the OIP routes beside the seed's.
ALLOWED = {"app/http/openapi.py imports app.oip.openapi"}


def imports(path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", FORBIDDEN)
def test_imports_flow_one_way(package):
    crossing = {
        f"{path.relative_to(ROOT)} imports {name}"
        for path in sorted((ROOT / "app" / package).glob("*.py"))
        for name in imports(path)
        if any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN[package])
    }
    assert not crossing - ALLOWED, sorted(crossing - ALLOWED)


def test_gunicorn_conf_keeps_settings_only():
    """Its hooks are app.runtime's, bound by name; the file defines no functions but _cores."""
    tree = ast.parse((ROOT / "gunicorn_conf.py").read_text())
    functions = [node.name for node in tree.body if isinstance(node, ast.FunctionDef)]
    assert functions == ["_cores"]
