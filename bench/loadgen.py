"""keybound load generator: full flows over real HTTP against a real `keybound serve`, with the
secure channel on, on a fresh embedded SQLite file or a fresh PostgreSQL database; plus the
crypto floor, the scale runs (pre-seeded registrations) and the SDK's footprint for one device.

Usage (from the repository root):
  .venv-bench/bin/python bench/loadgen.py                                  # sweep, all three flows
  .venv-bench/bin/python bench/loadgen.py --flows device --concurrency 1,4,16,64 --seconds 12
  .venv-bench/bin/python bench/loadgen.py --no-sweep --registrations 10000,100000,1000000
  .venv-bench/bin/python bench/loadgen.py --flows device --concurrency 16 --profile 10
  .venv-bench/bin/python bench/loadgen.py --backend sqlite,postgresql      # each in turn

What runs: a temp dir with a fresh SQLite database (--backend sqlite, the default), or a fresh
database on a private PostgreSQL server (--backend postgresql: started for the run by the
tests' own starter, tests/pgserver.py -- initdb in a temp dir, 127.0.0.1 only, durable --,
stopped by its PID at the end, and by a watchdog if the run dies or outlives its deadline);
`keybound app create`, `api-key create` and `e2e-key create --server-url
http://127.0.0.1:PORT` (the pin) through the CLI; then `keybound serve --workers N` on
127.0.0.1. With several backends, each gets its own fresh databases, one after the other.
The load comes from --client-procs processes, each an asyncio loop with
concurrency/client-procs virtual clients (one device + one relying party each, keep-alive
connections). Every level runs --warmup + --seconds and at most --max-flows flows, then stops
by itself; the server is stopped by its PID at the end.

Flows: device = device-initiated authentication (start + finish, software + hardware key,
software key rotated every time); backend = RP creates an operation, device polls pending,
answers (start + finish), RP reads the result; activation = RP creates user + activation code,
device start + finish (two new keys).

Every number is printed as a Markdown table, the backend named in its heading; --json writes
them with the field names of the privacyIDEA harness's `sweep --json` (concurrency,
flows_per_s, flow_p50_ms, flow_p99_ms, steps{name: {p50_ms, p99_ms}},
cpu{server_cpu_ms_per_flow, client_cpu_ms_per_flow, ...}) plus "backend" in every sweep and
scale entry. On PostgreSQL, "srv CPU" is keybound serve's processes only and "db CPU" the
PostgreSQL server's (cpu.db_cpu_ms_per_flow; on SQLite the database work is inside srv CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from kbbench import floor, procs, seeding  # noqa: E402
from kbbench.load import FLOW_TITLES, STEPS, run_level  # noqa: E402
from kbbench.pg import SETTINGS as PG_SETTINGS  # noqa: E402
from kbbench.pg import BenchPostgres  # noqa: E402
from kbbench.server import KeyboundServer  # noqa: E402
from kbbench.stats import f, table  # noqa: E402

RESULTS = HERE / "results"
BACKENDS = ("sqlite", "postgresql")
SQLITE_DESCRIPTION = "sqlite (embedded, WAL)"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def meta(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": platform.python_version(),
        "interpreter": str(procs.base_interpreter()),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "cryptography": version("cryptography"),
        "uvicorn": version("uvicorn"),
        "fastapi": version("fastapi"),
        "sqlalchemy": version("sqlalchemy"),
        "keybound_commit": _git_commit(),
        "server_workers": args.workers,
        "client_procs": args.client_procs,
        "seconds": args.seconds,
        "warmup": args.warmup,
        "max_flows": args.max_flows,
        "backends": args.backends,
        "database": SQLITE_DESCRIPTION,
        "databases": {},
        "secure_channel": "on (X25519_SHA256_AES128GCM)",
    }


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(HERE.parent), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return out.stdout.strip()
    except OSError:
        return ""


# --------------------------------------------------------------------------- printing
def print_floor(items: dict[str, float], per_flow: dict[str, float]) -> None:
    print("\n### Crypto floor (server side, µs, measured in this run)\n")
    rows = []
    for name, us in items.items():
        rows.append([name, f(us, 1)] + [str(floor.RECIPES[fl].get(name, 0)) for fl in STEPS])
    rows.append(["**floor per flow (µs)**", ""] + [f"**{f(per_flow[fl], 0)}**" for fl in STEPS])
    print(table(["primitive", "µs/call"] + [f"x {fl}" for fl in STEPS], rows))


def _has_db(results: list[dict[str, Any]]) -> bool:
    """True if the database ran in its own processes (PostgreSQL): db CPU columns shown."""
    return any(r["cpu"].get("db_cpu_s") is not None for r in results)


def print_sweep(results: list[dict[str, Any]], backend: str) -> None:
    for flow in STEPS:
        rs = [r for r in results if r["flow"] == flow]
        if not rs:
            continue
        db = _has_db(rs)
        print(f"\n### {FLOW_TITLES[flow]} -- {backend}\n")
        step_hdr = [f"{s} p50/p99 ms" for s in STEPS[flow]]
        rows = []
        for r in rs:
            c = r["cpu"]
            cores = [c["server_cores_used"], c["db_cores_used"]] if db else [c["server_cores_used"]]
            cores += [c["client_cores_used"], c["other_cores_used"]]
            rows.append(
                [
                    str(r["concurrency"]),
                    f(r["flows_per_s"], 0),
                    f(r["flow_p50_ms"], 1),
                    f(r["flow_p99_ms"], 1),
                ]
                + [
                    f"{f(r['steps'][s]['p50_ms'], 1)} / {f(r['steps'][s]['p99_ms'], 1)}"
                    for s in STEPS[flow]
                ]
                + [f(c["server_cpu_ms_per_flow"], 2)]
                + ([f(c["db_cpu_ms_per_flow"], 2)] if db else [])
                + [
                    f"{f(r.get('server_cpu_over_floor'), 1)} "
                    f"({f(r.get('crypto_floor_us_per_flow'), 0)})",
                    f(c["client_cpu_ms_per_flow"], 2),
                    " / ".join(f(x, 2) for x in cores),
                    f(r["server_peak_rss_mib_max"], 0),
                    f"{r['flows_ok']}/{r['flows_failed']}",
                ]
            )
        print(
            table(
                [
                    "conc",
                    "flows/s",
                    "flow p50 ms",
                    "flow p99 ms",
                    *step_hdr,
                    "srv CPU ms/flow",
                    *(["db CPU ms/flow"] if db else []),
                    "÷ floor (floor µs)",
                    "cli CPU ms/flow",
                    "cores srv/db/cli/other" if db else "cores srv/cli/other",
                    "srv peak RSS MiB",
                    "ok/failed",
                ],
                rows,
            )
        )
        for r in rs:
            for k, v in sorted(r["failures"].items(), key=lambda kv: -kv[1])[:5]:
                print(f"\n  c={r['concurrency']} FAIL x{v}: {k}")


def print_scale(scale: list[dict[str, Any]], backend: str) -> None:
    print(
        "\n### Scale: device-initiated authentication with registrations already present "
        f"-- {backend}\n"
    )
    db = _has_db([s["result"] for s in scale])
    rows = []
    for s in scale:
        r = s["result"]
        rows.append(
            [
                f"{s['registrations']:,}",
                s["devices"],
                f(s["seed_seconds"], 1),
                f(s["db_mib"], 0),
                f(r["flows_per_s"], 0),
                f(r["flow_p99_ms"], 1),
                f(r["steps"]["auth_finish"]["p99_ms"], 1),
                f(r["cpu"]["server_cpu_ms_per_flow"], 2),
            ]
            + ([f(r["cpu"]["db_cpu_ms_per_flow"], 2)] if db else [])
            + [f(s["server_peak_rss_mib_max"], 0), f"{r['flows_ok']}/{r['flows_failed']}"]
        )
    print(
        table(
            [
                "registrations",
                "devices",
                "seeding s (this step)",
                "DB MiB",
                "flows/s",
                "flow p99 ms",
                "finish p99 ms",
                "srv CPU ms/flow",
                *(["db CPU ms/flow"] if db else []),
                "srv peak RSS MiB (max process, any round)",
                "ok/failed",
            ],
            rows,
        )
    )
    rounds = max(len(s["rounds_flows_per_s"]) for s in scale)
    print(
        f"\n{rounds} round(s), the sizes interleaved; each row is its size's median round. "
        "vs smallest: the median of the per-round ratios to the smallest size.\n"
    )
    print(
        table(
            [
                "registrations",
                "devices",
                "flows/s by round",
                "vs smallest (by round)",
                "vs smallest",
            ],
            [
                [
                    f"{s['registrations']:,}",
                    s["devices"],
                    " / ".join(f(x, 0) for x in s["rounds_flows_per_s"]),
                    " / ".join(f(x, 2) for x in s["rounds_vs_smallest"]),
                    f(s["throughput_vs_smallest"], 2)
                    if s["throughput_vs_smallest"] is not None
                    else "-",
                ]
                for s in scale
            ],
        )
    )


# --------------------------------------------------------------------------- runs
def new_server(
    args: argparse.Namespace, workdir: Path, backend: str, pg: BenchPostgres | None
) -> KeyboundServer:
    """A server on a fresh database: an SQLite file in ``workdir``, or a new database on the
    private PostgreSQL server ``pg``."""
    db_url = pg.fresh_database() if pg is not None else ""
    server = KeyboundServer(
        workdir, workers=args.workers, db_url=db_url, backend=backend, database=pg
    )
    log(f"[loadgen] setting up {server.db_url} via the keybound CLI")
    server.setup()
    return server


def pg_lifetime(args: argparse.Namespace, n_levels: int, sizes: list[int]) -> float:
    """A generous upper bound on one backend's run (seconds), for the private PostgreSQL's
    watchdog: twice the planned time plus 15 minutes."""
    level = args.warmup + args.seconds + 60
    kinds = len([k for k in args.scale_devices.split(",") if k])
    plan = (
        n_levels * level
        + 300
        + sum(120 + n / 2000 + kinds * level * args.scale_rounds for n in sizes)
    )
    return float(2 * plan + 900)


def sdk_probe(server: KeyboundServer, n: int) -> dict[str, Any]:
    out = subprocess.run(
        [
            sys.executable,
            str(HERE / "kbbench" / "sdk_probe.py"),
            server.url,
            server.token,
            server.pin,
            str(n),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if out.returncode != 0:
        return {"ok": False, "error": out.stderr.strip()[-500:]}
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def print_sdk(sdk: dict[str, Any]) -> None:
    print(
        "\n### SDK, one device (keybound.client, emulated secure element, secure channel) "
        f"-- {sdk.get('backend', 'sqlite')}\n"
    )
    if not sdk.get("ok"):
        print(f"SDK probe FAILED: {sdk}")
        return
    print(
        table(
            ["what", "value"],
            [
                ["flows (activation, device-initiated, backend-initiated) accepted", "yes"],
                ["peak RSS of the device process (VmHWM)", f"{sdk['peak_rss_kib'] / 1024:.1f} MiB"],
                ["  of which: bare Python interpreter", f"{sdk['python_rss_kib'] / 1024:.1f} MiB"],
                [
                    "  after importing keybound.client",
                    f"{sdk['after_import_rss_kib'] / 1024:.1f} MiB",
                ],
                ["SDK activation", f"{sdk['activation_ms']:.1f} ms"],
                [
                    f"SDK authenticate() p50 over {sdk['authentications']}",
                    f"{sdk['auth_p50_ms']:.1f} ms",
                ],
                ["SDK pending() + authenticate(operation_id)", f"{sdk['backend_auth_ms']:.1f} ms"],
            ],
        )
    )


#: py-spy options per --profile-mode: gil = samples of threads holding the GIL (Python CPU,
#: crypto in C under the GIL; SQLite's own C time runs without the GIL and is not seen);
#: wall = every non-idle thread (also threads waiting for the writer lock or an fsync); native =
#: wall with C frames (sqlite3, OpenSSL), slower to sample.
PROFILE_MODES = {"gil": ["--gil"], "wall": [], "native": ["--native"]}


def profile_server(
    server: KeyboundServer, seconds: float, out_dir: Path, mode: str = "gil"
) -> list[Any]:
    """Start py-spy on every server process (stops by itself after ``seconds``)."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        log("[loadgen] py-spy not found (pip install py-spy); no profile")
        return []
    handles = []
    for pid in server.pids():
        out = out_dir / f"pyspy-{pid}.txt"
        handles.append(
            (
                subprocess.Popen(
                    [
                        spy,
                        "record",
                        "--pid",
                        str(pid),
                        "--duration",
                        str(int(seconds)),
                        "--rate",
                        "250",
                        "--format",
                        "raw",
                        "--output",
                        str(out),
                        "--nonblocking",
                        "--threads",
                    ]
                    + PROFILE_MODES[mode],
                    stdout=subprocess.DEVNULL,
                    stderr=open(str(out) + ".log", "wb"),  # noqa: SIM115
                ),
                out,
            )
        )
    return handles


