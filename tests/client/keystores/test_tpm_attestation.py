"""The TPM key store's attestation on a swtpm manufactured with swtpm's own tooling
(``swtpm_setup --create-ek-cert`` with ``swtpm_localca``), checked with keybound's verifiers:
the EK certificate from NV against the local CA, the server's TPM2_MakeCredential opened by
the store's TPM2_ActivateCredential, and the TPM2_Certify evidence by TpmVerifier."""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID

from keybound.attestation import (
    ActivatedAk,
    AkTrust,
    AttestationFailed,
    Reason,
    TpmEvidence,
    TpmVerifier,
    TrustStore,
    make_credential,
    verify_ek_certificate,
)
from keybound.attestation.tpm import check_ak_public
from keybound.attestation.tpm_structures import object_name, parse_public
from keybound.client.keystores import KeyStore, open_keystore
from keybound.client.keystores.base import (
    ActivationCredential,
    AttestationKey,
    TpmCertification,
)
from keybound.errors import ClientError, KeyStoreError

if TYPE_CHECKING:
    from conftest import ManufacturedSwtpm, SwtpmBed

CHALLENGE = bytes(range(32))
TCG_EK_CERTIFICATE_EKU = "2.23.133.8.1"


def _store(tcti: str, state_dir: Path, **options: str) -> KeyStore:
    return open_keystore("tpm", state_dir, {"tcti": tcti, **options})


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _server_credential(
    key: AttestationKey, trust: TrustStore, secret: bytes
) -> ActivationCredential:
    """What the server does at activation start (docs/attestation.md §5): verify the EK
    certificate, check the AK, make the credential for the certificate's key and the AK."""
    ek = verify_ek_certificate(key.ek_certificate, trust=trust, now=_now())
    ak = parse_public(key.ak_public, what="AK")
    check_ak_public(ak)
    ek_key = serialization.load_der_public_key(ek.public_key)
    assert isinstance(ek_key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey)
    made = make_credential(ek_key, object_name(ak.name_alg, key.ak_public), secret)
    return ActivationCredential(
        credential_blob=made.credential_blob, encrypted_secret=made.encrypted_secret
    )


def _issuer_trust(bed: ManufacturedSwtpm) -> TrustStore:
    return TrustStore.from_files([bed.ca.issuer_certificate])


# ----------------------------------------------------------------------- the EK certificate


@pytest.mark.swtpm
def test_ek_certificate_from_swtpm_localca_verifies(
    manufactured_swtpm: ManufacturedSwtpm, tmp_path: Path
) -> None:
    key = _store(manufactured_swtpm.tcti, tmp_path).attestation_key()
    assert key is not None
    certificate = x509.load_der_x509_certificate(key.ek_certificate)
    # what swtpm_localca issues: RSA 2048 EK (template L-1), the TCG EK profile's SAN and EKU
    assert isinstance(certificate.public_key(), rsa.RSAPublicKey)
    assert certificate.public_key().key_size == 2048
    eku = certificate.extensions.get_extension_for_oid(ExtensionOID.EXTENDED_KEY_USAGE)
    assert [oid.dotted_string for oid in eku.value] == [TCG_EK_CERTIFICATE_EKU]
    assert certificate.extensions.get_extension_for_oid(
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME
    ).critical
    assert ExtendedKeyUsageOID.SERVER_AUTH not in eku.value
    # against the CA's intermediate as the anchor (it signed the EK certificate) ...
    verified = verify_ek_certificate(
        key.ek_certificate, trust=_issuer_trust(manufactured_swtpm), now=_now()
    )
    assert verified.identity.manufacturer_id == "id:00001014"
    assert verified.identity.model == "swtpm"
    assert verified.identity.version == "id:20191023"
    # ... and against the root, with the intermediate given as such
    issuer = x509.load_pem_x509_certificate(manufactured_swtpm.ca.issuer_certificate.read_bytes())
    via_root = verify_ek_certificate(
        key.ek_certificate,
        intermediates=(issuer.public_bytes(serialization.Encoding.DER),),
        trust=TrustStore.from_files([manufactured_swtpm.ca.root_certificate]),
        now=_now(),
    )
    assert len(via_root.chain) == 2
    # nobody else's CA vouches for it: not the shipped TPM roots, not a fresh local CA
    for untrusted in (TrustStore.builtin("tpm"), TrustStore()):
        with pytest.raises(AttestationFailed) as caught:
            verify_ek_certificate(key.ek_certificate, trust=untrusted, now=_now())
        assert caught.value.reason is Reason.CHAIN_UNTRUSTED


