"""Per-request cost of the secure channel, for each suite.

Usage:  .venv/bin/python bench/channel_cost.py [--iterations 5000] [--body-bytes 256]

Measures, one call at a time with time.perf_counter_ns, the four steps of a round trip:
client seal_request, server open_request, server seal_response, client open_response.
Keys and pins are loaded once (as a server and an app would), so the figures are the per-request
cost, not key loading. Prints a Markdown table in microseconds.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from importlib.metadata import version

from keybound import channel
from keybound.channel import ChannelSuite

APP, METHOD, PATH, NOW = "bench-app", "POST", "/device/v1/authentication/finish", 1_767_225_600
STEPS = (
    "client seal_request",
    "server open_request",
    "server seal_response",
    "client open_response",
)


def one_round_trip(
    pin: channel.ChannelPin, keyring: dict[str, channel.E2EKey], body: bytes
) -> tuple[float, ...]:
    """Run one request/response; return the microseconds spent in each of STEPS."""
    clock = time.perf_counter_ns
    t0 = clock()
    wire, opener = channel.seal_request(pin, METHOD, PATH, body, now=NOW)
    t1 = clock()
    opened = channel.open_request(keyring, APP, METHOD, PATH, wire, now=NOW)
    t2 = clock()
    response = channel.seal_response(opened, 200, body)
    t3 = clock()
    opener.open(response)
    t4 = clock()
    return tuple((b - a) / 1000 for a, b in ((t0, t1), (t1, t2), (t2, t3), (t3, t4)))


def measure(suite: ChannelSuite, iterations: int, body: bytes) -> dict[str, list[float]]:
    key = channel.generate_e2e_key(suite, now=NOW)
    pin = channel.export_pin(key, application_id=APP, server_url="https://bench.example")
    keyring = {key.key_id: key}
    for _ in range(max(50, iterations // 10)):  # warm up: caches, allocator, branch predictors
        one_round_trip(pin, keyring, body)
    samples: dict[str, list[float]] = {step: [] for step in STEPS}
    for _ in range(iterations):
        for step, micros in zip(STEPS, one_round_trip(pin, keyring, body), strict=True):
            samples[step].append(micros)
    return samples


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=5000)
    parser.add_argument("--body-bytes", type=int, default=256)
    args = parser.parse_args()
    body = os.urandom(args.body_bytes)
    print(
        f"keybound secure channel, {args.iterations} iterations, {args.body_bytes}-byte bodies; "
        f"Python {platform.python_version()}, cryptography {version('cryptography')}, "
        f"{platform.machine()}"
    )
    print()
    print("| suite | step | mean µs | p50 µs | p99 µs |")
    print("|---|---|---:|---:|---:|")
    for suite in ChannelSuite:
        for step, values in measure(suite, args.iterations, body).items():
            print(
                f"| {suite.value} | {step} | {statistics.fmean(values):.1f} | "
                f"{percentile(values, 0.50):.1f} | {percentile(values, 0.99):.1f} |"
            )


if __name__ == "__main__":
    main()
