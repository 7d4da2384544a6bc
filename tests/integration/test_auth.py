"""API keys and tenancy: a key sees only its own jobs and assets; scopes gate the routes."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from comfy_sdk import AsyncComfy, Unauthorized

from sakuga.api.auth import auth_enabled, is_loopback
from tests.fixtures.api import RunningApi, StartApi
from tests.fixtures.engine import REPO
from tests.integration.test_assets_api import png
from tests.integration.test_jobs_api import BLANK_WORKFLOW as RAW_WORKFLOW

CLI_TIMEOUT_S = 60


async def new_key(
    api: RunningApi, scopes: str = "read,submit", owner: str | None = None, **extra: Any
) -> dict[str, str]:
    """Create a key through the server's own KeyStore; returns the Authorization header."""
    _record, secret = await api.services.store.keys.create(owner, scopes, **extra)
    return {"Authorization": f"Bearer {secret}"}


async def finished(api: RunningApi, job_id: str, auth: dict[str, str]) -> dict[str, Any]:
    """Follow the job's event stream to its end, then return the job."""
    async with api.http.stream("GET", f"/api/v2/jobs/{job_id}/events", headers=auth) as stream:
        assert stream.status_code == 200
        async for _line in stream.aiter_lines():
            pass
    job: dict[str, Any] = (await api.http.get(f"/api/v2/jobs/{job_id}", headers=auth)).json()
    return job


def error_code(response: httpx.Response) -> str:
    code: str = response.json()["error"]["code"]
    return code


# -- when keys are required ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "host", "required"),
    [
        ("auto", "127.0.0.1", False),
        ("auto", "127.8.9.10", False),
        ("auto", "::1", False),
        ("auto", "[::1]", False),
        ("auto", "localhost", False),
        ("auto", "0.0.0.0", True),
        ("auto", "::", True),
        ("auto", "192.168.1.20", True),
        ("auto", "gpu-box.lan", True),
        ("on", "127.0.0.1", True),
        ("off", "0.0.0.0", False),
    ],
)
def test_auto_requires_keys_on_any_non_loopback_bind(mode: str, host: str, required: bool) -> None:
    assert auth_enabled(mode, host) is required
    if mode == "auto":
        assert is_loopback(host) is not required


async def test_loopback_dev_mode_needs_no_key(api: RunningApi) -> None:
    """The default (auto on 127.0.0.1) is the open development mode."""
    response = await api.http.get("/api/v2/jobs")
    assert response.status_code == 200


# -- 401 and 403 ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        None,
        "Bearer",
        "Bearer sk_unknown_0000000000000000000000000000000000",
        "Basic dXNlcjpwYXNz",
        "Bearer two words",
    ],
)
async def test_missing_malformed_or_unknown_keys_are_401(
    start_api: StartApi, header: str | None
) -> None:
    api = await start_api(auth="on", workers=False)
    headers = {} if header is None else {"Authorization": header}
    for method, path in [
        ("GET", "/api/v2/jobs"),
        ("GET", "/api/v2/jobs/any"),
        ("POST", "/api/v2/jobs"),
        ("GET", "/api/v2/assets/any/content"),
        ("GET", "/api/v2/templates"),
    ]:
        response = await api.http.request(method, path, headers=headers, json={})
        assert response.status_code == 401, (method, path, response.text)
        assert error_code(response) == "unauthorized"
        assert response.headers["WWW-Authenticate"] == "Bearer"


OPEN_PATHS = {"/healthz", "/readyz", "/api/v2/health", "/docs", "/openapi.json"}


async def test_every_route_but_health_and_docs_needs_a_key(start_api: StartApi) -> None:
    """Walks the OpenAPI document, so a new route without a scope fails here."""
    api = await start_api(auth="on", workers=False)
    paths = (await api.http.get("/openapi.json")).json()["paths"]
    checked = 0
    for path, operations in paths.items():
        for method in operations:
            concrete = re.sub(r"\{[^}]+\}", "x", path)
            response = await api.http.request(method.upper(), concrete)
            if path in OPEN_PATHS:
                assert response.status_code != 401, (method, path)
                continue
            assert response.status_code == 401, (method, path, response.status_code)
            checked += 1
    assert checked >= 15


async def test_a_revoked_key_is_refused(start_api: StartApi, db_url: str) -> None:
    api = await start_api(auth="on", workers=False, database_url=db_url)
    record, secret = await api.services.store.keys.create(None, "read")
    auth = {"Authorization": f"Bearer {secret}"}
    assert (await api.http.get("/api/v2/jobs", headers=auth)).status_code == 200
    assert await api.services.store.keys.revoke(record.id)
    response = await api.http.get("/api/v2/jobs", headers=auth)
    assert response.status_code == 401 and "revoked" in response.json()["error"]["message"]


