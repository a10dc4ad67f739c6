"""Android Key Attestation: the shared vectors with their expected results, and derived
negatives (real chains tampered with, or throw-away PKIs from factory.py)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from keybound.attestation import (
    AndroidAppPolicy,
    AndroidKeyEvidence,
    AndroidKeyPolicy,
    AndroidKeyVerifier,
    AttestationFailed,
    AttestationFormat,
    ProvisioningMethod,
    Reason,
    RevocationList,
    SecurityLevel,
    TrustStore,
    VerifiedBootState,
)
from keybound.attestation._der import certificate_parts
from keybound.attestation.android_keydescription import KEY_DESCRIPTION_OID, parse_key_description
from keybound.attestation.conformance import key_description_gson
from keybound.attestation.trust import TrustAnchor
from keybound.errors import ConfigurationInvalid
from tests.attestation import factory
from tests.attestation.factory import AndroidPki, KeyDescriptionSpec
from tests.attestation.vectors import VECTORS, at, entries, manifest_entry, pem_chain

GOOGLE = TrustStore.builtin(AttestationFormat.ANDROID_KEY)
STRUCTURE = AndroidKeyPolicy.structure_only()
VALID_IDS = [e["id"] for e in entries("android") if e["expected"]["result"] == "valid"]


def _sample(entry_id: str) -> tuple[tuple[bytes, ...], dt.datetime, bytes]:
    entry = manifest_entry(entry_id)
    chain = pem_chain(next(f for f in entry["files"] if f.endswith(".pem")))
    return chain, at(entry["verify_at"]), _challenge(chain[0])


def _challenge(leaf: bytes) -> bytes:
    extension = x509.load_der_x509_certificate(leaf).extensions.get_extension_for_oid(
        x509.ObjectIdentifier(KEY_DESCRIPTION_OID)
    )
    return parse_key_description(extension.value.value).attestation_challenge  # type: ignore[attr-defined]


def _verify(
    chain: tuple[bytes, ...],
    now: dt.datetime,
    *,
    challenge: bytes,
    key: bytes | None = None,
    trust: TrustStore = GOOGLE,
    policy: AndroidKeyPolicy = STRUCTURE,
    revocation: RevocationList | None = None,
):  # type: ignore[no-untyped-def]
    verifier = AndroidKeyVerifier(trust=trust, policy=policy, revocation=revocation)
    return verifier.verify(
        AndroidKeyEvidence(chain=chain),
        expected_challenge=challenge,
        expected_public_key=key if key is not None else certificate_parts(chain[0]).spki,
        now=now,
    )


def _refused(reason: Reason, *args, **kwargs) -> AttestationFailed:  # type: ignore[no-untyped-def]
    with pytest.raises(AttestationFailed) as caught:
        _verify(*args, **kwargs)
    assert caught.value.reason is reason, caught.value.detail
    return caught.value


# ------------------------------------------------------------------- the shared vectors


@pytest.mark.parametrize("entry_id", VALID_IDS)
def test_valid_vectors_verify_at_their_pinned_time(entry_id: str) -> None:
    chain, now, challenge = _sample(entry_id)
    expected = manifest_entry(entry_id)["expected"]
    if "attestationChallenge_utf8" in expected:
        assert challenge == expected["attestationChallenge_utf8"].encode()
    result = _verify(chain, now, challenge=challenge)
    assert result.security_level in (SecurityLevel.TRUSTED_ENVIRONMENT, SecurityLevel.STRONG_BOX)
    if "verifiedBootState" in expected:
        assert result.verified_boot_state is VerifiedBootState(expected["verifiedBootState"])
        assert result.device_locked is expected["deviceLocked"]
    assert result.chain[0] == chain[0]
    assert result.anchor_key_sha256 in {a.key_sha256 for a in GOOGLE.anchors}


@pytest.mark.parametrize(
    "pem",
    [
        "android/keyattestation/blueline/sdk28/TEE_EC_NONE",
        "android/keyattestation/blueline/sdk28/SB_RSA_NONE",
        "android/keyattestation/blueline/sdk28/TEE_RSA_BASE+IMEI",
        "android/keyattestation/akita/sdk34/TEE_RSA_NONE",
        "android/keyattestation/caiman/sdk36/TEE_EC_RKP",
        "android/keyattestation/tegu/sdk36/TEE_EC_2026_ROOT",
        "android/keyattestation/sony-xperia10-iii/sdk33/TEE_EC",
        "android/keyattestation/tokay/sdk37/TEE_MLDSA_RKP",
    ],
)
def test_key_description_parse_equals_googles_json(pem: str) -> None:
    chain = pem_chain(pem + ".pem")
    extension = x509.load_der_x509_certificate(chain[0]).extensions.get_extension_for_oid(
        x509.ObjectIdentifier(KEY_DESCRIPTION_OID)
    )
    text = (VECTORS / (pem + ".json")).read_text(encoding="utf-8")
    wanted = json.loads("\n".join(x for x in text.splitlines() if not x.lstrip().startswith("//")))
    for part in ("softwareEnforced", "hardwareEnforced"):
        wanted[part].pop("areTagsOrdered", None)  # Google's parse-state flag, not data
    parsed = parse_key_description(extension.value.value)  # type: ignore[attr-defined]
    assert key_description_gson(parsed) == wanted


def test_provisioning_methods_follow_googles_rule() -> None:
    methods = {}
    for entry_id in (
        "ka-blueline-tee-ec",
        "ka-akita-tee-rsa-rkp",
        "ka-sony-tee-ec",
        "gka-pr33-attest-key-chain",
    ):
        chain, now, challenge = _sample(entry_id)
        methods[entry_id] = _verify(chain, now, challenge=challenge).provisioning_method
    assert methods == {
        "ka-blueline-tee-ec": ProvisioningMethod.FACTORY,
        "ka-akita-tee-rsa-rkp": ProvisioningMethod.REMOTE,
        "ka-sony-tee-ec": ProvisioningMethod.UNKNOWN,  # OEM intermediate without a title
        "gka-pr33-attest-key-chain": ProvisioningMethod.UNKNOWN,  # 2023 RKP, no info extension
    }


def test_factory_chain_expiry_is_ignored_but_rkp_expiry_is_enforced() -> None:
    chain, _, challenge = _sample("ka-blueline-tee-ec")
    assert _verify(chain, at("2030-01-01T00:00:00Z"), challenge=challenge)
    for entry_id, later in (
        ("ka-akita-tee-rsa-rkp", "2024-10-08T14:09:47Z"),
        ("ka-caiman-tee-ec-rkp", "2030-01-01T00:00:00Z"),
        ("ka-tegu-tee-ec-ecroot", "2026-03-08T00:26:01Z"),
        ("ka-tokay-mldsa-rkp", "2026-05-09T05:14:59Z"),
    ):
        chain, _, challenge = _sample(entry_id)
        _refused(Reason.CHAIN_EXPIRED, chain, at(later), challenge=challenge)


def test_sony_chain_expired_at_its_creation_time() -> None:
    """SOURCE.md: creationDateTime is after the chain expired; only Google's factory rule
    hides that, and Sony's OEM chain is not classified FACTORY, so expiry is enforced."""
    chain, _, challenge = _sample("ka-sony-tee-ec")
    _refused(Reason.CHAIN_EXPIRED, chain, at("2026-06-04T14:59:05Z"), challenge=challenge)


