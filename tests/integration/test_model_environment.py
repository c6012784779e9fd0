"""Models run in Triton's minimal environment: the gateway's AWS credentials and MME_*
settings are not theirs to read. ``tests/models/env_probe`` reports what it sees."""

from __future__ import annotations

import json

from gateway.store.archive import package_model
from tests.conftest import AWS_ENV, BUCKET, PREFIX, runtime_client
from tests.servers import ROOT, Gateway

BODY = {"inputs": [{"name": "INPUT0", "shape": [1], "datatype": "FP32", "data": [0]}]}


def test_models_do_not_see_the_gateways_aws_credentials(tmp_path, s3, s3_store, s3_endpoint):
    archive = tmp_path / "env_probe.tar.gz"
    package_model(ROOT / "tests" / "models" / "env_probe", archive)
    s3.upload_file(str(archive), BUCKET, f"{PREFIX}env_probe.tar.gz")
    gateway = Gateway(store=s3_store, cache_dir=tmp_path / "cache")
    # The store is read with these credentials: the gateway has them, its models must not.
    gateway.env = {**AWS_ENV, "AWS_ENDPOINT_URL_S3": s3_endpoint, "MME_LOG_LEVEL": "INFO"}
    gateway.start()
    try:
        out = runtime_client(gateway).invoke_endpoint(
            EndpointName="e",
            TargetModel="env_probe.tar.gz",
            ContentType="application/json",
            Body=json.dumps(BODY),
        )
        key_id, secret, aws_vars, mme_vars = json.loads(out["Body"].read())["outputs"][0]["data"]
        assert (key_id, secret) == (0, 0)  # AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY
        assert aws_vars == 0
        assert mme_vars == 0
    finally:
        gateway.stop()
