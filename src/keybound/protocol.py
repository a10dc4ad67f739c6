"""The keybound wire protocol, shared by the server and the SDK.

Everything about the wire lives here once: enumerations, JSON messages (pydantic models, the
HTTP edge), endpoint paths, and the canonical bytes that devices sign. ``docs/protocol.md``
is the normative description; section numbers in comments refer to it.
"""

from __future__ import annotations

import base64
import hashlib
import re
import struct
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
    field_validator,
)
from pydantic.alias_generators import to_camel

PROTOCOL_VERSION = "v1"

# --------------------------------------------------------------------------- enums (§2)


class Algorithm(StrEnum):
    """Signature algorithms on the allow-list. The server takes the algorithm from the stored
    key, never from a request."""

    ES256 = "ES256"  # ECDSA P-256 with SHA-256, DER-encoded signature


class HwKeyValidationStrategy(StrEnum):
    SUPPORTED = "SUPPORTED"
    RISK_PARAMS = "RISK_PARAMS"
    REQUIRED = "REQUIRED"

    @classmethod
    def parse(cls, value: str) -> HwKeyValidationStrategy:
        """Accepts ``REQUIRED_IF_SUPPORTED`` as the newer name for ``SUPPORTED``."""
        if value == "REQUIRED_IF_SUPPORTED":
            return cls.SUPPORTED
        return cls(value)


class HwKeyClientStatus(StrEnum):
    """What the SDK reports about its hardware key (risk attribute ``hwKeyClientStatus``)."""

    OK = "OK"
    NOT_SUPPORTED = "NOT_SUPPORTED"
    GENERATION_FAILED = "GENERATION_FAILED"
    KEY_UNAVAILABLE = "KEY_UNAVAILABLE"
    SIGNING_FAILED = "SIGNING_FAILED"
    NOT_ACTIVATED_WITH_HW_KEY = "NOT_ACTIVATED_WITH_HW_KEY"


class HwKeyServerResult(StrEnum):
    """What the server found (risk attribute ``hwKeyServerResult``)."""

    VALID = "VALID"
    INVALID = "INVALID"
    MISSING = "MISSING"
    NO_KEY_REGISTERED = "NO_KEY_REGISTERED"


class AuthMethod(StrEnum):
    DEVICE = "DEVICE"
    DEVICE_PIN = "DEVICE:PIN"


class AuthLevel(StrEnum):
    ONE_FACTOR = "ONE_FACTOR"
    TWO_FACTOR = "TWO_FACTOR"


AUTH_LEVEL: dict[AuthMethod, AuthLevel] = {
    AuthMethod.DEVICE: AuthLevel.ONE_FACTOR,
    AuthMethod.DEVICE_PIN: AuthLevel.TWO_FACTOR,
}


class ActivationCodeType(StrEnum):
    NUMERIC = "NUMERIC"
    ALPHA = "ALPHA"
    ALPHANUMERIC = "ALPHANUMERIC"


class OperationState(StrEnum):
    PENDING = "PENDING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    EXPIRED = "EXPIRED"


class OperationType(StrEnum):
    ACTIVATION = "ACTIVATION"
    REACTIVATION = "REACTIVATION"
    AUTHENTICATION = "AUTHENTICATION"


class Initiator(StrEnum):
    DEVICE = "DEVICE"
    BACKEND = "BACKEND"


class DeviceState(StrEnum):
    ACTIVE = "ACTIVE"
    LOCKED = "LOCKED"
    DEACTIVATED = "DEACTIVATED"


class LockReason(StrEnum):
    FAILURES = "FAILURES"
    SOFTWARE_KEY_CLONED = "SOFTWARE_KEY_CLONED"
    RELYING_PARTY = "RELYING_PARTY"
    OPERATOR = "OPERATOR"


class Platform(StrEnum):
    ANDROID = "ANDROID"
    IOS = "IOS"
    LINUX = "LINUX"
    WINDOWS = "WINDOWS"
    MACOS = "MACOS"
    OTHER = "OTHER"


