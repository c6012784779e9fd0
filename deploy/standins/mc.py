#!/opt/s3/bin/python
"""The MinIO client commands docker-compose.yml uses, over boto3 (a stand-in for minio/mc).

    mc alias set ALIAS URL ACCESS_KEY SECRET_KEY
    mc mb [--ignore-existing|-p] ALIAS/BUCKET
    mc cp FILE... ALIAS/BUCKET/[PREFIX/]
    mc ls ALIAS/BUCKET[/PREFIX]
    mc ready ALIAS

Aliases are kept in ~/.mc/config.json, as mc keeps them. ``local`` is the server on this host
with the root credentials from MINIO_ROOT_USER / MINIO_ROOT_PASSWORD, as in MinIO's image.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

CONFIG = Path.home() / ".mc" / "config.json"


def aliases() -> dict[str, dict[str, str]]:
    found = {
        "local": {
            "url": "http://localhost:9000",
            "accessKey": os.environ.get("MINIO_ROOT_USER", "minioadmin"),
            "secretKey": os.environ.get("MINIO_ROOT_PASSWORD", "minioadmin"),
        }
    }
    if CONFIG.is_file():
        found.update(json.loads(CONFIG.read_text()).get("aliases", {}))
    return found


def client(alias: str):  # type: ignore[no-untyped-def]
    entry = aliases().get(alias)
    if entry is None:
        raise SystemExit(f"mc: unknown alias {alias!r}")
    return boto3.client(
        "s3",
        endpoint_url=entry["url"],
        aws_access_key_id=entry["accessKey"],
        aws_secret_access_key=entry["secretKey"],
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 2}, connect_timeout=3, read_timeout=30),
    )


def split(target: str) -> tuple[str, str, str]:
    alias, _, rest = target.partition("/")
    bucket, _, prefix = rest.partition("/")
    return alias, bucket, prefix


def alias_set(name: str, url: str, access_key: str, secret_key: str) -> None:
    saved = json.loads(CONFIG.read_text()) if CONFIG.is_file() else {"version": "10"}
    saved.setdefault("aliases", {})[name] = {
        "url": url,
        "accessKey": access_key,
        "secretKey": secret_key,
    }
    CONFIG.parent.mkdir(parents=True, exist_ok=True)
    CONFIG.write_text(json.dumps(saved, indent=2))
    print(f"Added `{name}` successfully.")


def make_bucket(args: list[str]) -> None:
    ignore = any(a in ("--ignore-existing", "-p") for a in args)
    alias, bucket, _ = split(next(a for a in args if not a.startswith("-")))
    s3 = client(alias)
    try:
        s3.create_bucket(Bucket=bucket)
    except ClientError as exc:
        code = exc.response["Error"]["Code"]
        if not (ignore and code in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists")):
            raise
    print(f"Bucket created successfully `{alias}/{bucket}`.")


def copy(args: list[str]) -> None:
    *sources, target = args
    alias, bucket, prefix = split(target)
    s3 = client(alias)
    for source in sources:
        key = prefix + Path(source).name if not prefix or prefix.endswith("/") else prefix
        s3.upload_file(source, bucket, key)
        print(f"`{source}` -> `{alias}/{bucket}/{key}`")


def list_objects(target: str) -> None:
    alias, bucket, prefix = split(target)
    pages = client(alias).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    for page in pages:
        for item in page.get("Contents", []):
            print(f"{item['Size']:>12}  {item['Key']}")


def ready(alias: str) -> None:
    client(alias).list_buckets()
    print(f"The cluster '{alias}' is ready")


def main(argv: list[str]) -> int:
    try:
        match argv:
            case ["alias", "set", name, url, access_key, secret_key]:
                alias_set(name, url, access_key, secret_key)
            case ["mb", *args] if args:
                make_bucket(args)
            case ["cp", *args] if len(args) >= 2:
                copy(args)
            case ["ls", target]:
                list_objects(target)
            case ["ready", alias]:
                ready(alias)
            case _:
                print(f"mc stand-in: unsupported command: {' '.join(argv)}", file=sys.stderr)
                return 2
    except (BotoCoreError, ClientError, OSError) as exc:
        print(f"mc: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
