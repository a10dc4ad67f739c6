"""The operator's commands for events: ``keybound webhook ...`` (endpoints, secrets, the
delivery log, redelivery, and the sender as a process of its own) and ``keybound push ...``
(each application's device-notification providers). docs/events.md, docs/notifications.md.

Everything goes through the server's service layer (``kb.admin``), audited as the
operator's; the endpoint policy comes from the environment as for ``keybound serve``
(``KEYBOUND_WEBHOOK_ALLOW_HTTP``, ``KEYBOUND_WEBHOOK_ALLOWED_NETWORKS``).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from keybound.cli.common import positive, with_database_option

#: the public event types (keybound.rpapi.EventName), named here to keep the parser lean
EVENT_TYPES = (
    "operation.completed",
    "operation.failed",
    "operation.expired",
    "device.activated",
    "device.locked",
    "device.unlocked",
    "device.deactivated",
    "device.clone_suspected",
    "device.operation_pending",
)
SCHEMES = ("v1", "v1a")
DELIVERY_STATES = ("pending", "delivered", "gave_up", "gone")
PUSH_KINDS = ("webhook", "fcm", "apns")


def _print(model: Any) -> None:
    print(model.model_dump_json(by_alias=True, exclude_none=True, indent=2))


def _open(args: argparse.Namespace) -> Any:
    from keybound.cli.server import _open as open_server

    return open_server(args)


def cmd_webhook(args: argparse.Namespace) -> int:
    from keybound import rpapi

    if args.webhook_command == "deliver":
        return _deliver(args)
    admin = _open(args).admin
    app, command = args.application_id, args.webhook_command
    if command == "create":
        created = admin.create_webhook_endpoint(
            app,
            rpapi.CreateWebhookEndpointRequest(
                url=args.url,
                description=args.description,
                event_types=[rpapi.EventName(t) for t in args.event_type or EVENT_TYPES],
                secret_scheme=rpapi.SecretScheme(args.scheme),
            ),
        )
        if created.secret.secret:
            print("store this secret now; it is not shown again:", file=sys.stderr)
        _print(created)
    elif command == "list":
        _print(admin.webhook_endpoints(app))
    elif command == "show":
        _print(admin.webhook_endpoint(app, args.endpoint_id))
    elif command == "update":
        enabled = True if args.enable else False if args.disable else None
        _print(
            admin.update_webhook_endpoint(
                app,
                args.endpoint_id,
                rpapi.UpdateWebhookEndpointRequest(
                    url=args.url,
                    description=args.description,
                    enabled=enabled,
                    event_types=[rpapi.EventName(t) for t in args.event_type]
                    if args.event_type
                    else None,
                ),
            )
        )
    elif command == "delete":
        admin.delete_webhook_endpoint(app, args.endpoint_id)
        print(f"deleted {args.endpoint_id}")
    elif command == "secret-add":
        secret = admin.add_webhook_secret(app, args.endpoint_id, rpapi.SecretScheme(args.scheme))
        if secret.secret:
            print("store this secret now; it is not shown again:", file=sys.stderr)
        _print(secret)
    elif command == "secret-revoke":
        _print(admin.revoke_webhook_secret(app, args.endpoint_id, args.secret_id))
    elif command == "deliveries":
        _print(
            admin.webhook_deliveries(
                app,
                args.endpoint_id,
                after=args.after,
                limit=args.limit,
                state=rpapi.DeliveryState(args.state) if args.state else None,
            )
        )
    elif command == "attempts":
        _print(admin.webhook_attempts(app, args.endpoint_id, after=args.after, limit=args.limit))
    else:  # redeliver
        _print(
            admin.redeliver(
                app,
                args.endpoint_id,
                rpapi.RedeliverRequest(event_id=args.event_id, since=args.since, until=args.until),
            )
        )
    return 0


def _deliver(args: argparse.Namespace) -> int:
    """The sender alone, until SIGINT or SIGTERM (then it stops at once: what was in flight
    is sent again by whoever holds it next, after its lease)."""
    import asyncio
    import signal

    from keybound.server.services.outbox import Outbox, settings_from_env

    settings = settings_from_env()
    kb = _open(args)
    print(
        f"keybound: sending webhooks and notifications from {kb.db.display_url}",
        file=sys.stderr,
        flush=True,
    )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await Outbox(kb, settings=settings).run(stop)

    try:
        asyncio.run(main())
    finally:
        kb.close()
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from keybound.server.notify.base import ProviderKind

    admin = _open(args).admin
    if args.push_command == "list":
        for info in admin.push_providers(args.application_id):
            print(json.dumps({"kind": info.kind.value, "settings": info.settings}))
        return 0
    kind = ProviderKind(args.kind)
    if args.push_command == "remove":
        admin.remove_push_provider(args.application_id, kind)
        print(f"removed the {kind.value} provider of {args.application_id}")
        return 0
    from keybound.cli.server import _parse_settings

    credentials = Path(args.key_file).read_bytes() if args.key_file else None
    info = admin.set_push_provider(
        args.application_id, kind, _parse_settings(args.settings), credentials
    )
    if info.secret:
        print(
            "the push service verifies requests with this whsec_ secret (Standard "
            "Webhooks); store it now, it is not shown again:",
            file=sys.stderr,
        )
        print(info.secret)
    print(json.dumps({"kind": info.kind.value, "settings": info.settings}), file=sys.stderr)
    return 0


# -- parser -------------------------------------------------------------------------------


def _moment(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError("an ISO 8601 time, e.g. 2026-12-08T10:00:00Z") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError("give a time zone (Z for UTC)")
    return moment


def register(sub: Any) -> None:
    webhook = sub.add_parser(
        "webhook",
        help="webhook endpoints, secrets, the delivery log, "
        "redelivery; `deliver` runs the sender on its own",
    )
    actions = webhook.add_subparsers(dest="webhook_command", required=True, metavar="ACTION")

    def action(name: str, help_: str, *, endpoint: bool = True) -> argparse.ArgumentParser:
        parser = with_database_option(actions.add_parser(name, help=help_))
        parser.add_argument("application_id")
        if endpoint:
            parser.add_argument("endpoint_id")
        return parser

    create = action(
        "create", "register an endpoint: APP URL; prints its first secret once", endpoint=False
    )
    create.add_argument("url")
    create.add_argument(
        "--event-type",
        action="append",
        choices=EVENT_TYPES,
        help="subscribe to this type (repeat; default: every type)",
    )
    create.add_argument(
        "--scheme",
        choices=SCHEMES,
        default="v1",
        help="v1: HMAC with a whsec_ secret (default); v1a: Ed25519, the "
        "receiver holds the whpk_ public key",
    )
    create.add_argument("--description", default="")
    action("list", "an application's endpoints", endpoint=False)
    action("show", "one endpoint, with its secrets' ids and v1a public keys")
    update = action("update", "change the URL, description or subscriptions; --enable after a 410")
    update.add_argument("--url")
    update.add_argument("--description")
    update.add_argument("--event-type", action="append", choices=EVENT_TYPES)
    toggle = update.add_mutually_exclusive_group()
    toggle.add_argument("--enable", action="store_true")
    toggle.add_argument("--disable", action="store_true")
    action("delete", "delete an endpoint, its secrets and its delivery log")
    add = action("secret-add", "add a secret (rotation: every active secret signs)")
    add.add_argument("--scheme", choices=SCHEMES, default="v1")
    revoke = action("secret-revoke", "revoke a secret (never the last one)")
    revoke.add_argument("secret_id")
    deliveries = action("deliveries", "deliveries of an endpoint (JSON)")
    deliveries.add_argument("--state", choices=DELIVERY_STATES)
    attempts = action("attempts", "the delivery log: one line per attempt (JSON)")
    for parser in (deliveries, attempts):
        parser.add_argument("--after", type=int, default=0, help="cursor (an id)")
        parser.add_argument("--limit", type=positive, default=100)
    redeliver = action(
        "redeliver", "send one event (--event-id) or a time range (--since, --until) again"
    )
    redeliver.add_argument("--event-id")
    redeliver.add_argument("--since", type=_moment)
    redeliver.add_argument("--until", type=_moment)
    with_database_option(
        actions.add_parser(
            "deliver",
            help="run the sender alone (as every `keybound serve` process does "
            "unless started with --no-deliver), until SIGINT/SIGTERM",
        )
    )
    webhook.set_defaults(func=cmd_webhook)

    push = sub.add_parser("push", help="device notifications: an application's providers")
    push_actions = push.add_subparsers(dest="push_command", required=True, metavar="ACTION")
    put = with_database_option(
        push_actions.add_parser(
            "set", help="configure a provider: APP KIND [--key-file FILE] [name=value ...]"
        )
    )
    put.add_argument("application_id")
    put.add_argument("kind", choices=PUSH_KINDS)
    put.add_argument(
        "settings",
        nargs="*",
        metavar="name=value",
        help="webhook: url=...; fcm: apiBaseUrl, androidPriority, "
        "timeToLiveSeconds; apns: teamId keyId topic environment pushType "
        "alertTitle alertBody baseUrl timeToLiveSeconds; any: caFile",
    )
    put.add_argument(
        "--key-file",
        help="fcm: the service-account key (JSON); apns: the "
        ".p8 key. Stored wrapped under the master key",
    )
    gone = with_database_option(push_actions.add_parser("remove", help="remove a provider"))
    gone.add_argument("application_id")
    gone.add_argument("kind", choices=PUSH_KINDS)
    listed = with_database_option(
        push_actions.add_parser("list", help="an application's providers (never a credential)")
    )
    listed.add_argument("application_id")
    push.set_defaults(func=cmd_push)
