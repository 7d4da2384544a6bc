"""Real progress of one ComfyUI prompt, computed from its parsed events (pure; DECISIONS 7).

Every node that will execute weighs 1 and a sampler weighs its steps; cached nodes count as
done. The value never decreases (``floor`` carries it across attempts) and reaches 1.0 only
when the run succeeded.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, fields
from typing import Any

from sakuga.comfy.protocol import (
    Event,
    Executed,
    Executing,
    ExecutionCached,
    ExecutionError,
    ExecutionInterrupted,
    ExecutionStart,
    ExecutionSuccess,
    ProgressState,
    ProgressStep,
)
from sakuga.domain.graph import (
    GraphCycleError,
    ancestors,
    is_link,
    node_inputs,
    nodes_to_execute,
    parents,
)

RUNNING_CAP = 0.99
"""The highest value shown before the run is known to have succeeded."""
DEFAULT_SAMPLER_STEPS = 20
"""Weight of a sampler whose step count is not a literal (e.g. linked from another node)."""


@dataclass(frozen=True, slots=True)
class Progress:
    """One snapshot: ``value`` in 0..1, node counts, and what runs now (step is 1-based)."""

    value: float
    nodes_done: int
    nodes_total: int
    current_node: str | None = None
    current_node_class: str | None = None
    step: int | None = None
    steps: int | None = None
    message: str = ""

    def as_dict(self) -> dict[str, Any]:
        """The job's ``progress`` object, field for field (``asdict`` without its deep copy)."""
        return {name: getattr(self, name) for name in _PROGRESS_FIELDS}


_PROGRESS_FIELDS = tuple(f.name for f in fields(Progress))


@dataclass(frozen=True, slots=True)
class Plan:
    """The nodes that will execute: their weight, class and (planned) parents."""

    weights: Mapping[str, int]
    classes: Mapping[str, str]
    parents: Mapping[str, frozenset[str]]

    @property
    def total(self) -> int:
        return sum(self.weights.values())


def plan_from_prompt(prompt: Mapping[str, Any], execute: Collection[str] | None = None) -> Plan:
    """Weigh the nodes of an API-format prompt; ``execute`` limits it (default: every node)."""
    ids = [str(node_id) for node_id in (execute if execute is not None else prompt)]
    ids = [node_id for node_id in ids if node_id in prompt]
    planned = set(ids)
    classes = {node_id: _class(prompt, node_id) for node_id in ids}
    links = {node_id: frozenset(parents(prompt, node_id) & planned) for node_id in ids}
    schedulers = _schedulers(prompt)
    weights = {node_id: _weight(prompt, node_id, schedulers) for node_id in ids}
    return Plan(weights=weights, classes=classes, parents=links)


def planned_nodes(
    prompt: Mapping[str, Any],
    object_info: Mapping[str, Any] | None = None,
    partial_targets: Collection[str] | None = None,
) -> list[str] | None:
    """The nodes that will run (output nodes and ancestors, honouring ``partial_targets``).
    Without ``object_info`` output nodes are unknown: the targets' closure, or None for all."""
    if object_info:
        targets = list(partial_targets) if partial_targets is not None else None
        try:
            return nodes_to_execute(prompt, object_info, targets)
        except GraphCycleError:
            return None  # the backend rejects it anyway; weigh every node meanwhile
    if partial_targets is None:
        return None
    planned = {node for node in partial_targets if node in prompt}
    for node in list(planned):
        planned |= ancestors(prompt, node)
    return sorted(planned)


def sampler_steps(prompt: Mapping[str, Any], node_id: str) -> int | None:
    """The steps a sampler node will report, or None when it is not a sampler."""
    return _steps(prompt, node_id, _schedulers(prompt))


