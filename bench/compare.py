"""keybound and the privacyIDEA peer, one after the other on this machine, in one table.

Usage (from the repository root):
  .venv-bench/bin/python bench/compare.py                      # keybound sweep, then the peer
  .venv-bench/bin/python bench/compare.py --no-peer            # keybound only
  .venv-bench/bin/python bench/compare.py --seconds 12 --peer-seconds 15 --concurrency 1,4,16,64 \\
        --registrations 10000,100000,1000000             # + the scale runs (targets table)

1. keybound: bench/loadgen.py (device- and backend-initiated authentication, secure channel
   on, SQLite, fresh server; `keybound serve --workers 2` unless --workers says otherwise, as
   the peer runs 2 gunicorn workers) at each concurrency, JSON to bench/results/.
2. the peer, from ../shared/peers/privacyidea/ (read-only; nothing of it is copied here):
   `setup.sh all` (installs privacyIDEA 3.14 from PyPI into a venv made from the Python this
   script runs on, /tmp/venv-pi-<interpreter> unless $PI_VENV names one, configures SQLite,
   starts gunicorn with 2 sync workers on 127.0.0.1:5001), `bench.py enroll --users 64`,
   `bench.py selftest`, `bench.py sweep --json`, then `setup.sh stop`. If any step fails the
   reason is printed and keybound's table is still printed.
3. One Markdown table (keybound vs peer: flows/s, p50/p99, server CPU ms/flow, ratios), the
   issue-5 targets with the measured figures, and a PNG chart (Agg) in bench/results/:
   compare-<time>.{md,json,png}, copied to compare-latest.{md,json,png}.

The peer's full authentication is 5 HTTP requests (RP trigger, phone poll, phone answer, RP
poll, RP finalize); keybound's device-initiated one is 2 (start, finish) and its
backend-initiated one 5 (RP create, device pending, start, finish, RP result) -- the closer
match to the peer's push flow. Both are shown.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import time
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from kbbench import procs  # noqa: E402
from kbbench.chart import chart  # noqa: E402
from kbbench.stats import f, table  # noqa: E402

RESULTS = HERE / "results"
DEFAULT_PEER = (HERE.parent / ".." / "shared" / "peers" / "privacyidea").resolve()


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_keybound(a: argparse.Namespace, stamp: str) -> dict[str, Any] | None:
    path = RESULTS / f"keybound-{stamp}.json"
    cmd = [
        sys.executable,
        str(HERE / "loadgen.py"),
        "--flows",
        a.flows,
        "--concurrency",
        a.concurrency,
        "--seconds",
        str(a.seconds),
        "--warmup",
        str(a.warmup),
        "--workers",
        str(a.workers),
        "--client-procs",
        str(a.client_procs),
        "--json",
        str(path),
    ]
    if a.registrations:
        cmd += ["--registrations", a.registrations, "--scale-rounds", str(a.scale_rounds)]
    log(f"[compare] keybound: {' '.join(cmd)}")
    done = subprocess.run(cmd, timeout=a.timeout)
    if done.returncode != 0 or not path.exists():
        log(f"[compare] keybound run FAILED (exit {done.returncode})")
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def same_interpreter_env(scratch: Path) -> dict[str, str]:
    """The peer on the Python keybound runs on: its setup.sh makes its venv with ``python3``
    from PATH, so a ``python3`` link to this venv's base interpreter goes first on PATH, and
    the venv gets a directory of its own per interpreter (``PI_VENV``, unless set)."""
    base = procs.base_interpreter()
    shim = scratch / "python"
    shim.mkdir(parents=True, exist_ok=True)
    link = shim / "python3"
    link.unlink(missing_ok=True)
    link.symlink_to(base)
    venv = os.environ.get("PI_VENV") or "/tmp/venv-pi-" + "-".join(base.parts[1:]).replace(".", "")
    return {"PATH": f"{shim}{os.pathsep}{os.environ.get('PATH', '')}", "PI_VENV": venv}


class PeerFailed(Exception):
    pass


def run_peer(a: argparse.Namespace, stamp: str) -> tuple[list[dict[str, Any]] | None, str]:
    """The privacyIDEA harness, called from its own directory. Returns (sweep, why-not)."""
    peer = Path(a.peer_dir)
    if not (peer / "setup.sh").exists() or not (peer / "bench.py").exists():
        return None, f"no peer harness at {peer}"
    logs = Path(a.peer_logs)
    logs.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "PI_HOME": a.peer_home,
        "PI_WORKERS": str(a.peer_workers),
        **same_interpreter_env(logs),
    }
    out = RESULTS / f"peer-privacyidea-{stamp}.json"
    py = a.peer_python or sys.executable  # any Python with `cryptography`

    def step(name: str, cmd: list[str], timeout: float) -> None:
        log(f"[compare] peer {name}: {' '.join(cmd)}  (log {logs / (name + '.txt')})")
        with open(logs / f"{name}.txt", "w") as fh:
            try:
                done = subprocess.run(
                    cmd, cwd=peer, env=env, stdout=fh, stderr=subprocess.STDOUT, timeout=timeout
                )
            except subprocess.TimeoutExpired:
                raise PeerFailed(f"{name} timed out after {timeout:.0f} s") from None
        if done.returncode != 0:
            tail = (logs / f"{name}.txt").read_text(errors="replace").strip().splitlines()[-8:]
            raise PeerFailed(f"{name} exited {done.returncode}: " + " | ".join(tail))

    try:
        step("setup", ["bash", "./setup.sh", "all"], a.peer_setup_timeout)
        step("enroll", [py, "bench.py", "enroll", "--users", str(a.peer_users)], 900)
        step("selftest", [py, "bench.py", "selftest"], 120)
        levels = len(a.peer_concurrency.split(","))
        step(
            "sweep",
            [
                py,
                "bench.py",
                "sweep",
                "--concurrency",
                a.peer_concurrency,
                "--seconds",
                str(a.peer_seconds),
                "--json",
                str(out),
            ],
            levels * (a.peer_seconds + 90) + 120,
        )
        print((logs / "sweep.txt").read_text(errors="replace"))
        sweep: list[dict[str, Any]] = json.loads(out.read_text())
        return sweep, ""
    except PeerFailed as exc:
        return None, str(exc)
    except (OSError, ValueError) as exc:
        return None, repr(exc)
    finally:
        try:
            subprocess.run(
                ["bash", "./setup.sh", "stop"],
                cwd=peer,
                env=env,
                timeout=60,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        except (OSError, subprocess.TimeoutExpired):
            log("[compare] peer stop failed; check `setup.sh status`")


def by_conc(levels: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    return {r["concurrency"]: r for r in levels}


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def field(level: dict[str, Any] | None, *path: str) -> float | None:
    """A number from a level's result (``None`` when the level was not measured)."""
    value: Any = level
    for key in path:
        if not value:
            return None
        value = value[key]
    return float(value) if value is not None else None


