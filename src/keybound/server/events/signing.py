"""Standard Webhooks signatures: the ``webhook-*`` headers, ``v1`` and ``v1a``.

A webhook is signed over ``{webhook-id}.{webhook-timestamp}.{body}`` (Standard Webhooks,
"Signature scheme"). Two schemes, told apart by their serialized secret:

- ``v1``: HMAC-SHA256 with a shared secret, serialized ``whsec_`` + base64 (24 to 64 bytes);
- ``v1a``: Ed25519, secret key ``whsk_`` + base64 of the 32-byte seed, public key ``whpk_`` +
  base64 of the 32-byte raw public key (the form the reference libraries read).

Every active secret of an endpoint signs, and ``webhook-signature`` carries all signatures
space-separated, so a receiver keeps verifying while secrets rotate. :func:`verify_webhook` is
the receiver's side (and what the README shows a relying party running); docs/webhooks.md §2.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from keybound.errors import ErrorCode, KeyboundError, MalformedRequest

HEADER_ID = "webhook-id"
HEADER_TIMESTAMP = "webhook-timestamp"
HEADER_SIGNATURE = "webhook-signature"

SYMMETRIC_PREFIX = "whsec_"
SECRET_KEY_PREFIX = "whsk_"  # noqa: S105 - a format prefix, not a secret
PUBLIC_KEY_PREFIX = "whpk_"

#: Size of generated ``whsec_`` secrets; the spec allows 24 to 64 bytes.
SYMMETRIC_SECRET_BYTES = 32
_SYMMETRIC_MIN, _SYMMETRIC_MAX = 24, 64
#: Receivers' default replay window (the reference libraries use five minutes).
DEFAULT_TOLERANCE = 300.0
#: More signatures than this in one header is not rotation but an attempt to burn CPU.
MAX_SIGNATURES = 16
#: Ids go into the signed string unescaped, so no "." (Standard Webhooks, "Signature scheme").
MESSAGE_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")

_RAW = serialization.Encoding.Raw
_RAW_PUBLIC = serialization.PublicFormat.Raw


class SignatureScheme(StrEnum):
    """Signature identifiers in ``webhook-signature`` (allow-list)."""

    V1 = "v1"  # HMAC-SHA256
    V1A = "v1a"  # Ed25519


_SCHEMES = frozenset(scheme.value for scheme in SignatureScheme)


class WebhookSignatureInvalid(KeyboundError):
    code = ErrorCode.WEBHOOK_SIGNATURE_INVALID


class WebhookTimestampInvalid(KeyboundError):
    code = ErrorCode.WEBHOOK_TIMESTAMP_INVALID


@dataclass(frozen=True, kw_only=True)
class SymmetricSecret:
    """A ``whsec_`` secret: signs and verifies ``v1``."""

    key: bytes = field(repr=False)

    @property
    def scheme(self) -> SignatureScheme:
        return SignatureScheme.V1

    def serialize(self) -> str:
        return SYMMETRIC_PREFIX + base64.b64encode(self.key).decode("ascii")


@dataclass(frozen=True, kw_only=True)
class AsymmetricSecret:
    """A ``whsk_`` secret key: signs ``v1a``; its public key is published as ``whpk_``."""

    private_key: Ed25519PrivateKey = field(repr=False)

    @property
    def scheme(self) -> SignatureScheme:
        return SignatureScheme.V1A

    def serialize(self) -> str:
        seed = self.private_key.private_bytes(
            _RAW, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        return SECRET_KEY_PREFIX + base64.b64encode(seed).decode("ascii")

    def public_key(self) -> AsymmetricPublicKey:
        return AsymmetricPublicKey(key=self.private_key.public_key())


@dataclass(frozen=True, kw_only=True)
class AsymmetricPublicKey:
    """A ``whpk_`` public key: verifies ``v1a``."""

    key: Ed25519PublicKey

    @property
    def scheme(self) -> SignatureScheme:
        return SignatureScheme.V1A

    def serialize(self) -> str:
        raw = self.key.public_bytes(_RAW, _RAW_PUBLIC)
        return PUBLIC_KEY_PREFIX + base64.b64encode(raw).decode("ascii")


SigningSecret = SymmetricSecret | AsymmetricSecret
VerifyingKey = SymmetricSecret | AsymmetricPublicKey


@dataclass(frozen=True, kw_only=True)
class VerifiedWebhook:
    """What :func:`verify_webhook` vouches for: this id and timestamp signed over this body."""

    msg_id: str
    timestamp: int
    scheme: SignatureScheme
    body: bytes


# --- secrets ------------------------------------------------------------------------------


def generate_symmetric_secret() -> SymmetricSecret:
    return SymmetricSecret(key=secrets.token_bytes(SYMMETRIC_SECRET_BYTES))


def generate_ed25519_secret() -> AsymmetricSecret:
    return AsymmetricSecret(private_key=Ed25519PrivateKey.generate())


def _b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise MalformedRequest(f"{what} is not base64") from exc


def parse_signing_secret(text: str) -> SigningSecret:
    """Read a ``whsec_`` or ``whsk_`` secret; the prefix names the scheme."""
    if text.startswith(SYMMETRIC_PREFIX):
        key = _b64(text.removeprefix(SYMMETRIC_PREFIX), "whsec_ secret")
        if not _SYMMETRIC_MIN <= len(key) <= _SYMMETRIC_MAX:
            raise MalformedRequest("whsec_ secret must be 24 to 64 bytes")
        return SymmetricSecret(key=key)
    if text.startswith(SECRET_KEY_PREFIX):
        seed = _b64(text.removeprefix(SECRET_KEY_PREFIX), "whsk_ secret key")
        if len(seed) != 32:
            raise MalformedRequest("whsk_ secret key must be a 32-byte Ed25519 seed")
        return AsymmetricSecret(private_key=Ed25519PrivateKey.from_private_bytes(seed))
    raise MalformedRequest("signing secret must start with whsec_ or whsk_")


def parse_verifying_key(text: str) -> VerifyingKey:
    """Read a receiver's key: a ``whsec_`` secret or a ``whpk_`` public key."""
    if text.startswith(PUBLIC_KEY_PREFIX):
        raw = _b64(text.removeprefix(PUBLIC_KEY_PREFIX), "whpk_ public key")
        if len(raw) != 32:
            raise MalformedRequest("whpk_ public key must be 32 bytes")
        return AsymmetricPublicKey(key=Ed25519PublicKey.from_public_bytes(raw))
    secret = parse_signing_secret(text)
    if isinstance(secret, AsymmetricSecret):
        raise MalformedRequest("a receiver verifies v1a with the whpk_ public key, not whsk_")
    return secret


