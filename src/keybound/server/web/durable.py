"""Group commit for the embedded SQLite database: nothing acknowledged is ever lost, and one
fsync serves every request that committed while the previous one ran.

With ``PRAGMA synchronous=FULL`` every commit syncs the WAL before it returns: two fsyncs per
authentication, each blocking the event loop. The server instead commits without syncing
(``SqliteFile.defer_sync``) and holds every response until a WAL fsync that started after the
response's commits has finished. The fsync runs on the event loop, once per loop iteration
that has responses waiting: the first response to wait schedules a round behind the callbacks
that are ready now (``loop.call_soon``), so the round's one fsync covers every commit they
made, and all of their responses go out in the next iteration. The loop is blocked while the
disk syncs, but nothing waits on it meanwhile that could use it: the requests that arrive are
answered after an fsync either way, and the other server processes and clients have the
cores. When another server process is fsyncing, the round does not wait for its turn on the
loop: it looks again ``RETRY_SECONDS`` later, and finds its commits covered by that fsync, or
syncs. (A worker thread for the fsync, this module's first form, cost more: its rounds waited
for the GIL after each system call; bench/README.md has the measurements.)

Commits made this way don't checkpoint the WAL themselves either: after every
``CHECKPOINT_COMMITS`` commits, a checkpoint runs in a worker thread, never on a request's
path.

The rule is enforced on the way out, for every response of the app (sealed device requests,
relying-party routes, refusals alike): a response starts only when ``Database.synced`` has
reached the number of commits -- by every server process on the file -- made before it
started. With several processes (``--workers N``) the fsyncs take turns across them, and one
that another process's fsync already covered is skipped (``SqliteFile.sync``).
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
#: how soon a round looks again when another server process's fsync is running (an fsync
#: takes about 0.1 ms on an idle disk, 1-2 ms under load); the loop serves meanwhile
RETRY_SECONDS = 0.0005


class GroupCommit:
    """Pure ASGI middleware: a response starts only after its commits are on disk."""

    def __init__(self, app: Any, *, db: Database) -> None:
        self.app = app
        self.db = db
        self._waiters: list[asyncio.Future[None]] = []
        self._round_scheduled = False
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
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiters.append(waiter)
        if not self._round_scheduled:
            self._round_scheduled = True
            loop.call_soon(self._sync_round)
        await waiter

    def _sync_round(self) -> None:
        """One WAL fsync for every commit made so far; answers every response waiting. Each
        of them counted its commits before this round began (the loop runs one thing at a
        time), and an fsync covers every commit counted when it begins."""
        self._round_scheduled = False
        loop = asyncio.get_running_loop()
        try:
            done = self.db.sync(wait=False)
        except OSError as exc:
            # The disk refused. Its kernel may already have dropped the pages it could not
            # write, so a later fsync that succeeds proves nothing about them: from now on
            # this process acknowledges nothing (PostgreSQL's data_sync_retry=off does the
            # same). It needs a restart.
            log.critical(
                "fsync of the database WAL failed (%s): answering every request "
                "with an error until the server is restarted",
                exc,
            )
            self._broken = exc
            for waiter in self._take_waiters():
                waiter.set_exception(exc)
            return
        except BaseException:  # a bug: nobody waits forever
            for waiter in self._take_waiters():
                waiter.cancel()
            raise
        if not done:  # another process's fsync is running: it may cover these commits too
            self._round_scheduled = True
            loop.call_later(RETRY_SECONDS, self._sync_round)
            return
        for waiter in self._take_waiters():
            waiter.set_result(None)
        if (
            self._checkpointing is None
            and self.db.synced - self._checkpointed_at >= CHECKPOINT_COMMITS
        ):
            self._checkpointed_at = self.db.synced
            self._checkpointing = loop.create_task(self._checkpoint())

    def _take_waiters(self) -> list[asyncio.Future[None]]:
        waiters, self._waiters = self._waiters, []
        return [waiter for waiter in waiters if not waiter.done()]  # done: its task was cancelled

    async def _checkpoint(self) -> None:
        try:
            await asyncio.to_thread(self.db.checkpoint)
        except Exception:  # tried again CHECKPOINT_COMMITS commits later
            log.exception("WAL checkpoint failed")
        finally:
            self._checkpointing = None
