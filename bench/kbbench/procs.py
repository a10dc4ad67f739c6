"""CPU time and memory of processes, from the kernel's own accounting in /proc; and which
Python they run on."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def base_interpreter() -> Path:
    """The Python this venv was made from: its build matters (bench/README.md, Which Python)."""
    return Path(getattr(sys, "_base_executable", sys.executable)).resolve()


def proc_cpu(pid: int, *, reaped: bool = False) -> float:
    """utime + stime of ``pid`` in seconds (0.0 if it is gone). ``reaped``: + cutime + cstime,
    the CPU of its children that have exited and been waited for; summed over a process tree,
    this also counts short-lived children that exited, without counting any twice."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return sum(int(x) for x in fields[11 : 15 if reaped else 13]) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return 0.0


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (all its threads)."""
    out: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                out += [int(x) for x in (task / "children").read_text().split()]
    except OSError:
        pass
    return out


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (uvicorn's worker processes, their helpers)."""
    seen, todo = [], [pid]
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.append(p)
        todo += children(p)
    return seen


def status_kib(pid: int, field: str) -> int:
    """A ``Vm*`` field of /proc/<pid>/status in KiB (VmHWM = peak RSS, VmRSS = now)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def machine_cpu() -> tuple[float, float]:
    """(total, idle) CPU seconds of the whole machine since boot."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v) / CLK_TCK, (v[3] + v[4]) / CLK_TCK
