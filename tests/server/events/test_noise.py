"""Anonymous noise (server/events/noise.py), attacked: a flood of requests from callers who
never prove who they are -- unknown paths, missing and wrong API keys, sealed junk, wrong
activation codes, forged signatures -- writes no row per request to the audit trail; it is
counted per cause and five-minute window in a bounded number of rows (issue 14, defect 5)."""

from __future__ import annotations

import os
import secrets
from typing import Any

from sqlalchemy import func, select

from keybound import protocol as p
from keybound.channel import SEALED_MEDIA_TYPE
from keybound.server.events.noise import WINDOW_MS, NoiseCounter
from keybound.server.services import Keybound
from keybound.storage import tables as t
from tests.helpers import RawDevice, RelyingParty
from tests.server.services.test_authentication import activated

FLOOD = 200  # per kind of request


def rows(kb: Keybound, table: Any) -> int:
    with kb.db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def test_a_flood_of_anonymous_requests_writes_no_row_per_request(
    rp: RelyingParty, kb: Keybound
) -> None:
    device = activated(rp)
    start = device.start_auth()
    forged, _ = RawDevice(rp.http, rp.app_id, device_id=device.device_id).auth_request(start)
    events_before = rows(kb, t.events)
    for i in range(FLOOD):
        rp.http.get(f"/{secrets.token_hex(8)}/{i}")  # unknown paths, all different
        rp.http.get(f"/rp/v1/users/{i}")  # no API key
        rp.http.get(
            f"/rp/v1/users/{i}",
            headers={"Authorization": f"Bearer kb_{'A' * 16}_{secrets.token_urlsafe(32)}"},
        )  # wrong key
        rp.http.raw.post(
            p.DevicePaths.AUTHENTICATION_START,
            content=os.urandom(200),
            headers={"content-type": SEALED_MEDIA_TYPE},
        )  # sealed junk
        rp.http.post(
            p.DevicePaths.ACTIVATION_START,
            json={  # a guessed link token, sealed
                "applicationId": rp.app_id,
                "activationToken": secrets.token_urlsafe(32),
            },
        )
        rp.http.post(p.DevicePaths.AUTHENTICATION_FINISH, json=forged.to_wire())  # forged
    kb.noise.flush()
    assert rows(kb, t.events) == events_before  # not one audit row for the flood
    counts = {r.cause: r.total for r in kb.admin.noise(since_ms=0)}
    assert counts == {
        "rp unrouted:not_found": FLOOD,
        "rp get_user:unauthorized": 2 * FLOOD,
        "device authentication.start:decryption_failed": FLOOD,
        "device activation.start:activation_code_invalid": FLOOD,
        "device authentication.finish:authentication_failed": FLOOD,
    }
    assert rows(kb, t.noise) == len(counts)  # bounded by causes, not by requests
    # the genuine device was not disturbed: its challenge is intact
    assert device.finish_auth(*device.auth_request(start)).status_code == 200


def test_counts_are_windows_of_five_minutes_added_across_flushes(kb: Keybound) -> None:
    now = [0.0]
    counter = NoiseCounter(kb.db, monotonic=lambda: now[0], flush_seconds=10)
    base = 1_800_000_000_000 - 1_800_000_000_000 % WINDOW_MS
    for at in (base, base + 1, base + WINDOW_MS - 1):
        counter.count("probe:not_found", at)
    now[0] += 11
    counter.count("probe:not_found", base + WINDOW_MS)  # due: all four stored now
    counter.count("probe:not_found", base + WINDOW_MS + 5)
    counter.flush()
    stored = {(r.window_start, r.cause): r.total for r in kb.admin.noise(since_ms=base)}
    assert stored == {(base, "probe:not_found"): 3, (base + WINDOW_MS, "probe:not_found"): 2}
