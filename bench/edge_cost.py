"""CPU per request of the HTTP edge (keybound.server.web.edge) against uvicorn's own httptools
protocol, which it extends: the same sealed-size request fed through each protocol on one
keep-alive connection, in this process, to a trivial ASGI app, with no sockets (a transport
that only counts bytes). What is left is the protocol's own work per request: parsing,
callbacks, the request/response cycle, and for the edge its accounting and deadlines.

Usage (from the repository root):
  .venv-bench/bin/python bench/edge_cost.py                     # 7 alternating rounds
  .venv-bench/bin/python bench/edge_cost.py --requests 20000 --rounds 9
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from kbbench.stats import table  # noqa: E402
from uvicorn.config import Config  # noqa: E402
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol  # noqa: E402
from uvicorn.server import ServerState  # noqa: E402

from keybound.server.web.edge import EdgeProtocol  # noqa: E402
from keybound.server.web.limits import EdgeLimits  # noqa: E402

BODY = b"s" * 1300  # a sealed authentication finish is about this size
REQUEST = (
    b"POST /device/v1/authentication/finish HTTP/1.1\r\nHost: auth.example.com\r\n"
    b"User-Agent: keybound-sdk/0.1\r\nAccept: application/keybound-sealed\r\n"
    b"Content-Type: application/keybound-sealed\r\n"
    b"Content-Length: %d\r\n\r\n" % len(BODY)
) + BODY
ANSWER = b"a" * 600


async def app(scope: Any, receive: Any, send: Any) -> None:
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/keybound-sealed"),
                (b"content-length", str(len(ANSWER)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": ANSWER})


class CountingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = 0
        self.closing = False

    def write(self, data: Any) -> None:
        self.written += len(data)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 40000)}.get(
            name, default
        )

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def run(kind: str, requests: int) -> float:
    """Microseconds of CPU per request."""
    config = Config(
        app=app,
        lifespan="off",
        log_level="warning",
        access_log=False,
        proxy_headers=False,
        server_header=False,
        date_header=False,
    )
    config.load()
    state = ServerState()
    loop = asyncio.get_running_loop()
    protocol: HttpToolsProtocol
    if kind == "edge":
        protocol = EdgeProtocol(config, state, {}, loop, limits=EdgeLimits())
    else:
        protocol = HttpToolsProtocol(config, state, {}, loop)
    transport = CountingTransport()
    protocol.connection_made(transport)
    started = time.process_time()
    for _ in range(requests):
        protocol.data_received(REQUEST)
        while state.tasks:  # the request's task runs to its end
            await asyncio.sleep(0)
    cpu = time.process_time() - started
    assert not transport.closing and transport.written >= requests * len(ANSWER)
    protocol.connection_lost(None)
    return cpu / requests * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=7, help="alternating rounds of each")
    args = ap.parse_args()
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    results: dict[str, list[float]] = {"uvicorn": [], "edge": []}
    runner(run("edge", 2000))  # warm up both once
    runner(run("uvicorn", 2000))
    for _ in range(args.rounds):
        for kind in ("uvicorn", "edge"):
            results[kind].append(runner(run(kind, args.requests)))
    print(f"## CPU per request, {args.requests} requests x {args.rounds} alternating rounds\n")
    print(
        table(
            ["protocol", "min µs", "median µs", "max µs"],
            [
                [k, f"{min(v):.1f}", f"{statistics.median(v):.1f}", f"{max(v):.1f}"]
                for k, v in results.items()
            ],
        )
    )
    diffs = [e - u for u, e in zip(results["uvicorn"], results["edge"], strict=True)]
    print(
        f"\nedge - uvicorn, per round pair: median {statistics.median(diffs):+.1f} µs "
        f"(range {min(diffs):+.1f} .. {max(diffs):+.1f})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
