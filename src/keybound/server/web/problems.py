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

#: what each code means, as the Problem schema documents it (docs/protocol.md §8)
MEANING: Final[dict[ErrorCode, str]] = {
    ErrorCode.MALFORMED_REQUEST: "the request is malformed: its framing or encoding, a body "
    "off the schema (invalidParams names the fields) or on a call that takes none, or a "
    "value the call refuses (docs/protocol.md §3, §8)",
    ErrorCode.CONFIGURATION_INVALID: "an invalid application setting",
    ErrorCode.UNSUPPORTED_ALGORITHM: "a public key that is not ECDSA P-256",
    ErrorCode.PIN_REQUIRED: "DEVICE:PIN without pinProof, or an application that only allows "
    "DEVICE:PIN activated without a pinKey",
    ErrorCode.ENDPOINT_URL_INVALID: "not an absolute http(s) URL keybound may call",
    ErrorCode.ENDPOINT_ADDRESS_REFUSED: "the URL resolves to a refused network",
    ErrorCode.DECRYPTION_FAILED: "a sealed request could not be opened, or was a replay: one "
    "byte-identical answer for every cause, never sealed (docs/channel.md §5)",
    ErrorCode.UNAUTHORIZED: "relying-party API key missing, malformed, unknown or revoked "
    "(with WWW-Authenticate: Bearer)",
    ErrorCode.AUTHENTICATION_FAILED: "unknown or mismatched operation, device or key id, a "
    "decoy challenge, or a signature that does not verify",
    ErrorCode.ACTIVATION_CODE_INVALID: "activation code unknown, expired, used, or of another "
    "application",
    ErrorCode.PIN_INVALID: "wrong PIN proof; the operation is over and the failure counted",
    ErrorCode.HARDWARE_KEY_REQUIRED: "the strategy needs a valid hardware signature "
    "(MISSING, NO_KEY_REGISTERED)",
    ErrorCode.HARDWARE_KEY_INVALID: "the hardware signature does not verify",
    ErrorCode.AUTH_METHOD_NOT_ALLOWED: "method not allowed by the application or operation, "
    "or no PIN registered",
    ErrorCode.DEVICE_LOCKED: "the registration is LOCKED",
    ErrorCode.DEVICE_INACTIVE: "the registration is DEACTIVATED",
    ErrorCode.SOFTWARE_KEY_CLONED: "signed by a software key superseded before the challenge "
    "was issued: a copy; the device is now locked (§4.5)",
    ErrorCode.ATTESTATION_INVALID: "the hardware key's attestation was refused where it "
    "counts; ``reason`` says which check (§6.1, §6.5)",
    ErrorCode.ATTESTATION_REQUIRED: "the platform's attestation mode is REQUIRED and the "
    "activation brought no attested hardware key (§6.5)",
    ErrorCode.NOT_FOUND: "no such path, or no such user, device or operation in this application",
    ErrorCode.METHOD_NOT_ALLOWED: "another method than the path takes (Allow names it)",
    ErrorCode.REQUEST_TIMEOUT: "the request head or body did not arrive in time; the "
    "connection is closed",
    ErrorCode.CHALLENGE_USED: "the operation already finished, or lost a concurrent race",
    ErrorCode.CHALLENGE_EXPIRED: "the challenge or the operation expired",
    ErrorCode.INVALID_STATE: "not possible in the device's state",
    ErrorCode.CONFLICT: "a user with this externalRef exists",
    ErrorCode.SOFTWARE_KEY_SUPERSEDED: "signed by a key another ceremony of this device "
    "rotated after this challenge was issued: retry with the current key (§4.5)",
    ErrorCode.PAYLOAD_TOO_LARGE: "the body (a sealed request's: the body inside) exceeds "
    "163 840 bytes",
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: "a body that is neither application/json nor, on the "
    "device API, application/keybound-sealed",
    ErrorCode.SECURE_CHANNEL_REQUIRED: "a plaintext request to a device endpoint: seal it "
    "(docs/channel.md)",
    ErrorCode.REQUEST_HEADER_FIELDS_TOO_LARGE: "the request line and header fields exceed "
    "the server's limit; the connection is closed",
    ErrorCode.SERVICE_UNAVAILABLE: "the server process has no connection slot free; the "
    "connection is closed",
    ErrorCode.INTERNAL: "an unexpected failure: nothing of the inside is said; an unknown "
    "outcome (§4.5)",
}

