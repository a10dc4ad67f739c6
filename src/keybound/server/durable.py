"""Group commit for the embedded SQLite database: nothing acknowledged is ever lost, and one
fsync serves every request that committed while the previous one ran.

With ``PRAGMA synchronous=FULL`` every commit syncs the WAL before it returns: two fsyncs per
authentication, each about 0.2 ms of CPU and, on the event loop, 0.2-0.3 ms of a blocked
server (bench/server_path.py measured 1.6 ms of CPU per authentication with it, 1.2 ms
without). The server instead commits without syncing (``Database.defer_sync``) and holds
every response until a WAL fsync that started after the response's commits has finished.
Responses that committed while an fsync ran wait for the next one, which then covers all of
them; the fsync runs in a worker thread, so the event loop keeps serving meanwhile.

Commits made this way don't checkpoint the WAL themselves either (``Database.defer_sync``):
after every ``CHECKPOINT_COMMITS`` commits, a checkpoint runs in a worker thread, never on a
request's path.

The rule is enforced on the way out, for every response of the app (sealed device requests,
relying-party routes, refusals alike): a response starts only when ``Database.synced`` has
reached the number of commits -- by every server process on the file -- made before it
started. With several processes (``--workers N``) the fsyncs take turns across them, and one
that another process's fsync already covered is skipped (``Database.sync``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import MutableMapping
from typing import Any

from keybound.storage.db import Database

log = logging.getLogger("keybound.server")

#: commits between background checkpoints: an authentication's commit changes a handful of
#: pages, so this keeps the WAL near SQLite's own default of 1000 pages
CHECKPOINT_COMMITS = 200


class GroupCommit:
    """Pure ASGI middleware: a response starts only after its commits are on disk."""

    def __init__(self, app: Any, *, db: Database) -> None:
        self.app = app
        self.db = db
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._syncing: asyncio.Task[None] | None = None
        self._checkpointing: asyncio.Task[None] | None = None
        self._checkpointed_at = 0  # db.committed when the last checkpoint started
        self._broken: OSError | None = None

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def durable_send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                await self.durable(self.db.committed)
            await send(message)

        await self.app(scope, receive, durable_send)

    async def durable(self, commits: int) -> None:
        """Return once the first ``commits`` commits (of every process on the database) are
        on disk; raise if the disk has refused an fsync."""
        if self._broken is not None:
            raise self._broken
        if commits <= self.db.synced:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((commits, waiter))
        if self._syncing is None:
            self._syncing = asyncio.create_task(self._sync_rounds())
        await waiter

    async def _sync_rounds(self) -> None:
        try:
            while self._waiters:
                try:
                    await asyncio.to_thread(self.db.sync)
                except OSError as exc:
                    # The disk refused. Its kernel may already have dropped the pages it
                    # could not write, so a later fsync that succeeds proves nothing about
                    # them: from now on this process acknowledges nothing (PostgreSQL's
                    # data_sync_retry=off does the same). It needs a restart.
                    log.critical("fsync of the database WAL failed (%s): answering every "
                                 "request with an error until the server is restarted", exc)
                    self._broken = exc
                    for _, waiter in self._waiters:
                        if not waiter.done():
                            waiter.set_exception(exc)
                    self._waiters = []
                    return
                pending = []
                for commits, waiter in self._waiters:
                    if commits <= self.db.synced:
                        if not waiter.done():
                            waiter.set_result(None)
                    else:
                        pending.append((commits, waiter))
                self._waiters = pending
                if (self._checkpointing is None
                        and self.db.synced - self._checkpointed_at >= CHECKPOINT_COMMITS):
                    self._checkpointed_at = self.db.synced
                    self._checkpointing = asyncio.create_task(self._checkpoint())
        except BaseException:  # cancelled (shutdown) or a bug: nobody waits forever
            for _, waiter in self._waiters:
                waiter.cancel()
            self._waiters = []
            raise
        finally:
            self._syncing = None

    async def _checkpoint(self) -> None:
        try:
            await asyncio.to_thread(self.db.checkpoint)
        except Exception:  # tried again CHECKPOINT_COMMITS commits later
            log.exception("WAL checkpoint failed")
        finally:
            self._checkpointing = None
