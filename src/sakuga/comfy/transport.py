"""httpx's transport for a plain-HTTP ComfyUI URL, on asyncio's own sockets instead of anyio.

httpcore reaches sockets through a network backend, anyio's by default. Per request that
costs cancel scopes with loop timers, a ``sleep(0)`` on every send, and a ``poll()`` of
every idle pooled connection; a worker draining jobs on a local ComfyUI spent about a
sixth of its event loop there (docs/BENCHMARKS.md). This backend is httpcore's documented
extension point (``AsyncNetworkBackend``) built on an ``asyncio.Protocol``: reads come from
a buffer the protocol fills, and whether an idle connection was closed by the server is
known from state.
HTTP parsing, pooling and httpx's error types stay httpx's own. TLS URLs, and any process
configured with a proxy, keep httpx's default transport.
"""

from __future__ import annotations

import asyncio
import collections
import os
import socket
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

# While no one reads, the protocol buffers up to this much, then stops reading the socket.
HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024
PROXY_VARIABLES = ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def native_transport(base_url: str) -> httpx.AsyncBaseTransport | None:
    """The asyncio transport for a plain ``http://`` URL; None where httpx's own must serve
    (TLS, or a proxy set in the environment, which an explicit transport would bypass)."""
    if not base_url.startswith("http://") or any(os.environ.get(v) for v in PROXY_VARIABLES):
        return None
    transport = httpx.AsyncHTTPTransport()
    limits = httpx.Limits()  # httpx's defaults, which the transport above was built with
    transport._pool = httpcore.AsyncConnectionPool(
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=AsyncioBackend(),
    )
    return transport


class AsyncioBackend(httpcore.AsyncNetworkBackend):
    """Opens TCP connections as asyncio protocols (uvloop's, under uvicorn)."""

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        local = (local_address, 0) if local_address else None
        try:
            async with asyncio.timeout(timeout):
                transport, protocol = await loop.create_connection(
                    _Buffered, host, port, local_addr=local
                )
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"no connection to {host}:{port} in {timeout} s") from exc
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for option in socket_options or ():
                sock.setsockopt(*option)
        return AsyncioStream(protocol)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class _Buffered(asyncio.Protocol):
    """Keeps what the socket delivers until the stream reads it; wakes whoever waits."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.chunks: collections.deque[bytes] = collections.deque()
        self.size = 0
        self.eof = False
        self.error: Exception | None = None
        self.reading_paused = False
        self.writing_paused = False
        self._waiter: asyncio.Future[None] | None = None

    def connection_made(self, transport: Any) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        self.size += len(data)
        if self.size > HIGH_WATER and not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False  # close the transport: HTTP/1.1 never half-closes

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof, self.error = True, exc
        self._wake()

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        self._wake()

    def take(self, max_bytes: int) -> bytes:
        chunk = self.chunks.popleft()
        if len(chunk) > max_bytes:
            self.chunks.appendleft(chunk[max_bytes:])
            chunk = chunk[:max_bytes]
        self.size -= len(chunk)
        if self.reading_paused and self.size <= LOW_WATER and self.transport is not None:
            self.reading_paused = False
            self.transport.resume_reading()
        return chunk

    async def wait(self, limit_s: float | None) -> None:
        """Until data, EOF or room to write arrives; TimeoutError after ``limit_s``.

        One waiter: an HTTP/1.1 connection never reads and writes at the same time."""
        waiter = self._waiter = self.loop.create_future()
        timer = None if limit_s is None else self.loop.call_later(limit_s, _expire, waiter)
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class AsyncioStream(httpcore.AsyncNetworkStream):
    """One connection as httpcore sees it: read, write, close, and what it knows."""

    def __init__(self, protocol: _Buffered) -> None:
        self._protocol = protocol

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        buffered = self._protocol
        if not buffered.chunks and not buffered.eof:
            try:
                await buffered.wait(timeout)
            except TimeoutError as exc:
                raise httpcore.ReadTimeout(f"nothing received in {timeout} s") from exc
        if buffered.chunks:
            return buffered.take(max_bytes)
        if buffered.error is not None:
            raise httpcore.ReadError(str(buffered.error)) from buffered.error
        return b""  # the server closed the connection

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        buffered = self._protocol
        if not buffer:
            return
        transport = buffered.transport
        if transport is None or transport.is_closing() or buffered.eof:
            raise httpcore.WriteError("the connection is closed")
        transport.write(buffer)
        while buffered.writing_paused and not buffered.eof:
            try:
                await buffered.wait(timeout)
            except TimeoutError as exc:
                raise httpcore.WriteTimeout(f"could not send within {timeout} s") from exc

    async def aclose(self) -> None:
        if self._protocol.transport is not None:
            self._protocol.transport.close()

    def get_extra_info(self, info: str) -> Any:
        buffered = self._protocol
        if info == "is_readable":
            # Asked of idle connections: anything there (or EOF) means the server closed it.
            return bool(buffered.chunks) or buffered.eof
        if buffered.transport is None:
            return None
        names = {"socket": "socket", "client_addr": "sockname", "server_addr": "peername"}
        return buffered.transport.get_extra_info(names[info]) if info in names else None
