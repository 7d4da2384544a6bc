"""Cache signatures follow ComfyUI: class + literals, recursively over linked ancestors."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sakuga.engine.cache import CacheEntry, OutputCache, signatures
from tests.fixtures.engine import no_model_prompt, txt2img_prompt


def sigs(prompt: Mapping[str, Any], unique: tuple[str, ...] = ()) -> dict[str, str]:
    return signatures(prompt, lambda c: c in unique, lambda c, i: None)


def test_identical_prompts_have_identical_signatures() -> None:
    assert sigs(txt2img_prompt()) == sigs(txt2img_prompt())


def test_a_new_seed_changes_the_sampler_and_everything_after_it() -> None:
    before, after = sigs(txt2img_prompt(seed=1)), sigs(txt2img_prompt(seed=2))
    changed = {node for node in before if before[node] != after[node]}
    assert changed == {"3", "8", "9"}


def test_only_the_prefix_change_touches_only_the_save_node() -> None:
    before, after = sigs(txt2img_prompt(prefix="a")), sigs(txt2img_prompt(prefix="b"))
    assert {node for node in before if before[node] != after[node]} == {"9"}


def test_node_ids_do_not_matter_unless_the_class_takes_unique_id() -> None:
    prompt = no_model_prompt()
    renumbered = {
        "10": prompt["1"],
        "20": {"class_type": "ImageInvert", "inputs": {"image": ["10", 0]}},
        "30": {
            "class_type": "SaveImage",
            "inputs": {"images": ["20", 0], "filename_prefix": "nomodel"},
        },
    }
    assert sorted(sigs(prompt).values()) == sorted(sigs(renumbered).values())
    unique = ("ImageInvert",)
    assert sigs(prompt, unique)["2"] != sigs(renumbered, unique)["20"]


def test_is_changed_values_and_links_to_missing_nodes_are_handled() -> None:
    prompt = {"1": {"class_type": "SaveImage", "inputs": {"images": ["77", 0]}}}
    assert signatures(prompt, lambda c: False, lambda c, i: "a") != signatures(
        prompt, lambda c: False, lambda c, i: "b"
    )


def test_keep_only_drops_entries_the_new_prompt_does_not_use() -> None:
    cache = OutputCache()
    cache.put("a", CacheEntry((1,), None))
    cache.put("b", CacheEntry((2,), {"images": []}))
    cache.keep_only({"b", "c"})
    assert cache.get("a") is None and cache.get("b") == CacheEntry((2,), {"images": []})
    assert len(cache) == 1
