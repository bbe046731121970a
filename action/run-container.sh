#!/usr/bin/env bash
# action.yml's only step: run the sdopt image on the runner (composite action).
#
# Why not `runs: using: docker`: such an action cannot ask for GPUs (action.yml has no options
# key and the runner passes none), so this script runs the container itself, with --gpus when
# the `gpus` input asks for them (auto: when nvidia-smi sees a GPU on the runner).
#
# The runner's files (GITHUB_OUTPUT, GITHUB_STEP_SUMMARY, the event payload) live outside the
# workspace, and on some runners (job containers, act) on paths the Docker daemon cannot see.
# So the container gets its own copies inside the mounted workspace, and they are copied back
# to the runner's files afterwards. The workspace is mounted at its own path, so every path the
# action writes to its outputs is valid on the runner too.
# Inputs arrive as INPUT_* variables and are passed by name (`-e NAME`), never as values on a
# command line, so the token does not appear in process listings. Only an allow-list of the
# runner's variables goes in: never ACTIONS_* (the OIDC and cache tokens), GITHUB_TOKEN, HF_*
# tokens, nor the runner's own files (GITHUB_ENV, GITHUB_PATH...); the container's entrypoint
# passes even less on to the `sdopt` process that runs the pull request's config.
#
# The container runs as the owner of the workspace (`--user UID:GID`; the runner user, uid 1001
# on GitHub-hosted runners), with a writable HOME: what it writes belongs to that user, so the
# following steps (actions/upload-artifact, the fork commenter) can read it, and git sees a
# repository owned by the process user.
set -euo pipefail

: "${GITHUB_WORKSPACE:?GITHUB_WORKSPACE is not set: run this through action.yml}"
ACTION_PATH="${SDOPT_ACTION_PATH:-$(cd "$(dirname "$0")/.." && pwd)}"
DOCKER="${SDOPT_DOCKER:-docker}"

if [ -n "${INPUT_TOKEN:-}" ]; then echo "::add-mask::${INPUT_TOKEN}"; fi

bad_input() { echo "::error title=sdopt: bad input::$1"; exit 2; }

# The user the container runs as: the workspace's owner (not root, not whoever runs docker).
owner="$(stat -c '%u:%g' "$GITHUB_WORKSPACE")"

