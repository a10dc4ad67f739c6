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
