#!/usr/bin/env bash
# System packages (Debian apt) by what a command needs, installed only when missing (a machine
# that has them, however they got there, is left alone):
#
#   scripts/install_system.sh GROUP...          install the groups' missing packages (as root)
#   scripts/install_system.sh --list GROUP...   print the groups' packages, one a line; installs
#                                               nothing (tests/test_install.py checks the split)
#
# Groups, and the make targets that install them (Makefile):
#   venv    python3 and its venv module          the virtualenv every Python target makes
#   serve   venv + nginx                         make install, make serve
#   image   podman and its helpers, mmdebstrap   make image
#   bench   ApacheBench, Redis, libb64           make bench
#   test    serve + image + bench + the tests'   make test
#           browser, curl, openssl, iproute2
# supervisord and gunicorn are not here: they come from pip (requirements.txt).
set -euo pipefail

usage() {
  echo "usage: $0 [--list] venv|serve|image|bench|test..." >&2
  exit 2
}

# pkg CHECK PACKAGE: PACKAGE counts as present when CHECK holds. CHECK is a command on PATH,
# an absolute path the package installs, or py:MODULE (python3 can import MODULE).
have() {
  case "$1" in
    py:*) command -v python3 >/dev/null && python3 -c "import ${1#py:}" 2>/dev/null ;;
    /*) [ -e "$1" ] ;;
    *) command -v "$1" >/dev/null ;;
  esac
}
declare -A seen=()
need=()
pkg() {
  # Groups include each other, so a package is taken once.
  [ -z "${seen[$2]:-}" ] || return 0
  seen[$2]=1
  if [ "$mode" = list ]; then
    echo "$2"
  elif ! have "$1"; then
    need+=("$2")
  fi
}

group_venv() {
  pkg python3 python3
  # Debian's python3 leaves ensurepip, which `python3 -m venv` needs, to python3-venv.
  pkg py:ensurepip python3-venv
}

group_serve() {
  group_venv
  # The reverse proxy in front of gunicorn (nginx.conf, started by supervisor.conf).
  pkg nginx nginx
}

group_image() {
  # Build and run the image without a Docker daemon (scripts/podman.sh; deploy/podman has its
  # configuration: runc as the runtime, cgroupfs). The containers run with slirp4netns
  # networking, on overlay storage, rootless-capable (uidmap's newuidmap).
  pkg podman podman
  pkg buildah buildah
  pkg runc runc
  pkg conmon conmon
  pkg /usr/libexec/podman/catatonit catatonit
  pkg slirp4netns slirp4netns
  pkg fuse-overlayfs fuse-overlayfs
  pkg newuidmap uidmap
  pkg /usr/lib/cni/host-local containernetworking-plugins
  pkg /usr/share/containers/containers.conf golang-github-containers-common
  pkg iptables iptables
  # The offline stand-in base image when no registry is reachable (scripts/base_image.sh).
  pkg mmdebstrap mmdebstrap
}

group_bench() {
  # ApacheBench: every load run (scripts/loadgen.py, scripts/ab_multipart.sh).
  pkg ab apache2-utils
  # The result cache's rows run a real Redis (scripts/procs.py start_redis).
  pkg redis-server redis-server
  # perf_analyzer's base64 library (the OIP rows; scripts/install_tools.sh installs it).
  pkg /usr/lib/x86_64-linux-gnu/libb64.so.0d libb64-0d
}

group_test() {
  group_serve
  # tests/test_container.py and tests/test_kubernetes.py build and run the image.
  group_image
  # The load, cache and OIP tests run what the bench runs.
  group_bench
  # The upload page's browser test (Selenium can't download browsers here).
  pkg chromium chromium
  pkg chromedriver chromium-driver
  # Network namespaces for the multi-host test.
  pkg ip iproute2
  # The OIP JSON example (README) is run with curl (tests/test_oip.py).
  pkg curl curl
  # The cache's TLS test makes its certificates with openssl.
  pkg openssl openssl
}

mode=install
if [ "${1:-}" = --list ]; then
  mode=list
  shift
fi
[ $# -gt 0 ] || usage
# Every name is checked before any group is listed or installed.
for group in "$@"; do
  case "$group" in
    venv | serve | image | bench | test) ;;
    *) usage ;;
  esac
done
for group in "$@"; do "group_$group"; done
if [ "$mode" = list ] || [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install_system: missing ${need[*]}; run as root or: sudo apt-get install ${need[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}"
# Debian starts nginx on port 80 and Redis on 6379 on install; we run our own instances, so
# stop the ones just installed.
for service in nginx redis-server; do
  if [ -n "${seen[$service]:-}" ] && [[ " ${need[*]} " == *" $service "* ]]; then
    (command -v service >/dev/null && service "$service" stop) >/dev/null 2>&1 || true
  fi
done
