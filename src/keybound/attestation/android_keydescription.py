"""The Android key attestation extension (OID 1.3.6.1.4.1.11129.2.1.17): KeyDescription.

Schema: https://source.android.com/docs/security/features/keystore/attestation#schema
(versions 1 to 400, plus KeyMint 500's mlDsaVariant [11])::

    KeyDescription ::= SEQUENCE {
        attestationVersion INTEGER, attestationSecurityLevel SecurityLevel,
        keyMintVersion INTEGER, keyMintSecurityLevel SecurityLevel,
        attestationChallenge OCTET STRING, uniqueId OCTET STRING,
        softwareEnforced AuthorizationList, hardwareEnforced AuthorizationList }
    AuthorizationList ::= SEQUENCE { purpose [1] EXPLICIT SET OF INTEGER OPTIONAL, ... }
    RootOfTrust ::= SEQUENCE { verifiedBootKey OCTET STRING, deviceLocked BOOLEAN,
        verifiedBootState VerifiedBootState, verifiedBootHash OCTET STRING (v3+) }

Parsed with pyasn1's DER codec, chosen over asn1crypto because pyasn1 decodes against a
schema that enforces component order and its DER *encoder* lets every value be re-encoded
and compared with the bytes received (strict DER, see ``_der``); asn1crypto parses BER
leniently by design and has had no release since 2022.

Strictness decisions (each a test):

- Strict DER throughout: a BOOLEAN true encoded 0x01 (seen in the wild, vector
  ``malformed_rot_device_locked``) is refused, as are unsorted SET OF and long lengths.
- AuthorizationList entries must appear in ascending tag order (the SEQUENCE's schema order;
  vector ``tags_not_in_ascending_order``) with no tag twice.
- Tags this module does not know are kept (``unknown_tags``) and otherwise ignored: each
  KeyMint release adds tags, and no check here reads an unknown one, so refusing them would
  only break new devices.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from pyasn1.type import namedtype, univ

from keybound.attestation._der import CLASS_CONTEXT, Tlv, children, decode_strict, read_tlv
from keybound.attestation.base import Reason, SecurityLevel, VerifiedBootState, fail

#: Key attestation extension OID (KeyDescription).
KEY_DESCRIPTION_OID = "1.3.6.1.4.1.11129.2.1.17"
#: Provisioning information extension OID (RKP attestation certificates).
PROVISIONING_INFO_OID = "1.3.6.1.4.1.11129.2.1.30"
#: Largest extension accepted (real ones are under 1 KiB).
MAX_EXTENSION_BYTES = 8 * 1024


class KeyPurpose(IntEnum):
    """KeyMint KeyPurpose.aidl."""

    ENCRYPT = 0
    DECRYPT = 1
    SIGN = 2
    VERIFY = 3
    WRAP_KEY = 5
    AGREE_KEY = 6
    ATTEST_KEY = 7


class Origin(IntEnum):
    """KeyMint KeyOrigin.aidl."""

    GENERATED = 0
    DERIVED = 1
    IMPORTED = 2
    RESERVED = 3
    SECURELY_IMPORTED = 4


_SECURITY_LEVELS = {
    0: SecurityLevel.SOFTWARE,
    1: SecurityLevel.TRUSTED_ENVIRONMENT,
    2: SecurityLevel.STRONG_BOX,
}
_BOOT_STATES = {
    0: VerifiedBootState.VERIFIED,
    1: VerifiedBootState.SELF_SIGNED,
    2: VerifiedBootState.UNVERIFIED,
    3: VerifiedBootState.FAILED,
}


@dataclass(frozen=True, kw_only=True)
class RootOfTrust:
    verified_boot_key: bytes
    device_locked: bool
    verified_boot_state: VerifiedBootState
    verified_boot_hash: bytes | None


@dataclass(frozen=True, kw_only=True)
class PackageInfo:
    name: str
    version: int


@dataclass(frozen=True, kw_only=True)
class AttestationApplicationId:
    """Which app asked for the key: its package(s) and signing certificates' SHA-256."""

    packages: tuple[PackageInfo, ...]
    signature_digests: frozenset[bytes]


