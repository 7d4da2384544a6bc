"""Assets: content-addressed upload, dedup, ranges, and uploaded images used by workflows."""

from __future__ import annotations

import io
from typing import Any

import blake3
from PIL import Image

from tests.fixtures.api import RunningApi
from tests.integration.test_jobs_api import wait_terminal


def png(color: tuple[int, int, int], size: tuple[int, int] = (40, 24)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


async def upload(api: RunningApi, data: bytes, name: str = "photo.png", **form: str) -> Any:
    return await api.http.post(
        "/api/v2/assets",
        data={"content_type": "image/png", "file_path": name, **form},
        files={"file": (name, data, "image/png")},
    )


def load_and_invert(image: Any) -> dict[str, Any]:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": image}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "inv"}},
    }


async def test_upload_is_content_addressed_and_deduplicated(api: RunningApi) -> None:
    data = png((200, 10, 10))
    digest = "blake3:" + blake3.blake3(data).hexdigest()
    assert (await api.http.head(f"/api/v2/assets/by-hash/{digest}")).status_code == 404
    first = await upload(api, data, expected_hash=digest)
    assert first.status_code == 201, first.text
    assert first.json()["hash"] == digest and first.json()["created_new"] is True
    assert (await upload(api, data)).status_code == 200
    assert (await api.http.head(f"/api/v2/assets/by-hash/{digest}")).status_code == 200
    minted = await api.http.post(
        "/api/v2/assets/from-hash", json={"hash": digest, "file_path": "again.png"}
    )
    assert minted.status_code == 201 and minted.json()["file_path"] == "again.png"
    content = await api.http.get(f"/api/v2/assets/{first.json()['id']}/content")
    assert content.content == data


async def test_hash_mismatch_is_409_and_stores_nothing(api: RunningApi) -> None:
    response = await upload(api, png((1, 2, 3)), expected_hash="blake3:" + "0" * 64)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "hash_mismatch"


async def test_range_reads_return_206_and_416(api: RunningApi) -> None:
    data = png((0, 90, 0))
    asset = (await upload(api, data)).json()
    url = f"/api/v2/assets/{asset['id']}/content"
    part = await api.http.get(url, headers={"Range": "bytes=0-3"})
    assert part.status_code == 206 and part.content == data[:4]
    assert part.headers["content-range"] == f"bytes 0-3/{len(data)}"
    tail = await api.http.get(url, headers={"Range": "bytes=-5"})
    assert tail.content == data[-5:]
    beyond = await api.http.get(url, headers={"Range": f"bytes={len(data) + 10}-"})
    assert beyond.status_code == 416


async def test_delete_asset_then_404(api: RunningApi) -> None:
    asset = (await upload(api, png((5, 5, 5)))).json()
    assert (await api.http.delete(f"/api/v2/assets/{asset['id']}")).status_code == 204
    assert (await api.http.delete(f"/api/v2/assets/{asset['id']}")).status_code == 404
    assert (await api.http.get(f"/api/v2/assets/{asset['id']}")).status_code == 404


async def test_workflow_with_asset_reference_runs_on_the_uploaded_image(api: RunningApi) -> None:
    data = png((250, 250, 0), size=(32, 16))
    asset = (await upload(api, data, "sun.png")).json()
    reference = {"__type": "core/ASSET", "info": {"id": asset["id"], "file_path": "sun.png"}}
    created = await api.http.post("/api/v2/jobs", json={"workflow": load_and_invert(reference)})
    assert created.status_code == 201, created.text
    job = await wait_terminal(api, created.json()["id"])
    assert job["status"] == "succeeded", job["error"]
    out = await api.http.get(f"/api/v2/assets/{job['outputs'][0]['id']}/content")
    inverted = Image.open(io.BytesIO(out.content)).convert("RGB")
    assert inverted.size == (32, 16)
    assert inverted.getpixel((0, 0)) == (5, 5, 255)
    executed = (await api.http.get(f"/api/v2/jobs/{job['id']}/workflow")).json()["workflow"]
    assert executed["1"]["inputs"]["image"] == f"sakuga/{asset['hash'][7:]}.png"


async def test_workflow_naming_an_uploaded_file_path_runs(api: RunningApi) -> None:
    await upload(api, png((0, 0, 0), size=(8, 8)), "mine.png")
    created = await api.http.post("/api/v2/jobs", json={"workflow": load_and_invert("mine.png")})
    assert created.status_code == 201, created.text
    job = await wait_terminal(api, created.json()["id"])
    assert job["status"] == "succeeded", job["error"]


async def test_unknown_asset_reference_is_422_missing_asset(api: RunningApi) -> None:
    reference = {"__type": "core/ASSET", "info": {"id": "00000000-0000-0000-0000-000000000000"}}
    response = await api.http.post("/api/v2/jobs", json={"workflow": load_and_invert(reference)})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "missing_asset"


async def test_unknown_image_name_is_422_invalid_workflow(api: RunningApi) -> None:
    response = await api.http.post("/api/v2/jobs", json={"workflow": load_and_invert("nope.png")})
    assert response.status_code == 422
    assert "nope.png" in response.json()["error"]["message"]
