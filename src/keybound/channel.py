"""Secure channel: HPKE-sealed device-API requests and AEAD-sealed responses.

Every device-API request is sealed with HPKE (RFC 9180, base mode) to a server "E2E key" that
the app pins by key id; the request carries a fresh response key, and the response is sealed
under it with the suite's AEAD. ``docs/channel.md`` is the normative description (to be merged
into ``docs/protocol.md``); section numbers in comments refer to it.

Every failure to open a sealed request or response -- unknown or retired key, altered or
truncated bytes, a timestamp outside the window, a replay -- raises the one
:class:`DecryptionFailed`, with the same code and the same message (no oracle, §5).
"""

from __future__ import annotations

import contextlib
import heapq
import hmac
import json
import os
import re
import secrets
import stat
import struct
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, ClassVar, Final, Protocol
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hpke
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from keybound.errors import ErrorCode, KeyboundError, MalformedRequest
from keybound.protocol import b64u_decode, b64u_encode

CHANNEL_VERSION: Final = 1
SEALED_MEDIA_TYPE: Final = "application/keybound-sealed"
DEFAULT_WINDOW_SECONDS: Final = 300
REQUEST_ID_SIZE: Final = 16
RESPONSE_KEY_SIZE: Final = 32
MASTER_KEY_SIZE: Final = 32
NONCE_SIZE: Final = 12
TAG_SIZE: Final = 16
MAX_KEY_ID_LENGTH: Final = 64

_REQUEST_LABEL: Final = b"keybound/channel/v1/request"
_RESPONSE_LABEL: Final = b"keybound/channel/v1/response"
_RESPONSE_KEY_LABEL: Final = b"keybound/channel/v1/response-key"
_WRAP_LABEL: Final = b"keybound/channel/v1/e2e-key-wrap"
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
_MASTER_KEY_TEXT_RE: Final = re.compile(rb"[A-Za-z0-9_-]{43}\n?")
_LOCAL_HOSTS: Final = frozenset({"localhost", "127.0.0.1", "::1"})


# --------------------------------------------------------------------------- errors (§5)


class DecryptionFailed(KeyboundError):
    """The one error for every failure to open a sealed request or response (§5).

    It takes no arguments on purpose: every cause yields the same code and the same message.
    """

    code = ErrorCode.DECRYPTION_FAILED

    def __init__(self) -> None:
        super().__init__("the sealed message could not be opened")


class InvalidPin(KeyboundError):
    """A channel pin (the app developer's configuration) is malformed (§8)."""

    code = ErrorCode.CLIENT_CONFIGURATION


class KeyStorageError(KeyboundError):
    """An E2E key, a wrapped key or the master key file is unusable (§9)."""

    code = ErrorCode.CONFIGURATION_INVALID


# --------------------------------------------------------------------------- framing (§1)


def _lp(*fields: bytes) -> bytes:
    """Concatenate ``u32be(len(f)) || f`` for each field (§1)."""
    return b"".join([len(f).to_bytes(4, "big") + f for f in fields])


# --------------------------------------------------------------------------- AEAD (§2)


