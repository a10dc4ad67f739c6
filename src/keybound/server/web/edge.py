"""The HTTP edge: uvicorn's httptools protocol with what a server facing the internet needs and
uvicorn lacks, enforced while the request is read, before any application code runs.

- the request head (request line and header fields) is capped in bytes and in fields: 431,
  and the parser is never handed more than the cap of one head (docs/deployment.md);
- the head must arrive within ``header_timeout``, the body within ``body_timeout`` of the
  head: 408; a connection that asked nothing is closed silently; idle connections are closed
  after ``keep_alive_timeout`` (also before their first request);
- a body over the protocol's limit is refused (413), chunked bodies as they arrive;
- a client that leaves its answers unread for ``send_timeout`` is disconnected (by the kernel:
  TCP_USER_TIMEOUT, Linux);
- connections beyond ``max_connections`` (per worker) are answered 503 and closed at once;
- malformed framing (Content-Length not a number, Content-Length with Transfer-Encoding,
  bad chunk sizes, bytes not allowed in the request target, ...) gets a 400;
- every refusal is the application's problem+json (docs/protocol.md §8), and the connection
  is closed after it: the edge stops reading requests, half-closes, and drains what the
  client still sends for ``LINGER_SECONDS`` so that the answer is not lost to a reset.

keybound serves no WebSockets: an Upgrade request is answered as a plain request and the
connection closed after it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
from typing import Any, cast

import httptools
from uvicorn._types import ASGI3Application
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)
from uvicorn.server import ServerState

from keybound.channel import SEALED_MEDIA_TYPE
from keybound.errors import ErrorCode, KeyboundError
from keybound.server.web.limits import EdgeLimits
from keybound.server.web.problems import PROBLEM_JSON, problem_body

log = logging.getLogger("keybound.server.edge")

#: uvicorn's methods the edge extends: if a uvicorn release renames one, the edge must not
#: start silently without its limits
_EXTENDED = (
    "connection_made",
    "connection_lost",
    "data_received",
    "on_message_begin",
    "on_url",
    "on_header",
    "on_headers_complete",
    "on_body",
    "on_message_complete",
    "_start_asgi_task",
    "_should_upgrade_to_ws",
    "_unset_keepalive_if_required",
)
_missing = [name for name in _EXTENDED if not hasattr(HttpToolsProtocol, name)]
if _missing:  # pragma: no cover - a uvicorn outside the pinned range
    raise ImportError(
        f"keybound's HTTP edge needs uvicorn's HttpToolsProtocol.{_missing[0]}; "
        "install the uvicorn version pyproject.toml names"
    )

#: How long a refused connection is drained before it is closed (the client reads the
#: answer; what it still sends is read and dropped).
LINGER_SECONDS = 2.0
_HEAD_END = b"\r\n\r\n"
_SEALED = SEALED_MEDIA_TYPE.encode("ascii")


def edge_protocol(limits: EdgeLimits) -> type[asyncio.Protocol]:
    """The protocol factory for uvicorn's ``http=`` option. A partial, not a class made on the
    fly: uvicorn pickles its configuration to each ``--workers`` process."""
    return cast(type[asyncio.Protocol], functools.partial(EdgeProtocol, limits=limits))


def server_options(limits: EdgeLimits) -> dict[str, Any]:
    """uvicorn options for a server behind this edge."""
    return {"http": edge_protocol(limits), "ws": "none"}


class EdgeProtocol(HttpToolsProtocol):
    """One connection (module docstring). Refusals raised inside parser callbacks are
    ``KeyboundError``s: raising stops the parser at once, and ``data_received`` answers."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        limits: EdgeLimits,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits
        # uvicorn arms this after each response (its type says int; call_later takes float)
        self.timeout_keep_alive = limits.keep_alive_timeout  # type: ignore[assignment]
        self._in_head = True  # reading a request head, or waiting for one
        self._head_started = False  # the parser saw the first byte of that request
        self._head_bytes = 0  # bytes of the head received so far (see _head_fits)
        self._head_tail = b""  # its last 3 bytes: a head's end may span two reads
        self._head_size = 0  # request target and fields the parser reported
        self._head_fields = 0
        self._heads_done = 0  # heads parsed on this connection
        self._body_bytes = 0
        self._body_limit = limits.max_body_bytes
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._running: RequestResponseCycle | None = None  # the request being answered
        self._refused = False  # answered and closing: input is dropped

    # ------------------------------------------------------------------ connection
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.limits.max_connections:
            # refuse at once instead of queueing: a slot frees as soon as a connection ends
            self.transport = transport
            self._refused = True
            transport.write(self._problem(ErrorCode.SERVICE_UNAVAILABLE, ""))
            transport.close()
            log.debug("refused a connection: %d open", len(self.connections))
            return
        super().connection_made(transport)
        self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_timeout)
        sock = transport.get_extra_info("socket")
        if (
            sock is not None
            and sock.family in (socket.AF_INET, socket.AF_INET6)
            and hasattr(socket, "TCP_USER_TIMEOUT")
        ):  # Linux
            # answers the client leaves unread (zero window) or unacknowledged this long end
            # the connection in the kernel; else a closing connection with unsent answers
            # would hold its slot for good
            sock.setsockopt(
                socket.IPPROTO_TCP,
                socket.TCP_USER_TIMEOUT,
                max(1, int(self.limits.send_timeout * 1000)),
            )

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        # uvicorn tells only the newest request that the client left; with pipelining the
        # one being answered is older, and would write to the closed transport
        for cycle in (self._running, *(queued for queued, _ in self.pipeline)):
            if cycle is not None and not cycle.response_complete:
                cycle.disconnected = True
                cycle.message_event.set()
        self.pipeline.clear()
        super().connection_lost(exc)

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        self._running = cycle
        super()._start_asgi_task(cycle, app)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # lingering: read and dropped
        self._unset_keepalive_if_required()
        if self._in_head and not self._head_fits(data):
            self._refuse(
                ErrorCode.REQUEST_HEADER_FIELDS_TOO_LARGE,
                f"the request head exceeds {self.limits.max_header_bytes} bytes",
            )
            return
        in_head, heads_done = self._in_head, self._heads_done
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._no_upgrade()
            return
        except httptools.HttpParserCallbackError as exc:
            refusal = exc.__context__
            if isinstance(refusal, KeyboundError):
                self._refuse(refusal.code, refusal.detail)
            else:  # a callback of uvicorn's failed on this input
                log.debug("refused a request the parser callbacks failed on: %r", refusal)
                self._refuse(ErrorCode.MALFORMED_REQUEST, "malformed HTTP request")
            return
        except httptools.HttpParserError as exc:
            self._refuse(ErrorCode.MALFORMED_REQUEST, f"malformed HTTP request: {exc}")
            return
        if self._in_head:
            if in_head and heads_done == self._heads_done:
                # the same head goes on: an exact count (a head begun after another request
                # within this read is not counted; the parser saw at most this read of it)
                self._head_bytes += len(data)
                self._head_tail = (self._head_tail + data)[-3:]
            # the client owes a head: it began one, or has no answer to wait for (answers
            # still owed to it are followed by uvicorn's keep-alive timer instead)
            waiting = self.cycle is None or self.cycle.response_complete
            if self._head_timer is None and (self._head_started or waiting):
                self._head_timer = self.loop.call_later(
                    self.limits.header_timeout, self._head_timeout
                )
        elif self._body_timer is None:
            self._body_timer = self.loop.call_later(self.limits.body_timeout, self._body_timeout)

    def _head_fits(self, data: bytes) -> bool:
        """Whether this read keeps the head within the cap: it does when it ends the head
        (CRLF CRLF) within the bytes left; else the parser, which buffers a partial field
        whole, never sees it."""
        room = self.limits.max_header_bytes - self._head_bytes
        if len(data) <= room:
            return True
        return _HEAD_END in self._head_tail + data[: max(room, 0)]

    # ------------------------------------------------------------------ parser callbacks
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_started = True
        self._head_size = 0
        self._head_fields = 0

    def on_url(self, url: bytes) -> None:
        self._head_size += len(url)
        if self._head_size > self.limits.max_header_bytes:
            raise KeyboundError(
                f"the request head exceeds {self.limits.max_header_bytes} bytes",
                code=ErrorCode.REQUEST_HEADER_FIELDS_TOO_LARGE,
            )
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        # counted here too: several heads may arrive in one read (pipelining)
        self._head_fields += 1
        self._head_size += len(name) + len(value) + 4
        if self._head_fields > self.limits.max_header_fields:
            raise KeyboundError(
                f"more than {self.limits.max_header_fields} header fields",
                code=ErrorCode.REQUEST_HEADER_FIELDS_TOO_LARGE,
            )
        if self._head_size > self.limits.max_header_bytes:
            raise KeyboundError(
                f"the request head exceeds {self.limits.max_header_bytes} bytes",
                code=ErrorCode.REQUEST_HEADER_FIELDS_TOO_LARGE,
            )
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        sealed, declared = False, 0
        for name, value in self.headers:
            if name == b"content-length":
                declared = int(value)  # the parser checked it is a number
            elif name == b"content-type":
                sealed = value.split(b";")[0].strip().lower() == _SEALED
        limit = self.limits.body_limit(sealed=sealed)
        if declared > limit:  # docs/protocol.md §1.1; before the application starts
            raise KeyboundError(f"body exceeds {limit} bytes", code=ErrorCode.PAYLOAD_TOO_LARGE)
        super().on_headers_complete()
        self._heads_done += 1
        self._in_head = False
        self._head_started = False
        self._head_bytes = 0
        self._head_tail = b""
        self._body_bytes = 0
        self._body_limit = limit
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        if self._body_bytes > self._body_limit:  # chunked bodies too, as they arrive
            raise KeyboundError(
                f"body exceeds {self._body_limit} bytes", code=ErrorCode.PAYLOAD_TOO_LARGE
            )
        super().on_body(body)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _should_upgrade_to_ws(self) -> bool:
        return False  # no WebSockets here; see _no_upgrade

    # ------------------------------------------------------------------ deadlines
    def _head_timeout(self) -> None:
        self._head_timer = None
        if self.flow.read_paused:  # held back by the server (pipelining), not the client
            self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_timeout)
        elif self._head_started:
            self._refuse(
                ErrorCode.REQUEST_TIMEOUT,
                f"the request head did not arrive within {self.limits.header_timeout:g} s",
            )
        elif not self.transport.is_closing():
            self.transport.close()  # nothing was asked: nothing to answer

    def _body_timeout(self) -> None:
        self._body_timer = None
        if self.flow.read_paused:  # the application has not read what came; not the client
            self._body_timer = self.loop.call_later(self.limits.body_timeout, self._body_timeout)
            return
        self._refuse(
            ErrorCode.REQUEST_TIMEOUT,
            f"the request body did not arrive within {self.limits.body_timeout:g} s of its head",
        )

    def _cancel_timers(self) -> None:
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = None

    # ------------------------------------------------------------------ refusing
    def _refuse(self, code: ErrorCode, detail: str) -> None:
        """Answer ``code`` in place of the request being read, and close the connection."""
        log.debug("refused a request: %s: %s", code.value, detail)
        self._refused = True
        self._cancel_timers()
        self._unset_keepalive_if_required()
        self.pipeline.clear()
        reading = None if self._in_head else self.cycle  # the request whose body is read
        running = self._running
        if running is not None and not running.response_complete and running is not reading:
            # an earlier request is still being answered: let it finish, then uvicorn closes
            running.keep_alive = False
            return
        if reading is not None:
            if reading.response_started:
                # the application answered (or is answering) without waiting for the body
                reading.keep_alive = False
                if reading.response_complete:
                    self.transport.close()
                return
            # the application has this request's head but not its body: the problem is the
            # answer; what the application sends is dropped, and its receive() says so
            reading.disconnected = True
            reading.message_event.set()
        self.transport.write(self._problem(code, detail))
        self.flow.resume_reading()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_SECONDS, self.transport.close)

    def _no_upgrade(self) -> None:
        """The parser stops at an Upgrade request: answer it as a plain request, then close."""
        self._refused = True
        self._cancel_timers()
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False
        else:
            self.transport.close()

    def _problem(self, code: ErrorCode, detail: str) -> bytes:
        status, body = problem_body(code, detail)
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: ",
            PROBLEM_JSON.encode("ascii"),
            b"\r\n",
            b"content-length: ",
            str(len(body)).encode("ascii"),
            b"\r\n",
            b"connection: close\r\n\r\n",
            body,
        ]
        return b"".join(head)
