"""Wake-ups: a new job wakes an idle worker, a job change wakes its streams, a cancel
wakes the worker running the job.

In-process by default; on PostgreSQL ``store/channel.py`` also carries every key to the
other processes sharing the database (LISTEN/NOTIFY). The store stays the source of
truth: a missed wake-up is still seen by the backstop polls; these only remove the wait
on the hot path.

A wake-up published in this process may carry the change itself (what the publisher just
committed), so a subscriber that asked for changes can skip re-reading the store. A wake-up
without one (from another process, or a change nobody described) means "read again".
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable

# Past this many unread changes a subscriber is told to read the store instead.
MAX_CHANGES = 64


class Subscription(asyncio.Event):
    """A persistent event for one key; with ``changes``, it also keeps what each wake said."""

    def __init__(self, changes: bool = False) -> None:
        super().__init__()
        self._keeps = changes
        self._changes: list[object] | None = [] if changes else None

    def note(self, change: object | None) -> None:
        """Record one wake's change (None: unknown, the subscriber must read) and wake."""
        if self._keeps and self._changes is not None:
            if change is None or len(self._changes) >= MAX_CHANGES:
                self._changes = None
            else:
                self._changes.append(change)
        self.set()

    def take_changes(self) -> list[object] | None:
        """The changes since the last call, in order; None when one of them is unknown."""
        taken, self._changes = self._changes, [] if self._keeps else None
        return taken


class Notifier:
    """Per-key versioned events that any number of tasks can wait on with a deadline."""

    def __init__(self) -> None:
        self._events: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._forward: Callable[[str], None] | None = None

    def forward_to(self, send: Callable[[str], None] | None) -> None:
        """Also hand every published key to ``send`` (other processes); None stops it."""
        self._forward = send

    def publish(self, key: str, change: object | None = None) -> None:
        """Wake this process's waiters on ``key`` (handing them ``change``, the committed
        change, when given), and other processes' when forwarded (the key alone)."""
        self.deliver(key, change)
        if self._forward is not None:
            self._forward(key)

    def deliver(self, key: str, change: object | None = None) -> None:
        """Wake this process's waiters on ``key`` only (a key from another process)."""
        for event in self._events.get(key, ()):
            if isinstance(event, Subscription):
                event.note(change)
            else:
                event.set()

    async def wait(self, key: str, timeout_s: float) -> bool:
        """Wait until ``key`` is published or the timeout passes; True when published."""
        event = asyncio.Event()
        self._events[key].add(event)
        try:
            async with asyncio.timeout(timeout_s):
                await event.wait()
            return True
        except TimeoutError:
            return False
        finally:
            waiters = self._events.get(key)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self._events[key]

    def subscribe(self, key: str, *, changes: bool = False) -> Subscription:
        """A persistent event for ``key`` (clear it after each wake); pair with unsubscribe.
        With ``changes`` it keeps the changes the wake-ups carried (``take_changes``)."""
        event = Subscription(changes)
        self._events[key].add(event)
        return event

    @staticmethod
    async def wait_event(event: asyncio.Event, timeout_s: float) -> bool:
        """Wait on a subscribed event with a deadline; True when it fired."""
        try:
            async with asyncio.timeout(timeout_s):
                await event.wait()
            return True
        except TimeoutError:
            return False

    def unsubscribe(self, key: str, event: asyncio.Event) -> None:
        waiters = self._events.get(key)
        if waiters is not None:
            waiters.discard(event)
            if not waiters:
                del self._events[key]


NEW_JOB = "jobs:new"


def job_key(job_id: str) -> str:
    """Anything about the job changed (its event streams listen)."""
    return f"job:{job_id}"


def cancel_key(job_id: str) -> str:
    """A cancel was requested (the worker running the job listens)."""
    return f"cancel:{job_id}"
