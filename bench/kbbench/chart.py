"""PNG chart: throughput and p99 flow latency against concurrency, keybound against the peer."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def chart(series: list[tuple[str, list[dict[str, Any]]]], path: Path, title: str) -> Path:
    """``series``: (label, levels with concurrency / flows_per_s / flow_p99_ms)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
    markers = "osD^v"
    for i, (label, levels) in enumerate(series):
        levels = sorted((r for r in levels if r.get("flows_ok")), key=lambda r: r["concurrency"])
        if not levels:
            continue
        xs = [r["concurrency"] for r in levels]
        for ax, key in ((ax1, "flows_per_s"), (ax2, "flow_p99_ms")):
            ys = [r[key] for r in levels]
            ax.plot(xs, ys, marker=markers[i % 5], label=label)
            for x, y in zip(xs, ys, strict=True):
                ax.annotate(
                    f"{y:.0f}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7
                )
    for ax, ylabel in ((ax1, "full flows per second"), (ax2, "p99 flow latency (ms)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("concurrency (flows in flight)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.set_xticks([1, 4, 16, 64])
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.get_yaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.get_yaxis().set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax1.set_title("throughput (higher is better)")
    ax2.set_title("p99 latency of a full flow (lower is better)")
    ax1.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
