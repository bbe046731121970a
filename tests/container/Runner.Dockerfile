# The job container act runs workflows in here (act's -P ubuntu-latest=<this image>): the Debian
# base plus the docker CLI, which action/run-container.sh uses to start the sdopt image through
# the Docker-compatible socket act mounts (podman's here). GitHub's ubuntu runners have both.
ARG BASE_IMAGE=localhost/sdopt-base
FROM ${BASE_IMAGE}
COPY docker /usr/local/bin/docker
