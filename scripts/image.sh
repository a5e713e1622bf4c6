#!/usr/bin/env bash
# Build the container image with podman (no Docker daemon needed): `make image`.
#
#   IMAGE            tag to build (default localhost/classifier:latest)
#   TORCH_VARIANT    cuda (default: PyPI's torch, the pair the tests run) or cpu
#   FETCH_WEIGHTS    imagenet (bake torchvision's weights in) or skip (mount a checkpoint)
#   EXTRA_CA_CERTS   a folder of *.crt to trust during the build and in the image, for
#                    TLS-intercepting proxies (default: this host's /usr/local/share/ca-certificates)
#
# With Docker instead: copy the certificates into certs/ and run `docker build .` with the same
# --build-arg flags; BASE_IMAGE stays python:3.11-slim.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
cd "$here"
image="${IMAGE:-localhost/classifier:latest}"
ca_dir="${EXTRA_CA_CERTS:-/usr/local/share/ca-certificates}"

base="$(scripts/base_image.sh)"
# Added to what certs/ already holds (a file placed there by hand stays).
if [ -d "$ca_dir" ]; then
  find "$ca_dir" -maxdepth 1 -name '*.crt' -exec cp {} certs/ \;
fi
start=$(date +%s)
# --format docker keeps HEALTHCHECK (the OCI format has no field for it).
scripts/podman.sh build --format docker --pull=never \
  --build-arg BASE_IMAGE="$base" \
  --build-arg TORCH_VARIANT="${TORCH_VARIANT:-cuda}" \
  --build-arg FETCH_WEIGHTS="${FETCH_WEIGHTS:-imagenet}" \
  -t "$image" . >&2
# Superseded builds' layers (old code, old requirements) would otherwise pile up on disk.
scripts/podman.sh image prune -f >/dev/null
echo "image: built $image on $base in $(( $(date +%s) - start ))s" >&2
