"""keybound.server.web.durable: group commit. A response is sent only after the WAL fsync that
covers its commits; nothing is acknowledged before it is on disk."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text

from keybound.server.secrets import MasterKey
from keybound.server.services import Keybound
from keybound.server.web.app import create_app
from keybound.storage import tables as t
from keybound.storage.db import Database
from tests.helpers import RelyingParty


def users(kb: Keybound) -> int:
    with kb.db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(t.users)).scalar_one())


def test_a_response_waits_for_the_fsync_that_covers_its_commit(
    kb: Keybound, http: TestClient, rp: RelyingParty, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert kb.db.sync_deferred  # the server's connections commit without syncing
    gate = threading.Event()
    synced_through: list[int] = []
    real_sync = kb.db.sync

    def slow_sync(*, wait: bool = True) -> bool:
        gate.wait(30)
        real_sync()
        synced_through.append(kb.db.synced)
        return True

    monkeypatch.setattr(kb.db, "sync", slow_sync)
    before = users(kb)
    answers: list[Any] = []
    caller = threading.Thread(target=lambda: answers.append(rp.new_user()))
    caller.start()
    deadline = time.monotonic() + 30
    while users(kb) == before and time.monotonic() < deadline:
        time.sleep(0.01)
    # committed, but not acknowledged: the caller is still waiting for the fsync
    assert users(kb) == before + 1
    caller.join(0.5)
    assert caller.is_alive() and answers == []
    gate.set()
    caller.join(30)
    assert len(answers) == 1
    assert synced_through and synced_through[-1] >= kb.db.committed


def test_one_fsync_covers_every_commit_made_before_it(
    kb: Keybound, http: TestClient, rp: RelyingParty, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real_sync = kb.db.sync

    def counting_sync(*, wait: bool = True) -> bool:
        calls.append(kb.db.committed)
        return real_sync(wait=wait)

    monkeypatch.setattr(kb.db, "sync", counting_sync)
    threads = [threading.Thread(target=rp.new_user) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert kb.db.synced >= kb.db.committed
    assert 1 <= len(calls) <= 20  # never more syncs than responses; usually far fewer


def test_responses_that_commit_nothing_do_not_wait(
    kb: Keybound, http: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    kb.db.sync()  # whatever setup committed is on disk
    monkeypatch.setattr(kb.db, "sync", lambda **_: pytest.fail("no commit, no fsync"))
    assert http.get("/healthz").status_code == 200


def test_only_the_server_defers_syncing(tmp_path: Any) -> None:
    db = Database(f"sqlite:///{tmp_path / 'kb.db'}")
    db.migrate()
    with db.read() as conn:
        assert conn.execute(text("PRAGMA synchronous")).scalar() == 2  # FULL: CLI, tools
    kb = Keybound(db, master_key=MasterKey(tmp_path / "master.key"))
    create_app(kb)
    with db.read() as conn:
        assert conn.execute(text("PRAGMA synchronous")).scalar() == 1  # NORMAL + group sync
    with db.write() as conn:
        conn.execute(text("CREATE TABLE probe (x INTEGER)"))
    assert db.synced < db.committed
    db.sync()
    assert db.synced == db.committed
    db.dispose()


def test_the_wal_is_checkpointed_in_the_background_not_by_a_commit(
    kb: Keybound, http: TestClient, rp: RelyingParty, monkeypatch: pytest.MonkeyPatch
) -> None:
    from keybound.server.web import durable

    with kb.db.read() as conn:  # no commit copies the WAL into the database by itself
        assert conn.execute(text("PRAGMA wal_autocheckpoint")).scalar() == 0
    done = threading.Event()
    real_checkpoint = kb.db.checkpoint

    def checkpoint() -> None:
        real_checkpoint()
        done.set()

    monkeypatch.setattr(kb.db, "checkpoint", checkpoint)
    monkeypatch.setattr(durable, "CHECKPOINT_COMMITS", 5)
    for _ in range(6):
        rp.new_user()
    assert done.wait(30)


def test_a_failed_fsync_acknowledges_nothing_until_a_restart(
    kb: Keybound, rp: RelyingParty, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a refused fsync the kernel may have dropped the pages it could not write; a
    later fsync that succeeds proves nothing about them, so nothing is acknowledged again."""
    real_sync = kb.db.sync

    def failing_sync(*, wait: bool = True) -> bool:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(kb.db, "sync", failing_sync)
    with TestClient(create_app(kb), raise_server_exceptions=False) as client:
        answer = client.post("/rp/v1/users", json={}, headers=rp.headers)
        assert answer.status_code == 500
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["code"] == "internal_error" and "userId" not in answer.text
        monkeypatch.setattr(kb.db, "sync", real_sync)  # the disk "works" again
        again = client.post("/rp/v1/users", json={}, headers=rp.headers)
        assert again.status_code == 500 and again.json()["code"] == "internal_error"


