"""Built-in templates: API-format graphs with named, typed parameters, and their binding.

``bind`` checks every parameter against ``TemplateLimits`` and raises ``InvalidRequest``
naming the field (``params.width``), the value and what would be accepted.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from sakuga.errors import InvalidRequest

if TYPE_CHECKING:
    from sakuga.settings import Settings

ParamType = Literal["string", "integer", "number"]
Limit = Literal["side", "steps", "prompt"]
SeedSource = Callable[[], int]

MAX_SEED = 2**64 - 1  # KSampler's own maximum
SIDE_MULTIPLE = 8  # latent images are 1/8 of the pixel size


@dataclass(frozen=True)
class Parameter:
    """One template input; ``targets`` are the (node id, input name) pairs it sets."""

    name: str
    type: ParamType
    description: str
    targets: tuple[tuple[str, str], ...]
    default: Any = None
    required: bool = False
    minimum: float | None = None
    maximum: float | None = None
    limit: Limit | None = None  # which TemplateLimits bound applies, overriding min/max
    seeded: bool = False  # absent -> a fresh value from the seed source (DECISIONS 14)


@dataclass(frozen=True)
class Template:
    """A named API-format graph; ``graph`` is never mutated (``bind`` copies it)."""

    name: str
    description: str
    parameters: tuple[Parameter, ...]
    graph: dict[str, Any]
    output_nodes: tuple[str, ...]
    # Whole-job deadline on a backend; None uses the server's job_timeout_s.
    timeout_s: float | None = None


@dataclass(frozen=True)
class TemplateLimits:
    """Bounds on template parameters; the defaults match ``Settings``."""

    min_side_px: int = 64
    max_side_px: int = 2048
    max_aspect_ratio: float = 4.0
    max_prompt_chars: int = 2000
    max_steps: int = 150

    @classmethod
    def from_settings(cls, settings: Settings) -> TemplateLimits:
        """Read the same-named fields of ``Settings``."""
        return cls(
            min_side_px=settings.min_side_px,
            max_side_px=settings.max_side_px,
            max_aspect_ratio=settings.max_aspect_ratio,
            max_prompt_chars=settings.max_prompt_chars,
            max_steps=settings.max_steps,
        )


@dataclass(frozen=True)
class BoundTemplate:
    """A template with its parameters applied: the workflow to submit and the values used."""

    workflow: dict[str, Any]
    params: dict[str, Any]


def builtin_templates() -> dict[str, Template]:
    """The templates every sakuga serves, by name (a new dict of the same frozen templates)."""
    return dict(_builtin())


@functools.cache
def _builtin() -> dict[str, Template]:
    # Built once: a worker asks for its job's template deadline on every job.
    return {t.name: t for t in (_txt2img(), _blank())}


def get_template(name: str) -> Template:
    """The built-in template ``name``; raises ``InvalidRequest`` naming the known ones."""
    templates = builtin_templates()
    if name not in templates:
        raise InvalidRequest("template", name, "one of: " + ", ".join(templates))
    return templates[name]


def bind(
    template: Template,
    params: Mapping[str, Any],
    limits: TemplateLimits,
    seed_source: SeedSource,
) -> BoundTemplate:
    """Check ``params``, fill defaults and a fresh seed, and return the workflow to run.

    ``None`` counts as absent. Raises ``InvalidRequest`` with field ``params.<name>``.
    """
    if not isinstance(params, Mapping):
        raise InvalidRequest("params", params, "an object mapping parameter names to values")
    known = [p.name for p in template.parameters]
    for name, value in params.items():
        if name not in known:
            accepted = "one of: " + ", ".join(known)
            raise InvalidRequest(
                f"params.{name}",
                value,
                accepted,
                f"unknown parameter {name!r} for template {template.name}; {accepted}",
            )
    values: dict[str, Any] = {}
    for param in template.parameters:
        values[param.name] = _typed_value(param, params.get(param.name), limits)
    _check_strings(template, values, limits)
    _check_sides(template, values, limits)
    for param in template.parameters:
        if param.limit != "side" and isinstance(values[param.name], int | float):
            _check_range(param, values[param.name], _bounds(param, limits))
    for param in template.parameters:
        if param.seeded and values[param.name] is None:
            values[param.name] = seed_source()
    workflow = copy.deepcopy(template.graph)
    for param in template.parameters:
        if values[param.name] is not None:
            for node_id, input_name in param.targets:
                workflow[node_id]["inputs"][input_name] = values[param.name]
    return BoundTemplate(workflow=workflow, params=values)


def describe(template: Template, limits: TemplateLimits | None = None) -> dict[str, Any]:
    """A JSON-able description of ``template`` for ``GET /api/v2/templates``."""
    limits = limits or TemplateLimits()
    parameters = []
    for param in template.parameters:
        low, high = _bounds(param, limits)
        entry: dict[str, Any] = {
            "name": param.name,
            "type": param.type,
            "required": param.required,
            "default": _default(param, limits),
            "minimum": low,
            "maximum": high,
            "description": param.description,
        }
        if param.limit == "prompt":
            entry["max_length"] = limits.max_prompt_chars
        if param.limit == "side":
            entry["multiple_of"] = SIDE_MULTIPLE
        parameters.append(entry)
    return {
        "name": template.name,
        "description": template.description,
        "parameters": parameters,
        "timeout_s": template.timeout_s,
    }


# -- checks ------------------------------------------------------------------------------


def _bounds(param: Parameter, limits: TemplateLimits) -> tuple[float | None, float | None]:
    if param.limit == "side":
        return limits.min_side_px, limits.max_side_px
    if param.limit == "steps":
        return 1, limits.max_steps
    return param.minimum, param.maximum


def _default(param: Parameter, limits: TemplateLimits) -> Any:
    """The default, pulled inside the configured bounds (a lower max_steps lowers it too)."""
    low, high = _bounds(param, limits)
    value = param.default
    if isinstance(value, int | float) and low is not None and high is not None:
        value = type(value)(min(max(value, low), high))
    return value


def _accepted(param: Parameter, limits: TemplateLimits) -> str:
    kind = {"string": "a string", "integer": "an integer", "number": "a number"}[param.type]
    low, high = _bounds(param, limits)
    if low is not None and high is not None:
        return f"{kind} from {_num(low)} to {_num(high)}"
    if param.limit == "prompt":
        return f"{kind} of {int(param.required)} to {limits.max_prompt_chars} characters"
    return kind


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _typed_value(param: Parameter, value: Any, limits: TemplateLimits) -> Any:
    """The value with its type checked strictly (no bools as numbers, no numeric strings)."""
    field = f"params.{param.name}"
    if value is None:
        if param.required:
            accepted = _accepted(param, limits)
            raise InvalidRequest(field, None, accepted, f"{field} is required; give {accepted}")
        return _default(param, limits)
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    ok = {
        "string": isinstance(value, str),
        "integer": is_number and isinstance(value, int),
        "number": is_number and math.isfinite(value),
    }[param.type]
    if not ok:
        accepted = _accepted(param, limits)
        message = f"{field} must be {accepted}, got {type(value).__name__} {value!r}"
        raise InvalidRequest(field, value, accepted, message)
    return float(value) if param.type == "number" else value


def _check_strings(template: Template, values: dict[str, Any], limits: TemplateLimits) -> None:
    for param in template.parameters:
        value = values[param.name]
        if param.limit != "prompt" or not isinstance(value, str):
            continue
        field, accepted = f"params.{param.name}", _accepted(param, limits)
        if param.required and not value.strip():
            raise InvalidRequest(field, value, accepted, f"{field} is empty; give {accepted}")
        if len(value) > limits.max_prompt_chars:
            message = (
                f"{param.name} has {len(value)} characters;"
                f" the maximum is {limits.max_prompt_chars}"
            )
            raise InvalidRequest(field, value, accepted, message)


def _check_sides(template: Template, values: dict[str, Any], limits: TemplateLimits) -> None:
    """Sizes: at least the minimum, multiples of 8, a sane aspect ratio, at most the maximum."""
    sides = [p for p in template.parameters if p.limit == "side"]
    bounds = (limits.min_side_px, limits.max_side_px)
    for param in sides:
        value = values[param.name]
        if value < limits.min_side_px:
            _check_range(param, value, bounds)
        if value % SIDE_MULTIPLE:
            lower = value - value % SIDE_MULTIPLE
            near = [n for n in (lower, lower + SIDE_MULTIPLE) if bounds[0] <= n <= bounds[1]]
            if not near:
                _check_range(param, value, bounds)
            message = (
                f"{param.name} {value} is not a multiple of {SIDE_MULTIPLE};"
                f" use {' or '.join(map(str, near))}"
            )
            accepted = f"a multiple of {SIDE_MULTIPLE} from {bounds[0]} to {bounds[1]}"
            raise InvalidRequest(f"params.{param.name}", value, accepted, message)
    if len(sides) == 2:
        width, height = (values[p.name] for p in sides)
        ratio = max(width, height) / max(min(width, height), 1)
        if ratio > limits.max_aspect_ratio:
            size = f"{width}x{height}"
            message = (
                f"{size} has aspect ratio {round(ratio, 2)};"
                f" the maximum is {limits.max_aspect_ratio}"
            )
            accepted = f"a long side at most {limits.max_aspect_ratio} times the short side"
            raise InvalidRequest("params", size, accepted, message)
    for param in sides:
        _check_range(param, values[param.name], bounds)


def _check_range(param: Parameter, value: float, bounds: tuple[float | None, float | None]) -> None:
    low, high = bounds
    if (low is None or value >= low) and (high is None or value <= high):
        return
    kind = "an integer" if param.type == "integer" else "a number"
    if low is not None and high is not None:
        accepted = f"{kind} from {_num(low)} to {_num(high)}"
        message = f"{param.name} {value} is outside {_num(low)}..{_num(high)}"
    elif low is not None:
        accepted = f"{kind} of at least {_num(low)}"
        message = f"{param.name} {value} is below the minimum of {_num(low)}"
    else:
        accepted = f"{kind} of at most {_num(high or 0)}"
        message = f"{param.name} {value} is above the maximum of {_num(high or 0)}"
    raise InvalidRequest(f"params.{param.name}", value, accepted, message)


# -- the built-in graphs -----------------------------------------------------------------


def _txt2img() -> Template:
    # Node ids follow ComfyUI's default text-to-image workflow, as in the recordings.
    graph: dict[str, Any] = {
        "4": {
            "class_type": "CheckpointLoaderSimple",
            "inputs": {"ckpt_name": "tiny-random.safetensors"},
        },
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
        "5": {
            "class_type": "EmptyLatentImage",
            "inputs": {"width": 512, "height": 512, "batch_size": 1},
        },
        "3": {
            "class_type": "KSampler",
            "inputs": {
                "seed": 0,
                "steps": 20,
                "cfg": 7.0,
                "sampler_name": "euler",
                "scheduler": "normal",
                "denoise": 1.0,
                "model": ["4", 0],
                "positive": ["6", 0],
                "negative": ["7", 0],
                "latent_image": ["5", 0],
            },
        },
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {
            "class_type": "SaveImage",
            "inputs": {"images": ["8", 0], "filename_prefix": "sakuga"},
        },
    }
    parameters = (
        Parameter(
            "prompt", "string", "What to draw.", (("6", "text"),), None, True, limit="prompt"
        ),
        Parameter(
            "negative_prompt", "string", "What to avoid.", (("7", "text"),), "", limit="prompt"
        ),
        Parameter(
            "width", "integer", "Image width in pixels.", (("5", "width"),), 512, limit="side"
        ),
        Parameter(
            "height", "integer", "Image height in pixels.", (("5", "height"),), 512, limit="side"
        ),
        Parameter("steps", "integer", "Sampling steps.", (("3", "steps"),), 20, limit="steps"),
        Parameter("cfg", "number", "Prompt guidance scale.", (("3", "cfg"),), 7.0, False, 0, 100),
        Parameter(
            "seed",
            "integer",
            "Noise seed; a fresh random one when absent (returned with the job).",
            (("3", "seed"),),
            None,
            False,
            0,
            MAX_SEED,
            seeded=True,
        ),
        Parameter(
            "checkpoint",
            "string",
            "Checkpoint file name on the backend.",
            (("4", "ckpt_name"),),
            "tiny-random.safetensors",
        ),
    )
    return Template(
        "txt2img",
        "Text to image with a Stable Diffusion checkpoint.",
        parameters,
        graph,
        ("9",),
        timeout_s=1800.0,
    )


def _blank() -> Template:
    graph: dict[str, Any] = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0},
        },
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {
            "class_type": "SaveImage",
            "inputs": {"images": ["2", 0], "filename_prefix": "sakuga"},
        },
    }
    parameters = (
        Parameter(
            "width", "integer", "Image width in pixels.", (("1", "width"),), 64, limit="side"
        ),
        Parameter(
            "height", "integer", "Image height in pixels.", (("1", "height"),), 64, limit="side"
        ),
        Parameter(
            "color", "integer", "Fill colour as 0xRRGGBB.", (("1", "color"),), 0, False, 0, 0xFFFFFF
        ),
    )
    return Template(
        "blank",
        "A plain inverted colour image; no model, fast.",
        parameters,
        graph,
        ("3",),
        timeout_s=60.0,
    )
