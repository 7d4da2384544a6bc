"""Deterministic procedural pictures: the engine's stand-in for diffusion (DECISIONS 18).

Everything derives from blake2b digests of the inputs, never from ``hash()`` or global random
state, so the same inputs give identical pixels (and PNG bytes) in every process. The prompt
text picks the palette; the seed picks the composition; sizes and batch counts are exact.
"""

from __future__ import annotations

import colorsys
import hashlib
import io
import random
from collections.abc import Mapping

from PIL import Image, ImageDraw, ImageOps, PngImagePlugin

from sakuga.engine.values import Images, Latent, Sampling

RGB = tuple[int, int, int]
EMPTY_LATENT_COLOR: RGB = (124, 117, 108)  # what decoding an all-zero latent looks like
_PREVIEW_BASE_PX = 64


def _digest(*parts: object) -> bytes:
    text = "\x1f".join(str(part) for part in parts)
    return hashlib.blake2b(text.encode("utf-8"), digest_size=32).digest()


def palette(text: str) -> tuple[RGB, ...]:
    """Five colours derived from the prompt text: related hues, varied lightness."""
    d = _digest("palette", text)
    base_hue = int.from_bytes(d[0:2], "big") / 65536
    spread = 0.08 + d[2] / 255 * 0.3
    colours = []
    for k in range(5):
        hue = (base_hue + k * spread + d[3 + k] / 255 * 0.05) % 1.0
        sat = 0.35 + d[8 + k] / 255 * 0.6
        val = 0.3 + d[13 + k] / 255 * 0.65
        r, g, b = colorsys.hsv_to_rgb(hue, sat, val)
        colours.append((round(r * 255), round(g * 255), round(b * 255)))
    return tuple(colours)


def _rng(seed: int, index: int) -> random.Random:
    # random.Random seeded with an int and used only through random() is stable across
    # processes and Python versions.
    return random.Random(int.from_bytes(_digest("composition", seed, index), "big"))


def compose(colours: tuple[RGB, ...], seed: int, width: int, height: int) -> Image.Image:
    """A ``width`` x ``height`` RGB picture: a gradient sky and shapes placed by the seed."""
    rnd = _rng(seed, 0)
    angle = rnd.random() * 360
    ramp = Image.linear_gradient("L").rotate(angle, resample=Image.Resampling.BILINEAR)
    mask = ramp.crop((32, 32, 224, 224)).resize((width, height), Image.Resampling.BILINEAR)
    picture = Image.composite(
        Image.new("RGB", (width, height), colours[1]),
        Image.new("RGB", (width, height), colours[0]),
        mask,
    )
    overlay = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    side = min(width, height)
    for _ in range(3 + int(rnd.random() * 6)):
        cx, cy = rnd.random() * width, rnd.random() * height
        radius = max(1.0, side * (0.08 + rnd.random() * 0.3))
        colour = colours[2 + int(rnd.random() * 3)]
        fill = (*colour, 150 + int(rnd.random() * 105))
        box = (cx - radius, cy - radius, cx + radius, cy + radius)
        kind = rnd.random()
        if kind < 0.45:
            draw.ellipse(box, fill=fill)
        elif kind < 0.75:
            draw.rectangle(box, fill=fill)
        else:
            turn = rnd.random() * 360
            draw.regular_polygon((cx, cy, radius), 3, rotation=turn, fill=fill)
    picture.paste(overlay, (0, 0), overlay)
    return picture


def render_latent(latent: Latent) -> Images:
    """Decode a LATENT into its pictures (VAEDecode)."""
    size = (latent.width, latent.height)
    if latent.sampling is None:
        if isinstance(latent.source, Latent):
            return render_latent(latent.source)
        if isinstance(latent.source, Images):
            return latent.source
        return Images(
            tuple(Image.new("RGB", size, EMPTY_LATENT_COLOR) for _ in range(latent.batch_size))
        )
    sampling = latent.sampling
    colours = palette(sampling.positive)
    base = _source_frames(latent) if sampling.denoise < 1.0 else None
    frames = []
    for index in range(latent.batch_size):
        picture = compose(colours, sampling.seed + index, *size)
        if base is not None:
            start = base[index % len(base)].resize(size, Image.Resampling.BILINEAR)
            picture = Image.blend(start, picture, max(0.0, sampling.denoise))
        frames.append(picture)
    return Images(tuple(frames))


def _source_frames(latent: Latent) -> tuple[Image.Image, ...] | None:
    if isinstance(latent.source, Images):
        return latent.source.frames
    if isinstance(latent.source, Latent):
        return render_latent(latent.source).frames
    return None


def preview_jpeg(latent: Latent, sampling: Sampling, step: int, steps: int, size: int) -> bytes:
    """A sampler-step preview: noise fading into the final picture, scaled to fit ``size``."""
    small = ImageOps.contain(Image.new("L", (latent.width, latent.height)), (_PREVIEW_BASE_PX,) * 2)
    width, height = small.size
    target = compose(palette(sampling.positive), sampling.seed, width, height)
    noise_bytes = hashlib.shake_256(_digest("noise", sampling.seed)).digest(width * height * 3)
    noise = Image.frombytes("RGB", (width, height), noise_bytes)
    picture = Image.blend(noise, target, step / steps if steps else 1.0)
    # ComfyUI scales previews to the preview size, enlarging small ones too.
    picture = ImageOps.contain(picture, (size, size), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def encode_png(picture: Image.Image, text: Mapping[str, str], compress_level: int) -> bytes:
    """PNG bytes with ``text`` as tEXt chunks (ComfyUI embeds the prompt this way)."""
    info = PngImagePlugin.PngInfo()
    for key, value in text.items():
        info.add_text(key, value)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", pnginfo=info, compress_level=compress_level)
    return buffer.getvalue()
