"""Where the load client runs: a spawned child process (the default) or this event loop."""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from types import TracebackType
from typing import Literal, TypeVar

from bench.loadgen import (
    JobTiming,
    LoadResult,
    LoadSpec,
    SequentialSpec,
    run_load,
    run_load_sync,
    run_sequential,
    run_sequential_sync,
)
from bench.loops import Loop

S = TypeVar("S")
R = TypeVar("R")
Where = Literal["process", "inline"]
# A client loop stops by itself within its own duration; this only catches a stuck child.
CHILD_GRACE_S = 60.0


class Clients:
    """``async with Clients(loop) as clients``: one spawned child reused for every load."""

    def __init__(self, loop: Loop = "uvloop") -> None:
        self.loop = loop  # the child's event loop
        self._pool: ProcessPoolExecutor | None = None

    async def __aenter__(self) -> Clients:
        # spawn, not fork: the parent runs an event loop and database threads.
        self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._pool is not None:
            await asyncio.to_thread(self._pool.shutdown, True, cancel_futures=True)
            self._pool = None

    async def load(self, spec: LoadSpec, where: Where = "process") -> LoadResult:
        """Run a concurrent load; bounded by ``spec.duration_s`` (plus a grace for the child)."""
        if where == "inline":
            return await run_load(spec)
        budget = spec.duration_s + CHILD_GRACE_S
        return await self._in_child(run_load_sync, replace(spec, loop=self.loop), budget)

    async def sequential(self, spec: SequentialSpec, where: Where = "process") -> list[JobTiming]:
        """Run jobs one at a time; bounded by ``timeout_s`` per job."""
        if where == "inline":
            return await run_sequential(spec)
        budget = spec.timeout_s * len(spec.templates) + CHILD_GRACE_S
        return await self._in_child(run_sequential_sync, replace(spec, loop=self.loop), budget)

    async def _in_child(self, fn: Callable[[S], R], spec: S, budget_s: float) -> R:
        if self._pool is None:
            raise RuntimeError("use Clients inside 'async with'")
        future = asyncio.get_running_loop().run_in_executor(self._pool, fn, spec)
        async with asyncio.timeout(budget_s):
            return await future
