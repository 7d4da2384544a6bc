"""The CLI as a user runs it: a subprocess against a ``sakuga serve`` subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fixtures.engine import REPO
from tests.fixtures.servers import ServerProcess

CLI_TIMEOUT_S = 60


def sakuga(*args: str, cwd: Path, server: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "120"}
    if server is not None:
        env["SAKUGA_SERVER"] = server
    return subprocess.run(
        [sys.executable, "-m", "sakuga.cli.main", *args],
        cwd=cwd,
        env={**env, "PYTHONPATH": str(REPO / "src")},
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )


@pytest.fixture
def served(tmp_path: Path, server_process: Callable[..., ServerProcess]) -> ServerProcess:
    return server_process(
        "--database-url", f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}",
        "--data-dir", str(tmp_path / "data"), "--engine-step-s", "0.02",
    )  # fmt: skip


@pytest.mark.timeout(90)
def test_submit_wait_prints_the_saved_image(served: ServerProcess, tmp_path: Path) -> None:
    result = sakuga(
        "submit", "--template", "txt2img", "--param", "prompt=a red fox",
        "--param", "steps=10", "--param", "width=256", "--wait",
        "--output-dir", str(tmp_path / "out"), cwd=tmp_path, server=served.url,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    paths = [Path(line) for line in result.stdout.split()]
    assert len(paths) == 1 and paths[0].is_file()
    assert paths[0].read_bytes().startswith(b"\x89PNG")
    assert "succeeded" in result.stderr

    listed = sakuga("jobs", cwd=tmp_path, server=served.url)
    assert listed.returncode == 0 and "succeeded" in listed.stdout


@pytest.mark.timeout(90)
def test_job_and_cancel_commands(
    tmp_path: Path, server_process: Callable[..., ServerProcess]
) -> None:
    # Slow steps: the job must still be running after two CLI start-ups.
    served = server_process(
        "--database-url", f"sqlite+aiosqlite:///{tmp_path / 'slow.db'}",
        "--data-dir", str(tmp_path / "slow"), "--engine-step-s", "0.2",
    )  # fmt: skip
    submitted = sakuga(
        "submit", "--template", "txt2img", "-p", "prompt=slow", "-p", "steps=150",
        cwd=tmp_path, server=served.url,
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    shown = sakuga("job", job_id, cwd=tmp_path, server=served.url)
    assert json.loads(shown.stdout)["id"] == job_id
    canceled = sakuga("cancel", job_id, cwd=tmp_path, server=served.url)
    assert canceled.returncode == 0
    assert canceled.stdout.split()[1] in {"canceled", "canceling"}


def test_bad_parameter_is_a_clear_error(served: ServerProcess, tmp_path: Path) -> None:
    result = sakuga(
        "submit", "--template", "txt2img", "-p", "prompt=x", "-p", "width=4096",
        "-p", "height=256", cwd=tmp_path, server=served.url,
    )  # fmt: skip
    assert result.returncode == 1
    assert "aspect ratio" in result.stderr


def test_unknown_job_exits_nonzero(served: ServerProcess, tmp_path: Path) -> None:
    result = sakuga("job", "nope", cwd=tmp_path, server=served.url)
    assert result.returncode == 1
    assert "not_found" in result.stderr


def test_help_shows_env_vars(tmp_path: Path) -> None:
    result = sakuga("serve", "--help", cwd=tmp_path)
    assert result.returncode == 0
    for var in ("SAKUGA_DATABASE_URL", "SAKUGA_BACKENDS", "SAKUGA_LEASE_S"):
        assert var in result.stdout
