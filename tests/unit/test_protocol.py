"""ComfyUI messages parse into typed records: every message of every recorded transcript."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sakuga.comfy.protocol import (
    BinaryPreview,
    BinaryText,
    Executed,
    Executing,
    ExecutionCached,
    ExecutionError,
    ExecutionInterrupted,
    ExecutionSuccess,
    FeatureFlags,
    OutputFile,
    ProgressState,
    ProgressStep,
    Status,
    Unknown,
    is_out_of_memory,
    outputs_from_ui,
    parse_binary,
    parse_history_entry,
    parse_message,
)

pytestmark = pytest.mark.timeout(10)

JPEG = b"\xff\xd8\xff\xe0"
PNG = b"\x89PNG\r\n\x1a\n"


def transcript_lines(shared: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    for path in sorted((shared / "comfyui" / "transcripts").glob("*.jsonl")):
        for line in path.read_text().splitlines():
            yield path.stem, json.loads(line)


def frame_from_summary(line: dict[str, Any]) -> bytes:
    """Rebuild a binary frame from the transcript's summary (length + decoded header)."""
    event = line["event_type"]
    if event == 1:
        magic = JPEG if line["image_type"] == 1 else PNG
        image = magic + b"\0" * (line["image_bytes"] - len(magic))
        return struct.pack(">II", 1, line["image_type"]) + image
    if event == 3:
        node = line["node_id"].encode()
        return struct.pack(">II", 3, len(node)) + node + line["text"].encode()
    if event == 4:
        metadata = json.dumps(line["metadata"]).encode()
        assert len(metadata) == line["metadata_len"]
        image = JPEG + b"\0" * (line["image_bytes"] - len(JPEG))
        return struct.pack(">II", 4, len(metadata)) + metadata + image
    raise AssertionError(f"unexpected binary event {event}")


def test_every_recorded_text_message_parses_to_a_known_record(shared_dir: Path) -> None:
    seen: set[str] = set()
    for scenario, line in transcript_lines(shared_dir):
        if line["src"] != "ws_recv" or line["kind"] != "text":
            continue
        event = parse_message(json.dumps(line["msg"]))
        assert not isinstance(event, Unknown), (scenario, line["msg"])
        seen.add(type(event).__name__)
    assert seen >= {
        "Status",
        "ExecutionStart",
        "ExecutionCached",
        "Executing",
        "ProgressStep",
        "ProgressState",
        "Executed",
        "ExecutionSuccess",
        "ExecutionError",
        "ExecutionInterrupted",
        "FeatureFlags",
    }


def test_every_recorded_binary_frame_decodes_per_its_header(shared_dir: Path) -> None:
    count = 0
    for scenario, line in transcript_lines(shared_dir):
        if line["src"] != "ws_recv" or line["kind"] != "binary":
            continue
        frame = frame_from_summary(line)
        assert len(frame) == line["len"], scenario
        assert frame[:8].hex() == line["first8_hex"]
        event = parse_message(frame)
        count += 1
        if line["event_type"] == 3:
            assert event == BinaryText(node_id=line["node_id"], text=line["text"])
        else:
            assert isinstance(event, BinaryPreview)
            assert event.event == line["event_type"]
            assert len(event.image) == line["image_bytes"]
            assert event.image_type == "image/jpeg"
            if line["event_type"] == 4:
                assert event.metadata == line["metadata"]
                assert event.node_id == line["metadata"]["node_id"]
                assert event.prompt_id == line["metadata"]["prompt_id"]
    assert count == 18


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        (struct.pack(">II", 1, 2) + PNG, BinaryPreview(1, "image/png", PNG)),
        (struct.pack(">II", 3, 2) + b"12hello", BinaryText("12", "hello")),
        (b"\0\0", Unknown("binary", b"\0\0")),
        (struct.pack(">I", 9) + b"xx", Unknown("binary:9", struct.pack(">I", 9) + b"xx")),
        (struct.pack(">II", 4, 50) + b"{", Unknown("binary:4", struct.pack(">II", 4, 50) + b"{")),
    ],
)
def test_binary_frames_table(frame: bytes, expected: object) -> None:
    assert parse_binary(frame) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '{"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 2}}}}',
            Status(2),
        ),
        ('{"type": "executing", "data": {"node": "3"}}', Executing("3", None, None)),
        (
            '{"type": "executing", "data": {"node": null, "prompt_id": "p"}}',
            Executing(None, "p", None),
        ),
        (
            '{"type": "progress", "data": {"value": 2, "max": 4, "prompt_id": "p", "node": "3"}}',
            ProgressStep(2, 4, "3", "p"),
        ),
        (
            '{"type": "execution_cached", "data": {"nodes": ["4", 5], "prompt_id": "p"}}',
            ExecutionCached("p", ("4", "5")),
        ),
        ('{"type": "logs", "data": {"entries": []}}', Unknown("logs", {"entries": []})),
        ('{"type": "progress", "data": {"value": 1}}', Unknown("progress", {"value": 1})),
        ("not json", Unknown("invalid_json", "not json")),
        ("[1, 2]", Unknown("invalid_message", [1, 2])),
        ('{"type": "feature_flags", "data": {"a": 1}}', FeatureFlags({"a": 1})),
    ],
)
def test_text_messages_table(text: str, expected: object) -> None:
    assert parse_message(text) == expected


