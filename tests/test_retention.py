"""Retention (`keybound db prune`): ended operations, superseded keys and replay records go
when their time is up; pending operations and live registrations never do."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from keybound.server.retention import Retention, prune
from keybound.server.service import Keybound
from keybound.storage import tables as t
from tests.helpers import RawDevice, RelyingParty
from tests.test_authentication import activated

DAY = 86_400


def count(kb: Keybound, table: Any) -> int:
    with kb.db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def test_prune_keeps_what_is_needed(rp: RelyingParty, kb: Keybound, clock: Any) -> None:
    device = activated(rp)
    for _ in range(3):
        assert device.authenticate().status_code == 200
    assert count(kb, t.superseded_keys) == 3
    ended_before = count(kb, t.operations)

    clock.advance(91 * DAY)
    pending = rp.start_operation(device.device_id)["operationId"]  # new, still pending
    pruned = prune(kb.db, clock, Retention(operations_days=90, superseded_keys_days=365))
    assert pruned.operations == ended_before  # activation + 3 authentications
    assert pruned.superseded_keys == 0
    assert rp.operation(pending)["state"] == "PENDING"

    # a copy of a key superseded within the retention period is still recognised
    copy_key = device.history[-1]
    clock.advance(300 * DAY)
    assert prune(kb.db, clock).superseded_keys == 3
    assert rp.call("GET", f"/rp/v1/operations/{pending}")["code"] == "not_found"
    # the device itself is untouched and keeps working
    assert device.authenticate().status_code == 200
    # a copy used after its retention ended is no longer recognised as a copy: it just fails
    stale = RawDevice(rp.http, rp.app_id, sw=copy_key, hw=None, device_id=device.device_id)
    response = stale.authenticate()
    assert response.json()["code"] == "authentication_failed"
    assert rp.device(device.device_id)["state"] == "ACTIVE"



def test_prune_keeps_replay_records_through_the_grace(kb: Keybound, clock: Any) -> None:
    from sqlalchemy import insert

    now_ms = int(clock() * 1000)
    with kb.db.write() as conn:
        conn.execute(insert(t.seen_requests), [
            {"request_id": b"a" * 16, "expires_at": now_ms - 5_000},   # within the grace
            {"request_id": b"b" * 16, "expires_at": now_ms - 60_000},  # long gone
            {"request_id": b"c" * 16, "expires_at": now_ms + 60_000}])  # live
    assert prune(kb.db, clock).seen_requests == 1
    with kb.db.read() as conn:
        kept = set(conn.execute(select(t.seen_requests.c.request_id)).scalars())
    assert kept == {b"a" * 16, b"c" * 16}


def test_an_expired_unused_activation_code_is_pruned(rp: RelyingParty, kb: Keybound,
                                                     clock: Any) -> None:
    code = rp.activation_code()
    clock.advance(100 * DAY)
    assert rp.operation(code["operationId"])["state"] == "EXPIRED"
    assert prune(kb.db, clock).operations == 1
    assert rp.call("GET", f"/rp/v1/operations/{code['operationId']}")["code"] == "not_found"


def test_prune_deletes_in_bounded_batches(rp: RelyingParty, kb: Keybound, clock: Any,
                                          monkeypatch: Any) -> None:
    """Each batch is its own write transaction, so a running server's requests get the
    database in between; the totals are the same as in one go."""
    device = activated(rp)
    for _ in range(5):
        assert device.authenticate().status_code == 200
    ended = count(kb, t.operations)
    now_ms = int(clock() * 1000)
    with kb.db.write() as conn:
        conn.execute(t.seen_requests.insert(), [
            {"request_id": bytes([i]) * 16, "expires_at": now_ms - 60_000} for i in range(5)])
    writes = 0
    real_write = kb.db.write

    def counting_write() -> Any:
        nonlocal writes
        writes += 1
        return real_write()

    monkeypatch.setattr(kb.db, "write", counting_write)
    clock.advance(400 * DAY)
    pruned = prune(kb.db, clock, batch=2)
    assert (pruned.operations, pruned.superseded_keys, pruned.seen_requests) == (ended, 5, 5)
    assert count(kb, t.operations) == 0 and count(kb, t.superseded_keys) == 0
    assert count(kb, t.seen_requests) == 0
    # ceil((n + 1) / 2) batches per table (the last one finds fewer than 2), plus the audit
    assert writes == (ended // 2 + 1) + (5 // 2 + 1) + (5 // 2 + 1) + 1
