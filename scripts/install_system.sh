#!/usr/bin/env bash
# System packages the stack and its tests need, installed only when missing (a machine that
# has them is left alone):
#   nginx                 the reverse proxy
#   apache2-utils         ApacheBench, for load tests
#   chromium(-driver)     the upload page's browser test (Selenium can't download browsers here)
#   podman, buildah, runc, conmon, catatonit, slirp4netns, fuse-overlayfs, uidmap,
#   containernetworking-plugins, golang-github-containers-common, iptables
#                         build and run the image without a Docker daemon (tests/test_container.py)
#   mmdebstrap            the offline stand-in base image when no registry is reachable
#   iproute2              network namespaces for the multi-host test
#   libb64-0d, curl       perf_analyzer's base64 library; curl for the OIP JSON example
#   redis-server, openssl the result cache's tests (REDIS_URL) run a real Redis, with TLS
set -euo pipefail
need=()
have() { command -v "$1" >/dev/null || [ -e "$1" ]; }
want() { have "$1" || need+=("$2"); }
want nginx nginx
want ab apache2-utils
want chromium chromium
want chromedriver chromium-driver
want podman podman
want buildah buildah
want runc runc
want conmon conmon
want /usr/libexec/podman/catatonit catatonit
want slirp4netns slirp4netns
want fuse-overlayfs fuse-overlayfs
want newuidmap uidmap
want /usr/lib/cni/host-local containernetworking-plugins
want /usr/share/containers/containers.conf golang-github-containers-common
want iptables iptables
want mmdebstrap mmdebstrap
want ip iproute2
want /usr/lib/x86_64-linux-gnu/libb64.so.0d libb64-0d
want curl curl
want redis-server redis-server
want openssl openssl
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install_system: missing ${need[*]}; run as root or: sudo apt-get install ${need[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}"
# Debian starts nginx on port 80 and Redis on 6379 on install; we run our own instances, so
# stop theirs.
for service in nginx redis-server; do
  (command -v service >/dev/null && service "$service" stop) >/dev/null 2>&1 || true
done
