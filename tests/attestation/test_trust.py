"""Trust anchors: what ships (pinned by key fingerprint, from SOURCE.md), and the operator's
add/remove configuration."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from keybound.attestation import AttestationFormat, TrustStore
from keybound.errors import ConfigurationInvalid
from tests.attestation import factory
from tests.attestation.vectors import VECTORS

# SPKI SHA-256 of each shipped anchor (SOURCE.md "google-roots", and openssl for the rest).
GOOGLE_RSA = "feb2ea7551ee316ed4bb443c8293b884dbfdea40b603ee3e4f4a897e4580fbae"
GOOGLE_ECDSA = "3ee44512a1af2beb39c889490c60ea3f82e43f5d5a5532f5ab9419f676cd07ec"
APPLE = "1ae751fd29896d0f1f13fe226c063f445d40d8938acc6245c251ecc0679330bd"
MICROSOFT = "5eadfa0187a24edb747b98523f89cf92d33eeb20ec81b9d0a31e170b73c2dbb2"


def _keys(store: TrustStore) -> set[str]:
    return {anchor.key_sha256 for anchor in store.anchors}


def test_shipped_anchors_are_pinned() -> None:
    assert _keys(TrustStore.builtin(AttestationFormat.ANDROID_KEY)) == {GOOGLE_RSA, GOOGLE_ECDSA}
    assert _keys(TrustStore.builtin(AttestationFormat.APPLE_APP_ATTEST)) == {APPLE}
    assert _keys(TrustStore.builtin(AttestationFormat.TPM)) == {MICROSOFT}


def test_three_google_rsa_certificates_are_one_anchor() -> None:
    roots = sorted((VECTORS / "android/roots").glob("google_root_rsa_*.pem"))
    assert len(roots) == 3
    assert _keys(TrustStore.from_files(roots)) == {GOOGLE_RSA}


def test_operator_adds_and_removes_anchors(tmp_path: Path) -> None:
    ca = factory.issue(factory.name("Operator TPM CA"))
    key_only = factory.issue(factory.name("Key only"))
    bundle = tmp_path / "anchors.pem"
    bundle.write_bytes(
        ca.pem()
        + key_only.certificate.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    store = TrustStore.configured(
        AttestationFormat.TPM, add_files=[bundle], remove_keys=[MICROSOFT.upper()]
    )
    assert store.by_spki(ca.spki) is not None and store.by_spki(key_only.spki) is not None
    assert MICROSOFT not in _keys(store) and len(store) == 2
    only_added = TrustStore.configured(
        AttestationFormat.TPM, add_files=[bundle], include_builtin=False
    )
    assert len(only_added) == 2


def test_configuration_mistakes_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationInvalid):  # a typo must not leave an anchor trusted
        TrustStore.configured(AttestationFormat.TPM, remove_keys=["00" * 32])
    with pytest.raises(ConfigurationInvalid):
        TrustStore.from_files([tmp_path / "missing.pem"])
    empty = tmp_path / "empty.pem"
    empty.write_text("no pem here")
    with pytest.raises(ConfigurationInvalid):
        TrustStore.from_files([empty])