def print_profile(handles: list[Any], top: int = 25) -> dict[str, Any]:
    from kbbench.profile import summarise

    files = []
    for proc, out in handles:
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.terminate()
        if out.exists() and out.stat().st_size:
            files.append(out)
    if not files:
        errors = " ".join(
            Path(str(out) + ".log").read_text(errors="replace")[-300:]
            for _, out in handles
            if Path(str(out) + ".log").exists()
        )
        print(f"\n(profile: no samples; py-spy said: {errors.strip()})")
        return {}
    summary = summarise(files, top=top)
    print(f"\n### Server profile (py-spy, {summary['samples']} samples)\n")
    print("Self time by library (leaf frame):\n")
    print(table(["%", "where"], [[f(p, 1), name] for name, p in summary["categories"]]))
    print("\nSelf time by function:\n")
    print(table(["%", "function"], [[f(p, 1), fn] for fn, p in summary["self"]]))
    print("\nInclusive time of keybound's own functions:\n")
    print(table(["%", "function"], [[f(p, 1), fn] for fn, p in summary["keybound_inclusive"]]))
    return summary


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--flows", default="device,backend,activation")
    ap.add_argument("--concurrency", default="1,4,16,64")
    ap.add_argument("--seconds", type=float, default=12.0, help="measured window per level")
    ap.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before")
    ap.add_argument("--max-flows", type=int, default=100_000, help="hard cap per level")
    ap.add_argument("--workers", type=int, default=1, help="keybound serve --workers")
    ap.add_argument("--client-procs", type=int, default=4, help="load generator processes")
    ap.add_argument("--no-sweep", action="store_true", help="skip the concurrency sweep")
    ap.add_argument(
        "--registrations",
        default="",
        help="scale runs: comma-separated totals, e.g. 10000,100000,1000000",
    )
    ap.add_argument("--scale-concurrency", type=int, default=16)
    ap.add_argument(
        "--scale-rounds",
        type=int,
        default=3,
        help="scale runs: rounds over all sizes, interleaved (median reported)",
    )
    ap.add_argument(
        "--scale-devices",
        default="hot,seeded",
        help="hot: each virtual client's own activated device; seeded: every "
        "flow as a random pre-seeded registration",
    )
    ap.add_argument(
        "--backend",
        default="sqlite",
        help="database behind keybound serve: sqlite (a fresh embedded file, the "
        "default) or postgresql (a fresh database on a private PostgreSQL server "
        "started for the run on 127.0.0.1, fsync and synchronous commit on); a comma "
        "list, e.g. sqlite,postgresql, runs everything on each in turn, each with "
        "its own fresh databases",
    )
    ap.add_argument(
        "--no-sdk",
        action="store_true",
        help="skip the SDK probe (run on the first backend's sweep server)",
    )
    ap.add_argument(
        "--profile",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="py-spy the server for SECONDS during the first level of the first "
        "backend's sweep (use with one flow and one concurrency)",
    )
    ap.add_argument("--profile-mode", choices=sorted(PROFILE_MODES), default="gil")
    ap.add_argument("--floor-iterations", type=int, default=2000)
    ap.add_argument(
        "--level-floor-iterations",
        type=int,
        default=500,
        help="measure the floor again before each level, for its ÷ floor (0: use the run's floor)",
    )
    ap.add_argument(
        "--json", help="write all results here (default bench/results/keybound-<time>.json)"
    )
    ap.add_argument(
        "--workdir",
        help="keep the SQLite databases (and each server's log, "
        "master key and seed key pool) here instead of a temp dir; a private "
        "PostgreSQL server's data is always removed",
    )
    args = ap.parse_args()
    if args.seconds > 600:
        raise SystemExit("--seconds is capped at 600")
    args.backends = list(dict.fromkeys(x.strip() for x in args.backend.split(",") if x.strip()))
    for b in args.backends:
        if b not in BACKENDS:
            raise SystemExit(f"unknown backend {b!r} (known: {', '.join(BACKENDS)})")
    if not args.backends:
        raise SystemExit("--backend: name at least one of " + ", ".join(BACKENDS))
    flows = [x for x in args.flows.split(",") if x]
    for fl in flows:
        if fl not in STEPS:
            raise SystemExit(f"unknown flow {fl!r} (known: {', '.join(STEPS)})")
    levels = [int(x) for x in args.concurrency.split(",") if x]
    sizes = [int(x) for x in args.registrations.split(",") if x]

    m = meta(args)
    print(f"## keybound load run {m['when']}\n")
    print(
        f"Python {m['python']} ({m['interpreter']}) {m['machine']}, {m['cpus']} CPUs, "
        f"cryptography {m['cryptography']}, uvicorn {m['uvicorn']}, "
        f"commit {m['keybound_commit']}; "
        f"`keybound serve --workers {args.workers}`, "
        f"{' then '.join(b if b != 'sqlite' else 'SQLite' for b in args.backends)}, "
        f"secure channel on; {args.client_procs} client processes max; {args.warmup:.0f} s "
        f"warm-up + {args.seconds:.0f} s per level (cap {args.max_flows} flows)."
    )

    log("[loadgen] measuring the crypto floor")
    items = floor.measure(iterations=args.floor_iterations)
    per_flow = floor.per_flow(items)
    print_floor(items, per_flow)
    out: dict[str, Any] = {
        "meta": m,
        "floor": {"items_us": items, "per_flow_us": per_flow},
        "sweep": [],
        "scale": [],
        "sdk": None,
        "profile": None,
    }
    sweep = not args.no_sweep and bool(flows) and bool(levels)

    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = Path(args.json) if args.json else RESULTS / f"keybound-{stamp}.json"
    tmp = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="kb-load-"))
    try:
        for i, backend in enumerate(args.backends):
            first = i == 0
            prefix = "" if backend == "sqlite" else f"{backend}-"
            pg: BenchPostgres | None = None
            if backend == "postgresql":
                lifetime = pg_lifetime(args, len(flows) * len(levels) if sweep else 0, sizes)
                log(f"[loadgen] starting a private PostgreSQL (at most {lifetime:.0f} s)")
                pg = BenchPostgres(lifetime).start()
            try:
                if pg is not None:
                    m["databases"][backend] = (
                        f"postgresql {pg.version} (private server, 127.0.0.1, "
                        f"{', '.join(s for s in PG_SETTINGS if not s.startswith('listen'))})"
                    )
                    log(f"[loadgen] {m['databases'][backend]}, port {pg.port}")
                else:
                    m["databases"][backend] = SQLITE_DESCRIPTION
                m["database"] = "; ".join(m["databases"].values())
                if sweep:
                    run_sweep(
                        args,
                        out,
                        flows,
                        levels,
                        per_flow,
                        tmp / f"{prefix}sweep",
                        backend,
                        pg,
                        sdk=first and not args.no_sdk,
                        profile=first and bool(args.profile),
                    )
                if sizes:
                    scale = run_scale(args, sizes, tmp / f"{prefix}scale", backend, pg)
                    print_scale(scale, backend)
                    out["scale"] += scale
            finally:
                if pg is not None:
                    log("[loadgen] stopping the private PostgreSQL")
                    pg.stop()
    except BaseException as exc:  # what was measured before is kept: written below
        out["error"] = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        if not args.workdir:
            shutil.rmtree(tmp, ignore_errors=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out, indent=1, default=str))
        print(f"\n(results{' so far' if 'error' in out else ''}: {path})")
    return 0


