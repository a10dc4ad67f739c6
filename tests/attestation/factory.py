"""Throw-away PKI and attestation structures for derived negative tests.

Everything here is built with `cryptography` at test time: CAs, Android attestation leaves
with a KeyDescription encoded from the AOSP schema, App Attest-like credential
certificates, TPM AK certificates and TPMS_ATTEST/TPMT_PUBLIC structures. A tiny DER
writer encodes what cryptography has no builder for.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import NameOID

EPOCH = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
NOW = dt.datetime(2025, 6, 1, tzinfo=dt.UTC)
FAR = dt.datetime(2045, 1, 1, tzinfo=dt.UTC)

# ------------------------------------------------------------------------- DER writer


def tlv(tag: int, content: bytes, *, cls: int = 0, constructed: bool = False) -> bytes:
    first = (cls << 6) | (0x20 if constructed else 0)
    if tag < 31:
        head = bytes([first | tag])
    else:
        digits = []
        value = tag
        while True:
            digits.append(value & 0x7F)
            value >>= 7
            if not value:
                break
        digits.reverse()
        head = bytes([first | 0x1F]) + bytes(d | 0x80 for d in digits[:-1]) + bytes(digits[-1:])
    length = len(content)
    if length < 0x80:
        size = bytes([length])
    else:
        raw = length.to_bytes((length.bit_length() + 7) // 8, "big")
        size = bytes([0x80 | len(raw)]) + raw
    return head + size + content


def integer(value: int) -> bytes:
    raw = value.to_bytes(max(1, (value.bit_length() + 8) // 8), "big", signed=True)
    return tlv(2, raw)


def enumerated(value: int) -> bytes:
    return tlv(10, integer(value)[2:])


def octets(data: bytes) -> bytes:
    return tlv(4, data)


def null() -> bytes:
    return tlv(5, b"")


def boolean(value: bool, *, ber_true: bool = False) -> bytes:
    return tlv(1, b"\x01" if (value and ber_true) else (b"\xff" if value else b"\x00"))


def sequence(*items: bytes) -> bytes:
    return tlv(16, b"".join(items), constructed=True)


def set_of(*items: bytes) -> bytes:
    return tlv(17, b"".join(sorted(items)), constructed=True)


def explicit(tag: int, inner: bytes) -> bytes:
    return tlv(tag, inner, cls=2, constructed=True)


# ---------------------------------------------------------------- Android KeyDescription


@dataclass(kw_only=True)
class KeyDescriptionSpec:
    """Fields of a synthetic KeyDescription (defaults: a good TEE key)."""

    challenge: bytes = b"keybound-challenge"
    attestation_level: int = 1
    keymint_level: int = 1
    attestation_version: int = 300
    purposes: Sequence[int] = (2,)
    origin: int | None = 0
    boot_state: int = 0
    device_locked: bool = True
    ber_device_locked: bool = False
    package: str = "com.example.bank"
    signature_digests: Sequence[bytes] = (hashlib.sha256(b"signer").digest(),)
    os_patch_level: int = 202501
    vendor_patch_level: int | None = 20250105
    hardware_tags_out_of_order: bool = False
    extra_hardware: Sequence[tuple[int, bytes]] = field(default_factory=tuple)


def key_description(spec: KeyDescriptionSpec) -> bytes:
    app_id = sequence(
        set_of(sequence(octets(spec.package.encode()), integer(1))),
        set_of(*(octets(d) for d in spec.signature_digests)),
    )
    software = sequence(explicit(701, integer(1_700_000_000_000)), explicit(709, octets(app_id)))
    root = sequence(
        octets(b"\x11" * 32),
        boolean(spec.device_locked, ber_true=spec.ber_device_locked),
        enumerated(spec.boot_state),
        octets(b"\x22" * 32),
    )
    tagged: list[tuple[int, bytes]] = [
        (1, set_of(*(integer(p) for p in spec.purposes))),
        (2, integer(3)),
        (3, integer(256)),
        (10, integer(1)),
        (503, null()),
        (704, root),
        (705, integer(150000)),
        (706, integer(spec.os_patch_level)),
    ]
    if spec.origin is not None:
        tagged.append((702, integer(spec.origin)))
    if spec.vendor_patch_level is not None:
        tagged.append((718, integer(spec.vendor_patch_level)))
    tagged.extend(spec.extra_hardware)
    tagged.sort()
    if spec.hardware_tags_out_of_order:
        tagged[0], tagged[1] = tagged[1], tagged[0]
    hardware = sequence(*(explicit(tag, value) for tag, value in tagged))
    return sequence(
        integer(spec.attestation_version),
        enumerated(spec.attestation_level),
        integer(spec.attestation_version),
        enumerated(spec.keymint_level),
        octets(spec.challenge),
        octets(b""),
        software,
        hardware,
    )


# --------------------------------------------------------------------------------- PKI


@dataclass
class Issued:
    certificate: x509.Certificate
    key: CertificateIssuerPrivateKeyTypes

    @property
    def der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)

    @property
    def spki(self) -> bytes:
        return self.certificate.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)


def name(common_name: str, *, title: str | None = None, serial: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if title is not None:
        attributes.append(x509.NameAttribute(NameOID.TITLE, title))
    if serial is not None:
        attributes.append(x509.NameAttribute(NameOID.SERIAL_NUMBER, serial))
    return x509.Name(attributes)


def issue(
    subject: x509.Name,
    *,
    issuer: Issued | None = None,
    key: CertificateIssuerPrivateKeyTypes | None = None,
    ca: bool | None = True,
    key_cert_sign: bool = True,
    digital_signature: bool = False,
    path_length: int | None = None,
    extensions: Sequence[tuple[x509.ExtensionType, bool]] = (),
    not_before: dt.datetime = EPOCH,
    not_after: dt.datetime = FAR,
    serial: int | None = None,
    public_key: Any = None,
) -> Issued:
    """A certificate for ``key`` (new P-256 if None; or for ``public_key`` alone, such as
    a TPM's EK), signed by ``issuer`` (self if None)."""
    own = key or ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.certificate.subject if issuer else subject)
        .public_key(public_key or own.public_key())
        .serial_number(serial or x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    if ca is not None:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=ca, path_length=path_length), critical=True
        )
    if key_cert_sign or digital_signature:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=digital_signature,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=key_cert_sign,
                crl_sign=key_cert_sign,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    signer = issuer.key if issuer else own
    return Issued(builder.sign(signer, hashes.SHA256()), own)


