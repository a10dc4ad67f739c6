"""Android-format key attestation for the emulated secure element. TEST AND DEMO MATERIAL.

The emulated element (``keybound.client.keystores.emulated``) attests its keys the way an
Android TEE does ([KA] developer.android.com "Verify hardware-backed key pairs with key
attestation"; schema [AOSP] source.android.com "Key and ID attestation", KeyMint 300): a leaf
certificate for the key carrying the KeyDescription extension (1.3.6.1.4.1.11129.2.1.17),
signed by the element's attestation key (an intermediate CA, provisioned once per element
like a factory batch key: subject ``serialNumber`` and ``title=TEE``), signed by a test root.

The root and its private key ship in this package (``emulated_attestation_root.pem`` and
``emulated_attestation_root.key.pem``) so that the demo can show attestation outcomes. The
key is public: anyone can make chains under this root, so a server must never trust it except
to test or demonstrate, and only when its operator adds it as an Android anchor.
keybound.attestation never ships it. Made by ``scripts/make-emulated-attestation-root.py``.

This module imports pyasn1 (the KeyDescription is built with pyasn1's DER encoder) and is
imported only when the element attests, so ``pip install keybound`` without pyasn1 still
imports the SDK (the element then does not attest).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pyasn1.codec.der import encoder
from pyasn1.type import namedtype, tag, univ

#: The test root's certificate and key (see the module docs: never trust it in production).
ATTESTATION_ROOT = Path(__file__).with_name("emulated_attestation_root.pem")
ATTESTATION_ROOT_KEY = Path(__file__).with_name("emulated_attestation_root.key.pem")

KEY_DESCRIPTION_OID = x509.ObjectIdentifier("1.3.6.1.4.1.11129.2.1.17")

#: KeyMint 3 (Android 14): attestation and KeyMint version 300 [AOSP "Schema"].
KEYMINT_VERSION = 300
OS_VERSION = 140000  # Android 14.0.0
OS_PATCH_LEVEL = 202501  # YYYYMM
VENDOR_PATCH_LEVEL = 20250105  # YYYYMMDD
BOOT_PATCH_LEVEL = 20250105

# [AOSP] enumerations (KeyMint's Tag.aidl, SecurityLevel.aidl, ...)
_TRUSTED_ENVIRONMENT = 1
_PURPOSE_SIGN = 2
_PURPOSE_VERIFY = 3
_ALGORITHM_EC = 3
_DIGEST_SHA_2_256 = 4
_EC_CURVE_P_256 = 1
_ORIGIN_GENERATED = 0
_BOOT_VERIFIED = 0
_BOOT_UNVERIFIED = 2

#: Android's default validity for attestation leaves (KeyGenParameterSpec's defaults):
#: verifiers ignore it [KA].
_LEAF_NOT_BEFORE = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_LEAF_NOT_AFTER = dt.datetime(2048, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True, kw_only=True)
class DeviceState:
    """What the emulated device's KeyDescription says about it and the app."""

    package_name: str
    package_version: int = 1
    signing_digest: bytes  # SHA-256 of the app's signing certificate
    verified_boot: bool = True
    device_locked: bool = True


# ---------------------------------------------------------------- the KeyDescription schema


def _explicit(number: int) -> tag.TagSet:
    return tag.Tag(tag.tagClassContext, tag.tagFormatConstructed, number)


def _tagged(name: str, number: int, value: univ.Asn1Item) -> namedtype.OptionalNamedType:
    return namedtype.OptionalNamedType(name, value.subtype(explicitTag=_explicit(number)))


def _integers() -> univ.SetOf:
    return univ.SetOf(componentType=univ.Integer())


class _RootOfTrust(univ.Sequence):  # type: ignore[misc]
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("verifiedBootKey", univ.OctetString()),
        namedtype.NamedType("deviceLocked", univ.Boolean()),
        namedtype.NamedType("verifiedBootState", univ.Enumerated()),
        namedtype.NamedType("verifiedBootHash", univ.OctetString()),
    )


