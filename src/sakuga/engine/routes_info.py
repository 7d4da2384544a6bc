"""Discovery routes (PROTOCOL §4.7) and the tests-only fault switch route."""

from __future__ import annotations

import os
import sys
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sakuga.engine.options import ENGINE_VERSION
from sakuga.engine.routes import BadBody, engine_of, json_body

MODEL_FOLDERS = (
    "checkpoints", "configs", "loras", "vae", "text_encoders", "diffusion_models", "clip_vision",
    "style_models", "embeddings", "diffusers", "vae_approx", "controlnet", "gligen",
    "upscale_models", "latent_upscale_models", "custom_nodes", "hypernetworks", "photomaker",
    "classifiers", "model_patches", "audio_encoders",
)  # fmt: skip
STAND_IN_NOTE = "stand-in renderer, not a diffusion model"


async def object_info(request: Request) -> Response:
    """Every node class with live combo lists."""
    return JSONResponse(engine_of(request).object_info())


async def object_info_class(request: Request) -> Response:
    """``{cls: info}``, or ``{}`` (200) for an unknown class."""
    name = request.path_params["node_class"]
    info = engine_of(request).object_info().get(name)
    return JSONResponse({name: info} if info is not None else {})


def _memory() -> tuple[int, int]:
    try:
        pages, free = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_AVPHYS_PAGES")
        size = os.sysconf("SC_PAGE_SIZE")
        return pages * size, free * size
    except (ValueError, OSError, AttributeError):
        return 0, 0


async def system_stats(request: Request) -> Response:
    """ComfyUI's system_stats shape; says plainly that this is sakuga's stand-in renderer."""
    total, free = _memory()
    system: dict[str, Any] = {
        "os": sys.platform,
        "ram_total": total,
        "ram_free": free,
        "comfyui_version": ENGINE_VERSION,
        "required_frontend_version": "1.35.9",
        "installed_templates_version": "0.7.67",
        "required_templates_version": "0.7.67",
        "python_version": sys.version,
        "pytorch_version": "none (sakuga engine)",
        "embedded_python": False,
        "argv": list(sys.argv),
        "sakuga_engine": STAND_IN_NOTE,
    }
    device = {
        "name": "cpu",
        "type": "cpu",
        "index": None,
        "vram_total": total,
        "vram_free": free,
        "torch_vram_total": total,
        "torch_vram_free": free,
    }
    return JSONResponse({"system": system, "devices": [device]})


async def features(request: Request) -> Response:
    """The server feature flags."""
    return JSONResponse(engine_of(request).server_flags)


async def models(request: Request) -> Response:
    """Model folder names, as ComfyUI 0.8.0 lists them."""
    return JSONResponse(list(MODEL_FOLDERS))


async def models_in_folder(request: Request) -> Response:
    """Checkpoints from the options; other known folders are empty; unknown ones 404."""
    folder = request.path_params["folder"]
    if folder not in MODEL_FOLDERS:
        return Response(status_code=404)
    names = sorted(engine_of(request).options.checkpoints) if folder == "checkpoints" else []
    return JSONResponse(names)


async def view_metadata(request: Request) -> Response:
    """A model's safetensors ``__metadata__``; the stand-in's checkpoints carry none: 404,
    as ComfyUI answers for a file without it (and for an unknown folder or file)."""
    return Response(status_code=404)


async def embeddings(request: Request) -> Response:
    """No embeddings: the stand-in has no text encoder files."""
    return JSONResponse([])


async def faults(request: Request) -> Response:
    """Tests only: GET reads the switches, POST sets some, DELETE turns them all off."""
    switches = engine_of(request).faults
    if request.method == "POST":
        try:
            changes = await json_body(request)
            switches.update(changes)
        except BadBody:
            return JSONResponse({"error": "body must be a JSON object of fault switches"}, 400)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, 400)
    elif request.method == "DELETE":
        switches.reset()
    return JSONResponse(switches.to_dict())
