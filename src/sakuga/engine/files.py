"""The engine's folders (input/, output/, temp/) and ComfyUI's file naming rules."""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

FOLDER_TYPES: tuple[str, ...] = ("output", "input", "temp")
IMAGE_SUFFIXES: tuple[str, ...] = (
    ".png",
    ".jpg",
    ".jpeg",
    ".webp",
    ".gif",
    ".bmp",
    ".tif",
    ".tiff",
)


class SaveOutsideOutputError(Exception):
    """A filename_prefix escapes the output folder (ComfyUI raises a plain Exception)."""

    comfy_type = "Exception"


@dataclass(frozen=True)
class SaveTarget:
    """Where a batch of images goes: folder, base name, first counter and subfolder."""

    folder: Path
    filename: str
    counter: int
    subfolder: str


class DataDirs:
    """The three folders under one data directory; created on start, temp/ wiped."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def prepare(self) -> None:
        """Create the folders; empty temp/ like ComfyUI does at every start."""
        self.wipe_temp()
        for kind in FOLDER_TYPES:
            self.folder(kind).mkdir(parents=True, exist_ok=True)

    def wipe_temp(self) -> None:
        """Delete temp/ (PreviewImage files), as ComfyUI does at start and exit."""
        shutil.rmtree(self.folder("temp"), ignore_errors=True)

    def folder(self, kind: str) -> Path:
        """The folder for ``output``, ``input`` or ``temp``; raises ``KeyError`` otherwise."""
        if kind not in FOLDER_TYPES:
            raise KeyError(kind)
        return self.root / kind

    def input_files(self) -> list[str]:
        """Image files in input/ (and its subfolders) as ComfyUI lists them for LoadImage."""
        base = self.folder("input")
        found = []
        for path in base.rglob("*"):
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                found.append(path.relative_to(base).as_posix())
        return sorted(found)

    def annotated(self, name: str, default_kind: str = "input") -> Path:
        """Resolve ``name``, honouring a `` [output]``/`` [input]``/`` [temp]`` suffix."""
        kind = default_kind
        for candidate in FOLDER_TYPES:
            suffix = f" [{candidate}]"
            if name.endswith(suffix):
                name, kind = name[: -len(suffix)], candidate
                break
        return self.folder(kind) / name

    def input_exists(self, name: str) -> bool:
        """True when a LoadImage value names an existing file inside its folder."""
        return ".." not in Path(name).parts and self.annotated(name).is_file()

    def save_target(self, prefix: str, kind: str = "output") -> SaveTarget:
        """Split ``prefix`` into subfolder and name and find the next free counter.

        Raises ``SaveOutsideOutputError`` with ComfyUI's message when it escapes the folder.
        """
        base = str(self.folder(kind))
        normalized = os.path.normpath(prefix)
        subfolder = os.path.dirname(normalized)
        filename = os.path.basename(normalized)
        full_folder = os.path.abspath(os.path.join(base, subfolder))
        common = os.path.commonpath((base, full_folder))
        if common != base:
            raise SaveOutsideOutputError(
                "**** ERROR: Saving image outside the output folder is not allowed.\n"
                f" full_output_folder: {full_folder}\n"
                f"         output_dir: {base}\n"
                f"         commonpath: {common}"
            )
        folder = Path(full_folder)
        return SaveTarget(folder, filename, _next_counter(folder, filename), subfolder)

    def view_path(self, filename: str, kind: str, subfolder: str) -> tuple[int, Path | None]:
        """Resolve a ``/view`` request to (HTTP status, path); 200 only when the file exists."""
        if not filename or filename.startswith("/") or ".." in filename:
            return 400, None
        for candidate in FOLDER_TYPES:
            suffix = f" [{candidate}]"
            if filename.endswith(suffix):
                filename, kind = filename[: -len(suffix)], candidate
        if kind not in FOLDER_TYPES:
            return 400, None
        base = self.folder(kind)
        folder = base
        if subfolder:
            folder = Path(os.path.abspath(os.path.join(base, subfolder)))
            if os.path.commonpath((str(base), str(folder))) != str(base):
                return 403, None
        path = folder / os.path.basename(filename)
        return (200, path) if path.is_file() else (404, None)

    def store_upload(
        self, name: str, data: bytes, kind: str, subfolder: str, overwrite: bool
    ) -> str:
        """Write an upload; reuse an identical file, else rename to ``name (1).ext``.

        Returns the final name. Raises ``ValueError`` when the path escapes the folder.
        """
        base = self.folder(kind)
        folder = Path(os.path.abspath(os.path.join(base, subfolder)))
        target = Path(os.path.abspath(folder / name))
        if os.path.commonpath((str(base), str(target))) != str(base) or not name:
            raise ValueError(f"upload path {subfolder!r}/{name!r} escapes the {kind} folder")
        folder.mkdir(parents=True, exist_ok=True)
        if not overwrite:
            stem, suffix = os.path.splitext(name)
            number = 1
            while target.exists():
                if _same_bytes(target, data):
                    return target.name
                target = folder / f"{stem} ({number}){suffix}"
                number += 1
        target.write_bytes(data)
        return target.name


def _next_counter(folder: Path, filename: str) -> int:
    # ComfyUI continues after the highest "<filename>_<digits>_" already on disk.
    highest = 0
    if folder.is_dir():
        start = filename + "_"
        for entry in os.listdir(folder):
            if not entry.startswith(start):
                continue
            digits = entry[len(start) :].split("_")[0]
            if digits.isdigit():
                highest = max(highest, int(digits))
    return highest + 1


def _same_bytes(path: Path, data: bytes) -> bool:
    existing = hashlib.sha256(path.read_bytes()).digest()
    return existing == hashlib.sha256(data).digest()
