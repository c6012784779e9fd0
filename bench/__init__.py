"""The benchmarks, each a module run from the repository root (``python -m bench.<name>``;
the Makefile's bench targets do), sharing ``harness``: wrk and its Lua, CPU from /proc,
nginx, processes and ports (with ``tests/servers.py``), the gateway's metrics, reports."""
