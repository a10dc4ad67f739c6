"""Instructions per device-initiated authentication, counted by valgrind: a figure that does
not drift with this shared host's speed, for telling small changes apart.

Usage:  .venv-bench/bin/python bench/instructions.py [--flows 200] [--src DIR ...]
        [--webhook-endpoint]

CPU time on this host moves by tens of per cent within minutes (bench/README.md), so a change
worth 2 % cannot be seen in ``loadgen.py`` or ``server_path.py`` runs. Counting executed
instructions can: valgrind's cachegrind (``--cache-sim=no``) counts them exactly, and runs of
the same program differ by about 0.3 % (random keys and ids).

The program, run in this process for each ``--src`` (a checkout's ``src/`` directory; default:
this one's), twice under ``valgrind --tool=cachegrind``: a fresh SQLite database with the
server's group commit, one application and E2E key, 16 lean devices (bench/kbbench/wire.py)
activated, then device-initiated authentications (start + finish) through the whole ASGI app
as uvicorn calls it -- ``create_app``'s every layer, the secure channel, the service, SQLite,
the WAL fsyncs -- in process, without sockets. Once with ``BASE`` flows and once with ``BASE +
--flows``: the difference, over ``--flows``, is the instructions per flow, without the start-up.
It counts the devices' work too (their crypto, mostly), the same for every source; not
counted: uvicorn's HTTP parsing, the kernel, and time spent waiting for memory, which
instructions do not show (``loadgen.py`` measures all of it).

``--webhook-endpoint``: the application also has a webhook endpoint subscribed to every event
type, so each authentication's event is marked for delivery (docs/events.md §7); the sender
that delivers it runs elsewhere and is not counted (``webhook_throughput.py`` measures it).
Only for sources that have webhooks.

Needs valgrind (Debian/Ubuntu: ``apt-get install valgrind``); about a minute per source.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

HERE = Path(__file__).resolve()
SRC = HERE.parent.parent / "src"
BASE = 20  # flows of the shorter run
DEVICES = 16


class AsgiConn:
    """Stands in for the HTTP connection: each request goes to the ASGI app as one
    ``http.request`` message, the way uvicorn delivers a body that arrived whole."""

    def __init__(self, app: Any, content_type: bytes) -> None:
        self.app = app
        self.content_type = content_type

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: bytes = b""
    ) -> tuple[int, dict[bytes, bytes], bytes]:
        sent: list[MutableMapping[str, Any]] = []
        delivered = False

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if delivered:
                return {"type": "http.disconnect"}
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: MutableMapping[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "server": ("127.0.0.1", 8000),
            "client": ("127.0.0.1", 50000),
            "scheme": "http",
            "root_path": "",
            "method": method,
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "state": {},
            "headers": [
                (b"host", b"127.0.0.1:8000"),
                (b"content-type", self.content_type),
                (b"content-length", str(len(body)).encode()),
            ],
        }
        await self.app(scope, receive, send)
        return (
            sent[0]["status"],
            dict(sent[0]["headers"]),
            b"".join(m.get("body", b"") for m in sent[1:]),
        )


async def flows(n: int, *, endpoint: bool = False) -> None:
    """Set up, then ``n`` device-initiated authentications through the ASGI app."""
    from kbbench.inproc import activated_devices, fresh_keybound
    from kbbench.wire import SEALED

    from keybound.server.web.app import create_app

    with fresh_keybound("kb-instr-") as (kb, pin):
        if endpoint:
            subscribe_everything(kb)
        conn = AsgiConn(create_app(kb), SEALED.encode())
        fleet = await activated_devices(kb, pin, conn, DEVICES)
        for i in range(n):
            device = fleet[i % DEVICES]
            await device.auth_finish(await device.auth_start())


def subscribe_everything(kb: Any) -> None:
    """A webhook endpoint of the application, subscribed to every type (its URL's name is
    given a public address here: nothing is ever sent to it)."""
    import ipaddress

    from kbbench.server import APP

    from keybound.rpapi import CreateWebhookEndpointRequest, EventName

    kb.webhooks.resolver = lambda host, port: [ipaddress.ip_address("93.184.215.14")]
    kb.admin.create_webhook_endpoint(
        APP,
        CreateWebhookEndpointRequest(
            url="https://hooks.example.com/keybound", event_types=list(EventName)
        ),
    )


def count(src: Path, n: int, *, endpoint: bool = False) -> int:
    """Instructions of the whole program with ``n`` flows, from ``src``."""
    with tempfile.TemporaryDirectory(prefix="kb-instr-cg-") as tmp:
        out = Path(tmp) / "cachegrind.out"
        env = {**os.environ, "PYTHONPATH": str(src)}
        extra = ["--webhook-endpoint"] if endpoint else []
        done = subprocess.run(
            [
                "valgrind",
                "--tool=cachegrind",
                "--cache-sim=no",
                f"--cachegrind-out-file={out}",
                sys.executable,
                str(HERE),
                "--child",
                str(n),
                *extra,
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=1800,
        )
        found = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
        if done.returncode != 0 or found is None:
            raise RuntimeError(f"valgrind run failed ({done.returncode}):\n{done.stderr[-2000:]}")
        return int(found.group(1).replace(",", ""))


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--flows",
        type=int,
        default=200,
        help="flows counted (the longer run has BASE + this many; default 200)",
    )
    ap.add_argument(
        "--src",
        type=Path,
        action="append",
        help="a checkout's src/ directory; repeat to compare (default: this one's)",
    )
    ap.add_argument(
        "--webhook-endpoint",
        action="store_true",
        help="the application has a webhook endpoint subscribed to every type",
    )
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        asyncio.run(flows(args.child, endpoint=args.webhook_endpoint))
        return
    if shutil.which("valgrind") is None:
        sys.exit("instructions.py needs valgrind (apt-get install valgrind)")
    sources = [s.resolve() for s in (args.src or [SRC])]
    rows = []
    for src in sources:
        t = time.monotonic()
        endpoint = args.webhook_endpoint
        per_flow = (
            count(src, BASE + args.flows, endpoint=endpoint) - count(src, BASE, endpoint=endpoint)
        ) / args.flows
        rows.append((src, per_flow))
        print(
            f"[instructions] {src}: {per_flow / 1e6:.3f} M per flow ({time.monotonic() - t:.0f} s)",
            file=sys.stderr,
        )
    with_endpoint = ", a webhook endpoint subscribed" if args.webhook_endpoint else ""
    print(
        f"\nInstructions per device-initiated authentication (server + devices), through "
        f"the whole ASGI app, {args.flows} flows{with_endpoint}, valgrind cachegrind\n"
    )
    print("| source | M instructions per flow | vs first |")
    print("|---|---:|---:|")
    for src, per_flow in rows:
        print(f"| {src} | {per_flow / 1e6:.3f} | {per_flow / rows[0][1] - 1:+.1%} |")


if __name__ == "__main__":
    main()
