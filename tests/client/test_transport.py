"""Transport decoding with httpx.MockTransport."""

from __future__ import annotations

import json

import httpx
import pytest

from keybound import protocol as p
from keybound.client.transport import Transport, outcome_unknown
from keybound.errors import ClientError, ErrorCode

REQ = p.PendingOperationsRequest(
    application_id="app", device_id="0b6f3c7e-8a51-4d5e-9f0a-1c2d3e4f5a6b"
)


def transport(handler) -> Transport:  # type: ignore[no-untyped-def]
    return Transport(
        httpx.Client(transport=httpx.MockTransport(handler), base_url="http://kb.test")
    )


def test_success_and_request_encoding() -> None:
    seen = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen["path"] = request.url.path
        seen["ct"] = request.headers["content-type"]
        seen["body"] = json.loads(request.content)
        return httpx.Response(200, json={"operations": []})

    result = transport(handler).post(
        p.DevicePaths.PENDING_OPERATIONS, REQ, p.PendingOperationsResponse
    )
    assert result.operations == []
    assert seen == {
        "path": "/device/v1/operations/pending",
        "ct": "application/json",
        "body": {"applicationId": "app", "deviceId": REQ.device_id},
    }


@pytest.mark.parametrize(
    ("status", "body", "ctype", "code", "unknown"),
    [
        (
            401,
            {"code": "device_locked", "detail": "locked", "status": 401},
            "application/problem+json",
            ErrorCode.DEVICE_LOCKED,
            False,
        ),
        (
            400,
            {"code": "no_such_code"},
            "application/problem+json",
            ErrorCode.CLIENT_TRANSPORT,
            True,
        ),
        (
            400,
            {"code": "client_transport"},
            "application/problem+json",
            ErrorCode.CLIENT_TRANSPORT,
            True,
        ),
        (500, {"code": "internal_error"}, "application/problem+json", ErrorCode.INTERNAL, True),
        (502, "<html>bad gateway</html>", "text/html", ErrorCode.CLIENT_TRANSPORT, True),
        (200, {"unexpected": 1}, "application/json", ErrorCode.CLIENT_TRANSPORT, True),
        (200, {"operations": []}, "text/plain", ErrorCode.CLIENT_TRANSPORT, True),
    ],
)
def test_errors(status, body, ctype, code, unknown) -> None:  # type: ignore[no-untyped-def]
    def handler(request: httpx.Request) -> httpx.Response:
        content = body if isinstance(body, str) else json.dumps(body)
        return httpx.Response(status, content=content.encode(), headers={"content-type": ctype})

    with pytest.raises(ClientError) as info:
        transport(handler).post("/x", REQ, p.PendingOperationsResponse)
    assert info.value.code is code
    assert outcome_unknown(info.value) is unknown


def test_network_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    with pytest.raises(ClientError) as info:
        transport(handler).post("/x", REQ, p.PendingOperationsResponse)
    assert info.value.code is ErrorCode.CLIENT_TRANSPORT
    assert outcome_unknown(info.value)


@pytest.mark.parametrize(
    ("padding", "code"),
    [
        (0, ErrorCode.DECRYPTION_FAILED),
        # an unsealed problem larger than any answer is not read, as for every other problem
        (p.MAX_BODY_BYTES, ErrorCode.CLIENT_TRANSPORT),
    ],
)
def test_sealed_transport_reads_problems_as_transport_does(padding: int, code: ErrorCode) -> None:
    from keybound import channel
    from keybound.client import SealedTransport

    def handler(request: httpx.Request) -> httpx.Response:
        body = {"code": "decryption_failed", "status": 400, "detail": "x" * padding}
        return httpx.Response(400, json=body, headers={"content-type": "application/problem+json"})

    key = channel.generate_e2e_key(now=1_700_000_000)
    pin = channel.export_pin(key, application_id="app", server_url="http://127.0.0.1:9")
    sealed = SealedTransport(
        pin, httpx.Client(transport=httpx.MockTransport(handler), base_url="http://kb.test")
    )
    with pytest.raises(ClientError) as info:
        sealed.post(p.DevicePaths.PENDING_OPERATIONS, REQ, p.PendingOperationsResponse)
    assert info.value.code is code
    assert outcome_unknown(info.value) is (code is ErrorCode.CLIENT_TRANSPORT)
