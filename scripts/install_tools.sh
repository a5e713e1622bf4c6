#!/usr/bin/env bash
# Tools the tests run as separate programs, each in a virtualenv of its own (their pinned
# dependencies clash with the server's and with each other's):
#   .venv-k8s      kubernetes-validate and the kserve SDK (requirements-k8s.txt)
#   .venv-checkov  checkov (requirements-checkov.txt)
#   .venv-clients  the Open Inference Protocol clients:
#   tritonclient (HTTP and gRPC), from requirements-clients.txt;
#   perf_analyzer, Triton's load generator. The `perf-analyzer` package needs glibc 2.38,
#   newer than Debian bookworm's 2.36; the last build that runs here ships inside
#   tritonclient 2.50.0's manylinux1 wheel (tritonclient-2.50.0.data/data/bin/perf_analyzer).
#   It needs libb64 (apt libb64-0d) and libcudart.so.12 (nvidia-cuda-runtime-cu12).
set -euo pipefail
cd "$(dirname "$0")/.."
for pair in .venv-k8s:requirements-k8s.txt .venv-checkov:requirements-checkov.txt; do
  test -x "${pair%%:*}/bin/python" || python3 -m venv "${pair%%:*}"
  "${pair%%:*}/bin/python" -m pip install --quiet -r "${pair#*:}"
done
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
