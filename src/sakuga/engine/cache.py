"""ComfyUI's classic output cache: node outputs keyed by an input signature.

A node's signature covers its class, its literal inputs and, recursively, the signatures of
the nodes it links to (plus the node id for classes that take UNIQUE_ID, and an IS_CHANGED
value such as LoadImage's file hash). Entries the new prompt does not use are dropped.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sakuga.domain.graph import is_link


@dataclass(frozen=True)
class CacheEntry:
    """A node's outputs by slot and its UI dict."""

    outputs: tuple[Any, ...]
    ui: dict[str, Any] | None


def signatures(
    prompt: Mapping[str, Any],
    uses_unique_id: Callable[[str], bool],
    is_changed: Callable[[str, Mapping[str, Any]], object],
) -> dict[str, str]:
    """The signature of every node in ``prompt`` (links to absent nodes count as literals).

    ``uses_unique_id(class_type)`` and ``is_changed(class_type, inputs)`` describe classes.
    """
    done: dict[str, str] = {}
    visiting: set[str] = set()

    def of(node_id: str) -> str:
        if node_id in done:
            return done[node_id]
        if node_id in visiting:  # a cycle: validation rejects it; keep signatures finite
            return f"cycle:{node_id}"
        visiting.add(node_id)
        raw = prompt[node_id]
        node: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
        raw_inputs = node.get("inputs")
        inputs: Mapping[str, Any] = raw_inputs if isinstance(raw_inputs, Mapping) else {}
        class_type = node.get("class_type")
        parts: list[Any] = [class_type, node.get("is_changed")]
        if isinstance(class_type, str):
            parts.append(is_changed(class_type, inputs))
            if uses_unique_id(class_type):
                parts.append(["id", node_id])
        for name in sorted(inputs):
            value = inputs[name]
            if is_link(value) and value[0] in prompt:
                parts.append([name, "link", of(value[0]), value[1]])
            else:
                parts.append([name, "value", value])
        text = json.dumps(parts, sort_keys=True, default=repr)
        done[node_id] = hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()
        visiting.discard(node_id)
        return done[node_id]

    for node_id in prompt:
        of(node_id)
    return done


class OutputCache:
    """Outputs of earlier runs, keyed by signature."""

    def __init__(self) -> None:
        self._entries: dict[str, CacheEntry] = {}

    def keep_only(self, used: set[str]) -> None:
        """Drop the entries whose signature the new prompt does not use."""
        for key in [key for key in self._entries if key not in used]:
            del self._entries[key]

    def get(self, signature: str) -> CacheEntry | None:
        """The entry for ``signature``, or None."""
        return self._entries.get(signature)

    def put(self, signature: str, entry: CacheEntry) -> None:
        """Remember a node's outputs under its signature."""
        self._entries[signature] = entry

    def clear(self) -> None:
        """Forget everything (``POST /free {"free_memory": true}``)."""
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
