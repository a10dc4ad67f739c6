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
from typing import Annotated, Any, Literal, Self
from urllib.parse import parse_qs, urlencode, urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

PROTOCOL_VERSION = "v1"

# --------------------------------------------------------------------------- enums (§2)


class Algorithm(StrEnum):
    """Signature algorithms on the allow-list. The server takes the algorithm from the stored
    key, never from a request."""

    ES256 = "ES256"  # ECDSA P-256 with SHA-256, DER-encoded signature
    #: the hardware key is an Apple App Attest key: its proofs are App Attest assertions
    #: (CBOR) over the transcript (§4.6), with a counter that must increase
    APPLE_APP_ATTEST = "APPLE_APP_ATTEST"


class HwKeyValidationStrategy(StrEnum):
    """What an application makes of the hardware key (§6.1): ``SUPPORTED`` fails an invalid
    or missing hardware signature of a device that has a hardware key, ``RISK_PARAMS`` only
    reports it, ``REQUIRED`` also refuses devices without one."""

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


class AttestationMode(StrEnum):
    """Per platform and application: what the server makes of key attestation (§6.5)."""

    DISABLED = "DISABLED"  # evidence ignored (reported NOT_CHECKED)
    OPTIONAL = "OPTIONAL"  # verified and reported; the strategy decides (§6.1)
    REQUIRED = "REQUIRED"  # an activation without a verified attestation is refused


class AuthMethod(StrEnum):
    """``DEVICE``: possession of the device's keys; ``DEVICE:PIN``: possession plus the PIN,
    proven by ``pinProof`` (§5)."""

    DEVICE = "DEVICE"
    DEVICE_PIN = "DEVICE:PIN"


class AuthLevel(StrEnum):
    """The assurance of a completed authentication: ``DEVICE`` is ``ONE_FACTOR``,
    ``DEVICE:PIN`` is ``TWO_FACTOR``."""

    ONE_FACTOR = "ONE_FACTOR"
    TWO_FACTOR = "TWO_FACTOR"


AUTH_LEVEL: dict[AuthMethod, AuthLevel] = {
    AuthMethod.DEVICE: AuthLevel.ONE_FACTOR,
    AuthMethod.DEVICE_PIN: AuthLevel.TWO_FACTOR,
}


class ActivationCodeType(StrEnum):
    """The alphabet of an application's activation codes: ``0-9``, ``A-Z`` or ``0-9A-Z``."""

    NUMERIC = "NUMERIC"
    ALPHA = "ALPHA"
    ALPHANUMERIC = "ALPHANUMERIC"


class OperationState(StrEnum):
    """``PENDING`` until a finish consumes the challenge (``COMPLETED`` or ``FAILED``);
    ``EXPIRED`` is never stored: a pending operation past its ``expiresAt`` reads so
    (§3.2.3)."""

    PENDING = "PENDING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    EXPIRED = "EXPIRED"


class OperationType(StrEnum):
    """An activation (new device id), a reactivation (an existing device id, every credential
    replaced) or an authentication."""

    ACTIVATION = "ACTIVATION"
    REACTIVATION = "REACTIVATION"
    AUTHENTICATION = "AUTHENTICATION"
    #: a backend-initiated authentication that signs data the relying party sent (§3.2.5)
    SIGNATURE = "SIGNATURE"


class Initiator(StrEnum):
    """Who created the operation: the device (authentication start without an operation id)
    or the relying party's backend (activation codes, backend-initiated operations)."""

    DEVICE = "DEVICE"
    BACKEND = "BACKEND"


class DeviceState(StrEnum):
    """A registration's state: ``LOCKED`` devices learn it only after a valid signature;
    ``DEACTIVATED`` is final."""

    ACTIVE = "ACTIVE"
    LOCKED = "LOCKED"
    DEACTIVATED = "DEACTIVATED"


class LockReason(StrEnum):
    """Why a device is ``LOCKED``: too many failed authentications (§5.3), a copied software
    key (§4.5), the relying party, or the operator."""

    FAILURES = "FAILURES"
    SOFTWARE_KEY_CLONED = "SOFTWARE_KEY_CLONED"
    RELYING_PARTY = "RELYING_PARTY"
    OPERATOR = "OPERATOR"


class Platform(StrEnum):
    """The device's operating system family, from its device profile (§6.4)."""

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
    #: key attestation (§6.5): VERIFIED, NOT_PROVIDED, NOT_CHECKED or FAILED_<reason>
    HW_KEY_ATTESTATION = "hwKeyAttestation"
    #: where a verified attestation says the key lives (TRUSTED_ENVIRONMENT, STRONG_BOX, ...)
    HW_KEY_SECURITY_LEVEL = "hwKeySecurityLevel"
    #: Android: how the device got its attestation key (FACTORY, REMOTE, UNKNOWN)
    HW_KEY_PROVISIONING_METHOD = "hwKeyProvisioningMethod"
    #: Android: age in seconds of the revocation status list the chain was checked against
    HW_KEY_REVOCATION_LIST_AGE = "hwKeyRevocationListAge"
    #: an App Attest assertion whose counter did not increase (§4.6)
    HW_KEY_CLONE_SUSPECTED = "hwKeyCloneSuspected"


class AttestationFormat(StrEnum):
    """Key attestation formats: the ``format`` of an activation's ``attestation`` object (the
    names of keybound.attestation's verifiers)."""

    ANDROID_KEY = "android-key"
    APPLE_APP_ATTEST = "apple-appattest"
    TPM = "tpm"


