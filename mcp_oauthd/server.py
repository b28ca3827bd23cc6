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

import structlog
from aiohttp import web

from mcp_oauthd.config.models import Config
from mcp_oauthd.security.audit import Auditor

log = structlog.get_logger("mcp_oauthd")


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


async def serve(
    config: Config,
    *,
    auditor: Auditor | None = None,
    reuse_port: bool = False,
    worker: int = 0,
) -> None:
    """Serve one process until SIGTERM/SIGINT, then drain."""
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
    try:
        await stop.wait()
        log.info("shutting down: draining in-flight requests", worker=worker)
    finally:
        await runner.cleanup()
        log.info("stopped", worker=worker)


def _worker_main(config: Config, worker: int) -> None:
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(config, reuse_port=True, worker=worker))


def run(config: Config, *, auditor: Auditor | None = None) -> int:
    """Run the configured number of processes; return an exit status."""
    workers = config.server.workers
    if workers <= 1:
        asyncio.run(serve(config, auditor=auditor))
        return 0
    context = multiprocessing.get_context("fork")
    children: list[BaseProcess] = []
    for index in range(workers):
        child = context.Process(target=_worker_main, args=(config, index), daemon=False)
        child.start()
        children.append(child)
    log.info("workers started", workers=workers, pids=[c.pid for c in children])

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            if child.is_alive() and child.pid is not None:
                os.kill(child.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    status = 0
    for process in children:
        process.join()
        if process.exitcode not in (0, None):
            status = 1
    log.info("all workers stopped")
    sys.stdout.flush()
    return status