def run_sweep(
    args: argparse.Namespace,
    out: dict[str, Any],
    flows: list[str],
    levels: list[int],
    per_flow: dict[str, float],
    workdir: Path,
    backend: str,
    pg: BenchPostgres | None,
    *,
    sdk: bool,
    profile: bool,
) -> None:
    """Every flow at every concurrency on one fresh server; results appended to ``out``."""
    server = new_server(args, workdir, backend, pg)
    server.start()
    results: list[dict[str, Any]] = []
    profiling: list[Any] = []
    try:
        if sdk:
            log(f"[loadgen] SDK probe (one device, real SDK) on {backend}")
            out["sdk"] = {**sdk_probe(server, 50), "backend": backend}
        first = True
        for fl in flows:
            for c in levels:
                if first and profile:
                    profiling = profile_server(server, args.profile, workdir, args.profile_mode)
                    out["profile"] = {"backend": backend, "flow": fl, "concurrency": c}
                # the floor again, just before the level: this machine's speed drifts over
                # minutes, and the ratio should compare CPU times of the same minute
                level_floor = (
                    floor.per_flow(floor.measure(iterations=args.level_floor_iterations))[fl]
                    if args.level_floor_iterations
                    else per_flow[fl]
                )
                log(
                    f"[loadgen] {backend} {fl} c={c}: {args.warmup:.0f}+{args.seconds:.0f} s "
                    f"(floor now {level_floor:.0f} µs)"
                )
                r = run_level(
                    server,
                    fl,
                    c,
                    seconds=args.seconds,
                    warmup=args.warmup,
                    max_flows=args.max_flows,
                    client_procs=args.client_procs,
                    floor_us=level_floor,
                )
                first = False
                db = r["cpu"]["db_cpu_ms_per_flow"]
                log(
                    f"[loadgen]   {r['flows_per_s']:.0f} flows/s, p99 "
                    f"{r['flow_p99_ms']:.1f} ms, srv "
                    f"{r['cpu']['server_cpu_ms_per_flow']:.2f} ms/flow"
                    + (f", db {db:.2f} ms/flow" if db is not None else "")
                    + f", {r['flows_failed']} failed"
                )
                results.append(r)
    finally:
        server.stop()
        out["sweep"] += results
    print_sweep(results, backend)
    if sdk and out["sdk"] is not None:
        print_sdk(out["sdk"])
    if profiling:
        out["profile"].update(print_profile(profiling))


