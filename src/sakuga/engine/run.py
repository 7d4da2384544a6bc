"""One prompt's execution: node order, cache reuse, messages and the history entry.

Messages follow PROTOCOL §6 exactly; who receives them follows §5.1 (lifecycle events only
to the prompt's client, progress to it or to everyone when it has none).
"""

from __future__ import annotations

import asyncio
import time
import traceback
from collections.abc import Mapping
from typing import Any

from sakuga.domain.graph import is_link, nodes_to_execute, parents
from sakuga.engine.cache import CacheEntry, OutputCache, signatures
from sakuga.engine.context import InjectedFault, InterruptProcessing, NodeCall
from sakuga.engine.files import DataDirs
from sakuga.engine.hub import Hub
from sakuga.engine.nodes import NODE_CLASSES, input_file_digest
from sakuga.engine.object_info import NODE_SPECS
from sakuga.engine.options import EngineOptions, Faults
from sakuga.engine.queue import QueueItem

_COERCE = {"INT": int, "FLOAT": float, "STRING": str, "BOOLEAN": bool}


def now_ms() -> int:
    """Milliseconds since the epoch, ComfyUI's timestamp unit."""
    return int(time.time() * 1000)


def exception_type(exc: BaseException) -> str:
    """ComfyUI's name for an exception: module-qualified unless built in."""
    named = getattr(type(exc), "comfy_type", None)
    if isinstance(named, str):
        return named
    module = type(exc).__module__
    name = type(exc).__qualname__
    return name if module == "builtins" else f"{module}.{name}"


