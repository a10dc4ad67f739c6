"""Activation guessing against a real ``keybound serve`` (issue 14, defect 1): how many
activation-start guesses per second the server accepts for processing, what they achieve,
and the success bound that follows (docs/protocol.md §10).

Usage:  .venv/bin/python bench/activation_guessing.py [--workers 2] [--codes 200]
                [--seconds 8] [--client-procs 2] [--connections 16] [--src OTHER/src]

A fresh SQLite database, ``keybound serve --workers N`` on 127.0.0.1 (secure channel on), one
application with default settings and ``--codes`` activations issued through the RP API.
Then four phases of ``--seconds`` each, every guess a freshly sealed activation start from
``--client-procs`` processes over ``--connections`` keep-alive connections each:

- ``typed, unknown hints``: random hints nobody was given, random 6-digit codes;
- ``typed, known hints``: every issued activation's hint (as if all had leaked), in turn,
  with random codes -- the attack on the budgets;
- ``link tokens``: random 32-byte tokens;
- ``bare codes``: random codes without a hint, the request of before revision 0006 -- refused
  by the schema now; with ``--src`` pointing at an older checkout's ``src``, the old server's
  figure on the same machine (``git archive <commit> src | tar -x -C /tmp/kb-old``).

Afterwards every issued activation is started through its link, as its genuine user would.
Prints a Markdown table per phase (guesses answered per second, successes, attempts counted
and codes burnt, read from the database) and the bound. Bounded by ``--seconds`` per phase;
the server is stopped by its PID.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import secrets
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from keybound import channel
from keybound import protocol as p
from keybound.server.core.codes import HINT_ALPHABET, MAX_CODE_ATTEMPTS

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from kbbench.server import KeyboundServer  # noqa: E402
from kbbench.wire import Conn, HttpError, LeanDevice, RelyingParty  # noqa: E402

PHASES = (
    "typed, unknown hints",
    "typed, known hints",
    "link tokens",
    "bare codes (the pre-0006 request)",
)
SEALED = b"Content-Type: application/keybound-sealed\r\n"


def _guess(phase: str, app: str, hints: list[str], i: int) -> dict[str, Any]:
    code = f"{secrets.randbelow(10**6):06d}"
    if phase == PHASES[0]:  # 8 characters: longer than any issued hint
        return {
            "applicationId": app,
            "activationCode": code,
            "activationHint": "".join(secrets.choice(HINT_ALPHABET) for _ in range(8)),
        }
    if phase == PHASES[1]:
        return {
            "applicationId": app,
            "activationCode": code,
            "activationHint": hints[i % len(hints)],
        }
    if phase == PHASES[2]:
        return {"applicationId": app, "activationToken": p.b64u_encode(secrets.token_bytes(32))}
    return {"applicationId": app, "activationCode": code}


async def _attack(
    host: str,
    port: int,
    pin_text: str,
    phase: str,
    hints: list[str],
    deadline: float,
    connections: int,
    offset: int,
) -> Counter[str]:
    pin = channel.ChannelPin.from_string(pin_text)
    path = p.DevicePaths.ACTIVATION_START
    outcomes: Counter[str] = Counter()
    sent = [offset]

    async def worker() -> None:
        conn = Conn(host, port)
        try:
            while time.time() < deadline:
                sent[0] += 1
                body = json.dumps(_guess(phase, pin.application_id, hints, sent[0])).encode()
                wire, opener = channel.seal_request(pin, "POST", path, body, now=int(time.time()))
                try:
                    status, _, data = await conn.request("POST", path, wire, SEALED)
                except HttpError:
                    outcomes["connection lost"] += 1
                    continue
                if status != 200:
                    outcomes[f"outer {status}"] += 1
                    continue
                inner = opener.open(data)
                code = json.loads(inner.body).get("code", "") if inner.status != 200 else ""
                outcomes[f"{inner.status} {code}".strip()] += 1
        finally:
            await conn.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    return outcomes


def _client(
    host: str,
    port: int,
    pin: str,
    phase: str,
    hints: list[str],
    deadline: float,
    connections: int,
    offset: int,
    out: Any,
) -> None:
    out.put(asyncio.run(_attack(host, port, pin, phase, hints, deadline, connections, offset)))


async def _issue(server: KeyboundServer, n: int) -> list[dict[str, Any]]:
    rp = RelyingParty(Conn("127.0.0.1", server.port), server.token)
    issued = []
    for _ in range(n):
        user = await rp.call("rp_user", "POST", "/rp/v1/users", {}, expect=201)
        issued.append(
            await rp.call(
                "rp_code", "POST", f"/rp/v1/users/{user['userId']}/activation-codes", expect=201
            )
        )
    await rp.conn.close()
    return issued


async def _genuine(server: KeyboundServer, issued: list[dict[str, Any]]) -> int:
    """Every issued activation, started through its link and finished, as its user would."""
    pin = channel.ChannelPin.from_string(server.pin)
    activated = 0
    for one in issued:
        device = LeanDevice(Conn("127.0.0.1", server.port), pin)
        try:
            await device.activation_finish(await device.activation_start(one["activationToken"]))
            activated += 1
        except HttpError as exc:
            print(f"genuine activation failed: {exc}", file=sys.stderr)
        await device.conn.close()
    return activated


def _counted(db: Path) -> tuple[int, int]:
    """(typed attempts counted, typed codes burnt), from the database itself; zeros for a
    server from before revision 0006 (``--src``)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        if (
            conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'activation_secrets'").fetchone()
            is None
        ):
            return 0, 0
        counted = conn.execute(
            "SELECT count(*) FROM events WHERE type = 'activation.code_failed'"
        ).fetchone()[0]
        burnt = conn.execute(
            "SELECT count(*) FROM activation_secrets WHERE hint IS NULL"
        ).fetchone()[0]
    return int(counted), int(burnt)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--codes", type=int, default=200, help="activations outstanding")
    ap.add_argument("--seconds", type=float, default=8.0, help="per phase (max 60)")
    ap.add_argument("--client-procs", type=int, default=2)
    ap.add_argument("--connections", type=int, default=16, help="per client process")
    ap.add_argument(
        "--src",
        type=Path,
        help="run the server from this checkout's src/ "
        "instead (e.g. one from before revision 0006, for the old figure; "
        "its genuine users are not activated then)",
    )
    args = ap.parse_args()
    if not 0 < args.seconds <= 60:
        raise SystemExit("--seconds must be in (0, 60]")
    with tempfile.TemporaryDirectory(prefix="kb-guessing-") as tmp:
        server = KeyboundServer(Path(tmp), workers=args.workers)
        if args.src is not None:
            server.env["PYTHONPATH"] = str(args.src.resolve())
        server.setup()
        server.start()
        try:
            issued = asyncio.run(_issue(server, args.codes))
            hints = [one.get("activationHint", "7KQ2MX") for one in issued]  # none before 0006
            rows = []
            for phase in PHASES:
                counted_before = _counted(Path(tmp) / "keybound.db")
                out: Any = mp.Queue()
                deadline = time.time() + args.seconds
                procs = [
                    mp.Process(
                        target=_client,
                        args=(
                            "127.0.0.1",
                            server.port,
                            server.pin,
                            phase,
                            hints,
                            deadline,
                            args.connections,
                            i * 1_000_003,
                            out,
                        ),
                    )
                    for i in range(args.client_procs)
                ]
                started = time.time()
                for proc in procs:
                    proc.start()
                outcomes: Counter[str] = Counter()
                for _ in procs:
                    outcomes.update(out.get(timeout=args.seconds + 60))
                for proc in procs:
                    proc.join(timeout=30)
                elapsed = time.time() - started
                counted, burnt = _counted(Path(tmp) / "keybound.db")
                answered = sum(v for k, v in outcomes.items() if k[:3].isdigit())
                rows.append(
                    (
                        phase,
                        answered,
                        answered / elapsed,
                        outcomes.get("200", 0),
                        counted - counted_before[0],
                        burnt,
                        dict(outcomes),
                    )
                )
            genuine = None if args.src else asyncio.run(_genuine(server, issued))
        finally:
            server.stop()
    source = f" from {args.src}" if args.src else ""
    print(
        f"## Activation guessing: `keybound serve --workers {args.workers}`{source}, SQLite, "
        f"{args.codes} activations outstanding (default settings: 6 digits, budget "
        f"{MAX_CODE_ATTEMPTS}), {args.client_procs} client processes x "
        f"{args.connections} connections, {args.seconds:.0f} s per phase\n"
    )
    print(
        "| phase | guesses answered | per second | successes | attempts counted | "
        "codes burnt (total) | answers |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for phase, answered, rate, wins, counted, burnt, answers in rows:
        print(f"| {phase} | {answered} | {rate:.0f} | {wins} | {counted} | {burnt} | {answers} |")
    # what the domain processed (not the schema's refusals of a bare code): the rate at which
    # guesses are compared with codes, were they compared with every code as before 0006
    best = max(rate for phase, _, rate, *_ in rows if phase != PHASES[3])
    if genuine is not None:
        print(f"\nGenuine users afterwards, through their links: {genuine}/{args.codes} activated.")
    print(
        f"\nBound: a typed code is compared at most {MAX_CODE_ATTEMPTS} times in its life, "
        f"so P(an attacker activates against a given code) <= {MAX_CODE_ATTEMPTS}/10^6 = "
        f"1 in {10**6 // MAX_CODE_ATTEMPTS:,} at any rate; across all {args.codes} codes "
        f"<= {args.codes * MAX_CODE_ATTEMPTS / 1e6:.4f} expected. Without the budget, "
        f"{best:.0f} guesses/s against {args.codes} codes would expect "
        f"{best * 900 * args.codes / 1e6:.0f} hits in one 15-minute code lifetime."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
