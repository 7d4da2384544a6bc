"""Workflow validation against ``/object_info``, answering the way ComfyUI 0.8.0 does.

Behaviour and message shapes follow PROTOCOL §4.1 and ``http/validation_errors.json``:
top-level problems come back as ``error`` with empty ``node_errors``; input problems come
back per node, walking from each output node up its links, so nodes that no output reaches
are not checked and nodes downstream of a failing node carry no errors of their own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sakuga.domain.graph import ancestors, output_nodes
from sakuga.errors import WorkflowInvalid

FileExists = Callable[[str, str], bool]
"""``file_exists(folder, filename)``: folder is ``input``/``output``/``temp``."""

COMBO_LIST_LIMIT = 20  # ComfyUI abbreviates longer option lists (model folders get huge)
_FOLDER_ANNOTATIONS = ("input", "output", "temp")


@dataclass(frozen=True)
class ValidationResult:
    """ComfyUI's verdict: top-level ``error``, per-node ``node_errors``, valid ``outputs``."""

    error: dict[str, Any] | None
    node_errors: dict[str, dict[str, Any]] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """sakuga's rule (DECISIONS 2): no error and no invalid node anywhere."""
        return self.error is None and not self.node_errors

    @property
    def comfy_ok(self) -> bool:
        """ComfyUI's rule: at least one output is valid, so the prompt would be queued."""
        return self.error is None and bool(self.outputs)


def validate_prompt(
    prompt: object,
    object_info: Mapping[str, Any],
    partial_targets: list[str] | None = None,
    file_exists: FileExists | None = None,
) -> ValidationResult:
    """Validate an API-format prompt; ``file_exists`` checks ``image_upload`` combo values."""
    problem = _top_level_problem(prompt, object_info)
    if problem is not None:
        return ValidationResult(problem)
    assert isinstance(prompt, dict)  # narrowed by _top_level_problem
    outputs = output_nodes(prompt, object_info)
    if partial_targets is not None:
        wanted = set(partial_targets)
        outputs = [node_id for node_id in outputs if node_id in wanted]
    if not outputs:
        return ValidationResult(_error("prompt_no_outputs", "Prompt has no outputs", ""))
    return _Validator(prompt, object_info, file_exists).run(outputs)


def check_prompt(
    prompt: object,
    object_info: Mapping[str, Any],
    partial_targets: list[str] | None = None,
    file_exists: FileExists | None = None,
) -> ValidationResult:
    """Like ``validate_prompt`` but raises ``WorkflowInvalid`` unless every node is valid."""
    result = validate_prompt(prompt, object_info, partial_targets, file_exists)
    if not result.ok:
        error = result.error or _error(
            "prompt_outputs_failed_validation", "Prompt outputs failed validation", ""
        )
        raise WorkflowInvalid(error, result.node_errors)
    return result


def types_match(received: object, expected: object) -> bool:
    """Whether an output of type ``received`` may feed an input of type ``expected``.

    ``*`` matches anything, ``"A,B"`` is a union, and combo lists count as ``COMBO``.
    """
    received_name = "COMBO" if isinstance(received, list) else received
    expected_name = "COMBO" if isinstance(expected, list) else expected
    if received_name == expected_name:
        return True
    if not isinstance(received_name, str) or not isinstance(expected_name, str):
        return False
    got = {part.strip() for part in received_name.split(",")}
    want = {part.strip() for part in expected_name.split(",")}
    return "*" in got or "*" in want or bool(got & want)


# -- internals ---------------------------------------------------------------------------