async def test_health_and_docs_stay_open(start_api: StartApi) -> None:
    api = await start_api(auth="on", workers=False)
    for path in ("/healthz", "/api/v2/health", "/openapi.json", "/docs"):
        assert (await api.http.get(path)).status_code == 200, path
    assert (await api.http.get("/readyz")).status_code in (200, 503)
    scheme = (await api.http.get("/openapi.json")).json()["components"]["securitySchemes"]
    assert any(s.get("scheme") == "bearer" for s in scheme.values())


async def test_scopes_gate_writes_and_reads(start_api: StartApi) -> None:
    """A read-only key cannot submit, cancel or upload (403 naming the scope); no job exists."""
    api = await start_api(auth="on", workers=False)
    owner = "team-a"
    reader = await new_key(api, "read", owner=owner)
    writer = await new_key(api, "submit", owner=owner)

    refused = await api.http.post("/api/v2/jobs", json={"workflow": RAW_WORKFLOW}, headers=reader)
    assert refused.status_code == 403 and error_code(refused) == "forbidden"
    assert "'submit' scope" in refused.json()["error"]["message"]
    assert refused.json()["error"]["details"] == {"required_scope": "submit", "scopes": ["read"]}
    assert (await api.http.get("/api/v2/jobs", headers=reader)).json()["jobs"] == []
    upload_refused = await api.http.post(
        "/api/v2/assets",
        data={"file_path": "a.png"},
        files={"file": ("a.png", png((1, 2, 3)), "image/png")},
        headers=reader,
    )
    assert upload_refused.status_code == 403

    created = await api.http.post("/api/v2/jobs", json={"workflow": RAW_WORKFLOW}, headers=writer)
    assert created.status_code == 201, created.text
    job_id = created.json()["id"]
    cancel = await api.http.post(f"/api/v2/jobs/{job_id}/cancel", headers=reader)
    assert cancel.status_code == 403
    # A submit-only key cannot read, not even its own job.
    assert (await api.http.get(f"/api/v2/jobs/{job_id}", headers=writer)).status_code == 403
    assert (await api.http.get(f"/api/v2/jobs/{job_id}", headers=reader)).status_code == 200


# -- tenancy --------------------------------------------------------------------------------


async def test_another_keys_jobs_and_assets_are_404(start_api: StartApi, db_url: str) -> None:
    api = await start_api(auth="on", database_url=db_url)
    alice = await new_key(api)
    bob = await new_key(api)

    uploaded = await api.http.post(
        "/api/v2/assets",
        data={"content_type": "image/png", "file_path": "alice.png"},
        files={"file": ("alice.png", png((9, 9, 9)), "image/png")},
        headers=alice,
    )
    assert uploaded.status_code == 201, uploaded.text
    asset = uploaded.json()
    created = await api.http.post("/api/v2/jobs", json={"workflow": RAW_WORKFLOW}, headers=alice)
    assert created.status_code == 201, created.text
    job = await finished(api, created.json()["id"], alice)
    assert job["status"] == "succeeded", job
    output_id = job["outputs"][0]["id"]

    job_id = job["id"]
    for method, path in [
        ("GET", f"/api/v2/jobs/{job_id}"),
        ("GET", f"/api/v2/jobs/{job_id}/workflow"),
        ("GET", f"/api/v2/jobs/{job_id}/events"),
        ("POST", f"/api/v2/jobs/{job_id}/cancel"),
        ("GET", f"/api/v2/assets/{asset['id']}"),
        ("GET", f"/api/v2/assets/{asset['id']}/content"),
        ("GET", f"/api/v2/assets/{output_id}"),
        ("GET", f"/api/v2/assets/{output_id}/content"),
        ("DELETE", f"/api/v2/assets/{asset['id']}"),
        ("HEAD", f"/api/v2/assets/by-hash/{asset['hash']}"),
    ]:
        response = await api.http.request(method, path, headers=bob)
        assert response.status_code == 404, (method, path, response.status_code)
    from_hash = await api.http.post(
        "/api/v2/assets/from-hash", json={"hash": asset["hash"]}, headers=bob
    )
    assert from_hash.status_code == 404 and error_code(from_hash) == "blob_not_found"
    reference = {"__type": "core/ASSET", "info": {"id": asset["id"]}}
    borrowed = {
        "1": {"class_type": "LoadImage", "inputs": {"image": reference}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "b"}},
    }
    stolen = await api.http.post("/api/v2/jobs", json={"workflow": borrowed}, headers=bob)
    assert stolen.status_code == 422 and error_code(stolen) == "missing_asset"
    assert (await api.http.get("/api/v2/jobs", headers=bob)).json()["jobs"] == []

    # Alice still has everything Bob tried to touch.
    listed = (await api.http.get("/api/v2/jobs", headers=alice)).json()["jobs"]
    assert [j["id"] for j in listed] == [job_id]
    assert (await api.http.get(f"/api/v2/assets/{asset['id']}", headers=alice)).status_code == 200
    content = await api.http.get(f"/api/v2/assets/{output_id}/content", headers=alice)
    assert content.status_code == 200 and content.content.startswith(b"\x89PNG")


