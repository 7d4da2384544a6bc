"""Model nodes: checkpoint loader, text encoder, latents, the sampler and the VAE."""

from __future__ import annotations

import asyncio
import os

from sakuga.engine import render
from sakuga.engine.context import NodeCall, NodeResult, OutOfMemoryError, offload
from sakuga.engine.values import Clip, Conditioning, Images, Latent, Model, Sampling, Vae

OOM_MESSAGE = (
    "Allocation on device 0 would exceed allowed memory. (out of memory)\n"
    "Currently allocated     : 7.61 GiB\n"
    "Requested               : 1.50 GiB\n"
    "Device limit            : 8.00 GiB\n"
    "Free (according to CUDA): 0 bytes\n"
    "PyTorch limit (set by user-supplied memory fraction)\n"
    "                        : 17179869184.00 GiB\n"
    "This error means you ran out of memory on your GPU.\n\n"
    "TIPS: If the workflow worked before you might have accidentally set the batch_size "
    "to a large number.\n(sakuga engine: injected by the oom fault)"
)


async def checkpoint_loader(call: NodeCall) -> NodeResult:
    """CheckpointLoaderSimple: MODEL, CLIP and VAE records named after the checkpoint."""
    name = str(call.inputs["ckpt_name"])
    if name not in call.ctx.options.checkpoints:
        raise FileNotFoundError(
            f"Model in folder 'checkpoints' with filename '{name}' not found; "
            f"available: {list(call.ctx.options.checkpoints)}"
        )
    return NodeResult((Model(name), Clip(name), Vae(name)))


async def clip_text_encode(call: NodeCall) -> NodeResult:
    """CLIPTextEncode: the text itself is the conditioning."""
    clip: Clip = call.inputs["clip"]
    return NodeResult((Conditioning(str(call.inputs["text"]), clip.ckpt_name),))


async def empty_latent(call: NodeCall) -> NodeResult:
    """EmptyLatentImage: sizes round down to multiples of 8, as a real VAE's latents do."""
    width, height = int(call.inputs["width"]) // 8 * 8, int(call.inputs["height"]) // 8 * 8
    return NodeResult((Latent(width, height, int(call.inputs["batch_size"])),))


async def ksampler(call: NodeCall) -> NodeResult:
    """KSampler: ``steps`` steps of ``step_s`` each, with progress, previews and faults."""
    ctx, inputs = call.ctx, call.inputs
    latent: Latent = inputs["latent_image"]
    model: Model = inputs["model"]
    positive: Conditioning = inputs["positive"]
    negative: Conditioning = inputs["negative"]
    sampling = Sampling(
        positive=positive.text,
        negative=negative.text,
        seed=int(inputs["seed"]),
        steps=int(inputs["steps"]),
        cfg=float(inputs["cfg"]),
        sampler_name=str(inputs["sampler_name"]),
        scheduler=str(inputs["scheduler"]),
        denoise=float(inputs["denoise"]),
        ckpt_name=model.ckpt_name,
    )
    faults = ctx.faults
    if faults.oom:
        raise OutOfMemoryError(OOM_MESSAGE)
    for step in range(1, sampling.steps + 1):
        if faults.hang:
            await ctx.wait_interrupt()
        await ctx.wait_step()
        if faults.crash_at_step is not None and step >= faults.crash_at_step:
            os._exit(1)  # a hard crash on purpose: no cleanup, like a killed GPU server
        preview = None
        if ctx.previews_enabled:
            preview = await asyncio.to_thread(
                render.preview_jpeg,
                latent,
                sampling,
                step,
                sampling.steps,
                ctx.options.preview_size,
            )
        await ctx.progress(call.node_id, step, sampling.steps, preview)
    out = Latent(latent.width, latent.height, latent.batch_size, source=latent, sampling=sampling)
    return NodeResult((out,))


async def vae_decode(call: NodeCall) -> NodeResult:
    """VAEDecode: draw the latent's pictures."""
    latent: Latent = call.inputs["samples"]
    pixels = latent.width * latent.height * latent.batch_size
    return NodeResult((await offload(pixels, render.render_latent, latent),))


def _encode(images: Images) -> Latent:
    width, height = images.width // 8 * 8, images.height // 8 * 8
    frames = tuple(frame.crop((0, 0, width, height)) for frame in images.frames)
    return Latent(width, height, len(frames), source=Images(frames))


async def vae_encode(call: NodeCall) -> NodeResult:
    """VAEEncode: pixels cropped to multiples of 8 become the latent's starting picture."""
    images: Images = call.inputs["pixels"]
    if images.width < 8 or images.height < 8:
        raise ValueError(f"image {images.width}x{images.height} is too small to encode; need 8x8")
    pixels = images.width * images.height * len(images.frames)
    return NodeResult((await offload(pixels, _encode, images),))
