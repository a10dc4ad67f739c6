"""The signature operation (docs/protocol.md §3.2.5, §4.1.1) end to end through the sealed
device API: the relying party sends data, the device sees it in its pending list and at
start, its keys sign a transcript of purpose ``signature`` that binds the data's hash, and
the result's JWS carries that hash. A device cannot sign other data than the operation's, nor
pass an authentication's signature off as a signature. On SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from keybound import crypto
from keybound import protocol as p
from keybound.server.services import Keybound
from tests.helpers import RelyingParty, problem_code
from tests.server.services.test_authentication import activated, snapshot
from tests.server.services.test_resultkeys import verified

CONTRACT = "I, Alice, agree to the loan contract #4711: 10 000 EUR at 3.1 % over 5 years."
HTML = "<p>Transfer <b>100 EUR</b> to ACME</p>"


def sha256_of(content: str, mime_type: str) -> str:
    """dataHash as docs/signed-results.md defines it, with hashlib alone: SHA-256 over the
    §4.1.2 encoding LP(mimeType) || LP(content)."""
    encoded = b"".join(
        len(v).to_bytes(4, "big") + v for v in (mime_type.encode(), content.encode())
    )
    return base64.urlsafe_b64encode(hashlib.sha256(encoded).digest()).rstrip(b"=").decode()


def test_a_signature_end_to_end(rp: RelyingParty) -> None:
    device = activated(rp)
    created = rp.start_signature(device.device_id, CONTRACT, requiredAuthMethod="DEVICE")
    op = created["operationId"]
    assert (created["type"], created["state"], created["initiator"]) == (
        "SIGNATURE",
        "PENDING",
        "BACKEND",
    )
    # the device sees it, with the data, in its pending list
    listed = device.post(
        p.DevicePaths.PENDING_OPERATIONS,
        p.PendingOperationsRequest(application_id=rp.app_id, device_id=device.device_id),
    ).json()["operations"]
    assert listed == [
        {
            "operationId": op,
            "expiresAt": listed[0]["expiresAt"],
            "requiredAuthMethod": "DEVICE",
            "operationType": "SIGNATURE",
            "dataToSign": {"content": CONTRACT, "mimeType": "text/plain"},
        }
    ]
    start = device.start_auth(op)
    assert start.operation_type is p.OperationType.SIGNATURE
    assert start.data_to_sign == p.OperationContext(content=CONTRACT, mime_type="text/plain")
    assert start.pre_operation_context is None
    response = device.finish_auth(*device.auth_request(start))
    assert response.status_code == 200, response.text
    operation, claims = verified(rp, op)
    assert (operation["state"], operation["type"]) == ("COMPLETED", "SIGNATURE")
    assert claims["operationType"] == "SIGNATURE"
    assert claims["dataHash"] == sha256_of(CONTRACT, "text/plain")
    assert (claims["authMethod"], claims["hwKeyServerResult"]) == ("DEVICE", "VALID")
    # the hardware key signed the same transcript: the data's hash under purpose signature
    assert claims["riskData"]["hwKeyServerResult"] == "VALID"


def test_the_device_cannot_sign_other_data_than_the_operations(
    rp: RelyingParty, kb: Keybound
) -> None:
    device = activated(rp)
    op = rp.start_signature(device.device_id, HTML, "text/html")["operationId"]
    start = device.start_auth(op)
    before = snapshot(kb)
    for forged in (
        # other content, or the same content under another media type
        device.auth_request(
            start,
            shown=p.OperationContext(
                content="<p>Transfer <b>1 EUR</b> to ACME</p>", mime_type="text/html"
            ),
        ),
        device.auth_request(start, shown=p.OperationContext(content=HTML, mime_type="text/plain")),
        # an authentication's transcript over the same data is not a signature (§4.1.1)
        device.auth_request(start, purpose=p.Purpose.AUTHENTICATION),
        device.auth_request(start, shown=None),
    ):
        assert problem_code(device.finish_auth(*forged)) == "authentication_failed"
    assert snapshot(kb) == before  # refused before anything changed
    assert device.finish_auth(*device.auth_request(start)).status_code == 200
    assert verified(rp, op)[1]["dataHash"] == sha256_of(HTML, "text/html")


def test_a_signature_cannot_stand_in_for_an_authentication(rp: RelyingParty) -> None:
    """The stored operation type decides the purpose, never the request: a signature-purpose
    transcript does not complete an authentication."""
    device = activated(rp)
    op = rp.start_operation(
        device.device_id, preOperationContext={"content": CONTRACT, "mimeType": "text/plain"}
    )["operationId"]
    start = device.start_auth(op)
    forged = device.auth_request(start, purpose=p.Purpose.SIGNATURE)
    assert problem_code(device.finish_auth(*forged)) == "authentication_failed"


def test_a_signature_can_be_declined(rp: RelyingParty) -> None:
    device = activated(rp)
    op = rp.start_signature(device.device_id, CONTRACT)["operationId"]
    start = device.start_auth(op)
    tbs = p.transcript(
        p.Purpose.DECLINE,
        application_id=rp.app_id,
        device_id=device.device_id,
        operation_id=op,
        challenge=start.challenge,
        context_digest=p.context_hash(start.data_to_sign),
        software_public_key=b"",
    )
    response = device.post(
        p.DevicePaths.AUTHENTICATION_DECLINE,
        p.DeclineRequest(
            application_id=rp.app_id,
            device_id=device.device_id,
            operation_id=op,
            software_key_id=crypto.key_id(crypto.public_der(device.sw)),
            software_signature=crypto.sign_p256(device.sw, tbs),
        ),
    )
    assert response.status_code == 200
    _, claims = verified(rp, op)
    assert (claims["state"], claims["failureCode"]) == ("FAILED", "declined")
    assert claims["dataHash"] == sha256_of(CONTRACT, "text/plain")  # what was refused


def test_a_signature_with_the_pin(make_rp: Any) -> None:
    rp = make_rp(allowedAuthMethods="DEVICE:PIN")
    device = activated(rp, pin_key=b"k" * 32)
    op = rp.start_signature(device.device_id, CONTRACT)["operationId"]
    start = device.start_auth(op)
    assert start.allowed_auth_methods == [p.AuthMethod.DEVICE_PIN]
    request = device.auth_request(start, method=p.AuthMethod.DEVICE_PIN)
    assert device.finish_auth(*request).status_code == 200
    assert verified(rp, op)[1]["authLevel"] == "TWO_FACTOR"


def test_signature_requests_are_checked(rp: RelyingParty) -> None:
    device = activated(rp)
    path = f"/rp/v1/devices/{device.device_id}/signatures"
    assert rp.call("POST", path, {}, expect=400)["code"] == "malformed_request"
    too_long = {
        "dataToSign": {"content": "x" * (p.MAX_DATA_TO_SIGN_BYTES + 1), "mimeType": "text/plain"}
    }
    assert rp.call("POST", path, too_long, expect=400)["code"] == "malformed_request"
    assert (
        rp.call(
            "POST",
            "/rp/v1/devices/00000000-0000-4000-8000-000000000000/signatures",
            {"dataToSign": {"content": "x", "mimeType": "text/plain"}},
            expect=404,
        )["code"]
        == "not_found"
    )
    rp.call("POST", f"/rp/v1/devices/{device.device_id}/lock", expect=200)
    assert (
        rp.call(
            "POST", path, {"dataToSign": {"content": "x", "mimeType": "text/plain"}}, expect=409
        )["code"]
        == "invalid_state"
    )
