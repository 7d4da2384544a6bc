"""Replays recorded ComfyUI 0.8.0 scenarios against the engine with raw sockets.

Each transcript's HTTP requests are re-sent in their recorded order and every websocket's
messages must follow the recorded sequence of types with the same field names (ids,
timestamps and file names may differ). Sampler steps are the only timing-dependent part:
a run of step messages may be longer or shorter than recorded.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from sakuga.engine.server import EngineServer
from tests.fixtures.engine import EngineFactory

RECV_TIMEOUT_S = 10.0
# The recordings started some scenarios with the checkpoint loader already cached.
PRIMED = {"s02c", "s05b", "s06", "s10"}


@dataclass(frozen=True)
class Token:
    """What is compared for one message: its kind and field names."""

    kind: str
    keys: tuple[str, ...] = ()
    step: bool = False


def token_of(message: dict[str, Any] | bytes) -> Token:
    if isinstance(message, bytes):
        event = int.from_bytes(message[:4], "big")
        return Token(f"binary{event}", step=event in (1, 4))
    kind, data = message["type"], message["data"]
    keys = tuple(sorted(data))
    if kind == "executing" and data.get("node") is None:
        kind = "executing-end"
    step = kind == "progress" or (
        kind == "progress_state"
        and any(n["state"] == "running" and n["value"] > 0 for n in data["nodes"].values())
    )
    return Token(kind, keys, step)


def recorded_token(line: dict[str, Any]) -> Token:
    if line["kind"] == "binary":
        return Token(f"binary{line['event_type']}", step=line["event_type"] in (1, 4))
    return token_of(line["msg"])


_RUN_ENDS = ("execution_success", "execution_error", "execution_interrupted", "executing-end")


@dataclass
class Matcher:
    """Matches a socket's received messages against its recorded ones, in order.

    Two timing effects are tolerated: sampler-step runs of another length, and ``status``
    broadcasts that arrive a little earlier or later than recorded (the worker picks a
    prompt up within microseconds here, within milliseconds in ComfyUI).
    """

    name: str
    expected: list[Token]
    index: int = 0
    owed: int = 0
    early: set[int] = field(default_factory=set)
    seen: list[Token] = field(default_factory=list)

    def done(self, needed: int) -> bool:
        self._skip_early()
        return self.index >= needed

    def feed(self, token: Token) -> None:
        self.seen.append(token)
        self._skip_early()
        e, i = self.expected, self.index
        if i < len(e) and e[i] == token:
            self.index += 1
            return
        if token.kind == "status" and self.owed:
            self.owed -= 1
            return
        if token.step and self._steps_ahead(i):
            return  # more sampler steps than recorded before the next event
        j, skipped = i, 0
        while j < len(e) and e[j] != token and (e[j].step or e[j] == _STATUS):
            skipped += e[j] == _STATUS
            j += 1
        if j < len(e) and e[j] == token:
            self.owed += skipped  # fewer steps than recorded, or a status still to come
            self.index = j + 1
            return
        if token == _STATUS:
            for k in range(i, len(e)):
                if e[k] == _STATUS and k not in self.early:
                    self.early.add(k)
                    return
                if e[k].kind in _RUN_ENDS:
                    break
        wanted = e[i] if i < len(e) else "nothing more"
        raise AssertionError(
            f"socket {self.name}: got {token}, expected {wanted}; seen {self.seen}"
        )

    def _skip_early(self) -> None:
        while self.index in self.early:
            self.index += 1

    def _steps_ahead(self, i: int) -> bool:
        # Extra steps are fine next to recorded steps (status broadcasts in between aside).
        back = i - 1
        while back >= 0 and self.expected[back] == _STATUS:
            back -= 1
        ahead = i
        while ahead < len(self.expected) and self.expected[ahead] == _STATUS:
            ahead += 1
        return (back >= 0 and self.expected[back].step) or (
            ahead < len(self.expected) and self.expected[ahead].step
        )


_STATUS = Token("status", ("status",))


@dataclass
class Socket:
    ws: websockets.ClientConnection
    matcher: Matcher
    sid_recorded: str | None


class Replay:
    """Runs one transcript against ``url``."""

    def __init__(self, url: str, lines: list[dict[str, Any]]) -> None:
        self.url = url
        self.lines = lines
        self.ids: dict[str, str] = {}  # recorded client/prompt ids -> ours
        self.sockets: dict[str, Socket] = {}
        for line in lines:
            if line["src"] == "ws_open":
                match = re.search(r"clientId=([\w-]+)", line["url"])
                if match:
                    self.ids[match.group(1)] = str(uuid.uuid4())

    def map(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.ids.get(value, value)
        if isinstance(value, list):
            return [self.map(v) for v in value]
        if isinstance(value, dict):
            return {k: self.map(v) for k, v in value.items()}
        return value

    def events(self) -> list[tuple[float, int, dict[str, Any]]]:
        timed = []
        for order, line in enumerate(self.lines):
            when = line.get("t_sent", line["t"]) if line["src"] == "http" else line["t"]
            timed.append((when, order, line))
        return sorted(timed, key=lambda item: (item[0], item[1]))

    async def run(self, http: httpx.AsyncClient) -> None:
        events = self.events()
        expected: dict[str, list[tuple[float, Token]]] = {}
        for when, _, line in events:
            if line["src"] == "ws_recv":
                expected.setdefault(line["ws"], []).append((when, recorded_token(line)))
        for when, _, line in events:
            if line["src"] in ("ws_recv", "meta", "note", "result"):
                continue
            await self.catch_up(expected, when)
            await self.act(line, expected, http)
        await self.catch_up(expected, float("inf"))
        for socket in self.sockets.values():
            await socket.ws.close()

    async def catch_up(self, expected: dict[str, list[tuple[float, Token]]], when: float) -> None:
        for name, socket in self.sockets.items():
            needed = sum(1 for t, _ in expected[name] if t < when)
            final = when == float("inf")
            while not socket.matcher.done(needed) or (final and socket.matcher.owed):
                raw = await asyncio.wait_for(socket.ws.recv(), RECV_TIMEOUT_S)
                message = raw if isinstance(raw, bytes) else json.loads(raw)
                socket.matcher.feed(token_of(message))
                if isinstance(message, dict) and "sid" in message.get("data", {}):
                    self.learn_sid(name, message["data"]["sid"])

    def learn_sid(self, name: str, sid: str) -> None:
        recorded = self.sockets[name].sid_recorded
        if recorded is not None:
            self.ids.setdefault(recorded, sid)

    async def act(
        self, line: dict[str, Any], expected: dict[str, Any], http: httpx.AsyncClient
    ) -> None:
        src = line["src"]
        if src == "ws_open":
            name = line["ws"]
            match = re.search(r"clientId=([\w-]+)", line["url"])
            query = f"?clientId={self.ids[match.group(1)]}" if match else ""
            ws = await websockets.connect(self.url.replace("http", "ws", 1) + "/ws" + query)
            tokens = [token for _, token in expected.get(name, [])]
            recorded_sid = self.first_sid(name) if not match else None
            self.sockets[name] = Socket(ws, Matcher(name, tokens), recorded_sid)
            expected.setdefault(name, [])
        elif src in ("ws_closed", "ws_close_requested") and line["ws"] in self.sockets:
            await self.sockets[line["ws"]].ws.close()
        elif src == "ws_send":
            await self.sockets[line["ws"]].ws.send(json.dumps(line["data"]))
        elif src == "http":
            await self.request(line, http)

    def first_sid(self, name: str) -> str | None:
        for line in self.lines:
            if line["src"] == "ws_recv" and line["ws"] == name and line["kind"] == "text":
                sid = line["msg"]["data"].get("sid")
                if sid:
                    return str(sid)
        return None

    async def request(self, line: dict[str, Any], http: httpx.AsyncClient) -> None:
        path, method = line["path"], line["method"]
        if path.startswith("/view") or "multipart_form" in json.dumps(line.get("request")):
            return  # file names differ by design; files are covered by test_engine_api
        for recorded, ours in self.ids.items():
            path = path.replace(recorded, ours)
        body = line.get("request")
        if method == "POST":
            response = (
                await http.post(path, json=self.map(body))
                if body is not None
                else await http.post(path)
            )
        else:
            response = await http.get(path)
        assert response.status_code == line["status"], (path, response.text)
        recorded_body = line.get("body")
        if path == "/prompt" and method == "POST" and response.status_code == 200:
            self.ids.setdefault(recorded_body["prompt_id"], response.json()["prompt_id"])
        elif isinstance(recorded_body, dict) and response.headers.get(
            "content-type", ""
        ).startswith("application/json"):
            assert shape(response.json()) == shape(recorded_body), path


def shape(body: Any) -> Any:
    """Field names down one level of ids (history and queue bodies are keyed by prompt id)."""
    if not isinstance(body, dict):
        return type(body).__name__
    if len(body) == 1 and not next(iter(body)).isidentifier():
        return ("by-id", sorted(next(iter(body.values()))))
    return sorted(body)


def load(shared_dir: Path, scenario: str) -> list[dict[str, Any]]:
    (path,) = (shared_dir / "comfyui" / "transcripts").glob(f"{scenario}_*.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def prime(url: str, lines: list[dict[str, Any]]) -> None:
    """Run the scenario's first prompt with another seed so its loader nodes are cached."""
    first = next(line for line in lines if line["src"] == "http" and line["path"] == "/prompt")
    prompt = json.loads(json.dumps(first["request"]["prompt"]))
    for node in prompt.values():
        if node["class_type"] == "KSampler":
            node["inputs"].update(seed=node["inputs"]["seed"] + 1, steps=1)
        if node["class_type"] == "SaveImage":
            node["inputs"]["filename_prefix"] = "prime"
    client_id = str(uuid.uuid4())
    async with websockets.connect(url.replace("http", "ws", 1) + f"/ws?clientId={client_id}") as ws:
        async with httpx.AsyncClient(base_url=url) as http:
            response = await http.post("/prompt", json={"prompt": prompt, "client_id": client_id})
            prompt_id = response.json()["prompt_id"]
        while True:
            raw = await asyncio.wait_for(ws.recv(), RECV_TIMEOUT_S)
            if isinstance(raw, str):
                message = json.loads(raw)
                if message["type"] == "executing" and message["data"] == {
                    "node": None,
                    "prompt_id": prompt_id,
                }:
                    return


