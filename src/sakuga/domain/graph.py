"""Pure helpers over an API-format prompt: links, output nodes, ancestors, execution order.

A prompt maps node id -> ``{"class_type": ..., "inputs": {...}}`` (PROTOCOL §3). Links to
nodes that are not in the prompt are skipped here; ``sakuga.domain.validation`` reports them.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from typing import Any

Prompt = Mapping[str, Any]
ObjectInfo = Mapping[str, Any]


class GraphCycleError(ValueError):
    """The nodes to execute depend on each other in a loop."""

    def __init__(self, node_ids: Iterable[str]) -> None:
        self.node_ids = sorted(node_ids, key=node_sort_key)
        super().__init__(f"dependency cycle among nodes {self.node_ids}; links must form a DAG")


def node_sort_key(node_id: str) -> tuple[int, int, str]:
    """Order node ids numerically where they are integers, then the rest as text."""
    if node_id.isdecimal():
        return (0, int(node_id), node_id)
    return (1, 0, node_id)


def is_link(value: object) -> bool:
    """True for ``[source_node_id: str, output_slot: int]``; ``{"__value__": [...]}`` is literal."""
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int)
        and not isinstance(value[1], bool)
    )


def node_inputs(prompt: Prompt, node_id: str) -> Mapping[str, Any]:
    """The ``inputs`` of a node, or an empty mapping when the node or its inputs are malformed."""
    node = prompt.get(node_id)
    inputs = node.get("inputs") if isinstance(node, Mapping) else None
    return inputs if isinstance(inputs, Mapping) else {}


def parents(prompt: Prompt, node_id: str) -> set[str]:
    """Ids of the nodes that ``node_id`` links to directly (those present in the prompt)."""
    return {
        value[0]
        for value in node_inputs(prompt, node_id).values()
        if is_link(value) and value[0] in prompt
    }


def ancestors(prompt: Prompt, node_id: str) -> set[str]:
    """Every node ``node_id`` depends on, directly or not (the node itself excluded)."""
    seen: set[str] = set()
    stack = [node_id]
    while stack:
        for parent in parents(prompt, stack.pop()):
            if parent not in seen:
                seen.add(parent)
                stack.append(parent)
    seen.discard(node_id)
    return seen


def output_nodes(prompt: Prompt, object_info: ObjectInfo) -> list[str]:
    """Ids of nodes whose class has ``output_node: true``, in node id order."""
    found = []
    for node_id, node in prompt.items():
        if not isinstance(node, Mapping):
            continue
        class_type = node.get("class_type")
        info = object_info.get(class_type) if isinstance(class_type, str) else None
        if isinstance(info, Mapping) and info.get("output_node") is True:
            found.append(node_id)
    return sorted(found, key=node_sort_key)


def nodes_to_execute(
    prompt: Prompt, object_info: ObjectInfo, partial_targets: list[str] | None = None
) -> list[str]:
    """Output nodes and their ancestors in a deterministic topological order.

    Like ComfyUI, ``partial_targets`` keeps only the output nodes it names (other ids are
    ignored). Ties go to the smallest node id. Raises ``GraphCycleError`` on a cycle.
    """
    targets = output_nodes(prompt, object_info)
    if partial_targets is not None:
        wanted = set(partial_targets)
        targets = [node_id for node_id in targets if node_id in wanted]
    selected: set[str] = set(targets)
    for target in targets:
        selected |= ancestors(prompt, target)
    return topological_order(prompt, selected)


def topological_order(prompt: Prompt, node_ids: Iterable[str]) -> list[str]:
    """Order ``node_ids`` so each comes after the nodes it links to; smallest id first on ties."""
    selected = set(node_ids)
    waiting = {node_id: parents(prompt, node_id) & selected for node_id in selected}
    children: dict[str, list[str]] = {node_id: [] for node_id in selected}
    for node_id, deps in waiting.items():
        for dep in deps:
            children[dep].append(node_id)
    ready = [(node_sort_key(n), n) for n, deps in waiting.items() if not deps]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        _, node_id = heapq.heappop(ready)
        order.append(node_id)
        for child in children[node_id]:
            waiting[child].discard(node_id)
            if not waiting[child]:
                heapq.heappush(ready, (node_sort_key(child), child))
    if len(order) != len(selected):
        raise GraphCycleError(selected - set(order))
    return order


def is_ui_format(workflow: Mapping[str, Any]) -> bool:
    """True for the frontend's UI export (``nodes`` list + ``links``), not the API format."""
    if isinstance(workflow.get("nodes"), list) and "links" in workflow:
        return True
    return all(key in workflow for key in ("nodes", "links", "last_node_id"))
