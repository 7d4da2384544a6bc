"""Asset routes (Comfy API v2): upload, dedup probe, from-hash, metadata, content, delete."""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Header, Request, Response, UploadFile
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from sakuga.api.auth import check_scope, require_scope
from sakuga.api.deps import Services, base_url, owner, services
from sakuga.api.jobs import ERRORS
from sakuga.api.limits import upload_allowed
from sakuga.api.schemas import AssetOut
from sakuga.api.views import asset_view
from sakuga.artifacts import content_hash
from sakuga.errors import (
    BlobNotFound,
    HashMismatch,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    RangeNotSatisfiable,
)

router = APIRouter(prefix="/api/v2", tags=["assets"])

HASH_RE = re.compile(r"^blake3:[0-9a-f]{64}$")
_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")
_UNSAFE_FILENAME_RE = re.compile(r"[^\w.\- ]")


class FromHashBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    hash: str
    file_path: str | None = None
    tags: list[str] | None = None
    expires_in: int | None = None


def _check_hash(value: str, field: str) -> str:
    value = value.strip().lower()
    if not HASH_RE.match(value):
        raise InvalidRequest(field, value, "blake3:<64 lowercase hex digits>")
    return value


def _asset_json(request: Request, row: dict[str, Any], created_new: bool | None) -> dict[str, Any]:
    view = asset_view(base_url(request), row, created_new, request.app.state.services.signer)
    return AssetOut.model_validate(view).model_dump(mode="json", exclude_none=False)


