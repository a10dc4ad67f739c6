"""The HTTP edge (keybound.server.web.edge) under attack: each test performs the attack with raw
sockets against a real server on 127.0.0.1 and checks the answer is a problem+json with its
stable code and that the connection is closed within the bound. Timeouts are short here (the
limits are settings); no test sleeps longer than its bound."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from keybound.channel import SEALED_MEDIA_TYPE
from keybound.cli import build_parser
from keybound.errors import ConfigurationInvalid
from keybound.protocol import MAX_BODY_BYTES
from keybound.server.services import Keybound
from keybound.server.web.limits import SEALED_OVERHEAD_BYTES, EdgeLimits
from keybound.server.web.runner import BackgroundServer, free_port

pytestmark = pytest.mark.server

PROBLEM_JSON = "application/problem+json"
#: slack for a loaded machine on top of a deadline (a closed connection must not take longer)
SLACK = 1.5


@dataclass(frozen=True, kw_only=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    closed: bool  # the server closed the connection after it (within SLACK s)
    seconds: float  # from the first byte sent to the answer (or the close)
    closed_after: float | None = None  # from the first byte sent to the close

    def problem(self) -> dict[str, Any]:
        assert self.headers.get("content-type") == PROBLEM_JSON, self.headers
        body: dict[str, Any] = json.loads(self.body)
        assert body["status"] == self.status
        assert body["type"] == f"urn:keybound:problem:{body['code']}"
        return body


def read_answer(
    sock: socket.socket, started: float, timeout: float = 10, *, wait_close: bool = True
) -> Answer:
    """One HTTP/1.1 response (Content-Length framed), then whether the server closed."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return Answer(
                status=0, headers={}, body=data, closed=True, seconds=time.monotonic() - started
            )
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {
        k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])
    }
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "closed in the middle of the answer"
        body += chunk
    seconds = time.monotonic() - started
    closed = False
    if wait_close:
        sock.settimeout(SLACK)
        try:
            closed = sock.recv(1) == b""
        except TimeoutError:
            pass
        except ConnectionResetError:
            closed = True
    return Answer(
        status=int(lines[0].split()[1]),
        headers=headers,
        body=body[:length],
        closed=closed,
        seconds=seconds,
        closed_after=time.monotonic() - started if closed else None,
    )


def exchange(port: int, data: bytes) -> Answer:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        started = time.monotonic()
        sock.sendall(data)
        return read_answer(sock, started)


def get(path: str = "/healthz", extra: bytes = b"", close: bool = True) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode()
        + extra
        + (b"Connection: close\r\n" if close else b"")
        + b"\r\n"
    )


@pytest.fixture
def edge_server(kb: Keybound) -> Iterator[Callable[..., BackgroundServer]]:
    """edge_server(**limits) -> a running server behind the edge with those limits."""
    servers: list[BackgroundServer] = []

    def start(**limits: Any) -> BackgroundServer:
        server = BackgroundServer(kb, limits=EdgeLimits(**limits)).__enter__()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.__exit__(None, None, None)


@pytest.fixture
def server(edge_server: Callable[..., BackgroundServer]) -> BackgroundServer:
    return edge_server()  # the defaults of keybound serve


# --------------------------------------------------------------------------- head size


def test_a_head_over_the_cap_gets_431_and_the_connection_is_closed(server) -> None:
    cap = EdgeLimits().max_header_bytes
    answer = exchange(server.port, get(extra=b"X-Big: " + b"a" * cap + b"\r\n"))
    assert answer.status == 431
    assert answer.problem()["code"] == "request_header_fields_too_large"
    assert answer.closed


def test_a_head_of_exactly_the_cap_is_served(edge_server) -> None:
    server = edge_server(max_header_bytes=4096)
    request = get(extra=b"X-Pad: ")
    filler = 4096 - len(request) - 2
    exact = get(extra=b"X-Pad: " + b"a" * filler + b"\r\n")
    assert len(exact) == 4096
    assert exchange(server.port, exact).status == 200
    over = get(extra=b"X-Pad: " + b"a" * (filler + 1) + b"\r\n")
    assert exchange(server.port, over).status == 431


