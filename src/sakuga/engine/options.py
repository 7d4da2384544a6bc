"""Engine options (fixed at start) and fault switches (changeable while it runs)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

DEFAULT_CHECKPOINTS: tuple[str, ...] = ("tiny-random.safetensors", "sakuga-sd15.safetensors")
PREVIEW_METHODS: tuple[str, ...] = ("none", "auto", "latent2rgb", "taesd", "default")
ENGINE_VERSION = "0.8.0-sakuga-engine"


@dataclass
class Faults:
    """Failure switches for reliability tests; every default means "behave normally".

    ``fail_node``: class_type that raises at run time. ``oom``: samplers raise
    torch.OutOfMemoryError. ``crash_at_step``: the process exits hard at that sampler step.
    ``silent``: no websocket frame is sent. ``drop_ws``: every socket is closed when a prompt
    starts. ``latency_s``: delay before every HTTP response. ``hang``: samplers never finish
    until interrupted.
    """

    fail_node: str | None = None
    oom: bool = False
    crash_at_step: int | None = None
    silent: bool = False
    drop_ws: bool = False
    latency_s: float = 0.0
    hang: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The switches as a JSON-ready dict."""
        return asdict(self)

    def update(self, changes: dict[str, Any]) -> None:
        """Set the named switches; raises ``ValueError`` naming an unknown or mistyped one."""
        known = {f.name for f in fields(self)}
        for name, value in changes.items():
            if name not in known:
                raise ValueError(f"unknown fault {name!r}; known faults: {sorted(known)}")
            setattr(self, name, _checked(name, value))

    def reset(self) -> None:
        """Turn every switch off."""
        for f in fields(self):
            setattr(self, f.name, getattr(Faults(), f.name))


def _checked(name: str, value: Any) -> Any:
    if name in ("oom", "silent", "drop_ws", "hang"):
        if not isinstance(value, bool):
            raise ValueError(f"fault {name} must be true or false, got {value!r}")
        return value
    if name == "fail_node":
        if value is not None and not isinstance(value, str):
            raise ValueError(f"fault fail_node must be a class_type string or null, got {value!r}")
        return value or None
    if name == "crash_at_step":
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"fault crash_at_step must be an integer >= 1 or null, got {value!r}")
        if value is not None and value < 1:
            raise ValueError(f"fault crash_at_step must be >= 1, got {value}")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"fault latency_s must be a number of seconds >= 0, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class EngineOptions:
    """How the engine runs. ``data_dir`` holds ``input/``, ``output/`` and ``temp/``.

    ``step_s`` is the duration of one sampler step in seconds (0 = as fast as possible);
    ``preview_method`` is the server default that ``extra_data.preview_method`` overrides.
    """

    data_dir: Path
    checkpoints: tuple[str, ...] = DEFAULT_CHECKPOINTS
    step_s: float = 0.05
    preview_method: str = "none"
    preview_size: int = 512
    max_upload_size: int = 100 * 1024 * 1024
    faults: Faults = field(default_factory=Faults)

    def __post_init__(self) -> None:
        if self.step_s < 0:
            raise ValueError(f"step_s must be >= 0 seconds, got {self.step_s}")
        if self.preview_method not in PREVIEW_METHODS:
            raise ValueError(
                f"preview_method {self.preview_method!r} is not one of {list(PREVIEW_METHODS)}"
            )
        if not self.checkpoints:
            raise ValueError(
                "checkpoints must name at least one file, e.g. tiny-random.safetensors"
            )

    @property
    def input_dir(self) -> Path:
        """Uploads and LoadImage files."""
        return self.data_dir / "input"

    @property
    def output_dir(self) -> Path:
        """SaveImage files."""
        return self.data_dir / "output"

    @property
    def temp_dir(self) -> Path:
        """PreviewImage files; wiped at every start."""
        return self.data_dir / "temp"
