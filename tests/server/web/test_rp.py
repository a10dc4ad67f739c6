"""The HTTP edge: problem+json for every bad request, API-key scoping, the OpenAPI document."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from keybound import protocol as p
from keybound.server.services import Keybound
from tests.helpers import RelyingParty, problem_code
from tests.server.services.test_authentication import activated, snapshot

ROOT = Path(__file__).resolve().parents[3]


def test_openapi_document_is_checked_in(http: Any) -> None:
    served = http.get("/openapi.json").json()
    assert served["openapi"].startswith("3.1")
    checked_in = json.loads((ROOT / "docs" / "openapi.json").read_text())
    assert served == checked_in, "run: python -m keybound.server.web.openapi > docs/openapi.json"
    # it documents what the server does: problem+json 4xx, never FastAPI's 422 body
    responses = served["components"]["responses"]
    for operations in served["paths"].values():
        for operation in operations.values():
            assert "422" not in operation["responses"]
            for status, answer in operation["responses"].items():
                if status >= "400":
                    answer = responses.get(answer.get("$ref", "").rsplit("/", 1)[-1], answer)
                    assert list(answer["content"]) == ["application/problem+json"], status
    codes = served["components"]["schemas"]["Problem"]["properties"]["code"]["oneOf"]
    assert {entry["const"] for entry in codes} >= {
        "malformed_request",
        "authentication_failed",
        "decryption_failed",
    }


# -- relying-party authentication and scoping ---------------------------------------------


def test_rp_api_requires_a_valid_key(rp: RelyingParty, kb: Keybound) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer nope"},
        {"Authorization": "Bearer kb_AAAAAAAAAAAAAAAA_" + "A" * 43},
        {"Authorization": rp.headers["Authorization"][:-1] + "x"},
    ):
        response = rp.http.post("/rp/v1/users", json={}, headers=headers)
        assert response.status_code == 401
        assert problem_code(response) == "unauthorized"
        assert response.headers["www-authenticate"] == "Bearer"


def test_revoked_key_stops_working(rp: RelyingParty, kb: Keybound) -> None:
    rp.new_user()
    key_id = kb.admin.api_keys(rp.app_id)[0].key_id
    kb.admin.revoke_api_key(key_id)
    assert problem_code(rp.http.post("/rp/v1/users", json={}, headers=rp.headers)) == "unauthorized"


def test_key_secret_is_stored_only_as_hash(rp: RelyingParty, kb: Keybound) -> None:
    secret = rp.headers["Authorization"].split("_", 2)[2]  # the secret may hold "_"
    dump = repr(snapshot(kb))
    assert secret not in dump


def test_other_applications_objects_look_like_missing_ones(make_rp: Any) -> None:
    alice_rp, eve_rp = make_rp(), make_rp()
    device = activated(alice_rp)
    user = alice_rp.device(device.device_id)["userId"]
    op = alice_rp.start_operation(device.device_id)["operationId"]
    missing = "00000000-0000-4000-8000-000000000000"
    for method, template in [
        ("GET", "/rp/v1/devices/{}"),
        ("GET", "/rp/v1/operations/{}"),
        ("GET", "/rp/v1/users/{}"),
        ("GET", "/rp/v1/users/{}/devices"),
        ("POST", "/rp/v1/users/{}/activation-codes"),
        ("POST", "/rp/v1/devices/{}/lock"),
        ("POST", "/rp/v1/devices/{}/reactivation"),
        ("POST", "/rp/v1/devices/{}/operations"),
    ]:
        real_id = {"devices": device.device_id, "operations": op, "users": user}[
            template.split("/")[3]
        ]
        body = {} if template.endswith("operations") else None  # the others take no body
        other = eve_rp.http.request(
            method, template.format(real_id), headers=eve_rp.headers, json=body
        )
        absent = eve_rp.http.request(
            method, template.format(missing), headers=eve_rp.headers, json=body
        )
        assert other.status_code == absent.status_code == 404, template
        assert other.json() == absent.json(), template
    assert alice_rp.device(device.device_id)["state"] == "ACTIVE"


def test_lock_unlock_deactivate_and_list(rp: RelyingParty) -> None:
    device = activated(rp)
    user = rp.device(device.device_id)["userId"]
    base = f"/rp/v1/devices/{device.device_id}"
    assert rp.call("POST", base + "/lock", expect=200)["lockReason"] == "RELYING_PARTY"
    assert problem_code(device.authenticate()) == "device_locked"
    pending = rp.http.post(base + "/operations", json={}, headers=rp.headers)
    assert problem_code(pending) == "invalid_state"
    assert rp.call("POST", base + "/unlock", expect=200)["state"] == "ACTIVE"
    assert device.authenticate().status_code == 200
    op = rp.start_operation(device.device_id)["operationId"]
    assert rp.call("POST", base + "/deactivate", expect=200)["state"] == "DEACTIVATED"
    assert rp.operation(op)["state"] == "FAILED"  # nothing left hanging
    listed = rp.call("GET", f"/rp/v1/users/{user}/devices", expect=200)["devices"]
    assert [(d["deviceId"], d["state"]) for d in listed] == [(device.device_id, "DEACTIVATED")]
    assert problem_code(rp.http.post(base + "/unlock", headers=rp.headers)) == "invalid_state"


def test_bodyless_post_needs_no_content_type(rp: RelyingParty) -> None:
    """`curl -X POST` with no data sends neither a body nor a content type."""
    user = rp.new_user()
    response = rp.http.request("POST", f"/rp/v1/users/{user}/activation-codes", headers=rp.headers)
    assert response.status_code == 201, response.text


def test_duplicate_external_ref_conflicts(rp: RelyingParty) -> None:
    rp.call("POST", "/rp/v1/users", {"externalRef": "alice"}, expect=201)
    response = rp.http.post("/rp/v1/users", json={"externalRef": "alice"}, headers=rp.headers)
    assert problem_code(response) == "conflict"


def test_oversized_pre_operation_context(rp: RelyingParty) -> None:
    device = activated(rp)
    body = {
        "preOperationContext": {
            "content": "x" * (p.MAX_PRE_CONTEXT_BYTES + 1),
            "mimeType": "text/plain",
        }
    }
    response = rp.http.post(
        f"/rp/v1/devices/{device.device_id}/operations", json=body, headers=rp.headers
    )
    assert problem_code(response) == "malformed_request"


# -- malformed input never yields a 5xx and never changes anything ------------------------


def test_body_limits_and_media_type(rp: RelyingParty) -> None:
    http, path = rp.http, p.DevicePaths.AUTHENTICATION_START
    big = http.post(
        path,
        content=b"{" + b" " * p.MAX_BODY_BYTES + b"}",
        headers={"content-type": "application/json"},
    )
    assert problem_code(big) == "payload_too_large"
    chunked = http.post(path, content=iter([b"a=b"]), headers={"content-type": "text/plain"})
    assert problem_code(chunked) == "unsupported_media_type"
    form = http.post(path, content=b"a=b", headers={"content-type": "text/plain"})
    assert problem_code(form) == "unsupported_media_type"
    plain = http.post(path, content=b"{}", headers={"content-type": "application/json"})
    assert problem_code(plain) == "secure_channel_required"
    assert problem_code(http.sealed(path, b"{")) == "malformed_request"
    assert problem_code(http.get("/nope")) == "not_found"
    wrong_method = http.get(path)
    assert problem_code(wrong_method) == "method_not_allowed"
    assert wrong_method.headers["allow"] == "POST"


def test_bad_base64_is_malformed(rp: RelyingParty) -> None:
    device = activated(rp)
    start = device.start_auth()
    wire = device.auth_request(start)[0].to_wire()
    for field, value in [
        ("softwareSignature", "not base64!"),
        ("softwareKeyId", "AAAA"),
        ("softwareSignature", wire["softwareSignature"] + "="),
        ("nextSoftwarePublicKey", "A" * 5000),
    ]:
        response = rp.http.post(p.DevicePaths.AUTHENTICATION_FINISH, json={**wire, field: value})
        assert problem_code(response) == "malformed_request", field
        assert response.json()["invalidParams"][0]["name"] == field
