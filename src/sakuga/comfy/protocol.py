"""ComfyUI's websocket and /history messages as typed, frozen records (pure; PROTOCOL §5, §4.5).

Nothing here touches a socket: the client feeds text and binary frames in, and the recorded
transcripts are fed the same way in tests.
"""

from __future__ import annotations

import json
import posixpath
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

OutputKind = Literal["image", "video", "audio", "file"]


@dataclass(frozen=True, slots=True)
class Status:
    """Queue size changed (broadcast); the first message after connect also carries ``sid``."""

    queue_remaining: int | None
    sid: str | None = None


@dataclass(frozen=True, slots=True)
class ExecutionStart:
    prompt_id: str
    timestamp: int | None = None


@dataclass(frozen=True, slots=True)
class ExecutionCached:
    """Nodes whose outputs come from the cache: they will not run."""

    prompt_id: str
    nodes: tuple[str, ...]
    timestamp: int | None = None


@dataclass(frozen=True, slots=True)
class Executing:
    """A node starts; ``node`` None is the end of a prompt; no ``prompt_id`` after a reconnect."""

    node: str | None
    prompt_id: str | None = None
    display_node: str | None = None


@dataclass(frozen=True, slots=True)
class ProgressStep:
    """One ``ProgressBar`` update, e.g. sampler step ``value`` of ``max`` (1-based)."""

    value: float
    max: float
    node: str | None
    prompt_id: str | None


@dataclass(frozen=True, slots=True)
class NodeProgress:
    node_id: str
    value: float
    max: float
    state: str
    display_node_id: str | None = None
    real_node_id: str | None = None
    parent_node_id: str | None = None


@dataclass(frozen=True, slots=True)
class ProgressState:
    """Every non-pending node so far, with ``state`` "running" or "finished"."""

    prompt_id: str | None
    nodes: tuple[NodeProgress, ...]


@dataclass(frozen=True, slots=True)
class OutputFile:
    """One file a node produced; ``filename``/``subfolder``/``type`` go to ``/view`` verbatim."""

    node_id: str
    key: str
    filename: str
    subfolder: str
    type: str
    kind: OutputKind


@dataclass(frozen=True, slots=True)
class Executed:
    """A node returned UI data (also sent for a cached output node, possibly with None)."""

    node: str
    output: Mapping[str, Any] | None
    prompt_id: str | None
    display_node: str | None = None

    @property
    def files(self) -> tuple[OutputFile, ...]:
        return tuple(outputs_from_ui(self.node, self.output or {}))


@dataclass(frozen=True, slots=True)
class ExecutionSuccess:
    prompt_id: str
    timestamp: int | None = None


@dataclass(frozen=True, slots=True)
class ExecutionError:
    """A node raised. ``exception_type`` "ExecutionBlocked" is not fatal (PROTOCOL §5.2)."""

    prompt_id: str
    node_id: str | None
    node_type: str | None
    exception_type: str
    exception_message: str
    traceback: tuple[str, ...] = ()
    executed: tuple[str, ...] = ()
    current_inputs: Mapping[str, Any] = field(default_factory=dict)
    current_outputs: tuple[str, ...] = ()
    timestamp: int | None = None

    @property
    def blocked(self) -> bool:
        return self.exception_type == "ExecutionBlocked"

    @property
    def out_of_memory(self) -> bool:
        return is_out_of_memory(self.exception_type, self.exception_message)


@dataclass(frozen=True, slots=True)
class ExecutionInterrupted:
    prompt_id: str
    node_id: str | None
    node_type: str | None
    executed: tuple[str, ...] = ()
    timestamp: int | None = None


@dataclass(frozen=True, slots=True)
class FeatureFlags:
    """The server's reply to a client's first ``feature_flags`` message."""

    flags: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class BinaryPreview:
    """Binary event 1 (type from a code) or 4 (JSON metadata naming node and prompt)."""

    event: int
    image_type: str
    image: bytes
    metadata: Mapping[str, Any] | None = None

    @property
    def node_id(self) -> str | None:
        return _opt_str((self.metadata or {}).get("node_id"))

    @property
    def prompt_id(self) -> str | None:
        return _opt_str((self.metadata or {}).get("prompt_id"))


@dataclass(frozen=True, slots=True)
class BinaryText:
    """Binary event 3: progress text of a node (broadcast to every socket)."""

    node_id: str
    text: str


@dataclass(frozen=True, slots=True)
class Unknown:
    """Anything not understood; kept so a newer server never breaks tracking."""

    type: str
    data: Any = None


Event = (
    Status
    | ExecutionStart
    | ExecutionCached
    | Executing
    | ProgressStep
    | ProgressState
    | Executed
    | ExecutionSuccess
    | ExecutionError
    | ExecutionInterrupted
    | FeatureFlags
    | BinaryPreview
    | BinaryText
    | Unknown
)
Terminal = ExecutionSuccess | ExecutionError | ExecutionInterrupted


