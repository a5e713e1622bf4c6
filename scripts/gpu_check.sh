#!/usr/bin/env bash
# The prepared GPU check (docs/deployment.md, "GPU check"): one command on a GPU machine.
#
#   scripts/gpu_check.sh                       # on the GPU machine: at most 8 minutes
#   GPU_CHECK_DRY_RUN=1 scripts/gpu_check.sh   # anywhere: a fake device, ResNet-18, tiny runs
#
# Steps (scripts/gpu_check.py), each under a hard timeout inside one overall budget:
#   prepare nvidia-smi -L, CPU model and flags, python/torch, whether nginx and ab are here;
#           a random-weight checkpoint (ResNet-50) and the web JPEG
#   pin     gunicorn GPUS=0 WORKERS_PER_GPU=2: pinning, GPU memory per worker, kill -9, replacement
#   bench   per PRECISION (fp16, bf16): nginx (or gunicorn direct) under ab (or Python clients)
#   report  report.md + results.json + the verdict
# Output in $OUT (the device tool's folder) or bench/out/gpu/: report.md, results.json, check.log
# and each server's gunicorn log. Exit 0 only when every check passed.
#
# Python: GPU_CHECK_PYTHON, else .venv/bin/python when it has what serving needs, else python3
# (the GPU machine's, with torch) plus the wheels in .whl/ (scripts/gpu_wheels.sh) when present.
set -uo pipefail
cd "$(dirname "$0")/.."

dry=${GPU_CHECK_DRY_RUN:-0}
export GPU_CHECK_DRY_RUN=$dry
export GPU_CHECK_OUTDIR=${OUT:-bench/out/gpu}
mkdir -p "$GPU_CHECK_OUTDIR"
GPU_CHECK_WORK=$(mktemp -d /tmp/gpu-check.XXXXXX)
chmod 755 "$GPU_CHECK_WORK"  # nginx's workers (nobody, under root) read and write below it
export GPU_CHECK_WORK
# Seconds for everything, and each step's cap inside it (the dry run's are smaller).
if [ "$dry" = 1 ]; then budget=${GPU_CHECK_BUDGET_S:-360}; caps=(40 90 120); else
  budget=${GPU_CHECK_BUDGET_S:-470}; caps=(60 150 120); fi
start=$SECONDS

reap() {  # process groups a killed step left behind (each step stops its own normally)
  [ -f "$GPU_CHECK_WORK/pgids" ] || return 0
  while read -r pg; do kill -KILL -- "-$pg" 2>/dev/null; done <"$GPU_CHECK_WORK/pgids"
  : >"$GPU_CHECK_WORK/pgids"
}
trap 'reap; rm -rf "$GPU_CHECK_WORK"' EXIT

# Found, not imported: importing torch costs seconds, and every step imports what it uses.
need='torch torchvision flask gunicorn pydantic redis psutil requests prometheus_client'
serves() { "$1" -c "import importlib.util as u, sys; sys.exit(any(u.find_spec(m) is None for m in '$need'.split()))"; }
if [ -n "${GPU_CHECK_PYTHON:-}" ]; then
  py=$GPU_CHECK_PYTHON
elif serves .venv/bin/python 2>/dev/null; then
  py=.venv/bin/python
else
  py=python3
  if compgen -G '.whl/*.whl' >/dev/null; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$GPU_CHECK_WORK/site" .whl/*.whl
    export PYTHONPATH=$GPU_CHECK_WORK/site${PYTHONPATH:+:$PYTHONPATH}
  fi
fi
[[ $py == */* ]] && py=$(cd "$(dirname "$py")" && pwd)/$(basename "$py")  # steps and the fake run it from elsewhere
if [ "$dry" = 1 ]; then  # the fake device: nvidia-smi answered from the check's own workers
  mkdir -p "$GPU_CHECK_WORK/bin"
  printf '#!/bin/sh\nexec %q %q "$@"\n' "$py" "$PWD/scripts/fake_nvidia_smi.py" >"$GPU_CHECK_WORK/bin/nvidia-smi"
  chmod +x "$GPU_CHECK_WORK/bin/nvidia-smi"
  export PATH=$GPU_CHECK_WORK/bin:$PATH
fi

fail() {  # a FAIL line, also kept for the report
  echo "FAIL $*"
  echo "$*" >>"$GPU_CHECK_WORK/step-failures"
}

# step NAME CAP [ARG]: run one step under the smaller of its cap and the budget left.
step() {
  local name=$1 cap=$2 left rc
  shift 2
  left=$((budget - (SECONDS - start) - 10))  # 10 s kept for the report
  [ "$name" = report ] && left=$((left + 10))
  ((cap > left)) && cap=$left
  if ((cap < 5)); then
    fail "step $name $*: skipped, the ${budget} s budget is spent"
    return
  fi
  echo "== $name $* (at most ${cap} s; $((SECONDS - start)) s so far)"
  PYTHONUNBUFFERED=1 timeout -k 3 "$cap" "$py" -m scripts.gpu_check "$name" "$@"
  rc=$?
  reap
  if ((rc == 124 || rc == 137)); then
    fail "step $name $*: killed at its ${cap} s cap"
  elif ((rc != 0)) && [ "$name" != report ]; then
    fail "step $name $*: exit status $rc"
  fi
  [ "$name" = report ] && echo "$rc" >"$GPU_CHECK_WORK/verdict"
}

{
  echo "python: $py ($("$py" -c 'import sys; print(sys.version.split()[0])' 2>&1)); output in $GPU_CHECK_OUTDIR"
  if ! serves "$py"; then
    fail "$py lacks some of: $need (scripts/gpu_wheels.sh fetches them into .whl/, for carry)"
  fi
  step prepare "${caps[0]}"
  step pin "${caps[1]}"
  precisions=$("$py" -c 'from scripts.gpu_check import Settings; print(*Settings.from_env().precisions)') ||
    precisions="fp16 bf16"
  for precision in $precisions; do
    step bench "${caps[2]}" "$precision"
  done
  step report 20
} 2>&1 | tee "$GPU_CHECK_OUTDIR/check.log"

verdict=$(cat "$GPU_CHECK_WORK/verdict" 2>/dev/null || echo 1)
echo "gpu_check: exit $verdict after $((SECONDS - start)) s"
exit "$verdict"
