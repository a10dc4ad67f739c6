"""Summarise py-spy ``--format raw`` (collapsed stacks) of the server processes."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

_LINE = re.compile(r":\d+\)$")

#: Leaf-frame file path fragment -> category (first match wins).
CATEGORIES = (
    ("keybound/channel.py", "secure channel (keybound.channel: HPKE, HKDF, AEAD, framing)"),
    ("keybound/crypto.py", "signatures and keys (keybound.crypto)"),
    ("cryptography/", "cryptography package (Python side)"),
    ("sqlalchemy/", "SQLAlchemy (statement building, compile cache, execution, rows)"),
    ("sqlite3/", "sqlite3 module"),
    ("pydantic", "pydantic (validation, serialisation)"),
    ("fastapi/", "FastAPI (routing, dependencies, encoders)"),
    ("starlette/", "Starlette"),
    ("uvicorn/", "uvicorn (HTTP protocol)"),
    ("anyio/", "anyio (thread hand-off)"),
    ("threading.py", "threading (locks, conditions)"),
    ("queue.py", "threading (locks, conditions)"),
    ("asyncio/", "asyncio event loop"),
    ("json/", "json"),
    ("keybound/server/", "keybound server code"),
    ("keybound/", "keybound other"),
)


def _frame(fr: str) -> str:
    """``func (path/to/file.py:123)`` -> ``func (file.py)`` (site-packages paths shortened)."""
    fr = _LINE.sub(")", fr.strip())
    m = re.match(r"^(.*) \((.*)\)$", fr)
    if not m:
        return fr
    fn, path = m.groups()
    for marker in ("site-packages/", "/src/", "lib/python3.11/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{fn} ({path})"


def _category(frame: str) -> str:
    for frag, name in CATEGORIES:
        if frag in frame:
            return name
    return "other (stdlib, C extensions)"


def summarise(files: list[Path], top: int = 25) -> dict[str, Any]:
    self_c: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    cats: Counter[str] = Counter()
    total = 0
    for path in files:
        for line in path.read_text(errors="replace").splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            n = int(count)
            frames = [
                _frame(x)
                for x in stack.split(";")
                if x.strip() and not x.startswith(("thread ", "process "))
            ]
            if not frames:
                continue
            total += n
            self_c[frames[-1]] += n
            cats[_category(frames[-1])] += n
            for fr in set(frames):
                incl[fr] += n
    pct = (lambda c: 100.0 * c / total) if total else (lambda c: 0.0)
    own = [
        (fn, pct(c))
        for fn, c in incl.most_common()
        if "(keybound/" in fn
        and pct(c) < 99.5
        and not fn.startswith(("main ", "cmd_serve", "serve ", "<module>"))
    ]
    return {
        "samples": total,
        "categories": [(name, pct(c)) for name, c in cats.most_common()],
        "self": [(fn, pct(c)) for fn, c in self_c.most_common(top)],
        "keybound_inclusive": own[:top],
    }
