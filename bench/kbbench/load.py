"""The load engine: client processes, each an asyncio loop driving several virtual clients
(one device + one relying party each, own keep-alive connections) through full flows
against a running server, bounded by a flow count and a deadline.

Load model (the same as the privacyIDEA harness in ../shared/peers/privacyidea/bench.py):
``concurrency`` virtual clients loop full flows back to back for ``warmup + seconds``; only
flows that complete inside the measured window count; server and client CPU are sampled from
/proc at the window's start and end.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import os
import time
import traceback
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvloop

from kbbench import procs
from kbbench.seeding import load_key
from kbbench.stats import pct, summary_ms
from kbbench.wire import Conn, HttpError, LeanDevice, RelyingParty
from keybound.channel import ChannelPin

#: Steps of each flow, in order (client-observed latency of each HTTP exchange, including
#: sealing the request and opening the answer).
STEPS: dict[str, tuple[str, ...]] = {
    "device": ("auth_start", "auth_finish"),
    "backend": ("rp_create", "pending", "auth_start", "auth_finish", "rp_result"),
    "activation": ("rp_user", "rp_code", "act_start", "act_finish"),
}
FLOW_TITLES = {
    "device": "device-initiated authentication (start + finish, sw + hw key, rotation)",
    "backend": "backend-initiated authentication (RP create, device pending + start + finish, "
    "RP reads result)",
    "activation": "activation (RP user + code, device start + finish)",
}
PRE_CONTEXT = {"content": "Sign in to bench.example from 127.0.0.1?", "mimeType": "text/plain"}


@dataclass
class Target:
    host: str
    port: int
    token: str
    pin: str
    pool_file: str = ""  # --devices seeded: the seed key pool (private keys)


class VirtualClient:
    """One device and its relying party, each with its own connection."""

    def __init__(self, target: Target, pin: ChannelPin) -> None:
        self.rp = RelyingParty(Conn(target.host, target.port), target.token)
        self.dev = LeanDevice(Conn(target.host, target.port), pin)
        self.seeded: deque[tuple[str, Any, Any]] = deque()  # --devices seeded

    async def seeded_auth(self, tm: dict[str, float]) -> None:
        """Device-initiated authentication as the next pre-seeded registration (its keys
        come from the seed key pool); it goes to the back of the queue with its new key."""
        if not self.seeded:
            raise HttpError("seeded", "no seeded registration left")
        device_id, sw, hw = self.seeded.popleft()
        self.dev.device_id, self.dev.sw, self.dev.hw = device_id, sw, hw
        await self.device_auth(tm)
        self.seeded.append((device_id, self.dev.sw, hw))

    async def activate(self, tm: dict[str, float]) -> None:
        t = time.perf_counter()
        user = await self.rp.call("rp_user", "POST", "/rp/v1/users", {}, expect=201)
        t1 = time.perf_counter()
        code = await self.rp.call(
            "rp_code", "POST", f"/rp/v1/users/{user['userId']}/activation-codes", expect=201
        )
        t2 = time.perf_counter()
        start = await self.dev.activation_start(code["activationToken"])
        t3 = time.perf_counter()
        await self.dev.activation_finish(start)
        t4 = time.perf_counter()
        tm.update(rp_user=t1 - t, rp_code=t2 - t1, act_start=t3 - t2, act_finish=t4 - t3)

    async def device_auth(self, tm: dict[str, float]) -> None:
        t = time.perf_counter()
        start = await self.dev.auth_start()
        t1 = time.perf_counter()
        await self.dev.auth_finish(start)
        tm.update(auth_start=t1 - t, auth_finish=time.perf_counter() - t1)

    async def backend_auth(self, tm: dict[str, float]) -> None:
        t = time.perf_counter()
        op = await self.rp.call(
            "rp_create",
            "POST",
            f"/rp/v1/devices/{self.dev.device_id}/operations",
            {"preOperationContext": PRE_CONTEXT},
            expect=201,
        )
        t1 = time.perf_counter()
        pending = await self.dev.pending()
        if not any(o["operationId"] == op["operationId"] for o in pending):
            raise HttpError("pending", f"operation not pending: {pending}")
        t2 = time.perf_counter()
        start = await self.dev.auth_start(op["operationId"])
        t3 = time.perf_counter()
        await self.dev.auth_finish(start)
        t4 = time.perf_counter()
        res = await self.rp.call("rp_result", "GET", f"/rp/v1/operations/{op['operationId']}")
        if res.get("state") != "COMPLETED":
            raise HttpError("rp_result", f"state {res.get('state')}")
        tm.update(
            rp_create=t1 - t,
            pending=t2 - t1,
            auth_start=t3 - t2,
            auth_finish=t4 - t3,
            rp_result=time.perf_counter() - t4,
        )

    async def close(self) -> None:
        await self.rp.conn.close()
        await self.dev.conn.close()


def _failure(exc: Exception) -> tuple[str, str]:
    """(step, why) of a failed flow; an unexpected exception's traceback is printed."""
    if isinstance(exc, HttpError):
        return exc.step, exc.why
    traceback.print_exc(limit=2)
    return "exception", repr(exc)[:200]


