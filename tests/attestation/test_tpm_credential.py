"""TPM2_MakeCredential in software, proven against a real TPM: swtpm creates an EK (RSA and
ECC) and an AK through tpm2-pytss and must ActivateCredential keybound's blob back to the
secret; then the activated AK certifies a key and TpmVerifier accepts it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

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
from keybound.attestation.tpm_credential import kdfa
from keybound.attestation.tpm_structures import object_name, parse_public
from keybound.attestation.trust import TrustAnchor
from tests.attestation import factory
from tests.client.keystores.conftest import SwtpmBed, swtpm, swtpm_available  # noqa: F401 (fixtures)

EK_TYPES = ["EK-RSA2048", "EK-ECC256"]


def _no_nv(index: int) -> bytes:
    """No EK template or nonce in NV: use the TCG default templates without asking the TPM."""
    from tpm2_pytss.utils import NoSuchIndex

    raise NoSuchIndex(index)


@contextmanager
def _esapi(bed: SwtpmBed) -> Iterator[Any]:
    from tpm2_pytss import ESAPI, TCTILdr

    with TCTILdr("swtpm", f"host=127.0.0.1,port={bed.tpm.port}") as tcti:
        ectx = ESAPI(tcti)
        try:
            yield ectx
        finally:
            ectx.close()


def _ek_and_ak(ectx: Any, ek_type: str) -> tuple[Any, Any, Any, Any]:
    from tpm2_pytss.constants import ESYS_TR, TPMA_OBJECT
    from tpm2_pytss.types import TPM2B_PUBLIC, TPM2B_SENSITIVE_CREATE, TPMT_PUBLIC
    from tpm2_pytss.utils import create_ek_template

    _, template = create_ek_template(ek_type, _no_nv)
    ek, ek_public, *_ = ectx.create_primary(TPM2B_SENSITIVE_CREATE(), template, ESYS_TR.ENDORSEMENT)
    attributes = (
        TPMA_OBJECT.FIXEDTPM
        | TPMA_OBJECT.FIXEDPARENT
        | TPMA_OBJECT.SENSITIVEDATAORIGIN
        | TPMA_OBJECT.USERWITHAUTH
        | TPMA_OBJECT.RESTRICTED
        | TPMA_OBJECT.SIGN_ENCRYPT
    )
    ak_template = TPM2B_PUBLIC(
        TPMT_PUBLIC.parse(alg="ecc256:ecdsa-sha256:null", objectAttributes=attributes)
    )
    ak, ak_public, *_ = ectx.create_primary(
        TPM2B_SENSITIVE_CREATE(), ak_template, ESYS_TR.ENDORSEMENT
    )
    return ek, ek_public.publicArea.marshal(), ak, ak_public.publicArea.marshal()


def _activate(ectx: Any, ek: Any, ak: Any, blob: bytes, secret: bytes) -> bytes:
    """TPM2_ActivateCredential: the EK's policy (PolicySecret(endorsement)) in a session."""
    from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_SE
    from tpm2_pytss.types import TPM2B_ENCRYPTED_SECRET, TPM2B_ID_OBJECT, TPMT_SYM_DEF

    session = ectx.start_auth_session(
        ESYS_TR.NONE,
        ESYS_TR.NONE,
        TPM2_SE.POLICY,
        TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL),
        TPM2_ALG.SHA256,
    )
    try:
        ectx.policy_secret(ESYS_TR.ENDORSEMENT, session)
        return bytes(
            ectx.activate_credential(
                ak,
                ek,
                TPM2B_ID_OBJECT(credential=blob),
                TPM2B_ENCRYPTED_SECRET(secret=secret),
                session1=ESYS_TR.PASSWORD,
                session2=session,
            )
        )
    finally:
        ectx.flush_context(session)


@pytest.mark.swtpm
@pytest.mark.parametrize("ek_type", EK_TYPES)
def test_swtpm_activates_keybound_credential(swtpm: SwtpmBed, ek_type: str) -> None:  # noqa: F811
    from tpm2_pytss import TSS2_Exception

    with _esapi(swtpm) as ectx:
        ek, ek_public, ak, ak_public = _ek_and_ak(ectx, ek_type)
        ak_name = object_name(parse_public(ak_public).name_alg, ak_public)
        assert ak_name == bytes(ectx.tr_get_name(ak))  # our Name is the TPM's
        secret = b"keybound activation secret 32 B!"
        made = make_credential(ek_public, ak_name, secret)
        assert _activate(ectx, ek, ak, made.credential_blob, made.encrypted_secret) == secret
        # the EK's public key alone (as from its certificate) gives the same protection
        ek_key = parse_public(ek_public).public_key()
        again = make_credential(ek_key, ak_name, secret)
        assert _activate(ectx, ek, ak, again.credential_blob, again.encrypted_secret) == secret
        # a tampered blob fails the TPM's integrity check, and so does another AK's name
        tampered = bytearray(made.credential_blob)
        tampered[-1] ^= 1
        with pytest.raises(TSS2_Exception):
            _activate(ectx, ek, ak, bytes(tampered), made.encrypted_secret)
        other_name = ak_name[:2] + bytes(32)
        wrong = make_credential(ek_public, other_name, secret)
        with pytest.raises(TSS2_Exception):
            _activate(ectx, ek, ak, wrong.credential_blob, wrong.encrypted_secret)