@dataclass(frozen=True, kw_only=True)
class AuthorizationList:
    """One AuthorizationList; ``None`` means the tag is absent, NULL tags are booleans."""

    purposes: frozenset[int] | None = None
    algorithm: int | None = None
    key_size: int | None = None
    block_modes: frozenset[int] | None = None
    digests: frozenset[int] | None = None
    paddings: frozenset[int] | None = None
    caller_nonce: bool = False
    min_mac_length: int | None = None
    ec_curve: int | None = None
    ml_dsa_variant: int | None = None
    rsa_public_exponent: int | None = None
    rsa_oaep_mgf_digests: frozenset[int] | None = None
    rollback_resistance: bool = False
    early_boot_only: bool = False
    active_date_time: int | None = None
    origination_expire_date_time: int | None = None
    usage_expire_date_time: int | None = None
    usage_count_limit: int | None = None
    no_auth_required: bool = False
    user_auth_type: int | None = None
    auth_timeout: int | None = None
    allow_while_on_body: bool = False
    trusted_user_presence_required: bool = False
    trusted_confirmation_required: bool = False
    unlocked_device_required: bool = False
    all_applications: bool = False
    application_id: bytes | None = None
    creation_date_time: int | None = None
    origin: int | None = None
    rollback_resistant: bool = False
    root_of_trust: RootOfTrust | None = None
    os_version: int | None = None
    os_patch_level: int | None = None
    attestation_application_id: AttestationApplicationId | None = None
    attestation_id_brand: bytes | None = None
    attestation_id_device: bytes | None = None
    attestation_id_product: bytes | None = None
    attestation_id_serial: bytes | None = None
    attestation_id_imei: bytes | None = None
    attestation_id_meid: bytes | None = None
    attestation_id_manufacturer: bytes | None = None
    attestation_id_model: bytes | None = None
    vendor_patch_level: int | None = None
    boot_patch_level: int | None = None
    device_unique_attestation: bool = False
    attestation_id_second_imei: bytes | None = None
    module_hash: bytes | None = None
    unknown_tags: tuple[int, ...] = ()


@dataclass(frozen=True, kw_only=True)
class KeyDescription:
    attestation_version: int
    attestation_security_level: SecurityLevel
    keymint_version: int
    keymint_security_level: SecurityLevel
    attestation_challenge: bytes
    unique_id: bytes
    software_enforced: AuthorizationList
    hardware_enforced: AuthorizationList = field(repr=False)


# ------------------------------------------------------------------------ pyasn1 schema


class _KeyDescriptionAsn1(univ.Sequence):  # type: ignore[misc]
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("attestationVersion", univ.Integer()),
        namedtype.NamedType("attestationSecurityLevel", univ.Enumerated()),
        namedtype.NamedType("keyMintVersion", univ.Integer()),
        namedtype.NamedType("keyMintSecurityLevel", univ.Enumerated()),
        namedtype.NamedType("attestationChallenge", univ.OctetString()),
        namedtype.NamedType("uniqueId", univ.OctetString()),
        # Each list is kept whole here and walked entry by entry below.
        namedtype.NamedType("softwareEnforced", univ.SequenceOf(componentType=univ.Any())),
        namedtype.NamedType("hardwareEnforced", univ.SequenceOf(componentType=univ.Any())),
    )


class _RootOfTrustAsn1(univ.Sequence):  # type: ignore[misc]
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("verifiedBootKey", univ.OctetString()),
        namedtype.NamedType("deviceLocked", univ.Boolean()),
        namedtype.NamedType("verifiedBootState", univ.Enumerated()),
        namedtype.OptionalNamedType("verifiedBootHash", univ.OctetString()),
    )


class _PackageInfoAsn1(univ.Sequence):  # type: ignore[misc]
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("packageName", univ.OctetString()),
        namedtype.NamedType("version", univ.Integer()),
    )


class _AppIdAsn1(univ.Sequence):  # type: ignore[misc]
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("packageInfos", univ.SetOf(componentType=_PackageInfoAsn1())),
        namedtype.NamedType("signatureDigests", univ.SetOf(componentType=univ.OctetString())),
    )


# ---------------------------------------------------------------------------- parsing


def parse_key_description(data: bytes) -> KeyDescription:
    """Parse the extension's value (the DER KeyDescription); MALFORMED on any deviation."""
    value = decode_strict(
        data, _KeyDescriptionAsn1(), what="KeyDescription", max_bytes=MAX_EXTENSION_BYTES
    )
    return KeyDescription(
        attestation_version=int(value["attestationVersion"]),
        attestation_security_level=_security_level(value["attestationSecurityLevel"]),
        keymint_version=int(value["keyMintVersion"]),
        keymint_security_level=_security_level(value["keyMintSecurityLevel"]),
        attestation_challenge=bytes(value["attestationChallenge"]),
        unique_id=bytes(value["uniqueId"]),
        software_enforced=_authorization_list(value["softwareEnforced"], "softwareEnforced"),
        hardware_enforced=_authorization_list(value["hardwareEnforced"], "hardwareEnforced"),
    )


def _security_level(value: Any) -> SecurityLevel:
    level = _SECURITY_LEVELS.get(int(value))
    if level is None:
        raise fail(Reason.MALFORMED, f"unknown SecurityLevel {int(value)}")
    return level


def _authorization_list(entries: Any, what: str) -> AuthorizationList:
    values: dict[str, Any] = {}
    unknown: list[int] = []
    previous = -1
    for entry in entries:
        raw = bytes(entry)
        outer = read_tlv(raw, 0)
        if outer.end != len(raw) or outer.tag_class != CLASS_CONTEXT or not outer.constructed:
            raise fail(Reason.MALFORMED, f"{what}: entry is not an EXPLICIT context tag")
        if outer.tag <= previous:
            raise fail(Reason.MALFORMED, f"{what}: tags not in ascending order ({outer.tag})")
        previous = outer.tag
        inner = _single_child(raw, outer, what)
        known = _TAGS.get(outer.tag)
        if known is None:
            unknown.append(outer.tag)
            continue
        name, parse = known
        values[name] = parse(inner, f"{what} [{outer.tag}] {name}")
    return AuthorizationList(unknown_tags=tuple(unknown), **values)


