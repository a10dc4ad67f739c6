"""The HTTP edge under attack: oversized request heads and slowloris, against a real
`keybound serve` (issue 14, defects 3 and 4), with the server's memory and open connections.

Usage (from the repository root):
  .venv-bench/bin/python bench/edge_attacks.py                       # every attack, --workers 2
  .venv-bench/bin/python bench/edge_attacks.py --attacks big-headers --header-mib 100
  .venv-bench/bin/python bench/edge_attacks.py --attacks slow-headers,slow-body \
      --connections 350 --checkpoints 15,30,65
  .venv-bench/bin/python bench/edge_attacks.py --serve-arg=--header-timeout=5  # serve options

Attacks (each on a fresh server, on 127.0.0.1, stopped by its PID at the end):
  big-one      one request whose head carries an 8 MiB header: the answer's status line
  big-headers  --parallel connections at once, each sending a --header-mib MiB header as fast
               as the server reads it: the server's RSS before, at its peak during, and after
  many-headers one request with 10,000 small header fields: the answer's status line
  slow-headers --connections connections dribbling their request head a byte per --interval s
  slow-body    --connections connections with a complete head (Content-Length: 100000) that
               dribble the body a byte per --interval s
  idle         --idle-connections connections that send nothing at all
  slow-read    --slow-read-connections connections (4 KiB receive buffer) that each pipeline
               --slow-read-requests GET /openapi.json at once and never read an answer
For these four: at each checkpoint (seconds since the last connection opened) how many
connections the server still holds (ESTABLISHED on its port, from /proc/net/tcp), how many
the attacker still holds open, the server's RSS (summed over its processes), and what a
well-behaved client gets meanwhile (GET /healthz on a new connection: status, seconds).

To measure another tree's server (e.g. before a change): PYTHONPATH=<tree>/src.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from kbbench import procs  # noqa: E402
from kbbench.server import KeyboundServer  # noqa: E402
from kbbench.stats import table  # noqa: E402

ATTACKS = (
    "big-one",
    "big-headers",
    "many-headers",
    "slow-headers",
    "slow-body",
    "idle",
    "slow-read",
)
MIB = 1024 * 1024


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def rss_mib(server: KeyboundServer) -> float:
    """Resident memory of the server's whole process tree (supervisor + workers), MiB."""
    return sum(procs.status_kib(p, "VmRSS") for p in server.pids()) / 1024


def established(port: int) -> int:
    """Server-side TCP connections on ``port`` that are ESTABLISHED (state 01)."""
    count = 0
    for table_path in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table_path).read_text().splitlines()[1:]:
                fields = line.split()
                local_port = int(fields[1].rsplit(":", 1)[1], 16)
                if local_port == port and fields[3] == "01":
                    count += 1
    return count


def status_line(data: bytes) -> str:
    line = data.split(b"\r\n", 1)[0].decode("latin-1")
    return line or "(closed, no answer)"


