"""The values that flow between nodes: small records carrying what the renderer needs.

ComfyUI passes tensors; the engine passes these. IMAGE and MASK are batches of Pillow images
(never mutated once built), LATENT remembers how to draw itself, and MODEL / CLIP / VAE /
CONDITIONING only carry names and text.
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image


@dataclass(frozen=True)
class Model:
    """MODEL: the checkpoint a sampler "uses"."""

    ckpt_name: str


@dataclass(frozen=True)
class Clip:
    """CLIP: the text encoder of a checkpoint."""

    ckpt_name: str


@dataclass(frozen=True)
class Vae:
    """VAE: the decoder of a checkpoint."""

    ckpt_name: str


@dataclass(frozen=True)
class Conditioning:
    """CONDITIONING: the encoded prompt text."""

    text: str
    ckpt_name: str


@dataclass(frozen=True)
class Images:
    """IMAGE (RGB) or MASK (L): a batch of same-sized pictures."""

    frames: tuple[Image.Image, ...]

    @property
    def width(self) -> int:
        """Width of every frame, in pixels."""
        return self.frames[0].width

    @property
    def height(self) -> int:
        """Height of every frame, in pixels."""
        return self.frames[0].height

    def __repr__(self) -> str:
        mode = self.frames[0].mode
        return f"Images(batch={len(self.frames)}, {self.width}x{self.height}, mode={mode})"


@dataclass(frozen=True)
class Sampling:
    """One sampler pass: the palette comes from ``positive``, the composition from ``seed``."""

    positive: str
    negative: str
    seed: int
    steps: int
    cfg: float
    sampler_name: str
    scheduler: str
    denoise: float
    ckpt_name: str


@dataclass(frozen=True)
class Latent:
    """LATENT: a batch of ``width`` x ``height`` pixels (multiples of 8) and how to draw it.

    ``source`` is what a sampler starts from (pixels from VAEEncode or an earlier latent);
    ``sampling`` is the last sampler pass, or None for an empty latent.
    """

    width: int
    height: int
    batch_size: int
    source: Images | Latent | None = None
    sampling: Sampling | None = None