def test_leaf_validity_is_ignored_and_not_yet_valid_is_refused() -> None:
    chain, _, challenge = _sample("ka-blueline-tee-ec")
    # leaf is valid 1970..2106; intermediates from 2018-07-23
    _refused(Reason.CHAIN_NOT_YET_VALID, chain, at("2018-01-01T00:00:00Z"), challenge=challenge)


def test_strict_der_refuses_the_ber_boolean_vector() -> None:
    chain = pem_chain("android/keyattestation/invalid/malformed_rot_device_locked.pem")
    error = _refused(Reason.MALFORMED, chain, at("2024-10-20T00:00:00Z"), challenge=b"")
    assert "root_of_trust" in error.detail


def test_tags_out_of_order_vector_is_refused() -> None:
    chain = pem_chain("android/keyattestation/invalid/tags_not_in_ascending_order.pem")
    _refused(Reason.CHAIN_BROKEN, chain, at("2024-10-20T00:00:00Z"), challenge=b"")


def test_ml_dsa_leaf_verifies_and_an_unknown_key_algorithm_fails_cleanly() -> None:
    chain, now, challenge = _sample("ka-tokay-mldsa-rkp")
    result = _verify(chain, now, challenge=challenge)
    assert result.key_description.hardware_enforced.algorithm == 4  # ML-DSA
    unknown = bytes.fromhex("3015300d06092a864886f70d01010d0500030400010203")  # made-up OID
    _refused(Reason.UNSUPPORTED_ALGORITHM, chain, now, challenge=challenge, key=unknown)


