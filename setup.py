"""The package build. With GATEWAY_COMPILE=1 the request path is compiled with mypyc: the same
type-checked modules as C extensions, about a quarter less CPU per request at one core
(BENCHMARKS.md). `make compiled` builds it into build/compiled, which `make run` and the image
use; without GATEWAY_COMPILE (and for `make test`'s main pass) the package is pure Python."""

import os

from setuptools import setup

# The modules every hot request runs through (the front server to Triton and back, access
# control, metrics and the access log). Others gain nothing measurable; a module kept out
# must stay so if mypyc cannot compile it: registry.py and errors.py subclass builtins, and
# auth/sigv4.py hands botocore a dict subclass that breaks once compiled.
HOT_PATH = [
    "gateway/front/server.py",
    "gateway/front/sagemaker.py",
    "gateway/front/kserve_v2.py",
    "gateway/front/replies.py",
    "gateway/front/routes.py",
    "gateway/inference.py",
    "gateway/triton/upstream.py",
    "gateway/triton/answer.py",
    "gateway/codecs.py",
    "gateway/resolve.py",
    "gateway/variants.py",
    "gateway/metrics.py",
    "gateway/log.py",
    "gateway/loading/eviction.py",
    "gateway/auth/gate.py",
    "gateway/auth/principals.py",
]

ext_modules = []
if os.environ.get("GATEWAY_COMPILE") == "1":
    from mypyc.build import mypycify

    ext_modules = mypycify(HOT_PATH, opt_level="3")

setup(ext_modules=ext_modules)