def comparison_table(
    kb: dict[str, Any], peer: list[dict[str, Any]] | None
) -> tuple[str, list[Any]]:
    dev = by_conc([r for r in kb["sweep"] if r["flow"] == "device"])
    back = by_conc([r for r in kb["sweep"] if r["flow"] == "backend"])
    pe = by_conc(peer or [])
    concs = sorted(set(dev) | set(back) | set(pe))
    rows, summary = [], []
    for c in concs:
        d, b, p = dev.get(c), back.get(c), pe.get(c)

        def cells(r: dict[str, Any] | None) -> list[str]:
            if not r:
                return ["-"] * 4
            return [
                f(r["flows_per_s"], 1),
                f(r["flow_p50_ms"], 1),
                f(r["flow_p99_ms"], 1),
                f(r["cpu"]["server_cpu_ms_per_flow"], 2),
            ]

        rd = ratio(field(d, "flows_per_s"), field(p, "flows_per_s"))
        rb = ratio(field(b, "flows_per_s"), field(p, "flows_per_s"))
        rc = ratio(
            field(p, "cpu", "server_cpu_ms_per_flow"), field(d, "cpu", "server_cpu_ms_per_flow")
        )
        rows.append(
            [
                str(c),
                *cells(d),
                *cells(b),
                *cells(p),
                f(rd, 1) + "x" if rd else "-",
                f(rb, 1) + "x" if rb else "-",
                f(rc, 1) + "x" if rc else "-",
            ]
        )
        summary.append(
            {
                "concurrency": c,
                "device_vs_peer_flows": rd,
                "backend_vs_peer_flows": rb,
                "peer_cpu_over_device_cpu": rc,
            }
        )
    hdr = [
        "conc",
        "kb device flows/s",
        "p50 ms",
        "p99 ms",
        "srv CPU ms/flow",
        "kb backend flows/s",
        "p50 ms",
        "p99 ms",
        "srv CPU ms/flow",
        "peer flows/s",
        "p50 ms",
        "p99 ms",
        "srv CPU ms/flow",
        "device ÷ peer flows/s",
        "backend ÷ peer flows/s",
        "peer ÷ device CPU/flow",
    ]
    return table(hdr, rows), summary


