"""The bare aiohttp baseline: one process, one handler that reads a form POST and answers
fixed JSON (about the size of an introspection answer). No middleware, no logging, no
access log: the ceiling of "aiohttp on this machine" that every ratio divides by.

    python -m bench.baseline --port 8090
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket

from aiohttp import web

PATH = "/baseline"
#: Shaped like an active introspection answer, so response sizes are comparable.
FIXED = {
    "active": True,
    "scope": "mcp",
    "client_id": "bench-cli",
    "token_type": "Bearer",
    "exp": 1_900_000_000,
    "iat": 1_899_996_400,
    "nbf": 1_899_996_400,
    "sub": "user-1",
    "aud": "http://127.0.0.1:8000/mcp",
    "iss": "http://127.0.0.1:8080",
    "jti": "0123456789abcdef0123456789abcdef",
}


async def handle(request: web.Request) -> web.Response:
    await request.post()  # parse the form, as a real handler would, then ignore it
    return web.json_response(FIXED)


async def health(_: web.Request) -> web.Response:
    return web.json_response({"status": "ready"})


def build_app() -> web.Application:
    app = web.Application()
    app.router.add_post(PATH, handle)
    app.router.add_get("/readyz", health)
    return app


async def serve(host: str, port: int, backlog: int) -> None:
    runner = web.AppRunner(build_app(), access_log=None, handle_signals=False)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(backlog)  # the same backlog as mcp-oauthd's default
    sock.setblocking(False)
    await web.SockSite(runner, sock).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--backlog", type=int, default=4096)
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port, args.backlog))


if __name__ == "__main__":
    main()
