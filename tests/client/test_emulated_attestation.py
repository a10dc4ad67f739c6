"""The emulated secure element's Android-format key attestation, checked with keybound's own
android-key verifier: accepted when the shipped TEST root is a configured anchor, refused with
the shipped (Google) roots only, and bound to the challenge, the key, the app and the device
state it claims."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from keybound.attestation import (
    AndroidAppPolicy,
    AndroidKeyEvidence,
    AndroidKeyPolicy,
    AndroidKeyVerifier,
    AttestationFailed,
    KeyOrigin,
    ProvisioningMethod,
    Reason,
    SecurityLevel,
    TrustStore,
    VerifiedAndroidKey,
    VerifiedBootState,
)
from keybound.attestation.android_keydescription import KeyPurpose, Origin
from keybound.client.keystores import KeyHandle, open_keystore
from keybound.client.keystores.base import AndroidKeyChain
from keybound.client.keystores.emulated import (
    ATTESTATION_ROOT,
    DEMO_PACKAGE_NAME,
    DEMO_SIGNING_DIGEST,
    EmulatedSecureElement,
)
from keybound.client.keystores.emulated_attestation import (
    ATTESTATION_ROOT_KEY,
    OS_PATCH_LEVEL,
    TestRoot,
)
from keybound.errors import ClientError, KeyUnavailable

CHALLENGE = bytes(range(32))
POLICY = AndroidKeyPolicy(
    app=AndroidAppPolicy(
        package_names=frozenset({DEMO_PACKAGE_NAME}),
        signing_digests=frozenset({DEMO_SIGNING_DIGEST}),
    ),
    min_patch_level=OS_PATCH_LEVEL,
)


@pytest.fixture
def element(tmp_path: Path) -> EmulatedSecureElement:
    return EmulatedSecureElement(tmp_path / "emulated-se")


def configured_trust() -> TrustStore:
    """What an operator who adds the test root gets: Google's roots plus the test root."""
    return TrustStore.configured("android-key", add_files=[ATTESTATION_ROOT])


def chain_of(
    element: EmulatedSecureElement, handle: KeyHandle, challenge: bytes = CHALLENGE
) -> tuple[bytes, ...]:
    evidence = element.attest(handle, challenge=challenge)
    assert isinstance(evidence, AndroidKeyChain)
    return evidence.certificate_chain


def verify(
    chain: tuple[bytes, ...],
    handle: KeyHandle,
    *,
    trust: TrustStore | None = None,
    policy: AndroidKeyPolicy = POLICY,
    challenge: bytes = CHALLENGE,
) -> VerifiedAndroidKey:
    verifier = AndroidKeyVerifier(trust=trust or configured_trust(), policy=policy)
    return verifier.verify(
        AndroidKeyEvidence(chain=chain),
        expected_challenge=challenge,
        expected_public_key=handle.public_key,
        now=dt.datetime.now(dt.UTC),
    )


def refused(chain: tuple[bytes, ...], handle: KeyHandle, **kwargs: object) -> Reason:
    with pytest.raises(AttestationFailed) as caught:
        verify(chain, handle, **kwargs)  # type: ignore[arg-type]
    return caught.value.reason


# ----------------------------------------------------------------------------- accepted


