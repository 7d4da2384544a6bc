"""Follow one submitted prompt to its end: websocket first, ``/history`` as the truth.

PROTOCOL §7 and §12: filter by prompt_id, finish on ``executing`` null for our prompt, then
confirm from ``/history``. A socket that fails, drops or goes silent hands over to polling
``/history`` + ``/queue``, so a prompt the backend forgot raises ``BackendLost``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from websockets.asyncio.client import ClientConnection

from sakuga import errors
from sakuga.comfy.feeds import Feed, FeedClosed
from sakuga.comfy.progress import Progress, ProgressModel
from sakuga.comfy.protocol import (
    BinaryPreview,
    Event,
    Executed,
    Executing,
    ExecutionError,
    ExecutionInterrupted,
    ExecutionStart,
    ExecutionSuccess,
    HistoryOutcome,
    OutputFile,
    Terminal,
    parse_history_entry,
)
from sakuga.errors import BackendLost, BackendTimeout, BackendUnreachable

log = logging.getLogger(__name__)

OnEvent = Callable[[Progress | OutputFile], Awaitable[None]]
MAX_RECONNECTS = 3
"""Reopened sockets per run after a drop; past that the run is followed by polling alone."""


@dataclass(frozen=True, slots=True)
class Deadlines:
    """Seconds: connect (HTTP and websocket), socket silence before polling, the whole job,
    the /history poll interval, one HTTP request, and one output download."""

    connect_s: float = 5.0
    silence_s: float = 30.0
    job_s: float = 3600.0
    history_poll_s: float = 1.0
    request_s: float = 10.0
    download_s: float = 300.0


@dataclass(frozen=True, slots=True)
class RunResult:
    """A prompt that succeeded: its output files and ComfyUI's ``status.messages``."""

    prompt_id: str
    outputs: tuple[OutputFile, ...]
    started_at: datetime | None
    finished_at: datetime | None
    messages: tuple[tuple[str, Mapping[str, Any]], ...]


class Backend(Protocol):
    """What the tracker needs from ``ComfyClient`` (kept narrow so it is easy to fake)."""

    name: str

    @property
    def deadlines(self) -> Deadlines: ...

    async def history(self, prompt_id: str) -> dict[str, Any] | None: ...

    async def queue(self) -> tuple[tuple[str, ...], tuple[str, ...]]: ...

    async def open_socket(self, client_id: str) -> ClientConnection | None: ...


