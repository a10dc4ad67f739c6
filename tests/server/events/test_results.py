"""Signed results: made with joserfc, verified by an independent JOSE library (jwcrypto)
against the published JWKS, across a key rotation; forged tokens refused by verify_result."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import replace
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from joserfc import jws
from joserfc.jwk import ECKey
from jwcrypto import jwk as jc_jwk
from jwcrypto import jws as jc_jws

from keybound.errors import ConfigurationInvalid, ErrorCode
from keybound.protocol import (
    AuthLevel,
    AuthMethod,
    HwKeyServerResult,
    Initiator,
    OperationContext,
    OperationState,
    OperationType,
)
from keybound.server.events.results import (
    RESULT_TYPE,
    ResultAlgorithm,
    ResultCheck,
    ResultInvalid,
    ResultKind,
    ResultSigner,
    ResultSigningKey,
    SigningKeyState,
    claims_for,
    data_hash,
    generate_signing_key,
    load_signing_key,
    private_key_pem,
    verify_result,
)
from tests.conftest import FakeClock

ISSUER = "https://kb.example"
OP_ID = "c0ffee00-0000-4000-8000-0000000000a1"
PAY = OperationContext(content="Pay 100 EUR to ACME", mime_type="text/plain")
# docs/protocol.md §4.1.2: the context hash of PAY, and of no context
PAY_HASH_HEX = "aeaeebe04ea83c84142bc252404cec050efad8e21b16c02a19c8f90884917003"
NO_CONTEXT_HASH_HEX = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hex_b64u(hex_digest: str) -> str:
    return b64u(bytes.fromhex(hex_digest))


def completed_claims(clock: FakeClock, **overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "issuer": ISSUER,
        "issued_at": int(clock()),
        "application_id": "bank",
        "operation_id": OP_ID,
        "kind": OperationType.AUTHENTICATION,
        "initiator": Initiator.BACKEND,
        "state": OperationState.COMPLETED,
        "created_at_ms": 1748858580250,
        "completed_at_ms": 1748858621535,
        "user_id": "1e2ca41a-793f-4479-9856-6623db5768a0",
        "device_id": "3f2c6f1e-8a4b-4c2d-9e1f-0a1b2c3d4e5f",
        "auth_method": AuthMethod.DEVICE_PIN,
        "auth_level": AuthLevel.TWO_FACTOR,
        "pre_operation_context": PAY,
        "risk_data": {"hwKeyClientStatus": "OK", "hwKeyServerResult": "VALID"},
        "hw_key_server_result": HwKeyServerResult.VALID,
        "attestation": {"format": "android-key", "result": "VALID"},
    }
    values.update(overrides)
    return claims_for(**values)


def jwcrypto_verify(token: str, jwks: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The independent check: jwcrypto picks the key by kid from the published JWKS."""
    keyset = jc_jwk.JWKSet.from_json(json.dumps(jwks))
    obj = jc_jws.JWS()
    obj.deserialize(token)
    header = obj.jose_header
    obj.verify(keyset.get_key(header["kid"]), alg=header["alg"])
    return header, json.loads(obj.payload)