class RiskAttribute(StrEnum):
    """Names accepted in an application's ``enabledRiskData``."""

    HW_KEY_CLIENT_STATUS = "hwKeyClientStatus"
    HW_KEY_SERVER_RESULT = "hwKeyServerResult"
    SOFTWARE_KEY_CLONE_SUSPECTED = "softwareKeyCloneSuspected"
    #: two ceremonies of the device overlapped: one finished with a key the other had just
    #: rotated (§4.5); refused as retryable, not locked
    SOFTWARE_KEY_OVERLAP = "softwareKeyOverlap"
    DEVICE_PLATFORM = "devicePlatform"
    DEVICE_OS_VERSION = "deviceOsVersion"


class Purpose(StrEnum):
    """The domain-separating purpose of a signed transcript (§4)."""

    ACTIVATION = "activation"
    AUTHENTICATION = "authentication"
    DEACTIVATION = "deactivation"
    DECLINE = "decline"
    PUSH_TOKEN = "push-token"  # noqa: S105 - a purpose, not a secret


class PushProvider(StrEnum):
    """Where a device's wake-up notifications go (§3.1.8, docs/notifications.md)."""

    WEBHOOK = "webhook"  # the relying party's own push service
    FCM = "fcm"  # Firebase Cloud Messaging
    APNS = "apns"  # Apple Push Notification service


# --------------------------------------------------------------------------- paths (§3)


class DevicePaths:
    ACTIVATION_START = "/device/v1/activation/start"
    ACTIVATION_FINISH = "/device/v1/activation/finish"
    AUTHENTICATION_START = "/device/v1/authentication/start"
    AUTHENTICATION_FINISH = "/device/v1/authentication/finish"
    AUTHENTICATION_DECLINE = "/device/v1/authentication/decline"
    PENDING_OPERATIONS = "/device/v1/operations/pending"
    DEACTIVATE = "/device/v1/deactivate"
    PUSH_TOKEN = "/device/v1/push-token"  # noqa: S105 - a path


# --------------------------------------------------------------------------- encodings (§1)

_B64URL = re.compile(r"^[A-Za-z0-9_-]*$")


def b64u_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64u_decode(text: str) -> bytes:
    """Strict base64url without padding: rejects padding, whitespace and other alphabets."""
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("not base64url without padding")
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if b64u_encode(data) != text:  # non-canonical trailing bits
        raise ValueError("non-canonical base64url")
    return data


def _decode_b64(value: Any) -> Any:
    if isinstance(value, bytes):
        return value
    if not isinstance(value, str):
        raise ValueError("expected a base64url string")
    return b64u_decode(value)


# Binary fields: base64url without padding on the wire, bytes in Python.
Challenge = Annotated[
    bytes,
    BeforeValidator(_decode_b64),
    Field(min_length=32, max_length=32),
    PlainSerializer(b64u_encode, return_type=str),
    WithJsonSchema({"type": "string", "contentEncoding": "base64url", "maxLength": 43}),
]
PublicKeyDer = Annotated[
    bytes,
    BeforeValidator(_decode_b64),
    Field(min_length=16, max_length=512),
    PlainSerializer(b64u_encode, return_type=str),
    WithJsonSchema({"type": "string", "contentEncoding": "base64url", "maxLength": 683}),
]
SignatureDer = Annotated[
    bytes,
    BeforeValidator(_decode_b64),
    Field(min_length=8, max_length=160),
    PlainSerializer(b64u_encode, return_type=str),
    WithJsonSchema({"type": "string", "contentEncoding": "base64url", "maxLength": 214}),
]
KeyId = Annotated[
    bytes,
    BeforeValidator(_decode_b64),
    Field(min_length=32, max_length=32),
    PlainSerializer(b64u_encode, return_type=str),
    WithJsonSchema({"type": "string", "contentEncoding": "base64url", "maxLength": 43}),
]
PinKey = Annotated[
    bytes,
    BeforeValidator(_decode_b64),
    Field(min_length=32, max_length=32),
    PlainSerializer(b64u_encode, return_type=str),
    WithJsonSchema({"type": "string", "contentEncoding": "base64url", "maxLength": 43}),
]
PinProof = Annotated[
    bytes,
    BeforeValidator(_decode_b64),
    Field(min_length=32, max_length=32),
    PlainSerializer(b64u_encode, return_type=str),
    WithJsonSchema({"type": "string", "contentEncoding": "base64url", "maxLength": 43}),
]

