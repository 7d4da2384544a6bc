"""Shared test setup: fixture plugins live in tests/fixtures/, one module per real part."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = [
    "tests.fixtures.databases",
    "tests.fixtures.api",
    "tests.fixtures.engine",
    "tests.fixtures.servers",
    "tests.fixtures.private_pg",
]

SHARED = Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The shared reference folder (ComfyUI recordings) beside the repository."""
    for candidate in (SHARED, Path(__file__).resolve().parents[1] / ".." / "shared"):
        if (candidate / "comfyui").is_dir():
            return candidate
    raise RuntimeError(f"shared/comfyui not found next to the repository (looked at {SHARED})")
