"""The device's HTTP transport: one place that turns protocol messages into bytes and back.

:meth:`Transport.post` encodes a request message, hands the bytes to :meth:`Transport.exchange`
and decodes the answer: a 2xx JSON body into the expected response model, an RFC 9457
``application/problem+json`` body into :class:`~keybound.errors.ClientError` carrying the
server's stable :class:`~keybound.errors.ErrorCode`. A secure-channel layer wraps the bytes by
overriding :meth:`Transport.exchange` (seal the request body, open the response body); nothing
else needs to change.

The transport tells "the server definitely refused" from "the outcome is unknown"
(:func:`outcome_unknown`): the device keeps every key the server may consider current until
it knows which one that is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
from pydantic import ValidationError

from keybound.errors import ClientError, ErrorCode
from keybound.protocol import MAX_BODY_BYTES, Message

M = TypeVar("M", bound=Message)

JSON = "application/json"
PROBLEM_JSON = "application/problem+json"
_REQUEST_HEADERS = {"content-type": JSON, "accept": f"{JSON}, {PROBLEM_JSON}"}
_SERVER_CODES = frozenset(ErrorCode) - {
    ErrorCode.CLIENT_NOT_ACTIVATED,
    ErrorCode.CLIENT_TRANSPORT,
    ErrorCode.CLIENT_CONFIGURATION,
    ErrorCode.KEYSTORE_UNAVAILABLE,
    ErrorCode.KEY_GENERATION_FAILED,
    ErrorCode.KEY_UNAVAILABLE,
    ErrorCode.SIGNING_FAILED,
}


@dataclass(frozen=True, kw_only=True)
class RawResponse:
    """An HTTP answer as bytes, before decoding."""

    status: int
    content_type: str
    body: bytes


class Transport:
    """JSON over HTTP to the device API, around an injectable :class:`httpx.Client`.

    Pass a client with ``base_url`` set to the server (tests pass a Starlette ``TestClient``,
    which is an ``httpx.Client``). The transport does not own the client: close it yourself.
    """

    def __init__(self, client: httpx.Client) -> None:
        self._client = client

    def post(self, path: str, request: Message, response_type: type[M]) -> M:
        """POST ``request`` to ``path`` and return the decoded ``response_type``.

        Raises ClientError with the server's code for a problem response, and with
        CLIENT_TRANSPORT for network failures and anything that is not a valid answer.
        """
        body = json.dumps(request.to_wire(), separators=(",", ":")).encode()
        raw = self.exchange(path, body)
        if not 200 <= raw.status < 300:
            raise _problem(raw)
        return _decode(raw, response_type)

    def exchange(self, path: str, body: bytes) -> RawResponse:
        """Send encoded request bytes and return the raw answer. Override to wrap the bytes
        (secure channel); raise ClientError(CLIENT_TRANSPORT) on network failure."""
        return self._send(path, body, _REQUEST_HEADERS)

    def _send(self, path: str, body: bytes, headers: dict[str, str]) -> RawResponse:
        """POST ``body`` with ``headers``; the raw answer, or ClientError(CLIENT_TRANSPORT)."""
        try:
            response = self._client.post(path, content=body, headers=headers)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            server = str(getattr(self._client, "base_url", "")).rstrip("/") or "the server"
            raise ClientError(
                _network_failure(server, path, exc), code=ErrorCode.CLIENT_TRANSPORT
            ) from exc
        content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
        return RawResponse(
            status=response.status_code, content_type=content_type, body=response.content
        )


def _network_failure(server: str, path: str, exc: Exception) -> str:
    """What went wrong and what to do, for a request that got no HTTP answer."""
    reason = str(exc)[:200] or type(exc).__name__
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return (
            f"cannot reach the keybound server at {server} ({reason}): check that it is "
            "running and that this is its address (the server URL in the channel pin), "
            "then retry"
        )
    if isinstance(exc, httpx.TimeoutException):
        return (
            f"the keybound server at {server} did not answer {path} in time: retry (the "
            "device keeps its keys until it knows the outcome)"
        )
    return (
        f"the request to {server}{path} failed ({type(exc).__name__}: {reason}): retry "
        "(the device keeps its keys until it knows the outcome)"
    )


def outcome_unknown(error: ClientError) -> bool:
    """True when a request may have taken effect although no definite answer arrived: a
    network failure, an unreadable answer, or a 5xx. A 4xx problem with a known code is a
    definite refusal (the server changed nothing)."""
    status = error.fields.get("status")
    if error.code is ErrorCode.CLIENT_TRANSPORT or not isinstance(status, int):
        return True
    return status >= 500


def _decode(raw: RawResponse, response_type: type[M]) -> M:
    if len(raw.body) > MAX_BODY_BYTES:
        raise _bad_answer(raw, "response body too large")
    if raw.content_type != JSON:
        raise _bad_answer(raw, f"unexpected content type {raw.content_type!r}")
    try:
        return response_type.model_validate_json(raw.body)
    except ValidationError as exc:
        raise _bad_answer(raw, f"malformed {response_type.__name__}") from exc


def _problem(raw: RawResponse) -> ClientError:
    document = problem_document(raw)
    if document is None:
        return _bad_answer(raw, f"HTTP {raw.status} without a problem document")
    code_value = document.get("code")
    detail = document.get("detail") or document.get("title") or f"HTTP {raw.status}"
    code = ErrorCode(code_value) if code_value in _SERVER_CODES else ErrorCode.CLIENT_TRANSPORT
    return ClientError(
        str(detail)[:500],
        code=code,
        status=raw.status,
        problem_type=str(document.get("type", "about:blank")),
        server_code=str(code_value),
        operation_id=document.get("operationId"),
    )


def problem_document(raw: RawResponse) -> dict[str, Any] | None:
    """The JSON object of an error answer, or None (not JSON, too large, not an object)."""
    if raw.content_type not in (PROBLEM_JSON, JSON) or len(raw.body) > MAX_BODY_BYTES:
        return None
    try:
        document = json.loads(raw.body)
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


def _bad_answer(raw: RawResponse, detail: str) -> ClientError:
    return ClientError(detail, code=ErrorCode.CLIENT_TRANSPORT, status=raw.status)
