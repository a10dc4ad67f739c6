"""Bounded, strict DER: a TLV walker, a pyasn1 decode that must re-encode to the same
bytes, and certificate loading that refuses what cryptography would only warn about.

Strictness by re-encoding: a value is accepted only if pyasn1's DER *encoder* produces
exactly the bytes received. That one comparison refuses every BER liberty (indefinite or
non-minimal lengths, BOOLEAN true as 0x01, unsorted SET OF, non-minimal INTEGERs, a
SEQUENCE's optional fields out of order) without a rule per case.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cryptography import x509
from pyasn1.codec.der import decoder as der_decoder
from pyasn1.codec.der import encoder as der_encoder
from pyasn1.error import PyAsn1Error

from keybound.attestation.base import AttestationFailed, Reason, fail

#: Largest certificate accepted anywhere (real attestation certificates are 0.5-2 KiB).
MAX_CERTIFICATE_BYTES = 16 * 1024
#: Longest certificate chain accepted (Android ATTEST_KEY chains reach 7).
MAX_CHAIN_LENGTH = 10

CLASS_UNIVERSAL = 0
CLASS_CONTEXT = 2
TAG_INTEGER = 2
TAG_SEQUENCE = 16

#: Exceptions pyasn1 raises (or lets through) on hostile input (UnicodeError is a
#: ValueError); wrapped at this boundary.
PARSE_ERRORS = (
    PyAsn1Error,
    ValueError,
    TypeError,
    IndexError,
    KeyError,
    OverflowError,
    RecursionError,
)


@dataclass(frozen=True, kw_only=True)
class Tlv:
    """One DER element: ``data[start:end]`` is the whole element, ``content`` its value."""

    tag_class: int
    constructed: bool
    tag: int
    start: int
    content_start: int
    end: int

    def content(self, data: bytes) -> bytes:
        return data[self.content_start : self.end]

    def whole(self, data: bytes) -> bytes:
        return data[self.start : self.end]


def read_tlv(data: bytes, offset: int, limit: int | None = None) -> Tlv:
    """Read one DER element at ``offset`` (ending at or before ``limit``); definite,
    minimal lengths only."""
    end_of_data = len(data) if limit is None else limit
    pos = offset
    if pos >= end_of_data:
        raise fail(Reason.MALFORMED, "DER element missing")
    first = data[pos]
    pos += 1
    tag = first & 0x1F
    if tag == 0x1F:  # high tag number form, base 128
        tag = 0
        for count in range(5):
            if pos >= end_of_data:
                raise fail(Reason.MALFORMED, "DER tag truncated")
            octet = data[pos]
            pos += 1
            if count == 0 and octet == 0x80:
                raise fail(Reason.MALFORMED, "DER tag not minimal")
            tag = (tag << 7) | (octet & 0x7F)
            if not octet & 0x80:
                break
        else:
            raise fail(Reason.MALFORMED, "DER tag too long")
    if pos >= end_of_data:
        raise fail(Reason.MALFORMED, "DER length missing")
    length = data[pos]
    pos += 1
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4 or pos + count > end_of_data:
            raise fail(Reason.MALFORMED, "DER length indefinite or too long")
        length = int.from_bytes(data[pos : pos + count], "big")
        if length < 0x80 or data[pos] == 0:
            raise fail(Reason.MALFORMED, "DER length not minimal")
        pos += count
    if pos + length > end_of_data:
        raise fail(Reason.MALFORMED, "DER element overruns its container")
    return Tlv(
        tag_class=first >> 6,
        constructed=bool(first & 0x20),
        tag=tag,
        start=offset,
        content_start=pos,
        end=pos + length,
    )


def children(data: bytes, parent: Tlv) -> list[Tlv]:
    """The elements directly inside a constructed element."""
    if not parent.constructed:
        raise fail(Reason.MALFORMED, "DER element is not constructed")
    items: list[Tlv] = []
    pos = parent.content_start
    while pos < parent.end:
        item = read_tlv(data, pos, parent.end)
        items.append(item)
        pos = item.end
    return items


def decode_strict(data: bytes, spec: Any, *, what: str, max_bytes: int) -> Any:
    """Decode ``data`` against the pyasn1 ``spec``; refuse anything but canonical DER."""
    if len(data) > max_bytes:
        raise fail(Reason.MALFORMED, f"{what} is larger than {max_bytes} bytes")
    try:
        value, rest = der_decoder.decode(data, asn1Spec=spec)
        again = der_encoder.encode(value)
    except PARSE_ERRORS as exc:
        raise fail(Reason.MALFORMED, f"{what} does not parse: {type(exc).__name__}") from exc
    if rest:
        raise fail(Reason.MALFORMED, f"{what} has trailing bytes")
    if again != data:
        raise fail(Reason.MALFORMED, f"{what} is not DER (BER or non-canonical encoding)")
    return value


# --------------------------------------------------------------------------- certificates


@dataclass(frozen=True, kw_only=True)
class CertificateParts:
    """Fields read straight from a certificate's bytes (no re-encoding)."""

    serial: int  # signed, as encoded (RFC 5280 wants it positive; load_certificate checks)
    serial_minimal: bool  # minimal two's-complement DER INTEGER
    spki: bytes  # SubjectPublicKeyInfo, as in the certificate