def _single_child(raw: bytes, outer: Tlv, what: str) -> bytes:
    items = children(raw, outer)
    if len(items) != 1:
        raise fail(Reason.MALFORMED, f"{what} [{outer.tag}]: EXPLICIT tag must hold one value")
    return items[0].whole(raw)


def _integer(data: bytes, what: str) -> int:
    return int(decode_strict(data, univ.Integer(), what=what, max_bytes=64))


def _integer_set(data: bytes, what: str) -> frozenset[int]:
    value = decode_strict(data, univ.SetOf(componentType=univ.Integer()), what=what, max_bytes=1024)
    return frozenset(int(item) for item in value)


def _null(data: bytes, what: str) -> bool:
    decode_strict(data, univ.Null(), what=what, max_bytes=2)
    return True


def _octets(data: bytes, what: str) -> bytes:
    return bytes(decode_strict(data, univ.OctetString(), what=what, max_bytes=4096))


def _root_of_trust(data: bytes, what: str) -> RootOfTrust:
    value = decode_strict(data, _RootOfTrustAsn1(), what=what, max_bytes=1024)
    state = _BOOT_STATES.get(int(value["verifiedBootState"]))
    if state is None:
        raise fail(Reason.MALFORMED, f"{what}: unknown VerifiedBootState")
    boot_hash = value["verifiedBootHash"]
    return RootOfTrust(
        verified_boot_key=bytes(value["verifiedBootKey"]),
        device_locked=bool(value["deviceLocked"]),
        verified_boot_state=state,
        verified_boot_hash=bytes(boot_hash) if boot_hash.isValue else None,
    )


def _application_id(data: bytes, what: str) -> AttestationApplicationId:
    inner = _octets(data, what)
    value = decode_strict(inner, _AppIdAsn1(), what=what, max_bytes=4096)
    packages = []
    for info in value["packageInfos"]:
        try:
            name = bytes(info["packageName"]).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise fail(Reason.MALFORMED, f"{what}: package name is not UTF-8") from exc
        packages.append(PackageInfo(name=name, version=int(info["version"])))
    return AttestationApplicationId(
        packages=tuple(packages),
        signature_digests=frozenset(bytes(item) for item in value["signatureDigests"]),
    )


_Parser = Callable[[bytes, str], Any]

#: KeyMint Tag.aidl numbers -> (field, parser). Tag 11 is KeyMint 500's mlDsaVariant.
_TAGS: Mapping[int, tuple[str, _Parser]] = {
    1: ("purposes", _integer_set),
    2: ("algorithm", _integer),
    3: ("key_size", _integer),
    4: ("block_modes", _integer_set),
    5: ("digests", _integer_set),
    6: ("paddings", _integer_set),
    7: ("caller_nonce", _null),
    8: ("min_mac_length", _integer),
    10: ("ec_curve", _integer),
    11: ("ml_dsa_variant", _integer),
    200: ("rsa_public_exponent", _integer),
    203: ("rsa_oaep_mgf_digests", _integer_set),
    303: ("rollback_resistance", _null),
    305: ("early_boot_only", _null),
    400: ("active_date_time", _integer),
    401: ("origination_expire_date_time", _integer),
    402: ("usage_expire_date_time", _integer),
    405: ("usage_count_limit", _integer),
    503: ("no_auth_required", _null),
    504: ("user_auth_type", _integer),
    505: ("auth_timeout", _integer),
    506: ("allow_while_on_body", _null),
    507: ("trusted_user_presence_required", _null),
    508: ("trusted_confirmation_required", _null),
    509: ("unlocked_device_required", _null),
    600: ("all_applications", _null),
    601: ("application_id", _octets),
    701: ("creation_date_time", _integer),
    702: ("origin", _integer),
    703: ("rollback_resistant", _null),
    704: ("root_of_trust", _root_of_trust),
    705: ("os_version", _integer),
    706: ("os_patch_level", _integer),
    709: ("attestation_application_id", _application_id),
    710: ("attestation_id_brand", _octets),
    711: ("attestation_id_device", _octets),
    712: ("attestation_id_product", _octets),
    713: ("attestation_id_serial", _octets),
    714: ("attestation_id_imei", _octets),
    715: ("attestation_id_meid", _octets),
    716: ("attestation_id_manufacturer", _octets),
    717: ("attestation_id_model", _octets),
    718: ("vendor_patch_level", _integer),
    719: ("boot_patch_level", _integer),
    720: ("device_unique_attestation", _null),
    723: ("attestation_id_second_imei", _octets),
    724: ("module_hash", _octets),
}