class _PackageInfo(univ.Sequence):  # type: ignore[misc]
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("packageName", univ.OctetString()),
        namedtype.NamedType("version", univ.Integer()),
    )


class _ApplicationId(univ.Sequence):  # type: ignore[misc]
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("packageInfos", univ.SetOf(componentType=_PackageInfo())),
        namedtype.NamedType("signatureDigests", univ.SetOf(componentType=univ.OctetString())),
    )


class _AuthorizationList(univ.Sequence):  # type: ignore[misc]
    """The tags this element sets, in the schema's (ascending) order [AOSP]."""

    componentType = namedtype.NamedTypes(
        _tagged("purpose", 1, _integers()),
        _tagged("algorithm", 2, univ.Integer()),
        _tagged("keySize", 3, univ.Integer()),
        _tagged("digest", 5, _integers()),
        _tagged("ecCurve", 10, univ.Integer()),
        _tagged("noAuthRequired", 503, univ.Null()),
        _tagged("creationDateTime", 701, univ.Integer()),
        _tagged("origin", 702, univ.Integer()),
        _tagged("rootOfTrust", 704, _RootOfTrust()),
        _tagged("osVersion", 705, univ.Integer()),
        _tagged("osPatchLevel", 706, univ.Integer()),
        _tagged("attestationApplicationId", 709, univ.OctetString()),
        _tagged("vendorPatchLevel", 718, univ.Integer()),
        _tagged("bootPatchLevel", 719, univ.Integer()),
    )


class _KeyDescription(univ.Sequence):  # type: ignore[misc]
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("attestationVersion", univ.Integer()),
        namedtype.NamedType("attestationSecurityLevel", univ.Enumerated()),
        namedtype.NamedType("keyMintVersion", univ.Integer()),
        namedtype.NamedType("keyMintSecurityLevel", univ.Enumerated()),
        namedtype.NamedType("attestationChallenge", univ.OctetString()),
        namedtype.NamedType("uniqueId", univ.OctetString()),
        namedtype.NamedType("softwareEnforced", _AuthorizationList()),
        namedtype.NamedType("hardwareEnforced", _AuthorizationList()),
    )


def _set_of(schema: univ.SetOf, values: list[int]) -> univ.SetOf:
    result = schema.clone()
    for index, value in enumerate(values):
        result.setComponentByPosition(index, value)
    return result


def key_description(*, challenge: bytes, created: dt.datetime, device: DeviceState) -> bytes:
    """The DER KeyDescription of a P-256 signing key generated in a TEE for ``device``'s app,
    bound to ``challenge`` [AOSP "Schema"]. Where Android puts each tag: the keystore adds
    creationDateTime and attestationApplicationId (softwareEnforced), the TEE the rest."""
    software = _AuthorizationList()
    software["creationDateTime"] = int(created.timestamp() * 1000)
    software["attestationApplicationId"] = encoder.encode(_application_id(device))
    hardware = _AuthorizationList()
    hardware["purpose"] = _set_of(hardware["purpose"], [_PURPOSE_SIGN, _PURPOSE_VERIFY])
    hardware["algorithm"] = _ALGORITHM_EC
    hardware["keySize"] = 256
    hardware["digest"] = _set_of(hardware["digest"], [_DIGEST_SHA_2_256])
    hardware["ecCurve"] = _EC_CURVE_P_256
    hardware["noAuthRequired"] = ""  # NULL: the tag's presence is the value
    hardware["origin"] = _ORIGIN_GENERATED
    _root_of_trust(hardware["rootOfTrust"], device)
    hardware["osVersion"] = OS_VERSION
    hardware["osPatchLevel"] = OS_PATCH_LEVEL
    hardware["vendorPatchLevel"] = VENDOR_PATCH_LEVEL
    hardware["bootPatchLevel"] = BOOT_PATCH_LEVEL
    description = _KeyDescription()
    description["attestationVersion"] = KEYMINT_VERSION
    description["attestationSecurityLevel"] = _TRUSTED_ENVIRONMENT
    description["keyMintVersion"] = KEYMINT_VERSION
    description["keyMintSecurityLevel"] = _TRUSTED_ENVIRONMENT
    description["attestationChallenge"] = challenge
    description["uniqueId"] = b""
    description["softwareEnforced"] = software
    description["hardwareEnforced"] = hardware
    return bytes(encoder.encode(description))


