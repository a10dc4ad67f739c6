"""HTTP semantics of the application itself, beyond the edge (issue 14, defect 7), tested
through a real server on 127.0.0.1 so that the tests hold whatever the pipeline looks like
inside: 405 with Allow, no redirect built from the Host header, UTF-8 JSON only, no body
where a call takes none, 413 from the application's own body limit."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient

from keybound.protocol import MAX_BODY_BYTES
from keybound.server.services import Keybound
from keybound.server.web.app import create_app
from keybound.server.web.limits import EdgeLimits
from keybound.server.web.runner import BackgroundServer
from tests.helpers import RawDevice, SealingClient

pytestmark = pytest.mark.server

PROBLEM_JSON = "application/problem+json"


@pytest.fixture
def rp(kb: Keybound) -> Iterator[httpx.Client]:
    kb.admin.create_application("bank")
    token = kb.admin.create_api_key("bank").token
    with (
        BackgroundServer(kb) as server,
        httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}) as client,
    ):
        yield client


def problem(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.json()["code"] == code


def test_405_names_the_allowed_methods(rp: httpx.Client) -> None:
    refused = rp.delete("/rp/v1/users")
    problem(refused, 405, "method_not_allowed")
    assert {m.strip() for m in refused.headers["allow"].split(",")} == {"POST"}
    health = rp.post("/healthz")
    problem(health, 405, "method_not_allowed")
    assert "GET" in {m.strip() for m in health.headers["allow"].split(",")}


def test_a_trailing_slash_is_not_redirected_to_the_host_header(rp: httpx.Client) -> None:
    user = rp.post("/rp/v1/users", json={}).json()["userId"]
    answer = rp.get(f"/rp/v1/users/{user}/", headers={"Host": "evil.example"})
    assert "location" not in answer.headers
    problem(answer, 404, "not_found")


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32"])
def test_a_json_body_that_is_not_utf8_is_refused(rp: httpx.Client, encoding: str) -> None:
    body = '{"externalRef": "alice"}'.encode(encoding)
    refused = rp.post("/rp/v1/users", content=body, headers={"Content-Type": "application/json"})
    problem(refused, 400, "malformed_request")
    # nothing was created: the same externalRef in UTF-8 is not a duplicate
    assert rp.post("/rp/v1/users", json={"externalRef": "alice"}).status_code == 201


@pytest.mark.parametrize(
    "call", ["activation-codes", "lock", "unlock", "deactivate", "reactivation"]
)
def test_a_body_on_a_call_that_takes_none_is_refused(
    kb: Keybound, rp: httpx.Client, call: str
) -> None:
    user = rp.post("/rp/v1/users", json={}).json()["userId"]
    issued = rp.post(f"/rp/v1/users/{user}/activation-codes").json()
    key = kb.admin.create_e2e_key("bank")
    with TestClient(create_app(kb)) as client:  # an active device, through the channel
        local = SealingClient(client, kb.clock)
        local.pins["bank"] = kb.admin.e2e_pin(key.key_id, server_url="http://localhost")
        device = RawDevice(local, "bank")
        assert device.activate(issued).status_code == 200
    if call == "activation-codes":
        path = f"/rp/v1/users/{user}/activation-codes"
    else:
        path = f"/rp/v1/devices/{device.device_id}/{call}"
    devices_before = rp.get(f"/rp/v1/users/{user}/devices").json()
    problem(rp.post(path, json={"junk": True}), 400, "malformed_request")
    assert rp.get(f"/rp/v1/users/{user}/devices").json() == devices_before  # nothing changed


def test_the_application_body_limit_answers_413(kb: Keybound) -> None:
    kb.admin.create_application("bank")
    token = kb.admin.create_api_key("bank").token
    limits = EdgeLimits(max_body_bytes=4 * MAX_BODY_BYTES)

    def chunks() -> Iterator[bytes]:  # no Content-Length: chunked
        yield b'{"externalRef": "'
        for _ in range(MAX_BODY_BYTES // 8192 + 1):
            yield b"a" * 8192
        yield b'"}'

    with BackgroundServer(kb, limits=limits) as server:
        answer = httpx.post(
            f"{server.url}/rp/v1/users",
            content=chunks(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
    problem(answer, 413, "payload_too_large")
