"""The package build. With GATEWAY_COMPILE=1 the request path is compiled with mypyc: the same
type-checked modules as C extensions, about a quarter less CPU per request at one core
(BENCHMARKS.md). `make compiled` builds it into build/compiled, which `make run` and the image
use; without GATEWAY_COMPILE (and for `make test`'s main pass) the package is pure Python."""

import os
import runpy

from setuptools import setup

ext_modules = []
if os.environ.get("GATEWAY_COMPILE") == "1":
    from mypyc.build import mypycify

    # The module list, read from its file alone (importing the package needs its dependencies).
    hot_path = runpy.run_path(os.path.join(os.path.dirname(__file__), "gateway", "build.py"))
    ext_modules = mypycify(list(hot_path["HOT_PATH"]), opt_level="3")

setup(ext_modules=ext_modules)