@pytest.mark.swtpm
def test_the_ecc_p384_ek_of_template_h3(
    manufactured_swtpm: ManufacturedSwtpm, tmp_path: Path
) -> None:
    """swtpm also provisions an ECC P-384 EK (high-range template H-3, userWithAuth set: no
    policy session); the ``ek`` option picks it, and the whole round trip works with it."""
    store = _store(manufactured_swtpm.tcti, tmp_path, ek="H-3")
    key = store.attestation_key()
    assert key is not None and key.ref["ek"] == "H-3"
    ek_key = x509.load_der_x509_certificate(key.ek_certificate).public_key()
    assert isinstance(ek_key, ec.EllipticCurvePublicKey) and ek_key.curve.name == "secp384r1"
    secret = os.urandom(32)
    credential = _server_credential(key, _issuer_trust(manufactured_swtpm), secret)
    handle = store.generate("device")
    evidence = store.attest(handle, challenge=CHALLENGE, attestation_key=key, credential=credential)
    assert isinstance(evidence, TpmCertification)
    assert evidence.activated_secret == secret


# ---------------------------------------------------------------- activation and certify


@pytest.mark.swtpm
def test_round_trip_verifies_with_tpm_verifier(
    manufactured_swtpm: ManufacturedSwtpm, tmp_path: Path
) -> None:
    store = _store(manufactured_swtpm.tcti, tmp_path)
    trust = _issuer_trust(manufactured_swtpm)
    key = store.attestation_key()
    assert key is not None
    ak = parse_public(key.ak_public, what="AK")
    check_ak_public(ak)  # restricted signing, fixedTPM, fixedParent, sensitiveDataOrigin
    secret = os.urandom(32)
    credential = _server_credential(key, trust, secret)
    handle = store.generate("device")
    evidence = store.attest(handle, challenge=CHALLENGE, attestation_key=key, credential=credential)
    assert isinstance(evidence, TpmCertification)
    assert evidence.activated_secret == secret  # the TPM opened the server's credential
    verified_ek = verify_ek_certificate(key.ek_certificate, trust=trust, now=_now())
    tpm_evidence = TpmEvidence(
        certify_info=evidence.certify_info,
        signature=evidence.signature,
        public_area=evidence.public_area,
        activated_ak=ActivatedAk(public_area=key.ak_public, ek=verified_ek),
    )
    verifier = TpmVerifier(trust=TrustStore())
    result = verifier.verify(
        tpm_evidence,
        expected_challenge=CHALLENGE,
        expected_public_key=handle.public_key,
        now=_now(),
    )
    assert result.ak_trust is AkTrust.ACTIVATION
    assert result.attested_public_key == handle.public_key
    assert result.tpm.model == "swtpm"
    # bound to this activation's challenge and this hardware key
    with pytest.raises(AttestationFailed) as caught:
        verifier.verify(
            tpm_evidence,
            expected_challenge=bytes(32),
            expected_public_key=handle.public_key,
            now=_now(),
        )
    assert caught.value.reason is Reason.CHALLENGE_MISMATCH
    other = store.generate("another device")
    with pytest.raises(AttestationFailed) as caught:
        verifier.verify(
            tpm_evidence,
            expected_challenge=CHALLENGE,
            expected_public_key=other.public_key,
            now=_now(),
        )
    assert caught.value.reason is Reason.KEY_MISMATCH


@pytest.mark.swtpm
def test_a_credential_for_another_ak_is_refused_by_the_tpm(
    manufactured_swtpm: ManufacturedSwtpm, tmp_path: Path
) -> None:
    """The attack: evidence from an AK the server did not activate. A credential made for
    one AK cannot be opened with another, so the device has no secret to show."""
    store = _store(manufactured_swtpm.tcti, tmp_path)
    trust = _issuer_trust(manufactured_swtpm)
    first, second = store.attestation_key(), store.attestation_key()
    assert first is not None and second is not None
    assert first.ak_public != second.ak_public  # a fresh AK every time
    credential = _server_credential(first, trust, os.urandom(32))
    handle = store.generate("device")
    with pytest.raises(KeyStoreError):
        store.attest(handle, challenge=CHALLENGE, attestation_key=second, credential=credential)
    tampered = replace(
        credential,
        credential_blob=credential.credential_blob[:-1]
        + bytes([credential.credential_blob[-1] ^ 1]),
    )
    with pytest.raises(KeyStoreError):
        store.attest(handle, challenge=CHALLENGE, attestation_key=first, credential=tampered)