def test_commits_of_every_process_are_counted_and_synced(tmp_path: Any) -> None:
    """`keybound serve --workers N`: a worker that shows what another committed (a relying
    party polling an operation another worker finished) must first sync that commit too."""
    url = f"sqlite:///{tmp_path / 'kb.db'}"
    first, second = Database(url), Database(url)  # two processes on one file
    first.migrate()
    for db in (first, second):
        assert db.defer_sync()
    with second.write() as conn:
        conn.execute(text("CREATE TABLE probe (x INTEGER)"))
    assert first.committed == second.committed >= 1  # shared through <db>-lock
    assert first.synced < first.committed  # so first's next response waits for a sync
    first.sync()
    assert first.synced == second.committed
    first.dispose()
    second.dispose()


def test_an_fsync_by_another_process_covers_this_ones_commits(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two workers on one file: a worker whose commits another worker's fsync already
    covered does not sync the WAL again (the covered count is shared through <db>-lock)."""
    url = f"sqlite:///{tmp_path / 'kb.db'}"
    first, second = Database(url), Database(url)
    first.migrate()
    for db in (first, second):
        assert db.defer_sync()
    fsyncs: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (fsyncs.append(fd), real_fsync(fd))[1])
    with first.write() as conn:
        conn.execute(text("CREATE TABLE probe (x INTEGER)"))
    second.sync()  # the other worker's fsync starts after first's commit
    synced_by_second = len(fsyncs)
    assert synced_by_second >= 1
    assert first.synced < first.committed
    first.sync()
    assert len(fsyncs) == synced_by_second  # nothing left to sync
    assert first.synced == first.committed
    with first.write() as conn:  # a commit after that fsync is not covered by it
        conn.execute(text("INSERT INTO probe VALUES (1)"))
    first.sync()
    assert len(fsyncs) > synced_by_second and first.synced == first.committed
    first.dispose()
    second.dispose()


HOLD_SYNC_LOCK = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.lockf(fd, fcntl.LOCK_EX, 8, 8)
print("locked", flush=True)
sys.stdin.read()
"""


@contextlib.contextmanager
def holding_sync_turn(database: Path) -> Iterator[None]:
    """Another process holds the sync turn (as while its fsync runs) inside the block."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_SYNC_LOCK, f"{database}-lock"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        yield
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(30)
        assert holder.stdout is not None
        holder.stdout.close()


def unsynced_database(path: Path) -> Database:
    """A server-side database (deferred sync) with one commit not yet synced."""
    db = Database(f"sqlite:///{path}")
    db.migrate()
    assert db.defer_sync()
    with db.write() as conn:
        conn.execute(text("CREATE TABLE probe (x INTEGER)"))
    return db


def test_workers_take_turns_to_sync(tmp_path: Any) -> None:
    """While another process holds the sync turn (its fsync runs), a sync waits for it --
    and then finds whether that fsync covered its commits."""
    db = unsynced_database(tmp_path / "kb.db")
    with holding_sync_turn(tmp_path / "kb.db"):
        syncer = threading.Thread(target=db.sync)
        syncer.start()
        syncer.join(0.5)
        assert syncer.is_alive() and db.synced < db.committed
    syncer.join(30)
    assert not syncer.is_alive() and db.synced == db.committed
    db.dispose()


def test_a_response_waits_while_another_process_syncs_and_then_goes_out(
    kb: Keybound,
    http: TestClient,
    rp: RelyingParty,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The server's round finds another process syncing: it does not acknowledge the
    commit meanwhile, gives up the loop and looks again (RETRY_SECONDS later) instead of
    waiting for its turn, and answers once it has had it."""
    real_sync = kb.db.sync
    tries: list[bool] = []

    def watched_sync(*, wait: bool = True) -> bool:
        tries.append(real_sync(wait=wait))
        return tries[-1]

    monkeypatch.setattr(kb.db, "sync", watched_sync)
    before = users(kb)
    answers: list[Any] = []
    with holding_sync_turn(tmp_path / "keybound.db"):
        caller = threading.Thread(target=lambda: answers.append(rp.new_user()))
        caller.start()
        deadline = time.monotonic() + 30
        while tries.count(False) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert users(kb) == before + 1  # committed ...
        assert caller.is_alive() and answers == []  # ... but not acknowledged
        assert tries.count(False) >= 3 and True not in tries  # looked again, never waited
    caller.join(30)
    assert len(answers) == 1
    assert tries[-1] is True and kb.db.synced >= kb.db.committed


def test_the_event_loop_does_not_wait_for_another_processs_sync_turn(tmp_path: Any) -> None:
    """The server's rounds run on its event loop (``sync(wait=False)``): while another
    process holds the sync turn, a round gives up at once, changing nothing, and looks
    again later; once the turn is free it syncs."""
    db = unsynced_database(tmp_path / "kb.db")
    with holding_sync_turn(tmp_path / "kb.db"):
        started = time.monotonic()
        assert db.sync(wait=False) is False
        assert time.monotonic() - started < 5  # at once, not after the holder lets go
        assert db.synced < db.committed
    assert db.sync(wait=False) is True and db.synced == db.committed
    db.dispose()
