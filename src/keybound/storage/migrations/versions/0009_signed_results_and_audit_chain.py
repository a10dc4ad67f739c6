"""signed results and a tamper-evident audit trail (issue 16, items 1, 2 and 5)

- ``operations.result_jws``: the operation's signed result (docs/signed-results.md).
- ``result_keys``: the server's result-signing keys, private halves wrapped under the master
  key; they also sign the audit checkpoints.
- ``events.chain_prev`` / ``events.chain_hash``: the audit chain (docs/audit.md). Entries
  written before this revision keep NULL: they precede the chain, whose first entry links to
  the genesis value (32 zero bytes).
- ``audit_checkpoints``: signed checkpoints of the chain (periodic, and where retention
  pruned a prefix).

A signature operation (operations.type ``SIGNATURE``) needs no schema change: its data to
sign is kept where a pre-operation context is.

Revision ID: 0009
Revises: 0005
Create Date: 2026-12-03 15:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0005"
branch_labels = None
depends_on = None


def _id_type() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.add_column("operations", sa.Column("result_jws", sa.Text(), nullable=True))
    op.add_column("events", sa.Column("chain_prev", sa.LargeBinary(length=32), nullable=True))
    op.add_column("events", sa.Column("chain_hash", sa.LargeBinary(length=32), nullable=True))
    op.create_table(
        "audit_checkpoints",
        sa.Column("id", _id_type(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("chain_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("jws", sa.Text(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_checkpoints")),
    )
    op.create_index("ix_audit_checkpoints_seq", "audit_checkpoints", ["seq"], unique=False)
    op.create_table(
        "result_keys",
        sa.Column("kid", sa.String(length=64), nullable=False),
        sa.Column("algorithm", sa.String(length=16), nullable=False),
        sa.Column("public_jwk", sa.Text(), nullable=False),
        sa.Column("wrapped_private_key", sa.LargeBinary(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("retired_at", sa.BigInteger(), nullable=True),
        sa.Column("expires_at", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("kid", name=op.f("pk_result_keys")),
    )


def downgrade() -> None:
    op.drop_table("result_keys")
    op.drop_index("ix_audit_checkpoints_seq", table_name="audit_checkpoints")
    op.drop_table("audit_checkpoints")
    _drop_column("events", "chain_hash")
    _drop_column("events", "chain_prev")
    _drop_column("operations", "result_jws")


def _drop_column(table: str, column: str) -> None:
    if op.get_bind().dialect.name == "sqlite":  # native since SQLite 3.35; keeps the indexes
        op.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    else:
        op.drop_column(table, column)
