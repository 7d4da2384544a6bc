"""Workflow validation answers like ComfyUI 0.8.0: replayed recordings, then a table of cases."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sakuga.domain.validation import ValidationResult, check_prompt, types_match, validate_prompt
from sakuga.errors import WorkflowInvalid

SHARED = Path(__file__).resolve().parents[3] / "shared"
RECORDED = json.loads((SHARED / "comfyui" / "http" / "validation_errors.json").read_text())
# Transport-level cases: not a validation question (an unparsable body is the HTTP layer's).
NOT_VALIDATION = {"body_not_json"}
# Server files the recordings depend on: LoadImage looked for these in its input folder.
MISSING_FILES = {("input", "does-not-exist.png")}


@pytest.fixture(scope="module")
def object_info() -> dict[str, Any]:
    info: dict[str, Any] = json.loads((SHARED / "comfyui" / "object_info.json").read_text())
    return info


def recorded_file_exists(folder: str, filename: str) -> bool:
    return (folder, filename) not in MISSING_FILES


def node(class_type: str, **inputs: Any) -> dict[str, Any]:
    return {"class_type": class_type, "inputs": inputs}


def empty_image(**overrides: Any) -> dict[str, Any]:
    return node(
        "EmptyImage", **{"width": 64, "height": 64, "batch_size": 1, "color": 0, **overrides}
    )


def save(source: str, slot: int = 0) -> dict[str, Any]:
    return node("SaveImage", images=[source, slot], filename_prefix="x")


def saved(image: dict[str, Any]) -> dict[str, Any]:
    """``image`` (node 1) feeding a SaveImage (node 9)."""
    return {"1": image, "9": save("1")}


def only_error(result: ValidationResult, node_id: str) -> dict[str, Any]:
    errors = result.node_errors[node_id]["errors"]
    assert len(errors) == 1, errors
    error: dict[str, Any] = errors[0]
    return error


# -- replay of every recorded rejection ---------------------------------------------------


@pytest.mark.parametrize(
    "case", [c for c in RECORDED if c["case"] not in NOT_VALIDATION], ids=lambda c: c["case"]
)
def test_recorded_case_answers_like_comfyui(case: dict[str, Any], object_info: Any) -> None:
    request, body = case["request"], case["body"]
    result = validate_prompt(
        request.get("prompt"),
        object_info,
        request.get("partial_execution_targets"),
        recorded_file_exists,
    )
    assert result.error == body.get("error")
    assert result.comfy_ok is (case["status"] == 200)
    assert result.node_errors.keys() == body["node_errors"].keys()
    for node_id, want in body["node_errors"].items():
        got = result.node_errors[node_id]
        assert got["class_type"] == want["class_type"]
        assert got["dependent_outputs"] == want["dependent_outputs"]
        assert len(got["errors"]) == len(want["errors"])
        for ours, theirs in zip(got["errors"], want["errors"], strict=True):
            assert (ours["type"], ours["message"], ours["details"]) == (
                theirs["type"],
                theirs["message"],
                theirs["details"],
            )
            # Our traceback cannot be ComfyUI's; every other recorded key must match.
            for key, value in theirs["extra_info"].items():
                if key != "traceback":
                    assert ours["extra_info"][key] == value, key


def test_recorded_partial_failure_is_comfy_ok_but_not_sakuga_ok(object_info: Any) -> None:
    """ComfyUI would run the valid outputs; sakuga rejects the whole graph (DECISIONS 2)."""
    case = next(c for c in RECORDED if c["case"] == "partial_valid_one_output_invalid")
    result = validate_prompt(case["request"]["prompt"], object_info)
    assert result.comfy_ok and not result.ok
    assert result.outputs == ["3", "5"]


# -- top level ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "kind", "message", "details"),
    [
        (None, "no_prompt", "No prompt provided", "No prompt provided"),
        ([], "invalid_prompt", "Cannot execute because the prompt is not an object", "array"),
        ("text", "invalid_prompt", "Cannot execute because the prompt is not an object", "string"),
        ({"3": "SaveImage"}, "invalid_prompt", "missing the class_type", "Node ID '#3'"),
        ({"3": {"class_type": 5}}, "invalid_prompt", "node 5 does not exist", "Node ID '#3'"),
        ({}, "prompt_no_outputs", "Prompt has no outputs", ""),
        ({"1": empty_image()}, "prompt_no_outputs", "Prompt has no outputs", ""),
    ],
)
def test_top_level_problems_have_no_node_errors(
    object_info: Any, prompt: object, kind: str, message: str, details: str
) -> None:
    result = validate_prompt(prompt, object_info)
    assert result.error is not None
    assert result.error["type"] == kind
    assert message in result.error["message"]
    assert details in result.error["details"]
    assert result.node_errors == {} and not result.ok and not result.comfy_ok


def test_unknown_class_is_found_even_on_an_unreachable_node(object_info: Any) -> None:
    prompt = {**saved(empty_image()), "5": node("NoSuchNode")}
    result = validate_prompt(prompt, object_info)
    assert result.error is not None
    assert result.error["message"] == "Cannot execute because node NoSuchNode does not exist."


# -- literal inputs ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "kind", "details"),
    [
        (empty_image(width="64"), None, None),  # int("64") is accepted, like ComfyUI
        (empty_image(width=64.9), None, None),  # int() truncates
        (empty_image(width={"__value__": 64}), None, None),
        (empty_image(width="wide"), "invalid_input_type", "invalid literal for int()"),
        (empty_image(width=None), "invalid_input_type", "width, None, int() argument"),
        (empty_image(width=0), "value_smaller_than_min", "width"),
        (empty_image(color=16777216), "value_bigger_than_max", "color"),
        (node("EmptyImage", width=64, height=64, batch_size=1), "required_input_missing", "color"),
        (empty_image(unknown_extra=1), None, None),  # undeclared inputs are ignored
        (
            node(
                "ImageScale",
                image=["2", 0],
                upscale_method="magic",
                width=8,
                height=8,
                crop="center",
            ),
            "value_not_in_list",
            "upscale_method: 'magic' not in ['nearest-exact', 'bilinear', 'area', 'bicubic',",
        ),
    ],
)
def test_literal_inputs(object_info: Any, image: Any, kind: str | None, details: str) -> None:
    prompt = {**saved(image), "2": empty_image()}
    result = validate_prompt(prompt, object_info)
    if kind is None:
        assert result.ok, result.node_errors
        return
    error = only_error(result, "1")
    assert error["type"] == kind
    assert details in error["details"]


def test_float_below_min_names_value_and_minimum(object_info: Any) -> None:
    prompt = {
        "1": empty_image(),
        "2": node("ImageBlur", image=["1", 0], blur_radius=1, sigma=0.01),
        "9": save("2"),
    }
    error = only_error(validate_prompt(prompt, object_info), "2")
    assert error["message"] == "Value 0.01 smaller than min of 0.1"
    assert error["extra_info"]["received_value"] == 0.01


def test_float_conversion_failure_names_the_type(object_info: Any) -> None:
    prompt = {
        "1": empty_image(),
        "2": node("ImageBlur", image=["1", 0], blur_radius=1, sigma="soft"),
        "9": save("2"),
    }
    error = only_error(validate_prompt(prompt, object_info), "2")
    assert error["message"] == "Failed to convert an input value to a FLOAT value"
    assert error["details"] == "sigma, soft, could not convert string to float: 'soft'"


def test_long_combo_lists_are_abbreviated(object_info: Any) -> None:
    sampler = object_info["KSampler"]["input"]["required"]["sampler_name"][0]
    prompt = txt2img(sampler_name="nope")
    error = only_error(validate_prompt(prompt, object_info), "3")
    assert error["type"] == "value_not_in_list"
    assert error["details"] == f"sampler_name: 'nope' not in (list of length {len(sampler)})"
    assert error["extra_info"]["input_config"] is None


def test_v3_combo_options_are_checked(object_info: Any) -> None:
    prompt = {
        "5": node("EmptyLatentImage", width=64, height=64, batch_size=1),
        "6": node("LatentCutToBatch", samples=["5", 0], dim="z", slice_size=1),
        "8": node("VAEDecode", samples=["6", 0], vae=["4", 2]),
        "4": node("CheckpointLoaderSimple", ckpt_name="tiny-random.safetensors"),
        "9": save("8"),
    }
    result = validate_prompt(prompt, object_info)
    error = only_error(result, "6")
    assert error["type"] == "value_not_in_list"
    assert error["details"] == "dim: 'z' not in ['t', 'x', 'y']"
    assert error["extra_info"]["input_config"][0] == "COMBO"


def test_unknown_checkpoint_lists_the_known_ones(object_info: Any) -> None:
    result = validate_prompt(txt2img(ckpt_name="nope.safetensors"), object_info)
    error = only_error(result, "4")
    assert f"{error['message']}: {error['details']}" == (
        "Value not in list: ckpt_name: 'nope.safetensors' not in ['tiny-random.safetensors']"
    )
    assert result.node_errors["4"]["dependent_outputs"] == ["9"]


# -- uploads ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "existing", "expected_call", "ok"),
    [
        ("cat.png", {("input", "cat.png")}, ("input", "cat.png"), True),
        ("cat.png", set(), ("input", "cat.png"), False),
        ("cat.png [output]", {("output", "cat.png")}, ("output", "cat.png"), True),
        ("sub/cat.png [temp]", set(), ("temp", "sub/cat.png"), False),
    ],
)
def test_upload_inputs_ask_file_exists(
    object_info: Any, image: str, existing: set[Any], expected_call: Any, ok: bool
) -> None:
    calls = []

    def file_exists(folder: str, filename: str) -> bool:
        calls.append((folder, filename))
        return (folder, filename) in existing

    result = validate_prompt(saved(node("LoadImage", image=image)), object_info, None, file_exists)
    assert calls == [expected_call]
    assert result.ok is ok
    if not ok:
        error = only_error(result, "1")
        assert error["type"] == "custom_validation_failed"
        assert error["details"] == f"image - Invalid image file: {image}"


def test_upload_folder_comes_from_the_input_spec(object_info: Any) -> None:
    calls = []

    def file_exists(folder: str, filename: str) -> bool:
        calls.append((folder, filename))
        return True

    validate_prompt(
        saved(node("LoadImageOutput", image="render.png")), object_info, None, file_exists
    )
    assert calls == [("output", "render.png")]


def test_without_file_exists_uploads_are_checked_against_the_options(object_info: Any) -> None:
    assert validate_prompt(saved(node("LoadImage", image="example.png")), object_info).ok
    error = only_error(validate_prompt(saved(node("LoadImage", image="x.png")), object_info), "1")
    assert error["type"] == "value_not_in_list"


# -- links -----------------------------------------------------------------------------------


def test_type_mismatch_names_both_types(object_info: Any) -> None:
    prompt = {"5": node("EmptyLatentImage", width=64, height=64, batch_size=1), "9": save("5")}
    result = validate_prompt(prompt, object_info)
    error = only_error(result, "9")
    assert error["details"] == "images, received_type(LATENT) mismatch input_type(IMAGE)"
    assert error["extra_info"]["linked_node"] == ["5", 0]


def test_wildcard_input_accepts_any_link(object_info: Any) -> None:
    prompt = {
        "5": node("EmptyLatentImage", width=64, height=64, batch_size=1),
        "9": node("PreviewAny", source=["5", 0]),
    }
    assert validate_prompt(prompt, object_info).ok


@pytest.mark.parametrize(
    ("received", "expected", "ok"),
    [
        ("IMAGE", "IMAGE", True),
        ("LATENT", "IMAGE", False),
        ("*", "IMAGE", True),
        ("IMAGE", "*", True),
        ("IMAGE,MASK", "MASK", True),
        ("MASK", "IMAGE, MASK", True),
        ("LATENT", "IMAGE,MASK", False),
        (["a", "b"], ["a", "b"], True),
        ("COMBO", ["a", "b"], True),
        ("INT", ["a", "b"], False),
    ],
)
def test_types_match(received: object, expected: object, ok: bool) -> None:
    assert types_match(received, expected) is ok


@pytest.mark.parametrize(
    ("link", "kind", "details"),
    [
        (
            ["1", 3],
            "exception_during_validation",
            "images: node 1 (EmptyImage) has no output slot 3",
        ),
        (
            ["1", "0"],
            "exception_during_validation",
            "no output slot '0'; slots are one of 0 (IMAGE)",
        ),
        (["1", -1], "exception_during_validation", "no output slot -1"),
        (["77", 0], "exception_during_validation", "'77'"),
        ([77, 0], "exception_during_validation", "77"),
        (["1"], "bad_linked_input", "images"),
        ([], "bad_linked_input", "images"),
    ],
)
def test_broken_links_on_an_output(
    object_info: Any, link: list[Any], kind: str, details: str
) -> None:
    prompt = {"1": empty_image(), "9": {"class_type": "SaveImage", "inputs": {"images": link}}}
    prompt["9"]["inputs"]["filename_prefix"] = "x"
    result = validate_prompt(prompt, object_info)
    error = only_error(result, "9")
    assert error["type"] == kind
    assert details in error["details"]
    assert result.error is not None
    assert result.error["details"] == f"{error['message']}: {error['details']}"


def test_broken_link_upstream_is_an_inner_exception_on_that_node(object_info: Any) -> None:
    prompt = {"2": node("ImageInvert", image=["77", 0]), "9": save("2")}
    result = validate_prompt(prompt, object_info)
    assert list(result.node_errors) == ["2"]
    error = only_error(result, "2")
    assert error["type"] == "exception_during_inner_validation"
    assert error["message"] == "Exception when validating inner node"
    assert error["details"] == "'77'"
    assert error["extra_info"]["exception_type"] == "KeyError"
    assert error["extra_info"]["linked_node"] == ["2", 0]
    assert result.error is not None and result.error["details"] == ""


def test_node_without_inputs_fails_with_comfyui_key_error(object_info: Any) -> None:
    result = validate_prompt({"9": {"class_type": "SaveImage"}}, object_info)
    error = only_error(result, "9")
    assert (error["type"], error["details"]) == ("exception_during_validation", "'inputs'")


def test_a_cycle_is_an_error_not_a_hang(object_info: Any) -> None:
    prompt = {
        "1": node("ImageInvert", image=["2", 0]),
        "2": node("ImageInvert", image=["1", 0]),
        "9": save("2"),
    }
    result = validate_prompt(prompt, object_info)
    assert not result.comfy_ok
    error = only_error(result, "1")
    assert error["type"] == "exception_during_inner_validation"
    assert "dependency cycle" in error["details"]


def test_literal_lists_must_be_wrapped(object_info: Any) -> None:
    prompt = saved(empty_image(width=[64, 64, 64]))
    assert only_error(validate_prompt(prompt, object_info), "1")["type"] == "bad_linked_input"


# -- which nodes are reported -----------------------------------------------------------------


def test_downstream_of_a_failure_is_not_reported(object_info: Any) -> None:
    prompt = {"1": empty_image(width=0), "2": node("ImageInvert", image=["1", 0]), "9": save("2")}
    result = validate_prompt(prompt, object_info)
    assert list(result.node_errors) == ["1"]
    assert result.node_errors["1"]["dependent_outputs"] == ["9"]


def test_shared_failure_lists_every_dependent_output(object_info: Any) -> None:
    prompt = {"1": empty_image(width=0), "3": save("1"), "5": save("1")}
    result = validate_prompt(prompt, object_info)
    assert result.node_errors["1"]["dependent_outputs"] == ["3", "5"]


def test_unrelated_failures_keep_their_own_outputs(object_info: Any) -> None:
    prompt = {"1": empty_image(width=0), "3": save("1"), "4": empty_image(height=0), "5": save("4")}
    result = validate_prompt(prompt, object_info)
    assert result.node_errors["1"]["dependent_outputs"] == ["3"]
    assert result.node_errors["4"]["dependent_outputs"] == ["5"]


def test_errors_on_one_node_are_all_reported_in_input_order(object_info: Any) -> None:
    prompt = saved(node("EmptyImage", width=0, height="tall", batch_size=1))
    errors = validate_prompt(prompt, object_info).node_errors["1"]["errors"]
    assert [e["type"] for e in errors] == [
        "value_smaller_than_min",
        "invalid_input_type",
        "required_input_missing",
    ]


def test_unreachable_nodes_are_not_validated(object_info: Any) -> None:
    prompt = {**saved(empty_image()), "5": empty_image(width=0)}
    assert validate_prompt(prompt, object_info).ok


def test_optional_inputs_may_be_absent(object_info: Any) -> None:
    prompt = saved(node("LoadImage", image="example.png"))
    prompt["2"] = node("ImageCompositeMasked", destination=["1", 0], source=["1", 0], x=0, y=0)
    prompt["2"]["inputs"]["resize_source"] = False
    prompt["9"] = save("2")
    assert validate_prompt(prompt, object_info).ok


@pytest.mark.parametrize(
    ("targets", "ok", "outputs"),
    [
        (["3"], True, ["3"]),
        (["5"], False, []),
        (None, False, ["3"]),
        (["1"], None, []),  # not an output node: nothing left to run
    ],
)
def test_partial_targets_limit_what_is_validated(
    object_info: Any, targets: list[str] | None, ok: bool | None, outputs: list[str]
) -> None:
    prompt = {"1": empty_image(), "3": save("1"), "4": empty_image(width=0), "5": save("4")}
    result = validate_prompt(prompt, object_info, targets)
    assert result.outputs == outputs
    if ok is None:
        assert result.error is not None and result.error["type"] == "prompt_no_outputs"
    else:
        assert result.ok is ok


# -- check_prompt -----------------------------------------------------------------------------


def test_check_prompt_returns_the_result_when_ok(object_info: Any) -> None:
    assert check_prompt(txt2img(), object_info).outputs == ["9"]


def test_check_prompt_rejects_a_partially_valid_graph(object_info: Any) -> None:
    prompt = {"1": empty_image(), "3": save("1"), "4": empty_image(width=0), "5": save("4")}
    with pytest.raises(WorkflowInvalid) as caught:
        check_prompt(prompt, object_info)
    assert caught.value.error["type"] == "prompt_outputs_failed_validation"
    assert list(caught.value.node_errors) == ["4"]
    assert "node 4 (EmptyImage): Value 0 smaller than min of 1: width" in caught.value.message


def test_check_prompt_passes_the_top_level_error(object_info: Any) -> None:
    with pytest.raises(WorkflowInvalid) as caught:
        check_prompt({}, object_info)
    assert caught.value.error["type"] == "prompt_no_outputs"


def txt2img(**overrides: Any) -> dict[str, Any]:
    sampler = {"seed": 1, "steps": 4, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal"}
    sampler = {key: overrides.pop(key, value) for key, value in sampler.items()}
    ckpt = overrides.pop("ckpt_name", "tiny-random.safetensors")
    return {
        "4": node("CheckpointLoaderSimple", ckpt_name=ckpt),
        "6": node("CLIPTextEncode", text="a cat", clip=["4", 1]),
        "7": node("CLIPTextEncode", text="", clip=["4", 1]),
        "5": node("EmptyLatentImage", width=64, height=64, batch_size=1),
        "3": node(
            "KSampler",
            **sampler,
            denoise=1.0,
            model=["4", 0],
            positive=["6", 0],
            negative=["7", 0],
            latent_image=["5", 0],
        ),
        "8": node("VAEDecode", samples=["3", 0], vae=["4", 2]),
        "9": save("8"),
    }
