"""What a node sees while it runs: its inputs, and a narrow handle on the running prompt."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from sakuga.engine.files import DataDirs
from sakuga.engine.options import EngineOptions, Faults

T = TypeVar("T")
# Below this many pixels a Pillow call is cheaper than a hop to a worker thread.
INLINE_PIXELS = 128 * 128


class InterruptProcessing(Exception):
    """The interrupt flag was seen: the prompt stops at the current node."""


class OutOfMemoryError(RuntimeError):
    """The ``oom`` fault: reported to clients exactly like PyTorch's allocator error."""

    comfy_type = "torch.OutOfMemoryError"


class InjectedFault(RuntimeError):
    """The ``fail_node`` fault: a node class raises at run time."""

    comfy_type = "RuntimeError"


class RunContext(Protocol):
    """The running prompt, as nodes may use it."""

    prompt_id: str
    prompt: Mapping[str, Any]
    extra_data: Mapping[str, Any]
    dirs: DataDirs
    options: EngineOptions
    faults: Faults
    previews_enabled: bool

    async def wait_step(self) -> None:
        """Wait one sampler step (``step_s``); raises ``InterruptProcessing`` when interrupted."""

    async def wait_interrupt(self) -> None:
        """Wait until interrupted, then raise ``InterruptProcessing`` (the ``hang`` fault)."""

    async def progress(self, node_id: str, value: int, maximum: int, preview: bytes | None) -> None:
        """Report progress (and a JPEG preview); raises ``InterruptProcessing`` if interrupted."""

    def send_text(self, node_id: str, text: str) -> None:
        """Broadcast a binary TEXT frame for ``node_id``."""


@dataclass(frozen=True)
class NodeCall:
    """One node invocation: its id, coerced inputs and the prompt context."""

    node_id: str
    class_type: str
    inputs: Mapping[str, Any]
    ctx: RunContext


@dataclass(frozen=True)
class NodeResult:
    """Output values by slot, and the UI dict (``executed.output``) when the node has one."""

    outputs: tuple[Any, ...]
    ui: dict[str, Any] | None = None


NodeFn = Callable[[NodeCall], Awaitable[NodeResult]]


async def offload(pixels: int, fn: Callable[..., T], *args: Any) -> T:
    """Run Pillow work in a thread so the loop stays responsive, inline when it is tiny."""
    if pixels <= INLINE_PIXELS:
        return fn(*args)
    return await asyncio.to_thread(fn, *args)