def run_scale(
    args: argparse.Namespace,
    sizes: list[int],
    workdir: Path,
    backend: str,
    pg: BenchPostgres | None,
) -> list[dict[str, Any]]:
    """Each size on its own fresh database, seeded with N registrations; then
    ``--scale-rounds`` rounds, each running every size in turn on a fresh server (so its
    peak RSS is this size's): device-initiated authentication with the virtual clients' own
    devices (hot) and as random seeded registrations (seeded).

    Rounds interleave the sizes, so a change in this machine's speed during the run (it
    shares its host) touches every size alike. Each size reports its median round; the
    ratio to the smallest size is the median of the per-round ratios (paired runs, minutes
    apart at most), and the peak RSS the highest of any round."""
    kinds = [k for k in args.scale_devices.split(",") if k]
    servers: dict[int, tuple[KeyboundServer, Path, dict[str, Any]]] = {}
    for n in sorted(sizes):
        server = new_server(args, workdir / f"size-{n}", backend, pg)
        # the seed key pool's private keys: beside an SQLite database, else in the work dir
        pool_file = seeding.pool_path(server.db_url) or server.workdir / "seedkeys.json"
        log(f"[loadgen] seeding {n:,} registrations")
        s = seeding.seed(server.db_url, server.app, n, log=log, pool_file=pool_file)
        log(f"[loadgen]   {s['inserted']:,} in {s['seconds']:.1f} s ({s['rows_per_s']:,.0f}/s)")
        servers[n] = (server, pool_file, s)
    runs: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for rnd in range(1, args.scale_rounds + 1):
        for n, (server, pool_file, _) in servers.items():
            for kind in kinds:
                server.start()
                try:
                    seeded = None
                    if kind == "seeded":
                        want = min(args.max_flows, int(3000 * (args.seconds + args.warmup)))
                        seeded = seeding.sample_seeded(
                            server.db_url,
                            server.app,
                            want,
                            seeding.load_or_make_pool(server.db_url, 1000, pool_file),
                        )
                    log(
                        f"[loadgen] {backend} scale round {rnd}/{args.scale_rounds}: {n:,} "
                        f"{kind} c={args.scale_concurrency}"
                    )
                    r = run_level(
                        server,
                        "device",
                        args.scale_concurrency,
                        seconds=args.seconds,
                        warmup=args.warmup,
                        max_flows=args.max_flows,
                        client_procs=args.client_procs,
                        seeded=seeded,
                        pool_file=str(pool_file),
                    )
                    log(
                        f"[loadgen]   {r['flows_per_s']:.0f} flows/s, p99 "
                        f"{r['flow_p99_ms']:.1f} ms, peak RSS "
                        f"{r['server_peak_rss_mib_max']:.0f} MiB"
                    )
                finally:
                    server.stop()
                runs.setdefault((n, kind), []).append(r)
    smallest = min(sizes)
    out = []
    for (n, kind), rs in runs.items():
        s = servers[n][2]
        base = runs.get((smallest, kind), [])
        paired = [
            r["flows_per_s"] / b["flows_per_s"]
            for r, b in zip(rs, base, strict=True)
            if b["flows_per_s"]
        ]
        out.append(
            {
                "backend": backend,
                "registrations": n,
                "devices": kind,
                "seed_seconds": s["seconds"] if kind == kinds[0] else 0.0,
                "seed_rows_per_s": s["rows_per_s"],
                "db_mib": s["db_bytes"] / 2**20,
                "result": sorted(rs, key=lambda r: r["flows_per_s"])[len(rs) // 2],
                "rounds_flows_per_s": [r["flows_per_s"] for r in rs],
                "rounds_flows_failed": sum(r["flows_failed"] for r in rs),
                "server_peak_rss_mib_max": max(r["server_peak_rss_mib_max"] for r in rs),
                "throughput_vs_smallest": statistics.median(paired) if paired else None,
                "rounds_vs_smallest": paired,
            }
        )
    return out  # by size, then kind: the order of the first round


if __name__ == "__main__":
    sys.exit(main())
