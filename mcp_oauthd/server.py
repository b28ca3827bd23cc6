"""Serving: one process, or N worker processes sharing one port (SO_REUSEPORT).

SIGTERM/SIGINT stop accepting new connections and let in-flight requests finish within
``server.shutdown_timeout``; with workers, the parent forwards the signal to every child
and exits when all of them have drained.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import signal
import socket
import sys
import time
from multiprocessing.process import BaseProcess
from pathlib import Path

import structlog
from aiohttp import web

from mcp_oauthd.config.models import Config
from mcp_oauthd.http.middleware import install_hot_lane
from mcp_oauthd.security.audit import Auditor

log = structlog.get_logger("mcp_oauthd")
#: The signals the master forwards to its workers.
FORWARDED = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP})


def _listen(config: Config, reuse_port: bool) -> socket.socket:
    host = config.server.host
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, config.server.port))
    # A large backlog so connection bursts queue in the kernel instead of being refused.
    sock.listen(config.server.backlog)
    sock.setblocking(False)
    return sock


def reload_config(app: web.Application, config_path: Path | None) -> None:
    """SIGHUP: read the config again and apply what may change while running. A broken
    or restart-only change is refused and logged; the daemon keeps its old config."""
    from mcp_oauthd.config.loader import ConfigError, load_config
    from mcp_oauthd.http import keys
    from mcp_oauthd.observability.logging import configure_logging
    from mcp_oauthd.service.reload import apply

    services = app[keys.SERVICES]
    try:
        new = load_config(config_path)
        result = apply(services, new)
    except ConfigError as exc:
        services.auditor.emit("config.reload_refused", problems=len(exc.problems))
        log.error(
            "config reload refused; keeping the running config",
            problems=[str(p) for p in exc.problems],
        )
        return
    except ValueError as exc:  # a redirect URI the running daemon would refuse
        log.error("config reload refused; keeping the running config", problem=str(exc))
        return
    if not result.applied:
        log.error(
            "config reload refused; keeping the running config",
            restart_needed=result.restart_needed,
        )
        return
    if "logging" in result.changed:
        configure_logging(new.logging)
    log.info("config reloaded", changed=result.changed)


async def serve(
    config: Config,
    *,
    auditor: Auditor | None = None,
    reuse_port: bool = False,
    worker: int = 0,
    config_path: Path | None = None,
) -> None:
    """Serve one process until SIGTERM/SIGINT, then drain. SIGHUP reloads the config."""
    from mcp_oauthd.app import create_app

    started = time.perf_counter()
    app = create_app(config, auditor=auditor, run_gc=worker == 0, worker=worker)
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,
        shutdown_timeout=config.server.shutdown_timeout,
    )
    await runner.setup()
    assert runner.server is not None
    install_hot_lane(app, runner.server)  # the hot routes skip the router (http/middleware)
    sock = _listen(config, reuse_port)
    site = web.SockSite(runner, sock, shutdown_timeout=config.server.shutdown_timeout)
    await site.start()
    host, port = sock.getsockname()[:2]
    log.info(
        "ready",
        issuer=config.issuer,
        address=f"{host}:{port}",
        worker=worker,
        startup_ms=round((time.perf_counter() - started) * 1000, 1),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload_config, app, config_path)
    # A worker is forked with these signals blocked (see run()): one sent before the
    # handlers above existed is pending, and is delivered to them now, not lost.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)
    try:
        await stop.wait()
        log.info("shutting down: draining in-flight requests", worker=worker)
    finally:
        await runner.cleanup()
        log.info("stopped", worker=worker)


def _worker_main(config: Config, worker: int, config_path: Path | None) -> None:
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve(config, reuse_port=True, worker=worker, config_path=config_path))
    except Exception as exc:
        # The same one line the CLI prints for a single process (never a traceback: a
        # storage error's message is written to carry no secrets); the master logs the
        # exit status.
        # One write (print() makes two when stderr is unbuffered): the workers share the
        # stream, and a pipe keeps a single small write whole.
        sys.stderr.write(f"mcp-oauthd: worker {worker}: {type(exc).__name__}: {exc}\n")
        sys.stderr.flush()
        sys.exit(1)


def run(config: Config, *, auditor: Auditor | None = None, config_path: Path | None = None) -> int:
    """Run the configured number of processes; return an exit status."""
    workers = config.server.workers
    if workers <= 1:
        asyncio.run(serve(config, auditor=auditor, config_path=config_path))
        return 0
    context = multiprocessing.get_context("fork")
    children: list[BaseProcess] = []
    # Until the forwarding handlers below are installed, a SIGTERM would kill this process
    # and orphan the workers; until a worker's loop has its handlers, a forwarded one
    # would kill the worker without a drain. So these signals wait (blocked, pending)
    # until each process is ready for them.
    signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
    for index in range(workers):
        child = context.Process(
            target=_worker_main, args=(config, index, config_path), daemon=False
        )
        child.start()
        children.append(child)
    log.info("workers started", workers=workers, pids=[c.pid for c in children])

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            if child.is_alive() and child.pid is not None:
                os.kill(child.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGHUP, forward)  # each worker reloads its own config
    signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)
    status = 0
    for index, process in enumerate(children):
        process.join()
        if process.exitcode not in (0, None):
            # Negative: killed by that signal; 1: it failed (its traceback is above).
            log.error("worker failed", worker=index, exitcode=process.exitcode)
            status = 1
    log.info("all workers stopped")
    sys.stdout.flush()
    return status
