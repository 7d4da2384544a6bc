"""Image nodes and the registry of every node class the engine can run."""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, ImageSequence

from sakuga.engine import render, sampling
from sakuga.engine.context import NodeCall, NodeFn, NodeResult, offload
from sakuga.engine.files import DataDirs, SaveTarget
from sakuga.engine.values import Images

_RESAMPLE = {
    "nearest-exact": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "area": Image.Resampling.BOX,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}
_TEMP_LETTERS = "abcdefghijklmnopqrstuvwxyz"


@dataclass(frozen=True)
class NodeClass:
    """How to run a class; ``unique_id`` nodes get their id in the cache signature."""

    run: NodeFn
    unique_id: bool = False
    hashes_input_file: str | None = None


def _pixels(images: Images) -> int:
    return images.width * images.height * len(images.frames)


async def empty_image(call: NodeCall) -> NodeResult:
    """EmptyImage: a batch of solid pictures in ``color`` (0xRRGGBB)."""
    width, height = int(call.inputs["width"]), int(call.inputs["height"])
    colour = int(call.inputs["color"])
    rgb = ((colour >> 16) & 0xFF, (colour >> 8) & 0xFF, colour & 0xFF)
    frame = Image.new("RGB", (width, height), rgb)
    return NodeResult((Images((frame,) * int(call.inputs["batch_size"])),))


def _invert(images: Images) -> Images:
    return Images(tuple(ImageOps.invert(frame) for frame in images.frames))


async def image_invert(call: NodeCall) -> NodeResult:
    """ImageInvert: negative of every frame."""
    images: Images = call.inputs["image"]
    return NodeResult((await offload(_pixels(images), _invert, images),))


def _scale(images: Images, method: str, width: int, height: int, crop: str) -> Images:
    if width == 0 and height == 0:
        return images
    if width == 0:
        width = max(1, round(images.width * height / images.height))
    if height == 0:
        height = max(1, round(images.height * width / images.width))
    frames = []
    for frame in images.frames:
        if crop == "center":
            frame = ImageOps.fit(frame, (width, height), _RESAMPLE[method])
        else:
            frame = frame.resize((width, height), _RESAMPLE[method])
        frames.append(frame)
    return Images(tuple(frames))


async def image_scale(call: NodeCall) -> NodeResult:
    """ImageScale: resize to ``width`` x ``height`` (0 keeps the aspect ratio)."""
    images: Images = call.inputs["image"]
    args = (
        str(call.inputs["upscale_method"]),
        int(call.inputs["width"]),
        int(call.inputs["height"]),
        str(call.inputs["crop"]),
    )
    pixels = max(_pixels(images), args[1] * args[2] * len(images.frames))
    return NodeResult((await offload(pixels, _scale, images, *args),))


async def get_image_size(call: NodeCall) -> NodeResult:
    """GetImageSize: width, height and batch size, also shown as a broadcast TEXT frame."""
    images: Images = call.inputs["image"]
    batch = len(images.frames)
    call.ctx.send_text(
        call.node_id, f"width: {images.width}, height: {images.height}\n batch size: {batch}"
    )
    return NodeResult((images.width, images.height, batch))


def _load(path: Path) -> tuple[Images, Images]:
    with Image.open(path) as opened:
        frames: list[Image.Image] = []
        masks: list[Image.Image] = []
        for raw in ImageSequence.Iterator(opened):
            frame = ImageOps.exif_transpose(raw)
            if frames and frame.size != frames[0].size:
                continue
            if "A" in frame.getbands():
                masks.append(ImageOps.invert(frame.getchannel("A")))
            else:
                masks.append(Image.new("L", (64, 64), 0))
            frames.append(frame.convert("RGB"))
    return Images(tuple(frames)), Images(tuple(masks))


async def load_image(call: NodeCall) -> NodeResult:
    """LoadImage: a file from input/ as IMAGE and MASK (1 where the picture is transparent)."""
    path = call.ctx.dirs.annotated(str(call.inputs["image"]))
    images, mask = await offload(1 << 30, _load, path)
    return NodeResult((images, mask))


def _write(images: Images, target: SaveTarget, text: dict[str, str], level: int) -> list[str]:
    target.folder.mkdir(parents=True, exist_ok=True)
    names = []
    for batch_number, frame in enumerate(images.frames):
        base = target.filename.replace("%batch_num%", str(batch_number))
        name = f"{base}_{target.counter + batch_number:05}_.png"
        (target.folder / name).write_bytes(render.encode_png(frame, text, level))
        names.append(name)
    return names


def _png_text(call: NodeCall) -> dict[str, str]:
    text = {"prompt": json.dumps(call.ctx.prompt)}
    extra = call.ctx.extra_data.get("extra_pnginfo")
    if isinstance(extra, dict):
        text.update({key: json.dumps(value) for key, value in extra.items()})
    return text


async def _save(call: NodeCall, dirs: DataDirs, prefix: str, kind: str, level: int) -> NodeResult:
    images: Images = call.inputs["images"]
    target = dirs.save_target(prefix, kind)
    names = await offload(_pixels(images), _write, images, target, _png_text(call), level)
    entries = [{"filename": name, "subfolder": target.subfolder, "type": kind} for name in names]
    return NodeResult((), {"images": entries})


async def save_image(call: NodeCall) -> NodeResult:
    """SaveImage: ``<prefix>_00001_.png`` in output/, the prompt embedded as a PNG text chunk."""
    return await _save(call, call.ctx.dirs, str(call.inputs["filename_prefix"]), "output", 4)


async def preview_image(call: NodeCall) -> NodeResult:
    """PreviewImage: ``ComfyUI_temp_<5 letters>_00001_.png`` in temp/."""
    letters = "".join(random.choice(_TEMP_LETTERS) for _ in range(5))
    return await _save(call, call.ctx.dirs, f"ComfyUI_temp_{letters}", "temp", 1)


NODE_CLASSES: dict[str, NodeClass] = {
    "CheckpointLoaderSimple": NodeClass(sampling.checkpoint_loader),
    "CLIPTextEncode": NodeClass(sampling.clip_text_encode),
    "EmptyLatentImage": NodeClass(sampling.empty_latent),
    "KSampler": NodeClass(sampling.ksampler),
    "VAEDecode": NodeClass(sampling.vae_decode),
    "VAEEncode": NodeClass(sampling.vae_encode),
    "SaveImage": NodeClass(save_image),
    "PreviewImage": NodeClass(preview_image),
    "LoadImage": NodeClass(load_image, hashes_input_file="image"),
    "EmptyImage": NodeClass(empty_image),
    "ImageInvert": NodeClass(image_invert),
    "ImageScale": NodeClass(image_scale),
    "GetImageSize": NodeClass(get_image_size, unique_id=True),
}


def input_file_digest(dirs: DataDirs, name: str) -> str:
    """LoadImage's IS_CHANGED: the file's hash, so a replaced file re-runs the node."""
    try:
        return hashlib.sha256(dirs.annotated(name).read_bytes()).hexdigest()
    except OSError:
        return "missing"
