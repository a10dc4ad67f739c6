"""Hypothesis fuzzing of every parser and verifier: whatever the bytes, the only exception
is AttestationFailed, and never with Reason.INTERNAL_ERROR (which would mean the boundary
net caught something a parser let slip)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import cbor2
import pytest
from cryptography import x509
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keybound.attestation import (
    AndroidKeyEvidence,
    AndroidKeyPolicy,
    AndroidKeyVerifier,
    AppAttestEvidence,
    AppAttestVerifier,
    AppleApp,
    AppleEnvironment,
    AttestationFailed,
    AttestationFormat,
    Reason,
    TpmEvidence,
    TpmPolicy,
    TpmVerifier,
    TrustStore,
    _cbor,
    certext,
)
from keybound.attestation._der import certificate_parts, load_certificate, read_tlv
from keybound.attestation.android_keydescription import KEY_DESCRIPTION_OID, parse_key_description
from keybound.attestation.authdata import cose_key_to_spki, parse_authenticator_data
from keybound.attestation.conformance import load_webauthn_sample
from keybound.attestation.tpm_structures import parse_attest, parse_public, parse_signature
from tests.attestation.vectors import VECTORS, pem_chain

FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
NOW = dt.datetime(2025, 9, 26, tzinfo=dt.UTC)

ANDROID_CHAIN = pem_chain("android/keyattestation/caiman/sdk36/TEE_EC_RKP.pem")
LEAF_EXTENSION = bytes(
    x509.load_der_x509_certificate(ANDROID_CHAIN[0])
    .extensions.get_extension_for_oid(x509.ObjectIdentifier(KEY_DESCRIPTION_OID))
    .value.value  # type: ignore[attr-defined]
)
TPM_OBJECT, TPM_HASH = load_webauthn_sample(
    [VECTORS / "tpm/py_webauthn/ecc_public_area_nuvoton.json"]
)
TPM_STATEMENT = cbor2.loads(TPM_OBJECT)["attStmt"]
APPLE_OBJECT = cbor2.dumps(cbor2.loads(TPM_OBJECT) | {"fmt": "apple-appattest"})


def _typed_only(call: Callable[[], Any]) -> None:
    try:
        call()
    except AttestationFailed as exc:
        assert exc.reason is not Reason.INTERNAL_ERROR, exc.detail


@st.composite
def mutated(draw: st.DrawFn, base: bytes) -> bytes:
    """``base`` with a few bytes replaced, a slice cut out, or bytes inserted."""
    data = bytearray(base)
    for _ in range(draw(st.integers(0, 4))):
        if not data:
            break
        position = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(("flip", "cut", "insert")))
        if action == "flip":
            data[position] = draw(st.integers(0, 255))
        elif action == "cut":
            del data[position : position + draw(st.integers(1, 16))]
        else:
            data[position:position] = draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


def _bytes_or_mutation(base: bytes) -> st.SearchStrategy[bytes]:
    return st.one_of(st.binary(max_size=2048), mutated(base))


@FUZZ
@given(_bytes_or_mutation(LEAF_EXTENSION))
def test_key_description_parser(data: bytes) -> None:
    _typed_only(lambda: parse_key_description(data))


@FUZZ
@given(_bytes_or_mutation(ANDROID_CHAIN[1]))
def test_certificate_parsers(data: bytes) -> None:
    _typed_only(lambda: read_tlv(data, 0))
    _typed_only(lambda: certificate_parts(data))
    _typed_only(lambda: load_certificate(data))
    _typed_only(lambda: certext.read_extensions(data))


@FUZZ
@given(_bytes_or_mutation(TPM_OBJECT))
def test_cbor_and_authenticator_data(data: bytes) -> None:
    _typed_only(lambda: _cbor.decode(data, what="fuzz", max_bytes=1 << 16))
    _typed_only(lambda: parse_authenticator_data(data))


@FUZZ
@given(
    st.dictionaries(
        st.integers(-4, 4),
        st.one_of(st.integers(), st.binary(max_size=80), st.text(max_size=5)),
        max_size=6,
    )
)
def test_cose_keys(key: dict[int, Any]) -> None:
    _typed_only(lambda: cose_key_to_spki(key))


@FUZZ
@given(
    _bytes_or_mutation(TPM_STATEMENT["certInfo"]),
    _bytes_or_mutation(TPM_STATEMENT["pubArea"]),
    st.binary(max_size=300),
)
def test_tpm_structures(cert_info: bytes, public_area: bytes, signature: bytes) -> None:
    _typed_only(lambda: parse_attest(cert_info))
    _typed_only(lambda: parse_public(public_area))
    _typed_only(lambda: parse_signature(signature))


@FUZZ
@given(st.lists(_bytes_or_mutation(ANDROID_CHAIN[0]), min_size=0, max_size=3), st.booleans())
def test_android_verifier(heads: list[bytes], keep_rest: bool) -> None:
    chain = tuple(heads) + (ANDROID_CHAIN[1:] if keep_rest else ())
    verifier = AndroidKeyVerifier(
        trust=TrustStore.builtin(AttestationFormat.ANDROID_KEY), policy=AndroidKeyPolicy()
    )
    _typed_only(
        lambda: verifier.verify(
            AndroidKeyEvidence(chain=chain),
            expected_challenge=b"c",
            expected_public_key=b"k",
            now=NOW,
        )
    )


@FUZZ
@given(
    _bytes_or_mutation(APPLE_OBJECT),
    st.binary(max_size=40),
    _bytes_or_mutation(cbor2.dumps({"signature": b"\x30" * 70, "authenticatorData": bytes(37)})),
)
def test_apple_verifier(attestation: bytes, key_id: bytes, assertion: bytes) -> None:
    verifier = AppAttestVerifier(
        trust=TrustStore.builtin(AttestationFormat.APPLE_APP_ATTEST),
        app=AppleApp(team_id="T", bundle_id="b"),
        environment=AppleEnvironment.DEVELOPMENT,
    )
    _typed_only(
        lambda: verifier.verify(
            AppAttestEvidence(attestation_object=attestation, key_id=key_id),
            expected_challenge=b"c",
            expected_public_key=b"k",
            now=NOW,
        )
    )
    _typed_only(
        lambda: verifier.verify_assertion(
            assertion, expected_client_data_hash=b"h", expected_public_key=b"k", previous_counter=0
        )
    )


@FUZZ
@given(_bytes_or_mutation(TPM_OBJECT))
def test_tpm_webauthn_verifier(attestation: bytes) -> None:
    verifier = TpmVerifier(
        trust=TrustStore.builtin(AttestationFormat.TPM), policy=TpmPolicy.webauthn()
    )
    _typed_only(
        lambda: verifier.verify_webauthn(
            attestation, client_data_hash=TPM_HASH, now=dt.datetime(2022, 8, 5, tzinfo=dt.UTC)
        )
    )


@FUZZ
@given(
    _bytes_or_mutation(TPM_STATEMENT["certInfo"]),
    _bytes_or_mutation(TPM_STATEMENT["pubArea"]),
    st.binary(max_size=120),
    st.lists(st.binary(max_size=64), max_size=2),
)
def test_tpm_verifier(
    cert_info: bytes, public_area: bytes, signature: bytes, chain: list[bytes]
) -> None:
    verifier = TpmVerifier(trust=TrustStore.builtin(AttestationFormat.TPM))
    evidence = TpmEvidence(
        certify_info=cert_info,
        signature=signature,
        public_area=public_area,
        ak_certificate_chain=tuple(chain) or tuple(TPM_STATEMENT["x5c"]),
    )
    _typed_only(
        lambda: verifier.verify(
            evidence, expected_challenge=b"c", expected_public_key=b"k", now=NOW
        )
    )


@pytest.mark.parametrize("wrong", [None, 7, "text", [b"x"], {"a": 1}])
def test_wrong_python_types_are_typed_failures(wrong: Any) -> None:
    verifier = AndroidKeyVerifier(
        trust=TrustStore.builtin(AttestationFormat.ANDROID_KEY), policy=AndroidKeyPolicy()
    )
    _typed_only(
        lambda: verifier.verify(
            AndroidKeyEvidence(chain=wrong),
            expected_challenge=b"",
            expected_public_key=b"",
            now=NOW,
        )
    )