SCENARIOS = [
    "s01",
    "s02a",
    "s02b",
    "s02c",
    "s04a",
    "s05a",
    "s05b",
    "s06",
    "s07",
    "s09",
    "s10",
    "s12",
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("scenario", SCENARIOS)
async def test_recorded_scenario_replays_with_the_same_messages(
    scenario: str,
    shared_dir: Path,
    make_engine: EngineFactory,
) -> None:
    """The recorded HTTP requests produce the recorded websocket message sequence."""
    lines = load(shared_dir, scenario)
    async with make_engine(step_s=0.02) as server:
        server_: EngineServer = server
        if scenario in PRIMED:
            await prime(server_.url, lines)
        async with httpx.AsyncClient(base_url=server_.url, timeout=RECV_TIMEOUT_S) as http:
            await Replay(server_.url, lines).run(http)


def _tokens(*kinds: str) -> list[Token]:
    table = {
        "status": _STATUS,
        "step": Token("progress", ("max", "node", "prompt_id", "value"), step=True),
        "start": Token("execution_start", ("prompt_id", "timestamp")),
        "executed": Token("executed", ("display_node", "node", "output", "prompt_id")),
        "success": Token("execution_success", ("prompt_id", "timestamp")),
        "end": Token("executing-end", ("node", "prompt_id")),
    }
    return [table[kind] for kind in kinds]


def _feed(expected: list[Token], received: list[Token]) -> Matcher:
    matcher = Matcher("A", expected)
    for token in received:
        matcher.feed(token)
    return matcher


def test_matcher_accepts_timing_differences_only() -> None:
    """The replay tolerates step counts and status timing, nothing else."""
    recorded = _tokens("status", "start", "step", "status", "step", "executed", "success", "end")
    variants = [
        recorded,
        _tokens("status", "start", "step", "status", "step", "step", "executed", "success", "end"),
        _tokens("status", "start", "status", "executed", "success", "end"),
        _tokens("status", "status", "start", "step", "step", "executed", "success", "end"),
        _tokens("status", "start", "step", "step", "executed", "status", "success", "end"),
    ]
    for received in variants:
        matcher = _feed(recorded, received)
        assert matcher.done(len(recorded)) and matcher.owed == 0
    with pytest.raises(AssertionError):
        _feed(recorded, _tokens("status", "start", "step", "step", "success"))
    with pytest.raises(AssertionError):
        _feed(recorded, _tokens("status", "start", "executed", "step"))