def test_execution_error_keeps_every_recorded_field(shared_dir: Path) -> None:
    errors = [
        parse_message(json.dumps(line["msg"]))
        for scenario, line in transcript_lines(shared_dir)
        if scenario.startswith("s04a") and line.get("kind") == "text"
        if line["msg"]["type"] == "execution_error"
    ]
    error = errors[0]
    assert isinstance(error, ExecutionError)
    assert (error.node_id, error.node_type, error.exception_type) == ("3", "SaveImage", "Exception")
    assert error.exception_message.startswith("**** ERROR: Saving image outside")
    assert error.executed == ("1",) and error.traceback and error.timestamp
    assert isinstance(error.current_inputs, dict) and not error.blocked
    assert not error.out_of_memory


def test_progress_state_keeps_node_states(shared_dir: Path) -> None:
    states = [
        event
        for scenario, line in transcript_lines(shared_dir)
        if scenario.startswith("s02a") and line.get("kind") == "text"
        for event in [parse_message(json.dumps(line["msg"]))]
        if isinstance(event, ProgressState)
    ]
    last = states[-1]
    assert {node.node_id for node in last.nodes} == {"3", "4", "5", "6", "7", "8", "9"}
    assert all(node.state == "finished" for node in last.nodes)


@pytest.mark.parametrize(
    ("ui", "expected"),
    [
        (
            {"images": [{"filename": "a_00001_.png", "subfolder": "x", "type": "output"}]},
            [("images", "a_00001_.png", "x", "output", "image")],
        ),
        (
            {"gifs": [{"filename": "clip.mp4", "subfolder": "", "type": "output", "format": "v"}]},
            [("gifs", "clip.mp4", "", "output", "video")],
        ),
        (
            {"gifs": [{"filename": "loop.gif", "type": "temp"}]},
            [("gifs", "loop.gif", "", "temp", "video")],
        ),
        (
            {
                "images": [{"filename": "a.webp", "subfolder": "", "type": "output"}],
                "animated": [True],
            },
            [("images", "a.webp", "", "output", "image")],
        ),
        (
            {"images": [{"filename": "v.mp4", "subfolder": "", "type": "output"}]},
            [("images", "v.mp4", "", "output", "video")],
        ),
        (
            {"audio": [{"filename": "s.flac", "subfolder": "audio", "type": "output"}]},
            [("audio", "s.flac", "audio", "output", "audio")],
        ),
        (
            {"3d": [{"filename": "mesh.glb", "subfolder": "3d", "type": "output"}]},
            [("3d", "mesh.glb", "3d", "output", "file")],
        ),
        ({"text": ["width: 48"]}, []),
        ({"images": "oops", "other": [{"no": "filename"}]}, []),
    ],
)
def test_outputs_from_ui_covers_every_file_key(
    ui: dict[str, Any], expected: list[tuple[str, ...]]
) -> None:
    files = outputs_from_ui("9", ui)
    assert [(f.key, f.filename, f.subfolder, f.type, f.kind) for f in files] == expected
    assert all(f.node_id == "9" for f in files)


