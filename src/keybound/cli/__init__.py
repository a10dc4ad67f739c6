"""The ``keybound`` command line.

Device commands (``keybound device ...``) need only the SDK; the server's commands need
``keybound[server]`` and say so when it is missing.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from keybound import __version__
from keybound.cli import attestation, device, server
from keybound.cli.common import DATABASE_URL_HELP
from keybound.errors import KeyboundError

#: `pip install keybound` is the device SDK and CLI: the server's commands import these (from
#: the [server] and [postgres] extras) only when they run
EXTRA_OF = {
    "fastapi": "server",
    "starlette": "server",
    "uvicorn": "server",
    "sqlalchemy": "server",
    "alembic": "server",
    "psycopg": "postgres",
    # keybound.attestation: App Attest / WebAuthn CBOR, Android's KeyDescription
    "cbor2": "server",
    "pyasn1": "server",
    "pyasn1_modules": "server",
    "yaml": "server",
}


def cmd_demo(args: argparse.Namespace) -> int:
    from keybound.cli.demo import run_demo

    result: int = run_demo()
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keybound", description="Device authentication with hardware-protected keys."
    )
    parser.add_argument("--version", action="version", version=f"keybound {__version__}")
    parser.add_argument("--database-url", default=argparse.SUPPRESS, help=DATABASE_URL_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    server.register(sub)
    demo_help = (
        "start a server on its own temporary SQLite database (--database-url and "
        "$KEYBOUND_DATABASE_URL are ignored), activate and authenticate demo devices under "
        "every strategy, print the decisions"
    )
    demo = sub.add_parser("demo", help=demo_help, description=demo_help[0].upper() + demo_help[1:])
    demo.set_defaults(func=cmd_demo)
    device.register(sub)
    attestation.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: int = args.func(args)
    except KeyboundError as exc:
        print(f"keybound: {exc.code.value}: {exc.detail}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        extra = EXTRA_OF.get((exc.name or "").partition(".")[0])
        if extra is None:
            raise
        print(
            f"keybound: {args.command} needs {exc.name}: pip install 'keybound[{extra}]'",
            file=sys.stderr,
        )
        return 2
    return result


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
