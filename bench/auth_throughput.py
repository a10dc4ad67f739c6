"""Full device-initiated authentication throughput: secure channel ON vs the plaintext switch.

Usage:  .venv/bin/python bench/auth_throughput.py [--seconds 15] [--flows 3000] [--threads 4]
                                                  [--modes channel,plaintext]

For each mode: a fresh SQLite database (one application, one E2E key), a real `keybound serve`
subprocess on 127.0.0.1 (with `--allow-plaintext` for the plaintext mode), and ``--threads``
client threads, each a lean protocol-level device (software + hardware P-256 keys, rotating
software key; the SDK's wire messages from ``keybound.protocol``) that runs start + finish in a
loop over keep-alive HTTP. In channel mode every request is sealed to the pinned key and every
response opened. Stops after ``--flows`` flows or ``--seconds`` seconds, whichever is first.

Prints a Markdown table: flows/s, p50/p99 latency of each step (client-observed, including
seal/open), and the server process's CPU time per flow (utime + stime from /proc/<pid>/stat).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric import ec

from keybound import channel, crypto
from keybound import protocol as p
from keybound.server.services import Keybound
from keybound.server.web.runner import free_port

APP = "bench"


def server_cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (and its reaped children) from /proc, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
    return (utime + stime + cutime + cstime) / os.sysconf("SC_CLK_TCK")


class Wire:
    """POSTs protocol messages, sealed (channel mode) or as plaintext JSON."""

    def __init__(self, url: str, pin: channel.ChannelPin | None) -> None:
        self.http = httpx.Client(base_url=url, timeout=30)
        self.pin = pin

    def post(self, path: str, message: p.Message, response_type: type[Any]) -> Any:
        body = json.dumps(message.to_wire(), separators=(",", ":")).encode()
        if self.pin is None:
            answer = self.http.post(
                path, content=body, headers={"content-type": "application/json"}
            )
            status, content = answer.status_code, answer.content
        else:
            wire, opener = channel.seal_request(self.pin, "POST", path, body, now=int(time.time()))
            answer = self.http.post(
                path, content=wire, headers={"content-type": channel.SEALED_MEDIA_TYPE}
            )
            if answer.status_code != 200:
                raise RuntimeError(f"{path}: outer HTTP {answer.status_code} {answer.text}")
            opened = opener.open(answer.content)
            status, content = opened.status, opened.body
        if status != 200:
            raise RuntimeError(f"{path}: HTTP {status} {content[:200]!r}")
        return response_type.model_validate_json(content)


@dataclass
class LeanDevice:
    wire: Wire
    sw: ec.EllipticCurvePrivateKey = field(default_factory=crypto.generate_p256)
    hw: ec.EllipticCurvePrivateKey = field(default_factory=crypto.generate_p256)
    device_id: str = ""

    def activate(self, token: str) -> None:
        start = self.wire.post(
            p.DevicePaths.ACTIVATION_START,
            p.ActivationStartRequest(application_id=APP, activation_token=p.b64u_decode(token)),
            p.ActivationStartResponse,
        )
        self.device_id = start.device_id
        status = p.HwKeyClientStatus.OK
        tbs = p.transcript(
            p.Purpose.ACTIVATION,
            application_id=APP,
            device_id=start.device_id,
            operation_id=start.operation_id,
            challenge=start.challenge,
            context_digest=p.NO_CONTEXT_HASH,
            software_public_key=crypto.public_der(self.sw),
            hardware_public_key=crypto.public_der(self.hw),
            hw_key_client_status=status.value,
        )
        self.wire.post(
            p.DevicePaths.ACTIVATION_FINISH,
            p.ActivationFinishRequest(
                application_id=APP,
                operation_id=start.operation_id,
                device_id=start.device_id,
                software_public_key=crypto.public_der(self.sw),
                software_signature=crypto.sign_p256(self.sw, tbs),
                hardware_public_key=crypto.public_der(self.hw),
                hardware_signature=crypto.sign_p256(self.hw, tbs),
                hw_key_client_status=status,
                device_profile=p.DeviceProfile(platform=p.Platform.LINUX, os_version="6"),
            ),
            p.ActivationFinishResponse,
        )

    def authenticate(self) -> tuple[float, float]:
        """One device-initiated authentication; seconds spent in (start, finish)."""
        t0 = time.perf_counter()
        start = self.wire.post(
            p.DevicePaths.AUTHENTICATION_START,
            p.AuthenticationStartRequest(application_id=APP, device_id=self.device_id),
            p.AuthenticationStartResponse,
        )
        t1 = time.perf_counter()
        following = crypto.generate_p256()
        status = p.HwKeyClientStatus.OK
        tbs = p.transcript(
            p.Purpose.AUTHENTICATION,
            application_id=APP,
            device_id=self.device_id,
            operation_id=start.operation_id,
            challenge=start.challenge,
            context_digest=p.context_hash(start.pre_operation_context),
            software_public_key=crypto.public_der(following),
            auth_method=p.AuthMethod.DEVICE.value,
            hw_key_client_status=status.value,
        )
        request = p.AuthenticationFinishRequest(
            application_id=APP,
            device_id=self.device_id,
            operation_id=start.operation_id,
            auth_method=p.AuthMethod.DEVICE,
            software_key_id=crypto.key_id(crypto.public_der(self.sw)),
            next_software_public_key=crypto.public_der(following),
            software_signature=crypto.sign_p256(self.sw, tbs),
            hardware_signature=crypto.sign_p256(self.hw, tbs),
            hw_key_client_status=status,
        )
        t2 = time.perf_counter()
        self.wire.post(p.DevicePaths.AUTHENTICATION_FINISH, request, p.AuthenticationFinishResponse)
        t3 = time.perf_counter()
        self.sw = following
        return t1 - t0, t3 - t2


@dataclass
class Result:
    mode: str
    flows: int
    seconds: float
    start: list[float]
    finish: list[float]
    cpu_seconds: float


def start_server(db_url: str, port: int, plaintext: bool, env: dict[str, str]) -> Any:
    args = [
        sys.executable,
        "-m",
        "keybound.cli",
        "--database-url",
        db_url,
        "serve",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    if plaintext:
        args.append("--allow-plaintext")
    server = subprocess.Popen(
        args, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("keybound serve did not start")
        time.sleep(0.05)


def run_mode(mode: str, args: argparse.Namespace, work: Path) -> Result:
    db_url = f"sqlite:///{work / mode / 'bench.db'}"
    env = {"KEYBOUND_MASTER_KEY_FILE": str(work / mode / "master.key")}
    kb = Keybound.open(db_url, master_key_file=Path(env["KEYBOUND_MASTER_KEY_FILE"]))
    kb.admin.create_application(APP)
    token = kb.admin.create_api_key(APP).token
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    key = kb.admin.create_e2e_key(APP)
    pin = kb.admin.e2e_pin(key.key_id, server_url=url) if mode == "channel" else None
    kb.close()
    server = start_server(db_url, port, mode == "plaintext", env)
    try:
        rp = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"})
        devices = []
        for _ in range(args.threads):
            user = rp.post("/rp/v1/users", json={}).json()["userId"]
            token = rp.post(f"/rp/v1/users/{user}/activation-codes").json()["activationToken"]
            device = LeanDevice(Wire(url, pin))
            device.activate(token)
            for _ in range(20):  # warm up: connections, caches, the keyring
                device.authenticate()
            devices.append(device)
        rp.close()
        starts: list[float] = []
        finishes: list[float] = []
        lock = threading.Lock()
        done = threading.Event()
        deadline = time.monotonic() + args.seconds

        def loop(device: LeanDevice) -> None:
            while not done.is_set() and time.monotonic() < deadline:
                start, finish = device.authenticate()
                with lock:
                    starts.append(start)
                    finishes.append(finish)
                    if len(starts) >= args.flows:
                        done.set()

        threads = [threading.Thread(target=loop, args=(d,)) for d in devices]
        cpu0, t0 = server_cpu_seconds(server.pid), time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed, cpu1 = time.perf_counter() - t0, server_cpu_seconds(server.pid)
        for device in devices:
            device.wire.http.close()
        return Result(
            mode=mode,
            flows=len(starts),
            seconds=elapsed,
            start=starts,
            finish=finishes,
            cpu_seconds=cpu1 - cpu0,
        )
    finally:
        server.terminate()
        server.wait(timeout=15)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--flows", type=int, default=3000)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--modes", default="channel,plaintext")
    args = parser.parse_args()
    print(
        f"keybound full authentication (start + finish), {args.threads} client threads, "
        f"<= {args.flows} flows or {args.seconds:.0f} s per mode; one `keybound serve` "
        f"process, SQLite; Python {platform.python_version()}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs"
    )
    print()
    print(
        "| mode | flows | flows/s | start p50 ms | start p99 ms | finish p50 ms | "
        "finish p99 ms | server CPU ms/flow |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory(prefix="keybound-bench-") as tmp:
        for mode in args.modes.split(","):
            (Path(tmp) / mode).mkdir()
            r = run_mode(mode, args, Path(tmp))
            ms = 1000.0
            print(
                f"| {r.mode} | {r.flows} | {r.flows / r.seconds:.0f} | "
                f"{percentile(r.start, 0.5) * ms:.2f} | {percentile(r.start, 0.99) * ms:.2f} | "
                f"{percentile(r.finish, 0.5) * ms:.2f} | "
                f"{percentile(r.finish, 0.99) * ms:.2f} | "
                f"{r.cpu_seconds * ms / max(r.flows, 1):.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
