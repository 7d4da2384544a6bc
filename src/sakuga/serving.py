"""Run an ASGI app under uvicorn inside the current event loop (tests, embedded engine).

The socket is bound before uvicorn starts, so the port is known at once (port 0 lets the
OS choose) and early connections wait in the kernel backlog instead of being refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from types import TracebackType
from typing import Any

import uvicorn

SHUTDOWN_GRACE_S = 5.0


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket; ``port`` 0 lets the OS choose."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must be IPPROTO_TCP: asyncio only sets TCP_NODELAY on such sockets, and without
    # it every keep-alive reply waits ~40 ms for the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)  # connections wait in the backlog while start-up finishes
    return sock


class UvicornServer:
    """``async with UvicornServer(app) as server: server.url``; stops cleanly on exit."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, **config: Any) -> None:
        self.sock = bind_socket(host, port)
        self.host = host
        self.port: int = self.sock.getsockname()[1]
        config.setdefault("log_level", "warning")
        config.setdefault("lifespan", "on")
        self.server = uvicorn.Server(uvicorn.Config(app, **config))
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def __aenter__(self) -> UvicornServer:
        # uvicorn's own start-up (lifespan included), then its main loop as an owned task.
        config = self.server.config
        if not config.loaded:
            config.load()
        self.server.lifespan = config.lifespan_class(config)
        await self.server.startup(sockets=[self.sock])
        if self.server.should_exit:
            self.sock.close()
            raise RuntimeError(f"server on {self.url} failed to start (see the log above)")
        self._task = asyncio.create_task(self._run(), name=f"uvicorn-{self.port}")
        return self

    async def _run(self) -> None:
        await self.server.main_loop()
        await self.server.shutdown(sockets=[self.sock])

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def stop(self) -> None:
        if self._task is None:
            return
        self.server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self._task), SHUTDOWN_GRACE_S)
        except TimeoutError:
            self.server.force_exit = True
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        finally:
            self._task = None
            self.sock.close()
