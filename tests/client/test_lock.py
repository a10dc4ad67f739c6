"""The state directory's ceremony lock (keybound.client.lock): exclusive across processes
and threads, reentrant for its holder, released when its holder dies, and a clear error when
the directory cannot hold it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from keybound.client.lock import LOCK_FILE, state_lock
from keybound.errors import ClientError, ErrorCode

#: holds the lock of argv[1], says so, and keeps it until stdin closes (or it is killed)
HOLDER = (
    "import sys\n"
    "from keybound.client.lock import state_lock\n"
    "with state_lock(sys.argv[1]).held():\n"
    "    print('held', flush=True)\n"
    "    sys.stdin.read()\n"
)


def _holder(directory: Path) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(directory)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stdout.readline() == "held\n"
    return process


def _acquire_in_thread(
    directory: Path,
) -> tuple[threading.Thread, threading.Event, threading.Event]:
    """A thread that takes the lock (setting ``acquired``) and holds it until ``release``."""
    acquired, release = threading.Event(), threading.Event()

    def take() -> None:
        with state_lock(directory).held():
            acquired.set()
            release.wait(timeout=30)

    thread = threading.Thread(target=take)
    thread.start()
    return thread, acquired, release


def _close(process: subprocess.Popen[str]) -> None:
    for pipe in (process.stdin, process.stdout):
        if pipe is not None:
            pipe.close()
    process.wait(timeout=30)


def test_another_process_waits_until_the_holder_is_done(tmp_path: Path) -> None:
    holder = _holder(tmp_path)
    thread, acquired, release = _acquire_in_thread(tmp_path)
    try:
        assert not acquired.wait(timeout=0.5)  # the other process holds it
        assert holder.stdin is not None
        holder.stdin.close()  # the holder finishes its ceremony
        assert acquired.wait(timeout=30)
    finally:
        release.set()
        thread.join(timeout=30)
        _close(holder)


def test_a_holder_that_dies_releases_the_lock(tmp_path: Path) -> None:
    holder = _holder(tmp_path)
    os.kill(holder.pid, signal.SIGKILL)  # a crash mid-ceremony
    _close(holder)
    thread, acquired, release = _acquire_in_thread(tmp_path)
    assert acquired.wait(timeout=30)
    release.set()
    thread.join(timeout=30)


def test_threads_take_turns_and_the_holder_may_reenter(tmp_path: Path) -> None:
    lock = state_lock(tmp_path)
    assert state_lock(tmp_path / ".") is lock  # one object per directory in a process
    with lock.held():
        with lock.held():  # a ceremony that calls another (deactivate, then forget)
            thread, acquired, release = _acquire_in_thread(tmp_path)
            assert not acquired.wait(timeout=0.3)
        assert not acquired.wait(timeout=0.3)  # still held by the outer block
    assert acquired.wait(timeout=30)
    release.set()
    thread.join(timeout=30)
    assert (tmp_path / LOCK_FILE).exists()  # kept: deleting a lock file races its next user


def test_a_directory_that_cannot_hold_the_lock_is_a_configuration_error(tmp_path: Path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory")
    with pytest.raises(ClientError) as info, state_lock(a_file / "device").held():
        pass
    assert info.value.code is ErrorCode.CLIENT_CONFIGURATION
    assert str(a_file / "device" / LOCK_FILE) in info.value.detail