def read_answer(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    out = b""
    try:
        while chunk := sock.recv(65536):
            out += chunk
    except TimeoutError:
        pass
    except OSError as exc:
        out += f" <{type(exc).__name__}>".encode()
    return out


class RssSampler(threading.Thread):
    def __init__(self, server: KeyboundServer, every: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.server, self.every = server, every
        self.peak = 0.0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.peak = max(self.peak, rss_mib(self.server))
            time.sleep(self.every)


def send_big_header(port: int, size: int, result: dict[str, Any]) -> None:
    """A request whose one header is ``size`` bytes, sent as fast as the server reads."""
    sent = 0
    with socket.create_connection(("127.0.0.1", port)) as sock:
        started = time.monotonic()
        try:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
            chunk = b"a" * 65536
            while sent < size:
                sock.sendall(chunk)
                sent += len(chunk)
            sock.sendall(b"\r\n\r\n")
        except OSError as exc:
            result["send_error"] = type(exc).__name__
        result["sent_mib"] = sent / MIB
        result["answer"] = status_line(read_answer(sock, 30))
        result["seconds"] = time.monotonic() - started


def attack_big_headers(server: KeyboundServer, *, parallel: int, mib: int) -> dict[str, Any]:
    time.sleep(1)
    before = rss_mib(server)
    sampler = RssSampler(server)
    sampler.start()
    results: list[dict[str, Any]] = [{} for _ in range(parallel)]
    threads = [
        threading.Thread(target=send_big_header, args=(server.port, mib * MIB, r)) for r in results
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    time.sleep(3)
    sampler.done.set()
    sampler.join()
    after = rss_mib(server)
    return {
        "parallel": parallel,
        "header_mib": mib,
        "rss_before_mib": round(before, 1),
        "rss_peak_mib": round(max(sampler.peak, before), 1),
        "rss_after_mib": round(after, 1),
        "connections": results,
    }


def attack_one(server: KeyboundServer, head: bytes) -> str:
    result: dict[str, Any] = {}
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        try:
            sock.sendall(head)
        except OSError as exc:
            result["send_error"] = type(exc).__name__
        return status_line(read_answer(sock, 30))


def slow_head(index: int) -> bytes:
    return b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"".join(
        b"X-Slow-%d: %d\r\n" % (index, i) for i in range(1000)
    )


def slow_body_head() -> bytes:
    return (
        b"POST /rp/v1/users HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100000\r\n\r\n"
    )


def legit_request(port: int) -> str:
    """What a well-behaved client gets now: status and seconds."""
    started = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            answer = status_line(read_answer(sock, 10)).split(" ", 2)
            status = answer[1] if len(answer) > 1 else "-"
    except OSError as exc:
        status = type(exc).__name__
    return f"{status} in {time.monotonic() - started:.2f} s"


def attack_slow(
    server: KeyboundServer,
    *,
    mode: str,
    connections: int,
    interval: float,
    checkpoints: list[float],
    pipelined: int = 200,
) -> dict[str, Any]:
    """Slowloris: every connection sends one more byte every ``interval`` seconds (``idle``:
    none at all)."""
    time.sleep(1)
    before = rss_mib(server)
    socks: list[socket.socket | None] = []
    payloads: list[bytes] = []
    answers: dict[str, int] = {}
    refused = 0
    for i in range(connections):
        sock = socket.socket()
        if mode == "slow-read":  # a small window: the server's answers back up quickly
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        try:
            sock.settimeout(5)
            sock.connect(("127.0.0.1", server.port))
        except OSError:
            sock.close()
            refused += 1
            socks.append(None)
            payloads.append(b"")
            continue
        sock.setblocking(False)
        socks.append(sock)
        if mode == "slow-body":
            sock.sendall(slow_body_head())
            payloads.append(b"{" + b" " * 99_998 + b"}")
        elif mode == "slow-read":
            sock.sendall(b"GET /openapi.json HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" * pipelined)
            payloads.append(b"")
        elif mode == "idle":
            payloads.append(b"")
        else:
            payloads.append(slow_head(i))
    opened = time.monotonic()
    offsets = [0] * connections
    rows: list[dict[str, Any]] = []
    pending = sorted(checkpoints)
    while pending:
        for i, held in enumerate(socks):
            if held is None:
                continue
            sock = held
            closed = False
            if mode == "slow-read":  # never read: only notice a reset
                if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    answers["(reset)"] = answers.get("(reset)", 0) + 1
                    sock.close()
                    socks[i] = None
                continue
            try:
                peek = sock.recv(65536, socket.MSG_PEEK)
                closed = True
                key = status_line(peek) if peek else "(closed, no answer)"
                answers[key] = answers.get(key, 0) + 1
            except BlockingIOError:
                if not payloads[i]:
                    continue
                try:
                    offsets[i] += sock.send(payloads[i][offsets[i] : offsets[i] + 1])
                except OSError:
                    closed = True
                    answers["(send failed)"] = answers.get("(send failed)", 0) + 1
            except OSError as exc:
                closed = True
                key = f"({type(exc).__name__})"
                answers[key] = answers.get(key, 0) + 1
            if closed:
                sock.close()
                socks[i] = None
        elapsed = time.monotonic() - opened
        while pending and elapsed >= pending[0]:
            at = pending.pop(0)
            rows.append(
                {
                    "at_s": at,
                    "server_established": established(server.port),
                    "attacker_open": sum(s is not None for s in socks),
                    "rss_mib": round(rss_mib(server), 1),
                    "legit": legit_request(server.port),
                }
            )
            log(f"  {mode} t={at:.0f}s {rows[-1]}")
        time.sleep(max(0.0, interval - (time.monotonic() - opened - elapsed)))
    for held in socks:
        if held is not None:
            held.close()
    return {
        "mode": mode,
        "connections": connections,
        "refused_at_connect": refused,
        "interval_s": interval,
        "rss_before_mib": round(before, 1),
        "checkpoints": rows,
        "answers": answers,
    }


def fresh_server(args: argparse.Namespace, workdir: Path, name: str) -> KeyboundServer:
    server = KeyboundServer(workdir / name, workers=args.workers, serve_args=tuple(args.serve_arg))
    server.start()
    return server


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--attacks", default=",".join(ATTACKS))
    ap.add_argument("--workers", type=int, default=2, help="keybound serve --workers")
    ap.add_argument("--parallel", type=int, default=4, help="big-headers: connections")
    ap.add_argument("--header-mib", type=int, default=100, help="big-headers: MiB each")
    ap.add_argument("--connections", type=int, default=350, help="slow-*: connections")
    ap.add_argument("--idle-connections", type=int, default=2500, help="idle: connections")
    ap.add_argument("--slow-read-connections", type=int, default=50, help="slow-read: connections")
    ap.add_argument(
        "--slow-read-requests", type=int, default=200, help="slow-read: requests pipelined on each"
    )
    ap.add_argument("--interval", type=float, default=1.0, help="slow-*: seconds per byte")
    ap.add_argument("--checkpoints", default="5,15,30,65", help="slow-*, idle: seconds")
    ap.add_argument(
        "--serve-arg",
        action="append",
        default=[],
        help="an option for keybound serve (repeatable; --serve-arg=--x=1)",
    )
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    attacks = [a for a in args.attacks.split(",") if a]
    unknown = set(attacks) - set(ATTACKS)
    if unknown:
        ap.error(f"unknown attacks {sorted(unknown)}; choose from {', '.join(ATTACKS)}")
    checkpoints = [float(x) for x in args.checkpoints.split(",")]
    results: dict[str, Any] = {"workers": args.workers, "serve_args": args.serve_arg}
    with tempfile.TemporaryDirectory(prefix="kb-edge-") as tmp:
        workdir = Path(tmp)
        for attack in attacks:
            log(f"{attack} ...")
            with fresh_server(args, workdir, attack) as server:
                if attack == "big-one":
                    head = (
                        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: "
                        + b"a" * 8 * MIB
                        + b"\r\nConnection: close\r\n\r\n"
                    )
                    results[attack] = {"answer": attack_one(server, head)}
                elif attack == "many-headers":
                    head = (
                        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                        + b"".join(b"X-%d: a\r\n" % i for i in range(10_000))
                        + b"Connection: close\r\n\r\n"
                    )
                    results[attack] = {"answer": attack_one(server, head)}
                elif attack == "big-headers":
                    results[attack] = attack_big_headers(
                        server, parallel=args.parallel, mib=args.header_mib
                    )
                else:
                    results[attack] = attack_slow(
                        server,
                        mode=attack,
                        connections={
                            "idle": args.idle_connections,
                            "slow-read": args.slow_read_connections,
                        }.get(attack, args.connections),
                        pipelined=args.slow_read_requests,
                        interval=args.interval,
                        checkpoints=checkpoints,
                    )
    report(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


def report(results: dict[str, Any]) -> None:
    print(
        f"## HTTP edge under attack (keybound serve --workers {results['workers']} "
        f"{' '.join(results['serve_args'])})\n"
    )
    for name in ("big-one", "many-headers"):
        if name in results:
            print(f"- {name}: `{results[name]['answer']}`")
    if "big-headers" in results:
        r = results["big-headers"]
        print(f"\n### {r['parallel']} parallel {r['header_mib']} MiB headers\n")
        print(
            table(
                ["RSS before MiB", "peak during", "after"],
                [[str(r["rss_before_mib"]), str(r["rss_peak_mib"]), str(r["rss_after_mib"])]],
            )
        )
        print()
        print(
            table(
                ["connection", "MiB sent", "send error", "answer", "s"],
                [
                    [
                        str(i),
                        f"{c['sent_mib']:.2f}",
                        c.get("send_error", ""),
                        c["answer"],
                        f"{c['seconds']:.1f}",
                    ]
                    for i, c in enumerate(r["connections"])
                ],
            )
        )
    for name in ("slow-headers", "slow-body", "idle", "slow-read"):
        if name in results:
            r = results[name]
            pace = {"idle": "nothing sent", "slow-read": "answers never read"}.get(
                name, f"a byte every {r['interval_s']} s"
            )
            print(
                f"\n### {name}: {r['connections']} connections, {pace} (refused at connect: "
                f"{r['refused_at_connect']}; RSS before {r['rss_before_mib']} MiB)\n"
            )
            print(
                table(
                    [
                        "s after opening",
                        "server holds",
                        "attacker holds",
                        "RSS MiB",
                        "GET /healthz meanwhile",
                    ],
                    [
                        [
                            f"{c['at_s']:.0f}",
                            str(c["server_established"]),
                            str(c["attacker_open"]),
                            str(c["rss_mib"]),
                            c["legit"],
                        ]
                        for c in r["checkpoints"]
                    ],
                )
            )
            print("\nanswers: " + ", ".join(f"`{k}` x{v}" for k, v in r["answers"].items()))
    print()


if __name__ == "__main__":
    raise SystemExit(main())
