"""Output downloads: signed links work without a key until they expire; tampered or expired
ones are 403; ids and blob paths can never reach outside the artifact root."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import httpx
import pytest

from tests.fixtures.api import RunningApi, StartApi
from tests.integration.test_assets_api import png
from tests.integration.test_auth import error_code, finished, new_key
from tests.integration.test_jobs_api import BLANK_WORKFLOW

TTL_S = 600


async def rendered(api: RunningApi, auth: dict[str, str]) -> dict[str, Any]:
    created = await api.http.post("/api/v2/jobs", json={"workflow": BLANK_WORKFLOW}, headers=auth)
    assert created.status_code == 201, created.text
    job = await finished(api, created.json()["id"], auth)
    assert job["status"] == "succeeded", job
    return job


def with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query.update(changes)
    return parts.path + "?" + "&".join(f"{k}={v}" for k, v in query.items())


async def raw_get(api: RunningApi, target: str) -> int:
    """GET with the request target sent byte for byte (no client-side path normalising)."""
    host, port = urlsplit(api.url).hostname, urlsplit(api.url).port
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 10)
    finally:
        writer.close()
        await writer.wait_closed()
    return int(status_line.split()[1])


async def test_output_urls_are_signed_and_work_without_a_key(start_api: StartApi) -> None:
    api = await start_api(auth="on", signed_url_ttl_s=TTL_S)
    alice = await new_key(api)
    job = await rendered(api, alice)
    output = job["outputs"][0]
    assert output["url"].startswith(f"{api.url}/api/v2/assets/{output['id']}/content?expires=")
    expires_at = datetime.fromisoformat(output["url_expires_at"])
    assert abs(expires_at.timestamp() - (time.time() + TTL_S)) < 30
    assert expires_at.tzinfo is not None

    async with httpx.AsyncClient() as anonymous:  # no key, no base URL: the link alone
        response = await anonymous.get(output["url"])
        assert response.status_code == 200
        assert response.content.startswith(b"\x89PNG")
        ranged = await anonymous.get(output["url"], headers={"Range": "bytes=0-3"})
        assert ranged.status_code == 206 and ranged.content == b"\x89PNG"

    # The event stream's output frame carries a signed link too; so does the asset view.
    async with api.http.stream("GET", f"/api/v2/jobs/{job['id']}/events", headers=alice) as s:
        lines = [line async for line in s.aiter_lines() if line.startswith("data:")]
    assert any("/content?expires=" in line and "signature=" in line for line in lines)
    asset = (await api.http.get(f"/api/v2/assets/{output['id']}", headers=alice)).json()
    assert "signature=" in asset["url"]
    assert (await api.http.get(asset["url"])).status_code == 200


async def test_tampered_and_expired_links_are_403(start_api: StartApi) -> None:
    api = await start_api(auth="on")
    alice = await new_key(api)
    job = await rendered(api, alice)
    output = job["outputs"][0]
    url = output["url"]
    signature = parse_qs(urlsplit(url).query)["signature"][0]
    flipped = ("0" if signature[0] != "0" else "1") + signature[1:]
    later = str(int(parse_qs(urlsplit(url).query)["expires"][0]) + 86_400)

    for tampered in (
        with_query(url, signature=flipped),
        with_query(url, expires=later),
        with_query(url, signature=""),
        with_query(url, expires="soon"),
    ):
        response = await api.http.get(tampered)
        assert response.status_code == 403, (tampered, response.text)
        assert error_code(response) == "forbidden"
    message = (await api.http.get(with_query(url, signature=flipped))).json()["error"]["message"]
    assert "signature does not match" in message

    # Another asset's id with this asset's signature: refused, not served.
    other = await api.http.post(
        "/api/v2/assets",
        data={"content_type": "image/png", "file_path": "other.png"},
        files={"file": ("other.png", png((5, 5, 5)), "image/png")},
        headers=alice,
    )
    moved = urlsplit(url).path.replace(output["id"], other.json()["id"])
    response = await api.http.get(moved + "?" + urlsplit(url).query)
    assert response.status_code == 403

    signer = api.services.signer
    stale, _ = signer.url(api.url, output["id"], now=time.time() - signer.ttl_s - 5)
    expired = await api.http.get(stale)
    assert expired.status_code == 403 and error_code(expired) == "forbidden"
    assert "expired at" in expired.json()["error"]["message"]
    assert "expired_at" in expired.json()["error"]["details"]


async def test_the_unsigned_content_route_needs_the_owners_key(start_api: StartApi) -> None:
    api = await start_api(auth="on")
    alice, bob = await new_key(api), await new_key(api)
    reader_of_other_tenant = await new_key(api, "read")
    output_id = (await rendered(api, alice))["outputs"][0]["id"]
    path = f"/api/v2/assets/{output_id}/content"
    assert (await api.http.get(path)).status_code == 401
    assert (await api.http.get(path, headers=bob)).status_code == 404
    assert (await api.http.get(path, headers=reader_of_other_tenant)).status_code == 404
    assert (await api.http.get(path, headers=alice)).status_code == 200


@pytest.mark.parametrize(
    "asset_id",
    [
        "%2e%2e",
        "..%2f..%2fsakuga.db",
        "%2e%2e%2fartifacts",
        "..%5c..%5cx",
        "%2fetc%2fpasswd",
        "..",
        "blobs",
    ],
)
async def test_traversal_ids_are_404(start_api: StartApi, asset_id: str) -> None:
    api = await start_api(auth="on", workers=False)
    alice = await new_key(api)
    await api.http.post(
        "/api/v2/assets",
        data={"content_type": "image/png", "file_path": "in.png"},
        files={"file": ("in.png", png((7, 7, 7)), "image/png")},
        headers=alice,
    )
    token = alice["Authorization"]
    for target in (f"/api/v2/assets/{asset_id}/content", f"/api/v2/assets/{asset_id}"):
        host = urlsplit(api.url).hostname
        reader, writer = await asyncio.open_connection(host, urlsplit(api.url).port)
        try:
            writer.write(
                f"GET {target} HTTP/1.1\r\nHost: {host}\r\nAuthorization: {token}\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            await writer.drain()
            status = int((await asyncio.wait_for(reader.readline(), 10)).split()[1])
        finally:
            writer.close()
            await writer.wait_closed()
        assert status == 404, (target, status)
    # A link signed for such an id (as the server decodes it) is still just a missing asset.
    expires, signature = api.services.signer.sign(unquote(asset_id))
    target = f"/api/v2/assets/{asset_id}/content?expires={expires}&signature={signature}"
    assert await raw_get(api, target) == 404


async def test_a_blob_symlinked_out_of_the_artifact_root_is_never_served(
    start_api: StartApi,
) -> None:
    api = await start_api(auth="on", workers=False)
    alice = await new_key(api)
    data = png((8, 8, 8))
    uploaded = await api.http.post(
        "/api/v2/assets",
        data={"content_type": "image/png", "file_path": "in.png"},
        files={"file": ("in.png", data, "image/png")},
        headers=alice,
    )
    asset = uploaded.json()
    blob = api.services.artifacts.root / "blobs" / asset["hash"][7:9] / asset["hash"][7:]
    secret = api.settings.data_dir / "outside-secret.txt"
    secret.write_text("not for clients")
    blob.unlink()
    blob.symlink_to(secret)

    response = await api.http.get(f"/api/v2/assets/{asset['id']}/content", headers=alice)
    assert response.status_code == 404 and error_code(response) == "not_found"
    assert b"not for clients" not in response.content
    signed = await api.http.get(asset["url"])
    assert signed.status_code == 404
    probe = await api.http.head(f"/api/v2/assets/by-hash/{asset['hash']}", headers=alice)
    assert probe.status_code == 404
