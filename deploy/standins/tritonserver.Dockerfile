# Stand-in for nvcr.io/nvidia/tritonserver:24.10-py3 (README.md here): the same Triton release
# (2.51), taken from the nvidia-pytriton wheel the tests run, laid out as in NVIDIA's image
# (/opt/tritonserver/{bin,lib,backends}, tritonserver on PATH). CPU only, Python backend only.
# The build context holds tritonserver/ and lib/, staged by deploy/stack.sh.
ARG BASE=mme-standin/debian:bookworm
FROM ${BASE}
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
       python3 python3-numpy libpython3.11 curl ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY tritonserver/ /opt/tritonserver/
COPY lib/ /opt/tritonserver/lib/
ENV PATH=/opt/tritonserver/bin:${PATH} \
    LD_LIBRARY_PATH=/opt/tritonserver/lib
WORKDIR /opt/tritonserver
LABEL io.mme-gateway.stand-in="nvcr.io/nvidia/tritonserver:24.10-py3: Triton 2.51 from the nvidia-pytriton wheel; CPU only, Python backend only; models get Debian's Python 3.11 and numpy 1.24"
