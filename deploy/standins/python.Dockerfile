# Stand-in for python:3.11-slim-bookworm (README.md here): like the official image, a CPython
# 3.11 built from source, in /usr/local, on Debian bookworm, with its headers and `python` on
# PATH. The build context's python/ is this machine's own source build (staged by
# deploy/stack.sh, site-packages emptied but for pip): Debian's python3.11 (3.11.2) predates
# the tarfile extraction filters the gateway needs (3.11.4).
ARG BASE=mme-standin/debian:bookworm
FROM ${BASE}
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
       ca-certificates libssl3 libffi8 libsqlite3-0 libbz2-1.0 liblzma5 libreadline8 \
       libncursesw6 zlib1g libuuid1 libgdbm6 tzdata netbase \
    && rm -rf /var/lib/apt/lists/*
COPY python/ /usr/local/
RUN ldconfig \
    && ln -sf python3 /usr/local/bin/python \
    && ln -sf pip3 /usr/local/bin/pip \
    && python --version
ENV LANG=C.UTF-8
LABEL io.mme-gateway.stand-in="python:3.11-slim-bookworm: this machine's CPython 3.11 source build in /usr/local on Debian bookworm"
CMD ["python3"]
