"""The device API (server/web/device.py): its codecs and dispatcher through the real HTTP app
and real SQLite (docs/channel.md §3-§7): plaintext refused unless the development switch is
on, sealed ceremonies, one byte-identical refusal for every failure (tamper, truncation,
replay, unknown / inactive / retired key), replay across two server processes sharing one
database, and key rotation under continuous traffic with no failed request."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from keybound import channel
from keybound import protocol as p
from keybound.channel import SEALED_MEDIA_TYPE, ChannelPin, ChannelSuite
from keybound.client import SealedTransport, open_device, outcome_unknown, preset
from keybound.client.keystores.emulated import EmulatedSecureElement
from keybound.errors import ClientError, ErrorCode
from keybound.server.services import Keybound
from keybound.server.web.app import create_app
from keybound.server.web.runner import BackgroundServer, free_port
from keybound.storage import tables as t
from tests.conftest import PIN_SERVER_URL
from tests.helpers import RawDevice, RelyingParty, problem_code, start_body
from tests.server.services.test_authentication import snapshot

SEALED = {"content-type": SEALED_MEDIA_TYPE}


# --------------------------------------------------------------------------- drivers


@dataclass
class Inner:
    """The inner (opened) answer to a sealed request, shaped like an HTTP response."""

    status_code: int
    content: bytes

    @property
    def headers(self) -> dict[str, str]:
        kind = "application/json" if self.status_code < 400 else "application/problem+json"
        return {"content-type": kind}

    @property
    def text(self) -> str:
        return self.content.decode()

    def json(self) -> Any:
        return json.loads(self.content)


class SealedHttp:
    """What RawDevice needs from an HTTP client (``post(path, json=...)``), through the
    channel: seals with ``pin``, checks the outer answer is a sealed 200, opens it. Keeps the
    last request's wire bytes for replay and tamper tests."""

    def __init__(self, client: Any, pin: ChannelPin) -> None:
        self.client = client
        self.pin = pin
        self.last_wire = b""

    def seal(self, path: str, body: Any) -> tuple[bytes, channel.ResponseOpener]:
        data = json.dumps(body, separators=(",", ":")).encode()
        return channel.seal_request(self.pin, "POST", path, data, now=int(time.time()))

    def post(self, path: str, json: Any) -> Inner:
        wire, opener = self.seal(path, json)
        self.last_wire = wire
        outer = self.client.post(path, content=wire, headers=SEALED)
        assert outer.status_code == 200, outer.text
        assert outer.headers["content-type"] == SEALED_MEDIA_TYPE
        opened = opener.open(outer.content)
        return Inner(status_code=opened.status, content=opened.body)


@pytest.fixture
def sealed_http(http: Any) -> TestClient:
    """The real app with the plaintext switch OFF (the default), without the test sealing."""
    return http.raw  # type: ignore[no-any-return]


@pytest.fixture
def plaintext_http(kb: Keybound) -> Iterator[TestClient]:
    """The app with the development switch ON: the plaintext codec beside the sealed one."""
    with TestClient(create_app(kb, allow_plaintext=True)) as client:
        yield client


def sealed_device(rp: RelyingParty, client: Any, pin: ChannelPin | None = None) -> RawDevice:
    pin = pin or rp.pin
    assert pin is not None
    device = RawDevice(SealedHttp(client, pin), rp.app_id)  # type: ignore[arg-type]
    response = device.activate(rp.activation_code())
    assert response.status_code == 200, response.text
    return device


def domain_snapshot(kb: Keybound) -> dict[str, Any]:
    """The snapshot without the request ids the channel remembered (requests that opened)."""
    return {name: rows for name, rows in snapshot(kb).items() if name != "seen_requests"}


def counted(kb: Keybound, code: str) -> int:
    """Anonymous refusals with ``code``, as the noise counts have them (server.events.noise);
    none of them is in the audit trail."""
    with kb.db.read() as conn:
        assert not conn.execute(select(t.events.c.seq).where(t.events.c.code == code)).all()
    return sum(r.total for r in kb.admin.noise(since_ms=0) if r.cause.endswith(f":{code}"))


