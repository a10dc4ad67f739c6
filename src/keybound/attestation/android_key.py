"""Android Key Attestation (format ``android-key``).

References: "Verify hardware-backed key pairs with key attestation"
(https://developer.android.com/privacy-and-security/security-key-attestation, cited as
[KA]) and the attestation schema (https://source.android.com/docs/security/features/
keystore/attestation, cited as [AOSP]). Evidence is the chain from
``KeyStore.getCertificateChain()``: leaf (the attested key, carrying the KeyDescription)
first, root (if sent) last.

Decisions, each with a test:

- **Anchors by key.** The path ends where a pinned anchor's key signed a certificate; RKP
  chains that leave the root out verify the same way (see :mod:`.chain`).
- **The forged-leaf attack.** Any attested key can sign an arbitrary certificate, so a
  certificate that signs another one must be a CA (``cA=TRUE`` with ``keyCertSign``), with
  two exceptions. KeyMint's ``ATTEST_KEY`` chaining ([AOSP] "Attestation keys"): a
  certificate directly above the leaf may carry the attestation extension and sign without
  being a CA only if its KeyDescription attests a hardware key whose purposes are exactly
  ``{ATTEST_KEY}`` (KeyMint never signs arbitrary data with such a key). And the device's
  batch attestation key right above those (old Keymaster factory chains sign leaves with a
  ``cA=FALSE``, ``digitalSignature`` certificate), only if it carries no attestation
  extension: an *attested* key always does, and that is what the attack needs. Any other
  certificate above the leaf carrying the extension is EXTENSION_MISPLACED.
- **Provisioning method**, decided as Google's verifier does (``KeyAttestationCertPath``):
  FACTORY when the certificate the anchor signed has a subject with ``serialNumber`` and
  ``title`` TEE or StrongBox; REMOTE (RKP) when the certificate that signed the leaf (after
  any ATTEST_KEY certificates) carries the provisioning-info extension
  1.3.6.1.4.1.11129.2.1.30; UNKNOWN otherwise (older RKP chains, OEM factory chains).
- **Validity** ([KA] "Verify the certificate chain", Google's validator): the leaf's own
  validity is ignored (set by the device, often 1970-2048); the other certificates must be
  valid at ``now``, except that *expiry* is ignored for FACTORY chains (their keys cannot be
  rotated); not-yet-valid is always refused. RKP and UNKNOWN chains are fully enforced.
- **Revocation**: every certificate of the path (leaf included) is looked up in the status
  list; REVOKED *and* SUSPENDED are refused.
"""

from __future__ import annotations

import datetime as dt
import hmac
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import NameOID

from keybound.attestation import certext
from keybound.attestation import chain as paths
from keybound.attestation.android_keydescription import (
    KEY_DESCRIPTION_OID,
    PROVISIONING_INFO_OID,
    AuthorizationList,
    KeyDescription,
    KeyPurpose,
    Origin,
    parse_key_description,
)
from keybound.attestation.base import (
    AttestationFormat,
    AttestationVerifier,
    KeyOrigin,
    ProvisioningMethod,
    Reason,
    SecurityLevel,
    VerifiedAttestation,
    VerifiedBootState,
    fail,
    utc,
)
from keybound.attestation.revocation import RevocationList, RevocationStatus
from keybound.attestation.trust import TrustStore
from keybound.errors import ConfigurationInvalid

#: Android security levels in policy order.
_LEVEL_RANK = {
    SecurityLevel.SOFTWARE: 0,
    SecurityLevel.TRUSTED_ENVIRONMENT: 1,
    SecurityLevel.STRONG_BOX: 2,
}
_ORIGINS = {
    Origin.GENERATED: KeyOrigin.GENERATED,
    Origin.DERIVED: KeyOrigin.DERIVED,
    Origin.IMPORTED: KeyOrigin.IMPORTED,
    Origin.SECURELY_IMPORTED: KeyOrigin.SECURELY_IMPORTED,
}


@dataclass(frozen=True, kw_only=True)
class AndroidKeyEvidence:
    """The attestation certificate chain, DER, leaf first."""

    chain: tuple[bytes, ...]