def _application_id(device: DeviceState) -> _ApplicationId:
    info = _PackageInfo()
    info["packageName"] = device.package_name.encode("utf-8")
    info["version"] = device.package_version
    value = _ApplicationId()
    value["packageInfos"].setComponentByPosition(0, info)
    value["signatureDigests"].setComponentByPosition(0, device.signing_digest)
    return value


def _root_of_trust(root: _RootOfTrust, device: DeviceState) -> None:
    """Fill the (tagged) RootOfTrust component in place."""
    root["verifiedBootKey"] = hashlib.sha256(b"keybound emulated verified boot key").digest()
    root["deviceLocked"] = device.device_locked
    root["verifiedBootState"] = _BOOT_VERIFIED if device.verified_boot else _BOOT_UNVERIFIED
    root["verifiedBootHash"] = hashlib.sha256(b"keybound emulated boot image").digest()


# ------------------------------------------------------------------------ the certificates


@dataclass(frozen=True, kw_only=True)
class TestRoot:
    """The shipped test root: certificate and private key."""

    __test__ = False  # not a pytest test class despite the name

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def load(cls) -> TestRoot:
        certificate = x509.load_pem_x509_certificate(ATTESTATION_ROOT.read_bytes())
        key = serialization.load_pem_private_key(ATTESTATION_ROOT_KEY.read_bytes(), None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("the emulated attestation root key is not an EC key")
        return cls(certificate=certificate, key=key)


def issue_intermediate(
    root: TestRoot, key: ec.EllipticCurvePublicKey, *, serial: str
) -> x509.Certificate:
    """The element's attestation key certificate: a CA (pathLen 0) under the root, named as
    Google names factory-provisioned batch keys (``serialNumber``, ``title=TEE``), valid as
    long as the root."""
    subject = x509.Name([
        x509.NameAttribute(NameOID.SERIAL_NUMBER, serial),
        x509.NameAttribute(NameOID.TITLE, "TEE"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "keybound emulated secure element (TEST)"),
    ])  # fmt: skip
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(root.certificate.subject)
        .public_key(key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(root.certificate.not_valid_before_utc)
        .not_valid_after(root.certificate.not_valid_after_utc)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_usage(key_cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root.key.public_key()),
            critical=False,
        )
        .sign(root.key, hashes.SHA384())
    )


def issue_leaf(
    signer: ec.EllipticCurvePrivateKey,
    signer_certificate: x509.Certificate,
    key: ec.EllipticCurvePublicKey,
    *,
    challenge: bytes,
    device: DeviceState,
    created: dt.datetime,
) -> x509.Certificate:
    """The attestation certificate of ``key`` as KeyMint makes it: serial 1, subject
    "Android Keystore Key", Android's default validity, keyUsage digitalSignature and the
    KeyDescription extension (non-critical)."""
    description = key_description(challenge=challenge, created=created, device=device)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Android Keystore Key")]))
        .issuer_name(signer_certificate.subject)
        .public_key(key)
        .serial_number(1)
        .not_valid_before(_LEAF_NOT_BEFORE)
        .not_valid_after(_LEAF_NOT_AFTER)
        .add_extension(_usage(digital_signature=True), critical=True)
        .add_extension(x509.UnrecognizedExtension(KEY_DESCRIPTION_OID, description), critical=False)
        .sign(signer, hashes.SHA256())
    )


def _usage(*, digital_signature: bool = False, key_cert_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=key_cert_sign,
        crl_sign=key_cert_sign, encipher_only=False, decipher_only=False,
    )  # fmt: skip
