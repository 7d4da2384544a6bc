"""Prompt, queue, interrupt and history routes, and the websocket (PROTOCOL §4.1-4.5, §5)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.websockets import WebSocket

from sakuga.domain.validation import validate_prompt
from sakuga.engine.hub import Connection, stop_pump
from sakuga.engine.queue import QueueItem
from sakuga.engine.run import now_ms
from sakuga.engine.state import EngineState

SENSITIVE_KEYS = ("auth_token_comfy_org", "api_key_comfy_org")


class BadBody(Exception):
    """A JSON route got a body that is not JSON (ComfyUI answers 500 text)."""


def engine_of(request: Request | WebSocket) -> EngineState:
    """The engine behind this request."""
    state: EngineState = request.app.state.engine
    return state


def server_error() -> Response:
    """aiohttp's reply when a handler raises, which ComfyUI gives for non-JSON bodies."""
    return PlainTextResponse("500 Internal Server Error\n\nServer got itself in trouble", 500)


async def json_body(request: Request) -> dict[str, Any]:
    """The body as a JSON object; raises ``BadBody`` otherwise."""
    try:
        body = json.loads(await request.body())
    except ValueError as exc:
        raise BadBody() from exc
    if not isinstance(body, dict):
        raise BadBody()
    return body


def empty() -> Response:
    """ComfyUI's bare 200 with an empty body."""
    return Response(status_code=200)


async def post_prompt(request: Request) -> Response:
    """Validate and queue a prompt: 200 ``{prompt_id, number, node_errors}`` or 400."""
    engine = engine_of(request)
    try:
        body = await json_body(request)
    except BadBody:
        return server_error()
    if "number" in body:
        number: int | float = float(body["number"])
    else:
        number = engine.queue.next_number(bool(body.get("front")))
    if "prompt" not in body:
        error = {
            "type": "no_prompt",
            "message": "No prompt provided",
            "details": "No prompt provided",
            "extra_info": {},
        }
        return JSONResponse({"error": error, "node_errors": {}}, 400)
    prompt = body["prompt"]
    prompt_id = str(body.get("prompt_id", uuid.uuid4()))
    targets = body.get("partial_execution_targets")
    result = validate_prompt(
        prompt,
        engine.object_info(),
        partial_targets=targets if isinstance(targets, list) else None,
        file_exists=engine.file_exists,
    )
    if not result.comfy_ok:
        return JSONResponse({"error": result.error, "node_errors": result.node_errors}, 400)
    extra_data = dict(body.get("extra_data") or {})
    if "client_id" in body:
        extra_data["client_id"] = body["client_id"]
    extra_data["create_time"] = now_ms()
    sensitive = {key: extra_data.pop(key) for key in SENSITIVE_KEYS if key in extra_data}
    item = QueueItem(number, prompt_id, prompt, extra_data, list(result.outputs), sensitive)
    engine.queue.put(item)
    return JSONResponse(
        {"prompt_id": prompt_id, "number": number, "node_errors": result.node_errors}
    )


async def get_prompt(request: Request) -> Response:
    """``{"exec_info": {"queue_remaining": N}}``."""
    return JSONResponse(engine_of(request).exec_info())


async def get_queue(request: Request) -> Response:
    """Running and pending items as 5-element lists (pending in raw heap order)."""
    queue = engine_of(request).queue
    running = [queue.running.as_list()] if queue.running is not None else []
    pending = [item.as_list() for item in queue.pending]
    return JSONResponse({"queue_running": running, "queue_pending": pending})


async def post_queue(request: Request) -> Response:
    """``{"clear": true}`` and/or ``{"delete": [ids]}``: pending prompts only."""
    queue = engine_of(request).queue
    return await _clear_or_delete(request, queue.clear, queue.delete)


async def _clear_or_delete(
    request: Request, clear: Callable[[], None], delete: Callable[[Iterable[str]], None]
) -> Response:
    """The body shape ``POST /queue`` and ``POST /history`` share; 500 text on bad JSON."""
    try:
        body = await json_body(request)
    except BadBody:
        return server_error()
    if body.get("clear"):
        clear()
    if isinstance(body.get("delete"), list):
        delete(str(prompt_id) for prompt_id in body["delete"])
    return empty()


async def post_interrupt(request: Request) -> Response:
    """Global interrupt, or only if ``{"prompt_id"}`` is the running prompt; always 200."""
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        body = {}
    prompt_id = body.get("prompt_id") if isinstance(body, dict) else None
    engine_of(request).executor.request_interrupt(str(prompt_id) if prompt_id else None)
    return empty()


async def get_history(request: Request) -> Response:
    """History oldest first; ``max_items`` alone gives the last N."""
    params = request.query_params
    try:
        max_items = int(params["max_items"]) if "max_items" in params else None
        offset = int(params.get("offset", -1))
    except ValueError:
        return server_error()
    return JSONResponse(engine_of(request).queue.history_items(max_items, offset))


async def get_history_item(request: Request) -> Response:
    """``{id: entry}``, or ``{}`` when unknown, pending or running."""
    prompt_id = request.path_params["prompt_id"]
    entry = engine_of(request).queue.history.get(prompt_id)
    return JSONResponse({prompt_id: entry} if entry is not None else {})


async def post_history(request: Request) -> Response:
    """``{"clear": true}`` and/or ``{"delete": [ids]}``; always 200, no websocket event."""
    queue = engine_of(request).queue
    return await _clear_or_delete(request, queue.clear_history, queue.delete_history)


async def post_free(request: Request) -> Response:
    """``{"free_memory": true}`` drops every cached node output."""
    try:
        body = await json_body(request)
    except BadBody:
        return server_error()
    if body.get("free_memory"):
        engine_of(request).executor.cache.clear()
    return empty()


async def websocket(ws: WebSocket) -> None:
    """``/ws?clientId=``: status on connect, feature flags on the first message, then events."""
    engine = engine_of(ws)
    sid = ws.query_params.get("clientId") or uuid.uuid4().hex
    await ws.accept()
    connection = Connection(ws, sid)
    engine.hub.register(connection)
    engine.hub.send_to(connection, "status", {**{"status": engine.exec_info()}, "sid": sid})
    node = engine.executor.reconnect_node(sid)
    if node is not None:
        engine.hub.send_to(connection, "executing", {"node": node})
    pump = asyncio.create_task(connection.pump())
    first = True
    try:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                break
            text = message.get("text")
            if first and text is not None:
                _read_feature_flags(engine, connection, text)
            first = False
    finally:
        engine.hub.unregister(connection)
        await stop_pump(pump)


def _read_feature_flags(engine: EngineState, connection: Connection, text: str) -> None:
    # Only a first message of type feature_flags is interpreted; everything else is ignored.
    try:
        message = json.loads(text)
    except ValueError:
        return
    if isinstance(message, dict) and message.get("type") == "feature_flags":
        data = message.get("data")
        connection.feature_flags = data if isinstance(data, dict) else {}
        engine.hub.send_to(connection, "feature_flags", engine.server_flags)
