"""The one table from error code to HTTP status, and the one RFC 9457 problem+json
serialiser, for every app (docs/protocol.md §8)."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any, Final

from starlette.responses import Response

from keybound.errors import ErrorCode, KeyboundError

log = logging.getLogger("keybound.server")

PROBLEM_JSON: Final = "application/problem+json"

#: error code -> HTTP status (docs/protocol.md §8)
STATUS: Final[dict[ErrorCode, int]] = {
    ErrorCode.MALFORMED_REQUEST: 400,
    ErrorCode.CONFIGURATION_INVALID: 400,
    ErrorCode.UNSUPPORTED_ALGORITHM: 400,
    ErrorCode.PIN_REQUIRED: 400,
    ErrorCode.ENDPOINT_URL_INVALID: 400,
    ErrorCode.ENDPOINT_ADDRESS_REFUSED: 400,
    ErrorCode.DECRYPTION_FAILED: 400,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.AUTHENTICATION_FAILED: 401,
    ErrorCode.ACTIVATION_CODE_INVALID: 401,
    ErrorCode.PIN_INVALID: 403,
    ErrorCode.HARDWARE_KEY_REQUIRED: 403,
    ErrorCode.HARDWARE_KEY_INVALID: 403,
    ErrorCode.AUTH_METHOD_NOT_ALLOWED: 403,
    ErrorCode.DEVICE_LOCKED: 403,
    ErrorCode.DEVICE_INACTIVE: 403,
    ErrorCode.SOFTWARE_KEY_CLONED: 403,
    ErrorCode.ATTESTATION_INVALID: 403,
    ErrorCode.ATTESTATION_REQUIRED: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.REQUEST_TIMEOUT: 408,
    ErrorCode.CHALLENGE_USED: 409,
    ErrorCode.CHALLENGE_EXPIRED: 409,
    ErrorCode.INVALID_STATE: 409,
    ErrorCode.CONFLICT: 409,
    ErrorCode.SOFTWARE_KEY_SUPERSEDED: 409,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: 415,
    ErrorCode.SECURE_CHANNEL_REQUIRED: 415,
    ErrorCode.REQUEST_HEADER_FIELDS_TOO_LARGE: 431,
    ErrorCode.SERVICE_UNAVAILABLE: 503,
}

#: RFC 9457 problem document, as every error is answered (docs/protocol.md §8)
PROBLEM_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["type", "title", "status", "code"],
    "properties": {
        "type": {"type": "string"}, "title": {"type": "string"},
        "status": {"type": "integer"}, "detail": {"type": "string"},
        "code": {"type": "string", "enum": sorted(
            {code.value for code in STATUS} | {ErrorCode.INTERNAL.value})},
        "operationId": {"type": "string"},
        "reason": {"type": "string"},
        "invalidParams": {"type": "array", "items": {
            "type": "object", "properties": {"name": {"type": "string"},
                                             "reason": {"type": "string"}}}},
    },
}


def problem_body(code: ErrorCode, detail: str, **extra: Any) -> tuple[int, bytes]:
    status = STATUS.get(code, 500)
    body = {"type": f"urn:keybound:problem:{code.value}", "title": code.value.replace("_", " "),
            "status": status, "code": code.value, **extra}
    if status < 500:  # a server fault says nothing about its inside (§8)
        body["detail"] = detail
    return status, json.dumps(body, separators=(",", ":")).encode()


def refusal(exc: KeyboundError) -> tuple[int, bytes]:
    """The problem answering a domain error (the same through every door and codec)."""
    if exc.code not in STATUS:
        log.error("unexpected %s: %s", exc.code.value, exc.detail)
    extra = {"operationId": exc.fields["operation_id"]} if "operation_id" in exc.fields else {}
    if "reason" in exc.fields:  # which attestation check refused (docs/protocol.md §6.5)
        extra["reason"] = exc.fields["reason"]
    return problem_body(exc.code, exc.detail, **extra)


def problem(code: ErrorCode, detail: str, *, headers: dict[str, str] | None = None,
            **extra: Any) -> Response:
    status, body = problem_body(code, detail, **extra)
    return problem_response(status, body, code, headers=headers)


def problem_response(status: int, body: bytes, code: ErrorCode, *,
                     headers: dict[str, str] | None = None) -> Response:
    headers = dict(headers or {})
    if code is ErrorCode.UNAUTHORIZED:
        headers["WWW-Authenticate"] = "Bearer"
    return Response(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def invalid_params(errors: Sequence[Any], skip: int = 0) -> list[dict[str, str]]:
    """pydantic errors as RFC 9457 ``invalidParams`` (``skip`` drops FastAPI's "body")."""
    return [{"name": ".".join(str(p) for p in err.get("loc", ())[skip:]) or "(body)",
             "reason": str(err.get("msg", ""))} for err in errors[:20]]
