#!/usr/bin/env bash
# Prints the base image to build on: python:3.11-slim when it can be had, else an offline
# stand-in made here with mmdebstrap (Debian bookworm's Python 3.11, as in python:3.11-slim).
#
# Hosts with no reachable image registry (CI machines, air-gapped build hosts) can still
# build: the stand-in is made from the host's own apt sources, once, and then reused.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
podman="$here/scripts/podman.sh"
official="docker.io/library/python:3.11-slim"
standin="localhost/classifier-base:bookworm-py3.11"
sources="${APT_SOURCES:-/etc/apt/sources.list.d/debian.sources}"

if "$podman" image exists "$official" || "$podman" pull -q "$official" >/dev/null 2>&1; then
  echo "$official"
  exit 0
fi
if ! "$podman" image exists "$standin"; then
  echo "base_image: $official can't be pulled; making $standin with mmdebstrap" >&2
  command -v mmdebstrap >/dev/null || { echo "base_image: needs mmdebstrap (apt-get install mmdebstrap)" >&2; exit 1; }
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  # minbase + what the Dockerfile relies on from python:3.11-slim: `python`, venv, and a CA
  # bundle that update-ca-certificates can extend.
  mmdebstrap --quiet --variant=minbase \
    --include=python3,python3-venv,python-is-python3,ca-certificates \
    bookworm "$tmp/rootfs.tar" "$sources" >&2
  "$podman" import --quiet "$tmp/rootfs.tar" "$standin" >/dev/null
fi
echo "$standin"