# The cache input: one directory of the runner, mounted at its own path, as SDOPT_CACHE (the
# decision cache and exports) and HF_HOME (downloaded models) under it.
cache_args=()
if [ -n "${INPUT_CACHE:-}" ] && [ "${SDOPT_PHASE:-}" != publish ]; then
  cache="${INPUT_CACHE}"
  case "$cache" in
    *:*|*,*|*$'\n'*|*$'\r'*) bad_input "input 'cache': expected a directory path on the runner without ':', ',' or line breaks" ;;
  esac
  [[ "$cache" == /* ]] || cache="${GITHUB_WORKSPACE}/${cache}"
  if [ -e "$cache" ] && [ ! -d "$cache" ]; then
    bad_input "input 'cache': it is a file, expected a directory (created when missing)"
  fi
  mkdir -p "$cache" || bad_input "input 'cache': cannot create that directory on the runner"
  cache="$(cd "$cache" && pwd -P)"
  case "$cache" in
    /|"$(cd "$GITHUB_WORKSPACE" && pwd -P)"|"${HOME:-/nonexistent}")
      bad_input "input 'cache': expected a directory of its own, not the workspace, HOME or /" ;;
  esac
  if [ "$(id -u)" = 0 ]; then chown "$owner" "$cache"; fi
  echo "sdopt cache: ${cache} (SDOPT_CACHE, and HF_HOME=${cache}/huggingface)"
  cache_args=(-v "${cache}:${cache}" -e "SDOPT_CACHE=${cache}" -e "HF_HOME=${cache}/huggingface")
fi


# GPUs first: the default image's flavour depends on them.
gpu_args=()
case "${INPUT_GPUS:-auto}" in
  none) ;;
  all) gpu_args=(--gpus all) ;;
  auto)
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
      gpu_args=(--gpus all)
    else
      echo "no GPU visible on this runner: the sdopt container runs on CPU backends"
    fi ;;
  *) gpu_args=(--gpus "\"device=${INPUT_GPUS}\"") ;;
esac
# Modes comment and merge only render and post: they never need the GPU image.
case "${INPUT_MODE:-gate}" in comment|merge) gpu_args=() ;; esac

image="${INPUT_IMAGE:-}"
if [ "${SDOPT_PHASE:-}" = publish ] && [ -n "${SDOPT_IMAGE_READY:-}" ] \
    && "$DOCKER" image inspect "$SDOPT_IMAGE_READY" >/dev/null 2>&1; then
  # The publish step runs the image the run step just built or pulled.
  image="$SDOPT_IMAGE_READY"
elif [ -z "$image" ] && [[ "${SDOPT_ACTION_REF:-}" =~ ^v[0-9]+(\.[0-9]+){0,2}$ ]] \
    && [ -n "${SDOPT_ACTION_REPOSITORY:-}" ]; then
  # Used at a release tag: the images .github/workflows/release.yml pushed for that tag.
  image="ghcr.io/${SDOPT_ACTION_REPOSITORY,,}:${SDOPT_ACTION_REF}"
  if [ "${#gpu_args[@]}" = 0 ]; then image="${image}-cpu"; fi
  echo "sdopt image of this action's release: ${image}"
  "$DOCKER" pull "$image"
elif [ -z "$image" ] || [ "$image" = build ]; then
  image="sdopt-action:local"
  echo "::group::Build the sdopt image from ${ACTION_PATH}/Dockerfile"
  build_args=()
  while IFS= read -r arg; do
    [ -n "$arg" ] && build_args+=(--build-arg "$arg")
  done <<< "${INPUT_BUILD_ARGS:-}"
  # Without a GPU (no GPU on the runner, gpus: none, or modes comment and merge, which never run
  # a model) the CPU flavour, as the release's -cpu image: CPU torch on Debian with OpenVINO,
  # NNCF and ONNX Runtime, so the runner's best backend (openvino/int8-inner) can run, without
  # gigabytes of CUDA libraries. Unless build_args sets FLAVOR; a build arg it sets wins.
  # These values are .github/workflows/release.yml's cpu leg (a test checks that they agree).
  if [ "${#gpu_args[@]}" = 0 ] && [[ $'\n'"${INPUT_BUILD_ARGS:-}" != *$'\n'FLAVOR=* ]]; then
    cpu_build_args=(
      "FLAVOR=cpu"
      "BASE_IMAGE=debian:bookworm-slim"
      "TORCH_VERSION=2.13.0+cpu"
      "TORCH_PIP_ARGS=--index-url https://download.pytorch.org/whl/cpu --extra-index-url https://pypi.org/simple"
    )
    for arg in "${cpu_build_args[@]}"; do
      if [[ $'\n'"${INPUT_BUILD_ARGS:-}" != *$'\n'"${arg%%=*}="* ]]; then
        build_args+=(--build-arg "$arg")
      fi
    done
    image="sdopt-action:local-cpu"
  fi
  "$DOCKER" build "${build_args[@]}" -t "$image" "$ACTION_PATH"
  echo "::endgroup::"
elif [[ "$image" == *@sha256:* ]]; then
  # Pinned by digest: a local image with that digest is that image, whoever tagged it.
  "$DOCKER" image inspect "$image" >/dev/null 2>&1 || "$DOCKER" pull "$image"
elif [[ "$image" == localhost/* ]]; then
  # A locally built image (tests, a self-built runner image): there is no registry to ask.
  if ! "$DOCKER" image inspect "$image" >/dev/null 2>&1; then
    echo "::error title=sdopt::image '${image}' is not on this runner (localhost/ images are never pulled)"
    exit 2
  fi
else
  # A tag is always pulled: on a shared self-hosted runner a locally tagged image could have
  # been built by another job (a fork's pull request) under the same name.
  "$DOCKER" pull "$image"
fi

io="$(mktemp -d "${GITHUB_WORKSPACE}/.sdopt-action.XXXXXX")"
name="sdopt-action-$(basename "$io" | tr -dc 'a-zA-Z0-9')-$$"
# No `docker run --rm`: through podman's Docker-compatible API (4.x) it loses the container's
# exit status. The status is read from the stopped container, which is then removed.
trap '"$DOCKER" rm -f "$name" >/dev/null 2>&1 || true; rm -rf "$io"' EXIT
touch "$io/output" "$io/summary.md"
if [ -n "${GITHUB_EVENT_PATH:-}" ] && [ -f "$GITHUB_EVENT_PATH" ]; then
  cp "$GITHUB_EVENT_PATH" "$io/event.json"
else
  echo '{}' > "$io/event.json"
fi
# The container user must write the output and summary files (when this script runs as root,
# e.g. in a job container, the files would otherwise be root's).
if [ "$(id -u)" = 0 ]; then chown -R "$owner" "$io"; fi

env_args=()
while read -r var; do
  case "$var" in
    INPUT_*) env_args+=(-e "$var") ;;   # action.yml's inputs (the token: for the comment only)
    *TOKEN*|*SECRET*|*PASSWORD*|*KEY*|*CREDENTIAL*) ;;
    CI|RUNNER_OS|RUNNER_ARCH|SDOPT_*) env_args+=(-e "$var") ;;
    GITHUB_ACTIONS|GITHUB_SHA|GITHUB_REF|GITHUB_REF_NAME|GITHUB_HEAD_REF|GITHUB_BASE_REF) env_args+=(-e "$var") ;;
    GITHUB_REPOSITORY|GITHUB_WORKSPACE|GITHUB_EVENT_NAME|GITHUB_RUN_ID|GITHUB_RUN_ATTEMPT) env_args+=(-e "$var") ;;
    GITHUB_SERVER_URL|GITHUB_API_URL|GITHUB_GRAPHQL_URL) env_args+=(-e "$var") ;;
    HF_HOME|HF_HUB_CACHE|HF_HUB_OFFLINE|HF_ENDPOINT|HF_HUB_DISABLE_TELEMETRY) env_args+=(-e "$var") ;;
  esac
done < <(compgen -e)

set +e
"$DOCKER" run --name "$name" --user "$owner" "${gpu_args[@]}" "${env_args[@]}" \
  -e HOME=/tmp -e USER=sdopt \
  -e GITHUB_OUTPUT="$io/output" -e GITHUB_STEP_SUMMARY="$io/summary.md" \
  -e GITHUB_EVENT_PATH="$io/event.json" -e GITHUB_ACTIONS=true \
  -v "${GITHUB_WORKSPACE}:${GITHUB_WORKSPACE}" -w "${GITHUB_WORKSPACE}" \
  "${cache_args[@]}" "$image"
rc=$?
set -e
if status="$("$DOCKER" inspect --format '{{.State.ExitCode}}' "$name" 2>/dev/null)"; then
  rc="$status"
fi

if [ -n "${GITHUB_OUTPUT:-}" ]; then cat "$io/output" >> "$GITHUB_OUTPUT"; else cat "$io/output"; fi
if [ -n "${GITHUB_STEP_SUMMARY:-}" ]; then cat "$io/summary.md" >> "$GITHUB_STEP_SUMMARY"; fi
if [ -n "${GITHUB_OUTPUT:-}" ]; then echo "image=${image}" >> "$GITHUB_OUTPUT"; fi
exit "$rc"
