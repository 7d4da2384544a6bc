"""Procedural pictures are deterministic: prompt -> palette, seed -> composition, exact sizes."""

from __future__ import annotations

import hashlib
import io

import pytest
from PIL import Image, ImageStat

from sakuga.engine import render
from sakuga.engine.values import Images, Latent, Sampling

PINNED = "f009ba592684c5c9"  # blake2b-64 of compose(palette("a red cube"), 42, 32, 32)


def sampling(text: str = "a red cube", seed: int = 1, denoise: float = 1.0) -> Sampling:
    return Sampling(text, "blurry", seed, 4, 7.0, "euler", "normal", denoise, "tiny.safetensors")


def png(picture: Image.Image) -> bytes:
    return render.encode_png(picture, {"prompt": "{}"}, 4)


def test_same_inputs_give_identical_png_bytes() -> None:
    one = render.compose(render.palette("a red cube"), 42, 96, 64)
    two = render.compose(render.palette("a red cube"), 42, 96, 64)
    assert png(one) == png(two)


def test_rendering_is_pinned_to_a_known_digest() -> None:
    """Guards determinism across processes and versions: this digest must never drift."""
    picture = render.compose(render.palette("a red cube"), 42, 32, 32)
    digest = hashlib.blake2b(picture.tobytes(), digest_size=8).hexdigest()
    assert digest == PINNED


def test_different_prompt_shifts_the_palette() -> None:
    assert render.palette("a red cube") != render.palette("a blue forest")
    first = render.compose(render.palette("a red cube"), 42, 64, 64)
    second = render.compose(render.palette("a blue forest"), 42, 64, 64)
    assert first.tobytes() != second.tobytes()


def test_different_seed_keeps_the_palette_and_changes_the_composition() -> None:
    colours = render.palette("a red cube")
    first = render.compose(colours, 1, 64, 64)
    second = render.compose(colours, 2, 64, 64)
    assert first.tobytes() != second.tobytes()
    # Both pictures are made from the same colours: their corners mix palette entries 0 and 1.
    assert _near(first.getpixel((0, 0)), colours) and _near(second.getpixel((0, 0)), colours)


def _near(pixel: object, colours: tuple[tuple[int, int, int], ...]) -> bool:
    assert isinstance(pixel, tuple)
    lo = [min(c[i] for c in colours[:2]) - 2 for i in range(3)]
    hi = [max(c[i] for c in colours[:2]) + 2 for i in range(3)]
    return all(lo[i] <= pixel[i] <= hi[i] for i in range(3))


@pytest.mark.parametrize(("width", "height", "batch"), [(64, 64, 1), (96, 48, 3), (8, 200, 2)])
def test_sizes_and_batch_counts_are_exact(width: int, height: int, batch: int) -> None:
    images = render.render_latent(Latent(width, height, batch, sampling=sampling()))
    assert len(images.frames) == batch
    assert {frame.size for frame in images.frames} == {(width, height)}
    assert images.frames[0].tobytes() != images.frames[-1].tobytes() or batch == 1


def test_empty_latent_decodes_to_a_flat_picture() -> None:
    images = render.render_latent(Latent(16, 8, 2))
    assert images.frames[0].getcolors() == [(128, render.EMPTY_LATENT_COLOR)]


def test_partial_denoise_blends_with_the_source_picture() -> None:
    source = Images((Image.new("RGB", (32, 32), (0, 0, 0)),))
    full = render.render_latent(Latent(32, 32, 1, source=source, sampling=sampling()))
    half = render.render_latent(Latent(32, 32, 1, source=source, sampling=sampling(denoise=0.5)))
    assert full.frames[0].tobytes() != half.frames[0].tobytes()
    brightness = [ImageStat.Stat(f.frames[0].convert("L")).mean[0] for f in (half, full)]
    assert brightness[0] < brightness[1]


def test_previews_are_jpeg_scaled_to_the_preview_size() -> None:
    data = render.preview_jpeg(Latent(64, 32, 1), sampling(), 2, 4, 512)
    assert data[:2] == b"\xff\xd8"
    with Image.open(io.BytesIO(data)) as picture:
        assert picture.size == (512, 256)
