"""``keybound webhook`` and ``keybound push`` as an operator runs them, and the sender inside a
real ``keybound serve`` process that is killed with SIGKILL in the middle of delivering."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from keybound.server.core.ceremony import new_id
from keybound.server.records import UserRecord
from keybound.server.repositories import registrations as regs
from keybound.server.repositories import users
from keybound.server.services import Keybound
from keybound.server.web.runner import free_port
from keybound.storage import tables as t
from tests.server.events.receiver import Receiver, Reply
from tests.server.services.outbox_driver import LOOPBACK

LOOPBACK_ENV = {
    "KEYBOUND_WEBHOOK_ALLOW_HTTP": "1",
    "KEYBOUND_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8,::1/128",
}


def run(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
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
        env={**os.environ, **(env or {})},
    )


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver().start()
    try:
        yield running
    finally:
        running.stop()


def test_webhook_commands(tmp_path: Path, receiver: Receiver) -> None:
    assert run(tmp_path, "app", "create", "bank").returncode == 0
    refused = run(tmp_path, "webhook", "create", "bank", receiver.url())
    assert refused.returncode == 2 and "endpoint_url_invalid" in refused.stderr
    loopback = run(tmp_path, "webhook", "create", "bank", receiver.url().replace("http:", "https:"))
    assert loopback.returncode == 2 and "endpoint_address_refused" in loopback.stderr
    created = run(
        tmp_path,
        "webhook",
        "create",
        "bank",
        receiver.url(),
        "--event-type",
        "device.locked",
        env=LOOPBACK_ENV,
    )
    assert created.returncode == 0, created.stderr
    shown = json.loads(created.stdout)
    secret = shown["secret"]["secret"]
    assert secret.startswith("whsec_") and "not shown again" in created.stderr
    endpoint_id = shown["endpoint"]["endpointId"]
    listed = run(tmp_path, "webhook", "list", "bank")
    assert endpoint_id in listed.stdout and secret not in listed.stdout
    added = json.loads(
        run(tmp_path, "webhook", "secret-add", "bank", endpoint_id, "--scheme", "v1a").stdout
    )
    assert added["publicKey"].startswith("whpk_") and "secret" not in added
    revoked = run(
        tmp_path, "webhook", "secret-revoke", "bank", endpoint_id, shown["secret"]["secretId"]
    )
    assert revoked.returncode == 0 and secret not in revoked.stdout
    disabled = json.loads(
        run(tmp_path, "webhook", "update", "bank", endpoint_id, "--disable").stdout
    )
    assert disabled["enabled"] is False and disabled["disabledReason"] == "OPERATOR"
    deliveries = json.loads(run(tmp_path, "webhook", "deliveries", "bank", endpoint_id).stdout)
    assert deliveries == {"deliveries": [], "nextCursor": 0}
    no_range = run(tmp_path, "webhook", "redeliver", "bank", endpoint_id)
    assert no_range.returncode == 2 and "malformed_request" in no_range.stderr
    assert run(tmp_path, "webhook", "delete", "bank", endpoint_id).returncode == 0
    push = run(
        tmp_path, "push", "set", "bank", "webhook", f"url={receiver.url('/push')}", env=LOOPBACK_ENV
    )
    assert push.returncode == 0, push.stderr
    assert push.stdout.strip().startswith("whsec_")  # printed once, for the push service
    assert "whsec_" not in run(tmp_path, "push", "list", "bank").stdout


def _devices(kb: Keybound, app: str, count: int) -> list[str]:
    """Registrations written straight into the database: the subjects of the events below
    (what makes them -- activation -- is tested elsewhere)."""
    ids = []
    with kb.db.write() as conn:
        for _ in range(count):
            user, device = new_id(), new_id()
            users.insert_user(
                conn, UserRecord(id=user, application_id=app, external_ref=None, created_at=0)
            )
            regs.insert_registration(
                conn,
                id=device,
                application_id=app,
                user_id=user,
                state="ACTIVE",
                lock_reason=None,
                failures=0,
                sw_public_key=b"k",
                sw_key_id=os.urandom(32),
                hw_public_key=None,
                hw_algorithm=None,
                activation_hw_status="NOT_SUPPORTED",
                pin_key=None,
                platform="LINUX",
                os_version="6",
                model=None,
                generation=1,
                created_at=0,
                activated_at=0,
                last_authenticated_at=None,
                updated_at=0,
            )
            ids.append(device)
    return ids


def _serve(database: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, **LOOPBACK_ENV, "KEYBOUND_WEBHOOK_TIMEOUT": "2"}
    with log.open("ab") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "keybound.cli",
                "--database-url",
                f"sqlite:///{database}",
                "serve",
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _wait(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.mark.server
def test_kill_9_during_delivery_loses_no_event(tmp_path: Path, receiver: Receiver) -> None:
    database = tmp_path / "kb.db"
    kb = Keybound.open(f"sqlite:///{database}", endpoint_policy=LOOPBACK)
    try:
        kb.admin.create_application("bank")
        from tests.server.services.outbox_driver import subscribe

        subscribe(kb, "bank", receiver)
        devices = _devices(kb, "bank", 4)
        for _ in range(8):
            for device in devices:
                kb.admin.lock_device("bank", device)
                kb.admin.unlock_device("bank", device)
        with kb.db.read() as conn:
            expected = conn.execute(
                select(t.events.c.id, t.events.c.subject)
                .where(t.events.c.type.in_(["device.locked", "device.unlocked"]))
                .order_by(t.events.c.seq)
            ).all()
    finally:
        kb.close()
    assert len(expected) == 64
    receiver.default = Reply(hang=0.05)  # a slow receiver: the kill lands mid-stream
    port = free_port()
    server = _serve(database, port, tmp_path / "serve.log")
    try:
        _wait(lambda: len(receiver.received) >= 16, 60, "the first deliveries")
        server.send_signal(signal.SIGKILL)
        assert server.wait(10) == -signal.SIGKILL
        at_kill = len(receiver.received)
        assert at_kill < len(expected)  # it was killed in the middle of delivering
        server = _serve(database, port, tmp_path / "serve.log")
        wanted = {event_id for event_id, _subject in expected}
        _wait(lambda: wanted <= set(receiver.ids()), 90, "every event after the restart")
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(20)
    ids = receiver.ids()
    print(f"kill -9 after {at_kill} requests; {len(ids)} in all for {len(wanted)} events")
    assert set(ids) == wanted  # nothing lost ...
    assert len(ids) - len(wanted) <= 32  # ... at most what was in hand at the kill re-sent
    for device in devices:
        mine = [event_id for event_id, subject in expected if subject == device]
        assert list(dict.fromkeys(i for i in ids if i in mine)) == mine  # in order
    assert all(r.verified for r in receiver.received)