def test_attest_key_chain_is_accepted_only_for_attest_key_purposes() -> None:
    chain, now, challenge = _sample("gka-pr33-attest-key-chain")
    assert _verify(chain, now, challenge=challenge).attest_key_certificates == 2


# ------------------------------------------------------------ derived, real chains


def test_wrong_challenge() -> None:
    chain, now, _ = _sample("ka-caiman-tee-ec-rkp")
    _refused(Reason.CHALLENGE_MISMATCH, chain, now, challenge=b"another activation")


def test_wrong_key() -> None:
    chain, now, challenge = _sample("ka-caiman-tee-ec-rkp")
    other = factory.issue(factory.name("x")).spki
    _refused(Reason.KEY_MISMATCH, chain, now, challenge=challenge, key=other)


def test_chain_reordered() -> None:
    chain, now, challenge = _sample("ka-blueline-tee-ec")
    _refused(
        Reason.CHAIN_BROKEN, (chain[0], chain[2], chain[1], chain[3]), now, challenge=challenge
    )


def test_root_swapped_for_a_self_signed_one() -> None:
    chain, now, challenge = _sample("ka-blueline-tee-ec")
    google_root_name = x509.load_der_x509_certificate(chain[-1]).subject
    impostor = factory.issue(google_root_name)  # same name, attacker's key
    # A whole chain under the impostor (what an attacker can build) has no trusted anchor.
    pki = AndroidPki(
        root=impostor,
        intermediate=factory.issue(factory.name("i", title="TEE", serial="1"), issuer=impostor),
        batch=impostor,
    )
    pki.batch = factory.issue(factory.name("b", title="TEE", serial="2"), issuer=pki.intermediate)
    leaf = pki.leaf(KeyDescriptionSpec(challenge=challenge))
    _refused(Reason.CHAIN_UNTRUSTED, pki.chain(leaf), now, challenge=challenge, key=leaf.spki)
    # Swapping only the root certificate of a real chain: the path already ends at Google's
    # key, and nothing but a copy of that root may follow it.
    _refused(Reason.CHAIN_BROKEN, (*chain[:-1], impostor.der), now, challenge=challenge)
    # Trusting only the impostor does not help the real chain either.
    only_impostor = TrustStore((TrustAnchor.from_spki(impostor.spki, label="impostor"),))
    _refused(Reason.CHAIN_UNTRUSTED, chain, now, challenge=challenge, trust=only_impostor)


def test_anchors_limited_to_one_google_root() -> None:
    ecdsa = TrustStore.from_files(
        [VECTORS / "android/roots/google_root_ecdsa_key_attestation_ca1_2025-2035.pem"]
    )
    rsa = TrustStore.from_files(
        [VECTORS / "android/roots/google_root_rsa_f92009e853b6b045_2022-2042.pem"]
    )
    chain, now, challenge = _sample("ka-caiman-tee-ec-rkp")
    _refused(Reason.CHAIN_UNTRUSTED, chain, now, challenge=challenge, trust=ecdsa)
    assert _verify(chain, now, challenge=challenge, trust=rsa)
    chain, now, challenge = _sample("ka-tegu-tee-ec-ecroot")
    _refused(Reason.CHAIN_UNTRUSTED, chain, now, challenge=challenge, trust=rsa)
    assert _verify(chain, now, challenge=challenge, trust=ecdsa)