@pytest.mark.swtpm
def test_a_credential_for_another_tpm_is_refused(
    manufactured_swtpm: ManufacturedSwtpm, tmp_path: Path
) -> None:
    """An EK certificate of another TPM (same manufacturer CA) with this TPM's AK: the
    credential is made for the other EK, which this TPM does not hold."""
    store = _store(manufactured_swtpm.tcti, tmp_path)
    key = store.attestation_key()
    assert key is not None
    other_tpm = manufactured_swtpm.workdir / "other-tpm"
    from keybound.client.keystores._testbeds import manufacture_swtpm, start_swtpm

    manufacture_swtpm(other_tpm, ca_dir=manufactured_swtpm.ca.directory)
    other = start_swtpm(other_tpm)
    try:
        other_key = _store(other.tcti, tmp_path).attestation_key()
    finally:
        other.stop()
    assert other_key is not None and other_key.ek_certificate != key.ek_certificate
    forged = replace(key, ek_certificate=other_key.ek_certificate)
    credential = _server_credential(forged, _issuer_trust(manufactured_swtpm), os.urandom(32))
    with pytest.raises(KeyStoreError, match="not the key its EK certificate names"):
        store.attest(
            store.generate("device"),
            challenge=CHALLENGE,
            attestation_key=forged,
            credential=credential,
        )


@pytest.mark.swtpm
def test_no_attestation_without_the_servers_credential(
    manufactured_swtpm: ManufacturedSwtpm, tmp_path: Path
) -> None:
    store = _store(manufactured_swtpm.tcti, tmp_path)
    key = store.attestation_key()
    handle = store.generate("device")
    assert store.attest(handle, challenge=CHALLENGE, attestation_key=key) is None
    assert store.attest(handle, challenge=CHALLENGE) is None


@pytest.mark.swtpm
def test_a_tpm_without_ek_certificate_does_not_attest(swtpm: SwtpmBed, tmp_path: Path) -> None:
    """A TPM nobody provisioned (plain swtpm: EK seed, no certificate in NV) still makes
    hardware keys; it just has nothing to prove them with."""
    store = _store(swtpm.tcti, tmp_path)
    assert store.attestation_key() is None
    assert store.available()


@pytest.mark.swtpm
def test_attestation_key_reference_is_checked(
    manufactured_swtpm: ManufacturedSwtpm, tmp_path: Path
) -> None:
    store = _store(manufactured_swtpm.tcti, tmp_path)
    key = store.attestation_key()
    assert key is not None
    credential = ActivationCredential(credential_blob=b"x", encrypted_secret=b"y")
    handle = store.generate("device")
    other = store.attestation_key()
    assert other is not None
    for broken in (
        replace(key, ref={**key.ref, "format": "other"}),
        replace(key, ref={**key.ref, "ek": "H-5"}),
        replace(key, ref={**key.ref, "private": "!!"}),
        replace(key, ak_public=other.ak_public),
    ):
        with pytest.raises(KeyStoreError):
            store.attest(handle, challenge=CHALLENGE, attestation_key=broken, credential=credential)


def test_ek_option_is_an_allow_list(tmp_path: Path) -> None:
    with pytest.raises(ClientError):
        open_keystore("tpm", tmp_path, {"tcti": "swtpm:port=1", "ek": "H-5"})


def test_ek_certificate_read_from_nv_is_trimmed_to_its_der() -> None:
    """Some TPMs' EK certificate indices are larger than the certificate, padded after it."""
    from keybound.client.keystores.tpm import _trim_certificate

    certificate = b"\x30\x82\x00\x05" + b"abcde"
    assert _trim_certificate(certificate + b"\x00" * 20) == certificate
    assert _trim_certificate(certificate + b"\xff") == certificate
    assert _trim_certificate(b"\x30\x81\x02ab\x00") == b"\x30\x81\x02ab"
    for broken in (b"", b"\x00" * 8, b"\x30\x05abcde", b"\x30\x82\x00\x09abc", b"\x31\x81\x01a"):
        with pytest.raises(KeyStoreError):
            _trim_certificate(broken)
