# The gateway on NVIDIA's Triton image. docker-compose.yml runs this one image twice: as
# `tritonserver` (the `triton` service) and as `mme-gateway serve` (the default command).
#
# Triton 2.51 (NGC release 24.10: CUDA 12.6.2, Ubuntu 22.04). Pinned, not `latest`, because
# it is the server the test suite runs: the embedded tritonserver of nvidia-pytriton 0.7.0
# (the `[embedded]` extra) is this release, and its tritonclient (~=2.50) speaks its
# protocol. Change it together with that pin, and rerun `make test`.
ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:24.10-py3
FROM ${TRITON_IMAGE}

# The gateway needs Python 3.11 (asyncio.timeout; mypy checks it as 3.11); the image's
# python3 is Ubuntu 22.04's 3.10. So the gateway gets Ubuntu's python3.11 in a venv of its
# own, and the system python3 stays as it is for Triton's Python backend (its stub and the
# numpy the example models import).
ARG GATEWAY_PYTHON=python3.11
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${GATEWAY_PYTHON} ${GATEWAY_PYTHON}-venv \
    && rm -rf /var/lib/apt/lists/* \
    && ${GATEWAY_PYTHON} -m venv /opt/mme/venv \
    && /opt/mme/venv/bin/pip install --no-cache-dir --upgrade pip

# No `[embedded]` extra: this image has tritonserver and its native backends already.
# Then GATEWAY_COMPILE=1 reinstalls it with the request path compiled by mypyc (setup.py lists
# the modules): mypyc type-checks against the dependencies installed by the first step, and
# needs a C compiler, the interpreter's headers and mypy; `mme_gateway_build_info{hot_path}`
# says which build runs.
WORKDIR /opt/mme/src
COPY pyproject.toml setup.py README.md ./
COPY gateway/ ./gateway/
RUN /opt/mme/venv/bin/pip install --no-cache-dir . \
    && apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends gcc ${GATEWAY_PYTHON}-dev \
    && rm -rf /var/lib/apt/lists/* \
    && /opt/mme/venv/bin/pip install --no-cache-dir "setuptools>=68" wheel "mypy>=1.10" \
    && GATEWAY_COMPILE=1 /opt/mme/venv/bin/pip install --no-cache-dir --no-deps --no-build-isolation --force-reinstall . \
    && /opt/mme/venv/bin/pip uninstall -y mypy \
    && rm -rf build .mypy_cache \
    && ln -s /opt/mme/venv/bin/mme-gateway /usr/local/bin/mme-gateway

# The example models, packaged into the model store by docker-compose's `models-build` job.
WORKDIR /opt/mme
COPY triton_repo_template/ ./triton_repo_template/

ENV PYTHONUNBUFFERED=1
# The public port only: the management API listens on 127.0.0.1:8081 inside the container
# (unauthenticated; reach it with `docker exec`, or publish it only to a trusted network).
EXPOSE 8080
CMD ["mme-gateway", "serve", "--host", "0.0.0.0"]
