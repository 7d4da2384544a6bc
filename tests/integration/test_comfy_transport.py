"""The asyncio network backend under httpx, against real servers on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import socket
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI, Request, Response

from sakuga.comfy.client import ComfyClient
from sakuga.comfy.transport import AsyncioBackend, native_transport
from sakuga.serving import UvicornServer

pytestmark = pytest.mark.timeout(30)

BIG = bytes(range(256)) * 12_000  # 3 MB: more than the protocol buffers before pausing


def _app(release: asyncio.Event) -> FastAPI:
    app = FastAPI()

    @app.get("/small")
    async def small() -> dict[str, int]:
        return {"answer": 42}

    @app.get("/big")
    async def big() -> Response:
        return Response(BIG, media_type="application/octet-stream")

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, object]:
        body = await request.body()
        return {"length": len(body), "sha256": hashlib.sha256(body).hexdigest()}

    @app.get("/stall")
    async def stall() -> dict[str, bool]:
        await release.wait()
        return {"released": True}

    return app


@pytest.fixture
async def server() -> AsyncIterator[str]:
    release = asyncio.Event()
    async with UvicornServer(_app(release)) as running:
        yield running.url
        release.set()


@pytest.fixture
async def http(server: str) -> AsyncIterator[httpx.AsyncClient]:
    transport = native_transport(server)
    assert transport is not None
    # httpx keeps its connection pool in ``_pool``; if a release renamed it, sakuga would
    # silently fall back to anyio, so this says so instead.
    assert isinstance(transport._pool._network_backend, AsyncioBackend)
    async with httpx.AsyncClient(base_url=server, transport=transport, timeout=5.0) as client:
        yield client


async def test_small_and_large_bodies_both_ways(http: httpx.AsyncClient) -> None:
    assert (await http.get("/small")).json() == {"answer": 42}
    got = await http.get("/big")
    assert got.content == BIG
    echoed = (await http.post("/echo", content=BIG)).json()
    assert echoed == {"length": len(BIG), "sha256": hashlib.sha256(BIG).hexdigest()}


async def test_concurrent_requests_share_the_pool(http: httpx.AsyncClient) -> None:
    answers = await asyncio.gather(*(http.get("/small") for _ in range(20)))
    assert [a.json() for a in answers] == [{"answer": 42}] * 20
    streamed = bytearray()
    async with http.stream("GET", "/big") as response:
        async for chunk in response.aiter_bytes():
            streamed += chunk
    assert bytes(streamed) == BIG


async def test_a_silent_server_is_a_read_timeout(http: httpx.AsyncClient) -> None:
    with pytest.raises(httpx.ReadTimeout):
        await http.get("/stall", timeout=httpx.Timeout(5.0, read=0.2))
    assert (await http.get("/small")).json() == {"answer": 42}  # the pool still works


async def test_nothing_listening_is_a_connect_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    transport = native_transport(url)
    async with httpx.AsyncClient(base_url=url, transport=transport, timeout=2.0) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get("/")


async def test_a_connection_the_server_closed_reads_empty_and_says_so() -> None:
    answered = asyncio.Event()

    async def answer_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()
        await writer.wait_closed()
        answered.set()

    raw = await asyncio.start_server(answer_then_close, "127.0.0.1", 0)
    async with raw:
        port = raw.sockets[0].getsockname()[1]
        stream = await AsyncioBackend().connect_tcp("127.0.0.1", port, timeout=2.0)
        assert stream.get_extra_info("is_readable") is False
        await stream.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", timeout=2.0)
        await answered.wait()
        received = b""
        while chunk := await stream.read(65536, timeout=2.0):
            received += chunk
        assert received.endswith(b"\r\n\r\nok")
        # An idle pooled connection in this state is dropped by the pool, not reused.
        assert stream.get_extra_info("is_readable") is True
        with pytest.raises(Exception, match="closed"):
            await stream.write(b"GET / HTTP/1.1\r\n\r\n", timeout=2.0)
        await stream.aclose()


async def test_tls_and_proxied_urls_keep_httpx_s_own_transport(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert native_transport("https://gpu1.example:8188") is None
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    assert native_transport("http://gpu1.example:8188") is None


async def test_the_comfy_client_talks_through_it(server: str) -> None:
    async with ComfyClient(server) as client:
        transport = client._http._transport
        assert isinstance(transport._pool._network_backend, AsyncioBackend)
