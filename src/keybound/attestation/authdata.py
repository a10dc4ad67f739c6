"""WebAuthn authenticator data and COSE keys, as App Attest and the WebAuthn ``tpm``
statement use them (W3C WebAuthn Level 3 §6.1 "Authenticator Data", §6.5.1 "Attested
Credential Data"; RFC 9053 §7 for COSE keys).

Layout: rpIdHash (32) | flags (1) | signCount (4, big-endian)
        [ aaguid (16) | credentialIdLength (2) | credentialId | credentialPublicKey (CBOR) ]
        [ extensions (CBOR) ]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from keybound.attestation import _cbor
from keybound.attestation.base import Reason, fail

FLAG_UP = 0x01
FLAG_UV = 0x04
FLAG_AT = 0x40  # attested credential data included
FLAG_ED = 0x80  # extension data included
#: Largest authenticator data accepted (an RSA-4096 credential is under 700 bytes).
MAX_AUTHENTICATOR_DATA = 4096
MAX_CREDENTIAL_ID = 1023  # WebAuthn §5.8.3: at most 1023 bytes

_CURVES: Mapping[int, ec.EllipticCurve] = {1: ec.SECP256R1(), 2: ec.SECP384R1(), 3: ec.SECP521R1()}


@dataclass(frozen=True, kw_only=True)
class AuthenticatorData:
    raw: bytes
    rp_id_hash: bytes
    flags: int
    sign_count: int
    aaguid: bytes | None = None
    credential_id: bytes | None = None
    credential_public_key: Mapping[Any, Any] | None = None  # the COSE_Key map
    extensions: Any = None


def parse_authenticator_data(
    data: object, *, what: str = "authenticator data"
) -> AuthenticatorData:
    """Parse authenticator data; the flags decide which optional parts must follow.

    Apple's quirk (App Attest assertions): the AT flag is set on 37-byte authenticator data
    that carries no attested credential data. 37 bytes with AT set is therefore read as
    "no credential data"; anything longer must match its flags exactly.
    """
    if not isinstance(data, bytes | bytearray):
        raise fail(Reason.MALFORMED, f"{what} must be bytes")
    raw = bytes(data)
    if not 37 <= len(raw) <= MAX_AUTHENTICATOR_DATA:
        raise fail(Reason.MALFORMED, f"{what} must be 37..{MAX_AUTHENTICATOR_DATA} bytes")
    flags = raw[32]
    parsed: dict[str, Any] = {
        "raw": raw,
        "rp_id_hash": raw[:32],
        "flags": flags,
        "sign_count": int.from_bytes(raw[33:37], "big"),
    }
    if len(raw) == 37:
        return AuthenticatorData(**parsed)
    pos = 37
    if flags & FLAG_AT:
        if len(raw) < pos + 18:
            raise fail(Reason.MALFORMED, f"{what}: attested credential data truncated")
        parsed["aaguid"] = raw[pos : pos + 16]
        length = int.from_bytes(raw[pos + 16 : pos + 18], "big")
        pos += 18
        if length > MAX_CREDENTIAL_ID or len(raw) < pos + length:
            raise fail(Reason.MALFORMED, f"{what}: credential id length {length}")
        parsed["credential_id"] = raw[pos : pos + length]
        pos += length
        key, used = _cbor.decode_prefix(
            raw[pos:], what=f"{what} credential public key", max_bytes=MAX_AUTHENTICATOR_DATA
        )
        if not isinstance(key, dict):
            raise fail(Reason.MALFORMED, f"{what}: credential public key is not a COSE map")
        parsed["credential_public_key"] = key
        pos += used
    if flags & FLAG_ED:
        parsed["extensions"], used = _cbor.decode_prefix(
            raw[pos:], what=f"{what} extensions", max_bytes=MAX_AUTHENTICATOR_DATA
        )
        if not isinstance(parsed["extensions"], dict):
            raise fail(Reason.MALFORMED, f"{what}: extensions are not a CBOR map")
        pos += used
    if pos != len(raw):
        raise fail(Reason.MALFORMED, f"{what}: {len(raw) - pos} bytes left over")
    return AuthenticatorData(**parsed)


def cose_key_to_spki(key: Mapping[Any, Any]) -> bytes:
    """SubjectPublicKeyInfo (DER) of a COSE_Key: EC2 on P-256/384/521, or RSA."""
    kty = key.get(1)
    try:
        if kty == 2:  # EC2
            curve = _CURVES.get(key.get(-1))  # type: ignore[arg-type]
            x, y = key.get(-2), key.get(-3)
            if curve is None or not isinstance(x, bytes) or not isinstance(y, bytes):
                raise fail(Reason.UNSUPPORTED_ALGORITHM, "COSE EC2 key: curve or coordinates")
            size = (curve.key_size + 7) // 8
            if len(x) != size or len(y) != size:
                raise fail(Reason.MALFORMED, "COSE EC2 key: coordinate length")
            public: Any = ec.EllipticCurvePublicKey.from_encoded_point(curve, b"\x04" + x + y)
        elif kty == 3:  # RSA
            n, e = key.get(-1), key.get(-2)
            if not isinstance(n, bytes) or not isinstance(e, bytes) or not n or not e:
                raise fail(Reason.MALFORMED, "COSE RSA key: n or e missing")
            public = rsa.RSAPublicNumbers(
                int.from_bytes(e, "big"), int.from_bytes(n, "big")
            ).public_key()
        else:
            raise fail(Reason.UNSUPPORTED_ALGORITHM, f"COSE key type {kty!r}")
    except ValueError as exc:
        raise fail(Reason.MALFORMED, "COSE key is not a valid public key") from exc
    return bytes(
        public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
