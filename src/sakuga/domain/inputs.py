"""Uploaded inputs in a workflow: ``core/ASSET`` references and uploaded file names (pure).

At submit every reference is pinned to the blob it names and rewritten to the name the
backend will see, ``sakuga/<blake3 hex>.<ext>`` (DECISIONS 11): content-derived, so
ComfyUI's ``name (1).png`` renaming never applies and the graph on record is the graph run.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

ASSET_TYPE = "core/ASSET"
STAGED_DIR = "sakuga"
_STAGED_RE = re.compile(r"^sakuga/([0-9a-f]{64})(\.[A-Za-z0-9]{1,8})?$")


@dataclass(frozen=True)
class InputRef:
    """One input slot whose value names an asset (by id) or an uploaded file (by path)."""

    node_id: str
    input_name: str
    asset_id: str | None
    file_path: str | None


def is_asset_reference(value: object) -> bool:
    return isinstance(value, Mapping) and value.get("__type") == ASSET_TYPE


def references(workflow: Mapping[str, Any], upload_inputs: set[str]) -> Iterator[InputRef]:
    """Every ``core/ASSET`` value, and every string in an upload input (e.g. LoadImage.image)."""
    for node_id, node in workflow.items():
        inputs = node.get("inputs") if isinstance(node, Mapping) else None
        if not isinstance(inputs, Mapping):
            continue
        class_type = node.get("class_type")
        for name, value in inputs.items():
            if is_asset_reference(value):
                info = value.get("info")
                asset_id = info.get("id") if isinstance(info, Mapping) else None
                yield InputRef(str(node_id), str(name), str(asset_id or ""), None)
            elif isinstance(value, str) and f"{class_type}.{name}" in upload_inputs:
                yield InputRef(str(node_id), str(name), None, value)


def upload_inputs(object_info: Mapping[str, Any]) -> set[str]:
    """``Class.input`` names whose combo takes uploaded files (``image_upload`` and kin)."""
    found: set[str] = set()
    for class_type, info in object_info.items():
        inputs = info.get("input", {}) if isinstance(info, Mapping) else {}
        for section in ("required", "optional"):
            for name, spec in (inputs.get(section) or {}).items():
                options = spec[1] if isinstance(spec, list) and len(spec) > 1 else {}
                if isinstance(options, Mapping) and any(
                    options.get(flag) for flag in ("image_upload", "video_upload", "audio_upload")
                ):
                    found.add(f"{class_type}.{name}")
    return found


def staged_name(digest: str, file_path: str | None) -> str:
    """The backend-side name for a blob: ``sakuga/<hex><ext of the uploaded name>``."""
    suffix = PurePosixPath(file_path or "").suffix.lower()
    if not re.fullmatch(r"\.[a-z0-9]{1,8}", suffix):
        suffix = ".png"
    return f"{STAGED_DIR}/{digest.removeprefix('blake3:')}{suffix}"


def staged_digest(name: str) -> str | None:
    """``blake3:<hex>`` when ``name`` is a staged name, else None."""
    match = _STAGED_RE.match(name)
    return "blake3:" + match.group(1) if match else None


def staged_blobs(workflow: Mapping[str, Any]) -> dict[str, str]:
    """Staged name -> ``blake3:<hex>`` for every staged input in a pinned workflow."""
    found: dict[str, str] = {}
    for node in workflow.values():
        inputs = node.get("inputs") if isinstance(node, Mapping) else None
        for value in (inputs or {}).values() if isinstance(inputs, Mapping) else ():
            if isinstance(value, str) and (match := _STAGED_RE.match(value)):
                found[value] = "blake3:" + match.group(1)
    return found


def pin(workflow: Mapping[str, Any], names: Mapping[tuple[str, str], str]) -> dict[str, Any]:
    """A copy of ``workflow`` with each referenced input replaced by its staged name."""
    pinned = copy.deepcopy(dict(workflow))
    for (node_id, input_name), name in names.items():
        pinned[node_id]["inputs"][input_name] = name
    return pinned


def listed_files(object_info: Mapping[str, Any], inputs: set[str]) -> set[str]:
    """Files a backend already has for its upload ``inputs`` (the options of those combos)."""
    found: set[str] = set()
    for key in inputs:
        class_type, name = key.split(".", 1)
        declared = object_info[class_type].get("input", {})
        sections = (declared.get("required") or {}, declared.get("optional") or {})
        spec = next((section[name] for section in sections if section.get(name)), None)
        if isinstance(spec, list) and spec and isinstance(spec[0], list):
            found.update(str(option) for option in spec[0])
    return found


@dataclass(frozen=True)
class Uploads:
    """What one ``/object_info`` says of uploaded files: the inputs that take them and the
    files the backend lists for those inputs."""

    inputs: frozenset[str]
    listed: frozenset[str]

    @classmethod
    def of(cls, object_info: Mapping[str, Any]) -> Uploads:
        # A real ComfyUI's catalogue has hundreds of classes: a few ms per scan.
        inputs = upload_inputs(object_info)
        return cls(frozenset(inputs), frozenset(listed_files(object_info, inputs)))
