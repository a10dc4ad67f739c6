"""Constants and byte framing of the secure channel (docs/channel.md §1, §3.2, §4.2): the
length-prefixed fields, the request plaintext and the response plaintext."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final

from keybound.channel.errors import DecryptionFailed

CHANNEL_VERSION: Final = 1
SEALED_MEDIA_TYPE: Final = "application/keybound-sealed"
DEFAULT_WINDOW_SECONDS: Final = 300
REQUEST_ID_SIZE: Final = 16
RESPONSE_KEY_SIZE: Final = 32
NONCE_SIZE: Final = 12
TAG_SIZE: Final = 16
MAX_KEY_ID_LENGTH: Final = 64

_REQUEST_LABEL: Final = b"keybound/channel/v1/request"
_RESPONSE_LABEL: Final = b"keybound/channel/v1/response"
_RESPONSE_KEY_LABEL: Final = b"keybound/channel/v1/response-key"
_PIN_PROBE: Final = b"keybound/channel/v1/pin-probe"
_KDF_HKDF_SHA256: Final = 0x0001
_REQUEST_FIXED_SIZE: Final = REQUEST_ID_SIZE + 8 + RESPONSE_KEY_SIZE + 4  # §3.2
_RESPONSE_FIXED_SIZE: Final = 2 + 4  # §4.2
_U64_LIMIT: Final = 1 << 64
_U32_LIMIT: Final = 1 << 32

_KEY_ID_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
_METHOD_RE: Final = re.compile(r"[A-Z]{1,16}")
_PATH_RE: Final = re.compile(r"/[!-\"$->@-~]*")  # printable ASCII, no '#' or '?'
_APPLICATION_ID_RE: Final = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")  # = protocol.ApplicationId
_LOCAL_HOSTS: Final = frozenset({"localhost", "127.0.0.1", "::1"})


def lp(*fields: bytes) -> bytes:
    """Concatenate ``u32be(len(f)) || f`` for each field (§1)."""
    return b"".join([len(f).to_bytes(4, "big") + f for f in fields])


def _frame_request_plaintext(
    request_id: bytes, timestamp: int, response_key: bytes, body: bytes
) -> bytes:
    """request_id(16) || u64 timestamp || response_key(32) || u32 len || body (§3.2)."""
    return request_id + timestamp.to_bytes(8, "big") + response_key + lp(body)


@dataclass(frozen=True, kw_only=True)
class _RequestPlaintext:
    request_id: bytes
    timestamp: int
    response_key: bytes = field(repr=False)
    body: bytes


def _parse_request_plaintext(plaintext: bytes) -> _RequestPlaintext:
    """Inverse of :func:`_frame_request_plaintext`; the length must match exactly (§3.2)."""
    if len(plaintext) < _REQUEST_FIXED_SIZE:
        raise DecryptionFailed()
    body_len = int.from_bytes(plaintext[56:60], "big")
    if len(plaintext) != _REQUEST_FIXED_SIZE + body_len:
        raise DecryptionFailed()
    return _RequestPlaintext(
        request_id=plaintext[:16],
        timestamp=int.from_bytes(plaintext[16:24], "big"),
        response_key=plaintext[24:56],
        body=plaintext[60:],
    )


@dataclass(frozen=True, kw_only=True)
class OpenedResponse:
    """The inner HTTP status and body of a sealed response (§4.2)."""

    status: int
    body: bytes


def _parse_response_plaintext(plaintext: bytes) -> OpenedResponse:
    if len(plaintext) < _RESPONSE_FIXED_SIZE:
        raise DecryptionFailed()
    status = int.from_bytes(plaintext[:2], "big")
    body_len = int.from_bytes(plaintext[2:6], "big")
    if not 100 <= status <= 599 or len(plaintext) != _RESPONSE_FIXED_SIZE + body_len:
        raise DecryptionFailed()
    return OpenedResponse(status=status, body=plaintext[6:])
