"""The server's commands: ``serve``, ``app``, ``api-key``, ``e2e-key``, ``signing-key``,
``audit``, ``db``.

They need the server's dependencies (``pip install 'keybound[server]'``); the parser is
built without them, and a command says what to install when they are missing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from keybound.cli import webhook
from keybound.cli.common import positive, with_database_option
from keybound.server.web.limits import EdgeLimits
from keybound.storage import ENV_DATABASE_URL

if TYPE_CHECKING:
    from keybound.server.services import Keybound

#: the HPKE suites (keybound.channel.ChannelSuite), named here to keep the parser lean
SUITES = (
    "X25519_SHA256_AES128GCM",
    "X25519_SHA256_CHACHA20POLY1305",
    "MLKEM768X25519_SHA256_AES128GCM",
)


def database_url(args: argparse.Namespace) -> str | None:
    url: str | None = getattr(args, "database_url", None) or os.environ.get(ENV_DATABASE_URL)
    return url


def _open(args: argparse.Namespace) -> Keybound:
    from keybound.server.services import Keybound

    return Keybound.open(database_url(args))


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
    from keybound.server.attestation_trust import ENV_REVOCATION_LIST, ENV_TRUST_DIR
    from keybound.server.web.runner import allow_plaintext_from_env, deliver_from_env, serve

    # through the environment, so every worker process configures the same trust
    if args.attestation_trust_dir:
        os.environ[ENV_TRUST_DIR] = args.attestation_trust_dir
    if args.attestation_revocation_list:
        os.environ[ENV_REVOCATION_LIST] = args.attestation_revocation_list
    limits = EdgeLimits(
        max_header_bytes=args.max_header_bytes,
        max_header_fields=args.max_header_fields,
        header_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
        keep_alive_timeout=args.keep_alive_timeout,
        send_timeout=args.send_timeout,
        max_connections=args.max_connections,
    )
    serve(
        database_url=database_url(args),
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        allow_plaintext=args.allow_plaintext or allow_plaintext_from_env(),
        limits=limits,
        deliver=not args.no_deliver and deliver_from_env(),
    )
    return 0


def cmd_app(args: argparse.Namespace) -> int:
    from keybound.server.core.appconfig import AppConfig

    admin = _open(args).admin
    if args.app_command == "list":
        for app_id in admin.application_ids():
            print(app_id)
        return 0
    if args.app_command == "create":
        config = AppConfig().updated(_parse_settings(args.settings))
        admin.create_application(args.application_id, config)
    elif args.app_command == "update":
        admin.update_application(args.application_id, _parse_settings(args.settings))
    config = admin.application_config(args.application_id)
    print(json.dumps({"applicationId": args.application_id, **config.to_json()}, indent=2))
    return 0


def cmd_api_key(args: argparse.Namespace) -> int:
    admin = _open(args).admin
    if args.key_command == "create":
        new = admin.create_api_key(args.application_id, args.label)
        print(f"key id: {new.info.key_id}", file=sys.stderr)
        print("store this token now; it is not shown again:", file=sys.stderr)
        print(new.token)
    elif args.key_command == "revoke":
        admin.revoke_api_key(args.key_id)
        print(f"revoked {args.key_id}")
    else:
        for key in admin.api_keys(args.application_id):
            state = "revoked" if key.revoked_at else "active"
            print(f"{key.key_id}  {state:7}  {key.label}")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    if args.audit_command == "verify" and args.export:
        return _verify_export(args)
    if args.audit_command == "verify" and args.kept:
        return _verify_database_against(args)
    admin = _open(args).admin
    if args.audit_command == "noise":
        since = int((time.time() - args.hours * 3600) * 1000)
        for record in admin.noise(since_ms=since):
            print(json.dumps(record._asdict(), sort_keys=True))
        return 0
    if args.audit_command == "checkpoint":
        made = admin.audit_checkpoint()
        print(
            f"signed checkpoint of chain position {made.chain_seq}"
            if made
            else "the chain's head is signed already"
        )
        return 0
    if args.audit_command == "export":
        return _export(admin, args.file)
    if args.audit_command == "verify":
        from keybound.server.events.chain import AuditChainInvalid

        try:
            verified = admin.audit_verify()
        except AuditChainInvalid as exc:
            return _findings(exc)
        _print_verified(verified)
        return 0
    from keybound.protocol import b64u_encode

    for event in reversed(admin.events(application_id=args.application_id, limit=args.limit)):
        print(
            json.dumps(
                {
                    name: b64u_encode(value) if isinstance(value, bytes) else value
                    for name, value in event._asdict().items()
                },
                sort_keys=True,
            )
        )
    return 0


def _export(admin: Any, file: str) -> int:
    if file == "-":
        exported = admin.audit_export(sys.stdout)
    else:
        with open(file, "x", encoding="utf-8") as out:  # never overwrite an earlier export
            exported = admin.audit_export(out)
    print(
        f"exported {exported.entries} entries and {exported.checkpoints} checkpoints "
        f"(up to chain position {exported.last})",
        file=sys.stderr,
    )
    return 0


def _kept(args: argparse.Namespace, jwks: Any) -> list[Any]:
    """The entries of the earlier export given with --kept, itself verified first."""
    from keybound.server.services.audit import lines_of, verify_export

    if not args.kept:
        return []
    with open(args.kept, encoding="utf-8") as handle:
        parsed, _ = verify_export(lines_of(handle), jwks=jwks)
    return parsed.entries


def _trusted_keys(args: argparse.Namespace) -> Any:
    if args.jwks:
        with open(args.jwks, encoding="utf-8") as handle:
            return json.load(handle)
    print(
        "warning: checking the checkpoints against the keys the export carries; pass "
        "--jwks with the server's published JWKS you keep, to trust only those",
        file=sys.stderr,
    )
    return None


def _verify_export(args: argparse.Namespace) -> int:
    from keybound.server.events.chain import AuditChainInvalid
    from keybound.server.services.audit import ExportInvalid, lines_of, verify_export

    jwks = _trusted_keys(args)
    try:
        kept = _kept(args, jwks)
        with open(args.export, encoding="utf-8") as handle:
            parsed, verified = verify_export(lines_of(handle), jwks=jwks, kept=kept)
    except ExportInvalid as exc:
        print(f"keybound: {exc.detail}", file=sys.stderr)
        return 1
    except AuditChainInvalid as exc:
        return _findings(exc)
    print(f"export of {parsed.issuer}, taken at {parsed.exported_at} ms")
    _print_verified(verified)
    return 0


def _verify_database_against(args: argparse.Namespace) -> int:
    from keybound.server.events.chain import AuditChainInvalid
    from keybound.server.services.audit import ExportInvalid

    admin = _open(args).admin
    try:
        verified = admin.audit_verify(kept=_kept(args, _trusted_keys(args)))
    except ExportInvalid as exc:
        print(f"keybound: {exc.detail}", file=sys.stderr)
        return 1
    except AuditChainInvalid as exc:
        return _findings(exc)
    _print_verified(verified)
    return 0


def _findings(exc: Any) -> int:
    print(f"the audit trail was altered: {len(exc.findings)} finding(s)")
    for finding in exc.findings:
        print(f"  {finding}")
    return 1


def _print_verified(verified: Any) -> None:
    print(
        f"intact: {verified.entries} chained entries (chain positions {verified.first} to "
        f"{verified.last}), {verified.checkpoints} valid checkpoints"
    )
    if verified.pruned_up_to is not None:
        print(f"  positions up to {verified.pruned_up_to} were pruned (signed checkpoint)")
    if verified.unsealed:
        print(f"  {verified.unsealed} entries written since are not sealed into the chain yet")
    print(
        f"  signed up to position {verified.signed_up_to}; {verified.unsigned} newer "
        "entries are chained but not yet signed"
    )


def cmd_signing_key(args: argparse.Namespace) -> int:
    from keybound.server.clock import ms_to_dt
    from keybound.server.events.results import ResultAlgorithm

    kb = _open(args)
    admin = kb.admin
    if args.signing_command == "create":
        info = admin.create_signing_key(ResultAlgorithm(args.algorithm))
        print(f"{info.kid}  ({info.algorithm.value}, ACTIVE: it signs from now on)")
    elif args.signing_command == "retire":
        info = admin.retire_signing_key(args.kid, publish_days=args.publish_days)
        until = (
            "for good"
            if info.expires_at is None
            else f"until {ms_to_dt(info.expires_at).strftime('%Y-%m-%dT%H:%M:%SZ')}"
        )
        print(f"{info.kid} is RETIRED; it stays in the JWKS {until}")
    elif args.signing_command == "issuer":
        print(admin.set_issuer(args.url) if args.url else kb.results.issuer())
    else:
        print(f"issuer: {kb.results.issuer()}")
        print(f"{'kid':43}  {'alg':7}  {'state':7}  {'created':20}  {'retired':20}  published")
        for key in admin.signing_keys():
            created, retired = (
                ms_to_dt(t).strftime("%Y-%m-%dT%H:%M:%SZ") if t else "-"
                for t in (key.created_at, key.retired_at)
            )
            until = (
                "for good"
                if key.expires_at is None
                else f"until {ms_to_dt(key.expires_at).strftime('%Y-%m-%dT%H:%M:%SZ')}"
            )
            print(
                f"{key.kid:43}  {key.algorithm.value:7}  {key.state.value:7}  "
                f"{created:20}  {retired:20}  {until}"
            )
    return 0


def cmd_e2e_key(args: argparse.Namespace) -> int:
    from keybound.channel import ChannelSuite
    from keybound.server.clock import ms_to_dt
    from keybound.server.services.e2ekeys import E2EKeys

    admin = _open(args).admin
    if args.e2e_command == "list":
        print(
            f"{'key id':16}  {'state':8}  {'suite':31}  {'created':20}  {'activated':20}  retired"
        )
        for key in admin.e2e_keys(args.application_id):
            times = [
                ms_to_dt(t).strftime("%Y-%m-%dT%H:%M:%SZ") if t else "-"
                for t in (key.created_at, key.activated_at, key.retired_at)
            ]
            print(
                f"{key.key_id:16}  {key.state.value:8}  {key.suite.value:31}  "
                f"{times[0]:20}  {times[1]:20}  {times[2]}"
            )
        return 0
    if args.e2e_command == "create":
        E2EKeys.check_server_url(args.server_url)  # before creating anything
        info = admin.create_e2e_key(
            args.application_id, suite=ChannelSuite(args.suite), active=not args.inactive
        )
        print(f"key id: {info.key_id}  ({info.state.value}, {info.suite.value})", file=sys.stderr)
        print("channel pin (ship it in the app; it holds no secret):", file=sys.stderr)
        print(admin.e2e_pin(info.key_id, server_url=args.server_url).to_string())
    elif args.e2e_command == "pin":
        print(admin.e2e_pin(args.key_id, server_url=args.server_url).to_string())
    elif args.e2e_command == "activate":
        print(f"{admin.activate_e2e_key(args.key_id).key_id} is ACTIVE")
    else:
        print(
            f"{admin.retire_e2e_key(args.key_id).key_id} is RETIRED; requests sealed to it now fail"
        )
    return 0


def cmd_db(args: argparse.Namespace) -> int:
    kb = _open(args)  # opening migrates to the newest revision
    if args.action == "prune":
        from keybound.server.services.retention import Retention

        pruned = kb.admin.prune(
            Retention(
                operations_days=args.operations_days,
                superseded_keys_days=args.superseded_keys_days,
                events_days=args.events_days,
                noise_days=args.noise_days,
                webhook_log_days=args.webhook_log_days,
            )
        )
        print(
            json.dumps(
                {
                    "operations": pruned.operations,
                    "supersededKeys": pruned.superseded_keys,
                    "seenRequests": pruned.seen_requests,
                    "events": pruned.events,
                    "noise": pruned.noise,
                    "postContexts": pruned.post_contexts,
                    "webhookLog": pruned.webhook_log,
                    "activationSecrets": pruned.activation_secrets,
                }
            )
        )
        return 0
    print(f"database at {kb.db.display_url} is at the newest schema revision")
    return 0


# -- parser -------------------------------------------------------------------------------


def _days(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 (keep for ever) or more")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected seconds (e.g. 10 or 2.5), got {text!r}"
        ) from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0, got {text!r}")
    return value


def _add_edge_limits(serve: argparse.ArgumentParser) -> None:
    """The HTTP edge's limits (keybound.server.web.limits; docs/deployment.md)."""
    default = EdgeLimits()
    edge = serve.add_argument_group(
        "HTTP edge limits",
        "enforced by every server process on its own connections, before "
        "any handler runs; see docs/deployment.md for what a reverse proxy should add",
    )
    edge.add_argument(
        "--max-header-bytes",
        type=positive,
        default=default.max_header_bytes,
        metavar="BYTES",
        help="request line and header fields together; larger "
        f"heads get 431 (default {default.max_header_bytes})",
    )
    edge.add_argument(
        "--max-header-fields",
        type=positive,
        default=default.max_header_fields,
        metavar="N",
        help=f"header fields per request; more get 431 (default {default.max_header_fields})",
    )
    edge.add_argument(
        "--header-timeout",
        type=_seconds,
        default=default.header_timeout,
        metavar="SECONDS",
        help="a request head must arrive within this time of "
        "its first byte (of the connection opening, for the first request), "
        f"else 408 and the connection is closed (default {default.header_timeout:g})",
    )
    edge.add_argument(
        "--body-timeout",
        type=_seconds,
        default=default.body_timeout,
        metavar="SECONDS",
        help="the whole request body must arrive within this "
        "time of the head, else 408 and the connection is closed (default "
        f"{default.body_timeout:g})",
    )
    edge.add_argument(
        "--keep-alive-timeout",
        type=_seconds,
        default=default.keep_alive_timeout,
        metavar="SECONDS",
        help="an idle connection is closed after this time (default "
        f"{default.keep_alive_timeout:g})",
    )
    edge.add_argument(
        "--send-timeout",
        type=_seconds,
        default=default.send_timeout,
        metavar="SECONDS",
        help="a client that leaves answers unread (or "
        "unacknowledged) this long is disconnected (Linux; default "
        f"{default.send_timeout:g})",
    )
    edge.add_argument(
        "--max-connections",
        type=positive,
        default=default.max_connections,
        metavar="N",
        help="open connections per server process; beyond it a new "
        f"connection gets 503 and is closed (default {default.max_connections})",
    )