def attestation_extension(description: bytes) -> tuple[x509.ExtensionType, bool]:
    oid = x509.ObjectIdentifier("1.3.6.1.4.1.11129.2.1.17")
    return x509.UnrecognizedExtension(oid, description), False


@dataclass
class AndroidPki:
    """root (the test anchor) -> intermediate -> batch attestation key -> leaf."""

    root: Issued
    intermediate: Issued
    batch: Issued

    @classmethod
    def create(cls) -> AndroidPki:
        root = issue(name("Test Attestation Root"))
        intermediate = issue(name("Test Intermediate", title="TEE", serial="1234"), issuer=root)
        batch = issue(name("Test Batch Key", title="TEE", serial="5678"), issuer=intermediate)
        return cls(root=root, intermediate=intermediate, batch=batch)

    def leaf(
        self,
        spec: KeyDescriptionSpec | None = None,
        *,
        issuer: Issued | None = None,
        key: CertificateIssuerPrivateKeyTypes | None = None,
        description: bytes | None = None,
    ) -> Issued:
        encoded = (
            description
            if description is not None
            else key_description(spec or KeyDescriptionSpec())
        )
        return issue(
            name("Android Keystore Key"),
            issuer=issuer or self.batch,
            key=key,
            ca=None,
            key_cert_sign=False,
            digital_signature=True,
            extensions=[attestation_extension(encoded)],
        )

    def chain(self, leaf: Issued, *above: Issued) -> tuple[bytes, ...]:
        rest = above or (self.batch, self.intermediate, self.root)
        return (leaf.der, *(cert.der for cert in rest))


# ------------------------------------------------------------------- App Attest-like


def cose_p256(key: ec.EllipticCurvePublicKey) -> dict[int, object]:
    numbers = key.public_numbers()
    return {
        1: 2,
        3: -7,
        -1: 1,
        -2: numbers.x.to_bytes(32, "big"),
        -3: numbers.y.to_bytes(32, "big"),
    }


def app_attest_object(
    root: Issued,
    intermediate: Issued,
    *,
    key: ec.EllipticCurvePrivateKey,
    app_id: str,
    client_data_hash: bytes,
    counter: int = 0,
    aaguid: bytes = b"appattestdevelop",
    credential_id: bytes | None = None,
    cose_key: dict[int, object] | None = None,
    valid_at: dt.datetime = NOW,
) -> tuple[bytes, bytes]:
    """An attestation object shaped like Apple's, signed by a test CA; (object, keyId).
    credCert is valid from a day before ``valid_at`` to two days after it."""
    import cbor2

    point = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    key_id = hashlib.sha256(point).digest()
    credential = credential_id if credential_id is not None else key_id
    auth_data = (
        hashlib.sha256(app_id.encode()).digest()
        + bytes([0x40])
        + counter.to_bytes(4, "big")
        + aaguid
        + len(credential).to_bytes(2, "big")
        + credential
        + cbor2.dumps(cose_key or cose_p256(key.public_key()))
    )
    nonce = hashlib.sha256(auth_data + client_data_hash).digest()
    extension = x509.UnrecognizedExtension(
        x509.ObjectIdentifier("1.2.840.113635.100.8.2"), sequence(explicit(1, octets(nonce)))
    )
    cred_cert = issue(
        name(key_id.hex()),
        issuer=intermediate,
        key=key,
        ca=False,
        key_cert_sign=False,
        digital_signature=True,
        extensions=[(extension, False)],
        not_before=valid_at - dt.timedelta(days=1),
        not_after=valid_at + dt.timedelta(days=2),
    )
    statement = {"x5c": [cred_cert.der, intermediate.der], "receipt": b"receipt"}
    return cbor2.dumps(
        {"fmt": "apple-appattest", "attStmt": statement, "authData": auth_data}
    ), key_id


