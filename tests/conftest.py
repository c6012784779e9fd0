"""Session fixtures: a real moto S3 server, example archives in it, and real gateways.

Each gateway is ``mme-gateway serve`` in a subprocess with its own embedded tritonserver.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from gateway.store.archive import package_model
from tests.servers import EXAMPLES, Gateway, free_port

BUCKET = "models"
PREFIX = "mme/"
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in [*AWS_ENV, "AWS_ENDPOINT_URL_S3"]}
    os.environ.update({**AWS_ENV, "AWS_ENDPOINT_URL_S3": url})
    yield url
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    server.stop()


@pytest.fixture(scope="session")
def s3(s3_endpoint: str):
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.create_bucket(Bucket=BUCKET)
    return client


@pytest.fixture(scope="session")
def archives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every example model packaged with ``package_model``, by name."""
    out = tmp_path_factory.mktemp("archives")
    built = {}
    for model in sorted(p for p in EXAMPLES.iterdir() if p.is_dir()):
        built[model.name] = out / f"{model.name}.tar.gz"
        package_model(model, built[model.name])
    return built


@pytest.fixture(scope="session")
def s3_store(s3, archives: dict[str, Path]) -> str:
    for name, path in archives.items():
        s3.upload_file(str(path), BUCKET, f"{PREFIX}{name}.tar.gz")
        s3.upload_file(str(path), BUCKET, f"{PREFIX}team-a/fraud/{name}.tar.gz")
    return f"s3://{BUCKET}/{PREFIX}"


@pytest.fixture(scope="session")
def local_store(tmp_path_factory: pytest.TempPathFactory, archives: dict[str, Path]) -> Path:
    root = tmp_path_factory.mktemp("local-store")
    for name, path in archives.items():
        shutil.copy(path, root / f"{name}.tar.gz")
    shutil.copytree(EXAMPLES / "add_one", root / "folders" / "add_one")
    return root


@pytest.fixture(scope="session")
def s3_gateway(
    tmp_path_factory: pytest.TempPathFactory, s3_store: str, s3_endpoint: str
) -> Iterator[Gateway]:
    """The main gateway: S3 store, defaults otherwise."""
    gateway = Gateway(store=s3_store, cache_dir=tmp_path_factory.mktemp("s3gw") / "cache")
    gateway.env = {**AWS_ENV, "AWS_ENDPOINT_URL_S3": s3_endpoint}
    yield gateway.start()
    gateway.stop()


@pytest.fixture(scope="session")
def local_gateway(tmp_path_factory: pytest.TempPathFactory, local_store: Path) -> Iterator[Gateway]:
    gateway = Gateway(
        store=str(local_store), cache_dir=tmp_path_factory.mktemp("localgw") / "cache"
    )
    yield gateway.start()
    gateway.stop()


def runtime_client(gateway: Gateway, **config):
    """An unmodified boto3 sagemaker-runtime client pointed at a gateway."""
    from botocore.config import Config

    options = {"retries": {"max_attempts": 1, "mode": "standard"}, **config}
    return boto3.client(
        "sagemaker-runtime",
        endpoint_url=gateway.url,
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
        config=Config(**options),
    )
