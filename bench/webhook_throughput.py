"""Webhook delivery throughput: events/s from the outbox to a local receiver.

Usage:  .venv/bin/python bench/webhook_throughput.py [--events 2000] [--endpoints 1,4]
        [--devices 200] [--database sqlite|postgres]

For each endpoint count: a fresh database with one application whose ``--endpoints``
endpoints (all at one receiver, on different paths) subscribe to ``device.locked``;
``--events`` such events for ``--devices`` devices committed first, then the sender
(``keybound.server.services.outbox.Outbox``, as ``keybound serve`` runs it, in this process)
started and timed until every delivery is stored as delivered: fan-out, claims, signing
(v1, HMAC), the POSTs, the stored outcomes and the delivery log. The receiver is uvicorn in
a process of its own answering 204 to everything, so it costs the sender nothing but the
round trip. Reported: deliveries/s (wall) and the sender's CPU per delivery.

What it is not: a latency figure (each endpoint has one attempt in flight at a time, by
design, so one endpoint's rate is bounded by its round trip), or a run next to request load
(the server's own requests share the cores in production). Bounded: at most ``--timeout``
seconds per run. Results go to stdout as a markdown table; bench/README.md keeps the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

RECEIVER = """
import sys
import uvicorn

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})

uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="error",
            access_log=False)
"""


def start_receiver(port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen([sys.executable, "-c", RECEIVER, str(port)])
    import socket

    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process
        except OSError:
            if time.monotonic() > deadline:
                process.kill()
                raise RuntimeError("receiver did not start") from None
            time.sleep(0.05)


def seed(kb: Any, *, events: int, devices: int, endpoints: int, port: int) -> None:
    from keybound.rpapi import CreateWebhookEndpointRequest, EventName
    from keybound.server.core.ceremony import new_id
    from keybound.server.events.model import Actor, EventType
    from keybound.server.unit import Unit, perform

    kb.admin.create_application("bench")
    for number in range(endpoints):
        kb.admin.create_webhook_endpoint(
            "bench",
            CreateWebhookEndpointRequest(
                url=f"http://127.0.0.1:{port}/hook/{number}", event_types=[EventName.DEVICE_LOCKED]
            ),
        )
    subjects = [new_id() for _ in range(devices)]
    batch = 500
    for start in range(0, events, batch):
        unit = Unit(
            kb.db,
            kb.clock,
            actor=Actor.RELYING_PARTY,
            action=EventType.DEVICE_LOCKED,
            application_id="bench",
            identified=True,
        )

        def emit(u: Unit, first: int = start) -> None:
            u.write()
            for n in range(first, min(first + batch, events)):
                u.emit(
                    EventType.DEVICE_LOCKED,
                    subject=subjects[n % devices],
                    payload={
                        "deviceId": subjects[n % devices],
                        "state": "LOCKED",
                        "lockReason": "RELYING_PARTY",
                        "userId": "u",
                    },
                )

        perform(unit, emit, noise=kb.noise, cause="bench")


def delivered(kb: Any) -> int:
    from sqlalchemy import func, select

    from keybound.storage import tables as t

    d = t.webhook_deliveries
    with kb.db.read() as conn:
        return int(
            conn.execute(
                select(func.count()).select_from(d).where(d.c.state == "delivered")
            ).scalar()
            or 0
        )


async def deliver_all(kb: Any, expected: int, timeout: float) -> tuple[float, float]:
    from keybound.server.services.outbox import Outbox, OutboxSettings

    stop = asyncio.Event()
    began, cpu = time.perf_counter(), time.process_time()
    sender = asyncio.create_task(Outbox(kb, settings=OutboxSettings()).run(stop))
    deadline = began + timeout
    while delivered(kb) < expected:
        if time.perf_counter() > deadline:
            stop.set()
            await sender
            raise RuntimeError(f"only {delivered(kb)} of {expected} delivered in {timeout} s")
        await asyncio.sleep(0.05)
    wall, used = time.perf_counter() - began, time.process_time() - cpu
    stop.set()
    await sender
    return wall, used


def database_url(kind: str, tmp: Path) -> tuple[str, Any]:
    if kind == "sqlite":
        return f"sqlite:///{tmp}/keybound.db", None
    from kbbench.pg import BenchPostgres

    server = BenchPostgres(lifetime=600).start()
    return server.fresh_database(), server


def run(kind: str, *, events: int, devices: int, endpoints: int, timeout: float) -> dict[str, Any]:
    from keybound.server.events.ssrf import EndpointPolicy
    from keybound.server.services import Keybound
    from keybound.server.web.runner import free_port

    loopback = EndpointPolicy(
        allow_http=True, allowed_networks=(ipaddress.ip_network("127.0.0.0/8"),)
    )
    port = free_port()
    receiver = start_receiver(port)
    with tempfile.TemporaryDirectory(prefix="kb-hooks-") as directory:
        tmp = Path(directory)
        url, pg = database_url(kind, tmp)
        kb = Keybound.open(url, master_key_file=tmp / "master.key", endpoint_policy=loopback)
        try:
            seed(kb, events=events, devices=devices, endpoints=endpoints, port=port)
            wall, cpu = asyncio.run(deliver_all(kb, events * endpoints, timeout))
        finally:
            kb.close()
            receiver.terminate()
            receiver.wait(10)
            if pg is not None:
                pg.stop()
    deliveries = events * endpoints
    return {
        "database": kind,
        "endpoints": endpoints,
        "deliveries": deliveries,
        "seconds": wall,
        "per_second": deliveries / wall,
        "cpu_ms": cpu * 1000 / deliveries,
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--events", type=int, default=2000)
    ap.add_argument("--devices", type=int, default=200)
    ap.add_argument("--endpoints", default="1,4", help="endpoint counts to run, comma-separated")
    ap.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    ap.add_argument("--timeout", type=float, default=180.0)
    args = ap.parse_args()
    rows = []
    for endpoints in (int(n) for n in args.endpoints.split(",")):
        row = run(
            args.database,
            events=args.events,
            devices=args.devices,
            endpoints=endpoints,
            timeout=args.timeout,
        )
        rows.append(row)
        print(f"[webhooks] {row}", file=sys.stderr)
    print(
        f"\nWebhook delivery, {args.events} events to a local receiver ({args.database}, "
        f"{os.cpu_count()} cores)\n"
    )
    print("| endpoints | deliveries | seconds | deliveries/s | sender CPU ms/delivery |")
    print("|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['endpoints']} | {row['deliveries']} | {row['seconds']:.1f} | "
            f"{row['per_second']:.0f} | {row['cpu_ms']:.2f} |"
        )


if __name__ == "__main__":
    main()
