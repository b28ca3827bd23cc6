"""The ``mcp-oauthd`` command line.

    mcp-oauthd serve [--config PATH]         run the server (no config: embedded defaults)
    mcp-oauthd check-config [--config PATH]  validate a config and list weakened defaults
    mcp-oauthd hash-password                 print an argon2id hash for a local user
    mcp-oauthd version                       print the version

``--config`` falls back to ``$MCP_OAUTHD_CONFIG``. A broken config prints one line per
problem to stderr and exits 1; no command ever ends in a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from mcp_oauthd import __version__
from mcp_oauthd.config.loader import ConfigError, check_warnings, load_config
from mcp_oauthd.config.models import Config

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
    return parser


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
        return run(config, auditor=auditor)
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
    parser.print_help(sys.stderr)
    return EXIT_USAGE


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


if __name__ == "__main__":
    sys.exit(main())
