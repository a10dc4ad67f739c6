"""Signed results end to end (docs/signed-results.md): every operation that ends has a JWS,
made in the unit of work that ends it, served on GET /rp/v1/operations/{id} and verified here
by an independent JOSE library (jwcrypto) against the unauthenticated JWKS URL; across a key
rotation; keys wrapped under the master key. On SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import hashlib
import json
import types
from pathlib import Path
from typing import Any

import pytest
from jwcrypto import jwk as jc_jwk
from jwcrypto import jws as jc_jws
from sqlalchemy import select, update

from keybound import crypto
from keybound import protocol as p
from keybound.errors import ErrorCode, InvalidState
from keybound.server.events.results import ResultAlgorithm, verify_result
from keybound.server.secrets import MasterKey, Purpose, SecretBox, SecretUnusable
from keybound.server.services import Keybound
from keybound.server.services.resultkeys import DEFAULT_ISSUER, ResultKeys, wrap_binding
from keybound.storage import tables as t
from tests.helpers import RawDevice, RelyingParty, problem_code
from tests.server.services.test_authentication import activated

DAY = 86_400
PAY = {"content": "Pay 100 EUR to ACME", "mimeType": "text/plain"}


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def lp(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def context_hash(context: dict[str, str] | None) -> str:
    """docs/protocol.md §4.1.2, written out with hashlib (not keybound's context_hash)."""
    if context is None:
        return b64u(hashlib.sha256(b"").digest())
    return b64u(
        hashlib.sha256(lp(context["mimeType"].encode()) + lp(context["content"].encode())).digest()
    )


def jwcrypto_claims(token: str, jwks: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The independent check: jwcrypto takes the key the kid names from the published JWKS
    and the algorithm that key is published for (never the token's word alone)."""
    keyset = jc_jwk.JWKSet.from_json(json.dumps(jwks))
    obj = jc_jws.JWS()
    obj.deserialize(token)
    header = obj.jose_header
    key = keyset.get_key(header["kid"])
    assert key is not None, "kid not published"
    published = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    assert header["alg"] == published["alg"] and header["typ"] == "keybound-result+jwt"
    obj.verify(key, alg=published["alg"])
    return header, json.loads(obj.payload)


def verified(rp: RelyingParty, op_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The operation as the relying party reads it, and its JWS's claims, checked."""
    operation = rp.operation(op_id)
    token = operation["resultJws"]
    _, claims = jwcrypto_claims(token, rp.jwks())
    assert claims["operationId"] == claims["jti"] == op_id
    assert claims["state"] == operation["state"]
    return operation, claims


def test_a_completed_authentication_is_signed_with_every_claim(
    rp: RelyingParty, kb: Keybound
) -> None:
    device = activated(rp)
    op = rp.start_operation(device.device_id, preOperationContext=PAY)["operationId"]
    assert device.authenticate(op).status_code == 200
    operation, claims = verified(rp, op)
    assert claims == {
        "iss": DEFAULT_ISSUER,
        "iat": claims["iat"],
        "jti": op,
        "applicationId": rp.app_id,
        "operationId": op,
        "operationType": "AUTHENTICATION",
        "initiator": "BACKEND",
        "state": "COMPLETED",
        "userId": operation["userId"],
        "deviceId": device.device_id,
        "authMethod": "DEVICE",
        "authLevel": "ONE_FACTOR",
        "preOperationContextHash": context_hash(PAY),
        # the application's enabledRiskData (the default two), nothing more
        "riskData": {"hwKeyClientStatus": "OK", "hwKeyServerResult": "VALID"},
        "hwKeyServerResult": "VALID",
        # attestation is off by default: what it established, whatever riskData shows
        "attestation": {"hwKeyAttestation": "NOT_CHECKED"},
        "createdAt": operation["createdAt"].replace("+00:00", "Z"),
        "completedAt": operation["completedAt"].replace("+00:00", "Z"),
    }
    assert claims["iat"] == int(kb.clock())
    # keybound's own verifier agrees
    assert (
        verify_result(
            operation["resultJws"],
            rp.jwks(),
            expected_issuer=DEFAULT_ISSUER,
            expected_operation_id=op,
            expected_application_id=rp.app_id,
        ).state
        is p.OperationState.COMPLETED
    )


def test_device_initiated_results_name_the_user_and_the_enabled_risk_data(make_rp: Any) -> None:
    rp = make_rp(enabledRiskData="hwKeyServerResult,devicePlatform")
    device = activated(rp, hardware=False)
    start = device.start_auth()
    assert device.finish_auth(*device.auth_request(start)).status_code == 200
    operation, claims = verified(rp, start.operation_id)
    assert "userId" not in operation  # a device-initiated operation names no user ...
    assert claims["userId"] == rp.device(device.device_id)["userId"]  # ... its result does
    assert claims["riskData"] == {
        "hwKeyServerResult": "NO_KEY_REGISTERED",
        "devicePlatform": "ANDROID",
    }
    assert claims["preOperationContextHash"] == context_hash(None)


def test_every_way_an_operation_ends_is_signed(rp: RelyingParty, make_rp: Any, clock: Any) -> None:
    # activation (completed)
    code = rp.activation_code()
    device = RawDevice(rp.http, rp.app_id)
    assert device.activate(code).status_code == 200
    assert verified(rp, code["operationId"])[1]["operationType"] == "ACTIVATION"
    # authentication failed by the strategy (corrupted hardware signature under SUPPORTED)
    start = device.start_auth()
    response = device.finish_auth(*device.auth_request(start, hw_mode="corrupt"))
    assert problem_code(response) == "hardware_key_invalid"
    _, claims = verified(rp, start.operation_id)
    assert (claims["state"], claims["failureCode"], claims["hwKeyServerResult"]) == (
        "FAILED",
        "hardware_key_invalid",
        "INVALID",
    )
    assert "authLevel" not in claims
    # declined by the user
    op = rp.start_operation(device.device_id, preOperationContext=PAY)["operationId"]
    started = device.start_auth(op)
    key = device.sw
    tbs = p.transcript(
        p.Purpose.DECLINE,
        application_id=rp.app_id,
        device_id=device.device_id,
        operation_id=op,
        challenge=started.challenge,
        context_digest=p.context_hash(started.pre_operation_context),
        software_public_key=b"",
    )
    assert (
        device.post(
            p.DevicePaths.AUTHENTICATION_DECLINE,
            p.DeclineRequest(
                application_id=rp.app_id,
                device_id=device.device_id,
                operation_id=op,
                software_key_id=crypto.key_id(crypto.public_der(key)),
                software_signature=crypto.sign_p256(key, tbs),
            ),
        ).status_code
        == 200
    )
    assert verified(rp, op)[1]["failureCode"] == "declined"
    # expired unanswered: signed on its first read, and the same token ever after
    op = rp.start_operation(device.device_id)["operationId"]
    clock.advance(301)
    operation, claims = verified(rp, op)
    assert (operation["state"], claims["state"]) == ("EXPIRED", "EXPIRED")
    assert "completedAt" not in claims
    clock.advance(10)
    assert rp.operation(op)["resultJws"] == operation["resultJws"]
    # pending ones of a device the relying party deactivates
    op = rp.start_operation(device.device_id)["operationId"]
    assert rp.operation(op).get("resultJws") is None  # pending: nothing to sign yet
    rp.call("POST", f"/rp/v1/devices/{device.device_id}/deactivate", expect=200)
    assert verified(rp, op)[1]["failureCode"] == "device_inactive"


def test_a_copied_key_fails_its_operation_and_the_pending_ones_signed(rp: RelyingParty) -> None:
    device = activated(rp)
    pending = rp.start_operation(device.device_id)["operationId"]
    copy = RawDevice(rp.http, rp.app_id, sw=device.sw, hw=None, device_id=device.device_id)
    assert device.authenticate().status_code == 200
    start = copy.start_auth()
    response = copy.finish_auth(*copy.auth_request(start, status=p.HwKeyClientStatus.NOT_SUPPORTED))
    assert problem_code(response) == "software_key_cloned"
    assert verified(rp, start.operation_id)[1]["failureCode"] == "software_key_cloned"
    assert verified(rp, pending)[1]["failureCode"] == "software_key_cloned"


def test_an_operation_has_one_result_an_expired_one_cannot_complete_later(
    rp: RelyingParty, kb: Keybound
) -> None:
    """A result once signed is final: the statements that end an operation require that it
    has none, so a finish by a server whose clock lags cannot contradict a signed EXPIRED."""
    device = activated(rp)
    op = rp.start_operation(device.device_id)["operationId"]
    start = device.start_auth(op)
    with kb.db.write() as conn:  # as if another server had signed it EXPIRED already
        conn.execute(
            update(t.operations)
            .where(t.operations.c.id == op)
            .values(result_jws="signed-elsewhere")
        )
    assert problem_code(device.finish_auth(*device.auth_request(start))) == "challenge_used"
    assert rp.operation(op)["resultJws"] == "signed-elsewhere"


def test_results_verify_across_a_key_rotation(rp: RelyingParty, kb: Keybound, clock: Any) -> None:
    device = activated(rp)
    before = device.start_auth()
    assert device.finish_auth(*device.auth_request(before)).status_code == 200
    old_token = rp.operation(before.operation_id)["resultJws"]
    (old,) = kb.admin.signing_keys()
    with pytest.raises(InvalidState):  # never without a key that signs
        kb.admin.retire_signing_key(old.kid)
    new = kb.admin.create_signing_key()
    kb.admin.retire_signing_key(old.kid, publish_days=30)
    after = device.start_auth()
    assert device.finish_auth(*device.auth_request(after)).status_code == 200
    new_token = rp.operation(after.operation_id)["resultJws"]
    jwks = rp.jwks()
    assert [k["kid"] for k in jwks["keys"]] == [new.kid, old.kid]  # newest first
    assert jwcrypto_claims(old_token, jwks)[0]["kid"] == old.kid  # still verifies
    assert jwcrypto_claims(new_token, jwks)[0]["kid"] == new.kid
    # a retired key signs nothing more, and its private half is gone from the database
    with kb.db.read() as conn:
        wrapped = conn.execute(
            select(t.result_keys.c.wrapped_private_key).where(t.result_keys.c.kid == old.kid)
        ).scalar_one()
    assert wrapped is None
    # its publication ends when the operator said: what it signed stops verifying then
    clock.advance(31 * DAY)
    kb.results.invalidate()
    assert [k["kid"] for k in rp.jwks()["keys"]] == [new.kid]
    with pytest.raises(AssertionError, match="kid not published"):
        jwcrypto_claims(old_token, rp.jwks())


def test_another_process_picks_up_a_rotation_within_its_snapshot_ttl(
    rp: RelyingParty, kb: Keybound
) -> None:
    other = Keybound(kb.db, kb.clock, master_key=kb.master_key)  # another process, one database
    first = kb.admin.signing_keys()[0].kid
    assert other.results.jwks()["keys"][0]["kid"] == first
    created = other.admin.create_signing_key()
    kb.results.invalidate()  # what the TTL does, without waiting for it
    assert kb.results.jwks()["keys"][0]["kid"] == created.kid


def test_eddsa_keys_sign_as_ed25519(rp: RelyingParty, kb: Keybound) -> None:
    key = kb.admin.create_signing_key(ResultAlgorithm.ED25519)
    published = next(k for k in rp.jwks()["keys"] if k["kid"] == key.kid)
    assert (published["kty"], published["crv"], published["alg"]) == ("OKP", "Ed25519", "Ed25519")
    device = activated(rp)
    start = device.start_auth()
    assert device.finish_auth(*device.auth_request(start)).status_code == 200
    header, _ = jwcrypto_claims(rp.operation(start.operation_id)["resultJws"], rp.jwks())
    assert (header["alg"], header["kid"]) == ("Ed25519", key.kid)


def test_the_readme_snippet_verifies_a_result(rp: RelyingParty, kb: Keybound) -> None:
    """The relying party's few lines in the README, run as they are printed there (the JWKS
    fetched from this server instead of kb.example)."""
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text("utf-8")
    section = readme[readme.index("### Signed results") :]
    snippet = section[section.index("```python") + len("```python") : section.index("```\n", 10)]
    kb.admin.set_issuer("https://kb.example")
    device = activated(rp)
    start = device.start_auth()
    assert device.finish_auth(*device.auth_request(start)).status_code == 200
    fetch = types.SimpleNamespace(
        get=lambda url: rp.http.get(url.replace("https://kb.example", ""))
    )
    scope: dict[str, Any] = {
        "operation": rp.operation(start.operation_id),
        "operation_id": start.operation_id,
    }
    exec(snippet.replace("import json, httpx", "import json"), {**scope, "httpx": fetch}, scope)
    assert scope["claims"]["operationId"] == start.operation_id


def test_the_jwks_is_public_and_holds_no_private_key(rp: RelyingParty, kb: Keybound) -> None:
    response = rp.http.get("/.well-known/jwks.json")  # no API key
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/jwk-set+json")
    assert "max-age" in response.headers["cache-control"]
    for key in response.json()["keys"]:
        assert "d" not in key and key["use"] == "sig"


def test_signing_keys_are_wrapped_under_the_master_key(kb: Keybound, tmp_path: Any) -> None:
    with kb.db.read() as conn:
        row = conn.execute(select(t.result_keys)).first()
    assert row is not None and row.wrapped_private_key is not None
    assert b"PRIVATE KEY" not in row.wrapped_private_key
    other = SecretBox(MasterKey(tmp_path / "other.key"))
    with pytest.raises(SecretUnusable):
        other.unwrap(
            Purpose.RESULT_SIGNING_KEY,
            row.wrapped_private_key,
            binding=wrap_binding(row.kid, ResultAlgorithm(row.algorithm)),
        )
    kb.box.unwrap(
        Purpose.RESULT_SIGNING_KEY,
        row.wrapped_private_key,  # its own one opens it
        binding=wrap_binding(row.kid, ResultAlgorithm(row.algorithm)),
    )
    stranger = ResultKeys(kb.db, other, kb.clock)
    # a server with another master key cannot sign (it never signs with a key it cannot open)
    with pytest.raises(Exception) as info:
        stranger.sign({"x": 1})
    assert getattr(info.value, "code", None) is ErrorCode.CONFIGURATION_INVALID


def test_the_issuer_is_the_operators_to_set(rp: RelyingParty, kb: Keybound) -> None:
    kb.admin.set_issuer("https://kb.example")
    device = activated(rp)
    start = device.start_auth()
    assert device.finish_auth(*device.auth_request(start)).status_code == 200
    token = rp.operation(start.operation_id)["resultJws"]
    assert (
        verify_result(token, rp.jwks(), expected_issuer="https://kb.example").issuer
        == "https://kb.example"
    )
    with pytest.raises(Exception) as info:
        kb.admin.set_issuer("not a url")
    assert getattr(info.value, "code", None) is ErrorCode.CONFIGURATION_INVALID
