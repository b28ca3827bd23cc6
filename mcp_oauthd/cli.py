"""The ``mcp-oauthd`` command line.

    mcp-oauthd serve [--config PATH]         run the server (no config: embedded defaults)
    mcp-oauthd check-config [--config PATH]  validate a config and list weakened defaults
    mcp-oauthd hash-password                 print an argon2id hash for a local user
    mcp-oauthd version                       print the version
    mcp-oauthd plugins [--output json]       provider and storage types, where they come
                                             from, and plugins that failed to load

Operator commands (open the configured sqlite or redis storage; safe while the daemon runs;
``--output json`` for scripts; never print a secret or a hash):

    mcp-oauthd clients list|show ID|delete ID
    mcp-oauthd grants list|revoke [--user SUBJECT_OR_EMAIL] [--client ID] [--grant ID]
    mcp-oauthd keys list|rotate|rotate-encryption
    mcp-oauthd gc

``--config`` falls back to ``$MCP_OAUTHD_CONFIG``. A broken config prints one line per
problem to stderr and exits 1; no command ever ends in a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from mcp_oauthd import __version__
from mcp_oauthd.config.loader import ConfigError, check_warnings, load_config
from mcp_oauthd.config.models import Config

if TYPE_CHECKING:
    from mcp_oauthd.security.audit import Auditor

__all__ = ["main"]

CONFIG_ENV = "MCP_OAUTHD_CONFIG"
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mcp-oauthd",
        description="OAuth 2.1 authorization server for MCP servers.",
    )
    parser.add_argument("--version", action="version", version=f"mcp-oauthd {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def config_option(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--config",
            "-c",
            metavar="PATH",
            type=Path,
            default=None,
            help=f"YAML config file (default: ${CONFIG_ENV}, else the embedded defaults)",
        )

    serve = commands.add_parser("serve", help="run the server until SIGTERM/SIGINT")
    config_option(serve)
    serve.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="worker processes sharing the port (overrides server.workers)",
    )
    check = commands.add_parser("check-config", help="validate a config; list weak settings")
    config_option(check)
    commands.add_parser("hash-password", help="print an argon2id hash (stdin or prompt)")
    commands.add_parser("version", help="print the version")
    plugins = commands.add_parser(
        "plugins", help="list provider and storage types and the plugins they come from"
    )
    plugins.add_argument(
        "--output", "-o", choices=("table", "json"), default="table", help="output format"
    )
    _add_admin_commands(commands, config_option)
    return parser


def _add_admin_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    config_option: Callable[[argparse.ArgumentParser], None],
) -> None:
    def admin(
        parent: argparse._SubParsersAction[argparse.ArgumentParser], name: str, text: str
    ) -> argparse.ArgumentParser:
        sub = parent.add_parser(name, help=text)
        config_option(sub)
        sub.add_argument(
            "--output", "-o", choices=("table", "json"), default="table", help="output format"
        )
        return sub

    clients = commands.add_parser("clients", help="list, show or delete OAuth clients")
    clients_cmd = clients.add_subparsers(dest="action", metavar="ACTION", required=True)
    admin(clients_cmd, "list", "static (config) and registered clients")
    admin(clients_cmd, "show", "one client in detail").add_argument("client_id", metavar="ID")
    admin(clients_cmd, "delete", "delete a registered client, revoking its grants").add_argument(
        "client_id", metavar="ID"
    )

    grants = commands.add_parser("grants", help="list or revoke grants (incident response)")
    grants_cmd = grants.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, text in (
        ("list", "live grants"),
        ("revoke", "revoke grants and every token under them"),
    ):
        sub = admin(grants_cmd, name, text)
        sub.add_argument("--user", metavar="SUBJECT_OR_EMAIL", help="a user's subject or email")
        sub.add_argument("--client", metavar="ID", help="a client id")
        if name == "revoke":
            sub.add_argument("--grant", metavar="ID", help="one grant id")

    keys = commands.add_parser("keys", help="list encryption and signing keys; rotate")
    keys_cmd = keys.add_subparsers(dest="action", metavar="ACTION", required=True)
    admin(keys_cmd, "list", "key ids and which key is in use (never key material)")
    admin(keys_cmd, "rotate", "make a new JWT signing key sign from now on")
    admin(
        keys_cmd,
        "rotate-encryption",
        "re-encrypt stored secrets under the primary (first) encryption key",
    )

    gc = admin(commands, "gc", "delete expired records now")
    # For tests and for collecting as of another time; not part of the documented surface.
    gc.add_argument("--now", type=float, default=None, help=argparse.SUPPRESS)


def _config_path(option: Path | None) -> Path | None:
    if option is not None:
        return option
    from_env = os.environ.get(CONFIG_ENV, "").strip()
    return Path(from_env) if from_env else None


def _print_problems(error: ConfigError, stream: TextIO) -> None:
    for problem in error.problems:
        print(str(problem), file=stream)


def _print_warnings(config: Config, stream: TextIO) -> None:
    for warning in check_warnings(config):
        print(f"warning: {warning.field}: {warning.risk}; {warning.fix}", file=stream)


def _cmd_check_config(option: Path | None) -> int:
    path = _config_path(option)
    try:
        config = load_config(path)
    except ConfigError as exc:
        _print_problems(exc, sys.stderr)
        return EXIT_FAILURE
    if path is None:
        print("note: no --config given; checked the embedded defaults", file=sys.stderr)
    print("OK")
    _print_warnings(config, sys.stdout)
    return EXIT_OK


def _cmd_serve(option: Path | None, workers: int | None = None) -> int:
    path = _config_path(option)
    try:
        config = load_config(path)
    except ConfigError as exc:
        _print_problems(exc, sys.stderr)
        return EXIT_FAILURE

    if path is None:
        print(
            "mcp-oauthd: no --config given; running the embedded defaults "
            f"(demo user demo/demo, issuer {config.issuer}) - not for production",
            file=sys.stderr,
        )
        _print_warnings(config, sys.stderr)

    from mcp_oauthd.observability.logging import configure_logging
    from mcp_oauthd.security.audit import Auditor

    if workers is not None:
        from mcp_oauthd.config.models import MemoryStorageConfig

        if workers < 1 or (workers > 1 and isinstance(config.storage, MemoryStorageConfig)):
            print(
                "mcp-oauthd: --workers: several workers need shared storage (sqlite or redis); "
                "memory storage lives in one process",
                file=sys.stderr,
            )
            return EXIT_FAILURE
        server = config.server.model_copy(update={"workers": workers})
        config = config.model_copy(update={"server": server})
    configure_logging(config.logging)
    auditor = Auditor()
    if path is not None:
        for warning in check_warnings(config):
            auditor.emit("config.weakened", field=warning.field, risk=warning.risk, fix=warning.fix)
    else:
        _print_try_it(config)

    from mcp_oauthd.server import run

    with contextlib.suppress(KeyboardInterrupt):  # run() handles SIGINT; this is a backstop
        return run(config, auditor=auditor, config_path=path)
    return EXIT_OK


def _print_try_it(config: Config) -> None:
    """With the embedded defaults, show a person how to walk the flow in a browser."""
    if not config.clients or not config.clients[0].redirect_uris:
        return
    from yarl import URL

    from mcp_oauthd.oauth.pkce import new_pair

    client = config.clients[0]
    verifier, challenge = new_pair()
    redirect_uri = client.redirect_uris[0]
    url = URL(config.issuer + "/oauth/authorize").with_query(
        response_type="code",
        client_id=client.client_id,
        redirect_uri=redirect_uri,
        code_challenge=challenge,
        code_challenge_method="S256",
        state="try-it",
    )
    print(
        "\nTry it: open this URL in a browser, sign in as demo / demo and allow access:\n"
        f"  {url}\n"
        "The browser then lands on the client's redirect URI (nothing listens there); copy\n"
        "the `code` from its address bar and exchange it within 60 seconds:\n"
        f"  curl -s {config.issuer}/oauth/token -d grant_type=authorization_code "
        f"-d client_id={client.client_id} -d redirect_uri={redirect_uri} "
        f"-d code_verifier={verifier} -d code=CODE\n",
        file=sys.stderr,
    )


def _read_password() -> str | None:
    if sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        second = getpass.getpass("Again: ")
        if first != second:
            print("mcp-oauthd: the passwords do not match", file=sys.stderr)
            return None
        return first
    line = sys.stdin.readline()
    return line.rstrip("\r\n")


def _cmd_hash_password() -> int:
    from argon2 import PasswordHasher

    password = _read_password()
    if password is None:
        return EXIT_FAILURE
    if not password:
        print("mcp-oauthd: the password is empty", file=sys.stderr)
        return EXIT_FAILURE
    print(PasswordHasher().hash(password))
    return EXIT_OK


def _dispatch(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.command == "serve":
        return _cmd_serve(args.config, args.workers)
    if args.command == "check-config":
        return _cmd_check_config(args.config)
    if args.command == "hash-password":
        return _cmd_hash_password()
    if args.command == "version":
        print(f"mcp-oauthd {__version__}")
        return EXIT_OK
    if args.command in ("clients", "grants", "keys", "gc"):
        return _cmd_admin(args)
    if args.command == "plugins":
        return _cmd_plugins(args.output)
    parser.print_help(sys.stderr)
    return EXIT_USAGE


def _cmd_plugins(output: str) -> int:
    """Every provider and storage type and where it comes from; exits 1 when a plugin
    failed to load (so a deployment check catches a broken install)."""
    import json

    from mcp_oauthd import plugins

    data = plugins.inventory()
    if output == "json":
        print(json.dumps(data, indent=2))
    else:
        print(plugins.render_inventory(data))
    return EXIT_FAILURE if data["failures"] else EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return the process exit status."""
    parser = _parser()
    try:
        args = parser.parse_args(list(argv) if argv is not None else None)
    except SystemExit as exc:  # --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        return _dispatch(args, parser)
    except ConfigError as exc:
        _print_problems(exc, sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # last resort: one line, never a traceback
        print(f"mcp-oauthd: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILURE


# ---------------------------------------------------------------------- operator commands
_CLIENT_COLUMNS = ("client_id", "kind", "client_name", "type", "live_grants", "expires_at")
_GRANT_COLUMNS = ("grant_id", "subject", "email", "client_id", "resource", "scopes", "expires_at")
_KEY_COLUMNS = ("type", "id", "state", "source", "alg", "activates_at")


def _audit_to_stderr() -> Auditor:
    """Audit events of operator commands as JSON lines on stderr (stdout is the output),
    without touching the process-wide logging configuration."""
    import structlog

    from mcp_oauthd.security.audit import AUDIT_LOGGER, Auditor

    logger = structlog.wrap_logger(
        structlog.PrintLogger(sys.stderr),
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(),
        ],
    ).bind(logger=AUDIT_LOGGER)
    return Auditor(logger=logger)


def _configure_admin_logging(config: Config) -> None:
    """Library log lines (e.g. a signing key created) go to stderr: stdout is the output."""
    from mcp_oauthd.observability.logging import configure_logging

    configure_logging(config.logging)


def _cmd_admin(args: argparse.Namespace) -> int:
    import asyncio

    from mcp_oauthd.service.admin import AdminError
    from mcp_oauthd.storage.base import StorageError

    config = load_config(_config_path(args.config))
    _configure_admin_logging(config)
    try:
        return asyncio.run(_run_admin(args, config))
    except AdminError as exc:
        print(f"mcp-oauthd: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except StorageError as exc:
        print(f"mcp-oauthd: storage: {exc}", file=sys.stderr)
        return EXIT_FAILURE


async def _run_admin(args: argparse.Namespace, config: Config) -> int:
    import json

    from mcp_oauthd.service.admin import format_table, open_admin

    command = args.command if args.command == "gc" else f"{args.command} {args.action}"
    as_json = args.output == "json"
    result: object
    columns: Sequence[str]
    status = EXIT_OK
    async with open_admin(config, auditor=_audit_to_stderr()) as admin:
        if command == "clients list":
            result, columns = await admin.list_clients(), _CLIENT_COLUMNS
        elif command == "clients show":
            result, columns = await admin.show_client(args.client_id), ()
        elif command == "clients delete":
            result, columns = await admin.delete_client(args.client_id), ()
        elif command == "grants list":
            result = await admin.list_grants(user=args.user, client_id=args.client)
            columns = _GRANT_COLUMNS
        elif command == "grants revoke":
            result = await admin.revoke_grants(
                user=args.user, client_id=args.client, grant_id=args.grant
            )
            columns = _GRANT_COLUMNS
            if not as_json:
                print(f"revoked {len(result)} grant(s)", file=sys.stderr)
        elif command == "keys list":
            result, columns = await admin.list_keys(), _KEY_COLUMNS
        elif command == "keys rotate":
            result, columns = await admin.rotate_signing_key(), ()
        elif command == "keys rotate-encryption":
            from mcp_oauthd.security.keys import load_key_material
            from mcp_oauthd.service.maintenance import reencrypt

            keyring = load_key_material(config).keyring
            report = await reencrypt(admin.storage, keyring, admin.auditor)
            result, columns = report.as_dict(), ()
            status = EXIT_OK if report.ok else EXIT_FAILURE
        else:  # gc
            removed = await admin.gc(args.now)
            result, columns = {"removed": removed}, ()
    if as_json:
        print(json.dumps(result, indent=2))
    elif isinstance(result, list):
        print(format_table(result, columns))
    else:
        assert isinstance(result, dict)
        width = max(len(k) for k in result)
        for key, value in result.items():
            shown = ", ".join(map(str, value)) if isinstance(value, list) else value
            print(f"{key.ljust(width)}  {'-' if shown is None else shown}")
    return status


if __name__ == "__main__":
    sys.exit(main())