def test_rkp_chain_without_its_root_still_anchors_by_key() -> None:
    chain, now, challenge = _sample("ka-caiman-tee-ec-rkp")
    assert (
        _verify(chain[:-1], now, challenge=challenge).provisioning_method
        is ProvisioningMethod.REMOTE
    )


def test_trailing_certificate_after_the_anchor_is_refused() -> None:
    chain, now, challenge = _sample("ka-caiman-tee-ec-rkp")
    stray = factory.issue(factory.name("stray")).der
    _refused(Reason.CHAIN_BROKEN, (*chain, stray), now, challenge=challenge)


def _status(serials: dict[str, str]) -> RevocationList:
    body = {"entries": {s: {"status": st, "reason": "KEY_COMPROMISE"} for s, st in serials.items()}}
    return RevocationList.parse(
        json.dumps(body).encode(), fetched_at=at("2025-09-26T00:00:00Z"), source="test"
    )


@pytest.mark.parametrize(
    "status, reason", [("REVOKED", Reason.CERT_REVOKED), ("SUSPENDED", Reason.CERT_SUSPENDED)]
)
@pytest.mark.parametrize("position", [1, 2])
def test_revoked_and_suspended_serials_refuse(status: str, reason: Reason, position: int) -> None:
    chain, now, challenge = _sample("ka-caiman-tee-ec-rkp")
    serial = x509.load_der_x509_certificate(chain[position]).serial_number
    listing = _status({format(serial, "X"): status})  # upper case: keys are case-insensitive
    error = _refused(reason, chain, now, challenge=challenge, revocation=listing)
    assert f"{serial:x}" in error.detail
    clean = _status({"badbeef": "REVOKED"})
    result = _verify(chain, now, challenge=challenge, revocation=clean)
    assert result.revocation_list_age == now - at("2025-09-26T00:00:00Z")


def test_stale_or_missing_revocation_list_refused_by_policy() -> None:
    chain, now, challenge = _sample("ka-caiman-tee-ec-rkp")
    policy = dataclasses.replace(STRUCTURE, max_revocation_list_age=dt.timedelta(hours=1))
    _refused(Reason.REVOCATION_LIST_STALE, chain, now, challenge=challenge, policy=policy)
    _refused(
        Reason.REVOCATION_LIST_STALE,
        chain,
        now,
        challenge=challenge,
        policy=policy,
        revocation=_status({}),
    )  # fetched a day before the pinned time


def test_device_policy_on_real_vectors() -> None:
    chain, now, challenge = _sample("ka-blueline-tee-ec")  # unlocked, UNVERIFIED
    _refused(Reason.BOOT_NOT_VERIFIED, chain, now, challenge=challenge, policy=AndroidKeyPolicy())
    chain, now, challenge = _sample("ka-caiman-tee-ec-rkp")  # locked, VERIFIED, 2025-11
    assert _verify(chain, now, challenge=challenge, policy=AndroidKeyPolicy(min_patch_level=202511))
    _refused(
        Reason.PATCH_LEVEL_TOO_OLD,
        chain,
        now,
        challenge=challenge,
        policy=AndroidKeyPolicy(min_patch_level=202512),
    )
    _refused(
        Reason.SECURITY_LEVEL_INSUFFICIENT,
        chain,
        now,
        challenge=challenge,
        policy=AndroidKeyPolicy(min_security_level=SecurityLevel.STRONG_BOX),
    )
    assert _verify(chain, now, challenge=challenge, policy=AndroidKeyPolicy(require_rkp=True))
    chain, now, challenge = _sample("ka-blueline-tee-ec")
    _refused(
        Reason.PROVISIONING_NOT_RKP,
        chain,
        now,
        challenge=challenge,
        policy=dataclasses.replace(STRUCTURE, require_rkp=True),
    )