def register(sub: Any) -> None:
    """Add the server's commands to the top-level parser's subcommands."""
    serve = with_database_option(
        sub.add_parser("serve", help="run the server (embedded SQLite by default)")
    )
    serve.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument("--workers", type=positive, default=1, help="server processes (default 1)")
    serve.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    serve.add_argument(
        "--allow-plaintext",
        action="store_true",
        help="DEVELOPMENT ONLY: also accept device requests without the secure "
        "channel (or set KEYBOUND_ALLOW_PLAINTEXT=1); logged loudly",
    )
    serve.add_argument(
        "--attestation-trust-dir",
        metavar="DIR",
        help="key attestation anchors added and removed (android/, apple/, "
        "tpm/ with *.pem; <format>/removed-keys.txt); or set "
        "KEYBOUND_ATTESTATION_TRUST_DIR. Default: the shipped anchors",
    )
    serve.add_argument(
        "--attestation-revocation-list",
        metavar="FILE_OR_URL",
        help="Android attestation revocation status list: a file or an https "
        "URL, reloaded hourly (KEYBOUND_ATTESTATION_REVOCATION_REFRESH_SECONDS);"
        " or set KEYBOUND_ATTESTATION_REVOCATION_LIST",
    )
    serve.add_argument(
        "--no-deliver",
        action="store_true",
        help="do not send webhooks and device notifications from these "
        "processes (run `keybound webhook deliver` instead; or set "
        "KEYBOUND_DELIVER=0)",
    )
    _add_edge_limits(serve)
    serve.set_defaults(func=cmd_serve)

    app = sub.add_parser("app", help="create, show, update application configurations")
    app_sub = app.add_subparsers(dest="app_command", required=True, metavar="ACTION")
    create = with_database_option(
        app_sub.add_parser("create", help="create an application: ID [name=value ...]")
    )
    create.add_argument("application_id")
    create.add_argument(
        "settings",
        nargs="*",
        metavar="name=value",
        help="e.g. hwKeyValidationStrategy=REQUIRED activationCodeLength=8",
    )
    show = with_database_option(
        app_sub.add_parser("show", help="print an application's configuration")
    )
    show.add_argument("application_id")
    update = with_database_option(
        app_sub.add_parser("update", help="change settings; applies to the next operation")
    )
    update.add_argument("application_id")
    update.add_argument("settings", nargs="+", metavar="name=value")
    with_database_option(app_sub.add_parser("list", help="list application ids"))
    app.set_defaults(func=cmd_app)

    key = sub.add_parser("api-key", help="relying-party API keys (stored only as hashes)")
    key_sub = key.add_subparsers(dest="key_command", required=True, metavar="ACTION")
    kc = with_database_option(
        key_sub.add_parser("create", help="create a key for an application; prints the token")
    )
    kc.add_argument("application_id")
    kc.add_argument("--label", default="")
    kr = with_database_option(key_sub.add_parser("revoke", help="revoke a key by its key id"))
    kr.add_argument("key_id")
    kl = with_database_option(key_sub.add_parser("list", help="list an application's keys"))
    kl.add_argument("application_id")
    key.set_defaults(func=cmd_api_key)

    _e2e_key_parser(sub)
    webhook.register(sub)

    audit = sub.add_parser("audit", help="the audit trail and the counts of anonymous refusals")
    audit_sub = audit.add_subparsers(dest="audit_command", metavar="ACTION")
    events = with_database_option(
        audit_sub.add_parser(
            "events", help="the newest audit events, oldest first (JSON lines; the default)"
        )
    )
    noise = with_database_option(
        audit_sub.add_parser(
            "noise", help="anonymous refusals counted per 5-minute window and cause (JSON lines)"
        )
    )
    noise.add_argument(
        "--hours",
        type=positive,
        default=24,
        help="windows of the last this many hours (default 24)",
    )
    for parser in (audit, events):
        parser.add_argument("--application-id", help="only this application's events")
        parser.add_argument(
            "--limit", type=positive, default=50, help="how many events (default 50)"
        )
    checkpoint = with_database_option(
        audit_sub.add_parser(
            "checkpoint",
            help="sign the audit chain's head now (the server does so by itself "
            "at most once a minute while it grows)",
        )
    )
    checkpoint.set_defaults(audit_command="checkpoint")
    export = with_database_option(
        audit_sub.add_parser(
            "export",
            help="write the whole audit trail, chained and signed, to a file an "
            "auditor keeps (JSON lines; docs/audit.md)",
        )
    )
    export.add_argument(
        "file", help="the file to create (never overwritten), or - for standard output"
    )
    verify = with_database_option(
        audit_sub.add_parser(
            "verify",
            help="check the database's audit trail, or an export: any edited, removed, "
            "reordered or inserted entry is found and named; exit 1 if so",
        )
    )
    verify.add_argument(
        "--export", metavar="FILE", help="check this export instead of the database"
    )
    verify.add_argument(
        "--jwks",
        metavar="FILE",
        help="trust only these keys for an export (the server's JWKS, "
        "fetched from /.well-known/jwks.json and kept)",
    )
    verify.add_argument(
        "--kept",
        metavar="FILE",
        help="an earlier export kept since: the trail must still hold every "
        "entry it recorded, unchanged (or have pruned it)",
    )
    with_database_option(audit)
    audit.set_defaults(func=cmd_audit, audit_command="events")

    signing = sub.add_parser(
        "signing-key",
        help="the keys that sign operation results and audit checkpoints "
        "(published at /.well-known/jwks.json); private keys stay wrapped under the master key",
    )
    signing_sub = signing.add_subparsers(dest="signing_command", required=True, metavar="ACTION")
    sc = with_database_option(
        signing_sub.add_parser(
            "create", help="a new key; being the newest ACTIVE key, it signs from now on"
        )
    )
    sc.add_argument(
        "--algorithm",
        default="ES256",
        choices=["ES256", "Ed25519"],
        help="ES256 (default) or Ed25519 (EdDSA)",
    )
    with_database_option(
        signing_sub.add_parser("list", help="the keys (never a private key) and the issuer")
    )
    sr = with_database_option(
        signing_sub.add_parser(
            "retire",
            help="a key signs nothing more and its private key is erased; it stays "
            "published, so what it signed keeps verifying",
        )
    )
    sr.add_argument("kid")
    sr.add_argument(
        "--publish-days",
        type=_days,
        default=None,
        help="end its publication after this many days (default: never; "
        "results it signed stop verifying once it is gone)",
    )
    si = with_database_option(
        signing_sub.add_parser(
            "issuer", help="show, or set, the iss of results and checkpoints: the server's URL"
        )
    )
    si.add_argument("url", nargs="?", help="e.g. https://kb.example")
    signing.set_defaults(func=cmd_signing_key)

    db = with_database_option(
        sub.add_parser("db", help="upgrade the schema, or prune what retention allows")
    )
    db.add_argument(
        "action",
        choices=["upgrade", "prune"],
        help="upgrade: create or migrate the schema (re-wraps secrets with the "
        "master key where a revision needs it); prune: delete what is past its "
        "retention",
    )
    db.add_argument(
        "--operations-days",
        type=positive,
        default=90,
        help="keep ended operations this many days (default 90)",
    )
    db.add_argument(
        "--superseded-keys-days",
        type=positive,
        default=365,
        help="keep superseded software keys, for copy detection, this many days (default 365)",
    )
    db.add_argument(
        "--events-days",
        type=_days,
        default=400,
        help="keep the audit trail this many days (default 400; 0: for ever)",
    )
    db.add_argument(
        "--noise-days",
        type=positive,
        default=30,
        help="keep counts of anonymous refusals this many days (default 30)",
    )
    db.add_argument(
        "--webhook-log-days",
        type=positive,
        default=30,
        help="keep finished webhook deliveries, the delivery log and finished "
        "device notifications this many days (default 30)",
    )
    db.set_defaults(func=cmd_db)


