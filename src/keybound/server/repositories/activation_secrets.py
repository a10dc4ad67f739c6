"""Activation secrets: the keyed hashes a pending (re)activation can be started with -- the
link's token, and the typed code with its hint and attempt budget (docs/protocol.md
§3.1.1, §3.2.5). One row per activation the relying party issued, deleted by the start that
uses it, or once expired (services.retention); nothing a caller without a valid secret
sends adds a row.

Every change that decides an outcome is one conditional statement: an attempt is counted
before it is compared (so concurrent guesses cannot compare more than the budget), and a
start consumes the row by deleting it (so two starts cannot both win)."""

from __future__ import annotations

from typing import Any, Final

from sqlalchemy import Connection, bindparam, delete, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from keybound.server.records import CodeAttempt
from keybound.storage import tables as t
from keybound.storage.prepared import Prepared

S = t.activation_secrets

#: the two statements every guess runs (storage.prepared: a flood of guesses should cost the
#: server as little as the refusal itself)
_TAKE_BY_TOKEN: Final = Prepared(
    delete(S)
    .where(
        S.c.application_id == bindparam("app"),
        S.c.token_hash == bindparam("token_hash"),
        S.c.expires_at > bindparam("now"),
    )
    .returning(S.c.operation_id)
)
_COUNT_ATTEMPT: Final = Prepared(
    update(S)
    .where(
        S.c.application_id == bindparam("app"),
        S.c.hint == bindparam("hint_"),
        S.c.attempts_left > 0,
        S.c.expires_at > bindparam("now"),
    )
    .values(attempts_left=S.c.attempts_left - 1)
    .returning(S.c.operation_id, S.c.code_hash, S.c.attempts_left),
    row=CodeAttempt,
)


def insert_unless_hint_taken(
    conn: Connection,
    *,
    operation_id: str,
    application_id: str,
    token_hash: bytes,
    hint: str,
    code_hash: bytes,
    attempts: int,
    expires_at: int,
    now: int,
) -> bool:
    """False (nothing inserted) when the hint names another pending activation of the
    application; an expired one gives its hint back first."""
    conn.execute(
        delete(S).where(
            S.c.application_id == application_id, S.c.hint == hint, S.c.expires_at <= now
        )
    )
    insert_: Any = sqlite_insert if conn.dialect.name == "sqlite" else pg_insert
    inserted = conn.execute(
        insert_(S)
        .values(
            operation_id=operation_id,
            application_id=application_id,
            token_hash=token_hash,
            hint=hint,
            code_hash=code_hash,
            attempts_left=attempts,
            expires_at=expires_at,
        )
        .on_conflict_do_nothing()
        .returning(S.c.operation_id)
    ).first()
    return inserted is not None


def take_by_token(conn: Connection, application_id: str, token_hash: bytes, now: int) -> str | None:
    """§3.1.1: the activation the token belongs to, consumed (its row deleted) by this one
    statement; None if unknown, expired or taken already."""
    operation_id = _TAKE_BY_TOKEN.scalar(
        conn, {"app": application_id, "token_hash": token_hash, "now": now}
    )
    return None if operation_id is None else str(operation_id)


def count_attempt(conn: Connection, application_id: str, hint: str, now: int) -> CodeAttempt | None:
    """§3.1.1: spend one attempt of the typed code the hint names, before the attempt is
    compared; None if no live typed code has that hint (unknown, burnt, used, expired)."""
    return _COUNT_ATTEMPT.first(conn, {"app": application_id, "hint_": hint, "now": now})


def take_by_code(conn: Connection, operation_id: str, code_hash: bytes) -> str | None:
    """§3.1.1: a matching typed code consumes its activation (the row, token included)."""
    row = conn.execute(
        delete(S)
        .where(S.c.operation_id == operation_id, S.c.code_hash == code_hash)
        .returning(S.c.operation_id)
    ).first()
    return None if row is None else str(row.operation_id)


def burn_code(conn: Connection, operation_id: str) -> None:
    """The typed code's budget is spent: hint and code go, the token stays (§3.2.5)."""
    conn.execute(
        update(S)
        .where(S.c.operation_id == operation_id)
        .values(hint=None, code_hash=None, attempts_left=0)
    )
