"""Which event loop runs the server and the client: uvloop (what ``sakuga serve`` gets from
uvicorn's ``loop="auto"``) or the standard asyncio loop (what tests and the demo use)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, Literal, TypeVar

import uvloop

T = TypeVar("T")
Loop = Literal["uvloop", "asyncio"]


def run(main: Coroutine[Any, Any, T], loop: Loop) -> T:
    """``main`` to completion in a new event loop of the kind ``loop``."""
    if loop == "uvloop":
        return uvloop.run(main)
    return asyncio.run(main)
