"""Hostile clients against the real gateway (subprocess, embedded Triton) over raw sockets.

One gateway for the module, with short limits given as flags so that timeouts show in
seconds: header 1 s, body 1 s, keep-alive 2 s, bodies up to 1 MiB.
"""

from __future__ import annotations

import http.client
import json
import select
import socket
import string
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.store.archive import package_model
from tests.servers import EXAMPLES, Gateway

BODY = json.dumps(
    {"inputs": [{"name": "INPUT0", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}
).encode()
CLOSE_WITHIN_S = 6.0
"""Longest wait for a close the limits promise (the limit, the sweep tick, a loaded host)."""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("hostile")
    store = tmp / "store"
    store.mkdir()
    package_model(EXAMPLES / "add_one", store / "add_one.tar.gz")
    package_model(EXAMPLES / "linear_regression", store / "linear_regression.tar.gz")
    limits = ["--header-timeout", "1", "--body-timeout", "1", "--keepalive-timeout", "2"]
    args = [*limits, "--max-body-size", "1MiB", "--model-url-root", str(tmp / "root")]
    started = Gateway(store=str(store), cache_dir=tmp / "cache", args=args).start()
    yield started
    started.stop()


def _connect(port: int, timeout: float = 10) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def _response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    stream = sock.makefile("rb")
    status = int(stream.readline().split()[1])
    headers = {}
    while (line := stream.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, stream.read(int(headers.get("content-length", 0)))


def _exchange(port: int, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    with _connect(port) as sock:
        sock.sendall(raw)
        return _response(sock)


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the server closes the connection (EOF or reset) within ``seconds``."""
    sock.settimeout(seconds)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


def _ping(port: int, timeout: float = 3) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", "/ping")
        return connection.getresponse().status
    finally:
        connection.close()


def _stream_until_answered(port: int, head: bytes, chunk: bytes, cap: int) -> bytes:
    """Send ``head`` then ``chunk`` again and again until the server answers or closes;
    return the first bytes of its answer (b"" when it closed without one). Fails if ``cap``
    bytes went out first."""
    with _connect(port) as sock:
        sock.sendall(head)
        sent = 0
        while sent < cap:
            if select.select([sock], [], [], 0)[0]:
                break
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        assert sent < cap, "the server kept reading"
        sock.settimeout(5)
        try:
            return sock.recv(64)
        except ConnectionResetError:
            return b""


def test_hostile_long_request_line_is_414_while_ping_answers(gateway):
    answers: list[bytes] = []
    stop = threading.Event()

    def attack() -> None:
        while not stop.is_set():
            answers.append(_stream_until_answered(gateway.port, b"GET /", b"a" * 1024, 64 * 2**20))

    attackers = [threading.Thread(target=attack) for _ in range(3)]
    for thread in attackers:
        thread.start()
    try:
        pings = [_ping(gateway.port) for _ in range(20)]  # each within 3 s, or it raises
    finally:
        stop.set()
        for thread in attackers:
            thread.join()
    assert pings == [200] * 20
    assert answers and all(answer.startswith(b"HTTP/1.1 414") for answer in answers)


def test_hostile_header_flood_is_431(gateway):
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(150))
    assert _exchange(gateway.port, b"GET /ping HTTP/1.1\r\n" + many + b"\r\n")[0] == 431
    same = b"X-H: v\r\n" * 150  # fields, not distinct names, are counted
    assert _exchange(gateway.port, b"GET /ping HTTP/1.1\r\n" + same + b"\r\n")[0] == 431
    huge = b"X-Big: " + b"v" * 40_000 + b"\r\n"
    assert _exchange(gateway.port, b"GET /ping HTTP/1.1\r\n" + huge + b"\r\n")[0] == 431
    # one header line that never ends, streamed: httptools buffers it, the front caps it
    answer = _stream_until_answered(
        gateway.port, b"GET /ping HTTP/1.1\r\nX-Big: ", b"v" * 1024, 16 * 2**20
    )
    assert answer.startswith(b"HTTP/1.1 431")


def test_hostile_slow_head_is_closed_after_header_timeout(gateway):
    with _connect(gateway.port) as silent, _connect(gateway.port) as partial:
        partial.sendall(b"GET /ping HTTP/1.1\r\nHost: a\r\n")
        assert _closed_within(partial, CLOSE_WITHIN_S)
        assert _closed_within(silent, CLOSE_WITHIN_S)


def test_hostile_slow_body_is_closed_after_body_timeout(gateway):
    with _connect(gateway.port) as sock:
        sock.sendall(b"POST /invocations HTTP/1.1\r\nContent-Length: 100\r\n\r\n0123456789")
        assert _closed_within(sock, CLOSE_WITHIN_S)


def test_hostile_body_timeout_is_between_reads_not_for_the_whole_body(gateway):
    head = b"POST /invocations HTTP/1.1\r\nContent-Length: 8\r\n\r\n"
    with _connect(gateway.port) as sock:
        sock.sendall(head)
        for byte in b"{}      ":  # 8 bytes over 2.4 s: longer than the 1 s body timeout
            time.sleep(0.3)  # pacing the client, not waiting for the server
            sock.sendall(bytes([byte]))
        status, headers, _ = _response(sock)
    assert (status, headers["x-amzn-errortype"]) == (400, "ValidationError")


def test_hostile_idle_keepalive_is_closed(gateway):
    with _connect(gateway.port) as sock:
        sock.sendall(b"GET /ping HTTP/1.1\r\nHost: a\r\n\r\n")
        assert _response(sock)[0] == 200
        assert _closed_within(sock, CLOSE_WITHIN_S)


def test_hostile_oversized_content_length_is_413_without_continue(gateway):
    head = (
        b"POST /invocations HTTP/1.1\r\nHost: a\r\nContent-Length: 10000000\r\n"
        b"Expect: 100-continue\r\n\r\n"
    )
    with _connect(gateway.port) as sock:
        sock.sendall(head)
        status, headers, body = _response(sock)
        assert (status, headers["connection"]) == (413, "close")
        assert headers["x-amzn-errortype"] == "ValidationError"
        assert "too large" in json.loads(body)["message"]
        assert _closed_within(sock, CLOSE_WITHIN_S)


def test_hostile_oversized_kserve_body_is_413_in_kserves_shape(gateway):
    head = b"POST /v2/models/add_one/infer HTTP/1.1\r\nHost: a\r\nContent-Length: 10000000\r\n\r\n"
    status, headers, body = _exchange(gateway.port, head)
    assert status == 413 and "x-amzn-errortype" not in headers
    assert "too large" in json.loads(body)["error"]


def _invocations(gateway: Gateway, code: int) -> float:
    text = urllib.request.urlopen(gateway.url + "/metrics", timeout=10).read().decode()
    sample = f'mme_invocations_total{{code="{code}"}} '
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(sample))


def test_hostile_refused_invocations_are_counted_like_the_access_log_records_them(gateway):
    before = _invocations(gateway, 413), _invocations(gateway, 431)
    head = b"POST /invocations HTTP/1.1\r\nHost: a\r\nContent-Length: 10000000\r\n\r\n"
    assert _exchange(gateway.port, head)[0] == 413
    flood = b"".join(b"X-%d: v\r\n" % i for i in range(500))
    assert _exchange(gateway.port, b"POST /invocations HTTP/1.1\r\n" + flood + b"\r\n")[0] == 431
    assert _exchange(gateway.port, b"GET /ping HTTP/1.1\r\n" + flood + b"\r\n")[0] == 431
    assert (_invocations(gateway, 413), _invocations(gateway, 431)) == (
        before[0] + 1,
        before[1] + 1,
    )


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_hostile_pipelined_flood_without_reading_is_bounded(gateway):
    """The client sends requests and never reads: the gateway stops reading from it (and
    drops it once it has not read for the body timeout), stays within bounded memory, and
    keeps answering others."""
    assert gateway.proc is not None
    before = _rss_bytes(gateway.proc.pid)
    cap = 64 * 2**20
    request = b"GET /nowhere HTTP/1.1\r\nHost: a\r\n\r\n"
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", gateway.port))
        sock.setblocking(False)
        chunk, sent, stopped = request * 1000, 0, False
        while sent < cap and not stopped:
            try:
                sent += sock.send(chunk)
            except BlockingIOError:
                stopped = not select.select([], [sock], [], 0.5)[1]  # no longer read
            except (ConnectionResetError, BrokenPipeError):
                stopped = True  # dropped: it did not read its answers
        assert stopped and sent < cap
        assert _ping(gateway.port) == 200
        assert _rss_bytes(gateway.proc.pid) - before < 64 * 2**20


def test_hostile_trailer_cannot_change_the_target_model(gateway):
    chunks = b"%x\r\n%s\r\n0\r\n" % (len(BODY), BODY)
    raw = (
        b"POST /endpoints/e/invocations HTTP/1.1\r\nHost: a\r\n"
        b"X-Amzn-SageMaker-Target-Model: add_one.tar.gz\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + chunks + b"X-Amzn-SageMaker-Target-Model: "
        b"missing.tar.gz\r\nContent-Type: text/csv\r\n\r\n"
    )
    status, _, body = _exchange(gateway.port, raw)
    assert status == 200 and json.loads(body)["outputs"][0]["data"] == [2.0, 3.0]


def test_hostile_endless_trailer_is_cut_off(gateway):
    """A chunked body, then one trailer line that never ends: capped like a head (431), or
    cut by the body timeout first when the host is slow; never read without bound."""
    head = (
        b"POST /invocations HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2\r\n{}\r\n0\r\nX-Trailer: "
    )
    answer = _stream_until_answered(gateway.port, head, b"v" * 4096, 64 * 2**20)
    assert answer.startswith(b"HTTP/1.1 431") or answer == b""


ADMIN_SPELLINGS = [
    b"/admin/models",
    b"/%61dmin/models",
    b"/%61dmin/%6Dodels",
    b"//admin//models",
    b"/admin/models/",
    b"http://x/admin/models",
    b"HTTP://x:1/%61dmin/models?max_results=5",
]


@pytest.mark.parametrize("target", ADMIN_SPELLINGS)
def test_hostile_admin_paths_are_404_on_public_port_and_served_on_admin(gateway, target):
    raw = b"GET " + target + b" HTTP/1.1\r\nHost: a\r\n\r\n"
    status, headers, body = _exchange(gateway.port, raw)
    assert (status, headers["x-amzn-errortype"]) == (404, "UnknownOperationException")
    assert "message" in json.loads(body)
    status, _, body = _exchange(gateway.admin_port, raw)
    assert status == 200 and "models" in json.loads(body)


@pytest.mark.parametrize("target", [b"/%6Dodels", b"//models", b"/models/", b"http://x/models"])
def test_hostile_model_load_is_refused_on_public_port(gateway, target):
    body = json.dumps({"model_name": "pwn", "url": "/tmp"}).encode()
    raw = b"POST %s HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n%s" % (
        target,
        len(body),
        body,
    )
    assert _exchange(gateway.port, raw)[0] == 404
    listed = _exchange(gateway.admin_port, b"GET /models HTTP/1.1\r\nHost: a\r\n\r\n")
    assert json.loads(listed[2]) == {"models": []}


@pytest.mark.parametrize("target", [b"/x/../admin/models", b"/./ping", b"/%2e%2e/models", b"*"])
def test_hostile_dot_segments_and_odd_targets_are_400(gateway, target):
    status, headers, _ = _exchange(gateway.port, b"GET " + target + b" HTTP/1.1\r\n\r\n")
    assert (status, headers["x-amzn-errortype"]) == (400, "ValidationError")


def test_hostile_half_closed_client_still_gets_its_answer(gateway):
    with _connect(gateway.port) as sock:
        sock.sendall(b"GET /ping HTTP/1.1\r\nHost: a\r\n\r\n")
        sock.shutdown(socket.SHUT_WR)
        assert _response(sock)[0] == 200
        assert _closed_within(sock, CLOSE_WITHIN_S)


def test_hostile_unicode_digits_are_400_not_500(gateway):
    content_type = b"application/vnd.sagemaker-triton.binary+json;json-header-size=\xb2"
    raw = (
        b"POST /invocations HTTP/1.1\r\nHost: a\r\nX-Amzn-SageMaker-Target-Model: add_one.tar.gz"
        b"\r\nContent-Type: " + content_type + b"\r\nContent-Length: 2\r\n\r\n{}"
    )
    assert _exchange(gateway.port, raw)[0] == 400
    for query in ("max_results=%C2%B3", "max_results=%D9%A3", "max_results=1" + "0" * 5000):
        raw = b"GET /models?" + query.encode() + b" HTTP/1.1\r\nHost: a\r\n\r\n"
        assert _exchange(gateway.admin_port, raw)[0] == 400


@pytest.mark.parametrize("body", [b"", b"{not json", b"[1, 2]"])
def test_hostile_empty_or_malformed_json_body_is_400(gateway, body):
    raw = (
        b"POST /invocations HTTP/1.1\r\nHost: a\r\nX-Amzn-SageMaker-Target-Model: add_one.tar.gz"
        b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    status, headers, _ = _exchange(gateway.port, raw)
    assert (status, headers["x-amzn-errortype"]) == (400, "ValidationError")


def test_hostile_large_csv_body_is_converted_off_the_loop_and_answered(gateway):
    """Over 64 KiB, the CSV is parsed in a worker thread; the answer is the same."""
    row = ",".join(f"{v:025.20f}" for v in (1.0, 2.0, 5.0)).encode() + b"\n"
    body = row * 1024
    assert len(body) > 64 * 1024
    raw = (
        b"POST /invocations HTTP/1.1\r\nHost: a\r\nContent-Type: text/csv\r\n"
        b"X-Amzn-SageMaker-Target-Model: linear_regression.tar.gz\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    ) + body
    status, _, answer = _exchange(gateway.port, raw)
    assert status == 200, answer
    assert [float(line) for line in answer.splitlines()] == [8.75] * 1024


TOKEN = st.text(string.ascii_letters + string.digits + "-_", min_size=1, max_size=12)
FIELD_VALUE = st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=40)
HEAD_TARGETS = st.one_of(
    st.binary(min_size=1, max_size=60).filter(lambda b: b" " not in b and b"\r" not in b),
    st.lists(st.sampled_from(["models", "admin", "%2F", "..", "", "ping", "invocations",
                              "endpoints", "v2", "infer", "%61", "x"]),
             max_size=6).map(lambda parts: ("/" + "/".join(parts)).encode()),
)  # fmt: skip
RESERVED = {"content-length", "transfer-encoding", "connection", "expect", "upgrade"}


@settings(
    max_examples=150,
    deadline=10_000,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    method=st.sampled_from(["GET", "POST", "DELETE", "HEAD", "PUT", "OPTIONS"]) | TOKEN,
    target=HEAD_TARGETS,
    fields=st.lists(
        st.tuples(TOKEN.filter(lambda n: n.lower() not in RESERVED), FIELD_VALUE), max_size=8
    ),
)
def test_hostile_generated_request_heads_never_500_never_hang(gateway, method, target, fields):
    head = method.encode() + b" " + target + b" HTTP/1.1\r\n"
    head += b"".join(f"{n}: {v}\r\n".encode("latin-1") for n, v in fields)
    with _connect(gateway.port, timeout=10) as sock:
        sock.sendall(head + b"Connection: close\r\n\r\n")
        status_line = sock.makefile("rb").readline()
    assert status_line.startswith(b"HTTP/1.1 ")
    assert int(status_line.split()[1]) < 500, (head, status_line)


TARGET_NAMES = st.one_of(
    st.text(st.characters(min_codepoint=32, max_codepoint=255), min_size=1, max_size=200),
    st.lists(st.sampled_from(["add_one.tar.gz", "..", ".", "", "a", " x", "é", "\\", "%2F"]),
             min_size=1, max_size=5).map("/".join),
)  # fmt: skip


@settings(
    max_examples=100,
    deadline=10_000,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(TARGET_NAMES)
def test_hostile_generated_target_names_never_500(gateway, name):
    """Segments stay short of the file system's name limit (the store's own concern)."""
    raw = (
        b"POST /endpoints/e/invocations HTTP/1.1\r\nHost: a\r\nContent-Type: application/json"
        b"\r\nX-Amzn-SageMaker-Target-Model: " + name.encode("latin-1") + b"\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(BODY), BODY)
    )
    status, _, body = _exchange(gateway.port, raw)
    assert status < 500, (name, body)
