#!/usr/bin/env bash
# podman with the project's own configuration and storage: `scripts/podman.sh ARGS...`.
#
# The machine's /etc/containers is left alone. Storage lives in PODMAN_ROOT (default
# /var/tmp/classifier-podman), outside the checkout, so a fresh clone on the same machine
# (CI) reuses the layer cache: only the layers after `COPY requirements.txt` are rebuilt.
set -euo pipefail
root="${PODMAN_ROOT:-/var/tmp/classifier-podman}"
here="$(cd "$(dirname "$0")/.." && pwd)"
mkdir -p "$root"
# storage.conf takes no variables, so it is written with this root's absolute paths.
if [ ! -f "$root/storage.conf" ]; then
  cat >"$root/storage.conf.tmp" <<CONF
[storage]
# Kernel overlayfs: layers are shared, not copied (vfs would copy the 6 GB torch layer).
driver = "overlay"
graphroot = "$root/storage"
runroot = "$root/runroot"
CONF
  mv "$root/storage.conf.tmp" "$root/storage.conf"
fi
export CONTAINERS_STORAGE_CONF="$root/storage.conf"
export CONTAINERS_CONF="$here/deploy/podman/containers.conf"
exec podman "$@"