def _e2e_key_parser(sub: Any) -> None:
    e2e = sub.add_parser(
        "e2e-key",
        help="secure-channel (E2E) keys per application: private keys stay wrapped "
        "under the master key ($KEYBOUND_MASTER_KEY_FILE, default: master.key beside the "
        "SQLite database)",
    )
    e2e_sub = e2e.add_subparsers(dest="e2e_command", required=True, metavar="ACTION")
    url_help = "server URL the app talks to, put in the pin (https; http only for localhost)"
    ec = with_database_option(
        e2e_sub.add_parser("create", help="create a key for an application; prints its pin")
    )
    ec.add_argument("application_id")
    ec.add_argument(
        "--suite", default=SUITES[0], choices=SUITES, help=f"HPKE suite (default {SUITES[0]})"
    )
    ec.add_argument(
        "--inactive",
        action="store_true",
        help="create it INACTIVE: ship the pin first, `activate` later",
    )
    ec.add_argument(
        "--server-url",
        default="http://127.0.0.1:8000",
        help=url_help + " (default http://127.0.0.1:8000, where `keybound serve` "
        "listens by default)",
    )
    el = with_database_option(
        e2e_sub.add_parser("list", help="list an application's keys (never a private key)")
    )
    el.add_argument("application_id")
    ea = with_database_option(
        e2e_sub.add_parser("activate", help="activate an INACTIVE key: it opens requests")
    )
    ea.add_argument("key_id")
    er = with_database_option(
        e2e_sub.add_parser(
            "retire", help="retire a key for good: requests to it fail; its private key is erased"
        )
    )
    er.add_argument("key_id")
    ep = with_database_option(
        e2e_sub.add_parser("pin", help="print the pin string of a key, for the app to ship")
    )
    ep.add_argument("key_id")
    ep.add_argument("--server-url", required=True, help=url_help)
    e2e.set_defaults(func=cmd_e2e_key)
