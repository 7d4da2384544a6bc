"""Wake-ups across processes on SQLite: the notifier's keys as datagrams on this machine.

Processes sharing one SQLite file run on one machine, so each binds a Unix datagram socket
in a directory named for the database file and sends its keys to every other socket there:
a job submitted to ``sakuga serve`` starts on a ``sakuga worker`` process at once, and
progress reaches event streams served by another process as it happens. Wake-ups are only
hints (the receiver reads the store again), so a lost datagram costs one poll interval and
nothing more; the backstop polls still find every change.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
import tempfile
import uuid
from pathlib import Path
from types import TracebackType

from sqlalchemy.engine import make_url

from sakuga.notify import Notifier

log = logging.getLogger(__name__)

# Keys are short; a burst is split so no datagram nears the kernel's size limit.
MAX_DATAGRAM = 32 * 1024
SUFFIX = ".sock"
# The peer list is read again when the directory changes, and at least this often: a
# directory's mtime ticks coarsely, so a peer that bound in the same tick as the last read
# is seen by the next read after this.
PEERS_FRESH_S = 1.0


def sqlite_file(url: str) -> Path | None:
    """The database file of a SQLite URL; None for an in-memory database."""
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file::memory:"):
        return None
    return Path(database).resolve()


def wakeup_dir(db_file: Path) -> Path:
    """Where the sockets of the processes sharing ``db_file`` live: short, since a socket's
    path must fit in about 100 bytes, and private to this user."""
    digest = hashlib.sha256(str(db_file).encode()).hexdigest()[:16]
    user = getattr(os, "getuid", lambda: 0)()
    return Path(tempfile.gettempdir()) / f"sakuga-{user}-{digest}"


class LocalChannel:
    """``async with LocalChannel(db_file, notifier)``: forwards the notifier's keys both
    ways between the processes on this machine that use ``db_file``."""

    def __init__(self, db_file: Path, notifier: Notifier) -> None:
        self.notifier = notifier
        self.dir = wakeup_dir(db_file)
        self.path = self.dir / f"{uuid.uuid4().hex[:16]}{SUFFIX}"
        self._sock: socket.socket | None = None
        self._pending: list[str] = []
        self._queued: set[str] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._peers: list[str] = []
        self._peers_seen: tuple[int, float] | None = None  # (dir mtime_ns, loop time) read

    @property
    def listening(self) -> bool:
        return self._sock is not None

    async def __aenter__(self) -> LocalChannel:
        try:
            sock = self._bind()
        except (OSError, AttributeError) as exc:  # AttributeError: no AF_UNIX (Windows)
            log.warning("cross-process wake-ups off (%s); other processes poll", exc)
            return self
        self._sock = sock
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._readable)
        self.notifier.forward_to(self.send)
        log.info("cross-process wake-ups on (datagrams in %s)", self.dir)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            return
        self.notifier.forward_to(None)
        if self._loop is not None:
            self._loop.remove_reader(sock.fileno())
        sock.close()
        with contextlib.suppress(OSError):
            self.path.unlink()
            self.dir.rmdir()  # the last process out; fails while others are there

    def _bind(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            self.dir.mkdir(mode=0o700, exist_ok=True)
            try:
                sock.bind(str(self.path))
            except FileNotFoundError:  # the last process out removed the directory meanwhile
                self.dir.mkdir(mode=0o700, exist_ok=True)
                sock.bind(str(self.path))
        except BaseException:
            sock.close()
            raise
        return sock

    def send(self, key: str) -> None:
        """Queue ``key`` for the other processes; keys of one loop turn go out together."""
        if key in self._queued:
            return
        if not self._pending and self._loop is not None:
            self._loop.call_soon(self._flush)
        self._queued.add(key)
        self._pending.append(key)

    def _flush(self) -> None:
        keys, self._pending, self._queued = self._pending, [], set()
        sock = self._sock
        if sock is None or not keys:
            return
        payloads = _datagrams(keys)
        try:
            peers = self._current_peers()
        except OSError:
            return
        for peer in peers:
            self._send_to(sock, peer, payloads)

    def _current_peers(self) -> list[str]:
        """The other sockets in the directory; one ``stat`` while it has not changed."""
        mtime = os.stat(self.dir).st_mtime_ns
        now = self._loop.time() if self._loop is not None else 0.0
        seen = self._peers_seen
        if seen is None or seen[0] != mtime or now - seen[1] > PEERS_FRESH_S:
            me = str(self.path)
            self._peers = [
                entry.path
                for entry in os.scandir(self.dir)
                if entry.name.endswith(SUFFIX) and entry.path != me
            ]
            self._peers_seen = (mtime, now)
        return self._peers

    def _send_to(self, sock: socket.socket, peer: str, payloads: list[bytes]) -> None:
        for payload in payloads:
            try:
                sock.sendto(payload, peer)
            except (ConnectionRefusedError, FileNotFoundError):
                # Nothing reads there: a process that died without cleaning up.
                with contextlib.suppress(OSError):
                    os.unlink(peer)
                self._peers_seen = None
                return
            except OSError:  # its queue is full: it will see the change at its next poll
                return

    def _readable(self) -> None:
        sock = self._sock
        while sock is not None:
            try:
                data = sock.recv(MAX_DATAGRAM)
            except OSError:  # BlockingIOError: nothing more to read now
                return
            for key in data.decode(errors="replace").split("\n"):
                if key:
                    self.notifier.deliver(key)


def _datagrams(keys: list[str]) -> list[bytes]:
    """``keys`` joined by newlines into datagrams of at most ``MAX_DATAGRAM`` bytes."""
    out: list[bytes] = []
    chunk: list[bytes] = []
    size = 0
    for key in keys:
        encoded = key.encode()
        if chunk and size + len(encoded) + 1 > MAX_DATAGRAM:
            out.append(b"\n".join(chunk))
            chunk, size = [], 0
        chunk.append(encoded)
        size += len(encoded) + 1
    if chunk:
        out.append(b"\n".join(chunk))
    return out