def targets(kb: dict[str, Any], peer: list[dict[str, Any]] | None) -> str:
    dev = [r for r in kb["sweep"] if r["flow"] == "device"]
    best = max(dev, key=lambda r: r["flows_per_s"]) if dev else None
    pbest = max(peer, key=lambda r: r["flows_per_s"]) if peer else None
    c16 = next((r for r in dev if r["concurrency"] == 16), None)
    rows = []

    def row(name: str, target: str, value: str, ok: bool | None) -> None:
        rows.append([name, target, value, "-" if ok is None else ("met" if ok else "NOT met")])

    if best:
        row(
            "device-initiated flows/s (best level)",
            "≥ 1000",
            f"{best['flows_per_s']:.0f} (c={best['concurrency']})",
            best["flows_per_s"] >= 1000,
        )
        r = ratio(best["flows_per_s"], field(pbest, "flows_per_s"))
        row(
            "x peer flows/s (best vs best)",
            "≥ 40x",
            f"{r:.1f}x" if r else "peer not measured",
            (r >= 40) if r else None,
        )
        cpu = min((x for x in dev if x["flows_ok"]), key=lambda x: x["server_cpu_over_floor"])
        row(
            "server CPU per flow ÷ crypto floor (best level)",
            "≤ 5x",
            f"{cpu['server_cpu_over_floor']:.1f}x ({cpu['cpu']['server_cpu_ms_per_flow']:.2f} ms"
            f" / {cpu['crypto_floor_us_per_flow']:.0f} µs, c={cpu['concurrency']})",
            cpu["server_cpu_over_floor"] <= 5,
        )
    if c16:
        p99 = c16["steps"]["auth_finish"]["p99_ms"]
        row("p99 finish-authentication at c=16", "≤ 25 ms", f"{p99:.1f} ms", p99 <= 25)
    scale = kb.get("scale") or []
    for kind in ("hot", "seeded"):
        sc = sorted((s for s in scale if s["devices"] == kind), key=lambda s: s["registrations"])
        if len(sc) >= 2:
            lo, hi = sc[0], sc[-1]
            r = hi["throughput_vs_smallest"]
            rounds = " / ".join(f"{x:.2f}" for x in hi["rounds_vs_smallest"])
            row(
                f"throughput at {hi['registrations']:,} vs {lo['registrations']:,} "
                f"registrations ({kind} devices)",
                "≥ 0.90",
                f"{r:.2f} (median of {len(hi['rounds_vs_smallest'])} interleaved rounds: "
                f"{rounds}; median rounds {hi['result']['flows_per_s']:.0f} vs "
                f"{lo['result']['flows_per_s']:.0f} flows/s)",
                r >= 0.9,
            )
    if scale:
        top = max(scale, key=lambda s: s["registrations"])
        rss = max(
            s["server_peak_rss_mib_max"]
            for s in scale
            if s["registrations"] == top["registrations"]
        )
        row(
            f"peak RSS per server process at {top['registrations']:,} registrations",
            "≤ 150 MiB",
            f"{rss:.0f} MiB",
            rss <= 150,
        )
    sdk = kb.get("sdk") or {}
    if sdk.get("ok"):
        row(
            "SDK RSS for one device (peak, whole process)",
            "report",
            f"{sdk['peak_rss_kib'] / 1024:.1f} MiB",
            None,
        )
    return table(["target (issue 5)", "wanted", "measured", ""], rows)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--concurrency", default="1,4,16,64")
    ap.add_argument("--flows", default="device,backend", help="keybound flows to run")
    ap.add_argument("--seconds", type=float, default=12.0, help="keybound window per level")
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument(
        "--workers",
        type=int,
        default=2,
        help="keybound serve --workers (default 2: as many server processes as "
        "the peer's gunicorn workers, --peer-workers)",
    )
    ap.add_argument("--client-procs", type=int, default=4)
    ap.add_argument("--registrations", default="", help="also the scale runs (loadgen.py)")
    ap.add_argument(
        "--scale-rounds",
        type=int,
        default=3,
        help="scale runs: interleaved rounds over the sizes (loadgen.py)",
    )
    ap.add_argument("--no-peer", action="store_true", help="keybound only")
    ap.add_argument("--peer-dir", default=str(DEFAULT_PEER))
    ap.add_argument("--peer-home", default="/tmp/pi-bench")
    ap.add_argument("--peer-logs", default="/tmp/pi-bench-compare-logs")
    ap.add_argument("--peer-python", default="", help="Python with `cryptography` for bench.py")
    ap.add_argument("--peer-concurrency", default="", help="default: --concurrency")
    ap.add_argument("--peer-seconds", type=float, default=12.0)
    ap.add_argument("--peer-workers", type=int, default=2)
    ap.add_argument("--peer-users", type=int, default=64)
    ap.add_argument("--peer-setup-timeout", type=float, default=1200)
    ap.add_argument("--timeout", type=float, default=3600, help="cap on the keybound run")
    a = ap.parse_args()
    a.peer_concurrency = a.peer_concurrency or a.concurrency
    if max(int(x) for x in a.peer_concurrency.split(",")) > a.peer_users:
        a.peer_users = max(int(x) for x in a.peer_concurrency.split(","))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    RESULTS.mkdir(parents=True, exist_ok=True)

    kb = run_keybound(a, stamp)
    if kb is None:
        print("keybound run failed; nothing to compare")
        return 1
    peer, why = (None, "skipped (--no-peer)") if a.no_peer else run_peer(a, stamp)
    if peer is None and not a.no_peer:
        print(f"\n**PEER FAILED: {why}** -- keybound's figures below stand alone.\n")

    buf = io.StringIO()
    with redirect_stdout(buf):
        m = kb["meta"]
        print(f"## keybound vs privacyIDEA 3.14 push (poll-only), {m['when']}\n")
        where = m.get("interpreter", "interpreter not recorded")
        print(
            f"{m['cpus']} CPUs, Python {m['python']} ({where}, both); keybound `serve --workers "
            f"{m['server_workers']}`, SQLite (WAL), secure channel on, "
            f"{m['seconds']:.0f} s per level; peer: gunicorn {a.peer_workers} sync workers, "
            f"SQLite (WAL), {a.peer_seconds:.0f} s per level"
            + ("" if peer else f" -- peer not measured: {why}")
            + ". Same machine, one "
            "after the other; load generators on the same cores.\n"
        )
        tab, summary = comparison_table(kb, peer)
        print(tab)
        # the table counts completed flows only: say where keybound's flows failed
        failed = [
            f"{r['flow']} c={r['concurrency']}: {r['flows_failed']}"
            for r in kb["sweep"]
            if r["flows_failed"]
        ]
        failed += [
            f"scale {s['registrations']:,} {s['devices']}: {s['rounds_flows_failed']}"
            for s in kb.get("scale") or []
            if s["rounds_flows_failed"]
        ]
        if failed:
            print("\n**keybound flows failed** (not counted above): " + "; ".join(failed))
        fl = kb["floor"]["per_flow_us"]
        levels = [
            r["crypto_floor_us_per_flow"]
            for r in kb["sweep"]
            if r["flow"] == "device" and "crypto_floor_us_per_flow" in r
        ]
        print(
            f"\nCrypto floor measured in this run (server side, per flow): device-initiated "
            f"{fl['device']:.0f} µs, backend-initiated {fl['backend']:.0f} µs"
            + (
                f"; again before each device level: "
                f"{' / '.join(f'{x:.0f}' for x in levels)} µs (each level's ÷ floor uses "
                "its own)"
                if levels
                else ""
            )
            + "."
        )
        print("\n" + targets(kb, peer))
    text = buf.getvalue()
    print(text)

    series = [
        ("keybound device-initiated", [r for r in kb["sweep"] if r["flow"] == "device"]),
        ("keybound backend-initiated", [r for r in kb["sweep"] if r["flow"] == "backend"]),
    ]
    if peer:
        series.append(("privacyIDEA 3.14 push (poll)", peer))
    chart(
        series,
        RESULTS / f"compare-{stamp}.png",
        f"keybound vs privacyIDEA, {m['cpus']} CPUs, SQLite, one after the other ({m['when']})",
    )
    (RESULTS / f"compare-{stamp}.md").write_text(text)
    (RESULTS / f"compare-{stamp}.json").write_text(
        json.dumps(
            {"keybound": kb, "peer": peer, "peer_error": why or None, "summary": summary},
            indent=1,
            default=str,
        )
    )
    for ext in ("png", "md", "json"):
        shutil.copyfile(RESULTS / f"compare-{stamp}.{ext}", RESULTS / f"compare-latest.{ext}")
    print(
        f"(table, JSON and chart: {RESULTS}/compare-{stamp}.{{md,json,png}}, also compare-latest.*)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