def _history(shared: Path, name: str) -> dict[str, Any]:
    body = json.loads((shared / "comfyui" / "http" / f"{name}.json").read_text())["body"]
    (entry,) = body.values()
    assert isinstance(entry, dict)
    return entry


def test_history_success_lists_outputs_and_timestamps(shared_dir: Path) -> None:
    outcome = parse_history_entry(_history(shared_dir, "history_prompt_save_and_preview"))
    assert outcome.status_str == "success" and outcome.completed
    assert isinstance(outcome.terminal, ExecutionSuccess)
    assert {(f.node_id, f.type) for f in outcome.outputs} == {("4", "output"), ("5", "temp")}
    assert len(outcome.outputs) == 3
    assert outcome.started_at_ms and outcome.finished_at_ms
    assert outcome.started_at_ms <= outcome.finished_at_ms
    assert outcome.messages[0][0] == "execution_start"


def test_history_error_carries_the_failing_node(shared_dir: Path) -> None:
    outcome = parse_history_entry(_history(shared_dir, "history_prompt_execution_error"))
    assert outcome.status_str == "error" and not outcome.completed
    assert isinstance(outcome.terminal, ExecutionError)
    assert outcome.terminal.node_id == "3" and outcome.terminal.node_type == "SaveImage"
    assert outcome.terminal.traceback and outcome.outputs == ()


def test_history_interrupt_is_told_apart_from_error(shared_dir: Path) -> None:
    outcome = parse_history_entry(_history(shared_dir, "history_prompt_interrupted"))
    assert outcome.status_str == "error" and not outcome.completed
    assert isinstance(outcome.terminal, ExecutionInterrupted)
    assert outcome.terminal.node_type == "KSampler"


def test_history_fully_cached_still_lists_outputs(shared_dir: Path) -> None:
    outcome = parse_history_entry(_history(shared_dir, "history_prompt_fully_cached"))
    assert outcome.completed and outcome.outputs
    assert all(isinstance(f, OutputFile) for f in outcome.outputs)


def test_history_ignores_a_blocked_node_and_junk() -> None:
    blocked = {"prompt_id": "p", "exception_type": "ExecutionBlocked", "exception_message": "x"}
    entry = {
        "outputs": {"1": "junk"},
        "status": {
            "status_str": "success",
            "completed": True,
            "messages": [
                ["execution_error", blocked],
                "junk",
                ["execution_success", {"prompt_id": "p"}],
            ],
        },
    }
    outcome = parse_history_entry(entry)
    assert outcome.terminal == ExecutionSuccess("p")
    assert parse_history_entry({}).terminal is None


def test_executed_lists_its_files() -> None:
    event = parse_message(
        json.dumps(
            {
                "type": "executed",
                "data": {
                    "node": "9",
                    "output": {"images": [{"filename": "a.png"}]},
                    "prompt_id": "p",
                },
            }
        )
    )
    assert isinstance(event, Executed)
    assert event.files == (OutputFile("9", "images", "a.png", "", "output", "image"),)


@pytest.mark.parametrize(
    ("exception_type", "message", "expected"),
    [
        ("torch.OutOfMemoryError", "anything", True),
        ("torch.cuda.OutOfMemoryError", "", True),
        ("RuntimeError", "CUDA out of memory. Tried to allocate 2.00 GiB", True),
        ("RuntimeError", "HIP out of memory. Tried to allocate 1 GiB", True),
        ("RuntimeError", "MPS backend out of memory (MPS allocated: 1 GB)", True),
        ("Exception", "Allocation on device 0 would exceed allowed memory. (out of memory)", True),
        ("Exception", "Allocation on device", True),
        ("RuntimeError", "CUBLAS_STATUS_ALLOC_FAILED when calling cublasCreate", True),
        (
            "RuntimeError",
            "[enforce fail at alloc_cpu.cpp:114] DefaultCPUAllocator: not enough memory",
            True,
        ),
        ("Exception", "**** ERROR: Saving image outside the output folder is not allowed.", False),
        ("PIL.UnidentifiedImageError", "cannot identify image file", False),
        (None, None, False),
    ],
)
def test_out_of_memory_is_recognised(
    exception_type: str | None, message: str | None, expected: bool
) -> None:
    assert is_out_of_memory(exception_type, message) is expected
