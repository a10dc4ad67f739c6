"""Issue 14, defect 2: a genuine device must never lock itself as ``software_key_cloned``
when its own ceremonies overlap. Each test runs the overlap for real, against a real server
on 127.0.0.1 (tests/live.py): ``keybound device authenticate`` processes and ``open_device``
threads on one state directory, the overlap forced (every ceremony holds its challenge until
all have one, if they can), then checks that every ceremony succeeded, the device is ACTIVE
and the next login works. Without the SDK's lock (keybound.client.lock) and its reload of the
state under it, these fail: the losers get ``software_key_superseded``, and their saves bring
back a superseded key, which the next login uses and the server takes for a copy."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import pytest

from keybound.client import Device, open_device, preset
from keybound.client.sealed import SealedTransport
from keybound.errors import ClientError, ErrorCode
from keybound.protocol import OperationContext
from tests.live import App, Server, device, device_command, device_env, ok

pytestmark = pytest.mark.server

CONCURRENT = 4
#: how long a ceremony waits for the others to get their challenges too (without the lock
#: they all do at once; with it, none can, and each waits this long once)
GATHER_SECONDS = 1.0
PROMPT = "approve?"


def _app(server: Server) -> App:
    return server.app(enabledRiskData="hwKeyClientStatus,hwKeyServerResult,softwareKeyOverlap")


def _assert_genuine_and_usable(app: App, device_id: str, state: Path) -> None:
    """ACTIVE, never locked, and the next login (a fresh process) works."""
    info = app.rp.device(device_id)
    assert (info["state"], info.get("lockReason")) == ("ACTIVE", None), info
    assert ok(device(state, "authenticate"))["authMethod"] == "DEVICE"
    assert app.rp.device(device_id)["state"] == "ACTIVE"


class Gather:
    """An ``approve`` callback that holds each ceremony between its start and its finish
    until ``parties`` ceremonies have started or ``GATHER_SECONDS`` passed."""

    def __init__(self, parties: int) -> None:
        self.parties = parties
        self.started = 0
        self.condition = threading.Condition()

    def __call__(self, context: OperationContext | None) -> bool:
        with self.condition:
            self.started += 1
            self.condition.notify_all()
            self.condition.wait_for(lambda: self.started >= self.parties, timeout=GATHER_SECONDS)
        return True


# -- processes: `keybound device authenticate` -------------------------------------------


def _stderr_reader(
    process: subprocess.Popen[str], seen: list[str], prompted: threading.Event
) -> threading.Thread:
    def read() -> None:
        assert process.stderr is not None
        while character := process.stderr.read(1):
            seen.append(character)
            if not prompted.is_set() and PROMPT in "".join(seen[-len(PROMPT) :]):
                prompted.set()

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


def test_concurrent_cli_authentications_on_one_state_directory(
    tmp_path: Path, live_server: Server
) -> None:
    """N processes answer N backend-initiated operations of one device at once. Each asks
    "approve?" between its start and its finish; the answers are given together once one
    process asks (and the others had time to: without the lock they all do)."""
    app = _app(live_server)
    state = tmp_path / "device"
    device_id = ok(
        device(
            state,
            "activate",
            app.code(),
            "--keystore",
            "none",
            "--channel-pin-file",
            str(app.pin_file),
        )
    )["deviceId"]
    operations = [
        app.rp.start_operation(
            device_id, preOperationContext={"content": f"payment {n}", "mimeType": "text/plain"}
        )["operationId"]
        for n in range(CONCURRENT)
    ]
    processes = [
        subprocess.Popen(
            device_command(state, "authenticate", "--operation-id", operation),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=device_env(),
            start_new_session=True,
        )
        for operation in operations
    ]
    stderr: list[list[str]] = [[] for _ in processes]
    prompted = [threading.Event() for _ in processes]
    readers = [
        _stderr_reader(p, seen, event)
        for p, seen, event in zip(processes, stderr, prompted, strict=True)
    ]
    try:
        deadline = time.monotonic() + 60
        while not any(event.is_set() for event in prompted):
            assert time.monotonic() < deadline, "no process asked for approval"
            time.sleep(0.05)
        for event in prompted:  # the others had their chance to start too
            event.wait(timeout=3)
        for process in processes:  # approve everything at once
            assert process.stdin is not None
            process.stdin.write("y\n")
            process.stdin.close()
        for process in processes:
            process.wait(timeout=120)
        outputs = [process.stdout.read() if process.stdout else "" for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        for reader in readers:
            reader.join(timeout=5)
        for process in processes:
            for pipe in (process.stdin, process.stdout, process.stderr):
                if pipe is not None:
                    pipe.close()
    for process, output, seen in zip(processes, outputs, stderr, strict=True):
        assert process.returncode == 0, "".join(seen)
        assert '"authMethod": "DEVICE"' in output
    for operation in operations:
        assert app.rp.operation(operation)["state"] == "COMPLETED"
    _assert_genuine_and_usable(app, device_id, state)


def test_concurrent_device_initiated_cli_authentications(
    tmp_path: Path, live_server: Server
) -> None:
    """The issue's own reproduction: N ``keybound device authenticate`` started together on
    one directory (device-initiated, nothing holds them between start and finish)."""
    app = _app(live_server)
    state = tmp_path / "device"
    device_id = ok(
        device(
            state,
            "activate",
            app.code(),
            "--keystore",
            "none",
            "--channel-pin-file",
            str(app.pin_file),
        )
    )["deviceId"]
    processes = [
        subprocess.Popen(
            device_command(state, "authenticate"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=device_env(),
            start_new_session=True,
        )
        for _ in range(CONCURRENT + 2)
    ]
    results = [process.communicate(timeout=120) for process in processes]
    for process, (_, errors) in zip(processes, results, strict=True):
        assert process.returncode == 0, errors
    _assert_genuine_and_usable(app, device_id, state)


# -- threads: open_device ------------------------------------------------------------------


def _in_threads(count: int, work: Callable[[int], Any]) -> list[Any]:
    results: list[Any] = [None] * count

    def run(index: int) -> None:
        try:
            results[index] = work(index)
        except Exception as exc:  # reported by the assertion below
            results[index] = exc

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


def _closing(device: Device) -> None:
    transport = device._transport
    assert isinstance(transport, SealedTransport)
    transport.close()


def test_concurrent_open_device_in_threads(tmp_path: Path, live_server: Server) -> None:
    """N threads each open the device in one directory and authenticate, held between start
    and finish until all have a challenge (or a second passed)."""
    app = _app(live_server)
    state = tmp_path / "device"
    first = open_device(state, channel_pin=app.pin_file, profile=preset("linux"))
    device_id = first.activate(app.code()).device_id
    _closing(first)
    gather = Gather(CONCURRENT)

    def authenticate(_: int) -> str:
        opened = open_device(state, channel_pin=app.pin_file)
        try:
            return opened.authenticate(approve=gather).operation_id
        finally:
            _closing(opened)

    results = _in_threads(CONCURRENT, authenticate)
    assert [r for r in results if not isinstance(r, str)] == []
    for operation in results:
        assert app.rp.operation(operation)["state"] == "COMPLETED"
    _assert_genuine_and_usable(app, device_id, state)


def test_a_device_opened_before_another_authenticated_signs_with_the_current_key(
    tmp_path: Path, live_server: Server
) -> None:
    """Two Device objects on one directory, used one after the other: the older one must
    not sign with the key the other has rotated away (that is a copy, and locks)."""
    app = _app(live_server)
    state = tmp_path / "device"
    early = open_device(state, channel_pin=app.pin_file, profile=preset("linux"))
    device_id = early.activate(app.code()).device_id
    late = open_device(state)  # the channel pin and key store from device-config.json
    late.authenticate()
    early.authenticate()
    late.authenticate()
    for opened in (early, late):
        _closing(opened)
    _assert_genuine_and_usable(app, device_id, state)


def test_a_rotation_outside_the_lock_is_retried_with_the_current_key(
    tmp_path: Path, live_server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    """A writer that does not take the lock (an older SDK) rotates the key and saves it while
    this device holds a challenge: the device sees the newer key before it sends its finish,
    keeps it, and succeeds with it (a new challenge), once."""
    app = _app(live_server)
    state = tmp_path / "device"
    device = open_device(state, channel_pin=app.pin_file, profile=preset("linux"))
    device_id = device.activate(app.code()).device_id
    outsider = open_device(state)
    outsider._store.lock = nullcontext  # type: ignore[method-assign]
    rotations = []

    def meanwhile(context: OperationContext | None) -> bool:
        if not rotations:
            rotations.append(outsider.authenticate().operation_id)
        return True

    caplog.set_level("INFO", logger="keybound.client.device")
    result = device.authenticate(approve=meanwhile)
    assert "trying the current one" in caplog.text  # refused once, retried once
    for operation in (*rotations, result.operation_id):
        assert app.rp.operation(operation)["state"] == "COMPLETED"
    for opened in (device, outsider):
        _closing(opened)
    _assert_genuine_and_usable(app, device_id, state)


def test_a_copy_of_the_directory_is_never_retried_with_its_superseded_key(
    tmp_path: Path, live_server: Server
) -> None:
    """A copy of the state directory (another holder of the same keys, saving elsewhere)
    rotates the key while this device holds a challenge: refused as an overlap, and the SDK
    does not retry with the same, now superseded key (the server would lock the device as
    cloned): software_key_superseded reaches the caller, the device stays ACTIVE."""
    app = _app(live_server)
    state, copy = tmp_path / "device", tmp_path / "copy"
    device = open_device(state, channel_pin=app.pin_file, profile=preset("linux"))
    device_id = device.activate(app.code()).device_id
    copy.mkdir(mode=0o700)
    for name in ("device.json", "device-config.json"):
        (copy / name).write_bytes((state / name).read_bytes())
    other = open_device(copy)

    def meanwhile(context: OperationContext | None) -> bool:
        time.sleep(0.01)
        other.authenticate()
        return True

    with pytest.raises(ClientError) as refused:
        device.authenticate(approve=meanwhile)
    assert refused.value.code is ErrorCode.SOFTWARE_KEY_SUPERSEDED
    info = app.rp.device(device_id)
    assert (info["state"], info.get("lockReason")) == ("ACTIVE", None)
    assert other.authenticate().operation_id  # the copy holds the current key now
    for opened in (device, other):
        _closing(opened)
