# The job container act runs workflows in here (act's -P ubuntu-latest=<this image>): the Debian
# base plus the docker CLI, which action/run-container.sh uses to start the sdopt image through
# the Docker-compatible socket act mounts (podman's here), and git, which the hosted-runner test
# runs as the workspace's owner after the action. GitHub's ubuntu runners have all three.
ARG BASE_IMAGE=localhost/sdopt-base
FROM ${BASE_IMAGE}
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/*
COPY docker /usr/local/bin/docker