class Purpose(StrEnum):
    """The domain-separating purpose of a signed transcript (§4)."""

    ACTIVATION = "activation"
    AUTHENTICATION = "authentication"
    DEACTIVATION = "deactivation"
    DECLINE = "decline"
    SIGNATURE = "signature"
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


_B64_CHAR = "[A-Za-z0-9_-]"
#: the last character of a canonical encoding whose last group holds 1 or 2 bytes (§1.2)
_B64_LAST = {1: "[AQgw]", 2: "[AEIMQUYcgkosw048]"}


def b64_json_schema(min_bytes: int, max_bytes: int) -> dict[str, Any]:
    """The JSON Schema of a binary field of ``min_bytes``..``max_bytes`` bytes: exactly the
    canonical base64url without padding that b64u_decode accepts (§1.2)."""
    if min_bytes == max_bytes:  # one length: one exact pattern
        groups, rest = divmod(min_bytes, 3)
        body = f"{_B64_CHAR}{{{4 * groups + rest}}}{_B64_LAST.get(rest, '')}"
    else:
        fewest, most = max(0, -(-(min_bytes - 2) // 3)), max_bytes // 3
        body = (
            f"(?:{_B64_CHAR}{{4}}){{{fewest},{most}}}"
            f"(?:{_B64_CHAR}{{2}}{_B64_LAST[2]}|{_B64_CHAR}{_B64_LAST[1]})?"
        )
    return {
        "type": "string",
        "contentEncoding": "base64url",
        "pattern": f"^{body}$",
        "minLength": -(-4 * min_bytes // 3),
        "maxLength": -(-4 * max_bytes // 3),
    }


# Binary fields: base64url without padding on the wire, bytes in Python.
Challenge = Annotated[
    bytes,
    BeforeValidator(_decode_b64),
    Field(min_length=32, max_length=32),
    PlainSerializer(b64u_encode, return_type=str),
    WithJsonSchema(b64_json_schema(32, 32)),
]
PublicKeyDer = Annotated[
    bytes,
    BeforeValidator(_decode_b64),
    Field(min_length=16, max_length=512),
    PlainSerializer(b64u_encode, return_type=str),
    WithJsonSchema(b64_json_schema(16, 512)),
]
SignatureDer = Annotated[
    bytes,
    BeforeValidator(_decode_b64),
    Field(min_length=8, max_length=160),
    PlainSerializer(b64u_encode, return_type=str),
    WithJsonSchema(b64_json_schema(8, 160)),
]
KeyId = Annotated[
    bytes,
    BeforeValidator(_decode_b64),
    Field(min_length=32, max_length=32),
    PlainSerializer(b64u_encode, return_type=str),
    WithJsonSchema(b64_json_schema(32, 32)),
]
PinKey = Annotated[
    bytes,
    BeforeValidator(_decode_b64),
    Field(min_length=32, max_length=32),
    PlainSerializer(b64u_encode, return_type=str),
    WithJsonSchema(b64_json_schema(32, 32)),
]
PinProof = Annotated[
    bytes,
    BeforeValidator(_decode_b64),
    Field(min_length=32, max_length=32),
    PlainSerializer(b64u_encode, return_type=str),
    WithJsonSchema(b64_json_schema(32, 32)),
]

# Bounds of attestation evidence: keybound.attestation's parsing limits (docs/attestation.md).
MAX_ATTESTATION_CERTIFICATE_BYTES = 16 * 1024
MAX_ATTESTATION_CHAIN = 10
MAX_TPM_STRUCTURE_BYTES = 4096
MAX_APP_ATTEST_OBJECT_BYTES = 64 * 1024
# each with its exact schema: the document allows no value the server refuses (an empty one)
AttestationCertificate = Annotated[
    bytes,
    BeforeValidator(_decode_b64),
    Field(min_length=1, max_length=MAX_ATTESTATION_CERTIFICATE_BYTES),
    PlainSerializer(b64u_encode, return_type=str),
    WithJsonSchema(b64_json_schema(1, MAX_ATTESTATION_CERTIFICATE_BYTES)),
]
TpmStructure = Annotated[
    bytes,
    BeforeValidator(_decode_b64),
    Field(min_length=1, max_length=MAX_TPM_STRUCTURE_BYTES),
    PlainSerializer(b64u_encode, return_type=str),
    WithJsonSchema(b64_json_schema(1, MAX_TPM_STRUCTURE_BYTES)),
]
Bytes32 = Annotated[
    bytes,
    BeforeValidator(_decode_b64),
    Field(min_length=32, max_length=32),
    PlainSerializer(b64u_encode, return_type=str),
    WithJsonSchema(b64_json_schema(32, 32)),
]
AppAttestObject = Annotated[
    bytes,
    BeforeValidator(_decode_b64),
    Field(min_length=1, max_length=MAX_APP_ATTEST_OBJECT_BYTES),
    PlainSerializer(b64u_encode, return_type=str),
    WithJsonSchema(b64_json_schema(1, MAX_APP_ATTEST_OBJECT_BYTES)),
]
# Hardware proofs: DER ECDSA (ES256), or an App Attest assertion (CBOR, §4.6)
HardwareSignature = Annotated[
    bytes,
    BeforeValidator(_decode_b64),
    Field(min_length=8, max_length=512),
    PlainSerializer(b64u_encode, return_type=str),
    WithJsonSchema(b64_json_schema(8, 512)),
]

ApplicationId = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")]
#: a device request's application (the same text in every request's schema)
DeviceApplicationId = Annotated[
    ApplicationId,
    Field(
        description="The application, as configured by the operator; a sealed request's must "
        "be the application of the E2E key it is sealed to (§9).",
        examples=["bank.example"],
    ),
]
Uuid = Annotated[
    str, Field(pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
]
ActivationCode = Annotated[str, Field(min_length=4, max_length=64, pattern=r"^[A-Za-z0-9]+$")]
#: names the activation a typed code belongs to (§3.2.5); not a secret
ActivationHint = Annotated[str, Field(min_length=4, max_length=16, pattern=r"^[A-Za-z0-9]+$")]
#: the activation link's secret (§3.2.5): 32 bytes
ActivationToken = Annotated[
    bytes,
    BeforeValidator(_decode_b64),
    Field(min_length=32, max_length=32),
    PlainSerializer(b64u_encode, return_type=str),
    WithJsonSchema(b64_json_schema(32, 32)),
]

MAX_PRE_CONTEXT_BYTES = 4096
MAX_DATA_TO_SIGN_BYTES = 16384
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

    content: Annotated[
        str,
        Field(
            max_length=MAX_POST_CONTEXT_BYTES,
            description="What is shown to the user (pre-operation) or released to the device "
            "(post-operation); at most 65 536 bytes of UTF-8, a pre-operation context at most "
            "4 096 (§1.3). Signed as received, without normalisation (§4.1.2).",
            examples=["Pay 100 EUR to ACME"],
        ),
    ]
    mime_type: Annotated[
        str,
        Field(
            min_length=1,
            max_length=100,
            pattern=r"^[\x21-\x7e ]+$",
            description="The media type of ``content``, printable ASCII.",
            examples=["text/plain"],
        ),
    ]

    @field_validator("content")
    @classmethod
    def _content_bytes(cls, value: str) -> str:
        if len(value.encode()) > MAX_POST_CONTEXT_BYTES:
            raise ValueError(f"content exceeds {MAX_POST_CONTEXT_BYTES} bytes (UTF-8)")
        return value


class DeviceProfile(Message):
    platform: Annotated[
        Platform,
        Field(
            description="The operating system family (risk attribute ``devicePlatform``).",
            examples=["ANDROID"],
        ),
    ]
    os_version: Annotated[
        str,
        Field(
            max_length=32,
            pattern=r"^[0-9A-Za-z._-]*$",
            description="The operating system version (risk attribute ``deviceOsVersion``).",
            examples=["14"],
        ),
    ]
    model: Annotated[
        str | None,
        Field(
            max_length=100,
            description="The device model, as the app reads it.",
            examples=["Pixel 8"],
        ),
    ] = None


class TpmAttestationKey(Message):
    """Sent at activation start by a device whose hardware key store is a TPM that can
    attest: its EK certificate and the public area of a fresh attestation key (AK), for
    credential activation (§3.1.1, §6.5.3)."""

    ek_certificate: Annotated[
        AttestationCertificate,
        Field(
            description="The EK certificate (DER X.509), as the TPM's manufacturer provisioned it "
            "in the TPM's NV memory.",
            examples=["R9xUDJTOtwSiOHXBEnPha7C4qHrthN6RHyEzVoEV8lSdz5ehhPMmI9EacxJM65ml"],
        ),
    ]
    ak_public: Annotated[
        TpmStructure,
        Field(
            description="TPMT_PUBLIC of a fresh attestation key (restricted signing, fixedTPM, "
            "fixedParent, sensitiveDataOrigin), marshalled.",
            examples=["mb5e-4jKIBO9jk6wNf1C1SRUaP6a-nDY"],
        ),
    ]


class TpmCredential(Reply):
    """TPM2_MakeCredential for the start's EK and AK: only that TPM can open it, only for
    that AK (TPM2_ActivateCredential; §6.5.3)."""

    credential_blob: Annotated[
        TpmStructure,
        Field(
            description="TPM2B_ID_OBJECT: the credential, for TPM2_ActivateCredential.",
            examples=["m0-yTt1tHYgw4nI5gmPNvwJrlzksw1OH"],
        ),
    ]
    encrypted_secret: Annotated[
        TpmStructure,
        Field(
            description="TPM2B_ENCRYPTED_SECRET: the seed, encrypted to the EK.",
            examples=["wLqKM6xn9Eq_9ZhN-7b1bEa4gKwrhuHy"],
        ),
    ]


def _format_required(schema: dict[str, Any]) -> None:
    """The discriminator picks the verifier by ``format``, so a request must send it, default
    or not: the schema says so, as the server refuses an attestation without it."""
    required = schema.setdefault("required", [])
    if "format" not in required:
        required.insert(0, "format")


class AndroidKeyAttestation(Message):
    """Android key attestation: the hardware key's certificate chain, leaf first (§6.5.1)."""

    model_config = ConfigDict(json_schema_extra=_format_required)

    format: Annotated[
        Literal[AttestationFormat.ANDROID_KEY],
        Field(description="The verifier: Android key attestation.", examples=["android-key"]),
    ] = AttestationFormat.ANDROID_KEY
    certificate_chain: Annotated[
        list[AttestationCertificate],
        Field(
            min_length=1,
            max_length=MAX_ATTESTATION_CHAIN,
            description="DER X.509 certificates, leaf (the hardware key's) first.",
            examples=[
                [
                    "KSGhHyXa2qJKp5pUjk6BUIwuXlavLYM9ZeK8zkSM4vWKq6ubqYgRygCOiIM3wCkN",
                    "zrgnrT04hP1NUK5gmdbVDAmiHnLr0wlwjotp2T3xnlUjR_WisH6GF8Vv-Kj4jy2X",
                ]
            ],
        ),
    ]


class TpmAttestation(Message):
    """TPM2_Certify of the hardware key by the AK the start proved, over the activation
    challenge, and the secret TPM2_ActivateCredential returned for the start's credential
    (§6.5.3)."""

    model_config = ConfigDict(json_schema_extra=_format_required)

    format: Annotated[
        Literal[AttestationFormat.TPM],
        Field(description="The verifier: TPM 2.0 (TPM2_Certify).", examples=["tpm"]),
    ] = AttestationFormat.TPM
    certify_info: Annotated[
        TpmStructure,
        Field(
            description="TPMS_ATTEST of TPM2_Certify, extraData = the activation challenge.",
            examples=["CmNhs6gC9VzVrgYQHIih4hYyD-EcwM_h"],
        ),
    ]
    signature: Annotated[
        TpmStructure,
        Field(
            description="TPMT_SIGNATURE of certifyInfo by the attestation key.",
            examples=["5UXTlbs_2XH5G_mitnIoMd9wTvrmwaqd"],
        ),
    ]
    public_area: Annotated[
        TpmStructure,
        Field(
            description="TPMT_PUBLIC of the hardware key, marshalled.",
            examples=["osSu0c91fNmlCXNKJn_8exFmtV9Mj5w-"],
        ),
    ]
    activated_secret: Annotated[
        Bytes32,
        Field(
            description="What TPM2_ActivateCredential returned for the start's credential.",
            examples=["ECtRuXZaVqPomffPDuOOUlH5xQOzV7MwpJGD63sVVgQ"],
        ),
    ]


class AppleAppAttestation(Message):
    """Apple App Attest: the App Attest key is the hardware key (§6.5.2)."""

    model_config = ConfigDict(json_schema_extra=_format_required)

    format: Annotated[
        Literal[AttestationFormat.APPLE_APP_ATTEST],
        Field(description="The verifier: Apple App Attest.", examples=["apple-appattest"]),
    ] = AttestationFormat.APPLE_APP_ATTEST
    key_id: Annotated[
        Bytes32,
        Field(
            description="The App Attest key id (SHA-256 of its public key).",
            examples=["y-Imh0fJyAcsf5km8iiPJwY33FW7nRTTNoNh1eR9Jb4"],
        ),
    ]
    attestation_object: Annotated[
        AppAttestObject,
        Field(
            description="The attestation object (CBOR) DCAppAttestService returned.",
            examples=["v2DkNJys5rzg1VLo14NCjbZtDWSb2eQwo2J-LuFKyDkhswc5HQN_qi25QYzEPD46"],
        ),
    ]


#: The evidence an activation finish may carry; ``format`` picks the verifier (§6.5).
Attestation = Annotated[
    AndroidKeyAttestation | TpmAttestation | AppleAppAttestation, Field(discriminator="format")
]


class ActivationStartRequest(Message):
    """Either the activation link's token, or the typed code with its hint (§3.1.1)."""

    # one of the two forms; a field given as null counts as absent, so a form's fields must
    # be strings
    model_config = ConfigDict(
        json_schema_extra={
            "oneOf": [
                {
                    "required": ["activationToken"],
                    "properties": {"activationToken": {"type": "string"}},
                    "not": {
                        "anyOf": [
                            {
                                "required": ["activationCode"],
                                "properties": {"activationCode": {"type": "string"}},
                            },
                            {
                                "required": ["activationHint"],
                                "properties": {"activationHint": {"type": "string"}},
                            },
                        ]
                    },
                },
                {
                    "required": ["activationCode", "activationHint"],
                    "properties": {
                        "activationCode": {"type": "string"},
                        "activationHint": {"type": "string"},
                    },
                    "not": {
                        "required": ["activationToken"],
                        "properties": {"activationToken": {"type": "string"}},
                    },
                },
            ]
        }
    )

    application_id: DeviceApplicationId
    activation_token: Annotated[
        ActivationToken | None,
        Field(
            description="the secret of the activation link or QR code (§3.2.5)",
            examples=["q1XTxZ4ONHPOwYJnFXHYv1mlRl8cU9mF2Ysv7aaVe0U"],
        ),
    ] = None
    # the example is the link's form; the typed form is the second example of each field
    activation_code: Annotated[
        ActivationCode | None,
        Field(
            description="the typed fallback code; needs activationHint", examples=[None, "483920"]
        ),
    ] = None
    activation_hint: Annotated[
        ActivationHint | None,
        Field(
            description="names the activation the typed code belongs to", examples=[None, "7KQ2MX"]
        ),
    ] = None
    tpm: Annotated[
        TpmAttestationKey | None,
        Field(
            description="A TPM that can attest: its EK certificate and a fresh attestation key, "
            "for the credential activation round trip (docs/protocol.md, attestation).",
            examples=[None],
        ),
    ] = None

    @model_validator(mode="after")
    def _one_form(self) -> Self:
        typed = (self.activation_code, self.activation_hint)
        if self.activation_token is not None and typed == (None, None):
            return self
        if self.activation_token is None and None not in typed:
            return self
        raise ValueError(
            "send activationToken (from the activation link) alone, or "
            "activationCode together with its activationHint"
        )


class ActivationStartResponse(Reply):
    operation_id: Annotated[
        Uuid,
        Field(
            description="The (re)activation operation; transcript field 5.",
            examples=["c0ffee00-0000-4000-8000-00000000000a"],
        ),
    ]
    device_id: Annotated[
        Uuid,
        Field(
            description="The device id this activation creates (a reactivation: the existing one).",
            examples=["3f2c6f1e-8a4b-4c2d-9e1f-0a1b2c3d4e5f"],
        ),
    ]
    challenge: Annotated[
        Challenge,
        Field(
            description="32 random bytes, single use; transcript field 6.",
            examples=["mR8DVcOef0w9Ln3qRp9gA0CqUov9CjYWLg7L22vPu3w"],
        ),
    ]
    expires_at: Annotated[
        datetime,
        Field(
            description="When the challenge expires (UTC).",
            examples=["2025-06-02T10:02:00.250000Z"],
        ),
    ]
    allowed_auth_methods: Annotated[
        list[AuthMethod],
        Field(
            description="The application's authentication methods.",
            examples=[["DEVICE", "DEVICE:PIN"]],
        ),
    ]
    hardware_key_required: Annotated[
        bool,
        Field(
            description="Whether the strategy is ``REQUIRED``: a finish without a valid hardware "
            "key will be refused.",
            examples=[False],
        ),
    ]
    tpm_credential: Annotated[
        TpmCredential | None,
        Field(
            description="TPM2_MakeCredential for the start's EK and AK, when the start sent "
            "``tpm`` and the application attests TPMs.",
            examples=[None],
        ),
    ] = None


class PushToken(Message):
    """A device's push token and the service it belongs to (§3.1.8); opaque to keybound,
    checked for its provider's shape by the server."""

    provider: Annotated[
        PushProvider, Field(description="The push service the token belongs to.", examples=["fcm"])
    ]
    token: Annotated[
        str,
        Field(
            min_length=1,
            max_length=4096,
            pattern=r"^[\x21-\x7e]+$",
            description="The token as the platform handed it over: an FCM registration token, an "
            "APNs device token (hex), or the relying party's own push service's identifier.",
            examples=["dGVzdC10b2tlbg:APA91bHkeybound-vector"],
        ),
    ]


class ActivationFinishRequest(Message):
    application_id: DeviceApplicationId
    operation_id: Annotated[
        Uuid,
        Field(
            description="The operation id from activation start.",
            examples=["c0ffee00-0000-4000-8000-00000000000a"],
        ),
    ]
    device_id: Annotated[
        Uuid,
        Field(
            description="The device id that activation start returned.",
            examples=["3f2c6f1e-8a4b-4c2d-9e1f-0a1b2c3d4e5f"],
        ),
    ]
    software_public_key: Annotated[
        PublicKeyDer,
        Field(
            description="The new software key: P-256 SubjectPublicKeyInfo DER, 91 bytes (§4.2); "
            "transcript field 8.",
            examples=[
                "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEsANJelY0XLhVunUnWFsyKTPqNuG6M5aL3cR44C9zOofD"
                "largWT6FqzGp8gRxDnx3e6YsPcph2f5aL-DaYqQleQ"
            ],
        ),
    ]
    software_signature: Annotated[
        SignatureDer,
        Field(
            description="ECDSA-SHA256 (DER) by the new software key over the activation "
            "transcript (§4.1).",
            examples=[
                "MEQCIELmaDEGJmvmPVG89vKGUKdIvVo0LxpVKDTbU48rbZs9AiB86Bcj5_FM7R83iFYHC0tOWwHHxmR"
                "OjGAVQvSNTZeouQ"
            ],
        ),
    ]
    hardware_public_key: Annotated[
        PublicKeyDer | None,
        Field(
            description="The hardware key generated in the device's secure hardware, if any "
            "(P-256 SPKI DER); transcript field 9.",
            examples=[
                "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE9Z7N0rDcLtXTGeK19MLnnIN9oK3URYdl2gZWds6xEHxl"
                "xIt2iJB_XWCzwW_VMv3lamysu8oZs36m2qfYuvHOZQ"
            ],
        ),
    ] = None
    hardware_signature: Annotated[
        HardwareSignature | None,
        Field(
            description="ECDSA-SHA256 (DER) by the hardware key over the same transcript; for an "
            "App Attest hardware key, an App Attest assertion (CBOR) over it (§4.6).",
            examples=[
                "MEQCIGFZEv8WCZGJqrcfKu73z7I8C7aIL3RR7FW9Cptu-5vIAiBCmjQWWEE0-pP9j0nhNfy28xuLtxD"
                "ZinC9sn4xaX-F9Q"
            ],
        ),
    ] = None
    hw_key_client_status: Annotated[
        HwKeyClientStatus,
        Field(
            description="What the SDK says about its hardware key; transcript field 11.",
            examples=["OK"],
        ),
    ]
    pin_key: Annotated[
        PinKey | None,
        Field(
            description="32-byte PIN key derived from the PIN (§5.1); registers ``DEVICE:PIN``. "
            "Not signed.",
            examples=["OJ2tda4QU7WstK2AFKzOk_s_Mn36eymktLXO5v01fOc"],
        ),
    ] = None
    device_profile: Annotated[
        DeviceProfile,
        Field(
            description="The device's platform and OS (§6.4).",
            examples=[{"platform": "ANDROID", "osVersion": "14", "model": "Pixel 8"}],
        ),
    ]
    attestation: Annotated[
        Attestation | None,
        Field(
            description="The platform's attestation of the hardware key (Android key attestation, "
            "TPM2_Certify, Apple App Attest); absent: NOT_PROVIDED.",
            examples=[None],
        ),
    ] = None
    push_token: Annotated[
        PushToken | None,
        Field(
            description="Where the server wakes this device when a backend-initiated operation "
            "waits (§3.1.8). Not signed: the secure channel protects it, and it is no credential.",
            examples=[None],
        ),
    ] = None


class ActivationFinishResponse(Reply):
    device_id: Annotated[
        Uuid,
        Field(
            description="The activated device.", examples=["3f2c6f1e-8a4b-4c2d-9e1f-0a1b2c3d4e5f"]
        ),
    ]
    hardware_key_registered: Annotated[
        bool,
        Field(
            description="Whether the hardware key was stored (its signature verified); if not "
            "while one was sent, the SDK should delete it.",
            examples=[True],
        ),
    ]
    auth_methods: Annotated[
        list[AuthMethod],
        Field(
            description="The methods this registration can use: ``DEVICE:PIN`` only with a "
            "``pinKey``.",
            examples=[["DEVICE", "DEVICE:PIN"]],
        ),
    ]


class AuthenticationStartRequest(Message):
    application_id: DeviceApplicationId
    device_id: Annotated[
        Uuid,
        Field(
            description="The device id that activation start returned.",
            examples=["3f2c6f1e-8a4b-4c2d-9e1f-0a1b2c3d4e5f"],
        ),
    ]
    operation_id: Annotated[
        Uuid | None,
        Field(
            description="A backend-initiated operation to answer; absent: a device-initiated "
            "authentication.",
            examples=["c0ffee00-0000-4000-8000-0000000000a1"],
        ),
    ] = None


class AuthenticationStartResponse(Reply):
    operation_id: Annotated[
        Uuid,
        Field(
            description="The operation (the requested one, if any); transcript field 5.",
            examples=["c0ffee00-0000-4000-8000-0000000000a1"],
        ),
    ]
    challenge: Annotated[
        Challenge,
        Field(
            description="32 random bytes, single use; the same while valid for a "
            "backend-initiated operation; transcript field 6.",
            examples=["Ht42q3gqe4c6OpH6qMS9IBkKxR2bNV_Fh-tzm-kOWrU"],
        ),
    ]
    expires_at: Annotated[
        datetime,
        Field(
            description="When the challenge expires (UTC).",
            examples=["2025-06-02T10:05:00.250000Z"],
        ),
    ]
    pre_operation_context: Annotated[
        OperationContext | None,
        Field(
            description="What the user is asked to approve; hashed into transcript field 7.",
            examples=[{"content": "Pay 100 EUR to ACME", "mimeType": "text/plain"}],
        ),
    ] = None
    allowed_auth_methods: Annotated[
        list[AuthMethod],
        Field(
            description="The application's methods, or only the operation's required one.",
            examples=[["DEVICE:PIN"]],
        ),
    ]
    operation_type: Annotated[
        OperationType | None,
        Field(
            description="``SIGNATURE`` for a signature operation (§3.2.6); absent: an "
            "authentication.",
            examples=[None, "SIGNATURE"],
        ),
    ] = None
    data_to_sign: Annotated[
        OperationContext | None,
        Field(
            description="A signature operation's data: shown to the user, its hash signed "
            "(§4.1.1).",
            examples=[None, {"content": "I agree to contract 4711", "mimeType": "text/plain"}],
        ),
    ] = None


class AuthenticationFinishRequest(Message):
    application_id: DeviceApplicationId
    device_id: Annotated[
        Uuid,
        Field(
            description="The device id that activation start returned.",
            examples=["3f2c6f1e-8a4b-4c2d-9e1f-0a1b2c3d4e5f"],
        ),
    ]
    operation_id: Annotated[
        Uuid,
        Field(
            description="The operation id from authentication start.",
            examples=["c0ffee00-0000-4000-8000-0000000000a1"],
        ),
    ]
    auth_method: Annotated[
        AuthMethod,
        Field(description="The method used; transcript field 10.", examples=["DEVICE:PIN"]),
    ]
    software_key_id: Annotated[
        KeyId,
        Field(
            description="SHA-256 of the current software key's SPKI DER (§4.2).",
            examples=["zUZcmWO6FgPEAD8J3XqcUvTz1Ij_UsrKlbZ6alp8GOs"],
        ),
    ]
    next_software_public_key: Annotated[
        PublicKeyDer,
        Field(
            description="A freshly generated P-256 key (SPKI DER) that replaces the current one on "
            "success (§4.5); transcript field 8.",
            examples=[
                "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEO5RMDt92v7HzF9r1rVWbFAAbXsc952rJgkFGaXMCKr34"
                "5Lg_BPGe0k7BbYsJCJmwSUYNtVDmTyRoD3Lw98Tgcg"
            ],
        ),
    ]
    software_signature: Annotated[
        SignatureDer,
        Field(
            description="ECDSA-SHA256 (DER) by the current software key over the authentication "
            "transcript (§4.1).",
            examples=[
                "MEUCIQD7qybks2f6OP8krG1P-chBe2sID_twZMObUxdvjy1nAQIgL2ZjVBJIr7QvPvy7nZG5oBcm-_Z"
                "_vHEu904M2WeLIkA"
            ],
        ),
    ]
    hardware_signature: Annotated[
        HardwareSignature | None,
        Field(
            description="ECDSA-SHA256 (DER) by the hardware key over the same transcript; for an "
            "App Attest hardware key, an App Attest assertion (CBOR) over it (§4.6).",
            examples=[
                "MEUCIGs5z6K40zUeVl0qznB_i-kVb4n3cnQmVw_S1gUrJrq4AiEA7bb2ENJStY1R4pXuCwe4hA-lg1e"
                "sD8yFN8iefU-OIBk"
            ],
        ),
    ] = None
    hw_key_client_status: Annotated[
        HwKeyClientStatus,
        Field(
            description="What the SDK says about its hardware key; transcript field 11.",
            examples=["OK"],
        ),
    ]
    pin_proof: Annotated[
        PinProof | None,
        Field(
            description="HMAC-SHA256 with the PIN key over the transcript (§5.2); required for "
            "``DEVICE:PIN``.",
            examples=["w5qX1fto5Ml4Qj5cpSolX0IglmZ3Vm7ePFWn57EF-V8"],
        ),
    ] = None


class AuthenticationFinishResponse(Reply):
    operation_id: Annotated[
        Uuid,
        Field(
            description="The completed operation.",
            examples=["c0ffee00-0000-4000-8000-0000000000a1"],
        ),
    ]
    state: Annotated[
        OperationState,
        Field(description="Always ``COMPLETED`` (a refusal is a problem).", examples=["COMPLETED"]),
    ]
    auth_method: Annotated[AuthMethod, Field(description="As requested.", examples=["DEVICE:PIN"])]
    auth_level: Annotated[
        AuthLevel, Field(description="The level the method gives.", examples=["TWO_FACTOR"])
    ]
    post_operation_context: Annotated[
        OperationContext | None,
        Field(
            description="Set by the relying party when it created the operation; released only "
            "on success.",
            examples=[{"content": "ok", "mimeType": "text/plain"}],
        ),
    ] = None


class DeclineRequest(Message):
    """The user declined a backend-initiated operation after seeing its context (§3.1.7)."""

    application_id: DeviceApplicationId
    device_id: Annotated[
        Uuid,
        Field(
            description="The device id that activation start returned.",
            examples=["3f2c6f1e-8a4b-4c2d-9e1f-0a1b2c3d4e5f"],
        ),
    ]
    operation_id: Annotated[
        Uuid,
        Field(
            description="The backend-initiated operation, after an authentication start for it.",
            examples=["c0ffee00-0000-4000-8000-0000000000a2"],
        ),
    ]
    software_key_id: Annotated[
        KeyId,
        Field(
            description="SHA-256 of the current software key's SPKI DER (§4.2).",
            examples=["pMfIqj1t5qJytUgqmG6Msqh1E3uZ5I7GF3Hm69ikR5w"],
        ),
    ]
    software_signature: Annotated[
        SignatureDer,
        Field(
            description="ECDSA-SHA256 (DER) by the current software key over the decline "
            "transcript (§3.1.7).",
            examples=[
                "MEYCIQDqBx7s8vBrxea4mPN5z0B01MykH6j32FCTsCX4PBqRSwIhANes2F6ayXsxwjpfSCaNIkAo83x"
                "FBLfrA6zZepXouFXD"
            ],
        ),
    ]


class DeclineResponse(Reply):
    operation_id: Annotated[
        Uuid,
        Field(
            description="The declined operation.", examples=["c0ffee00-0000-4000-8000-0000000000a2"]
        ),
    ]
    state: Annotated[
        OperationState,
        Field(description="Always ``FAILED`` (``failureCode: declined``).", examples=["FAILED"]),
    ]


class PendingOperationsRequest(Message):
    application_id: DeviceApplicationId
    device_id: Annotated[
        Uuid,
        Field(
            description="The device id that activation start returned.",
            examples=["3f2c6f1e-8a4b-4c2d-9e1f-0a1b2c3d4e5f"],
        ),
    ]


class PendingOperation(Reply):
    operation_id: Annotated[
        Uuid,
        Field(
            description="Pass it to authentication start.",
            examples=["c0ffee00-0000-4000-8000-0000000000a1"],
        ),
    ]
    expires_at: Annotated[
        datetime,
        Field(
            description="When the operation expires (UTC).",
            examples=["2025-06-02T10:08:00.250000Z"],
        ),
    ]
    pre_operation_context: Annotated[
        OperationContext | None,
        Field(
            description="What the user will be asked to approve.",
            examples=[{"content": "Pay 100 EUR to ACME", "mimeType": "text/plain"}],
        ),
    ] = None
    required_auth_method: Annotated[
        AuthMethod | None,
        Field(
            description="The only method the operation accepts, if the relying party set one.",
            examples=["DEVICE:PIN"],
        ),
    ] = None
    operation_type: Annotated[
        OperationType | None,
        Field(
            description="``SIGNATURE`` for a signature operation (§3.2.6); absent: an "
            "authentication.",
            examples=[None, "SIGNATURE"],
        ),
    ] = None
    data_to_sign: Annotated[
        OperationContext | None,
        Field(
            description="A signature operation's data, to show the user.",
            examples=[None, {"content": "I agree to contract 4711", "mimeType": "text/plain"}],
        ),
    ] = None


class PendingOperationsResponse(Reply):
    operations: Annotated[
        list[PendingOperation],
        Field(
            description="The device's pending backend-initiated operations, oldest first; empty "
            "for an unknown device.",
            examples=[
                [
                    {
                        "operationId": "c0ffee00-0000-4000-8000-0000000000a1",
                        "expiresAt": "2025-06-02T10:08:00.250000Z",
                        "preOperationContext": {
                            "content": "Pay 100 EUR to ACME",
                            "mimeType": "text/plain",
                        },
                        "requiredAuthMethod": "DEVICE:PIN",
                    }
                ]
            ],
        ),
    ]


class DeactivateRequest(Message):
    application_id: DeviceApplicationId
    device_id: Annotated[
        Uuid,
        Field(
            description="The device id that activation start returned.",
            examples=["7b9d2e4f-1c3a-4b5d-8f6e-9a0b1c2d3e4f"],
        ),
    ]
    software_key_id: Annotated[
        KeyId,
        Field(
            description="SHA-256 of the current software key's SPKI DER (§4.2).",
            examples=["Fj143ONQmw6FXB3K5pw37fmCcll-_ZYNFgHWHYtDIjQ"],
        ),
    ]
    software_signature: Annotated[
        SignatureDer,
        Field(
            description="ECDSA-SHA256 (DER) by the current software key over the deactivation "
            "transcript (§3.1.6).",
            examples=[
                "MEUCIQDP7v4RjyHUtEU6la_O_0mhMVsZp_uAhCYiUzo02-_TrwIgdWFX3LF5L1zzzOWE-g5vpJXaL5t"
                "hSHDb-0748VnQ1dQ"
            ],
        ),
    ]


class DeactivateResponse(Reply):
    device_id: Annotated[
        Uuid,
        Field(
            description="The deactivated device.", examples=["7b9d2e4f-1c3a-4b5d-8f6e-9a0b1c2d3e4f"]
        ),
    ]
    state: Annotated[
        DeviceState, Field(description="Always ``DEACTIVATED``.", examples=["DEACTIVATED"])
    ]


class PushTokenRequest(Message):
    """Register, replace (``pushToken``) or remove (null) the device's push token (§3.1.8)."""

    application_id: DeviceApplicationId
    device_id: Annotated[
        Uuid,
        Field(
            description="The device id that activation start returned.",
            examples=["3f2c6f1e-8a4b-4c2d-9e1f-0a1b2c3d4e5f"],
        ),
    ]
    software_key_id: Annotated[
        KeyId,
        Field(
            description="SHA-256 of the current software key's SPKI DER (§4.2).",
            examples=["pMfIqj1t5qJytUgqmG6Msqh1E3uZ5I7GF3Hm69ikR5w"],
        ),
    ]
    push_token: Annotated[
        PushToken | None,
        Field(
            description="The new push token; null removes it. Signed: transcript field 7 is its "
            "hash (§3.1.8).",
            examples=[{"provider": "fcm", "token": "dGVzdC10b2tlbg:APA91bHkeybound-vector"}],
        ),
    ] = None
    software_signature: Annotated[
        SignatureDer,
        Field(
            description="ECDSA-SHA256 (DER) by the current software key over the push-token "
            "transcript (§3.1.8).",
            examples=[
                "MEUCIGjY_mnZOu5M3yyOn8loWbmNzSv_gDz17Wr0c7P3X5RSAiEA8nOkkRdxD8uVPDK5ARq4gNA"
                "bgyJI1t-lkKc8Vl8axPU"
            ],
        ),
    ]


class PushTokenResponse(Reply):
    device_id: Annotated[
        Uuid, Field(description="The device.", examples=["3f2c6f1e-8a4b-4c2d-9e1f-0a1b2c3d4e5f"])
    ]
    push_provider: Annotated[
        PushProvider | None,
        Field(
            description="The provider of the push token now registered; absent: none is.",
            examples=["fcm"],
        ),
    ] = None


# ------------------------------------------------------------------ activation link (§3.2.5)

ACTIVATION_LINK_PREFIX = "keybound://activate"


def activation_link(application_id: str, token: bytes) -> str:
    """The link (or QR payload) that carries an activation's token (§3.2.5)."""
    query = urlencode({"app": application_id, "token": b64u_encode(token)})
    return f"{ACTIVATION_LINK_PREFIX}?{query}"


def read_activation_link(link: str) -> tuple[str | None, bytes]:
    """(application id if the link names one, token) from an activation link -- ours, or a
    relying party's own https link with the same ``token`` (and ``app``) parameters;
    ValueError if it carries no valid token."""
    query = parse_qs(urlsplit(link.strip()).query)
    tokens, apps = query.get("token", []), query.get("app", [])
    if len(tokens) != 1 or len(apps) > 1:
        raise ValueError("an activation link carries exactly one token parameter")
    token = b64u_decode(tokens[0])
    if len(token) != 32:
        raise ValueError("an activation token is 32 bytes")
    return (apps[0] if apps else None), token


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
    return hashlib.sha256(_lp(context.mime_type.encode()) + _lp(context.content.encode())).digest()


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


APP_ATTEST_ACTIVATION_LABEL = b"keybound/appattest/v1/activation"


def app_attest_client_data(
    *, application_id: str, device_id: str, operation_id: str, challenge: bytes
) -> bytes:
    """The client data an App Attest attestation covers (§6.5.2): its SHA-256 is the
    ``clientDataHash`` passed to ``attestKey``. (An assertion's client data is the
    transcript it proves, §4.6.)"""
    return b"".join(
        _lp(f)
        for f in (
            APP_ATTEST_ACTIVATION_LABEL,
            application_id.encode(),
            device_id.encode(),
            operation_id.encode(),
            challenge,
        )
    )
