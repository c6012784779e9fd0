# The gateway alone, on a slim Python base. Triton runs from NVIDIA's own image in its own
# container (docker-compose.yml), so any Triton release can be chosen there (TRITON_IMAGE).
#
# Two stages: `build` compiles the request path with mypyc (gateway/build.py lists the modules; it
# needs gcc and the interpreter's headers) into a venv; the final stage copies that venv onto
# a fresh base, with curl for health checks and `docker compose exec gateway curl ...`.
#
# Dependencies come from PyPI, or only from deploy/wheelhouse/ when it holds wheels (make
# compose-up fills it on machines whose builds cannot reach PyPI).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY deploy/wheelhouse/ /wheels/
COPY pyproject.toml setup.py README.md ./
COPY gateway/ ./gateway/
RUN set -e; \
    if ls /wheels/*.whl >/dev/null 2>&1; then export PIP_NO_INDEX=1 PIP_FIND_LINKS=/wheels; fi; \
    python -m venv /opt/mme/venv; \
    pip=/opt/mme/venv/bin/pip; \
    $pip install --no-cache-dir --upgrade pip "setuptools>=68" wheel "mypy>=1.10"; \
    $pip install --no-cache-dir .; \
    GATEWAY_COMPILE=1 $pip install --no-cache-dir --no-deps --no-build-isolation --force-reinstall .; \
    $pip uninstall -y mypy; \
    /opt/mme/venv/bin/python -P -c "from gateway.build import hot_path; assert hot_path() == 'compiled', hot_path()"

FROM ${PYTHON_IMAGE}
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends curl \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/mme/venv /opt/mme/venv
# The example models, packaged into the model store by docker-compose's `models-build` job.
WORKDIR /opt/mme
COPY triton_repo_template/ ./triton_repo_template/
ENV PATH=/opt/mme/venv/bin:${PATH} \
    PYTHONUNBUFFERED=1
# The public port only: the management API listens on 127.0.0.1:8081 inside the container
# (unauthenticated; reach it with `docker compose exec gateway curl ...`).
EXPOSE 8080
CMD ["mme-gateway", "serve", "--host", "0.0.0.0"]
