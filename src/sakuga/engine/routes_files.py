"""``GET /view``, ``POST /upload/image`` and ``POST /upload/mask`` (PROTOCOL §4.8)."""

from __future__ import annotations

import io
import json
import mimetypes
from pathlib import Path

from PIL import Image
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response

from sakuga.engine.files import FOLDER_TYPES, DataDirs
from sakuga.engine.routes import engine_of, server_error


async def view(request: Request) -> Response:
    """Serve an output/input/temp file; ``preview=`` and ``channel=`` re-encode it."""
    params = request.query_params
    filename = params.get("filename")
    if filename is None:
        return Response(status_code=404)
    dirs = engine_of(request).dirs
    status, path = dirs.view_path(
        filename, params.get("type", "output"), params.get("subfolder", "")
    )
    if path is None:
        return Response(status_code=status)
    headers = {"Content-Disposition": f'filename="{path.name}"'}
    preview, channel = params.get("preview"), params.get("channel")
    if preview is None and channel is None:
        media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return FileResponse(path, media_type=media_type, headers=headers)
    data, media_type = _reencode(path, preview, channel)
    return Response(data, media_type=media_type, headers=headers)


def _reencode(path: Path, preview: str | None, channel: str | None) -> tuple[bytes, str]:
    buffer = io.BytesIO()
    with Image.open(path) as picture:
        if preview is not None:
            kind, _, quality = preview.partition(";")
            fmt = "WEBP" if kind == "webp" else "JPEG"
            level = int(quality) if quality.isdigit() else 90
            picture.convert("RGB").save(buffer, format=fmt, quality=level)
            return buffer.getvalue(), f"image/{fmt.lower()}"
        if channel == "a":
            alpha = picture.getchannel("A") if "A" in picture.getbands() else None
            out = Image.new("RGBA", picture.size)
            out.putalpha(alpha if alpha is not None else 255)
        else:
            out = picture.convert("RGB")
        out.save(buffer, format="PNG")
    return buffer.getvalue(), "image/png"


async def upload_image(request: Request) -> Response:
    """Store an upload in input/ (or ``type``); identical bytes reuse the name, else rename."""
    return await _upload(request, mask=False)


async def upload_mask(request: Request) -> Response:
    """Like ``/upload/image``, but what is stored is the ``original_ref`` image (JSON
    ``{filename, subfolder, type}``) with the uploaded image's alpha as its alpha."""
    return await _upload(request, mask=True)


async def _upload(request: Request, *, mask: bool) -> Response:
    engine = engine_of(request)
    async with request.form(max_part_size=engine.options.max_upload_size) as form:
        image = form.get("image")
        kind = str(form.get("type") or "input")
        subfolder = str(form.get("subfolder") or "")
        overwrite = str(form.get("overwrite") or "").lower() in ("true", "1")
        if not isinstance(image, UploadFile) or not image.filename:
            return Response(status_code=400)
        if kind not in FOLDER_TYPES:
            return server_error()  # ComfyUI fails with UnboundLocalError here
        data = await image.read()
        if mask:
            status, original = _original(engine.dirs, form.get("original_ref"))
            if original is None:
                return Response(status_code=status)
            try:
                data = _with_alpha_of(original, data)
            except (OSError, ValueError):  # not an image Pillow can read
                return Response(status_code=400)
        try:
            name = engine.dirs.store_upload(
                Path(image.filename).name, data, kind, subfolder, overwrite
            )
        except ValueError:
            return Response(status_code=400)
    engine.forget_object_info()
    return JSONResponse({"name": name, "subfolder": subfolder, "type": kind})


def _original(dirs: DataDirs, ref: object) -> tuple[int, Path | None]:
    """The file ``original_ref`` names, or (status, None): 400 unreadable, 403 escaping, 404."""
    try:
        parsed = json.loads(ref) if isinstance(ref, str) else None
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("filename"), str):
        return 400, None
    kind, subfolder = str(parsed.get("type") or "output"), str(parsed.get("subfolder") or "")
    status, path = dirs.view_path(parsed["filename"], kind, subfolder)
    return status, path


def _with_alpha_of(original: Path, mask: bytes) -> bytes:
    """PNG bytes of ``original`` whose alpha is the mask's (scaled to the original's size)."""
    buffer = io.BytesIO()
    with Image.open(original) as picture, Image.open(io.BytesIO(mask)) as alpha_source:
        out = picture.convert("RGBA")
        alpha = alpha_source.convert("RGBA").getchannel("A")
        if alpha.size != out.size:
            alpha = alpha.resize(out.size)
        out.putalpha(alpha)
        out.save(buffer, format="PNG")
    return buffer.getvalue()