def _client_main(
    wid: int,
    flow: str,
    n_clients: int,
    seeded: list[tuple[str, int, int]],
    target: Target,
    times: Any,
    counter: Any,
    finished: Any,
    max_flows: int,
    out_q: Any,
    ready_q: Any,
    go: Any,
    release: Any,
) -> None:
    """One client process: ``n_clients`` virtual clients on one asyncio loop."""
    pin = ChannelPin.from_string(target.pin)
    # uvloop (installed with uvicorn[standard], which the server uses too): the generator
    # shares the server's cores, so its own overhead is kept as low as the server's
    loop = uvloop.new_event_loop()
    vcs = [VirtualClient(target, pin) for _ in range(n_clients)]
    recs: list[tuple[Any, ...]] = []

    if seeded:
        pool = json.loads(Path(target.pool_file).read_text())
        for i, (device_id, s, h) in enumerate(seeded):
            vcs[i % n_clients].seeded.append(
                (device_id, load_key(pool["sw"][s]), load_key(pool["hw"][h]))
            )

    async def setup() -> None:
        if flow != "activation" and not seeded:
            for vc in vcs:  # each device is activated once, outside the measurement
                await vc.activate({})

    async def loop_flows(vc: VirtualClient) -> None:
        run = {
            "device": vc.seeded_auth if seeded else vc.device_auth,
            "backend": vc.backend_auth,
            "activation": vc.activate,
        }[flow]
        while time.time() < times[0]:
            await asyncio.sleep(0.001)
        while time.time() < times[1]:
            if flow != "activation" and not seeded and not vc.dev.device_id:
                # the last flow failed, leaving the key state unknown: start afresh (a
                # failed activation is recorded too, and tried again after a pause)
                start = time.time()
                try:
                    await vc.activate({})
                except Exception as exc:
                    recs.append((start, time.time(), False, {}, 0.0, *_failure(exc)))
                    await asyncio.sleep(0.05)
                    continue
            with counter.get_lock():
                if counter.value >= max_flows:
                    break
                counter.value += 1
            tm: dict[str, float] = {}
            vc.dev.crypto_s = 0.0
            start = time.time()
            try:
                await run(tm)
                recs.append((start, time.time(), True, tm, vc.dev.crypto_s, "", ""))
            except Exception as exc:
                recs.append((start, time.time(), False, tm, 0.0, *_failure(exc)))
                if flow != "activation" and not seeded:
                    vc.dev.device_id = ""

    async def main() -> None:
        await asyncio.gather(*(loop_flows(vc) for vc in vcs))
        for vc in vcs:
            await vc.close()

    try:
        loop.run_until_complete(setup())
        ready_q.put((wid, None))
    except Exception as exc:
        ready_q.put((wid, f"setup failed: {exc!r}"))
        return
    go.wait(300)
    loop.run_until_complete(main())
    with finished.get_lock():
        finished.value += 1
    out_q.put((wid, recs))
    release.wait(120)  # stay alive until the main process has sampled our CPU time


