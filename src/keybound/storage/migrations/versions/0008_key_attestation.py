"""key attestation: what an activation's attestation decided, and the TPM credential state

- ``registrations.hw_attestation``: the registration's ``hwKeyAttestation`` (VERIFIED,
  NOT_PROVIDED, NOT_CHECKED, FAILED_<reason>; docs/protocol.md §6.5), read by every
  authentication for its risk data and the decision table (§6.1);
  ``registrations.hw_security_level``: where a verified attestation says the key lives;
  ``registrations.hw_counter``: an App Attest hardware key's assertion counter (§4.6),
  stored by one conditional UPDATE with the software-key rotation.
- ``operations.wrapped_tpm_credential``: the TPM credential activation's secret, AK public
  area and verified EK (or why the EK was refused), wrapped under the master key (purpose
  ``tpm-credential``, bound to the operation id), from activation start to finish.

Rows from before stay valid: NULL reads as "no attestation recorded" (NOT_PROVIDED). No
secret is re-wrapped, so this revision needs no master key.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-10 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_REGISTRATION_COLUMNS = ("hw_attestation", "hw_security_level", "hw_counter")


def upgrade() -> None:
    op.add_column("registrations", sa.Column("hw_attestation", sa.String(length=64), nullable=True))
    op.add_column(
        "registrations", sa.Column("hw_security_level", sa.String(length=32), nullable=True)
    )
    op.add_column("registrations", sa.Column("hw_counter", sa.BigInteger(), nullable=True))
    op.add_column(
        "operations", sa.Column("wrapped_tpm_credential", sa.LargeBinary(), nullable=True)
    )


def _drop_column(table: str, column: str) -> None:
    if op.get_bind().dialect.name == "sqlite":  # native since SQLite 3.35; keeps the indexes
        op.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    else:
        op.drop_column(table, column)


def downgrade() -> None:
    # a pending TPM credential is lost with its column: that activation has to start again
    _drop_column("operations", "wrapped_tpm_credential")
    for column in reversed(_REGISTRATION_COLUMNS):
        _drop_column("registrations", column)