# --------------------------------------------------------------------------- TPM 2.0

TPM_SIGN_ONLY = 0x2 | 0x10 | 0x20 | 0x40 | 0x40000  # fixedTPM|fixedParent|sensitive|user|sign
TPM_AK = TPM_SIGN_ONLY | 0x10000  # + restricted


def tpmt_public_ecc(
    key: ec.EllipticCurvePublicKey, *, attributes: int = TPM_SIGN_ONLY, scheme: int = 0x0018
) -> bytes:
    """TPMT_PUBLIC of an ECC P-256 key (ECDSA-SHA256 scheme unless ``scheme`` is NULL)."""
    numbers = key.public_numbers()
    details = (0x000B).to_bytes(2, "big") if scheme != 0x0010 else b""
    return (
        (0x0023).to_bytes(2, "big")
        + (0x000B).to_bytes(2, "big")
        + attributes.to_bytes(4, "big")
        + (0).to_bytes(2, "big")  # authPolicy
        + (0x0010).to_bytes(2, "big")  # symmetric NULL
        + scheme.to_bytes(2, "big")
        + details
        + (0x0003).to_bytes(2, "big")  # NIST P-256
        + (0x0010).to_bytes(2, "big")  # kdf NULL
        + (32).to_bytes(2, "big")
        + numbers.x.to_bytes(32, "big")
        + (32).to_bytes(2, "big")
        + numbers.y.to_bytes(32, "big")
    )


def tpm_name(public_area: bytes) -> bytes:
    return (0x000B).to_bytes(2, "big") + hashlib.sha256(public_area).digest()


def tpms_attest(
    *,
    extra_data: bytes,
    name: bytes,
    magic: int = 0xFF544347,
    kind: int = 0x8017,
    firmware: int = 0x0001000200030004,
) -> bytes:
    def sized(data: bytes) -> bytes:
        return len(data).to_bytes(2, "big") + data

    return (
        magic.to_bytes(4, "big")
        + kind.to_bytes(2, "big")
        + sized(b"\x00\x0b" + bytes(32))  # qualifiedSigner
        + sized(extra_data)
        + (123456).to_bytes(8, "big")
        + (1).to_bytes(4, "big")
        + (2).to_bytes(4, "big")
        + b"\x01"
        + firmware.to_bytes(8, "big")
        + sized(name)
        + sized(b"")
    )


def tpmt_signature_ecdsa(signature_der: bytes) -> bytes:
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    r, s = decode_dss_signature(signature_der)
    return (
        (0x0018).to_bytes(2, "big")
        + (0x000B).to_bytes(2, "big")
        + (32).to_bytes(2, "big")
        + r.to_bytes(32, "big")
        + (32).to_bytes(2, "big")
        + s.to_bytes(32, "big")
    )


TCG_MANUFACTURER = x509.ObjectIdentifier("2.23.133.2.1")
TCG_MODEL = x509.ObjectIdentifier("2.23.133.2.2")
TCG_VERSION = x509.ObjectIdentifier("2.23.133.2.3")


def tpm_san(
    *,
    manufacturer: str | None = "id:49424D00",
    model: str = "keybound-test",
    version: str = "id:00010002",
    multi_valued: bool = False,
) -> x509.SubjectAlternativeName:
    attributes = [x509.NameAttribute(TCG_MODEL, model), x509.NameAttribute(TCG_VERSION, version)]
    if manufacturer is not None:
        attributes.insert(0, x509.NameAttribute(TCG_MANUFACTURER, manufacturer))
    if multi_valued:
        directory = x509.Name([x509.RelativeDistinguishedName(attributes)])
    else:
        directory = x509.Name([x509.RelativeDistinguishedName([a]) for a in attributes])
    return x509.SubjectAlternativeName([x509.DirectoryName(directory)])


def tpm_certificate(
    issuer: Issued,
    key: ec.EllipticCurvePrivateKey | None = None,
    *,
    subject: x509.Name | None = None,
    san: x509.SubjectAlternativeName | None = None,
    eku: str | None = "2.23.133.8.3",
    ca: bool = False,
    extra: Sequence[tuple[x509.ExtensionType, bool]] = (),
    not_before: dt.datetime = EPOCH,
    not_after: dt.datetime = FAR,
    public_key: Any = None,
) -> Issued:
    """An AK (default) or EK certificate as TCG profiles it: empty subject, TPM SAN."""
    extensions: list[tuple[x509.ExtensionType, bool]] = [(san or tpm_san(), True)]
    if eku is not None:
        extensions.append((x509.ExtendedKeyUsage([x509.ObjectIdentifier(eku)]), False))
    extensions.extend(extra)
    return issue(
        subject or x509.Name([]),
        issuer=issuer,
        key=key,
        ca=ca,
        key_cert_sign=False,
        digital_signature=True,
        extensions=extensions,
        not_before=not_before,
        not_after=not_after,
        public_key=public_key,
    )
