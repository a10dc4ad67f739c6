"""Certificate extensions, read from the certificate's bytes one by one (RFC 5280 §4.2).

cryptography parses a certificate's extensions all or nothing: one malformed extension that
nobody here uses (the FIDO conformance AIK certificates' certificatePolicies user notice,
and real EK certificates with similar slips) makes every extension unreadable. Attestation
CAs get such details wrong, so keybound reads the extension list itself and decides per
extension (docs/attestation.md "Malformed certificates"):

- the Extensions framing must parse; an OID twice is refused (RFC 5280 §4.2);
- an extension that a verifier *uses* (basicConstraints, keyUsage, extKeyUsage, the TPM
  subjectAltName, the attestation extensions) must decode, or the certificate is refused;
- an extension nobody uses is ignored when non-critical, whatever its content, and refused
  when critical unless the verifier lists it as understood (chain.check_critical_extensions);
- certificate extensions are decoded tolerating BER details (an explicit critical FALSE, a
  non-minimal BIT STRING): they come from CAs, not from the device. Attestation *statements*
  inside them (KeyDescription, the App Attest nonce) are strict DER.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pyasn1.codec.der import decoder as der_decoder
from pyasn1.type import univ
from pyasn1_modules import rfc5280

from keybound.attestation._der import (
    CLASS_CONTEXT,
    CLASS_UNIVERSAL,
    MAX_CERTIFICATE_BYTES,
    PARSE_ERRORS,
    children,
    decode_strict,
    read_tlv,
)
from keybound.attestation.base import Reason, fail

TAG_BOOLEAN = 1
TAG_OCTET_STRING = 4
TAG_OID = 6


@dataclass(frozen=True, kw_only=True)
class RawExtension:
    oid: str
    critical: bool
    value: bytes  # the extnValue OCTET STRING's content


@dataclass(frozen=True, kw_only=True)
class BasicConstraints:
    ca: bool
    path_length: int | None


@dataclass(frozen=True, kw_only=True)
class KeyUsage:
    digital_signature: bool
    key_encipherment: bool
    key_agreement: bool
    key_cert_sign: bool


def read_extensions(der: bytes) -> dict[str, RawExtension]:
    """The extensions of a DER certificate by OID (tbsCertificate's [3] EXPLICIT field)."""
    outer = read_tlv(der, 0)
    parts = children(der, outer)
    if outer.end != len(der) or not parts:
        raise fail(Reason.MALFORMED, "certificate is not one DER SEQUENCE")
    tbs = parts[0]
    extensions_field = next(
        (item for item in children(der, tbs) if item.tag_class == CLASS_CONTEXT and item.tag == 3),
        None,
    )
    if extensions_field is None:
        return {}
    wrapped = children(der, extensions_field)
    if len(wrapped) != 1:
        raise fail(Reason.MALFORMED, "certificate extensions field is not one SEQUENCE")
    found: dict[str, RawExtension] = {}
    for item in children(der, wrapped[0]):
        extension = _extension(der, children(der, item))
        if extension.oid in found:
            raise fail(Reason.MALFORMED, f"extension {extension.oid} appears twice")
        found[extension.oid] = extension
    return found


def _extension(der: bytes, parts: list[Any]) -> RawExtension:
    if (
        not 2 <= len(parts) <= 3
        or parts[0].tag != TAG_OID
        or parts[-1].tag != TAG_OCTET_STRING
        or any(part.tag_class != CLASS_UNIVERSAL for part in parts)
    ):
        raise fail(Reason.MALFORMED, "certificate extension is not {OID, critical?, value}")
    oid = str(
        decode_strict(
            parts[0].whole(der), univ.ObjectIdentifier(), what="extension OID", max_bytes=128
        )
    )
    critical = False
    if len(parts) == 3:
        flag = parts[1].content(der)
        if parts[1].tag != TAG_BOOLEAN or len(flag) != 1:
            raise fail(Reason.MALFORMED, f"extension {oid}: critical is not a BOOLEAN")
        critical = flag[0] != 0
    return RawExtension(oid=oid, critical=critical, value=parts[-1].content(der))


def decode_lenient(data: bytes, spec: Any, *, what: str) -> Any:
    """Decode a certificate extension's value (BER details tolerated, nothing left over)."""
    if len(data) > MAX_CERTIFICATE_BYTES:
        raise fail(Reason.MALFORMED, f"{what} is too large")
    try:
        value, rest = der_decoder.decode(data, asn1Spec=spec)
    except PARSE_ERRORS as exc:
        raise fail(Reason.MALFORMED, f"{what} does not parse: {type(exc).__name__}") from exc
    if rest:
        raise fail(Reason.MALFORMED, f"{what} has trailing bytes")
    return value


def basic_constraints(extension: RawExtension | None) -> BasicConstraints | None:
    if extension is None:
        return None
    value = decode_lenient(extension.value, rfc5280.BasicConstraints(), what="basicConstraints")
    length = value["pathLenConstraint"]
    return BasicConstraints(
        ca=bool(value["cA"]), path_length=int(length) if length.isValue else None
    )


def key_usage(extension: RawExtension | None) -> KeyUsage | None:
    if extension is None:
        return None
    bits = decode_lenient(extension.value, rfc5280.KeyUsage(), what="keyUsage")
    numbers = tuple(bits)

    def bit(position: int) -> bool:
        return position < len(numbers) and numbers[position] == 1

    return KeyUsage(
        digital_signature=bit(0),
        key_encipherment=bit(2),
        key_agreement=bit(4),
        key_cert_sign=bit(5),
    )


def extended_key_usage(extension: RawExtension | None) -> frozenset[str] | None:
    if extension is None:
        return None
    value = decode_lenient(extension.value, rfc5280.ExtKeyUsageSyntax(), what="extKeyUsage")
    return frozenset(str(oid) for oid in value)


def directory_attributes(extension: RawExtension | None) -> dict[str, str]:
    """Attributes of every directoryName in a subjectAltName, by OID, whatever the RDN
    grouping (one attribute per RDN, or one multi-valued RDN: both are seen in TPM AIK
    and EK certificates)."""
    if extension is None:
        return {}
    names = decode_lenient(extension.value, rfc5280.SubjectAltName(), what="subjectAltName")
    attributes: dict[str, str] = {}
    for general_name in names:
        if general_name.getName() != "directoryName":
            continue
        for rdn in general_name["directoryName"]["rdnSequence"]:
            for attribute in rdn:
                text = decode_lenient(bytes(attribute["value"]), None, what="SAN attribute")
                attributes[str(attribute["type"])] = str(text)
    return attributes
