#!/usr/bin/env bash
# Tools the tests (and the bench) run as separate programs, each in a virtualenv of its own
# (their pinned dependencies clash with the server's and with each other's):
#
#   scripts/install_tools.sh [clients] [k8s] [checkov]     (none named: all three; make test)
#
#   k8s      .venv-k8s      kubernetes-validate and the kserve SDK (requirements-k8s.txt)
#   checkov  .venv-checkov  checkov (requirements-checkov.txt)
#   clients  .venv-clients  the Open Inference Protocol clients (make bench runs only these):
#   tritonclient (HTTP and gRPC), from requirements-clients.txt;
#   perf_analyzer, Triton's load generator. The `perf-analyzer` package needs glibc 2.38,
#   newer than Debian bookworm's 2.36; the last build that runs here ships inside
#   tritonclient 2.50.0's manylinux1 wheel (tritonclient-2.50.0.data/data/bin/perf_analyzer).
#   It needs libb64 (apt libb64-0d, scripts/install_system.sh bench) and libcudart.so.12
#   (nvidia-cuda-runtime-cu12).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -gt 0 ] || set -- clients k8s checkov
for tool in "$@"; do
  case "$tool" in
    clients | k8s | checkov) ;;
    *) echo "usage: $0 [clients] [k8s] [checkov]" >&2; exit 2 ;;
  esac
done
tools=" $* "
wanted() { [[ "$tools" == *" $1 "* ]]; }

# A venv of its own per tool, made when missing; pip leaves what is already installed alone.
for pair in k8s:requirements-k8s.txt checkov:requirements-checkov.txt; do
  tool=${pair%%:*} file=${pair#*:}
  wanted "$tool" || continue
  test -x ".venv-$tool/bin/python" || python3 -m venv ".venv-$tool"
  ".venv-$tool/bin/python" -m pip install --quiet -r "$file"
done
wanted clients || exit 0
# .venv-clients: tritonclient from PyPI, then perf_analyzer out of the 2.50.0 wheel (above).
venv=.venv-clients
test -x $venv/bin/python || python3 -m venv $venv
$venv/bin/python -m pip install --quiet -r requirements-clients.txt
if [ ! -x $venv/bin/perf_analyzer.bin ]; then
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  $venv/bin/python -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" tritonclient==2.50.0
  $venv/bin/python - "$tmp"/tritonclient-2.50.0-*.whl $venv/bin/perf_analyzer.bin <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as wheel:
    data = wheel.read("tritonclient-2.50.0.data/data/bin/perf_analyzer")
with open(sys.argv[2], "wb") as out:
    out.write(data)
PY
  chmod +x $venv/bin/perf_analyzer.bin
fi
# A wrapper that finds libcudart.so.12 in the venv's nvidia package.
cat >$venv/bin/perf_analyzer <<'SH'
#!/usr/bin/env bash
here="$(cd "$(dirname "$0")" && pwd)"
cudart="$(ls -d "$here"/../lib/python3*/site-packages/nvidia/cuda_runtime/lib | head -1)"
LD_LIBRARY_PATH="$cudart${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec "$here/perf_analyzer.bin" "$@"
SH
chmod +x $venv/bin/perf_analyzer
