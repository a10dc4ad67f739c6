"""The ``keybound`` command line: serve, demo, applications, API keys, database."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from keybound import __version__, device_cli
from keybound.errors import KeyboundError

ENV_DATABASE_URL = "KEYBOUND_DATABASE_URL"


def _database_url(args: argparse.Namespace) -> str | None:
    url: str | None = args.database_url or os.environ.get(ENV_DATABASE_URL)
    return url


def _open(args: argparse.Namespace) -> Any:
    from keybound.server.service import Keybound

    return Keybound.open(_database_url(args))


def _parse_settings(pairs: Sequence[str]) -> dict[str, Any]:
    """``name=value`` pairs; values are JSON when they parse as JSON, else strings.
    Lists may also be given comma-separated (``enabledRiskData=hwKeyClientStatus,...``)."""
    settings: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name:
            raise SystemExit(f"keybound: expected name=value, got {pair!r}")
        try:
            settings[name] = json.loads(raw)
        except json.JSONDecodeError:
            settings[name] = raw
    return settings


# -- commands -----------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    from keybound.server.runner import serve

    serve(database_url=_database_url(args), host=args.host, port=args.port,
          workers=args.workers, log_level=args.log_level)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from keybound.demo import run_demo

    result: int = run_demo(database_url=_database_url(args))
    return result


def cmd_app(args: argparse.Namespace) -> int:
    kb = _open(args)
    if args.app_command == "list":
        for app_id in kb.applications.ids():
            print(app_id)
        return 0
    if args.app_command == "create":
        from keybound.server.appconfig import AppConfig

        config = AppConfig().updated(_parse_settings(args.settings))
        kb.applications.create(args.application_id, config)
    elif args.app_command == "update":
        kb.applications.update(args.application_id, _parse_settings(args.settings))
    config = kb.applications.config(args.application_id)
    print(json.dumps({"applicationId": args.application_id, **config.to_json()}, indent=2))
    return 0


def cmd_api_key(args: argparse.Namespace) -> int:
    kb = _open(args)
    if args.key_command == "create":
        new = kb.applications.create_api_key(args.application_id, args.label)
        print(f"key id: {new.info.key_id}", file=sys.stderr)
        print("store this token now; it is not shown again:", file=sys.stderr)
        print(new.token)
    elif args.key_command == "revoke":
        kb.applications.revoke_api_key(args.key_id)
        print(f"revoked {args.key_id}")
    else:
        for key in kb.applications.list_api_keys(args.application_id):
            state = "revoked" if key.revoked_at else "active"
            print(f"{key.key_id}  {state:7}  {key.label}")
    return 0


def cmd_db(args: argparse.Namespace) -> int:
    kb = _open(args)  # opening migrates to the newest revision
    print(f"database at {kb.db.url} is at the newest schema revision")
    return 0


# -- parser -------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keybound",
        description="Device authentication with hardware-protected keys.",
    )
    parser.add_argument("--version", action="version", version=f"keybound {__version__}")
    parser.add_argument(
        "--database-url",
        help=f"SQLAlchemy database URL (default: ${ENV_DATABASE_URL}, else an embedded SQLite "
        "file at ~/.keybound/keybound.db, created on first use)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the server (embedded SQLite by default)")
    serve.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument("--workers", type=int, default=1, help="server processes (default 1)")
    serve.add_argument("--log-level", default="info",
                       choices=["critical", "error", "warning", "info", "debug"])
    serve.set_defaults(func=cmd_serve)

    demo = sub.add_parser(
        "demo", help="start a server on a temporary database, activate and authenticate demo "
        "devices under every strategy, print the decisions")
    demo.set_defaults(func=cmd_demo)

    app = sub.add_parser("app", help="create, show, update application configurations")
    app_sub = app.add_subparsers(dest="app_command", required=True, metavar="ACTION")
    create = app_sub.add_parser("create", help="create an application: ID [name=value ...]")
    create.add_argument("application_id")
    create.add_argument("settings", nargs="*", metavar="name=value",
                        help="e.g. hwKeyValidationStrategy=REQUIRED activationCodeLength=8")
    show = app_sub.add_parser("show", help="print an application's configuration")
    show.add_argument("application_id")
    update = app_sub.add_parser("update", help="change settings; applies to the next operation")
    update.add_argument("application_id")
    update.add_argument("settings", nargs="+", metavar="name=value")
    app_sub.add_parser("list", help="list application ids")
    app.set_defaults(func=cmd_app)

    key = sub.add_parser("api-key", help="relying-party API keys (stored only as hashes)")
    key_sub = key.add_subparsers(dest="key_command", required=True, metavar="ACTION")
    kc = key_sub.add_parser("create", help="create a key for an application; prints the token")
    kc.add_argument("application_id")
    kc.add_argument("--label", default="")
    kr = key_sub.add_parser("revoke", help="revoke a key by its key id")
    kr.add_argument("key_id")
    kl = key_sub.add_parser("list", help="list an application's keys")
    kl.add_argument("application_id")
    key.set_defaults(func=cmd_api_key)

    device_cli.register(sub)

    db = sub.add_parser("db", help="create or upgrade the database schema")
    db.add_argument("action", choices=["upgrade"])
    db.set_defaults(func=cmd_db)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: int = args.func(args)
    except KeyboundError as exc:
        print(f"keybound: {exc.code.value}: {exc.detail}", file=sys.stderr)
        return 2
    return result


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