@dataclass(frozen=True, kw_only=True)
class AndroidAppPolicy:
    """Which app may hold the key: the attested package names must all be in
    ``package_names``, and the set of signing-certificate SHA-256 digests must equal
    ``signing_digests`` exactly (an extra signer is as wrong as a missing one)."""

    package_names: frozenset[str]
    signing_digests: frozenset[bytes]


@dataclass(frozen=True, kw_only=True)
class AndroidKeyPolicy:
    """Device policy. The defaults are strict; :meth:`structure_only` drops device policy
    (used to check vectors whose devices were unlocked developer phones)."""

    app: AndroidAppPolicy | None = None
    min_security_level: SecurityLevel = SecurityLevel.TRUSTED_ENVIRONMENT
    require_verified_boot: bool = True
    require_device_locked: bool = True
    #: Oldest acceptable patch level, YYYYMM; applies to the OS level (required) and to the
    #: vendor and boot levels where present (YYYYMMDD or YYYYMM, compared by month).
    min_patch_level: int | None = None
    require_rkp: bool = False
    #: Refuse when no status list is configured or the one in use is older than this.
    max_revocation_list_age: dt.timedelta | None = None

    def __post_init__(self) -> None:
        if (
            self.min_security_level not in _LEVEL_RANK
            or self.min_security_level is SecurityLevel.SOFTWARE
        ):
            raise ConfigurationInvalid(
                "min_security_level must be TRUSTED_ENVIRONMENT or STRONG_BOX"
            )

    @classmethod
    def structure_only(cls) -> AndroidKeyPolicy:
        return cls(require_verified_boot=False, require_device_locked=False)


@dataclass(frozen=True, kw_only=True)
class VerifiedAndroidKey(VerifiedAttestation):
    attestation_version: int
    keymint_version: int
    challenge: bytes
    provisioning_method: ProvisioningMethod
    verified_boot_state: VerifiedBootState | None
    device_locked: bool | None
    verified_boot_key: bytes | None
    os_version: int | None
    os_patch_level: int | None
    vendor_patch_level: int | None
    boot_patch_level: int | None
    package_names: tuple[str, ...]
    signing_digests: frozenset[bytes]
    attest_key_certificates: int
    revocation_list_age: dt.timedelta | None
    key_description: KeyDescription