class ProgressModel:
    """Folds a prompt's events into ``Progress`` snapshots; ``apply`` says when one changed."""

    def __init__(self, plan: Plan, *, prompt_id: str | None = None, floor: float = 0.0) -> None:
        self._plan = plan
        self._prompt_id = prompt_id
        self._floor = min(max(floor, 0.0), RUNNING_CAP)
        self._done: set[str] = set()
        self._fraction: dict[str, float] = {}
        self._current: str | None = None
        self._step: int | None = None
        self._steps: int | None = None
        self._message = "queued"
        self._succeeded = False
        self._last = self._snapshot()

    @classmethod
    def from_prompt(
        cls,
        prompt: Mapping[str, Any],
        *,
        execute: Collection[str] | None = None,
        prompt_id: str | None = None,
        floor: float = 0.0,
    ) -> ProgressModel:
        return cls(plan_from_prompt(prompt, execute), prompt_id=prompt_id, floor=floor)

    @property
    def snapshot(self) -> Progress:
        return self._last

    def apply(self, event: Event) -> Progress | None:
        """Fold one event in; return the new snapshot, or None if nothing visible changed."""
        prompt_id = getattr(event, "prompt_id", None)
        if prompt_id is not None and self._prompt_id is not None and prompt_id != self._prompt_id:
            return None
        self._fold(event)
        return self._publish()

    def succeed(self) -> Progress:
        """Mark the run as succeeded: the value becomes 1.0."""
        self._fold(ExecutionSuccess(self._prompt_id or ""))
        self._publish()
        return self._last

    def _fold(self, event: Event) -> None:
        match event:
            case ExecutionStart():
                self._message = "started"
            case ExecutionCached(nodes=nodes):
                cached = [node for node in nodes if node in self._plan.weights]
                self._done.update(cached)
                if cached:
                    self._message = f"{len(cached)} cached nodes reused"
            case Executing(node=None):
                self._set_current(None)
            case Executing(node=str(node), display_node=display):
                key = self._key(node, display)
                if self._current is not None and self._current != key:
                    self._done.add(self._current)
                self._set_current(key)
                self._message = f"running {self._label(key)}"
            case ProgressStep(value=value, max=top, node=node):
                step_key = self._key(node, None) if node is not None else self._current
                if step_key is None:
                    return
                key = step_key
                if key != self._current:
                    self._set_current(key)
                if top > 0:
                    self._fraction[key] = min(max(value / top, 0.0), 1.0)
                self._show_step(key, value, top)
            case ProgressState(nodes=nodes):
                for info in nodes:
                    key = self._key(info.node_id, info.display_node_id)
                    if info.state == "finished":
                        self._done.add(key)
                    elif info.state == "running" and info.max > 0:
                        self._fraction[key] = min(max(info.value / info.max, 0.0), 1.0)
                        if key == self._current and info.value > 0:
                            # Arrives just before the matching ``progress``: show the step now
                            # so the pair makes one snapshot, not two.
                            self._show_step(key, info.value, info.max)
            case Executed(node=node, display_node=display):
                self._done.add(self._key(node, display))
            case ExecutionSuccess():
                self._succeeded = True
                self._done.update(self._plan.weights)
                self._set_current(None)
                self._message = "done"
            case ExecutionError(blocked=False, node_id=node):
                self._message = f"failed in {self._label(node) if node else 'an unknown node'}"
            case ExecutionInterrupted(node_id=node):
                self._message = f"interrupted in {self._label(node) if node else 'a node'}"
            case _:
                pass

    def _show_step(self, key: str, value: float, top: float) -> None:
        self._step, self._steps = int(value), int(top)
        self._message = f"{self._label(key)} step {self._step}/{self._steps}"

    def _set_current(self, key: str | None) -> None:
        self._current = key
        self._step = self._steps = None
        if key is not None:
            # A node runs only once its inputs exist, so every planned ancestor is done.
            # This matters after a re-attach, where the earlier events were never seen.
            self._done.update(self._ancestors(key))

    def _ancestors(self, key: str) -> set[str]:
        seen: set[str] = set()
        stack = list(self._plan.parents.get(key, ()))
        while stack:
            node = stack.pop()
            if node not in seen:
                seen.add(node)
                stack.extend(self._plan.parents.get(node, ()))
        return seen

    def _key(self, node: str, display: str | None) -> str:
        # Nodes made by expansion get ephemeral ids; their display node is the planned one.
        if node not in self._plan.weights and display is not None and display in self._plan.weights:
            return display
        return node

    def _label(self, key: str) -> str:
        cls = self._plan.classes.get(key)
        return f"{cls} (node {key})" if cls else f"node {key}"

    def _value(self) -> float:
        if self._succeeded:
            return 1.0
        total = self._plan.total
        raw = 0.0
        if total:
            done = sum(w for node, w in self._plan.weights.items() if node in self._done)
            running = sum(
                w * self._fraction.get(node, 0.0)
                for node, w in self._plan.weights.items()
                if node not in self._done
            )
            raw = (done + running) / total
        return round(min(max(raw, self._floor), RUNNING_CAP), 4)

    def _snapshot(self) -> Progress:
        current = self._current
        return Progress(
            value=self._value(),
            nodes_done=len(self._done.intersection(self._plan.weights)),
            nodes_total=len(self._plan.weights),
            current_node=current,
            current_node_class=self._plan.classes.get(current) if current else None,
            step=self._step,
            steps=self._steps,
            message=self._message,
        )

    def _publish(self) -> Progress | None:
        snapshot = self._snapshot()
        if snapshot.value < self._last.value:  # never show less than before
            snapshot = _with_value(snapshot, self._last.value)
        if snapshot == self._last:
            return None
        self._last = snapshot
        return snapshot


