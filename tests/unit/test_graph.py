"""Graph helpers over API-format prompts: links, outputs, ancestors, execution order."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sakuga.domain.graph import (
    GraphCycleError,
    ancestors,
    is_link,
    is_ui_format,
    nodes_to_execute,
    output_nodes,
)

SHARED = Path(__file__).resolve().parents[3] / "shared"


@pytest.fixture(scope="module")
def object_info() -> dict[str, Any]:
    info: dict[str, Any] = json.loads((SHARED / "comfyui" / "object_info.json").read_text())
    return info


def node(class_type: str, **inputs: Any) -> dict[str, Any]:
    return {"class_type": class_type, "inputs": inputs}


TXT2IMG: dict[str, Any] = {
    "4": node("CheckpointLoaderSimple", ckpt_name="tiny-random.safetensors"),
    "6": node("CLIPTextEncode", text="a cat", clip=["4", 1]),
    "7": node("CLIPTextEncode", text="", clip=["4", 1]),
    "5": node("EmptyLatentImage", width=64, height=64, batch_size=1),
    "3": node(
        "KSampler",
        seed=1,
        steps=4,
        cfg=7.0,
        sampler_name="euler",
        scheduler="normal",
        denoise=1.0,
        model=["4", 0],
        positive=["6", 0],
        negative=["7", 0],
        latent_image=["5", 0],
    ),
    "8": node("VAEDecode", samples=["3", 0], vae=["4", 2]),
    "9": node("SaveImage", images=["8", 0], filename_prefix="x"),
}

TWO_OUTPUTS: dict[str, Any] = {
    "1": node("EmptyImage", width=64, height=64, batch_size=1, color=0),
    "2": node("ImageInvert", image=["1", 0]),
    "3": node("SaveImage", images=["2", 0], filename_prefix="a"),
    "4": node("ImageInvert", image=["1", 0]),
    "5": node("SaveImage", images=["4", 0], filename_prefix="b"),
    "10": node("EmptyImage", width=64, height=64, batch_size=1, color=0),  # dangling: never runs
}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (["4", 0], True),
        (["12", 2], True),
        (["4", 0, 1], False),
        (["4"], False),
        ([4, 0], False),
        (["4", "0"], False),
        (["4", True], False),
        ({"__value__": ["4", 0]}, False),
        ("4", False),
        (None, False),
    ],
)
def test_is_link_only_accepts_node_id_and_slot(value: object, expected: bool) -> None:
    assert is_link(value) is expected


def test_output_nodes_are_classes_marked_output_node(object_info: dict[str, Any]) -> None:
    assert output_nodes(TWO_OUTPUTS, object_info) == ["3", "5"]
    assert output_nodes(TXT2IMG, object_info) == ["9"]


def test_output_nodes_skip_unknown_classes(object_info: dict[str, Any]) -> None:
    prompt = {"1": node("NoSuchNode"), "2": {"inputs": {}}, "3": node("PreviewImage")}
    assert output_nodes(prompt, object_info) == ["3"]


def test_ancestors_follow_links_transitively() -> None:
    assert ancestors(TXT2IMG, "9") == {"3", "4", "5", "6", "7", "8"}
    assert ancestors(TXT2IMG, "6") == {"4"}
    assert ancestors(TXT2IMG, "4") == set()


def test_ancestors_ignore_links_to_missing_nodes() -> None:
    prompt = {"1": node("SaveImage", images=["77", 0]), "2": node("ImageInvert", image=["1", 0])}
    assert ancestors(prompt, "2") == {"1"}


def test_execution_order_is_topological_with_smallest_id_first(
    object_info: dict[str, Any],
) -> None:
    assert nodes_to_execute(TXT2IMG, object_info) == ["4", "5", "6", "7", "3", "8", "9"]


def test_execution_order_compares_ids_as_integers(object_info: dict[str, Any]) -> None:
    prompt = {
        "10": node("EmptyImage", width=64, height=64, batch_size=1, color=0),
        "9": node("EmptyImage", width=64, height=64, batch_size=1, color=0),
        "11": node("SaveImage", images=["10", 0], filename_prefix="a"),
        "2": node("SaveImage", images=["9", 0], filename_prefix="b"),
    }
    assert nodes_to_execute(prompt, object_info) == ["9", "2", "10", "11"]


def test_dangling_nodes_do_not_execute(object_info: dict[str, Any]) -> None:
    assert nodes_to_execute(TWO_OUTPUTS, object_info) == ["1", "2", "3", "4", "5"]


@pytest.mark.parametrize(
    ("targets", "expected"),
    [
        (["3"], ["1", "2", "3"]),
        (["5"], ["1", "4", "5"]),
        (["3", "5"], ["1", "2", "3", "4", "5"]),
        (["2"], []),  # like ComfyUI: a target must be an output node
        ([], []),
    ],
)
def test_partial_targets_restrict_the_outputs(
    object_info: dict[str, Any], targets: list[str], expected: list[str]
) -> None:
    assert nodes_to_execute(TWO_OUTPUTS, object_info, targets) == expected


def test_a_cycle_is_reported(object_info: dict[str, Any]) -> None:
    prompt = {
        "1": node("ImageInvert", image=["2", 0]),
        "2": node("ImageInvert", image=["1", 0]),
        "3": node("SaveImage", images=["2", 0], filename_prefix="x"),
    }
    with pytest.raises(GraphCycleError) as caught:
        nodes_to_execute(prompt, object_info)
    assert caught.value.node_ids == ["1", "2", "3"]


@pytest.mark.parametrize(
    ("workflow", "expected"),
    [
        ({"nodes": [], "links": []}, True),
        (
            {
                "last_node_id": 9,
                "last_link_id": 9,
                "nodes": [{"id": 1}],
                "links": [],
                "version": 0.4,
            },
            True,
        ),
        ({"nodes": {}, "links": {}, "last_node_id": 1}, True),
        ({"nodes": []}, False),
        (TXT2IMG, False),
        ({}, False),
    ],
)
def test_ui_exports_are_recognised(workflow: dict[str, Any], expected: bool) -> None:
    assert is_ui_format(workflow) is expected