def run_level(
    server: Any,
    flow: str,
    concurrency: int,
    *,
    seconds: float,
    warmup: float,
    max_flows: int,
    client_procs: int,
    floor_us: float | None = None,
    seeded: list[tuple[str, int, int]] | None = None,
    pool_file: str = "",
) -> dict[str, Any]:
    """One measured run at one concurrency level. ``server`` is a running KeyboundServer.
    ``seeded``: device-initiated flows as these pre-seeded registrations (device id, software
    and hardware pool index), spread over the virtual clients, instead of each virtual
    client's own freshly activated device."""
    target = Target("127.0.0.1", server.port, server.token, server.pin, pool_file)
    nproc = max(1, min(concurrency, client_procs))
    share = [concurrency // nproc + (1 if i < concurrency % nproc else 0) for i in range(nproc)]
    seeded = seeded or []
    seeded_share = [seeded[i::nproc] for i in range(nproc)]
    ctx = mp.get_context("fork")
    out_q, ready_q = ctx.Queue(), ctx.Queue()
    go, release = ctx.Event(), ctx.Event()
    times = ctx.Array("d", [float("inf"), float("inf")])
    counter = ctx.Value("l", 0)
    finished = ctx.Value("l", 0)
    workers = [
        ctx.Process(
            target=_client_main,
            daemon=True,
            args=(
                w,
                flow,
                share[w],
                seeded_share[w],
                target,
                times,
                counter,
                finished,
                max_flows,
                out_q,
                ready_q,
                go,
                release,
            ),
        )
        for w in range(nproc)
    ]
    for w in workers:
        w.start()
    try:
        for _ in workers:
            wid, err = ready_q.get(timeout=300)
            if err:
                raise RuntimeError(f"client process {wid}: {err}")
        t_start = time.time() + 0.2
        t_meas0 = t_start + warmup
        t_end = t_meas0 + seconds
        times[0], times[1] = t_start, t_end
        go.set()

        def sample() -> tuple[float, float, tuple[float, float], float, float, float | None]:
            return (
                server.cpu_seconds(),
                sum(procs.proc_cpu(w.pid or 0) for w in workers),
                procs.machine_cpu(),
                time.time(),
                sum(procs.status_kib(p, "VmRSS") for p in server.pids()) / 1024,
                server.db_cpu_seconds(),
            )

        while time.time() < t_meas0:
            time.sleep(0.005)
        s0 = sample()
        # the window ends at t_end, or earlier once every client process has stopped
        # (flow cap reached) -- then it ends with the last flow
        while time.time() < t_end and finished.value < nproc:
            time.sleep(0.01)
        s1 = sample()
        rss = server.peak_rss_kib()
    finally:
        times[1] = min(times[1], time.time())  # on an error or Ctrl-C: no new flows
        release.set()
        results: list[tuple[int, list[Any]]] = []
        deadline = time.time() + 60
        while len(results) < len(workers) and time.time() < deadline:
            try:
                results.append(out_q.get(timeout=max(0.1, deadline - time.time())))
            except Exception:
                break
        go.set()
        for w in workers:
            w.join(timeout=10)
            if w.is_alive():
                w.terminate()  # our own child, by its handle
    return _summarise(flow, concurrency, nproc, server, s0, s1, results, rss, floor_us)


def _summarise(
    flow: str,
    concurrency: int,
    nproc: int,
    server: Any,
    s0: Any,
    s1: Any,
    results: list[tuple[int, list[Any]]],
    rss: dict[int, int],
    floor_us: float | None,
) -> dict[str, Any]:
    window = s1[3] - s0[3]
    recs = [r for _, rs in results for r in rs]
    in_win = [r for r in recs if s0[3] <= r[1] <= s1[3]]
    ok = [r for r in in_win if r[2]]
    fails = [r for r in in_win if not r[2]]
    fail_by: dict[str, int] = {}
    for r in fails:
        k = f"{r[5]}: {r[6][:90]}"
        fail_by[k] = fail_by.get(k, 0) + 1
    steps = {s: summary_ms([r[3][s] for r in ok if s in r[3]]) for s in STEPS[flow]}
    steps["device_crypto"] = summary_ms([r[4] for r in ok])
    lat = [r[1] - r[0] for r in ok]
    n = len(ok)
    srv = s1[0] - s0[0]
    cli = s1[1] - s0[1]
    # a database server in its own processes (PostgreSQL); None: embedded, inside ``srv``
    db = None if s0[5] is None or s1[5] is None else s1[5] - s0[5]
    tot = s1[2][0] - s0[2][0]
    busy = tot - (s1[2][1] - s0[2][1])
    ncpu = os.cpu_count() or 1
    srv_ms = 1e3 * srv / n if n else float("nan")
    requests = {"device": 2, "backend": 5, "activation": 4}[flow]
    workers_rss = {str(p): kib / 1024 for p, kib in rss.items()}
    res: dict[str, Any] = {
        "implementation": "keybound",
        "backend": getattr(server, "backend", "sqlite"),
        "flow": flow,
        "concurrency": concurrency,
        "window_s": window,
        "flows_ok": n,
        "flows_failed": len(fails),
        "flows_per_s": n / window if window else 0.0,
        "requests_per_s": requests * n / window if window else 0.0,
        "flow_p50_ms": pct(lat, 50) * 1e3,
        "flow_p99_ms": pct(lat, 99) * 1e3,
        "steps": steps,
        "failures": fail_by,
        "server_workers": server.workers,
        "client_procs": nproc,
        "cpu": {
            "server_cpu_s": srv,
            "client_cpu_s": cli,
            "machine_busy_pct": 100 * busy / tot if tot else 0.0,
            "server_cores_used": srv / window if window else 0.0,
            "client_cores_used": cli / window if window else 0.0,
            # CPU of everything else on the machine (other jobs): a noise indicator
            "other_cores_used": max(0.0, busy / tot * ncpu - (srv + cli + (db or 0.0)) / window)
            if tot and window
            else 0.0,
            "server_cpu_ms_per_flow": srv_ms,
            "client_cpu_ms_per_flow": 1e3 * cli / n if n else float("nan"),
            "db_cpu_s": db,
            "db_cores_used": db / window if db is not None and window else None,
            "db_cpu_ms_per_flow": (1e3 * db / n if n else float("nan")) if db is not None else None,
            "server_plus_db_cpu_ms_per_flow": (1e3 * (srv + (db or 0.0)) / n)
            if n
            else float("nan"),
        },
        "server_peak_rss_mib": workers_rss,
        "server_peak_rss_mib_max": max(workers_rss.values()) if workers_rss else 0.0,
        # RSS of all server processes together at the window's start and end (growth check)
        "server_rss_mib_window": [s0[4], s1[4]],
    }
    if floor_us:
        res["crypto_floor_us_per_flow"] = floor_us
        res["server_cpu_over_floor"] = srv_ms * 1e3 / floor_us if n else float("nan")
    return res