def _with_value(progress: Progress, value: float) -> Progress:
    return Progress(
        value,
        progress.nodes_done,
        progress.nodes_total,
        progress.current_node,
        progress.current_node_class,
        progress.step,
        progress.steps,
        progress.message,
    )


# -- weighing a prompt ----------------------------------------------------------------------


def _class(prompt: Mapping[str, Any], node_id: str) -> str:
    node = prompt.get(node_id)
    return str(node.get("class_type", "")) if isinstance(node, Mapping) else ""


def _source(value: Any) -> str | None:
    return str(value[0]) if is_link(value) else None


def _schedulers(prompt: Mapping[str, Any]) -> set[str]:
    """Nodes that only compute sigmas (they take ``steps`` but report no progress)."""
    feeding = {_source(node_inputs(prompt, node_id).get("sigmas")) for node_id in prompt}
    named = {node_id for node_id in prompt if _class(prompt, node_id).endswith("Scheduler")}
    return {node_id for node_id in feeding if node_id is not None} | named


def _literal_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float) and value >= 0:
        return int(value)
    return None


def _steps(prompt: Mapping[str, Any], node_id: str, schedulers: set[str]) -> int | None:
    if node_id in schedulers:
        return None
    inputs = node_inputs(prompt, node_id)
    class_type = _class(prompt, node_id)
    if "steps" in inputs:
        steps = _literal_int(inputs["steps"])
        if steps is None:
            return DEFAULT_SAMPLER_STEPS
        start = _literal_int(inputs.get("start_at_step"))
        end = _literal_int(inputs.get("end_at_step"))
        if start is not None and end is not None:  # KSamplerAdvanced runs only that window
            steps = max(min(end, steps) - start, 1)
        return max(steps, 1)
    if "sigmas" in inputs and "Sampler" in class_type:
        return _steps_from_sigmas(prompt, _source(inputs["sigmas"]))
    return None


def _steps_from_sigmas(prompt: Mapping[str, Any], source: str | None) -> int:
    # Walk up a short chain of sigma nodes (SplitSigmas, FlipSigmas...) to the scheduler.
    for _ in range(8):
        if source is None:
            break
        inputs = node_inputs(prompt, source)
        steps = _literal_int(inputs.get("steps"))
        if steps is not None:
            return max(steps, 1)
        source = _source(inputs.get("sigmas"))
    return DEFAULT_SAMPLER_STEPS


def _weight(prompt: Mapping[str, Any], node_id: str, schedulers: set[str]) -> int:
    return _steps(prompt, node_id, schedulers) or 1
