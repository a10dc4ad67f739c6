"""The ASGI application: the pipeline every request goes through, assembled from a list.

    LastResort -> GroupCommit (SQLite) -> BodyLimit -> Router
        /device/...  -> DeviceApp (web.device): codec -> dispatcher -> service in a unit
        everything else -> the relying-party app (web.rp, FastAPI): handler -> service in a unit

See docs/architecture.md.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI
from starlette.middleware import Middleware

from keybound.server.services import Keybound
from keybound.server.services.outbox import OutboxSettings
from keybound.server.web.asgi import Scope, route_path
from keybound.server.web.device import DeviceApp
from keybound.server.web.durable import GroupCommit
from keybound.server.web.middleware import BodyLimit, LastResort
from keybound.server.web.openapi import document
from keybound.server.web.rp import create_rp_app

log = logging.getLogger("keybound.server")


class Router:
    """``/device/`` to the device API, everything else (and lifespan) to the default app."""

    def __init__(self, *, device: Any, default: Any) -> None:
        self.device = device
        self.default = default

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and route_path(scope).startswith("/device/"):
            await self.device(scope, receive, send)
        else:
            await self.default(scope, receive, send)


def build(app: Any, middleware: Sequence[Middleware]) -> Any:
    """``app`` wrapped in ``middleware``, the first outermost (as Starlette does)."""
    for cls, args, kwargs in reversed(middleware):
        app = cls(app, *args, **kwargs)
    return app


class KeyboundApp:
    """The assembled pipeline, plus the relying-party app its OpenAPI document comes from."""

    def __init__(self, *, rp: FastAPI, device: DeviceApp, middleware: Sequence[Middleware]) -> None:
        self.rp = rp
        self.state = rp.state  # app.state.kb: the services this app serves
        self._stack = build(Router(device=device, default=rp), middleware)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        await self._stack(scope, receive, send)

    def openapi(self) -> dict[str, Any]:
        return self.rp.openapi()


def create_app(
    kb: Keybound, *, allow_plaintext: bool = False, deliver: OutboxSettings | None = None
) -> KeyboundApp:
    """The keybound ASGI app. Device requests must come through the secure channel;
    ``allow_plaintext`` (development only, off by default) also accepts plaintext JSON.
    ``deliver``: this process also sends webhooks and device notifications (its lifespan
    runs the sender, services.outbox)."""
    if allow_plaintext:
        log.warning(
            "INSECURE: plaintext device requests are allowed (development switch); "
            "device traffic is not end-to-end encrypted. Never use this in production."
        )
    rp = create_rp_app(kb, deliver=deliver)
    document(rp)
    kb.audit.start_sealer()  # PostgreSQL: entries are sealed into the chain just after commit
    middleware = [Middleware(LastResort)]
    if kb.db.defer_sync():  # every response waits for its commits (group commit)
        middleware.append(Middleware(GroupCommit, db=kb.db))
    middleware.append(Middleware(BodyLimit))
    return KeyboundApp(
        rp=rp, device=DeviceApp(kb, allow_plaintext=allow_plaintext), middleware=middleware
    )
