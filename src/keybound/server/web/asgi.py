"""Small pure-ASGI helpers shared by keybound's own layers (no framework on this path)."""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from typing import Any, TypeVar

import anyio.to_thread

from keybound.storage.db import Database

T = TypeVar("T")
Scope = MutableMapping[str, Any]


def content_type(scope: Scope) -> bytes:
    """The media type of the request body, lower-cased, without parameters."""
    for name, value in scope["headers"]:
        if name == b"content-type":
            ctype: bytes = value.split(b";")[0].strip().lower()
            return ctype
    return b""


def route_path(scope: Scope) -> str:
    """The path the router dispatches on, without a reverse-proxy prefix (ASGI root_path)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


async def read_body(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break  # client went away; what arrived is all there is
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def respond(send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def blocking(db: Database, call: Callable[[], T]) -> T:
    """Run blocking service code (database, crypto) from the event loop: right there with the
    embedded SQLite database, whose work per request is in-process calls plus one commit --
    a hand-off to a worker thread and back costs more than all of it (bench/README.md) --,
    in a worker thread with a networked database (PostgreSQL), whose statements wait on the
    network."""
    if db.is_sqlite:
        return call()
    return await anyio.to_thread.run_sync(call)
