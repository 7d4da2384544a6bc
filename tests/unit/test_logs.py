"""Log lines: one JSON object each, naming the job, attempt, backend and request they are about."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from asgi_correlation_id import correlation_id

from sakuga.logs import (
    ContextFilter,
    JsonFormatter,
    TextFormatter,
    configure_logging,
    log_context,
    request_id_headers,
    valid_request_id,
)


class Capture(logging.Handler):
    """Formatted lines, through the same filter the real handler uses."""

    def __init__(self, formatter: logging.Formatter) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.addFilter(ContextFilter())
        self.setFormatter(formatter)

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    def json(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines]


@pytest.fixture
def logger() -> Iterator[tuple[logging.Logger, Capture]]:
    log = logging.getLogger("sakuga.test_logs")
    capture = Capture(JsonFormatter())
    log.addHandler(capture)
    log.setLevel(logging.DEBUG)
    log.propagate = False
    yield log, capture
    log.removeHandler(capture)
    log.propagate = True


def test_a_json_line_has_time_level_logger_and_message(logger: tuple[Any, Capture]) -> None:
    log, capture = logger
    log.info("hello %s", "world")
    (line,) = capture.json()
    assert line["message"] == "hello world"
    assert line["level"] == "INFO"
    assert line["logger"] == "sakuga.test_logs"
    ts = datetime.fromisoformat(line["ts"])
    assert ts.utcoffset() == timedelta(0)
    assert set(line) == {"ts", "level", "logger", "message"}


def test_context_fields_are_added_inside_log_context(logger: tuple[Any, Capture]) -> None:
    log, capture = logger
    with log_context(job_id="j1", attempt=2, backend="embedded"):
        log.warning("inside")
        with log_context(attempt=3):
            log.warning("nested")
    log.warning("outside")
    inside, nested, outside = capture.json()
    assert (inside["job_id"], inside["attempt"], inside["backend"]) == ("j1", 2, "embedded")
    assert (nested["job_id"], nested["attempt"]) == ("j1", 3)
    assert "job_id" not in outside and "attempt" not in outside


def test_extra_fields_are_kept_and_win_over_the_context(logger: tuple[Any, Capture]) -> None:
    log, capture = logger
    with log_context(job_id="from-context"):
        log.info("done", extra={"job_id": "explicit", "run_ms": 12, "path": None})
    (line,) = capture.json()
    assert line["job_id"] == "explicit"
    assert line["run_ms"] == 12 and line["path"] is None


def test_exceptions_are_one_line_with_the_traceback_text(logger: tuple[Any, Capture]) -> None:
    log, capture = logger
    try:
        raise ValueError("bad value 7")
    except ValueError:
        log.exception("failed")
    assert len(capture.lines) == 1 and "\n" not in capture.lines[0]
    (line,) = capture.json()
    assert "Traceback" in line["exc_info"] and "ValueError: bad value 7" in line["exc_info"]


def test_values_json_cannot_encode_become_text(logger: tuple[Any, Capture]) -> None:
    log, capture = logger
    log.info("odd", extra={"when": datetime(2026, 1, 2), "items": {1, 2} - {2}})
    (line,) = capture.json()
    assert line["when"] == "2026-01-02 00:00:00" and line["items"] == "{1}"


def test_the_request_id_comes_from_the_correlation_id(logger: tuple[Any, Capture]) -> None:
    log, capture = logger
    token = correlation_id.set("req-42")
    try:
        log.info("serving")
        assert request_id_headers() == {"X-Request-Id": "req-42", "X-Comfy-Request-Id": "req-42"}
    finally:
        correlation_id.reset(token)
    log.info("idle")
    serving, idle = capture.json()
    assert serving["request_id"] == "req-42"
    assert "request_id" not in idle
    assert request_id_headers() == {}


async def test_tasks_started_inside_a_context_inherit_it(logger: tuple[Any, Capture]) -> None:
    log, capture = logger

    async def heartbeat() -> None:
        log.info("beat")

    with log_context(job_id="j9", attempt=1):
        task = asyncio.create_task(heartbeat())
    await task
    (line,) = capture.json()
    assert (line["job_id"], line["attempt"]) == ("j9", 1)


def test_text_format_appends_the_context(logger: tuple[Any, Capture]) -> None:
    log, capture = logger
    capture.setFormatter(TextFormatter())
    with log_context(job_id="j1", attempt=1, backend="http://gpu1:8188"):
        log.info("job succeeded", extra={"execution_s": 1.5})
    (line,) = capture.lines
    assert line.endswith(
        "INFO sakuga.test_logs job succeeded "
        "[job_id=j1 attempt=1 backend=http://gpu1:8188 execution_s=1.5]"
    )


@pytest.mark.parametrize(
    ("value", "kept"),
    [
        ("4f6c1e0b9a8d4c2e8f7a6b5c4d3e2f1a", True),
        ("my-trace.123:abc", True),
        ("a" * 200, True),
        ("a" * 201, False),
        ("", False),
        ("has space", False),
        ('quote"d', False),
        ("line\nbreak", False),
    ],
)
def test_caller_request_ids_are_kept_only_when_safe(value: str, kept: bool) -> None:
    assert valid_request_id(value) is kept


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_configure_logging_replaces_only_its_own_handler(
    fmt: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    try:
        configure_logging("warning", fmt)
        configure_logging("info", fmt)
        ours = [h for h in root.handlers if h not in before]
        assert len(ours) == 1 and all(h in root.handlers for h in before)
        assert root.level == logging.INFO
        with log_context(job_id="j5"):
            logging.getLogger("sakuga.configured").info("configured")
        output = stream.getvalue().strip()
        if fmt == "json":
            assert json.loads(output)["job_id"] == "j5"
        else:
            assert output.endswith("configured [job_id=j5]")
    finally:
        for handler in root.handlers[:]:
            if handler not in before:
                root.removeHandler(handler)
                handler.close()
        root.setLevel(level)
        for name in ("httpx", "httpcore"):
            logging.getLogger(name).setLevel(logging.NOTSET)


def test_httpx_request_lines_are_kept_only_when_debugging(monkeypatch: pytest.MonkeyPatch) -> None:
    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    monkeypatch.setattr("sys.stderr", io.StringIO())
    try:
        configure_logging("info", "json")
        assert not logging.getLogger("httpx").isEnabledFor(logging.INFO)
        configure_logging("debug", "json")
        assert logging.getLogger("httpx").isEnabledFor(logging.INFO)
    finally:
        for handler in root.handlers[:]:
            if handler not in before:
                root.removeHandler(handler)
                handler.close()
        root.setLevel(level)
        for name in ("httpx", "httpcore"):
            logging.getLogger(name).setLevel(logging.NOTSET)