ApplicationId = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")]
Uuid = Annotated[
    str, Field(pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
]
ActivationCode = Annotated[str, Field(min_length=4, max_length=64, pattern=r"^[A-Za-z0-9]+$")]

MAX_PRE_CONTEXT_BYTES = 4096
MAX_POST_CONTEXT_BYTES = 65536
MAX_BODY_BYTES = 160 * 1024


# --------------------------------------------------------------------------- messages (§3)


class Message(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
        extra="forbid",
        ser_json_bytes="base64",
    )

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class Reply(Message):
    """Server responses: unknown fields are ignored, so older SDKs survive additions."""

    model_config = ConfigDict(extra="ignore")


class OperationContext(Message):
    """Pre-operation context (shown before approval) or post-operation context (released to
    the device only after success)."""

    content: Annotated[str, Field(max_length=MAX_POST_CONTEXT_BYTES)]
    mime_type: Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[\x21-\x7e ]+$")]

    @field_validator("content")
    @classmethod
    def _content_bytes(cls, value: str) -> str:
        if len(value.encode()) > MAX_POST_CONTEXT_BYTES:
            raise ValueError(f"content exceeds {MAX_POST_CONTEXT_BYTES} bytes (UTF-8)")
        return value


class DeviceProfile(Message):
    platform: Platform
    os_version: Annotated[str, Field(max_length=32, pattern=r"^[0-9A-Za-z._-]*$")]
    model: Annotated[str | None, Field(max_length=100)] = None


class ActivationStartRequest(Message):
    application_id: ApplicationId
    activation_code: ActivationCode


class ActivationStartResponse(Reply):
    operation_id: Uuid
    device_id: Uuid
    challenge: Challenge
    expires_at: datetime
    allowed_auth_methods: list[AuthMethod]
    hardware_key_required: bool


class PushToken(Message):
    """A device's push token and the service it belongs to (§3.1.8); opaque to keybound,
    checked for its provider's shape by the server."""

    provider: PushProvider
    token: Annotated[str, Field(min_length=1, max_length=4096, pattern=r"^[\x21-\x7e]+$")]


class ActivationFinishRequest(Message):
    application_id: ApplicationId
    operation_id: Uuid
    device_id: Uuid
    software_public_key: PublicKeyDer
    software_signature: SignatureDer
    hardware_public_key: PublicKeyDer | None = None
    hardware_signature: SignatureDer | None = None
    hw_key_client_status: HwKeyClientStatus
    pin_key: PinKey | None = None
    device_profile: DeviceProfile
    push_token: PushToken | None = None  # §3.1.2: not signed; the channel protects it


class ActivationFinishResponse(Reply):
    device_id: Uuid
    hardware_key_registered: bool
    auth_methods: list[AuthMethod]


class AuthenticationStartRequest(Message):
    application_id: ApplicationId
    device_id: Uuid
    operation_id: Uuid | None = None  # set when answering a backend-initiated operation


class AuthenticationStartResponse(Reply):
    operation_id: Uuid
    challenge: Challenge
    expires_at: datetime
    pre_operation_context: OperationContext | None = None
    allowed_auth_methods: list[AuthMethod]


class AuthenticationFinishRequest(Message):
    application_id: ApplicationId
    device_id: Uuid
    operation_id: Uuid
    auth_method: AuthMethod
    software_key_id: KeyId
    next_software_public_key: PublicKeyDer
    software_signature: SignatureDer
    hardware_signature: SignatureDer | None = None
    hw_key_client_status: HwKeyClientStatus
    pin_proof: PinProof | None = None


class AuthenticationFinishResponse(Reply):
    operation_id: Uuid
    state: OperationState
    auth_method: AuthMethod
    auth_level: AuthLevel
    post_operation_context: OperationContext | None = None


class DeclineRequest(Message):
    """The user declined a backend-initiated operation after seeing its context (§3.1.7)."""

    application_id: ApplicationId
    device_id: Uuid
    operation_id: Uuid
    software_key_id: KeyId
    software_signature: SignatureDer


class DeclineResponse(Reply):
    operation_id: Uuid
    state: OperationState


class PendingOperationsRequest(Message):
    application_id: ApplicationId
    device_id: Uuid


class PendingOperation(Reply):
    operation_id: Uuid
    expires_at: datetime
    pre_operation_context: OperationContext | None = None
    required_auth_method: AuthMethod | None = None


class PendingOperationsResponse(Reply):
    operations: list[PendingOperation]


class DeactivateRequest(Message):
    application_id: ApplicationId
    device_id: Uuid
    software_key_id: KeyId
    software_signature: SignatureDer


class DeactivateResponse(Reply):
    device_id: Uuid
    state: DeviceState


class PushTokenRequest(Message):
    """Register, replace (``pushToken``) or remove (null) the device's push token (§3.1.8)."""

    application_id: ApplicationId
    device_id: Uuid
    software_key_id: KeyId
    push_token: PushToken | None = None
    software_signature: SignatureDer


class PushTokenResponse(Reply):
    device_id: Uuid
    push_provider: PushProvider | None = None  # None: no push token registered


# --------------------------------------------------------------------------- signed bytes (§4)

SIGNATURE_LABEL = b"keybound-signature-v1"
PIN_PROOF_LABEL = b"keybound-pin-proof-v1"
NO_CONTEXT_HASH = hashlib.sha256(b"").digest()


def _lp(field: bytes) -> bytes:
    return struct.pack(">I", len(field)) + field


def context_hash(context: OperationContext | None) -> bytes:
    """SHA-256 over the canonical context encoding LP(mimeType) || LP(content), both UTF-8;
    SHA-256 of the empty string when there is no context."""
    if context is None:
        return NO_CONTEXT_HASH
    return hashlib.sha256(
        _lp(context.mime_type.encode()) + _lp(context.content.encode())
    ).digest()


def push_token_hash(token: PushToken | None) -> bytes:
    """SHA-256 over LP(provider) || LP(token), both UTF-8; SHA-256 of the empty string when
    the token is removed (§3.1.8)."""
    if token is None:
        return NO_CONTEXT_HASH
    return hashlib.sha256(_lp(token.provider.value.encode()) + _lp(token.token.encode())).digest()


def transcript(
    purpose: Purpose,
    *,
    application_id: str,
    device_id: str,
    operation_id: str,
    challenge: bytes,
    context_digest: bytes,
    software_public_key: bytes,
    hardware_public_key: bytes = b"",
    auth_method: str = "",
    hw_key_client_status: str = "",
) -> bytes:
    """The canonical bytes a device signs (§4): eleven length-prefixed fields, big-endian
    u32 lengths, in this fixed order. ``software_public_key`` is the key being registered
    (activation) or the *next* software key (authentication)."""
    fields = (
        SIGNATURE_LABEL,
        purpose.value.encode(),
        application_id.encode(),
        device_id.encode(),
        operation_id.encode(),
        challenge,
        context_digest,
        software_public_key,
        hardware_public_key,
        auth_method.encode(),
        hw_key_client_status.encode(),
    )
    return b"".join(_lp(f) for f in fields)


def pin_proof_message(signed_transcript: bytes) -> bytes:
    """The bytes the PIN key MACs: LP(label) || LP(transcript) (§5)."""
    return _lp(PIN_PROOF_LABEL) + _lp(signed_transcript)