class AndroidKeyVerifier(AttestationVerifier[AndroidKeyEvidence, VerifiedAndroidKey]):
    format = AttestationFormat.ANDROID_KEY

    def __init__(
        self,
        *,
        trust: TrustStore,
        policy: AndroidKeyPolicy,
        revocation: RevocationList | None = None,
    ) -> None:
        self._trust = trust
        self._policy = policy
        self._revocation = revocation

    def _verify(
        self,
        evidence: AndroidKeyEvidence,
        *,
        expected_challenge: bytes,
        expected_public_key: bytes,
        now: dt.datetime,
    ) -> VerifiedAndroidKey:
        now = utc(now)
        policy = self._policy
        # [KA] "Verify the certificate chain": ordered, each signed by the next, anchored by
        # a pinned Google root key (chain.build_path).
        path = paths.build_path(evidence.chain, self._trust, what="attestation chain")
        # [AOSP] "Attestation extension": the leaf carries the KeyDescription.
        leaf_extension = path.extension_value(0, KEY_DESCRIPTION_OID)
        if leaf_extension is None:
            raise fail(Reason.EXTENSION_MISSING, "leaf has no key attestation extension")
        description = parse_key_description(leaf_extension)
        hardware = description.hardware_enforced
        # [AOSP] "Attestation keys": only ATTEST_KEY certificates directly above the leaf,
        # and the device's batch attestation key that signed them, may sign without being
        # CAs (the forged-leaf defence, module docs).
        attest_keys = _attest_key_certificates(path)
        batch_key = _batch_key_certificate(path, 1 + len(attest_keys))
        # RFC 5280 §6.1.4 (k)/(n): every other issuer is a CA with keyCertSign.
        paths.check_issuers(path, exempt=attest_keys | batch_key)
        # [KA] "the extension ... in the leaf only": nowhere else in the path.
        for index in range(1 + len(attest_keys), len(path.certificates)):
            if path.extension_value(index, KEY_DESCRIPTION_OID) is not None:
                raise fail(Reason.EXTENSION_MISPLACED, f"certificate {index} is attested")
        # RFC 5280 §4.2: no unprocessed critical extension above the leaf.
        paths.check_critical_extensions(path, understood=(), skip={0, *attest_keys})
        # Google's validator: leaf validity ignored, factory chains' expiry ignored.
        method = _provisioning_method(path, len(attest_keys))
        paths.check_validity(
            path, now, skip={0}, ignore_expiry=method is ProvisioningMethod.FACTORY
        )
        # [KA] "Check revocation status": REVOKED and SUSPENDED both refuse.
        revocation_age = self._check_revocation(path, now)
        # [AOSP] SecurityLevel: attestation and KeyMint levels agree and are hardware.
        level = description.attestation_security_level
        if level is not description.keymint_security_level:
            raise fail(Reason.SECURITY_LEVEL_MISMATCH, "attestation and KeyMint levels differ")
        if level is SecurityLevel.SOFTWARE:
            raise fail(Reason.SECURITY_LEVEL_SOFTWARE, "the key is a software key")
        if _LEVEL_RANK[level] < _LEVEL_RANK[policy.min_security_level]:
            raise fail(Reason.SECURITY_LEVEL_INSUFFICIENT, f"{level} below the policy")
        # [AOSP] origin [702] in hardwareEnforced: generated inside the secure hardware.
        if hardware.origin != Origin.GENERATED:
            raise fail(Reason.ORIGIN_NOT_GENERATED, f"origin {hardware.origin}")
        # [AOSP] purpose [1]: a signing key.
        if not hardware.purposes or KeyPurpose.SIGN not in hardware.purposes:
            raise fail(Reason.PURPOSE_NOT_SIGN, "the attested key cannot sign")
        # [KA] "Compare the challenge": this ceremony's challenge, constant time.
        if not hmac.compare_digest(description.attestation_challenge, expected_challenge):
            raise fail(Reason.CHALLENGE_MISMATCH, "attestationChallenge differs")
        # The attested key is the key being registered.
        attested_key = paths.spki_of(path.leaf)
        if not paths.same_public_key(attested_key, expected_public_key):
            raise fail(Reason.KEY_MISMATCH, "attested key is not the registered key")
        # [AOSP] attestationApplicationId [709]: this application, signed by its signers.
        app_id = (
            description.software_enforced.attestation_application_id
            or hardware.attestation_application_id
        )
        names = tuple(package.name for package in app_id.packages) if app_id else ()
        digests = app_id.signature_digests if app_id else frozenset()
        if policy.app is not None and (
            not names
            or not set(names) <= policy.app.package_names
            or digests != policy.app.signing_digests
        ):
            raise fail(Reason.APP_ID_MISMATCH, f"application {names} not allowed")
        # [AOSP] RootOfTrust [704]: verified boot and a locked bootloader, as policy.
        root = hardware.root_of_trust
        if policy.require_verified_boot and (
            root is None or root.verified_boot_state is not VerifiedBootState.VERIFIED
        ):
            raise fail(Reason.BOOT_NOT_VERIFIED, "verified boot state is not VERIFIED")
        if policy.require_device_locked and (root is None or not root.device_locked):
            raise fail(Reason.BOOTLOADER_UNLOCKED, "the bootloader is unlocked")
        # [AOSP] osPatchLevel [706], vendorPatchLevel [718], bootPatchLevel [719].
        if policy.min_patch_level is not None:
            _check_patch_levels(hardware, policy.min_patch_level)
        # Policy: Remote Key Provisioning only.
        if policy.require_rkp and method is not ProvisioningMethod.REMOTE:
            raise fail(Reason.PROVISIONING_NOT_RKP, f"provisioning is {method}")
        return VerifiedAndroidKey(
            format=self.format,
            security_level=level,
            key_origin=_ORIGINS[Origin.GENERATED],
            app_identity=",".join(names) or None,
            attested_public_key=paths.canonical_spki(attested_key),
            chain=path.ders,
            anchor_key_sha256=path.anchor.key_sha256,
            verified_at=now,
            attestation_version=description.attestation_version,
            keymint_version=description.keymint_version,
            challenge=description.attestation_challenge,
            provisioning_method=method,
            verified_boot_state=root.verified_boot_state if root else None,
            device_locked=root.device_locked if root else None,
            verified_boot_key=root.verified_boot_key if root else None,
            os_version=hardware.os_version,
            os_patch_level=hardware.os_patch_level,
            vendor_patch_level=hardware.vendor_patch_level,
            boot_patch_level=hardware.boot_patch_level,
            package_names=names,
            signing_digests=digests,
            attest_key_certificates=len(attest_keys),
            revocation_list_age=revocation_age,
            key_description=description,
        )

    def _check_revocation(self, path: paths.CertPath, now: dt.datetime) -> dt.timedelta | None:
        listing = self._revocation
        limit = self._policy.max_revocation_list_age
        if listing is None:
            if limit is not None:
                raise fail(Reason.REVOCATION_LIST_STALE, "no revocation status list loaded")
            return None
        age = listing.age(now)
        if limit is not None and age > limit:
            raise fail(Reason.REVOCATION_LIST_STALE, f"status list is {age} old")
        for index, certificate in enumerate(path.certificates):
            entry = listing.lookup(certificate.serial_number)
            if entry is None:
                continue
            reason = (
                Reason.CERT_SUSPENDED
                if entry.status is RevocationStatus.SUSPENDED
                else Reason.CERT_REVOKED
            )
            raise fail(
                reason,
                f"certificate {index} serial {certificate.serial_number:x} is "
                f"{entry.status} ({entry.reason})",
            )
        return age


