"""E2E key management (server/e2ekeys.py, docs/channel.md §7, §9): lifecycle and audit, the
CLI, private keys never shown, the master key file, the keyring cache across processes, and the
SQL replay guard."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from keybound.channel import ChannelPin, ChannelSuite
from keybound.errors import ErrorCode, KeyboundError
from keybound.protocol import b64u_encode
from keybound.server.events.model import Actor, EventType
from keybound.server.secrets import MasterKey, Purpose
from keybound.server.services import Keybound, default_master_key_path
from keybound.server.services.e2ekeys import E2EKeyState, Keyring, wrap_binding
from keybound.server.unit import Replayed, ReplayMark, Unit
from keybound.storage import tables as t


def raw_private_key(kb: Keybound, key_id: str) -> bytes:
    """The test, as the storage owner, unwraps a key to look for it where it must not be."""
    with kb.db.read() as conn:
        row = conn.execute(select(t.e2e_keys).where(t.e2e_keys.c.key_id == key_id)).one()
    return kb.box.unwrap(
        Purpose.E2E_PRIVATE_KEY,
        row.wrapped_private_key,
        binding=wrap_binding(key_id, ChannelSuite(row.suite), row.public_key),
    )


def forms(secret: bytes) -> list[str]:
    return [secret.hex(), b64u_encode(secret), repr(secret)[2:-1]]


def dump(kb: Keybound) -> str:
    with kb.db.read() as conn:
        return repr([list(conn.execute(select(table))) for table in t.metadata.tables.values()])


# --------------------------------------------------------------------------- lifecycle


def test_lifecycle_states_and_audit(kb: Keybound) -> None:
    kb.admin.create_application("bank")
    active = kb.admin.create_e2e_key("bank")
    assert active.state is E2EKeyState.ACTIVE and active.activated_at is not None
    assert active.suite is ChannelSuite.X25519_SHA256_AES128GCM
    inactive = kb.admin.create_e2e_key(
        "bank", suite=ChannelSuite.MLKEM768X25519_SHA256_AES128GCM, active=False
    )
    assert inactive.state is E2EKeyState.INACTIVE and inactive.activated_at is None
    assert kb.e2e_keys.keyring.lookup(inactive.key_id) is None
    assert {k.key_id: k.state for k in kb.admin.e2e_keys("bank")} == {
        active.key_id: E2EKeyState.ACTIVE,
        inactive.key_id: E2EKeyState.INACTIVE,
    }
    assert kb.admin.activate_e2e_key(inactive.key_id).state is E2EKeyState.ACTIVE
    found = kb.e2e_keys.keyring.lookup(inactive.key_id)
    assert found is not None and found[0] == "bank"  # found at once: own change invalidates
    with pytest.raises(KeyboundError) as info:
        kb.admin.activate_e2e_key(active.key_id)  # already active
    assert info.value.code is ErrorCode.INVALID_STATE
    retired = kb.admin.retire_e2e_key(inactive.key_id)
    assert retired.state is E2EKeyState.RETIRED and retired.retired_at is not None
    assert kb.e2e_keys.keyring.lookup(inactive.key_id) is None
    with kb.db.read() as conn:  # the private key is erased on retirement
        assert (
            conn.execute(
                select(t.e2e_keys.c.wrapped_private_key).where(
                    t.e2e_keys.c.key_id == inactive.key_id
                )
            ).scalar_one()
            is None
        )
    for action, code in [
        (lambda: kb.admin.activate_e2e_key(inactive.key_id), "invalid_state"),
        (lambda: kb.admin.retire_e2e_key(inactive.key_id), "invalid_state"),
        (
            lambda: kb.admin.e2e_pin(inactive.key_id, server_url="https://x.example"),
            "invalid_state",
        ),
        (lambda: kb.admin.retire_e2e_key("nope"), "not_found"),
        (lambda: kb.admin.create_e2e_key("no-such-app"), "not_found"),
        (
            lambda: kb.admin.e2e_pin(active.key_id, server_url="http://x.example"),
            "configuration_invalid",
        ),
    ]:
        with pytest.raises(KeyboundError) as info:
            action()
        assert info.value.code.value == code
    pin = kb.admin.e2e_pin(active.key_id, server_url="https://auth.example.com")
    assert ChannelPin.from_string(pin.to_string()) == pin
    assert pin.public_key == active.public_key and pin.application_id == "bank"
    with kb.db.read() as conn:
        events = [
            (r.type, json.loads(r.payload)["keyId"])
            for r in conn.execute(
                select(t.events)
                .where(t.events.c.type.like("e2e_key.%"), t.events.c.outcome == "SUCCESS")
                .order_by(t.events.c.seq)
            )
        ]
    assert events == [
        ("e2e_key.create", active.key_id),
        ("e2e_key.create", inactive.key_id),
        ("e2e_key.activate", inactive.key_id),
        ("e2e_key.retire", inactive.key_id),
        ("e2e_key.export_pin", active.key_id),
    ]


def test_key_ids_are_random_and_unique(kb: Keybound) -> None:
    kb.admin.create_application("a")
    kb.admin.create_application("b")
    ids = {kb.admin.create_e2e_key(app).key_id for app in ("a", "b") for _ in range(10)}
    assert len(ids) == 20 and all(len(i) == 16 for i in ids)


def test_private_keys_never_in_the_database_logs_or_api(kb: Keybound, caplog: Any) -> None:
    caplog.set_level("DEBUG")
    kb.admin.create_application("bank")
    key = kb.admin.create_e2e_key("bank")
    private = raw_private_key(kb, key.key_id)
    kb.e2e_keys.keyring.lookup(key.key_id)
    text = (
        dump(kb)
        + repr(kb.admin.e2e_keys("bank"))
        + repr(kb.admin.e2e_key(key.key_id))
        + kb.admin.e2e_pin(key.key_id, server_url="https://a.example").to_string()
        + caplog.text
    )
    master = kb.master_key.get()
    for secret in (private, master):
        for form in forms(secret):
            assert form not in text
    assert "private" not in repr(kb.admin.e2e_key(key.key_id)).lower()
    assert repr(kb.master_key).startswith("MasterKey(path=")


# --------------------------------------------------------------------------- master key


def test_master_key_file_location_and_mode(tmp_path: Path, kb: Keybound) -> None:
    where = default_master_key_path
    assert where("sqlite:////srv/kb/keybound.db", {}) == Path("/srv/kb/master.key")
    assert where("postgresql://db/kb", {}) == Path.home() / ".keybound" / "master.key"
    env = {"KEYBOUND_MASTER_KEY_FILE": str(tmp_path / "elsewhere.key")}
    assert where("sqlite:////srv/kb/keybound.db", env) == tmp_path / "elsewhere.key"
    kb.admin.create_application("bank")
    kb.admin.create_e2e_key("bank")
    path = kb.master_key.path
    assert path == tmp_path / "master.key"  # beside the test database
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_wrong_master_key_makes_keys_unusable_without_leaking(
    tmp_path: Path, kb: Keybound, caplog: Any
) -> None:
    kb.admin.create_application("bank")
    key = kb.admin.create_e2e_key("bank")
    other = Keybound(kb.db, kb.clock, master_key=MasterKey(tmp_path / "other" / "master.key"))
    with caplog.at_level("ERROR"):
        assert other.e2e_keys.keyring.lookup(key.key_id) is None
        other.e2e_keys.keyring.invalidate()
        assert other.e2e_keys.keyring.lookup(key.key_id) is None
    errors = [r for r in caplog.records if key.key_id in r.getMessage()]
    assert len(errors) == 1  # said once, naming only the key id


# --------------------------------------------------------------------------- hot path


def test_keyring_cache_sees_other_processes_changes_within_the_ttl(kb: Keybound) -> None:
    """``mine`` is this server process's keyring; ``kb`` acts as another process (the CLI)."""
    now = [0.0]
    mine = Keyring(kb.db, kb.box, ttl=5, miss_reload=1, monotonic=lambda: now[0])
    kb.admin.create_application("bank")
    key = kb.admin.create_e2e_key("bank", active=False)
    assert mine.lookup(key.key_id) is None
    kb.admin.activate_e2e_key(key.key_id)
    now[0] += 0.5
    assert mine.lookup(key.key_id) is None  # a miss reloads at most once a second
    now[0] += 1
    found = mine.lookup(key.key_id)
    assert found is not None and found[1].public_key == key.public_key
    kb.admin.retire_e2e_key(key.key_id)
    now[0] += 4
    assert mine.lookup(key.key_id) is found  # cached: another process's retirement ...
    now[0] += 2
    assert mine.lookup(key.key_id) is None  # ... takes effect within the TTL


