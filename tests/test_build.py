"""The build of the request path under test is the one this test run asked for.

`make test` runs the suite on the source tree (pure Python), then the request path's tests
with ``EXPECT_REQUEST_PATH=compiled`` on the mypyc build: each pass must really run its build,
not, say, a stale extension module in the source tree or the source shadowing the build.
"""

from __future__ import annotations

import os

from gateway.build import hot_path

EXPECTED = os.environ.get("EXPECT_REQUEST_PATH", "python")


def test_the_request_path_is_the_build_asked_for():
    assert hot_path() == EXPECTED