def parse_message(frame: str | bytes) -> Event:
    """Parse one websocket frame: text is JSON ``{type, data}``, bytes a binary event."""
    if isinstance(frame, bytes):
        return parse_binary(frame)
    try:
        message = json.loads(frame)
    except ValueError:
        return Unknown("invalid_json", frame)
    if not isinstance(message, dict):
        return Unknown("invalid_message", message)
    return parse_event(str(message.get("type", "")), message.get("data"))


def parse_event(kind: str, data: Any) -> Event:
    """Turn a ``(type, data)`` pair (websocket or history ``status.messages``) into a record."""
    if not isinstance(data, dict):
        return Unknown(kind, data)
    parser = _PARSERS.get(kind)
    if parser is None:
        return Unknown(kind, data)
    try:
        return parser(data)
    except (KeyError, TypeError, ValueError):
        return Unknown(kind, data)


def parse_binary(frame: bytes) -> Event:
    """Decode a binary frame: ``uint32 BE event`` then the payload (PROTOCOL §5.3)."""
    if len(frame) < 4:
        return Unknown("binary", frame)
    (event,) = struct.unpack(">I", frame[:4])
    try:
        if event == 1:
            (code,) = struct.unpack(">I", frame[4:8])
            mime = {1: "image/jpeg", 2: "image/png"}.get(code, f"unknown/{code}")
            return BinaryPreview(event=1, image_type=mime, image=frame[8:])
        if event == 3:
            (size,) = struct.unpack(">I", frame[4:8])
            node_id = frame[8 : 8 + size].decode()
            return BinaryText(node_id=node_id, text=frame[8 + size :].decode())
        if event == 4:
            (size,) = struct.unpack(">I", frame[4:8])
            metadata = json.loads(frame[8 : 8 + size])
            mime = str(metadata.get("image_type", "image/jpeg"))
            image = frame[8 + size :]
            return BinaryPreview(event=4, image_type=mime, image=image, metadata=metadata)
    except (struct.error, UnicodeDecodeError, ValueError, AttributeError):
        pass
    return Unknown(f"binary:{event}", frame)


_EXT_KIND: dict[str, OutputKind] = {
    **dict.fromkeys(("png", "jpg", "jpeg", "webp", "bmp", "tif", "tiff", "avif"), "image"),
    **dict.fromkeys(("mp4", "webm", "mov", "mkv", "avi", "m4v"), "video"),
    **dict.fromkeys(("wav", "mp3", "flac", "ogg", "opus", "m4a", "aac"), "audio"),
}
_KEY_KIND: dict[str, OutputKind] = {
    "images": "image",
    "gifs": "video",  # VideoHelperSuite reports its videos (mp4, gif, webm) under "gifs"
    "videos": "video",
    "video": "video",
    "audio": "audio",
}


def outputs_from_ui(node_id: str, ui: Mapping[str, Any]) -> list[OutputFile]:
    """Every file in a node's UI dict: any list of dicts with a ``filename``, under any key."""
    files: list[OutputFile] = []
    for key, items in ui.items():
        if not isinstance(items, list | tuple):
            continue
        for item in items:
            if not isinstance(item, dict) or not isinstance(item.get("filename"), str):
                continue
            filename = item["filename"]
            files.append(
                OutputFile(
                    node_id=str(node_id),
                    key=str(key),
                    filename=filename,
                    subfolder=str(item.get("subfolder") or ""),
                    type=str(item.get("type") or "output"),
                    kind=_kind(str(key), filename),
                )
            )
    return files


def _kind(key: str, filename: str) -> OutputKind:
    ext = posixpath.splitext(filename)[1].lower().lstrip(".")
    if ext in _EXT_KIND:
        return _EXT_KIND[ext]
    # A gif is a still under "images" but a clip under "gifs"; other unknowns follow the key.
    return _KEY_KIND.get(key, "image" if ext == "gif" else "file")


_OOM_TYPES = ("OutOfMemoryError",)  # torch.OutOfMemoryError, torch.cuda.OutOfMemoryError
_OOM_TEXTS = (
    "out of memory",  # CUDA / HIP / MPS backend / XPU wording
    "allocation on device",  # ComfyUI's own wording (model_management)
    "not enough memory",  # CPU allocator
    "cublas_status_alloc_failed",
    "cudnn_status_alloc_failed",
    "cudaerrormemoryallocation",
    "insufficient memory",
)


def is_out_of_memory(exception_type: str | None, exception_message: str | None) -> bool:
    """Whether a node's exception means the device ran out of memory (a transient failure)."""
    kind = exception_type or ""
    if any(kind.endswith(name) for name in _OOM_TYPES):
        return True
    text = (exception_message or "").lower()
    return any(needle in text for needle in _OOM_TEXTS)