def _attest_key_certificates(path: paths.CertPath) -> frozenset[int]:
    """Indexes (1..m) of ATTEST_KEY certificates directly above the leaf."""
    found: set[int] = set()
    for index in range(1, len(path.certificates)):
        extension = path.extension_value(index, KEY_DESCRIPTION_OID)
        if extension is None:
            break
        description = parse_key_description(extension)
        purposes = description.hardware_enforced.purposes
        hardware = (
            description.attestation_security_level is not SecurityLevel.SOFTWARE
            and description.attestation_security_level is description.keymint_security_level
        )
        if purposes != frozenset({KeyPurpose.ATTEST_KEY}) or not hardware:
            break  # not exempt: check_issuers or the placement check refuses it
        found.add(index)
    return frozenset(found)


def _batch_key_certificate(path: paths.CertPath, index: int) -> frozenset[int]:
    """{index} if the certificate there is a device attestation key that is not a CA
    (old Keymaster factory chains: cA=FALSE, digitalSignature) and carries no attestation
    extension (an *attested* key always does, which is what the forged-leaf attack needs)."""
    if index >= len(path.certificates):
        return frozenset()
    if path.extension(index, KEY_DESCRIPTION_OID) is not None:
        return frozenset()
    constraints = certext.basic_constraints(path.extension(index, paths.BASIC_CONSTRAINTS))
    usage = certext.key_usage(path.extension(index, paths.KEY_USAGE))
    if (
        (constraints is not None and constraints.ca)
        or usage is None
        or not (usage.digital_signature or usage.key_cert_sign)
    ):
        return frozenset()
    return frozenset({index})


def _provisioning_method(path: paths.CertPath, attest_keys: int) -> ProvisioningMethod:
    top = path.certificates[-1]
    if _is_factory_intermediate(top.subject):
        return ProvisioningMethod.FACTORY
    signer = 1 + attest_keys
    if (
        signer < len(path.certificates)
        and path.extension(signer, PROVISIONING_INFO_OID) is not None
    ):
        return ProvisioningMethod.REMOTE
    return ProvisioningMethod.UNKNOWN


def _is_factory_intermediate(subject: x509.Name) -> bool:
    titles = {str(attribute.value) for attribute in subject.get_attributes_for_oid(NameOID.TITLE)}
    serials = subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)
    return bool(serials) and bool(titles & {"TEE", "StrongBox"})


def _check_patch_levels(hardware: AuthorizationList, minimum: int) -> None:
    if hardware.os_patch_level is None:
        raise fail(Reason.PATCH_LEVEL_TOO_OLD, "no OS patch level attested")
    levels = {
        "OS": hardware.os_patch_level,
        "vendor": hardware.vendor_patch_level,
        "boot": hardware.boot_patch_level,
    }
    for name, level in levels.items():
        if level is None:
            continue
        month = level // 100 if level > 999_999 else level  # YYYYMMDD -> YYYYMM
        if month < minimum:
            raise fail(Reason.PATCH_LEVEL_TOO_OLD, f"{name} patch level {level} < {minimum}")
