"""Database tables (SQLAlchemy Core). Times are integer milliseconds since the epoch (UTC).

Rows are mapped to domain values in the service modules; nothing here knows about HTTP.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

applications = Table(
    "applications",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("config", Text, nullable=False),  # AppConfig.to_stored()
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(32), primary_key=True),  # public part of the token
    Column("application_id", String(64), ForeignKey("applications.id"), nullable=False),
    Column("secret_hash", LargeBinary(32), nullable=False),  # SHA-256 of the secret part
    Column("label", String(200), nullable=False, default=""),
    Column("created_at", BigInteger, nullable=False),
    Column("revoked_at", BigInteger, nullable=True),
)

users = Table(
    "users",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("application_id", String(64), ForeignKey("applications.id"), nullable=False),
    Column("external_ref", String(200), nullable=True),
    Column("created_at", BigInteger, nullable=False),
    UniqueConstraint("application_id", "external_ref", name="uq_users_app_external_ref"),
)

registrations = Table(
    "registrations",
    metadata,
    Column("id", String(36), primary_key=True),  # the device id
    Column("application_id", String(64), ForeignKey("applications.id"), nullable=False),
    Column("user_id", String(36), ForeignKey("users.id"), nullable=False),
    Column("state", String(16), nullable=False),
    Column("lock_reason", String(32), nullable=True),
    Column("failures", Integer, nullable=False, default=0),
    Column("sw_public_key", LargeBinary, nullable=False),
    Column("sw_key_id", LargeBinary(32), nullable=False),
    Column("hw_public_key", LargeBinary, nullable=True),
    Column("hw_algorithm", String(16), nullable=True),
    Column("activation_hw_status", String(32), nullable=False),
    Column("pin_key", LargeBinary, nullable=True),  # wrapped: server/pinkeys.py
    Column("platform", String(16), nullable=False),
    Column("os_version", String(32), nullable=False),
    Column("model", String(100), nullable=True),
    Column("generation", Integer, nullable=False, default=1),
    Column("created_at", BigInteger, nullable=False),
    Column("activated_at", BigInteger, nullable=False),
    Column("last_authenticated_at", BigInteger, nullable=True),
    Column("updated_at", BigInteger, nullable=False),
    # key attestation (docs/protocol.md §6.5): hwKeyAttestation as decided at activation, the
    # security level it vouched for, and an App Attest key's assertion counter (§4.6)
    Column("hw_attestation", String(64), nullable=True),
    Column("hw_security_level", String(32), nullable=True),
    Column("hw_counter", BigInteger, nullable=True),
    Index("ix_registrations_user", "application_id", "user_id"),
)

superseded_keys = Table(
    "superseded_keys",
    metadata,
    Column("registration_id", String(36), ForeignKey("registrations.id"), primary_key=True),
    Column("key_id", LargeBinary(32), primary_key=True),
    Column("public_key", LargeBinary, nullable=False),
    Column("superseded_at", BigInteger, nullable=False),
    sqlite_with_rowid=False,  # the primary key is the table: one B-tree per insert
)

operations = Table(
    "operations",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("application_id", String(64), ForeignKey("applications.id"), nullable=False),
    Column("type", String(16), nullable=False),
    Column("initiator", String(8), nullable=False),
    Column("state", String(16), nullable=False),
    Column("user_id", String(36), nullable=True),
    Column("device_id", String(36), nullable=True),
    Column("challenge", LargeBinary(32), nullable=True),
    Column("challenge_expires_at", BigInteger, nullable=True),
    # when the current challenge was issued: a key superseded after it was current (§4.5)
    Column("challenge_issued_at", BigInteger, nullable=True),
    Column("expires_at", BigInteger, nullable=False),
    Column("pre_context", Text, nullable=True),
    # server.secrets (POST_CONTEXT): released once, then erased; erased on expiry too
    Column("wrapped_post_context", LargeBinary, nullable=True),
    Column("required_auth_method", String(16), nullable=True),
    Column("config", Text, nullable=False),  # AppConfig snapshot at start
    Column("result", Text, nullable=True),  # JSON: authMethod, authLevel, failureCode, risk
    Column("created_at", BigInteger, nullable=False),
    Column("completed_at", BigInteger, nullable=True),
    # the signed result (docs/signed-results.md): made by the statement that ends the
    # operation, or on the first read of one that expired; never replaced once set
    Column("result_jws", Text, nullable=True),
    # server.secrets (TPM_CREDENTIAL): the activation's credential secret, AK and EK, kept
    # from start to finish (docs/protocol.md §6.5.3); erased when the finish consumes it
    Column("wrapped_tpm_credential", LargeBinary, nullable=True),
    Index("ix_operations_device_state", "device_id", "state"),
    # pending operations the relying party started, by expiry: maintenance ends them as
    # EXPIRED with an operation.expired event (device-initiated ones never enter it)
    Index(
        "ix_operations_backend_expiry",
        "expires_at",
        sqlite_where=text("state = 'PENDING' AND initiator = 'BACKEND'"),
        postgresql_where=text("state = 'PENDING' AND initiator = 'BACKEND'"),
    ),
)

activation_secrets = Table(
    "activation_secrets",
    metadata,
    # what a pending (re)activation can be started with, until its start deletes the row
    # (docs/protocol.md §3.2.5); an authentication has none, so it writes nothing here
    Column("operation_id", String(36), ForeignKey("operations.id"), primary_key=True),
    Column("application_id", String(64), nullable=False),
    # server.secrets keyed hashes: a copy of the database alone tests no guess
    Column("token_hash", LargeBinary(32), nullable=False),  # the activation link's secret
    Column("hint", String(16), nullable=True),  # names the typed code; NULL once burnt
    Column("code_hash", LargeBinary(32), nullable=True),  # the typed code; NULL once burnt
    Column("attempts_left", Integer, nullable=False),  # typed attempts before the burn
    Column("expires_at", BigInteger, nullable=False),  # the operation's expiry
    Index("ix_activation_secrets_token", "application_id", "token_hash", unique=True),
    Index(
        "ix_activation_secrets_hint",
        "application_id",
        "hint",
        unique=True,
        sqlite_where=text("hint IS NOT NULL"),
        postgresql_where=text("hint IS NOT NULL"),
    ),
    Index("ix_activation_secrets_expires_at", "expires_at"),
)

events = Table(
    "events",
    metadata,
    # order of commit within one database; the polling cursor (on SQLite the rowid itself)
    Column(
        "seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("id", String(36), nullable=False),  # the event id receivers deduplicate on
    Column("type", String(48), nullable=False),  # server.events.EventType
    Column("application_id", String(64), nullable=True),
    Column("subject", String(64), nullable=True),  # what it is about: device, user, key
    Column("operation_id", String(36), nullable=True),
    Column("actor", String(16), nullable=False),  # DEVICE, RELYING_PARTY, OPERATOR, SYSTEM
    Column("outcome", String(16), nullable=False),  # SUCCESS, FAILURE, REJECTED
    Column("code", String(48), nullable=True),
    Column("payload", Text, nullable=True),  # JSON
    Column("created_at", BigInteger, nullable=False),
    Column("delivery", String(16), nullable=True),  # NULL: the audit trail only
    # the outbox's work list: events an endpoint subscribed to, not yet fanned out
    Index(
        "ix_events_delivery_pending",
        "seq",
        sqlite_where=text("delivery = 'PENDING'"),
        postgresql_where=text("delivery = 'PENDING'"),
    ),
    # the audit chain (docs/audit.md): the entry's position in the chain, the previous
    # entry's chain_hash, and SHA-256 over it and this entry's immutable columns; NULL until
    # the entry is sealed into the chain (at once on SQLite, just after commit on PostgreSQL)
    Column("chain_seq", BigInteger, nullable=True),
    Column("chain_prev", LargeBinary(32), nullable=True),
    Column("chain_hash", LargeBinary(32), nullable=True),
    # the entries waiting to be sealed (none for long): what the sealer reads
    Index(
        "ix_events_unsealed",
        "seq",
        sqlite_where=text("chain_hash IS NULL"),
        postgresql_where=text("chain_hash IS NULL"),
    ),
)

audit_head = Table(
    "audit_head",
    metadata,
    # one row: the newest sealed entry's position and hash; its row lock (PostgreSQL) lets
    # one sealer at a time extend the chain
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("chain_seq", BigInteger, nullable=False),
    Column("chain_hash", LargeBinary(32), nullable=False),
)

audit_checkpoints = Table(
    "audit_checkpoints",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("kind", String(16), nullable=False),  # PERIODIC, PRUNE (server.events.chain)
    Column("chain_seq", BigInteger, nullable=False),  # the entry it signs (as in the JWS)
    Column("chain_hash", LargeBinary(32), nullable=False),  # that entry's hash (as in the JWS)
    Column("jws", Text, nullable=False),  # compact JWS by a result-signing key
    Column("created_at", BigInteger, nullable=False),
    Index("ix_audit_checkpoints_chain_seq", "chain_seq"),
)

result_keys = Table(
    "result_keys",
    metadata,
    Column("kid", String(64), primary_key=True),  # RFC 7638 thumbprint of the public key
    Column("algorithm", String(16), nullable=False),  # events.results.ResultAlgorithm
    Column("public_jwk", Text, nullable=False),  # JSON, as published in the JWKS
    # PKCS#8 wrapped under the master key (server.secrets); NULL once the key is retired
    Column("wrapped_private_key", LargeBinary, nullable=True),
    Column("state", String(16), nullable=False),  # ACTIVE, RETIRED
    Column("created_at", BigInteger, nullable=False),
    Column("retired_at", BigInteger, nullable=True),
    Column("expires_at", BigInteger, nullable=True),  # end of publication; NULL: for good
)

noise = Table(
    "noise",
    metadata,
    # anonymous refusals counted per window and cause instead of one row each
    Column("window_start", BigInteger, nullable=False),
    Column("cause", String(96), nullable=False),
    Column("total", BigInteger, nullable=False),
    PrimaryKeyConstraint("window_start", "cause"),
)

settings = Table(
    "settings",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

e2e_keys = Table(
    "e2e_keys",
    metadata,
    Column("key_id", String(64), primary_key=True),  # channel.new_key_id(): random, global
    Column("application_id", String(64), ForeignKey("applications.id"), nullable=False),
    Column("suite", String(48), nullable=False),  # channel.ChannelSuite
    Column("public_key", LargeBinary, nullable=False),
    # channel.wrap_private_key under the master key; NULL once the key is retired
    Column("wrapped_private_key", LargeBinary, nullable=True),
    Column("state", String(16), nullable=False),  # INACTIVE, ACTIVE, RETIRED
    Column("created_at", BigInteger, nullable=False),
    Column("activated_at", BigInteger, nullable=True),
    Column("retired_at", BigInteger, nullable=True),
    Index("ix_e2e_keys_application", "application_id", "state"),
)

seen_requests = Table(
    "seen_requests",
    metadata,
    Column("request_id", LargeBinary(16), nullable=False),  # secure-channel request id
    Column("expires_at", BigInteger, nullable=False),  # ms; forgotten after this
    # a replay has the same timestamp, so the same expiry: refused by this key all the same,
    # and the purge deletes a range of it (migration 0004: no second B-tree to write)
    PrimaryKeyConstraint("expires_at", "request_id"),
    sqlite_with_rowid=False,  # the primary key is the table: one B-tree per insert
)


# -- the outbox: webhook endpoints, their secrets and subscriptions, deliveries, attempts --

webhook_endpoints = Table(
    "webhook_endpoints",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("application_id", String(64), ForeignKey("applications.id"), nullable=False),
    Column("url", Text, nullable=False),
    Column("description", String(200), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("disabled_at", BigInteger, nullable=True),
    Column("disabled_reason", String(16), nullable=True),  # GONE, RELYING_PARTY, OPERATOR
    # the circuit breaker (docs/webhooks.md §3.2)
    Column("breaker_failures", Integer, nullable=False),
    Column("breaker_open_until", BigInteger, nullable=True),
    Index("ix_webhook_endpoints_application", "application_id"),
)

webhook_secrets = Table(
    "webhook_secrets",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("endpoint_id", String(36), ForeignKey("webhook_endpoints.id"), nullable=False),
    Column("scheme", String(8), nullable=False),  # v1 (whsec_), v1a (whsk_)
    Column("wrapped_secret", LargeBinary, nullable=False),  # server.secrets WEBHOOK_SECRET
    Column("public_key", String(64), nullable=True),  # whpk_: v1a only, published
    Column("created_at", BigInteger, nullable=False),
    Column("revoked_at", BigInteger, nullable=True),
    Index("ix_webhook_secrets_endpoint", "endpoint_id"),
)

webhook_subscriptions = Table(
    "webhook_subscriptions",
    metadata,
    # keyed for the events INSERT's one lookup: does any endpoint of this application want
    # this type (repositories/events.py)
    Column("application_id", String(64), nullable=False),
    Column("event_type", String(48), nullable=False),
    Column("endpoint_id", String(36), ForeignKey("webhook_endpoints.id"), nullable=False),
    PrimaryKeyConstraint("application_id", "event_type", "endpoint_id"),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("endpoint_id", String(36), ForeignKey("webhook_endpoints.id"), nullable=False),
    Column("event_seq", BigInteger, nullable=False),
    Column("event_id", String(36), nullable=False),
    Column("subject", String(64), nullable=False),  # order is kept per (endpoint, subject)
    Column("state", String(16), nullable=False),  # pending, delivered, gave_up, gone
    Column("attempts", Integer, nullable=False),
    Column("first_attempt_at", BigInteger, nullable=True),
    Column("next_attempt_at", BigInteger, nullable=False),
    Column("leased_until", BigInteger, nullable=True),  # claimed by a sender until then
    Column("last_attempt_at", BigInteger, nullable=True),
    Column("last_status", Integer, nullable=True),
    Column("last_error", String(32), nullable=True),
    Column("last_detail", String(200), nullable=True),
    Column("created_at", BigInteger, nullable=False),
    UniqueConstraint("endpoint_id", "event_seq", name="uq_webhook_deliveries_endpoint_event"),
    Index(
        "ix_webhook_deliveries_pending",
        "endpoint_id",
        "event_seq",
        sqlite_where=text("state = 'pending'"),
        postgresql_where=text("state = 'pending'"),
    ),
)

webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    # the delivery log: one row per attempt made
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("delivery_id", BigInteger, nullable=False),
    Column("endpoint_id", String(36), nullable=False),
    Column("event_id", String(36), nullable=False),
    Column("attempted_at", BigInteger, nullable=False),
    Column("status", Integer, nullable=True),
    Column("error", String(32), nullable=True),
    Column("detail", String(200), nullable=False),
    Column("duration_ms", Integer, nullable=False),
    Index("ix_webhook_attempts_endpoint", "endpoint_id", "id"),
)

# -- device notifications ------------------------------------------------------------------

push_providers = Table(
    "push_providers",
    metadata,
    Column("application_id", String(64), ForeignKey("applications.id"), nullable=False),
    Column("kind", String(16), nullable=False),  # notify.ProviderKind
    Column("settings", Text, nullable=False),  # JSON, nothing secret
    Column("wrapped_credentials", LargeBinary, nullable=False),  # PUSH_CREDENTIALS
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    PrimaryKeyConstraint("application_id", "kind"),
)

push_tokens = Table(
    "push_tokens",
    metadata,
    Column("device_id", String(36), ForeignKey("registrations.id"), primary_key=True),
    Column("provider", String(16), nullable=False),
    Column("token", Text, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)

push_notifications = Table(
    "push_notifications",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("application_id", String(64), nullable=False),
    Column("device_id", String(36), nullable=False),
    Column("operation_id", String(36), nullable=False),
    Column("state", String(16), nullable=False),  # pending, delivered, dropped, failed, expired
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),  # the operation's: a later wake-up is moot
    Column("leased_until", BigInteger, nullable=True),
    Column("last_detail", String(200), nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Index(
        "ix_push_notifications_pending",
        "next_attempt_at",
        sqlite_where=text("state = 'pending'"),
        postgresql_where=text("state = 'pending'"),
    ),
)
