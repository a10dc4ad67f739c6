"""secure channel: E2E keys and seen request ids (issue 3)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 18:13:27.026442
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "e2e_keys",
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("application_id", sa.String(length=64), nullable=False),
        sa.Column("suite", sa.String(length=48), nullable=False),
        sa.Column("public_key", sa.LargeBinary(), nullable=False),
        sa.Column("wrapped_private_key", sa.LargeBinary(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("activated_at", sa.BigInteger(), nullable=True),
        sa.Column("retired_at", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["application_id"],
            ["applications.id"],
            name=op.f("fk_e2e_keys_application_id_applications"),
        ),
        sa.PrimaryKeyConstraint("key_id", name=op.f("pk_e2e_keys")),
    )
    with op.batch_alter_table("e2e_keys", schema=None) as batch_op:
        batch_op.create_index("ix_e2e_keys_application", ["application_id", "state"], unique=False)

    op.create_table(
        "seen_requests",
        sa.Column("request_id", sa.LargeBinary(length=16), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("request_id", name=op.f("pk_seen_requests")),
    )
    with op.batch_alter_table("seen_requests", schema=None) as batch_op:
        batch_op.create_index("ix_seen_requests_expires_at", ["expires_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("seen_requests", schema=None) as batch_op:
        batch_op.drop_index("ix_seen_requests_expires_at")
    op.drop_table("seen_requests")

    with op.batch_alter_table("e2e_keys", schema=None) as batch_op:
        batch_op.drop_index("ix_e2e_keys_application")
    op.drop_table("e2e_keys")