@dataclass(frozen=True, slots=True)
class HistoryOutcome:
    """What ``/history/{id}`` says about a finished prompt."""

    status_str: str | None
    completed: bool
    outputs: tuple[OutputFile, ...]
    messages: tuple[tuple[str, Mapping[str, Any]], ...]
    terminal: Terminal | None
    started_at_ms: int | None = None

    @property
    def finished_at_ms(self) -> int | None:
        return self.terminal.timestamp if self.terminal else None


def parse_history_entry(entry: Mapping[str, Any]) -> HistoryOutcome:
    """Read one history item (the value under the prompt id) into a ``HistoryOutcome``."""
    status = entry.get("status") or {}
    raw_messages = status.get("messages") or []
    messages: list[tuple[str, Mapping[str, Any]]] = []
    terminal: Terminal | None = None
    started: int | None = None
    for item in raw_messages:
        if not isinstance(item, Sequence) or len(item) != 2 or not isinstance(item[1], dict):
            continue
        kind, data = str(item[0]), item[1]
        messages.append((kind, data))
        event = parse_event(kind, data)
        if isinstance(event, ExecutionStart):
            started = event.timestamp
        elif isinstance(event, ExecutionSuccess | ExecutionInterrupted) or (
            isinstance(event, ExecutionError) and not event.blocked
        ):
            terminal = event
    outputs: list[OutputFile] = []
    for node_id, ui in (entry.get("outputs") or {}).items():
        if isinstance(ui, dict):
            outputs.extend(outputs_from_ui(str(node_id), ui))
    return HistoryOutcome(
        status_str=_opt_str(status.get("status_str")),
        completed=bool(status.get("completed", False)),
        outputs=tuple(outputs),
        messages=tuple(messages),
        terminal=terminal,
        started_at_ms=started,
    )


# -- field parsers ------------------------------------------------------------------------


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _ids(value: Any) -> tuple[str, ...]:
    return tuple(str(item) for item in value or ())


def _status(data: dict[str, Any]) -> Status:
    exec_info = (data.get("status") or {}).get("exec_info") or {}
    return Status(_opt_int(exec_info.get("queue_remaining")), _opt_str(data.get("sid")))


def _progress_state(data: dict[str, Any]) -> ProgressState:
    nodes = tuple(
        NodeProgress(
            node_id=str(info.get("node_id", key)),
            value=float(info.get("value", 0.0)),
            max=float(info.get("max", 1.0)),
            state=str(info.get("state", "")),
            display_node_id=_opt_str(info.get("display_node_id")),
            real_node_id=_opt_str(info.get("real_node_id")),
            parent_node_id=_opt_str(info.get("parent_node_id")),
        )
        for key, info in (data.get("nodes") or {}).items()
    )
    return ProgressState(_opt_str(data.get("prompt_id")), nodes)


def _execution_error(data: dict[str, Any]) -> ExecutionError:
    return ExecutionError(
        prompt_id=str(data["prompt_id"]),
        node_id=_opt_str(data.get("node_id")),
        node_type=_opt_str(data.get("node_type")),
        exception_type=str(data.get("exception_type") or ""),
        exception_message=str(data.get("exception_message") or ""),
        traceback=tuple(str(line) for line in data.get("traceback") or ()),
        executed=_ids(data.get("executed")),
        current_inputs=dict(data.get("current_inputs") or {}),
        current_outputs=_ids(data.get("current_outputs")),
        timestamp=_opt_int(data.get("timestamp")),
    )


_PARSERS: dict[str, Callable[[dict[str, Any]], Event]] = {
    "status": _status,
    "execution_start": lambda d: ExecutionStart(str(d["prompt_id"]), _opt_int(d.get("timestamp"))),
    "execution_cached": lambda d: ExecutionCached(
        str(d["prompt_id"]), _ids(d.get("nodes")), _opt_int(d.get("timestamp"))
    ),
    "executing": lambda d: Executing(
        _opt_str(d["node"]), _opt_str(d.get("prompt_id")), _opt_str(d.get("display_node"))
    ),
    "progress": lambda d: ProgressStep(
        float(d["value"]), float(d["max"]), _opt_str(d.get("node")), _opt_str(d.get("prompt_id"))
    ),
    "progress_state": _progress_state,
    "executed": lambda d: Executed(
        str(d["node"]),
        d.get("output") if isinstance(d.get("output"), dict) else None,
        _opt_str(d.get("prompt_id")),
        _opt_str(d.get("display_node")),
    ),
    "execution_success": lambda d: ExecutionSuccess(
        str(d["prompt_id"]), _opt_int(d.get("timestamp"))
    ),
    "execution_error": _execution_error,
    "execution_interrupted": lambda d: ExecutionInterrupted(
        str(d["prompt_id"]),
        _opt_str(d.get("node_id")),
        _opt_str(d.get("node_type")),
        _ids(d.get("executed")),
        _opt_int(d.get("timestamp")),
    ),
    "feature_flags": lambda d: FeatureFlags(dict(d)),
}