class Tracker:
    """Tracks one prompt; reports progress snapshots and each output file once."""

    def __init__(
        self,
        backend: Backend,
        *,
        prompt_id: str,
        client_id: str,
        model: ProgressModel,
        on_event: OnEvent,
        deadlines: Deadlines | None = None,
    ) -> None:
        self._backend = backend
        self._deadlines = deadlines or backend.deadlines
        self._prompt_id = prompt_id
        self._client_id = client_id
        self._model = model
        self._on_event = on_event
        self._reported: set[OutputFile] = set()
        self._seen_outputs: list[OutputFile] = []
        self._terminal: Terminal | None = None
        self._started_ms: int | None = None
        self._unreachable_since: float | None = None

    async def follow(self, feed: Feed, *, live: bool, poll_first: bool = False) -> HistoryOutcome:
        """Wait for the end of the prompt (bounded by ``job_s``); the feed is closed after.
        ``live``: its socket is open (else polling starts at once); ``poll_first`` reads
        /history and /queue before listening (re-attach)."""
        try:
            async with asyncio.timeout(self._deadlines.job_s):
                return await self._loop(feed, not live or poll_first)
        except TimeoutError as exc:
            raise BackendTimeout(
                self._backend.name,
                f"prompt {self._prompt_id} did not finish within job_s={self._deadlines.job_s} s",
            ) from exc

    async def collect(self, entry: Mapping[str, Any]) -> HistoryOutcome:
        """Read a history entry: report outputs not yet reported, return the outcome."""
        outcome = parse_history_entry(entry)
        for output in outcome.outputs:
            await self._report(output)
        return outcome

    async def result(self, outcome: HistoryOutcome) -> RunResult:
        """The run's result; raises ``ExecutionFailed`` or ``ExecutionInterrupted`` otherwise.
        On success the final 1.0 snapshot is reported first."""
        name, prompt_id, terminal = self._backend.name, self._prompt_id, outcome.terminal
        if isinstance(terminal, ExecutionError):
            raise errors.ExecutionFailed(
                name,
                f"prompt {prompt_id} failed in node {terminal.node_id} ({terminal.node_type}): "
                f"{terminal.exception_type}: {terminal.exception_message.strip()}",
                node_id=terminal.node_id,
                class_type=terminal.node_type,
                exception_type=terminal.exception_type,
                traceback=list(terminal.traceback),
                out_of_memory=terminal.out_of_memory,
            )
        if isinstance(terminal, ExecutionInterrupted):
            where = f"node {terminal.node_id} ({terminal.node_type})"
            raise errors.ExecutionInterrupted(
                name, f"prompt {prompt_id} was interrupted in {where}"
            )
        if not (
            isinstance(terminal, ExecutionSuccess)
            or (terminal is None and outcome.completed and outcome.status_str in (None, "success"))
        ):
            status = outcome.status_str
            raise errors.ExecutionFailed(
                name, f"prompt {prompt_id} ended with status {status!r} and no error message"
            )
        await self._on_event(self._model.succeed())
        return RunResult(
            prompt_id=prompt_id,
            outputs=outcome.outputs,
            started_at=_from_ms(outcome.started_at_ms),
            finished_at=_from_ms(outcome.finished_at_ms),
            messages=outcome.messages,
        )

    async def _loop(self, feed: Feed, polling: bool) -> HistoryOutcome:
        loop = asyncio.get_running_loop()
        reconnects = 0
        last_heard = loop.time()
        next_poll = loop.time()
        try:
            while True:
                now = loop.time()
                if polling and now >= next_poll:
                    outcome = await self._poll()
                    if outcome is not None:
                        return outcome
                    next_poll = loop.time() + self._deadlines.history_poll_s
                    continue
                wait = (
                    next_poll - now if polling else self._deadlines.silence_s - (now - last_heard)
                )
                try:
                    # asyncio.timeout, not wait_for: no task per message.
                    async with asyncio.timeout(max(wait, 0.0)):
                        event = await feed.recv()
                except TimeoutError:
                    if not polling:
                        log.info(
                            "%s: prompt %s silent; polling /history",
                            self._backend.name,
                            self._prompt_id,
                        )
                        polling, next_poll = True, loop.time()
                    continue
                except FeedClosed as exc:
                    log.info("%s: socket closed (%s); reconnecting", self._backend.name, exc)
                    if reconnects < MAX_RECONNECTS:
                        reconnects += 1
                        await feed.reopen()
                    # Events sent during the gap are lost: ask /history right away.
                    polling, next_poll = True, loop.time()
                    continue
                if not self._ours(event):
                    continue
                last_heard, polling = loop.time(), False
                if await self._handle(event):
                    outcome = await self._confirm()
                    if outcome is not None:
                        return outcome
                    polling, next_poll = True, loop.time()
        finally:
            await feed.close()

    def _ours(self, event: Event) -> bool:
        if isinstance(event, Executing) and event.prompt_id is None:
            return event.node is not None  # the reconnect message names our running node
        if isinstance(event, BinaryPreview):
            return event.prompt_id == self._prompt_id
        return getattr(event, "prompt_id", None) == self._prompt_id

    async def _handle(self, event: Event) -> bool:
        """Fold in one of our events; True when it is the end marker."""
        if isinstance(event, Executed):
            for output in event.files:
                self._seen_outputs.append(output)
                await self._report(output)
        elif isinstance(event, ExecutionStart):
            self._started_ms = event.timestamp
        elif isinstance(event, ExecutionSuccess | ExecutionInterrupted) or (
            isinstance(event, ExecutionError) and not event.blocked
        ):
            self._terminal = event
        if not isinstance(event, ExecutionSuccess):  # 1.0 waits for /history to agree
            snapshot = self._model.apply(event)
            if snapshot is not None:
                await self._on_event(snapshot)
        return isinstance(event, Executing) and event.node is None

    async def _confirm(self) -> HistoryOutcome | None:
        """Read /history after the end marker, retrying briefly while it is still ``{}``."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self._deadlines.connect_s
        delay = 0.02
        while True:
            try:
                entry = await self._backend.history(self._prompt_id)
            except (BackendUnreachable, BackendTimeout):
                entry = None
            if entry:
                return await self.collect(entry)
            if loop.time() + delay > give_up:
                break
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)
        if self._terminal is not None:
            # History was deleted or evicted under us; the socket saw the whole run.
            log.warning(
                "%s: no history for %s; using the socket's account",
                self._backend.name,
                self._prompt_id,
            )
            for output in self._seen_outputs:
                await self._report(output)
            return HistoryOutcome(
                status_str="success" if isinstance(self._terminal, ExecutionSuccess) else "error",
                completed=isinstance(self._terminal, ExecutionSuccess),
                outputs=tuple(dict.fromkeys(self._seen_outputs)),
                messages=(),
                terminal=self._terminal,
                started_at_ms=self._started_ms,
            )
        return None

    async def _poll(self) -> HistoryOutcome | None:
        """One look at /history and /queue: the outcome, None while queued, else BackendLost."""
        try:
            entry = await self._backend.history(self._prompt_id)
            if not entry:
                running, pending = await self._backend.queue()
                if self._prompt_id in running or self._prompt_id in pending:
                    self._unreachable_since = None
                    return None
                # It may have finished between the two reads.
                entry = await self._backend.history(self._prompt_id)
        except (BackendUnreachable, BackendTimeout):
            now = asyncio.get_running_loop().time()
            if self._unreachable_since is None:
                self._unreachable_since = now
            if now - self._unreachable_since >= self._deadlines.connect_s:
                raise
            return None
        if entry:
            return await self.collect(entry)
        raise BackendLost(
            self._backend.name,
            f"prompt {self._prompt_id} is neither queued, running nor in history "
            "(the backend restarted or the prompt was deleted); submit it again",
        )

    async def _report(self, output: OutputFile) -> None:
        if output not in self._reported:
            self._reported.add(output)
            await self._on_event(output)


def _from_ms(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=UTC)
