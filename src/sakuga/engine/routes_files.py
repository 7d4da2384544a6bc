"""``GET /view`` and ``POST /upload/image`` (PROTOCOL §4.8)."""

from __future__ import annotations

import io
import mimetypes
from pathlib import Path

from PIL import Image
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response

from sakuga.engine.files import FOLDER_TYPES
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
        try:
            name = engine.dirs.store_upload(
                Path(image.filename).name, data, kind, subfolder, overwrite
            )
        except ValueError:
            return Response(status_code=400)
    engine.forget_object_info()
    return JSONResponse({"name": name, "subfolder": subfolder, "type": kind})