def refusal(response: httpx.Response | Any) -> bytes:
    """Assert ``response`` is THE decryption-failure answer; return its exact body."""
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert problem_code(response) == "decryption_failed"
    assert set(response.json()) == {"type", "title", "status", "detail", "code"}
    return bytes(response.content)


# --------------------------------------------------------------------------- plaintext switch


def test_plaintext_device_requests_are_refused_by_default(kb, sealed_http, rp) -> None:
    code = rp.activation_code()
    before = snapshot(kb)
    for path in (
        p.DevicePaths.ACTIVATION_START,
        p.DevicePaths.AUTHENTICATION_START,
        p.DevicePaths.ACTIVATION_FINISH,
        p.DevicePaths.PENDING_OPERATIONS,
        p.DevicePaths.AUTHENTICATION_FINISH,
        p.DevicePaths.DEACTIVATE,
    ):
        response = sealed_http.post(path, json=start_body(rp.app_id, code))
        assert response.status_code == 415
        assert problem_code(response) == "secure_channel_required"
    assert snapshot(kb) == before
    assert counted(kb, "secure_channel_required") == 6
    # the code was not consumed: a sealed device can still use it
    device = RawDevice(SealedHttp(sealed_http, rp.pin), rp.app_id)  # type: ignore[arg-type]
    assert device.activate(code).status_code == 200
    # routing is unchanged: unknown device paths and wrong methods are not channel matters
    assert sealed_http.get(p.DevicePaths.ACTIVATION_START).status_code == 405
    assert sealed_http.post("/device/v1/nope", content=b"x", headers=SEALED).status_code == 404
    # the relying-party API is plain JSON (bearer key over TLS), untouched
    assert rp.new_user()


def test_development_switch_allows_plaintext_and_sealed(kb, plaintext_http, rp) -> None:
    code = rp.activation_code()
    plain = plaintext_http.post(p.DevicePaths.ACTIVATION_START, json=start_body(rp.app_id, code))
    assert plain.status_code == 200 and plain.headers["content-type"] == "application/json"
    refused = plaintext_http.post(p.DevicePaths.ACTIVATION_START, json=start_body(rp.app_id, code))
    assert refused.status_code == 401  # one dispatcher: the same rules, the problem in clear
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["code"] == "activation_code_invalid"
    device = sealed_device(rp, plaintext_http)  # sealed still works with the switch on
    assert device.authenticate().status_code == 200


def test_create_app_warns_loudly_when_plaintext_is_allowed(kb, caplog) -> None:
    with caplog.at_level("WARNING", logger="keybound.server"):
        create_app(kb, allow_plaintext=True)
    assert any(
        "plaintext" in r.message.lower() and r.levelname == "WARNING" for r in caplog.records
    )
    caplog.clear()
    create_app(kb)
    assert not caplog.records


# --------------------------------------------------------------------------- sealed ceremonies


def test_sealed_activation_and_authentication(kb, sealed_http, rp) -> None:
    transport = SealedHttp(sealed_http, rp.pin)  # type: ignore[arg-type]
    device = RawDevice(transport, rp.app_id)  # type: ignore[arg-type]
    start = device.start_activation(rp.activation_code())
    assert (
        device.post(p.DevicePaths.ACTIVATION_FINISH, device.activation_request(start)).status_code
        == 200
    )
    for _ in range(3):
        auth_start = device.start_auth()
        wire = transport.last_wire
        assert start.device_id.encode() not in wire  # the body is not on the wire
        response = device.finish_auth(*device.auth_request(auth_start))
        assert response.status_code == 200, response.text
        assert response.json()["state"] == "COMPLETED"
        assert rp.operation(auth_start.operation_id)["riskData"]["hwKeyServerResult"] == "VALID"
    # an application error is sealed too: inner 4xx inside an outer 200
    stale = device.start_auth()
    request, _ = device.auth_request(stale, signer=device.history[0])
    response = device.post(p.DevicePaths.AUTHENTICATION_FINISH, request)
    assert problem_code(response) == "software_key_cloned"


