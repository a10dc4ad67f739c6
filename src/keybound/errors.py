"""One exception root for keybound, with stable machine-readable codes.

Every error the server can return to a caller, and every error the SDK raises, is a
:class:`KeyboundError` carrying an :class:`ErrorCode`. The HTTP layer maps codes to status
codes in one table (``keybound.server.web.problems``); tests assert the code, never the message.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    """Stable error codes. Values never change once released; see docs/protocol.md §8."""

    # Request shape
    MALFORMED_REQUEST = "malformed_request"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    # HTTP edge (server/web/edge.py): refused before any handler runs
    REQUEST_TIMEOUT = "request_timeout"
    REQUEST_HEADER_FIELDS_TOO_LARGE = "request_header_fields_too_large"
    SERVICE_UNAVAILABLE = "service_unavailable"
    # Relying-party / admin authentication
    UNAUTHORIZED = "unauthorized"
    # Device ceremonies
    ACTIVATION_CODE_INVALID = "activation_code_invalid"
    AUTHENTICATION_FAILED = "authentication_failed"
    CHALLENGE_EXPIRED = "challenge_expired"
    CHALLENGE_USED = "challenge_used"
    HARDWARE_KEY_REQUIRED = "hardware_key_required"
    HARDWARE_KEY_INVALID = "hardware_key_invalid"
    PIN_INVALID = "pin_invalid"
    PIN_REQUIRED = "pin_required"
    AUTH_METHOD_NOT_ALLOWED = "auth_method_not_allowed"
    DEVICE_LOCKED = "device_locked"
    DEVICE_INACTIVE = "device_inactive"
    SOFTWARE_KEY_CLONED = "software_key_cloned"
    #: retryable: the key was rotated by another ceremony of this device meanwhile (§4.5)
    SOFTWARE_KEY_SUPERSEDED = "software_key_superseded"
    DECLINED = "declined"  # an operation's failureCode only: the user declined it (§3.1.7)
    UNSUPPORTED_ALGORITHM = "unsupported_algorithm"
    # Key attestation (issue 15): the failure's ``reason`` field says which check refused it
    ATTESTATION_INVALID = "attestation_invalid"
    #: the platform's attestation mode is REQUIRED and the activation brought none (§6.5)
    ATTESTATION_REQUIRED = "attestation_required"
    # State
    INVALID_STATE = "invalid_state"
    CONFLICT = "conflict"
    CONFIGURATION_INVALID = "configuration_invalid"
    # Secure channel (issue 3): one generic code, no oracle
    DECRYPTION_FAILED = "decryption_failed"
    SECURE_CHANNEL_REQUIRED = "secure_channel_required"  # plaintext to a device endpoint
    # Events and webhooks (issue 16)
    ENDPOINT_URL_INVALID = "endpoint_url_invalid"  # not an absolute http(s) URL we may call
    ENDPOINT_ADDRESS_REFUSED = "endpoint_address_refused"  # resolves to a refused network
    WEBHOOK_SIGNATURE_INVALID = "webhook_signature_invalid"  # receiver side: no signature fits
    WEBHOOK_TIMESTAMP_INVALID = "webhook_timestamp_invalid"  # receiver side: outside tolerance
    # SDK-side (never produced by the server)
    CLIENT_NOT_ACTIVATED = "client_not_activated"
    CLIENT_TRANSPORT = "client_transport"
    CLIENT_CONFIGURATION = "client_configuration"
    KEYSTORE_UNAVAILABLE = "keystore_unavailable"
    KEY_GENERATION_FAILED = "key_generation_failed"
    KEY_UNAVAILABLE = "key_unavailable"
    SIGNING_FAILED = "signing_failed"
    # Relying-party side (never produced by the server): a signed result did not verify
    RESULT_INVALID = "result_invalid"
    # Operator side (keybound audit verify; never an HTTP answer): the audit trail was altered
    AUDIT_CHAIN_INVALID = "audit_chain_invalid"
    INTERNAL = "internal_error"


class KeyboundError(Exception):
    """Root of every keybound error. ``code`` is stable; ``detail`` is for humans."""

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, detail: str = "", *, code: ErrorCode | None = None, **fields: Any) -> None:
        if code is not None:
            self.code = code
        self.detail = detail or self.code.value.replace("_", " ")
        self.fields = fields
        super().__init__(f"{self.code.value}: {self.detail}")


class InvalidSignature(KeyboundError):
    """A signature did not verify (or could not be parsed)."""

    code = ErrorCode.AUTHENTICATION_FAILED


class UnsupportedAlgorithm(KeyboundError):
    code = ErrorCode.UNSUPPORTED_ALGORITHM


class MalformedRequest(KeyboundError):
    code = ErrorCode.MALFORMED_REQUEST


class NotFound(KeyboundError):
    code = ErrorCode.NOT_FOUND


class Unauthorized(KeyboundError):
    code = ErrorCode.UNAUTHORIZED


class InvalidState(KeyboundError):
    code = ErrorCode.INVALID_STATE


class ConfigurationInvalid(KeyboundError):
    code = ErrorCode.CONFIGURATION_INVALID


class CeremonyError(KeyboundError):
    """A device ceremony (activation/authentication) was refused."""

    code = ErrorCode.AUTHENTICATION_FAILED


class CeremonyFailed(CeremonyError):
    """A ceremony that ran to its end and failed: what it changed (a counted failure, a lock,
    the operation's FAILED state and result) is its outcome and is committed before the
    caller hears of it (server.unit.perform)."""


class KeyStoreError(KeyboundError):
    """Raised by SDK key stores. ``code`` tells which hwKeyClientStatus applies."""

    code = ErrorCode.KEYSTORE_UNAVAILABLE


class KeyGenerationFailed(KeyStoreError):
    code = ErrorCode.KEY_GENERATION_FAILED


class KeyUnavailable(KeyStoreError):
    code = ErrorCode.KEY_UNAVAILABLE


class SigningFailed(KeyStoreError):
    code = ErrorCode.SIGNING_FAILED


class ClientError(KeyboundError):
    """Raised by the SDK; ``code`` is either the server's problem code or a CLIENT_* code."""
