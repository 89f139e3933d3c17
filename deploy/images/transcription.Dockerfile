# syntax=docker/dockerfile:1
# The transcription service: faster-whisper (CTranslate2; its wheels carry CUDA, the cuDNN runtime image the libraries).
# Build from the repository root:
#   docker build -f deploy/images/transcription.Dockerfile -t schulki/transcription:0.1.0 .
# The CUDA variant for GPU nodes (llama.cpp built with CUDA where the service uses it):
#   docker build -f deploy/images/transcription.Dockerfile --build-arg VARIANT=cuda \
#     --build-arg BUILD_IMAGE=nvidia/cuda:12.6.3-devel-ubuntu24.04 \
#     --build-arg RUNTIME_IMAGE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04 -t schulki/transcription:0.1.0-cuda .
ARG BUILD_IMAGE=python:3.11.14-slim-bookworm
ARG RUNTIME_IMAGE=python:3.11.14-slim-bookworm

FROM ${BUILD_IMAGE} AS build
ARG VARIANT=cpu
# The CPUs and GPUs the image runs on (deploy/images/install.sh): never the build machine's own.
ARG CPU_LEVEL=x86-64-v3
ARG CUDA_ARCHITECTURES=75-real;80-real;86-real;89-real;90
SHELL ["/bin/sh", "-eu", "-c"]
# A compiler for the packages built from source (llama-cpp-python); Python itself where the base has none (CUDA images).
# The unquoted $(...) is a list of packages: word splitting is wanted there.
# hadolint ignore=SC2046
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends build-essential cmake git $(command -v python3 >/dev/null || echo python3 python3-venv python3-dev) \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY proto ./proto
COPY services ./services
COPY deploy/images/install.sh ./deploy/images/install.sh
ENV PIP_NO_CACHE_DIR=1 CMAKE_BUILD_PARALLEL_LEVEL=4
RUN SCHULKI_VARIANT="${VARIANT}" SCHULKI_CPU_LEVEL="${CPU_LEVEL}" SCHULKI_CUDA_ARCHITECTURES="${CUDA_ARCHITECTURES}" sh deploy/images/install.sh transcription /opt/schulki

FROM ${RUNTIME_IMAGE}
SHELL ["/bin/sh", "-eu", "-c"]
# Only what the service needs at run time; a system user without a login.
# hadolint ignore=SC2046
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libgomp1 $(command -v python3 >/dev/null || echo python3) \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 schulki \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/schulki --create-home --shell /usr/sbin/nologin schulki
COPY --from=build /opt/schulki /opt/schulki
# Settings, secrets and models come from the host at run time (compose.yaml), never from the image.
ENV PATH=/opt/schulki/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    SCHULKI_DATA_DIR=/var/lib/schulki \
    SCHULKI_RUNTIME__HOST=0.0.0.0
USER 10001:10001
WORKDIR /var/lib/schulki
EXPOSE 50053
# SERVING only once the model is loaded: the start period allows for a large model.
HEALTHCHECK --interval=15s --timeout=5s --start-period=300s --retries=3 CMD ["python", "-m", "schulki.runtime.healthcheck", "transcription"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["schulki", "serve", "transcription"]