def test_app_identity_policy() -> None:
    chain, now, challenge = _sample("ka-caiman-tee-ec-rkp")
    digest = next(iter(_verify(chain, now, challenge=challenge).signing_digests))
    good = AndroidAppPolicy(
        package_names=frozenset({"com.google.android.attestation"}),
        signing_digests=frozenset({digest}),
    )
    assert _verify(chain, now, challenge=challenge, policy=dataclasses.replace(STRUCTURE, app=good))
    for wrong in (
        dataclasses.replace(good, package_names=frozenset({"com.example.other"})),
        dataclasses.replace(good, signing_digests=frozenset({hashlib.sha256(b"x").digest()})),
        dataclasses.replace(good, signing_digests=frozenset({digest, b"\x00" * 32})),
    ):
        _refused(
            Reason.APP_ID_MISMATCH,
            chain,
            now,
            challenge=challenge,
            policy=dataclasses.replace(STRUCTURE, app=wrong),
        )


def test_policy_minimum_must_be_a_hardware_level() -> None:
    with pytest.raises(ConfigurationInvalid):
        AndroidKeyPolicy(min_security_level=SecurityLevel.SOFTWARE)


# ---------------------------------------------------------- derived, throw-away PKI


@pytest.fixture(scope="module")
def pki() -> AndroidPki:
    return AndroidPki.create()


def _pki_verify(pki: AndroidPki, chain: tuple[bytes, ...], spec=None, **kwargs):  # type: ignore[no-untyped-def]
    trust = TrustStore((TrustAnchor.from_spki(pki.root.spki, label="test root"),))
    spec = spec or KeyDescriptionSpec()
    return _verify(chain, factory.NOW, challenge=spec.challenge, trust=trust, **kwargs)


def test_synthetic_chain_verifies(pki: AndroidPki) -> None:
    leaf = pki.leaf()
    result = _pki_verify(pki, pki.chain(leaf), key=leaf.spki, policy=AndroidKeyPolicy())
    assert result.package_names == ("com.example.bank",)
    assert result.provisioning_method is ProvisioningMethod.FACTORY


def test_forged_leaf_signed_by_an_attested_key_is_refused(pki: AndroidPki) -> None:
    """The attack: a genuine attested key (purpose SIGN) signs a fake leaf whose
    KeyDescription claims whatever the attacker likes."""
    attacker_key = ec.generate_private_key(ec.SECP256R1())
    genuine = pki.leaf(key=attacker_key)
    forged_spec = KeyDescriptionSpec(challenge=b"the server's challenge")
    forged = pki.leaf(forged_spec, issuer=genuine)
    chain = (forged.der, genuine.der, pki.batch.der, pki.intermediate.der, pki.root.der)
    _refused_pki(pki, Reason.ISSUER_NOT_CA, chain, forged_spec, key=forged.spki)


def test_attest_key_issuer_is_exempt_only_with_attest_key_purpose(pki: AndroidPki) -> None:
    attest_key = pki.leaf(KeyDescriptionSpec(purposes=(7,)))
    leaf = pki.leaf(issuer=attest_key)
    chain = (leaf.der, attest_key.der, pki.batch.der, pki.intermediate.der, pki.root.der)
    assert _pki_verify(pki, chain, key=leaf.spki).attest_key_certificates == 1
    software_attest_key = pki.leaf(
        KeyDescriptionSpec(purposes=(7,), attestation_level=0, keymint_level=0)
    )
    leaf = pki.leaf(issuer=software_attest_key)
    chain = (leaf.der, software_attest_key.der, pki.batch.der, pki.intermediate.der, pki.root.der)
    _refused_pki(pki, Reason.ISSUER_NOT_CA, chain, key=leaf.spki)


def test_extension_on_an_intermediate_is_refused(pki: AndroidPki) -> None:
    marked = factory.issue(
        factory.name("Marked CA"),
        issuer=pki.intermediate,
        extensions=[factory.attestation_extension(factory.key_description(KeyDescriptionSpec()))],
    )
    leaf = pki.leaf(issuer=marked)
    chain = (leaf.der, marked.der, pki.intermediate.der, pki.root.der)
    _refused_pki(pki, Reason.EXTENSION_MISPLACED, chain, key=leaf.spki)


def test_leaf_without_extension(pki: AndroidPki) -> None:
    plain = factory.issue(
        factory.name("plain"),
        issuer=pki.batch,
        ca=None,
        key_cert_sign=False,
        digital_signature=True,
    )
    _refused_pki(pki, Reason.EXTENSION_MISSING, pki.chain(plain), key=plain.spki)


