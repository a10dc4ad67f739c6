"""Signed operation results: a compact JWS over the outcome of one operation.

The server signs each finished operation's claims (:func:`claims_for`) with its newest ACTIVE
result-signing key (:class:`ResultSigner`); a relying party verifies the token offline against
the published JWKS (:func:`verify_result`) and may keep it as evidence. Every key that has not
expired is published, RETIRED ones included, so results signed before a rotation keep
verifying. JOSE is done by joserfc, never by hand.

Key storage is the caller's business: a key is a :class:`ResultSigningKey`; its private half
travels as unencrypted PKCS#8 PEM (:func:`private_key_pem`, :func:`load_signing_key`) for the
server to wrap under its master key. Nothing here logs or returns a private key.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Final

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from joserfc import jws
from joserfc.errors import BadSignatureError, JoseError
from joserfc.jwk import ECKey, OKPKey

from keybound.errors import ConfigurationInvalid, ErrorCode, KeyboundError
from keybound.protocol import (
    AuthLevel,
    AuthMethod,
    HwKeyServerResult,
    Initiator,
    OperationContext,
    OperationState,
    OperationType,
    RiskAttribute,
    b64u_decode,
    b64u_encode,
    context_hash,
)
from keybound.server.clock import Clock, wall_clock

#: The JWS ``typ`` (RFC 8725 §3.11): a result cannot pass for another kind of JWT, or back.
RESULT_TYPE: Final = "keybound-result+jwt"
#: The only protected-header members a result has; anything else (crit, jku, jwk, x5u, b64)
#: is refused rather than interpreted.
_HEADER_MEMBERS: Final = frozenset({"alg", "kid", "typ"})
_REQUIRED_CLAIMS: Final = ("iss", "iat", "jti", "applicationId", "operationId", "state")


class ResultAlgorithm(StrEnum):
    """JWS algorithms a result may be signed with (the allow-list of :func:`verify_result`)."""

    ES256 = "ES256"  # ECDSA P-256 with SHA-256 (the default)
    ED25519 = "Ed25519"  # EdDSA over Ed25519, RFC 9864's fully-specified name for it


class SigningKeyState(StrEnum):
    ACTIVE = "ACTIVE"  # may sign (the newest ACTIVE key does) and is published
    RETIRED = "RETIRED"  # signs nothing more; still published until it expires


class ResultKind(StrEnum):
    """The kind of operation a result describes: :class:`OperationType` and the signature
    operation (issue 16 item 2), whose result also carries ``dataHash``."""

    ACTIVATION = OperationType.ACTIVATION.value
    REACTIVATION = OperationType.REACTIVATION.value
    AUTHENTICATION = OperationType.AUTHENTICATION.value
    SIGNATURE = "SIGNATURE"


PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


@dataclass(frozen=True, kw_only=True)
class ResultSigningKey:
    """One result-signing key. ``kid`` is the RFC 7638 thumbprint of its public JWK, so one
    key has one kid and a stored kid that does not match its key blob is refused. Times are
    seconds since the epoch; ``expires_at`` ends publication (None: published for good)."""

    kid: str
    algorithm: ResultAlgorithm
    private_key: PrivateKey = field(repr=False)
    state: SigningKeyState
    created_at: int
    expires_at: int | None = None

    def __post_init__(self) -> None:
        jose = _jose_key(self.algorithm, self.private_key)  # refuses a key of the wrong type
        if jose.thumbprint() != self.kid:
            raise ConfigurationInvalid("result-signing key id does not match its key", kid=self.kid)

    def retired(self) -> ResultSigningKey:
        return replace(self, state=SigningKeyState.RETIRED)

    def published(self, now: float) -> bool:
        return self.expires_at is None or now < self.expires_at


def generate_signing_key(
    *, algorithm: ResultAlgorithm = ResultAlgorithm.ES256, clock: Clock = wall_clock
) -> ResultSigningKey:
    """A new ACTIVE key, drawn again while its kid would start with ``-`` (one in 64 would,
    and ``keybound signing-key retire KID`` would read it as an option; as E2E key ids)."""
    while True:
        private: PrivateKey = (
            ec.generate_private_key(ec.SECP256R1())
            if algorithm is ResultAlgorithm.ES256
            else ed25519.Ed25519PrivateKey.generate()
        )
        kid = _jose_key(algorithm, private).thumbprint()
        if not kid.startswith("-"):
            break
    return ResultSigningKey(
        kid=kid,
        algorithm=algorithm,
        private_key=private,
        state=SigningKeyState.ACTIVE,
        created_at=int(clock()),
    )


def private_key_pem(key: ResultSigningKey) -> bytes:
    """Unencrypted PKCS#8 PEM of the private key, for the caller to wrap before storing."""
    return key.private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_signing_key(
    pem: bytes,
    *,
    kid: str,
    algorithm: ResultAlgorithm,
    state: SigningKeyState,
    created_at: int,
    expires_at: int | None = None,
) -> ResultSigningKey:
    """The inverse of :func:`private_key_pem` plus the stored attributes."""
    try:
        private = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigurationInvalid("unreadable result-signing key", kid=kid) from exc
    if not isinstance(private, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
        raise ConfigurationInvalid("result-signing key of an unsupported type", kid=kid)
    return ResultSigningKey(
        kid=kid,
        algorithm=algorithm,
        private_key=private,
        state=state,
        created_at=created_at,
        expires_at=expires_at,
    )


def _jose_key(algorithm: ResultAlgorithm, private: PrivateKey) -> ECKey | OKPKey:
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    if algorithm is ResultAlgorithm.ES256:
        if not (
            isinstance(private, ec.EllipticCurvePrivateKey)
            and isinstance(private.curve, ec.SECP256R1)
        ):
            raise ConfigurationInvalid("ES256 needs a P-256 key")
        return ECKey.import_key(pem)
    if not isinstance(private, ed25519.Ed25519PrivateKey):
        raise ConfigurationInvalid("Ed25519 needs an Ed25519 key")
    return OKPKey.import_key(pem)


class ResultSigner:
    """Signs with the newest ACTIVE key (by ``created_at``, then kid) and publishes the JWKS.

    Rotation: add a new ACTIVE key (:func:`generate_signing_key`) and retire the old one
    (:meth:`ResultSigningKey.retired`); build a new signer from the new set.
    """

    def __init__(self, keys: Iterable[ResultSigningKey], *, clock: Clock = wall_clock) -> None:
        self._keys = tuple(keys)
        self._clock = clock
        kids = [key.kid for key in self._keys]
        if len(set(kids)) != len(kids):
            raise ConfigurationInvalid("two result-signing keys share a kid")
        self._jose = {key.kid: _jose_key(key.algorithm, key.private_key) for key in self._keys}

    def signing_key(self) -> ResultSigningKey:
        now = self._clock()
        usable = [
            key for key in self._keys if key.state is SigningKeyState.ACTIVE and key.published(now)
        ]
        if not usable:
            raise ConfigurationInvalid("no ACTIVE result-signing key")
        return max(usable, key=lambda key: (key.created_at, key.kid))

    def sign(self, claims: Mapping[str, Any], *, typ: str = RESULT_TYPE) -> str:
        """A compact JWS over ``claims``; ``typ`` names what it is (a result by default, an
        audit checkpoint: server.events.chain), so one kind never passes for another."""
        key = self.signing_key()
        header = {"alg": key.algorithm.value, "kid": key.kid, "typ": typ}
        payload = json.dumps(
            dict(claims), separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode()
        return jws.serialize_compact(
            header, payload, self._jose[key.kid], algorithms=[key.algorithm.value]
        )

    def jwks(self) -> dict[str, Any]:
        """Every published (not expired) public key, newest first: ``{"keys": [JWK, ...]}``."""
        now = self._clock()
        published = sorted(
            (key for key in self._keys if key.published(now)),
            key=lambda key: (key.created_at, key.kid),
            reverse=True,
        )
        return {"keys": [public_jwk(key) for key in published]}


def public_jwk(key: ResultSigningKey) -> dict[str, Any]:
    """The key's entry in the JWKS: its public JWK with ``kid``, ``alg`` and ``use``."""
    return {
        **_jose_key(key.algorithm, key.private_key).as_dict(private=False),
        "kid": key.kid,
        "alg": key.algorithm.value,
        "use": "sig",
    }


# --------------------------------------------------------------------------- claims


def claims_for(
    *,
    issuer: str,
    issued_at: int,
    application_id: str,
    operation_id: str,
    kind: ResultKind | OperationType,
    initiator: Initiator,
    state: OperationState,
    created_at_ms: int,
    completed_at_ms: int | None = None,
    user_id: str | None = None,
    device_id: str | None = None,
    auth_method: AuthMethod | None = None,
    auth_level: AuthLevel | None = None,
    failure_code: str | None = None,
    pre_operation_context: OperationContext | None = None,
    risk_data: Mapping[str, str | bool] | None = None,
    hw_key_server_result: HwKeyServerResult | None = None,
    attestation: Mapping[str, str | bool] | None = None,
    signed_data: OperationContext | None = None,
) -> dict[str, Any]:
    """The claims of one operation's result, from plain values (docs: result claims).

    ``risk_data`` is what the application's ``enabledRiskData`` lets through; ``signed_data``
    is the ``{content, mimeType}`` of a signature operation (and only of one). Hashes are
    base64url of SHA-256 over the §4.1.2 encoding, which the relying party recomputes with
    :func:`keybound.protocol.context_hash`.
    """
    kind = ResultKind(kind.value)
    if (kind is ResultKind.SIGNATURE) != (signed_data is not None):
        raise ValueError("signed_data goes with a SIGNATURE result, and only with one")
    unknown = set(risk_data or ()) - _RISK_ATTRIBUTES
    if unknown:
        raise ValueError(f"not risk attributes: {sorted(unknown)}")
    claims: dict[str, Any] = {
        "iss": issuer,
        "iat": issued_at,
        "jti": operation_id,
        "applicationId": application_id,
        "operationId": operation_id,
        "operationType": kind.value,
        "initiator": initiator.value,
        "state": state.value,
        "preOperationContextHash": b64u_encode(context_hash(pre_operation_context)),
        "riskData": dict(risk_data or {}),
        "createdAt": _timestamp(created_at_ms),
    }
    optional: dict[str, Any] = {
        "userId": user_id,
        "deviceId": device_id,
        "authMethod": auth_method.value if auth_method else None,
        "authLevel": auth_level.value if auth_level else None,
        "failureCode": failure_code,
        "hwKeyServerResult": hw_key_server_result.value if hw_key_server_result else None,
        "attestation": dict(attestation) if attestation is not None else None,
        "completedAt": _timestamp(completed_at_ms) if completed_at_ms is not None else None,
        "dataHash": data_hash(signed_data) if signed_data is not None else None,
    }
    claims.update({name: value for name, value in optional.items() if value is not None})
    return claims


_RISK_ATTRIBUTES: Final = frozenset(attribute.value for attribute in RiskAttribute)


def data_hash(data: OperationContext) -> str:
    """``dataHash`` of a signature operation: what the relying party compares with its copy."""
    return b64u_encode(context_hash(data))


def _timestamp(ms: int) -> str:
    """The API's timestamp format (RFC 3339, UTC, microseconds), exact for integer ms
    (time.strftime: a third of datetime's cost, on every signed result)."""
    seconds, millis = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}000Z"


# --------------------------------------------------------------------------- verification


class ResultCheck(StrEnum):
    """Which check of :func:`verify_result` refused a token (``ResultInvalid.check``)."""

    MALFORMED = "malformed"  # not a compact JWS with a JSON object header
    TYPE = "type"  # typ is not keybound-result+jwt
    HEADER = "header"  # a header member other than alg, kid, typ
    ALGORITHM = "algorithm"  # alg not on the allow-list (none, HS256, RS256, ...)
    UNKNOWN_KEY = "unknown_key"  # no (or more than one) published key with this kid
    KEY_MISMATCH = "key_mismatch"  # the published key is not one for this alg
    SIGNATURE = "signature"
    CLAIMS = "claims"  # payload not a JSON object with the result's required claims
    ISSUER = "issuer"
    SUBJECT = "subject"  # not the expected operation or application


class ResultInvalid(KeyboundError):
    code = ErrorCode.RESULT_INVALID

    def __init__(self, check: ResultCheck, detail: str) -> None:
        super().__init__(detail, check=check)
        self.check = check


@dataclass(frozen=True, kw_only=True)
class VerifiedResult:
    kid: str
    algorithm: ResultAlgorithm
    issuer: str
    issued_at: int
    operation_id: str
    application_id: str
    state: OperationState
    claims: Mapping[str, Any]


def verify_result(
    token: str,
    jwks: Mapping[str, Any],
    *,
    expected_issuer: str,
    expected_operation_id: str | None = None,
    expected_application_id: str | None = None,
) -> VerifiedResult:
    """Verify a signed result offline against a published JWKS; raise :class:`ResultInvalid`.

    The algorithm comes from the allow-list and must match the published key's type; the
    header is never trusted to pick a key type, a key (``jwk``/``jku``) or an algorithm
    outside the list.
    """
    signed = verify_compact(token, jwks, expected_type=RESULT_TYPE)
    claims = _claims(signed.payload)
    if claims["iss"] != expected_issuer:
        raise ResultInvalid(ResultCheck.ISSUER, "another issuer's result")
    if expected_operation_id is not None and claims["operationId"] != expected_operation_id:
        raise ResultInvalid(ResultCheck.SUBJECT, "another operation's result")
    if expected_application_id is not None and claims["applicationId"] != expected_application_id:
        raise ResultInvalid(ResultCheck.SUBJECT, "another application's result")
    return VerifiedResult(
        kid=signed.kid,
        algorithm=signed.algorithm,
        issuer=claims["iss"],
        issued_at=claims["iat"],
        operation_id=claims["operationId"],
        application_id=claims["applicationId"],
        state=OperationState(claims["state"]),
        claims=claims,
    )


@dataclass(frozen=True, kw_only=True)
class VerifiedCompact:
    """A compact JWS whose header and signature passed :func:`verify_compact`."""

    kid: str
    algorithm: ResultAlgorithm
    payload: bytes


def verify_compact(token: str, jwks: Mapping[str, Any], *, expected_type: str) -> VerifiedCompact:
    """The header checks and the signature shared by every token the result-signing keys
    make (a result, an audit checkpoint); raise :class:`ResultInvalid`. The payload is
    not interpreted here."""
    header = _header(token)
    # Explicit typing (RFC 8725 §3.11): another JWT signed by the same key is not a result
    if header.get("typ") != expected_type:
        raise ResultInvalid(ResultCheck.TYPE, f"not a {expected_type}")
    # Only members we interpret: an unknown crit/jku/jwk/x5u/b64 is refused, never followed
    if not set(header) <= _HEADER_MEMBERS:
        raise ResultInvalid(ResultCheck.HEADER, "unexpected header members")
    # Algorithm allow-list (RFC 8725 §3.1): refuses none, HS256 keyed with the public key, ...
    try:
        algorithm = ResultAlgorithm(str(header.get("alg")))
    except ValueError:
        raise ResultInvalid(ResultCheck.ALGORITHM, "algorithm not allowed") from None
    jwk = _published_key(jwks, header.get("kid"))
    # The key must be one for this algorithm (RFC 8725 §3.1: no key/algorithm confusion)
    key = _import_for(algorithm, jwk)
    try:
        signed = jws.deserialize_compact(token, key, algorithms=[algorithm.value])
    except BadSignatureError:
        raise ResultInvalid(ResultCheck.SIGNATURE, "signature does not verify") from None
    except JoseError as exc:
        raise ResultInvalid(ResultCheck.MALFORMED, "not a compact JWS") from exc
    return VerifiedCompact(kid=str(header["kid"]), algorithm=algorithm, payload=signed.payload)


def _header(token: str) -> dict[str, Any]:
    parts = token.split(".") if isinstance(token, str) else []
    if len(parts) != 3:
        raise ResultInvalid(ResultCheck.MALFORMED, "not a compact JWS")
    try:
        header = json.loads(b64u_decode(parts[0]))
    except (ValueError, UnicodeDecodeError):
        raise ResultInvalid(ResultCheck.MALFORMED, "unreadable header") from None
    if not isinstance(header, dict):
        raise ResultInvalid(ResultCheck.MALFORMED, "header is not a JSON object")
    return header


def _published_key(jwks: Mapping[str, Any], kid: Any) -> Mapping[str, Any]:
    keys = jwks.get("keys") if isinstance(jwks, Mapping) else None
    found = [key for key in keys or () if isinstance(key, Mapping) and key.get("kid") == kid]
    if not isinstance(kid, str) or len(found) != 1:
        raise ResultInvalid(ResultCheck.UNKNOWN_KEY, "no published key with this kid")
    return found[0]


_KEY_TYPES: Final = {
    ResultAlgorithm.ES256: ("EC", "P-256"),
    ResultAlgorithm.ED25519: ("OKP", "Ed25519"),
}


def _import_for(algorithm: ResultAlgorithm, jwk: Mapping[str, Any]) -> ECKey | OKPKey:
    if (
        (jwk.get("kty"), jwk.get("crv")) != _KEY_TYPES[algorithm]
        or jwk.get("alg", algorithm.value) != algorithm.value
        or jwk.get("use", "sig") != "sig"
    ):
        raise ResultInvalid(ResultCheck.KEY_MISMATCH, "published key is not for this algorithm")
    public = {name: value for name, value in jwk.items() if name != "d"}
    try:
        return (ECKey if algorithm is ResultAlgorithm.ES256 else OKPKey).import_key(public)
    except (JoseError, ValueError, TypeError):
        raise ResultInvalid(ResultCheck.KEY_MISMATCH, "unreadable published key") from None


def _claims(payload: bytes) -> dict[str, Any]:
    try:
        claims = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise ResultInvalid(ResultCheck.CLAIMS, "payload is not JSON") from None
    if not isinstance(claims, dict) or any(name not in claims for name in _REQUIRED_CLAIMS):
        raise ResultInvalid(ResultCheck.CLAIMS, "missing result claims")
    if (
        claims["jti"] != claims["operationId"]
        or type(claims["iat"]) is not int
        or claims["state"] not in {state.value for state in OperationState}
    ):
        raise ResultInvalid(ResultCheck.CLAIMS, "inconsistent result claims")
    return claims


__all__ = [
    "RESULT_TYPE",
    "ResultAlgorithm",
    "ResultCheck",
    "ResultInvalid",
    "ResultKind",
    "ResultSigner",
    "ResultSigningKey",
    "SigningKeyState",
    "VerifiedCompact",
    "VerifiedResult",
    "claims_for",
    "data_hash",
    "generate_signing_key",
    "load_signing_key",
    "private_key_pem",
    "public_jwk",
    "verify_compact",
    "verify_result",
]
