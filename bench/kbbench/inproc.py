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
from keybound.server.service import Keybound


@contextmanager
def fresh_keybound(prefix: str) -> Iterator[tuple[Keybound, ChannelPin]]:
    """The service on a new database in a temp dir, and the pin of its application's key."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        kb = Keybound.open(f"sqlite:///{tmp}/keybound.db",
                           master_key_file=Path(tmp) / "master.key")
        kb.applications.create(APP)
        key = kb.e2e_keys.create(APP)
        try:
            yield kb, kb.e2e_keys.pin(key.key_id, server_url="http://127.0.0.1:1")
        finally:
            kb.db.dispose()


async def activated_devices(kb: Keybound, pin: ChannelPin, conn: Any,
                            n: int) -> list[LeanDevice]:
    """``n`` lean devices, each activated through ``conn`` (a user and an activation code
    made by the service directly, as the relying party's API would)."""
    fleet = []
    for _ in range(n):
        device = LeanDevice(conn, pin)
        user = kb.operations.create_user(APP, CreateUserRequest())
        code = kb.operations.create_activation(APP, user.user_id).activation_code
        await device.activation_finish(await device.activation_start(code))
        fleet.append(device)
    return fleet
