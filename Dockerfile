# The sdopt image: what the GitHub Action runs, and what reproduces a CI result anywhere.
#
# GPU flavour (the default; what action.yml builds on GitHub): CUDA 13 runtime, torch 2.13.0
# (PyPI's Linux wheel is built for CUDA 13.0), onnxruntime-gpu 1.31.1 (CUDA 13 build) and
# TensorRT 11.4 for CUDA 13, so all three load the same CUDA major version. onnxruntime-gpu's
# TensorRT provider links TensorRT 10 (libnvinfer.so.10, read from the wheel by
# tests/backends/test_onnxruntime_libraries.py) and pip cannot install TensorRT 10 and 11 side by
# side: in this image the native tensorrt backend is the TensorRT path, and
# onnxruntime/tensorrt-fp16 is listed as unavailable with that reason (the CUDA provider works).
# TENSORRT_VERSION is also the API that tests/backends/test_tensorrt_api.py checks sdopt against.
# Without a GPU the same image still runs sdopt's best CPU backend: the GPU flavour also installs
# OpenVINO and NNCF (openvino/int8-inner, the CPU winner; about 70 MB of wheels, 220 MB installed,
# measured with pip download: openvino 184 MB, scikit-learn 31 MB for NNCF, the rest small),
# and onnxruntime-gpu carries ONNX Runtime's CPU provider. On a runner without a GPU,
# action/run-container.sh builds (or pulls, at a release tag) the CPU flavour instead, with CPU
# torch on Debian: the same backends at a fraction of the size.
#   docker build -t sdopt .
# CPU flavour on a Debian base, offline except for PyPI (what the container tests build):
#   podman build --build-arg BASE_IMAGE=localhost/sdopt-base --build-arg FLAVOR=cpu \
#     --build-arg TORCH_VERSION=2.13.0+cpu --build-arg TORCH_PIP_ARGS="--find-links /opt/wheels" \
#     -v /opt/wheels:/opt/wheels:ro -t sdopt-cpu .
# Behind a TLS-intercepting proxy, pass its CA as PEM text:
#   --build-arg EXTRA_CA_CERTS="$(cat proxy-ca.crt)"
ARG BASE_IMAGE=nvidia/cuda:13.0.2-runtime-ubuntu24.04
FROM ${BASE_IMAGE}

# gpu | cpu | minimal: which compiler backends to install on top of torch (minimal: none).
ARG FLAVOR=gpu
ARG TORCH_VERSION=2.13.0
# Where torch comes from: PyPI's default (CUDA) wheel, or e.g. a CPU wheel from a local folder.
ARG TORCH_PIP_ARGS=""
ARG ONNXRUNTIME_GPU_VERSION=1.31.1
ARG TENSORRT_VERSION=11.4.0.106
ARG TENSORRT_INDEX_URL=https://pypi.nvidia.com
# Packages the action's entrypoint needs besides sdopt itself.
ARG ACTION_PACKAGES="PyGithub==2.10.0"
# Anything else to install (space separated), e.g. optional report or gate dependencies.
ARG EXTRA_PIP_PACKAGES=""
# PEM certificates to trust, for builds and runs behind an intercepting proxy.
ARG EXTRA_CA_CERTS=""

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    TRANSFORMERS_VERBOSITY=error \
    MALLOC_MMAP_THRESHOLD_=33554432 \
    MALLOC_TRIM_THRESHOLD_=17179869184 \
    MALLOC_TOP_PAD_=1073741824

# The base image varies (Ubuntu with CUDA, plain Debian), so apt versions cannot be pinned here;
# the Python stack below is pinned instead.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates python3 python3-venv git \
    && rm -rf /var/lib/apt/lists/* \
    && if [ -n "${EXTRA_CA_CERTS}" ]; then \
         printf '%s\n' "${EXTRA_CA_CERTS}" > /usr/local/share/ca-certificates/sdopt-extra.crt; \
       fi \
    && update-ca-certificates \
    && python3 -m venv /opt/venv \
    && pip install --upgrade "pip>=24"

# torch alone and first, exactly pinned: any looser spec can pull another CUDA build.
# TORCH_PIP_ARGS is deliberately split into words (pip options).
# hadolint ignore=SC2086,DL3013
RUN pip install ${TORCH_PIP_ARGS} "torch==${TORCH_VERSION}"

WORKDIR /opt/sdopt
COPY pyproject.toml constraints.txt README.md ./
COPY sdopt ./sdopt
COPY templates ./templates

# Versions come from constraints.txt (the project's lock) and the pinned ARGs above.
# hadolint ignore=SC2086,DL3013
RUN if [ "${FLAVOR}" = gpu ]; then \
      extras="[gpu]"; \
      gpu_pkgs="onnxruntime-gpu==${ONNXRUNTIME_GPU_VERSION} tensorrt-cu13==${TENSORRT_VERSION} openvino nncf"; \
      index="--extra-index-url ${TENSORRT_INDEX_URL}"; \
    elif [ "${FLAVOR}" = cpu ]; then \
      extras="[cpu]"; gpu_pkgs=""; index=""; \
    else \
      extras=""; gpu_pkgs=""; index=""; \
    fi \
    && pip install ${index} -c constraints.txt "torch==${TORCH_VERSION}" ".${extras}" \
         ${gpu_pkgs} ${ACTION_PACKAGES} ${EXTRA_PIP_PACKAGES} \
    && python -c "import torch; print('torch', torch.__version__)"

# The entrypoint last: it changes more often than the dependencies above. sdopt itself runs as
# installed (a wheel, with its templates and schemas as package data), as users install it; only
# the action package comes from this folder.
# PYTHONSAFEPATH: the working directory (the user's workspace, or /opt/sdopt here) never goes on
# sys.path, so a folder named sdopt there cannot shadow the installed package.
WORKDIR /opt/action
COPY action ./action
ENV PYTHONPATH=/opt/action \
    PYTHONSAFEPATH=1
RUN python -c "import action.main, sdopt.templates"

# No USER: action/run-container.sh runs the image as the workspace's owner (`--user UID:GID`,
# uid 1001 on GitHub-hosted runners) with HOME under /tmp, so that the files it writes stay
# readable to the later steps and git sees a repository of its own user; `docker run` without
# --user (a laptop reproducing a CI result) still works as root.
ENTRYPOINT ["python", "-m", "action"]
