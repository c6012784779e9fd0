# Stand-ins for minio/minio and minio/mc (README.md here): the moto S3 server behind a
# `minio server` command, and an `mc` with the commands docker-compose.yml uses. The build
# context holds wheels/ (moto[server] and boto3) and the two scripts, staged by deploy/stack.sh.
ARG BASE=mme-standin/debian:bookworm
FROM ${BASE} AS tools
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
COPY wheels/ /tmp/wheels/
RUN python3 -m venv /opt/s3 \
    && /opt/s3/bin/pip install --no-cache-dir --no-index --find-links /tmp/wheels "moto[server]" boto3 \
    && rm -rf /tmp/wheels
COPY mc.py /usr/local/bin/mc
COPY minio.sh /usr/local/bin/minio
RUN chmod +x /usr/local/bin/mc /usr/local/bin/minio

FROM tools AS minio
EXPOSE 9000
ENTRYPOINT ["minio"]
CMD ["server", "/data"]
LABEL io.mme-gateway.stand-in="minio/minio: the moto S3 server; objects kept in memory, not under /data; no console"

FROM tools AS mc
ENTRYPOINT ["mc"]
LABEL io.mme-gateway.stand-in="minio/mc: alias set, mb, cp, ls and ready over boto3"
