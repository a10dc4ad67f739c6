"""Percentiles (same interpolation as the peer's harness) and small table helpers."""

from __future__ import annotations

import math
import statistics


def pct(xs: list[float], q: float) -> float:
    """Linear-interpolated percentile, ``q`` in 0..100 (as bench.py of the peer)."""
    if not xs:
        return float("nan")
    xs = sorted(xs)
    k = (len(xs) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def summary_ms(xs_s: list[float]) -> dict[str, float]:
    """p50/p99/mean in ms of a list of seconds."""
    return {
        "p50_ms": pct(xs_s, 50) * 1e3,
        "p99_ms": pct(xs_s, 99) * 1e3,
        "mean_ms": statistics.fmean(xs_s) * 1e3 if xs_s else float("nan"),
    }


def f(x: float | None, nd: int = 1) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.{nd}f}"


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A Markdown table (right-aligned numbers)."""
    out = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---" if i == 0 else "---:" for i in range(len(headers))) + "|",
    ]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)
