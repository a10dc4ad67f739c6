"""keybound's own edge middleware, pure ASGI: in front of every app (web.app)."""

from __future__ import annotations

import logging
from typing import Any, Final

from keybound.channel import SEALED_MEDIA_TYPE
from keybound.errors import ErrorCode
from keybound.protocol import MAX_BODY_BYTES
from keybound.server.web.asgi import Scope, content_type, route_path
from keybound.server.web.limits import SEALED_OVERHEAD_BYTES
from keybound.server.web.problems import problem

log = logging.getLogger("keybound.server")

_SEALED: Final = SEALED_MEDIA_TYPE.encode("ascii")


class BodyLimit:
    """Refuse bodies over ``limit`` bytes (413) and POSTs that are neither JSON nor, on the
    device API, sealed (415) before any handler runs."""

    def __init__(self, app: Any, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        ctype = content_type(scope)
        sealed = ctype == _SEALED and route_path(scope).startswith("/device/")
        limit = self.limit + SEALED_OVERHEAD_BYTES if sealed else self.limit
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            await problem(ErrorCode.PAYLOAD_TOO_LARGE, f"body exceeds {limit} bytes")(
                scope, receive, send
            )
            return
        has_body = (b"transfer-encoding" in headers) if length is None else int(length) > 0
        if ctype != b"application/json" and not sealed and has_body:
            await problem(
                ErrorCode.UNSUPPORTED_MEDIA_TYPE,
                f"request bodies must be application/json (device API: {SEALED_MEDIA_TYPE})",
            )(scope, receive, send)
            return
        # read here, whole: a body over the limit is this layer's 413, not an error raised
        # inside a framework's body parsing (which would turn it into a 400)
        chunks, received = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left: nothing to answer
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > limit:
                await problem(ErrorCode.PAYLOAD_TOO_LARGE, f"body exceeds {limit} bytes")(
                    scope, receive, send
                )
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if replayed:
                return await receive()  # after the body: only a disconnect can come
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


class LastResort:
    """Outermost: an exception that escapes every other layer (a failed fsync in
    ``GroupCommit``, a bug) is logged and answered with the ``internal_error`` problem --
    which says nothing of the inside -- if no response has started; otherwise the connection
    is closed by the server."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched_send(message: Any) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched_send)
        except Exception:
            if started:
                raise
            log.exception("unexpected error on %s %s", scope.get("method"), scope.get("path"))
            await problem(ErrorCode.INTERNAL, "")(scope, receive, send)
