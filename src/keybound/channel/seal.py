"""Sealing and opening requests (HPKE, docs/channel.md §3) and responses (the suite's AEAD,
§4). Every failure to open raises the one DecryptionFailed (§5)."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache

from cryptography.exceptions import InvalidTag

from keybound.channel.errors import DecryptionFailed
from keybound.channel.framing import (
    _KEY_ID_RE,
    _METHOD_RE,
    _PATH_RE,
    _REQUEST_FIXED_SIZE,
    _REQUEST_LABEL,
    _RESPONSE_FIXED_SIZE,
    _RESPONSE_LABEL,
    _U32_LIMIT,
    _U64_LIMIT,
    CHANNEL_VERSION,
    DEFAULT_WINDOW_SECONDS,
    MAX_KEY_ID_LENGTH,
    NONCE_SIZE,
    REQUEST_ID_SIZE,
    RESPONSE_KEY_SIZE,
    TAG_SIZE,
    OpenedResponse,
    _frame_request_plaintext,
    _parse_request_plaintext,
    _parse_response_plaintext,
    lp,
)
from keybound.channel.keys import E2EKey, KeyState
from keybound.channel.pin import ChannelPin
from keybound.channel.suites import _SUITE_BY_ID, _SUITES, ChannelSuite, _hkdf_sha256
from keybound.errors import MalformedRequest


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
    return lp(
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
    ) + lp(req.request_id)
    return key, aad


def seal_response(opened: OpenedRequest, status: int, body: bytes) -> bytes:
    """Seal the inner ``status`` and ``body`` of the response to ``opened`` (§4)."""
    if not 100 <= status <= 599:
        raise ValueError("status must be an HTTP status code (100-599)")
    if len(body) >= _U32_LIMIT:
        raise ValueError("body must be shorter than 2**32 bytes")
    key, aad = _response_context(opened)
    nonce = secrets.token_bytes(NONCE_SIZE)
    plaintext = status.to_bytes(2, "big") + lp(body)
    return (
        bytes([CHANNEL_VERSION])
        + nonce
        + _SUITES[opened.suite].aead.seal(key, nonce, plaintext, aad)
    )
