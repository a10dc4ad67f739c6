"""keybound in this process, for the benchmarks that call it without sockets
(``server_path.py``, ``instructions.py``): a fresh embedded SQLite database with one
application and E2E key, and lean devices activated through a given connection."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kbbench.server import APP
from kbbench.wire import LeanDevice
from keybound.channel import ChannelPin
from keybound.rpapi import CreateUserRequest
from keybound.server.events.model import Actor, EventType
from keybound.server.services import Keybound
from keybound.server.unit import Unit, perform


@contextmanager
def fresh_keybound(prefix: str) -> Iterator[tuple[Keybound, ChannelPin]]:
    """The service on a new database in a temp dir, and the pin of its application's key."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        kb = Keybound.open(f"sqlite:///{tmp}/keybound.db", master_key_file=Path(tmp) / "master.key")
        kb.admin.create_application(APP)
        key = kb.admin.create_e2e_key(APP)
        try:
            yield kb, kb.admin.e2e_pin(key.key_id, server_url="http://127.0.0.1:1")
        finally:
            kb.close()


async def activated_devices(kb: Keybound, pin: ChannelPin, conn: Any, n: int) -> list[LeanDevice]:
    """``n`` lean devices, each activated through ``conn`` (a user and an activation made by
    the service directly, as the relying party's API would; the device uses its link)."""
    fleet = []
    for _ in range(n):
        device = LeanDevice(conn, pin)
        token = _activation_token(kb)
        await device.activation_finish(await device.activation_start(token))
        fleet.append(device)
    return fleet


def _activation_token(kb: Keybound) -> str:
    user = _as_rp(
        kb, EventType.USER_CREATE, lambda u: kb.operations.create_user(u, APP, CreateUserRequest())
    )
    issued = _as_rp(
        kb,
        EventType.ACTIVATION_CODE_ISSUED,
        lambda u: kb.operations.create_activation(u, APP, user.user_id),
    )
    return str(issued.activation_token)


def _as_rp(kb: Keybound, action: EventType, call: Any) -> Any:
    unit = Unit(
        kb.db,
        kb.clock,
        actor=Actor.RELYING_PARTY,
        action=action,
        application_id=APP,
        identified=True,
    )
    return perform(unit, call, noise=kb.noise, cause="bench")
