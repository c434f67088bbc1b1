"""`bon serve` as a process: the app under uvicorn, stopped by bon's rules.

On SIGTERM or SIGINT the server stops admitting (new requests get 503, /health says
"draining"), lets the requests admitted finish for up to `drain_timeout` seconds, cancels
the rest, closes the engines and returns. A second SIGINT stops at once. bon's own lines
go to stderr; uvicorn's access log stays off.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from typing import Any

log = logging.getLogger("bon")


async def serve(app: Any, host: str, port: int, drain_timeout: float, on_ready: Any = None) -> int | None:
    """Serve `app` (made by create_app) on host:port until a signal; the signal's number."""
    import uvicorn

    service = app.state.bon
    received: list[int] = []

    class Server(uvicorn.Server):
        def install_signal_handlers(self) -> None:  # bon's, below (uvicorn < 0.29 calls this)
            pass

        def capture_signals(self) -> Any:  # uvicorn >= 0.29: bon's handlers, installed below
            import contextlib

            return contextlib.nullcontext()

    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="on")
    server = Server(config)
    loop = asyncio.get_running_loop()
    draining: asyncio.Task | None = None

    async def drain() -> None:
        in_flight = len(service.tasks)
        log.info(
            "stopping (%s): %d requests in flight, up to %g s to finish",
            signal.Signals(received[0]).name,
            in_flight,
            drain_timeout,
        )
        cancelled = await service.drain(drain_timeout)
        if cancelled:
            log.info("cancelled %d requests still running after %g s", cancelled, drain_timeout)
        server.should_exit = True

    def on_signal(number: int) -> None:
        nonlocal draining
        received.append(number)
        if draining is None:
            draining = asyncio.ensure_future(drain())
        elif number == signal.SIGINT:  # a second Ctrl-C: now
            server.should_exit = server.force_exit = True

    for number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(number, on_signal, number)
    try:
        sock = _bind(host, port)
        await service.start()  # the engines load here: a model that cannot load is bon's one line, not uvicorn's
        if on_ready is not None:
            on_ready(sock.getsockname()[1])
        await server.serve(sockets=[sock])
    finally:
        for number in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(number)
        if draining is not None and not draining.done():
            draining.cancel()
    return received[0] if received else None


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so a port in use is one line (and port 0 picks a free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and
    # without it every answer on a kept-alive connection waits ~40 ms for the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        # Listening from here: a client that connects as soon as bon says where it serves waits
        # in the backlog until uvicorn accepts, instead of being refused.
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        from bon.errors import UsageError

        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock
