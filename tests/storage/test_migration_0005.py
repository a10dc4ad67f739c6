"""Revision 0005 (issue 13): the audit trail becomes ``events``, and every secret at rest is
re-wrapped into the one format of server/secrets.py -- E2E private keys and PIN keys from
their two old formats, post-operation contexts from plaintext -- and back on downgrade, with
nothing lost; a wrong master key stops it with a clear error. On SQLite and PostgreSQL.

The old formats are written here from their description (the code that wrote them is gone)."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import text

from keybound.channel import ChannelSuite, generate_e2e_key
from keybound.server.secrets import MasterKey, Purpose, SecretBox
from keybound.server.services.e2ekeys import wrap_binding
from keybound.storage.db import Database
from keybound.storage.migrations import alembic_config, upgrade
from tests.storage.migrating import BACKENDS, database_at

MASTER = bytes(range(32))


def lp(*fields: bytes) -> bytes:
    return b"".join(len(f).to_bytes(4, "big") + f for f in fields)


def old_e2e_wrap(key_id: str, suite: str, public: bytes, private: bytes) -> bytes:
    """docs/channel.md §9 before 0005: 0x01 || nonce || AES-256-GCM under the master key."""
    nonce = secrets.token_bytes(12)
    aad = lp(b"keybound/channel/v1/e2e-key-wrap", key_id.encode(), suite.encode(), public)
    return b"\x01" + nonce + AESGCM(MASTER).encrypt(nonce, private, aad)


def old_pin_wrap(device_id: str, pin_key: bytes) -> bytes:
    """PIN keys before 0005: nonce || AES-256-GCM under HKDF(master, 'keybound pin-key
    wrapping v1'), the registration id as associated data."""
    key = HKDF(hashes.SHA256(), 32, None, b"keybound pin-key wrapping v1").derive(MASTER)
    nonce = secrets.token_bytes(12)
    return nonce + AESGCM(key).encrypt(nonce, pin_key, device_id.encode())


@pytest.fixture(params=BACKENDS)
def db_at_0004(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    db = database_at(request, tmp_path, "0004")
    yield db
    db.dispose()


def seed(db: Database) -> dict[str, Any]:
    key = generate_e2e_key(ChannelSuite.X25519_SHA256_AES128GCM, now=0)
    pin_key, context = secrets.token_bytes(32), '{"content":"receipt 4711","mimeType":"text/plain"}'
    with db.engine.begin() as conn:
        conn.execute(text("INSERT INTO applications VALUES ('app', '{}', 0, 0)"))
        conn.execute(
            text("INSERT INTO users (id, application_id, created_at) VALUES ('u', 'app', 0)")
        )
        conn.execute(
            text(
                "INSERT INTO registrations (id, application_id, user_id, state, failures, "
                "sw_public_key, sw_key_id, activation_hw_status, platform, os_version, pin_key, "
                "generation, created_at, activated_at, updated_at) VALUES ('dev-1', 'app', 'u', "
                "'ACTIVE', 0, :one, :one, 'OK', 'LINUX', '6', :pin, 1, 0, 0, 0)"
            ),
            {"one": b"\x01", "pin": old_pin_wrap("dev-1", pin_key)},
        )
        conn.execute(
            text(
                "INSERT INTO e2e_keys (key_id, application_id, suite, public_key, "
                "wrapped_private_key, state, created_at) "
                "VALUES (:k, 'app', :s, :p, :w, 'ACTIVE', 0)"
            ),
            {
                "k": key.key_id,
                "s": key.suite.value,
                "p": key.public_key,
                "w": old_e2e_wrap(key.key_id, key.suite.value, key.public_key, key.private_key),
            },
        )
        conn.execute(
            text(
                "INSERT INTO operations (id, application_id, type, initiator, state, device_id, "
                "expires_at, post_context, config, created_at) VALUES ('op-1', 'app', "
                "'AUTHENTICATION', 'BACKEND', 'PENDING', 'dev-1', 10, :c, '{}', 0)"
            ),
            {"c": context},
        )
        conn.execute(
            text(
                "INSERT INTO audit_events (at, application_id, device_id, operation_id, actor, "
                "event, outcome, code, details) VALUES (5, 'app', 'dev-1', 'op-1', 'DEVICE', "
                "'authentication.finish', 'FAILURE', 'pin_invalid', '{\"a\": 1}'), "
                "(6, 'app', NULL, NULL, 'OPERATOR', 'application.update', 'SUCCESS', NULL, NULL)"
            )
        )
    return {"key": key, "pin_key": pin_key, "context": context}


def test_0005_rewraps_every_secret_keeps_every_event_and_goes_back(db_at_0004: Database) -> None:
    db = db_at_0004
    seeded = seed(db)
    key = seeded["key"]
    upgrade(db.engine, "0005", master_key=MASTER)
    box = SecretBox(MasterKey.of(MASTER))
    with db.engine.connect() as conn:
        wrapped_key = conn.execute(text("SELECT wrapped_private_key FROM e2e_keys")).scalar_one()
        pin = conn.execute(text("SELECT pin_key FROM registrations")).scalar_one()
        context = conn.execute(text("SELECT wrapped_post_context FROM operations")).scalar_one()
        events = [
            tuple(r)
            for r in conn.execute(
                text(
                    "SELECT seq, type, application_id, subject, operation_id, actor, outcome, "
                    "code, payload, created_at, delivery FROM events ORDER BY seq"
                )
            )
        ]
        ids = [r[0] for r in conn.execute(text("SELECT id FROM events"))]
        fingerprint = conn.execute(
            text("SELECT value FROM settings WHERE name = 'master_key_fingerprint'")
        ).scalar_one()
    assert (
        box.unwrap(
            Purpose.E2E_PRIVATE_KEY,
            wrapped_key,
            binding=wrap_binding(key.key_id, key.suite, key.public_key),
        )
        == key.private_key
    )
    assert box.unwrap(Purpose.PIN_KEY, pin, binding=b"dev-1") == seeded["pin_key"]
    assert box.unwrap(Purpose.POST_CONTEXT, context, binding=b"op-1").decode() == seeded["context"]
    assert events == [
        (
            1,
            "authentication.finish",
            "app",
            "dev-1",
            "op-1",
            "DEVICE",
            "FAILURE",
            "pin_invalid",
            '{"a": 1}',
            5,
            None,
        ),
        (2, "application.update", "app", None, None, "OPERATOR", "SUCCESS", None, None, 6, None),
    ]
    assert len(set(ids)) == 2  # every event has an id of its own
    assert fingerprint == MasterKey.of(MASTER).fingerprint
    with db.engine.begin() as conn:  # the sequence continues after the copied rows
        conn.execute(
            text(
                "INSERT INTO events (id, type, actor, outcome, created_at) "
                "VALUES ('new', 'db.prune', 'OPERATOR', 'SUCCESS', 7)"
            )
        )
        assert conn.execute(text("SELECT seq FROM events WHERE id = 'new'")).scalar_one() == 3

    command.downgrade(alembic_config(db.engine, master_key=MASTER), "0004")
    with db.engine.connect() as conn:
        old_key = conn.execute(text("SELECT wrapped_private_key FROM e2e_keys")).scalar_one()
        old_pin = conn.execute(text("SELECT pin_key FROM registrations")).scalar_one()
        old_context = conn.execute(text("SELECT post_context FROM operations")).scalar_one()
        audit = [
            tuple(r)
            for r in conn.execute(
                text("SELECT id, event, device_id, details FROM audit_events ORDER BY id")
            )
        ]
    aad = lp(
        b"keybound/channel/v1/e2e-key-wrap",
        key.key_id.encode(),
        key.suite.value.encode(),
        key.public_key,
    )
    assert AESGCM(MASTER).decrypt(old_key[1:13], old_key[13:], aad) == key.private_key
    pin_wrap = HKDF(hashes.SHA256(), 32, None, b"keybound pin-key wrapping v1").derive(MASTER)
    assert AESGCM(pin_wrap).decrypt(old_pin[:12], old_pin[12:], b"dev-1") == seeded["pin_key"]
    assert json.loads(old_context) == json.loads(seeded["context"])
    assert audit == [
        (1, "authentication.finish", "dev-1", '{"a": 1}'),
        (2, "application.update", None, None),
        (3, "db.prune", None, None),
    ]


def test_0005_refuses_a_wrong_master_key_and_changes_nothing(db_at_0004: Database) -> None:
    seed(db_at_0004)
    with pytest.raises(RuntimeError, match="KEYBOUND_MASTER_KEY_FILE"):
        upgrade(db_at_0004.engine, "0005", master_key=bytes(32))
    with pytest.raises(RuntimeError, match="needs the master key"):
        upgrade(db_at_0004.engine, "0005")
    with db_at_0004.engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0004"
    upgrade(db_at_0004.engine, "0005", master_key=MASTER)  # the right key still works
