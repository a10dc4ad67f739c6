"""Result-signing keys and signed results (docs/signed-results.md).

The server signs each operation's result when the operation ends (:meth:`ResultKeys.sign`,
called by the service that ends it, in its unit of work) with the newest ACTIVE key, and
publishes every key whose publication has not ended as a JWKS. Keys are created with
``keybound signing-key create`` (the first one at the first start, :meth:`ResultKeys.ensure`),
retired for good with ``keybound signing-key retire``; a retired key's private half is
erased and its public half stays published (for ever, or until the end the operator gives),
so results it signed keep verifying after a rotation. The same keys sign the audit trail's
checkpoints (server.services.audit).

The hot path uses an in-process snapshot of the keys and the issuer, reloaded when older than
``ttl`` seconds; this process's own changes invalidate it at once, another process's take
effect within ``ttl``. Nothing here returns, prints or logs a private key.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from keybound.channel.errors import KeyStorageError
from keybound.channel.framing import lp
from keybound.errors import ConfigurationInvalid, InvalidState, NotFound
from keybound.protocol import (
    AuthLevel,
    AuthMethod,
    HwKeyServerResult,
    Initiator,
    OperationState,
    OperationType,
)
from keybound.server.clock import Clock, now_ms
from keybound.server.core.appconfig import AppConfig
from keybound.server.core.ceremony import load_context
from keybound.server.core.risk import ATTESTATION_ATTRIBUTES
from keybound.server.events.model import Actor, EventType
from keybound.server.events.noise import NoiseCounter
from keybound.server.events.results import (
    RESULT_TYPE,
    ResultAlgorithm,
    ResultSigner,
    SigningKeyState,
    claims_for,
    generate_signing_key,
    load_signing_key,
    private_key_pem,
    public_jwk,
)
from keybound.server.records import OperationRecord, ResultKeyRecord
from keybound.server.repositories import resultkeys as keys
from keybound.server.secrets import Purpose, SecretBox
from keybound.server.unit import Unit, perform
from keybound.storage.db import Database

log = logging.getLogger("keybound.server.results")

#: ``iss`` until the operator sets the server's URL (``keybound signing-key issuer URL``):
#: where ``keybound serve`` listens by default
DEFAULT_ISSUER: Final = "http://127.0.0.1:8000"
SNAPSHOT_TTL_SECONDS: Final = 5.0
MAX_ISSUER_LENGTH: Final = 255


@dataclass(frozen=True, kw_only=True)
class ResultKeyInfo:
    """What may be shown about a result-signing key: everything but the private key. Times
    in ms."""

    kid: str
    algorithm: ResultAlgorithm
    state: SigningKeyState
    created_at: int
    retired_at: int | None
    expires_at: int | None
    public_jwk: Mapping[str, Any]


def _info(row: ResultKeyRecord) -> ResultKeyInfo:
    return ResultKeyInfo(
        kid=row.kid,
        algorithm=ResultAlgorithm(row.algorithm),
        state=SigningKeyState(row.state),
        created_at=row.created_at,
        retired_at=row.retired_at,
        expires_at=row.expires_at,
        public_jwk=json.loads(row.public_jwk),
    )


def wrap_binding(kid: str, algorithm: ResultAlgorithm) -> bytes:
    """What a wrapped result-signing key is bound to (server.secrets)."""
    return lp(kid.encode(), algorithm.value.encode())


def check_issuer(value: str) -> str:
    """An ``iss``: a URL or URN of up to 255 printable characters, no whitespace."""
    if (
        not value
        or len(value) > MAX_ISSUER_LENGTH
        or not value.isprintable()
        or any(c.isspace() for c in value)
        or ":" not in value
    ):
        raise ConfigurationInvalid(
            "the issuer must be the server's URL (e.g. https://kb.example), at most 255 characters"
        )
    return value


@dataclass(frozen=True, kw_only=True)
class _Snapshot:
    signer: ResultSigner | None  # None: no ACTIVE key
    jwks: dict[str, Any]
    issuer: str
    loaded_at: float  # monotonic


class ResultKeys:
    """The keys, the issuer and the JWKS; signs results and checkpoints (module docstring)."""

    def __init__(
        self,
        db: Database,
        box: SecretBox,
        clock: Clock,
        *,
        ttl: float = SNAPSHOT_TTL_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = db
        self._box = box
        self._clock = clock
        self._ttl = ttl
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._snapshot: _Snapshot | None = None
        self._unwrapped: dict[str, ResultSigner] = {}

    # -- the hot path ---------------------------------------------------------------------

    def sign(self, claims: Mapping[str, Any], *, typ: str = RESULT_TYPE) -> str:
        """A compact JWS by the newest ACTIVE key."""
        signer = self._current().signer
        if signer is None:
            raise ConfigurationInvalid("no ACTIVE result-signing key: keybound signing-key create")
        return signer.sign(claims, typ=typ)

    def issuer(self) -> str:
        return self._current().issuer

    def jwks(self) -> dict[str, Any]:
        """Every published key, newest first (what ``/.well-known/jwks.json`` serves)."""
        return self._current().jwks

    def invalidate(self) -> None:
        with self._lock:
            self._snapshot = None

    def operation_result(
        self,
        op: OperationRecord,
        *,
        state: OperationState,
        result: Mapping[str, Any] | None,
        completed_at: int | None,
        now: int,
        user_id: str | None = None,
    ) -> str:
        """The signed result of ``op`` ending in ``state`` at ``completed_at`` with its
        stored ``result`` (authMethod, authLevel, failureCode, risk)."""
        return self.sign(
            operation_claims(
                op,
                issuer=self.issuer(),
                now=now,
                state=state,
                result=result,
                completed_at=completed_at,
                user_id=user_id,
            )
        )

    def _current(self) -> _Snapshot:
        snapshot = self._snapshot
        if snapshot is None or self._monotonic() - snapshot.loaded_at > self._ttl:
            snapshot = self._reload(snapshot)
        return snapshot

    def _reload(self, seen: _Snapshot | None) -> _Snapshot:
        with self._lock:
            if self._snapshot is not seen and self._snapshot is not None:
                return self._snapshot  # another thread reloaded meanwhile
            loaded_at = self._monotonic()
            with self._db.read() as conn:
                rows = keys.all_keys(conn)
                issuer = keys.issuer(conn) or DEFAULT_ISSUER
            now = now_ms(self._clock)
            published = [row for row in rows if row.expires_at is None or now < row.expires_at]
            active = [
                row
                for row in rows
                if row.state == SigningKeyState.ACTIVE.value and row.wrapped_private_key is not None
            ]
            newest = max(active, key=lambda row: (row.created_at, row.kid), default=None)
            signer = None if newest is None else self._signer(newest)
            self._snapshot = _Snapshot(
                signer=signer,
                jwks={
                    "keys": [
                        json.loads(row.public_jwk)
                        for row in sorted(
                            published, key=lambda row: (row.created_at, row.kid), reverse=True
                        )
                    ]
                },
                issuer=issuer,
                loaded_at=loaded_at,
            )
            return self._snapshot

    def _signer(self, row: ResultKeyRecord) -> ResultSigner | None:
        signer = self._unwrapped.get(row.kid)
        if signer is not None:
            return signer
        algorithm = ResultAlgorithm(row.algorithm)
        try:
            pem = self._box.unwrap(
                Purpose.RESULT_SIGNING_KEY,
                row.wrapped_private_key or b"",
                binding=wrap_binding(row.kid, algorithm),
            )
            key = load_signing_key(
                pem,
                kid=row.kid,
                algorithm=algorithm,
                state=SigningKeyState.ACTIVE,
                created_at=row.created_at // 1000,
            )
        except (KeyStorageError, ConfigurationInvalid) as exc:
            log.error(
                "result-signing key %s is unusable (%s)",
                row.kid,
                getattr(exc, "detail", type(exc).__name__),
            )
            return None
        signer = self._unwrapped[row.kid] = ResultSigner([key], clock=self._clock)
        return signer

    # -- management (each in the operator's unit of work) ---------------------------------

    def create(
        self, unit: Unit, *, algorithm: ResultAlgorithm = ResultAlgorithm.ES256
    ) -> ResultKeyInfo:
        """A new ACTIVE key; being the newest, it signs from now on."""
        key = generate_signing_key(algorithm=algorithm, clock=self._clock)
        conn = unit.write()
        # strictly newer than every key so far, even within one millisecond: the newest
        # signs, and which one that is must never be left to the order of two kids
        created = max([unit.now, *(row.created_at + 1 for row in keys.all_keys(conn))])
        record = ResultKeyRecord(
            kid=key.kid,
            algorithm=algorithm.value,
            public_jwk=json.dumps(public_jwk(key), sort_keys=True),
            wrapped_private_key=self._box.wrap(
                Purpose.RESULT_SIGNING_KEY,
                private_key_pem(key),
                binding=wrap_binding(key.kid, algorithm),
            ),
            state=SigningKeyState.ACTIVE.value,
            created_at=created,
            retired_at=None,
            expires_at=None,
        )
        keys.insert_key(conn, record)
        unit.emit(
            EventType.SIGNING_KEY_CREATE,
            subject=key.kid,
            payload={"kid": key.kid, "algorithm": algorithm.value},
        )
        unit.after_commit(self.invalidate)
        return _info(record)

    def list(self, unit: Unit) -> list[ResultKeyInfo]:
        with unit.read() as conn:
            return [_info(row) for row in keys.all_keys(conn)]

    def retire(self, unit: Unit, kid: str, *, publish_days: int | None = None) -> ResultKeyInfo:
        """ACTIVE -> RETIRED: it signs nothing more, its private key is erased, and it stays
        in the JWKS for ``publish_days`` (None: for good). Never the last ACTIVE key."""
        if publish_days is not None and publish_days < 0:
            raise ConfigurationInvalid("publish days must be 0 or more")
        conn = unit.write()
        row = keys.get(conn, kid)
        if row is None:
            raise NotFound(f"no result-signing key {kid!r}")
        if row.state != SigningKeyState.ACTIVE.value:
            raise InvalidState(f"result-signing key {kid} is {row.state}")
        if keys.count_active(conn) < 2:
            raise InvalidState(
                "the last ACTIVE result-signing key cannot be retired: create "
                "its successor first (keybound signing-key create)"
            )
        expires = None if publish_days is None else unit.now + publish_days * 86_400_000
        if not keys.retire(conn, kid, now=unit.now, expires_at=expires):
            raise InvalidState(f"result-signing key {kid} is not ACTIVE")
        unit.emit(
            EventType.SIGNING_KEY_RETIRE, subject=kid, payload={"kid": kid, "expiresAt": expires}
        )
        unit.after_commit(self.invalidate)
        retired = keys.get(conn, kid)
        assert retired is not None
        return _info(retired)

    def set_issuer(self, unit: Unit, issuer: str) -> str:
        """The ``iss`` of results and checkpoints signed from now on (the server's URL)."""
        keys.set_issuer(unit.write(), check_issuer(issuer))
        unit.emit(EventType.SIGNING_KEY_ISSUER, payload={"issuer": issuer})
        unit.after_commit(self.invalidate)
        return issuer

    def ensure(self, noise: NoiseCounter) -> None:
        """Create the first ACTIVE key if there is none (at start: results are signed from
        the first operation on, by a key that exists before any request needs it)."""
        with self._db.read() as conn:
            if keys.any_active(conn):
                return
        unit = Unit(
            self._db,
            self._clock,
            actor=Actor.SYSTEM,
            action=EventType.SIGNING_KEY_CREATE,
            identified=True,
        )
        perform(unit, lambda u: self._create_if_none(u), noise=noise, cause="signing-key")

    def _create_if_none(self, unit: Unit) -> None:
        if not keys.any_active(unit.write()):  # in the write transaction: one of racing
            self.create(unit)  # starts creates it (on SQLite)


# --------------------------------------------------------------------------- claims


def operation_claims(
    op: OperationRecord,
    *,
    issuer: str,
    now: int,
    state: OperationState,
    result: Mapping[str, Any] | None,
    completed_at: int | None,
    user_id: str | None = None,
) -> dict[str, Any]:
    """The claims of ``op``'s result (events.results.claims_for) from its stored record: the
    risk attributes its configuration snapshot lets through, the hardware-key result
    whatever that says, and for a signature operation the data the user approved."""
    stored = result or {}
    risk = stored.get("risk") or {}
    enabled = {attribute.value for attribute in AppConfig.from_stored(op.config).enabled_risk_data}
    shown = load_context(op.pre_context)
    signature = op.type == OperationType.SIGNATURE.value
    method, level, hw = (
        stored.get("authMethod"),
        stored.get("authLevel"),
        risk.get("hwKeyServerResult"),
    )
    attestation = {name: value for name, value in risk.items() if name in ATTESTATION_ATTRIBUTES}
    return claims_for(
        issuer=issuer,
        issued_at=now // 1000,
        application_id=op.application_id,
        operation_id=op.id,
        kind=OperationType(op.type),
        initiator=Initiator(op.initiator),
        state=state,
        created_at_ms=op.created_at,
        completed_at_ms=completed_at,
        user_id=op.user_id or user_id,
        device_id=op.device_id,
        auth_method=AuthMethod(method) if method else None,
        auth_level=AuthLevel(level) if level else None,
        failure_code=stored.get("failureCode"),
        pre_operation_context=None if signature else shown,
        signed_data=shown if signature else None,
        risk_data={name: value for name, value in risk.items() if name in enabled},
        hw_key_server_result=HwKeyServerResult(hw) if hw else None,
        attestation=attestation or None,
    )


__all__ = [
    "DEFAULT_ISSUER",
    "ResultKeyInfo",
    "ResultKeys",
    "check_issuer",
    "operation_claims",
    "wrap_binding",
]