def test_a_huge_head_is_refused_after_the_cap_not_read_to_its_end(edge_server) -> None:
    """An 8 MiB header is answered once about the cap has arrived: the server neither reads
    nor buffers the rest (the unfixed server read all of it, then answered 200)."""
    server = edge_server(max_header_bytes=4096)
    sent = 0
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
        sock.settimeout(0.01)
        while sent < 8 * 1024 * 1024:
            try:
                if sock.recv(1, socket.MSG_PEEK):
                    break  # answered
            except TimeoutError:
                pass
            try:
                sent += sock.send(b"a" * 16384)
            except TimeoutError:
                pass
            except (BrokenPipeError, ConnectionResetError):
                break
        answer = read_answer(sock, started)
    assert answer.status == 431
    assert answer.problem()["code"] == "request_header_fields_too_large"
    assert sent < 1024 * 1024, sent  # answered while the head was still arriving


def test_too_many_header_fields_get_431(edge_server) -> None:
    server = edge_server(max_header_fields=20)
    fields = b"".join(b"X-F%d: v\r\n" % i for i in range(18))  # + Host + Connection = 20
    assert exchange(server.port, get(extra=fields)).status == 200
    answer = exchange(server.port, get(extra=fields + b"X-One-More: v\r\n"))
    assert answer.status == 431
    assert answer.problem()["code"] == "request_header_fields_too_large"
    assert "header fields" in answer.problem()["detail"]
    assert answer.closed


def test_the_default_field_cap_refuses_ten_thousand_fields(server) -> None:
    fields = b"".join(b"X-%d: a\r\n" % i for i in range(10_000))
    answer = exchange(server.port, get(extra=fields))
    assert answer.status == 431 and answer.closed


def test_pipelined_requests_in_one_write_are_all_served(edge_server) -> None:
    """The head cap counts each head, not what arrives in one read."""
    server = edge_server(max_header_bytes=1024)
    requests = b"".join(get(close=False) for _ in range(40)) + get()  # about 2 KiB at once
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(requests)
        sock.settimeout(10)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.count(b"HTTP/1.1 200 OK") == 41


# --------------------------------------------------------------------------- deadlines


def test_a_head_dribbled_a_byte_at_a_time_is_closed_at_the_deadline(edge_server) -> None:
    server = edge_server(header_timeout=1.0)
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        started = time.monotonic()
        sock.settimeout(0.1)
        answer = None
        for byte in get(extra=b"".join(b"X-%d: a\r\n" % i for i in range(100))):
            try:
                sock.send(bytes([byte]))
            except OSError:
                break
            try:
                if sock.recv(1, socket.MSG_PEEK):
                    break
            except TimeoutError:
                pass
            assert time.monotonic() - started < 1.0 + SLACK, "still open after the deadline"
        answer = read_answer(sock, started)
    assert answer.status == 408
    assert answer.problem()["code"] == "request_timeout"
    assert answer.closed
    assert 0.9 <= answer.seconds <= 1.0 + SLACK


def test_a_connection_that_sends_nothing_is_closed_without_an_answer(edge_server) -> None:
    server = edge_server(header_timeout=0.5)
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        started = time.monotonic()
        answer = read_answer(sock, started)
    assert answer.closed and answer.status == 0 and answer.body == b""
    assert 0.4 <= answer.seconds <= 0.5 + SLACK