def test_every_suite_works_end_to_end(kb, sealed_http, rp) -> None:
    for suite in ChannelSuite:
        key = kb.admin.create_e2e_key(rp.app_id, suite=suite)
        pin = kb.admin.e2e_pin(key.key_id, server_url=PIN_SERVER_URL)
        assert sealed_device(rp, sealed_http, pin).authenticate().status_code == 200


def test_inner_application_id_must_be_the_keys_application(kb, sealed_http, make_rp) -> None:
    alice, eve = make_rp(), make_rp()
    device = sealed_device(alice, sealed_http)
    code = eve.activation_code()
    before = domain_snapshot(kb)
    eve_body = start_body(eve.app_id, code)
    response = device.http.post(p.DevicePaths.ACTIVATION_START, json=eve_body)  # alice's pin
    assert response.status_code == 400 and problem_code(response) == "malformed_request"
    for body in (b"not json", b"[]", b'{"activationCode":"x"}'):
        wire, opener = channel.seal_request(
            alice.pin, "POST", p.DevicePaths.ACTIVATION_START, body, now=int(time.time())
        )
        outer = sealed_http.post(p.DevicePaths.ACTIVATION_START, content=wire, headers=SEALED)
        assert opener.open(outer.content).status == 400
    assert domain_snapshot(kb) == before
    # with eve's pin the same request works
    assert (
        SealedHttp(sealed_http, eve.pin)
        .post(  # type: ignore[arg-type]
            p.DevicePaths.ACTIVATION_START, json=eve_body
        )
        .status_code
        == 200
    )


# --------------------------------------------------------------------------- one refusal


def _finish_wire(rp: RelyingParty, client: Any) -> tuple[RawDevice, bytes, str]:
    """A real sealed authentication finish (the request that changes most), not yet sent."""
    device = sealed_device(rp, client)
    start = device.start_auth()
    request, _ = device.auth_request(start)
    wire, _ = device.http.seal(p.DevicePaths.AUTHENTICATION_FINISH, request.to_wire())
    return device, wire, start.operation_id


def _regions(wire: bytes, pin: ChannelPin) -> dict[str, range]:
    kid_end = 8 + len(pin.key_id)
    enc_end = kid_end + 32
    return {
        "version": range(0, 1),
        "suite id": range(1, 7),
        "key id length": range(7, 8),
        "key id": range(8, kid_end),
        "encapsulated key": range(kid_end, enc_end),
        "ciphertext": range(enc_end, len(wire) - 16, 5),
        "tag": range(len(wire) - 16, len(wire)),
    }


