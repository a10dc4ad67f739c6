"""Where the server's CPU per authentication goes, without HTTP: the secure channel's handler
(open + replay mark + domain service + database + seal) called directly, in this process.

Usage:  .venv-bench/bin/python bench/server_path.py [--flows 3000] [--devices 16]

A fresh SQLite file (the embedded default) with the server's group commit on, but the WAL
synced only once, at the end: the server shares one fsync among the requests that commit
meanwhile, so its cost per flow depends on the concurrency; bench/loadgen.py measures it.
The WAL is checkpointed as often as the server does it (every 200 commits), outside the
measured CPU, as the server runs it in a background thread.
One application and E2E key, ``--devices`` lean devices (bench/kbbench/wire.py: the SDK's messages
and crypto, software key rotated every time, hardware key) activated through the same path.
Then ``--flows`` device-initiated authentications (start + finish) round-robin over them,
each request sealed by the device, handled by ``SecureChannel._handle`` exactly as the server
does after reading the HTTP body, and the answer opened by the device.

Prints CPU per flow next to the crypto floor from bench/kbbench/floor.py: the handler's own
(process time around each ``_handle`` call, so without the devices' crypto), the devices'
crypto, and the whole process (both, plus the loop). The difference between the handler's
figure and bench/loadgen.py's server CPU per flow is the HTTP stack (uvicorn, ASGI), the
group-commit fsyncs and the background WAL checkpoints (neither is measured here).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from kbbench.inproc import activated_devices, fresh_keybound
from kbbench.wire import SEALED

from keybound.server.web.device import DEVICE_ROUTES, DeviceApp, SealedCodec
from keybound.server.web.durable import CHECKPOINT_COMMITS

#: a WAL checkpoint every this many flows (the server's: durable.CHECKPOINT_COMMITS commits,
#: two per flow), not counted: the server runs it in the background
CHECKPOINT_FLOWS = CHECKPOINT_COMMITS // 2


class DirectConn:
    """Stands in for the HTTP connection: the sealed body goes straight to the handler."""

    def __init__(self, app: DeviceApp) -> None:
        self.app = app
        self.codec = SealedCodec()
        self.server_s = 0.0

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: bytes = b""
    ) -> tuple[int, dict[bytes, bytes], bytes]:
        t = time.process_time()
        status, answer, _ = self.app.handle(self.codec, body, path, DEVICE_ROUTES[path])
        self.server_s += time.process_time() - t
        return status, {b"content-type": SEALED.encode()}, answer


async def run(flows: int, devices: int) -> dict[str, Any]:
    with fresh_keybound("kb-path-") as (kb, pin):
        kb.db.defer_sync()
        conn = DirectConn(DeviceApp(kb))
        fleet = await activated_devices(kb, pin, conn, devices)
        conn.server_s = 0.0
        for device in fleet:
            device.crypto_s = 0.0
        wall, cpu = time.perf_counter(), time.process_time()
        checkpoint_s = 0.0
        for i in range(flows):
            device = fleet[i % devices]
            await device.auth_finish(await device.auth_start())
            if i % CHECKPOINT_FLOWS == CHECKPOINT_FLOWS - 1:  # as the server does, off the path
                t = time.process_time()
                kb.db.checkpoint()
                checkpoint_s += time.process_time() - t
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu - checkpoint_s
        kb.db.sync()
    client_s = sum(d.crypto_s for d in fleet)
    return {
        "flows": flows,
        "wall_s": wall,
        "handler_ms": 1000 * conn.server_s / flows,
        "client_crypto_ms": 1000 * client_s / flows,
        "process_ms": 1000 * cpu / flows,
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--flows", type=int, default=3000)
    ap.add_argument("--devices", type=int, default=16)
    args = ap.parse_args()
    from kbbench.floor import measure, per_flow

    floor = per_flow(measure())["device"] / 1000
    r = asyncio.run(run(args.flows, args.devices))
    print(
        f"\n{r['flows']} device-initiated authentications in {r['wall_s']:.1f} s, "
        "no HTTP, embedded SQLite (group commit; fsync not included)\n"
    )
    print("| per flow | ms | ÷ crypto floor |")
    print("|---|---:|---:|")
    print(
        f"| server handler (open, replay mark, service, database, seal) | "
        f"{r['handler_ms']:.3f} | {r['handler_ms'] / floor:.1f} |"
    )
    print(f"| crypto floor (server side, same run) | {floor:.3f} | 1.0 |")
    print(f"| device crypto (seal, sign, open; not server) | {r['client_crypto_ms']:.3f} | |")
    print(f"| whole process (CPU) | {r['process_ms']:.3f} | |")


if __name__ == "__main__":
    main()
