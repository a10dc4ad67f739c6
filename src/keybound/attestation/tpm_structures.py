"""TPM 2.0 structures the verifier reads, unmarshalled by hand from their exact layouts in
TPM 2.0 Library Part 2 "Structures" (cited as [P2 §n]); every read is bounds-checked and a
structure must consume its buffer exactly.

- TPMS_ATTEST [P2 10.12.12] with TPMS_CERTIFY_INFO [P2 10.12.3]
- TPMT_PUBLIC [P2 12.2.4] for RSA and ECC keys (TPMS_RSA_PARMS, TPMS_ECC_PARMS, schemes)
- TPMT_SIGNATURE [P2 11.3.4] for RSASSA, RSAPSS and ECDSA

Objects of other types (KEYEDHASH, SYMCIPHER) and curves other than NIST P-256/384/521 are
UNSUPPORTED_ALGORITHM.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum, IntFlag
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from keybound.attestation.base import Reason, fail

TPM_GENERATED_VALUE = 0xFF544347  # [P2 6.2]
TPM_ST_ATTEST_CERTIFY = 0x8017  # [P2 6.9]
#: Largest TPM structure accepted (a TPMT_PUBLIC for RSA-4096 is under 600 bytes).
MAX_STRUCTURE_BYTES = 4096


class TpmAlg(IntEnum):
    """TPM_ALG_ID values used here [P2 6.3]."""

    RSA = 0x0001
    SHA1 = 0x0004
    HMAC = 0x0005
    AES = 0x0006
    KEYEDHASH = 0x0008
    XOR = 0x000A
    SHA256 = 0x000B
    SHA384 = 0x000C
    SHA512 = 0x000D
    NULL = 0x0010
    SM3_256 = 0x0012
    RSASSA = 0x0014
    RSAES = 0x0015
    RSAPSS = 0x0016
    OAEP = 0x0017
    ECDSA = 0x0018
    ECDH = 0x0019
    ECDAA = 0x001A
    SM2 = 0x001B
    ECSCHNORR = 0x001C
    ECMQV = 0x001D
    KDF1_SP800_56A = 0x0020
    KDF2 = 0x0021
    KDF1_SP800_108 = 0x0022
    ECC = 0x0023
    SYMCIPHER = 0x0025
    CFB = 0x0043


class ObjectAttributes(IntFlag):
    """TPMA_OBJECT [P2 8.3]."""

    FIXED_TPM = 1 << 1
    ST_CLEAR = 1 << 2
    FIXED_PARENT = 1 << 4
    SENSITIVE_DATA_ORIGIN = 1 << 5
    USER_WITH_AUTH = 1 << 6
    ADMIN_WITH_POLICY = 1 << 7
    NO_DA = 1 << 10
    ENCRYPTED_DUPLICATION = 1 << 11
    RESTRICTED = 1 << 16
    DECRYPT = 1 << 17
    SIGN_ENCRYPT = 1 << 18


#: Name/digest algorithms and their cryptography hash classes.
HASHES: Mapping[int, type[hashes.HashAlgorithm]] = {
    TpmAlg.SHA1: hashes.SHA1,
    TpmAlg.SHA256: hashes.SHA256,
    TpmAlg.SHA384: hashes.SHA384,
    TpmAlg.SHA512: hashes.SHA512,
}
#: TPM_ECC_CURVE [P2 6.4] for the NIST curves.
CURVES: Mapping[int, ec.EllipticCurve] = {
    0x0003: ec.SECP256R1(),
    0x0004: ec.SECP384R1(),
    0x0005: ec.SECP521R1(),
}
#: Schemes whose TPMU_ASYM_SCHEME details are a TPMS_SCHEME_HASH (one hashAlg).
_HASH_SCHEMES = {
    TpmAlg.RSASSA,
    TpmAlg.RSAPSS,
    TpmAlg.OAEP,
    TpmAlg.ECDSA,
    TpmAlg.ECDH,
    TpmAlg.SM2,
    TpmAlg.ECSCHNORR,
    TpmAlg.ECMQV,
}


class _Reader:
    """Big-endian reads over one buffer; MALFORMED on any overrun."""

    def __init__(self, data: object, what: str) -> None:
        if not isinstance(data, bytes | bytearray):
            raise fail(Reason.MALFORMED, f"{what} must be bytes")
        if len(data) > MAX_STRUCTURE_BYTES:
            raise fail(Reason.MALFORMED, f"{what} is larger than {MAX_STRUCTURE_BYTES} bytes")
        self.data = bytes(data)
        self.pos = 0
        self.what = what

    def take(self, count: int) -> bytes:
        if self.pos + count > len(self.data):
            raise fail(Reason.MALFORMED, f"{self.what} is truncated")
        chunk = self.data[self.pos : self.pos + count]
        self.pos += count
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def u32(self) -> int:
        return int.from_bytes(self.take(4), "big")

    def u64(self) -> int:
        return int.from_bytes(self.take(8), "big")

    def sized(self) -> bytes:
        """A TPM2B: UINT16 size, then that many bytes."""
        return self.take(self.u16())

    def done(self) -> None:
        if self.pos != len(self.data):
            raise fail(
                Reason.MALFORMED, f"{self.what} has {len(self.data) - self.pos} bytes left over"
            )


# --------------------------------------------------------------------------- TPMS_ATTEST


@dataclass(frozen=True, kw_only=True)
class ClockInfo:
    clock: int
    reset_count: int
    restart_count: int
    safe: bool


@dataclass(frozen=True, kw_only=True)
class Attest:
    """TPMS_ATTEST; ``certified_name``/``qualified_name`` come from TPMS_CERTIFY_INFO."""

    magic: int
    type: int
    qualified_signer: bytes
    extra_data: bytes
    clock_info: ClockInfo
    firmware_version: int
    certified_name: bytes
    certified_qualified_name: bytes


def parse_attest(data: object) -> Attest:
    """Unmarshal a TPMS_ATTEST of type TPM_ST_ATTEST_CERTIFY (other types: TPM_WRONG_TYPE)."""
    reader = _Reader(data, "TPMS_ATTEST")
    magic = reader.u32()
    kind = reader.u16()
    qualified_signer = reader.sized()
    extra_data = reader.sized()
    clock = ClockInfo(
        clock=reader.u64(),
        reset_count=reader.u32(),
        restart_count=reader.u32(),
        safe=_yes_no(reader.u8()),
    )
    firmware = reader.u64()
    # The union's layout depends on the type: only a certify's can be read.
    name = qualified_name = b""
    if kind == TPM_ST_ATTEST_CERTIFY:
        name = reader.sized()
        qualified_name = reader.sized()
        reader.done()
    return Attest(
        magic=magic,
        type=kind,
        qualified_signer=qualified_signer,
        extra_data=extra_data,
        clock_info=clock,
        firmware_version=firmware,
        certified_name=name,
        certified_qualified_name=qualified_name,
    )


def _yes_no(value: int) -> bool:
    # clockInfo is informational (WebAuthn §8.3 ignores it); a TPMI_YES_NO other than 0/1
    # (the W3C test vector has one) reads as "not safe" instead of refusing the statement.
    return value == 1


# --------------------------------------------------------------------------- TPMT_PUBLIC


@dataclass(frozen=True, kw_only=True)
class Public:
    """TPMT_PUBLIC for an RSA or ECC key. ``raw`` is the exact marshalled bytes."""

    raw: bytes
    type: int
    name_alg: int
    attributes: ObjectAttributes
    auth_policy: bytes
    symmetric: tuple[int, int, int]  # (algorithm, keyBits, mode) or (NULL, 0, 0)
    scheme: int
    scheme_hash: int | None
    rsa_key_bits: int | None = None
    rsa_exponent: int | None = None
    curve: int | None = None
    kdf: int | None = None
    unique: bytes = b""  # RSA modulus
    ecc_x: bytes = b""
    ecc_y: bytes = b""

    def name(self) -> bytes:
        """The object's Name: nameAlg || H_nameAlg(TPMT_PUBLIC) [P1 16]."""
        return object_name(self.name_alg, self.raw)

    def public_key(self) -> rsa.RSAPublicKey | ec.EllipticCurvePublicKey:
        try:
            if self.type == TpmAlg.RSA:
                exponent = self.rsa_exponent or 65537  # 0 means the default 2^16+1 [P2 12.2.3.5]
                return rsa.RSAPublicNumbers(
                    exponent, int.from_bytes(self.unique, "big")
                ).public_key()
            curve = CURVES[self.curve or 0]
            return ec.EllipticCurvePublicNumbers(
                int.from_bytes(self.ecc_x, "big"), int.from_bytes(self.ecc_y, "big"), curve
            ).public_key()
        except (ValueError, KeyError) as exc:
            raise fail(Reason.MALFORMED, "TPMT_PUBLIC does not hold a valid public key") from exc

    def spki(self) -> bytes:
        return self.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def object_name(name_alg: int, public_area: bytes) -> bytes:
    """nameAlg (UINT16) || H_nameAlg(public_area)."""
    algorithm = HASHES.get(name_alg)
    if algorithm is None:
        raise fail(Reason.UNSUPPORTED_ALGORITHM, f"nameAlg 0x{name_alg:04x}")
    digest = hashes.Hash(algorithm())
    digest.update(public_area)
    return name_alg.to_bytes(2, "big") + digest.finalize()