def certificate_parts(der: bytes) -> CertificateParts:
    """Serial and SubjectPublicKeyInfo of a certificate, read by walking its TLVs
    (RFC 5280 §4.1: Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version?,
    serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo, ... } ... })."""
    if not isinstance(der, bytes | bytearray):
        raise fail(Reason.MALFORMED, "a certificate must be bytes")
    der = bytes(der)
    if len(der) > MAX_CERTIFICATE_BYTES:
        raise fail(Reason.MALFORMED, f"certificate larger than {MAX_CERTIFICATE_BYTES} bytes")
    outer = read_tlv(der, 0)
    if outer.end != len(der) or not _is_sequence(outer):
        raise fail(Reason.MALFORMED, "certificate is not one DER SEQUENCE")
    tbs_items = children(der, outer)
    if len(tbs_items) != 3 or not _is_sequence(tbs_items[0]):
        raise fail(Reason.MALFORMED, "certificate is not tbsCertificate, algorithm, signature")
    fields = children(der, tbs_items[0])
    if fields and fields[0].tag_class == CLASS_CONTEXT and fields[0].tag == 0:
        fields = fields[1:]
    if len(fields) < 6:
        raise fail(Reason.MALFORMED, "tbsCertificate is missing fields")
    serial_tlv = fields[0]
    if serial_tlv.tag_class != CLASS_UNIVERSAL or serial_tlv.tag != TAG_INTEGER:
        raise fail(Reason.MALFORMED, "certificate serialNumber is not an INTEGER")
    serial_bytes = serial_tlv.content(der)
    if not serial_bytes:
        raise fail(Reason.MALFORMED, "certificate serialNumber is empty")
    spki = fields[5]
    if not _is_sequence(spki):
        raise fail(Reason.MALFORMED, "certificate subjectPublicKeyInfo is not a SEQUENCE")
    minimal = len(serial_bytes) == 1 or not (
        (serial_bytes[0] == 0 and not serial_bytes[1] & 0x80)
        or (serial_bytes[0] == 0xFF and serial_bytes[1] & 0x80)
    )
    return CertificateParts(
        serial=int.from_bytes(serial_bytes, "big", signed=True),
        serial_minimal=minimal,
        spki=spki.whole(der),
    )


def load_certificate(der: bytes, *, what: str = "certificate") -> x509.Certificate:
    """Parse one DER certificate with the bounds and refusals above; MALFORMED otherwise."""
    try:
        parts = certificate_parts(der)
    except AttestationFailed as exc:
        raise fail(Reason.MALFORMED, f"{what}: {exc.detail}") from exc
    # RFC 5280 §4.1.2.2: a positive INTEGER. cryptography only warns about others (for now);
    # a certificate that breaks it cannot be part of a path here (docs/attestation.md).
    if parts.serial <= 0 or not parts.serial_minimal:
        raise fail(Reason.MALFORMED, f"{what}: serial number is not a positive DER INTEGER")
    try:
        return x509.load_der_x509_certificate(bytes(der))
    except Exception as exc:  # cryptography's parse errors vary by version
        raise fail(Reason.MALFORMED, f"{what} does not parse: {type(exc).__name__}") from exc


def load_chain(ders: object, *, what: str = "certificate chain") -> list[bytes]:
    """Check that ``ders`` is a non-empty list of at most MAX_CHAIN_LENGTH byte strings."""
    if not isinstance(ders, list | tuple) or not ders:
        raise fail(Reason.MALFORMED, f"{what} must be a non-empty list of certificates")
    if len(ders) > MAX_CHAIN_LENGTH:
        raise fail(Reason.MALFORMED, f"{what} is longer than {MAX_CHAIN_LENGTH} certificates")
    if not all(isinstance(item, bytes | bytearray) for item in ders):
        raise fail(Reason.MALFORMED, f"{what} must hold DER byte strings")
    return [bytes(item) for item in ders]


def _is_sequence(tlv: Tlv) -> bool:
    return tlv.tag_class == CLASS_UNIVERSAL and tlv.constructed and tlv.tag == TAG_SEQUENCE
