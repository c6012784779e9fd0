"""Store and disk faults against a real gateway: moto S3 behind a fault-injecting proxy
(5xx bursts, bodies cut mid-way, slow objects), archive bombs, a full disk (a small tmpfs)."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.conftest import AWS_ENV, BUCKET, PREFIX, runtime_client
from tests.faultproxy import FaultProxy
from tests.servers import Gateway

GOOD = json.dumps(
    {"inputs": [{"name": "INPUT0", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}
).encode()
CONFIG = b'backend: "python"\nmax_batch_size: 0\n'


def client_for(gateway: Gateway) -> Any:
    """A runtime client that tries once (botocore's max_attempts counts retries)."""
    return runtime_client(
        gateway, read_timeout=120, retries={"mode": "standard", "total_max_attempts": 1}
    )


def invoke(gateway: Gateway, target: str) -> list[float]:
    client = client_for(gateway)
    response = client.invoke_endpoint(
        EndpointName="e", TargetModel=target, ContentType="application/json", Body=GOOD
    )
    return list(json.loads(response["Body"].read())["outputs"][0]["data"])


def incoming(gateway: Gateway, repository: Path | None = None) -> list[Path]:
    folder = (repository or gateway.cache_dir / "models") / ".incoming"
    return list(folder.iterdir())


def gz_tar(members: list[tuple[tarfile.TarInfo, bytes]], zeros: int = 0) -> bytes:
    """A .tar.gz of ``members``, then a file ``1/zeros`` of ``zeros`` zero bytes, compressed
    as it is generated (a 2 GiB bomb is about 2 MB and never held in memory unpacked)."""
    out = io.BytesIO()
    gz = zlib.compressobj(6, zlib.DEFLATED, 31)
    for info, data in members:
        out.write(gz.compress(info.tobuf(tarfile.PAX_FORMAT) + data + _pad(len(data))))
    if zeros:
        info = tarfile.TarInfo("1/zeros")
        info.size = zeros
        out.write(gz.compress(info.tobuf(tarfile.PAX_FORMAT)))
        block = bytes(1 << 20)
        for start in range(0, zeros, len(block)):
            out.write(gz.compress(block[: min(len(block), zeros - start)]))
        out.write(gz.compress(_pad(zeros)))
    out.write(gz.compress(bytes(1024)) + gz.flush())
    return out.getvalue()


def _pad(size: int) -> bytes:
    return bytes(-size % 512)


def model_members() -> list[tuple[tarfile.TarInfo, bytes]]:
    config = tarfile.TarInfo("config.pbtxt")
    config.size = len(CONFIG)
    folder = tarfile.TarInfo("1")
    folder.type = tarfile.DIRTYPE
    folder.mode = 0o755
    return [(config, CONFIG), (folder, b"")]


@pytest.fixture(scope="module")
def proxy(s3_endpoint: str) -> Iterator[FaultProxy]:
    host, port = s3_endpoint.removeprefix("http://").split(":")
    fault_proxy = FaultProxy(host, int(port))
    fault_proxy.start()
    yield fault_proxy
    fault_proxy.stop()


@pytest.fixture
def faults(proxy: FaultProxy) -> Iterator[FaultProxy]:
    proxy.clear()
    yield proxy
    proxy.clear()


@pytest.fixture(scope="module")
def archive(archives: dict[str, Path]) -> bytes:
    return archives["add_one"].read_bytes()


def _behind(proxy: FaultProxy, s3_store: str, cache: Path, *args: str) -> Gateway:
    """A gateway whose S3 traffic goes through the fault proxy."""
    gateway = Gateway(store=s3_store, cache_dir=cache / "cache", args=list(args))
    gateway.env = {**AWS_ENV, "AWS_ENDPOINT_URL_S3": proxy.url}
    return gateway.start()


@pytest.fixture(scope="module")
def faulty_gateway(
    tmp_path_factory: pytest.TempPathFactory, s3_store: str, proxy: FaultProxy
) -> Iterator[Gateway]:
    gateway = _behind(
        proxy,
        s3_store,
        tmp_path_factory.mktemp("faultgw"),
        *("--max-model-size", "64MiB", "--download-stall-timeout", "10"),
        *("--max-unpack-ratio", "0"),  # the size cap's own test, below: the ratio would act first
    )
    yield gateway
    gateway.stop()


def put(s3: Any, key: str, data: bytes) -> str:
    s3.put_object(Bucket=BUCKET, Key=PREFIX + key, Body=data)
    return key


def test_s3_5xx_burst_then_success_is_served(faulty_gateway, faults, s3, archive):
    target = put(s3, "faults/burst/add_one.tar.gz", archive)
    before = faults.requests
    faults.fail_next(2, 503)

    assert invoke(faulty_gateway, target) == [2.0, 3.0, 4.0]
    assert faults.requests - before == 3  # two 503s retried by botocore, then the object


def test_s3_5xx_beyond_retries_is_clean_error(faulty_gateway, faults, s3, archive):
    target = put(s3, "faults/down/add_one.tar.gz", archive)
    before = faults.requests
    faults.fail_next(10, 500)
    client = client_for(faulty_gateway)

    with pytest.raises(client.exceptions.ServiceUnavailable) as info:
        invoke(faulty_gateway, target)

    assert faults.requests - before == 4  # botocore's bounded attempts
    message = info.value.response["Error"]["Message"]
    assert "InternalError" in message and BUCKET not in message and "127.0.0.1" not in message
    assert incoming(faulty_gateway) == []
    faults.clear()
    assert invoke(faulty_gateway, target) == [2.0, 3.0, 4.0]


def test_s3_body_cut_once_is_retried_and_served(faulty_gateway, faults, s3, archive):
    target = put(s3, "faults/cut-once/add_one.tar.gz", archive)
    before = faults.requests
    faults.cut_next(1, after_bytes=len(archive) // 2)

    assert invoke(faulty_gateway, target) == [2.0, 3.0, 4.0]
    assert faults.requests - before == 2
    assert incoming(faulty_gateway) == []


def test_s3_body_cut_twice_is_clean_error(faulty_gateway, faults, s3, archive):
    target = put(s3, "faults/cut-twice/add_one.tar.gz", archive)
    faults.cut_next(2, after_bytes=len(archive) // 2)
    client = client_for(faulty_gateway)

    with pytest.raises(client.exceptions.ServiceUnavailable) as info:
        invoke(faulty_gateway, target)

    message = info.value.response["Error"]["Message"]
    assert "completely" in message and BUCKET not in message and "s3://" not in message
    assert incoming(faulty_gateway) == []
    faults.clear()
    assert invoke(faulty_gateway, target) == [2.0, 3.0, 4.0]


def test_s3_slow_object_does_not_hold_up_others(faulty_gateway, faults, s3, archive):
    slow = put(s3, "faults/slow/add_one.tar.gz", archive)
    cold = put(s3, "faults/cold/add_one.tar.gz", archive)
    invoke(faulty_gateway, "add_one.tar.gz")  # loaded before the slow download starts
    faults.slow("faults/slow/", bytes_per_s=max(len(archive) // 8, 1))  # about 8 s
    results: dict[str, object] = {}

    def load_slow() -> None:
        try:
            results["slow"] = invoke(faulty_gateway, slow)
        except Exception as exc:  # reported by the assertion below
            results["slow"] = exc

    thread = threading.Thread(target=load_slow)
    thread.start()
    try:
        for _ in range(5):
            assert invoke(faulty_gateway, "add_one.tar.gz") == [2.0, 3.0, 4.0]
        assert invoke(faulty_gateway, cold) == [2.0, 3.0, 4.0]
        assert thread.is_alive(), "the slow download ended before the others were served"
    finally:
        thread.join(120)
    assert results["slow"] == [2.0, 3.0, 4.0]


def test_s3_bomb_archive_is_validation_error(faulty_gateway, s3):
    target = put(s3, "faults/bomb.tar.gz", gz_tar(model_members(), zeros=2 << 30))
    client = client_for(faulty_gateway)

    with pytest.raises(client.exceptions.ValidationError) as info:
        invoke(faulty_gateway, target)

    message = info.value.response["Error"]["Message"]
    assert "more than 67108864 bytes" in message and BUCKET not in message
    assert incoming(faulty_gateway) == []
    assert invoke(faulty_gateway, "add_one.tar.gz") == [2.0, 3.0, 4.0]


def test_s3_bomb_archive_is_refused_under_default_flags_with_nothing_left(s3_gateway, s3):
    target = put(s3, "faults/default-bomb.tar.gz", gz_tar(model_members(), zeros=2 << 30))
    client = client_for(s3_gateway)

    with pytest.raises(client.exceptions.ValidationError) as info:
        invoke(s3_gateway, target)

    message = info.value.response["Error"]["Message"]
    assert "100 times its own size" in message and BUCKET not in message  # not at 2 GiB
    assert incoming(s3_gateway) == []
    models = s3_gateway.cache_dir / "models"
    assert not [p for p in models.iterdir() if "default-bomb" in p.name]
    assert invoke(s3_gateway, "add_one.tar.gz") == [2.0, 3.0, 4.0]


def test_load_error_keeps_first_line_without_paths(faulty_gateway):
    client = client_for(faulty_gateway)

    with pytest.raises(client.exceptions.ModelError) as info:
        invoke(faulty_gateway, "broken_init.tar.gz")

    error = info.value.response
    for text in (error["Error"]["Message"], error["OriginalMessage"]):
        assert "cannot initialise" in text
        assert str(faulty_gateway.cache_dir) not in text and "\n" not in text


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 8 MiB tmpfs: a real full disk (needs root; skipped where mount is not allowed)."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_enospc_during_extraction_is_insufficient_memory(tmp_path, small_disk, s3, s3_store):
    target = put(s3, "faults/too-big-for-disk.tar.gz", gz_tar(model_members(), zeros=32 << 20))
    repository = small_disk / "models"
    gateway = Gateway(
        store=s3_store,
        cache_dir=tmp_path / "cache",
        args=["--triton-model-repository", str(repository), "--cache-disk-budget", "1GiB"],
    )
    gateway.env = {**AWS_ENV}
    gateway.start()
    try:
        with pytest.raises(ClientError) as info:  # 507 is not in botocore's model
            invoke(gateway, target)
        error = info.value.response
        assert error["ResponseMetadata"]["HTTPStatusCode"] == 507
        assert error["Error"]["Code"] == "InsufficientMemory"
        assert "disk" in error["Error"]["Message"]
        assert incoming(gateway, repository) == []
        assert invoke(gateway, "add_one.tar.gz") == [2.0, 3.0, 4.0]
    finally:
        gateway.stop()


@pytest.fixture(scope="module")
def impatient_gateway(
    tmp_path_factory: pytest.TempPathFactory, s3_store: str, proxy: FaultProxy
) -> Iterator[Gateway]:
    """Behind the fault proxy, with a 3 s load timeout and a 0.5 s stall timeout."""
    gateway = _behind(
        proxy,
        s3_store,
        tmp_path_factory.mktemp("impatient"),
        *("--model-load-timeout", "3", "--download-stall-timeout", "0.5"),
    )
    yield gateway
    gateway.stop()


def test_load_timeout_leaves_nothing_in_incoming(impatient_gateway, faults, s3, archive):
    target = put(s3, "faults/timeout/add_one.tar.gz", archive)
    # About 30 s in all, a few bytes every tenth of a second: slow, never stalled.
    faults.slow("faults/timeout/", bytes_per_s=max(len(archive) // 30, 10))
    client = client_for(impatient_gateway)
    started = time.monotonic()

    with pytest.raises(client.exceptions.ServiceUnavailable, match="did not load"):
        invoke(impatient_gateway, target)

    assert time.monotonic() - started < 30  # the timeout ended it, not the download
    assert incoming(impatient_gateway) == []  # the extraction thread stopped first
    assert invoke(impatient_gateway, "add_one.tar.gz") == [2.0, 3.0, 4.0]


def test_s3_stalled_download_is_clean_error(impatient_gateway, faults, s3, archive):
    target = put(s3, "faults/stall/add_one.tar.gz", archive)
    before = faults.requests
    faults.slow("faults/stall/", bytes_per_s=1)  # a byte a second: stalled for 0.5 s
    client = client_for(impatient_gateway)

    with pytest.raises(client.exceptions.ServiceUnavailable, match="completely"):
        invoke(impatient_gateway, target)

    assert faults.requests - before == 2  # downloaded once more, then given up
    assert incoming(impatient_gateway) == []
    faults.clear()
    assert invoke(impatient_gateway, target) == [2.0, 3.0, 4.0]


def test_long_path_segment_with_local_store_is_validation_error(local_gateway):
    client = client_for(local_gateway)

    for target in ("x" * 300 + ".tar.gz", "x" * 300, "a/" + "y" * 300 + "/m.tar.gz"):
        with pytest.raises(client.exceptions.ValidationError, match="255"):
            invoke(local_gateway, target)
    assert invoke(local_gateway, "add_one.tar.gz") == [2.0, 3.0, 4.0]


def test_distinct_archive_forms_are_distinct_models(faulty_gateway, s3, archives):
    """m.tar.gz and m.tgz are two models: each answers with its own archive's model."""
    put(s3, "forms/m.tar.gz", archives["add_one"].read_bytes())
    put(s3, "forms/m.tgz", archives["linear_regression"].read_bytes())

    assert invoke(faulty_gateway, "forms/m.tar.gz") == [2.0, 3.0, 4.0]
    client = client_for(faulty_gateway)

    def csv(target: str) -> bytes:
        response = client.invoke_endpoint(
            EndpointName="e", TargetModel=target, ContentType="text/csv", Body=b"1.0,2.0,5.0"
        )
        return bytes(response["Body"].read())

    assert csv("forms/m.tgz") == csv("linear_regression.tar.gz") != csv("forms/m.tar.gz")
    with pytest.raises(client.exceptions.ValidationError):
        invoke(faulty_gateway, "forms/m.tar")  # not in the store, whatever else is loaded