def forge(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    head = b64u(json.dumps(header).encode())
    body = b64u(json.dumps(claims).encode())
    return f"{head}.{body}.{b64u(signature)}"


def refused(token: str, jwks: dict[str, Any], **expected: Any) -> ResultCheck:
    with pytest.raises(ResultInvalid) as info:
        verify_result(token, jwks, expected_issuer=expected.pop("issuer", ISSUER), **expected)
    assert info.value.code is ErrorCode.RESULT_INVALID
    return info.value.check


# --------------------------------------------------------------------------- signing


@pytest.mark.parametrize("algorithm", list(ResultAlgorithm))
def test_independent_library_verifies_against_published_jwks(
    clock: FakeClock, algorithm: ResultAlgorithm
) -> None:
    signer = ResultSigner([generate_signing_key(algorithm=algorithm, clock=clock)], clock=clock)
    claims = completed_claims(clock)
    token = signer.sign(claims)
    jwks = json.loads(json.dumps(signer.jwks()))  # what a relying party fetches

    header, payload = jwcrypto_verify(token, jwks)

    assert header == {"alg": algorithm.value, "kid": signer.signing_key().kid, "typ": RESULT_TYPE}
    assert payload == claims
    verified = verify_result(
        token,
        jwks,
        expected_issuer=ISSUER,
        expected_operation_id=OP_ID,
        expected_application_id="bank",
    )
    assert (verified.algorithm, verified.state, verified.claims) == (
        algorithm,
        OperationState.COMPLETED,
        claims,
    )


def test_rotation_old_results_verify_new_results_use_new_kid(clock: FakeClock) -> None:
    old_key = generate_signing_key(clock=clock)
    old_token = ResultSigner([old_key], clock=clock).sign(completed_claims(clock))
    clock.advance(86400)
    new_key = generate_signing_key(algorithm=ResultAlgorithm.ED25519, clock=clock)
    rotated = ResultSigner([old_key.retired(), new_key], clock=clock)

    new_token = rotated.sign(completed_claims(clock))
    jwks = rotated.jwks()

    assert [key["kid"] for key in jwks["keys"]] == [new_key.kid, old_key.kid]
    assert jwcrypto_verify(new_token, jwks)[0]["kid"] == new_key.kid
    assert jwcrypto_verify(old_token, jwks)[0]["kid"] == old_key.kid
    assert verify_result(old_token, jwks, expected_issuer=ISSUER).kid == old_key.kid
    assert verify_result(new_token, jwks, expected_issuer=ISSUER).kid == new_key.kid


def test_expired_key_is_unpublished_and_its_results_no_longer_verify(clock: FakeClock) -> None:
    old_key = generate_signing_key(clock=clock)
    old_token = ResultSigner([old_key], clock=clock).sign(completed_claims(clock))
    clock.advance(10)
    new_key = generate_signing_key(clock=clock)
    signer = ResultSigner([old_key.retired(), new_key], clock=clock)
    expiring = ResultSigner(
        [_with_expiry(old_key.retired(), int(clock()) + 60), new_key], clock=clock
    )
    assert len(expiring.jwks()["keys"]) == 2
    clock.advance(60)

    assert [key["kid"] for key in expiring.jwks()["keys"]] == [new_key.kid]
    assert refused(old_token, expiring.jwks()) is ResultCheck.UNKNOWN_KEY
    assert len(signer.jwks()["keys"]) == 2  # without an expiry it stays published


def _with_expiry(key: ResultSigningKey, expires_at: int) -> ResultSigningKey:
    return replace(key, expires_at=expires_at)


def test_newest_active_key_signs(clock: FakeClock) -> None:
    first = generate_signing_key(clock=clock)
    clock.advance(1)
    second = generate_signing_key(clock=clock)
    signer = ResultSigner([second, first], clock=clock)
    assert signer.signing_key() == second
    assert ResultSigner([first, second.retired()], clock=clock).signing_key() == first


def test_no_active_key_or_duplicate_kid_is_a_configuration_error(clock: FakeClock) -> None:
    key = generate_signing_key(clock=clock)
    with pytest.raises(ConfigurationInvalid):
        ResultSigner([key.retired()], clock=clock).sign({})
    with pytest.raises(ConfigurationInvalid):
        ResultSigner([key, key.retired()], clock=clock)


def test_jwks_publishes_no_private_material(clock: FakeClock) -> None:
    signer = ResultSigner(
        [generate_signing_key(algorithm=algorithm, clock=clock) for algorithm in ResultAlgorithm],
        clock=clock,
    )
    for key in signer.jwks()["keys"]:
        assert "d" not in key
        assert key["use"] == "sig"
        assert set(key) <= {"kty", "crv", "x", "y", "kid", "alg", "use"}
    assert "private_key" not in repr(signer.signing_key())


@pytest.mark.parametrize("algorithm", list(ResultAlgorithm))
def test_key_survives_pem_round_trip(clock: FakeClock, algorithm: ResultAlgorithm) -> None:
    key = generate_signing_key(algorithm=algorithm, clock=clock)
    pem = private_key_pem(key)
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8
    loaded = load_signing_key(
        pem,
        kid=key.kid,
        algorithm=algorithm,
        state=SigningKeyState.RETIRED,
        created_at=key.created_at,
    )
    token = ResultSigner([key], clock=clock).sign(completed_claims(clock))
    assert (
        verify_result(token, ResultSigner([loaded], clock=clock).jwks(), expected_issuer=ISSUER).kid
        == key.kid
    )


def test_stored_kid_must_match_key_blob(clock: FakeClock) -> None:
    """A swapped key blob (another key under this kid) is refused when loaded."""
    key, other = generate_signing_key(clock=clock), generate_signing_key(clock=clock)
    with pytest.raises(ConfigurationInvalid):
        load_signing_key(
            private_key_pem(other),
            kid=key.kid,
            algorithm=key.algorithm,
            state=key.state,
            created_at=key.created_at,
        )
    with pytest.raises(ConfigurationInvalid):  # an Ed25519 key cannot be an ES256 key
        ed = generate_signing_key(algorithm=ResultAlgorithm.ED25519, clock=clock)
        load_signing_key(
            private_key_pem(ed),
            kid=ed.kid,
            algorithm=ResultAlgorithm.ES256,
            state=ed.state,
            created_at=ed.created_at,
        )
    with pytest.raises(ConfigurationInvalid):
        load_signing_key(
            b"not a key",
            kid=key.kid,
            algorithm=key.algorithm,
            state=key.state,
            created_at=key.created_at,
        )


# --------------------------------------------------------------------------- claims


def test_claims_cover_the_operation(clock: FakeClock) -> None:
    claims = completed_claims(clock)
    assert claims == {
        "iss": ISSUER,
        "iat": int(clock()),
        "jti": OP_ID,
        "applicationId": "bank",
        "operationId": OP_ID,
        "operationType": "AUTHENTICATION",
        "initiator": "BACKEND",
        "state": "COMPLETED",
        "userId": "1e2ca41a-793f-4479-9856-6623db5768a0",
        "deviceId": "3f2c6f1e-8a4b-4c2d-9e1f-0a1b2c3d4e5f",
        "authMethod": "DEVICE:PIN",
        "authLevel": "TWO_FACTOR",
        "preOperationContextHash": hex_b64u(PAY_HASH_HEX),
        "riskData": {"hwKeyClientStatus": "OK", "hwKeyServerResult": "VALID"},
        "hwKeyServerResult": "VALID",
        "attestation": {"format": "android-key", "result": "VALID"},
        "createdAt": "2025-06-02T10:03:00.250000Z",
        "completedAt": "2025-06-02T10:03:41.535000Z",
    }


def test_failed_device_initiated_claims_omit_what_is_absent(clock: FakeClock) -> None:
    claims = claims_for(
        issuer=ISSUER,
        issued_at=1,
        application_id="bank",
        operation_id=OP_ID,
        kind=OperationType.AUTHENTICATION,
        initiator=Initiator.DEVICE,
        state=OperationState.FAILED,
        created_at_ms=0,
        failure_code=ErrorCode.DECLINED.value,
    )
    assert claims["preOperationContextHash"] == hex_b64u(NO_CONTEXT_HASH_HEX)
    assert claims["failureCode"] == "declined"
    assert claims["riskData"] == {}
    assert not {
        "userId",
        "deviceId",
        "authMethod",
        "authLevel",
        "completedAt",
        "dataHash",
        "attestation",
        "hwKeyServerResult",
    } & set(claims)


def test_signature_result_carries_the_data_hash(clock: FakeClock) -> None:
    document = OperationContext(content="I agree to contract 42", mime_type="text/plain")
    claims = completed_claims(clock, kind=ResultKind.SIGNATURE, signed_data=document)
    expected = b64u(
        hashlib.sha256(b"\x00\x00\x00\x0atext/plain\x00\x00\x00\x16I agree to contract 42").digest()
    )
    assert claims["dataHash"] == expected == data_hash(document)
    assert claims["operationType"] == "SIGNATURE"
    with pytest.raises(ValueError):
        completed_claims(clock, kind=ResultKind.SIGNATURE)
    with pytest.raises(ValueError):
        completed_claims(clock, signed_data=document)


def test_unknown_risk_attribute_refused(clock: FakeClock) -> None:
    with pytest.raises(ValueError):
        completed_claims(clock, risk_data={"rooted": True})


# --------------------------------------------------------------------------- attacks


@pytest.fixture
def es_signer(clock: FakeClock) -> ResultSigner:
    return ResultSigner([generate_signing_key(clock=clock)], clock=clock)


def test_tampered_payload_refused(clock: FakeClock, es_signer: ResultSigner) -> None:
    token = es_signer.sign(completed_claims(clock, state=OperationState.FAILED, auth_level=None))
    head, _, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    claims["state"] = "COMPLETED"
    tampered = f"{head}.{b64u(json.dumps(claims).encode())}.{signature}"
    assert refused(tampered, es_signer.jwks()) is ResultCheck.SIGNATURE


def test_unknown_kid_refused(clock: FakeClock, es_signer: ResultSigner) -> None:
    other = ResultSigner([generate_signing_key(clock=clock)], clock=clock)
    token = other.sign(completed_claims(clock))
    assert refused(token, es_signer.jwks()) is ResultCheck.UNKNOWN_KEY


def test_attacker_key_under_published_kid_refused(
    clock: FakeClock, es_signer: ResultSigner
) -> None:
    """An attacker signs with their own key but names the server's kid."""
    attacker = generate_signing_key(clock=clock)
    kid = es_signer.signing_key().kid
    header = {"alg": "ES256", "kid": kid, "typ": RESULT_TYPE}
    key = jc_jwk.JWK.from_pem(private_key_pem(attacker))
    obj = jc_jws.JWS(json.dumps(completed_claims(clock)).encode())
    obj.add_signature(key, alg="ES256", protected=json.dumps(header))
    assert refused(obj.serialize(compact=True), es_signer.jwks()) is ResultCheck.SIGNATURE


def test_other_published_kid_refused(clock: FakeClock) -> None:
    """A token re-labelled with another published kid: the signature no longer verifies."""
    first, second = generate_signing_key(clock=clock), generate_signing_key(clock=clock)
    signer = ResultSigner([first, second.retired()], clock=clock)
    token = signer.sign(completed_claims(clock))
    _, body, signature = token.split(".")
    relabelled = b64u(json.dumps({"alg": "ES256", "kid": second.kid, "typ": RESULT_TYPE}).encode())
    assert refused(f"{relabelled}.{body}.{signature}", signer.jwks()) is ResultCheck.SIGNATURE


def test_alg_none_refused(clock: FakeClock, es_signer: ResultSigner) -> None:
    header = {"alg": "none", "kid": es_signer.signing_key().kid, "typ": RESULT_TYPE}
    assert (
        refused(forge(header, completed_claims(clock)), es_signer.jwks()) is ResultCheck.ALGORITHM
    )


def test_hs256_keyed_with_the_public_key_refused(clock: FakeClock, es_signer: ResultSigner) -> None:
    """The classic confusion: HMAC over the token with the published key as the secret."""
    jwks = es_signer.jwks()
    public = es_signer.signing_key().private_key.public_key()
    header = {"alg": "HS256", "kid": jwks["keys"][0]["kid"], "typ": RESULT_TYPE}
    for secret in (
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        json.dumps(jwks["keys"][0]).encode(),
    ):
        unsigned = forge(header, completed_claims(clock)).rsplit(".", 1)[0]
        mac = hmac.new(secret, unsigned.encode(), hashlib.sha256).digest()
        assert refused(f"{unsigned}.{b64u(mac)}", jwks) is ResultCheck.ALGORITHM


def test_algorithm_switched_to_the_other_allowed_one_refused(clock: FakeClock) -> None:
    """An Ed25519 header naming an ES256 key is refused before any signature check."""
    ed = generate_signing_key(algorithm=ResultAlgorithm.ED25519, clock=clock)
    es = generate_signing_key(clock=clock)
    signer = ResultSigner([es, ed.retired()], clock=clock)
    _, body, signature = ResultSigner([ed], clock=clock).sign(completed_claims(clock)).split(".")
    header = b64u(json.dumps({"alg": "Ed25519", "kid": es.kid, "typ": RESULT_TYPE}).encode())
    assert refused(f"{header}.{body}.{signature}", signer.jwks()) is ResultCheck.KEY_MISMATCH
    jwks = signer.jwks()  # a JWKS whose key names another algorithm is not trusted either
    for key in jwks["keys"]:
        key["alg"] = "ES256" if key["alg"] == "Ed25519" else "Ed25519"
    token = signer.sign(completed_claims(clock))
    assert refused(token, jwks) is ResultCheck.KEY_MISMATCH


def test_embedded_jwk_header_refused(clock: FakeClock, es_signer: ResultSigner) -> None:
    """A header that brings its own key (jwk) is refused, never used."""
    attacker = generate_signing_key(clock=clock)
    key = jc_jwk.JWK.from_pem(private_key_pem(attacker))
    header = {
        "alg": "ES256",
        "kid": es_signer.signing_key().kid,
        "typ": RESULT_TYPE,
        "jwk": json.loads(key.export_public()),
    }
    obj = jc_jws.JWS(json.dumps(completed_claims(clock)).encode())
    obj.add_signature(key, alg="ES256", protected=json.dumps(header))
    assert refused(obj.serialize(compact=True), es_signer.jwks()) is ResultCheck.HEADER


def test_other_token_types_and_shapes_refused(clock: FakeClock, es_signer: ResultSigner) -> None:
    jwks = es_signer.jwks()
    _, body, signature = es_signer.sign(completed_claims(clock)).split(".")
    kid = es_signer.signing_key().kid
    as_plain_jwt = b64u(json.dumps({"alg": "ES256", "kid": kid, "typ": "JWT"}).encode())
    assert refused(f"{as_plain_jwt}.{body}.{signature}", jwks) is ResultCheck.TYPE
    for garbage in ("", "a.b", "a.b.c.d", "!!.e30.", f"{b64u(b'[1]')}.{body}.{signature}"):
        assert refused(garbage, jwks) is ResultCheck.MALFORMED


def test_claims_checked_after_signature(clock: FakeClock, es_signer: ResultSigner) -> None:
    jwks = es_signer.jwks()
    token = es_signer.sign(completed_claims(clock))
    assert refused(token, jwks, issuer="https://other.example") is ResultCheck.ISSUER
    assert refused(token, jwks, expected_operation_id="x") is ResultCheck.SUBJECT
    assert refused(token, jwks, expected_application_id="other") is ResultCheck.SUBJECT
    for bad in ({"iss": ISSUER}, {**completed_claims(clock), "jti": "other"}, ["list"]):
        assert (
            refused(
                es_signer.sign(bad)
                if isinstance(bad, dict)
                else _signed_raw(es_signer, json.dumps(bad).encode()),
                jwks,
            )
            is ResultCheck.CLAIMS
        )


def _signed_raw(signer: ResultSigner, payload: bytes) -> str:
    key = signer.signing_key()
    return jws.serialize_compact(
        {"alg": "ES256", "kid": key.kid, "typ": RESULT_TYPE},
        payload,
        ECKey.import_key(private_key_pem(key)),
        algorithms=["ES256"],
    )


def test_a_kid_never_starts_with_a_dash() -> None:
    """A kid is a CLI argument (keybound signing-key retire KID): one starting with "-" would
    read as an option. 400 keys would meet one in 64 about six times over."""
    kids = [
        generate_signing_key(algorithm=algorithm).kid
        for algorithm in ResultAlgorithm
        for _ in range(200)
    ]
    assert not [kid for kid in kids if kid.startswith("-")]