@pytest.mark.swtpm
def test_swtpm_end_to_end_certify_with_activated_ak(swtpm: SwtpmBed) -> None:  # noqa: F811
    """EK certificate from a test manufacturer CA -> credential activation -> TPM2_Certify of
    a sign-only P-256 key over the challenge -> TpmVerifier with the activated AK."""
    from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPMA_OBJECT
    from tpm2_pytss.types import (
        TPM2B_PUBLIC,
        TPM2B_SENSITIVE_CREATE,
        TPMT_PUBLIC,
        TPMT_SIG_SCHEME,
    )

    manufacturer = factory.issue(factory.name("Test TPM Manufacturer CA"))
    ek_trust = TrustStore((TrustAnchor.from_spki(manufacturer.spki, label="EK CA"),))
    now = dt.datetime.now(dt.UTC)
    challenge = b"\x5a" * 32
    with _esapi(swtpm) as ectx:
        ek, ek_public, ak, ak_public = _ek_and_ak(ectx, "EK-RSA2048")
        ek_key = parse_public(ek_public).public_key()
        ek_cert = factory.tpm_certificate(
            manufacturer,
            eku="2.23.133.8.1",
            public_key=ek_key,
            san=factory.tpm_san(manufacturer="id:00001014", model="swtpm", version="id:20191023"),
        )
        verified_ek = verify_ek_certificate(ek_cert.der, trust=ek_trust, now=now)
        # the server activates against the key its EK certificate names, nothing else
        assert verified_ek.public_key == parse_public(ek_public).spki()
        ak_name = object_name(parse_public(ak_public).name_alg, ak_public)
        secret = b"activation secret"
        made = make_credential(ek_key, ak_name, secret)
        assert _activate(ectx, ek, ak, made.credential_blob, made.encrypted_secret) == secret
        # the hardware key: as keybound's TPM key store makes it (sign-only P-256)
        attributes = (
            TPMA_OBJECT.FIXEDTPM
            | TPMA_OBJECT.FIXEDPARENT
            | TPMA_OBJECT.SENSITIVEDATAORIGIN
            | TPMA_OBJECT.USERWITHAUTH
            | TPMA_OBJECT.SIGN_ENCRYPT
        )
        template = TPM2B_PUBLIC(
            TPMT_PUBLIC.parse(alg="ecc256:ecdsa-sha256:null", objectAttributes=attributes)
        )
        key, key_public, *_ = ectx.create_primary(TPM2B_SENSITIVE_CREATE(), template, ESYS_TR.OWNER)
        info, signature = ectx.certify(key, ak, challenge, TPMT_SIG_SCHEME(scheme=TPM2_ALG.NULL))
        public_area = key_public.publicArea.marshal()
    evidence = TpmEvidence(
        certify_info=bytes(info),
        signature=signature.marshal(),
        public_area=public_area,
        activated_ak=ActivatedAk(public_area=ak_public, ek=verified_ek),
    )
    verifier = TpmVerifier(trust=TrustStore())
    expected_key = parse_public(public_area).spki()
    result = verifier.verify(
        evidence, expected_challenge=challenge, expected_public_key=expected_key, now=now
    )
    assert result.ak_trust is AkTrust.ACTIVATION
    assert result.tpm.manufacturer_id == "id:00001014" and result.tpm.model == "swtpm"
    with pytest.raises(AttestationFailed) as caught:
        verifier.verify(
            evidence, expected_challenge=b"\x00" * 32, expected_public_key=expected_key, now=now
        )
    assert caught.value.reason is Reason.CHALLENGE_MISMATCH


def test_make_credential_input_checks() -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    ek = ec.generate_private_key(ec.SECP256R1()).public_key()
    name = b"\x00\x0b" + bytes(32)
    for bad_secret in (b"", bytes(33)):
        with pytest.raises(AttestationFailed):
            make_credential(ek, name, bad_secret)
    for bad_name in (b"", b"\x00\x0b" + bytes(31), b"\x00\x99" + bytes(32)):
        with pytest.raises(AttestationFailed):
            make_credential(ek, bad_name, b"secret")
    with pytest.raises(AttestationFailed) as caught:
        make_credential(ec.generate_private_key(ec.SECP224R1()).public_key(), name, b"s")
    assert caught.value.reason is Reason.UNSUPPORTED_ALGORITHM
    # a signing key is not an EK
    signing = factory.tpmt_public_ecc(ek, attributes=factory.TPM_SIGN_ONLY)
    with pytest.raises(AttestationFailed) as caught:
        make_credential(signing, name, b"s")
    assert caught.value.reason is Reason.TPM_KEY_ATTRIBUTES


def test_kdfa_masks_partial_bytes_and_is_deterministic() -> None:
    from cryptography.hazmat.primitives import hashes

    first = kdfa(hashes.SHA256, b"k", b"STORAGE", b"u", b"v", 128)
    assert len(first) == 16 and first == kdfa(hashes.SHA256, b"k", b"STORAGE", b"u", b"v", 128)
    assert kdfa(hashes.SHA256, b"k", b"STORAGE", b"u", b"v", 12)[0] < 16
    assert len(kdfa(hashes.SHA256, b"k", b"INTEGRITY", b"", b"", 512)) == 64
