"""Generated inputs against the real path normaliser, route table and target resolver: only
the documented refusals, and the table matches its patterns as aiohttp's own router does."""

from __future__ import annotations

import string
from urllib.parse import quote

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.codecs import parse_count
from gateway.errors import ModelNotFound, ValidationError
from gateway.front.routes import ROUTER, TABLE, Match, normalise
from gateway.resolve import resolve_kserve_name, resolve_target

BOUNDED = settings(max_examples=200, deadline=1000)
SEGMENTS = st.sampled_from(
    ["", ".", "..", "models", "admin", "v2", "invocations", "endpoints", "infer", "versions",
     "ping", "1", "a", "%2F", "%2e", "%61dmin", "%6Dodels", "%", "%zz", "{x}", "é", "%C3%A9",
     "%FF", "\x00", "%00", "a b", "?", "#"]
)  # fmt: skip
TARGETS = st.one_of(
    st.lists(SEGMENTS, max_size=8).map(lambda parts: "/" + "/".join(parts)).map(str.encode),
    st.binary(max_size=64),
    st.builds(lambda host, path: b"http://" + host + path, st.binary(max_size=8),
              st.binary(max_size=24)),
)  # fmt: skip


@BOUNDED
@given(TARGETS)
def test_normalise_gives_a_clean_path_or_a_validation_error(target):
    try:
        path, _ = normalise(target)
    except ValidationError:
        return
    assert path.startswith("/") and "//" not in path and path.isprintable()
    assert path == "/" or not path.endswith("/")
    assert not {".", ".."} & set(path.split("/"))
    assert normalise(path.encode())[0] == path  # once normalised, stays so


async def _handler(request: web.Request) -> web.Response:
    raise AssertionError("never called")


@pytest.fixture(scope="module")
def aiohttp_router():
    app = web.Application()
    for route in TABLE:
        app.router.add_route(route.method, route.pattern, _handler)
    app.freeze()
    return app


@BOUNDED
@given(TARGETS, st.sampled_from(["GET", "POST", "DELETE"]))
async def test_route_table_matches_as_aiohttps_router_does(aiohttp_router, target, method):
    """The patterns keep aiohttp's syntax and meaning: on the same decoded path, aiohttp's
    dispatcher picks the same pattern (first match in table order)."""
    try:
        path, _ = normalise(target)
    except ValidationError:
        return
    ours, params = ROUTER.match(method, path)
    sent = quote(path, safe="/")  # a target aiohttp decodes back to exactly ``path``
    request = make_mocked_request(method, sent, app=aiohttp_router)
    info = await aiohttp_router.router.resolve(request)
    theirs = info.route.resource.canonical if info.route.resource is not None else None
    if ours is None:
        assert theirs is None or info.http_exception is not None
    else:
        assert theirs == ours.pattern and info.http_exception is None
        assert dict(params) == dict(info)


NAMES = st.one_of(
    st.text(max_size=1100),
    st.lists(st.sampled_from(["a", "..", ".", "", "m.tar.gz", "é", " ", "\\", "\x00"]),
             max_size=6).map("/".join),
)  # fmt: skip


@BOUNDED
@given(NAMES)
def test_resolve_target_accepts_or_refuses_with_validation_error(name):
    try:
        ref = resolve_target(name)
    except ValidationError:
        return
    assert ref.triton_name and "/" not in ref.triton_name and ".." not in name.split("/")


@BOUNDED
@given(NAMES)
def test_resolve_kserve_name_refuses_only_with_model_not_found(name):
    try:
        ref = resolve_kserve_name(name)
    except ModelNotFound:
        return
    assert ref.candidates and ref.triton_name


@BOUNDED
@given(st.text(max_size=30) | st.text(string.digits, max_size=25))
def test_parse_count_takes_ascii_digits_only(text):
    count = parse_count(text)
    stripped = text.strip()
    if count is None:
        assert not (stripped.isascii() and stripped.isdigit() and len(stripped) <= 18)
    else:
        assert count == int(stripped) and stripped.isascii()


@BOUNDED
@given(TARGETS, st.sampled_from([b"GET", b"POST", b"HEAD"]))
def test_remembered_routing_is_the_computed_one(target, method):
    """On a first and a repeated request alike: normalise, then the table's first match."""
    try:
        path, query = normalise(target)
    except ValidationError:
        with pytest.raises(ValidationError):
            ROUTER.resolve(method, target)
        return
    route, params = ROUTER.match(method.decode(), path)
    expected = Match(route, path, query, params)
    assert ROUTER.resolve(method, target) == ROUTER.resolve(method, target) == expected
