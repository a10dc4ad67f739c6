"""Key parsing and signature verification: the only place the server touches signatures.

Verification is verify-or-raise (:func:`verify_signature` returns ``None`` or raises
:class:`~keybound.errors.InvalidSignature`). The algorithm is always the stored key's, never
one named by a request.
"""

from __future__ import annotations

import hashlib
import hmac
from functools import lru_cache

from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from keybound.errors import InvalidSignature, MalformedRequest, UnsupportedAlgorithm
from keybound.protocol import Algorithm

_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())


@lru_cache(maxsize=4096)
def _load_p256(spki: bytes) -> ec.EllipticCurvePublicKey:
    try:
        key = serialization.load_der_public_key(spki)
    except (ValueError, TypeError) as exc:
        raise MalformedRequest("public key is not a DER SubjectPublicKeyInfo") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise UnsupportedAlgorithm("only ECDSA P-256 keys are accepted")
    return key


def parse_public_key(spki: bytes, algorithm: Algorithm = Algorithm.ES256) -> bytes:
    """Validate a public key for ``algorithm`` and return its canonical SPKI DER encoding.

    Raises MalformedRequest or UnsupportedAlgorithm. The canonical re-encoding is what gets
    stored, so the same key always has the same key id.
    """
    if algorithm is not Algorithm.ES256:  # pragma: no cover - allow-list has one entry
        raise UnsupportedAlgorithm(f"algorithm {algorithm} is not allowed")
    key = _load_p256(spki)
    canonical = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if canonical != spki:
        raise MalformedRequest("public key is not in canonical uncompressed SPKI DER form")
    return canonical


def verify_signature(
    *, public_key: bytes, algorithm: Algorithm, message: bytes, signature: bytes
) -> None:
    """Verify ``signature`` over ``message`` with a stored key, or raise InvalidSignature."""
    if algorithm is not Algorithm.ES256:  # pragma: no cover - allow-list has one entry
        raise UnsupportedAlgorithm(f"algorithm {algorithm} is not allowed")
    try:
        key = _load_p256(public_key)
        key.verify(signature, message, _ECDSA_SHA256)
    except (_CryptoInvalidSignature, ValueError, MalformedRequest, UnsupportedAlgorithm) as exc:
        raise InvalidSignature("signature does not verify") from exc


def key_id(spki: bytes) -> bytes:
    """SHA-256 of the SPKI DER encoding: how requests name a stored key."""
    return hashlib.sha256(spki).digest()


def pin_proof(pin_key: bytes, message: bytes) -> bytes:
    return hmac.new(pin_key, message, hashlib.sha256).digest()


def verify_pin_proof(*, pin_key: bytes, message: bytes, proof: bytes) -> bool:
    """Constant-time check of a PIN proof. Returns a bool because a wrong PIN is a counted
    outcome of the ceremony, not a malformed request."""
    return hmac.compare_digest(pin_proof(pin_key, message), proof)


def constant_time_equal(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


# ------------------------------------------------------------------ software keys (SDK side)


def generate_p256() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def public_der(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> bytes:
    pub = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    return pub.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def sign_p256(key: ec.EllipticCurvePrivateKey, message: bytes) -> bytes:
    return key.sign(message, _ECDSA_SHA256)


def p256_public_from_point(x: int, y: int) -> bytes:
    """SPKI DER of a P-256 public point (used by hardware key stores that return a raw point)."""
    return public_der(ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key())


def der_signature(r: int, s: int) -> bytes:
    """DER-encode a raw ECDSA (r, s) pair, as hardware tokens return r || s."""
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    return encode_dss_signature(r, s)