class PromptRun:
    """Runs one queued prompt; also the ``RunContext`` its nodes see."""

    def __init__(
        self,
        item: QueueItem,
        *,
        hub: Hub,
        cache: OutputCache,
        dirs: DataDirs,
        options: EngineOptions,
        faults: Faults,
        interrupt: asyncio.Event,
    ) -> None:
        self.item = item
        self.prompt_id = item.prompt_id
        self.prompt: Mapping[str, Any] = item.prompt
        self.extra_data: Mapping[str, Any] = item.extra_data
        self.client_id = item.client_id
        self.dirs, self.options, self.faults = dirs, options, faults
        self.hub, self.cache, self.interrupt = hub, cache, interrupt
        method = item.extra_data.get("preview_method", "default")
        if method == "default" or not isinstance(method, str):
            method = options.preview_method
        self.previews_enabled = method != "none"
        self.current_node: str | None = None
        self.messages: list[list[Any]] = []
        self.progress_nodes: dict[str, dict[str, Any]] = {}
        self.executed: list[str] = []
        self.values: dict[str, tuple[Any, ...]] = {}
        self.ui_outputs: dict[str, Any] = {}
        self.meta: dict[str, Any] = {}

    # -- the RunContext nodes use ---------------------------------------------------------

    async def wait_step(self) -> None:
        if self.options.step_s <= 0:
            await asyncio.sleep(0)  # let HTTP requests (and /interrupt) in between steps
        else:
            try:
                async with asyncio.timeout(self.options.step_s):
                    await self.interrupt.wait()
            except TimeoutError:
                return
        self._check_interrupt()

    async def wait_interrupt(self) -> None:
        await self.interrupt.wait()
        self._check_interrupt()

    async def progress(self, node_id: str, value: int, maximum: int, preview: bytes | None) -> None:
        self._check_interrupt()
        self._set_state(node_id, value, maximum, "running")
        data = {"value": value, "max": maximum, "prompt_id": self.prompt_id, "node": node_id}
        if preview is None:
            self.hub.send_json("progress", data, self.client_id)
            return
        metadata = {
            "node_id": node_id,
            "prompt_id": self.prompt_id,
            "display_node_id": node_id,
            "parent_node_id": None,
            "real_node_id": node_id,
            "image_type": "image/jpeg",
        }
        self.hub.send_preview(preview, self.client_id, metadata, data)

    def send_text(self, node_id: str, text: str) -> None:
        self.hub.send_text_event(node_id, text)

    # -- execution --------------------------------------------------------------------------

    async def execute(self) -> dict[str, Any]:
        """Run the prompt to success, error or interrupt; returns its history entry."""
        self._add_message("execution_start", {"prompt_id": self.prompt_id, "timestamp": now_ms()})
        sigs = signatures(self.prompt, _uses_unique_id, self._is_changed)
        self.cache.keep_only(set(sigs.values()))
        cached = []
        for node_id in self.prompt:
            entry = self.cache.get(sigs[node_id])
            if entry is not None:
                cached.append(node_id)
                self.values[node_id] = entry.outputs
        self._add_message(
            "execution_cached",
            {"nodes": cached, "prompt_id": self.prompt_id, "timestamp": now_ms()},
        )
        status = "success"
        node_id = ""
        try:
            for node_id in self._execution_list(set(cached)):
                entry = self.cache.get(sigs[node_id])
                if entry is not None:
                    self._replay_cached(node_id, entry)
                else:
                    await self._run_node(node_id, sigs[node_id])
        except InterruptProcessing:
            status = "error"
            self._add_message("execution_interrupted", self._stop_details(node_id), broadcast=True)
        except Exception as exc:
            status = "error"
            self._add_message("execution_error", self._error_details(node_id, exc))
        else:
            self._add_message(
                "execution_success", {"prompt_id": self.prompt_id, "timestamp": now_ms()}
            )
        return {
            "prompt": self.item.as_list(),
            "outputs": self.ui_outputs,
            "status": {
                "status_str": status,
                "completed": status == "success",
                "messages": self.messages,
            },
            "meta": self.meta,
        }

    def _execution_list(self, cached: set[str]) -> list[str]:
        # Output nodes always run (a cached one replays its UI); their ancestors only when
        # not cached, reached through nodes that are not cached either (ComfyUI's rule).
        targets = set(self.item.outputs)
        order = nodes_to_execute(self.prompt, NODE_SPECS, self.item.outputs)
        needed: set[str] = set(targets)
        pullers = {node for node in targets if node not in cached}
        for node_id in reversed(order):
            if node_id in needed or node_id in cached:
                continue
            if any(node_id in parents(self.prompt, child) for child in pullers):
                needed.add(node_id)
                pullers.add(node_id)
        remaining = [node_id for node_id in order if node_id in needed]
        picked: list[str] = []
        done: set[str] = set()
        while remaining:
            ready = [n for n in remaining if (parents(self.prompt, n) & needed) <= done]
            # Like ComfyUI's UX-friendly pick: an output node that can run goes first.
            choice = next((n for n in ready if n in targets), ready[0])
            remaining.remove(choice)
            done.add(choice)
            picked.append(choice)
        return picked

    def _replay_cached(self, node_id: str, entry: CacheEntry) -> None:
        self.values[node_id] = entry.outputs
        if entry.ui is not None:
            self._record_ui(node_id, entry.ui)
        self._send_client(
            "executed",
            {
                "node": node_id,
                "display_node": node_id,
                "output": entry.ui,
                "prompt_id": self.prompt_id,
            },
        )
        self._set_state(node_id, 1, 1, "finished")

    async def _run_node(self, node_id: str, signature: str) -> None:
        class_type = str(self.prompt[node_id]["class_type"])
        self._set_state(node_id, 0.0, 1.0, "running")
        self.current_node = node_id
        self._send_client(
            "executing", {"node": node_id, "display_node": node_id, "prompt_id": self.prompt_id}
        )
        self._check_interrupt()
        if self.faults.fail_node == class_type:
            raise InjectedFault(f"sakuga engine fault: fail_node={class_type} raised on purpose")
        inputs = self._inputs(node_id, class_type)
        result = await NODE_CLASSES[class_type].run(NodeCall(node_id, class_type, inputs, self))
        self.executed.append(node_id)
        self.values[node_id] = result.outputs
        self.cache.put(signature, CacheEntry(result.outputs, result.ui))
        if result.ui is not None:
            self._record_ui(node_id, result.ui)
            self._send_client(
                "executed",
                {
                    "node": node_id,
                    "display_node": node_id,
                    "output": result.ui,
                    "prompt_id": self.prompt_id,
                },
            )
        state = self.progress_nodes[node_id]
        self._set_state(node_id, state["max"], state["max"], "finished")

    def _inputs(self, node_id: str, class_type: str) -> dict[str, Any]:
        spec = NODE_SPECS[class_type]["input"]
        declared = {**spec.get("required", {}), **spec.get("optional", {})}
        raw = self.prompt[node_id].get("inputs", {})
        inputs: dict[str, Any] = {}
        for name, config in declared.items():
            if name not in raw:
                continue
            value = raw[name]
            if is_link(value):
                inputs[name] = self.values[value[0]][value[1]]
                continue
            if isinstance(value, dict) and "__value__" in value:
                value = value["__value__"]
            kind = config[0]
            inputs[name] = (
                _COERCE[kind](value) if isinstance(kind, str) and kind in _COERCE else value
            )
        return inputs

    def _is_changed(self, class_type: str, inputs: Mapping[str, Any]) -> object:
        node_class = NODE_CLASSES.get(class_type)
        if node_class is None or node_class.hashes_input_file is None:
            return None
        name = inputs.get(node_class.hashes_input_file)
        return input_file_digest(self.dirs, name) if isinstance(name, str) else None

    # -- messages ---------------------------------------------------------------------------

    def _check_interrupt(self) -> None:
        if self.interrupt.is_set():
            self.interrupt.clear()
            raise InterruptProcessing()

    def _set_state(self, node_id: str, value: float, maximum: float, state: str) -> None:
        self.progress_nodes[node_id] = {
            "value": value,
            "max": maximum,
            "state": state,
            "node_id": node_id,
            "prompt_id": self.prompt_id,
            "display_node_id": node_id,
            "parent_node_id": None,
            "real_node_id": node_id,
        }
        payload = {"prompt_id": self.prompt_id, "nodes": self.progress_nodes}
        self.hub.send_json("progress_state", payload, self.client_id)

    def _send_client(self, event: str, data: dict[str, Any]) -> None:
        if self.client_id is not None:
            self.hub.send_json(event, data, self.client_id)

    def _add_message(self, event: str, data: dict[str, Any], broadcast: bool = False) -> None:
        self.messages.append([event, data])
        if self.client_id is not None or broadcast:
            self.hub.send_json(event, data, self.client_id)

    def _record_ui(self, node_id: str, ui: dict[str, Any]) -> None:
        self.ui_outputs[node_id] = ui
        self.meta[node_id] = {
            "node_id": node_id,
            "display_node": node_id,
            "parent_node": None,
            "real_node_id": node_id,
        }

    def _stop_details(self, node_id: str) -> dict[str, Any]:
        return {
            "prompt_id": self.prompt_id,
            "node_id": node_id,
            "node_type": self.prompt.get(node_id, {}).get("class_type"),
            "executed": list(self.executed),
            "timestamp": now_ms(),
        }

    def _error_details(self, node_id: str, exc: Exception) -> dict[str, Any]:
        details = self._stop_details(node_id)
        timestamp = details.pop("timestamp")
        details.update(
            exception_message=f"{exc}\n",
            exception_type=exception_type(exc),
            traceback=traceback.format_tb(exc.__traceback__),
            current_inputs=self._formatted_inputs(node_id),
            current_outputs=[n for n in self.prompt if n in self.values],
            timestamp=timestamp,
        )
        return details

    def _formatted_inputs(self, node_id: str) -> dict[str, list[Any]]:
        class_type = str(self.prompt.get(node_id, {}).get("class_type"))
        raw = self.prompt.get(node_id, {}).get("inputs", {})
        formatted: dict[str, list[Any]] = {}
        for name, value in raw.items():
            if is_link(value) and value[0] in self.values:
                value = self.values[value[0]][value[1]]
            formatted[name] = [value if value is None or isinstance(value, str) else repr(value)]
        hidden = NODE_SPECS.get(class_type, {}).get("input", {}).get("hidden", {})
        if "prompt" in hidden:
            formatted["prompt"] = [repr(dict(self.prompt))]
        if "extra_pnginfo" in hidden:
            formatted["extra_pnginfo"] = [self.extra_data.get("extra_pnginfo")]
        return formatted


def _uses_unique_id(class_type: str) -> bool:
    node_class = NODE_CLASSES.get(class_type)
    return node_class is not None and node_class.unique_id
