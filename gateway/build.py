"""Which build of the request path this process runs.

``make compiled`` (and the image) build the hot-path modules with mypyc (setup.py lists
them); the same source runs as pure Python everywhere else. Operators and tests read which
one is serving from the startup log and ``mme_gateway_build_info``.
"""

from __future__ import annotations


def hot_path() -> str:
    """``"compiled"`` when the front server is a mypyc extension module, else ``"python"``."""
    from gateway.front import server  # here, not at the top: server imports what imports this

    return "python" if server.__file__.endswith(".py") else "compiled"
