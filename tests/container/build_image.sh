#!/usr/bin/env bash
# Build the project's Dockerfile here: Debian base (setup.sh made it), CPU torch from the local
# wheel folder, this machine's extra CA certificates (HTTPS goes through an intercepting proxy).
# Usage: build_image.sh [TAG] ; prints nothing but podman's log; idempotent (layers are cached).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
TAG="${1:-localhost/sdopt:test}"
WHEELS="${SDOPT_TORCH_WHEELS:-/opt/wheels}"
FLAVOR="${SDOPT_IMAGE_FLAVOR:-minimal}"
# Dependencies of the gate and the report that the minimal flavour still needs.
EXTRA="${SDOPT_IMAGE_EXTRA_PIP:-pydantic scipy scikit-image jinja2 plotly}"
certs=""
for f in /usr/local/share/ca-certificates/*.crt; do
  [ -f "$f" ] && certs+="$(cat "$f")"$'\n'
done
cd "$ROOT"
exec podman build --format docker --build-arg BASE_IMAGE="${SDOPT_BASE_IMAGE:-localhost/sdopt-base}" \
  --build-arg FLAVOR="$FLAVOR" \
  --build-arg TORCH_VERSION=2.13.0+cpu --build-arg TORCH_PIP_ARGS="--find-links /opt/wheels" \
  --build-arg EXTRA_CA_CERTS="$certs" \
  --build-arg EXTRA_PIP_PACKAGES="$EXTRA" \
  -v "$WHEELS:/opt/wheels:ro" -t "$TAG" -f Dockerfile .
