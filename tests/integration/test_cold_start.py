"""Single-flight loads, unsafe archives and clean shutdown, with real Triton and S3."""

from __future__ import annotations

import io
import json
import os
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from gateway.store.archive import package_model
from tests.conftest import BUCKET, PREFIX, runtime_client
from tests.servers import Gateway, example_copy

BODY = json.dumps(
    {"inputs": [{"name": "INPUT0", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}
).encode()


def _counting_archive(tmp_path: Path, log: Path) -> Path:
    """load_counter with LOAD_LOG set: its initialize() appends a line per real Triton load."""
    model = example_copy("load_counter", tmp_path / "load_counter", LOAD_LOG=str(log))
    archive = tmp_path / "load_counter.tar.gz"
    package_model(model, archive)
    return archive


def test_concurrent_cold_requests_load_once(s3, s3_gateway, tmp_path):
    log = tmp_path / "loads.log"
    key = f"counting/{tmp_path.name}/load_counter.tar.gz"
    s3.upload_file(str(_counting_archive(tmp_path, log)), BUCKET, PREFIX + key)
    client = runtime_client(s3_gateway, max_pool_connections=50)

    def invoke(_: int) -> list[float]:
        response = client.invoke_endpoint(
            EndpointName="e", TargetModel=key, ContentType="application/json", Body=BODY
        )
        return list(json.loads(response["Body"].read())["outputs"][0]["data"])

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(invoke, range(50)))
    assert results == [[2.0, 3.0]] * 50
    assert len(log.read_text().splitlines()) == 1


def _evil_archive(kind: str, escape: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        config = b'name: "x"\nbackend: "python"\n'
        info = tarfile.TarInfo("config.pbtxt")
        info.size = len(config)
        tar.addfile(info, io.BytesIO(config))
        if kind == "dotdot":
            info = tarfile.TarInfo(f"../../../../../../../../{escape}")
            info.size = 4
            tar.addfile(info, io.BytesIO(b"evil"))
        elif kind == "absolute":
            info = tarfile.TarInfo(str(escape))
            info.size = 4
            tar.addfile(info, io.BytesIO(b"evil"))
        elif kind == "symlink":
            info = tarfile.TarInfo("1")
            info.type = tarfile.SYMTYPE
            info.linkname = str(escape.parent)
            tar.addfile(info)
            info = tarfile.TarInfo(f"1/{escape.name}")
            info.size = 4
            tar.addfile(info, io.BytesIO(b"evil"))
    return buffer.getvalue()


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink"])
def test_unsafe_archive_is_rejected_and_nothing_escapes(s3, s3_gateway, tmp_path, kind):
    escape = tmp_path / "escaped.txt"
    key = f"evil/{kind}-{tmp_path.name}.tar.gz"
    s3.put_object(Bucket=BUCKET, Key=PREFIX + key, Body=_evil_archive(kind, escape))
    client = runtime_client(s3_gateway)
    before = sorted(os.listdir(s3_gateway.cache_dir.parent))
    with pytest.raises(client.exceptions.ValidationError):
        client.invoke_endpoint(
            EndpointName="e", TargetModel=key, ContentType="application/json", Body=BODY
        )
    assert not escape.exists()
    assert sorted(os.listdir(s3_gateway.cache_dir.parent)) == before
    incoming = s3_gateway.cache_dir / "models" / ".incoming"
    assert list(incoming.iterdir()) == []


def test_gateway_shuts_triton_down_cleanly(tmp_path, local_store):
    gateway = Gateway(store=str(local_store), cache_dir=tmp_path / "cache").start()
    triton = gateway.triton_pid()
    assert triton is not None
    started = time.monotonic()
    assert gateway.stop() == 0
    assert time.monotonic() - started < 30
    assert not Path(f"/proc/{triton}").exists()
    assert "tritonserver stopped with code 0" in gateway.log()
