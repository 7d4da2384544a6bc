"""Where a tracked prompt's websocket messages come from: one socket per backend, shared.

ComfyUI sends a prompt's messages to the websocket of the ``client_id`` it was submitted
with (PROTOCOL §5). A ``Listener`` keeps one socket per backend open under the client's
own ``client_id`` and hands each message to the ``SharedFeed`` of its prompt, so a job
costs no websocket handshake of its own. A prompt submitted under another client_id (one
a previous worker recorded, followed again after a restart) gets an ``OwnSocket``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Protocol

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from sakuga.comfy.protocol import (
    BinaryPreview,
    Event,
    Executing,
    ExecutionError,
    ExecutionInterrupted,
    ExecutionStart,
    ExecutionSuccess,
    parse_message,
)

if TYPE_CHECKING:
    from sakuga.comfy.tracking import Backend

log = logging.getLogger(__name__)


class FeedClosed(Exception):
    """The socket behind a feed closed; what it would have said must be read from /history."""


class Feed(Protocol):
    """The messages of one tracked prompt (others' may come too: the tracker filters)."""

    async def recv(self) -> Event:
        """The next message; raises ``FeedClosed`` when the socket closed."""
        ...

    async def reopen(self) -> bool:
        """After ``FeedClosed``: True once messages can flow again."""
        ...

    async def close(self) -> None: ...


class OwnSocket:
    """A socket of its own, opened for one prompt's client_id (re-attach, explicit ids)."""

    def __init__(self, backend: Backend, client_id: str, socket: ClientConnection | None) -> None:
        self._backend = backend
        self._client_id = client_id
        self._socket = socket

    async def recv(self) -> Event:
        socket = self._socket
        if socket is None:
            await asyncio.Event().wait()  # nothing will come; the caller's deadline ends it
            raise FeedClosed("no socket")
        try:
            return parse_message(await socket.recv())
        except ConnectionClosed as exc:
            raise FeedClosed(str(exc)) from exc

    async def reopen(self) -> bool:
        await self.close()
        self._socket = await self._backend.open_socket(self._client_id)
        return self._socket is not None

    async def close(self) -> None:
        socket, self._socket = self._socket, None
        if socket is not None:
            await close_quietly(socket)


class SharedFeed:
    """One prompt's messages from its backend's ``Listener``."""

    def __init__(self, listener: Listener, prompt_id: str) -> None:
        self._listener = listener
        self.prompt_id = prompt_id
        # None: the listener's socket closed.
        self._queue: asyncio.Queue[Event | None] = asyncio.Queue()

    def put(self, item: Event | None) -> None:
        self._queue.put_nowait(item)

    async def recv(self) -> Event:
        item = await self._queue.get()
        if item is None:
            raise FeedClosed(f"{self._listener.backend_name}: shared socket closed")
        return item

    async def reopen(self) -> bool:
        return await self._listener.connect()

    async def close(self) -> None:
        self._listener.forget(self)


class Listener:
    """One websocket to a backend under ``client_id``, routing messages by prompt_id."""

    def __init__(self, backend: Backend, client_id: str) -> None:
        self._backend = backend
        self.client_id = client_id
        self._feeds: dict[str, SharedFeed] = {}
        self._socket: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._connecting = asyncio.Lock()
        # The prompt executing now: messages that name none (a binary preview, the
        # ``executing`` sent after a reconnect) are its.
        self._running: str | None = None

    @property
    def backend_name(self) -> str:
        return self._backend.name

    @property
    def connected(self) -> bool:
        return self._reader is not None and not self._reader.done()

    async def feed(self, prompt_id: str) -> tuple[SharedFeed, bool]:
        """A feed for ``prompt_id`` (subscribe before submitting it), and whether the
        socket is open; when it is not, the tracker starts by polling /history."""
        feed = SharedFeed(self, prompt_id)
        self._feeds[prompt_id] = feed
        return feed, await self.connect()

    def forget(self, feed: SharedFeed) -> None:
        if self._feeds.get(feed.prompt_id) is feed:
            del self._feeds[feed.prompt_id]

    async def connect(self) -> bool:
        """Open the socket unless it is open (one attempt at a time); True when open."""
        async with self._connecting:
            if self.connected:
                return True
            socket = await self._backend.open_socket(self.client_id)
            if socket is None:
                return False
            self._socket = socket
            self._reader = asyncio.create_task(self._read(socket), name=f"ws-{self._backend.name}")
            return True

    async def close(self) -> None:
        """Stop reading and close the socket (the client is closing)."""
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        socket, self._socket = self._socket, None
        if socket is not None:
            await close_quietly(socket)

    async def _read(self, socket: ClientConnection) -> None:
        try:
            async for frame in socket:
                self._route(parse_message(frame))
        except ConnectionClosed as exc:
            log.info("%s: shared socket closed (%s)", self._backend.name, exc)
        except Exception:  # a bug here must not end tracking silently: every prompt polls
            log.exception("%s: shared socket reader failed", self._backend.name)
        finally:
            # Every prompt followed on it learns at once, and polls /history meanwhile.
            for feed in list(self._feeds.values()):
                feed.put(None)
            self._running = None
            if self._socket is socket:
                self._socket = None
            await close_quietly(socket)

    def _route(self, event: Event) -> None:
        prompt_id = getattr(event, "prompt_id", None)
        if isinstance(event, ExecutionStart):
            self._running = event.prompt_id
        elif prompt_id is not None and prompt_id == self._running and _ends(event):
            self._running = None
        owner = prompt_id
        if owner is None and isinstance(event, Executing | BinaryPreview):
            owner = self._running
        feed = self._feeds.get(owner) if owner is not None else None
        if feed is not None:
            feed.put(event)


def _ends(event: Event) -> bool:
    """The prompt stopped executing (a blocked output node does not end it)."""
    if isinstance(event, ExecutionError):
        return not event.blocked
    return isinstance(event, ExecutionSuccess | ExecutionInterrupted) or (
        isinstance(event, Executing) and event.node is None
    )


async def close_quietly(socket: ClientConnection) -> None:
    """Close the socket: the handshake (up to its close_timeout), else the bare connection."""
    try:
        with contextlib.suppress(OSError, ConnectionClosed):
            await socket.close()
    finally:
        # Cancelled (shutdown) or failed mid-handshake, the connection would stay open
        # until garbage collection: drop it now.
        if not socket.transport.is_closing():
            socket.transport.abort()
