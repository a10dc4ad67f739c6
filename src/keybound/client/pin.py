"""PIN handling on the device (auth method ``DEVICE:PIN``, docs/protocol.md §5).

The device must never hold anything that lets a PIN guess be checked offline: it keeps only
a random salt. The PIN key ``scrypt(PIN, salt)`` is sent to the server once, at activation;
afterwards the device proves knowledge of the PIN with an HMAC over the signed transcript,
and only the server, which counts failures, can tell a wrong PIN from a right one.
Neither the PIN nor the PIN key is ever stored or logged.
"""

from __future__ import annotations

import secrets

from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from keybound import crypto, protocol
from keybound.errors import ClientError, ErrorCode

SALT_BYTES = 32
PIN_KEY_BYTES = 32
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
MAX_PIN_CHARS = 256


def new_salt() -> bytes:
    """A fresh random per-activation PIN salt (stored in the device state)."""
    return secrets.token_bytes(SALT_BYTES)


def derive_pin_key(pin: str, salt: bytes) -> bytes:
    """``scrypt(PIN as UTF-8, salt, n=2**14, r=8, p=1, length=32)``.

    Raises ClientError(CLIENT_CONFIGURATION) for an empty or absurdly long PIN or a salt of
    the wrong size. Any other string is accepted: the application's PIN policy is for the UI.
    """
    if not pin or len(pin) > MAX_PIN_CHARS:
        raise ClientError(
            f"a PIN must have 1 to {MAX_PIN_CHARS} characters",
            code=ErrorCode.CLIENT_CONFIGURATION,
        )
    if len(salt) != SALT_BYTES:
        raise ClientError("PIN salt has the wrong size", code=ErrorCode.CLIENT_CONFIGURATION)
    kdf = Scrypt(salt=salt, length=PIN_KEY_BYTES, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P)
    return kdf.derive(pin.encode("utf-8"))


def proof(pin_key: bytes, signed_transcript: bytes) -> bytes:
    """The ``pinProof`` of an authentication: HMAC-SHA256 under the PIN key over
    :func:`keybound.protocol.pin_proof_message` of the transcript the device signed."""
    return crypto.pin_proof(pin_key, protocol.pin_proof_message(signed_transcript))
