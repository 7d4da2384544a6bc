"""The engine's ASGI app, and uvicorn serving it in-process or as the ``sakuga engine`` CLI."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import AsyncIterator, Callable, Generator
from types import TracebackType
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from sakuga.engine import routes, routes_files, routes_info, routes_jobs
from sakuga.engine.options import EngineOptions
from sakuga.engine.state import EngineState

READY_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 10.0
_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


def _routes() -> list[BaseRoute]:
    table: list[tuple[str, Any, list[str]]] = [
        ("/prompt", routes.post_prompt, ["POST"]),
        ("/prompt", routes.get_prompt, ["GET"]),
        ("/queue", routes.get_queue, ["GET"]),
        ("/queue", routes.post_queue, ["POST"]),
        ("/interrupt", routes.post_interrupt, ["POST"]),
        ("/history", routes.get_history, ["GET"]),
        ("/history", routes.post_history, ["POST"]),
        ("/history/{prompt_id}", routes.get_history_item, ["GET"]),
        ("/free", routes.post_free, ["POST"]),
        ("/view", routes_files.view, ["GET"]),
        ("/upload/image", routes_files.upload_image, ["POST"]),
        ("/upload/mask", routes_files.upload_mask, ["POST"]),
        ("/object_info", routes_info.object_info, ["GET"]),
        ("/object_info/{node_class}", routes_info.object_info_class, ["GET"]),
        ("/system_stats", routes_info.system_stats, ["GET"]),
        ("/features", routes_info.features, ["GET"]),
        ("/models", routes_info.models, ["GET"]),
        ("/models/{folder}", routes_info.models_in_folder, ["GET"]),
        ("/embeddings", routes_info.embeddings, ["GET"]),
        ("/view_metadata/{folder}", routes_info.view_metadata, ["GET"]),
        ("/api/jobs", routes_jobs.list_jobs, ["GET"]),
        ("/api/jobs/{job_id}", routes_jobs.get_job, ["GET"]),
    ]
    found: list[BaseRoute] = []
    # ComfyUI registers every route twice, as-is and under /api (hence /api/api/jobs too).
    for prefix in ("", "/api"):
        for path, endpoint, methods in table:
            found.append(Route(prefix + path, endpoint, methods=methods))
        found.append(WebSocketRoute(prefix + "/ws", routes.websocket))
    found.append(Route("/sakuga/faults", routes_info.faults, methods=["GET", "POST", "DELETE"]))
    return found


class EngineMiddleware:
    """OPTIONS always 200, ComfyUI's loopback origin check (403), the ``latency_s`` fault."""

    def __init__(self, app: ASGIApp, state: EngineState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {
            key.decode("latin-1"): value.decode("latin-1") for key, value in scope["headers"]
        }
        if _origin_mismatch(headers.get("host"), headers.get("origin")):
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
            else:
                await _respond(send, 403)
            return
        if scope["type"] == "http":
            if scope["method"] == "OPTIONS":
                await _respond(send, 200)
                return
            delay = self.state.faults.latency_s
            if delay > 0 and not scope["path"].startswith("/sakuga/"):
                await asyncio.sleep(delay)  # the latency fault: a slow backend on purpose
        await self.app(scope, receive, send)


def _origin_mismatch(host: str | None, origin: str | None) -> bool:
    if not host or not origin:
        return False
    host_name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    if host_name not in _LOOPBACK:
        return False
    origin_netloc = origin.split("://", 1)[-1].split("/", 1)[0]
    return origin_netloc.lower() != host.lower()


async def _respond(send: Send, status: int) -> None:
    await send(
        {"type": "http.response.start", "status": status, "headers": [(b"content-length", b"0")]}
    )
    await send({"type": "http.response.body", "body": b""})


def create_app(options: EngineOptions) -> Starlette:
    """The engine as an ASGI app; the worker starts and stops with the app's lifespan."""
    state = EngineState(options)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await state.start()
        try:
            yield
        finally:
            await state.stop()

    app = Starlette(routes=_routes(), lifespan=lifespan)
    app.state.engine = state
    app.add_middleware(EngineMiddleware, state=state)
    return app


class _Uvicorn(uvicorn.Server):
    """uvicorn that reports when it listens, and leaves signals alone when in-process."""

    def __init__(self, config: uvicorn.Config, handle_signals: bool) -> None:
        super().__init__(config)
        self.ready = asyncio.Event()
        self._handle_signals = handle_signals

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """Start listening, then signal readiness."""
        await super().startup(sockets)
        self.ready.set()

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # uvicorn re-raises a caught signal after shutting down, which would turn a clean
        # SIGTERM stop into death by signal; the CLI wants a clean exit instead.
        if not self._handle_signals:
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in _SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must be IPPROTO_TCP: asyncio only sets TCP_NODELAY on such sockets, and without
    # it every keep-alive reply waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def _config(app: Starlette, host: str, *, in_process: bool = False) -> uvicorn.Config:
    # In process (inside ``sakuga serve``, tests) the host owns logging: uvicorn's logging
    # set-up is process-wide and would re-route the API server's own uvicorn lines.
    return uvicorn.Config(
        app,
        host=host,
        log_level=None if in_process else "warning",
        log_config=None if in_process else uvicorn.config.LOGGING_CONFIG,
        ws="websockets-sansio",
        lifespan="on",
        timeout_graceful_shutdown=2,
        ws_ping_interval=None,  # ComfyUI sends no pings
    )


async def _started(server: _Uvicorn, serving: asyncio.Task[None], timeout_s: float) -> bool:
    """Wait until uvicorn listens; False if it stopped or timed out first."""
    ready = asyncio.create_task(server.ready.wait())
    try:
        await asyncio.wait({ready, serving}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        ready.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ready
    return server.ready.is_set()


class EngineServer:
    """``async with EngineServer(options) as engine:`` serves on ``engine.url`` until exit.

    ``port=0`` lets the OS choose. Entering waits until the server accepts connections
    (at most ``READY_TIMEOUT_S``); leaving stops it and awaits every task.
    """

    def __init__(self, options: EngineOptions, host: str = "127.0.0.1", port: int = 0) -> None:
        self.options = options
        self.host = host
        self.port = port
        self.app = create_app(options)
        self._server: _Uvicorn | None = None
        self._task: asyncio.Task[None] | None = None
        self._socket: socket.socket | None = None

    @property
    def state(self) -> EngineState:
        """The engine behind the app (queue, sockets, worker)."""
        state: EngineState = self.app.state.engine
        return state

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` (the real port once entered)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def __aenter__(self) -> EngineServer:
        self._socket = _bind(self.host, self.port)
        self.port = self._socket.getsockname()[1]
        self._server = _Uvicorn(_config(self.app, self.host, in_process=True), handle_signals=False)
        self._task = asyncio.create_task(self._server.serve(sockets=[self._socket]))
        if not await _started(self._server, self._task, READY_TIMEOUT_S):
            await self.__aexit__(None, None, None)
            raise RuntimeError(
                f"sakuga engine did not start on {self.url} within {READY_TIMEOUT_S}s"
            )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self.state.hub.close_all()
            self._server.should_exit = True
        if self._task is not None:
            done, _ = await asyncio.wait({self._task}, timeout=STOP_TIMEOUT_S)
            if not done and self._server is not None:
                self._server.force_exit = True  # grace period over: stop hard
                self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def run_engine(
    options: EngineOptions,
    host: str = "127.0.0.1",
    port: int = 8188,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM (blocking); ``on_ready(url)`` runs once it listens."""

    async def main() -> None:
        sock = _bind(host, port)
        server = _Uvicorn(_config(create_app(options), host), handle_signals=True)
        task = asyncio.create_task(server.serve(sockets=[sock]))
        if await _started(server, task, READY_TIMEOUT_S) and on_ready is not None:
            shown = f"[{host}]" if ":" in host else host
            on_ready(f"http://{shown}:{sock.getsockname()[1]}")
        await task
        sock.close()

    asyncio.run(main())
