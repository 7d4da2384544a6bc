"""The websocket client table and message routing (PROTOCOL §5, §5.1).

Sockets are keyed by ``sid`` (the ``clientId``). A second socket with the same sid replaces
the first, and when either closes the sid is dropped: ComfyUI's duplicate-id behaviour.
Frames are serialised once and queued per socket, so a slow client never stalls the worker
and messages keep the order they were produced in. Nothing is kept for absent sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
from collections.abc import Callable
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

PREVIEW_IMAGE = 1
TEXT = 3
PREVIEW_IMAGE_WITH_METADATA = 4
GOING_AWAY = 1001  # shutdown
INTERNAL_ERROR = 1011  # the drop_ws fault: looks like a server-side failure to the client


class Connection:
    """One accepted websocket and its outgoing frame queue."""

    def __init__(self, websocket: WebSocket, sid: str) -> None:
        self.websocket = websocket
        self.sid = sid
        self.feature_flags: dict[str, Any] = {}
        self._frames: asyncio.Queue[str | bytes | int] = asyncio.Queue()

    def push(self, frame: str | bytes) -> None:
        """Queue a frame for this socket."""
        self._frames.put_nowait(frame)

    def close_soon(self, code: int) -> None:
        """Close with ``code`` after the frames already queued have been sent."""
        self._frames.put_nowait(code)

    async def pump(self) -> None:
        """Send queued frames until closed or the client goes away."""
        while True:
            frame = await self._frames.get()
            try:
                if isinstance(frame, int):
                    await self.websocket.close(code=frame)
                    return
                if isinstance(frame, str):
                    await self.websocket.send_text(frame)
                elif isinstance(frame, bytes):
                    await self.websocket.send_bytes(frame)
            except (RuntimeError, OSError, WebSocketDisconnect):
                return  # the client went away; its receive loop unregisters it


class Hub:
    """Routes events to one sid or to every registered socket."""

    def __init__(self, is_silent: Callable[[], bool]) -> None:
        self._is_silent = is_silent
        self._table: dict[str, Connection] = {}
        self._live: set[Connection] = set()

    def register(self, connection: Connection) -> None:
        """Make ``connection`` the socket for its sid (replacing any earlier one)."""
        self._table[connection.sid] = connection
        self._live.add(connection)

    def unregister(self, connection: Connection) -> None:
        """Forget the sid when a socket closes, even if a newer socket had taken it over."""
        self._table.pop(connection.sid, None)
        self._live.discard(connection)

    def socket_count(self) -> int:
        """How many sids are registered (a replaced duplicate is not)."""
        return len(self._table)

    def supports_preview_metadata(self, sid: str | None) -> bool:
        """True when ``sid``'s first message announced ``supports_preview_metadata``."""
        connection = self._table.get(sid) if sid is not None else None
        return bool(connection and connection.feature_flags.get("supports_preview_metadata"))

    def send_json(self, event: str, data: dict[str, Any], sid: str | None = None) -> None:
        """Send ``{"type": event, "data": data}`` to ``sid``, or to everyone when None."""
        if self._is_silent():
            return
        self._deliver(json.dumps({"type": event, "data": data}), sid)

    def send_bytes(self, event: int, payload: bytes, sid: str | None = None) -> None:
        """Send a binary frame: ``uint32 BE event`` then ``payload``."""
        if self._is_silent():
            return
        self._deliver(struct.pack(">I", event) + payload, sid)

    def send_text_event(self, node_id: str, text: str) -> None:
        """Broadcast a binary TEXT frame (ComfyUI sends these without a sid)."""
        node = node_id.encode("utf-8")
        self.send_bytes(TEXT, struct.pack(">I", len(node)) + node + text.encode("utf-8"))

    def send_preview(
        self, jpeg: bytes, sid: str | None, metadata: dict[str, Any], progress: dict[str, Any]
    ) -> None:
        """Send ``progress`` and a preview in the order and format the client expects."""
        if self.supports_preview_metadata(sid):
            meta = json.dumps(metadata).encode("utf-8")
            payload = struct.pack(">I", len(meta)) + meta + jpeg
            self.send_bytes(PREVIEW_IMAGE_WITH_METADATA, payload, sid)
            self.send_json("progress", progress, sid)
        else:
            self.send_json("progress", progress, sid)
            self.send_bytes(PREVIEW_IMAGE, struct.pack(">I", 1) + jpeg, sid)

    def send_to(self, connection: Connection, event: str, data: dict[str, Any]) -> None:
        """Send to one socket directly (connect-time messages)."""
        if not self._is_silent():
            connection.push(json.dumps({"type": event, "data": data}))

    def close_all(self, code: int = GOING_AWAY) -> None:
        """Close every open socket (shutdown, or the ``drop_ws`` fault with 1011)."""
        for connection in list(self._live):
            connection.close_soon(code)

    def _deliver(self, frame: str | bytes, sid: str | None) -> None:
        if sid is None:
            for connection in self._table.values():
                connection.push(frame)
            return
        target = self._table.get(sid)
        if target is not None:
            target.push(frame)


async def stop_pump(task: asyncio.Task[None]) -> None:
    """Cancel and await a connection's pump task."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