def test_tampering_anywhere_gets_the_one_refusal_and_changes_nothing(kb, sealed_http, rp):
    _, wire, operation_id = _finish_wire(rp, sealed_http)
    path = p.DevicePaths.AUTHENTICATION_FINISH
    before, failures = snapshot(kb), counted(kb, "decryption_failed")
    bodies: set[bytes] = set()
    attempts = 0
    for region, offsets in _regions(wire, rp.pin).items():  # type: ignore[arg-type]
        assert offsets, region
        for offset in offsets:
            for bit in (0x01, 0x80):
                tampered = bytearray(wire)
                tampered[offset] ^= bit
                bodies.add(refusal(sealed_http.post(path, content=bytes(tampered), headers=SEALED)))
                attempts += 1
    for cut in (0, 1, 7, 8 + 16, 8 + 16 + 32, len(wire) // 2, len(wire) - 1):  # truncation
        bodies.add(refusal(sealed_http.post(path, content=wire[:cut], headers=SEALED)))
        attempts += 1
    bodies.add(refusal(sealed_http.post(path, content=wire + b"\0", headers=SEALED)))
    for other in (p.DevicePaths.AUTHENTICATION_START, p.DevicePaths.DEACTIVATE):  # moved
        bodies.add(refusal(sealed_http.post(other, content=wire, headers=SEALED)))
    attempts += 3
    assert len(bodies) == 1, "every failure must give the byte-identical answer"
    assert snapshot(kb) == before, "a refused request must change nothing"
    assert counted(kb, "decryption_failed") == failures + attempts
    # the genuine request still works: nothing above consumed it
    outer = sealed_http.post(path, content=wire, headers=SEALED)
    assert outer.status_code == 200
    assert rp.operation(operation_id)["state"] == "COMPLETED"


def test_replay_is_refused(kb, sealed_http, rp) -> None:
    device = sealed_device(rp, sealed_http)
    device.start_auth()
    first = device.http.last_wire
    before = snapshot(kb)
    reference = refusal(
        sealed_http.post(p.DevicePaths.AUTHENTICATION_START, content=first, headers=SEALED)
    )
    assert snapshot(kb) == before
    # the byte-identical answer, whatever the cause
    unknown = channel.generate_e2e_key(now=int(time.time()))
    pin = channel.export_pin(unknown, application_id=rp.app_id, server_url=PIN_SERVER_URL)
    wire, _ = SealedHttp(sealed_http, pin).seal(p.DevicePaths.AUTHENTICATION_START, {})
    assert (
        refusal(sealed_http.post(p.DevicePaths.AUTHENTICATION_START, content=wire, headers=SEALED))
        == reference
    )


def test_an_inner_body_over_the_limit_is_a_sealed_413(kb, sealed_http, rp) -> None:
    """docs/channel.md §4.4: the body limit applies to the inner body too. A sealed request
    within the sealed limit whose inner body is over MAX_BODY_BYTES opens, and its 413 is
    sealed like any inner answer; only a sealed body over its own limit is refused unsealed,
    before it is opened."""
    inner = b'{"applicationId":"' + rp.app_id.encode() + b'","x":"'
    inner += b"a" * (p.MAX_BODY_BYTES - len(inner)) + b'"}'
    assert len(inner) > p.MAX_BODY_BYTES
    wire, opener = channel.seal_request(
        rp.pin, "POST", p.DevicePaths.PENDING_OPERATIONS, inner, now=int(time.time())
    )
    outer = sealed_http.post(p.DevicePaths.PENDING_OPERATIONS, content=wire, headers=SEALED)
    assert outer.status_code == 200
    assert outer.headers["content-type"] == SEALED_MEDIA_TYPE
    opened = opener.open(outer.content)
    assert opened.status == 413
    assert json.loads(opened.body)["code"] == "payload_too_large"
    # a sealed body over the sealed limit never reaches the channel
    huge = channel.seal_request(
        rp.pin,
        "POST",
        p.DevicePaths.PENDING_OPERATIONS,
        b"a" * (p.MAX_BODY_BYTES + 8192),
        now=int(time.time()),
    )[0]
    unsealed = sealed_http.post(p.DevicePaths.PENDING_OPERATIONS, content=huge, headers=SEALED)
    assert unsealed.status_code == 413
    assert problem_code(unsealed) == "payload_too_large"


def test_requests_outside_the_time_window_are_refused(kb, sealed_http, rp, clock) -> None:
    device = sealed_device(rp, sealed_http)
    request = {"applicationId": rp.app_id, "deviceId": device.device_id}
    for skew in (-channel.DEFAULT_WINDOW_SECONDS - 5, channel.DEFAULT_WINDOW_SECONDS + 5):
        wire, _ = channel.seal_request(
            rp.pin,
            "POST",
            p.DevicePaths.AUTHENTICATION_START,
            json.dumps(request).encode(),
            now=int(clock()) + skew,
        )
        refusal(sealed_http.post(p.DevicePaths.AUTHENTICATION_START, content=wire, headers=SEALED))


def test_unknown_inactive_and_retired_keys_get_the_same_refusal(kb, sealed_http, rp) -> None:
    device = sealed_device(rp, sealed_http)
    reference = refusal(
        sealed_http.post(p.DevicePaths.AUTHENTICATION_START, content=b"\x01", headers=SEALED)
    )
    body = {"applicationId": rp.app_id, "deviceId": device.device_id}

    def send(pin: ChannelPin) -> httpx.Response:
        wire, _ = SealedHttp(sealed_http, pin).seal(p.DevicePaths.AUTHENTICATION_START, body)
        response: httpx.Response = sealed_http.post(
            p.DevicePaths.AUTHENTICATION_START, content=wire, headers=SEALED
        )
        return response

    inactive = kb.admin.create_e2e_key(rp.app_id, active=False)
    inactive_pin = kb.admin.e2e_pin(inactive.key_id, server_url=PIN_SERVER_URL)
    assert refusal(send(inactive_pin)) == reference
    kb.admin.activate_e2e_key(inactive.key_id)
    assert send(inactive_pin).status_code == 200  # active now: the shipped pin works
    kb.admin.retire_e2e_key(inactive.key_id)
    assert refusal(send(inactive_pin)) == reference
    with pytest.raises(Exception) as info:
        kb.admin.activate_e2e_key(inactive.key_id)  # retired for good
    assert getattr(info.value, "code", None) is ErrorCode.INVALID_STATE
    assert refusal(send(inactive_pin)) == reference
    assert send(rp.pin).status_code == 200  # the application's other key is unaffected


def test_a_fault_around_the_channel_is_the_internal_problem_and_leaks_nothing(
    kb, rp, monkeypatch, caplog
) -> None:
    """Sealed requests are answered in front of FastAPI's stack (KeyboundAPI): a fault there
    -- here the database failing under the keyring -- still gets the ``internal_error``
    problem with nothing of the inside, is logged, and acknowledges nothing."""
    with TestClient(create_app(kb), raise_server_exceptions=False) as client:
        device = sealed_device(rp, client)
        before = snapshot(kb)

        def failing_lookup(key_id: str) -> Any:
            raise OSError(5, "Input/output error: /secret/path/keybound.db")

        monkeypatch.setattr(kb.e2e_keys.keyring, "lookup", failing_lookup)
        wire, _ = SealedHttp(client, rp.pin).seal(
            p.DevicePaths.AUTHENTICATION_START,
            {"applicationId": rp.app_id, "deviceId": device.device_id},
        )
        answer = client.post(p.DevicePaths.AUTHENTICATION_START, content=wire, headers=SEALED)
    assert answer.status_code == 500
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json() == {
        "type": "urn:keybound:problem:internal_error",
        "title": "internal error",
        "status": 500,
        "code": "internal_error",
    }
    assert "secret" not in answer.text
    assert snapshot(kb) == before
    assert any("unexpected error on POST" in r.getMessage() for r in caplog.records)


# --------------------------------------------------------------------------- SDK behaviour


def test_sdk_refuses_a_server_that_cannot_open_its_requests(kb, sealed_http, rp, tmp_path):
    key = kb.admin.create_e2e_key(rp.app_id)
    pin = kb.admin.e2e_pin(key.key_id, server_url=PIN_SERVER_URL)
    device = open_device(
        tmp_path / "dev", channel_pin=pin.to_string(), profile=preset("linux"), client=sealed_http
    )
    device.activate(rp.activation_code()["activationLink"])
    kb.admin.retire_e2e_key(key.key_id)
    with pytest.raises(ClientError) as info:
        device.authenticate()
    assert info.value.code is ErrorCode.DECRYPTION_FAILED
    assert "pinned E2E key is unknown or retired, or the clock is off" in info.value.detail
    assert not outcome_unknown(info.value)  # a definite refusal: nothing happened


class SwappingClient:
    """Passes requests to the real app; when ``swap`` is set, answers with the sealed reply
    to the previous request instead (an attacker moving a response)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.previous: Any = None
        self.swap = False

    def post(self, path: str, **kwargs: Any) -> Any:
        response = self.inner.post(path, **kwargs)
        answer = self.previous if self.swap and self.previous is not None else response
        self.previous = response
        return answer


def test_a_response_moved_to_another_request_fails_in_the_sdk(kb, sealed_http, rp, tmp_path):
    client = SwappingClient(sealed_http)
    assert rp.pin is not None
    device = open_device(
        tmp_path / "dev",
        channel_pin=rp.pin,
        profile=preset("android-14"),
        hardware=EmulatedSecureElement(tmp_path / "dev" / "se"),
        client=client,
    )
    device.activate(rp.activation_code()["activationLink"])
    device.authenticate()
    client.swap = True  # the finish gets the start's reply (same path kind, other request)
    with pytest.raises(ClientError) as info:
        device.authenticate()
    assert info.value.code is ErrorCode.CLIENT_TRANSPORT
    assert info.value.fields.get("sealed_reply_invalid") is True
    assert outcome_unknown(info.value)
    client.swap = False
    device.authenticate()  # the device recovers (it kept every candidate key)


def test_pin_file_and_string_build_the_same_device(kb, sealed_http, rp, tmp_path) -> None:
    pin_file = tmp_path / "app.pin"
    pin_file.write_text(rp.pin.to_string() + "\n")  # type: ignore[union-attr]
    device = open_device(
        tmp_path / "dev", channel_pin=pin_file, profile=preset("linux"), client=sealed_http
    )
    assert device.application_id == rp.app_id
    device.activate(rp.activation_code()["activationLink"])
    assert rp.pin is not None
    again = open_device(tmp_path / "dev", channel_pin=rp.pin.to_string(), client=sealed_http)
    assert again.authenticate().auth_method is p.AuthMethod.DEVICE
    transport = SealedTransport.from_pin_string(rp.pin.to_string())  # type: ignore[union-attr]
    assert transport.pin == rp.pin
    transport.close()


# --------------------------------------------------------------------------- several processes


class ServerProcess:
    """``keybound serve`` in a subprocess on a free 127.0.0.1 port."""

    def __init__(self, database_url: str, env: dict[str, str], *extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "keybound.cli",
                "--database-url",
                database_url,
                "serve",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
                *extra,
            ],
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                out, err = self.process.communicate(timeout=5)
                raise RuntimeError(f"server did not start: {out}\n{err}")
            time.sleep(0.05)

    def stop(self) -> tuple[str, str]:
        self.process.terminate()
        out, err = self.process.communicate(timeout=15)
        return out, err


@pytest.fixture
def shared_database(tmp_path: Path) -> Iterator[tuple[Keybound, dict[str, str]]]:
    """One SQLite file and one master key for the test and every server process."""
    env = {"KEYBOUND_MASTER_KEY_FILE": str(tmp_path / "secrets" / "master.key")}
    kb = Keybound.open(
        f"sqlite:///{tmp_path / 'shared.db'}", master_key_file=Path(env["KEYBOUND_MASTER_KEY_FILE"])
    )
    kb.admin.create_application("bank")
    yield kb, env
    kb.close()


@pytest.mark.server
def test_replay_across_two_server_processes_sharing_one_database(shared_database) -> None:
    kb, env = shared_database
    key = kb.admin.create_e2e_key("bank")
    token = kb.admin.create_api_key("bank").token
    servers = [ServerProcess(kb.db.url, env) for _ in range(2)]
    try:
        a, b = servers
        pin = kb.admin.e2e_pin(key.key_id, server_url=a.url)
        rp = httpx.Client(base_url=a.url, headers={"Authorization": f"Bearer {token}"})
        user = rp.post("/rp/v1/users", json={}).json()["userId"]
        code = rp.post(f"/rp/v1/users/{user}/activation-codes").json()
        body = json.dumps(start_body("bank", code)).encode()
        path = p.DevicePaths.ACTIVATION_START
        wire, opener = channel.seal_request(pin, "POST", path, body, now=int(time.time()))
        first = httpx.post(a.url + path, content=wire, headers=SEALED)
        assert first.status_code == 200
        assert opener.open(first.content).status == 200
        replayed = httpx.post(b.url + path, content=wire, headers=SEALED)
        refusal(replayed)
        refusal(httpx.post(a.url + path, content=wire, headers=SEALED))
        # B itself is fine: a fresh request (same content, new seal) opens there
        fresh, opener = channel.seal_request(pin, "POST", path, body, now=int(time.time()))
        answer = httpx.post(b.url + path, content=fresh, headers=SEALED)
        assert answer.status_code == 200
        assert opener.open(answer.content).status == 401  # the code was used, by A
        rp.close()
    finally:
        for server in servers:
            server.stop()


@pytest.mark.server
def test_serve_allow_plaintext_switch_warns(shared_database) -> None:
    kb, env = shared_database
    body = {"applicationId": "bank", "activationCode": "12345678", "activationHint": "7KQ2MX"}
    refused = ServerProcess(kb.db.url, env)
    try:
        response = httpx.post(refused.url + p.DevicePaths.ACTIVATION_START, json=body)
        assert response.status_code == 415
        assert response.json()["code"] == "secure_channel_required"
    finally:
        _, err = refused.stop()
    assert "plaintext" not in err.lower()
    switches: list[tuple[tuple[str, ...], dict[str, str]]] = [
        (("--allow-plaintext",), {}),
        ((), {"KEYBOUND_ALLOW_PLAINTEXT": "1"}),
    ]
    for extra, switch_env in switches:
        server = ServerProcess(kb.db.url, {**env, **switch_env}, *extra)
        try:
            response = httpx.post(server.url + p.DevicePaths.ACTIVATION_START, json=body)
            assert response.json()["code"] == "activation_code_invalid"  # reached the domain
        finally:
            _, err = server.stop()
        assert "WARNING" in err and "plaintext" in err.lower()


# --------------------------------------------------------------------------- rotation


@dataclass
class Flow:
    key: str
    started: float
    ended: float
    error: ErrorCode | None


class Traffic(threading.Thread):
    """Authenticates in a loop with one SDK device pinned to one key."""

    def __init__(self, name: str, device: Any, log: list[Flow], stop: threading.Event) -> None:
        super().__init__(name=name, daemon=True)
        self.device, self.log, self.stop_event = device, log, stop

    def run(self) -> None:
        while not self.stop_event.is_set():
            started = time.monotonic()
            try:
                self.device.authenticate()
                error = None
            except ClientError as exc:
                error = exc.code
            self.log.append(Flow(self.name[0], started, time.monotonic(), error))


def _wait(condition: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.mark.server
def test_rotation_under_continuous_traffic_fails_no_request(tmp_path: Path) -> None:
    kb = Keybound.open(f"sqlite:///{tmp_path / 'rotation.db'}")
    kb.admin.create_application("bank")
    token = kb.admin.create_api_key("bank").token
    log: list[Flow] = []
    clients: list[httpx.Client] = []
    stop = threading.Event()
    with (
        BackgroundServer(kb) as server,
        httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}) as rp,
    ):

        def device(name: str, key_id: str) -> Any:
            user = rp.post("/rp/v1/users", json={}).json()["userId"]
            code = rp.post(f"/rp/v1/users/{user}/activation-codes").json()["activationLink"]
            pin = kb.admin.e2e_pin(key_id, server_url=server.url)
            clients.append(httpx.Client(base_url=server.url, timeout=30))
            dev = open_device(
                tmp_path / name, channel_pin=pin, profile=preset("linux"), client=clients[-1]
            )
            dev.activate(code)
            return dev

        def count(key: str, ok: bool) -> int:
            return sum(1 for f in list(log) if f.key == key and (f.error is None) is ok)

        key_a = kb.admin.create_e2e_key("bank")
        threads = [Traffic(f"A{i}", device(f"a{i}", key_a.key_id), log, stop) for i in range(2)]
        for thread in threads:
            thread.start()
        _wait(lambda: count("A", True) >= 20)
        key_b = kb.admin.create_e2e_key("bank")  # rotation: B is active next to A
        threads += [Traffic(f"B{i}", device(f"b{i}", key_b.key_id), log, stop) for i in range(2)]
        for thread in threads[2:]:
            thread.start()
        _wait(lambda: count("B", True) >= 20)
        retiring = time.monotonic()
        kb.admin.retire_e2e_key(key_a.key_id)
        retired = time.monotonic()
        _wait(lambda: count("A", False) >= 4 and count("B", True) >= 40)
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    for client in clients:
        client.close()
    kb.close()

    before = [f for f in log if f.key == "A" and f.ended < retiring]
    after = [f for f in log if f.key == "A" and f.started > retired]
    assert len(before) >= 20 and all(f.error is None for f in before), before
    assert after and all(f.error is ErrorCode.DECRYPTION_FAILED for f in after)
    straddling = [f for f in log if f.key == "A" and f not in before and f not in after]
    assert all(f.error in (None, ErrorCode.DECRYPTION_FAILED) for f in straddling)
    b_flows = [f for f in log if f.key == "B"]
    assert len(b_flows) >= 40 and all(f.error is None for f in b_flows), b_flows


@pytest.mark.server
def test_demo_talks_only_through_the_channel(capsys: Any) -> None:
    from keybound.cli.demo import run_demo

    assert run_demo() == 0  # its server has the plaintext switch off: sealed or nothing
    out = capsys.readouterr().out
    assert "secure channel: every device request is HPKE-sealed" in out
    assert "| PASS" in out and "decryption_failed" not in out
    assert "relying party reads: COMPLETED" in out


# -- the production path (sealed, straight to the device routes) under fuzz and races --------

_fuzz_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=40)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=12), children, max_size=3)
    ),
    max_leaves=8,
)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    path=st.sampled_from(sorted(v for k, v in vars(p.DevicePaths).items() if k.isupper())),
    fields=st.dictionaries(
        st.sampled_from(
            [
                "deviceId",
                "operationId",
                "activationCode",
                "activationHint",
                "activationToken",
                "challenge",
                "softwareSignature",
                "hardwareSignature",
                "softwarePublicKey",
                "authMethod",
                "hwKeyClientStatus",
                "softwareKeyId",
                "nextSoftwarePublicKey",
                "deviceProfile",
                "pinProof",
                "extra",
            ]
        ),
        _fuzz_values,
        max_size=6,
    ),
    own_application=st.booleans(),
)
def test_fuzzed_sealed_requests_get_sealed_4xx_problems(
    sealed_http: Any, make_rp: Any, path: str, fields: dict[str, Any], own_application: bool
) -> None:
    rp = make_rp()
    body = {**fields, "applicationId": rp.app_id if own_application else "someone-else"}
    answer = SealedHttp(sealed_http, rp.pin).post(path, body)
    assert 400 <= answer.status_code < 500, answer.text
    assert answer.json()["status"] == answer.status_code and answer.json()["code"]


@pytest.mark.server
def test_fifty_concurrent_sealed_finishes_exactly_one_wins(
    database_url: str, tmp_path: Path
) -> None:
    """The single-use race of tests/test_concurrency.py, through the channel (plaintext off),
    as production traffic arrives."""
    import asyncio
    from collections import Counter

    kb = Keybound.open(database_url, master_key_file=tmp_path / "master.key")
    kb.admin.create_application("race")
    token = kb.admin.create_api_key("race").token
    key = kb.admin.create_e2e_key("race")
    with BackgroundServer(kb) as server, TestClient(create_app(kb)) as local:
        pin = kb.admin.e2e_pin(key.key_id, server_url=PIN_SERVER_URL)
        rp = RelyingParty(local, "race", token, pin=pin)
        device = sealed_device(rp, local)
        for _ in range(5):
            start = device.start_auth()
            wires = []
            for _ in range(50):
                request, _next = device.auth_request(start)
                data = json.dumps(request.to_wire()).encode()
                wire, opener = channel.seal_request(
                    pin, "POST", p.DevicePaths.AUTHENTICATION_FINISH, data, now=int(time.time())
                )
                wires.append((wire, opener, _next))

            async def race(bodies: list[bytes]) -> list[httpx.Response]:
                async with httpx.AsyncClient(
                    base_url=server.url, timeout=30, limits=httpx.Limits(max_connections=50)
                ) as c:
                    return await asyncio.gather(
                        *(
                            c.post(p.DevicePaths.AUTHENTICATION_FINISH, content=b, headers=SEALED)
                            for b in bodies
                        )
                    )

            responses = asyncio.run(race([w for w, _o, _n in wires]))
            inner = [o.open(r.content) for r, (_w, o, _n) in zip(responses, wires, strict=True)]
            statuses = Counter(i.status for i in inner)
            assert statuses == {200: 1, 409: 49}, statuses
            winner = next(k for k, i in enumerate(inner) if i.status == 200)
            device.history.append(device.sw)
            device.sw = wires[winner][2]
    kb.close()