def test_replay_marks_are_atomic_across_processes_and_forgotten_once_expired(
    kb: Keybound, clock: Any
) -> None:
    """A request id is stored once by whichever unit commits it first, whatever process it is
    in (docs/channel.md §6); expired ids are purged by the server's maintenance."""

    def unit(service: Keybound, request_id: bytes) -> Unit:
        mark = ReplayMark(request_id=request_id, expires_at=(int(clock()) + 300) * 1000)
        return Unit(
            service.db, clock, actor=Actor.DEVICE, action=EventType.AUTHENTICATION_START, mark=mark
        )

    unit(kb, b"\x01" * 16).commit()
    with pytest.raises(Replayed):
        unit(kb, b"\x01" * 16).commit()
    other = Keybound(kb.db, clock, master_key=kb.master_key)  # another process, one database
    with pytest.raises(Replayed):
        unit(other, b"\x01" * 16).commit()
    clock.advance(3600)
    unit(kb, b"\x02" * 16).commit()
    kb.maintenance.poke()
    assert kb.maintenance.running is not None
    kb.maintenance.running.join(timeout=30)
    with kb.db.read() as conn:
        remaining = list(conn.execute(select(t.seen_requests.c.request_id)).scalars())
    assert remaining == [b"\x02" * 16]


# --------------------------------------------------------------------------- CLI


def cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "keybound.cli",
            "--database-url",
            f"sqlite:///{tmp_path / 'cli.db'}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={k: v for k, v in os.environ.items() if k != "KEYBOUND_MASTER_KEY_FILE"},
    )


def test_cli_e2e_key_lifecycle_never_shows_a_private_key(tmp_path: Path) -> None:
    assert cli(tmp_path, "app", "create", "bank").returncode == 0
    created = cli(tmp_path, "e2e-key", "create", "bank", "--server-url", "https://auth.example.com")
    assert created.returncode == 0, created.stderr
    pin = ChannelPin.from_string(created.stdout.strip())
    assert pin.server_url == "https://auth.example.com" and pin.application_id == "bank"
    assert f"key id: {pin.key_id}" in created.stderr
    second = cli(
        tmp_path,
        "e2e-key",
        "create",
        "bank",
        "--inactive",
        "--suite",
        "X25519_SHA256_CHACHA20POLY1305",
    )
    assert second.returncode == 0, second.stderr
    second_pin = ChannelPin.from_string(second.stdout.strip())
    assert second_pin.server_url == "http://127.0.0.1:8000"
    assert second_pin.suite is ChannelSuite.X25519_SHA256_CHACHA20POLY1305
    listed = cli(tmp_path, "e2e-key", "list", "bank").stdout
    assert f"{pin.key_id}  ACTIVE" in listed and f"{second_pin.key_id}  INACTIVE" in listed
    again = cli(
        tmp_path, "e2e-key", "pin", second_pin.key_id, "--server-url", "https://auth.example.com"
    )
    assert again.returncode == 0, again.stderr
    assert ChannelPin.from_string(again.stdout.strip()).public_key == second_pin.public_key
    assert "ACTIVE" in cli(tmp_path, "e2e-key", "activate", second_pin.key_id).stdout
    assert "RETIRED" in cli(tmp_path, "e2e-key", "retire", pin.key_id).stdout
    assert cli(tmp_path, "e2e-key", "retire", pin.key_id).returncode == 2
    bad = cli(tmp_path, "e2e-key", "create", "bank", "--server-url", "http://example.com")
    assert bad.returncode == 2 and "configuration_invalid" in bad.stderr
    master = tmp_path / "master.key"
    assert stat.S_IMODE(os.stat(master).st_mode) == 0o600
    kb = Keybound.open(f"sqlite:///{tmp_path / 'cli.db'}", master_key_file=master)
    try:
        listed = cli(tmp_path, "e2e-key", "list", "bank").stdout
        assert f"{pin.key_id}  RETIRED" in listed and f"{second_pin.key_id}  ACTIVE" in listed
        assert len(kb.admin.e2e_keys("bank")) == 2  # `bad` created nothing
        private = raw_private_key(kb, second_pin.key_id)
        shown = listed + created.stdout + created.stderr + second.stdout + second.stderr
        for form in forms(private) + forms(kb.master_key.get()):
            assert form not in shown
            assert form not in dump(kb)
    finally:
        kb.close()


def test_cli_help_describes_e2e_keys() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "keybound.cli", "e2e-key", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for action in ("create", "list", "activate", "retire", "pin"):
        assert action in out
    create = subprocess.run(
        [sys.executable, "-m", "keybound.cli", "e2e-key", "create", "-h"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "--inactive" in create and "MLKEM768X25519_SHA256_AES128GCM" in create
    serve = subprocess.run(
        [sys.executable, "-m", "keybound.cli", "serve", "-h"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "--allow-plaintext" in serve and "DEVELOPMENT ONLY" in serve