def parse_public(data: object, *, what: str = "TPMT_PUBLIC") -> Public:
    """Unmarshal a TPMT_PUBLIC (RSA or ECC)."""
    reader = _Reader(data, what)
    kind = reader.u16()
    name_alg = reader.u16()
    attributes = ObjectAttributes(reader.u32())
    auth_policy = reader.sized()
    if kind not in (TpmAlg.RSA, TpmAlg.ECC):
        raise fail(Reason.UNSUPPORTED_ALGORITHM, f"{what} type 0x{kind:04x}")
    symmetric = _sym_def_object(reader)
    scheme = reader.u16()
    scheme_hash = _scheme_details(reader, scheme)
    fields: dict[str, Any] = {}
    if kind == TpmAlg.RSA:
        fields["rsa_key_bits"] = reader.u16()
        fields["rsa_exponent"] = reader.u32()
        fields["unique"] = reader.sized()
    else:
        curve = reader.u16()
        if curve not in CURVES:
            raise fail(Reason.UNSUPPORTED_ALGORITHM, f"{what} curve 0x{curve:04x}")
        kdf = reader.u16()
        if kdf != TpmAlg.NULL:
            reader.u16()  # TPMS_SCHEME_HASH of the KDF
        fields.update(curve=curve, kdf=kdf, ecc_x=reader.sized(), ecc_y=reader.sized())
    reader.done()
    return Public(
        raw=reader.data,
        type=kind,
        name_alg=name_alg,
        attributes=attributes,
        auth_policy=auth_policy,
        symmetric=symmetric,
        scheme=scheme,
        scheme_hash=scheme_hash,
        **fields,
    )