@router.post(
    "/assets",
    response_model=AssetOut,
    status_code=201,
    responses=ERRORS,
    dependencies=[Depends(upload_allowed)],
)
async def upload_asset(
    request: Request,
    svc: Annotated[Services, Depends(services)],
    who: Annotated[str, Depends(owner)],
    file: UploadFile,
    file_path: Annotated[str, Form()],
    content_type: Annotated[str | None, Form()] = None,
    expected_hash: Annotated[str | None, Form()] = None,
    tags: Annotated[list[str] | None, Form()] = None,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> JSONResponse:
    """Store the bytes by blake3; 201 for a new blob, 200 when the caller already had it."""
    data = await file.read()
    limit = svc.settings.max_upload_bytes
    if len(data) > limit:
        raise PayloadTooLarge(
            f"file is {len(data)} bytes; an upload may be at most {limit} bytes",
            details={"field": "file", "size_bytes": len(data), "limit_bytes": limit},
        )
    if not file_path.strip() or ".." in file_path.split("/") or file_path.startswith("/"):
        raise InvalidRequest("file_path", file_path, "a relative name such as photo.png")
    digest = content_hash(data)
    if expected_hash is not None and _check_hash(expected_hash, "expected_hash") != digest:
        raise HashMismatch(
            f"expected_hash {expected_hash} does not match the uploaded bytes ({digest})",
            details={"expected_hash": expected_hash, "hash": digest},
        )
    existing = await svc.store.assets.by_hash(digest, who)
    await asyncio.to_thread(svc.artifacts.put, data)
    row = {
        "id": str(uuid.uuid4()),
        "owner": who,
        "hash": digest,
        "size_bytes": len(data),
        "content_type": content_type or file.content_type or "application/octet-stream",
        "file_path": file_path,
        "tags": tags or [],
        "job_id": None,
        "node_id": None,
        "kind": "file",
        "created_at": datetime.now(UTC),
    }
    await svc.store.assets.insert(row)
    if not svc.artifacts.exists(digest):
        # The retention sweep removed a blob nothing used just before our row used it again.
        await asyncio.to_thread(svc.artifacts.put, data)
    created_new = existing is None
    return JSONResponse(
        _asset_json(request, row, created_new), status_code=201 if created_new else 200
    )


@router.head(
    "/assets/by-hash/{digest}",
    responses={404: {}},
    dependencies=[Depends(require_scope("read"))],
)
async def probe_hash(
    digest: str,
    svc: Annotated[Services, Depends(services)],
    who: Annotated[str, Depends(owner)],
) -> Response:
    """200 when the caller may mint an asset from this blob, else 404 (no body)."""
    if not HASH_RE.match(digest):
        return Response(status_code=404)
    found = await svc.store.assets.by_hash(digest, who)
    return Response(status_code=200 if found and svc.artifacts.exists(digest) else 404)


@router.post(
    "/assets/from-hash",
    response_model=AssetOut,
    status_code=201,
    responses=ERRORS,
    dependencies=[Depends(upload_allowed)],
)
async def from_hash(
    request: Request,
    body: FromHashBody,
    svc: Annotated[Services, Depends(services)],
    who: Annotated[str, Depends(owner)],
) -> JSONResponse:
    """Mint an asset over bytes the caller already uploaded (200 when it names the same path)."""
    digest = _check_hash(body.hash, "hash")
    existing = await svc.store.assets.by_hash(digest, who)
    if existing is None or not svc.artifacts.exists(digest):
        raise BlobNotFound(f"no blob {digest} that this caller may use; upload it first")
    if body.file_path is None or body.file_path == existing["file_path"]:
        return JSONResponse(_asset_json(request, existing, False), status_code=200)
    row = {
        **existing,
        "id": str(uuid.uuid4()),
        "file_path": body.file_path,
        "tags": body.tags or [],
        "job_id": None,
        "node_id": None,
        "created_at": datetime.now(UTC),
    }
    await svc.store.assets.insert(row)
    return JSONResponse(_asset_json(request, row, False), status_code=201)


async def _owned(svc: Services, asset_id: str, who: str | None) -> dict[str, Any]:
    row = await svc.store.assets.get(asset_id, who)
    if row is None:
        raise NotFound(f"asset {asset_id!r} not found")
    return row


@router.get(
    "/assets/{asset_id}",
    response_model=AssetOut,
    responses=ERRORS,
    dependencies=[Depends(require_scope("read"))],
)
async def get_asset(
    asset_id: str,
    request: Request,
    svc: Annotated[Services, Depends(services)],
    who: Annotated[str, Depends(owner)],
) -> dict[str, Any]:
    return _asset_json(request, await _owned(svc, asset_id, who), None)


@router.delete(
    "/assets/{asset_id}",
    status_code=204,
    responses=ERRORS,
    dependencies=[Depends(require_scope("submit"))],
)
async def delete_asset(
    asset_id: str,
    svc: Annotated[Services, Depends(services)],
    who: Annotated[str, Depends(owner)],
) -> Response:
    """Delete the record; the blob stays while other records use it."""
    if not await svc.store.assets.delete(asset_id, who):
        raise NotFound(f"asset {asset_id!r} not found")
    return Response(status_code=204)


@router.get(
    "/assets/{asset_id}/content",
    responses={200: {"content": {"application/octet-stream": {}}}, **ERRORS},
)
async def asset_content(
    asset_id: str,
    request: Request,
    svc: Annotated[Services, Depends(services)],
    range_header: Annotated[str | None, Header(alias="Range")] = None,
    expires: str | None = None,
    signature: str | None = None,
) -> Response:
    """The bytes; ``Range: bytes=a-b`` answers 206 (416 when unsatisfiable).

    With ``expires`` and ``signature`` (a signed link from a job or asset ``url``) no API
    key is needed: 403 when the link is tampered with or expired. Without them, an API key
    with the ``read`` scope, and the asset must be the key's own (else 404).
    """
    if expires is not None or signature is not None:
        svc.signer.verify(asset_id, expires, signature)
        row = await _owned(svc, asset_id, None)
    else:
        who = await check_scope(request, "read")
        row = await _owned(svc, asset_id, who.owner)
    try:
        data = await asyncio.to_thread(svc.artifacts.read, row["hash"])
    except FileNotFoundError:
        raise NotFound(f"asset {asset_id!r} has no content on this server") from None
    filename = _UNSAFE_FILENAME_RE.sub("_", (row["file_path"] or asset_id).split("/")[-1])
    headers = {"Accept-Ranges": "bytes", "Content-Disposition": f'inline; filename="{filename}"'}
    if range_header is None:
        return Response(data, media_type=row["content_type"], headers=headers)
    start, end = _parse_range(range_header, len(data))
    headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
    return Response(
        data[start : end + 1], status_code=206, media_type=row["content_type"], headers=headers
    )


def _parse_range(header: str, size: int) -> tuple[int, int]:
    match = _RANGE_RE.match(header.strip())
    if not match or (not match.group(1) and not match.group(2)):
        raise RangeNotSatisfiable(
            f"Range {header!r} is not understood; use bytes=<first>-<last>",
            details={"field": "Range", "value": header, "accepted": "bytes=<first>-<last>"},
        )
    first, last = match.group(1), match.group(2)
    if first:
        start = int(first)
        end = min(int(last), size - 1) if last else size - 1
    else:
        start, end = max(0, size - int(last)), size - 1
    if start >= size or start > end:
        raise RangeNotSatisfiable(
            f"Range {header!r} is outside the {size}-byte content",
            details={"field": "Range", "value": header, "accepted": f"bytes within 0-{size - 1}"},
        )
    return start, end