#: RFC 9457 problem document, as every error is answered (docs/protocol.md §8)
PROBLEM_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "description": "An RFC 9457 problem. Clients switch on `code`; `detail` is for humans.",
    "required": ["type", "title", "status", "code"],
    "properties": {
        "type": {
            "type": "string",
            "pattern": "^urn:keybound:problem:[a-z_]+$",
            "description": "`urn:keybound:problem:` and the code.",
            "examples": ["urn:keybound:problem:pin_invalid"],
        },
        "title": {
            "type": "string",
            "description": "The code with spaces.",
            "examples": ["pin invalid"],
        },
        "status": {
            "type": "integer",
            "minimum": 400,
            "maximum": 599,
            "description": "The HTTP status (when sealed: the inner status).",
            "examples": [403],
        },
        "detail": {
            "type": "string",
            "description": "For humans; may change. Absent on a 500.",
            "examples": ["authentication failed"],
        },
        "code": {
            "type": "string",
            "description": "The stable error code.",
            "oneOf": [
                {
                    "const": code.value,
                    "description": f"{STATUS.get(code, 500)}: {MEANING.get(code, '')}",
                }
                for code in sorted(set(STATUS) | {ErrorCode.INTERNAL})
            ],
        },
        "operationId": {
            "type": "string",
            "description": "The operation a finish made "
            "terminal (hardware_key_invalid, hardware_key_required, "
            "attestation_invalid, attestation_required, pin_invalid, "
            "software_key_cloned).",
            "examples": ["c0ffee00-0000-4000-8000-0000000000a1"],
        },
        "reason": {
            "type": "string",
            "description": "With attestation_invalid at activation: "
            "the refused check's stable reason (docs/protocol.md §6.5).",
            "examples": ["CHALLENGE_MISMATCH"],
        },
        "invalidParams": {
            "type": "array",
            "maxItems": 20,
            "description": "With a schema malformed_request: the fields that "
            "do not match, as dotted paths (`(body)`: the body as a whole).",
            "items": {
                "type": "object",
                "required": ["name", "reason"],
                "properties": {"name": {"type": "string"}, "reason": {"type": "string"}},
            },
            "examples": [
                [{"name": "challenge", "reason": "Value error, not base64url without padding"}]
            ],
        },
    },
}


def problem_body(code: ErrorCode, detail: str, **extra: Any) -> tuple[int, bytes]:
    status = STATUS.get(code, 500)
    body = {
        "type": f"urn:keybound:problem:{code.value}",
        "title": code.value.replace("_", " "),
        "status": status,
        "code": code.value,
        **extra,
    }
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


def problem(
    code: ErrorCode, detail: str, *, headers: dict[str, str] | None = None, **extra: Any
) -> Response:
    status, body = problem_body(code, detail, **extra)
    return problem_response(status, body, code, headers=headers)


def problem_response(
    status: int, body: bytes, code: ErrorCode, *, headers: dict[str, str] | None = None
) -> Response:
    headers = dict(headers or {})
    if code is ErrorCode.UNAUTHORIZED:
        headers["WWW-Authenticate"] = "Bearer"
    return Response(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def invalid_params(errors: Sequence[Any], skip: int = 0) -> list[dict[str, str]]:
    """pydantic errors as RFC 9457 ``invalidParams`` (``skip`` drops FastAPI's "body")."""
    return [
        {
            "name": ".".join(str(p) for p in err.get("loc", ())[skip:]) or "(body)",
            "reason": str(err.get("msg", "")),
        }
        for err in errors[:20]
    ]
