#!/usr/bin/env bash
# System packages the stack and its tests need: nginx (reverse proxy), ApacheBench (load
# tests), and Chromium with its driver (the upload page's browser test; Selenium and
# Playwright can't download browsers here). Installed only when missing, so a machine that
# has them is left alone.
set -euo pipefail
need=()
command -v nginx >/dev/null || need+=(nginx)
command -v ab >/dev/null || need+=(apache2-utils)
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install_system: missing ${need[*]}; run as root or: sudo apt-get install ${need[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}"
# Debian starts nginx on port 80 on install; we run our own instance, so stop theirs.
(command -v service >/dev/null && service nginx stop) >/dev/null 2>&1 || true
