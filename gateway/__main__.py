"""``mme-gateway serve`` (the endpoint) and ``mme-gateway package`` (build a model archive)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from gateway.settings import Settings, add_arguments, settings_from


def _examples(settings: Settings) -> str:
    base = f"http://{settings.host}:{settings.port}"
    return f"""
Try it:
  curl -s -X POST {base}/endpoints/local/invocations \\
    -H 'X-Amzn-SageMaker-Target-Model: add_one.tar.gz' -H 'Content-Type: application/json' \\
    -d '{{"inputs":[{{"name":"INPUT0","shape":[1,3],"datatype":"FP32","data":[1,2,3]}}]}}'

  AWS_ACCESS_KEY_ID=x AWS_SECRET_ACCESS_KEY=x AWS_DEFAULT_REGION=us-east-1 \\
  aws sagemaker-runtime invoke-endpoint --endpoint-url {base} --endpoint-name local \\
    --body "1.0,2.0,5.0"$'\\n'"2.0,3.0,4.0" --content-type "text/csv" \\
    --target-model "linear_regression.tar.gz" output_file.txt && cat output_file.txt
"""


def _check_auth(parser: argparse.ArgumentParser, settings: Settings) -> None:
    """A bad --auth-file stops the start with its reason, not a traceback."""
    if settings.auth_file is None:
        if settings.metrics_auth:
            parser.error("--metrics-auth needs --auth-file")
        return
    from gateway.auth.principals import AuthFileError, load_principals

    try:
        load_principals(settings.auth_file)
    except AuthFileError as exc:
        parser.error(f"--auth-file: {exc}")


def serve(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="mme-gateway serve",
        description="Serve a SageMaker-compatible multi-model endpoint over Triton.",
    )
    add_arguments(parser)
    settings = settings_from(parser.parse_args(argv))
    from gateway.variants import Variants

    try:
        Variants(settings)
    except ValueError as exc:
        parser.error(str(exc))
    if settings.data_planes > 1 and settings.port == 0:
        parser.error("--workers above 1 needs a fixed --port: every data plane binds the same one")
    if settings.admin and settings.admin_port == settings.port:
        parser.error("--admin-port must differ from --port: the management API never shares it")
    _check_auth(parser, settings)

    import uvloop

    from gateway.app import serve as run
    from gateway.log import setup_logging

    setup_logging(settings.log_level, settings.log_format)

    def announce(message: str) -> None:
        ready = settings.print_examples and "Running on" in message  # once, after the last line
        print(message + (_examples(settings) if ready else ""), flush=True)

    uvloop.run(run(settings, announce, argv))


def data_plane(argv: Sequence[str]) -> None:
    """One of the --workers processes, started by the control process (not by hand)."""
    parser = argparse.ArgumentParser(prog="mme-gateway data-plane")
    parser.add_argument("--plane", type=int, required=True, help="this data plane's number")
    parser.add_argument("--control-fd", type=int, required=True, help="the link's descriptor")
    add_arguments(parser)
    args = parser.parse_args(argv)
    settings = settings_from(args)

    import uvloop

    from gateway.log import setup_logging
    from gateway.workers.plane import run

    setup_logging(settings.log_level, settings.log_format)
    uvloop.run(run(settings, args.plane, args.control_fd))


def package(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="mme-gateway package", description="Build a model archive for the model store."
    )
    parser.add_argument("model_dir", type=Path, help="folder with config.pbtxt and version folders")
    parser.add_argument("out", type=Path, help="archive to write, e.g. model.tar.gz")
    args = parser.parse_args(argv)

    from gateway.errors import ValidationError
    from gateway.store.archive import package_model

    try:
        package_model(args.model_dir, args.out)
    except ValidationError as exc:
        raise SystemExit(f"mme-gateway package: {exc.message}") from exc
    print(f"wrote {args.out}")


def simulate(argv: Sequence[str]) -> None:
    from gateway.simulate import main as simulate_main

    simulate_main(argv)


COMMANDS = {"serve": serve, "package": package, "simulate": simulate}
INTERNAL = {"data-plane": data_plane}
"""Started by the gateway itself, not listed."""


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help"}:
        print(f"usage: mme-gateway {{{','.join(COMMANDS)}}} [options]  (then COMMAND --help)")
        return
    command = COMMANDS.get(args[0]) or INTERNAL.get(args[0])
    if command is None:
        raise SystemExit(
            f"mme-gateway: unknown command {args[0]!r}; use one of {', '.join(COMMANDS)}"
        )
    command(args[1:])


if __name__ == "__main__":
    main()