def _error(
    kind: str, message: str, details: str, extra_info: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {"type": kind, "message": message, "details": details, "extra_info": extra_info or {}}


def _json_type(value: object) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number" if isinstance(value, int | float) else "value")


def _top_level_problem(prompt: object, object_info: Mapping[str, Any]) -> dict[str, Any] | None:
    """The first node without a known class, as ComfyUI checks before any input."""
    if prompt is None:
        return _error("no_prompt", "No prompt provided", "No prompt provided")
    if not isinstance(prompt, dict):
        return _error(
            "invalid_prompt",
            "Cannot execute because the prompt is not an object mapping node ids to nodes.",
            f"received a JSON {_json_type(prompt)}",
        )
    for node_id, node in prompt.items():
        if not isinstance(node, dict) or "class_type" not in node:
            return _error(
                "invalid_prompt",
                "Cannot execute because a node is missing the class_type property.",
                f"Node ID '#{node_id}'",
            )
        class_type = node["class_type"]
        if not isinstance(class_type, str) or class_type not in object_info:
            return _error(
                "invalid_prompt",
                f"Cannot execute because node {class_type} does not exist.",
                f"Node ID '#{node_id}'",
            )
    return None


@dataclass(frozen=True)
class _InputSpec:
    name: str
    required: bool
    type: Any  # a type name, or the option list of a legacy combo
    extra: dict[str, Any]

    @property
    def config(self) -> list[Any]:
        return [self.type, self.extra]

    @property
    def is_combo(self) -> bool:
        return isinstance(self.type, list) or self.type == "COMBO"

    @property
    def options(self) -> list[Any] | None:
        """Accepted combo values; None when the backend lists them elsewhere (``remote``)."""
        if isinstance(self.type, list):
            return self.type
        options = self.extra.get("options")
        return options if isinstance(options, list) else None


def _input_specs(class_info: Mapping[str, Any]) -> list[_InputSpec]:
    """Required then optional inputs, in the order the frontend shows them."""
    declared = class_info.get("input") or {}
    order = class_info.get("input_order") or {}
    specs = []
    for category in ("required", "optional"):
        entries = declared.get(category) or {}
        names = [n for n in order.get(category) or [] if n in entries]
        names += [n for n in entries if n not in names]
        for name in names:
            raw = entries[name]
            raw = raw if isinstance(raw, list) and raw else [raw]
            extra = raw[1] if len(raw) > 1 and isinstance(raw[1], dict) else {}
            specs.append(_InputSpec(name, category == "required", raw[0], extra))
    return specs


class _NodeFailure(Exception):
    """A problem that stops checking a node at once (ComfyUI raises there)."""

    def __init__(self, exception_type: str, details: str, input_name: str) -> None:
        super().__init__(details)
        self.exception_type = exception_type
        self.details = details
        self.input_name = input_name


class _Validator:
    """One validation run; ``validated`` memoises each node's (valid, own errors)."""

    def __init__(
        self, prompt: dict[str, Any], object_info: Mapping[str, Any], file_exists: FileExists | None
    ) -> None:
        self.prompt = prompt
        self.object_info = object_info
        self.file_exists = file_exists
        self.validated: dict[str, tuple[bool, list[dict[str, Any]]]] = {}
        self.in_progress: set[str] = set()

    def run(self, outputs: list[str]) -> ValidationResult:
        good: list[str] = []
        failed_messages: list[str] = []
        node_errors: dict[str, dict[str, Any]] = {}
        for output in outputs:
            try:
                valid = self.node(output)
            except _NodeFailure as failure:
                valid = False
                self.validated[output] = (False, [self._exception_error(failure)])
            if valid:
                good.append(output)
                continue
            own = self.validated[output][1]
            failed_messages += [f"{e['message']}: {e['details']}" for e in own]
            # Only nodes this output depends on; ComfyUI's own list can include unrelated
            # failures from earlier outputs, which helps nobody.
            reach = ancestors(self.prompt, output) | {output}
            for node_id, (_, errors) in self.validated.items():
                if errors and node_id in reach:
                    entry = node_errors.setdefault(
                        node_id,
                        {
                            "errors": errors,
                            "dependent_outputs": [],
                            "class_type": self.prompt[node_id]["class_type"],
                        },
                    )
                    entry["dependent_outputs"].append(output)
        if good:
            return ValidationResult(None, node_errors, good)
        error = _error(
            "prompt_outputs_failed_validation",
            "Prompt outputs failed validation",
            "\n".join(failed_messages),
        )
        return ValidationResult(error, node_errors, [])

    def node(self, node_id: str) -> bool:
        """Validate ``node_id`` and what it links to; True when it and its inputs are valid."""
        if node_id in self.validated:
            return self.validated[node_id][0]
        self.in_progress.add(node_id)
        try:
            upstream_ok, errors = self._check_inputs(node_id)
        finally:
            self.in_progress.discard(node_id)
        valid = upstream_ok and not errors
        self.validated[node_id] = (valid, errors)
        return valid

    def _check_inputs(self, node_id: str) -> tuple[bool, list[dict[str, Any]]]:
        node = self.prompt[node_id]
        if "inputs" not in node:
            raise _NodeFailure("KeyError", "'inputs'", "")
        inputs = node["inputs"]
        if not isinstance(inputs, dict):
            raise _NodeFailure(
                "TypeError",
                f"inputs of node {node_id} must be an object, got a JSON {_json_type(inputs)}",
                "",
            )
        upstream_ok = True
        errors: list[dict[str, Any]] = []
        for spec in _input_specs(self.object_info[node["class_type"]]):
            if spec.name not in inputs:
                if spec.required:
                    errors.append(
                        _error(
                            "required_input_missing",
                            "Required input is missing",
                            spec.name,
                            {"input_name": spec.name},
                        )
                    )
                continue
            value = inputs[spec.name]
            if isinstance(value, list):
                # Any list is a link in the API format; literal lists need {"__value__": ...}.
                upstream_ok = self._check_link(spec, value, errors) and upstream_ok
            else:
                error = self._check_literal(spec, value)
                if error is not None:
                    errors.append(error)
        return upstream_ok, errors

    def _check_link(self, spec: _InputSpec, link: list[Any], errors: list[dict[str, Any]]) -> bool:
        """Check one link; False when the linked node is invalid (no error of our own)."""
        if len(link) != 2:
            errors.append(
                _error(
                    "bad_linked_input",
                    "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                    spec.name,
                    {"input_name": spec.name, "input_config": spec.config, "received_value": link},
                )
            )
            return True
        source_id, slot = link
        if not isinstance(source_id, str) or source_id not in self.prompt:
            # ComfyUI fails on the lookup itself, so the details are the KeyError's text.
            raise _NodeFailure("KeyError", repr(source_id), spec.name)
        source_class = self.prompt[source_id]["class_type"]
        returns = list(self.object_info[source_class].get("output") or [])
        if not isinstance(slot, int) or isinstance(slot, bool) or not 0 <= slot < len(returns):
            slots = ", ".join(f"{i} ({t})" for i, t in enumerate(returns))
            accepted = f"one of {slots}" if returns else "none: it has no outputs"
            raise _NodeFailure(
                "IndexError",
                f"{spec.name}: node {source_id} ({source_class}) has no output slot {slot!r};"
                f" slots are {accepted}",
                spec.name,
            )
        received = returns[slot]
        if not types_match(received, spec.type):
            errors.append(
                _error(
                    "return_type_mismatch",
                    "Return type mismatch between linked nodes",
                    f"{spec.name}, received_type({received}) mismatch input_type({spec.type})",
                    {
                        "input_name": spec.name,
                        "input_config": spec.config,
                        "received_type": received,
                        "linked_node": link,
                    },
                )
            )
            return True
        if source_id in self.validated:
            return self.validated[source_id][0]
        if source_id in self.in_progress:
            raise _NodeFailure(
                "DependencyCycleError",
                f"{spec.name}: the link to node {source_id} closes a dependency cycle;"
                " links must not loop back",
                spec.name,
            )
        try:
            return self.node(source_id)
        except _NodeFailure as failure:
            inner = _error(
                "exception_during_inner_validation",
                "Exception when validating inner node",
                failure.details,
                {
                    "input_name": spec.name,
                    "input_config": spec.config,
                    "exception_message": failure.details,
                    "exception_type": failure.exception_type,
                    "traceback": [],
                    "linked_node": link,
                },
            )
            self.validated[source_id] = (False, [inner])
            return False

    def _check_literal(self, spec: _InputSpec, value: Any) -> dict[str, Any] | None:
        if isinstance(value, dict) and "__value__" in value:
            value = value["__value__"]
        converters: dict[str, Callable[[Any], Any]] = {
            "INT": int,
            "FLOAT": float,
            "STRING": str,
            "BOOLEAN": bool,
        }
        convert = converters.get(spec.type) if isinstance(spec.type, str) else None
        if convert is not None:
            try:
                value = convert(value)
            except (TypeError, ValueError, OverflowError) as exc:
                return _error(
                    "invalid_input_type",
                    f"Failed to convert an input value to a {spec.type} value",
                    f"{spec.name}, {value}, {exc}",
                    {
                        "input_name": spec.name,
                        "input_config": spec.config,
                        "received_value": value,
                        "exception_message": str(exc),
                    },
                )
        if spec.is_combo and spec.extra.get("image_upload") is True and self.file_exists:
            # Upload inputs are checked by the node against the folder, not the listed options.
            return self._check_file(spec, value)
        return _check_range(spec, value) or _check_combo(spec, value)

    def _check_file(self, spec: _InputSpec, value: Any) -> dict[str, Any] | None:
        assert self.file_exists is not None
        if isinstance(value, str):
            folder, name = _split_annotation(value, str(spec.extra.get("image_folder", "input")))
            if self.file_exists(folder, name):
                return None
        return _error(
            "custom_validation_failed",
            "Custom validation failed for node",
            f"{spec.name} - Invalid image file: {value}",
            {"input_name": spec.name},
        )

    @staticmethod
    def _exception_error(failure: _NodeFailure) -> dict[str, Any]:
        extra: dict[str, Any] = {"exception_type": failure.exception_type, "traceback": []}
        if failure.input_name:
            extra["input_name"] = failure.input_name
        return _error(
            "exception_during_validation", "Exception when validating node", failure.details, extra
        )


def _check_range(spec: _InputSpec, value: Any) -> dict[str, Any] | None:
    if not isinstance(value, int | float):
        return None
    extra = {"input_name": spec.name, "input_config": spec.config, "received_value": value}
    low, high = spec.extra.get("min"), spec.extra.get("max")
    if isinstance(low, int | float) and value < low:
        message = f"Value {value} smaller than min of {low}"
        return _error("value_smaller_than_min", message, spec.name, extra)
    if isinstance(high, int | float) and value > high:
        message = f"Value {value} bigger than max of {high}"
        return _error("value_bigger_than_max", message, spec.name, extra)
    return None


def _check_combo(spec: _InputSpec, value: Any) -> dict[str, Any] | None:
    options = spec.options if spec.is_combo else None
    if options is None or value in options:
        return None
    config: list[Any] | None = spec.config
    if len(options) > COMBO_LIST_LIMIT:
        listed, config = f"(list of length {len(options)})", None
    else:
        listed = str(options)
    return _error(
        "value_not_in_list",
        "Value not in list",
        f"{spec.name}: '{value}' not in {listed}",
        {"input_name": spec.name, "input_config": config, "received_value": value},
    )


def _split_annotation(value: str, default_folder: str) -> tuple[str, str]:
    """``"a.png [output]"`` -> ``("output", "a.png")``; ComfyUI's annotated file names."""
    for folder in _FOLDER_ANNOTATIONS:
        suffix = f" [{folder}]"
        if value.endswith(suffix):
            return folder, value[: -len(suffix)]
    return default_folder, value
