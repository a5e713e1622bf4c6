#!/usr/bin/env bash
# Load-test /model_predict with ApacheBench and a real multipart upload (seed 000's recipe).
#
#   scripts/ab_multipart.sh IMAGE [URL] [REQUESTS] [CONCURRENCY] [extra ab flags...]
#   scripts/ab_multipart.sh cat.jpg http://127.0.0.1:8999/model_predict 200 8 -k
#
# ab can't build multipart bodies itself: this writes one with a fixed boundary and passes it
# with -p/-T. The body file is kept next to ab's output in a temp dir and removed on exit.
set -euo pipefail
image=${1:?usage: $0 IMAGE [URL] [REQUESTS] [CONCURRENCY] [ab flags...]}
url=${2:-http://127.0.0.1:8999/model_predict}
requests=${3:-100}
concurrency=${4:-8}
shift $(( $# < 4 ? $# : 4 ))

boundary="----abBoundary7MA4YWxkTrZu0gW"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
{
  printf -- '--%s\r\n' "$boundary"
  printf 'Content-Disposition: form-data; name="image"; filename="%s"\r\n' "$(basename "$image")"
  printf 'Content-Type: application/octet-stream\r\n\r\n'
  cat "$image"
  printf '\r\n--%s--\r\n' "$boundary"
} > "$tmp/body"

# -r: don't abort on socket errors, so failures are counted and reported rather than hidden.
# -l: JSON bodies vary in length (scores, request ids); without it ab counts that as failure.
exec ab -r -l -n "$requests" -c "$concurrency" -p "$tmp/body" \
  -T "multipart/form-data; boundary=$boundary" "$@" "$url"