def test_a_slow_body_is_closed_at_the_deadline(edge_server) -> None:
    """A complete head, then the body a byte every 0.1 s: the whole body has body_timeout."""
    server = edge_server(body_timeout=1.0)
    head = (
        b"POST /rp/v1/users HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(head)
        started = time.monotonic()
        sock.settimeout(0.1)
        for _ in range(1000):
            try:
                sock.send(b" ")
                if sock.recv(1, socket.MSG_PEEK):
                    break
            except TimeoutError:
                pass
            except OSError:
                break
            assert time.monotonic() - started < 1.0 + SLACK, "still open after the deadline"
        answer = read_answer(sock, started)
    assert answer.status == 408
    assert answer.problem()["code"] == "request_timeout"
    assert answer.closed
    assert 0.9 <= answer.seconds <= 1.0 + SLACK


def test_a_body_in_pieces_within_the_deadline_is_served(edge_server, kb: Keybound) -> None:
    kb.admin.create_application("bank")
    token = kb.admin.create_api_key("bank").token
    server = edge_server(header_timeout=2.0, body_timeout=2.0)
    body = b'{"externalRef": "slow but fine"}'
    head = (
        f"POST /rp/v1/users HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}"
        f"\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        started = time.monotonic()
        for piece in (head[:20], head[20:], body[:10], body[10:]):
            sock.sendall(piece)
            time.sleep(0.2)
        answer = read_answer(sock, started)
    assert answer.status == 201, answer.body


def test_an_idle_keep_alive_connection_is_closed(edge_server) -> None:
    server = edge_server(keep_alive_timeout=0.5)
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(get(close=False))
        assert read_answer(sock, time.monotonic(), wait_close=False).status == 200
        time.sleep(0.2)  # within the idle time: the connection is still there
        sock.sendall(get(close=False))
        started = time.monotonic()
        second = read_answer(sock, started)
    assert second.status == 200
    assert second.closed and second.closed_after is not None
    assert 0.4 <= second.closed_after - second.seconds <= 0.5 + SLACK


def test_empty_lines_after_an_answer_do_not_keep_the_connection(edge_server) -> None:
    """CRLFs between requests are allowed, so they must not restart the idle clock for ever."""
    server = edge_server(keep_alive_timeout=0.5, header_timeout=1.0)
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(get(close=False))
        assert read_answer(sock, time.monotonic(), wait_close=False).status == 200
        started = time.monotonic()
        sock.settimeout(0.2)
        closed = False
        while not closed and time.monotonic() - started < 1.0 + SLACK:
            try:
                sock.send(b"\r\n")
                closed = sock.recv(1) == b""
            except TimeoutError:
                pass
            except OSError:
                closed = True
    assert closed, "still open after the deadline"


def test_a_client_that_never_reads_its_answers_is_disconnected(edge_server) -> None:
    """Slow read: answers backed up behind a closed receive window would hold the connection,
    and its slot under the connection cap, for good."""
    server = edge_server(send_timeout=1.0)
    connections = server.server.server_state.connections
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", server.port))
        sock.sendall(get("/openapi.json", close=False) * 40)
        time.sleep(0.5)
        assert len(connections) == 1  # answers backed up; the connection is held
        deadline = time.monotonic() + 1.0 + 2 * SLACK  # zero-window probes back off
        while connections:
            assert time.monotonic() < deadline, "still held after the send timeout"
            time.sleep(0.05)


# --------------------------------------------------------------------------- connection cap


def test_connections_beyond_the_cap_get_503_and_are_closed(edge_server) -> None:
    server = edge_server(max_connections=5)
    held = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(5)]
    try:
        time.sleep(0.2)  # the server has taken them
        refused = exchange(server.port, get())
        assert refused.status == 503
        assert refused.problem()["code"] == "service_unavailable"
        assert refused.closed
        assert refused.seconds < 1.0
        held.pop().close()
        time.sleep(0.2)
        assert exchange(server.port, get()).status == 200  # a slot freed
    finally:
        for sock in held:
            sock.close()


# --------------------------------------------------------------------------- framing


MALFORMED = {
    "content-length abc": b"Content-Length: abc\r\n\r\n",
    "content-length -1": b"Content-Length: -1\r\n\r\n",
    "content-length overflowing": b"Content-Length: 99999999999999999999999999\r\n\r\n",
    "content-length with transfer-encoding": (
        b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    ),
    "two different content-lengths": b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
    "chunk size not hex": b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
}


@pytest.mark.parametrize("framing", sorted(MALFORMED))
def test_malformed_framing_gets_400_problem_json(server, framing: str) -> None:
    request = (
        b"POST /rp/v1/users HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\n" + MALFORMED[framing]
    )
    answer = exchange(server.port, request)
    assert answer.status == 400
    assert answer.problem()["code"] == "malformed_request"
    assert answer.closed


@pytest.mark.parametrize("target", [b"/\xff\xfe", b"/healthz\xc3\x28", b"/\xe2\x82"])
def test_a_request_target_that_is_not_ascii_gets_400_problem_json(server, target) -> None:
    answer = exchange(server.port, b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert answer.status == 400
    assert answer.problem()["code"] == "malformed_request"
    assert answer.closed


def _chunked(path: str, content_type: str, size: int) -> bytes:
    piece = b" " * 8192
    chunks = b"".join(b"2000\r\n" + piece + b"\r\n" for _ in range(size // 8192))
    return (
        (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
            "Transfer-Encoding: chunked\r\n\r\n"
        ).encode()
        + chunks
        + b"0\r\n\r\n"
    )


@pytest.mark.parametrize(
    ("path", "content_type", "limit"),
    [
        ("/rp/v1/users", "application/json", MAX_BODY_BYTES),
        ("/device/v1/activation/start", SEALED_MEDIA_TYPE, MAX_BODY_BYTES + SEALED_OVERHEAD_BYTES),
    ],
)
def test_a_chunked_body_over_the_limit_gets_413_problem_json(
    server, path, content_type, limit
) -> None:
    answer = exchange(server.port, _chunked(path, content_type, limit + 8192))
    assert answer.status == 413
    assert answer.problem()["code"] == "payload_too_large"
    assert answer.closed


def test_a_declared_length_over_the_limit_gets_413_before_the_body(server) -> None:
    request = (
        b"POST /rp/v1/users HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n"
    )
    answer = exchange(server.port, request)  # no body sent at all
    assert answer.status == 413
    assert answer.problem()["code"] == "payload_too_large"
    assert answer.closed


def test_an_upgrade_request_is_answered_as_a_request_and_closed(server) -> None:
    answer = exchange(
        server.port,
        get(
            extra=b"Connection: Upgrade\r\nUpgrade: websocket\r\n"
            b"Sec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
            close=False,
        ),
    )
    assert answer.status == 200
    assert answer.closed


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    "bad",
    [
        {"header_timeout": 0},
        {"body_timeout": -1.0},
        {"send_timeout": 0.0},
        {"max_connections": 0},
        {"keep_alive_timeout": float("nan")},
        {"max_header_bytes": float("inf")},
    ],
)
def test_edge_limits_refuse_values_that_would_switch_a_limit_off(bad: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationInvalid, match=next(iter(bad))):
        EdgeLimits(**bad)


@pytest.mark.parametrize(
    "option",
    [
        "--header-timeout=0",
        "--body-timeout=-2",
        "--keep-alive-timeout=soon",
        "--max-connections=0",
        "--max-header-bytes=0",
        "--max-header-fields=x",
    ],
)
def test_serve_refuses_limits_that_are_not_positive(option: str, capsys) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", option])
    assert option.split("=")[0] in capsys.readouterr().err


def test_keybound_serve_applies_its_limits_in_every_worker(tmp_path: Path) -> None:
    """The options reach both worker processes: slow heads and big heads are refused by
    each, whichever accepts the connection."""
    port = free_port()
    env = {**os.environ, "KEYBOUND_MASTER_KEY_FILE": str(tmp_path / "master.key")}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "keybound.cli",
            "--database-url",
            f"sqlite:///{tmp_path / 'keybound.db'}",
            "serve",
            "--port",
            str(port),
            "--workers",
            "2",
            "--log-level",
            "warning",
            "--header-timeout",
            "1",
            "--max-header-bytes",
            "2048",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if exchange(port, get()).status == 200:
                    break
            except OSError:
                pass
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline, "keybound serve did not start"
            time.sleep(0.1)
        big = [exchange(port, get(extra=b"X-Big: " + b"a" * 2048 + b"\r\n")) for _ in range(8)]
        assert {answer.status for answer in big} == {431}
        slow: list[Answer] = []

        def dribble() -> None:
            with socket.create_connection(("127.0.0.1", port)) as sock:
                started = time.monotonic()
                sock.sendall(b"GET /healthz HTTP/1.1\r\n")
                slow.append(read_answer(sock, started))

        threads = [threading.Thread(target=dribble) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert [answer.status for answer in slow] == [408] * 8
        assert max(answer.seconds for answer in slow) <= 1.0 + SLACK
    finally:
        process.terminate()
        process.communicate(timeout=20)