def test_ca_without_key_cert_sign_is_refused(pki: AndroidPki) -> None:
    weak = factory.issue(
        factory.name("weak"), issuer=pki.intermediate, key_cert_sign=False, digital_signature=True
    )
    leaf = pki.leaf(issuer=weak)
    middle = factory.issue(factory.name("middle"), issuer=weak)  # CA under a non-signing CA
    leaf = pki.leaf(issuer=middle)
    _refused_pki(
        pki,
        Reason.ISSUER_NOT_CA,
        (leaf.der, middle.der, weak.der, pki.intermediate.der),
        key=leaf.spki,
    )


@pytest.mark.parametrize(
    "spec, reason",
    [
        (KeyDescriptionSpec(attestation_level=0, keymint_level=0), Reason.SECURITY_LEVEL_SOFTWARE),
        (KeyDescriptionSpec(attestation_level=1, keymint_level=2), Reason.SECURITY_LEVEL_MISMATCH),
        (KeyDescriptionSpec(origin=2), Reason.ORIGIN_NOT_GENERATED),
        (KeyDescriptionSpec(origin=None), Reason.ORIGIN_NOT_GENERATED),
        (KeyDescriptionSpec(purposes=(0, 1)), Reason.PURPOSE_NOT_SIGN),
        (KeyDescriptionSpec(boot_state=2), Reason.BOOT_NOT_VERIFIED),
        (KeyDescriptionSpec(device_locked=False), Reason.BOOTLOADER_UNLOCKED),
        (KeyDescriptionSpec(vendor_patch_level=20240101), Reason.PATCH_LEVEL_TOO_OLD),
        (KeyDescriptionSpec(ber_device_locked=True), Reason.MALFORMED),
        (KeyDescriptionSpec(hardware_tags_out_of_order=True), Reason.MALFORMED),
    ],
)
def test_key_description_checks(pki: AndroidPki, spec: KeyDescriptionSpec, reason: Reason) -> None:
    leaf = pki.leaf(spec)
    _refused_pki(
        pki,
        reason,
        pki.chain(leaf),
        spec,
        key=leaf.spki,
        policy=AndroidKeyPolicy(min_patch_level=202412),
    )


def test_unknown_tags_are_kept_not_refused(pki: AndroidPki) -> None:
    spec = KeyDescriptionSpec(extra_hardware=[(999, factory.integer(7))])
    leaf = pki.leaf(spec)
    result = _pki_verify(pki, pki.chain(leaf), spec, key=leaf.spki)
    assert result.key_description.hardware_enforced.unknown_tags == (999,)


def _refused_pki(
    pki: AndroidPki,
    reason: Reason,
    chain: tuple[bytes, ...],  # type: ignore[no-untyped-def]
    spec: KeyDescriptionSpec | None = None,
    **kwargs,
) -> None:
    with pytest.raises(AttestationFailed) as caught:
        _pki_verify(pki, chain, spec, **kwargs)
    assert caught.value.reason is reason, caught.value.detail


def test_non_ca_batch_key_may_sign_the_leaf_like_old_factory_chains(pki: AndroidPki) -> None:
    """Sony's chain: the attestation key that signs leaves is cA=FALSE, digitalSignature."""
    batch = factory.issue(
        factory.name("Batch", title="TEE", serial="9"),
        issuer=pki.intermediate,
        ca=False,
        key_cert_sign=False,
        digital_signature=True,
    )
    leaf = pki.leaf(issuer=batch)
    chain = (leaf.der, batch.der, pki.intermediate.der, pki.root.der)
    assert _pki_verify(pki, chain, key=leaf.spki)
    # ... but only directly above the leaf: as a CA further up it is refused.
    below = factory.issue(factory.name("Below"), issuer=batch)
    leaf = pki.leaf(issuer=below)
    _refused_pki(
        pki,
        Reason.ISSUER_NOT_CA,
        (leaf.der, below.der, batch.der, pki.intermediate.der),
        key=leaf.spki,
    )
