"""Built-in templates: binding checks every parameter and yields a graph ComfyUI accepts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sakuga.domain.templates import (
    MAX_SEED,
    TemplateLimits,
    bind,
    builtin_templates,
    describe,
    get_template,
)
from sakuga.domain.validation import validate_prompt
from sakuga.errors import InvalidRequest
from sakuga.settings import Settings

SHARED = Path(__file__).resolve().parents[3] / "shared"
LIMITS = TemplateLimits()


@pytest.fixture(scope="module")
def object_info() -> dict[str, Any]:
    info: dict[str, Any] = json.loads((SHARED / "comfyui" / "object_info.json").read_text())
    return info


def seed_source() -> int:
    return 1234


def no_seed() -> int:
    raise AssertionError("seed_source must not be called when the seed is given")


def test_a_plain_prompt_binds_with_defaults_and_a_fresh_seed() -> None:
    bound = bind(get_template("txt2img"), {"prompt": "a cat"}, LIMITS, seed_source)
    assert bound.params == {
        "prompt": "a cat",
        "negative_prompt": "",
        "width": 512,
        "height": 512,
        "steps": 20,
        "cfg": 7.0,
        "seed": 1234,
        "checkpoint": "tiny-random.safetensors",
    }
    graph = bound.workflow
    assert graph["6"]["inputs"]["text"] == "a cat"
    assert graph["7"]["inputs"]["text"] == ""
    assert graph["5"]["inputs"] == {"width": 512, "height": 512, "batch_size": 1}
    assert graph["3"]["inputs"]["seed"] == 1234
    assert graph["3"]["inputs"]["sampler_name"] == "euler"
    assert graph["3"]["inputs"]["scheduler"] == "normal"
    assert graph["3"]["inputs"]["denoise"] == 1.0
    assert graph["4"]["inputs"]["ckpt_name"] == "tiny-random.safetensors"
    assert graph["9"] == {
        "class_type": "SaveImage",
        "inputs": {"images": ["8", 0], "filename_prefix": "sakuga"},
    }


def test_every_parameter_reaches_its_input() -> None:
    params = {
        "prompt": "a dog",
        "negative_prompt": "blurry",
        "width": 768,
        "height": 256,
        "steps": 8,
        "cfg": 4,
        "seed": 0,
        "checkpoint": "other.safetensors",
    }
    bound = bind(get_template("txt2img"), params, LIMITS, no_seed)
    inputs = {node_id: node["inputs"] for node_id, node in bound.workflow.items()}
    assert inputs["6"]["text"] == "a dog" and inputs["7"]["text"] == "blurry"
    assert (inputs["5"]["width"], inputs["5"]["height"]) == (768, 256)
    assert (inputs["3"]["steps"], inputs["3"]["cfg"], inputs["3"]["seed"]) == (8, 4.0, 0)
    assert inputs["4"]["ckpt_name"] == "other.safetensors"
    assert bound.params["cfg"] == 4.0 and isinstance(bound.params["cfg"], float)


def test_null_seed_means_a_fresh_one() -> None:
    bound = bind(get_template("txt2img"), {"prompt": "x", "seed": None}, LIMITS, seed_source)
    assert bound.params["seed"] == 1234


def test_binding_never_changes_the_template() -> None:
    template = get_template("txt2img")
    before = json.dumps(template.graph, sort_keys=True)
    bound = bind(template, {"prompt": "x", "width": 1024}, LIMITS, seed_source)
    bound.workflow["3"]["inputs"]["steps"] = 99
    assert json.dumps(template.graph, sort_keys=True) == before


@pytest.mark.parametrize("name", ["txt2img", "blank"])
def test_bound_templates_pass_comfyui_validation(object_info: Any, name: str) -> None:
    params = {"prompt": "a cat"} if name == "txt2img" else {}
    bound = bind(get_template(name), params, LIMITS, seed_source)
    result = validate_prompt(bound.workflow, object_info)
    assert result.ok, result.node_errors
    assert result.outputs == list(get_template(name).output_nodes)


def test_blank_template_sets_size_and_colour() -> None:
    bound = bind(get_template("blank"), {"width": 128, "color": 0xFF0000}, LIMITS, no_seed)
    assert bound.workflow["1"]["inputs"] == {
        "width": 128,
        "height": 64,
        "batch_size": 1,
        "color": 0xFF0000,
    }
    assert bound.params == {"width": 128, "height": 64, "color": 0xFF0000}


@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        (
            {"prompt": "x", "width": 4096, "height": 256},
            "params",
            "4096x256 has aspect ratio 16.0; the maximum is 4.0",
        ),
        ({"prompt": "x", "width": 256, "height": 2048}, "params", "256x2048 has aspect ratio 8.0"),
        (
            {"prompt": "x", "width": 1001},
            "params.width",
            "width 1001 is not a multiple of 8; use 1000 or 1008",
        ),
        (
            {"prompt": "x", "height": 2047},
            "params.height",
            "height 2047 is not a multiple of 8; use 2040",
        ),
        (
            {"prompt": "x", "width": 68},
            "params.width",
            "width 68 is not a multiple of 8; use 64 or 72",
        ),
        ({"prompt": "x", "width": 32}, "params.width", "width 32 is outside 64..2048"),
        (
            {"prompt": "x", "width": 2056, "height": 1024},
            "params.width",
            "width 2056 is outside 64..2048",
        ),
        (
            {"prompt": "x", "width": 5001, "height": 2048},
            "params.width",
            "width 5001 is outside 64..2048",
        ),
        (
            {"prompt": "x", "width": "512"},
            "params.width",
            "must be an integer from 64 to 2048, got str '512'",
        ),
        ({"prompt": "x", "width": 512.0}, "params.width", "must be an integer"),
        ({"prompt": "x", "width": True}, "params.width", "got bool True"),
        ({"prompt": "x", "steps": 0}, "params.steps", "steps 0 is outside 1..150"),
        ({"prompt": "x", "steps": 151}, "params.steps", "steps 151 is outside 1..150"),
        ({"prompt": "x", "steps": "20"}, "params.steps", "must be an integer"),
        ({"prompt": "x", "cfg": -0.5}, "params.cfg", "cfg -0.5 is outside 0..100"),
        ({"prompt": "x", "cfg": 100.5}, "params.cfg", "cfg 100.5 is outside 0..100"),
        ({"prompt": "x", "cfg": "7"}, "params.cfg", "must be a number from 0 to 100"),
        ({"prompt": "x", "cfg": float("nan")}, "params.cfg", "must be a number"),
        ({"prompt": "x", "seed": -1}, "params.seed", "seed -1 is outside 0..18446744073709551615"),
        (
            {"prompt": "x", "seed": MAX_SEED + 1},
            "params.seed",
            "is outside 0..18446744073709551615",
        ),
        ({"prompt": "x", "seed": 1.5}, "params.seed", "must be an integer"),
        ({}, "params.prompt", "params.prompt is required; give a string of 1 to 2000 characters"),
        ({"prompt": None}, "params.prompt", "is required"),
        ({"prompt": ""}, "params.prompt", "params.prompt is empty"),
        ({"prompt": "   "}, "params.prompt", "params.prompt is empty"),
        ({"prompt": 5}, "params.prompt", "must be a string"),
        (
            {"prompt": "x" * 2001},
            "params.prompt",
            "prompt has 2001 characters; the maximum is 2000",
        ),
        (
            {"prompt": "x", "negative_prompt": "y" * 2001},
            "params.negative_prompt",
            "2001 characters",
        ),
        ({"prompt": "x", "checkpoint": 3}, "params.checkpoint", "must be a string"),
        ({"prompt": "x", "sampler": "euler"}, "params.sampler", "unknown parameter 'sampler'"),
    ],
)
def test_bad_txt2img_parameters_are_rejected(params: Any, field: str, message: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        bind(get_template("txt2img"), params, LIMITS, seed_source)
    assert caught.value.details is not None
    assert caught.value.details["field"] == field
    assert message in caught.value.message
    assert caught.value.details["accepted"]


def test_unknown_parameter_lists_the_accepted_names() -> None:
    with pytest.raises(InvalidRequest) as caught:
        bind(get_template("txt2img"), {"prompt": "x", "size": 3}, LIMITS, seed_source)
    assert caught.value.details is not None
    assert caught.value.details["accepted"] == (
        "one of: prompt, negative_prompt, width, height, steps, cfg, seed, checkpoint"
    )


@pytest.mark.parametrize(
    "params",
    [
        {"prompt": "x", "width": 2048, "height": 512},  # exactly the maximum ratio
        {"prompt": "x", "width": 64, "height": 64},
        {"prompt": "x", "steps": 150, "cfg": 0, "seed": MAX_SEED},
        {"prompt": "x" * 2000, "negative_prompt": ""},
    ],
)
def test_values_on_the_limits_are_accepted(params: dict[str, Any]) -> None:
    bind(get_template("txt2img"), params, LIMITS, seed_source)


def test_limits_are_configurable() -> None:
    limits = TemplateLimits(max_side_px=4096, max_aspect_ratio=16.0, max_steps=10)
    bound = bind(
        get_template("txt2img"), {"prompt": "x", "width": 4096, "height": 256}, limits, seed_source
    )
    assert bound.params["width"] == 4096
    assert bound.params["steps"] == 10  # the default follows a lower maximum
    with pytest.raises(InvalidRequest, match=r"steps 11 is outside 1\.\.10"):
        bind(get_template("txt2img"), {"prompt": "x", "steps": 11}, limits, seed_source)


def test_limits_come_from_settings() -> None:
    settings = Settings(max_side_px=1024, max_prompt_chars=10, max_steps=5, min_side_px=128)
    limits = TemplateLimits.from_settings(settings)
    assert limits == TemplateLimits(128, 1024, 4.0, 10, 5)


def test_params_must_be_an_object() -> None:
    with pytest.raises(InvalidRequest) as caught:
        bind(get_template("blank"), ["x"], LIMITS, seed_source)  # type: ignore[arg-type]
    assert caught.value.details is not None and caught.value.details["field"] == "params"


def test_unknown_template_names_the_known_ones() -> None:
    with pytest.raises(InvalidRequest) as caught:
        get_template("img2img")
    assert caught.value.details == {
        "field": "template",
        "value": "img2img",
        "accepted": "one of: txt2img, blank",
    }


def test_builtin_templates_are_txt2img_and_blank() -> None:
    templates = builtin_templates()
    assert list(templates) == ["txt2img", "blank"]
    assert templates["txt2img"].output_nodes == ("9",)
    assert templates["blank"].output_nodes == ("3",)


def test_describe_is_json_with_effective_bounds() -> None:
    described = describe(get_template("txt2img"), TemplateLimits(max_side_px=1024))
    json.dumps(described)
    assert described["name"] == "txt2img" and described["description"]
    params = {p["name"]: p for p in described["parameters"]}
    assert list(params) == [
        "prompt",
        "negative_prompt",
        "width",
        "height",
        "steps",
        "cfg",
        "seed",
        "checkpoint",
    ]
    assert params["prompt"]["required"] is True and params["prompt"]["type"] == "string"
    assert params["prompt"]["max_length"] == 2000
    assert params["width"] | {"description": ""} == {
        "name": "width",
        "type": "integer",
        "required": False,
        "default": 512,
        "minimum": 64,
        "maximum": 1024,
        "multiple_of": 8,
        "description": "",
    }
    assert params["steps"]["maximum"] == 150
    assert (params["cfg"]["type"], params["cfg"]["minimum"], params["cfg"]["maximum"]) == (
        "number",
        0,
        100,
    )
    assert params["seed"]["default"] is None and params["seed"]["maximum"] == MAX_SEED
    assert all(p["description"] for p in described["parameters"])