def test_chain_verifies_with_the_test_root_configured(element: EmulatedSecureElement) -> None:
    handle = element.generate("keybound:app:device")
    chain = chain_of(element, handle)
    result = verify(chain, handle)
    assert len(chain) == 3  # leaf, the element's attestation key, the test root
    assert result.security_level is SecurityLevel.TRUSTED_ENVIRONMENT
    assert result.key_origin is KeyOrigin.GENERATED
    assert result.challenge == CHALLENGE
    assert result.attested_public_key == handle.public_key
    assert result.package_names == (DEMO_PACKAGE_NAME,)
    assert result.signing_digests == frozenset({DEMO_SIGNING_DIGEST})
    assert result.verified_boot_state is VerifiedBootState.VERIFIED
    assert result.device_locked is True
    assert result.os_patch_level == OS_PATCH_LEVEL
    assert result.vendor_patch_level and result.boot_patch_level
    assert result.provisioning_method is ProvisioningMethod.FACTORY
    hardware = result.key_description.hardware_enforced
    assert hardware.origin == Origin.GENERATED and KeyPurpose.SIGN in (hardware.purposes or ())
    assert result.attestation_version == result.keymint_version == 300
    root_key = (
        TestRoot.load()
        .key.public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    assert result.anchor_key_sha256 == configured_trust().by_spki(root_key).key_sha256  # type: ignore[union-attr]


def test_the_attestation_key_is_provisioned_once(element: EmulatedSecureElement) -> None:
    first = chain_of(element, element.generate("a"))
    second = chain_of(element, element.generate("b"))
    assert first[1] == second[1]  # the element's attestation CA, kept (wrapped) in the element
    assert first[0] != second[0]
    element.lose_keys()  # a wiped element is provisioned anew
    handle = element.generate("c")
    third = chain_of(element, handle)
    assert third[1] != first[1]
    verify(third, handle)


# ------------------------------------------------------------------------------ refused


def test_refused_with_the_shipped_roots_only(element: EmulatedSecureElement) -> None:
    handle = element.generate("label")
    chain = chain_of(element, handle)
    assert refused(chain, handle, trust=TrustStore.builtin("android-key")) is Reason.CHAIN_UNTRUSTED
    assert (
        refused(chain, handle, trust=TrustStore.configured("android-key")) is Reason.CHAIN_UNTRUSTED
    )


def test_bound_to_the_challenge_and_the_key(element: EmulatedSecureElement) -> None:
    handle = element.generate("label")
    chain = chain_of(element, handle)
    assert refused(chain, handle, challenge=bytes(32)) is Reason.CHALLENGE_MISMATCH
    other = element.generate("other")
    assert refused(chain, other) is Reason.KEY_MISMATCH


def test_app_identity_is_the_configured_one(tmp_path: Path) -> None:
    element = EmulatedSecureElement(tmp_path, package_name="com.evil.app")
    handle = element.generate("label")
    assert refused(chain_of(element, handle), handle) is Reason.APP_ID_MISMATCH
    digest = bytes(32)
    element = EmulatedSecureElement(tmp_path / "2", signing_digest=digest)
    handle = element.generate("label")
    assert refused(chain_of(element, handle), handle) is Reason.APP_ID_MISMATCH
    allowed = AndroidKeyPolicy(
        app=AndroidAppPolicy(
            package_names=frozenset({DEMO_PACKAGE_NAME}), signing_digests=frozenset({digest})
        )
    )
    verify(chain_of(element, handle), handle, policy=allowed)


@pytest.mark.parametrize(
    ("state", "reason"),
    [("device_locked", Reason.BOOTLOADER_UNLOCKED), ("verified_boot", Reason.BOOT_NOT_VERIFIED)],
)
def test_device_state_is_attested(tmp_path: Path, state: str, reason: Reason) -> None:
    element = EmulatedSecureElement(tmp_path, **{state: False})  # type: ignore[arg-type]
    handle = element.generate("label")
    chain = chain_of(element, handle)
    assert refused(chain, handle) is reason
    verify(chain, handle, policy=AndroidKeyPolicy.structure_only())


def test_only_keys_inside_the_element_are_attested(
    element: EmulatedSecureElement, tmp_path: Path
) -> None:
    handle = element.generate("label")
    stranger = EmulatedSecureElement(tmp_path / "another").generate("label")
    with pytest.raises(KeyUnavailable):
        element.attest(stranger, challenge=CHALLENGE)
    element.present = False
    with pytest.raises(KeyUnavailable):
        element.attest(handle, challenge=CHALLENGE)


def test_attestation_can_be_off(tmp_path: Path) -> None:
    element = EmulatedSecureElement(tmp_path, attestation=False)
    assert element.attest(element.generate("label"), challenge=CHALLENGE) is None


# -------------------------------------------------------------------------- the test root


def test_the_shipped_test_root_is_marked_and_never_builtin() -> None:
    root = TestRoot.load()
    certificate = root.certificate
    assert certificate.issuer == certificate.subject
    certificate.verify_directly_issued_by(certificate)
    assert certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert isinstance(root.key, ec.EllipticCurvePrivateKey)
    assert root.key.public_key() == certificate.public_key()
    common_name = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert "TEST ROOT" in str(common_name)
    for path in (ATTESTATION_ROOT, ATTESTATION_ROOT_KEY):
        assert path.read_text().startswith("keybound emulated secure element: TEST AND DEMO")
    spki = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    for fmt in ("android-key", "apple-appattest", "tpm"):
        assert TrustStore.builtin(fmt).by_spki(spki) is None  # type: ignore[arg-type]


# ------------------------------------------------------------------------ factory options


def test_factory_options(tmp_path: Path) -> None:
    store = open_keystore(
        "emulated",
        tmp_path,
        {
            "package_name": "com.example.bank",
            "signing_digest": "ab" * 32,
            "device_locked": False,
            "attestation": True,
        },
    )
    assert isinstance(store, EmulatedSecureElement)
    assert store.package_name == "com.example.bank" and store.signing_digest == b"\xab" * 32
    assert store.device_locked is False and store.verified_boot is True
    for bad in (
        {"package_name": ""},
        {"signing_digest": "ab"},
        {"signing_digest": 7},
        {"attestation": "yes"},
    ):
        with pytest.raises(ClientError):
            open_keystore("emulated", tmp_path, bad)


# ------------------------------------------------------------------- without pyasn1 (lean)


def test_without_pyasn1_the_sdk_imports_and_the_element_does_not_attest(tmp_path: Path) -> None:
    """``pip install keybound`` has no pyasn1: the SDK and the element work, attest says why
    it cannot (a KeyStoreError the device logs before activating without evidence)."""
    program = textwrap.dedent(f"""
        import sys
        for name in ("pyasn1", "pyasn1.codec", "pyasn1.codec.der", "pyasn1.type"):
            sys.modules[name] = None
        import keybound.client
        from keybound.client.keystores.emulated import EmulatedSecureElement
        from keybound.errors import KeyStoreError
        element = EmulatedSecureElement({str(tmp_path)!r})
        handle = element.generate("label")
        element.sign(handle, b"message")
        try:
            element.attest(handle, challenge=bytes(32))
        except KeyStoreError as exc:
            assert "pyasn1" in exc.detail, exc.detail
        else:
            raise AssertionError("attested without pyasn1")
        assert not [m for m in sys.modules if m.startswith("pyasn1") and sys.modules[m]]
    """)
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