async def test_keys_grouped_under_one_owner_share_their_jobs(start_api: StartApi) -> None:
    api = await start_api(auth="on", workers=False)
    ci = await new_key(api, owner="studio")
    laptop = await new_key(api, "read", owner="studio")
    outsider = await new_key(api)
    created = await api.http.post("/api/v2/jobs", json={"workflow": RAW_WORKFLOW}, headers=ci)
    job_id = created.json()["id"]
    assert (await api.http.get(f"/api/v2/jobs/{job_id}", headers=laptop)).status_code == 200
    assert (await api.http.get(f"/api/v2/jobs/{job_id}", headers=outsider)).status_code == 404


async def test_a_keys_default_webhook_reaches_its_principal(start_api: StartApi) -> None:
    api = await start_api(auth="on", workers=False)
    record, secret = await api.services.store.keys.create(
        None, "submit", webhook_url="https://hooks.example.com/sakuga"
    )
    verified = await api.services.store.keys.verify(secret)
    assert verified is not None and verified.webhook_url == "https://hooks.example.com/sakuga"
    assert verified.owner == record.owner == f"key-{record.id}"
    stored = (await api.services.store.keys.list())[0]
    assert stored.prefix in secret and secret not in repr(stored)


async def test_comfy_sdk_works_with_a_key(
    start_api: StartApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    """comfy-sdk sends its key as Bearer and downloads outputs by id with it."""
    api = await start_api(auth="on")
    _record, secret = await api.services.store.keys.create(None, "read,submit")
    monkeypatch.setenv("COMFY_BASE_URL", api.url)
    monkeypatch.delenv("COMFY_API_KEY", raising=False)
    async with AsyncComfy(api_key=secret, timeout=10) as client:
        job = await client.run(client.workflows.from_json(RAW_WORKFLOW), timeout=60)
        assert job.status == "succeeded"
        (output,) = job.get_outputs("3")
        data = await output.to_bytes()
        assert data.startswith(b"\x89PNG") and len(data) == output.size_bytes
    async with AsyncComfy(timeout=10) as anonymous:
        with pytest.raises(Unauthorized, match="API key is required"):
            await anonymous.jobs.get(job.id)


# -- the CLI --------------------------------------------------------------------------------


def sakuga(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sakuga.cli.main", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO / "src"), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )


@pytest.mark.timeout(120)
async def test_cli_creates_a_key_once_lists_and_revokes_it(
    start_api: StartApi, tmp_path: Path
) -> None:
    api = await start_api(auth="on", workers=False)
    db = ("--database-url", api.settings.database_url)

    created = await asyncio.to_thread(
        sakuga, "keys", "create", "--scope", "submit,read", "--name", "ci", *db, cwd=tmp_path
    )
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    assert secret.startswith("sk_") and "\n" not in secret
    assert "cannot be shown again" in created.stderr and secret not in created.stderr
    auth = {"Authorization": f"Bearer {secret}"}
    submitted = await api.http.post("/api/v2/jobs", json={"workflow": RAW_WORKFLOW}, headers=auth)
    assert submitted.status_code == 201, submitted.text

    listed = await asyncio.to_thread(sakuga, "keys", "list", *db, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert secret[:11] in listed.stdout and secret not in listed.stdout
    key_id = listed.stdout.splitlines()[1].split("\t")[0]
    assert "ci" in listed.stdout and "active" in listed.stdout

    revoked = await asyncio.to_thread(sakuga, "keys", "revoke", key_id, *db, cwd=tmp_path)
    assert revoked.returncode == 0, revoked.stderr
    # Another process revoked it: the server's short verify cache lets it lapse in seconds.
    deadline = time.monotonic() + 10
    while (status := (await api.http.get("/api/v2/jobs", headers=auth)).status_code) == 200:
        assert time.monotonic() < deadline, "revoked key still accepted after 10 s"
        await asyncio.sleep(0.2)
    assert status == 401
    again = await asyncio.to_thread(sakuga, "keys", "revoke", key_id, *db, cwd=tmp_path)
    assert again.returncode == 1 and "no active key" in again.stderr


async def test_cli_refuses_an_unknown_scope(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'keys.db'}"
    result = await asyncio.to_thread(
        sakuga, "keys", "create", "--scope", "read,write", "--database-url", url, cwd=tmp_path
    )
    assert result.returncode != 0 and result.stdout == ""
    assert "unknown scope write" in result.stderr and "read, submit, admin" in result.stderr
