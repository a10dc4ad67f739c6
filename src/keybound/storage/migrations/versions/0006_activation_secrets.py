"""activation secrets: a link token and a typed code bound to a hint, keyed hashes (issue 14)

- ``activation_secrets``: one row per (re)activation not yet started -- the keyed hash of the
  activation link's token, the typed code's hint, its keyed hash and its attempt budget
  (docs/protocol.md §3.2.5). A start deletes the row.
- ``operations.code_hash`` and its index go: codes were stored as unsalted SHA-256 over the
  application id and the code, so a copy of the database gave every pending code back, and
  any code could be guessed without limit.

Pending codes issued before this revision cannot be converted: the user holds only the code,
which now needs a hint, and the stored hash is no keyed hash. They are invalidated: every
(re)activation that is pending, unexpired and not yet started becomes FAILED with
``failureCode: activation_code_invalid`` (the relying party issues a new code; the
changelog says so). Downgrading does the same to activations issued after it (their keyed
hashes mean nothing to the older code).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 15:00:00
"""

from __future__ import annotations

import json
import time

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_INVALIDATED = json.dumps({"failureCode": "activation_code_invalid"})


def _now_ms() -> int:
    return int(time.time() * 1000)


def _fail_pending(unstarted: sa.ColumnElement[bool]) -> None:
    """(Re)activations that are pending, unexpired and not started, as the relying party
    will read them: FAILED, with the code that says a new one is needed."""
    now = _now_ms()
    ops = sa.table(
        "operations",
        sa.column("id"),
        sa.column("type"),
        sa.column("state"),
        sa.column("challenge"),
        sa.column("expires_at"),
        sa.column("completed_at"),
        sa.column("result"),
        sa.column("code_hash"),
    )
    op.get_bind().execute(
        sa.update(ops)
        .where(
            ops.c.type.in_(("ACTIVATION", "REACTIVATION")),
            ops.c.state == "PENDING",
            ops.c.challenge.is_(None),
            ops.c.expires_at > now,
            unstarted,
        )
        .values(state="FAILED", completed_at=now, result=_INVALIDATED)
    )


def upgrade() -> None:
    op.create_table(
        "activation_secrets",
        sa.Column("operation_id", sa.String(length=36), nullable=False),
        sa.Column("application_id", sa.String(length=64), nullable=False),
        sa.Column("token_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("hint", sa.String(length=16), nullable=True),
        sa.Column("code_hash", sa.LargeBinary(length=32), nullable=True),
        sa.Column("attempts_left", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["operation_id"],
            ["operations.id"],
            name=op.f("fk_activation_secrets_operation_id_operations"),
        ),
        sa.PrimaryKeyConstraint("operation_id", name=op.f("pk_activation_secrets")),
    )
    op.create_index(
        "ix_activation_secrets_token",
        "activation_secrets",
        ["application_id", "token_hash"],
        unique=True,
    )
    op.create_index(
        "ix_activation_secrets_hint",
        "activation_secrets",
        ["application_id", "hint"],
        unique=True,
        sqlite_where=sa.text("hint IS NOT NULL"),
        postgresql_where=sa.text("hint IS NOT NULL"),
    )
    op.create_index("ix_activation_secrets_expires_at", "activation_secrets", ["expires_at"])
    _fail_pending(sa.column("code_hash").is_not(None))
    op.drop_index("ix_operations_code", table_name="operations")
    _drop_column("operations", "code_hash")


def downgrade() -> None:
    op.add_column("operations", sa.Column("code_hash", sa.LargeBinary(length=32), nullable=True))
    op.create_index(
        "ix_operations_code",
        "operations",
        ["application_id", "code_hash"],
        unique=True,
        sqlite_where=sa.text("code_hash IS NOT NULL"),
        postgresql_where=sa.text("code_hash IS NOT NULL"),
    )
    secrets = sa.table("activation_secrets", sa.column("operation_id"))
    _fail_pending(sa.column("id").in_(sa.select(secrets.c.operation_id)))
    op.drop_table("activation_secrets")


def _drop_column(table: str, column: str) -> None:
    if op.get_bind().dialect.name == "sqlite":  # native since SQLite 3.35; keeps the indexes
        op.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    else:
        op.drop_column(table, column)