# --- sending ------------------------------------------------------------------------------


def _signed_content(msg_id: str, timestamp: int, body: bytes) -> bytes:
    return f"{msg_id}.{timestamp}.".encode("ascii") + body


def sign(*, msg_id: str, timestamp: int, body: bytes, secrets: Sequence[SigningSecret]) -> str:
    """The ``webhook-signature`` value: one ``scheme,base64`` entry per secret, in order."""
    if not MESSAGE_ID.fullmatch(msg_id):
        raise MalformedRequest("webhook id must match [A-Za-z0-9_-]{1,128}")
    if timestamp < 0:
        raise MalformedRequest("webhook timestamp must be a non-negative integer")
    if not secrets:
        raise MalformedRequest("at least one signing secret is required")
    content = _signed_content(msg_id, timestamp, body)
    entries = []
    for secret in secrets:
        if isinstance(secret, SymmetricSecret):
            raw = hmac.new(secret.key, content, hashlib.sha256).digest()
        else:
            raw = secret.private_key.sign(content)
        entries.append(f"{secret.scheme.value},{base64.b64encode(raw).decode('ascii')}")
    return " ".join(entries)


def webhook_headers(
    *, msg_id: str, timestamp: int, body: bytes, secrets: Sequence[SigningSecret]
) -> dict[str, str]:
    """The three Standard Webhooks headers for one attempt."""
    return {
        HEADER_ID: msg_id,
        HEADER_TIMESTAMP: str(timestamp),
        HEADER_SIGNATURE: sign(msg_id=msg_id, timestamp=timestamp, body=body, secrets=secrets),
    }


# --- receiving ----------------------------------------------------------------------------


def _matches(key: VerifyingKey, content: bytes, signature: bytes) -> bool:
    if isinstance(key, SymmetricSecret):
        expected = hmac.new(key.key, content, hashlib.sha256).digest()
        return hmac.compare_digest(expected, signature)
    try:
        key.key.verify(signature, content)
    except _CryptoInvalidSignature:
        return False
    return True


def verify_webhook(
    *,
    body: bytes,
    headers: Mapping[str, str],
    expected_keys: Sequence[VerifyingKey],
    now: float | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
) -> VerifiedWebhook:
    """Check a received webhook against the keys the receiver trusts, or raise.

    ``body`` must be the bytes received, not a re-serialization. Deduplicating on the returned
    ``msg_id`` is the receiver's job (delivery is at least once).
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    msg_id = lowered.get(HEADER_ID, "")
    stamp = lowered.get(HEADER_TIMESTAMP, "")
    signatures = lowered.get(HEADER_SIGNATURE, "")
    # Standard Webhooks "Webhook headers": all three are required
    if not (msg_id and stamp and signatures):
        raise WebhookSignatureInvalid(
            "webhook-id, webhook-timestamp and webhook-signature are required"
        )
    # "Signature scheme": the id is signed unescaped, so it may not carry a "."
    if not MESSAGE_ID.fullmatch(msg_id):
        raise WebhookSignatureInvalid("webhook-id has characters outside [A-Za-z0-9_-]")
    # "Webhook headers": the timestamp is an integer count of seconds
    if not _TIMESTAMP.fullmatch(stamp):
        raise WebhookSignatureInvalid("webhook-timestamp is not an integer")
    timestamp = int(stamp)
    # "Verifying signatures": a timestamp outside the tolerance is a replay (or a bad clock)
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise WebhookTimestampInvalid("webhook-timestamp is outside the tolerance")
    entries = signatures.split(" ")
    # docs/webhooks.md §2.3: bounded work per request
    if len(entries) > MAX_SIGNATURES:
        raise WebhookSignatureInvalid("too many signatures")
    content = _signed_content(msg_id, timestamp, body)
    for entry in entries:
        scheme, _, encoded = entry.partition(",")
        # "Webhook headers": unknown schemes are skipped, so new ones can be added
        if scheme not in _SCHEMES:
            continue
        try:
            signature = base64.b64decode(encoded.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError):
            continue
        for key in expected_keys:
            if key.scheme.value == scheme and _matches(key, content, signature):
                return VerifiedWebhook(
                    msg_id=msg_id, timestamp=timestamp, scheme=key.scheme, body=body
                )
    # "Verifying signatures": no signature from a trusted key
    raise WebhookSignatureInvalid("no signature matches a trusted key")