def _sym_def_object(reader: _Reader) -> tuple[int, int, int]:
    algorithm = reader.u16()
    if algorithm == TpmAlg.NULL:
        return (algorithm, 0, 0)
    if algorithm == TpmAlg.XOR:
        return (algorithm, reader.u16(), 0)  # keyBits is the hash; no mode
    return (algorithm, reader.u16(), reader.u16())


def _scheme_details(reader: _Reader, scheme: int) -> int | None:
    if scheme in (TpmAlg.NULL, TpmAlg.RSAES):
        return None  # RSAES has an empty TPMS_ENC_SCHEME_RSAES
    if scheme == TpmAlg.ECDAA:
        hash_alg = reader.u16()
        reader.u16()  # count
        return hash_alg
    if scheme in _HASH_SCHEMES:
        return reader.u16()
    raise fail(Reason.UNSUPPORTED_ALGORITHM, f"key scheme 0x{scheme:04x}")


# ------------------------------------------------------------------------ TPMT_SIGNATURE


@dataclass(frozen=True, kw_only=True)
class Signature:
    """A signature in the form the verifier checks: scheme, hash, and the signature bytes
    (RSA: the raw signature; ECDSA: DER ``Ecdsa-Sig-Value``)."""

    scheme: int  # TpmAlg.RSASSA, RSAPSS or ECDSA
    hash_alg: int
    value: bytes


def parse_signature(data: object) -> Signature:
    """Unmarshal a TPMT_SIGNATURE (what TPM2_Certify returns)."""
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    reader = _Reader(data, "TPMT_SIGNATURE")
    scheme = reader.u16()
    if scheme in (TpmAlg.RSASSA, TpmAlg.RSAPSS):
        hash_alg = reader.u16()
        value = reader.sized()
    elif scheme == TpmAlg.ECDSA:
        hash_alg = reader.u16()
        r, s = reader.sized(), reader.sized()
        if not r or not s:
            raise fail(Reason.MALFORMED, "ECDSA signature with an empty r or s")
        value = encode_dss_signature(int.from_bytes(r, "big"), int.from_bytes(s, "big"))
    else:
        raise fail(Reason.UNSUPPORTED_ALGORITHM, f"signature scheme 0x{scheme:04x}")
    reader.done()
    return Signature(scheme=scheme, hash_alg=hash_alg, value=value)


def digest(hash_alg: int, data: bytes) -> bytes:
    algorithm = HASHES.get(hash_alg)
    if algorithm is None:
        raise fail(Reason.UNSUPPORTED_ALGORITHM, f"hash 0x{hash_alg:04x}")
    hasher = hashes.Hash(algorithm())
    hasher.update(data)
    return hasher.finalize()
