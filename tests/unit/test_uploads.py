"""What a backend's catalogue says of uploaded files, worked out once per catalogue."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from sakuga.comfy.client import ComfyClient
from sakuga.domain.breaker import BreakerPolicy, CircuitBreaker
from sakuga.domain.inputs import Uploads
from sakuga.worker.backends import Backend


@pytest.fixture(scope="module")
def object_info(shared_dir: Path) -> dict[str, Any]:
    info: dict[str, Any] = json.loads((shared_dir / "comfyui" / "object_info.json").read_text())
    return info


def backend_with(object_info: dict[str, Any]) -> Backend:
    # Nothing is sent: the client is only there because a Backend always has one.
    client = ComfyClient("http://gpu.test")
    return Backend(
        "http://gpu.test", 1, client, CircuitBreaker(BreakerPolicy()), object_info=object_info
    )


def test_a_real_catalogue_names_its_upload_inputs_and_the_files_it_lists(
    object_info: dict[str, Any],
) -> None:
    uploads = Uploads.of(object_info)

    assert "LoadImage.image" in uploads.inputs
    assert "CLIPTextEncode.text" not in uploads.inputs
    listed = object_info["LoadImage"]["input"]["required"]["image"][0]
    assert set(listed) <= uploads.listed


def test_a_backend_works_its_uploads_out_once_per_catalogue(object_info: dict[str, Any]) -> None:
    backend = backend_with(object_info)

    first = backend.uploads
    assert backend.uploads is first  # the same catalogue: not scanned again

    refreshed = copy.deepcopy(object_info)
    refreshed["LoadImage"]["input"]["required"]["image"][0] = ["new-upload.png"]
    backend.object_info = refreshed  # a refresh replaces the catalogue
    assert backend.uploads is not first
    assert "new-upload.png" in backend.uploads.listed


def test_a_backend_without_a_catalogue_has_no_uploads() -> None:
    backend = backend_with({})
    backend.object_info = None

    assert backend.uploads == Uploads(frozenset(), frozenset())