@dataclass(frozen=True, kw_only=True)
class _Aead:
    """One AEAD as the channel uses it: fixed key size, 12-byte nonces, 16-byte tags."""

    aead_id: int
    key_size: int
    cipher: Callable[[bytes], AESGCM | ChaCha20Poly1305]

    def seal(self, key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
        self._check(key, nonce)
        return self.cipher(key).encrypt(nonce, plaintext, aad)

    def open(self, key: bytes, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
        """Return the plaintext or raise DecryptionFailed."""
        self._check(key, nonce)
        try:
            return self.cipher(key).decrypt(nonce, ciphertext, aad)
        except InvalidTag:
            raise DecryptionFailed() from None

    def _check(self, key: bytes, nonce: bytes) -> None:
        if len(key) != self.key_size:
            raise ValueError(f"AEAD key must be {self.key_size} bytes")
        if len(nonce) != NONCE_SIZE:
            raise ValueError(f"AEAD nonce must be {NONCE_SIZE} bytes")


_AES_128_GCM: Final = _Aead(aead_id=0x0001, key_size=16, cipher=AESGCM)
_AES_256_GCM: Final = _Aead(aead_id=0x0002, key_size=32, cipher=AESGCM)  # key wrapping only
_CHACHA20_POLY1305: Final = _Aead(aead_id=0x0003, key_size=32, cipher=ChaCha20Poly1305)


def _hkdf_sha256(*, ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    """HKDF-SHA256 (RFC 5869). Raises ValueError for a length above 255 * 32."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


# --------------------------------------------------------------------------- KEMs (§2)

_HpkePrivate = x25519.X25519PrivateKey | hpke.MLKEM768X25519PrivateKey
_HpkePublic = x25519.X25519PublicKey | hpke.MLKEM768X25519PublicKey


class _Kem(Protocol):
    kem_id: ClassVar[int]
    enc_size: ClassVar[int]
    private_size: ClassVar[int]
    public_size: ClassVar[int]
    hpke_kem: ClassVar[hpke.KEM]

    def generate(self) -> bytes: ...
    def public_from_private(self, private: bytes) -> bytes: ...
    def load_private(self, private: bytes) -> _HpkePrivate: ...
    def load_public(self, public: bytes) -> _HpkePublic: ...


class _X25519Kem:
    """DHKEM(X25519, HKDF-SHA256): raw 32-byte private scalar and public u-coordinate."""

    kem_id: ClassVar[int] = 0x0020
    enc_size: ClassVar[int] = 32
    private_size: ClassVar[int] = 32
    public_size: ClassVar[int] = 32
    hpke_kem: ClassVar[hpke.KEM] = hpke.KEM.X25519

    def generate(self) -> bytes:
        return x25519.X25519PrivateKey.generate().private_bytes_raw()

    def public_from_private(self, private: bytes) -> bytes:
        return self.load_private(private).public_key().public_bytes_raw()

    def load_private(self, private: bytes) -> x25519.X25519PrivateKey:
        return x25519.X25519PrivateKey.from_private_bytes(private)

    def load_public(self, public: bytes) -> x25519.X25519PublicKey:
        return x25519.X25519PublicKey.from_public_bytes(public)


class _MLKEM768X25519Kem:
    """ML-KEM-768 + X25519 hybrid ("X-Wing", HPKE KEM id 0x647A).

    Private key (keybound storage format): ML-KEM-768 seed d||z (64) || X25519 scalar (32).
    Public key: ML-KEM-768 encapsulation key (1184) || X25519 public key (32).
    """

    kem_id: ClassVar[int] = 0x647A
    enc_size: ClassVar[int] = 1088 + 32
    private_size: ClassVar[int] = 64 + 32
    public_size: ClassVar[int] = 1184 + 32
    hpke_kem: ClassVar[hpke.KEM] = hpke.KEM.MLKEM768_X25519

    def generate(self) -> bytes:
        seed = mlkem.MLKEM768PrivateKey.generate().private_bytes_raw()
        return seed + x25519.X25519PrivateKey.generate().private_bytes_raw()

    def public_from_private(self, private: bytes) -> bytes:
        mlkem_key, x_key = self._split_private(private)
        return mlkem_key.public_key().public_bytes_raw() + x_key.public_key().public_bytes_raw()

    def load_private(self, private: bytes) -> hpke.MLKEM768X25519PrivateKey:
        return hpke.MLKEM768X25519PrivateKey(*self._split_private(private))

    def load_public(self, public: bytes) -> hpke.MLKEM768X25519PublicKey:
        if len(public) != self.public_size:
            raise ValueError("ML-KEM-768+X25519 public key must be 1216 bytes")
        return hpke.MLKEM768X25519PublicKey(
            mlkem.MLKEM768PublicKey.from_public_bytes(public[:1184]),
            x25519.X25519PublicKey.from_public_bytes(public[1184:]),
        )

    def _split_private(
        self, private: bytes
    ) -> tuple[mlkem.MLKEM768PrivateKey, x25519.X25519PrivateKey]:
        if len(private) != self.private_size:
            raise ValueError("ML-KEM-768+X25519 private key must be 96 bytes")
        return (
            mlkem.MLKEM768PrivateKey.from_seed_bytes(private[:64]),
            x25519.X25519PrivateKey.from_private_bytes(private[64:]),
        )


# --------------------------------------------------------------------------- suites (§2)


class ChannelSuite(StrEnum):
    """HPKE suites on the allow-list. The suite comes from the stored key, never the wire."""

    X25519_SHA256_AES128GCM = "X25519_SHA256_AES128GCM"
    X25519_SHA256_CHACHA20POLY1305 = "X25519_SHA256_CHACHA20POLY1305"
    MLKEM768X25519_SHA256_AES128GCM = "MLKEM768X25519_SHA256_AES128GCM"


DEFAULT_SUITE: Final = ChannelSuite.X25519_SHA256_AES128GCM


@dataclass(frozen=True, kw_only=True)
class _SuiteSpec:
    kem: _Kem
    aead: _Aead
    hpke_suite: hpke.Suite
    suite_id: bytes  # u16 kem_id || u16 kdf_id || u16 aead_id, as in RFC 9180 §5.1
    response_key_info: bytes  # the HKDF info of every response key (§4.1)


def _spec(kem: _Kem, aead: _Aead, hpke_aead: hpke.AEAD) -> _SuiteSpec:
    suite_id = struct.pack(">HHH", kem.kem_id, _KDF_HKDF_SHA256, aead.aead_id)
    return _SuiteSpec(
        kem=kem,
        aead=aead,
        hpke_suite=hpke.Suite(kem.hpke_kem, hpke.KDF.HKDF_SHA256, hpke_aead),
        suite_id=suite_id,
        response_key_info=_lp(_RESPONSE_KEY_LABEL, suite_id),
    )


_SUITES: Final[dict[ChannelSuite, _SuiteSpec]] = {
    ChannelSuite.X25519_SHA256_AES128GCM: _spec(_X25519Kem(), _AES_128_GCM, hpke.AEAD.AES_128_GCM),
    ChannelSuite.X25519_SHA256_CHACHA20POLY1305: _spec(
        _X25519Kem(), _CHACHA20_POLY1305, hpke.AEAD.CHACHA20_POLY1305
    ),
    ChannelSuite.MLKEM768X25519_SHA256_AES128GCM: _spec(
        _MLKEM768X25519Kem(), _AES_128_GCM, hpke.AEAD.AES_128_GCM
    ),
}
_SUITE_BY_ID: Final[dict[bytes, ChannelSuite]] = {s.suite_id: n for n, s in _SUITES.items()}


def suite_id(suite: ChannelSuite) -> bytes:
    """The 6-byte wire id of ``suite``: HPKE kem_id || kdf_id || aead_id (§2)."""
    return _SUITES[suite].suite_id


# --------------------------------------------------------------------------- keys (§7, §9)


class KeyState(StrEnum):
    ACTIVE = "active"  # opens requests
    RETIRED = "retired"  # kept for the record; every request to it fails (§7)


@dataclass(frozen=True, kw_only=True)
class E2EKey:
    """A server E2E key pair. ``created_at`` is Unix seconds."""

    key_id: str
    suite: ChannelSuite
    private_key: bytes = field(repr=False, compare=False)
    public_key: bytes
    state: KeyState
    created_at: int

    def __post_init__(self) -> None:
        if self.suite not in _SUITES or self.state not in set(KeyState):
            raise KeyStorageError("E2E key has an unknown suite or state")
        kem = _SUITES[self.suite].kem
        if not isinstance(self.key_id, str) or not _KEY_ID_RE.fullmatch(self.key_id):
            raise KeyStorageError("E2E key id must be 1-64 base64url characters")
        if len(self.private_key) != kem.private_size or len(self.public_key) != kem.public_size:
            raise KeyStorageError(f"E2E key sizes do not match suite {self.suite}")

    @cached_property
    def _hpke_private(self) -> _HpkePrivate:
        return _SUITES[self.suite].kem.load_private(self.private_key)


def new_key_id() -> str:
    """A fresh random key id: 12 random bytes, 16 base64url characters, never starting with
    ``-`` (one in 64 would, and on a command line -- ``keybound e2e-key pin ID`` -- it would
    read as an option)."""
    while True:
        key_id = b64u_encode(secrets.token_bytes(12))
        if not key_id.startswith("-"):
            return key_id


def generate_e2e_key(suite: ChannelSuite = DEFAULT_SUITE, *, now: int) -> E2EKey:
    """Generate a new ACTIVE E2E key for ``suite`` with a fresh random key id."""
    kem = _SUITES[suite].kem
    private = kem.generate()
    return E2EKey(
        key_id=new_key_id(),
        suite=suite,
        private_key=private,
        public_key=kem.public_from_private(private),
        state=KeyState.ACTIVE,
        created_at=now,
    )


def retire_e2e_key(key: E2EKey) -> E2EKey:
    """The same key in state RETIRED: it no longer opens any request (§7)."""
    return replace(key, state=KeyState.RETIRED)


# --------------------------------------------------------------------------- pin (§8)


@dataclass(frozen=True, kw_only=True)
class ChannelPin:
    """What an app developer ships: where to talk, and which server E2E key to seal to."""

    application_id: str
    server_url: str
    key_id: str
    suite: ChannelSuite
    public_key: bytes

    def __post_init__(self) -> None:
        _check_pin_fields(self)
        try:  # load once (cached) and seal a probe: refuses e.g. low-order X25519 points
            _SUITES[self.suite].hpke_suite.encrypt(b"", self._hpke_public, info=_PIN_PROBE)
        except ValueError:
            raise InvalidPin("pin public key is not a valid key for its suite") from None

    @cached_property
    def _hpke_public(self) -> _HpkePublic:
        kem = _SUITES[self.suite].kem
        if len(self.public_key) != kem.public_size:
            raise ValueError("public key has the wrong length")
        return kem.load_public(self.public_key)

    def to_string(self) -> str:
        """Canonical JSON: sorted keys, no whitespace, base64url public key (§8)."""
        return json.dumps(
            {
                "v": CHANNEL_VERSION,
                "applicationId": self.application_id,
                "serverUrl": self.server_url,
                "keyId": self.key_id,
                "suite": str(self.suite),
                "publicKey": b64u_encode(self.public_key),
            },
            sort_keys=True,
            separators=(",", ":"),
        )

    @classmethod
    def from_string(cls, text: str) -> ChannelPin:
        """Parse and validate a pin string, or raise InvalidPin."""
        data = _parse_pin_json(text)
        try:
            return cls(
                application_id=data["applicationId"],
                server_url=data["serverUrl"],
                key_id=data["keyId"],
                suite=ChannelSuite(data["suite"]),
                public_key=b64u_decode(data["publicKey"]),
            )
        except ValueError:
            raise InvalidPin("pin has an unknown suite or a malformed public key") from None


_PIN_FIELDS: Final = frozenset({"v", "applicationId", "serverUrl", "keyId", "suite", "publicKey"})


def _parse_pin_json(text: str) -> dict[str, str]:
    try:
        data: Any = json.loads(text)
    except (ValueError, TypeError):
        raise InvalidPin("pin is not JSON") from None
    if not isinstance(data, dict) or set(data) != _PIN_FIELDS:
        raise InvalidPin(f"pin must be a JSON object with exactly {sorted(_PIN_FIELDS)}")
    if data["v"] != CHANNEL_VERSION or isinstance(data["v"], bool):
        raise InvalidPin(f"unsupported pin version; expected {CHANNEL_VERSION}")
    if not all(isinstance(data[k], str) for k in _PIN_FIELDS - {"v"}):
        raise InvalidPin("pin fields other than 'v' must be strings")
    return {k: data[k] for k in _PIN_FIELDS - {"v"}}


def _check_pin_fields(pin: ChannelPin) -> None:
    if not isinstance(pin.application_id, str) or not _APPLICATION_ID_RE.fullmatch(
        pin.application_id
    ):
        raise InvalidPin("application id must match [a-z0-9][a-z0-9._-]{0,63}")
    if not isinstance(pin.key_id, str) or not _KEY_ID_RE.fullmatch(pin.key_id):
        raise InvalidPin("key id must be 1-64 base64url characters")
    if not isinstance(pin.public_key, bytes):
        raise InvalidPin("public key must be bytes")
    if pin.suite not in _SUITES:
        raise InvalidPin(f"suite must be one of {[s.value for s in ChannelSuite]}")
    _check_server_url(pin.server_url)


def _check_server_url(url: str) -> None:
    if not isinstance(url, str) or not url.isascii() or not url.isprintable():
        raise InvalidPin("server URL must be printable ASCII")
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError for a malformed port
    except ValueError:
        raise InvalidPin("server URL is malformed") from None
    local = parts.scheme == "http" and parts.hostname in _LOCAL_HOSTS
    if parts.scheme != "https" and not local:
        raise InvalidPin("server URL must be https (http only for localhost)")
    if not parts.hostname or parts.username or parts.password or parts.query or parts.fragment:
        raise InvalidPin("server URL must have a host and no credentials, query or fragment")


def export_pin(key: E2EKey, *, application_id: str, server_url: str) -> ChannelPin:
    """The public pin for ``key``, to ship in an app built for ``application_id``."""
    return ChannelPin(
        application_id=application_id,
        server_url=server_url,
        key_id=key.key_id,
        suite=key.suite,
        public_key=key.public_key,
    )


# --------------------------------------------------------------------------- request (§3)


def request_info(
    *, suite: ChannelSuite, key_id: str, application_id: str, method: str, path: str
) -> bytes:
    """The HPKE ``info`` of a request (§3.3). Raises UnicodeEncodeError for a non-ASCII method."""
    return _binding(_REQUEST_LABEL, suite, key_id, application_id, method, path)


@lru_cache(maxsize=1024)
def _binding(
    label: bytes, suite: ChannelSuite, key_id: str, application_id: str, method: str, path: str
) -> bytes:
    """``label`` and what a request and its response are bound to (§3.3, §4.3), framed.

    The same few values recur on every request of a client or server (one key, one
    application, a handful of routes), so the framing is kept: it measured more than the AEAD
    of a response. Bounded, and only a function of its arguments; an exception (a
    non-ASCII method) is not cached."""
    return _lp(
        label,
        bytes([CHANNEL_VERSION]),
        _SUITES[suite].suite_id,
        key_id.encode("ascii"),
        application_id.encode("utf-8"),
        method.encode("ascii"),
        path.encode("utf-8"),
    )


def _request_header(suite: ChannelSuite, key_id: str) -> bytes:
    """version || suite id || u8 key id length || key id (§3.1)."""
    kid = key_id.encode("ascii")
    return bytes([CHANNEL_VERSION]) + _SUITES[suite].suite_id + bytes([len(kid)]) + kid


def _frame_request_plaintext(
    request_id: bytes, timestamp: int, response_key: bytes, body: bytes
) -> bytes:
    """request_id(16) || u64 timestamp || response_key(32) || u32 len || body (§3.2)."""
    return request_id + timestamp.to_bytes(8, "big") + response_key + _lp(body)


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
class ResponseOpener:
    """Client-side state kept while a request is in flight; opens its one response (§4)."""

    suite: ChannelSuite
    response_key: bytes = field(repr=False)
    request_id: bytes
    key_id: str
    application_id: str
    method: str
    path: str

    def open(self, wire: bytes) -> OpenedResponse:
        """Open the sealed response to this request, or raise DecryptionFailed (§4)."""
        aead = _SUITES[self.suite].aead
        if len(wire) < 1 + NONCE_SIZE + TAG_SIZE + _RESPONSE_FIXED_SIZE:
            raise DecryptionFailed()
        if wire[0] != CHANNEL_VERSION:
            raise DecryptionFailed()
        key, aad = _response_context(self)
        plaintext = aead.open(key, wire[1 : 1 + NONCE_SIZE], wire[1 + NONCE_SIZE :], aad)
        return _parse_response_plaintext(plaintext)


def seal_request(
    pin: ChannelPin, method: str, path: str, body: bytes, *, now: int
) -> tuple[bytes, ResponseOpener]:
    """Seal ``body`` for ``method path`` to the pinned key (§3).

    Returns the ``application/keybound-sealed`` request bytes and the opener for its response.
    Raises MalformedRequest for a method, path, timestamp or body the channel cannot carry.
    """
    _check_request_args(method, path, body, now)
    request_id = secrets.token_bytes(REQUEST_ID_SIZE)
    response_key = secrets.token_bytes(RESPONSE_KEY_SIZE)
    info = request_info(
        suite=pin.suite,
        key_id=pin.key_id,
        application_id=pin.application_id,
        method=method,
        path=path,
    )
    plaintext = _frame_request_plaintext(request_id, now, response_key, body)
    sealed = _SUITES[pin.suite].hpke_suite.encrypt(plaintext, pin._hpke_public, info=info)
    opener = ResponseOpener(
        suite=pin.suite,
        response_key=response_key,
        request_id=request_id,
        key_id=pin.key_id,
        application_id=pin.application_id,
        method=method,
        path=path,
    )
    return _request_header(pin.suite, pin.key_id) + sealed, opener


def _check_request_args(method: str, path: str, body: bytes, now: int) -> None:
    if not _METHOD_RE.fullmatch(method):
        raise MalformedRequest("HTTP method must be 1-16 upper-case ASCII letters")
    if not _PATH_RE.fullmatch(path):
        raise MalformedRequest("path must be printable ASCII, start with '/', no '?' or '#'")
    if not 0 <= now < _U64_LIMIT:
        raise MalformedRequest("timestamp must fit an unsigned 64-bit integer")
    if len(body) >= _U32_LIMIT:
        raise MalformedRequest("body must be shorter than 2**32 bytes")


@dataclass(frozen=True, kw_only=True)
class OpenedRequest:
    """A request that opened: its plaintext and everything the response must bind (§3, §4)."""

    request_id: bytes
    timestamp: int
    body: bytes
    response_key: bytes = field(repr=False)
    key_id: str
    suite: ChannelSuite
    application_id: str
    method: str
    path: str
    replay_expires_at: int  # pass to ReplayGuard.check_and_remember (§6)


@dataclass(frozen=True, kw_only=True)
class _RequestHeader:
    suite: ChannelSuite
    key_id: str
    size: int


def _parse_request_header(wire: bytes) -> _RequestHeader:
    """Parse §3.1; the suite must be on the allow-list and the body long enough."""
    if len(wire) < 8 or wire[0] != CHANNEL_VERSION:
        raise DecryptionFailed()
    suite = _SUITE_BY_ID.get(wire[1:7])
    kid_len = wire[7]
    if suite is None or not 1 <= kid_len <= MAX_KEY_ID_LENGTH:
        raise DecryptionFailed()
    key_id = wire[8 : 8 + kid_len].decode("ascii", errors="replace")
    if not _KEY_ID_RE.fullmatch(key_id):
        raise DecryptionFailed()
    size = 8 + kid_len
    minimum = _SUITES[suite].kem.enc_size + _REQUEST_FIXED_SIZE + TAG_SIZE
    if len(wire) - size < minimum:
        raise DecryptionFailed()
    return _RequestHeader(suite=suite, key_id=key_id, size=size)


def request_key_id(wire: bytes) -> str:
    """The key id a sealed request names (§3.1), for the server to find the key and its
    application before :func:`open_request`. Raises DecryptionFailed for a malformed header.
    The key id is public (every pin holds it); nothing here is authenticated yet."""
    return _parse_request_header(wire).key_id


def _usable_key(keyring: Mapping[str, E2EKey], header: _RequestHeader) -> E2EKey:
    """§7: the key must exist, be ACTIVE, and have the suite the header names."""
    key = keyring.get(header.key_id)
    if key is None or key.state != KeyState.ACTIVE:
        raise DecryptionFailed()
    if key.key_id != header.key_id or key.suite != header.suite:
        raise DecryptionFailed()
    return key


def _hpke_open(key: E2EKey, sealed: bytes, info: bytes) -> bytes:
    try:
        return _SUITES[key.suite].hpke_suite.decrypt(sealed, key._hpke_private, info=info)
    except (InvalidTag, ValueError, TypeError):
        raise DecryptionFailed() from None


def open_request(
    keyring: Mapping[str, E2EKey],
    application_id: str,
    method: str,
    path: str,
    wire: bytes,
    *,
    now: int,
    window_seconds: int = DEFAULT_WINDOW_SECONDS,
) -> OpenedRequest:
    """Open a sealed request addressed to ``method path`` of ``application_id`` (§3).

    Raises DecryptionFailed for every failure. Does NOT check for replay: the caller must pass
    the result to a :class:`ReplayGuard` before acting on it (§6).
    """
    if window_seconds <= 0:
        raise ValueError("window_seconds must be positive")
    header = _parse_request_header(wire)  # §3.1
    key = _usable_key(keyring, header)  # §7
    try:
        info = request_info(
            suite=key.suite,
            key_id=key.key_id,
            application_id=application_id,
            method=method,
            path=path,
        )
    except UnicodeEncodeError:
        raise DecryptionFailed() from None
    fields = _parse_request_plaintext(_hpke_open(key, wire[header.size :], info))  # §3.2-3.3
    if abs(now - fields.timestamp) > window_seconds:  # §6
        raise DecryptionFailed()
    return OpenedRequest(
        request_id=fields.request_id,
        timestamp=fields.timestamp,
        body=fields.body,
        response_key=fields.response_key,
        key_id=key.key_id,
        suite=key.suite,
        application_id=application_id,
        method=method,
        path=path,
        replay_expires_at=fields.timestamp + window_seconds,
    )


# --------------------------------------------------------------------------- response (§4)


@dataclass(frozen=True, kw_only=True)
class OpenedResponse:
    """The inner HTTP status and body of a sealed response (§4.2)."""

    status: int
    body: bytes


def _response_context(req: OpenedRequest | ResponseOpener) -> tuple[bytes, bytes]:
    """(AEAD key, AAD) for the response to ``req`` (§4.1, §4.3)."""
    spec = _SUITES[req.suite]
    key = _hkdf_sha256(
        ikm=req.response_key,
        salt=req.request_id,
        info=spec.response_key_info,
        length=spec.aead.key_size,
    )
    aad = _binding(
        _RESPONSE_LABEL, req.suite, req.key_id, req.application_id, req.method, req.path
    ) + _lp(req.request_id)
    return key, aad


def seal_response(opened: OpenedRequest, status: int, body: bytes) -> bytes:
    """Seal the inner ``status`` and ``body`` of the response to ``opened`` (§4)."""
    if not 100 <= status <= 599:
        raise ValueError("status must be an HTTP status code (100-599)")
    if len(body) >= _U32_LIMIT:
        raise ValueError("body must be shorter than 2**32 bytes")
    key, aad = _response_context(opened)
    nonce = secrets.token_bytes(NONCE_SIZE)
    plaintext = status.to_bytes(2, "big") + _lp(body)
    return (
        bytes([CHANNEL_VERSION])
        + nonce
        + _SUITES[opened.suite].aead.seal(key, nonce, plaintext, aad)
    )


def _parse_response_plaintext(plaintext: bytes) -> OpenedResponse:
    if len(plaintext) < _RESPONSE_FIXED_SIZE:
        raise DecryptionFailed()
    status = int.from_bytes(plaintext[:2], "big")
    body_len = int.from_bytes(plaintext[2:6], "big")
    if not 100 <= status <= 599 or len(plaintext) != _RESPONSE_FIXED_SIZE + body_len:
        raise DecryptionFailed()
    return OpenedResponse(status=status, body=plaintext[6:])


# --------------------------------------------------------------------------- replay (§6)


class ReplayGuard(Protocol):
    """Remembers request ids until they expire; refuses one seen before (§6)."""

    def check_and_remember(self, request_id: bytes, expires_at: int) -> None:
        """Record ``request_id`` until ``expires_at`` (Unix seconds), atomically, or raise
        DecryptionFailed if it is already recorded."""
        ...


class InMemoryReplayGuard:
    """A single-process :class:`ReplayGuard`. Fails closed (refuses) when full."""

    def __init__(
        self, *, clock: Callable[[], int] | None = None, max_entries: int = 1_000_000
    ) -> None:
        self._clock = clock or (lambda: int(time.time()))
        self._max_entries = max_entries
        self._seen: dict[bytes, int] = {}
        self._expiry: list[tuple[int, bytes]] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._seen)

    def check_and_remember(self, request_id: bytes, expires_at: int) -> None:
        with self._lock:
            self._forget_expired(self._clock())
            if request_id in self._seen or len(self._seen) >= self._max_entries:
                raise DecryptionFailed()
            self._seen[request_id] = expires_at
            heapq.heappush(self._expiry, (expires_at, request_id))

    def _forget_expired(self, now: int) -> None:
        while self._expiry and self._expiry[0][0] < now:
            expires_at, request_id = heapq.heappop(self._expiry)
            if self._seen.get(request_id) == expires_at:
                del self._seen[request_id]


# --------------------------------------------------------------------------- storage (§9)


def generate_master_key() -> bytes:
    return secrets.token_bytes(MASTER_KEY_SIZE)


def _wrap_aad(key_id: str, suite: ChannelSuite, public_key: bytes) -> bytes:
    return _lp(_WRAP_LABEL, key_id.encode("ascii"), suite.value.encode("ascii"), public_key)


def wrap_private_key(master_key: bytes, key: E2EKey) -> bytes:
    """Encrypt ``key``'s private key for storage: 0x01 || nonce(12) || AES-256-GCM (§9)."""
    _check_master_key(master_key)
    nonce = secrets.token_bytes(NONCE_SIZE)
    aad = _wrap_aad(key.key_id, key.suite, key.public_key)
    return (
        bytes([CHANNEL_VERSION])
        + nonce
        + _AES_256_GCM.seal(master_key, nonce, key.private_key, aad)
    )


def unwrap_private_key(
    master_key: bytes, wrapped: bytes, *, key_id: str, suite: ChannelSuite, public_key: bytes
) -> bytes:
    """Decrypt a wrapped private key and check it belongs to ``public_key``, or raise
    KeyStorageError (§9)."""
    _check_master_key(master_key)
    if len(wrapped) < 1 + NONCE_SIZE + TAG_SIZE or wrapped[0] != CHANNEL_VERSION:
        raise KeyStorageError("wrapped E2E key has an unknown format")
    aad = _wrap_aad(key_id, suite, public_key)
    try:
        private = _AES_256_GCM.open(
            master_key, wrapped[1 : 1 + NONCE_SIZE], wrapped[1 + NONCE_SIZE :], aad
        )
        derived = _SUITES[suite].kem.public_from_private(private)
    except (DecryptionFailed, ValueError):
        raise KeyStorageError("wrapped E2E key does not open under this master key") from None
    if not hmac.compare_digest(derived, public_key):
        raise KeyStorageError("wrapped E2E key does not match its public key")
    return private


def _check_master_key(master_key: bytes) -> None:
    if len(master_key) != MASTER_KEY_SIZE:
        raise KeyStorageError(f"master key must be {MASTER_KEY_SIZE} bytes")


def load_or_create_master_key(path: str | os.PathLike[str]) -> bytes:
    """Read the master key file at ``path``, creating it (mode 0600) if absent (§9).

    The file holds 43 base64url characters and a newline. It must be a regular file owned by
    this user with no group or other permission bits; otherwise KeyStorageError.
    """
    target = Path(path)
    if not target.exists():
        _create_master_key_file(target)
    return _read_master_key_file(target)


def _create_master_key_file(path: Path) -> None:
    """Write to a private temp file, then hard-link it into place: the link is atomic and
    fails if another process got there first, so a reader never sees a partial key."""
    text = b64u_encode(generate_master_key()).encode("ascii") + b"\n"
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), 0o600)
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):  # lost the race: use the winner's key
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _read_master_key_file(path: Path) -> bytes:
    try:  # O_NONBLOCK: a FIFO planted at the path must not hang the server
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise KeyStorageError(f"cannot open master key file: {exc.strerror}") from None
    try:
        _check_master_key_file(os.fstat(fd))
        text = os.read(fd, 64)
    finally:
        os.close(fd)
    if not _MASTER_KEY_TEXT_RE.fullmatch(text):
        raise KeyStorageError("master key file must hold 43 base64url characters")
    return b64u_decode(text.rstrip(b"\n").decode("ascii"))


def _check_master_key_file(info: os.stat_result) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise KeyStorageError("master key file is not a regular file")
    if info.st_mode & 0o077:
        raise KeyStorageError("master key file must be mode 0600 (no group/other access)")
    if info.st_uid != os.geteuid():
        raise KeyStorageError("master key file must be owned by the server's user")
