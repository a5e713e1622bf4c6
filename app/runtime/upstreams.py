"""nginx's upstreams, rendered from the environment when nginx starts.

    BACKENDS=10.0.0.11:10086,10.0.0.12:10086 python -m app.runtime.upstreams run/nginx/

writes `backends.conf` (the HTTP `classifier` upstream, from BACKENDS) and
`grpc_backends.conf` (the `classifier_grpc` upstream, from GRPC_BACKENDS: each host's
GRPC_BIND, default 127.0.0.1:8011) into that directory.

supervisor.conf runs this just before nginx, and nginx.conf includes the file, so model hosts
are named in the environment (one image, any topology), never by editing nginx.conf.
A bad entry stops nginx's start with one line that names it and the expected form.
"""

from __future__ import annotations

import ipaddress
import os
import re
import sys
from pathlib import Path

from app.config import ConfigError

DEFAULT = "127.0.0.1:10086"
# variable, default, file written
UPSTREAMS = (("BACKENDS", DEFAULT, "backends.conf"), ("GRPC_BACKENDS", "127.0.0.1:8011", "grpc_backends.conf"))
# After 3 failures in 10 s a backend is skipped for 10 s; with one server nginx never marks
# it down, so a restart on a single host isn't prolonged.
OPTIONS = "max_fails=3 fail_timeout=10s"
_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")  # one DNS label (RFC 1123)


def _check_host(host: str) -> bool:
    if host.startswith("[") and host.endswith("]"):
        try:
            return ipaddress.ip_address(host[1:-1]).version == 6
        except ValueError:
            return False
    return 0 < len(host) <= 253 and all(_LABEL.fullmatch(label) for label in host.split("."))


def parse(text: str, variable: str = "BACKENDS") -> list[str]:
    """`host:port` entries, comma-separated; IPv6 hosts in brackets. Order and duplicates kept."""
    entries = [part.strip() for part in text.split(",") if part.strip()]
    if not entries:
        raise ConfigError(f"{variable} is empty; name the model servers as host:port[,host:port], e.g. {DEFAULT}")
    for entry in entries:
        host, sep, port = entry.rpartition(":")
        if not (sep and _check_host(host) and port.isdigit() and 0 < int(port) < 65536):
            raise ConfigError(
                f"{variable} entry {entry!r} is not host:port; write e.g. 10.0.0.12:10086 or [fd00::12]:10086"
            )
    return entries


def render(backends: list[str], variable: str = "BACKENDS") -> str:
    lines = [f"# Rendered by app/runtime/upstreams.py from {variable}={','.join(backends)}\n"]
    return "".join(lines + [f"server {b} {OPTIONS};\n" for b in backends])


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m app.runtime.upstreams OUTPUT_DIR", file=sys.stderr)
        return 2
    try:
        texts = {name: render(parse(os.environ.get(var, "") or default, var), var) for var, default, name in UPSTREAMS}
    except ConfigError as exc:
        print(f"upstreams: {exc}", file=sys.stderr)
        return 2
    for name, text in texts.items():
        out = Path(argv[0]) / name
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(out)  # atomic: a reload never reads half a file
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
